"""k-medoids: choose k real samples minimising the sum of distances from every sample to its nearest one.

Initialisation: PAM's greedy BUILD when the distance matrix is stored, and greedy k-medoids++ (D-sampling
with several trials per step, keeping the trial that lowers the objective most; Arthur & Vassilvitskii
2007). Improvement: eager swaps as in FasterPAM (Schubert & Rousseeuw, "Fast and eager k-medoids
clustering", 2021): for a candidate c, the change of swapping out medoid i is shared(c) + per_i(c),
computed for all i at once from each sample's nearest and second-nearest medoid distances; the first
improving swap is applied at once, and passes repeat until none improves (a swap local optimum).

Two regimes: pools of at most ``max_matrix`` samples use the full dissimilarity matrix (N^2 floats of
memory, e.g. 576 MB at 12,000) and swap over every sample, from ``n_init`` seedings (BUILD, then
k-medoids++) followed by ``n_perturb`` rounds of iterated local search (replace a few medoids, swap to a
local optimum again, keep the result if it is better); larger pools use alternating (Voronoi) iteration
with chunked distances, then the same eager swaps with candidates drawn from a seeded subsample.
Distances are computed in float64 (stored as float32): float32 cdist is off by ~1e-3, which is as much as
the swap gains near a local optimum.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from .base import register
from .features import FeatureSelector


def pairwise(A: torch.Tensor, B: torch.Tensor) -> torch.Tensor:
    """Euclidean distances between the rows of ``A`` and ``B``, computed in float64 and returned in A's dtype.

    Float32 cdist takes the matrix-product route (|a|^2 + |b|^2 - 2ab), whose cancellation leaves errors of
    about 1e-3 on MNIST-scale data (a sample's distance to itself is not 0); those errors are as large as
    the objective differences the swap phase decides on, so the arithmetic is done in float64.
    """
    return torch.cdist(A.double(), B.double()).to(A.dtype)


class _Distances:
    """Rows of the dissimilarity matrix, either stored (small pools) or computed on demand in chunks."""

    def __init__(self, X: torch.Tensor, stored: bool, block: int = 1 << 24):
        self.X = X
        self.n = len(X)
        self.block = block
        self.D = None
        if stored:
            step = max(1, (block // 2) // self.n)
            self.D = torch.cat([pairwise(X[i:i + step], X) for i in range(0, self.n, step)])
            self.D.fill_diagonal_(0.0)

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        if self.D is not None:
            return self.D[idx]
        return pairwise(self.X[idx], self.X)

    def to(self, points: torch.Tensor, medoids: torch.Tensor) -> torch.Tensor:
        if self.D is not None:
            return self.D[points[:, None], medoids[None, :]]  # gathers only the (points x medoids) block
        return pairwise(self.X[points], self.X[medoids])

    def top2(self, points: torch.Tensor, medoids: torch.Tensor):
        """Nearest and second-nearest medoid (slot, distance) of each point, chunked over points."""
        step = max(1, self.block // max(1, len(medoids)))
        out = [[], [], [], []]
        for i in range(0, len(points), step):
            out_i = top2_of(self.to(points[i:i + step], medoids))
            for o, v in zip(out, out_i):
                o.append(v)
        return tuple(torch.cat(o) for o in out)


def top2_of(d: torch.Tensor):
    """(nearest slot, its distance, second-nearest slot, its distance) for each row of a points x medoids block."""
    if d.shape[1] == 1:
        zero = torch.zeros(len(d), dtype=torch.long, device=d.device)
        return zero, d[:, 0], zero, torch.full((len(d),), float("inf"), device=d.device, dtype=d.dtype)
    v, j = torch.topk(d, 2, dim=1, largest=False)
    return j[:, 0], v[:, 0], j[:, 1], v[:, 1]


def kmedoids_pp(dist: _Distances, k: int, rng: np.random.Generator, start: torch.Tensor | None = None,
                trials: int | None = None) -> torch.Tensor:
    """Greedy k-medoids++ seeding: D-sampling with 2 + log k trials, keep the best trial each step.

    With ``start`` (medoids already chosen), only the remaining ``k - len(start)`` are added; ``trials=1``
    is plain D-sampling.
    """
    n = dist.n
    dev = dist.X.device
    if trials is None:
        trials = 2 + int(math.log(k)) if k > 1 else 1
    if start is None or len(start) == 0:
        first = int(rng.integers(n))
        medoids = [first]
        dn = dist.rows(torch.tensor([first], device=dev))[0].double()
        dn[first] = 0.0
    else:
        medoids = [int(m) for m in start]
        if dist.D is not None:
            dn = dist.D[:, start].min(dim=1).values.double()
        else:
            dn = dist.top2(torch.arange(n, device=dev), start)[1].double()
        dn[start] = 0.0
    while len(medoids) < k:
        p = dn.clamp(min=0).cpu().numpy()
        total = p.sum()
        if total <= 0:  # every sample coincides with a medoid: take any unused one
            free = np.setdiff1d(np.arange(n), medoids)
            cands = rng.choice(free, size=1)
        else:
            cands = rng.choice(n, size=min(trials, int((p > 0).sum())), replace=False, p=p / total)
        R = dist.rows(torch.as_tensor(cands, device=dev)).double()
        cost = torch.minimum(R, dn).sum(dim=1)
        b = int(torch.argmin(cost))
        medoids.append(int(cands[b]))
        dn = torch.minimum(dn, R[b])
        dn[int(cands[b])] = 0.0
    return torch.as_tensor(medoids, device=dev)


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
            step = max(1, (dist.block // 2) // len(members))
            cost = torch.cat([pairwise(X[cand[i:i + step]], X[members]).double().sum(dim=1)
                              for i in range(0, len(cand), step)])
            best = cand[int(torch.argmin(cost))]
            if int(best) != int(medoids[j]):
                medoids[j] = best
                changed = True
        if not changed:
            break
    return medoids


def eager_swap(dist: _Distances, medoids: torch.Tensor, candidates: torch.Tensor | None = None, *,
               start: int = 0, max_passes: int = 100, progress: Callable[[int], None] | None = None
               ) -> tuple[torch.Tensor, int, float]:
    """FasterPAM-style eager swaps of medoids with ``candidates`` until a full pass finds no improvement.

    For a candidate c, the change of swapping out medoid i is shared(c) + per_i(c), computed for every i at
    once from each sample's nearest and second-nearest medoid distances; the first swap that lowers the
    objective is applied at once, and evaluation resumes right after the candidate swapped in. It stops when
    a whole pass over the candidates finds no improving swap (a local optimum of the swap neighbourhood, the
    same stopping rule as FasterPAM) or after ``max_passes`` passes' worth of evaluations.

    ``candidates=None`` means every sample, visited in index order from ``start`` (blocks of the stored
    matrix are then views, not copies). Returns (medoids, number of swaps, objective). Candidates are evaluated in
    adaptive blocks (bigger while no swap is found). With a stored matrix the (samples x medoids) distance
    columns are kept and updated per swap.
    """
    n, k = dist.n, len(medoids)
    dev = dist.X.device
    medoids = medoids.clone()
    is_medoid = torch.zeros(n, dtype=torch.bool, device=dev)
    is_medoid[medoids] = True
    cols = dist.D[:, medoids] if dist.D is not None else None  # n x k, stored route only
    near, dn, sec, ds = top2_of(cols) if cols is not None else dist.top2(torch.arange(n, device=dev), medoids)
    gap = ds - dn  # what each sample loses if its nearest medoid goes (inf with a single medoid)
    m = n if candidates is None else len(candidates)
    block_max = max(8, (1 << 22) // n)
    block = min(64, block_max)
    pos, since_swap, swaps = int(start) % m, 0, 0
    budget = max_passes * m
    evaluated = 0
    # a swap must gain more than rounding noise (float32 sums over n samples)
    tol = 1e-6 * float(dn.double().sum()) / n + 1e-12
    while since_swap < m and evaluated < budget:
        b = min(block, m - since_swap, m - pos)  # blocks do not wrap around the end
        if candidates is None:
            cb = torch.arange(pos, pos + b, device=dev)
            R = dist.D[pos:pos + b] if dist.D is not None else dist.rows(cb)
        else:
            cb = candidates[pos:pos + b]
            R = dist.rows(cb)
        E = R - dn  # (b, n): change of each sample's distance were c its medoid
        shared = E.clamp(max=0).sum(dim=1)  # gains of the samples c would take over
        torch.minimum(E, gap, out=E).clamp_(min=0)  # losses if their nearest medoid were the one removed
        delta = torch.zeros((b, k), dtype=R.dtype, device=dev).index_add_(1, near, E)
        delta += shared[:, None]
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
        if cols is not None:
            cols[:, i] = rc  # the matrix is symmetric: column c = row c
            a_near, a_dn, a_sec, a_ds = top2_of(cols[affected])
        else:
            a_near, a_dn, a_sec, a_ds = dist.top2(affected, medoids)
        near[affected], dn[affected], sec[affected], ds[affected] = a_near, a_dn, a_sec, a_ds
        gap[affected] = a_ds - a_dn
        swaps += 1
        pos = (pos + j + 1) % m
        evaluated += j + 1
        since_swap = 0
        block = max(8, block // 2)
        if progress is not None:
            progress(swaps)
    return medoids, swaps, float(dn.double().sum())


def perturb(dist: _Distances, medoids: torch.Tensor, r: int, rng: np.random.Generator) -> torch.Tensor:
    """Replace ``r`` medoids drawn at random by ``r`` new ones D-sampled around the others.

    Plain D-sampling (one trial per step) rather than the greedy seeding: the greedy choice tends to rebuild
    the configuration that was removed, which leaves the search in the same basin."""
    k = len(medoids)
    keep = torch.ones(k, dtype=torch.bool, device=medoids.device)
    keep[torch.as_tensor(rng.choice(k, size=min(r, k - 1), replace=False), device=medoids.device)] = False
    return kmedoids_pp(dist, k, rng, start=medoids[keep], trials=1)


def kmedoids(X: torch.Tensor, k: int, rng: np.random.Generator, *, max_matrix: int = 12_000,
             max_passes: int = 100, swap_candidates: int = 2000, n_init: int = 1, n_perturb: int = 12,
             perturb_fraction: float = 0.1) -> tuple[np.ndarray, np.ndarray, float]:
    """k-medoids of the rows of ``X``; returns (medoid rows, cluster sizes, objective = sum of distances).

    Pools of at most ``max_matrix`` samples store the distance matrix and search in two stages, each local
    search being eager swaps over every sample until no swap lowers the objective (a swap local optimum):

    1. ``n_init`` local searches, the first seeded by greedy BUILD, the others by greedy k-medoids++;
    2. ``n_perturb`` rounds of iterated local search from the best solution so far: replace a random
       ``perturb_fraction`` of its medoids (at least 2) by k-medoids++ draws, search again, and keep the
       result if its objective is lower.

    The result is therefore a swap local optimum no worse than the best of the ``n_init`` searches. The
    samples are visited in a seeded random order (the pool is permuted once), so the result depends only on
    ``rng``. Larger pools use Voronoi iteration with chunked distances, then eager swaps over a seeded
    subsample of ``swap_candidates`` for at most 2 passes.

    Args:
        X: (N, d) float tensor on any device.
        k: number of medoids.
        rng: seeded generator (sample order, seedings, perturbations, candidate subsample).
        max_matrix: largest N for which the N x N distance matrix is stored and every sample is a swap candidate.
        max_passes: cap on full passes of eager swaps in one local search.
        swap_candidates: candidates for the swap stage of large pools (seeded subsample).
        n_init: independent local searches (stored matrix only).
        n_perturb: iterated-local-search rounds (stored matrix only; 0 turns them off).
        perturb_fraction: share of the medoids replaced in each round.
    """
    n = len(X)
    dev = X.device
    if not 1 <= k <= n:
        raise ValueError(f"k-medoids: k must be in [1, {n}], got {k}")
    stored = n <= max_matrix
    everyone = torch.arange(n, device=dev)
    if not stored:
        dist = _Distances(X, False)
        medoids = voronoi_iteration(dist, kmedoids_pp(dist, k, rng), rng)
        candidates = torch.as_tensor(rng.choice(n, size=min(n, swap_candidates), replace=False), device=dev)
        medoids, _, _ = eager_swap(dist, medoids, candidates, max_passes=min(max_passes, 2))
        near, dn, _, _ = dist.top2(everyone, medoids)
        sizes = torch.bincount(near, minlength=k).cpu().numpy().astype(np.float64)
        return medoids.cpu().numpy(), sizes, float(dn.double().sum())

    order = torch.as_tensor(rng.permutation(n), device=dev)  # candidates are visited in index order
    dist = _Distances(X[order], True)

    def search(medoids: torch.Tensor) -> tuple[torch.Tensor, float]:
        medoids, _, obj = eager_swap(dist, medoids, start=int(rng.integers(n)), max_passes=max_passes)
        return medoids, obj

    best, best_obj = None, math.inf
    for run in range(max(1, int(n_init))):
        medoids, obj = search(greedy_build(dist.D, k) if run == 0 else kmedoids_pp(dist, k, rng))
        if obj < best_obj:
            best, best_obj = medoids, obj
    if k > 1:
        r = max(2, round(perturb_fraction * k))
        for _ in range(max(0, int(n_perturb))):
            medoids, obj = search(perturb(dist, best, r, rng))
            if obj < best_obj * (1 - 1e-9):
                best, best_obj = medoids, obj
    near = dist.D[:, best].argmin(dim=1)
    sizes = torch.bincount(near, minlength=k).cpu().numpy().astype(np.float64)
    return order[best].cpu().numpy(), sizes, best_obj


@register
class KMedoidsSelector(FeatureSelector):
    """k-medoids: the k real samples with the least total distance from every sample to its nearest one.

    Args (besides the feature-space ones): ``max_matrix`` (largest pool that stores its N x N distance
    matrix), ``max_passes`` (swap passes), ``swap_candidates`` (swap-stage candidates for larger pools),
    ``n_init`` (seedings tried when the matrix is stored: BUILD, then k-medoids++; the best is kept),
    ``n_perturb`` and ``perturb_fraction`` (iterated-local-search rounds from the best, each replacing that
    share of its medoids; stored matrix only).
    ``weights_`` are cluster sizes; ``objective_`` the summed distance of each pool.
    """

    name = "kmedoids"
    summary = "k-medoids (k-medoids++ seeding + FasterPAM-style eager swaps): minimise summed distance"
    cost = "O(N^2·d) time and O(N^2) memory per pool up to max_matrix; O(N·k·d) per iteration beyond"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0,
                 max_matrix: int = 12_000, max_passes: int = 100,
                 swap_candidates: int = 2000, n_init: int = 1, n_perturb: int = 12,
                 perturb_fraction: float = 0.1):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature)
        self.max_matrix = max_matrix
        self.max_passes = max_passes
        self.swap_candidates = swap_candidates
        self.n_init = n_init
        self.n_perturb = n_perturb
        self.perturb_fraction = perturb_fraction

    def _prepare(self, dataset, rng):
        super()._prepare(dataset, rng)
        self.objective_ = []

    def _select_pool(self, pool, k, rng):
        medoids, sizes, objective = kmedoids(self._tensor(pool), k, rng, max_matrix=self.max_matrix,
                                             max_passes=self.max_passes, swap_candidates=self.swap_candidates,
                                             n_init=self.n_init, n_perturb=self.n_perturb,
                                             perturb_fraction=self.perturb_fraction)
        self.objective_.append(objective)
        return pool[medoids], sizes
