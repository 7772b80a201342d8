"""Per-sample importance scores: one float per training sample, from a probe trained through training.py.

``score(dataset, name, ...)`` is the one-line form; :data:`SCORERS` maps names to :class:`Scorer` entries
that say which direction means "more informative".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import ConfigError
from ..training import predict_logits
from .forgetting import forgetting_events
from .gradient import el2n, linear_grad_norm, model_grad_norm, network_grad_norm
from .probe import DEFAULT_EPOCHS, _seed_list, model_inputs, probe_config, probe_logits, train_probe
from .uncertainty import entropy, least_confidence, margin, softmax


@dataclass(frozen=True)
class Scorer:
    """A registered score: ``fn(dataset, model, epochs, seeds, device, **kw) -> (scores (N,), logits (N, K))``.

    ``logits`` are the probes' logits on the training samples, averaged over seeds (selectors use them
    for label-noise filtering and soft labels).
    """

    name: str
    fn: Callable[..., tuple[np.ndarray, np.ndarray]]
    informative: str  # "highest" or "lowest": which end of the scale is most informative
    summary: str


SCORERS: dict[str, Scorer] = {}


def register_scorer(name: str, informative: str, summary: str):
    """Decorator: make a scoring function available to :func:`score` by ``name``."""
    def wrap(fn):
        SCORERS[name] = Scorer(name, fn, informative, summary)
        return fn
    return wrap


def _from_logits(dataset, model, epochs, seeds, device, per_probe, **kw) -> tuple[np.ndarray, np.ndarray]:
    logits = probe_logits(dataset, model=model, epochs=epochs, seeds=seeds, device=device, **kw)
    return np.mean([per_probe(z) for z in logits], axis=0), np.mean(logits, axis=0)


@register_scorer("entropy", "highest", "predictive entropy of the probe (uncertain samples score high)")
def _entropy(dataset, model, epochs, seeds, device, **kw):
    return _from_logits(dataset, model, epochs, seeds, device, lambda z: entropy(softmax(z)), **kw)


@register_scorer("margin", "lowest", "top-1 minus top-2 probability (samples near a boundary score low)")
def _margin(dataset, model, epochs, seeds, device, **kw):
    return _from_logits(dataset, model, epochs, seeds, device, lambda z: margin(softmax(z)), **kw)


@register_scorer("least-confidence", "highest", "1 - max probability of the probe")
def _least_confidence(dataset, model, epochs, seeds, device, **kw):
    return _from_logits(dataset, model, epochs, seeds, device, lambda z: least_confidence(softmax(z)), **kw)


@register_scorer("el2n", "highest", "EL2N: L2 norm of softmax - onehot (hard or mislabelled samples high)")
def _el2n(dataset, model, epochs, seeds, device, **kw):
    return _from_logits(dataset, model, epochs, seeds, device, lambda z: el2n(z, dataset.y), **kw)


@register_scorer("gradnorm", "highest", "norm of the per-sample loss gradient w.r.t. the probe's parameters")
def _gradnorm(dataset, model, epochs, seeds, device, *, last_layer: bool = False, chunk_size: int = 256, **kw):
    inputs, pre = model_inputs(dataset, kw.pop("preprocessor", None))
    norms, logits = [], []
    for s in _seed_list(seeds):
        net, _ = train_probe(dataset, model=model, epochs=epochs, seed=s, device=device, preprocessor=pre,
                             inputs=inputs, **kw)
        norms.append(model_grad_norm(net, inputs, dataset.y, last_layer=last_layer, chunk_size=chunk_size))
        logits.append(predict_logits(net, inputs))
    return np.mean(norms, axis=0), np.mean(logits, axis=0)


@register_scorer("forgetting", "highest", "forgetting events while the probe trains (never-learned = most)")
def _forgetting(dataset, model, epochs, seeds, device, **kw):
    runs = [forgetting_events(dataset, model=model, epochs=epochs, seed=s, device=device, return_logits=True, **kw)
            for s in _seed_list(seeds)]
    return np.mean([r[0] for r in runs], axis=0), np.mean([r[1] for r in runs], axis=0)


def score_with_logits(dataset: Dataset, name: str, *, model: str = "mlp", epochs: int = DEFAULT_EPOCHS,
                      seeds=(0,), device: str | torch.device | None = "auto", **kw
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Like :func:`score`, also returning the probes' mean logits (N, K) on the training samples."""
    if name not in SCORERS:
        raise ConfigError(f"unknown score '{name}'; choose one of: {', '.join(sorted(SCORERS))}")
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"score() needs a datadistill Dataset, got {type(dataset).__name__}")
    try:
        values, logits = SCORERS[name].fn(dataset, model, epochs, seeds, device, **kw)
    except TypeError as exc:
        raise ConfigError(f"score '{name}': {exc}") from None
    return np.asarray(values, dtype=np.float64), np.asarray(logits, dtype=np.float64)


def score(dataset: Dataset, name: str, *, model: str = "mlp", epochs: int = DEFAULT_EPOCHS, seeds=(0,),
          device: str | torch.device | None = "auto", **kw) -> np.ndarray:
    """Per-sample scores (N,) of ``dataset``'s training samples, averaged over one probe per seed.

    Args:
        dataset: the training set.
        name: a key of :data:`SCORERS` (entropy, margin, least-confidence, el2n, gradnorm, forgetting).
        model: the probe model (logreg, mlp, convnet, resnet18).
        epochs: probe epochs (raised on small data sets so training converges; see ``min_steps``).
        seeds: one probe per seed; scores are averaged.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        **kw: scorer options (gradnorm: ``last_layer``, ``chunk_size``) and probe recipe
            (``min_steps``, ``lr``, ``batch_size``, ``preprocessor``).
    """
    return score_with_logits(dataset, name, model=model, epochs=epochs, seeds=seeds, device=device, **kw)[0]


__all__ = ["SCORERS", "Scorer", "el2n", "entropy", "forgetting_events", "least_confidence", "linear_grad_norm",
           "margin", "model_grad_norm", "network_grad_norm", "probe_config", "register_scorer",
           "score", "score_with_logits", "softmax", "train_probe"]
