"""Performance matching: make a network trained on the synthetic set do well on real data.

- ``bptt``: the original dataset distillation (Wang et al. 2018): unroll ``inner_steps`` SGD steps of
  a freshly initialised network on the synthetic set (learned per-step learning rates) and minimise
  the cross-entropy of the unrolled network on a real batch, backpropagating through the unroll.
- ``krr``: kernel ridge regression on random-network features (KIP, Nguyen et al. 2021; FRePo, Zhou
  et al. 2022): the closed-form ridge solution fitted on the synthetic features predicts real labels.

Both work with ``model="mlp"`` on tabular data as well as with ConvNets on images.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from .base import Context, Distiller, register
from .trajectory import FlatNetwork


def _real_batch(distiller: Distiller, ctx: Context, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``batch_real`` real samples of every class (all classes in one batch) and their labels."""
    xs, ys = [], []
    for c in range(ctx.n_classes):
        xb = ctx.real_batch(c, distiller.batch_real, gen)
        xs.append(xb)
        ys.append(torch.full((len(xb),), c, dtype=torch.long, device=ctx.device))
    return torch.cat(xs), torch.cat(ys)


@register
class UnrolledMetaLearning(Distiller):
    """BPTT dataset distillation: learn samples and per-step learning rates through an unrolled inner loop.

    Args:
        inner_steps: SGD steps of the inner network on the synthetic set per outer iteration.
        inner_epochs: passes over the inner steps (each step uses its own learned learning rate).
        lr_inner_init: initial inner learning rate (learned, log-parametrised, one per step).
        lr_lr: Adam learning rate of the log inner learning rates.
        batch_syn: synthetic minibatch per inner step (``None``: the whole synthetic set).
        lr_images: Adam learning rate of the synthetic samples.
    """

    name = "bptt"
    summary = "meta-learning: backpropagate a real-data loss through unrolled SGD on the synthetic set"
    needs_images = False

    def __init__(self, ipc: int = 10, *, inner_steps: int = 10, inner_epochs: int = 1, lr_inner_init: float = 0.02,
                 lr_lr: float = 0.01, batch_syn: int | None = None, lr_images: float = 0.01,
                 iterations: int = 1000, **kwargs):
        super().__init__(ipc, lr_images=lr_images, iterations=iterations, **kwargs)
        self.inner_steps = inner_steps
        self.inner_epochs = inner_epochs
        self.lr_inner_init = lr_inner_init
        self.lr_lr = lr_lr
        self.batch_syn = batch_syn

    def _validate(self, dataset) -> None:
        super()._validate(dataset)
        if self.inner_steps < 1 or self.inner_epochs < 1:
            raise ConfigError(f"bptt: inner_steps and inner_epochs must be >= 1, got {self.inner_steps}, "
                              f"{self.inner_epochs}")
        if self.lr_inner_init <= 0:
            raise ConfigError(f"bptt: lr_inner_init must be > 0, got {self.lr_inner_init}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ConfigError(f"bptt: batch_syn must be >= 1 or None, got {self.batch_syn}")

    def _setup(self, ctx: Context) -> None:
        log_lrs = torch.full((self.inner_steps,), math.log(self.lr_inner_init), device=ctx.device,
                             requires_grad=True)
        ctx.state["log_inner_lrs"] = log_lrs
        ctx.state["opt_images"] = torch.optim.Adam([ctx.X_syn], lr=self.lr_images)
        ctx.state["opt_lr"] = torch.optim.Adam([log_lrs], lr=self.lr_lr)

    def unroll(self, ctx: Context, net: FlatNetwork, theta: torch.Tensor, gen: torch.Generator | None = None
               ) -> torch.Tensor:
        """Parameters after the learned inner loop on the synthetic set, differentiable in X_syn and the lrs."""
        lrs = ctx.state["log_inner_lrs"].exp()
        n = len(ctx.y_syn)
        b = min(self.batch_syn or n, n)
        for _ in range(self.inner_epochs):
            for s in range(self.inner_steps):
                if b < n:
                    idx = torch.randperm(n, generator=gen)[:b].to(ctx.device)
                    xb, yb = ctx.X_syn[idx], ctx.y_syn[idx]
                else:
                    xb, yb = ctx.X_syn, ctx.y_syn
                loss = nn.functional.cross_entropy(net(theta, xb), yb)
                grad = torch.autograd.grad(loss, theta, create_graph=True)[0]
                theta = theta - lrs[s] * grad
        return theta

    def _step(self, ctx: Context, it: int) -> float:
        gen = self.iteration_generator(it)
        net = FlatNetwork(self.new_network(ctx, seed=self.iteration_seed(it, 1)))
        theta = net.flatten().requires_grad_(True)
        theta = self.unroll(ctx, net, theta, gen)
        xr, yr = _real_batch(self, ctx, gen)
        loss = nn.functional.cross_entropy(net(theta, xr), yr)
        opt_img, opt_lr = ctx.state["opt_images"], ctx.state["opt_lr"]
        opt_img.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        loss.backward()
        opt_img.step()
        opt_lr.step()
        return float(loss.detach())

    def _training_recipe(self, ctx: Context) -> dict:
        lrs = ctx.state["log_inner_lrs"].detach().exp().cpu().tolist()
        return {"lr": 0.01, "augmentation": None, "soft_labels": False, "epochs": 300,
                "inner_lrs": lrs, "inner_steps": self.inner_steps, "inner_epochs": self.inner_epochs}


@register
class KernelRidgeMatching(Distiller):
    """KRR distillation: ridge regression on random-network features of the synthetic set predicts real labels.

    Args:
        ridge: regularisation, relative to the mean diagonal of the synthetic kernel.
        loss: ``mse`` (against one-hot real labels) or ``ce`` (cross-entropy of the ridge predictions).
        learn_labels: also learn the synthetic labels (stored as soft labels in the artifact).
        lr_labels: Adam learning rate of the label logits.
        lr_images: Adam learning rate of the synthetic samples.
        amp: bfloat16 autocast for the feature extraction on CUDA (the solve stays float32).
    """

    name = "krr"
    summary = "kernel ridge regression on random-network features (KIP/FRePo-style closed-form solve)"
    needs_images = False

    def __init__(self, ipc: int = 10, *, ridge: float = 1e-3, loss: str = "mse", learn_labels: bool = False,
                 lr_labels: float = 0.01, lr_images: float = 0.01, amp: bool = True, iterations: int = 1000,
                 **kwargs):
        super().__init__(ipc, lr_images=lr_images, iterations=iterations, **kwargs)
        self.ridge = ridge
        self.loss = loss
        self.learn_labels = learn_labels
        self.lr_labels = lr_labels
        self.amp = amp

    def _validate(self, dataset) -> None:
        super()._validate(dataset)
        if self.loss not in ("mse", "ce"):
            raise ConfigError(f"krr: loss must be 'mse' or 'ce', got {self.loss!r}")
        if self.ridge <= 0:
            raise ConfigError(f"krr: ridge must be > 0, got {self.ridge}")

    def _setup(self, ctx: Context) -> None:
        params = [ctx.X_syn]
        ctx.state["opt_images"] = torch.optim.Adam(params, lr=self.lr_images)
        if self.learn_labels:
            # softmax(5 * one-hot) puts ~0.94 on the true class at the start
            logits = (5.0 * nn.functional.one_hot(ctx.y_syn, ctx.n_classes).float()).requires_grad_(True)
            ctx.state["label_logits"] = logits
            ctx.state["opt_labels"] = torch.optim.Adam([logits], lr=self.lr_labels)

    def _targets(self, ctx: Context) -> torch.Tensor:
        if self.learn_labels:
            return torch.softmax(ctx.state["label_logits"], dim=1)
        return nn.functional.one_hot(ctx.y_syn, ctx.n_classes).float()

    def _features(self, ctx: Context, net: nn.Module, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16,
                            enabled=self.amp and ctx.device.type == "cuda"):
            return net.features(x).float()

    def predict(self, ctx: Context, net: nn.Module, x_real: torch.Tensor) -> torch.Tensor:
        """Ridge predictions for ``x_real`` from the synthetic set, W = phi_s^T (K_ss + lambda I)^-1 Y_s."""
        phi_s = self._features(ctx, net, ctx.X_syn)
        phi_r = self._features(ctx, net, x_real)
        k_ss = phi_s @ phi_s.T
        lam = self.ridge * k_ss.diagonal().mean().detach().clamp_min(1e-12)
        eye = torch.eye(len(k_ss), device=k_ss.device)
        alpha = torch.linalg.solve(k_ss + lam * eye, self._targets(ctx))
        return (phi_r @ phi_s.T) @ alpha

    def _step(self, ctx: Context, it: int) -> float:
        gen = self.iteration_generator(it)
        net = self.new_network(ctx, seed=self.iteration_seed(it, 1))
        net.requires_grad_(False)
        xr, yr = _real_batch(self, ctx, gen)
        pred = self.predict(ctx, net, xr)
        if self.loss == "mse":
            loss = 0.5 * (pred - nn.functional.one_hot(yr, ctx.n_classes).float()).pow(2).sum(1).mean()
        else:
            loss = nn.functional.cross_entropy(pred, yr)
        opts = [ctx.state["opt_images"]] + ([ctx.state["opt_labels"]] if self.learn_labels else [])
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
        return float(loss.detach())

    def _training_recipe(self, ctx: Context) -> dict:
        return {"lr": 0.01, "augmentation": None, "soft_labels": bool(self.learn_labels), "epochs": 300}

    def _soft_labels(self, ctx: Context) -> np.ndarray | None:
        if not self.learn_labels:
            return None
        return self._targets(ctx).detach().float().cpu().numpy()
