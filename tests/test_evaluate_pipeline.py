"""Evaluation as a pipeline: planned rows, each row's model and protocol, one ratio denominator, baselines."""

from __future__ import annotations

import numpy as np
import pytest

from datadistill import training
from datadistill.data import Dataset, DistilledSet, Preprocessor
from datadistill.errors import ConfigError
from datadistill.evaluation import evaluate, plan_rows, scaled_patience
from datadistill.models import build_model
from datadistill.select import get_selector, select
from datadistill.training import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=64, lr=1e-2, min_steps=8, max_epochs=20, patience=0)
# the dc protocol, shrunk for a test: a narrow ConvNet, two epochs
SMALL_DC = {"epochs": 2, "n_models": 2, "model_kwargs": {"width": 8, "depth": 2}}


def _run(ds, **kw):
    kw.setdefault("model", "logreg")
    kw.setdefault("train_config", TINY)
    kw.setdefault("progress", False)
    kw.setdefault("device", "cpu")
    return evaluate(ds, **kw)


def test_every_row_names_its_model_and_protocol_and_one_denominator(blobs3d, tmp_path):
    chosen = select(blobs3d, "stratified", ratio=0.2, random_state=1)
    report = _run(blobs3d, methods=["stratified"], ratios=[0.1], seeds=2, distilled=[chosen])
    pool = report.context["pool_size"]
    assert report.context["ratio_denominator"] == pool
    assert {r["method"] for r in report.rows} == {"full", "random", "stratified", "stratified:loaded"}
    for r in report.rows:
        assert (r["model"], r["protocol"]) == ("logreg", "same")
        assert r["ratio"] == r["size"] / pool
    note = report.context["protocol_note"]
    assert f"ratio = size / {pool:,}" in note and "full data and random subsets" in report.context["rows_included"]
    assert "full data and random subsets" in report.to_markdown()  # the rows included: a header line of its own
    assert "protocol" in report.to_markdown() and f"{pool:,}" in report.to_markdown()


def test_baselines_can_be_turned_off_and_the_header_says_so(blobs3d, monkeypatch):
    report = _run(blobs3d, methods=["stratified"], ratios=[0.1], seeds=1, baselines=False)
    assert {r["method"] for r in report.rows} == {"stratified"}
    assert report.context["baselines"] is False
    assert "baselines off: no full-data or random rows" in report.to_markdown()
    kept = _run(blobs3d, methods=["random", "full"], ratios=[0.1], seeds=1, baselines=False)
    assert {r["method"] for r in kept.rows} == {"full", "random"}
    assert "kept as named: full data and random subsets" in kept.context["rows_included"]
    with pytest.raises(ConfigError, match="nothing to evaluate"):
        _run(blobs3d, methods=[], baselines=False)
    with pytest.raises(ConfigError, match="budgeted_full needs the random rows"):
        _run(blobs3d, methods=["stratified"], baselines=False, budgeted_full=True)
    with pytest.raises(ConfigError, match="not among the methods"):
        _run(blobs3d, methods=["stratified"], baselines=False, method_params={"random": {}})


def test_plan_lists_rows_in_report_order(blobs3d):
    from datadistill.evaluation import _check_settings

    settings = _check_settings(
        blobs3d, methods=["stratified"], ratios=[0.1, 0.5], model="logreg", seeds=2, distilled=(), use_weights=False,
        protocol="same", protocol_options=None, train_config=TINY, method_params=None, validation_fraction=0.1,
        validation_max=5000, device="cpu", budget="converge", epochs=10, budgeted_full=True,
        soft_labels=["stratified"], temperature=4.0, baselines=True)
    plan = plan_rows(settings, 360)
    assert [(p.kind, p.method) for p in plan[::2]] == (
        [("full", "full")] + [("random", "random")] * 2 + [("budgeted-full", "full (budgeted)")] * 2
        + [("selection", "stratified")] * 2 + [("selection", "stratified+soft")] * 2)
    assert [p.seed for p in plan[:4]] == [0, 1, 0, 1] and {p.size for p in plan if p.ratio == 0.5} == {180}
    assert all(p.model == "logreg" and p.protocol == "same" for p in plan)
    assert all(p.soft for p in plan if p.method.endswith("+soft"))


