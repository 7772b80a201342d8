"""THE training loop: probes, evaluation and trajectory experts all train through :func:`train`."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
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
    """One training recipe. ``epochs`` is raised so that at least ``min_steps`` optimiser steps run
    (small sets), but never above ``max_epochs``; ``schedule``: none | step (x0.1 at half) | cosine."""

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

    def planned_epochs(self, n: int) -> int:
        steps_per_epoch = max(1, math.ceil(n / self.batch_size))
        need = math.ceil(self.min_steps / steps_per_epoch) if self.min_steps else 0
        return int(min(max(self.epochs, need), max(self.max_epochs, self.epochs)))

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
    best = (-1.0, None, None)
    bad_epochs = 0
    steps = 0
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=epochs, desc=description, leave=False)
    start = time.perf_counter()
    validation_seconds = 0.0
    epoch = 0
    for epoch in range(epochs):
        for g in opt.param_groups:
            g["lr"] = _lr_at(cfg, epoch, epochs)
        model.train()
        perm = torch.randperm(n, generator=gen).to(dev)
        total = 0.0
        for i in range(0, n, cfg.batch_size):
            idx = perm[i:i + cfg.batch_size]
            xb = Xt[idx]
            if augment is not None:
                xb = augment(xb, gen)
            logits = model(xb)
            if st is not None:
                per = -(st[idx] * torch.log_softmax(logits, dim=1)).sum(dim=1)
            else:
                per = nn.functional.cross_entropy(logits, yt[idx], reduction="none",
                                                  label_smoothing=cfg.label_smoothing)
            loss = (per * wt[idx]).sum() / wt[idx].sum().clamp_min(1e-12) if wt is not None else per.mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
            total += float(loss.detach()) * len(idx)
        row = {"epoch": epoch, "loss": total / n}
        if validation is not None:
            t_val = time.perf_counter()
            acc = accuracy(model, Xv, yv, device=dev)
            validation_seconds += time.perf_counter() - t_val
            row["val_accuracy"] = acc
            if acc > best[0]:
                best = (acc, epoch, copy.deepcopy(model.state_dict()) if cfg.patience else None)
                bad_epochs = 0
            else:
                bad_epochs += 1
        history.append(row)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if cfg.patience and validation is not None and bad_epochs >= cfg.patience:
            break
    if dev.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start - validation_seconds
    if bar is not None:
        bar.close()
    if cfg.patience and best[2] is not None:
        model.load_state_dict(best[2])
    model.eval()
    return TrainResult(model=model, seconds=seconds, epochs=epoch + 1, steps=steps, history=history,
                       best_epoch=best[1], validation_seconds=validation_seconds)


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
