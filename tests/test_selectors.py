"""Selectors: each method's defining property, budgets, determinism and the registry."""

import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import make_blobs

from datadistill.data.dataset import Dataset
from datadistill.data.sources import load
from datadistill.errors import ConfigError, DataError
from datadistill.select import REGISTRY, get_selector, select
from datadistill.select.facility_location import facility_location_value, knn_similarity
from datadistill.select.herding import herding
from datadistill.select.kcenter import kcenter_greedy
from datadistill.select.kmedoids import kmedoids

SCORED = ("gradnorm", "el2n", "entropy", "margin", "least-confidence", "forgetting")
FAST_PROBE = {"score_params": {"min_steps": 40}}


@pytest.fixture(scope="module")
def digits():
    return load("digits", ensure_test=False)


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=600, centers=6, n_features=5, cluster_std=1.0, random_state=3)
    return Dataset.create(X.astype(np.float32), y % 3, name="blobs")


def radius(X, centres):
    return np.sqrt(((X[:, None, :] - X[centres][None]) ** 2).sum(-1).min(1).max())


def medoid_cost(X, medoids):
    return np.sqrt(((X[:, None, :] - X[medoids][None]) ** 2).sum(-1)).min(1).sum()


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_every_method_runs_with_exact_budget_and_is_deterministic(name, digits):
    kw = FAST_PROBE if name in SCORED else {}
    a = select(digits, name, ratio=0.05, random_state=1, **kw)
    assert len(a.y) == round(0.05 * len(digits))
    assert len(np.unique(a.indices)) == len(a.indices)
    np.testing.assert_array_equal(a.X, digits.X[a.indices])
    assert a.meta["method"] == name
    assert np.all(a.weights > 0)
    b = select(digits, name, ratio=0.05, random_state=1, **kw)
    np.testing.assert_array_equal(a.indices, b.indices)
    cls = REGISTRY[name]
    assert cls.summary and cls.cost


@pytest.mark.parametrize("name", ["kcenter", "kmedoids", "kmeans", "herding", "facility-location", "entropy"])
def test_budgets_size_per_class_balanced_and_global(name, blobs):
    kw = FAST_PROBE if name in SCORED else {}
    counts = blobs.class_counts()
    s = get_selector(name, size=31, per_class="proportional", **kw).fit(blobs)
    assert len(s.indices_) == 31
    got = np.bincount(blobs.y[s.indices_], minlength=3)
    assert np.all(np.abs(got - 31 * counts / counts.sum()) < 1)
    s = get_selector(name, size=30, per_class="balanced", **kw).fit(blobs)
    assert np.all(np.bincount(blobs.y[s.indices_], minlength=3) == 10)
    s = get_selector(name, size=17, per_class=None, **kw).fit(blobs)
    assert len(s.indices_) == 17


def test_budget_errors(blobs):
    with pytest.raises(ConfigError):
        get_selector("kcenter", size=5, ratio=0.1).fit(blobs)
    with pytest.raises(DataError):
        select(blobs, "kmeans", size=10_000)
    with pytest.raises(ConfigError):
        select(blobs, "kcenter", ratio=0.1, features="pixels")


def test_kcenter_within_twice_optimum_and_better_than_random():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(14, 2)).astype(np.float32)
    opt = min(radius(X, list(c)) for c in itertools.combinations(range(14), 3))
    for first in range(14):
        chosen, sizes, r = kcenter_greedy(torch.as_tensor(X), 3, first=first)
        assert r <= 2 * opt + 1e-5
        assert r == pytest.approx(radius(X, chosen), rel=1e-5)
        assert sizes.sum() == 14
    Xb, _ = make_blobs(n_samples=500, centers=8, random_state=0)
    Xb = Xb.astype(np.float32)
    chosen, _, r = kcenter_greedy(torch.as_tensor(Xb), 25, first=0)
    randoms = [radius(Xb, rng.choice(500, 25, replace=False)) for _ in range(20)]
    assert r < min(randoms)


def test_kcenter_equals_plain_greedy():
    X = np.random.default_rng(2).normal(size=(800, 6)).astype(np.float32)
    chosen, _, _ = kcenter_greedy(torch.as_tensor(X), 60, first=5)
    mind, c, plain = np.full(800, np.inf), 5, []
    for _ in range(60):
        plain.append(c)
        mind = np.minimum(mind, ((X.astype(np.float64) - X[c]) ** 2).sum(1))
        c = int(np.argmax(mind))
    np.testing.assert_array_equal(chosen, plain)


