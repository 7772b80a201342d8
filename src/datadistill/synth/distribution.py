"""Distribution matching: make the synthetic set's feature statistics equal the real set's.

``dm`` follows Zhao & Bilen, "Dataset Condensation with Distribution Matching" (WACV 2023): each
iteration a freshly initialised network (seeded by the iteration) embeds a real and the synthetic batch
of every class, both with the same differentiable Siamese augmentation, and the loss is
``sum_c || mean emb(real_c) - mean emb(syn_c) ||^2``; the images take an SGD step (lr 1, momentum 0.5).

``dm-multilayer`` matches the per-class mean of the features at the end of every block of the network
(and, optionally, their per-channel variance), not only the final embedding.

``dm(loss="mmd")`` matches the whole per-class distribution of the embeddings instead of its mean (as
M3D does, Zhang et al. AAAI 2024): the squared maximum mean discrepancy under a Gaussian kernel with
several bandwidths, scaled so that for wide kernels it tends to the mean loss (same learning rate).

All classes go through the network in one batch. Both work on tabular data with ``model="mlp"``
(no augmentation then).
"""

from __future__ import annotations

import json
import math
import numbers
from contextlib import nullcontext

import torch
from torch import nn

from ..errors import ConfigError
from .augment import DSA, strategy_for
from .base import Context, Distiller, register


