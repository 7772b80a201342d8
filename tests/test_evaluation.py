"""Evaluation harness: protocol invariants, bad input, resume, loaded sets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from datadistill import training
from datadistill.data import Dataset, Preprocessor
from datadistill.errors import ArtifactError, ConfigError, DataError
from datadistill.evaluation import ROWS_FILE, evaluate, parse_ratios
from datadistill.select import REGISTRY, Selector, select
from datadistill.training import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=64, lr=1e-2, min_steps=8, max_epochs=20, patience=0)


@pytest.fixture(scope="module")
def blobs() -> Dataset:
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=900, centers=3, cluster_std=1.0, random_state=3)
    X = X.astype(np.float32)
    return Dataset.create(X[:600], y[:600], test=(X[600:], y[600:]), name="blobs3")


def _run(ds, **kw):
    kw.setdefault("model", "logreg")
    kw.setdefault("train_config", TINY)
    kw.setdefault("progress", False)
    return evaluate(ds, **kw)


class _Spy:
    """Records what every training call receives."""

    def __init__(self, monkeypatch):
        self.calls = []
        real = training.train

        def spy(model, X, y, config=None, **kw):
            val = kw.get("validation")
            self.calls.append({"X": np.asarray(X).copy(), "y": np.asarray(y).copy(),
                               "X_val": None if val is None else np.asarray(val[0]).copy()})
            return real(model, X, y, config, **kw)

        monkeypatch.setattr(training, "train", spy)


def test_subset_equal_to_full_set_matches_full_row(blobs):
    report = _run(blobs, methods=["random"], ratios=[1.0], seeds=2)
    full = {r["seed"]: r for r in report.rows if r["method"] == "full"}
    rand = {r["seed"]: r for r in report.rows if r["method"] == "random"}
    assert set(full) == set(rand) == {0, 1}
    for s in full:
        assert rand[s]["size"] == full[s]["size"]
        assert rand[s]["test_accuracy"] == full[s]["test_accuracy"]
        assert rand[s]["steps"] == full[s]["steps"]
    agg = {a["method"]: a for a in report.aggregate()}
    assert agg["random"]["accuracy_drop"] == pytest.approx(0.0)


def test_random_rows_use_exactly_the_requested_samples(blobs, monkeypatch):
    spy = _Spy(monkeypatch)
    report = _run(blobs, methods=["random"], ratios=[0.05, 0.2], seeds=3)
    pool = report.context["pool_size"]
    assert pool + report.context["validation_size"] == len(blobs)
    rows = [r for r in report.rows if r["method"] == "random"]
    assert len(rows) == 6
    for r in rows:
        assert r["size"] == max(1, round(r["ratio"] * pool))
        assert r["size"] in (round(0.05 * pool), round(0.2 * pool))
    trained_sizes = sorted(len(c["y"]) for c in spy.calls)
    assert trained_sizes == sorted([pool] * 3 + [round(0.05 * pool)] * 3 + [round(0.2 * pool)] * 3)
    # each seed draws its own random subset
    subsets = {tuple(r["indices"]) for r in rows if r["size"] == round(0.2 * pool)}
    assert len(subsets) == 3


def test_test_split_never_seen_in_training_validation_or_selection(blobs, monkeypatch):
    spy = _Spy(monkeypatch)
    seen_by_selector = []

    class SpySelector(Selector):
        name = "spy"

        def _prepare(self, dataset, rng):
            seen_by_selector.append(dataset)

        def _select_pool(self, pool, k, rng):
            return pool[:k], None

    monkeypatch.setitem(REGISTRY, "spy", SpySelector)
    report = _run(blobs, methods=["spy"], ratios=[0.1, 0.5], seeds=2)
    assert {r["method"] for r in report.rows} == {"full", "random", "spy"}

    pre = Preprocessor.fit(blobs)
    test_rows = {row.tobytes() for row in pre.transform(blobs.test.X)}
    train_rows = {row.tobytes() for row in pre.transform(blobs.X)}
    assert not test_rows & train_rows
    assert len(spy.calls) == len(report.rows)
    for call in spy.calls:
        used = {row.tobytes() for row in call["X"]}
        val = {row.tobytes() for row in call["X_val"]}
        assert used <= train_rows and val <= train_rows
        assert not used & test_rows and not val & test_rows
        assert not used & val  # early-stopping rows are never trained on
    test_raw = {row.tobytes() for row in blobs.test.X}
    for ds in seen_by_selector:
        assert ds.test is None
        assert not {row.tobytes() for row in ds.X} & test_raw


@pytest.mark.parametrize("kwargs, error, text", [
    ({"model": "transformer"}, ConfigError, "unknown model"),
    ({"methods": ["nosuch"]}, ConfigError, "nosuch"),
    ({"ratios": [0.0]}, ConfigError, "outside (0, 1]"),
    ({"ratios": [1.5]}, ConfigError, "outside (0, 1]"),
    ({"ratios": "0.1,abc"}, ConfigError, "not a number"),
    ({"seeds": 0}, ConfigError, "seeds"),
    ({"protocol": "fancy"}, ConfigError, "protocol"),
    ({"model": "convnet"}, ConfigError, "needs images"),
    ({"method_params": {"kcenter": {}}}, ConfigError, "not among the methods"),
])
def test_bad_input_is_refused_before_any_work(blobs, monkeypatch, kwargs, error, text):
    spy = _Spy(monkeypatch)
    with pytest.raises(error, match=None) as info:
        _run(blobs, **kwargs)
    assert text in str(info.value)
    assert spy.calls == []


def test_parse_ratios_accepts_text_and_dedupes():
    assert parse_ratios("0.01, 0.1,0.1,1") == (0.01, 0.1, 1.0)


def test_data_without_test_split_is_refused(blobs):
    no_test = Dataset(X=blobs.X, y=blobs.y, classes=blobs.classes, name="nt")
    with pytest.raises(DataError, match="no test split"):
        _run(no_test)


def test_existing_out_dir_is_refused_and_interrupted_run_resumes(blobs3d, tmp_path, monkeypatch):
    blobs = blobs3d
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="already exists"):
        _run(blobs, out=out)
    with pytest.raises(ArtifactError, match="not an evaluation run"):
        _run(blobs, out=out, overwrite=True)
    assert (out / "notes.txt").exists()

    out = tmp_path / "run2"
    finished = []

    def stop_after_three(row):
        finished.append(row)
        if len(finished) == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        _run(blobs, methods=["stratified"], ratios=[0.1], seeds=2, out=out, progress=stop_after_three)
    lines = (out / ROWS_FILE).read_text().splitlines()
    assert len(lines) == 3
    assert (out / "report.json").exists()  # an interrupted run still has a report

    with pytest.raises(ArtifactError, match="already exists"):
        _run(blobs, methods=["stratified"], ratios=[0.1], seeds=2, out=out)
    with pytest.raises(ArtifactError, match="other settings"):
        _run(blobs, methods=["stratified"], ratios=[0.1], seeds=2, out=out, resume=True, model="mlp")

    spy = _Spy(monkeypatch)
    report = _run(blobs, methods=["stratified"], ratios=[0.1], seeds=2, out=out, resume=True)
    assert len(spy.calls) == 3  # 6 rows planned, 3 were finished before the interruption
    assert len(report.rows) == 6
    keys = {(r["method"], r["size"], r["seed"]) for r in report.rows}
    assert len(keys) == 6
    saved = json.loads((out / "report.json").read_text())
    assert len(saved["rows"]) == 6

    report2 = _run(blobs, methods=["stratified"], ratios=[0.1], seeds=2, out=out, overwrite=True)
    assert len(report2.rows) == 6


def test_loaded_distilled_set_is_evaluated_and_foreign_one_refused(blobs, tmp_path):
    chosen = select(blobs, "stratified", ratio=0.1, random_state=5)
    path = chosen.save(tmp_path / "strat10")
    report = _run(blobs, methods=[], ratios=[0.1], seeds=2, distilled=[path])
    rows = [r for r in report.rows if r["method"] == "stratified:strat10"]
    assert len(rows) == 2
    assert all(r["size"] == len(chosen) and r["kind"] == "selection" for r in rows)

    other = Dataset.create(blobs.X + 1.0, blobs.y, test=(blobs.test.X, blobs.test.y), name="shifted")
    foreign = select(other, "stratified", ratio=0.1).save(tmp_path / "foreign")
    with pytest.raises(ArtifactError, match="different data set") as info:
        _run(blobs, distilled=[foreign])
    assert blobs.fingerprint[:16] in str(info.value) and other.fingerprint[:16] in str(info.value)


def test_weights_are_used_only_when_asked(blobs, monkeypatch):
    class Weighted(Selector):
        name = "weighted-spy"

        def _select_pool(self, pool, k, rng):
            return pool[:k], np.full(k, 2.0) + np.arange(k) % 2

    monkeypatch.setitem(REGISTRY, "weighted-spy", Weighted)
    plain = _run(blobs, methods=["weighted-spy"], ratios=[0.2], seeds=1)
    weighted = _run(blobs, methods=["weighted-spy"], ratios=[0.2], seeds=1, use_weights=True)
    row = next(r for r in plain.rows if r["method"] == "weighted-spy")
    row_w = next(r for r in weighted.rows if r["method"] == "weighted-spy")
    assert row["weighted"] is False and row_w["weighted"] is True
    assert not any(r["weighted"] for r in weighted.rows if r["method"] != "weighted-spy")


def _synthetic_digits():
    import datadistill
    from datadistill.data import DistilledSet

    digits = datadistill.load("digits")
    rng = np.random.default_rng(0)
    means = np.stack([digits.X[digits.y == c].mean(0) for c in range(10)])
    X = np.repeat(means, 3, axis=0) + rng.normal(scale=0.5, size=(30, 8, 8)).astype(np.float32)
    y = np.repeat(np.arange(10), 3)
    meta = {"kind": "synthetic", "method": "toy", "source_fingerprint": digits.fingerprint,
            "timings": {"distill_seconds": 1.5}}
    return digits, DistilledSet(X=X.astype(np.float32), y=y, classes=digits.classes, meta=meta)


def test_synthetic_set_is_trained_with_the_same_recipe_and_drawn(monkeypatch):
    digits, syn = _synthetic_digits()
    report = _run(digits, methods=[], ratios=[0.05], seeds=2, distilled=[syn])
    rows = [r for r in report.rows if r["method"] == "toy:loaded"]
    assert [r["kind"] for r in rows] == ["synthetic", "synthetic"]
    assert all(r["size"] == 30 and r["select_seconds"] == 1.5 for r in rows)
    assert rows[0]["test_accuracy"] > 0.5  # class means of digits are easy to learn from
    assert len(report.images) == 1 and np.asarray(report.images[0]["X"]).shape == (30, 8, 8)


def test_dc_protocol_delegates_every_set(monkeypatch):
    import sys
    import types

    digits, syn = _synthetic_digits()
    calls = []

    def fake_protocol(dataset, distilled, *, n_models, device, seed, architectures=None):
        calls.append((distilled.method, len(distilled), n_models, seed, architectures))
        return [{"method": distilled.method, "size": len(distilled), "seed": i, "architecture": "convnet",
                 "test_accuracy": 0.5 + i / 100, "train_seconds": 1.0, "epochs": 300} for i in range(n_models)]

    from datadistill.synth.protocol import check_protocol_options, protocol_architectures

    fake = types.ModuleType("datadistill.synth.protocol")
    fake.evaluate_protocol = fake_protocol
    fake.check_protocol_options = check_protocol_options
    fake.protocol_architectures = protocol_architectures
    monkeypatch.setitem(sys.modules, "datadistill.synth.protocol", fake)
    spy = _Spy(monkeypatch)
    report = _run(digits, methods=[], ratios=[0.05], seeds=2, distilled=[syn], protocol="dc")
    pool = report.context["pool_size"]
    k = round(0.05 * pool)
    # drawn sets (full, random) one model per seed, the loaded set its 5 models once: nothing on the same recipe
    assert spy.calls == []
    assert calls == [("full", pool, 1, 0, None), ("full", pool, 1, 1, None), ("random", k, 1, 0, None),
                     ("random", k, 1, 1, None), ("toy", 30, 5, 0, None)]
    rows = [r for r in report.rows if r["method"] == "toy:loaded"]
    assert len(rows) == 5 and {r["seed"] for r in rows} == set(range(5))
    assert all(r["kind"] == "synthetic" and r["select_seconds"] == 1.5 for r in rows)
    assert {(r["model"], r["protocol"]) for r in report.rows} == {("convnet", "dc")}
    assert all(r["ratio"] == r["size"] / pool for r in report.rows)  # one denominator, loaded set included


def test_default_budget_is_one_step_rule_and_random_curve_rises(digits):
    from datadistill.evaluation import budget_rule, default_recipe

    cfg = default_recipe("mlp")
    assert cfg.max_steps and cfg.patience_steps and "convergence" in budget_rule(cfg)
    report = evaluate(digits, methods=["random"], ratios=[0.05, 0.2, 0.5], seeds=2, model="mlp", progress=False)
    agg = {(a["method"], a["size"]): a for a in report.aggregate()}
    rand = sorted((s, a["accuracy_mean"]) for (m, s), a in agg.items() if m == "random")
    accs = [a for _, a in rand]
    assert accs[0] < accs[1] < accs[2] + 0.01  # more data, no worse a model (the old epoch rule broke this)
    rows = [r for r in report.rows if r["method"] == "random"]
    assert all(r["stop_reason"] in ("patience", "budget") and r["best_step"] is not None for r in rows)
    assert report.context["budget_rule"] == budget_rule(cfg)
    assert len(rows[0]["class_accuracy"]) == 10


def test_equal_epochs_budget_trains_every_row_the_same_epochs(blobs):
    report = evaluate(blobs, methods=["random"], ratios=[0.1, 0.5], seeds=1, model="logreg", budget="epochs",
                      epochs=3, progress=False)
    assert {r["epochs"] for r in report.rows} == {3}
    steps = sorted((r["size"], r["steps"]) for r in report.rows)
    assert steps[0][1] < steps[1][1] < steps[2][1]  # equal epochs: a smaller set takes fewer steps
    with pytest.raises(ConfigError, match="budget"):
        evaluate(blobs, budget="forever", progress=False)


def test_budgeted_full_and_soft_label_rows(blobs):
    report = _run(blobs, methods=["random", "entropy"], ratios=[0.1], seeds=1, budgeted_full=True,
                  soft_labels=["random"], method_params={"entropy": {"score_params": {"min_steps": 20}}})
    by = {r["method"]: r for r in report.rows}
    assert set(by) == {"full", "random", "full (budgeted)", "random+soft", "entropy"}
    assert by["full (budgeted)"]["steps"] == by["random"]["steps"]
    assert by["full (budgeted)"]["size"] == by["random"]["size"]
    assert by["random+soft"]["soft_labels"] and not by["random"]["soft_labels"]
    with pytest.raises(ConfigError, match="soft_labels"):
        _run(blobs, methods=["random"], ratios=[0.1], seeds=1, soft_labels=["kcenter"])
    with pytest.raises(ConfigError, match="temperature"):
        _run(blobs, methods=["random"], ratios=[0.1], seeds=1, soft_labels=True, temperature=0)


def test_bad_method_parameters_are_refused_before_an_old_run_is_replaced(blobs3d, tmp_path):
    out = tmp_path / "run"
    _run(blobs3d, methods=["random"], ratios=[0.1], seeds=1, out=out)
    before = sorted(p.name for p in out.iterdir())
    rows_before = (out / ROWS_FILE).read_text()
    for params in ({"strategy": "bogus"}, {"prune": 2}, {"no_such_option": 1}):
        with pytest.raises(ConfigError):
            _run(blobs3d, methods=["entropy"], ratios=[0.1], seeds=1, out=out, overwrite=True,
                 method_params={"entropy": params})
        assert sorted(p.name for p in out.iterdir()) == before
        assert (out / ROWS_FILE).read_text() == rows_before


def test_every_model_of_the_zoo_has_a_recipe_and_one_image_check():
    """A model added to the zoo without an evaluation recipe failed late with a KeyError."""
    from datadistill.evaluation import default_recipe
    from datadistill.models import IMAGE_MODELS, MODELS, check_model_for

    for name in MODELS:
        for budget in ("converge", "epochs"):
            assert default_recipe(name, budget).lr > 0
    for name in IMAGE_MODELS:
        check_model_for(name, images=True)
        with pytest.raises(ConfigError, match=f"teacher model '{name}' needs images; t is tabular"):
            check_model_for(name, images=False, data_name="t", what="teacher model")
    with pytest.raises(ConfigError, match="unknown model 'vgg'"):
        check_model_for("vgg", images=True)