def test_kcenter_selector_reports_radius(blobs):
    s = get_selector("kcenter", size=30, per_class=None).fit(blobs)
    Z = s.features_
    assert s.radius_[0] == pytest.approx(radius(Z, s.indices_), rel=1e-4)
    assert s.weights_.sum() == len(blobs)


def test_kmedoids_matches_exhaustive_search_on_tiny_instances():
    rng = np.random.default_rng(1)
    for trial in range(10):
        X = rng.normal(size=(10, 2)).astype(np.float32)
        best = min(medoid_cost(X, list(c)) for c in itertools.combinations(range(10), 3))
        medoids, sizes, obj = kmedoids(torch.as_tensor(X), 3, np.random.default_rng(trial))
        assert obj == pytest.approx(best, rel=1e-5)
        assert obj == pytest.approx(medoid_cost(X, medoids), rel=1e-5)
        assert sizes.sum() == 10


def test_kmedoids_no_worse_than_fasterpam(digits):
    kmedoids_pkg = pytest.importorskip("kmedoids")  # a test dependency (pyproject [test])
    X = digits.X.reshape(len(digits), -1)[:600].astype(np.float64)
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    np.fill_diagonal(D, 0.0)
    ref = {init: float(kmedoids_pkg.fasterpam(D, 60, init=init, random_state=0, n_cpu=1).loss)
           for init in ("random", "build")}
    medoids, _, obj = kmedoids(torch.as_tensor(X.astype(np.float32)), 60, np.random.default_rng(0))
    exact = D[:, medoids].min(axis=1).sum()  # our medoids scored on FasterPAM's own (float64) matrix
    assert obj == pytest.approx(exact, rel=1e-6)
    assert exact <= ref["random"] and exact <= ref["build"]


def test_kmedoids_is_a_swap_local_optimum_and_deterministic(digits):
    X = digits.X.reshape(len(digits), -1)[:300].astype(np.float64)
    D = np.sqrt(((X[:, None] - X[None]) ** 2).sum(-1))
    m1, _, obj = kmedoids(torch.as_tensor(X.astype(np.float32)), 30, np.random.default_rng(5))
    m2, _, _ = kmedoids(torch.as_tensor(X.astype(np.float32)), 30, np.random.default_rng(5))
    assert np.array_equal(m1, m2)
    base = D[:, m1].min(axis=1).sum()
    rest = np.setdiff1d(np.arange(300), m1)
    for i in range(30):  # no single swap (medoid i out, any non-medoid in) lowers the objective
        others = np.delete(m1, i)
        near_others = D[:, others].min(axis=1)
        swapped = np.minimum(near_others[:, None], D[:, rest]).sum(axis=0)
        assert swapped.min() >= base - 1e-6 * base


def test_kmedoids_large_pool_path_is_close_to_matrix_path(blobs):
    Z = torch.as_tensor(blobs.X)
    _, sizes, stored = kmedoids(Z, 20, np.random.default_rng(0))
    m, sizes2, chunked = kmedoids(Z, 20, np.random.default_rng(0), max_matrix=100, swap_candidates=200)
    assert len(np.unique(m)) == 20 and sizes2.sum() == 600
    assert chunked <= 1.05 * stored


def test_kmeans_weights_are_cluster_sizes_and_prototypes_are_real(blobs):
    s = get_selector("kmeans", size=24, random_state=0).fit(blobs)
    for c in range(3):
        mine = blobs.y[s.indices_] == c
        assert s.weights_[mine].sum() == blobs.class_counts()[c]
    assert s.weights_.sum() == len(blobs)


