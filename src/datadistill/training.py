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
    callbacks: Sequence[Callable[[int, nn.Module], bool | None]] = (),
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
        callbacks: ``f(epoch, model)`` called after every epoch (model in train mode); returning True stops
            training. Used e.g. to record predictions between epochs without restarting the optimiser.
    """
    cfg = config or TrainConfig()
    dev = resolve_device(device)
    model.to(dev)
    Xt = as_tensor(X, dev)
    yt = torch.as_tensor(np.asarray(y), dtype=torch.long, device=dev)
    n = len(yt)
    if n == 0:
        raise ConfigError("cannot train on an empty set")
    wt = as_tensor(sample_weight, dev) if sample_weight is not None else None
    st = as_tensor(soft_labels, dev) if soft_labels is not None else None
    if validation is not None:
        Xv, yv = as_tensor(validation[0], dev), torch.as_tensor(np.asarray(validation[1]), device=dev)
    opt = _optimizer(model, cfg)
    epochs = cfg.planned_epochs(n)
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    history: list[dict] = []
    best_acc, best_epoch, best_step, best_state = -1.0, None, None, None
    keep_best = cfg.early_stopping and validation is not None
    bad_epochs = 0
    steps = 0
    stop_reason = "budget"
    bar = None
    if progress:
        from .progress import bar as progress_bar

        bar = progress_bar(epochs, desc=description, leave=False)
    start = time.perf_counter()
    validation_seconds = 0.0

    def validate(epoch: int) -> float:
        nonlocal validation_seconds, best_acc, best_epoch, best_step, best_state
        t_val = time.perf_counter()
        acc = accuracy(model, Xv, yv, device=dev)
        model.train()
        validation_seconds += time.perf_counter() - t_val
        improved = acc > best_acc
        if improved:
            best_acc, best_epoch, best_step = acc, epoch, steps
            if keep_best:
                best_state = copy.deepcopy(model.state_dict())
        return acc

    def out_of_patience() -> bool:
        return bool(cfg.patience_steps and best_step is not None and steps >= cfg.min_steps
                    and steps - best_step >= cfg.patience_steps)

    epoch = 0
    stop = False
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, epoch, epochs)
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        total = 0.0
        seen = 0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb = Xt[idx]
            if augment is not None:
                xb = augment(xb, gen)
            logits = model(xb)
            if st is not None:
                T = cfg.soft_temperature
                per = -(st[idx] * torch.log_softmax(logits / T, dim=1)).sum(dim=1) * (T * T)
            else:
                per = nn.functional.cross_entropy(logits, yt[idx], reduction="none",
                                                  label_smoothing=cfg.label_smoothing)
            loss = (per * wt[idx]).sum() / wt[idx].sum().clamp_min(1e-12) if wt is not None else per.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            seen += len(idx)
            total += float(loss.detach()) * len(idx)
            if validation is not None and cfg.eval_every and steps % cfg.eval_every == 0:
                validate(epoch)
                if out_of_patience():
                    stop, stop_reason = True, "patience"
                    break
            if cfg.max_steps and steps >= cfg.max_steps:
                stop = True
                break
        row = {"epoch": epoch, "loss": total / max(1, seen), "steps": steps}
        if validation is not None and not cfg.eval_every:
            before = best_acc
            row["val_accuracy"] = validate(epoch)
            bad_epochs = 0 if best_acc > before else bad_epochs + 1
            if cfg.patience and bad_epochs >= cfg.patience:
                stop, stop_reason = True, "patience"
            elif out_of_patience():
                stop, stop_reason = True, "patience"
        elif validation is not None:
            row["val_accuracy"] = best_acc if best_acc >= 0 else None  # best so far (checked every eval_every steps)
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if not stop and any(cb(epoch, model) for cb in callbacks):
            stop, stop_reason = True, "callback"
        if stop:
            break
    if validation is not None and cfg.eval_every and steps % cfg.eval_every:
        validate(epoch)  # the last steps since the previous check
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start - validation_seconds
    if bar is not None:
        bar.close()
    if keep_best and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model=model, seconds=seconds, epochs=epoch + 1, steps=steps, history=history,
                       best_epoch=best_epoch, validation_seconds=validation_seconds, best_step=best_step,
                       stop_reason=stop_reason)


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
