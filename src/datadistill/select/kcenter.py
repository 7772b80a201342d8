"""k-center greedy (Gonzalez 1985; Sener & Savarese, "Active Learning for Convolutional Neural Networks:
A Core-Set Approach", ICLR 2018): repeatedly add the point farthest from the chosen centres.

The covering radius is within a factor 2 of the optimum. Cost O(N·k·d) time at worst, O(N + k·d) extra memory:
only the running minimum distance and its owner are kept, never a k x N matrix.

The per-centre work is one streaming pass over X in float32 row tiles (a matrix-vector product per tile, fused
with the running-minimum update and the tile's share of the D² mass), so the cost per centre is bounded by
reading X once from memory; Python runs once per tile and per centre, never per row. Rows that the triangle
inequality proves unaffected by a new centre are skipped (late iterations on low-dimensional data touch few
rows); on high-dimensional data the bound rarely prunes, so it is tried less often while it does not pay.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import register
from .features import FeatureSelector

TILE_BYTES = 1 << 24  # rows of X per tile on CPU: 16 MB, so the tile's small vectors stay in cache


def tile_rows(n: int, dim: int, device: torch.device) -> int:
    """Rows per streaming tile: all of them on a GPU (one launch per step), ~16 MB of X on a CPU."""
    if device.type != "cpu":
        return max(1, n)
    return max(1024, TILE_BYTES // (4 * max(1, dim)))


def feature_major(rows, tile: int, device: torch.device | str = "cpu", index: np.ndarray | None = None
                  ) -> torch.Tensor:
    """The (d, N) float32 transpose of an (N, d) array or tensor (of ``rows[index]`` when given), copied tile by
    tile (no second N x d temporary).

    A matrix-vector product streams a feature-major X at the memory's read rate on CPU; the row-major product
    goes through a transposed gemv that runs ~3x slower there.
    """
    n = len(rows) if index is None else len(index)
    dim = rows.shape[1]
    XT = torch.empty((dim, n), dtype=torch.float32, device=device)
    for s in range(0, n, tile):
        part = rows[s:s + tile] if index is None else rows[index[s:s + tile]]
        XT[:, s:s + tile].copy_(torch.as_tensor(part).t())
    return XT


def kcenter_greedy(X: torch.Tensor, k: int, *, first: int = 0, progress: bool = False, trim: float = 0.0,
                   rng: np.random.Generator | None = None, d2: bool = False,
                   tile: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Greedy k-center on the rows of ``X``; returns (centres in selection order, cell sizes, radius).

    Args:
        X: (N, d) float tensor on any device.
        k: number of centres (<= N).
        first: row of the first centre (seeded by the caller).
        progress: show a progress bar.
        trim: robust variant: the next centre is the row at the (1 - trim) quantile of distance to the
            chosen centres instead of the farthest, so the ``trim`` share of most isolated rows (outliers,
            often mislabelled) are never chosen just for being far (k-center with outliers in the spirit of
            Charikar et al., 2001). 0 = classic farthest-first.
        rng: generator for the fill-up when fewer than ``k`` distinct rows exist (duplicates), and for ``d2``.
        d2: draw the next centre with probability proportional to its squared distance to the chosen ones
            (D² sampling, the k-means++ seeding of Arthur & Vassilvitskii, 2007) instead of taking the
            farthest: isolated rows are likelier than dense ones one by one, but a dense region as a whole
            gets its share, so the picks follow the data's density while still covering it.
        tile: rows per streaming tile (default: ~16 MB of X on CPU, all rows on a GPU).
    """
    n, dim = X.shape
    tile = int(tile) if tile else tile_rows(n, dim, X.device)
    return kcenter_columns(X.t().contiguous(), k, first=first, progress=progress, trim=trim,
                           rng=rng, d2=d2, tile=tile)


