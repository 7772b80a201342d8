"""Full data vs random vs selected (or loaded distilled) subsets, over seeds, with one training recipe -> Report.

Protocol (what every row shares):

- One :class:`~datadistill.data.Preprocessor` is fitted on the whole training split and applied to every row.
- Per seed, a stratified validation split is drawn from the *training* split (``validation_fraction``, at
  most ``validation_max`` rows). It is used only for early stopping. The remaining rows are the training
  *pool*: the full row trains on the whole pool, and selectors choose from the pool, so validation rows
  never enter a training set and the full row is exactly "ratio 1.0". ``ratio`` is a fraction of the pool.
- Loaded distilled sets were chosen from the whole training split; their rows validate on the seed's
  validation rows minus any row the set contains.
- The test split is used once per row, after training, to measure accuracy; never for training or
  early stopping.
- The model and training recipe (:func:`default_recipe`) are the same for every row. By default every row
  trains to convergence under one rule counted in optimiser steps (:func:`budget_rule` words it; reports
  state it); ``budget="epochs"`` gives the founding paper's equal-epochs protocol instead, and
  ``budgeted_full=True`` adds, per size and seed, a full-data row trained for as many optimiser steps as
  the random subset of that size took (on one training run, fewer steps on all the data often win).
- Soft-label rows (``soft_labels``) train a subset on the temperature-scaled class probabilities of a
  teacher: the seed's full-data model (trained under the same rule).
- Samples are trained in ascending row order, so a subset equal to the pool trains exactly as the full row.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from . import training
from .data.artifact import DistilledSet
from .data.dataset import Dataset
from .data.preprocess import Preprocessor
from .errors import ArtifactError, ConfigError, DataError
from .models import MODELS, build_model
from .report import REPORT_JSON, Report, atomic_write
from .scores.uncertainty import softmax
from .select.memo import reuse_probes
from .training import TrainConfig, resolve_device

ROWS_FILE = "rows.jsonl"
BUDGETED_FULL = "full (budgeted)"
SOFT = "+soft"
RUN_FILE = "run.json"
POINTS_MAX = 20_000

# The default budget rule ("converge"): every row, whatever its size, trains with the same optimiser until
# validation accuracy has not improved for PATIENCE_STEPS optimiser steps (checked every EVAL_EVERY steps,
# never before MIN_STEPS), at most MAX_STEPS steps, and keeps its best validation weights. The rule counts
# optimiser steps, not epochs, so neither a small nor a large set gets more updates by construction.
MIN_STEPS, PATIENCE_STEPS, EVAL_EVERY, MAX_STEPS = 500, 1000, 50, 30_000
BUDGETS = ("converge", "epochs")
_STEP_RULE = {"min_steps": MIN_STEPS, "patience_steps": PATIENCE_STEPS, "eval_every": EVAL_EVERY,
              "max_steps": MAX_STEPS, "epochs": 1, "max_epochs": 1}

RECIPES: dict[str, TrainConfig] = {
    "logreg": TrainConfig(batch_size=256, lr=1e-2, optimizer="adam", **_STEP_RULE),
    "mlp": TrainConfig(batch_size=256, lr=1e-3, optimizer="adam", **_STEP_RULE),
    "conv1d": TrainConfig(batch_size=256, lr=1e-3, optimizer="adam", **_STEP_RULE),
    "convnet": TrainConfig(batch_size=256, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4, **_STEP_RULE),
    "resnet18": TrainConfig(batch_size=128, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4, **_STEP_RULE),
}
EQUAL_EPOCHS = 10
# The equal-epochs budget gives a 10x smaller set 10x fewer optimiser steps, so its recipe must converge within
# a few hundred steps: smaller batches (4x the steps per epoch for every row, the full one included) and a cosine
# decay to zero at the last epoch. On MNIST (MLP, 10 epochs, one seed) this moved full data from 97.98 to 98.34%
# and a random 10% subset from 93.33 to 95.03% (benchmarks/results/b1_mnist_epochs.md has the 3-seed table).
EPOCHS_RECIPE = {"batch_size": 64, "schedule": "cosine"}
EPOCHS_LR = {"mlp": 2e-3}


def default_recipe(model: str, budget: str = "converge", epochs: int = EQUAL_EPOCHS) -> TrainConfig:
    """The training recipe evaluation uses for ``model`` (a copy; change fields freely).

    Args:
        budget: ``converge`` (default): the step rule above, early stopping on the validation split;
            ``epochs``: the founding paper's protocol, the same ``epochs`` for every row and no early stopping,
            so a 10x smaller set trains ~10x faster.
    """
    if model not in MODELS:
        raise ConfigError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget '{budget}'; choose one of: {', '.join(BUDGETS)}")
    cfg = replace(RECIPES[model])
    if budget == "epochs":
        if int(epochs) < 1:
            raise ConfigError(f"epochs must be at least 1, got {epochs}")
        cfg = replace(cfg, epochs=int(epochs), max_epochs=int(epochs), min_steps=0, max_steps=0, patience_steps=0,
                      eval_every=0, patience=0, lr=EPOCHS_LR.get(model, cfg.lr), **EPOCHS_RECIPE)
    return cfg


def budget_rule(cfg: TrainConfig) -> str:
    """One sentence naming the rule under which every row of a report was trained."""
    if cfg.max_steps and cfg.patience_steps:
        return (f"trained to convergence: early stopping on the validation split when accuracy has not improved "
                f"for {cfg.patience_steps} optimiser steps (checked every {cfg.eval_every or 'epoch'} steps, at least "
                f"{cfg.min_steps}, at most {cfg.max_steps} steps; best validation weights kept); the same rule for "
                "every row, counted in optimiser steps, so no set gets more updates for its size")
    if cfg.max_steps:
        return f"a fixed budget of {cfg.max_steps} optimiser steps for every row"
    if not cfg.patience and not cfg.patience_steps:
        return (f"the same {cfg.epochs} epochs for every row (batch {cfg.batch_size}, {cfg.schedule} learning-rate "
                "schedule), no early stopping (the founding paper's protocol: a "
                "10x smaller set trains ~10x faster)")
    return (f"{cfg.epochs} epochs (raised to at least {cfg.min_steps} optimiser steps, at most {cfg.max_epochs} "
            f"epochs), early stopping after {cfg.patience} epochs without validation improvement")


def scaled_patience(config: TrainConfig, n: int) -> TrainConfig:
    """For an epoch-patience recipe: patience covers at least ``min_steps / 2`` optimiser steps on ``n`` samples.

    Small sets get many short epochs (``min_steps``), so a fixed patience in epochs would stop them after a
    few dozen optimiser steps on an early validation plateau (e.g. the majority-class rate).
    """
    if not config.patience:
        return config
    steps_per_epoch = max(1, math.ceil(n / config.batch_size))
    return replace(config, patience=max(config.patience, math.ceil(config.min_steps / 2 / steps_per_epoch)))


def parse_ratios(ratios: Iterable[float | str] | str) -> tuple[float, ...]:
    """Ratios as floats in (0, 1]; accepts ``"0.01,0.1"`` or a sequence."""
    items = ratios.split(",") if isinstance(ratios, str) else list(ratios)
    out = []
    for item in items:
        try:
            r = float(item)
        except (TypeError, ValueError):
            raise ConfigError(f"ratio {item!r} is not a number; give fractions in (0, 1] like 0.01,0.1,0.5") from None
        if not 0 < r <= 1:
            raise ConfigError(f"ratio {r} is outside (0, 1]; give fractions of the training set, e.g. 0.1 for 10%")
        out.append(r)
    if not out:
        raise ConfigError("no ratios given; e.g. --ratios 0.01,0.05,0.1")
    return tuple(dict.fromkeys(out))


def cpu_name() -> str:
    """The processor's model name (from /proc/cpuinfo where there is one)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(device: str) -> dict:
    """Machine, versions and date of this run."""
    import sklearn
    import torch

    from . import __version__

    machine = f"{cpu_name()}, {os.cpu_count()} cores"
    if device.startswith("cuda") and torch.cuda.is_available():
        machine += f", GPU {torch.cuda.get_device_name(0)}"
    return {
        "machine": machine,
        "platform": platform.platform(),
        "versions": {"datadistill": __version__, "python": platform.python_version(), "torch": torch.__version__,
                     "numpy": np.__version__, "scikit-learn": sklearn.__version__},
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _seed_list(seeds: int | Sequence[int]) -> list[int]:
    if isinstance(seeds, (int, np.integer)):
        if seeds < 1:
            raise ConfigError(f"seeds must be at least 1, got {seeds}")
        return list(range(int(seeds)))
    out = [int(s) for s in seeds]
    if not out or len(set(out)) != len(out):
        raise ConfigError(f"seeds must be distinct integers, got {list(seeds)}")
    return out


def _validation_rows(y: np.ndarray, seed: int, fraction: float, maximum: int) -> tuple[np.ndarray, np.ndarray]:
    """(pool, validation) row indices of the training split for this seed."""
    if fraction <= 0:
        return np.arange(len(y)), np.zeros(0, dtype=np.int64)
    frac = min(fraction, maximum / len(y))
    return training.validation_split(y, frac, random_state=10_000 + seed)


def _load_distilled(item: str | os.PathLike | DistilledSet, dataset: Dataset) -> tuple[DistilledSet, str]:
    if isinstance(item, DistilledSet):
        ds, label = item, f"{item.method}:loaded"
    else:
        ds = DistilledSet.open(item)
        label = f"{ds.method}:{Path(item).name}"
    where = str(item) if not isinstance(item, DistilledSet) else f"distilled set '{ds.method}'"
    if ds.source_fingerprint != dataset.fingerprint:
        raise ArtifactError(
            f"{where}: made from a different data set (its source fingerprint is "
            f"{str(ds.source_fingerprint)[:16]}, {ds.meta.get('source', 'unknown source')}; "
            f"{dataset.name} has {dataset.fingerprint[:16]}). Evaluate it against the exact data (same file, "
            "same test split) it was distilled from"
        )
    if tuple(ds.X.shape[1:]) != dataset.sample_shape:
        raise ArtifactError(f"{where}: samples of shape {ds.X.shape[1:]} but {dataset.name} has {dataset.sample_shape}")
    return ds, label


class _RunDir:
    """rows.jsonl (append + fsync per row) and run.json in an evaluation's output directory.

    Nothing is written, and an old run is not replaced, before the first row: by then every setting has
    been validated, so a refused or failed call leaves an existing run as it was.
    """

    FILES = (ROWS_FILE, RUN_FILE, "report.json", "report.md", "report.html")
    KIND = "evaluation-run"

    def __init__(self, path: Path | None, resume: bool, overwrite: bool):
        self.path = path
        self.done: dict[tuple[str, int, int], dict] = {}
        self._replace = False   # overwrite: remove the old run before the first row
        self._ready = False     # the directory is there and holds run.json
        self._key: dict | None = None
        self._rows_end: int | None = None  # resume: cut rows.jsonl here (a partial last line) before appending
        if path is None:
            return
        if path.exists() and not path.is_dir():
            raise ArtifactError(f"{path}: exists and is not a directory; choose another --out")
        if path.exists() and any(path.iterdir()):
            looks_like_run = (path / RUN_FILE).exists() or (path / ROWS_FILE).exists()
            if resume:
                if not looks_like_run:
                    raise ArtifactError(f"{path}: not an evaluation run directory (no {RUN_FILE}); cannot resume")
            elif overwrite:
                self.check_replaceable(path)
                self._replace = True
            else:
                raise ArtifactError(f"{path}: already exists; pass --resume to continue that run, --overwrite to "
                                    "replace it, or choose another --out")

    @classmethod
    def check_replaceable(cls, path: Path) -> None:
        """Raise ArtifactError unless ``path`` is a run directory holding only what evaluate writes there."""
        from .data.artifact import check_replaceable
        from .report import FIGURES_DIR

        def figures(directory: Path) -> list[str]:
            return [e.name for e in sorted(directory.iterdir()) if e.is_dir() or e.is_symlink() or not (
                e.name.endswith(".png") or (e.name.startswith(".") and ".png." in e.name))]

        check_replaceable(path, cls.KIND, files=cls.FILES, folders={FIGURES_DIR: figures},
                          legacy=lambda p: (p / RUN_FILE).exists() or (p / ROWS_FILE).exists())

    def check_context(self, key: dict) -> None:
        """Refuse to resume a run made with other data, model, recipe or protocol; read its finished rows."""
        if self.path is None:
            return
        self._key = key
        if self._replace or not self.path.is_dir():
            return
        run = self.path / RUN_FILE
        if run.exists():
            try:
                old = json.loads(run.read_text())
            except ValueError:
                old = None
            if not isinstance(old, dict):
                raise ArtifactError(f"{run}: not a JSON object; the run directory is damaged (use another --out)")
            diff = [k for k in key if json.dumps(old.get(k), sort_keys=True) != json.dumps(key[k], sort_keys=True)]
            if diff:
                raise ArtifactError(f"{self.path}: this run was made with other settings ({', '.join(diff)} differ); "
                                    "resume with the same data, model and recipe, or use another --out")
        rows = self.path / ROWS_FILE
        if not rows.exists():
            return
        data = rows.read_bytes()
        lines = data.split(b"\n")
        complete = len(lines) - 1  # the piece after the last newline is a line cut off mid-write (or empty)
        offset = 0
        for n, line in enumerate(lines):
            end = offset + len(line) + 1
            if not line.strip():
                offset = end
                continue
            try:
                row = json.loads(line) if n < complete else None
                key_ = (row["method"], int(row["size"]), int(row["seed"]))
            except (ValueError, TypeError, KeyError):
                # only the last line can be cut off by an interruption: it is dropped and its row redone
                if n >= complete - 1 and not any(rest.strip() for rest in lines[n + 1:]):
                    self._rows_end = offset
                    break
                raise ArtifactError(f"{rows}: line {n + 1} is not a row; the run directory is damaged") from None
            self.done[key_] = row
            offset = end

    def _prepare(self) -> None:
        """Create or replace the directory, write run.json and cut a partial last row: just before the first row."""
        from .data.artifact import read_marker, write_marker

        if self._replace:
            self.check_replaceable(self.path)
            shutil.rmtree(self.path)
            self._replace = False
        self.path.mkdir(parents=True, exist_ok=True)
        if read_marker(self.path) is None:
            write_marker(self.path, self.KIND)
        if self._key is not None and not (self.path / RUN_FILE).exists():
            atomic_write(self.path / RUN_FILE, json.dumps(self._key, indent=1, sort_keys=True))
        if self._rows_end is not None:
            with open(self.path / ROWS_FILE, "r+b") as fh:
                fh.truncate(self._rows_end)
                os.fsync(fh.fileno())
            self._rows_end = None
        self._ready = True

    def append(self, row: dict) -> None:
        self.done[(row["method"], int(row["size"]), int(row["seed"]))] = row
        if self.path is None:
            return
        if not self._ready:
            self._prepare()
        with open(self.path / ROWS_FILE, "a") as fh:
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            os.fsync(fh.fileno())


def evaluate(
    dataset: Dataset,
    *,
    methods: Sequence[str] = ("random",),
    ratios: Sequence[float] | str = (0.1,),
    model: str = "mlp",
    seeds: int | Sequence[int] = 3,
    distilled: Sequence[str | os.PathLike | DistilledSet] = (),
    use_weights: bool = False,
    protocol: str = "same",
    protocol_options: dict | None = None,
    out: str | os.PathLike | None = None,
    resume: bool = False,
    overwrite: bool = False,
    train_config: TrainConfig | None = None,
    method_params: dict[str, dict] | None = None,
    validation_fraction: float = 0.1,
    validation_max: int = 5000,
    device: str = "auto",
    progress: bool | Callable[[dict], None] = True,
    command: str | None = None,
    budget: str = "converge",
    epochs: int = EQUAL_EPOCHS,
    budgeted_full: bool = False,
    soft_labels: Sequence[str] | bool = (),
    temperature: float = 4.0,
) -> Report:
    """Train a fresh model on the full pool, random subsets, selected subsets and loaded sets; test each.

    Args:
        dataset: the data, with a test split (``load`` makes one when the source has none).
        methods: registered selector names (``datadistill.select.REGISTRY``); ``random`` rows are always added.
        ratios: subset sizes as fractions of the training pool, each in (0, 1] (or ``"0.01,0.1"``).
        model: a model zoo name (``datadistill.models.MODELS``).
        seeds: number of seeds (0..n-1) or explicit seeds; each seed re-draws validation rows, model
            initialisation, batch order and the selection's ``random_state``.
        distilled: saved DistilledSet directories (or objects) made from this same data set.
        use_weights: train selected/loaded sets with their per-sample weights when they have them.
        protocol: ``same`` (the recipe above for every row) or ``dc`` (synthetic sets are evaluated by
            ``datadistill.synth.protocol.evaluate_protocol``: ConvNet, 5 models, the distillation protocol).
        protocol_options: keyword arguments for ``evaluate_protocol`` (``n_models``, ``architectures``,
            ``epochs``, ...), e.g. ``{"architectures": ("convnet", "mlp", "resnet18")}`` for cross-architecture.
        out: run directory: ``rows.jsonl`` grows as rows finish; report.json/.md/.html and figures/ are
            rewritten after each method and at the end.
        resume: continue a run in ``out``, skipping finished (method, size, seed) rows.
        overwrite: replace an existing run directory in ``out``.
        train_config: the recipe (default :func:`default_recipe` of ``model``).
        method_params: extra keyword arguments per selector name, e.g. ``{"kcenter": {"per_class": None}}``.
        validation_fraction, validation_max: the early-stopping validation split taken from training rows.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        progress: show a progress bar (True), nothing (False), or call ``progress(row)`` as each row finishes.
        command: the command line to record in the report.
        budget: ``converge`` (default: every row to convergence under one step rule) or ``epochs`` (the same
            ``epochs`` for every row, no early stopping); ignored when ``train_config`` is given.
        epochs: the epoch count of ``budget="epochs"``.
        budgeted_full: add "full (budgeted)" rows: full data trained for the random row's number of steps.
        soft_labels: methods (or True for all, random included) that also get a "+soft" row trained on a
            teacher's soft labels at ``temperature`` (the teacher: this seed's full-data model).
        temperature: softening temperature of those labels.

    Raises:
        ConfigError: unknown model, method or protocol; a ratio outside (0, 1]; bad seeds.
        DataError: the data set has no test split.
        ArtifactError: ``out`` exists (without resume/overwrite) or belongs to another run; a distilled
            set made from other data.
    """
    from .select import REGISTRY, get_selector, resolve_size

    if not isinstance(dataset, Dataset):
        raise ConfigError(f"evaluate() needs a datadistill Dataset, got {type(dataset).__name__}")
    if dataset.test is None:
        raise DataError(f"{dataset.name}: no test split; load it with datadistill.load(...) (which makes a seeded "
                        "split) or give x_test/y_test")
    if model not in MODELS:
        raise ConfigError(f"unknown model '{model}'; choose one of: {', '.join(MODELS)}")
    if model in ("convnet", "resnet18") and not dataset.is_image:
        raise ConfigError(f"model '{model}' needs images; {dataset.name} is tabular {dataset.sample_shape}. "
                          "Use --model mlp or logreg")
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in REGISTRY and m != "full"]
    if unknown:
        raise ConfigError(f"unknown selection method{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"choose from: {', '.join(sorted(REGISTRY))}")
    if protocol not in ("same", "dc"):
        raise ConfigError(f"unknown protocol '{protocol}' (same, dc)")
    from .synth.protocol import check_protocol_options

    check_protocol_options(**(protocol_options or {}))
    if not 0 <= validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ratio_list = parse_ratios(ratios)
    seed_list = _seed_list(seeds)
    method_params = dict(method_params or {})
    stray = sorted(set(method_params) - set(methods) - {"random"})
    if stray:
        raise ConfigError(f"method_params given for {', '.join(stray)}, which is not among the methods evaluated")
    cfg = train_config or default_recipe(model, budget, epochs)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    dev = str(resolve_device(device))
    loaded = [_load_distilled(item, dataset) for item in distilled]
    methods = ["random"] + [m for m in dict.fromkeys(methods) if m not in ("random", "full")]
    soft_methods = list(methods) if soft_labels is True else [m for m in (soft_labels or ()) if m]
    stray_soft = [m for m in soft_methods if m not in methods]
    if stray_soft:
        raise ConfigError(f"soft_labels names {', '.join(stray_soft)}, which is not among the methods evaluated")

    out_path = Path(out) if out is not None else None
    for m in methods:  # bad method parameters are refused before any row trains or an old run is replaced
        get_selector(m, size=1, random_state=seed_list[0], **method_params.get(m, {})).check_params()
    run = _RunDir(out_path, resume, overwrite)
    pre = Preprocessor.fit(dataset)
    n_val = len(_validation_rows(dataset.y, seed_list[0], validation_fraction, validation_max)[1])
    pool_size = len(dataset) - n_val
    run_key = {"fingerprint": dataset.fingerprint, "model": model, "recipe": cfg.to_dict(),
               "validation_fraction": validation_fraction, "validation_max": validation_max,
               "use_weights": use_weights, "protocol": protocol, "temperature": float(temperature),
               "protocol_options": {k: list(v) if isinstance(v, tuple) else v
                                    for k, v in (protocol_options or {}).items()}}
    run.check_context(run_key)

    context = {
        "dataset": dataset.name, "fingerprint": dataset.fingerprint, "n_train": len(dataset),
        "pool_size": pool_size, "validation_size": n_val, "test_size": len(dataset.test),
        "n_features": dataset.n_features, "sample_shape": list(dataset.sample_shape),
        "classes": list(dataset.classes), "model": model, "recipe": cfg.to_dict(), "device": dev,
        "seeds": seed_list, "use_weights": use_weights, "protocol": protocol,
        "budget_rule": budget_rule(cfg), "soft_label_teacher": (
            f"the seed's full-data {model} (same rule), probabilities at temperature {temperature}"
            if soft_methods else None),
        "environment": environment(dev), "command": command,
        "protocol_note": ("validation rows for early stopping come from the training split and are excluded "
                          "from the pool that subsets are chosen from; ratio = fraction of that pool"),
    }
    two_d = dataset.n_features == 2 and not dataset.is_image
    if two_d:
        context["points"] = {"X": dataset.X[:POINTS_MAX].tolist(), "y": dataset.y[:POINTS_MAX].tolist()}

    X_model = pre.transform(dataset.X)
    X_test = pre.transform(dataset.test.X)
    y_test = dataset.test.y

    sizes = {r: resolve_size(pool_size, None, r) for r in ratio_list}
    plan: list[tuple[str, object, int]] = []  # (label, ratio or loaded set, seed)
    for label in ["full", *methods]:
        for r in ([1.0] if label == "full" else ratio_list):
            plan += [(label, r, s) for s in seed_list]
        if label == "random" and budgeted_full:
            plan += [(BUDGETED_FULL, r, s) for r in ratio_list for s in seed_list]
        if label in soft_methods:
            plan += [(label + SOFT, r, s) for r in ratio_list for s in seed_list]
    for ds_item, label in loaded:
        delegated = protocol == "dc" and ds_item.meta.get("kind") == "synthetic"
        plan += [(label, ds_item, s) for s in (seed_list[:1] if delegated else seed_list)]
    method_order = {label: i for i, label in enumerate(dict.fromkeys(p[0] for p in plan))}

    bar = None
    if progress is True:
        from .progress import bar as progress_bar

        bar = progress_bar(len(plan), desc=f"evaluate {dataset.name}", unit="row")
    notify = progress if callable(progress) else None
    images: list[dict] = []

    def report() -> Report:
        rows = sorted(run.done.values(),
                      key=lambda r: (method_order.get(r["method"], len(method_order)), r["method"], r["size"], r["seed"]))
        return Report(rows=rows, context=context, images=images)

    def finish_method() -> None:
        if out_path is not None and run.done:
            report().render(out_path)

    teachers: dict[int, np.ndarray] = {}
    selections: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray | None, float]] = {}

    def train_and_test(idx: np.ndarray | None, seed: int, val_idx: np.ndarray, *, X=None, y=None,
                       weights=None, soft=None, soft_temperature: float = 1.0, budget_steps: int | None = None,
                       keep_teacher: bool = False) -> dict:
        if idx is not None:
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            X, y = X_model[idx], dataset.y[idx]
            weights = None if weights is None else np.asarray(weights, dtype=np.float64)[order]
            soft = None if soft is None else np.asarray(soft)[order]
        net = build_model(model, pre.model_shape, dataset.n_classes, seed=seed)
        validation = (X_model[val_idx], dataset.y[val_idx]) if len(val_idx) else None
        row_cfg = scaled_patience(cfg, len(y)) if budget_steps is None else replace(
            cfg, max_steps=int(budget_steps), min_steps=0, patience_steps=0, patience=0, epochs=1, max_epochs=1)
        if soft is not None:
            row_cfg = replace(row_cfg, soft_temperature=float(soft_temperature))
        result = training.train(net, X, y, row_cfg, sample_weight=weights, soft_labels=soft, validation=validation,
                                device=dev, seed=seed, description="train")
        pred = training.predict_logits(result.model, X_test, device=dev).argmax(axis=1)
        acc = float((pred == y_test).mean())
        if keep_teacher:
            teachers[seed] = training.predict_logits(result.model, X_model, device=dev)
        val = max((h["val_accuracy"] for h in result.history if h.get("val_accuracy") is not None), default=None)
        return {"test_accuracy": acc, "val_accuracy": val, "train_seconds": result.seconds,
                "validation_seconds": result.validation_seconds, "epochs": result.epochs, "steps": result.steps,
                "best_step": result.best_step, "stop_reason": result.stop_reason, "weighted": weights is not None,
                "soft_labels": soft is not None, "class_accuracy": per_class_accuracy(pred, y_test, dataset.n_classes)}

    def teacher_probs(seed: int, rows: np.ndarray, pool: np.ndarray, val_idx: np.ndarray) -> np.ndarray:
        if seed not in teachers:  # a resumed run: retrain the seed's full model (deterministic)
            train_and_test(pool, seed, val_idx, keep_teacher=True)
        return softmax(teachers[seed][rows].astype(np.float64) / temperature).astype(np.float32)

    def selected(label: str, size: int, seed: int, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        key = (label, size, seed)
        if key not in selections:
            pool_ds = Dataset(X=dataset.X[pool], y=dataset.y[pool], classes=dataset.classes, test=None,
                              name=f"{dataset.name}[pool]", info=dict(dataset.info))
            params = dict(method_params.get(label, {}))
            selector = get_selector(label, size=size, random_state=seed, **params)
            t0 = time.perf_counter()
            selector.fit(pool_ds)
            # a probe reused from another size of the curve still counts, as if trained for this selection
            select_seconds = time.perf_counter() - t0 + float(getattr(selector, "reused_seconds_", 0.0))
            chosen = pool[np.asarray(selector.indices_, dtype=np.int64)]
            selections[key] = (chosen, getattr(selector, "weights_", None), select_seconds)
        return selections[key]

    current = None
    # one probe per (pool, method settings) across the sizes of a curve
    with reuse_probes():
        try:
            for label, what, seed in plan:
                if label != current and current is not None:
                    finish_method()
                current = label
                pool, val_idx = _validation_rows(dataset.y, seed, validation_fraction, validation_max)
                if isinstance(what, DistilledSet):
                    size = len(what)
                else:
                    size = pool_size if label == "full" else sizes[what]
                key = (label, size, seed)
                if key in run.done:
                    if bar is not None:
                        bar.update(1)
                    continue
                row = {"method": label, "size": size, "seed": seed, "ratio": size / pool_size}
                if label == "full":
                    row.update(kind="full", select_seconds=0.0,
                               **train_and_test(pool, seed, val_idx, keep_teacher=bool(soft_methods)))
                elif label == BUDGETED_FULL:
                    ref = run.done.get(("random", size, seed))
                    if ref is None:
                        chosen, _, _ = selected("random", size, seed, pool)
                        ref = train_and_test(chosen, seed, val_idx)
                    row.update(kind="budgeted-full", select_seconds=0.0, budget_steps=int(ref["steps"]),
                               **train_and_test(pool, seed, val_idx, budget_steps=int(ref["steps"])))
                elif isinstance(what, DistilledSet):
                    row.update(_distilled_row(what, label, seed, val_idx, dataset, pre, use_weights, protocol,
                                              dict(protocol_options or {}), dev,
                                              train_and_test, images))
                    if row.get("protocol_rows"):
                        for extra in row.pop("protocol_rows"):
                            run.append(extra)
                        if bar is not None:
                            bar.update(1)
                        continue
                else:
                    base = label[:-len(SOFT)] if label.endswith(SOFT) else label
                    chosen, weights, select_seconds = selected(base, size, seed, pool)
                    use = use_weights and weights is not None and not np.allclose(weights, 1.0)
                    soft = teacher_probs(seed, chosen, pool, val_idx) if label.endswith(SOFT) else None
                    row.update(kind="selection", select_seconds=select_seconds, size=len(chosen),
                               **train_and_test(chosen, seed, val_idx, weights=weights if use else None, soft=soft,
                                                soft_temperature=temperature))
                    row["classes_present"] = int(len(np.unique(dataset.y[chosen])))
                    if two_d and not label.endswith(SOFT):
                        row["indices"] = np.sort(chosen).tolist()
                run.append(row)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(method=label, size=row["size"], acc=f"{row['test_accuracy']:.4f}")
                if notify is not None:
                    notify(row)
            finish_method()
        except KeyboardInterrupt:
            finish_method()
            raise
        finally:
            if bar is not None:
                bar.close()
    return report()


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> list[float | None]:
    """Accuracy on each class's test samples (None for a class absent from the test split)."""
    out: list[float | None] = []
    for c in range(n_classes):
        mask = y == c
        out.append(float((pred[mask] == c).mean()) if mask.any() else None)
    return out


def _distilled_row(ds: DistilledSet, label: str, seed: int, val_idx: np.ndarray, dataset: Dataset,
                   pre: Preprocessor, use_weights: bool, protocol: str, protocol_options: dict, device: str,
                   train_and_test, images: list[dict]) -> dict:
    timings = ds.meta.get("timings", {})
    select_seconds = float(timings.get("select_seconds", timings.get("distill_seconds", 0.0)) or 0.0)
    kind = ds.meta.get("kind", "selection")
    if kind == "synthetic" and seed == 0 and len(images) < 8 and dataset.is_image:
        images.append({"title": label, "X": ds.X[:200].tolist(), "y": ds.y[:200].tolist(),
                       "classes": list(ds.classes)})
    if kind == "synthetic" and protocol == "dc":
        from .synth.protocol import evaluate_protocol

        options = {"n_models": 5, **protocol_options}
        rows = evaluate_protocol(dataset, ds, device=device, seed=seed, **options)
        several = len({r.get("architecture") for r in rows}) > 1
        for i, r in enumerate(rows):
            r["method"] = f"{label} [{r['architecture']}]" if several else label
            r.setdefault("size", len(ds))
            r.setdefault("seed", seed + i)
            r.setdefault("ratio", len(ds) / len(dataset))
            r.setdefault("kind", kind)
            r.setdefault("select_seconds", select_seconds)
        return {"protocol_rows": rows}
    weights = ds.weights if use_weights and ds.weights is not None else None
    if ds.indices is not None:
        val_idx = np.setdiff1d(val_idx, np.asarray(ds.indices, dtype=np.int64))
    soft = ds.soft_labels
    # a selection's soft labels are a probe's probabilities at a temperature (KD loss); a synthetic set's are
    # learned label distributions (plain cross entropy)
    soft_t = float((ds.meta.get("soft_labels") or {}).get("temperature", 1.0)) if kind != "synthetic" else 1.0
    X = pre.transform(ds.X)
    stats = train_and_test(None, seed, val_idx, X=X, y=np.asarray(ds.y, dtype=np.int64), weights=weights, soft=soft,
                           soft_temperature=soft_t)
    return {"kind": kind, "select_seconds": select_seconds, **stats}


def load_report(directory: str | os.PathLike) -> Report:
    """The report of a finished or interrupted run directory (rebuilt from rows.jsonl when needed)."""
    directory = Path(directory)
    if (directory / REPORT_JSON).exists():
        return Report.from_json(directory / REPORT_JSON)
    raise ArtifactError(f"{directory}: no {REPORT_JSON}; run `datadistill evaluate ... --out {directory}` first")
