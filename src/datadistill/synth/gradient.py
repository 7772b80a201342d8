"""Gradient matching: DC (Zhao, Mopuri & Bilen, ICLR 2021) and DSA (Zhao & Bilen, ICML 2021).

Each iteration starts from a freshly initialised network. For ``outer_loop`` rounds: draw a real batch of
every class, compute per-class loss gradients w.r.t. the network's parameters for the real and the
synthetic batch, and update the images to minimise the layer-wise distance (paper, eq. 10: for every
weight tensor reshaped to (output units, rest), ``sum over units of 1 - cos(g_real, g_syn)``; biases and
normalisation parameters are left out, as in the reference code); then train the network for
``inner_loop`` steps on the (detached) synthetic set. ``dsa`` adds differentiable Siamese augmentation
with one seed shared by the real and synthetic batch of each class, and augments the inner loop.

Per-class gradients come from ``torch.func`` (``functional_call`` + ``grad``); with ``vectorize`` they are
taken for all classes at once with ``vmap`` (fast on GPU; on CPU a loop over classes is faster).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.func import functional_call, grad, vmap

from .base import Context, register
from .distribution import MatchingDistiller

# (outer_loop, inner_loop) per images-per-class in the reference implementation
LOOPS_PER_IPC = {1: (1, 1), 10: (10, 50), 20: (20, 25), 30: (30, 20), 40: (40, 15), 50: (50, 10)}


def default_loops(ipc: int) -> tuple[int, int]:
    """The reference (outer_loop, inner_loop) for ``ipc``: the entry of the largest listed IPC <= ipc."""
    key = max(k for k in LOOPS_PER_IPC if k <= max(1, ipc))
    return LOOPS_PER_IPC[key]


def gradient_distance(g_real: dict[str, torch.Tensor], g_syn: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum over classes, weight tensors and output units of ``1 - cos(g_real, g_syn)``.

    Args:
        g_real, g_syn: parameter name -> per-class gradients of shape (K, *parameter shape).
    """
    total = g_syn[next(iter(g_syn))].new_zeros(())
    for name, gs in g_syn.items():
        if gs.dim() <= 2:  # (K, units): biases and normalisation scales carry no per-unit direction
            continue
        gr = g_real[name].reshape(gs.shape[0], gs.shape[1], -1)
        gs = gs.reshape(gs.shape[0], gs.shape[1], -1)
        cos = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)
        total = total + (1 - cos).sum()
    return total


