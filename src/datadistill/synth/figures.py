"""Figures of synthetic sets: an image grid with one row per class."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..data.artifact import DistilledSet
from ..errors import DataError


def _display_range(distilled: DistilledSet, X: np.ndarray) -> tuple[float, float]:
    source_dtype = (distilled.meta.get("training", {}).get("preprocessor") or {}).get("source_dtype")
    if source_dtype == "uint8" or X.dtype == np.uint8:
        return 0.0, 255.0
    lo, hi = np.percentile(X, [0.5, 99.5])
    return float(lo), float(hi) if hi > lo else float(lo) + 1.0


def _as_hwc(X: np.ndarray) -> np.ndarray:
    """(N, H, W) / (N, H, W, C) / (N, C, H, W) -> (N, H, W, C) with C in (1, 3)."""
    if X.ndim == 3:
        return X[..., None]
    if X.shape[-1] in (1, 3, 4) and X.shape[1] not in (1, 3, 4):
        return X[..., :3]
    if X.shape[1] in (1, 3, 4):
        return np.transpose(X, (0, 2, 3, 1))[..., :3]
    raise DataError(f"cannot draw samples of shape {X.shape[1:]} as images")


def image_grid(distilled: DistilledSet, path: str | os.PathLike, *, max_per_class: int = 20,
               scale: float = 0.6) -> Path:
    """Save a PNG grid of the set's images in source pixel space: one row per class, its samples as columns.

    Args:
        distilled: an image DistilledSet (synthetic or selected).
        path: output PNG file.
        max_per_class: at most this many columns.
        scale: inches per cell.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    X = np.asarray(distilled.X)
    if X.ndim < 3:
        raise DataError("image_grid draws image data; this set is tabular")
    y = np.asarray(distilled.y, dtype=np.int64)
    images = _as_hwc(X.astype(np.float32))
    lo, hi = _display_range(distilled, X)
    images = np.clip((images - lo) / (hi - lo), 0.0, 1.0)
    classes = list(distilled.classes)
    rows = [np.flatnonzero(y == c)[:max_per_class] for c in range(len(classes))]
    cols = max(1, max(len(r) for r in rows))
    fig, axes = plt.subplots(len(classes), cols, figsize=(cols * scale + 0.8, len(classes) * scale),
                             squeeze=False)
    for c, idx in enumerate(rows):
        for j in range(cols):
            ax = axes[c, j]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if j < len(idx):
                img = images[idx[j]]
                ax.imshow(img[..., 0] if img.shape[-1] == 1 else img, cmap="gray" if img.shape[-1] == 1 else None,
                          vmin=0.0, vmax=1.0, interpolation="nearest")
            if j == 0:
                ax.set_ylabel(str(classes[c]), rotation=0, ha="right", va="center", fontsize=8)
    fig.subplots_adjust(wspace=0.04, hspace=0.04)
    fig.suptitle(f"{distilled.method}: {len(y)} samples", fontsize=9)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return path