def kcenter_columns(XT: torch.Tensor, k: int, *, first: int = 0, progress: bool = False, trim: float = 0.0,
                    rng: np.random.Generator | None = None, d2: bool = False,
                    tile: int | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """:func:`kcenter_greedy` on a feature-major (d, N) tensor ``XT`` (see :func:`feature_major`); same result.

    ``XT`` may be a view of a memory-mapped file: it is only read, one column tile at a time.
    """
    dim, n = XT.shape
    dev = XT.device
    tile = int(tile) if tile else tile_rows(n, dim, dev)
    st = _State(XT, k, tile)
    c = int(first)
    bar = None
    if progress:
        from ..progress import bar as progress_bar

        bar = progress_bar(k, desc="k-center", leave=False)
    gen = rng if rng is not None else np.random.default_rng(0)
    for t in range(k):
        st.add_centre(t, c, d2)
        if t + 1 == k:
            break
        c = _next_centre(st.mind, st.mass, st.spans, gen, n, trim, d2)
        if float(st.mind[c]) <= 0:
            # every row coincides with a centre (fewer distinct rows than k): fill up with unchosen rows
            taken = np.zeros(n, dtype=bool)
            taken[st.chosen[:t + 1].cpu().numpy()] = True
            extra = gen.choice(np.flatnonzero(~taken), size=k - t - 1, replace=False)
            st.chosen[t + 1:] = torch.as_tensor(extra, device=dev)
            break
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    sizes = torch.bincount(st.owner.long(), minlength=k).cpu().numpy().astype(np.float64)
    sizes[sizes == 0] = 1.0  # fill-up duplicates stand for themselves
    return st.chosen.cpu().numpy(), sizes, float(st.mind.max().clamp(min=0).sqrt())


class _State:
    """The O(N + k·d) state of greedy k-center over a feature-major ``XT``: the running minimum distance, its
    owner, per-tile D² masses, the chosen centres; :meth:`add_centre` makes one (possibly pruned) pass."""

    def __init__(self, XT: torch.Tensor, k: int, tile: int):
        dim, n = XT.shape
        dev = XT.device
        self.XT, self.tile, self.n = XT, tile, n
        self.spans = [(s, min(s + tile, n)) for s in range(0, n, tile)]
        self.sqn = torch.cat([torch.einsum("ij,ij->j", XT[:, s:e], XT[:, s:e]) for s, e in self.spans])
        self.mind = torch.full((n,), float("inf"), device=dev, dtype=XT.dtype)
        self.owner = torch.zeros(n, dtype=torch.int32, device=dev)
        self.mass = torch.zeros(len(self.spans), dtype=torch.float64, device=dev)  # per-tile sum of mind (D²)
        self.chosen = torch.empty(k, dtype=torch.long, device=dev)
        self.C = torch.empty((k, dim), device=dev, dtype=XT.dtype)
        self.csq = torch.empty(k, device=dev, dtype=XT.dtype)
        self.gap, self.wait = 1, 0  # the pruning test is skipped for ``wait`` centres after it failed to prune

    def add_centre(self, t: int, c: int, d2: bool) -> None:
        """Make row ``c`` centre ``t``: update every row's distance to its nearest centre."""
        self.chosen[t] = c
        x = self.XT[:, c].contiguous()
        self.C[t] = x
        self.csq[t] = self.sqn[c]
        rows = self._candidates(t, x) if t > 0 else None
        if rows is None:
            self._full_pass(t, x, d2)
        else:
            self._rows_pass(t, x, rows, d2)
        if d2:
            self.mass[c // self.tile] -= float(self.mind[c])
        self.mind[c] = 0.0
        self.owner[c] = t

    def _candidates(self, t: int, x: torch.Tensor) -> torch.Tensor | None:
        """Rows the new centre may move, or None for a full pass (the test did not prune enough, or is resting).

        Triangle inequality: if ||c - o|| >= 2 * dist(x, o) for x's current centre o, then dist(x, c) >=
        dist(x, o) and x cannot move; only the remaining rows need measuring.
        """
        if self.wait > 0:
            self.wait -= 1
            return None
        dc = self.csq[:t] + self.csq[t] - 2.0 * (self.C[:t] @ x)
        mask = dc[self.owner] < 4.0 * self.mind * (1 + 1e-4) + 1e-12
        # a column gather reads d scattered cache lines per row: it beats the streaming pass only for few rows
        if int(mask.sum()) <= self.n // 32:
            self.gap = 1
            return torch.nonzero(mask).squeeze(1)
        self.gap = min(64, 2 * self.gap)
        self.wait = self.gap
        return None

    def _full_pass(self, t: int, x: torch.Tensor, d2: bool) -> None:
        xs = self.csq[t]
        for j, (s, e) in enumerate(self.spans):
            d = torch.addmv(self.sqn[s:e] + xs, self.XT[:, s:e].t(), x, alpha=-2.0).clamp_(min=0)
            m = self.mind[s:e]
            closer = d < m
            torch.where(closer, d, m, out=m)
            self.owner[s:e].masked_fill_(closer, t)
            if d2:
                self.mass[j] = m.sum(dtype=torch.float64)

    def _rows_pass(self, t: int, x: torch.Tensor, rows: torch.Tensor, d2: bool) -> None:
        xs = self.csq[t]
        for s in range(0, len(rows), self.tile):
            r = rows[s:s + self.tile]
            d = torch.addmv(self.sqn[r] + xs, self.XT[:, r].t(), x, alpha=-2.0).clamp_(min=0)
            m = self.mind[r]
            closer = d < m
            upd = r[closer]
            self.mind[upd] = d[closer]
            self.owner[upd] = t
            if d2:
                self.mass.index_add_(0, torch.div(upd, self.tile, rounding_mode="floor"),
                                     (d[closer] - m[closer]).to(torch.float64))


def _next_centre(mind: torch.Tensor, mass: torch.Tensor, spans: list[tuple[int, int]], gen: np.random.Generator,
                 n: int, trim: float, d2: bool) -> int:
    """The next centre: a D² draw, the (1 - trim) quantile's farthest row, or the farthest row."""
    if d2:
        return draw_d2(mind, mass, spans, gen)
    if trim > 0:
        rank = max(1, int(round((1.0 - trim) * n)))  # kthvalue is 1-based, ascending
        target = torch.kthvalue(mind, rank).values
        cand = torch.nonzero(mind <= target).squeeze(1)
        c = int(cand[torch.argmax(mind[cand])])
        return c if float(mind[c]) > 0 else int(torch.argmax(mind))
    return int(torch.argmax(mind))


def draw_d2(mind: torch.Tensor, mass: torch.Tensor, spans: list[tuple[int, int]], gen: np.random.Generator) -> int:
    """A row drawn with probability mind / sum(mind): a tile by its mass, then a row inside it (O(N/tile + tile))."""
    cum = torch.cumsum(mass.clamp(min=0), 0).cpu().numpy()
    total = float(cum[-1])
    if not total > 0:
        return int(torch.argmax(mind))
    u = gen.random() * total
    j = min(int(np.searchsorted(cum, u, side="right")), len(cum) - 1)
    s, e = spans[j]
    local = torch.cumsum(mind[s:e].to(torch.float64), 0)
    below = float(cum[j - 1]) if j else 0.0
    share = float(local[-1])
    if not share > 0:
        return int(torch.argmax(mind))
    target = torch.tensor([(u - below) / max(float(mass[j]), 1e-300) * share], dtype=torch.float64,
                          device=local.device)  # the stored tile mass may have drifted from the exact sum
    i = min(int(torch.searchsorted(local, target, right=True)), e - s - 1)
    if float(mind[s + i]) <= 0:
        return int(torch.argmax(mind))
    return s + i


def auto_trim(keep_fraction: float) -> float:
    """The default trimmed share: the most isolated rows are left out more the smaller the budget."""
    return float(np.clip(0.5 * (1.0 - keep_fraction) - 0.1, 0.0, 0.4))


@register
class KCenterSelector(FeatureSelector):
    """k-center greedy: minimise the largest distance from any sample to its nearest kept sample.

    ``weights_`` are the sizes of the chosen centres' cells (samples nearest to each); ``radius_`` the
    covering radius of each pool (a list, one per class when per_class is set).

    Args:
        sampling: "d2" (default): each next centre is drawn with probability proportional to its squared
            distance to the chosen ones (k-means++ seeding), which covers the data while following its density;
            "farthest": classic farthest-first (the 2-approximation of the covering radius). On real data the
            farthest rows are outliers and atypical or mislabelled samples, and farthest-first subsets lost 4-8
            points to random on ijcnn1 and up to 16 on MNIST at small budgets; D² sampling did not.
        trim: with "farthest", the share of each pool's most isolated rows that may be skipped (see
            :func:`kcenter_greedy`); "auto" follows the budget; 0 (default) is classic k-center.
    """

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0,
                 soft_labels=False, temperature=4.0, drop_misclassified=True, trim: float | str = 0.0,
                 sampling: str = "d2"):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.trim = trim
        self.sampling = sampling

    name = "kcenter"
    summary = "k-center: cover the data (D² sampling by default; farthest-first greedy core-set on request)"
    cost = "O(N·k·d) time, O(N·d) memory"

    def check_params(self) -> None:
        super().check_params()
        if self.trim != "auto" and not (isinstance(self.trim, (int, float)) and 0 <= self.trim < 1):
            raise ConfigError(f"kcenter: trim must be a share in [0, 1) or 'auto', got {self.trim!r}")
        if self.sampling not in ("d2", "farthest"):
            raise ConfigError(f"kcenter: sampling must be 'd2' or 'farthest', got {self.sampling!r}")

    diagnostic_names = ("radius_",)

    def _select_pool(self, pool, k, rng):
        tile = tile_rows(len(pool), self.features_.shape[1], self.device_)
        XT = feature_major(self.features_, tile, self.device_, index=pool)  # no row-major copy of the pool
        first = int(rng.integers(len(pool)))
        trim = auto_trim(k / len(pool)) if self.trim == "auto" else float(self.trim)
        chosen, sizes, radius = kcenter_columns(XT, k, first=first, progress=len(pool) * k > 5e7, trim=trim,
                                                rng=rng, d2=self.sampling == "d2", tile=tile)
        return pool[chosen], sizes, {"radius_": radius}
