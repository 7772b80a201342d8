"""Row-partitioned selection (datadistill.parallel): top-k equal to the offline method for any partitioning,
the composable k-center / GreeDi / k-means against their offline forms, the same subset on threads and on a
LocalCluster of 2 processes, diagnostics returned by the parts, and scheduler errors that never hang."""

import socket
import time

import numpy as np
import pytest
from sklearn.datasets import make_blobs

from datadistill.data.dataset import Dataset
from datadistill.errors import ConfigError
from datadistill.select import get_selector
from datadistill.select.base import Executor, PartResult, run_part
from datadistill.select.facility_location import facility_location_value, knn_similarity
from datadistill.select.scored import ScoreSelector

distributed = pytest.importorskip("distributed")
from datadistill.parallel import DaskExecutor, connect, dask_client, fit_distributed  # noqa: E402


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=1200, centers=8, n_features=5, cluster_std=1.2, random_state=3)
    return Dataset.create(X.astype(np.float32), y % 2, name="blobs")


@pytest.fixture(scope="module")
def cluster():
    with dask_client(n_workers=2) as client:  # processes=True, 2 workers x 1 thread, no dashboard
        yield client


class RoundedNorm(ScoreSelector):
    """A score with many ties (norms rounded to one decimal), so the tie rule is exercised; no probe."""

    name = "rounded-norm"

    def _prepare(self, dataset, rng):
        self.order_ = "highest"
        self.scores_ = np.round(np.linalg.norm(dataset.X, axis=1), 1)
        self.probe_logits_ = np.zeros((len(dataset), dataset.n_classes))
        self._labels = dataset.y


def geometric(method, **kw):
    return get_selector(method, ratio=0.03, drop_misclassified=False, random_state=1, **kw)


def rows(client=None, n=2):
    return DaskExecutor(client, by="rows", n_partitions=n)


def radius(X, S):
    return float(np.sqrt(((X[:, None] - X[S][None]) ** 2).sum(-1)).min(1).max())


@pytest.mark.parametrize("strategy", ["hardest", "easiest"])
def test_topk_rows_equals_offline_for_any_partitioning(blobs, strategy):
    ref = RoundedNorm(ratio=0.05, strategy=strategy, random_state=2).fit(blobs)
    assert len(np.unique(ref.scores_)) < len(blobs) / 4  # ties decided by the seeded rank
    for n in (1, 2, 7):
        sel = RoundedNorm(ratio=0.05, strategy=strategy, random_state=2).fit(blobs, executor=rows(n=n))
        np.testing.assert_array_equal(sel.indices_, ref.indices_)
        np.testing.assert_array_equal(sel.weights_, ref.weights_)
    other = RoundedNorm(ratio=0.05, strategy=strategy, random_state=3).fit(blobs, executor=rows(n=2))
    assert not np.array_equal(other.indices_, ref.indices_)


def test_composable_kcenter_radius_within_the_proven_factor(blobs):
    for n in (2, 4):
        ex = rows(n=n)
        sel = geometric("kcenter", sampling="farthest").fit(blobs, executor=ex)
        off = geometric("kcenter", sampling="farthest").fit(blobs)
        X = sel.features_  # the standardised space both measure distances in
        for c, pool in enumerate(blobs.class_indices(k) for k in range(2)):
            mine = np.intersect1d(sel.indices_, pool)
            r, r_off = radius(X[pool], np.searchsorted(pool, mine)), off.radius_[c]
            assert sel.radius_[c] == pytest.approx(r, rel=1e-4)  # the assignment pass measures the true radius
            # two-round composable k-center: r <= 4 OPT, and OPT <= the offline greedy radius
            assert r <= 4 * r_off
        assert sel.weights_.sum() == len(blobs)
        assert ex.traffic["placed"] >= X.nbytes and ex.traffic["gathered"] < X.nbytes


def test_greedi_objective_close_to_offline_greedy(blobs):
    for n in (2, 3):
        sel = geometric("facility-location", n_neighbors=10, knn_backend="exact").fit(blobs, executor=rows(n=n))
        off = geometric("facility-location", n_neighbors=10, knn_backend="exact").fit(blobs)
        for c in range(2):
            pool = blobs.class_indices(c)
            W = knn_similarity(sel.features_[pool], 10, backend="exact")
            f_greedi = facility_location_value(W, np.searchsorted(pool, np.intersect1d(sel.indices_, pool)))
            f_off = facility_location_value(W, np.searchsorted(pool, np.intersect1d(off.indices_, pool)))
            # stated fraction 0.75, empirical: the lowest ratio seen was 0.80 over 36 pools (3 data seeds x 2-4
            # partitions x 3% and 10% x 2 classes); round 2 scores the weighted union, not the whole pool, so
            # GreeDi's proven (1 - 1/e)^2 / min(m, k) (round 2 on the whole pool) is not claimed for it
            assert f_greedi >= 0.75 * f_off
        assert len(sel.gains_) == 2 and sel.objective_[0] == pytest.approx(sel.gains_[0].sum())


