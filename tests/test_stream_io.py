"""The command-line streaming path: probe, warm-up and evaluation rows from uniform samples of the first pass."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from datadistill.data.dataset import Dataset
from datadistill.errors import ConfigError
from datadistill.select import stream
from datadistill.select.base import get_selector
from datadistill.stream_io import UniformSample, open_stream, run_stream_select, scan

PROBE = {"probe_rows": 800, "epochs": 3, "device": "cpu"}


def drifting(n=4000, head=1000, noise=0.1, seed=3):
    """Two classes; in the first ``head`` rows the label follows feature 1 and the features spread 4x less,
    in the rest it follows feature 0, with a ``noise`` share of flipped labels (rows a good probe gets wrong)."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    X[:head] *= 0.25
    X[:head, 2] += 3.0  # the head's regime is recognisable, as ijcnn1's narrower first rows are
    y = (X[:, 0] > 0).astype(np.int64)
    y[:head] = X[:head, 1] > 0
    flip = np.zeros(n, dtype=bool)
    flip[head:] = rng.random(n - head) < noise
    y[flip] = 1 - y[flip]
    return X.astype(np.float32), y, flip


def write_shards(tmp_path, X, y, n_shards=4, extra=None):
    d = tmp_path / "shards"
    d.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(y)), n_shards)):
        cols = {f"f{j}": pa.array(X[part, j]) for j in range(X.shape[1])}
        cols["label"] = pa.array(y[part])
        for name, values in (extra or {}).items():
            cols[name] = pa.array(values[part])
        pq.write_table(pa.table(cols), d / f"part-{i:03d}.parquet")
    return d


class Recorder:
    """Wraps probe_scorer: records each trained probe (and its training rows' feature 2)."""

    def __init__(self, real):
        self.real, self.scorers, self.trained_on = real, [], []

    def __call__(self, dataset, **kw):
        self.trained_on.append(np.asarray(dataset.X))
        scorer = self.real(dataset, **kw)
        self.scorers.append(scorer)
        return scorer


def wrong_share(scorer, X, y):
    return float(scorer(X, y, return_wrong=True)[1].mean())


OLD = {  # the command line's former behaviour: a probe on the first rows (reservoir), no probe and E from the
    # first rows (facility location)
    "stream-reservoir": {"probe_sample": "head", "warmup": 400},
    "stream-facility-location": {"drop_misclassified": False, "eval_sample": "head", "n_eval": 300},
}
NEW = {"stream-reservoir": {"warmup": 400}, "stream-facility-location": {"n_eval": 300}}


@pytest.mark.parametrize("method", ["stream-reservoir", "stream-facility-location"])
def test_stream_probe_trains_on_a_uniform_sample_and_leaves_out_misclassified_rows(tmp_path, monkeypatch, method):
    X, y, flip = drifting()
    shards = write_shards(tmp_path, X, y)
    rec = Recorder(stream.probe_scorer)
    monkeypatch.setattr(stream, "probe_scorer", rec)
    new = run_stream_select(shards, method, 80, None, batch_size=256, **PROBE, **NEW[method])
    assert len(rec.scorers) == 1
    probe_new, rows_new = rec.scorers[0], rec.trained_on[0]
    # the probe's rows are drawn uniformly: about a quarter of them from the head regime (feature 2 near 3)
    assert len(rows_new) == PROBE["probe_rows"] and 0.15 < np.mean(rows_new[:, 2] > 1.5) < 0.35
    old = run_stream_select(shards, method, 80, None, batch_size=256, **PROBE, **OLD[method])
    ds = Dataset.create(X, y, name="drift")
    uniform = stream.dataset_probe(get_selector(method, size=80, **PROBE), ds)
    err_new, err_uni = wrong_share(probe_new, X, y), wrong_share(uniform, X, y)
    assert abs(err_new - err_uni) < 0.05 and err_new < 0.2, (err_new, err_uni)
    if method == "stream-reservoir":
        probe_old = rec.scorers[1]
        assert np.array_equal(rec.trained_on[1], X[:PROBE["probe_rows"]])  # "head": the first rows, as before
        assert wrong_share(probe_old, X, y) > 0.3
    # rows a probe trained on a uniform sample gets wrong are left out while the others suffice
    bad = uniform(X, y, return_wrong=True)[1]
    assert bad.mean() > 0.08
    kept_new, kept_old = bad[new.indices].mean(), bad[old.indices].mean()
    assert kept_new <= 0.02 and flip[new.indices].mean() <= 0.02, kept_new
    if method == "stream-reservoir":
        assert kept_old > 0.06, kept_old
    else:  # the old evaluation rows, the first ones, drew every kept row from the head regime
        head_old, head_new = np.mean(old.indices < 1000), np.mean(new.indices < 1000)
        assert head_old > 0.8 and head_new < 0.4, (head_old, head_new)
        no_mask = run_stream_select(shards, method, 80, None, batch_size=256, drop_misclassified=False,
                                    **PROBE, **NEW[method])
        assert bad[no_mask.indices].mean() > 2 * max(kept_new, 0.02), bad[no_mask.indices].mean()
    # the same defaults as fit(dataset): the same class budgets, and its kept rows are as clean
    fitted = get_selector(method, size=80, **PROBE, **NEW[method]).fit(ds)
    assert np.array_equal(np.bincount(y[new.indices], minlength=2), np.bincount(y[fitted.indices_], minlength=2))
    assert bad[fitted.indices_].mean() < 0.03