@register
class GradientMatching(MatchingDistiller):
    """DC: match per-class loss gradients of real and synthetic batches in a network trained on the synthetic set.

    Args:
        ipc: synthetic samples per class.
        outer_loop, inner_loop: image updates per network, and network steps between them
            (``None``: the paper's values for this IPC: 1 -> 1/1, 10 -> 10/50, 50 -> 50/10).
        lr_images: SGD learning rate of the images (paper: 0.1, momentum 0.5).
        lr_net: SGD learning rate of the inner loop (paper: 0.01).
        batch_real: real samples per class per matching step (paper: 256).
        batch_syn: synthetic samples per inner-loop step (paper: 256).
        vectorize: per-class gradients with ``vmap`` over classes (``None``: on CUDA only).
        Other arguments: see :class:`datadistill.synth.distribution.MatchingDistiller`.
    """

    name = "dc"
    summary = "gradient matching: per-class layer-wise gradient distance, inner loop on the synthetic set (DC)"
    needs_images = False
    default_dsa = False
    recommended_iterations = 1000

    def __init__(self, ipc: int = 10, *, iterations: int = 1000, lr_images: float = 0.1, outer_loop: int | None = None,
                 inner_loop: int | None = None, lr_net: float = 0.01, batch_syn: int = 256,
                 vectorize: bool | None = None, **kwargs):
        super().__init__(ipc, iterations=iterations, lr_images=lr_images, **kwargs)
        self.outer_loop = outer_loop
        self.inner_loop = inner_loop
        self.lr_net = lr_net
        self.batch_syn = batch_syn
        self.vectorize = vectorize

    def _loops(self) -> tuple[int, int]:
        """(outer_loop, inner_loop) as given, each None filled in from the reference table for ``ipc``."""
        outer, inner = default_loops(int(self.ipc))
        return (outer if self.outer_loop is None else self.outer_loop,
                inner if self.inner_loop is None else self.inner_loop)

    def _resolved_params(self) -> dict:
        outer, inner = self._loops()
        return super()._resolved_params() | {"outer_loop": outer, "inner_loop": inner}

    def _setup(self, ctx: Context) -> None:
        self._setup_augmentation(ctx)
        ctx.state["optimizer"] = torch.optim.SGD([ctx.X_syn], lr=self.lr_images, momentum=0.5)

    def _class_gradients(self, net, params: dict, x: torch.Tensor, k: int, n: int, ctx: Context
                         ) -> dict[str, torch.Tensor]:
        """Per-class gradients (K, *shape) of the mean cross-entropy of each class's ``n`` samples."""
        def loss(p: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            with self.autocast(ctx):
                logits = functional_call(net, p, (xb,))
            return F.cross_entropy(logits.float(), yb)

        xs = x.reshape(k, n, *x.shape[1:])
        ys = torch.arange(k, device=x.device).repeat_interleave(n).reshape(k, n)
        vectorize = self.vectorize if self.vectorize is not None else ctx.device.type == "cuda"
        if vectorize:
            return vmap(grad(loss), in_dims=(None, 0, 0))(params, xs, ys)
        per_class = [grad(loss)(params, xs[c], ys[c]) for c in range(k)]
        return {name: torch.stack([g[name] for g in per_class]) for name in params}

    def _inner_training(self, net, params: dict, ctx: Context, it: int, rnd: int) -> dict:
        """``inner_loop`` SGD steps of the network on the detached synthetic set (augmented under DSA)."""
        X, y = ctx.X_syn.detach(), ctx.y_syn
        inner_loop = self._loops()[1]
        gen = self.iteration_generator(it, 10_000 + rnd)

        def loss(p: dict, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
            with self.autocast(ctx):
                logits = functional_call(net, p, (xb,))
            return F.cross_entropy(logits.float(), yb)

        step = grad(loss)
        done = 0
        while done < inner_loop:
            perm = torch.randperm(len(y), generator=gen).to(ctx.device)
            for i in range(0, len(y), self.batch_syn):
                idx = perm[i:i + self.batch_syn]
                xb = X[idx]
                if self._augment is not None:
                    xb = self._augment(xb, gen, groups=len(idx))
                g = step(params, xb, y[idx])
                params = {name: p - self.lr_net * g[name] for name, p in params.items()}
                done += 1
                if done >= inner_loop:
                    break
        return params

    def _step(self, ctx: Context, it: int) -> float:
        net = self.new_network(ctx, seed=self.iteration_seed(it, 1))
        net.train()
        params = {name: p.detach() for name, p in net.named_parameters()}
        k, opt = ctx.n_classes, ctx.state["optimizer"]
        total = 0.0
        outer_loop = self._loops()[0]
        for rnd in range(outer_loop):
            real, n = self.real_batches(ctx, self.iteration_generator(it, 100 + rnd))
            real, syn = self.siamese(ctx, real, ctx.X_syn, self.iteration_seed(it, 5_000 + rnd))
            with torch.no_grad():
                g_real = self._class_gradients(net, params, real, k, n, ctx)
            g_syn = self._class_gradients(net, params, syn, k, self.ipc, ctx)
            loss = gradient_distance(g_real, g_syn)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach())
            if rnd + 1 < outer_loop:
                params = self._inner_training(net, params, ctx, it, rnd)
        return total / outer_loop


@register
class DifferentiableSiameseAugmentation(GradientMatching):
    """DSA: DC with differentiable Siamese augmentation on the real and synthetic batches (Zhao & Bilen 2021).

    Args: as :class:`GradientMatching`; ``dsa_strategy`` picks the operations (``auto``: all six, no
    flip for single-channel images).
    """

    name = "dsa"
    summary = "gradient matching with differentiable Siamese augmentation (DSA)"
    needs_images = True
    default_dsa = True