class MatchingDistiller(Distiller):
    """Shared pieces of the matching methods: class-batched real sampling, Siamese augmentation, recipe.

    Args:
        dsa: augment real and synthetic batches with DSA (``None``: on for images, off for tabular data).
        dsa_strategy: DSA operations, or ``auto`` (no flip for single-channel images, as the reference
            code does for MNIST).
        amp: bfloat16 autocast for the network's forward passes on CUDA (ignored on CPU).
        Other arguments: see :class:`datadistill.synth.Distiller`.
    """

    default_dsa: bool | None = None

    def __init__(self, ipc: int = 10, *, dsa: bool | None = None, dsa_strategy: str = "auto", amp: bool = True,
                 **kwargs):
        super().__init__(ipc, **kwargs)
        self.dsa = dsa
        self.dsa_strategy = dsa_strategy
        self.amp = amp

    def _dsa_setting(self) -> bool | None:
        """``dsa``, or the method's own default when it is None (``None`` left: decided by the data)."""
        return self.default_dsa if self.dsa is None and self.default_dsa is not None else self.dsa

    def _resolved_params(self) -> dict:
        return super()._resolved_params() | {"dsa": self._dsa_setting()}

    def _use_dsa(self, ctx: Context) -> bool:
        dsa = self._dsa_setting()
        if dsa is None:
            return len(ctx.input_shape) == 3
        if dsa and len(ctx.input_shape) != 3:
            raise ConfigError(f"{self.name}: DSA augmentation needs image data; pass dsa=False for tabular data")
        return bool(dsa)

    def _setup_augmentation(self, ctx: Context) -> None:
        self._augment = DSA(strategy_for(ctx.input_shape, self.dsa_strategy)) if self._use_dsa(ctx) else None

    def autocast(self, ctx: Context):
        """bfloat16 autocast on CUDA when ``amp`` is set; a no-op context otherwise."""
        if self.amp and ctx.device.type == "cuda":
            return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
        return nullcontext()

    def real_batches(self, ctx: Context, gen: torch.Generator) -> tuple[torch.Tensor, int]:
        """``n`` random real samples of every class, class-major ``(K * n, ...)``; ``n`` = min(batch_real, smallest class)."""
        n = min(self.batch_real, min(len(idx) for idx in ctx.class_index))
        rows = [idx[torch.randperm(len(idx), generator=gen)[:n].to(idx.device)] for idx in ctx.class_index]
        return ctx.X_real[torch.cat(rows)], n

    def siamese(self, ctx: Context, real: torch.Tensor, syn: torch.Tensor, seed: int
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """The same DSA transformation per class for the real and the synthetic batch (identity without DSA)."""
        if self._augment is None:
            return real, syn
        return (self._augment(real, seed, groups=ctx.n_classes), self._augment(syn, seed, groups=ctx.n_classes))

    def _training_recipe(self, ctx: Context) -> dict:
        aug = self._augment is not None
        return {"lr": 0.01, "augmentation": "dsa" if aug else None,
                "dsa_strategy": self._augment.strategy if aug else None,
                "dsa": self._augment.to_dict() if aug else None,
                "soft_labels": False, "epochs": 1000 if aug else 300}


def block_outputs(body: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Run ``body`` and return the output of every block (after each pooling, residual block or final ReLU).

    A block ends at a pooling layer, at a compound module (e.g. a residual block), or at a ReLU that no
    pooling follows; trailing parameter-free layers (Flatten, global pooling) extend the last block.
    """
    children = list(body.children()) if isinstance(body, nn.Sequential) else []
    if not children:
        return [body(x)]
    pools = (nn.AvgPool2d, nn.MaxPool2d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)
    ends = []
    for i, m in enumerate(children):
        nxt = children[i + 1] if i + 1 < len(children) else None
        if isinstance(m, pools) or len(list(m.children())) > 0 or (isinstance(m, nn.ReLU) and not isinstance(nxt, pools)):
            ends.append(i)
    last = len(children) - 1
    if not ends:
        ends = [last]
    elif ends[-1] != last:
        trailing_free = all(not any(True for _ in m.parameters()) for m in children[ends[-1] + 1:])
        if trailing_free:
            ends[-1] = last
        else:
            ends.append(last)
    outs = []
    for i, m in enumerate(children):
        x = m(x)
        if i in ends:
            outs.append(x)
    return outs


DM_LOSSES = ("mean", "mmd")
MMD_SCALES = (0.25, 0.5, 1.0, 2.0, 4.0)


def _squared_distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Batched pairwise squared Euclidean distances: (K, n, d), (K, m, d) -> (K, n, m)."""
    d = (a * a).sum(-1, keepdim=True) + (b * b).sum(-1).unsqueeze(1) - 2 * torch.bmm(a, b.transpose(1, 2))
    return d.clamp_min(0)


def mmd_loss(real: torch.Tensor, syn: torch.Tensor, scales=MMD_SCALES) -> torch.Tensor:
    """Sum over classes of the (biased) squared MMD between ``real`` (K, n, d) and ``syn`` (K, m, d) embeddings.

    The kernel is ``mean_s exp(-||x - y||^2 / (s * h_c))`` with ``h_c`` the mean squared distance between
    distinct real embeddings of class ``c`` (no gradient flows through it). Each class's MMD^2 is multiplied
    by ``h_c / mean_s(2 / s)``: for wide kernels MMD^2 ~ mean_s(2 / s) ||mean(real) - mean(syn)||^2 / h_c, so
    the loss then tends to DM's mean loss and DM's learning rate carries over; narrower kernels add the
    higher moments.
    """
    n = real.shape[1]
    with torch.no_grad():
        d_rr = _squared_distances(real, real)
        h = (d_rr.sum(dim=(1, 2)) / max(1, n * (n - 1))).clamp_min(1e-12)  # diagonal is 0
    scale = torch.as_tensor([float(s) for s in scales], device=real.device, dtype=real.dtype)

    def kernel_mean(d: torch.Tensor) -> torch.Tensor:
        widths = h.view(-1, 1, 1, 1) * scale.view(1, -1, 1, 1)
        return torch.exp(-d.unsqueeze(1) / widths).mean(dim=(1, 2, 3))

    with torch.no_grad():
        k_rr = kernel_mean(d_rr)
    mmd2 = k_rr + kernel_mean(_squared_distances(syn, syn)) - 2 * kernel_mean(_squared_distances(real, syn))
    return (mmd2 * h / (2 / scale).mean()).sum()


@register
class DistributionMatching(MatchingDistiller):
    """DM: match per-class mean embeddings of freshly initialised networks (Zhao & Bilen 2023).

    Args:
        ipc: synthetic samples per class.
        lr_images: SGD learning rate of the images (paper: 1.0, momentum 0.5).
        batch_real: real samples per class per iteration (paper: 256).
        loss: ``mean`` (the paper: squared distance of the per-class mean embeddings) or ``mmd`` (squared
            maximum mean discrepancy of the per-class embeddings under a Gaussian kernel: all moments).
        mmd_scales: ``loss="mmd"``: the kernel bandwidths, as multiples of the mean squared distance
            between the class's real embeddings in this iteration's network (its kernel averages them).
        Other arguments: see :class:`MatchingDistiller` and :class:`datadistill.synth.Distiller`.
    """

    name = "dm"
    summary = "distribution matching: per-class mean embeddings in fresh random networks (Zhao & Bilen 2023)"
    needs_images = False
    recommended_iterations = 20_000

    def __init__(self, ipc: int = 10, *, iterations: int = 20_000, lr_images: float = 1.0, loss: str = "mean",
                 mmd_scales: tuple[float, ...] | list[float] = MMD_SCALES, **kwargs):
        super().__init__(ipc, iterations=iterations, lr_images=lr_images, **kwargs)
        self.loss = loss
        self.mmd_scales = mmd_scales

    def check_params(self) -> None:
        super().check_params()
        if self.loss not in DM_LOSSES:
            raise ConfigError(f"{self.name}: loss must be one of {', '.join(DM_LOSSES)}, got {self.loss!r}")
        scales = self._mmd_scales()
        if not scales or not all(isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v)
                                 and v > 0 for v in scales):
            raise ConfigError(f"{self.name}: mmd_scales must be a positive number or a non-empty list of them, "
                              f"got {self.mmd_scales!r}")

    def _mmd_scales(self) -> tuple:
        """``mmd_scales`` as a tuple (one number is one scale)."""
        v = self.mmd_scales
        return tuple(v) if isinstance(v, (list, tuple)) else (v,)

    def _checkpoint_key(self) -> str:
        key = json.loads(super()._checkpoint_key())
        if self.loss == "mean":  # the key of a checkpoint written before the loss option existed
            key = {k: v for k, v in key.items() if k not in ("loss", "mmd_scales")}
        return json.dumps(key, sort_keys=True, default=str)

    def _setup(self, ctx: Context) -> None:
        self._setup_augmentation(ctx)
        ctx.state["optimizer"] = torch.optim.SGD([ctx.X_syn], lr=self.lr_images, momentum=0.5)

    def _features(self, net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        return [net.features(x)]

    def _statistics(self, feats: list[torch.Tensor], k: int, n: int) -> list[torch.Tensor]:
        return [f.float().reshape(k, n, -1).mean(dim=1) for f in feats]

    def _step(self, ctx: Context, it: int) -> float:
        net = self.new_network(ctx, seed=self.iteration_seed(it, 1))
        net.train()
        net.requires_grad_(False)
        real, n = self.real_batches(ctx, self.iteration_generator(it, 0))
        real, syn = self.siamese(ctx, real, ctx.X_syn, self.iteration_seed(it, 2))
        k = ctx.n_classes
        with self.autocast(ctx):
            with torch.no_grad():
                feats_real = self._features(net, real)
            feats_syn = self._features(net, syn)
        if self.loss == "mmd":
            loss = sum(mmd_loss(r.float().reshape(k, n, -1), s.float().reshape(k, self.ipc, -1), self._mmd_scales())
                       for r, s in zip(feats_real, feats_syn))
        else:
            stats_real = self._statistics(feats_real, k, n)
            stats_syn = self._statistics(feats_syn, k, self.ipc)
            loss = sum(((r - s) ** 2).sum() for r, s in zip(stats_real, stats_syn))
        opt = ctx.state["optimizer"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())


@register
class MultiLayerDistributionMatching(DistributionMatching):
    """DM at every block: per-class feature means (and per-channel variances) of each block's output.

    Args:
        match_variance: also match the per-class, per-channel variance of each block's features.
        variance_weight: weight of the variance terms.
        Other arguments: see :class:`DistributionMatching`.
    """

    name = "dm-multilayer"
    summary = "multi-layer distribution matching: per-class feature mean and variance at every block"

    def __init__(self, ipc: int = 10, *, match_variance: bool = True, variance_weight: float = 1.0, **kwargs):
        super().__init__(ipc, **kwargs)
        self.match_variance = match_variance
        self.variance_weight = variance_weight

    def _features(self, net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        return block_outputs(net.body, x)

    def _statistics(self, feats: list[torch.Tensor], k: int, n: int) -> list[torch.Tensor]:
        out = []
        for f in feats:
            f = f.float()
            out.append(f.reshape(k, n, -1).mean(dim=1))
            if self.match_variance:
                # per-channel variance over the class's samples and spatial positions (per feature for vectors)
                g = f.reshape(k, n, f.shape[1], -1).transpose(1, 2).reshape(k, f.shape[1], -1)
                out.append(g.var(dim=2, unbiased=False) * self.variance_weight ** 0.5)
        return out
