"""THE training loop: probes, evaluation and trajectory experts all train through :func:`train`."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from .errors import ConfigError
from .progress import bar as progress_bar

EpochCallback = Callable[[int, nn.Module], bool | None]   # f(epoch, model) -> stop?
BatchCallback = Callable[[int, float], bool | None]       # f(step, loss) -> stop?


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/``"auto"`` -> CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device '{device}' ({exc})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available")
    return dev


@dataclass
class TrainConfig:
    """One training recipe.

    Epoch budget: ``epochs`` is raised so that at least ``min_steps`` optimiser steps run (small sets), but
    never above ``max_epochs``. Step budget (the fair rule evaluation uses): with ``max_steps`` > 0 training
    runs at most that many optimiser steps whatever the set's size; with a validation set and
    ``patience_steps`` > 0 it stops once validation accuracy has not improved for that many steps (checked
    every ``eval_every`` steps; 0 = once per epoch) and at least ``min_steps`` have run, then restores the
    best weights. ``schedule``: none | step (x0.1 at half) | cosine. ``soft_temperature``: the temperature
    soft targets were made at; student logits are divided by it and the loss scaled by T² (Hinton et al.).
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"
    momentum: float = 0.9
    weight_decay: float = 0.0
    schedule: str = "none"
    min_steps: int = 0
    max_epochs: int = 1000
    patience: int = 0
    label_smoothing: float = 0.0
    max_steps: int = 0
    patience_steps: int = 0
    eval_every: int = 0
    soft_temperature: float = 1.0

    def planned_epochs(self, n: int) -> int:
        steps_per_epoch = max(1, math.ceil(n / self.batch_size))
        if self.max_steps:
            return int(math.ceil(self.max_steps / steps_per_epoch))
        need = math.ceil(self.min_steps / steps_per_epoch) if self.min_steps else 0
        return int(min(max(self.epochs, need), max(self.max_epochs, self.epochs)))

    @property
    def early_stopping(self) -> bool:
        return bool(self.patience or self.patience_steps)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class TrainResult:
    model: nn.Module
    seconds: float                # optimisation only (validation passes excluded)
    epochs: int
    steps: int
    history: list[dict] = field(default_factory=list)
    best_epoch: int | None = None
    validation_seconds: float = 0.0
    best_step: int | None = None
    stop_reason: str = "budget"   # budget (epochs or max_steps ran out) | patience | callback


def as_tensor(X, device: torch.device, dtype=torch.float32) -> torch.Tensor:
    if isinstance(X, torch.Tensor):
        return X.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(X), dtype=dtype, device=device)


def _optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    raise ConfigError(f"unknown optimizer '{cfg.optimizer}' (adam, sgd)")


def _lr_at(cfg: TrainConfig, epoch: int, epochs: int) -> float:
    if cfg.schedule == "step":
        return cfg.lr * (0.1 if epoch >= epochs // 2 else 1.0)
    if cfg.schedule == "cosine":
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * epoch / epochs))
    if cfg.schedule == "none":
        return cfg.lr
    raise ConfigError(f"unknown schedule '{cfg.schedule}' (none, step, cosine)")


@dataclass
class _DeviceData:
    """The training inputs, moved to the device once: features, labels, loss weights, soft targets, validation."""

    X: torch.Tensor
    y: torch.Tensor
    weight: torch.Tensor | None
    soft: torch.Tensor | None
    X_val: torch.Tensor | None
    y_val: torch.Tensor | None

    @classmethod
    def build(cls, X, y, sample_weight, soft_labels, validation: tuple | None, dev: torch.device) -> _DeviceData:
        Xt = as_tensor(X, dev)
        yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=dev)
        if len(yt) == 0:
            raise ConfigError("cannot train on an empty set")
        wt = as_tensor(sample_weight, dev) if sample_weight is not None else None
        st = as_tensor(soft_labels, dev) if soft_labels is not None else None
        Xv = yv = None
        if validation is not None:
            Xv, yv = as_tensor(validation[0], dev), torch.as_tensor(np.asarray(validation[1]), device=dev)
        return cls(Xt, yt, wt, st, Xv, yv)

    @property
    def n(self) -> int:
        return len(self.y)

    @property
    def has_validation(self) -> bool:
        return self.X_val is not None


