"""Trajectory matching (MTT, Cazenavette et al. 2022, "Dataset Distillation by Matching Training Trajectories").

Experts are trained once on the real data and their parameters saved after every epoch in a reusable
buffer on disk (:class:`ExpertBuffer`). Each distillation iteration starts a student at an expert's
epoch ``t``, takes ``syn_steps`` SGD steps on synthetic minibatches with a learned learning rate, and
minimises ``||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``.

Memory: the default ("full") unroll keeps the graph of every synthetic step, so memory grows with
``syn_steps x batch_syn`` activations. ``memory="constant"`` unrolls without a graph and then
recomputes each step's gradient one at a time, backpropagating the final-parameter error through that
step only: memory no longer grows with ``syn_steps`` (only ``syn_steps`` parameter vectors are kept),
at the price of a first-order approximation that ignores how a step's images move the later steps'
starting points (as in TESLA, Cui et al. 2023).
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.func import functional_call

from ..data.artifact import atomic_write
from ..data.dataset import Dataset
from ..data.preprocess import Preprocessor
from ..errors import ArtifactError, ConfigError
from ..models import build_model
from ..training import TrainConfig, resolve_device, train
from .augment import DSA, strategy_for
from .base import Context, Distiller, register

MANIFEST = "manifest.json"


class FlatNetwork:
    """Evaluate ``model`` with all its parameters given as one flat vector (torch.func.functional_call).

    Args:
        model: a module whose parameters define the layout; its buffers are used as they are.
    """

    def __init__(self, model: nn.Module):
        self.model = model
        named = list(model.named_parameters())
        self.names = [n for n, _ in named]
        self.shapes = [p.shape for _, p in named]
        self.numels = [p.numel() for _, p in named]
        self.buffers = dict(model.named_buffers())

    @property
    def n_params(self) -> int:
        return int(sum(self.numels))

    def flatten(self) -> torch.Tensor:
        """The model's current parameters as one detached flat vector."""
        return torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.numels), self.shapes)}

    def __call__(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.model, (self.unflatten(flat), self.buffers), (x,))


def make_augmentation(strategy: str, input_shape: tuple[int, ...]) -> DSA:
    """Per-sample DSA augmentation (one transformation per image) for model-space ``input_shape``."""
    if len(input_shape) != 3:
        raise ConfigError("DSA augmentation needs image data; run without augmentation on tabular data")
    return DSA(strategy_for(tuple(input_shape), strategy), siamese=False)


# --- expert buffer -------------------------------------------------------------------------------------
class ExpertBuffer:
    """Expert training trajectories on disk: ``expert_XXX.pt`` (epochs+1, P) float32 + ``manifest.json``.

    Args:
        path: the buffer directory.
        manifest: its parsed manifest (data fingerprint, model, recipe, experts written so far).
    """

    def __init__(self, path: Path, manifest: dict):
        self.path = Path(path)
        self.manifest = manifest

    @property
    def n_experts(self) -> int:
        return len(self.manifest["experts"])

    @property
    def epochs(self) -> int:
        return int(self.manifest["epochs"])

    @classmethod
    def open(cls, path: str | os.PathLike) -> ExpertBuffer:
        """Read a buffer directory written by :func:`build_expert_buffer`."""
        path = Path(path)
        try:
            manifest = json.loads((path / MANIFEST).read_text())
        except FileNotFoundError:
            raise ArtifactError(f"{path}: not an expert buffer (no {MANIFEST}); build one with "
                                "build_expert_buffer or point --buffer to an empty directory") from None
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path / MANIFEST}: corrupt JSON ({exc}); delete the buffer to rebuild it") from None
        return cls(path, manifest)

    def trajectory(self, i: int) -> torch.Tensor:
        """Expert ``i``'s parameters after each epoch, (epochs+1, P), memory-mapped (rows read on demand)."""
        f = self.path / self.manifest["experts"][i]
        try:
            return torch.load(f, map_location="cpu", mmap=True, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable file is reported the same way
            raise ArtifactError(f"{f}: unreadable expert trajectory ({exc}); delete the buffer to rebuild it") from None

    def check(self, dataset: Dataset, model: str, model_kwargs: dict) -> None:
        """Raise ArtifactError unless the buffer was trained on ``dataset`` with ``model``."""
        m = self.manifest
        if m.get("fingerprint") != dataset.fingerprint:
            raise ArtifactError(f"{self.path}: expert buffer was trained on different data (fingerprint "
                                f"{str(m.get('fingerprint'))[:12]} vs {dataset.fingerprint[:12]}); "
                                "delete it or point --buffer elsewhere")
        if m.get("model") != model or m.get("model_kwargs", {}) != dict(model_kwargs):
            raise ArtifactError(f"{self.path}: expert buffer holds {m.get('model')} {m.get('model_kwargs')} experts, "
                                f"not {model} {dict(model_kwargs)}; delete it or point --buffer elsewhere")


def _write_manifest(path: Path, manifest: dict) -> None:
    atomic_write(path / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True))