def test_reservoir_edges_come_from_uniform_warm_up_rows(tmp_path, monkeypatch):
    X, y, _ = drifting(3000, head=750)
    shards = write_shards(tmp_path, X, y)
    seen = {}
    real_new_part = stream.StreamingReservoirSelector._new_part

    def new_part(self, k, part):
        state = real_new_part(self, k, part)
        seen[part] = state
        return state

    monkeypatch.setattr(stream.StreamingReservoirSelector, "_new_part", new_part)
    res = run_stream_select(shards, "stream-reservoir", 60, None, batch_size=200, warmup=300, n_strata=5,
                            strata="quantile", **PROBE)
    assert len(res) == 60
    for c in (0, 1):
        state = seen[c]
        assert state.edges is not None and state.buffer == []  # fixed before the pass: no warm-up rows held
        assert state.n_pool == int((y == c).sum())  # the pool's size is known from the first pass


def test_uniform_sample_is_uniform_bounded_and_independent_of_piece_size():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(5000, 2))
    raw = rng.integers(0, 3, 5000)
    picks = []
    for piece in (1, 97, 5000):
        s = UniformSample(200, [1, 13], per_class=True)
        for i in range(0, len(X), piece):
            s.add(X[i:i + piece], raw[i:i + piece], i)
            assert all(len(p[0]) <= 200 for p in s.pools.values())
        assert s.max_held_ <= 3 * 200
        picks.append({v: np.sort(p[3]).tolist() for v, p in s.pools.items()})
    assert picks[0] == picks[1] == picks[2]
    for v, rows in picks[0].items():
        rows = np.asarray(rows)
        assert len(rows) == 200 and (raw[rows] == v).all()
        assert 0.15 < np.mean(rows < 1250) < 0.35 and 0.15 < np.mean(rows >= 3750) < 0.35
    # the rows with the m smallest keys are the first m of a larger sample (nested uniform samples)
    whole = UniformSample(50, [1, 13], per_class=True)
    whole.add(X, raw, 0)
    for v in whole.pools:
        assert set(whole.pools[v][3].tolist()) <= set(picks[0][v])


def test_scan_keeps_at_most_the_sample_rows(tmp_path):
    X, y, _ = drifting(3000)
    source = open_stream(write_shards(tmp_path, X, y))
    probe = UniformSample(500, [0, 7], per_class=False)
    pools = UniformSample(120, [0, 13], per_class=True)
    stats = scan(source, 64, (probe, pools))
    assert probe.max_held_ == 500 and pools.max_held_ <= 2 * 120
    parts = pools.by_class(stats)
    assert sorted(parts) == [0, 1]
    for c, (Xc, yc, rows, _, keys) in parts.items():
        assert len(rows) == 120 and (yc == c).all() and np.array_equal(Xc, X[rows].astype(np.float64))
        Xs, ys, rs, _ = UniformSample.smallest(parts[c], 30)
        assert len(rs) == 30 and set(rs.tolist()) <= set(rows.tolist())
        assert keys[np.isin(rows, rs)].max() <= keys[~np.isin(rows, rs)].min()


def test_run_stream_select_scan_memory_is_bounded_by_the_samples(tmp_path):
    X, y, _ = drifting(3000)
    shards = write_shards(tmp_path, X, y)
    res = run_stream_select(shards, "stream-reservoir", 40, None, batch_size=128, warmup=150, **PROBE)
    meta = res.meta["stream"]
    assert meta["probe_rows"] == PROBE["probe_rows"]
    assert PROBE["probe_rows"] < meta["scan_sample_rows"] <= PROBE["probe_rows"] + 2 * 150
    kc = run_stream_select(shards, "stream-kcenter", 40, None, batch_size=128)
    assert kc.meta["stream"]["scan_sample_rows"] == 0 and kc.meta["stream"]["probe_rows"] is None


def test_score_column_needs_no_probe_and_sets_edges_from_a_uniform_sample(tmp_path, monkeypatch):
    n = 4000
    rng = np.random.default_rng(5)
    X = rng.normal(size=(n, 2)).astype(np.float32)
    y = rng.integers(0, 2, n)
    score = rng.random(n)
    score[: n // 4] *= 0.1  # the first rows score low: edges from them would crowd the low scores
    shards = write_shards(tmp_path, X, y, extra={"difficulty": score})

    def no_probe(*a, **kw):
        raise AssertionError("a score column needs no probe")

    monkeypatch.setattr(stream, "probe_scorer", no_probe)
    res = run_stream_select(shards, "stream-reservoir", 100, None, batch_size=200, score_column="difficulty",
                            warmup=400, n_strata=10, strata="quantile")
    assert len(res) == 100 and res.meta["stream"]["score_column"] == "difficulty"
    high = np.mean(score[res.indices] > np.median(score))
    assert 0.35 < high < 0.65, high  # equal-count strata of all scores: about half the rows above the median
    head = run_stream_select(shards, "stream-reservoir", 100, None, batch_size=200, score_column="difficulty",
                             warmup=400, n_strata=10, strata="quantile", probe_sample="head")
    assert np.mean(score[head.indices] > np.median(score)) < 0.25  # edges from the first rows: crowded low


def test_bad_probe_parameters_are_refused_before_reading(tmp_path):
    X, y, _ = drifting(400, head=100)
    shards = write_shards(tmp_path, X, y)
    with pytest.raises(ConfigError, match="probe_sample"):
        run_stream_select(shards, "stream-reservoir", 10, None, probe_sample="tail")
    with pytest.raises(ConfigError, match="probe_rows"):
        run_stream_select(shards, "stream-facility-location", 10, None, probe_rows=0)
