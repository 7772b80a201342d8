"""Streaming selection: guarantees against the offline algorithms, bounded state, Parquet/CSV streams."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
import torch

from datadistill.data.artifact import DistilledSet
from datadistill.errors import ConfigError, DataError
from datadistill.select.base import allocate, get_selector
from datadistill.select.facility_location import facility_location_greedy, facility_location_value
from datadistill.select.kcenter import kcenter_greedy
from datadistill.select.stream import (
    KCENTER_FACTOR,
    SieveFacilityLocationSelector,
    StreamingKCenter,
    StreamingReservoirSelector,
    gaussian_similarity,
    median_neighbour_distance,
    squared_distances,
    water_fill,
)
from datadistill.stream_io import open_stream, run_stream_select


def blobs(n=1500, d=4, k=3, seed=0):
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=4.0, size=(12, d))
    which = rng.integers(0, 12, n)
    X = centres[which] + rng.normal(size=(n, d)) * rng.uniform(0.3, 1.5, size=(n, 1))
    y = rng.integers(0, k, n)
    return X.astype(np.float64), y.astype(np.int64)


def feed(selector, X, y, batch, **kw):
    for i in range(0, len(X), batch):
        extra = {key: v[i:i + batch] for key, v in kw.items()}
        selector.partial_fit(X[i:i + batch], y[i:i + batch], **extra)
    return selector


def covering_radius(P, C):
    return float(np.sqrt(squared_distances(P, C).min(axis=1)).max())


def test_streaming_kcenter_radius_within_proven_factor_of_offline_greedy():
    X, y = blobs(2400, d=5)
    alloc = allocate(np.bincount(y), 45, "proportional")
    sel = feed(StreamingKCenter(size=45, allocation=alloc.tolist()), X, y, 97)
    assert len(sel.indices_) == 45
    assert np.array_equal(np.bincount(y[sel.indices_], minlength=3), alloc)
    for c in range(3):
        pool = X[y == c]
        kept = X[sel.indices_[y[sel.indices_] == c]]
        _, _, r_greedy = kcenter_greedy(torch.as_tensor(pool), int(alloc[c]), d2=False)
        r_stream = covering_radius(pool, kept)
        # r_stream <= 8 L, L <= OPT <= r_greedy (greedy is feasible), hence r_stream <= 8 r_greedy
        assert r_stream <= sel.radius_bound_[c] * (1 + 1e-9)
        assert sel.lower_bound_[c] <= r_greedy * (1 + 1e-9)
        assert r_stream <= KCENTER_FACTOR * r_greedy
        assert sel.weights_[y[sel.indices_] == c].sum() == pytest.approx((y == c).sum())


def test_sieve_facility_location_at_least_half_minus_eps_of_lazy_greedy():
    X, y = blobs(500, d=3, seed=1)
    k, eps = 12, 0.1
    sigma = median_neighbour_distance(X)
    sel = SieveFacilityLocationSelector(size=k, per_class=None, eps=eps, n_eval=len(X), sigma=sigma)
    feed(sel, X, y, 64)
    W = sp.csc_matrix(gaussian_similarity(X, X, sigma))
    greedy, _, _ = facility_location_greedy(W, k, np.random.default_rng(0))
    f_greedy = facility_location_value(W, greedy)
    f_sieve = facility_location_value(W, sel.indices_)
    assert len(sel.indices_) == k
    assert sel.objective_[0] == pytest.approx(f_sieve, rel=1e-9)
    # f(sieve) >= (1/2 - eps) OPT >= (1/2 - eps) f(greedy)
    assert f_sieve >= (0.5 - eps) * f_greedy
    assert f_sieve <= f_greedy / (1 - 1 / np.e) + 1e-9  # greedy's own (1 - 1/e) bound on OPT


def test_results_do_not_depend_on_batch_size_with_fixed_budgets():
    X, y = blobs(900, d=3, seed=2)
    scores = np.random.default_rng(3).gamma(2.0, size=len(X))
    alloc = allocate(np.bincount(y), 30, "proportional").tolist()
    makers = {
        "kcenter": (lambda: StreamingKCenter(size=30, allocation=alloc), {}),
        "sieve": (lambda: SieveFacilityLocationSelector(size=30, allocation=alloc, n_eval=60), {}),
        "reservoir": (lambda: StreamingReservoirSelector(size=30, allocation=alloc, warmup=50, n_strata=4),
                      {"scores": scores}),
    }
    for name, (make, kw) in makers.items():
        runs = [feed(make(), X, y, b, **kw) for b in (1, 13, 250, len(X))]
        for other in runs[1:]:
            assert np.array_equal(runs[0].indices_, other.indices_), name
            assert np.allclose(runs[0].weights_, other.weights_), name


def test_reservoir_respects_per_class_budgets_and_spreads_over_strata():
    X, y = blobs(3000, d=2, seed=4)
    scores = np.random.default_rng(5).random(len(X))
    alloc = [20, 10, 30]
    sel = feed(StreamingReservoirSelector(size=60, allocation=alloc, warmup=200, n_strata=5), X, y, 128,
               scores=scores)
    got = np.bincount(y[sel.indices_], minlength=3)
    assert got.tolist() == alloc
    for c in range(3):  # equal-count strata of a uniform score: the sample covers each fifth of the range
        s = scores[sel.indices_[y[sel.indices_] == c]]
        per = np.histogram(s, bins=np.linspace(0, 1, 6))[0]
        assert per.min() >= alloc[c] // 5 - 2 and per.max() <= alloc[c] // 5 + 2
    # budgets that follow the counts seen so far: never above the final allocation
    free = feed(StreamingReservoirSelector(size=60, warmup=100), X, y, 100, scores=scores)
    final = allocate(np.bincount(y), 60, "proportional")
    got = np.bincount(y[free.indices_], minlength=3)
    assert (got <= final).all() and got.sum() >= 57
    # prune drops the hardest rows
    pruned = feed(StreamingReservoirSelector(size=60, allocation=alloc, warmup=500, prune=0.3), X, y, 500,
                  scores=scores)
    assert scores[pruned.indices_].max() <= 0.75


def test_kept_state_never_exceeds_budget_plus_per_class_buffers():
    X, y = blobs(1200, d=3, seed=6)
    scores = np.random.default_rng(7).random(len(X))
    k = 24
    for sel, kw in ((StreamingKCenter(size=k), {}),
                    (SieveFacilityLocationSelector(size=k, n_eval=40, eps=0.2), {}),
                    (StreamingReservoirSelector(size=k, warmup=30, n_strata=4), {"scores": scores})):
        stored = []
        for i in range(0, len(X), 7):
            sel.partial_fit(X[i:i + 7], y[i:i + 7], **{key: v[i:i + 7] for key, v in kw.items()})
            stored.append(sum(s.stored() for s in sel.parts_.values()))
            bound = sum(s.k + sel.buffer_rows(s.k) for s in sel.parts_.values())
            assert stored[-1] <= bound, sel.name
        assert sel.max_stored_rows_ == max(stored)
        assert sel.max_stored_rows_ < len(X) / 4, sel.name  # far below the stream's length
    # k-center's own bound: at most 2k + 1 rows per class
    kc = feed(StreamingKCenter(size=k, allocation=[8, 8, 8]), X, y, 1)
    assert kc.max_stored_rows_ <= 3 * (2 * 8 + 1)


def test_water_fill_is_the_emptiest_first_equal_share():
    assert water_fill(np.array([2, 50, 50, 0]), 20).tolist() == [2, 9, 9, 0]
    assert water_fill(np.array([3, 3]), 10).tolist() == [3, 3]
    assert water_fill(np.array([5, 5, 5]), 7).sum() == 7


def test_fit_on_a_dataset_and_partial_fit_guards():
    from datadistill.data.dataset import Dataset

    X, y = blobs(600, d=3, seed=8)
    ds = Dataset.create(X.astype(np.float32), y, name="blobs")
    sel = get_selector("stream-kcenter", ratio=0.05, batch_size=100).fit(ds)
    out = sel.transform(ds)
    assert len(out) == 30 and np.array_equal(out.X, ds.X[sel.indices_])
    assert np.array_equal(np.bincount(out.y, minlength=3), allocate(ds.class_counts(), 30, "proportional"))
    with pytest.raises(ConfigError, match="needs size"):
        StreamingKCenter(ratio=0.1).partial_fit(X, y)
    with pytest.raises(ConfigError, match="scores"):
        StreamingReservoirSelector(size=5).partial_fit(X, y)
    s = StreamingKCenter(size=5).partial_fit(X[:10], y[:10])
    with pytest.raises(DataError, match="shape"):
        s.partial_fit(X[:10, :2], y[:10])


def write_shards(tmp_path, X, y, n_shards=3, embedding=False):
    d = tmp_path / "shards"
    d.mkdir()
    for i, part in enumerate(np.array_split(np.arange(len(X)), n_shards)):
        if embedding:
            cols = {"emb": pa.array([row.tolist() for row in X[part]], type=pa.list_(pa.float32()))}
        else:
            cols = {f"f{j}": pa.array(X[part, j]) for j in range(X.shape[1])}
        cols["label"] = pa.array(y[part])
        pq.write_table(pa.table(cols), d / f"part-{i:03d}.parquet")
    return d


@pytest.mark.parametrize("embedding", [False, True])
def test_parquet_shards_round_trip(tmp_path, embedding):
    X, y = blobs(700, d=4, seed=9)
    X = X.astype(np.float32)
    shards = write_shards(tmp_path, X, y, embedding=embedding)
    out = tmp_path / "kept"
    res = run_stream_select(shards, "stream-kcenter", 21, out, batch_size=64)
    back = DistilledSet.open(out)
    assert len(back) == 21
    assert np.array_equal(back.X, X[back.indices])
    assert np.array_equal(back.y, y[back.indices])
    assert back.meta["stream"]["class_budgets"] == allocate(np.bincount(y), 21, "proportional").tolist()
    # the same rows as streaming the arrays in memory with the same standardisation
    Xd = X.astype(np.float64)
    Z = (Xd - Xd.mean(axis=0)) / Xd.std(axis=0)
    mem = feed(StreamingKCenter(size=21, allocation=back.meta["stream"]["class_budgets"]), X, y, 50, features=Z)
    assert np.array_equal(np.sort(mem.indices_), np.sort(res.indices))


def test_csv_stream_and_string_labels(tmp_path):
    X, y = blobs(400, d=3, seed=10)
    names = np.array(["cat", "dog", "eel"])[y]
    path = tmp_path / "big.csv"
    with open(path, "w") as fh:
        fh.write("a,b,c,target\n")
        for row, lab in zip(X, names):
            fh.write(f"{float(row[0])!r},{float(row[1])!r},{float(row[2])!r},{lab}\n")
    res = run_stream_select(path, "stream-facility-location", 15, tmp_path / "out", batch_size=50, n_eval=40)
    back = DistilledSet.open(tmp_path / "out")
    assert back.classes == ("cat", "dog", "eel") and len(back) == 15
    assert np.allclose(back.X, X[res.indices].astype(np.float32))
    assert [back.classes[c] for c in back.y] == names[res.indices].tolist()
    res = run_stream_select(path, "stream-reservoir", 12, None, batch_size=50, score_column=None,
                            probe_rows=200, epochs=1, device="cpu", warmup=20)
    assert len(res) == 12


def test_bad_streams_are_refused_with_the_shard_and_column(tmp_path):
    X, y = blobs(300, d=3, seed=11)
    shards = write_shards(tmp_path, X, y)
    bad = tmp_path / "shards" / "part-001.parquet"
    pq.write_table(pa.table({"f0": pa.array(X[:5, 0]), "f1": pa.array(X[:5, 1]), "other": pa.array(X[:5, 2]),
                             "label": pa.array(y[:5])}), bad)
    with pytest.raises(DataError, match=r"part-001\.parquet.*'f2'"):
        open_stream(shards)
    pq.write_table(pa.table({"f0": pa.array(X[:5, 0]), "f1": pa.array(X[:5, 1]), "f2": pa.array(X[:5, 2])}), bad)
    with pytest.raises(DataError, match=r"part-001\.parquet.*label column 'label' is missing"):
        open_stream(shards)
    pq.write_table(pa.table({"f0": pa.array(X[:5, 0]), "f1": pa.array(X[:5, 1]),
                             "f2": pa.array(["x"] * 5), "label": pa.array(y[:5])}), bad)
    with pytest.raises(DataError, match=r"part-001\.parquet.*column 'f2' has type string"):
        open_stream(shards)
    ragged = tmp_path / "ragged"
    ragged.mkdir()
    rows = [[1.0, 2.0, 3.0]] * 10 + [[1.0, 2.0]] + [[0.0, 1.0, 2.0]] * 5
    pq.write_table(pa.table({"emb": pa.array(rows, type=pa.list_(pa.float64())),
                             "label": pa.array([0, 1] * 8)}), ragged / "a.parquet")
    with pytest.raises(DataError, match=r"row 10: embedding column 'emb' has 2 values.*ragged"):
        run_stream_select(ragged, "stream-kcenter", 4, None, batch_size=4)
    with pytest.raises(ConfigError, match="--stream works with"):
        run_stream_select(shards, "kcenter", 4, None)


def test_open_stream_refuses_bad_files_headers_and_layouts(tmp_path):
    with pytest.raises(DataError, match="no such file or directory"):
        open_stream(tmp_path / "missing")
    (tmp_path / "empty-dir").mkdir()
    with pytest.raises(DataError, match=r"no \.parquet shards"):
        open_stream(tmp_path / "empty-dir")
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match="unknown format '.json'"):
        open_stream(tmp_path / "data.json")
    path = tmp_path / "t.csv"
    path.write_text("")
    with pytest.raises(DataError, match="empty file"):
        open_stream(path)
    path.write_text("a,b,a,label\n1,2,3,0\n")
    with pytest.raises(DataError, match="duplicate column name.*'a'"):
        open_stream(path)
    path.write_text("a,b\n1,2\n")
    with pytest.raises(ConfigError, match="delimiter must be one character"):
        open_stream(path, "a", delimiter=";;")
    with pytest.raises(DataError, match="none named label/target/class/y"):
        open_stream(path)
    with pytest.raises(DataError, match="label column 'z' not found"):
        open_stream(path, "z")
    with pytest.raises(DataError, match="score column 's' not found"):
        open_stream(path, "a", score_column="s")
    with pytest.raises(DataError, match="no feature columns besides the label 'a'"):
        open_stream(path, "a", score_column="b")
    src = open_stream(path, "b")
    assert (src.kind, src.label, src.features, src.embedding) == ("csv", "b", ["a"], None)
    emb = pa.array([[1.0, 2.0], [3.0, 4.0]], type=pa.list_(pa.float64()))
    one = tmp_path / "one.parquet"
    pq.write_table(pa.table({"emb": emb, "f": pa.array([1.0, 2.0]), "label": pa.array([0, 1])}), one)
    with pytest.raises(DataError, match="embedding column 'emb' beside other feature columns \\(f\\)"):
        open_stream(one)
    pq.write_table(pa.table({"emb": pa.array([["a"], ["b"]]), "label": pa.array([0, 1])}), one)
    with pytest.raises(DataError, match="embedding column 'emb' holds string, not numbers"):
        open_stream(one)
    pq.write_table(pa.table({"f": pa.array(["a", "b"]), "label": pa.array([0, 1])}), one)
    with pytest.raises(DataError, match="column 'f' is not numeric"):
        open_stream(one)
    pq.write_table(pa.table({"emb": emb, "target": pa.array([0, 1])}), one)
    src = open_stream(one)
    assert (src.kind, src.label, src.features, src.embedding) == ("parquet", "target", ["emb"], "emb")


def test_stream_progress_goes_through_the_progress_guard(tmp_path, capsys):
    X, y = blobs(200, d=3, seed=12)
    res = run_stream_select(write_shards(tmp_path, X, y), "stream-kcenter", 6, None, batch_size=64, progress=True)
    assert len(res) == 6
    assert capsys.readouterr().err == ""   # stderr is no terminal here: no carriage-return updates in a log


def offline_strata_counts(difficulty, wrong, k, n_strata, strata, positions):
    """Per-stratum counts of ``positions`` under the offline coverage rule's strata (strategy.coverage_strata,
    prune 0) of the correctly classified rows, recomputed here from its definition."""
    from datadistill.select.strategy import width_share

    s = difficulty[~wrong]
    mix = {"quantile": 0.0, "width": 1.0}.get(strata, None)
    mix = width_share(k / len(s)) if mix is None else mix
    edges = (1 - mix) * np.quantile(s, np.linspace(0, 1, n_strata + 1)) + mix * np.linspace(s.min(), s.max(),
                                                                                           n_strata + 1)
    bins = np.clip(np.searchsorted(edges, difficulty[positions], side="right") - 1, 0, n_strata - 1)
    return np.bincount(bins, minlength=n_strata)


@pytest.mark.parametrize("strata", ["quantile", "width"])
def test_reservoir_per_stratum_counts_equal_offline_coverage_budgets(strata):
    from datadistill.select.strategy import choose

    rng = np.random.default_rng(11)
    n = 2400
    y = rng.integers(0, 3, n)
    scores = rng.gamma(1.5, size=n) * (1 + y)  # skewed, class-dependent difficulty
    wrong = rng.random(n) < 0.06
    alloc = [30, 45, 25]
    sel = StreamingReservoirSelector(size=100, allocation=alloc, n_strata=20, strata=strata, warmup=n)
    feed(sel, np.zeros((n, 1)), y, 173, scores=scores, wrong=wrong)
    for c in range(3):
        pool = np.flatnonzero(y == c)
        kept = np.searchsorted(pool, sel.indices_[y[sel.indices_] == c])
        offline = choose(scores[pool], alloc[c], np.random.default_rng(c), wrong=wrong[pool], prune=0.0,
                         n_strata=20, strata=strata)
        assert len(kept) == alloc[c] and not wrong[pool][kept].any()
        got = offline_strata_counts(scores[pool], wrong[pool], alloc[c], 20, strata, kept)
        want = offline_strata_counts(scores[pool], wrong[pool], alloc[c], 20, strata, offline)
        assert np.abs(got - want).max() <= 1, (c, got, want)
        assert got.sum() == want.sum()


def test_reservoir_auto_strata_blend_by_budget_as_offline():
    from datadistill.select.strategy import choose, width_share
    from datadistill.select.stream import StrataReservoir, coverage_edges

    rng = np.random.default_rng(12)
    n, k = 1500, 150  # 10% of the pool: between equal-count and equal-width strata
    scores = rng.exponential(size=n)
    wrong = rng.random(n) < 0.05
    state = StrataReservoir(k, 25, n, 0.0, None, np.random.default_rng(0), strata="auto", n_pool=n)
    src = [(np.zeros(1), 0)] * n
    state.push(scores, np.arange(n), src, wrong)
    kept = np.asarray(state.result()[0])
    offline = choose(scores, k, np.random.default_rng(1), wrong=wrong, prune=0.0, n_strata=25, strata="auto")
    got = offline_strata_counts(scores, wrong, k, 25, "auto", kept)
    want = offline_strata_counts(scores, wrong, k, 25, "auto", offline)
    assert 0 < width_share(k / (~wrong).sum()) < 1
    assert np.abs(got - want).max() <= 1 and got.sum() == k
    # the blend differs from both pure rules, so the check above could fail for a wrong mix
    right = scores[~wrong]
    for pure in ("quantile", "width"):
        assert not np.allclose(coverage_edges(right, k, (~wrong).sum(), 25, "auto"),
                               coverage_edges(right, k, None, 25, pure))
    with pytest.raises(ConfigError, match="strata"):
        coverage_edges(right, k, n, 25, "equal")


def test_reservoir_keeps_the_least_hard_misclassified_rows_when_the_others_run_out():
    from datadistill.select.strategy import choose

    rng = np.random.default_rng(13)
    n = 300
    scores = rng.random(n)
    wrong = np.ones(n, dtype=bool)
    wrong[:5] = False
    sel = feed(StreamingReservoirSelector(size=20, per_class=None, warmup=50, n_strata=5), np.zeros((n, 1)),
               np.zeros(n, dtype=np.int64), 37, scores=scores, wrong=wrong)
    offline = choose(scores, 20, np.random.default_rng(0), wrong=wrong)
    assert sorted(sel.indices_.tolist()) == sorted(offline.tolist())


class FakeProbe:
    """Stands in for probe_scorer: records the rows it was trained on; score = feature 0, wrong = feature 1 > 0."""

    def __init__(self):
        self.trained_on = []

    def __call__(self, dataset, **kw):
        self.trained_on.append(np.asarray(dataset.X[:, 2]))

        def scorer(X, y=None, return_wrong=False):
            X = np.asarray(X, dtype=np.float64)
            return (X[:, 0], X[:, 1] > 0) if return_wrong else X[:, 0]

        return scorer


def drifting_dataset(n=3000, seed=14):
    """A data set whose first quarter comes from a narrower regime than the rest (as ijcnn1's head does)."""
    from datadistill.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    spread = np.where(np.arange(n) < n // 4, 0.2, 1.0)
    X = np.column_stack([rng.exponential(size=n) * spread, (rng.random(n) < 0.05) * 1.0, np.arange(n),
                         rng.normal(size=n) * spread])
    y = rng.integers(0, 2, n)
    return Dataset.create(X.astype(np.float32), y, name="drift")


def test_fit_draws_probe_and_warm_up_rows_uniformly(monkeypatch):
    from datadistill.select import stream

    ds = drifting_dataset()
    fake = FakeProbe()
    monkeypatch.setattr(stream, "probe_scorer", fake)
    uni = StreamingReservoirSelector(ratio=0.05, probe_rows=400, warmup=600, n_strata=10, strata="quantile").fit(ds)
    head = StreamingReservoirSelector(ratio=0.05, probe_rows=400, warmup=600, n_strata=10, strata="quantile",
                                      probe_sample="head").fit(ds)
    rows_uni, rows_head = fake.trained_on
    assert np.array_equal(rows_head, np.arange(400))
    assert len(rows_uni) == 400 and rows_uni.max() > 0.9 * len(ds) and np.mean(rows_uni < len(ds) // 4) < 0.4
    for c in range(2):
        s = ds.X[(ds.y == c) & (ds.X[:, 1] == 0), 0]
        true_edges = np.quantile(s, np.linspace(0, 1, 11)[1:-1])
        err_uni = np.abs(uni.parts_[c].edges - true_edges).max()
        err_head = np.abs(head.parts_[c].edges - true_edges).max()
        assert err_uni < 0.5 * err_head, (c, err_uni, err_head)
        kept = uni.indices_[ds.y[uni.indices_] == c]
        assert (ds.X[kept, 1] == 0).all()  # no misclassified row while the others suffice
        assert uni.parts_[c].buffer == []  # the warm-up held scores only, no rows
    with pytest.raises(ConfigError, match="probe_sample"):
        StreamingReservoirSelector(ratio=0.05, probe_sample="tail").fit(ds)
    with pytest.raises(ConfigError, match="probe_rows"):
        StreamingReservoirSelector(ratio=0.05, probe_rows=0).fit(ds)


def test_sieve_drops_misclassified_rows_and_samples_its_evaluation_rows_uniformly(monkeypatch):
    from datadistill.select import stream

    ds = drifting_dataset(2000, seed=15)
    monkeypatch.setattr(stream, "probe_scorer", FakeProbe())
    wrong = ds.X[:, 1] > 0
    sel = SieveFacilityLocationSelector(ratio=0.02, n_eval=300, probe_rows=500).fit(ds)
    assert not wrong[sel.indices_].any() and len(sel.indices_) == 40
    for c in range(2):
        state = sel.parts_[c]
        E_rows = np.asarray(state.eval_rows.rows)
        assert not wrong[E_rows].any() and (ds.y[E_rows] == c).all()
        assert E_rows.max() > 0.9 * len(ds) and np.mean(E_rows < len(ds) // 4) < 0.4  # not the first rows
        # the bandwidth: the median distance to the round(20 x |E| / class rows) nearest rows within E
        want = median_neighbour_distance(state.E, max(1, round(20 * 300 / (ds.y == c).sum())))
        assert state.sigma == pytest.approx(want)
    off = SieveFacilityLocationSelector(ratio=0.02, n_eval=300, drop_misclassified=False, eval_sample="head").fit(ds)
    assert np.array_equal(np.asarray(off.parts_[0].eval_rows.rows), np.flatnonzero(ds.y == 0)[:300])
    # a class with fewer correctly classified rows than its budget: all of them, then misclassified ones
    X, y = blobs(400, d=2, seed=16)
    few = np.zeros(len(X), dtype=bool)
    few[y == 0] = True
    few[np.flatnonzero(y == 0)[:3]] = False
    s = feed(SieveFacilityLocationSelector(size=30, allocation=[10, 10, 10], n_eval=50), X, y, 64, wrong=few)
    kept0 = s.indices_[y[s.indices_] == 0]
    assert len(kept0) == 10 and set(np.flatnonzero((y == 0) & ~few)) <= set(kept0.tolist())
    assert not few[s.indices_[y[s.indices_] != 0]].any()
    with pytest.raises(ConfigError, match="eval_sample"):
        SieveFacilityLocationSelector(size=5, eval_sample="tail").partial_fit(X, y)


def test_lazy_greedy_top_up_picks_what_plain_greedy_picks():
    from datadistill.select.stream import greedy_top_up

    rng = np.random.default_rng(17)
    C, E = rng.normal(size=(120, 3)), rng.normal(size=(200, 3))
    start = np.maximum(gaussian_similarity(E, C[:2], 0.7).max(axis=1), 0.0)
    best = start.copy()
    picks = greedy_top_up(C, E, 0.7, best, 15)
    Sim, ref, plain = gaussian_similarity(C, E, 0.7), start.copy(), []
    for _ in range(15):
        gains = np.maximum(Sim - ref[None, :], 0.0).sum(axis=1)
        gains[plain] = -1.0
        plain.append(int(np.argmax(gains)))
        ref = np.maximum(ref, Sim[plain[-1]])
    assert picks == plain and np.allclose(best, ref)
