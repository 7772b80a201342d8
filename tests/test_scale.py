"""Selection at scale: kNN backends against exact search, the streaming k-center, the FasterPAM / CLARA
k-medoids engines and faiss k-means, each on small generated data."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from datadistill.errors import ConfigError
from datadistill.neighbors import k_distance, knn, resolve_backend
from datadistill.select.facility_location import (
    facility_location_greedy,
    facility_location_value,
    knn_similarity,
)
from datadistill.select.kcenter import kcenter_columns, kcenter_greedy
from datadistill.select.kmeans import kmeans_prototypes
from datadistill.select.kmedoids import clara_kmedoids, dissimilarity_matrix, kmedoids

faiss = pytest.importorskip("faiss")


@pytest.fixture(scope="module")
def cloud():
    X, _ = make_blobs(n_samples=3000, centers=12, n_features=8, cluster_std=1.5, random_state=0)
    return X.astype(np.float32)


def recall(idx, ref):
    return np.mean([len(np.intersect1d(a, b)) / ref.shape[1] for a, b in zip(idx, ref)])


def test_exact_knn_is_brute_force_and_includes_self(cloud):
    Z = cloud[:400]
    dist, idx = knn(Z, 5, backend="exact")
    full = np.sqrt(((Z[:, None].astype(np.float64) - Z[None]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :5], rtol=1e-4, atol=1e-4)
    assert (idx[:, 0] == np.arange(400)).all()
    np.testing.assert_allclose(k_distance(Z, 3, backend="exact"), np.sort(full, axis=1)[:, 3], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("backend", ["ivf", "hnsw"])
def test_approximate_knn_recall_and_determinism(cloud, backend):
    _, ref = knn(cloud, 10, backend="exact")
    dist, idx = knn(cloud, 10, backend=backend)
    assert recall(idx, ref) > 0.9
    assert np.all(np.diff(dist, axis=1) >= -1e-5)  # ascending
    dist2, idx2 = knn(cloud, 10, backend=backend)
    np.testing.assert_array_equal(idx, idx2)
    _, qidx = knn(cloud, 3, queries=cloud[:50] + 1e-3, backend=backend)
    assert qidx.shape == (50, 3) and (qidx[:, 0] == np.arange(50)).mean() > 0.9


def test_knn_backend_choice_and_errors():
    assert resolve_backend(100) == "exact"
    assert resolve_backend(10**6) == "hnsw"
    with pytest.raises(ConfigError, match="backend"):
        knn(np.zeros((5, 2), np.float32), 2, backend="annoy")
    with pytest.raises(ConfigError, match="k must be"):
        knn(np.zeros((5, 2), np.float32), 6)


def test_facility_location_on_an_approximate_graph_is_close_to_exact(cloud):
    rng = np.random.default_rng(0)
    W_exact = knn_similarity(cloud, 10, backend="exact")
    W_ivf = knn_similarity(cloud, 10, backend="ivf")
    exact, _, _ = facility_location_greedy(W_exact, 60, np.random.default_rng(0))
    approx, _, _ = facility_location_greedy(W_ivf, 60, np.random.default_rng(0))
    # scored on the exact graph, the approximate graph's picks lose little and beat random by far
    f_exact, f_approx = facility_location_value(W_exact, exact), facility_location_value(W_exact, approx)
    assert f_approx >= 0.97 * f_exact
    assert f_approx > 1.2 * facility_location_value(W_exact, rng.choice(len(cloud), 60, replace=False))


def plain_farthest_first(X, k, first):
    mind, c, out = np.full(len(X), np.inf), first, []
    for _ in range(k):
        out.append(c)
        mind = np.minimum(mind, ((X.astype(np.float64) - X[c]) ** 2).sum(1))
        c = int(np.argmax(mind))
    return np.array(out), np.sqrt(mind.max())


@pytest.mark.parametrize("tile", [None, 97, 1000])
def test_streaming_kcenter_equals_plain_greedy_for_any_tile(tile):
    # 2-D data: the triangle-inequality pruning (gather path) is taken in late iterations
    X = np.random.default_rng(4).normal(size=(2500, 2)).astype(np.float32)
    chosen, sizes, r = kcenter_greedy(torch.as_tensor(X), 150, first=3, tile=tile)
    plain, plain_r = plain_farthest_first(X, 150, 3)
    np.testing.assert_array_equal(chosen, plain)
    assert r == pytest.approx(plain_r, rel=1e-4)
    assert sizes.sum() == len(X)


def test_kcenter_columns_and_d2_draws(cloud):
    Xt = torch.as_tensor(cloud)
    a = kcenter_greedy(Xt, 50, first=0, d2=True, rng=np.random.default_rng(1))
    b = kcenter_columns(Xt.t().contiguous(), 50, first=0, d2=True, rng=np.random.default_rng(1), tile=128)
    np.testing.assert_array_equal(a[0], b[0])  # the tile size does not change the D² draws
    assert len(np.unique(a[0])) == 50 and a[1].sum() == len(cloud)
    c = kcenter_greedy(Xt, 50, first=0, d2=True, rng=np.random.default_rng(2))
    assert not np.array_equal(a[0], c[0])


def test_kmedoids_matrix_engine_beats_single_fasterpam_and_reports_its_objective(cloud):
    kmedoids_pkg = pytest.importorskip("kmedoids")
    X = cloud[:800]
    D = dissimilarity_matrix(torch.as_tensor(X))
    ref = min(float(kmedoids_pkg.fasterpam(D, 40, init="random", random_state=s, n_cpu=1).loss) for s in range(3))
    medoids, sizes, obj = kmedoids(torch.as_tensor(X), 40, np.random.default_rng(0))
    assert obj == pytest.approx(D[:, medoids].min(axis=1).sum(), rel=1e-9)
    assert obj <= ref * (1 + 1e-3)
    assert sizes.sum() == 800 and len(np.unique(medoids)) == 40


def test_clara_engine_close_to_matrix_engine_without_the_full_matrix(cloud):
    Xt = torch.as_tensor(cloud)
    _, _, full = kmedoids(Xt, 30, np.random.default_rng(0))
    m1, near, obj = clara_kmedoids(Xt, 30, np.random.default_rng(0), sample_size=400, n_samples=3)
    m2, _, _ = clara_kmedoids(Xt, 30, np.random.default_rng(0), sample_size=400, n_samples=3)
    np.testing.assert_array_equal(m1, m2)
    exact = np.sqrt(((cloud[:, None].astype(np.float64) - cloud[m1][None]) ** 2).sum(-1)).min(1).sum()
    assert obj == pytest.approx(exact, rel=1e-6)
    assert obj <= 1.03 * full
    assert np.bincount(near, minlength=30).sum() == len(cloud)
    # the selector routes pools above max_matrix to the sampled engine
    m, sizes, obj2 = kmedoids(Xt, 30, np.random.default_rng(0), max_matrix=1000)
    assert sizes.sum() == len(cloud) and obj2 <= 1.03 * full


def test_faiss_kmeans_prototypes_are_real_and_close_to_sklearn(cloud):
    protos, sizes, inertia = kmeans_prototypes(cloud, 24, random_state=0, engine="faiss")
    assert len(np.unique(protos)) == 24 and sizes.sum() == len(cloud)
    _, _, ref = kmeans_prototypes(cloud, 24, random_state=0, engine="sklearn")
    assert inertia <= 1.1 * ref
    again, _, _ = kmeans_prototypes(cloud, 24, random_state=0, engine="faiss")
    np.testing.assert_array_equal(protos, again)
    with pytest.raises(ConfigError, match="engine"):
        kmeans_prototypes(cloud, 24, random_state=0, engine="torch")
