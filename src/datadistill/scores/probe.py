"""Probe models: a small classifier trained through :func:`datadistill.training.train` to score samples."""

from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.preprocess import Preprocessor
from ..errors import ConfigError
from ..models import build_model
from ..training import TrainConfig, predict_logits, resolve_device, train

DEFAULT_EPOCHS = 5
DEFAULT_MIN_STEPS = 1000


def probe_config(model: str = "mlp", epochs: int = DEFAULT_EPOCHS, *, min_steps: int = DEFAULT_MIN_STEPS,
                 lr: float | None = None, batch_size: int = 256) -> TrainConfig:
    """The probe's training recipe: Adam; ``min_steps`` makes small data sets train to convergence.

    Args:
        model: the probe's model name; logistic regression gets a larger default step (lr 1e-2).
        epochs: epochs on large data (raised on small data so at least ``min_steps`` steps run).
        min_steps: lower bound on optimiser steps.
        lr: learning rate (default 1e-2 for logreg, 1e-3 otherwise).
        batch_size: mini-batch size.
    """
    if lr is None:
        lr = 1e-2 if model == "logreg" else 1e-3
    return TrainConfig(epochs=int(epochs), batch_size=int(batch_size), lr=float(lr), optimizer="adam",
                       min_steps=int(min_steps), max_epochs=max(int(epochs), 2000))


def model_inputs(dataset: Dataset, preprocessor: Preprocessor | None = None) -> tuple[np.ndarray, Preprocessor]:
    """The dataset's training samples in model space (standardised float32) and the preprocessor used."""
    pre = preprocessor or Preprocessor.fit(dataset)
    return pre.transform(dataset.X), pre


def train_probe(dataset: Dataset, *, model: str = "mlp", epochs: int = DEFAULT_EPOCHS, seed: int = 0,
                device: str | torch.device | None = "auto", preprocessor: Preprocessor | None = None,
                min_steps: int = DEFAULT_MIN_STEPS, lr: float | None = None, batch_size: int = 256,
                inputs: np.ndarray | None = None) -> tuple[torch.nn.Module, Preprocessor]:
    """Train a probe classifier on all of ``dataset``'s training samples; returns (model, preprocessor).

    Args:
        model: model-zoo name (logreg, mlp, convnet, resnet18).
        epochs: training epochs (raised on small data to reach ``min_steps`` optimiser steps).
        seed: initialisation and batch-order seed.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        preprocessor: a fitted Preprocessor to reuse (default: fitted on ``dataset``).
        min_steps, lr, batch_size: recipe details, see :func:`probe_config`.
        inputs: the model-space inputs when the caller already has them (must match ``preprocessor``).
    """
    if inputs is None:
        inputs, preprocessor = model_inputs(dataset, preprocessor)
    elif preprocessor is None:
        raise ConfigError("train_probe: give the preprocessor that produced `inputs`")
    dev = resolve_device(device)
    net = build_model(model, preprocessor.model_shape, dataset.n_classes, seed=seed)
    cfg = probe_config(model, epochs, min_steps=min_steps, lr=lr, batch_size=batch_size)
    train(net, inputs, dataset.y, cfg, device=dev, seed=seed)
    return net, preprocessor


def probe_logits(dataset: Dataset, *, model: str = "mlp", epochs: int = DEFAULT_EPOCHS, seeds=(0,),
                 device: str | torch.device | None = "auto", **probe_kw) -> list[np.ndarray]:
    """Logits (N, K) of one probe per seed, each trained on ``dataset`` and applied to its training samples."""
    inputs, pre = model_inputs(dataset, probe_kw.pop("preprocessor", None))
    out = []
    for s in _seed_list(seeds):
        net, _ = train_probe(dataset, model=model, epochs=epochs, seed=s, device=device, preprocessor=pre,
                             inputs=inputs, **probe_kw)
        out.append(predict_logits(net, inputs))
    return out


def _seed_list(seeds) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        return [int(seeds)]
    seeds = [int(s) for s in seeds]
    if not seeds:
        raise ConfigError("seeds must name at least one probe seed")
    return seeds