def _reusable_manifest(path: Path, dataset: Dataset, model: str, model_kwargs: dict, epochs: int,
                       recipe: dict) -> dict:
    """The manifest of the buffer at ``path``; ArtifactError unless it was built the same way, long enough."""
    buf = ExpertBuffer.open(path)
    buf.check(dataset, model, model_kwargs)
    if buf.manifest.get("recipe") != recipe:
        raise ArtifactError(f"{path}: expert buffer was trained with {buf.manifest.get('recipe')}, not {recipe}; "
                            "delete it or point --buffer elsewhere")
    if buf.epochs < epochs:
        raise ArtifactError(f"{path}: expert buffer holds {buf.epochs} epochs per expert but {epochs} are needed; "
                            "delete it or point --buffer elsewhere")
    return buf.manifest


def expert_trajectory(net: nn.Module, X: torch.Tensor, y: torch.Tensor, config: TrainConfig, *,
                      augment=None, device=None, seed: int = 0, progress: bool = False,
                      description: str = "expert") -> torch.Tensor:
    """Train ``net`` once for ``config.epochs`` epochs; its flat parameters at the start and after every epoch.

    One training run with one optimiser: the parameters are snapshotted between epochs by a callback.

    Returns:
        (epochs + 1, P) float32 on the CPU; row 0 is the initialisation.
    """
    flat = FlatNetwork(net)
    rows = [flat.flatten().cpu()]

    def snapshot(epoch: int, model: nn.Module) -> None:
        rows.append(flat.flatten().cpu())

    result = train(net, X, y, config, augment=augment, device=device, seed=seed, progress=progress,
                   description=description, callbacks=[snapshot])
    if len(rows) != result.epochs + 1:
        raise ConfigError(f"{description}: the recipe stopped early ({result.stop_reason}) after {result.epochs} "
                          f"epochs; an expert trajectory needs one snapshot per epoch")
    return torch.stack(rows)


