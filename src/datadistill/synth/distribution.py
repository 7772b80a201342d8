"""Distribution matching: make the synthetic set's feature statistics equal the real set's.

``dm`` follows Zhao & Bilen, "Dataset Condensation with Distribution Matching" (WACV 2023): each
iteration a freshly initialised network (seeded by the iteration) embeds a real and the synthetic batch
of every class, both with the same differentiable Siamese augmentation, and the loss is
``sum_c || mean emb(real_c) - mean emb(syn_c) ||^2``; the images take an SGD step (lr 1, momentum 0.5).

``dm-multilayer`` matches the per-class mean of the features at the end of every block of the network
(and, optionally, their per-channel variance), not only the final embedding.

All classes go through the network in one batch. Both work on tabular data with ``model="mlp"``
(no augmentation then).
"""

from __future__ import annotations

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


@register
class DistributionMatching(MatchingDistiller):
    """DM: match per-class mean embeddings of freshly initialised networks (Zhao & Bilen 2023).

    Args:
        ipc: synthetic samples per class.
        lr_images: SGD learning rate of the images (paper: 1.0, momentum 0.5).
        batch_real: real samples per class per iteration (paper: 256).
        Other arguments: see :class:`MatchingDistiller` and :class:`datadistill.synth.Distiller`.
    """

    name = "dm"
    summary = "distribution matching: per-class mean embeddings in fresh random networks (Zhao & Bilen 2023)"
    needs_images = False
    recommended_iterations = 20_000

    def __init__(self, ipc: int = 10, *, iterations: int = 20_000, lr_images: float = 1.0, **kwargs):
        super().__init__(ipc, iterations=iterations, lr_images=lr_images, **kwargs)

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
                stats_real = self._statistics(self._features(net, real), k, n)
            stats_syn = self._statistics(self._features(net, syn), k, self.ipc)
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
