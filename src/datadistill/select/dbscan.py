"""DBSCAN-based selection: drop noise (Ester et al., KDD 1996), then keep representatives of each cluster in
proportion to its size. ``eps`` defaults to the knee of the sorted k-distance curve (the heuristic of the
DBSCAN paper, located as the point farthest from the chord, as in Satopää et al.'s Kneedle)."""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError
from .base import allocate, register
from .features import FeatureSelector
from .kmeans import kmeans_prototypes


def knee_eps(Z: np.ndarray, min_samples: int, *, max_points: int = 20_000, random_state: int = 0) -> float:
    """The k-distance (k = ``min_samples``) at the knee of its sorted curve; a seeded subsample for large N."""
    from ..neighbors import k_distance

    if len(Z) > max_points:
        Z = Z[np.random.default_rng(random_state).choice(len(Z), max_points, replace=False)]
    k = min(min_samples, len(Z) - 1)
    kd = np.sort(k_distance(Z, k, random_state=random_state))
    if kd[-1] <= kd[0]:
        return float(kd[-1]) if kd[-1] > 0 else 1e-8
    x = np.linspace(0.0, 1.0, len(kd))
    y = (kd - kd[0]) / (kd[-1] - kd[0])
    # the curve is convex and rising: the knee is where it falls farthest below the chord y = x
    knee = int(np.argmax(x - y))
    return float(max(kd[knee], 1e-8))


def dbscan_labels(Z: np.ndarray, eps: float, min_samples: int, *, max_points: int = 20_000,
                  random_state: int = 0) -> np.ndarray:
    """DBSCAN cluster labels (-1 = noise). Above ``max_points`` samples, DBSCAN runs on a seeded subsample
    and every other sample joins the cluster of its nearest core sample when that is within ``eps``."""
    from sklearn.cluster import DBSCAN
    from sklearn.neighbors import NearestNeighbors

    if len(Z) <= max_points:
        return DBSCAN(eps=eps, min_samples=min_samples).fit_predict(Z)
    sub = np.sort(np.random.default_rng(random_state).choice(len(Z), max_points, replace=False))
    db = DBSCAN(eps=eps, min_samples=min_samples).fit(Z[sub])
    labels = np.full(len(Z), -1, dtype=np.int64)
    labels[sub] = db.labels_
    core = sub[db.core_sample_indices_]
    if len(core):
        rest = np.setdiff1d(np.arange(len(Z)), sub)
        dist, idx = NearestNeighbors(n_neighbors=1).fit(Z[core]).kneighbors(Z[rest])
        ok = dist[:, 0] <= eps
        labels[rest[ok]] = db.labels_[db.core_sample_indices_][idx[ok, 0]]
    return labels


REPRESENTATIVES = ("sample", "prototypes")
NOISE = ("stratum", "drop")