def test_dbscan_drops_planted_outliers_when_asked():
    X, _ = make_blobs(n_samples=400, centers=[[0, 0], [6, 0]], cluster_std=0.5, random_state=0)
    outliers = np.array([[20, 20], [-20, 15], [15, -20], [-18, -18], [3, 25]], dtype=float)
    X = np.vstack([X, outliers]).astype(np.float32)
    y = np.zeros(len(X), dtype=int)
    y[::2] = 1
    ds = Dataset.create(X, y, name="planted")
    s = get_selector("dbscan", size=40, per_class=None, noise="drop", drop_misclassified=False).fit(ds)
    assert len(s.indices_) == 40
    assert not np.isin(np.arange(400, 405), s.indices_).any()
    assert s.noise_used_ == 0 and s.n_clusters_ == [2]
    assert s.weights_.sum() == pytest.approx(400)
    full = get_selector("dbscan", size=403, per_class=None, eps=1.0, noise="drop", drop_misclassified=False).fit(ds)
    assert len(full.indices_) == 403 and full.noise_used_ >= 3


def test_agglomerative_weights_and_precluster_path(blobs):
    s = get_selector("agglomerative", size=30, random_state=0).fit(blobs)
    assert s.weights_.sum() == len(blobs)
    p = get_selector("agglomerative", size=30, random_state=0, max_ward=60).fit(blobs)
    assert len(p.indices_) == 30 and p.weights_.sum() == len(blobs)


def test_herding_mean_approaches_class_mean_faster_than_random():
    X = np.random.default_rng(0).normal(size=(500, 8)).astype(np.float32) ** 2
    chosen = herding(torch.as_tensor(X), 40)
    mu = X.mean(0)
    err = [np.linalg.norm(X[chosen[:t]].mean(0) - mu) for t in (5, 10, 20, 40)]
    rng = np.random.default_rng(1)
    rand = [np.mean([np.linalg.norm(X[rng.choice(500, t, replace=False)].mean(0) - mu) for _ in range(50)])
            for t in (5, 10, 20, 40)]
    assert all(e < 0.5 * r for e, r in zip(err, rand))
    assert err[-1] < err[0]
    rbf = herding(torch.as_tensor(X), 40, kernel="rbf")
    assert len(np.unique(rbf)) == 40


def test_facility_location_greedy_monotone_and_beats_random(blobs):
    s = get_selector("facility-location", size=30, per_class=None, n_neighbors=10).fit(blobs)
    gains = s.gains_[0]
    assert np.all(np.diff(gains) <= 1e-9)
    W = knn_similarity(s.features_, 10)
    value = facility_location_value(W, s.indices_)
    assert value == pytest.approx(s.objective_[0])
    rng = np.random.default_rng(0)
    assert value > max(facility_location_value(W, rng.choice(len(blobs), 30, replace=False)) for _ in range(20))
    # lazy greedy = plain greedy on the first picks
    chosen, current = [], 0.0
    for _ in range(5):
        vals = [facility_location_value(W, chosen + [j]) if j not in chosen else -1 for j in range(len(blobs))]
        j = int(np.argmax(vals))
        assert vals[j] - current == pytest.approx(gains[len(chosen)], rel=1e-9)
        chosen.append(j)
        current = vals[j]


def test_score_selectors_take_the_informative_end(blobs):
    hi = get_selector("entropy", size=30, strategy="hardest", **FAST_PROBE).fit(blobs)
    lo = get_selector("entropy", size=30, strategy="hardest", order="lowest", **FAST_PROBE).fit(blobs)
    for c in range(3):
        pool = blobs.class_indices(c)
        mine = hi.indices_[blobs.y[hi.indices_] == c]
        rest = np.setdiff1d(pool, mine)
        assert hi.scores_[mine].min() >= hi.scores_[rest].max()
    assert lo.scores_[lo.indices_].mean() < hi.scores_[hi.indices_].mean()
    m = get_selector("margin", size=30, **FAST_PROBE).fit(blobs)
    assert m.order_ == "lowest"
    with pytest.raises(ConfigError):
        get_selector("margin", size=30, order="middle", **FAST_PROBE).fit(blobs)


def test_embedding_and_pca_feature_spaces(digits):
    s = get_selector("kcenter", ratio=0.05, features="embedding", epochs=1, pca=8,
                     probe_params={"min_steps": 30}).fit(digits)
    assert s.features_.shape == (len(digits), 8)
    assert len(s.indices_) == round(0.05 * len(digits))


def test_two_gaussians_demo_calls():
    ds = load("two-gaussians")
    out = select(ds, "kcenter", size=20)
    assert len(out.y) == 20 and set(out.y) == {0, 1}
