"""Soft labels for any small set: a teacher trained on the real data relabels its samples.

The teacher is a fresh network (``convnet`` for images, ``mlp`` for tabular data by default) trained on
the real training split through :func:`datadistill.training.train`; each sample of the small set gets the
teacher's class probabilities at a temperature ``T`` (``softmax(logits / T)``, Hinton et al. 2015), as
relabelling methods (FKD, SRe2L, RDED) do. A teacher that misses a stated accuracy on held-out training
rows triggers a warning: its soft labels would mislead the student.

    from datadistill.synth.relabel import relabel
    soft_set = relabel(distilled_set, train_data, temperature=4.0)
    soft_set.soft_labels          # (n, K) rows that sum to 1

Evaluation trains on ``soft_labels`` whenever a set carries them.
"""

from __future__ import annotations

import copy
import math
import numbers
import time
import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..data.artifact import DistilledSet
from ..data.dataset import Dataset
from ..data.preprocess import Preprocessor
from ..errors import ConfigError, DatadistillWarning, DataError
from ..models import build_model, check_model_for
from ..training import TrainConfig, accuracy, predict_logits, resolve_device, train, validation_split

DEFAULT_TEMPERATURE = 4.0
DEFAULT_MIN_ACCURACY = 0.5


@dataclass
class Teacher:
    """A network trained on real data, with the preprocessor its inputs go through."""

    model: nn.Module
    preprocessor: Preprocessor
    architecture: str
    validation_accuracy: float | None
    steps: int
    seconds: float

    def probabilities(self, X_source: np.ndarray, temperature: float = DEFAULT_TEMPERATURE, *,
                      device: str | torch.device | None = None) -> np.ndarray:
        """Class probabilities at ``temperature`` for source-space samples (float32, rows sum to 1)."""
        return soft_probabilities(self.model, self.preprocessor.transform(np.asarray(X_source)), temperature,
                                  device=device)

    def describe(self) -> dict:
        return {"architecture": self.architecture, "validation_accuracy": self.validation_accuracy,
                "steps": self.steps, "seconds": self.seconds}


def check_temperature(temperature) -> float:
    if (isinstance(temperature, bool) or not isinstance(temperature, numbers.Real) or not math.isfinite(temperature)
            or temperature <= 0):
        raise ConfigError(f"temperature must be a positive number, got {temperature!r}")
    return float(temperature)


def soft_probabilities(model: nn.Module, X_model, temperature: float = DEFAULT_TEMPERATURE, *,
                       device: str | torch.device | None = None) -> np.ndarray:
    """``softmax(model(X) / temperature)`` for model-space inputs, float32 rows summing to 1."""
    t = check_temperature(temperature)
    logits = predict_logits(model, X_model, device=device).astype(np.float64) / t
    logits -= logits.max(axis=1, keepdims=True)
    p = np.exp(logits)
    return (p / p.sum(axis=1, keepdims=True)).astype(np.float32)


def _check_time_budget(time_budget) -> float | None:
    if time_budget is None:
        return None
    if (isinstance(time_budget, bool) or not isinstance(time_budget, numbers.Real) or math.isnan(time_budget)
            or time_budget < 0):
        raise ConfigError(f"teacher time_budget must be a number of seconds >= 0 (or None), got {time_budget!r}")
    return float(time_budget)


