"""k-medoids: choose k real samples minimising the sum of distances from every sample to its nearest one.

Two engines, both built on FasterPAM (Schubert & Rousseeuw, "Fast and eager k-medoids clustering", 2021), the
compiled implementation of the ``kmedoids`` package:

- matrix (pools of at most ``max_matrix`` samples): the N x N distance matrix (float64 up to 8,192 samples,
  float32 above: 1.6 GB at 20,000), FasterPAM from BUILD (when N^2·k is small) or greedy k-medoids++ seeding
  (Arthur & Vassilvitskii 2007), then ``n_perturb`` rounds of iterated local search (replace a share of the
  best medoids, run FasterPAM again from there, keep the result if it is better). Every result is a swap
  local optimum of the stored matrix.
- sampled (CLARA, Kaufman & Rousseeuw 1990, with FasterPAM inside as in Schubert & Rousseeuw 2021): FasterPAM
  on ``n_samples`` seeded subsamples (each holding the best medoids so far), every sample's medoids scored on
  the whole pool, the best kept; then alternating medoid updates (each cluster's medoid becomes its member of
  least summed distance to the others) on the whole pool, which never raise the objective. Memory stays
  O(N·d + sample^2), never N x N.

Distances are computed in float64: float32 cancellation errors (~1e-3 on MNIST-scale data) are as large as the
swap gains near a local optimum.
"""

from __future__ import annotations

import math
import warnings
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

    def __init__(self, X: torch.Tensor, D: torch.Tensor | None = None, block: int = 1 << 24):
        self.X = X
        self.n = len(X)
        self.block = block
        self.D = D

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


BUILD_WORK = 2e9  # largest N^2·k for which FasterPAM starts from BUILD (it costs O(N^2·k))