def _batch_loss(model: nn.Module, xb: torch.Tensor, idx: torch.Tensor, data: _DeviceData,
                cfg: TrainConfig) -> torch.Tensor:
    """Mean (or sample-weighted) loss of one batch: cross-entropy on labels, or on soft targets at a temperature."""
    logits = model(xb)
    if data.soft is not None:
        T = cfg.soft_temperature
        per = -(data.soft[idx] * torch.log_softmax(logits / T, dim=1)).sum(dim=1) * (T * T)
    else:
        per = nn.functional.cross_entropy(logits, data.y[idx], reduction="none", label_smoothing=cfg.label_smoothing)
    if data.weight is None:
        return per.mean()
    w = data.weight[idx]
    return (per * w).sum() / w.sum().clamp_min(1e-12)


class _TrainingRun:
    """The state of one :func:`train` call: optimiser, step count, best validation so far, and why it stopped.

    ``stop_reason`` stays None while training goes on; the step, the epoch's end or a callback sets it.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, data: _DeviceData, dev: torch.device,
                 augment, batch_callbacks: Sequence[BatchCallback]):
        self.model, self.cfg, self.data, self.dev = model, cfg, data, dev
        self.augment = augment
        self.batch_callbacks = batch_callbacks
        self.opt = _optimizer(model, cfg)
        self.keep_best = cfg.early_stopping and data.has_validation
        self.steps = 0
        self.best_acc, self.best_epoch, self.best_step, self.best_state = -1.0, None, None, None
        self.bad_epochs = 0
        self.validation_seconds = 0.0
        self.stop_reason: str | None = None

    def validate(self, epoch: int) -> float:
        """Validation accuracy now (its time kept apart); remembers the best weights when they improve."""
        t_val = time.perf_counter()
        acc = accuracy(self.model, self.data.X_val, self.data.y_val, device=self.dev)
        self.model.train()
        self.validation_seconds += time.perf_counter() - t_val
        if acc > self.best_acc:
            self.best_acc, self.best_epoch, self.best_step = acc, epoch, self.steps
            if self.keep_best:
                self.best_state = copy.deepcopy(self.model.state_dict())
        return acc

    def out_of_patience(self) -> bool:
        cfg = self.cfg
        return bool(cfg.patience_steps and self.best_step is not None and self.steps >= cfg.min_steps
                    and self.steps - self.best_step >= cfg.patience_steps)

    def run_epoch(self, epoch: int, epochs: int, gen: torch.Generator) -> dict:
        """One shuffled pass over the data (cut short when a step stops training); returns its history row."""
        for g in self.opt.param_groups:
            g["lr"] = _lr_at(self.cfg, epoch, epochs)
        self.model.train()
        n, batch_size = self.data.n, self.cfg.batch_size
        perm = torch.randperm(n, generator=gen).to(self.dev)
        total, seen = 0.0, 0
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            loss = self._step(idx, gen)
            seen += len(idx)
            total += loss * len(idx)
            if self._stops_after_step(epoch, loss):
                break
        return {"epoch": epoch, "loss": total / max(1, seen), "steps": self.steps}

    def _step(self, idx: torch.Tensor, gen: torch.Generator) -> float:
        xb = self.data.X[idx]
        if self.augment is not None:
            xb = self.augment(xb, gen)
        loss = _batch_loss(self.model, xb, idx, self.data, self.cfg)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.steps += 1
        return float(loss.detach())

    def _stops_after_step(self, epoch: int, loss: float) -> bool:
        cfg = self.cfg
        if self.data.has_validation and cfg.eval_every and self.steps % cfg.eval_every == 0:
            self.validate(epoch)
            if self.out_of_patience():
                self.stop_reason = "patience"
                return True
        if any(cb(self.steps, loss) for cb in self.batch_callbacks):
            self.stop_reason = "callback"
            return True
        if cfg.max_steps and self.steps >= cfg.max_steps:
            self.stop_reason = "budget"
            return True
        return False

    def end_epoch(self, epoch: int, row: dict) -> None:
        """Epoch-end validation (adds ``val_accuracy`` to ``row``) and the patience rules."""
        cfg = self.cfg
        if not self.data.has_validation:
            return
        if cfg.eval_every:
            row["val_accuracy"] = self.best_acc if self.best_acc >= 0 else None  # best so far (checked every eval_every steps)
            return
        before = self.best_acc
        row["val_accuracy"] = self.validate(epoch)
        self.bad_epochs = 0 if self.best_acc > before else self.bad_epochs + 1
        if (cfg.patience and self.bad_epochs >= cfg.patience) or self.out_of_patience():
            self.stop_reason = "patience"

    def finish(self, epoch: int) -> None:
        """The last validation (steps since the previous check), then the best weights back where kept."""
        if self.data.has_validation and self.cfg.eval_every and self.steps % self.cfg.eval_every:
            self.validate(epoch)
        if self.dev.type == "cuda":
            torch.cuda.synchronize()


def train(
    model: nn.Module,
    X,
    y,
    config: TrainConfig | None = None,
    *,
    sample_weight=None,
    soft_labels=None,
    validation: tuple | None = None,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    device: str | torch.device | None = None,
    seed: int = 0,
    progress: bool = False,
    description: str = "train",
    callbacks: Sequence[EpochCallback] = (),
    batch_callbacks: Sequence[BatchCallback] = (),
) -> TrainResult:
    """Train ``model`` in place on model-space inputs ``X`` (N x ...) and int labels ``y``.

    Args:
        config: the recipe (optimiser, epochs, schedule, early stopping).
        sample_weight: per-sample loss weights (e.g. how many originals a kept sample stands for).
        soft_labels: (N, K) target distributions used instead of ``y`` when given.
        validation: ``(X_val, y_val)`` drawn from training data; with ``config.patience`` > 0 the
            weights of the best validation epoch are restored (early stopping).
        augment: ``f(batch, generator) -> batch`` applied to every training batch.
        seed: fixes batch order and augmentation.
        callbacks: ``f(epoch, model)`` called after every epoch (model in train mode) unless that epoch
            already ended training (patience, ``max_steps``); returning True stops training. Used to record
            predictions or snapshot parameters between epochs without restarting the optimiser.
        batch_callbacks: ``f(step, loss)`` called after every optimiser step (``step`` counts from 1,
            ``loss`` is the batch's loss) unless that step's validation ended training; returning True
            stops training, e.g. on a clock.
    """
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    model.to(dev)
    data = _DeviceData.build(X, y, sample_weight, soft_labels, validation, dev)
    run = _TrainingRun(model, cfg, data, dev, augment, batch_callbacks)
    epochs = cfg.planned_epochs(data.n)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    history: list[dict] = []
    bar = progress_bar(epochs, desc=description, enabled=progress, leave=False)
    start = time.perf_counter()
    epoch = 0
    for epoch in range(epochs):
        row = run.run_epoch(epoch, epochs, gen)
        run.end_epoch(epoch, row)
        history.append(row)
        bar.update(1)
        bar.set_postfix(loss=f"{row['loss']:.4f}")
        if run.stop_reason is None and any(cb(epoch, model) for cb in callbacks):
            run.stop_reason = "callback"
        if run.stop_reason is not None:
            break
    run.finish(epoch)
    seconds = time.perf_counter() - start - run.validation_seconds
    bar.close()
    if run.keep_best and run.best_state is not None:
        model.load_state_dict(run.best_state)
    model.eval()
    return TrainResult(model=model, seconds=seconds, epochs=epoch + 1, steps=run.steps, history=history,
                       best_epoch=run.best_epoch, validation_seconds=run.validation_seconds,
                       best_step=run.best_step, stop_reason=run.stop_reason or "budget")


@torch.no_grad()
def predict_logits(model: nn.Module, X, *, batch_size: int = 2048, device=None) -> np.ndarray:
    """Logits for model-space inputs, in batches, in eval mode."""
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = []
    for i in range(0, len(X), batch_size):
        out.append(model(as_tensor(X[i:i + batch_size], dev)).float().cpu())
    return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)


def predict_proba(model: nn.Module, X, **kw) -> np.ndarray:
    logits = torch.as_tensor(predict_logits(model, X, **kw))
    return torch.softmax(logits, dim=1).numpy()


def accuracy(model: nn.Module, X, y, **kw) -> float:
    """Share of correctly classified samples."""
    logits = predict_logits(model, X, **kw)
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)
    return float((logits.argmax(1) == y).mean())


@torch.no_grad()
def embed(model: nn.Module, X, *, batch_size: int = 2048, device=None) -> np.ndarray:
    """Penultimate-layer features (``model.features``) for model-space inputs."""
    dev = resolve_device(device) if device is not None else next(model.parameters()).device
    model.eval()
    out = [model.features(as_tensor(X[i:i + batch_size], dev)).float().cpu() for i in range(0, len(X), batch_size)]
    return torch.cat(out).numpy()


def validation_split(y: np.ndarray, fraction: float, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Stratified (train_idx, val_idx) over training labels ``y``; every class keeps a training sample."""
    rng = np.random.default_rng(random_state)
    tr, va = [], []
    for c in np.unique(y):
        idx = rng.permutation(np.flatnonzero(y == c))
        k = int(round(fraction * len(idx)))
        k = min(k, len(idx) - 1)
        va.append(idx[:k])
        tr.append(idx[k:])
    return np.sort(np.concatenate(tr)), np.sort(np.concatenate(va))
