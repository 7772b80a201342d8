"""k-means prototypes: cluster with k-means, keep the real sample nearest each centroid."""

from __future__ import annotations

import numpy as np
import torch

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


def kmeans_prototypes(Z: np.ndarray, k: int, *, random_state: int, minibatch_above: int = 2_000_000,
                      max_iter: int = 100) -> tuple[np.ndarray, np.ndarray, float]:
    """k-means on ``Z`` (N, d); returns (nearest real sample per centroid, cluster sizes, inertia).

    scikit-learn's KMeans (Lloyd, k-means++ seeding) when N·k <= ``minibatch_above``, else MiniBatchKMeans.
    Empty clusters (possible with mini-batches) are replaced by the unused samples farthest from every
    prototype, and sizes are then recounted as the prototypes' Voronoi cells, so sizes always sum to N.
    """
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if len(Z) * k <= minibatch_above:
        km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=random_state)
    else:
        km = MiniBatchKMeans(n_clusters=k, n_init=1, max_iter=max_iter, batch_size=max(1024, 4 * k),
                             random_state=random_state)
    labels = km.fit_predict(Z)
    protos = nearest_members(Z, labels, km.cluster_centers_)
    sizes = np.bincount(labels, minlength=k).astype(np.float64)
    if (protos < 0).any():
        Zt = torch.as_tensor(Z)
        have = protos[protos >= 0]
        for j in np.flatnonzero(protos < 0):
            _, d = nearest(Zt, Zt[torch.as_tensor(have)])
            d[torch.as_tensor(have)] = -1.0
            far = int(torch.argmax(d))
            protos[j] = far
            have = np.append(have, far)
        idx, _ = nearest(Zt, Zt[torch.as_tensor(protos)])
        sizes = np.bincount(idx.numpy(), minlength=k).astype(np.float64)
    return protos, sizes, float(km.inertia_)


@register
class KMeansSelector(FeatureSelector):
    """k-means prototypes: the real sample nearest each of k centroids; ``weights_`` = cluster sizes.

    ``minibatch_above``: use MiniBatchKMeans when pool size x k exceeds it (large pools).
    """

    name = "kmeans"
    summary = "k-means prototypes: the real sample nearest each centroid, weighted by cluster size"
    cost = "O(N·k·d) per Lloyd iteration (mini-batches for large pools)"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0,
                 minibatch_above: int = 2_000_000,
                 max_iter: int = 100):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature)
        self.minibatch_above = minibatch_above
        self.max_iter = max_iter

    def _select_pool(self, pool, k, rng):
        protos, sizes, _ = kmeans_prototypes(self.features_[pool], k, random_state=int(rng.integers(2**31)),
                                             minibatch_above=self.minibatch_above, max_iter=self.max_iter)
        return pool[protos], sizes