@register
class DBSCANSelector(FeatureSelector):
    """DBSCAN: density clusters as strata; each cluster keeps its proportional share of the budget.

    Args (besides the feature-space ones): ``eps`` (neighbourhood radius; default: knee of the
    k-distance curve), ``min_samples``, ``max_points`` (DBSCAN on a seeded subsample above this size),
    ``representatives``: how each cluster's share is filled — "sample" (default: a seeded random sample of
    its members, so the kept set follows the data's density inside every cluster) or "prototypes" (k-means
    prototypes inside the cluster, the member nearest the centroid when a cluster gets one; quantisation
    spreads them flatter than the cluster's density, so the kept set's distribution departs from the data's).
    ``noise``: "stratum" (default: DBSCAN's noise rows are one more stratum with its proportional share,
    sampled at random) or "drop" (Ester et al.'s reading: noise is left out; when the budget exceeds the
    non-noise count the densest noise rows fill the rest, counted in ``noise_used_``). On a tabular set
    (ijcnn1, MLP, 3 seeds) prototypes with noise dropped lost to random by 0.4-0.7 points at 2-50% and
    sampling with noise dropped still by 0.2-0.5: the rows DBSCAN calls noise (10% of a class there) are
    the boundary rows a classifier needs. ``weights_``: stratum size / rows kept from it.
    Fitted: ``eps_``, ``n_clusters_``, ``n_noise_``, ``noise_filled_`` (lists, one per pool) and ``noise_used_``
    (their total of noise rows taken to fill a budget).
    """

    name = "dbscan"
    summary = "DBSCAN: density clusters (and noise) as strata, each sampled in proportion to its size"
    cost = "O(N log N) to O(N^2) neighbourhood queries + k-means within clusters"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0, drop_misclassified=True,
                 eps: float | None = None, min_samples: int = 5,
                 max_points: int = 20_000, representatives: str = "sample", noise: str = "stratum"):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.eps = eps
        self.min_samples = min_samples
        self.max_points = max_points
        self.representatives = representatives
        self.noise = noise

    def check_params(self) -> None:
        super().check_params()
        if self.representatives not in REPRESENTATIVES:
            raise ConfigError(f"dbscan: representatives must be one of {', '.join(REPRESENTATIVES)}, "
                              f"got {self.representatives!r}")
        if self.noise not in NOISE:
            raise ConfigError(f"dbscan: noise must be one of {', '.join(NOISE)}, got {self.noise!r}")

    def _prepare(self, dataset, rng):
        if self.eps is not None and not self.eps > 0:
            raise ConfigError(f"dbscan: eps must be positive, got {self.eps}")
        if int(self.min_samples) < 1:
            raise ConfigError(f"dbscan: min_samples must be at least 1, got {self.min_samples}")
        super()._prepare(dataset, rng)

    diagnostic_names = ("eps_", "n_clusters_", "n_noise_", "noise_filled_")

    @property
    def noise_used_(self) -> int:
        """Noise rows taken to fill budgets beyond the strata, over all pools (``noise_filled_`` per pool)."""
        return int(sum(getattr(self, "noise_filled_", [])))

    def _select_pool(self, pool, k, rng):
        Z = self.features_[pool]
        seed = int(rng.integers(2**31))
        eps = self.eps if self.eps is not None else knee_eps(Z, int(self.min_samples), max_points=self.max_points,
                                                                  random_state=seed)
        labels = dbscan_labels(Z, eps, int(self.min_samples), max_points=self.max_points, random_state=seed)
        clusters = np.unique(labels[labels >= 0])
        noise = np.flatnonzero(labels < 0)
        diagnostics = {"eps_": float(eps), "n_clusters_": len(clusters), "n_noise_": len(noise), "noise_filled_": 0}
        chosen, weights = [], []
        strata = [np.flatnonzero(labels == c) for c in clusters]
        if self.noise == "stratum" and len(noise):
            strata.append(noise)
        kept = sum(len(m) for m in strata)
        if kept > 0:
            sizes = np.array([len(m) for m in strata])
            budget = allocate(sizes, min(k, kept), "proportional")
            for j, (members, size, kc) in enumerate(zip(strata, sizes, budget)):
                if kc == 0:
                    continue
                is_noise = j == len(clusters)
                if kc >= size:
                    reps = members
                elif self.representatives == "sample" or is_noise:
                    reps = np.sort(rng.choice(members, size=int(kc), replace=False))
                elif kc == 1:
                    centre = Z[members].mean(axis=0)
                    reps = members[[int(np.argmin(((Z[members] - centre) ** 2).sum(axis=1)))]]
                else:
                    protos, _, _ = kmeans_prototypes(Z[members], int(kc), random_state=seed, max_iter=50)
                    reps = members[protos]
                chosen.append(reps)
                weights.append(np.full(len(reps), size / len(reps)))
        extra = k - sum(len(c) for c in chosen)
        if extra > 0:
            # the budget exceeds the non-noise samples: fill with the densest noise points
            from sklearn.neighbors import NearestNeighbors

            kk = min(int(self.min_samples), len(Z) - 1)
            dist, _ = NearestNeighbors(n_neighbors=kk + 1).fit(Z).kneighbors(Z[noise])
            fill = noise[np.argsort(dist[:, kk], kind="stable")[:extra]]
            chosen.append(fill)
            weights.append(np.ones(len(fill)))
            diagnostics["noise_filled_"] = len(fill)
        return pool[np.concatenate(chosen)], np.concatenate(weights), diagnostics
