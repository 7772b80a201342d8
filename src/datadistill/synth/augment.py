"""Differentiable Siamese augmentation (DSA; Zhao & Bilen, ICML 2021), batch-vectorised.

Colour (brightness, saturation, contrast), crop (integer translation with zero padding), cutout,
horizontal flip, scale and rotation. Geometric operations are affine maps applied with
``affine_grid``/``grid_sample`` (consecutive ones are merged into a single resampling); colour and
cutout are elementwise. Everything is differentiable with respect to the images.

Parameters are drawn per *group* from a CPU ``torch.Generator``: all samples of a group share one
transformation. "Siamese" use: augment the real and the synthetic batch with the same seed and the
same number of groups (e.g. one group per class) and both get the identical transformation, whatever
their batch sizes. With ``siamese=False`` every sample is its own group (the evaluation setting).

As in the reference code, ``mode="single"`` applies one operation per group, chosen at random from the
strategy; ``mode="all"`` applies every operation in strategy order.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..errors import ConfigError

OPERATIONS = ("color", "crop", "cutout", "flip", "scale", "rotate")
DEFAULT_STRATEGY = "color_crop_cutout_flip_scale_rotate"
_AFFINE = {"crop", "flip", "scale", "rotate"}
# columns of the per-group uniform draw; a fixed layout keeps the random stream independent of the strategy
_COLUMNS = ("op", "brightness", "saturation", "contrast", "shift_x", "shift_y", "cut_x", "cut_y", "flip",
            "scale_x", "scale_y", "angle")


def strategy_for(shape: tuple[int, ...], strategy: str = "auto") -> str:
    """The DSA strategy for images of model-space ``shape`` (C, H, W): ``auto`` drops flip for one channel.

    Args:
        shape: per-sample shape (C, H, W).
        strategy: ``auto`` or an explicit ``op_op_...`` string. The reference code drops flip for
            MNIST-like digit images, whose meaning is not mirror-invariant; ``auto`` does the same for
            single-channel images.
    """
    if strategy != "auto":
        return strategy
    if len(shape) == 3 and shape[0] == 1:
        return DEFAULT_STRATEGY.replace("_flip", "")
    return DEFAULT_STRATEGY


class DSA:
    """Differentiable Siamese augmentation for (N, C, H, W) batches.

    Args:
        strategy: operations joined by ``_`` (subset of color, crop, cutout, flip, scale, rotate).
        mode: ``single`` (one random operation per group, the reference default) or ``all``.
        siamese: with no ``groups`` given, share one transformation over the whole batch (True) or
            draw one per sample (False, for training on a set).
        brightness, saturation, contrast, crop, cutout, scale, rotate, flip_probability: magnitudes as
            in the reference implementation (``rotate`` in degrees, ``crop``/``cutout`` as fractions).
    """

    def __init__(self, strategy: str = DEFAULT_STRATEGY, *, mode: str = "single", siamese: bool = True,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5, crop: float = 0.125,
                 cutout: float = 0.5, scale: float = 1.2, rotate: float = 15.0, flip_probability: float = 0.5):
        ops = [op for op in strategy.split("_") if op]
        unknown = [op for op in ops if op not in OPERATIONS]
        if unknown or not ops:
            raise ConfigError(f"unknown DSA operation(s) {unknown or strategy!r} in strategy '{strategy}'; "
                              f"use operations from {', '.join(OPERATIONS)} joined by '_'")
        if mode not in ("single", "all"):
            raise ConfigError(f"DSA mode must be 'single' or 'all', got {mode!r}")
        self.strategy = "_".join(ops)
        self.ops = tuple(ops)
        self.mode = mode
        self.siamese = siamese
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast
        self.crop, self.cutout, self.scale, self.rotate = crop, cutout, scale, rotate
        self.flip_probability = flip_probability

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r}, mode={self.mode!r}, siamese={self.siamese})"

    def to_dict(self) -> dict:
        return {"strategy": self.strategy, "mode": self.mode, "brightness": self.brightness,
                "saturation": self.saturation, "contrast": self.contrast, "crop": self.crop, "cutout": self.cutout,
                "scale": self.scale, "rotate": self.rotate, "flip_probability": self.flip_probability}

    @classmethod
    def from_dict(cls, d: dict, *, siamese: bool = True) -> DSA:
        """Rebuild from :meth:`to_dict` output (as stored in an artifact's training recipe)."""
        return cls(siamese=siamese, **d)

    # --- parameters ---------------------------------------------------------------------------
    def _group_ids(self, n: int, groups, device: torch.device) -> tuple[int, torch.Tensor | None]:
        if groups is None:
            return (1, torch.zeros(n, dtype=torch.long, device=device)) if self.siamese else (n, None)
        if isinstance(groups, int):
            if groups < 1 or n % groups:
                raise ConfigError(f"a batch of {n} cannot be split into {groups} equal DSA groups")
            return groups, torch.arange(groups, device=device).repeat_interleave(n // groups)
        ids = torch.as_tensor(groups, device=device).long()
        if ids.shape != (n,):
            raise ConfigError(f"DSA groups must have one id per sample ({n}), got shape {tuple(ids.shape)}")
        return int(ids.max()) + 1, ids

    def _draw(self, n_groups: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
        u = torch.rand((n_groups, len(_COLUMNS)), generator=gen, dtype=torch.float64)
        return {name: u[:, i] for i, name in enumerate(_COLUMNS)}

    def _active(self, draw: dict, op: str) -> torch.Tensor:
        if op not in self.ops:
            return torch.zeros_like(draw["op"], dtype=torch.bool)
        if self.mode == "all":
            return torch.ones_like(draw["op"], dtype=torch.bool)
        chosen = (draw["op"] * len(self.ops)).long().clamp_max(len(self.ops) - 1)
        return chosen == self.ops.index(op)

    def _affine(self, draw: dict, op: str, h: int, w: int) -> torch.Tensor:
        """(G, 3, 3) sampling matrices (output -> input coordinates, align_corners=False) of one operation."""
        g = len(draw["op"])
        m = torch.eye(3, dtype=torch.float64).repeat(g, 1, 1)
        on = self._active(draw, op)
        if op == "crop":
            sx, sy = int(w * self.crop + 0.5), int(h * self.crop + 0.5)
            tx = torch.floor(draw["shift_x"] * (2 * sx + 1)) - sx
            ty = torch.floor(draw["shift_y"] * (2 * sy + 1)) - sy
            m[:, 0, 2] = torch.where(on, 2 * tx / w, 0.0)
            m[:, 1, 2] = torch.where(on, 2 * ty / h, 0.0)
        elif op == "flip":
            m[:, 0, 0] = torch.where(on & (draw["flip"] < self.flip_probability), -1.0, 1.0)
        elif op == "scale":
            lo = 1.0 / self.scale
            m[:, 0, 0] = torch.where(on, draw["scale_x"] * (self.scale - lo) + lo, 1.0)
            m[:, 1, 1] = torch.where(on, draw["scale_y"] * (self.scale - lo) + lo, 1.0)
        elif op == "rotate":
            a = torch.where(on, (draw["angle"] - 0.5) * 2 * self.rotate * math.pi / 180, 0.0)
            m[:, 0, 0], m[:, 0, 1] = torch.cos(a), torch.sin(a)
            m[:, 1, 0], m[:, 1, 1] = -torch.sin(a), torch.cos(a)
        return m

    # --- application --------------------------------------------------------------------------
    def __call__(self, x: torch.Tensor, gen_or_seed: torch.Generator | int, groups=None) -> torch.Tensor:
        """Augment ``x`` (N, C, H, W); usable as ``training.train(..., augment=dsa)``.

        Args:
            x: images in model space.
            gen_or_seed: a CPU generator (consumed) or an int seed (same seed -> same transformation).
            groups: None (see ``siamese``), an int G (N splits into G equal contiguous groups, e.g. classes
                of a class-major batch) or a tensor of per-sample group ids; samples of a group share
                one transformation.
        """
        if x.dim() != 4:
            raise ConfigError(f"DSA augments image batches (N, C, H, W); got shape {tuple(x.shape)}. "
                              "Tabular data takes no augmentation")
        gen = gen_or_seed if isinstance(gen_or_seed, torch.Generator) else \
            torch.Generator(device="cpu").manual_seed(int(gen_or_seed))
        n, _, h, w = x.shape
        n_groups, ids = self._group_ids(n, groups, x.device)
        draw = self._draw(n_groups, gen)

        def per_sample(t: torch.Tensor) -> torch.Tensor:
            t = t.to(device=x.device, dtype=x.dtype)
            return t if ids is None else t[ids]

        pending: torch.Tensor | None = None
        for op in self.ops:
            if op in _AFFINE:
                m = self._affine(draw, op, h, w)
                pending = m if pending is None else pending @ m
                continue
            if pending is not None:
                x = self._resample(x, pending, per_sample)
                pending = None
            x = self._color(x, draw, per_sample) if op == "color" else self._cutout(x, draw, per_sample)
        if pending is not None:
            x = self._resample(x, pending, per_sample)
        return x

    def _resample(self, x: torch.Tensor, m: torch.Tensor, per_sample) -> torch.Tensor:
        if torch.equal(m, torch.eye(3, dtype=m.dtype).expand_as(m)):
            return x
        theta = per_sample(m[:, :2, :])
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _color(self, x: torch.Tensor, draw: dict, per_sample) -> torch.Tensor:
        on = self._active(draw, "color")
        if not bool(on.any()):
            return x
        shape = (-1, 1, 1, 1)
        b = per_sample(torch.where(on, (draw["brightness"] - 0.5) * self.brightness, 0.0)).view(shape)
        s = per_sample(torch.where(on, draw["saturation"] * self.saturation, 1.0)).view(shape)
        c = per_sample(torch.where(on, draw["contrast"] + self.contrast, 1.0)).view(shape)
        x = x + b
        mean_channels = x.mean(dim=1, keepdim=True)
        x = (x - mean_channels) * s + mean_channels
        mean_all = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean_all) * c + mean_all

    def _cutout(self, x: torch.Tensor, draw: dict, per_sample) -> torch.Tensor:
        on = self._active(draw, "cutout")
        if not bool(on.any()):
            return x
        _, _, h, w = x.shape
        ch, cw = int(h * self.cutout + 0.5), int(w * self.cutout + 0.5)
        # reference: the square's centre is uniform over [0, size + (1 - cut % 2)) in each axis
        cy = torch.floor(draw["cut_y"] * (h + 1 - ch % 2)) - ch // 2
        cx = torch.floor(draw["cut_x"] * (w + 1 - cw % 2)) - cw // 2
        top, left, on = per_sample(cy).view(-1, 1, 1), per_sample(cx).view(-1, 1, 1), per_sample(on.double())
        rows = torch.arange(h, device=x.device, dtype=x.dtype).view(1, h, 1)
        cols = torch.arange(w, device=x.device, dtype=x.dtype).view(1, 1, w)
        inside = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
        keep = 1.0 - (inside.to(x.dtype) * on.view(-1, 1, 1))
        return x * keep.unsqueeze(1)
