"""The Selector contract (scikit-learn shaped), per-class budgets and the method registry."""

from __future__ import annotations

import copy
import math
import numbers
import time
import warnings
from typing import NamedTuple

import numpy as np

from ..data.artifact import DistilledSet
from ..data.dataset import Dataset
from ..errors import ConfigError, DatadistillWarning, DataError
from ..estimator import Estimator, as_dataset
from ..params import check_parameter_types, check_random_state
from ..scores.uncertainty import softmax

REGISTRY: dict[str, type[Selector]] = {}


def register(cls: type[Selector]) -> type[Selector]:
    """Class decorator: make a selector available by its ``name``."""
    REGISTRY[cls.name] = cls
    return cls


def check_size(size: int | None, ratio: float | None) -> None:
    """Refuse anything but exactly one of a positive whole ``size`` or a ``ratio`` in (0, 1] (no data needed)."""
    if (size is None) == (ratio is None):
        raise ConfigError("give exactly one of size (a count) or ratio (a fraction in (0, 1])")
    if ratio is not None:
        if isinstance(ratio, bool) or not isinstance(ratio, numbers.Real) or not 0 < ratio <= 1:
            raise ConfigError(f"ratio must be in (0, 1], got {ratio!r}")
    elif (isinstance(size, bool) or not isinstance(size, numbers.Real) or not math.isfinite(size)
          or int(size) != size or size < 1):
        raise ConfigError(f"size must be a positive integer, got {size!r}")


def resolve_size(n: int, size: int | None, ratio: float | None) -> int:
    """The number of samples to keep from ``n``, given exactly one of ``size`` and ``ratio``."""
    check_size(size, ratio)
    if ratio is not None:
        return max(1, int(round(ratio * n)))
    if size > n:
        raise DataError(f"asked for {size} samples but the training set has only {n}")
    return int(size)


