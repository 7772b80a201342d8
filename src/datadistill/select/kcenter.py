"""k-center greedy (Gonzalez 1985; Sener & Savarese, "Active Learning for Convolutional Neural Networks:
A Core-Set Approach", ICLR 2018): repeatedly add the point farthest from the chosen centres.

The covering radius is within a factor 2 of the optimum. Cost O(N·k·d) time at worst, O(N + k·d) extra memory:
only the running minimum distance and its owner are kept, never a k x N matrix. Rows that the triangle
inequality proves unaffected by a new centre are skipped, so late iterations touch few rows.
"""

from __future__ import annotations

import numpy as np
import torch

from .base import register
from .features import FeatureSelector


def kcenter_greedy(X: torch.Tensor, k: int, *, first: int = 0, progress: bool = False
                   ) -> tuple[np.ndarray, np.ndarray, float]:
    """Greedy k-center on the rows of ``X``; returns (centres in selection order, cell sizes, radius).

    Args:
        X: (N, d) float tensor on any device.
        k: number of centres (<= N).
        first: row of the first centre (seeded by the caller).
        progress: show a progress bar.
    """
    n = len(X)
    sqn = (X * X).sum(dim=1)
    mind = torch.full((n,), float("inf"), device=X.device, dtype=X.dtype)
    owner = torch.zeros(n, dtype=torch.long, device=X.device)
    chosen = torch.empty(k, dtype=torch.long, device=X.device)
    C = torch.empty((k, X.shape[1]), device=X.device, dtype=X.dtype)
    c = int(first)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=k, desc="k-center", leave=False)
    csq = torch.empty(k, device=X.device, dtype=X.dtype)
    for t in range(k):
        chosen[t] = c
        x = X[c]
        C[t] = x
        csq[t] = sqn[c]
        rows = None
        if t > 0:
            # Triangle inequality: if ||c - o|| >= 2 * dist(x, o) for x's current centre o, then
            # dist(x, c) >= dist(x, o) and x cannot move; only the remaining rows need measuring.
            dc = csq[:t] + sqn[c] - 2.0 * (C[:t] @ x)
            rows = torch.nonzero(dc[owner] < 4.0 * mind * (1 + 1e-4) + 1e-12).squeeze(1)
            if len(rows) > n // 4:  # a gather costs more than the full product beyond this point
                rows = None
        if rows is None:
            d = torch.addmv(sqn + sqn[c], X, x, alpha=-2.0).clamp_(min=0)
        else:
            d = torch.addmv(sqn[rows] + sqn[c], X[rows], x, alpha=-2.0).clamp_(min=0)
        closer = d < (mind if rows is None else mind[rows])
        upd = torch.nonzero(closer).squeeze(1) if rows is None else rows[closer]
        mind[upd] = d[closer]
        owner[upd] = t
        mind[c] = 0.0
        owner[c] = t
        c = int(torch.argmax(mind))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    sizes = torch.bincount(owner, minlength=k).cpu().numpy().astype(np.float64)
    return chosen.cpu().numpy(), sizes, float(mind.max().clamp(min=0).sqrt())


@register
class KCenterSelector(FeatureSelector):
    """k-center greedy: minimise the largest distance from any sample to its nearest kept sample.

    ``weights_`` are the sizes of the chosen centres' cells (samples nearest to each); ``radius_`` the
    covering radius of each pool (a list, one per class when per_class is set).
    """

    name = "kcenter"
    summary = "k-center greedy: cover the data with the smallest largest distance (core-set)"
    cost = "O(N·k·d) time, O(N·d) memory"

    def _prepare(self, dataset, rng):
        super()._prepare(dataset, rng)
        self.radius_ = []

    def _select_pool(self, pool, k, rng):
        X = self._tensor(pool)
        first = int(rng.integers(len(pool)))
        chosen, sizes, radius = kcenter_greedy(X, k, first=first, progress=len(pool) * k > 5e7)
        self.radius_.append(radius)
        return pool[chosen], sizes