def dissimilarity_matrix(X: torch.Tensor) -> np.ndarray:
    """Euclidean distance matrix of the rows of ``X``: float64 arithmetic in row blocks, stored as float64 up to
    8,192 rows and float32 above (half the memory; rounding 6e-8 relative, far below the swap gains)."""
    n = len(X)
    Xd = X.detach().to("cpu", torch.float64)
    D = np.empty((n, n), dtype=np.float64 if n <= 8192 else np.float32)
    step = max(1, (1 << 23) // n)
    for i in range(0, n, step):
        D[i:i + step] = torch.cdist(Xd[i:i + step], Xd).numpy()
    np.fill_diagonal(D, 0.0)
    return D


def fasterpam(D: np.ndarray, init, seed: int | None, max_iter: int) -> np.ndarray:
    """FasterPAM (``kmedoids`` package, one thread so results do not depend on scheduling) -> medoid indices."""
    import kmedoids as kmedoids_pkg

    if isinstance(init, np.ndarray):
        seed = None  # the package ignores the seed when medoids are given
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = kmedoids_pkg.fasterpam(D, init, max_iter=max_iter, init="build", random_state=seed, n_cpu=1)
    return np.asarray(res.medoids, dtype=np.int64)


def matrix_objective(D: np.ndarray, medoids: np.ndarray) -> tuple[np.ndarray, float]:
    """(nearest medoid slot per sample, summed distance in float64) on a stored matrix, in row blocks."""
    near = np.empty(len(D), dtype=np.int64)
    total = 0.0
    step = max(1, (1 << 22) // max(1, len(medoids)))
    for i in range(0, len(D), step):
        block = D[i:i + step][:, medoids]
        near[i:i + step] = block.argmin(axis=1)
        total += float(block.min(axis=1).astype(np.float64).sum())
    return near, total


def assign(X: torch.Tensor, M: torch.Tensor, block: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest row of ``M`` for each row of ``X`` (float32 matrix products) and that distance recomputed in float64."""
    near, dist = [], []
    msq = (M * M).sum(dim=1)
    step = max(1, block // max(1, len(M)))
    for i in range(0, len(X), step):
        A = X[i:i + step]
        j = torch.addmm(msq, A, M.t(), alpha=-2.0).argmin(dim=1)  # |m|^2 - 2 a.m: |a|^2 does not change the argmin
        near.append(j)
        dist.append((A.double() - M[j].double()).norm(dim=1))
    return torch.cat(near), torch.cat(dist)


def medoid_update(X: torch.Tensor, medoids: torch.Tensor, near: torch.Tensor, rng: np.random.Generator, *,
                  max_candidates: int = 1000) -> torch.Tensor:
    """One alternating step (Park & Jun 2009): each cluster's new medoid is the member (of at most
    ``max_candidates`` seeded candidates, the current medoid always included) with the least summed distance to
    the cluster's members. Never raises the objective for the current assignment."""
    medoids = medoids.clone()
    order = torch.argsort(near, stable=True)
    counts = torch.bincount(near, minlength=len(medoids)).cpu().numpy()
    starts = np.concatenate([[0], np.cumsum(counts)])
    for j in np.flatnonzero(counts > 1):
        members = order[starts[j]:starts[j + 1]]
        cand = members
        if len(members) > max_candidates:
            pick = torch.as_tensor(rng.choice(len(members), size=max_candidates - 1, replace=False))
            cand = torch.unique(torch.cat([members[pick.to(members.device)], medoids[j:j + 1]]))
        step = max(1, (1 << 23) // len(members))
        cost = torch.cat([pairwise(X[cand[i:i + step]], X[members]).double().sum(dim=1)
                          for i in range(0, len(cand), step)])
        medoids[j] = cand[int(torch.argmin(cost))]
    return medoids


def matrix_kmedoids(X: torch.Tensor, k: int, rng: np.random.Generator, *, max_passes: int = 100, n_init: int = 1,
                    n_perturb: int = 4, perturb_fraction: float = 0.1, init: np.ndarray | None = None,
                    D: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """The matrix engine: FasterPAM on the stored distance matrix from ``n_init`` seedings (BUILD when N^2·k is
    small, then greedy k-medoids++; ``init`` replaces the first), then ``n_perturb`` iterated-local-search
    rounds; returns (medoids, nearest-medoid slot per sample, objective)."""
    n = len(X)
    D = dissimilarity_matrix(X) if D is None else D
    dist = _Distances(X, D=torch.from_numpy(D))
    best, best_obj = None, math.inf
    for run in range(max(1, int(n_init))):
        if run == 0 and init is not None:
            start = np.asarray(init, dtype=np.int64)
        elif run == 0 and n * n * k <= BUILD_WORK:
            start = k
        else:
            start = kmedoids_pp(dist, k, rng).cpu().numpy()
        medoids = fasterpam(D, start, int(rng.integers(2**31)), max_passes)
        _, obj = matrix_objective(D, medoids)
        if obj < best_obj:
            best, best_obj = medoids, obj
    if k > 1:
        r = max(2, round(perturb_fraction * k))
        for _ in range(max(0, int(n_perturb))):
            start = perturb(dist, torch.as_tensor(best), r, rng).cpu().numpy()
            medoids = fasterpam(D, start, None, max_passes)
            _, obj = matrix_objective(D, medoids)
            if obj < best_obj * (1 - 1e-9):
                best, best_obj = medoids, obj
    near, best_obj = matrix_objective(D, best)
    return best, near, best_obj


def clara_kmedoids(X: torch.Tensor, k: int, rng: np.random.Generator, *, sample_size: int, n_samples: int = 3,
                   max_passes: int = 100, n_perturb: int = 0, refine: int = 2, swap_candidates: int = 0
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """The sampled engine (CLARA with FasterPAM): returns (medoids, nearest-medoid slot per sample, objective).

    Each of ``n_samples`` seeded subsamples of ``sample_size`` rows holds the best medoids so far; FasterPAM
    runs on its matrix from those medoids (k-medoids++ for the first), and the result is scored on the whole
    pool. The best is improved by ``refine`` alternating medoid updates and, when ``swap_candidates`` > 0,
    eager swaps with that many seeded candidates (chunked distances, at most 2 passes).
    """
    n = len(X)
    s = int(min(n, max(sample_size, k + 1)))
    best, best_obj, best_near = None, math.inf, None
    for _ in range(max(1, int(n_samples))):
        if best is None:
            sub = np.sort(rng.choice(n, size=s, replace=False))
            init = None
        else:
            rest = np.setdiff1d(np.arange(n), best)
            sub = np.sort(np.concatenate([best, rng.choice(rest, size=s - k, replace=False)]))
            init = np.searchsorted(sub, best)
        local, _, _ = matrix_kmedoids(X[torch.as_tensor(sub, device=X.device)], k, rng, max_passes=max_passes,
                                      n_perturb=n_perturb, init=init)
        medoids = sub[local]
        near, dn = assign(X, X[torch.as_tensor(medoids, device=X.device)])
        obj = float(dn.sum())
        if obj < best_obj:
            best, best_obj, best_near = medoids, obj, near
    medoids = torch.as_tensor(best, device=X.device)
    for _ in range(max(0, int(refine))):
        moved = medoid_update(X, medoids, best_near, rng)
        if torch.equal(moved, medoids):
            break
        near, dn = assign(X, X[moved])
        if float(dn.sum()) >= best_obj:
            break
        medoids, best_near, best_obj = moved, near, float(dn.sum())
    if swap_candidates > 0:
        dist = _Distances(X)
        cand = torch.as_tensor(rng.choice(n, size=min(n, swap_candidates), replace=False), device=X.device)
        swapped, _, obj = eager_swap(dist, medoids, cand, max_passes=2)
        if obj < best_obj:
            medoids, best_obj = swapped, obj
            best_near, dn = assign(X, X[medoids])
            best_obj = float(dn.sum())
    return medoids.cpu().numpy(), best_near.cpu().numpy(), best_obj


def kmedoids(X: torch.Tensor, k: int, rng: np.random.Generator, *, max_matrix: int = 20_000,
             max_passes: int = 100, swap_candidates: int = 0, n_init: int = 1, n_perturb: int = 4,
             perturb_fraction: float = 0.1, sample_size: int | None = None, n_samples: int = 3
             ) -> tuple[np.ndarray, np.ndarray, float]:
    """k-medoids of the rows of ``X``; returns (medoid rows, cluster sizes, objective = sum of distances).

    Args:
        X: (N, d) float tensor on any device.
        k: number of medoids.
        rng: seeded generator (seedings, perturbations, subsamples): the result depends only on it.
        max_matrix: largest N that stores its N x N matrix (matrix engine); larger pools use the sampled engine.
        max_passes: cap on FasterPAM passes in one local search.
        swap_candidates: sampled engine only: eager-swap candidates tried after the alternating updates (0: off;
            each costs a pass over the pool).
        n_init: seedings tried by the matrix engine (BUILD when cheap, then k-medoids++); the best is kept.
        n_perturb: iterated-local-search rounds of the matrix engine (0 turns them off).
        perturb_fraction: share of the medoids replaced in each round.
        sample_size: rows per subsample of the sampled engine (default min(max_matrix, max(40 + 2k, 10k))).
        n_samples: subsamples tried by the sampled engine.
    """
    n = len(X)
    if not 1 <= k <= n:
        raise ValueError(f"k-medoids: k must be in [1, {n}], got {k}")
    if n <= max_matrix:
        medoids, near, obj = matrix_kmedoids(X, k, rng, max_passes=max_passes, n_init=n_init, n_perturb=n_perturb,
                                             perturb_fraction=perturb_fraction)
    else:
        size = sample_size if sample_size else min(max_matrix, max(40 + 2 * k, 10 * k))
        medoids, near, obj = clara_kmedoids(X, k, rng, sample_size=size, n_samples=n_samples,
                                            max_passes=max_passes, swap_candidates=swap_candidates)
    sizes = np.bincount(near, minlength=k).astype(np.float64)
    return np.asarray(medoids, dtype=np.int64), sizes, obj


@register
class KMedoidsSelector(FeatureSelector):
    """k-medoids: the k real samples with the least total distance from every sample to its nearest one.

    Args (besides the feature-space ones): ``max_matrix`` (largest pool that stores its N x N distance
    matrix; larger pools use the sampled engine), ``max_passes`` (FasterPAM passes), ``n_init`` (seedings tried
    when the matrix is stored: BUILD when cheap, then k-medoids++; the best is kept), ``n_perturb`` and
    ``perturb_fraction`` (iterated-local-search rounds from the best, each replacing that share of its
    medoids), ``sample_size`` and ``n_samples`` (the sampled engine's subsamples), ``swap_candidates``
    (sampled engine: eager-swap candidates after the alternating updates; 0 = off). See :func:`kmedoids`.
    ``weights_`` are cluster sizes; ``objective_`` the summed distance of each pool.
    """

    name = "kmedoids"
    summary = "k-medoids (FasterPAM; CLARA-style subsamples for large pools): minimise summed distance"
    cost = "O(N^2·d) time and O(N^2) memory per pool up to max_matrix; O(N·k·d + sample^2) beyond"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0, drop_misclassified=True,
                 max_matrix: int = 20_000, max_passes: int = 100,
                 swap_candidates: int = 0, n_init: int = 1, n_perturb: int = 4,
                 perturb_fraction: float = 0.1, sample_size: int | None = None, n_samples: int = 3):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.max_matrix = max_matrix
        self.max_passes = max_passes
        self.swap_candidates = swap_candidates
        self.n_init = n_init
        self.n_perturb = n_perturb
        self.perturb_fraction = perturb_fraction
        self.sample_size = sample_size
        self.n_samples = n_samples

    diagnostic_names = ("objective_",)

    def _select_pool(self, pool, k, rng):
        medoids, sizes, objective = kmedoids(self._tensor(pool), k, rng, max_matrix=self.max_matrix,
                                             max_passes=self.max_passes, swap_candidates=self.swap_candidates,
                                             n_init=self.n_init, n_perturb=self.n_perturb,
                                             perturb_fraction=self.perturb_fraction, sample_size=self.sample_size,
                                             n_samples=self.n_samples)
        return pool[medoids], sizes, {"objective_": objective}