def allocate(counts: np.ndarray, k: int, per_class: str | None) -> np.ndarray | None:
    """Split a budget of ``k`` over classes with ``counts`` samples each.

    ``proportional``: largest-remainder rounding of k * share, at least one per present class when k allows;
    ``balanced``: as equal as the class sizes allow, leftovers going to larger classes;
    ``None``: no per-class budget (returns None).
    """
    if per_class is None or per_class == "none":
        return None
    counts = np.asarray(counts, dtype=np.int64)
    present = counts > 0
    if per_class == "proportional":
        exact = k * counts / counts.sum()
        alloc = np.floor(exact).astype(np.int64)
        if k >= present.sum():
            alloc[present & (alloc == 0)] = 1
        while alloc.sum() > k:
            i = int(np.argmax(np.where(alloc > 1, alloc - exact, -np.inf)))
            alloc[i] -= 1
        order = np.argsort(-(exact - alloc), kind="stable")
        i = 0
        while alloc.sum() < k:
            c = order[i % len(order)]
            if alloc[c] < counts[c]:
                alloc[c] += 1
            i += 1
        return alloc
    if per_class == "balanced":
        alloc = np.zeros_like(counts)
        remaining = k
        while remaining > 0:
            open_ = np.flatnonzero(alloc < counts)
            share = max(1, remaining // len(open_))
            for c in open_[np.argsort(-(counts[open_] - alloc[open_]), kind="stable")]:
                add = min(share, counts[c] - alloc[c], remaining)
                alloc[c] += add
                remaining -= add
                if remaining == 0:
                    break
        return alloc
    raise ConfigError(f"per_class must be 'proportional', 'balanced' or None, got {per_class!r}")


PROBE_NOTE = ("the methods with a probe are entropy, margin, least-confidence, el2n, gradnorm, forgetting, and the "
              "geometric methods with features='embedding'")


def apply_floor(budgets: np.ndarray | None, counts: np.ndarray, floor: int, k: int, classes) -> np.ndarray:
    """Raise every class's budget to ``floor``, taking the difference from the largest budgets."""
    if budgets is None:
        raise ConfigError("min_per_class needs per-class budgets; use per_class='proportional' or 'balanced'")
    if floor < 0:
        raise ConfigError(f"min_per_class must be >= 0, got {floor}")
    small = [f"'{classes[c]}' ({int(n)})" for c, n in enumerate(counts) if 0 < n < floor]
    if small:
        raise ConfigError(f"min_per_class={floor} is larger than class{'es' if len(small) > 1 else ''} "
                          f"{', '.join(small)}; lower it to at most {int(counts[counts > 0].min())}")
    present = counts > 0
    if floor * present.sum() > k:
        raise ConfigError(f"min_per_class={floor} x {int(present.sum())} classes needs {floor * int(present.sum())} "
                          f"samples but the budget is {k}; lower min_per_class or raise the size")
    out = budgets.copy()
    need = np.where(present, np.maximum(floor - out, 0), 0)
    out += need
    for _ in range(int(need.sum())):
        c = int(np.argmax(np.where(out > floor, out, -1)))
        out[c] -= 1
    return out


class Selector(Estimator):
    """Base class. Subclasses set ``name``, ``summary``, ``cost`` and implement :meth:`_select_pool`.

    Args:
        size: how many samples to keep, or
        ratio: the fraction of the training set to keep, in (0, 1].
        per_class: "proportional" (default), "balanced" or None (choose globally). A budget that leaves a
            class with no sample (e.g. size 3 over 10 classes) is kept, with a ``DatadistillWarning``
            naming those classes.
        random_state: seed; the same seed gives the same subset (probes included).
        min_per_class: a floor on every class's budget, so rare classes are not lost (taken from the
            largest classes' budgets).

    Fitted attributes: ``indices_`` (kept rows of the training split, sorted by selection order within
    each class), ``weights_`` (originals each kept sample stands for, or ones), ``scores_`` (per-sample
    scores when the method has them, else None), ``seconds_``.
    """

    name = "base"
    summary = ""
    cost = ""

    def __init__(self, size: int | None = None, ratio: float | None = None, *,
                 per_class: str | None = "proportional", random_state: int | None = 0, min_per_class: int = 0):
        self.size = size
        self.ratio = ratio
        self.per_class = per_class
        self.random_state = random_state
        self.min_per_class = min_per_class

    # --- hooks for subclasses ------------------------------------------------------------------
    diagnostic_names: tuple[str, ...] = ()  # per-pool diagnostics _select_pool returns; fitted as lists

    def _prepare(self, dataset: Dataset, rng: np.random.Generator) -> None:
        """Compute whatever the method needs over the whole set (scores, features); default: nothing."""

    def _select_pool(self, pool: np.ndarray, k: int, rng: np.random.Generator):
        """Choose ``k`` of the training rows in ``pool``.

        Returns ``(chosen rows, weights or None, diagnostics)`` where ``diagnostics`` maps names listed in
        ``diagnostic_names`` to this pool's value (each becomes a fitted list, one value per pool). The older
        two-item form ``(chosen rows, weights or None)`` is still accepted.
        """
        raise NotImplementedError

    # --- the contract ---------------------------------------------------------------------------
    def fit(self, dataset: Dataset, y=None, *, executor: Executor | None = None) -> Selector:
        """Choose the subset of ``dataset``'s training samples; ``fit(X, y)`` takes arrays (or pandas) instead.

        ``executor``: how the independent parts and each pool's selection are mapped (default: in this
        process, one after another); :class:`datadistill.parallel.DaskExecutor` runs them on Dask.
        """
        dataset = as_dataset(dataset, y, method="fit")
        self.check_params()
        start = time.perf_counter()
        k = resolve_size(len(dataset), self.size, self.ratio)
        self.scores_ = None
        self._prepare(dataset, np.random.default_rng(self.random_state))
        self._fit_parts(dataset, k, executor, start)
        return self

    def _fit_parts(self, dataset: Dataset, k: int, executor: Executor | None = None,
                   start: float | None = None) -> None:
        """Plan the parts for a budget of ``k``, map them with ``executor`` and set the fitted attributes
        (after ``_prepare``; choosing again with another ``k`` reuses what it computed)."""
        start = time.perf_counter() if start is None else start
        results = (executor or SERIAL).map_parts(self, self.partitions(dataset, k))
        self._finish(dataset, results, start)

    def check_params(self) -> None:
        """Refuse a bad size, ratio or seed before any data is loaded (``fit`` calls this first)."""
        check_size(self.size, self.ratio)
        check_random_state(self.random_state)

    def partitions(self, dataset: Dataset, k: int) -> list[tuple[np.ndarray, int, list[int]]]:
        """(pool rows, budget, seed) per independent part: one per class, or the whole set when per_class=None.

        Each part draws from its own seeded generator, so parts can run anywhere (e.g. on Dask workers) in
        any order and give the same subset as a sequential run.
        """
        budgets = allocate(dataset.class_counts(), k, self.per_class)
        if self.min_per_class:
            budgets = apply_floor(budgets, dataset.class_counts(), int(self.min_per_class), k, dataset.classes)
        if budgets is not None:
            _warn_unrepresented(dataset, budgets, k, self.per_class)
        base_seed = [] if self.random_state is None else [int(self.random_state)]
        if budgets is None:
            return [(np.arange(len(dataset)), k, [*base_seed, 2**32 - 1])]  # a part id no class uses
        return [(dataset.class_indices(c), int(kc), [*base_seed, c]) for c, kc in enumerate(budgets) if kc > 0]

    def _select_part(self, pool: np.ndarray, k: int, seed: list[int], executor: Executor | None = None,
                     diagnostics: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """One part: (chosen rows, weights), the pool chosen by ``executor.select_pool``; the pool's
        diagnostics are appended to ``diagnostics`` (name -> list of per-pool values) when it is given."""
        rng = np.random.default_rng(seed if seed else None)
        if k >= len(pool):  # nothing to choose (e.g. a pool narrowed to k rows): every method keeps all of it
            return np.asarray(pool, dtype=np.int64), np.ones(len(pool))
        out = (executor or SERIAL).select_pool(self, pool, k, rng)
        idx, w = out[0], out[1]
        if len(out) > 2 and out[2] and diagnostics is not None:
            for name, value in out[2].items():
                diagnostics.setdefault(name, []).append(value)
        idx = np.asarray(idx, dtype=np.int64)
        return idx, np.ones(len(idx)) if w is None else np.asarray(w, dtype=np.float64)

    def _finish(self, dataset: Dataset, results: list, start: float) -> None:
        """Set the fitted attributes from the parts' results (PartResult, or (indices, weights) pairs)."""
        self.indices_ = np.concatenate([r[0] for r in results])
        self.weights_ = np.concatenate([r[1] for r in results])
        if len(np.unique(self.indices_)) != len(self.indices_):
            raise AssertionError(f"{self.name} chose a sample twice")  # an invariant, not user input
        for name in self.diagnostic_names:
            setattr(self, name, [])
        for r in results:
            for name, values in (r.diagnostics if isinstance(r, PartResult) else {}).items():
                if not isinstance(getattr(self, name, None), list):
                    setattr(self, name, [])
                getattr(self, name).extend(values)
        self.n_selected_ = len(self.indices_)
        self.seconds_ = time.perf_counter() - start
        self.source_fingerprint_ = dataset.fingerprint

    def transform(self, dataset: Dataset, y=None) -> DistilledSet:
        """The chosen samples of ``dataset`` (or of the arrays ``X, y`` given to fit) as a DistilledSet."""
        dataset = as_dataset(dataset, y, method="transform")
        if not hasattr(self, "indices_"):
            raise ConfigError(f"{self.name}: call fit() before transform()")
        if dataset.fingerprint != self.source_fingerprint_:
            raise DataError(f"{self.name}: transform() got a different data set from the one fit() saw")
        meta = {
            "kind": "selection",
            "method": self.name,
            "parameters": _plain(self.get_params(deep=False)),
            "seed": self.random_state,
            "source": dataset.name,
            "source_fingerprint": dataset.fingerprint,
            "source_samples": len(dataset),
            "timings": {"select_seconds": self.seconds_},
        }
        soft = None
        if getattr(self, "soft_labels", False):
            soft = self.soft_labels_for(self.indices_)
            meta["soft_labels"] = {"temperature": float(self.temperature), "teacher": f"{self.name} probe"}
        return DistilledSet(X=dataset.X[self.indices_], y=dataset.y[self.indices_], classes=dataset.classes,
                            indices=self.indices_, weights=self.weights_, soft_labels=soft,
                            meta=meta).record_source(dataset)

    def soft_labels_for(self, rows: np.ndarray) -> np.ndarray:
        """The probe's class probabilities at ``temperature`` for training ``rows`` (methods with a probe)."""
        logits = getattr(self, "probe_logits_", None)
        if logits is None:
            raise ConfigError(f"{self.name}: soft labels need a probe; {PROBE_NOTE}")
        return softmax(np.asarray(logits[rows], dtype=np.float64) / float(self.temperature)).astype(np.float32)

    def fit_transform(self, dataset: Dataset, y=None) -> DistilledSet:
        dataset = as_dataset(dataset, y, method="fit_transform")
        return self.fit(dataset).transform(dataset)


class PartResult(NamedTuple):
    """One part's outcome: chosen rows, their weights and the part's diagnostics (name -> values)."""

    indices: np.ndarray
    weights: np.ndarray
    diagnostics: dict


def run_part(selector: Selector, pool: np.ndarray, k: int, seed: list[int], executor: Executor | None = None,
             isolate: bool = False) -> PartResult:
    """Run one part of ``selector`` (``_select_part``), each pool chosen by ``executor.select_pool``; the
    result carries the part's diagnostics. ``isolate``: run on a shallow copy, as concurrent parts must."""
    part = copy.copy(selector) if isolate else selector
    diagnostics: dict = {}
    indices, weights = part._select_part(pool, k, seed, executor or SERIAL, diagnostics)
    return PartResult(indices, weights, diagnostics)


class Executor:
    """How ``fit`` maps its work: here, in this process, part after part, each pool by the selector's own
    (offline) algorithm. Subclasses change either step (:class:`datadistill.parallel.DaskExecutor`)."""

    def map_parts(self, selector: Selector, parts: list[tuple[np.ndarray, int, list[int]]]) -> list[PartResult]:
        """Run every (pool, budget, seed) part; results in the parts' order."""
        return [run_part(selector, pool, k, seed, self) for pool, k, seed in parts]

    def select_pool(self, selector: Selector, pool: np.ndarray, k: int, rng: np.random.Generator):
        """Choose ``k`` rows of ``pool``: the selector's ``_select_pool``."""
        return selector._select_pool(pool, k, rng)


SERIAL = Executor()


def _warn_unrepresented(dataset: Dataset, budgets: np.ndarray, k: int, per_class: str | None) -> None:
    """Warn when a per-class budget leaves classes with no sample (a model trained on it never predicts them)."""
    left_out = [dataset.classes[c] for c in np.flatnonzero((budgets == 0) & (dataset.class_counts() > 0))]
    if left_out:
        present = int((dataset.class_counts() > 0).sum())
        names = ", ".join(map(repr, left_out[:5])) + (" ..." if len(left_out) > 5 else "")
        warnings.warn(f"a budget of {k} samples over {present} classes (per_class={per_class!r}) leaves "
                      f"{len(left_out)} class{'es' if len(left_out) > 1 else ''} with no sample ({names}); "
                      f"models trained on it cannot predict them. Keep at least {present} samples to give every "
                      "class one", DatadistillWarning, stacklevel=4)


def _plain(params: dict) -> dict:
    out = {}
    for k, v in params.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, (list, tuple)):
            out[k] = list(v)
        else:
            out[k] = repr(v)
    return out


def get_selector(method: str, **params) -> Selector:
    """Instantiate a registered selector by name."""
    if method not in REGISTRY:
        raise ConfigError(f"unknown selection method '{method}'; choose one of: {', '.join(sorted(REGISTRY))}")
    cls = REGISTRY[method]
    check_parameter_types(cls, params, method)
    try:
        return cls(**params)
    except TypeError as exc:
        raise ConfigError(f"{method}: {exc}") from None


def select(dataset: Dataset, method: str, *, size: int | None = None, ratio: float | None = None,
           **params) -> DistilledSet:
    """One-line form: ``select(ds, "kcenter", ratio=0.1)`` -> DistilledSet."""
    return get_selector(method, size=size, ratio=ratio, **params).fit_transform(dataset)


@register
class RandomSelector(Selector):
    name = "random"
    summary = "uniformly random samples (the baseline every method must beat)"
    cost = "O(N)"

    def __init__(self, size=None, ratio=None, *, per_class=None, random_state=0, min_per_class=0):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, min_per_class=min_per_class)

    def _select_pool(self, pool, k, rng):
        return rng.choice(pool, size=k, replace=False), None


@register
class StratifiedRandomSelector(Selector):
    name = "stratified"
    summary = "random samples within each class, class shares kept (or balanced)"
    cost = "O(N)"

    def _select_pool(self, pool, k, rng):
        return rng.choice(pool, size=k, replace=False), None
