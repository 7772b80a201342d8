"""Facility location: maximise f(S) = sum_i max_{j in S} sim(i, j), a monotone submodular function, by
lazy greedy (Minoux 1978), which returns the same set as plain greedy and so keeps its (1 - 1/e)
guarantee (Nemhauser, Wolsey & Fisher 1978).

Similarities are kept only between each sample and its ``n_neighbors`` nearest neighbours
(:func:`datadistill.neighbors.knn`: exact search for small pools, a faiss index above), sim = exp(-d^2 / (2 sigma^2)) with sigma the median neighbour distance, and
sim(i, i) = 1; memory is O(N·n_neighbors), never N x N.
"""

from __future__ import annotations

import heapq

import numpy as np
import scipy.sparse as sp

from .base import register
from .features import FeatureSelector


def knn_similarity(Z: np.ndarray, n_neighbors: int = 20, *, backend: str = "auto",
                   random_state: int = 0) -> sp.csc_matrix:
    """Sparse (N, N) similarity W[i, j] = sim(i, j) for j among i's nearest neighbours (and j = i), as CSC.

    ``backend``: the kNN search (see :func:`datadistill.neighbors.knn`); neighbours an approximate search
    missed are simply absent.
    """
    from ..neighbors import knn

    n = len(Z)
    kk = min(n_neighbors + 1, n)
    dist, idx = knn(Z, kk, backend=backend, random_state=random_state)
    rest = dist[:, 1:]
    positive = rest[(rest > 0) & np.isfinite(rest)]
    sigma = float(np.median(positive)) if positive.size else 1.0
    found = idx >= 0
    sim = np.exp(-(dist[found].astype(np.float64) ** 2) / (2 * sigma**2))
    rows = np.repeat(np.arange(n), kk).reshape(n, kk)[found]
    W = sp.csr_matrix((sim, (rows, idx[found])), shape=(n, n))
    W = W.maximum(sp.identity(n, format="csr"))
    return W.tocsc()


def facility_location_greedy(W: sp.csc_matrix, k: int, rng: np.random.Generator
                             ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lazy greedy maximisation of sum_i max_{j in S} W[i, j]; returns (chosen, gains, owner counts).

    ``gains[t]`` is the marginal gain of the t-th pick (non-increasing); ``owner counts`` how many samples
    have each chosen sample as their most similar one (samples no chosen sample covers are not counted).
    Once every gain is zero, the remaining picks are seeded random samples.
    """
    n = W.shape[0]
    indptr, indices, data = W.indptr, W.indices, W.data
    best = np.zeros(n)
    owner = np.full(n, -1, dtype=np.int64)
    gains0 = np.asarray(W.sum(axis=0)).ravel()
    # max-heap of (-upper bound on gain, tie-break, candidate); stale bounds are refreshed on pop
    tie = rng.permutation(n)
    heap = [(-gains0[j], int(tie[j]), j) for j in range(n)]
    heapq.heapify(heap)
    taken = np.zeros(n, dtype=bool)
    chosen, gains = [], []
    while len(chosen) < k and heap:
        neg, t, j = heapq.heappop(heap)
        if taken[j]:
            continue
        rows = indices[indptr[j]:indptr[j + 1]]
        vals = data[indptr[j]:indptr[j + 1]]
        gain = float(np.maximum(vals - best[rows], 0).sum())
        if heap and gain < -heap[0][0] - 1e-12:
            heapq.heappush(heap, (-gain, t, j))
            continue
        if gain <= 0:
            break
        better = vals > best[rows]
        best[rows[better]] = vals[better]
        owner[rows[better]] = len(chosen)
        taken[j] = True
        chosen.append(j)
        gains.append(gain)
    if len(chosen) < k:
        rest = rng.permutation(np.flatnonzero(~taken))[:k - len(chosen)]
        gains.extend([0.0] * len(rest))
        chosen.extend(rest.tolist())
    counts = np.bincount(owner[owner >= 0], minlength=k).astype(np.float64)
    return np.asarray(chosen, dtype=np.int64), np.asarray(gains), counts


def facility_location_value(W: sp.csc_matrix, S) -> float:
    """f(S) = sum_i max_{j in S} W[i, j] for the sparse similarity ``W``."""
    S = np.asarray(S, dtype=np.int64)
    if len(S) == 0:
        return 0.0
    return float(W[:, S].max(axis=1).toarray().sum())


@register
class FacilityLocationSelector(FeatureSelector):
    """Facility location: kept samples that together are most similar to every sample (lazy greedy).

    Args (besides the feature-space ones): ``n_neighbors`` (similarities kept per sample), ``knn_backend``
    ("auto", "exact", "ivf", "hnsw": the neighbour search, see :mod:`datadistill.neighbors`).
    Fitted: ``gains_`` (marginal gains in pick order, per pool), ``objective_`` (f(S) per pool);
    ``weights_``: how many samples each kept one is the most similar kept sample of (at least 1).
    """

    name = "facility-location"
    summary = "facility location (kNN-sparse similarities, lazy greedy): kept samples resemble every sample"
    cost = "O(N log N·d) kNN graph + O(N·n_neighbors) memory; lazy greedy over the sparse graph"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0, drop_misclassified=True,
                 n_neighbors: int = 20, knn_backend: str = "auto"):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.n_neighbors = n_neighbors
        self.knn_backend = knn_backend

    diagnostic_names = ("gains_", "objective_")

    def _select_pool(self, pool, k, rng):
        W = knn_similarity(self.features_[pool], int(self.n_neighbors), backend=self.knn_backend,
                           random_state=int(rng.integers(2**31)))
        chosen, gains, counts = facility_location_greedy(W, k, rng)
        return pool[chosen], np.maximum(counts, 1.0), {"gains_": gains, "objective_": float(gains.sum())}