def train_teacher_model(X_model: np.ndarray, y: np.ndarray, n_classes: int, *, architecture: str,
                        model_kwargs: dict | None = None, steps: int = 500, batch_size: int = 128,
                        lr: float = 1e-3, validation_fraction: float = 0.1, max_samples: int | None = 20_000,
                        min_accuracy: float | None = DEFAULT_MIN_ACCURACY, time_budget: float | None = None,
                        device: str | torch.device | None = "auto", random_state: int = 0
                        ) -> tuple[nn.Module, float | None, int, float]:
    """Train a teacher on model-space ``X_model`` -> (model, validation accuracy, steps, seconds).

    ``max_samples`` rows (a random draw) train it in one training run of at most ``steps`` Adam steps;
    ``time_budget`` seconds (counted from the call) stop it after the first step that ends past them. Warns when validation accuracy is below ``min_accuracy``.
    """
    for name, value in (("teacher steps", steps), ("teacher batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    budget = _check_time_budget(time_budget)
    start = time.perf_counter()
    dev = resolve_device(device)
    y = np.asarray(y, dtype=np.int64)
    rng = np.random.default_rng(random_state)
    rows = np.arange(len(y))
    if max_samples is not None and len(rows) > max_samples:
        rows = np.sort(rng.choice(len(rows), int(max_samples), replace=False))
    validation = None
    fit_rows = rows
    counts = np.bincount(y[rows], minlength=n_classes)
    if validation_fraction and counts.min() >= 2:
        tr, va = validation_split(y[rows], validation_fraction, random_state=random_state)
        fit_rows, val_rows = rows[tr], rows[va]
        validation = (X_model[val_rows], y[val_rows])
    net = build_model(architecture, X_model.shape[1:], n_classes, seed=random_state, **dict(model_kwargs or {}))
    cfg = TrainConfig(max_steps=int(steps), batch_size=int(batch_size), lr=float(lr), optimizer="adam")
    # one training, one optimiser state; under a time budget a per-step check of the clock ends it (at least one step)
    clock = () if budget is None else (lambda step, loss: time.perf_counter() - start >= budget,)
    result = train(net, X_model[fit_rows], y[fit_rows], cfg, device=dev, seed=random_state, description="teacher",
                   batch_callbacks=clock)
    net, done = result.model, result.steps
    acc = None
    if validation is not None:
        acc = accuracy(net, validation[0], validation[1], device=dev)
        if min_accuracy is not None and acc < min_accuracy:
            warnings.warn(f"the soft-label teacher ({architecture}, {done} steps) reached only "
                          f"{acc:.1%} on held-out training rows (minimum {min_accuracy:.0%}); its soft labels "
                          "would mislead the student: give it more steps or another model",
                          DatadistillWarning, stacklevel=3)
    net.eval()
    return net, acc, done, time.perf_counter() - start


def train_teacher(dataset: Dataset, *, model: str | None = None, model_kwargs: dict | None = None,
                  preprocessor: Preprocessor | None = None, steps: int = 500, batch_size: int = 128,
                  lr: float = 1e-3, max_samples: int | None = 20_000,
                  min_accuracy: float | None = DEFAULT_MIN_ACCURACY, time_budget: float | None = None,
                  device: str | None = "auto", random_state: int = 0) -> Teacher:
    """A teacher network trained on ``dataset``'s training split (see :func:`train_teacher_model`).

    Args:
        model: architecture name; ``None``: ``convnet`` for images, ``mlp`` for tabular data.
        preprocessor: the standardisation inputs go through; ``None``: fitted on ``dataset``.
        min_accuracy: warn when held-out accuracy is below it (``None``: never).
    """
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"the teacher needs a datadistill Dataset, got {type(dataset).__name__}")
    pre = preprocessor or Preprocessor.fit(dataset)
    arch = model or ("convnet" if len(pre.model_shape) == 3 else "mlp")
    check_model_for(arch, images=len(pre.model_shape) == 3, data_name=dataset.name, shape=pre.model_shape,
                    what="teacher model")
    X_model = pre.transform(dataset.X)
    net, acc, done, seconds = train_teacher_model(
        X_model, dataset.y, dataset.n_classes, architecture=arch, model_kwargs=model_kwargs, steps=steps,
        batch_size=batch_size, lr=lr, max_samples=max_samples, min_accuracy=min_accuracy, time_budget=time_budget,
        device=device, random_state=random_state)
    return Teacher(model=net, preprocessor=pre, architecture=arch, validation_accuracy=acc, steps=done,
                   seconds=seconds)


def relabel(distilled: DistilledSet, teacher_dataset: Dataset, *, temperature: float = DEFAULT_TEMPERATURE,
            teacher: Teacher | None = None, model: str | None = None, model_kwargs: dict | None = None,
            steps: int = 500, max_samples: int | None = 20_000,
            min_accuracy: float | None = DEFAULT_MIN_ACCURACY, device: str | None = "auto",
            random_state: int = 0) -> DistilledSet:
    """A copy of ``distilled`` whose ``soft_labels`` are a real-data teacher's probabilities at ``temperature``.

    Args:
        distilled: a synthetic or selected set (samples in the source's space, as artifacts store them).
        teacher_dataset: the real training data the teacher learns from (the set's source).
        temperature: softening temperature ``T`` of ``softmax(logits / T)``.
        teacher: a trained :class:`Teacher` to reuse; ``None``: train one (see :func:`train_teacher`).
        model, model_kwargs, steps, max_samples, min_accuracy: the teacher's training (when trained here).
        device: ``auto``, ``cpu`` or ``cuda``.
        random_state: seed of the teacher.

    ``meta["soft_labels"]`` records the temperature and the teacher; ``meta["training"]["soft_labels"]``
    is set so the evaluation protocol trains on the soft labels.
    """
    t = check_temperature(temperature)
    if not isinstance(distilled, DistilledSet):
        raise ConfigError(f"relabel needs a DistilledSet, got {type(distilled).__name__}")
    X = np.asarray(distilled.X)
    if tuple(X.shape[1:]) != teacher_dataset.sample_shape:
        raise DataError(f"the set's samples have shape {tuple(X.shape[1:])} but {teacher_dataset.name} has "
                        f"{teacher_dataset.sample_shape}; relabel it with the data it came from")
    if tuple(distilled.classes) != tuple(teacher_dataset.classes):
        raise DataError(f"the set's classes {tuple(distilled.classes)} differ from {teacher_dataset.name}'s "
                        f"{tuple(teacher_dataset.classes)}")
    if teacher is None:
        teacher = train_teacher(teacher_dataset, model=model, model_kwargs=model_kwargs, steps=steps,
                                max_samples=max_samples, min_accuracy=min_accuracy, device=device,
                                random_state=random_state)
    probs = teacher.probabilities(X, t, device=device)
    meta = copy.deepcopy(distilled.meta)
    meta["soft_labels"] = {"temperature": t, "teacher": teacher.describe(), "source": "relabel"}
    if meta.get("kind") == "synthetic" or "training" in meta:
        meta.setdefault("training", {})["soft_labels"] = True
    return DistilledSet(X=distilled.X, y=distilled.y, classes=distilled.classes, indices=distilled.indices,
                        weights=distilled.weights, soft_labels=probs, meta=meta, source_rows=distilled.source_rows)