def test_row_kmeans_prototypes_are_real_and_near_offline_inertia(blobs):
    sel = geometric("kmeans").fit(blobs, executor=rows(n=3))
    off = geometric("kmeans").fit(blobs)
    assert len(np.unique(sel.indices_)) == len(off.indices_) and sel.weights_.sum() == len(blobs)

    Z = sel.features_

    def inertia(S):
        return sum(((Z[p][:, None] - Z[np.intersect1d(S, p)][None]) ** 2).sum(-1).min(1).sum()
                   for p in (blobs.class_indices(0), blobs.class_indices(1)))

    assert inertia(sel.indices_) <= 1.25 * inertia(off.indices_)


def test_parts_return_their_diagnostics_explicitly(blobs):
    sel = geometric("facility-location", n_neighbors=10)
    sel.fit(blobs)
    parts = sel.partitions(blobs, len(sel.indices_))
    result = run_part(sel, *parts[0], Executor(), isolate=True)
    assert isinstance(result, PartResult) and set(result.diagnostics) == {"gains_", "objective_"}
    assert result.diagnostics["objective_"] == [pytest.approx(sel.objective_[0])]
    assert len(sel.gains_) == 2 and len(sel.gains_[0]) == parts[0][1]  # one array per class, one gain per pick
    # a selector that still appends to list attributes: isolated parts bring the appended values back
    kc = geometric("kcenter")
    kc.fit(blobs)
    legacy = run_part(kc, *kc.partitions(blobs, len(kc.indices_))[1], isolate=True)
    assert legacy.diagnostics == {"radius_": [kc.radius_[1]]}


def test_threads_by_class_equals_fit(blobs):
    a = geometric("kcenter").fit(blobs)
    b = geometric("kcenter").fit(blobs, executor=DaskExecutor(None, by="class"))
    np.testing.assert_array_equal(a.indices_, b.indices_)
    assert a.radius_ == b.radius_


def test_same_subset_on_threads_and_a_local_cluster_of_two_processes(blobs, cluster):
    assert len(cluster.scheduler_info()["workers"]) == 2
    for method, kw in (("kcenter", {}), ("facility-location", {"n_neighbors": 10}), ("kmeans", {})):
        a = geometric(method, **kw).fit(blobs, executor=rows(None, 2))
        ex = rows(cluster, 2)
        b = geometric(method, **kw).fit(blobs, executor=ex)
        np.testing.assert_array_equal(a.indices_, b.indices_)
        np.testing.assert_array_equal(a.weights_, b.weights_)
        assert ex.traffic["tasks"] >= 8 and ex.traffic["gathered"] > 0
    ref = RoundedNorm(ratio=0.05, strategy="hardest").fit(blobs)
    top = fit_distributed(RoundedNorm(ratio=0.05, strategy="hardest"), blobs, client=cluster)
    np.testing.assert_array_equal(top.indices_, ref.indices_)
    # by class on the cluster: the offline subset, and the per-class diagnostics come back from the workers
    off = geometric("kcenter").fit(blobs)
    cls = fit_distributed(geometric("kcenter"), blobs, client=cluster, by="class")
    np.testing.assert_array_equal(cls.indices_, off.indices_)
    assert cls.radius_ == off.radius_


def test_unanswered_scheduler_is_a_config_error_within_the_timeout(blobs):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    start = time.perf_counter()
    with pytest.raises(ConfigError, match="no Dask scheduler answered"):
        fit_distributed(geometric("kcenter"), blobs, scheduler=f"tcp://127.0.0.1:{port}", timeout=1.0)
    assert time.perf_counter() - start < 15


@pytest.mark.parametrize("scheduler", ["local:0", "local:x", "threads:2", "", 3])
def test_bad_scheduler_strings(scheduler):
    with pytest.raises(ConfigError, match="scheduler"):
        with connect(scheduler):
            pass


def test_bad_executor_options(blobs):
    with pytest.raises(ConfigError, match="by must"):
        DaskExecutor(by="columns")
    with pytest.raises(ConfigError, match="n_partitions"):
        DaskExecutor(n_partitions=0)
    with pytest.raises(ConfigError, match="no row-partitioned form"):
        fit_distributed(get_selector("kmedoids", ratio=0.1), blobs, scheduler="threads", by="rows")
    with pytest.raises(ConfigError, match="timeout"):
        with connect("threads", timeout=0):
            pass
