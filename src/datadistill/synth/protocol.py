"""The DC evaluation protocol (benchmark B2): train fresh networks on a small set, test on real data.

Recipe (Zhao et al. 2021, used by DC, DSA, DM, MTT, ...): SGD momentum 0.9, weight decay 5e-4, learning
rate 0.01 (or the distiller's learned one) cut x0.1 at half of training, batch 256, 1000 epochs with DSA
augmentation (300 without), the accuracy of the final epoch, mean ± std over at least 5 models.

The distilled set is evaluated in the distiller's own model space: the artifact carries the preprocessor,
the learning rate, the augmentation and soft labels under ``meta["training"]``, so evaluating a saved
artifact in a fresh process reproduces the number measured right after distillation.
"""

from __future__ import annotations

import hashlib
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..data.artifact import DistilledSet
from ..data.dataset import Dataset
from ..data.preprocess import Preprocessor
from ..errors import ConfigError, DataError
from ..models import MODELS, build_model, check_model_for
from ..training import TrainConfig, accuracy, resolve_device, train
from .augment import DSA, strategy_for

PROTOCOL = "dc"


def check_protocol_options(n_models=5, epochs=None, lr=None, batch_size=256, architectures=None,
                           **others) -> None:
    """Refuse protocol options no data set could make valid (before anything trains); see evaluate_protocol."""
    import inspect

    known = set(inspect.signature(evaluate_protocol).parameters) - {"dataset", "distilled"}
    unknown = sorted(set(others) - known)
    if unknown:
        raise ConfigError(f"unknown protocol option{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"known: {', '.join(sorted(known))}")

    def whole(name: str, value, flag: str) -> None:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name}{flag} must be a positive integer, got {value!r}")

    whole("n_models", n_models, " (--eval-models)")
    if epochs is not None:
        whole("epochs", epochs, " (--eval-epochs)")
    whole("batch_size", batch_size, "")
    if lr is not None and (isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr)
                           or lr <= 0):
        raise ConfigError(f"lr must be a positive finite number, got {lr!r}")
    for a in architectures or ():
        if a not in MODELS:
            raise ConfigError(f"unknown architecture '{a}'; choose from {', '.join(MODELS)}")


def random_real_subset(dataset: Dataset, ipc: int, seed: int = 0) -> DistilledSet:
    """``ipc`` real training samples per class drawn uniformly at random (the "random real" baseline).

    Args:
        dataset: the source data set.
        ipc: samples per class; at most the smallest class's size.
        seed: seed of the draw.
    """
    counts = dataset.class_counts()
    if int(ipc) != ipc or ipc < 1:
        raise ConfigError(f"ipc must be a positive integer, got {ipc}")
    if ipc > counts.min():
        c = int(np.argmin(counts))
        raise DataError(f"ipc {ipc} is larger than the smallest class ('{dataset.classes[c]}' has {counts[c]} "
                        f"samples); use --ipc {counts.min()} or less")
    rng = np.random.default_rng(seed)
    idx = np.concatenate([rng.choice(dataset.class_indices(c), size=ipc, replace=False)
                          for c in range(dataset.n_classes)])
    meta = {"kind": "selection", "method": "random", "ipc": int(ipc), "seed": seed, "source": dataset.name,
            "source_fingerprint": dataset.fingerprint, "source_samples": len(dataset)}
    return DistilledSet(X=dataset.X[idx], y=dataset.y[idx], classes=dataset.classes, indices=idx, meta=meta)


def model_seed(seed: int, index: int, architecture: str) -> int:
    """The seed of evaluation model ``index``: depends only on (seed, index, architecture)."""
    h = hashlib.sha256(f"eval:{seed}:{index}:{architecture}".encode()).digest()
    return int.from_bytes(h[:4], "little")


def _recipe(distilled: DistilledSet) -> dict:
    training = distilled.meta.get("training")
    return dict(training) if isinstance(training, dict) else {}


def _preprocessor(dataset: Dataset, recipe: dict) -> Preprocessor:
    if recipe.get("preprocessor"):
        pre = Preprocessor.from_dict(recipe["preprocessor"])
        if tuple(pre.sample_shape) != dataset.sample_shape:
            raise DataError(f"the distilled set was made for samples of shape {tuple(pre.sample_shape)} but "
                            f"{dataset.name} has {dataset.sample_shape}; evaluate it on the data it came from")
        return pre
    # selection artifacts and random subsets: the standardisation a distiller would fit on this data
    return Preprocessor.fit(dataset)


