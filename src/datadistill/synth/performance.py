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
from torch.func import functional_call, grad, stack_module_state, vmap

from ..errors import ConfigError
from .base import Context, Distiller, register


def network_pool(distiller: Distiller, ctx: Context, it: int) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """``n_networks`` freshly initialised networks of iteration ``it``: one template and their stacked parameters."""
    nets = [distiller.new_network(ctx, seed=distiller.iteration_seed(it, 1 + k)) for k in range(distiller.n_networks)]
    if any(True for _ in nets[0].buffers()):
        raise ConfigError(f"{distiller.name}: networks with running statistics (norm='batchnorm') cannot be "
                          "unrolled functionally; use norm='instancenorm' or 'none'")
    params, _ = stack_module_state(nets)
    return nets[0], {k: v.detach() for k, v in params.items()}


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
        n_networks: freshly initialised networks unrolled together (vmap) per iteration; the loss is their mean.
        lr_images: Adam learning rate of the synthetic samples.
    """

    name = "bptt"
    summary = "meta-learning: backpropagate a real-data loss through unrolled SGD on the synthetic set"
    needs_images = False

    def __init__(self, ipc: int = 10, *, inner_steps: int = 10, inner_epochs: int = 1, lr_inner_init: float = 0.02,
                 lr_lr: float = 0.01, batch_syn: int | None = None, n_networks: int = 1,
                 lr_images: float = 0.01, iterations: int = 1000, **kwargs):
        super().__init__(ipc, lr_images=lr_images, iterations=iterations, **kwargs)
        self.inner_steps = inner_steps
        self.inner_epochs = inner_epochs
        self.lr_inner_init = lr_inner_init
        self.lr_lr = lr_lr
        self.batch_syn = batch_syn
        self.n_networks = n_networks

    def _validate(self, dataset) -> None:
        super()._validate(dataset)
        if self.inner_steps < 1 or self.inner_epochs < 1:
            raise ConfigError(f"bptt: inner_steps and inner_epochs must be >= 1, got {self.inner_steps}, "
                              f"{self.inner_epochs}")
        if self.lr_inner_init <= 0:
            raise ConfigError(f"bptt: lr_inner_init must be > 0, got {self.lr_inner_init}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ConfigError(f"bptt: batch_syn must be >= 1 or None, got {self.batch_syn}")
        if self.n_networks < 1:
            raise ConfigError(f"bptt: n_networks must be >= 1, got {self.n_networks}")

    def _setup(self, ctx: Context) -> None:
        log_lrs = torch.full((self.inner_steps,), math.log(self.lr_inner_init), device=ctx.device,
                             requires_grad=True)
        ctx.state["log_inner_lrs"] = log_lrs
        ctx.state["opt_images"] = torch.optim.Adam([ctx.X_syn], lr=self.lr_images)
        ctx.state["opt_lr"] = torch.optim.Adam([log_lrs], lr=self.lr_lr)

    def _step(self, ctx: Context, it: int) -> float:
        gen = self.iteration_generator(it)
        base, params = network_pool(self, ctx, it)
        n = len(ctx.y_syn)
        b = min(self.batch_syn or n, n)
        n_steps = self.inner_steps * self.inner_epochs
        batches = [torch.randperm(n, generator=gen)[:b].to(ctx.device) if b < n else None for _ in range(n_steps)]
        xr, yr = _real_batch(self, ctx, gen)

        def loss_of(p, x, y):
            return nn.functional.cross_entropy(functional_call(base, p, (x,)), y)

        def unrolled_loss(p, x_syn, log_lrs):
            # Wang et al. 2018, Alg. 1: theta_{i+1} = theta_i - eta_i * grad l(x_syn, theta_i)
            lrs = log_lrs.exp()
            for i, idx in enumerate(batches):
                xb, yb = (x_syn, ctx.y_syn) if idx is None else (x_syn[idx], ctx.y_syn[idx])
                g = grad(loss_of)(p, xb, yb)
                p = {k: p[k] - lrs[i % self.inner_steps] * g[k] for k in p}
            return loss_of(p, xr, yr)

        # all networks of the pool unroll at once (vmap over their stacked parameters)
        loss = vmap(unrolled_loss, in_dims=(0, None, None))(params, ctx.X_syn, ctx.state["log_inner_lrs"]).mean()
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
        n_networks: networks per iteration, evaluated together (vmap); the loss is their mean.
        online_steps: 0: fresh random networks every iteration (KIP-like); > 0: a FRePo-like pool of
            ``n_networks`` networks, each trained one SGD step per iteration on the synthetic set and
            re-initialised after ``online_steps`` steps (ages staggered across the pool).
        lr_online: SGD learning rate of the pool networks' online training.
    """

    name = "krr"
    summary = "kernel ridge regression on random-network features (KIP/FRePo-style closed-form solve)"
    needs_images = False

    def __init__(self, ipc: int = 10, *, ridge: float = 1e-3, loss: str = "mse", learn_labels: bool = False,
                 lr_labels: float = 0.01, lr_images: float = 0.01, amp: bool = True, n_networks: int = 1,
                 online_steps: int = 0, lr_online: float = 0.01, iterations: int = 1000, **kwargs):
        super().__init__(ipc, lr_images=lr_images, iterations=iterations, **kwargs)
        self.ridge = ridge
        self.loss = loss
        self.learn_labels = learn_labels
        self.lr_labels = lr_labels
        self.amp = amp
        self.n_networks = n_networks
        self.online_steps = online_steps
        self.lr_online = lr_online

    def _validate(self, dataset) -> None:
        super()._validate(dataset)
        if self.loss not in ("mse", "ce"):
            raise ConfigError(f"krr: loss must be 'mse' or 'ce', got {self.loss!r}")
        if self.ridge <= 0:
            raise ConfigError(f"krr: ridge must be > 0, got {self.ridge}")
        if self.n_networks < 1:
            raise ConfigError(f"krr: n_networks must be >= 1, got {self.n_networks}")
        if self.online_steps < 0 or self.lr_online <= 0:
            raise ConfigError(f"krr: online_steps must be >= 0 and lr_online > 0, got {self.online_steps}, "
                              f"{self.lr_online}")

    def _setup(self, ctx: Context) -> None:
        params = [ctx.X_syn]
        ctx.state["opt_images"] = torch.optim.Adam(params, lr=self.lr_images)
        if self.learn_labels:
            # softmax(5 * one-hot) puts ~0.94 on the true class at the start
            logits = (5.0 * nn.functional.one_hot(ctx.y_syn, ctx.n_classes).float()).requires_grad_(True)
            ctx.state["label_logits"] = logits
            ctx.state["opt_labels"] = torch.optim.Adam([logits], lr=self.lr_labels)
        if self.online_steps:
            base, params = network_pool(self, ctx, -1)
            self._template = base
            for name, v in params.items():
                ctx.state[f"pool.{name}"] = v.clone()
            ctx.state["pool_age"] = torch.arange(self.n_networks, device=ctx.device) * self.online_steps \
                // self.n_networks

    def _pool(self, ctx: Context) -> dict[str, torch.Tensor]:
        return {k[len("pool."):]: v for k, v in ctx.state.items() if k.startswith("pool.") and k != "pool_age"}

    @torch.no_grad()
    def _train_pool(self, ctx: Context, it: int) -> None:
        """One SGD step of every pool network on the synthetic set; re-initialise those past ``online_steps``."""
        base, params = self._template, self._pool(ctx)
        x_syn, targets = ctx.X_syn.detach(), self._targets(ctx).detach()

        def loss_of(p):
            return nn.functional.cross_entropy(functional_call(base, p, (x_syn,)), targets)

        with torch.enable_grad():
            grads = vmap(grad(loss_of))(params)
        for k, v in params.items():
            v.sub_(self.lr_online * grads[k])
        age = ctx.state["pool_age"]
        age += 1
        for j in torch.nonzero(age >= self.online_steps).flatten().tolist():
            fresh = dict(self.new_network(ctx, seed=self.iteration_seed(it, 1000 + j)).named_parameters())
            for k, v in params.items():
                v[j] = fresh[k].detach()
            age[j] = 0

    def _targets(self, ctx: Context) -> torch.Tensor:
        if self.learn_labels:
            return torch.softmax(ctx.state["label_logits"], dim=1)
        return nn.functional.one_hot(ctx.y_syn, ctx.n_classes).float()

    def predict(self, ctx: Context, x_real: torch.Tensor, base: nn.Module, params: dict[str, torch.Tensor]
                ) -> torch.Tensor:
        """Ridge predictions (n_networks, n_real, K) for ``x_real`` from the synthetic set, one per network.

        Args:
            base: a network of the pool (the template ``functional_call`` runs).
            params: the pool's stacked parameters (leading axis: network).
        """
        body = {k[len("body."):]: v for k, v in params.items() if k.startswith("body.")}
        targets = self._targets(ctx)

        def one(p, x_syn, y_syn):
            with torch.autocast(device_type=ctx.device.type, dtype=torch.bfloat16,
                                enabled=self.amp and ctx.device.type == "cuda"):
                phi_s = functional_call(base.body, p, (x_syn,)).float()
                phi_r = functional_call(base.body, p, (x_real,)).float()
            # W = phi_s^T (K_ss + lambda I)^-1 Y_s; predictions phi_r W = K_rs (K_ss + lambda I)^-1 Y_s
            k_ss = phi_s @ phi_s.T
            lam = self.ridge * k_ss.diagonal().mean().detach().clamp_min(1e-12)
            eye = torch.eye(len(k_ss), device=k_ss.device, dtype=k_ss.dtype)
            return (phi_r @ phi_s.T) @ torch.linalg.solve(k_ss + lam * eye, y_syn)

        return vmap(one, in_dims=(0, None, None))(body, ctx.X_syn, targets)

    def _step(self, ctx: Context, it: int) -> float:
        gen = self.iteration_generator(it)
        if self.online_steps:
            base, params = self._template, self._pool(ctx)
        else:
            base, params = network_pool(self, ctx, it)
        xr, yr = _real_batch(self, ctx, gen)
        pred = self.predict(ctx, xr, base, params)
        if self.loss == "mse":
            onehot = nn.functional.one_hot(yr, ctx.n_classes).float()
            loss = 0.5 * (pred - onehot).pow(2).sum(-1).mean()
        else:
            loss = nn.functional.cross_entropy(pred.flatten(0, 1), yr.repeat(len(pred)))
        opts = [ctx.state["opt_images"]] + ([ctx.state["opt_labels"]] if self.learn_labels else [])
        for o in opts:
            o.zero_grad(set_to_none=True)
        loss.backward()
        for o in opts:
            o.step()
        if self.online_steps:
            self._train_pool(ctx, it)
        return float(loss.detach())

    def _training_recipe(self, ctx: Context) -> dict:
        return {"lr": 0.01, "augmentation": None, "soft_labels": bool(self.learn_labels), "epochs": 300}

    def _soft_labels(self, ctx: Context) -> np.ndarray | None:
        if not self.learn_labels:
            return None
        return self._targets(ctx).detach().float().cpu().numpy()
