"""The soft-label teacher: one training run (one optimiser state) that a time budget ends on the clock."""

from __future__ import annotations

import time

import numpy as np
import pytest

from datadistill.errors import ConfigError
from datadistill.synth import relabel as relabel_mod
from datadistill.synth.relabel import train_teacher_model


def _tabular(n: int = 300, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, d)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    return X, y


@pytest.fixture
def train_calls(monkeypatch) -> list[dict]:
    """Every train() call the teacher makes: its step budget, callbacks and result."""
    calls: list[dict] = []
    real = relabel_mod.train

    def counting(*args, **kwargs):
        result = real(*args, **kwargs)
        calls.append({"config": args[3], "batch_callbacks": kwargs.get("batch_callbacks", ()), "result": result})
        return result

    monkeypatch.setattr(relabel_mod, "train", counting)
    return calls


class _TickingClock:
    """A stand-in for the ``time`` module whose perf_counter advances one second per reading."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        value = self.now
        self.now += 1.0
        return value


def test_time_budget_stops_one_training_run_on_the_clock(monkeypatch, train_calls):
    X, y = _tabular()
    clock = _TickingClock()
    monkeypatch.setattr(relabel_mod, "time", clock)
    # the start is reading 0; the check after step k reads k seconds: a 25 s budget ends the run at step 25
    _, _, steps, _ = train_teacher_model(X, y, 2, architecture="mlp", steps=10_000, batch_size=16,
                                         min_accuracy=None, time_budget=25, device="cpu", random_state=0)
    assert len(train_calls) == 1
    call = train_calls[0]
    assert call["config"].max_steps == 10_000 and call["config"].optimizer == "adam"
    assert steps == 25 == call["result"].steps
    assert call["result"].stop_reason == "callback"
    # 25 steps of 16 rows span more than one epoch of the 270 training rows: one optimiser across epochs
    assert call["result"].epochs >= 2


def test_real_clock_budget_is_respected(train_calls):
    X, y = _tabular()
    budget = 0.3
    started = time.perf_counter()
    _, _, steps, seconds = train_teacher_model(X, y, 2, architecture="mlp", steps=10**7, batch_size=8,
                                               min_accuracy=None, time_budget=budget, device="cpu", random_state=0)
    elapsed = time.perf_counter() - started
    assert len(train_calls) == 1 and train_calls[0]["result"].stop_reason == "callback"
    assert 1 <= steps < 10**7
    assert budget <= seconds <= elapsed < budget + 3.0  # one step past the budget, plus the validation pass


def test_zero_budget_still_takes_one_step(train_calls):
    X, y = _tabular()
    _, _, steps, _ = train_teacher_model(X, y, 2, architecture="mlp", steps=50, min_accuracy=None, time_budget=0,
                                         device="cpu")
    assert steps == 1 and len(train_calls) == 1


def test_without_budget_the_step_count_is_the_limit(train_calls):
    X, y = _tabular()
    net, acc, steps, _ = train_teacher_model(X, y, 2, architecture="mlp", steps=60, batch_size=32,
                                             min_accuracy=None, device="cpu", random_state=1)
    assert steps == 60 and len(train_calls) == 1
    assert train_calls[0]["batch_callbacks"] == () and train_calls[0]["result"].stop_reason == "budget"
    assert acc is not None and acc > 0.7  # a linear rule: 60 Adam steps learn it


@pytest.mark.parametrize("budget", [-1.0, float("nan"), "10", True])
def test_bad_time_budget_is_refused(budget):
    X, y = _tabular(n=40)
    with pytest.raises(ConfigError, match="time_budget"):
        train_teacher_model(X, y, 2, architecture="mlp", steps=5, time_budget=budget, device="cpu")