def _augmentation(augmentation: str, recipe: dict, input_shape: tuple[int, ...]) -> DSA | None:
    if augmentation == "auto":
        augmentation = recipe.get("augmentation") or "none"
    if augmentation in ("none", None):
        return None
    if augmentation != "dsa":
        raise ConfigError(f"unknown augmentation '{augmentation}' (auto, dsa, none)")
    if len(input_shape) != 3:
        raise ConfigError("DSA augmentation needs image data; use augmentation='none' for tabular data")
    if recipe.get("dsa"):
        return DSA.from_dict(recipe["dsa"], siamese=False)
    return DSA(recipe.get("dsa_strategy") or strategy_for(input_shape), siamese=False)


def protocol_architectures(distilled: DistilledSet | None, image: bool,
                           architectures: Sequence[str] | None = None) -> tuple[str, ...]:
    """The models the protocol trains on a set: ``architectures``, else the one it was distilled with.

    A set without a recipe (a selection, a random draw; ``distilled`` None for one not made yet) gets
    ``convnet`` on images and ``mlp`` on tabular data.
    """
    if architectures:
        return tuple(architectures)
    own = _recipe(distilled).get("model") if distilled is not None else None
    return (own or ("convnet" if image else "mlp"),)


@dataclass(frozen=True)
class _Plan:
    """What every model trained on one set shares: data in model space, recipe, augmentation, architectures."""

    X: np.ndarray
    y: np.ndarray
    X_test: np.ndarray
    soft: np.ndarray | None
    input_shape: tuple[int, ...]
    augment: DSA | None
    config: TrainConfig
    architectures: tuple[str, ...]
    own_model: str
    recipe: dict
    ipc: int | None


def _check_inputs(dataset: Dataset, distilled: DistilledSet, check_source: bool) -> None:
    fp = distilled.source_fingerprint
    if check_source and fp and fp != dataset.fingerprint:
        raise DataError(f"the distilled set was made from other data (fingerprint {fp[:12]}, this data "
                        f"{dataset.fingerprint[:12]}); evaluate it on the data it came from")
    if tuple(np.asarray(distilled.X).shape[1:]) != dataset.sample_shape:
        raise DataError(f"distilled samples have shape {tuple(np.asarray(distilled.X).shape[1:])} but "
                        f"{dataset.name} has {dataset.sample_shape}")


def _plan(dataset: Dataset, distilled: DistilledSet, *, architectures, epochs, lr, batch_size,
          augmentation) -> _Plan:
    """The protocol's recipe for this set: the artifact's own where it records one, the DC defaults otherwise."""
    recipe = _recipe(distilled)
    pre = _preprocessor(dataset, recipe)
    input_shape = pre.model_shape
    aug = _augmentation(augmentation, recipe, input_shape)
    n_epochs = int(epochs) if epochs is not None else (1000 if aug is not None else 300)
    rate = float(lr) if lr is not None else float(recipe.get("lr") or 0.01)
    own_model = protocol_architectures(distilled, len(input_shape) == 3)[0]
    archs = protocol_architectures(distilled, len(input_shape) == 3, architectures)
    for a in archs:
        check_model_for(a, images=len(input_shape) == 3, data_name=dataset.name, shape=input_shape,
                        what="architecture")
    y = np.asarray(distilled.y, dtype=np.int64)
    ipc = distilled.meta.get("ipc")
    if ipc is None:
        counts = np.bincount(y, minlength=len(distilled.classes))
        ipc = int(counts[0]) if np.all(counts == counts[0]) else None
    config = TrainConfig(epochs=n_epochs, batch_size=batch_size, lr=rate, optimizer="sgd", momentum=0.9,
                         weight_decay=5e-4, schedule="step", max_epochs=n_epochs)
    soft = distilled.soft_labels if recipe.get("soft_labels", distilled.soft_labels is not None) else None
    return _Plan(X=pre.transform(np.asarray(distilled.X)), y=y, X_test=pre.transform(dataset.test.X), soft=soft,
                 input_shape=input_shape, augment=aug, config=config, architectures=archs, own_model=own_model,
                 recipe=recipe, ipc=ipc)


