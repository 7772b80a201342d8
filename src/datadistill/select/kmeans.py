"""k-means prototypes: cluster with k-means, keep the real sample nearest each centroid.

Engines: faiss k-means (Lloyd iterations on BLAS, random seeding, at most 256 rows per centroid
sampled for training, then every row assigned) when faiss is installed and the pool is large, else
scikit-learn's KMeans / MiniBatchKMeans. benchmarks/b3_scale.py measures both on the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch

from ..errors import ConfigError
from .base import register
from .features import FeatureSelector, nearest


def nearest_members(Z: np.ndarray, labels: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """For each centroid, the row of ``Z`` in its own cluster nearest to it (-1 for an empty cluster)."""
    out = np.full(len(centroids), -1, dtype=np.int64)
    order = np.argsort(labels, kind="stable")
    counts = np.bincount(labels, minlength=len(centroids))
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j in np.flatnonzero(counts):
        members = order[starts[j]:starts[j + 1]]
        d = ((Z[members] - centroids[j]) ** 2).sum(axis=1)
        out[j] = members[int(np.argmin(d))]
    return out


ENGINES = ("auto", "faiss", "sklearn")


PLUSPLUS_WORK = 500_000_000  # sample rows x k above which faiss keeps its own random seeding


def _plusplus_init(Z: np.ndarray, k: int, random_state: int) -> np.ndarray | None:
    """k-means++ seeds from a seeded sample of 16 rows per centroid, or None (faiss's random seeding) when
    that would cost more than ``PLUSPLUS_WORK``. Random seeding left a 24-cluster fit of 3,000 blobs 50%
    above scikit-learn's inertia; these seeds brought it level (47,476 vs 47,806)."""
    from sklearn.cluster import kmeans_plusplus

    n = min(len(Z), 16 * k)
    if n * k > PLUSPLUS_WORK:
        return None
    rows = np.random.default_rng(random_state).choice(len(Z), n, replace=False) if n < len(Z) else slice(None)
    init, _ = kmeans_plusplus(np.asarray(Z[rows], dtype=np.float64), k, random_state=random_state)
    return np.ascontiguousarray(init, dtype=np.float32)


def faiss_kmeans(Z: np.ndarray, k: int, *, random_state: int, max_iter: int = 20) -> tuple[np.ndarray, np.ndarray, float]:
    """faiss k-means on ``Z``; returns (labels, centroids, inertia of the final assignment)."""
    import faiss

    Z = np.ascontiguousarray(Z, dtype=np.float32)
    # min_points_per_centroid=1: small pools are fine for prototypes; faiss would print a warning per call
    km = faiss.Kmeans(Z.shape[1], int(k), niter=int(max_iter), seed=int(random_state) % (2**31), verbose=False,
                      min_points_per_centroid=1)
    km.train(Z, init_centroids=_plusplus_init(Z, int(k), random_state))
    sq, labels = km.index.search(Z, 1)
    return labels[:, 0].astype(np.int64), km.centroids, float(np.maximum(sq, 0).astype(np.float64).sum())


def resolve_engine(n: int, k: int, engine: str, minibatch_above: int) -> str:
    """The k-means engine ``kmeans_prototypes`` uses: faiss for large pools when it imports, else scikit-learn."""
    if engine not in ENGINES:
        raise ConfigError(f"kmeans: engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    if engine != "auto":
        return engine
    from ..neighbors import faiss_available

    return "faiss" if n * k > minibatch_above and faiss_available() else "sklearn"


def kmeans_prototypes(Z: np.ndarray, k: int, *, random_state: int, minibatch_above: int = 2_000_000,
                      max_iter: int | None = None, engine: str = "auto") -> tuple[np.ndarray, np.ndarray, float]:
    """k-means on ``Z`` (N, d); returns (nearest real sample per centroid, cluster sizes, inertia).

    ``engine``: "faiss", "sklearn" or "auto" (faiss when N·k > ``minibatch_above`` and faiss imports). The
    scikit-learn engine is KMeans (Lloyd, k-means++ seeding) when N·k <= ``minibatch_above``, else
    MiniBatchKMeans. ``max_iter`` defaults to 100 for scikit-learn and 20 for faiss.
    Empty clusters are replaced by a seeded random draw of unused samples, and sizes are then
    recounted as the prototypes' Voronoi cells, so sizes always sum to N.
    """
    if resolve_engine(len(Z), k, engine, minibatch_above) == "faiss":
        labels, centroids, inertia = faiss_kmeans(Z, k, random_state=random_state, max_iter=max_iter or 20)
    else:
        from sklearn.cluster import KMeans, MiniBatchKMeans

        if len(Z) * k <= minibatch_above:
            km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter or 100, random_state=random_state)
        else:
            km = MiniBatchKMeans(n_clusters=k, n_init=1, max_iter=max_iter or 100, batch_size=max(1024, 4 * k),
                                 random_state=random_state)
        # float64 input: scikit-learn upcasts float32 distances chunk by chunk, 4x slower (6,000 x 784, k = 60)
        labels = km.fit_predict(np.asarray(Z, dtype=np.float64))
        centroids, inertia = km.cluster_centers_.astype(Z.dtype, copy=False), float(km.inertia_)
    protos = nearest_members(Z, labels, centroids)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    if (protos < 0).any():
        # empty clusters (common when k is a large share of N) get a seeded random draw of unused samples, so
        # the fill follows the data's density; filling with the farthest samples picked outliers
        Zt = torch.as_tensor(Z)
        empty = np.flatnonzero(protos < 0)
        unused = np.setdiff1d(np.arange(len(Z)), protos[protos >= 0])
        protos[empty] = np.random.default_rng(random_state).choice(unused, size=len(empty), replace=False)
        idx, _ = nearest(Zt, Zt[torch.as_tensor(protos)])
        sizes = np.bincount(idx.numpy(), minlength=k).astype(np.float64)
    return protos, sizes, inertia


def streamed_kmeans_prototypes(batches: Callable[[], Iterable[tuple[int, torch.Tensor]]], take: Callable,
                               n: int, k: int, *, random_state: int, epochs: int = 2
                               ) -> tuple[np.ndarray, np.ndarray, float]:
    """k-means prototypes of ``n`` rows that are only read in batches (data larger than memory).

    ``batches()`` yields (first row, float32 rows) over the rows in order, every call the same rows;
    ``take(rows)`` returns the given rows (a seeded sample of 16 rows per centroid seeds the centroids, with
    D² sampling). Then ``epochs`` passes of mini-batch k-means
    (Sculley 2010: each centroid moves towards its batch mean at the rate batch count / running count) and
    one assignment pass that keeps, per centroid, its nearest member. Memory: O(k·d) plus one batch.
    Returns (prototype rows, cluster sizes, inertia of the final centroids); empty clusters are filled as in
    :func:`kmeans_prototypes`.
    """
    from .kcenter import kcenter_columns

    rng = np.random.default_rng(random_state)
    m = min(n, 16 * k)
    sample = np.asarray(take(np.sort(rng.choice(n, m, replace=False)) if m < n else np.arange(n)), dtype=np.float32)
    # D² seeding (k-means++ with one trial) by the streaming k-center kernel: O(m·k·d), no m x k matrix
    seeds, _, _ = kcenter_columns(torch.from_numpy(np.ascontiguousarray(sample.T)), k, first=int(rng.integers(m)),
                                  rng=rng, d2=True)
    C = torch.tensor(sample[np.sort(seeds)])
    counts = torch.zeros(k, dtype=torch.float64)
    for _ in range(int(epochs)):
        for _, B in batches():
            idx, _ = nearest_sq(B, C)
            cnt = torch.bincount(idx, minlength=k)
            sums = torch.zeros_like(C).index_add_(0, idx, B)
            counts += cnt
            hit = torch.nonzero(cnt).squeeze(1)
            rate = (cnt[hit] / counts[hit]).to(C.dtype)[:, None]
            C[hit] += rate * (sums[hit] / cnt[hit, None].to(C.dtype) - C[hit])
    protos, sizes, inertia = _assign(batches(), C)
    if (protos < 0).any():
        empty = np.flatnonzero(protos < 0)
        unused = np.setdiff1d(np.arange(n), protos[protos >= 0])
        protos[empty] = np.random.default_rng(random_state).choice(unused, size=len(empty), replace=False)
        P = torch.as_tensor(np.asarray(take(protos), dtype=np.float32))
        sizes = np.zeros(k)
        for _, B in batches():
            sizes += np.bincount(nearest_sq(B, P)[0].numpy(), minlength=k)
    return protos, sizes, inertia


def nearest_sq(A: torch.Tensor, C: torch.Tensor, *, block: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of A, the index of its nearest row of C and the squared distance (at most ``block`` at once)."""
    csq = (C * C).sum(1)
    chunk = max(1, block // max(1, len(C)))
    idx, dist = [], []
    for i in range(0, len(A), chunk):
        a = A[i:i + chunk]
        m = torch.addmm(csq, a, C.t(), alpha=-2.0).min(dim=1)
        idx.append(m.indices)
        dist.append((m.values + (a * a).sum(1)).clamp_(min=0))
    return torch.cat(idx), torch.cat(dist)


def _assign(batches: Iterable[tuple[int, torch.Tensor]], C: torch.Tensor) -> tuple[np.ndarray, np.ndarray, float]:
    """One pass: per centroid its nearest member (lowest row on ties; -1 when none), cluster sizes, inertia."""
    k = len(C)
    best = torch.full((k,), float("inf"))
    row = torch.full((k,), -1, dtype=torch.long)
    sizes = torch.zeros(k, dtype=torch.float64)
    inertia = 0.0
    for start, B in batches:
        idx, dist = nearest_sq(B, C)
        sizes += torch.bincount(idx, minlength=k)
        inertia += float(dist.double().sum())
        bd = torch.full((k,), float("inf")).scatter_reduce_(0, idx, dist, "amin")
        at = torch.nonzero(dist == bd[idx]).squeeze(1)
        br = torch.full((k,), len(B), dtype=torch.long).scatter_reduce_(0, idx[at], at, "amin")
        better = bd < best
        best[better] = bd[better]
        row[better] = br[better] + start
    return row.numpy(), sizes.numpy(), inertia


@register
class KMeansSelector(FeatureSelector):
    """k-means prototypes: the real sample nearest each of k centroids; ``weights_`` = cluster sizes.

    ``minibatch_above``: pool size x k above which large-pool engines are used (faiss k-means when installed,
    else MiniBatchKMeans); ``engine``: "auto", "faiss" or "sklearn"; ``max_iter``: None = the engine's default.
    """

    name = "kmeans"
    summary = "k-means prototypes: the real sample nearest each centroid, weighted by cluster size"
    cost = "O(N·k·d) per Lloyd iteration (mini-batches for large pools)"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0, drop_misclassified=True,
                 minibatch_above: int = 2_000_000,
                 max_iter: int | None = None, engine: str = "auto"):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.minibatch_above = minibatch_above
        self.max_iter = max_iter
        self.engine = engine

    def _select_pool(self, pool, k, rng):
        protos, sizes, _ = kmeans_prototypes(self.features_[pool], k, random_state=int(rng.integers(2**31)),
                                             minibatch_above=self.minibatch_above, max_iter=self.max_iter,
                                             engine=self.engine)
        return pool[protos], sizes
