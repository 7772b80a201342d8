"""Agglomerative (Ward) clustering into k clusters; keep the member nearest each cluster's mean.

Ward linkage (Ward 1963) needs O(N^2) memory, so pools above ``max_ward`` samples are first reduced to
``max_ward`` k-means pre-clusters (MiniBatchKMeans, seeded); Ward then merges the pre-cluster centroids
(each weighted as one point) and every sample inherits its pre-cluster's label.
"""

from __future__ import annotations

import numpy as np

from .base import register
from .features import FeatureSelector
from .kmeans import nearest_members


def ward_labels(Z: np.ndarray, k: int, *, max_ward: int = 8_000, random_state: int = 0) -> np.ndarray:
    """Ward cluster labels (0..k-1) of the rows of ``Z``."""
    from sklearn.cluster import AgglomerativeClustering, MiniBatchKMeans

    if len(Z) <= max_ward:
        return AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(Z)
    m = max(k, max_ward)
    pre = MiniBatchKMeans(n_clusters=m, n_init=1, batch_size=max(1024, 4 * m), random_state=random_state)
    pre_labels = pre.fit_predict(Z)
    centres = pre.cluster_centers_
    used = np.unique(pre_labels)
    if len(used) < k:  # fewer non-empty pre-clusters than asked clusters: Ward on the samples' own subsample
        used = np.arange(m)
    ward = AgglomerativeClustering(n_clusters=k, linkage="ward").fit_predict(centres[used])
    lookup = np.zeros(m, dtype=np.int64)
    lookup[used] = ward
    return lookup[pre_labels]


@register
class AgglomerativeSelector(FeatureSelector):
    """Ward agglomerative clustering into k clusters; the member nearest each cluster mean is kept.

    ``weights_`` = cluster sizes. ``max_ward``: larger pools are pre-clustered by k-means first.
    """

    name = "agglomerative"
    summary = "Ward hierarchical clustering into k clusters; keep the member nearest each cluster mean"
    cost = "O(N^2) time and memory up to max_ward samples; k-means pre-clustering beyond"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0, drop_misclassified=True,
                 max_ward: int = 8_000):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.max_ward = max_ward

    def _select_pool(self, pool, k, rng):
        Z = self.features_[pool]
        labels = ward_labels(Z, k, max_ward=self.max_ward, random_state=int(rng.integers(2**31)))
        sizes = np.bincount(labels, minlength=k)
        sums = np.zeros((k, Z.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, Z)
        reps = nearest_members(Z, labels, sums / np.maximum(sizes, 1)[:, None])
        weights = sizes.astype(np.float64)
        missing = reps < 0
        if missing.any():  # empty clusters (only with many duplicate samples): fill with unused samples
            free = np.setdiff1d(np.arange(len(Z)), reps[~missing])
            reps[missing] = rng.choice(free, size=int(missing.sum()), replace=False)
            weights[missing] = 1.0
        return pool[reps], weights