def evaluate_protocol(
    dataset: Dataset,
    distilled: DistilledSet,
    *,
    n_models: int = 5,
    architectures: Sequence[str] | None = None,
    epochs: int | None = None,
    lr: float | None = None,
    batch_size: int = 256,
    augmentation: str = "auto",
    model_kwargs: dict | None = None,
    device: str | None = "auto",
    seed: int = 0,
    check_source: bool = True,
    progress: bool = False,
) -> list[dict]:
    """Train ``n_models`` fresh networks per architecture on ``distilled`` and test each on ``dataset.test``.

    Args:
        dataset: the source data set (its test split is the test set).
        distilled: a synthetic artifact, a selection artifact or :func:`random_real_subset`'s output
            (selection weights are not applied: the protocol trains on the samples as they are).
        n_models: fresh models per architecture (the protocol asks for at least 5).
        architectures: model names; ``None``: the model the set was distilled with (``convnet`` for
            images without a recipe, ``mlp`` for tabular data). Cross-architecture: ``("convnet", "mlp",
            "resnet18")``.
        epochs: training epochs; ``None``: 1000 with DSA augmentation, 300 without.
        lr: initial learning rate; ``None``: the artifact's (learned or recommended) rate, else 0.01.
        batch_size: minibatch size (256).
        augmentation: ``auto`` (the artifact's recipe; none when it has none), ``dsa`` or ``none``.
        model_kwargs: ``build_model`` options; ``None``: the artifact's for its own architecture.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        seed: evaluation seed (model initialisation, batch order, augmentation).
        check_source: refuse a set made from data with another fingerprint.
        progress: show a progress bar per model.

    Returns one row per trained model: method, size, ipc, seed, architecture, test_accuracy,
    train_seconds, epochs, lr, augmentation, protocol.
    """
    if dataset.test is None:
        raise DataError(f"{dataset.name} has no test split; load it with a test split to evaluate")
    check_protocol_options(n_models=n_models, epochs=epochs, lr=lr, batch_size=batch_size,
                           architectures=architectures)
    _check_inputs(dataset, distilled, check_source)
    plan = _plan(dataset, distilled, architectures=architectures, epochs=epochs, lr=lr, batch_size=batch_size,
                 augmentation=augmentation)
    dev = resolve_device(device)
    rows = []
    for arch in plan.architectures:
        kwargs = dict(model_kwargs) if model_kwargs is not None else (
            dict(plan.recipe.get("model_kwargs") or {}) if arch == plan.own_model else {})
        for i in range(n_models):
            rows.append(_train_one(dataset, distilled, plan, arch, i, n_models, kwargs, seed, dev, progress))
    return rows


def _train_one(dataset: Dataset, distilled: DistilledSet, plan: _Plan, arch: str, index: int, n_models: int,
               kwargs: dict, seed: int, dev: torch.device, progress: bool) -> dict:
    """Model ``index`` of architecture ``arch``: trained on the set, tested once -> its row."""
    s = model_seed(seed, index, arch)
    net = build_model(arch, plan.input_shape, len(distilled.classes), seed=s, **kwargs)
    result = train(net, plan.X, plan.y, plan.config, soft_labels=plan.soft, augment=plan.augment, device=dev, seed=s,
                   progress=progress, description=f"evaluate {arch} {index + 1}/{n_models}")
    acc = accuracy(result.model, plan.X_test, dataset.test.y, device=dev)
    row = {"method": distilled.method, "size": len(plan.y), "ipc": plan.ipc, "seed": index, "architecture": arch,
           "test_accuracy": acc, "train_seconds": result.seconds, "epochs": result.epochs, "lr": plan.config.lr,
           "augmentation": "dsa" if plan.augment is not None else "none", "protocol": PROTOCOL}
    del net, result
    if dev.type == "cuda":
        torch.cuda.empty_cache()
    return row


def summarize(rows: list[dict]) -> dict[tuple[str, str], tuple[float, float, int]]:
    """Mean and standard deviation of test accuracy per (method, architecture): ``{key: (mean, std, n)}``."""
    groups: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        groups.setdefault((r["method"], r["architecture"]), []).append(r["test_accuracy"])
    return {k: (float(np.mean(v)), float(np.std(v)), len(v)) for k, v in groups.items()}
