"""Forgetting events (Toneva et al., "An Empirical Study of Example Forgetting during Deep Neural Network
Learning", ICLR 2019): how often a sample goes from correctly to incorrectly classified between epochs.

Higher = more informative. Samples never learned during training count as the most forgettable: they get
``epochs + 1``, more than any sample can reach (at most ``epochs // 2`` events), as in the paper.
"""

from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import Dataset
from ..data.preprocess import Preprocessor
from ..models import build_model
from ..training import predict_logits, resolve_device, train
from .probe import DEFAULT_EPOCHS, DEFAULT_MIN_STEPS, model_inputs, probe_config


def forgetting_events(dataset: Dataset, *, model: str = "mlp", epochs: int = DEFAULT_EPOCHS, seed: int = 0,
                      device: str | torch.device | None = "auto", preprocessor: Preprocessor | None = None,
                      min_steps: int = DEFAULT_MIN_STEPS, lr: float | None = None, batch_size: int = 256,
                      return_logits: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Count forgetting events per training sample while a probe trains (predictions after every epoch).

    Args:
        dataset: the training set.
        model: probe model name.
        epochs: epochs on large data (raised on small data to reach ``min_steps`` steps, as for any probe).
        seed: the probe's seed.
        device: "auto", "cpu" or "cuda".
        preprocessor, min_steps, lr, batch_size: as in :func:`datadistill.scores.probe.train_probe`.
        return_logits: also return the trained probe's logits on the training samples.
    """
    inputs, pre = model_inputs(dataset, preprocessor)
    dev = resolve_device(device)
    cfg = probe_config(model, epochs, min_steps=min_steps, lr=lr, batch_size=batch_size)
    net = build_model(model, pre.model_shape, dataset.n_classes, seed=seed)
    y = dataset.y
    prev_correct = np.zeros(len(y), dtype=bool)
    ever_correct = np.zeros(len(y), dtype=bool)
    events = np.zeros(len(y), dtype=np.float64)
    last_logits = None

    def after_epoch(epoch: int, net: torch.nn.Module) -> None:
        # one training run, one optimiser: predictions are taken between epochs by a callback
        nonlocal prev_correct, last_logits
        last_logits = predict_logits(net, inputs)
        correct = last_logits.argmax(axis=1) == y
        events[:] += prev_correct & ~correct
        ever_correct[:] |= correct
        prev_correct = correct

    result = train(net, inputs, y, cfg, device=dev, seed=seed, callbacks=[after_epoch])
    events[~ever_correct] = result.epochs + 1
    return (events, last_logits) if return_logits else events