def test_random_row_matches_a_hand_built_run_and_repeats_exactly(blobs3d):
    report = _run(blobs3d, methods=["random"], ratios=[0.2], seeds=[3])
    row = next(r for r in report.rows if r["method"] == "random")
    again = next(r for r in _run(blobs3d, methods=["random"], ratios=[0.2], seeds=[3]).rows if r["method"] == "random")
    assert again["test_accuracy"] == row["test_accuracy"] and again["steps"] == row["steps"]

    # the same row by hand: the seed's validation split, a random draw from the pool, one fresh model
    pool, val = training.validation_split(blobs3d.y, 0.1, random_state=10_003)
    pool_ds = Dataset(X=blobs3d.X[pool], y=blobs3d.y[pool], classes=blobs3d.classes, name="pool")
    chosen = np.sort(pool[get_selector("random", size=round(0.2 * len(pool)), random_state=3).fit(pool_ds).indices_])
    pre = Preprocessor.fit(blobs3d)
    X = pre.transform(blobs3d.X)
    net = build_model("logreg", pre.model_shape, blobs3d.n_classes, seed=3)
    result = training.train(net, X[chosen], blobs3d.y[chosen], scaled_patience(TINY, len(chosen)),
                            validation=(X[val], blobs3d.y[val]), device="cpu", seed=3, description="train")
    pred = training.predict_logits(result.model, pre.transform(blobs3d.test.X), device="cpu").argmax(axis=1)
    assert row["size"] == len(chosen) and row["steps"] == result.steps
    assert row["test_accuracy"] == float((pred == blobs3d.test.y).mean())


def test_dc_protocol_trains_every_set_with_the_convnet_protocol(digits):
    chosen = select(digits, "stratified", ratio=0.05, random_state=2)
    rng = np.random.default_rng(0)
    means = np.stack([digits.X[digits.y == c].mean(0) for c in range(10)])
    syn = DistilledSet(X=(np.repeat(means, 2, axis=0) + rng.normal(scale=0.5, size=(20, 8, 8))).astype(np.float32),
                       y=np.repeat(np.arange(10), 2), classes=digits.classes,
                       meta={"kind": "synthetic", "method": "toy", "source_fingerprint": digits.fingerprint})
    report = evaluate(digits, methods=["stratified"], ratios=[0.05], seeds=2, model="mlp", distilled=[chosen, syn],
                      protocol="dc", protocol_options=SMALL_DC, progress=False, device="cpu")
    pool = report.context["pool_size"]
    by: dict[str, list[dict]] = {}
    for r in report.rows:
        by.setdefault(r["method"], []).append(r)
    assert set(by) == {"full", "random", "stratified", "stratified:loaded", "toy:loaded"}
    for r in report.rows:  # selection sets too: the ConvNet protocol, not the --model recipe
        assert (r["model"], r["protocol"], r["architecture"], r["epochs"]) == ("convnet", "dc", "convnet", 2)
        assert r["ratio"] == r["size"] / pool
    assert [r["seed"] for r in by["stratified"]] == [0, 1] and len(by["stratified:loaded"]) == 2
    assert by["stratified"][0]["kind"] == "selection" and by["stratified:loaded"][0]["kind"] == "selection"
    assert by["full"][0]["size"] == pool and by["toy:loaded"][0]["kind"] == "synthetic"
    assert "convnet" in report.context["model"] and "dataset-condensation" in report.context["budget_rule"]
    with pytest.raises(ConfigError, match="protocol 'dc'"):
        evaluate(digits, methods=["random"], protocol="dc", soft_labels=True, progress=False)
