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
- Every row names its ``model`` and ``protocol``. ``protocol="dc"`` judges every set of the table (full, random,
  selections, loaded sets) by :func:`datadistill.synth.protocol.evaluate_protocol` instead of the recipe.
- Full and random rows are in every table unless ``baselines=False``; the report's header names the rows it holds.

The code reads top to bottom as the pipeline: :class:`Settings` (checked arguments) -> :func:`plan_rows`
(:class:`RowSpec` per row) -> :class:`RowRunner` (train and test one row) -> :func:`run_plan` -> :func:`collect`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from . import training
from .data.artifact import DistilledSet
from .data.dataset import Dataset
from .data.preprocess import Preprocessor
from .errors import ArtifactError, ConfigError, DataError
from .models import build_model, check_known, check_model_for
from .report import FULL, REPORT_JSON, Report, atomic_write
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
    "convnet-p1": TrainConfig(batch_size=256, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                              **_STEP_RULE),
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
    check_known(model)
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


# --- the pipeline: check the settings -> plan the rows -> run each row -> collect the report -------------------


@dataclass(frozen=True)
class Settings:
    """The checked arguments of one evaluation: what every row of its report shares."""

    dataset: Dataset
    methods: tuple[str, ...]          # selector names, random first when it is evaluated
    ratios: tuple[float, ...]
    seeds: tuple[int, ...]
    model: str
    recipe: TrainConfig
    protocol: str                     # same | dc
    protocol_options: dict
    method_params: dict
    loaded: tuple[tuple[DistilledSet, str], ...]
    soft_methods: tuple[str, ...]
    temperature: float
    use_weights: bool
    budgeted_full: bool
    baselines: bool                   # full and random rows added whatever ``methods`` says
    full: bool                        # the full-data row is planned
    validation_fraction: float
    validation_max: int
    device: str

    @property
    def two_d(self) -> bool:
        return self.dataset.n_features == 2 and not self.dataset.is_image

    def split(self, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """(pool, validation) rows of the training split for ``seed``."""
        return _validation_rows(self.dataset.y, seed, self.validation_fraction, self.validation_max)


@dataclass(frozen=True)
class RowSpec:
    """One planned row: which set (kind, method, size) trains which model under which protocol, for one seed.

    ``kind``: ``full`` (the seed's pool), ``budgeted-full`` (the pool for the random row's step count),
    ``random`` or ``selection`` (a selector's choice from the pool; ``soft``: trained on a teacher's soft
    labels), ``distilled`` (a loaded set). ``keys``: the (method, size, seed) of every row it writes when
    that is not just its own (the dc protocol writes one per model and architecture).
    """

    kind: str
    method: str
    seed: int
    size: int
    model: str
    protocol: str
    ratio: float | None = None
    selector: str | None = None
    soft: bool = False
    params: dict = field(default_factory=dict)
    distilled: DistilledSet | None = None
    keys: tuple[tuple[str, int, int], ...] = ()

    @property
    def done_keys(self) -> tuple[tuple[str, int, int], ...]:
        return self.keys or ((self.method, self.size, self.seed),)


def _check_data(dataset: Dataset, model: str) -> None:
    if not isinstance(dataset, Dataset):
        raise ConfigError(f"evaluate() needs a datadistill Dataset, got {type(dataset).__name__}")
    if dataset.test is None:
        raise DataError(f"{dataset.name}: no test split; load it with datadistill.load(...) (which makes a seeded "
                        "split) or give x_test/y_test")
    check_model_for(model, images=dataset.is_image, data_name=dataset.name, shape=dataset.sample_shape)


def _check_methods(methods: Sequence[str] | str, baselines: bool) -> tuple[tuple[str, ...], bool]:
    """(selector names in plan order, whether the full row is planned)."""
    from .select import REGISTRY

    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    unknown = [m for m in methods if m not in REGISTRY and m != "full"]
    if unknown:
        raise ConfigError(f"unknown selection method{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"choose from: {', '.join(sorted(REGISTRY))}")
    named = list(dict.fromkeys(methods))
    random = ["random"] if baselines or "random" in named else []
    return tuple(random + [m for m in named if m not in ("random", "full")]), baselines or "full" in named


def _check_protocol(protocol: str, options: dict, *, soft: Sequence[str], budgeted_full: bool,
                    use_weights: bool) -> None:
    from .synth.protocol import check_protocol_options

    if protocol not in ("same", "dc"):
        raise ConfigError(f"unknown protocol '{protocol}' (same, dc)")
    check_protocol_options(**options)
    if protocol != "dc":
        return
    clash = [name for name, on in (("soft_labels", soft), ("budgeted_full", budgeted_full),
                                   ("use_weights", use_weights)) if on]
    if clash:
        raise ConfigError(f"{', '.join(clash)} cannot be combined with protocol 'dc': the dc protocol trains every "
                          "set on its own samples and hard labels with its fixed recipe; use protocol 'same'")


def _check_settings(dataset: Dataset, *, methods, ratios, model, seeds, distilled, use_weights, protocol,
                    protocol_options, train_config, method_params, validation_fraction, validation_max, device,
                    budget, epochs, budgeted_full, soft_labels, temperature, baselines) -> Settings:
    """Every argument checked (ConfigError, DataError, ArtifactError) before anything trains or is written."""
    from .select import get_selector

    _check_data(dataset, model)
    methods, full = _check_methods(methods, bool(baselines))
    options = dict(protocol_options or {})
    if not 0 <= validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    ratio_list, seed_list = parse_ratios(ratios), _seed_list(seeds)
    method_params = dict(method_params or {})
    stray = sorted(set(method_params) - set(methods) - ({"random"} if baselines else set()))
    if stray:
        raise ConfigError(f"method_params given for {', '.join(stray)}, which is not among the methods evaluated")
    cfg = train_config or default_recipe(model, budget, epochs)
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ConfigError(f"temperature must be a positive number, got {temperature}")
    soft = list(methods) if soft_labels is True else [m for m in (soft_labels or ()) if m]
    stray_soft = [m for m in soft if m not in methods]
    if stray_soft:
        raise ConfigError(f"soft_labels names {', '.join(stray_soft)}, which is not among the methods evaluated")
    if budgeted_full and "random" not in methods:
        raise ConfigError("budgeted_full needs the random rows (its step budget); keep the baselines or add random")
    _check_protocol(protocol, options, soft=soft, budgeted_full=budgeted_full, use_weights=use_weights)
    dev = str(resolve_device(device))
    loaded = tuple(_load_distilled(item, dataset) for item in distilled)
    if not (full or methods or loaded):
        raise ConfigError("nothing to evaluate: no methods, no distilled sets and baselines off")
    for m in methods:  # bad method parameters are refused before any row trains or an old run is replaced
        get_selector(m, size=1, random_state=seed_list[0], **method_params.get(m, {})).check_params()
    return Settings(dataset=dataset, methods=methods, ratios=ratio_list, seeds=tuple(seed_list), model=model,
                    recipe=cfg, protocol=protocol, protocol_options=options, method_params=method_params,
                    loaded=loaded, soft_methods=tuple(soft), temperature=float(temperature),
                    use_weights=bool(use_weights), budgeted_full=bool(budgeted_full), baselines=bool(baselines),
                    full=full, validation_fraction=validation_fraction, validation_max=validation_max, device=dev)


def _protocol_models(s: Settings, distilled: DistilledSet | None) -> tuple[str, ...]:
    """The architectures the dc protocol trains on a set (a drawn set when ``distilled`` is None)."""
    from .synth.protocol import protocol_architectures

    return protocol_architectures(distilled, s.dataset.is_image, s.protocol_options.get("architectures"))


def _spec_keys(s: Settings, method: str, size: int, seed: int, distilled: DistilledSet | None,
               n_models: int) -> tuple[tuple[str, int, int], ...]:
    archs = _protocol_models(s, distilled)
    labels = [f"{method} [{a}]" for a in archs] if len(set(archs)) > 1 else [method]
    return tuple((label, size, seed + i) for label in labels for i in range(n_models))


def plan_rows(s: Settings, pool_size: int) -> list[RowSpec]:
    """Every row of the report in report order: full, random (+ budgeted full), each method (+soft), loaded sets."""
    from .select import resolve_size

    dc = s.protocol == "dc"

    def spec(kind: str, method: str, seed: int, size: int, distilled: DistilledSet | None = None, **kw) -> RowSpec:
        n_models = int(s.protocol_options.get("n_models", 5)) if distilled is not None else 1
        model = ",".join(_protocol_models(s, distilled)) if dc else s.model
        keys = _spec_keys(s, method, size, seed, distilled, n_models) if dc else ()
        return RowSpec(kind=kind, method=method, seed=seed, size=size, model=model, protocol=s.protocol,
                       distilled=distilled, keys=keys, **kw)

    sizes = {r: resolve_size(pool_size, None, r) for r in s.ratios}
    plan = [spec("full", FULL, seed, pool_size) for seed in s.seeds] if s.full else []
    for m in s.methods:
        kind, params = ("random" if m == "random" else "selection"), dict(s.method_params.get(m, {}))
        plan += [spec(kind, m, seed, sizes[r], ratio=r, selector=m, params=params)
                 for r in s.ratios for seed in s.seeds]
        if m == "random" and s.budgeted_full:
            plan += [spec("budgeted-full", BUDGETED_FULL, seed, sizes[r], ratio=r, selector=m, params=params)
                     for r in s.ratios for seed in s.seeds]
        if m in s.soft_methods:
            plan += [spec(kind, m + SOFT, seed, sizes[r], ratio=r, selector=m, params=params, soft=True)
                     for r in s.ratios for seed in s.seeds]
    for ds, label in s.loaded:  # dc: a loaded set does not change with the seed; its n_models models are its rows
        plan += [spec("distilled", label, seed, len(ds), distilled=ds) for seed in (s.seeds[:1] if dc else s.seeds)]
    return plan


def _set_seconds(ds: DistilledSet) -> float:
    """Seconds that made a loaded set: selection, or distillation with its set-up (a teacher, an autoencoder)."""
    timings = ds.meta.get("timings", {})
    if "select_seconds" in timings:
        return float(timings["select_seconds"] or 0.0)
    return float(timings.get("distill_seconds") or 0.0) + float(timings.get("setup_seconds") or 0.0)


class RowRunner:
    """Trains and tests the set of one :class:`RowSpec` -> its report rows.

    Holds what rows share: the preprocessed data, each seed's full-data teacher (soft labels), each
    (selector, size, seed) selection (budgeted-full and +soft rows reuse them), the synthetic images drawn.
    """

    def __init__(self, s: Settings, pool_size: int, done: dict):
        self.s, self.pool_size, self.done = s, pool_size, done
        self.pre = Preprocessor.fit(s.dataset)
        self.X_model = self.pre.transform(s.dataset.X)
        self.X_test = self.pre.transform(s.dataset.test.X)
        self.teachers: dict[int, np.ndarray] = {}
        self.selections: dict[tuple[str, int, int], tuple[np.ndarray, np.ndarray | None, float]] = {}
        self.images: list[dict] = []

    def rows(self, spec: RowSpec) -> list[dict]:
        """The rows of ``spec``: one under the same recipe, one per model and architecture under dc."""
        pool, val_idx = self.s.split(spec.seed)
        if spec.protocol == "dc":
            return self._protocol_rows(spec, pool)
        row = {"method": spec.method, "size": spec.size, "seed": spec.seed, "ratio": spec.size / self.pool_size,
               "model": spec.model, "protocol": spec.protocol}
        build = {"full": self._full, "budgeted-full": self._budgeted_full, "random": self._selection,
                 "selection": self._selection, "distilled": self._distilled}[spec.kind]
        row.update(build(spec, pool, val_idx))
        return [row]

    # --- one builder per kind (protocol same) ------------------------------------------------------------------
    def _full(self, spec: RowSpec, pool: np.ndarray, val_idx: np.ndarray) -> dict:
        stats = self._train(pool, spec.seed, val_idx, keep_teacher=bool(self.s.soft_methods))
        return {"kind": "full", "select_seconds": 0.0, **stats}

    def _budgeted_full(self, spec: RowSpec, pool: np.ndarray, val_idx: np.ndarray) -> dict:
        ref = self.done.get(("random", spec.size, spec.seed))
        if ref is None:
            chosen, _, _ = self._selected(spec, pool)
            ref = self._train(chosen, spec.seed, val_idx)
        steps = int(ref["steps"])
        return {"kind": "budgeted-full", "select_seconds": 0.0, "budget_steps": steps,
                **self._train(pool, spec.seed, val_idx, budget_steps=steps)}

    def _selection(self, spec: RowSpec, pool: np.ndarray, val_idx: np.ndarray) -> dict:
        chosen, weights, select_seconds = self._selected(spec, pool)
        use = self.s.use_weights and weights is not None and not np.allclose(weights, 1.0)
        soft = self._teacher_probs(spec.seed, chosen, pool, val_idx) if spec.soft else None
        out = {"kind": "selection", "select_seconds": select_seconds, "size": len(chosen),
               **self._train(chosen, spec.seed, val_idx, weights=weights if use else None, soft=soft,
                             soft_temperature=self.s.temperature)}
        out["classes_present"] = int(len(np.unique(self.s.dataset.y[chosen])))
        if self.s.two_d and not spec.soft:
            out["indices"] = np.sort(chosen).tolist()
        return out

    def _distilled(self, spec: RowSpec, pool: np.ndarray, val_idx: np.ndarray) -> dict:
        ds = spec.distilled
        kind = ds.meta.get("kind", "selection")
        self._draw(spec, ds)
        weights = ds.weights if self.s.use_weights and ds.weights is not None else None
        if ds.indices is not None:  # its rows were chosen from the whole training split: none validates
            val_idx = np.setdiff1d(val_idx, np.asarray(ds.indices, dtype=np.int64))
        # a selection's soft labels are a probe's probabilities at a temperature (KD loss); a synthetic set's are
        # learned label distributions (plain cross entropy)
        soft_t = float((ds.meta.get("soft_labels") or {}).get("temperature", 1.0)) if kind != "synthetic" else 1.0
        stats = self._train(None, spec.seed, val_idx, X=self.pre.transform(ds.X), y=np.asarray(ds.y, dtype=np.int64),
                            weights=weights, soft=ds.soft_labels, soft_temperature=soft_t)
        return {"kind": kind, "select_seconds": _set_seconds(ds), **stats}

    # --- protocol dc: every set, drawn or loaded, through synth.protocol.evaluate_protocol ------------------------
    def _protocol_rows(self, spec: RowSpec, pool: np.ndarray) -> list[dict]:
        from .synth.protocol import evaluate_protocol

        if spec.kind == "distilled":
            ds, seconds = spec.distilled, _set_seconds(spec.distilled)
            n_models = int(self.s.protocol_options.get("n_models", 5))
            self._draw(spec, ds)
        else:  # drawn sets change with the seed: one model per seed, on that seed's draw
            ds, seconds = self._drawn_set(spec, pool)
            n_models = 1
        options = {**self.s.protocol_options, "n_models": n_models}
        trained = evaluate_protocol(self.s.dataset, ds, device=self.s.device, seed=spec.seed, **options)
        several = len({r.get("architecture") for r in trained}) > 1
        kind = ds.meta.get("kind", "selection")
        rows = []
        for r in trained:
            arch = r.get("architecture", spec.model)
            row = {"method": f"{spec.method} [{arch}]" if several else spec.method, "size": len(ds),
                   "seed": spec.seed + int(r.get("seed", 0)), "ratio": len(ds) / self.pool_size, "model": arch,
                   "protocol": spec.protocol, "kind": kind, "select_seconds": seconds}
            rows.append({**row, **{k: v for k, v in r.items() if k not in row}})
        return rows

    def _drawn_set(self, spec: RowSpec, pool: np.ndarray) -> tuple[DistilledSet, float]:
        """The seed's pool (full) or selection as a set the dc protocol trains on."""
        d = self.s.dataset
        if spec.kind == "full":
            idx, seconds = pool, 0.0
        else:
            idx, _, seconds = self._selected(spec, pool)
        idx = np.sort(idx)
        meta = {"kind": "full" if spec.kind == "full" else "selection", "method": spec.method,
                "source_fingerprint": d.fingerprint}
        return DistilledSet(X=d.X[idx], y=d.y[idx], classes=d.classes, indices=idx, meta=meta), seconds

    # --- what rows share ------------------------------------------------------------------------------------------
    def _draw(self, spec: RowSpec, ds: DistilledSet) -> None:
        """Keep a synthetic set's first samples for the report's image grids (seed 0, at most 8 sets)."""
        if ds.meta.get("kind") == "synthetic" and spec.seed == 0 and len(self.images) < 8 and self.s.dataset.is_image:
            self.images.append({"title": spec.method, "X": ds.X[:200].tolist(), "y": ds.y[:200].tolist(),
                                "classes": list(ds.classes)})

    def _selected(self, spec: RowSpec, pool: np.ndarray) -> tuple[np.ndarray, np.ndarray | None, float]:
        """(chosen training rows, weights, seconds) of ``spec.selector`` at ``spec.size`` for its seed (cached)."""
        from .select import get_selector

        d, key = self.s.dataset, (spec.selector, spec.size, spec.seed)
        if key not in self.selections:
            pool_ds = Dataset(X=d.X[pool], y=d.y[pool], classes=d.classes, test=None, name=f"{d.name}[pool]",
                              info=dict(d.info))
            selector = get_selector(spec.selector, size=spec.size, random_state=spec.seed, **spec.params)
            t0 = time.perf_counter()
            selector.fit(pool_ds)
            # a probe reused from another size of the curve still counts, as if trained for this selection
            select_seconds = time.perf_counter() - t0 + float(getattr(selector, "reused_seconds_", 0.0))
            chosen = pool[np.asarray(selector.indices_, dtype=np.int64)]
            self.selections[key] = (chosen, getattr(selector, "weights_", None), select_seconds)
        return self.selections[key]

    def _teacher_probs(self, seed: int, rows: np.ndarray, pool: np.ndarray, val_idx: np.ndarray) -> np.ndarray:
        if seed not in self.teachers:  # a resumed run: retrain the seed's full model (deterministic)
            self._train(pool, seed, val_idx, keep_teacher=True)
        return softmax(self.teachers[seed][rows].astype(np.float64) / self.s.temperature).astype(np.float32)

    def _train(self, idx: np.ndarray | None, seed: int, val_idx: np.ndarray, *, X=None, y=None, weights=None,
               soft=None, soft_temperature: float = 1.0, budget_steps: int | None = None,
               keep_teacher: bool = False) -> dict:
        """Train a fresh model on rows ``idx`` (or on ``X``, ``y``) under the recipe; test it once."""
        d, cfg = self.s.dataset, self.s.recipe
        if idx is not None:  # samples in ascending row order: a subset equal to the pool trains as the full row
            order = np.argsort(idx, kind="stable")
            idx = idx[order]
            X, y = self.X_model[idx], d.y[idx]
            weights = None if weights is None else np.asarray(weights, dtype=np.float64)[order]
            soft = None if soft is None else np.asarray(soft)[order]
        net = build_model(self.s.model, self.pre.model_shape, d.n_classes, seed=seed)
        validation = (self.X_model[val_idx], d.y[val_idx]) if len(val_idx) else None
        row_cfg = scaled_patience(cfg, len(y)) if budget_steps is None else replace(
            cfg, max_steps=int(budget_steps), min_steps=0, patience_steps=0, patience=0, epochs=1, max_epochs=1)
        if soft is not None:
            row_cfg = replace(row_cfg, soft_temperature=float(soft_temperature))
        result = training.train(net, X, y, row_cfg, sample_weight=weights, soft_labels=soft, validation=validation,
                                device=self.s.device, seed=seed, description="train")
        pred = training.predict_logits(result.model, self.X_test, device=self.s.device).argmax(axis=1)
        if keep_teacher:
            self.teachers[seed] = training.predict_logits(result.model, self.X_model, device=self.s.device)
        val = max((h["val_accuracy"] for h in result.history if h.get("val_accuracy") is not None), default=None)
        return {"test_accuracy": float((pred == d.test.y).mean()), "val_accuracy": val,
                "train_seconds": result.seconds, "validation_seconds": result.validation_seconds,
                "epochs": result.epochs, "steps": result.steps, "best_step": result.best_step,
                "stop_reason": result.stop_reason, "weighted": weights is not None, "soft_labels": soft is not None,
                "class_accuracy": per_class_accuracy(pred, d.test.y, d.n_classes)}


def run_plan(plan: list[RowSpec], runner: RowRunner, run: _RunDir, *, progress: bool | Callable[[dict], None],
             render: Callable[[], None]) -> None:
    """Run every planned row not finished yet, appending its rows to ``run``; ``render`` after each method."""
    bar = None
    if progress is True:
        from .progress import bar as progress_bar

        bar = progress_bar(len(plan), desc=f"evaluate {runner.s.dataset.name}", unit="row")
    notify = progress if callable(progress) else None
    current = None
    with reuse_probes():  # one probe per (pool, method settings) across the sizes of a curve
        try:
            for spec in plan:
                if current is not None and spec.method != current:
                    render()
                current = spec.method
                if not all(key in run.done for key in spec.done_keys):
                    for row in runner.rows(spec):
                        run.append(row)
                        if notify is not None:
                            notify(row)
                        if bar is not None:
                            bar.set_postfix(method=row["method"], size=row["size"], acc=f"{row['test_accuracy']:.4f}")
                if bar is not None:
                    bar.update(1)
            render()
        except KeyboardInterrupt:
            render()
            raise
        finally:
            if bar is not None:
                bar.close()


def collect(done: dict, plan: list[RowSpec], context: dict, images: list[dict]) -> Report:
    """The report of the finished rows, in plan order (method, then size and seed)."""
    order = {label: i for i, label in enumerate(dict.fromkeys(spec.method for spec in plan))}
    rows = sorted(done.values(), key=lambda r: (order.get(r["method"], len(order)), r["method"], r["size"], r["seed"]))
    return Report(rows=rows, context=context, images=images)


def _run_key(s: Settings) -> dict:
    """What a resumed run must share with the run it continues (run.json)."""
    key = {"fingerprint": s.dataset.fingerprint, "model": s.model, "recipe": s.recipe.to_dict(),
           "validation_fraction": s.validation_fraction, "validation_max": s.validation_max,
           "use_weights": s.use_weights, "protocol": s.protocol, "temperature": s.temperature,
           "protocol_options": {k: list(v) if isinstance(v, tuple) else v for k, v in s.protocol_options.items()}}
    if not s.baselines:  # added only when off, so runs made before the switch existed still resume
        key["baselines"] = False
    if s.protocol == "dc":  # dc once applied to synthetic sets only; such runs must not be resumed as "every set"
        key["protocol_scope"] = "every set"
    return key


def rows_included(s: Settings) -> str:
    """The report header's sentence on which rows the table holds."""
    parts = []
    if s.baselines:
        parts.append("full data and random subsets (the baselines)")
    else:
        kept = [name for name, on in (("full data", s.full), ("random subsets", "random" in s.methods)) if on]
        parts.append("baselines off" + (f" (kept as named: {' and '.join(kept)})" if kept else
                                        ": no full-data or random rows"))
    others = [m for m in s.methods if m != "random"]
    if others:
        parts.append("selections by " + ", ".join(others))
    if s.budgeted_full:
        parts.append("full data for each random row's step count (full (budgeted))")
    if s.soft_methods:
        parts.append("soft-label rows (+soft) of " + ", ".join(s.soft_methods))
    if s.loaded:
        parts.append(f"{len(s.loaded)} loaded set{'s' if len(s.loaded) > 1 else ''} ("
                     + ", ".join(label for _, label in s.loaded) + ")")
    return "; ".join(parts)


def _protocol_rule(s: Settings) -> str:
    """The training rule of every row: the recipe's budget rule, or the dc protocol's recipe."""
    if s.protocol != "dc":
        return budget_rule(s.recipe)
    o = s.protocol_options
    epochs = f"{o['epochs']} epochs" if o.get("epochs") else "300 epochs (1000 with a set's DSA augmentation)"
    return (f"the dataset-condensation protocol for every set: fresh networks, SGD momentum 0.9, weight decay 5e-4, "
            f"learning rate {o.get('lr') or '0.01 (or the set recorded one)'} cut x0.1 at half of training, batch "
            f"{o.get('batch_size', 256)}, {epochs}, final-epoch test accuracy, no early stopping; drawn sets (full, "
            f"random, selections) train one model per seed on that seed's draw, each loaded set "
            f"{o.get('n_models', 5)} models")


def run_context(s: Settings, pool_size: int, n_val: int, command: str | None) -> dict:
    """The report's context: data, model, recipe, protocol, what rows it holds, the ratio's one denominator."""
    d = s.dataset
    dc = s.protocol == "dc"
    model = (("/".join(s.protocol_options.get("architectures") or ())
              or ("convnet" if d.is_image else "mlp")) + " (dc protocol; a synthetic set: its own unless "
             "architectures are given)") if dc else s.model
    rows = rows_included(s)
    context = {
        "dataset": d.name, "fingerprint": d.fingerprint, "n_train": len(d), "pool_size": pool_size,
        "validation_size": n_val, "test_size": len(d.test), "n_features": d.n_features,
        "sample_shape": list(d.sample_shape), "classes": list(d.classes), "model": model,
        "recipe": s.recipe.to_dict(), "device": s.device, "seeds": list(s.seeds), "use_weights": s.use_weights,
        "protocol": s.protocol, "budget_rule": _protocol_rule(s), "soft_label_teacher": (
            f"the seed's full-data {s.model} (same rule), probabilities at temperature {s.temperature}"
            if s.soft_methods else None),
        "environment": environment(s.device), "command": command, "baselines": s.baselines,
        "rows_included": rows, "ratio_denominator": pool_size,
        "protocol_note": (f"Each row names its model and protocol (every row: "
                          f"{'dc' if dc else s.protocol + ', ' + s.model}). ratio = size / {pool_size:,}, the "
                          "training rows of the pool, for every row of the table (loaded sets included); validation "
                          "rows for early stopping come from the training split and are excluded from that pool"),
    }
    if s.two_d:
        context["points"] = {"X": d.X[:POINTS_MAX].tolist(), "y": d.y[:POINTS_MAX].tolist()}
    return context


def evaluate(
    dataset: Dataset, *, methods: Sequence[str] = ("random",), ratios: Sequence[float] | str = (0.1,),
    model: str = "mlp", seeds: int | Sequence[int] = 3, distilled: Sequence[str | os.PathLike | DistilledSet] = (),
    use_weights: bool = False, protocol: str = "same", protocol_options: dict | None = None,
    out: str | os.PathLike | None = None, resume: bool = False, overwrite: bool = False,
    train_config: TrainConfig | None = None, method_params: dict[str, dict] | None = None,
    validation_fraction: float = 0.1, validation_max: int = 5000, device: str = "auto",
    progress: bool | Callable[[dict], None] = True, command: str | None = None, budget: str = "converge",
    epochs: int = EQUAL_EPOCHS, budgeted_full: bool = False, soft_labels: Sequence[str] | bool = (),
    temperature: float = 4.0, baselines: bool = True,
) -> Report:
    """Train a fresh model on the full pool, random subsets, selected subsets and loaded sets; test each.

    Pipeline: checked :class:`Settings` -> :func:`plan_rows` (one :class:`RowSpec` per set, model, protocol and
    seed) -> :class:`RowRunner` trains and tests each row -> :func:`collect` -> :class:`~datadistill.report.Report`.

    Args:
        dataset: the data, with a test split (``load`` makes one when the source has none).
        methods: registered selector names (``datadistill.select.REGISTRY``).
        ratios: subset sizes as fractions of the training pool, each in (0, 1] (or ``"0.01,0.1"``).
        model: a model zoo name (``datadistill.models.MODELS``).
        seeds: number of seeds (0..n-1) or explicit seeds; each seed re-draws validation rows, model
            initialisation, batch order and the selection's ``random_state``.
        distilled: saved DistilledSet directories (or objects) made from this same data set.
        use_weights: train selected/loaded sets with their per-sample weights when they have them.
        protocol: ``same`` (the recipe below for every row) or ``dc`` (every set, full, random, selections and
            loaded sets alike, by ``datadistill.synth.protocol.evaluate_protocol``: ConvNet for images, fixed
            epochs, SGD; one model per seed for drawn sets, ``n_models`` for a loaded set).
        protocol_options: keyword arguments for ``evaluate_protocol`` (``n_models``, ``architectures``,
            ``epochs``, ...), e.g. ``{"architectures": ("convnet", "mlp", "resnet18")}`` for cross-architecture.
        out: run directory: ``rows.jsonl`` grows as rows finish; report.json/.md/.html and figures/ are
            rewritten after each method and at the end.
        resume, overwrite: continue a run in ``out`` (finished rows are skipped) or replace it.
        train_config: the recipe (default :func:`default_recipe` of ``model``).
        method_params: extra keyword arguments per selector name, e.g. ``{"kcenter": {"per_class": None}}``.
        validation_fraction, validation_max: the early-stopping validation split taken from training rows.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        progress: show a progress bar (True), nothing (False), or call ``progress(row)`` as each row finishes.
        command: the command line to record in the report.
        budget, epochs: ``converge`` (default: every row to convergence under one step rule) or ``epochs`` (the
            same ``epochs`` for every row, no early stopping); ignored when ``train_config`` is given.
        budgeted_full: add "full (budgeted)" rows: full data trained for the random row's number of steps.
        soft_labels: methods (or True for all, random included) that also get a "+soft" row trained on a
            teacher's soft labels at ``temperature`` (the teacher: this seed's full-data model).
        temperature: softening temperature of those labels.
        baselines: add the full-data and random rows (default; every comparison needs the random line);
            False: only the sets asked for (name ``full`` or ``random`` in ``methods`` to keep either).

    Every row carries its ``model`` and ``protocol``; ``ratio`` is a fraction of one denominator for the whole
    table, the seed's training pool (``context["ratio_denominator"]`` rows), stated in the report.

    Raises:
        ConfigError: unknown model, method or protocol; a ratio outside (0, 1]; bad seeds; nothing to evaluate.
        DataError: the data set has no test split.
        ArtifactError: ``out`` exists (without resume/overwrite) or belongs to another run; a distilled
            set made from other data.
    """
    s = _check_settings(
        dataset, methods=methods, ratios=ratios, model=model, seeds=seeds, distilled=distilled,
        use_weights=use_weights, protocol=protocol, protocol_options=protocol_options, train_config=train_config,
        method_params=method_params, validation_fraction=validation_fraction, validation_max=validation_max,
        device=device, budget=budget, epochs=epochs, budgeted_full=budgeted_full, soft_labels=soft_labels,
        temperature=temperature, baselines=baselines)
    out_path = Path(out) if out is not None else None
    run = _RunDir(out_path, resume, overwrite)
    n_val = len(s.split(s.seeds[0])[1])
    pool_size = len(s.dataset) - n_val
    run.check_context(_run_key(s))
    context = run_context(s, pool_size, n_val, command)
    plan = plan_rows(s, pool_size)
    runner = RowRunner(s, pool_size, run.done)

    def render() -> None:
        if out_path is not None and run.done:
            collect(run.done, plan, context, runner.images).render(out_path)

    run_plan(plan, runner, run, progress=progress, render=render)
    return collect(run.done, plan, context, runner.images)


def per_class_accuracy(pred: np.ndarray, y: np.ndarray, n_classes: int) -> list[float | None]:
    """Accuracy on each class's test samples (None for a class absent from the test split)."""
    out: list[float | None] = []
    for c in range(n_classes):
        mask = y == c
        out.append(float((pred[mask] == c).mean()) if mask.any() else None)
    return out


def load_report(directory: str | os.PathLike) -> Report:
    """The report of a finished or interrupted run directory (rebuilt from rows.jsonl when needed)."""
    directory = Path(directory)
    if (directory / REPORT_JSON).exists():
        return Report.from_json(directory / REPORT_JSON)
    raise ArtifactError(f"{directory}: no {REPORT_JSON}; run `datadistill evaluate ... --out {directory}` first")
