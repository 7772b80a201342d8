"""Out-of-core selection: memory-mapped .npy and Parquet shards, read in batches (datadistill.data.outofcore)."""

import tracemalloc

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from datadistill.data.dataset import Dataset
from datadistill.data.outofcore import open_out_of_core, score_out_of_core, select_out_of_core
from datadistill.errors import ConfigError, DataError
from datadistill.select import get_selector
from datadistill.select.kmeans import kmeans_prototypes, streamed_kmeans_prototypes


def blobs(n=1500, d=6, classes=3, seed=0):
    """Gaussian blobs, several per class, offset from the origin (standardisation matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=6.0, size=(classes * 4, d))
    comp = rng.integers(0, len(centres), n)
    X = (centres[comp] + rng.normal(size=(n, d)) + 50.0).astype(np.float32)
    return X, comp % classes


@pytest.fixture
def npy(tmp_path):
    X, y = blobs()
    np.save(tmp_path / "X.npy", X)
    np.save(tmp_path / "y.npy", y)
    return tmp_path / "X.npy", tmp_path / "y.npy", X, y


def write_shards(folder, X, y, *, n_shards=3, embedding=False):
    folder.mkdir(exist_ok=True)
    bounds = np.linspace(0, len(X), n_shards + 1).astype(int)
    for i, (s, e) in enumerate(zip(bounds[:-1], bounds[1:])):
        if embedding:
            cols = {"emb": pa.array([list(map(float, r)) for r in X[s:e]], type=pa.list_(pa.float32()))}
        else:
            cols = {f"f{j}": pa.array(X[s:e, j]) for j in range(X.shape[1])}
        cols["label"] = pa.array(y[s:e].astype(np.int64))
        pq.write_table(pa.table(cols), folder / f"part-{i:03d}.parquet")
    return folder


def in_memory(X, y, method, **kw):
    return get_selector(method, drop_misclassified=False, device="cpu", **kw).fit(Dataset.create(X, y))


@pytest.mark.parametrize("kw", [{"sampling": "farthest"}, {"sampling": "d2"},
                                {"sampling": "farthest", "trim": 0.1},
                                {"sampling": "farthest", "per_class": None, "random_state": 3}])
def test_kcenter_on_a_memory_map_picks_what_in_memory_kcenter_picks(npy, kw):
    path, ypath, X, y = npy
    ref = in_memory(X, y, "kcenter", ratio=0.05, **kw)
    out = select_out_of_core(path, "kcenter", ratio=0.05, labels=ypath, batch_size=128, **kw)
    np.testing.assert_array_equal(out.indices, ref.indices_)
    np.testing.assert_array_equal(out.weights, ref.weights_)
    np.testing.assert_array_equal(out.X, X[ref.indices_])  # the source's own values, not standardised ones
    np.testing.assert_array_equal(out.y, y[ref.indices_])
    radius = [p["radius"] for p in out.meta["out_of_core"]["pools"]]
    np.testing.assert_allclose(radius, ref.radius_, rtol=1e-6)


def test_kcenter_above_the_standardisation_sample_still_matches(tmp_path):
    X, y = blobs(n=52_000, d=3)  # more rows than the 50,000 the standardisation samples
    np.save(tmp_path / "X.npy", X)
    ref = in_memory(X, y, "kcenter", size=40, sampling="farthest")
    out = select_out_of_core(tmp_path / "X.npy", "kcenter", size=40, labels=y, sampling="farthest",
                             batch_size=5000)
    np.testing.assert_array_equal(out.indices, ref.indices_)


@pytest.mark.parametrize("embedding", [False, True])
def test_parquet_shards_give_the_same_picks_as_the_npy(tmp_path, npy, embedding):
    path, ypath, X, y = npy
    folder = write_shards(tmp_path / "shards", X, y, embedding=embedding)
    src = open_out_of_core(folder, batch_size=200)
    assert (src.n_rows, src.dim, src.classes) == (len(X), X.shape[1], ("0", "1", "2"))
    np.testing.assert_array_equal(src.y, y)
    a = select_out_of_core(src, "kcenter", ratio=0.03, sampling="farthest")
    b = select_out_of_core(path, "kcenter", ratio=0.03, labels=ypath, sampling="farthest")
    np.testing.assert_array_equal(a.indices, b.indices)
    np.testing.assert_array_equal(a.X, X[a.indices])
    rows = np.array([1499, 3, 700, 3])
    np.testing.assert_array_equal(src.take(rows), X[rows])


def objective(Z, y, picks):
    """Sum over rows of the squared distance to the nearest pick of the same class."""
    total = 0.0
    for c in np.unique(y):
        P = Z[picks[y[picks] == c]]
        R = Z[y == c]
        total += float(((R[:, None, :] - P[None]) ** 2).sum(-1).min(1).sum())
    return total


def test_kmeans_out_of_core_is_close_to_in_memory_kmeans_and_beats_random(npy):
    path, ypath, X, y = npy
    out = select_out_of_core(path, "kmeans", ratio=0.02, labels=ypath, batch_size=256, max_iter=5)
    counts = np.bincount(y)
    budgets = [p["budget"] for p in out.meta["out_of_core"]["pools"]]
    assert np.bincount(out.y).tolist() == budgets and sum(budgets) == 30
    assert out.weights.sum() == len(X)  # cluster sizes: every row counted once
    for c in range(3):
        assert out.weights[out.y == c].sum() == counts[c]
    Z = (X - X.mean(0)) / X.std(0)
    ref = in_memory(X, y, "kmeans", ratio=0.02, engine="sklearn")
    rnd = select_out_of_core(path, "random", ratio=0.02, labels=ypath, per_class="proportional")
    ours, theirs, chance = objective(Z, y, out.indices), objective(Z, y, ref.indices_), objective(Z, y, rnd.indices)
    assert ours < 1.25 * theirs and ours < 0.8 * chance


def test_streamed_kmeans_prototypes_are_members_nearest_their_centroid():
    X, _ = blobs(n=600, d=4, seed=2)
    X -= X.mean(0)

    def batches():
        for s in range(0, len(X), 64):
            yield s, torch.from_numpy(X[s:s + 64])

    protos, sizes, inertia = streamed_kmeans_prototypes(batches, lambda r: X[np.asarray(r)], len(X), 12,
                                                        random_state=0, epochs=3)
    assert len(np.unique(protos)) == 12 and sizes.sum() == len(X) and inertia > 0
    ref, _, ref_inertia = kmeans_prototypes(X, 12, random_state=0, engine="sklearn")
    assert inertia < 1.3 * ref_inertia


def test_scores_top_k_per_class_is_the_hardest_rows(npy):
    path, ypath, X, y = npy
    src = open_out_of_core(path, labels=ypath, batch_size=100)
    difficulty, wrong = score_out_of_core(src, "entropy", epochs=2, probe_rows=600)
    assert difficulty.shape == (len(X),) and wrong.dtype == bool and np.isfinite(difficulty).all()
    out = select_out_of_core(src, "entropy", ratio=0.04, strategy="hardest", epochs=2, probe_rows=600,
                             drop_misclassified=False)
    for p, c in zip(out.meta["out_of_core"]["pools"], range(3)):
        pool = np.flatnonzero(y == c)
        top = pool[np.argsort(-difficulty[pool], kind="stable")[:p["budget"]]]
        assert set(out.indices[out.y == c]) == set(top)
    cov = select_out_of_core(src, "margin", ratio=0.04, epochs=2, probe_rows=600)
    assert len(cov) == len(out) and len(np.unique(cov.indices)) == len(cov)


def test_drop_misclassified_keeps_probe_wrong_rows_out(npy):
    path, ypath, X, y = npy
    y = y.copy()
    y[:60] = (y[:60] + 1) % 3  # flipped labels: the probe disagrees with most of them
    src = open_out_of_core(path, labels=y)
    _, wrong = score_out_of_core(src, "entropy", probe_rows=50_000)
    out = select_out_of_core(src, "kcenter", ratio=0.05, sampling="farthest", drop_misclassified=True)
    assert wrong.sum() > 20 and not wrong[out.indices].any()


def test_batches_never_hold_more_than_batch_rows(tmp_path, npy):
    path, ypath, X, y = npy
    folder = write_shards(tmp_path / "shards", X, y, n_shards=4)
    for src in (open_out_of_core(path, labels=ypath, batch_size=97), open_out_of_core(folder, batch_size=97)):
        sizes, starts = [], []
        for s, B in src.batches():
            starts.append(s)
            sizes.append(len(B))
            assert B.dtype == np.float32 and B.shape[1] == X.shape[1]
        assert max(sizes) <= 97 and sum(sizes) == len(X)
        assert starts == list(np.cumsum([0] + sizes[:-1]))


def test_kcenter_memory_stays_far_below_the_data(tmp_path):
    n, d = 640_000, 16  # 41 MB of float32 on disk
    X = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(n, d))
    rng = np.random.default_rng(0)
    for s in range(0, n, 100_000):
        X[s:s + 100_000] = rng.normal(size=(min(100_000, n - s), d))
    X.flush()
    del X
    labels = np.arange(n) % 2
    tracemalloc.start()
    out = select_out_of_core(tmp_path / "big.npy", "kcenter", size=30, labels=labels, sampling="farthest",
                             batch_size=16_384)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(out) == 30
    data = n * d * 4
    assert peak < 0.5 * data, f"peak {peak / 1e6:.1f} MB for {data / 1e6:.1f} MB of data"


# --- bad input -------------------------------------------------------------------------------------------------
def test_a_shard_with_another_schema_is_named(tmp_path):
    X, y = blobs(n=90)
    folder = write_shards(tmp_path / "s", X, y)
    bad = pa.table({**{f"f{j}": pa.array(X[:5, j]) for j in range(5)}, "g5": pa.array(X[:5, 5]),
                    "label": pa.array(y[:5])})
    pq.write_table(bad, folder / "part-001.parquet")
    with pytest.raises(DataError, match=r"part-001\.parquet.*'f5'"):
        open_out_of_core(folder)
    bad = pa.table({**{f"f{j}": pa.array(X[:5, j]) for j in range(6)}, "label": pa.array(y[:5].astype(str))})
    pq.write_table(bad, folder / "part-001.parquet")
    with pytest.raises(DataError, match=r"part-001\.parquet: column 'label' has type string"):
        open_out_of_core(folder)


def test_a_label_column_missing_in_one_shard_is_named(tmp_path):
    X, y = blobs(n=90)
    folder = write_shards(tmp_path / "s", X, y)
    pq.write_table(pa.table({f"f{j}": pa.array(X[:5, j]) for j in range(6)}), folder / "part-002.parquet")
    with pytest.raises(DataError, match=r"part-002\.parquet: the label column 'label' is missing"):
        open_out_of_core(folder)


def test_ragged_embeddings_name_the_shard_and_row(tmp_path):
    X, y = blobs(n=90)
    folder = write_shards(tmp_path / "s", X, y, embedding=True)
    rows = [list(map(float, r)) for r in X[60:90]]
    rows[7] = rows[7][:4]
    pq.write_table(pa.table({"emb": pa.array(rows, type=pa.list_(pa.float32())), "label": pa.array(y[60:90])}),
                   folder / "part-002.parquet")
    with pytest.raises(DataError, match=r"part-002\.parquet: row 7: embedding column 'emb' has 4 values"):
        open_out_of_core(folder)


def test_an_object_npy_is_refused_with_its_name(tmp_path):
    np.save(tmp_path / "obj.npy", np.array([[1.0, "a"], [2.0, "b"]], dtype=object), allow_pickle=True)
    with pytest.raises(DataError, match=r"obj\.npy: holds Python objects"):
        open_out_of_core(tmp_path / "obj.npy", labels=[0, 1])


def test_other_bad_npy_input(tmp_path, npy):
    path, ypath, X, y = npy
    with pytest.raises(DataError, match=r"y\.npy: 1500 feature rows in X\.npy but labels of shape \(10,\)"):
        np.save(ypath, y[:10])
        open_out_of_core(path, labels=ypath)
    X2 = X.copy()
    X2[1234, 2] = np.nan
    np.save(tmp_path / "nan.npy", X2)
    with pytest.raises(DataError, match=r"nan\.npy: row 1234, feature 2 is NaN"):
        select_out_of_core(tmp_path / "nan.npy", "kcenter", ratio=0.1, labels=y)
    np.save(tmp_path / "f.npy", np.asfortranarray(X))
    with pytest.raises(DataError, match=r"f\.npy: stored in Fortran"):
        open_out_of_core(tmp_path / "f.npy", labels=y)
    with pytest.raises(ConfigError, match="supports"):
        select_out_of_core(path, "kmedoids", ratio=0.1, labels=y)
    with pytest.raises(ConfigError, match="features='raw'"):
        select_out_of_core(path, "kcenter", ratio=0.1, labels=y, pca=2)
