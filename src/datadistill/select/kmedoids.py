"""k-medoids: choose k real samples minimising the sum of distances from every sample to its nearest one.

Initialisation: PAM's greedy BUILD when the distance matrix is stored, and greedy k-medoids++ (D-sampling
with several trials per step, keeping the trial that lowers the objective most; Arthur & Vassilvitskii 2007). Improvement: eager swaps as in FasterPAM (Schubert &
Rousseeuw, "Fast and eager k-medoids clustering", 2021): for a candidate c, the change of swapping out
medoid i is shared(c) + per_i(c), computed for all i at once from each sample's nearest and second-nearest
medoid distances, and the first improving swap is applied at once. Small pools (matrix stored) run ``n_init``
local searches (BUILD first, then k-medoids++ seedings) and keep the best.

Two regimes: pools of at most ``max_matrix`` samples use the full dissimilarity matrix (N^2 floats of
memory, e.g. 576 MB at 12,000) and swap over every sample; larger pools use alternating (Voronoi)
iteration with chunked distances, then the same eager swaps with candidates drawn from a seeded subsample.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .base import register
from .features import FeatureSelector


class _Distances:
    """Rows of the dissimilarity matrix, either stored (small pools) or computed on demand in chunks."""

    def __init__(self, X: torch.Tensor, stored: bool, block: int = 1 << 24):
        self.X = X
        self.n = len(X)
        self.block = block
        self.D = None
        if stored:
            step = max(1, block // self.n)
            self.D = torch.cat([torch.cdist(X[i:i + step], X) for i in range(0, self.n, step)])

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        if self.D is not None:
            return self.D[idx]
        return torch.cdist(self.X[idx], self.X)

    def to(self, points: torch.Tensor, medoids: torch.Tensor) -> torch.Tensor:
        if self.D is not None:
            return self.D[points][:, medoids]
        return torch.cdist(self.X[points], self.X[medoids])

    def top2(self, points: torch.Tensor, medoids: torch.Tensor):
        """Nearest and second-nearest medoid (slot, distance) of each point, chunked over points."""
        step = max(1, self.block // max(1, len(medoids)))
        out = [[], [], [], []]
        for i in range(0, len(points), step):
            d = self.to(points[i:i + step], medoids)
            if d.shape[1] == 1:
                out[0].append(torch.zeros(len(d), dtype=torch.long, device=d.device))
                out[1].append(d[:, 0])
                out[2].append(torch.zeros(len(d), dtype=torch.long, device=d.device))
                out[3].append(torch.full((len(d),), float("inf"), device=d.device, dtype=d.dtype))
                continue
            v, j = torch.topk(d, 2, dim=1, largest=False)
            out[0].append(j[:, 0])
            out[1].append(v[:, 0])
            out[2].append(j[:, 1])
            out[3].append(v[:, 1])
        return tuple(torch.cat(o) for o in out)


def kmedoids_pp(dist: _Distances, k: int, rng: np.random.Generator) -> torch.Tensor:
    """Greedy k-medoids++ seeding: D-sampling with 2 + log k trials, keep the best trial each step."""
    n = dist.n
    trials = 2 + int(math.log(k)) if k > 1 else 1
    first = int(rng.integers(n))
    medoids = [first]
    dn = dist.rows(torch.tensor([first], device=dist.X.device))[0].double()
    dn[first] = 0.0
    for _ in range(1, k):
        p = dn.clamp(min=0).cpu().numpy()
        total = p.sum()
        if total <= 0:  # every sample coincides with a medoid: take any unused one
            free = np.setdiff1d(np.arange(n), medoids)
            cands = rng.choice(free, size=1)
        else:
            cands = rng.choice(n, size=min(trials, int((p > 0).sum())), replace=False, p=p / total)
        R = dist.rows(torch.as_tensor(cands, device=dist.X.device)).double()
        cost = torch.minimum(R, dn).sum(dim=1)
        b = int(torch.argmin(cost))
        medoids.append(int(cands[b]))
        dn = torch.minimum(dn, R[b])
        dn[int(cands[b])] = 0.0
    return torch.as_tensor(medoids, device=dist.X.device)


def greedy_build(D: torch.Tensor, k: int) -> torch.Tensor:
    """PAM's BUILD (Kaufman & Rousseeuw 1990) on a stored distance matrix: add, k times, the sample that lowers
    the objective most. Gains are updated only through the samples whose nearest distance changed."""
    n = len(D)
    first = int(torch.argmin(D.double().sum(dim=1)))
    medoids = [first]
    dn = D[first].clone()
    gain = torch.zeros(n, dtype=torch.float64, device=D.device)
    step = max(1, (1 << 24) // n)
    for i in range(0, n, step):
        gain[i:i + step] = (dn - D[i:i + step]).clamp(min=0).double().sum(dim=1)
    taken = torch.zeros(n, dtype=torch.bool, device=D.device)
    taken[first] = True
    for _ in range(1, k):
        c = int(torch.argmax(gain.masked_fill(taken, -1.0)))
        medoids.append(c)
        taken[c] = True
        new = torch.minimum(dn, D[c])
        changed = torch.nonzero(new < dn).squeeze(1)
        if len(changed):
            cols = D[changed]  # symmetric: rows of the changed samples = their columns
            old_part = (dn[changed, None] - cols).clamp(min=0)
            new_part = (new[changed, None] - cols).clamp(min=0)
            gain -= (old_part - new_part).double().sum(dim=0)
        dn = new
    return torch.as_tensor(medoids, device=D.device)


def voronoi_iteration(dist: _Distances, medoids: torch.Tensor, rng: np.random.Generator, *, max_iter: int = 10,
                      max_candidates: int = 500) -> torch.Tensor:
    """Alternate: assign samples to their nearest medoid, then move each medoid to its cluster's medoid.

    The new medoid is the member (of at most ``max_candidates`` seeded candidates, the current medoid
    always included) with the least summed distance to all members of the cluster.
    """
    medoids = medoids.clone()
    X = dist.X
    for _ in range(max_iter):
        near, _, _, _ = dist.top2(torch.arange(dist.n, device=X.device), medoids)
        changed = False
        order = torch.argsort(near, stable=True)
        counts = torch.bincount(near, minlength=len(medoids)).cpu().numpy()
        starts = np.concatenate([[0], np.cumsum(counts)])
        for j in range(len(medoids)):
            members = order[starts[j]:starts[j + 1]]
            if len(members) <= 1:
                continue
            cand = members
            if len(members) > max_candidates:
                pick = rng.choice(len(members), size=max_candidates - 1, replace=False)
                cand = torch.unique(torch.cat([members[torch.as_tensor(pick, device=X.device)], medoids[j:j + 1]]))
            step = max(1, dist.block // len(members))
            cost = torch.cat([torch.cdist(X[cand[i:i + step]], X[members]).double().sum(dim=1)
                              for i in range(0, len(cand), step)])
            best = cand[int(torch.argmin(cost))]
            if int(best) != int(medoids[j]):
                medoids[j] = best
                changed = True
        if not changed:
            break
    return medoids


def eager_swap(dist: _Distances, medoids: torch.Tensor, candidates: torch.Tensor, *, max_passes: int = 100,
               progress: Callable[[int], None] | None = None) -> tuple[torch.Tensor, int]:
    """FasterPAM-style eager swaps of medoids with ``candidates`` until a full pass finds no improvement.

    Returns (medoids, number of swaps). Candidates are evaluated in adaptive blocks; after an improving
    swap, evaluation resumes right after the candidate that was swapped in, which keeps it eager.
    """
    n, k = dist.n, len(medoids)
    dev = dist.X.device
    medoids = medoids.clone()
    is_medoid = torch.zeros(n, dtype=torch.bool, device=dev)
    is_medoid[medoids] = True
    everyone = torch.arange(n, device=dev)
    near, dn, sec, ds = dist.top2(everyone, medoids)
    m = len(candidates)
    block_max = max(8, (1 << 22) // n)
    block = min(64, block_max)
    pos, since_swap, swaps = 0, 0, 0
    budget = max_passes * m
    evaluated = 0
    tol = 1e-6 * float(dn.double().sum()) / n + 1e-12
    while since_swap < m and evaluated < budget:
        b = min(block, m - since_swap)
        take = (pos + torch.arange(b, device=dev)) % m
        cb = candidates[take]
        R = dist.rows(cb)
        shared = (R - dn).clamp(max=0).sum(dim=1)
        T = (torch.minimum(R, ds) - dn).clamp(min=0)
        per = torch.zeros((b, k), dtype=R.dtype, device=dev).index_add_(1, near, T)
        delta = per + shared[:, None]
        delta[is_medoid[cb]] = float("inf")
        best, slot = delta.min(dim=1)
        hit = torch.nonzero(best < -tol).squeeze(1)
        if len(hit) == 0:
            pos = (pos + b) % m
            since_swap += b
            evaluated += b
            block = min(block * 2, block_max)
            continue
        j = int(hit[0])
        c, i = int(cb[j]), int(slot[j])
        old = int(medoids[i])
        medoids[i] = c
        is_medoid[old] = False
        is_medoid[c] = True
        rc = R[j]
        affected = torch.nonzero((near == i) | (sec == i) | (rc < ds)).squeeze(1)
        a_near, a_dn, a_sec, a_ds = dist.top2(affected, medoids)
        near[affected], dn[affected], sec[affected], ds[affected] = a_near, a_dn, a_sec, a_ds
        swaps += 1
        pos = (pos + j + 1) % m
        evaluated += j + 1
        since_swap = 0
        block = max(8, block // 2)
        if progress is not None:
            progress(swaps)
    return medoids, swaps


def kmedoids(X: torch.Tensor, k: int, rng: np.random.Generator, *, max_matrix: int = 12_000,
             max_passes: int = 100, swap_candidates: int = 2000, n_init: int = 3
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """k-medoids of the rows of ``X``; returns (medoid rows, cluster sizes, objective = sum of distances).

    Args:
        X: (N, d) float tensor on any device.
        k: number of medoids.
        rng: seeded generator (initialisation and candidate subsample).
        max_matrix: largest N for which the N x N distance matrix is stored and every sample is a swap candidate.
        max_passes: cap on full passes of eager swaps.
        swap_candidates: candidates for the swap stage of large pools (seeded subsample).
        n_init: local searches when the matrix is stored (the first seeded by greedy BUILD, the others by
            k-medoids++), each followed by swaps; the best is kept.
    """
    n = len(X)
    stored = n <= max_matrix
    dist = _Distances(X, stored)
    everyone = torch.arange(n, device=X.device)
    best = (math.inf, None)
    for run in range(max(1, int(n_init)) if stored else 1):
        medoids = greedy_build(dist.D, k) if stored and run == 0 else kmedoids_pp(dist, k, rng)
        if stored:
            candidates = torch.as_tensor(rng.permutation(n), device=X.device)
            passes = max_passes
        else:
            medoids = voronoi_iteration(dist, medoids, rng)
            candidates = torch.as_tensor(rng.choice(n, size=min(n, swap_candidates), replace=False),
                                         device=X.device)
            passes = min(max_passes, 2)
        medoids, _ = eager_swap(dist, medoids, candidates, max_passes=passes)
        objective = float(dist.top2(everyone, medoids)[1].double().sum())
        if objective < best[0]:
            best = (objective, medoids)
    objective, medoids = best
    near, _, _, _ = dist.top2(everyone, medoids)
    sizes = torch.bincount(near, minlength=k).cpu().numpy().astype(np.float64)
    return medoids.cpu().numpy(), sizes, objective


@register
class KMedoidsSelector(FeatureSelector):
    """k-medoids: the k real samples with the least total distance from every sample to its nearest one.

    Args (besides the feature-space ones): ``max_matrix`` (largest pool that stores its N x N distance
    matrix), ``max_passes`` (swap passes), ``swap_candidates`` (swap-stage candidates for larger pools),
    ``n_init`` (seedings tried when the matrix is stored: BUILD, then k-medoids++; the best is kept).
    ``weights_`` are cluster sizes; ``objective_`` the summed distance of each pool.
    """

    name = "kmedoids"
    summary = "k-medoids (k-medoids++ seeding + FasterPAM-style eager swaps): minimise summed distance"
    cost = "O(N^2·d) time and O(N^2) memory per pool up to max_matrix; O(N·k·d) per iteration beyond"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None,
                 max_matrix: int = 12_000, max_passes: int = 100,
                 swap_candidates: int = 2000, n_init: int = 3):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params)
        self.max_matrix = max_matrix
        self.max_passes = max_passes
        self.swap_candidates = swap_candidates
        self.n_init = n_init

    def _prepare(self, dataset, rng):
        super()._prepare(dataset, rng)
        self.objective_ = []

    def _select_pool(self, pool, k, rng):
        medoids, sizes, objective = kmedoids(self._tensor(pool), k, rng, max_matrix=self.max_matrix,
                                             max_passes=self.max_passes, swap_candidates=self.swap_candidates,
                                             n_init=self.n_init)
        self.objective_.append(objective)
        return pool[medoids], sizes
