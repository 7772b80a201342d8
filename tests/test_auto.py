"""The guard rail (check_against_random) and `auto`: searches, verification, fallbacks, bad input, CLI."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest

import datadistill as dd
from datadistill import training
from datadistill.auto import SEARCH_JSON, SEARCH_MD, SET_DIR, _Search
from datadistill.cli import main
from datadistill.data import Dataset, DistilledSet
from datadistill.errors import ArtifactError, ConfigError
from datadistill.evaluation import default_recipe

# verification recipe small enough for a test: early stopping on the validation rows, at most 300 steps
VERIFY = replace(default_recipe("logreg"), min_steps=100, patience_steps=100, eval_every=25, max_steps=300)
FAST = {"model": "logreg", "proxy_steps": 50, "train_config": VERIFY, "progress": False,
        "methods": ["stratified", "herding"], "ratios": [0.02, 0.05, 0.1, 0.2]}


@pytest.fixture(scope="module")
def noisy(digits) -> tuple[Dataset, np.ndarray]:
    """digits with 300 training labels flipped to another class (seeded), and the flipped rows."""
    rng = np.random.default_rng(0)
    y = digits.y.copy()
    flipped = np.sort(rng.choice(len(y), 300, replace=False))
    y[flipped] = (y[flipped] + rng.integers(1, 10, len(flipped))) % 10
    ds = Dataset(X=digits.X, y=y, classes=digits.classes, test=digits.test, name="digits-noisy")
    return ds, flipped


@pytest.fixture(scope="module")
def halving(digits):
    return dd.auto(digits, max_drop=2.0, **FAST)


# --- guard ------------------------------------------------------------------------------------------
def test_guard_flags_mislabelled_subset_and_passes_random(noisy, digits):
    ds, flipped = noisy
    bad = dd.check_against_random(ds, flipped[:150], step_budget=200, method="mislabelled")
    assert bad.worse and not bad.better
    assert bad.subset_mean + bad.threshold < bad.random_mean
    assert "warning: the mislabelled subset scored" in bad.message()
    assert "random subsets of the same size" in bad.message()

    subset = np.sort(np.random.default_rng(5).choice(len(digits), 300, replace=False))
    ok = dd.check_against_random(digits, subset, step_budget=200, method="random")
    assert not ok.worse
    assert ok.message().startswith("check:")
    # the subset's rows are held out of validation; the rest of the stratified 10% split is used
    _, val = training.validation_split(digits.y, 0.1, random_state=0)
    assert ok.validation_size == len(np.setdiff1d(val, subset)) < len(val)
    assert len(ok.subset_accuracy) == len(ok.random_accuracy) == 3
    assert json.dumps(ok.to_dict())


def test_guard_bad_input(digits):
    with pytest.raises(ConfigError, match="proxy model"):
        dd.check_against_random(digits, [0, 1, 2], model="convnet")
    with pytest.raises(ConfigError, match="empty"):
        dd.check_against_random(digits, [])
    with pytest.raises(ConfigError, match="rows 0"):
        dd.check_against_random(digits, [len(digits)])


# --- auto -------------------------------------------------------------------------------------------
def _assert_honest(result, digits):
    """Within the verified drop (or a documented fallback / note), never below random, held-out rows untouched."""
    v = result.verified
    assert not v["loses_to_random"]
    assert v["within_drop"] or result.notes, "a set beyond max_drop must say why"
    if not result.fallback:
        assert v["subset_mean"] >= v["random_mean"] or v["method"] == "stratified"
    assert len(result.set) == v["size"]
    _, val = training.validation_split(digits.y, 0.1, random_state=0)
    assert not np.isin(result.set.indices, val).any(), "the set holds validation rows"
    assert result.set.source_fingerprint == digits.fingerprint
    assert {"setup_seconds", "search_seconds", "verify_seconds", "total_seconds"} <= set(result.timings)
    for c in result.candidates:
        assert {"method", "size", "soft", "proxy_mean", "proxy_std", "seconds"} <= set(c)


def test_halving_returns_a_verified_set(halving, digits):
    _assert_honest(halving, digits)
    phases = {c["phase"] for c in halving.candidates}
    assert {"halving rung 0", "halving rung 1"} <= phases
    rung0 = [c for c in halving.candidates if c["phase"] == "halving rung 0"]
    assert len(rung0) == 2 * 4  # every method x every size at the cheapest fidelity
    assert halving.verified["drop"] == pytest.approx(
        100 * (halving.verified["full_mean"] - halving.verified["subset_mean"]))
    text = halving.to_markdown()
    assert "| halving rung 0 | stratified |" in text and "## Verification" in text


@pytest.mark.parametrize("search", ["bayes", "genetic"])
def test_other_searches_run(search, digits):
    result = dd.auto(digits, max_drop=2.0, search=search, **FAST)
    _assert_honest(result, digits)
    phases = {c["phase"] for c in result.candidates}
    if search == "bayes":
        assert phases == {"bayes"}
    else:
        assert "genetic screening" in phases and "genetic generation 1" in phases
        assert "genetic best, held-out half" in phases
        held_out = [c for c in result.candidates if c["phase"] == "genetic best, held-out half"]
        assert held_out[0]["validation"] == "check"


def test_soft_labels_are_searched_and_kept(digits):
    result = dd.auto(digits, max_drop=2.0, soft_labels=True, **{**FAST, "methods": ["entropy"], "ratios": [0.05, 0.2]},
                     method_params={"entropy": {"score_params": {"min_steps": 200}}})
    assert {c["soft"] for c in result.candidates} == {False, True}
    _assert_honest(result, digits)
    if result.verified["soft"]:
        assert result.set.soft_labels is not None and result.set.meta["soft_labels"]["temperature"] > 0


def test_a_subset_that_loses_to_random_is_never_returned(noisy):
    ds, _ = noisy
    # hardest-first EL2N keeps the mislabelled rows: it loses to random; auto must not return it
    result = dd.auto(ds, max_drop=1.0, **{**FAST, "methods": ["el2n"], "ratios": [0.05, 0.1]},
                     method_params={"el2n": {"strategy": "hardest", "score_params": {"min_steps": 200}}})
    assert any(r["loses_to_random"] for r in result.verification)
    assert result.fallback and "below random" in result.fallback
    assert not result.verified["loses_to_random"]
    assert result.set.method == "auto:stratified"
    el2n_rows = [r for r in result.verification if r["method"] == "el2n"]
    assert all(r["outcome"] == "below random" for r in el2n_rows)


def test_budget_too_small_says_the_minimum_and_the_minimum_runs(digits, halving, monkeypatch):
    def slow_steps(self):  # as if one proxy step took 1 s here: 50 s per proxy
        self.step_seconds = 1.0
        return self.step_seconds

    monkeypatch.setattr(_Search, "time_one_step", slow_steps)
    with pytest.raises(ConfigError, match=r"too small.*give at least [0-9.]+ minutes") as err:
        dd.auto(digits, budget_minutes=1, **FAST)
    assert "1000.00 ms per step, measured here" in str(err.value)
    minimum = float(re.search(r"at least ([0-9.]+) minutes", str(err.value)).group(1))
    assert minimum * 60 >= 2 * 50 / 0.6  # two proxies within the search's 60% of the budget
    result = dd.auto(digits, budget_minutes=minimum, max_drop=2.0, **FAST)
    # the search stops when its share is spent (by the proxies' estimated cost) and verifies the best so far
    assert 1 <= len(result.candidates) < len(halving.candidates)
    assert any("budget" in n for n in result.notes)
    assert not result.verified["loses_to_random"]


@pytest.mark.parametrize("kwargs, message", [
    ({"max_drop": -1}, r"max_drop must be .*\[0, 100\)"),
    ({"max_drop": 100}, r"max_drop must be .*\[0, 100\)"),
    ({"max_drop": float("nan")}, "max_drop"),
    ({"search": "grid"}, "unknown search 'grid'; choose one of: halving, bayes, genetic"),
    ({"methods": ["nope"]}, "unknown selection method nope"),
    ({"methods": ["herding", "stratified"], "soft_labels": True},
     "herding, stratified have none; the methods with a probe are entropy, margin, least-confidence, el2n, "
     "gradnorm, forgetting"),
    ({"budget_minutes": 0}, "budget_minutes must be a positive number"),
    ({"model": "resnet50"}, "unknown model 'resnet50'"),
])
def test_bad_input(digits, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        dd.auto(digits, **kwargs)


def test_existing_output_is_refused(digits, tmp_path):
    (tmp_path / "mine.txt").write_text("not auto's")
    with pytest.raises(ArtifactError, match="already exists"):
        dd.auto(digits, out=tmp_path, **FAST)
    with pytest.raises(ArtifactError, match="did not write"):
        dd.auto(digits, out=tmp_path, overwrite=True, **FAST)


# --- CLI --------------------------------------------------------------------------------------------
def test_cli_auto_writes_the_set_and_the_search_report(tmp_path, capsys, digits):
    out = tmp_path / "auto"
    code = main(["auto", "digits", "--model", "logreg", "--max-drop", "2", "--methods", "stratified,herding",
                 "--ratios", "0.05,0.2", "--proxy-steps", "50", "--verify-steps", "300", "--budget-minutes", "1",
                 "--out", str(out)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "auto kept" in captured.out and "search report" in captured.out
    assert sorted(p.name for p in out.iterdir()) == sorted([SET_DIR, SEARCH_JSON, SEARCH_MD])
    report = json.loads((out / SEARCH_JSON).read_text())
    assert {"chosen", "verified", "candidates", "verification", "timings", "settings", "environment"} <= set(report)
    assert report["settings"]["command"].startswith("datadistill")
    subset = DistilledSet.open(out / SET_DIR)
    assert len(subset) == report["verified"]["size"]
    assert subset.meta["auto"]["verified"]["drop"] == pytest.approx(report["verified"]["drop"])
    assert "## Candidates tried" in (out / SEARCH_MD).read_text()
    # an existing output is refused unless --overwrite, which replaces what auto wrote
    assert main(["auto", "digits", "--out", str(out)]) == 2
    assert "already exists" in capsys.readouterr().err


def test_cli_auto_bad_input_is_one_line(tmp_path, capsys):
    assert main(["auto", "digits", "--max-drop", "-1", "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "max_drop must be" in err[0]
    assert main(["auto", "digits", "--soft-labels", "--methods", "herding", "--out", str(tmp_path / "a")]) == 2
    assert "the methods with a probe are entropy" in capsys.readouterr().err
    assert not (tmp_path / "a").exists()


def test_cli_select_check_warns_and_records(tmp_path, capsys):
    out = tmp_path / "el2n"
    code = main(["select", "digits", "--method", "el2n", "--param", "strategy=hardest", "--ratio", "0.05",
                 "--check", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 0
    warning = [line for line in err.splitlines() if line.startswith("warning: the el2n subset scored")]
    assert len(warning) == 1 and "for random subsets of the same size" in warning[0]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["check"]["verdict"] == "worse" and meta["check"]["model"] == "logreg"