def build_expert_buffer(
    dataset: Dataset,
    path: str | os.PathLike,
    *,
    n_experts: int = 10,
    epochs: int = 50,
    model: str = "convnet",
    model_kwargs: dict | None = None,
    lr: float = 0.01,
    batch_size: int = 256,
    augment: bool = False,
    dsa_strategy: str = "auto",
    device: str | None = "auto",
    seed: int = 0,
    progress: bool = False,
) -> ExpertBuffer:
    """Train ``n_experts`` networks on ``dataset`` (SGD, no momentum), saving parameters after every epoch.

    An existing buffer at ``path`` is reused when it matches the data fingerprint, model and recipe;
    experts missing from it (an interrupted build, or more requested) are trained and added.

    Args:
        path: buffer directory (created if missing).
        n_experts, epochs: trajectories and their length in epochs.
        model, model_kwargs: the expert architecture (the same the distiller matches through).
        lr, batch_size: the experts' plain-SGD recipe (Cazenavette et al.: lr 0.01, no momentum).
        augment: train experts with (per-sample) DSA augmentation.
        dsa_strategy: ``auto`` (all operations; no flip for one-channel images) or ``op_op_...``.
        seed: expert ``i`` is initialised and shuffled from ``seed + i`` (one training run per expert).
    """
    if n_experts < 1 or epochs < 1:
        raise ConfigError(f"an expert buffer needs n_experts >= 1 and epochs >= 1, got {n_experts} and {epochs}")
    path = Path(path)
    model_kwargs = dict(model_kwargs or {})
    pre = Preprocessor.fit(dataset)
    aug = make_augmentation(dsa_strategy, pre.model_shape) if augment else None
    recipe = {"optimizer": "sgd", "lr": float(lr), "momentum": 0.0, "batch_size": int(batch_size),
              "augmentation": "dsa" if augment else None, "dsa": aug.to_dict() if aug is not None else None}
    if (path / MANIFEST).exists():
        manifest = _reusable_manifest(path, dataset, model, model_kwargs, epochs, recipe)
        if len(manifest["experts"]) >= n_experts:
            return ExpertBuffer(path, manifest)
    else:
        path.mkdir(parents=True, exist_ok=True)
        manifest = {"fingerprint": dataset.fingerprint, "source": dataset.name, "model": model,
                    "model_kwargs": model_kwargs, "epochs": int(epochs), "recipe": recipe, "experts": [],
                    "seconds": [], "seed": int(seed), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    dev = resolve_device(device)
    X = torch.as_tensor(pre.transform(dataset.X), device=dev)
    y = torch.as_tensor(dataset.y, device=dev)
    cfg = TrainConfig(epochs=manifest["epochs"], batch_size=batch_size, lr=lr, optimizer="sgd", momentum=0.0)
    for i in range(len(manifest["experts"]), n_experts):
        t0 = time.perf_counter()
        net = build_model(model, pre.model_shape, dataset.n_classes, seed=seed + i, **model_kwargs).to(dev)
        rows = expert_trajectory(net, X, y, cfg, augment=aug, device=dev, seed=seed + i, progress=progress,
                                 description=f"expert {i}")
        name = f"expert_{i:03d}.pt"
        payload = io.BytesIO()
        torch.save(rows, payload)
        atomic_write(path / name, payload.getvalue())
        manifest["experts"].append(name)
        manifest["seconds"].append(time.perf_counter() - t0)
        manifest["n_params"] = int(rows.shape[1])
        _write_manifest(path, manifest)
    return ExpertBuffer(path, manifest)


def default_buffer_path(dataset: Dataset, model: str, model_kwargs: dict, checkpoint) -> Path:
    """Next to the checkpoint when there is one, else a per-(data, model) folder in the temp directory."""
    if checkpoint:
        ck = Path(checkpoint)
        return ck.with_name(ck.name + ".experts")
    key = hashlib.sha256(f"{dataset.fingerprint}:{model}:{json.dumps(model_kwargs, sort_keys=True)}".encode())
    return Path(tempfile.gettempdir()) / "datadistill-experts" / key.hexdigest()[:16]


# --- the distiller -------------------------------------------------------------------------------------
@register
class TrajectoryMatching(Distiller):
    """MTT: match ``syn_steps`` synthetic SGD steps to ``expert_epochs`` epochs of an expert trajectory.

    Args:
        buffer: expert buffer directory (built on first use; default next to the checkpoint or in the
            temp directory).
        n_experts, expert_train_epochs, expert_lr, expert_batch: the buffer's size and recipe when it is
            built (plain SGD); ``expert_train_epochs`` defaults to ``max_start_epoch + expert_epochs``.
        expert_epochs: M, how many expert epochs the student must cover.
        syn_steps: N, synthetic SGD steps per iteration (memory grows with ``syn_steps x batch_syn``).
        max_start_epoch: start epochs are drawn from ``0 .. max_start_epoch - 1``.
        batch_syn: synthetic minibatch per step (``None``: the whole synthetic set).
        lr_syn_init: initial synthetic learning rate (learned, log-parametrised).
        lr_lr: learning rate of the (log) synthetic learning rate, SGD momentum 0.5.
        augment: DSA augmentation inside the unroll (and for expert training).
        dsa_strategy: ``auto`` or an explicit DSA strategy (``color_crop_cutout_scale_rotate``, ...).
        memory: ``full`` (exact gradient) or ``constant`` (first-order, memory flat in ``syn_steps``).
    """

    name = "mtt"
    summary = "trajectory matching: N synthetic steps from an expert checkpoint vs the expert M epochs later"
    needs_images = True

    def __init__(self, ipc: int = 10, *, buffer: str | os.PathLike | None = None, n_experts: int = 10,
                 expert_train_epochs: int | None = None, expert_lr: float = 0.01, expert_batch: int = 256,
                 expert_epochs: int = 2, syn_steps: int = 30, max_start_epoch: int = 20, batch_syn: int | None = None,
                 lr_syn_init: float = 0.01, lr_lr: float = 1e-2, augment: bool = False,
                 dsa_strategy: str = "auto", memory: str = "full",
                 lr_images: float = 100.0, iterations: int = 5000, **kwargs):
        super().__init__(ipc, lr_images=lr_images, iterations=iterations, **kwargs)
        self.buffer = buffer
        self.n_experts = n_experts
        self.expert_train_epochs = expert_train_epochs
        self.expert_lr = expert_lr
        self.expert_batch = expert_batch
        self.expert_epochs = expert_epochs
        self.syn_steps = syn_steps
        self.max_start_epoch = max_start_epoch
        self.batch_syn = batch_syn
        self.lr_syn_init = lr_syn_init
        self.lr_lr = lr_lr
        self.augment = augment
        self.dsa_strategy = dsa_strategy
        self.memory = memory

    def _resolved_params(self) -> dict:
        return super()._resolved_params() | {"buffer": None if self.buffer is None else str(self.buffer)}

    def _validate(self, dataset: Dataset) -> None:
        super()._validate(dataset)
        for nm in ("expert_epochs", "syn_steps", "max_start_epoch", "n_experts"):
            if int(getattr(self, nm)) < 1:
                raise ConfigError(f"mtt: {nm} must be >= 1, got {getattr(self, nm)}")
        if self.batch_syn is not None and self.batch_syn < 1:
            raise ConfigError(f"mtt: batch_syn must be >= 1 or None, got {self.batch_syn}")
        if self.memory not in ("full", "constant"):
            raise ConfigError(f"mtt: memory must be 'full' or 'constant', got {self.memory!r}")
        if self.lr_syn_init <= 0:
            raise ConfigError(f"mtt: lr_syn_init must be > 0, got {self.lr_syn_init}")
        if self.expert_train_epochs is not None and self.expert_train_epochs < self.max_start_epoch + self.expert_epochs:
            raise ConfigError(f"mtt: expert_train_epochs ({self.expert_train_epochs}) must be at least "
                              f"max_start_epoch + expert_epochs ({self.max_start_epoch + self.expert_epochs})")

    def _setup(self, ctx: Context) -> None:
        need = self.max_start_epoch + self.expert_epochs
        path = Path(self.buffer) if self.buffer else default_buffer_path(ctx.dataset, self.model,
                                                                          self._model_options(), self.checkpoint)
        buf = build_expert_buffer(ctx.dataset, path, n_experts=self.n_experts,
                                  epochs=self.expert_train_epochs or need, model=self.model,
                                  model_kwargs=self._model_options(), lr=self.expert_lr,
                                  batch_size=self.expert_batch, augment=self.augment,
                                  dsa_strategy=self.dsa_strategy, device=str(ctx.device),
                                  seed=0, progress=self.progress)
        if buf.epochs < need:
            raise ArtifactError(f"{path}: expert buffer has {buf.epochs} epochs; max_start_epoch + expert_epochs "
                                f"= {need} are needed")
        self._buffer = buf
        self._net = FlatNetwork(self.new_network(ctx, seed=0))
        self._aug = make_augmentation(self.dsa_strategy, ctx.input_shape) if self.augment else None
        log_lr = torch.tensor(math.log(self.lr_syn_init), device=ctx.device, requires_grad=True)
        ctx.state["log_syn_lr"] = log_lr
        ctx.state["opt_images"] = torch.optim.SGD([ctx.X_syn], lr=self.lr_images, momentum=0.5)
        ctx.state["opt_lr"] = torch.optim.SGD([log_lr], lr=self.lr_lr, momentum=0.5)

    def _batches(self, n: int, gen: torch.Generator) -> list[torch.Tensor]:
        """Minibatch indices for each synthetic step: reshuffled passes over the synthetic set."""
        b = min(self.batch_syn or n, n)
        out: list[torch.Tensor] = []
        perm = torch.randperm(n, generator=gen)
        pos = 0
        for _ in range(self.syn_steps):
            if pos + b > n:
                perm, pos = torch.randperm(n, generator=gen), 0
            out.append(perm[pos:pos + b])
            pos += b
        return out

    def _student_loss(self, theta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor, step_gen) -> torch.Tensor:
        if self._aug is not None:
            xb = self._aug(xb, step_gen)
        return nn.functional.cross_entropy(self._net(theta, xb), yb)

    def _step(self, ctx: Context, it: int) -> float:
        gen = self.iteration_generator(it)
        expert = int(torch.randint(self._buffer.n_experts, (1,), generator=gen))
        start = int(torch.randint(self.max_start_epoch, (1,), generator=gen))
        traj = self._buffer.trajectory(expert)
        theta0 = traj[start].to(ctx.device, torch.float32)
        target = traj[start + self.expert_epochs].to(ctx.device, torch.float32)
        del traj
        batches = [b.to(ctx.device) for b in self._batches(len(ctx.y_syn), gen)]
        step_gens = [self.iteration_generator(it, 1 + s) if self._aug is not None else None
                     for s in range(self.syn_steps)]
        log_lr = ctx.state["log_syn_lr"]
        opt_img, opt_lr = ctx.state["opt_images"], ctx.state["opt_lr"]
        opt_img.zero_grad(set_to_none=True)
        opt_lr.zero_grad(set_to_none=True)
        denom = (theta0 - target).pow(2).sum().clamp_min(1e-12)
        if self.memory == "full":
            lr = log_lr.exp()
            theta = theta0.clone().requires_grad_(True)
            for idx, g_s in zip(batches, step_gens):
                loss_s = self._student_loss(theta, ctx.X_syn[idx], ctx.y_syn[idx], g_s)
                grad = torch.autograd.grad(loss_s, theta, create_graph=True)[0]
                theta = theta - lr * grad
            loss = (theta - target).pow(2).sum() / denom
            loss.backward()
        else:
            loss = self._constant_memory_backward(ctx, theta0, target, denom, batches, step_gens, log_lr)
        opt_img.step()
        opt_lr.step()
        return float(loss.detach())

    def _constant_memory_backward(self, ctx, theta0, target, denom, batches, step_gens, log_lr) -> torch.Tensor:
        # theta_N = theta_0 - lr * sum_i g_i(theta_i, X); first order: d theta_i / d X is dropped.
        lr = log_lr.detach().exp()
        thetas = []
        theta = theta0
        for idx, g_s in zip(batches, step_gens):
            th = theta.detach().requires_grad_(True)
            loss_s = self._student_loss(th, ctx.X_syn.detach()[idx], ctx.y_syn[idx], _clone_gen(g_s))
            grad = torch.autograd.grad(loss_s, th)[0]
            thetas.append(th.detach())
            theta = th.detach() - lr * grad
        theta_n = theta.detach().requires_grad_(True)
        loss = (theta_n - target).pow(2).sum() / denom
        upstream = torch.autograd.grad(loss, theta_n)[0]
        for th, idx, g_s in zip(thetas, batches, step_gens):
            th = th.requires_grad_(True)
            loss_s = self._student_loss(th, ctx.X_syn[idx], ctx.y_syn[idx], g_s)
            grad = torch.autograd.grad(loss_s, th, create_graph=True)[0]
            (-(log_lr.exp() * grad) * upstream).sum().backward()
        return loss.detach()

    def _training_recipe(self, ctx: Context) -> dict:
        return {"lr": float(ctx.state["log_syn_lr"].detach().exp()),
                "augmentation": "dsa" if self.augment else None,
                "dsa_strategy": self._aug.strategy if self._aug is not None else None,
                "dsa": self._aug.to_dict() if self._aug is not None else None,
                "soft_labels": False, "epochs": 1000 if self.augment else 300,
                "expert_buffer": str(self._buffer.path)}


def _clone_gen(gen: torch.Generator | None) -> torch.Generator | None:
    """A copy of ``gen`` at its current state, so the same augmentation can be drawn twice."""
    if gen is None:
        return None
    g = torch.Generator(device=gen.device)
    g.set_state(gen.get_state())
    return g
