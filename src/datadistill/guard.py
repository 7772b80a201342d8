"""The guard rail: does a subset train a cheap proxy model better than random subsets of the same size?

Protocol of :func:`check_against_random`:

- A stratified validation split is drawn from the *training* rows (``validation_fraction``); rows that belong
  to the subset are removed from it, so it is held out of the subset and of every random subset.
- Per seed, a random subset with the subset's class counts is drawn from the remaining training rows; a proxy
  model (``logreg`` or ``mlp``, the evaluation recipe's optimiser) trains for the same fixed number of
  optimiser steps on the subset and on the random subset, both from the seed's initialisation.
- The verdict compares the mean validation accuracies: the subset is significantly *worse* (or *better*) when
  the difference is larger than the two standard deviations together (the convention of evaluation reports),
  and at least one validation row.

The test split is never touched. Proxy helpers (:func:`proxy_config`, :func:`proxy_accuracy`) are shared with
:mod:`datadistill.auto`.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field, replace

import numpy as np

from .data.dataset import Dataset
from .errors import ConfigError
from .report import mean_std

PROXY_MODELS = ("logreg", "mlp")
DEFAULT_STEPS = 500


def proxy_config(model: str, steps: int):
    """The evaluation recipe of ``model`` cut to a fixed budget of ``steps`` optimiser steps (no early stopping)."""
    from .evaluation import default_recipe

    return replace(default_recipe(model), max_steps=int(steps), min_steps=0, patience_steps=0, patience=0,
                   eval_every=0, epochs=1, max_epochs=1)


def proxy_accuracy(X_model: np.ndarray, y: np.ndarray, rows: np.ndarray, val_rows: np.ndarray, *, model: str,
                   model_shape: tuple[int, ...], n_classes: int, steps: int, seed: int, soft: np.ndarray | None = None,
                   temperature: float = 1.0, device=None) -> float:
    """Validation accuracy of a proxy trained on ``rows`` of the model-space inputs for ``steps`` steps.

    Args:
        X_model: all training samples in model space; ``y`` their labels.
        rows, val_rows: training rows to train on and to measure on.
        soft: (len(rows), K) soft targets at ``temperature`` (knowledge-distillation loss) instead of labels.
    """
    from . import training
    from .models import build_model

    rows = np.asarray(rows, dtype=np.int64)
    order = np.argsort(rows, kind="stable")  # ascending rows: a subset equal to the pool trains as the full data
    rows = rows[order]
    if soft is not None:
        soft = np.asarray(soft, dtype=np.float32)[order]
    cfg = proxy_config(model, steps)
    if soft is not None:
        cfg = replace(cfg, soft_temperature=float(temperature))
    net = build_model(model, model_shape, n_classes, seed=seed)
    result = training.train(net, X_model[rows], y[rows], cfg, soft_labels=soft, device=device, seed=seed)
    return training.accuracy(result.model, X_model[val_rows], y[val_rows])


def random_like(y: np.ndarray, subset: np.ndarray, candidates: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Random rows of ``candidates`` with the same class counts as ``subset`` (sorted)."""
    out = []
    for c, k in enumerate(np.bincount(y[subset], minlength=int(y.max()) + 1)):
        if k:
            out.append(rng.choice(candidates[y[candidates] == c], size=int(k), replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def compare(subset: list[float], random: list[float], n_val: int) -> tuple[float, float, str]:
    """(difference in accuracy, threshold, verdict): verdict ``worse``/``better`` beyond both stds together."""
    s_mean, s_std = mean_std(subset)
    r_mean, r_std = mean_std(random)
    diff = s_mean - r_mean
    threshold = max(s_std + r_std, 1.0 / max(n_val, 1))
    verdict = "worse" if diff < -threshold else "better" if diff > threshold else "no significant difference"
    return diff, threshold, verdict


@dataclass
class CheckResult:
    """The guard's verdict; accuracies are fractions of the validation rows (per seed and mean ± std)."""

    size: int
    model: str
    seeds: list[int]
    step_budget: int
    validation_size: int
    subset_accuracy: list[float]
    random_accuracy: list[float]
    subset_mean: float
    subset_std: float
    random_mean: float
    random_std: float
    difference: float
    threshold: float
    verdict: str  # worse | better | no significant difference
    seconds: float
    method: str | None = None
    protocol: str = field(default=(
        "proxy trained for a fixed number of optimiser steps on the subset and on random subsets with the same "
        "class counts (one per seed); accuracy on a stratified validation split of the training rows held out "
        "of both (subset rows removed from it); significant = difference larger than both stds together"))

    @property
    def worse(self) -> bool:
        return self.verdict == "worse"

    @property
    def better(self) -> bool:
        return self.verdict == "better"

    def to_dict(self) -> dict:
        return asdict(self)

    def message(self) -> str:
        """One line for a terminal: a warning when the subset is worse than random, else an info line."""
        what = f"the {self.method} subset" if self.method else "the subset"
        scores = (f"{what} scored {100 * self.subset_mean:.1f}% (± {100 * self.subset_std:.1f}) vs "
                  f"{100 * self.random_mean:.1f}% (± {100 * self.random_std:.1f}) for random subsets of the same "
                  f"size ({self.size}) on {self.validation_size} held-out training rows ({self.model} proxy, "
                  f"{len(self.seeds)} seeds)")
        if self.worse:
            return (f"warning: {scores}; consider the default coverage strategy, a larger size, another method, "
                    "or `datadistill auto`")
        if self.better:
            return f"check: {scores}: better than random"
        return f"check: {scores}: no significant difference from random"


def check_against_random(dataset: Dataset, subset_indices, *, model: str = "logreg", seeds: int = 3,
                         validation_fraction: float = 0.1, step_budget: int = DEFAULT_STEPS, random_state: int = 0,
                         method: str | None = None, device=None) -> CheckResult:
    """Train a cheap proxy on a subset and on random subsets of the same size; compare on held-out training rows.

    Args:
        dataset: the training set the subset was chosen from (its test split is not used).
        subset_indices: rows of ``dataset``'s training samples.
        model: the proxy, ``logreg`` or ``mlp``.
        seeds: proxy seeds (one random subset and one initialisation per seed).
        validation_fraction: share of the training rows drawn (stratified) for validation, before removing
            the subset's rows from it.
        step_budget: optimiser steps of every proxy training.
        random_state: seeds the validation split and the random subsets.
        method: the subset's method name, for the message.
        device: "auto" (CUDA when present), "cpu" or "cuda".
    """
    from . import training
    from .data.preprocess import Preprocessor

    if not isinstance(dataset, Dataset):
        raise ConfigError(f"check_against_random needs a datadistill Dataset, got {type(dataset).__name__}")
    if model not in PROXY_MODELS:
        raise ConfigError(f"unknown proxy model '{model}'; choose one of: {', '.join(PROXY_MODELS)}")
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 1:
        raise ConfigError(f"seeds must be a positive integer, got {seeds!r}")
    if isinstance(step_budget, bool) or not isinstance(step_budget, (int, np.integer)) or step_budget < 1:
        raise ConfigError(f"step_budget must be a positive integer, got {step_budget!r}")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    subset = np.unique(np.asarray(subset_indices, dtype=np.int64))
    if len(subset) == 0:
        raise ConfigError("the subset is empty")
    if subset.min() < 0 or subset.max() >= len(dataset):
        raise ConfigError(f"subset indices must be rows 0..{len(dataset) - 1} of the training set")
    if len(subset) != len(np.asarray(subset_indices).reshape(-1)):
        raise ConfigError("the subset holds a row twice")
    start = time.perf_counter()
    dev = str(training.resolve_device(device))
    _, val = training.validation_split(dataset.y, validation_fraction, random_state=random_state)
    val = np.setdiff1d(val, subset)
    if len(val) == 0:
        raise ConfigError("no validation rows are left outside the subset; the check needs training rows the "
                          "subset does not hold (a subset smaller than the training set, or a larger "
                          "validation_fraction)")
    candidates = np.setdiff1d(np.arange(len(dataset)), val)
    pre = Preprocessor.fit(dataset)
    X_model = pre.transform(dataset.X)
    seed_list = list(range(int(seeds)))
    sub_acc, rand_acc = [], []
    for s in seed_list:
        rng = np.random.default_rng([int(random_state), s])
        other = random_like(dataset.y, subset, candidates, rng)
        kw = {"model": model, "model_shape": pre.model_shape, "n_classes": dataset.n_classes,
              "steps": int(step_budget), "seed": s, "device": dev}
        sub_acc.append(proxy_accuracy(X_model, dataset.y, subset, val, **kw))
        rand_acc.append(proxy_accuracy(X_model, dataset.y, other, val, **kw))
    diff, threshold, verdict = compare(sub_acc, rand_acc, len(val))
    s_mean, s_std = mean_std(sub_acc)
    r_mean, r_std = mean_std(rand_acc)
    return CheckResult(size=len(subset), model=model, seeds=seed_list, step_budget=int(step_budget),
                       validation_size=len(val), subset_accuracy=sub_acc, random_accuracy=rand_acc,
                       subset_mean=s_mean, subset_std=s_std, random_mean=r_mean, random_std=r_std, difference=diff,
                       threshold=threshold, verdict=verdict, seconds=time.perf_counter() - start, method=method)
