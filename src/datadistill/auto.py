"""`auto`: the smallest selected set predicted to stay within ``max_drop`` accuracy points of full data, verified.

Protocol (what :func:`auto` does, in order):

1. **Split.** A stratified validation split is carved from the *training* rows first (``validation_fraction``);
   the rest is the *pool* that every selector chooses from. The search never sees the test split.
2. **Search** (cheap proxies): a proxy is the chosen ``model`` trained for a small, fixed number of optimiser
   steps (``proxy_steps``, more for survivors) and scored on the validation rows. The full pool trained the
   same way (same steps, same seeds) gives the reference accuracy; a candidate (method, size, soft labels)
   is *predicted within the drop* when its mean proxy accuracy is at most ``max_drop`` points below it.

   - ``halving`` (default): successive halving over methods x a geometric grid of sizes (1%..50% of the
     pool). Each rung trains every surviving candidate with more seeds and steps; after a rung, each method
     is ranked by the smallest size at which it is predicted within the drop, the best third survive, and
     each survivor keeps the sizes around its crossing (walking up or down the grid when the crossing moved).
   - ``bayes``: optuna's TPE sampler over (method, log size), minimising log(size) plus a penalty for every
     point of predicted drop beyond ``max_drop``.
   - ``genetic``: after one screening pass over methods x sizes, evolves the subset itself at a fixed size
     (the grid size just below the best method's crossing): the population starts from the best selection at
     that size and random subsets with its class counts; fitness = proxy validation accuracy; crossover
     samples each class's rows from the union of two parents (class counts kept); mutation swaps a few rows
     for unchosen rows of the same class. Its best subset is chosen when predicted within the drop.

3. **Verify** the chosen candidate with the real model (:func:`datadistill.evaluation.default_recipe`, early
   stopping on the validation rows) on the subset, on the full pool and on random subsets with the subset's
   class counts, over ``verify_seeds`` seeds, tested on the test split. When the verified drop exceeds
   ``max_drop`` the next larger grid size is verified (the best method there); a subset whose mean test
   accuracy is below the random subsets' is never returned: the next-best method at that size is tried, else
   the random subset (the seed-0 draw) is returned, and the result says so.

``budget_minutes`` bounds search and verification together. Verification keeps the larger of 40% of it and an
estimate from the measured proxy step time (``3 x verify_seeds`` trainings of the recipe's fewest steps); the
search gets the rest and stops early when the next proxy would overrun it, keeping the best so far. The first
verification always completes (a set is never returned unverified); later sizes are verified only while the
budget lasts. A budget that cannot cover two proxies and that estimate is refused, naming the minimum.
"""

from __future__ import annotations

import hashlib
import json
import math
import numbers
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from .data.artifact import DistilledSet, atomic_write, jsonable
from .data.dataset import Dataset
from .errors import ArtifactError, ConfigError

SEARCHES = ("halving", "bayes", "genetic")
DEFAULT_METHODS = ("stratified", "entropy", "margin", "el2n", "forgetting", "herding")
PROBE_METHODS = ("entropy", "margin", "least-confidence", "el2n", "gradnorm", "forgetting")
MIN_RATIO, MAX_RATIO, N_SIZES = 0.01, 0.5, 8
PROXY_STEPS = 200
SEARCH_SHARE = 0.6   # of budget_minutes at most; verification keeps the rest, or its estimate when larger
RUNGS, ETA = 3, 3    # successive halving: rungs, and 1/ETA of the methods survive each (at least 2)
RANDOM_METHODS = ("stratified", "random")  # their subsets are random draws: compared with random, not against it
BAYES_TRIALS = 40
BAYES_PENALTY = 5.0  # objective units (log size) per point of predicted drop beyond max_drop
GA_POPULATION, GA_GENERATIONS, GA_MUTATION = 8, 8, 0.02
SET_DIR, SEARCH_JSON, SEARCH_MD = "set", "search.json", "search.md"
OUT_FILES = (SET_DIR, SEARCH_JSON, SEARCH_MD)


def size_grid(pool_size: int, n_classes: int, ratios: Sequence[float] | None = None) -> list[int]:
    """Candidate sizes: ``ratios`` of the pool (default: 8 geometric steps from 1% to 50%), at least one per class."""
    if ratios is None:
        ratios = np.geomspace(MIN_RATIO, MAX_RATIO, N_SIZES)
    sizes = sorted({min(pool_size, max(n_classes, int(round(r * pool_size)))) for r in ratios})
    return sizes


def _arm_name(method: str, soft: bool) -> str:
    return f"{method}+soft" if soft else method


@dataclass
class AutoResult:
    """What :func:`auto` found: the set, every candidate tried, the verification and the time spent."""

    set: DistilledSet
    chosen: dict
    candidates: list[dict]
    verification: list[dict]
    verified: dict
    settings: dict
    timings: dict
    notes: list[str] = field(default_factory=list)
    fallback: str | None = None
    environment: dict = field(default_factory=dict)

    @property
    def within_drop(self) -> bool:
        return bool(self.verified.get("within_drop"))

    def to_dict(self) -> dict:
        return jsonable({"set": {"dir": SET_DIR, "method": self.set.method, "size": len(self.set)},
                         "chosen": self.chosen, "verified": self.verified, "fallback": self.fallback,
                         "notes": self.notes, "settings": self.settings, "timings": self.timings,
                         "candidates": self.candidates, "verification": self.verification,
                         "environment": self.environment, "protocol": PROTOCOL})

    def summary(self) -> str:
        """One line: the size kept, its verified accuracy against full data and random, the time."""
        v = self.verified
        what = f"{v['method']}{' + soft labels' if v.get('soft') else ''}"
        return (f"auto kept {v['size']} of {self.settings['n_train']} training samples ({what}, "
                f"{100 * v['ratio']:.2f}% of the pool): test accuracy {100 * v['subset_mean']:.2f} ± "
                f"{100 * v['subset_std']:.2f}% vs full {100 * v['full_mean']:.2f} ± {100 * v['full_std']:.2f}% "
                f"(drop {v['drop']:.2f} points, max {self.settings['max_drop']}) and random "
                f"{100 * v['random_mean']:.2f} ± {100 * v['random_std']:.2f}%; {self.timings['total_seconds']:.0f} s")

    def to_markdown(self) -> str:
        s, v = self.settings, self.verified
        pm = "±"
        lines = [
            f"# datadistill auto: {s['dataset']}", "",
            f"- search: {s['search']}; methods: {', '.join(s['methods'])}; soft labels searched: {s['soft_labels']}",
            f"- model: {s['model']}; proxy: {s['model']} for {s['proxy_steps']}+ optimiser steps, accuracy on "
            f"{s['validation_size']} validation rows carved from the training split (pool {s['pool_size']} rows)",
            f"- max drop: {s['max_drop']} points; budget: "
            f"{'none' if s['budget_minutes'] is None else str(s['budget_minutes']) + ' min'}; seed {s['random_state']}",
            f"- verification: {s['verify_seeds']} seeds, {s['budget_rule']}; tested on {s['test_size']} test rows",
            "",
            "## Result", "",
            self.summary(), "",
            f"- within max drop: {'yes' if v['within_drop'] else 'no'}; loses to random: "
            f"{'yes' if v['loses_to_random'] else 'no'}",
        ]
        if self.fallback:
            lines.append(f"- fallback: {self.fallback}")
        lines += [f"- note: {n}" for n in self.notes]
        lines += ["", f"Chosen by the search: {self.chosen['method']}{' + soft' if self.chosen['soft'] else ''} at "
                  f"{self.chosen['size']} rows, proxy accuracy {100 * self.chosen['proxy_mean']:.2f} {pm} "
                  f"{100 * self.chosen['proxy_std']:.2f}% vs full-data proxy {100 * self.chosen['reference_mean']:.2f}%",
                  "", "## Verification (real model, test split; accuracy % mean ± std over seeds)", "",
                  "| method | soft | size | subset | full | random | drop (points) | vs random | outcome |",
                  "|---|---|---:|---:|---:|---:|---:|---:|---|"]
        for r in self.verification:
            lines.append(f"| {r['method']} | {'yes' if r['soft'] else 'no'} | {r['size']} | "
                         f"{100 * r['subset_mean']:.2f} {pm} {100 * r['subset_std']:.2f} | "
                         f"{100 * r['full_mean']:.2f} {pm} {100 * r['full_std']:.2f} | "
                         f"{100 * r['random_mean']:.2f} {pm} {100 * r['random_std']:.2f} | {r['drop']:.2f} | "
                         f"{100 * (r['subset_mean'] - r['random_mean']):+.2f} | {r['outcome']} |")
        lines += ["", "## Candidates tried (proxy accuracy on the validation rows, % mean ± std over seeds)", "",
                  "| phase | method | soft | size | ratio | steps | seeds | proxy | full proxy | drop | seconds |",
                  "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for c in self.candidates:
            lines.append(f"| {c['phase']} | {c['method']} | {'yes' if c['soft'] else 'no'} | {c['size']} | "
                         f"{100 * c['ratio']:.2f}% | {c['steps']} | {len(c['seeds'])} | "
                         f"{100 * c['proxy_mean']:.2f} {pm} {100 * c['proxy_std']:.2f} | "
                         f"{100 * c['reference_mean']:.2f} | {c['predicted_drop']:.2f} | {c['seconds']:.2f} |")
        t = self.timings
        lines += ["", "## Time (seconds)", "",
                  f"- setup (split, preprocessing, timing one proxy step): {t['setup_seconds']:.1f}",
                  f"- search: {t['search_seconds']:.1f} (selection {t['selection_seconds']:.1f}, proxies "
                  f"{t['proxy_seconds']:.1f})",
                  f"- verification: {t['verify_seconds']:.1f}",
                  f"- total: {t['total_seconds']:.1f}", ""]
        env = self.environment
        if env:
            lines += [f"Machine: {env.get('machine')}; {env.get('platform')}; {env.get('date')}", ""]
        lines += ["## Protocol", "", PROTOCOL, ""]
        return "\n".join(lines)

    def save(self, out: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``out/set`` (the DistilledSet), ``out/search.json`` and ``out/search.md``."""
        out = Path(out)
        check_out(out, overwrite)
        out.mkdir(parents=True, exist_ok=True)
        self.set.save(out / SET_DIR, overwrite=overwrite)
        atomic_write(out / SEARCH_JSON, json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n")
        atomic_write(out / SEARCH_MD, self.to_markdown())
        return out


PROTOCOL = (
    "A stratified validation split is carved from the training rows first; selectors choose from the rest (the "
    "pool). The search scores cheap proxies (the model trained for a small fixed number of optimiser steps) on "
    "the validation rows against the full pool trained the same way, and keeps the smallest candidate predicted "
    "within the drop. Verification trains the real model (the evaluation recipe, early stopping on the "
    "validation rows) on the chosen subset, on the full pool and on random subsets with the same class counts, "
    "per seed, and measures accuracy on the test split, which the search never sees. A subset whose mean test "
    "accuracy is below the random subsets' is never returned.")


def check_out(out: Path, overwrite: bool) -> None:
    """Refuse an output folder that exists (without ``overwrite``) or holds anything auto does not write."""
    if not (out.exists() or out.is_symlink()):
        return
    if out.is_symlink() or not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a directory; choose another --out")
    entries = [e.name for e in out.iterdir()]
    if entries and not overwrite:
        raise ArtifactError(f"{out}: already exists; choose another --out or pass --overwrite")
    foreign = [n for n in entries if n not in OUT_FILES and not any(n.startswith(f".{f}.") for f in OUT_FILES)]
    if foreign:
        raise ArtifactError(f"{out}: holds entries auto did not write ({', '.join(sorted(foreign)[:5])}); refusing "
                            "to replace it: choose another --out")


def _methods_with_probe(methods: Sequence[str], method_params: dict) -> list[str]:
    from .select import REGISTRY
    from .select.features import FeatureSelector
    from .select.scored import ScoreSelector

    out = []
    for m in methods:
        cls = REGISTRY[m]
        if issubclass(cls, ScoreSelector) or (issubclass(cls, FeatureSelector)
                                              and (method_params.get(m) or {}).get("features") == "embedding"):
            out.append(m)
    return out


def check_options(*, max_drop: float = 1.0, model: str = "mlp", budget_minutes: float | None = None,
                  search: str = "halving", methods: Sequence[str] | str | None = None, soft_labels: bool = False,
                  method_params: dict | None = None, validation_fraction: float = 0.1, verify_seeds: int = 3,
                  proxy_steps: int = PROXY_STEPS, ratios: Sequence[float] | None = None, random_state: int = 0
                  ) -> tuple[list[str], dict]:
    """Refuse bad :func:`auto` options before any data is read (ConfigError); returns (methods, method_params)."""
    from .models import check_known
    from .select import REGISTRY

    if (isinstance(max_drop, bool) or not isinstance(max_drop, numbers.Real) or not math.isfinite(max_drop)
            or not 0 <= max_drop < 100):
        raise ConfigError(f"max_drop must be a number of accuracy points in [0, 100), got {max_drop!r} (e.g. 1.0 "
                          "keeps the set within 1 point of full data)")
    if search not in SEARCHES:
        raise ConfigError(f"unknown search '{search}'; choose one of: {', '.join(SEARCHES)}")
    check_known(model)
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral) or random_state < 0:
        raise ConfigError(f"random_state must be a non-negative integer, got {random_state!r}")
    if budget_minutes is not None and (isinstance(budget_minutes, bool) or not isinstance(budget_minutes, numbers.Real)
                                       or not math.isfinite(budget_minutes) or budget_minutes <= 0):
        raise ConfigError(f"budget_minutes must be a positive number of minutes, got {budget_minutes!r}")
    if not 0 < validation_fraction < 1:
        raise ConfigError(f"validation_fraction must be in (0, 1), got {validation_fraction}")
    for name, value in (("verify_seeds", verify_seeds), ("proxy_steps", proxy_steps)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
            raise ConfigError(f"{name} must be a positive integer, got {value!r}")
    if ratios is not None:
        bad = [r for r in ratios if isinstance(r, bool) or not isinstance(r, numbers.Real) or not 0 < r < 1]
        if bad or not len(ratios):
            raise ConfigError(f"ratios must be fractions of the pool in (0, 1), got {list(ratios)!r}")
    if methods is None:
        methods = list(PROBE_METHODS[:3] + ("el2n",)) if soft_labels else list(DEFAULT_METHODS)
        methods = list(dict.fromkeys(methods))
    elif isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ConfigError("no methods to search; e.g. methods=['stratified', 'entropy', 'herding']")
    unknown = [m for m in methods if m not in REGISTRY]
    if unknown:
        raise ConfigError(f"unknown selection method{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                          f"choose from: {', '.join(sorted(REGISTRY))}")
    method_params = {k: dict(v) for k, v in (method_params or {}).items()}
    stray = sorted(set(method_params) - set(methods))
    if stray:
        raise ConfigError(f"method_params given for {', '.join(stray)}, which is not among the methods searched")
    if soft_labels:
        without = [m for m in methods if m not in _methods_with_probe(methods, method_params)]
        if without:
            raise ConfigError(f"soft labels need a probe, and {', '.join(without)} ha{'ve' if len(without) > 1 else 's'} "
                              f"none; the methods with a probe are {', '.join(PROBE_METHODS)} (and geometric "
                              "methods with features='embedding'): drop --soft-labels or choose among those")
    return methods, method_params


class _Search:
    """The shared state of one auto run: data in model space, selections, proxy results, the clock."""

    def __init__(self, dataset: Dataset, *, model: str, methods: list[str], method_params: dict, soft: bool,
                 validation_fraction: float, proxy_steps: int, random_state: int, device: str,
                 ratios, max_drop: float, bar, start: float, search_deadline: float | None):
        from . import training
        from .data.preprocess import Preprocessor

        self.dataset, self.model, self.methods, self.method_params = dataset, model, methods, method_params
        self.max_drop, self.random_state, self.device = float(max_drop), int(random_state), device
        self.proxy_steps = int(proxy_steps)
        train_rows, val_rows = training.validation_split(dataset.y, validation_fraction, random_state=random_state)
        if len(val_rows) == 0:
            raise ConfigError(f"{dataset.name}: too few training rows for a validation split at fraction "
                              f"{validation_fraction}; raise validation_fraction or add rows")
        self.pool, self.val = train_rows, val_rows
        rng = np.random.default_rng([int(random_state), 3])
        halves = [[], []]
        for c in np.unique(dataset.y[val_rows]):  # stratified halves of the validation rows
            rows_c = rng.permutation(val_rows[dataset.y[val_rows] == c])
            halves[0].append(rows_c[0::2])
            halves[1].append(rows_c[1::2])
        self.val_sets = {"all": val_rows, "fit": np.sort(np.concatenate(halves[0])),
                         "check": np.sort(np.concatenate(halves[1]))}
        self.pool_ds = Dataset(X=dataset.X[self.pool], y=dataset.y[self.pool], classes=dataset.classes, test=None,
                               name=f"{dataset.name}[pool]", info=dict(dataset.info))
        self.pre = Preprocessor.fit(dataset)
        self.X = self.pre.transform(dataset.X)
        self.sizes = size_grid(len(self.pool), dataset.n_classes, ratios)
        probe = set(_methods_with_probe(methods, method_params))
        self.arms = [(m, False) for m in methods] + ([(m, True) for m in methods if m in probe] if soft else [])
        self.bar, self.start, self.deadline = bar, start, search_deadline
        self.selectors: dict[str, object] = {}
        self.selections: dict[tuple[str, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self.proxy_cache: dict[tuple, float] = {}
        self.records: list[dict] = []
        self.record_index: dict[tuple, dict] = {}
        self.stopped = False
        self.selection_seconds = 0.0
        self.proxy_seconds = 0.0
        self.step_seconds = 0.0

    # --- time ----------------------------------------------------------------------------------
    def proxy_estimate(self, steps: int) -> float:
        return steps * self.step_seconds

    def out_of_time(self, steps: int = 0) -> bool:
        """True (and remembered in ``stopped``) when ``steps`` more proxy steps would overrun the search's share."""
        if self.deadline is not None and time.perf_counter() + self.proxy_estimate(steps) > self.deadline:
            self.stopped = True
        return self.stopped

    def time_one_step(self) -> float:
        """Seconds per proxy optimiser step, measured on this machine (a warm-up step, then a few timed)."""
        from . import training
        from .guard import proxy_config
        from .models import build_model

        cfg = proxy_config(self.model, 1)
        rows = self.pool[: min(len(self.pool), cfg.batch_size)]
        net = build_model(self.model, self.pre.model_shape, self.dataset.n_classes, seed=0)
        training.train(net, self.X[rows], self.dataset.y[rows], cfg, device=self.device, seed=0)
        timed = 5
        result = training.train(net, self.X[rows], self.dataset.y[rows], replace(cfg, max_steps=timed),
                                device=self.device, seed=0)
        t0 = time.perf_counter()
        training.accuracy(net, self.X[self.val], self.dataset.y[self.val], device=self.device)
        self.step_seconds = result.seconds / timed + (time.perf_counter() - t0) / max(1, self.proxy_steps)
        return self.step_seconds

    # --- selections ------------------------------------------------------------------------------
    def select(self, method: str, k: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Training rows (sorted) chosen by ``method`` at size ``k`` from the pool, and their weights."""
        key = (method, k)
        if key not in self.selections:
            from .select import get_selector

            t0 = time.perf_counter()
            sel = self.selectors.get(method)
            if sel is None:
                sel = get_selector(method, size=k, random_state=self.random_state,
                                   **self.method_params.get(method, {}))
                sel.fit(self.pool_ds)
                self.selectors[method] = sel
            else:
                _reselect(sel, self.pool_ds, k)
            pos = np.asarray(sel.indices_, dtype=np.int64)
            order = np.argsort(pos)
            weights = getattr(sel, "weights_", None)
            self.selections[key] = (self.pool[pos[order]], None if weights is None else np.asarray(weights)[order])
            self.selection_seconds += time.perf_counter() - t0
        return self.selections[key]

    def soft_targets(self, method: str, rows: np.ndarray) -> tuple[np.ndarray, float]:
        """The probe's class probabilities for training ``rows`` (pool rows) and their temperature."""
        sel = self.selectors[method]
        return sel.soft_labels_for(np.searchsorted(self.pool, rows)), float(sel.temperature)

    # --- proxies -----------------------------------------------------------------------------------
    def proxy(self, key, rows: np.ndarray, steps: int, seed: int, soft_method: str | None = None,
              val: str = "all") -> float:
        from .guard import proxy_accuracy

        cache_key = (key, steps, seed, val)
        if cache_key not in self.proxy_cache:
            soft, temperature = self.soft_targets(soft_method, rows) if soft_method else (None, 1.0)
            t0 = time.perf_counter()
            self.proxy_cache[cache_key] = proxy_accuracy(
                self.X, self.dataset.y, rows, self.val_sets[val], model=self.model, model_shape=self.pre.model_shape,
                n_classes=self.dataset.n_classes, steps=steps, seed=seed, soft=soft, temperature=temperature,
                device=self.device)
            self.proxy_seconds += time.perf_counter() - t0
            if self.bar is not None:
                self.bar.update(1)
        return self.proxy_cache[cache_key]

    def reference(self, steps: int, seeds: int, val: str = "all") -> list[float]:
        return [self.proxy("full", self.pool, steps, s, val=val) for s in range(seeds)]

    def evaluate(self, method: str, soft: bool, k: int, steps: int, seeds: int, phase: str,
                 rows: np.ndarray | None = None, label: str | None = None, val: str = "all") -> dict:
        """Proxy accuracy of one candidate (``rows`` given: an evolved subset) -> a record of the search.

        ``val``: the validation rows scored: ``all``, or the halves ``fit`` and ``check`` (the genetic search
        evolves on one half and judges its best subset on the other).
        """
        from .report import mean_std

        if rows is None:
            key = (method, soft, k)
        else:
            key = (label, soft, hashlib.sha1(np.ascontiguousarray(rows, dtype=np.int64).data).hexdigest())
        if (key, steps, seeds, val) in self.record_index:  # asked again (bayes): the same proxies, one record
            return self.record_index[(key, steps, seeds, val)]
        t0 = time.perf_counter()
        ref = self.reference(steps, seeds, val)
        if rows is None:
            rows, _ = self.select(method, k)
        accs = [self.proxy(key, rows, steps, s, soft_method=method if soft else None, val=val) for s in range(seeds)]
        mean, std = mean_std(accs)
        ref_mean, _ = mean_std(ref)
        record = {"phase": phase, "method": label or method, "base_method": method, "soft": soft, "size": int(k),
                  "ratio": k / len(self.pool), "steps": int(steps), "seeds": list(range(seeds)),
                  "validation": val, "validation_size": len(self.val_sets[val]),
                  "proxy_accuracy": accs, "proxy_mean": mean, "proxy_std": std, "reference_mean": ref_mean,
                  "predicted_drop": 100 * (ref_mean - mean), "within_drop": 100 * (ref_mean - mean) <= self.max_drop,
                  "seconds": time.perf_counter() - t0}
        self.records.append(record)
        self.record_index[(key, steps, seeds, val)] = record
        if self.bar is not None:
            self.bar.set_postfix(method=_arm_name(record["method"], soft), size=k, proxy=f"{mean:.3f}")
        return record


def _verification_steps(cfg, pool_size: int) -> int:
    """The fewest optimiser steps one verification training takes under ``cfg`` (for the budget's estimate)."""
    if cfg.max_steps:
        return int(min(cfg.max_steps, cfg.min_steps + cfg.patience_steps) if cfg.patience_steps else cfg.max_steps)
    return int(cfg.planned_epochs(pool_size) * math.ceil(pool_size / cfg.batch_size))


def _reselect(selector, dataset: Dataset, k: int) -> None:
    """Choose ``k`` rows with a fitted selector, reusing what ``fit`` computed (scores, features, probe)."""
    selector.size, selector.ratio = int(k), None
    selector._fit_parts(dataset, int(k))


def choose(records: Sequence[dict]) -> dict | None:
    """The smallest candidate predicted within the drop (best proxy accuracy among equals); when none is,
    the best candidate at the largest size tried."""
    if not records:
        return None
    within = [r for r in records if r["within_drop"]]
    if within:
        return min(within, key=lambda r: (r["size"], r["predicted_drop"]))
    top = max(r["size"] for r in records)
    return min((r for r in records if r["size"] == top), key=lambda r: r["predicted_drop"])


def _latest(records: Sequence[dict]) -> dict[tuple, dict]:
    """Per (method, soft, size): the record at the highest fidelity (steps, then seeds)."""
    out: dict[tuple, dict] = {}
    for r in records:
        key = (r["method"], r["soft"], r["size"])
        old = out.get(key)
        if old is None or (r["steps"], len(r["seeds"])) >= (old["steps"], len(old["seeds"])):
            out[key] = r
    return out


# --- searches ---------------------------------------------------------------------------------------
def _halving(s: _Search) -> dict | None:
    sizes = s.sizes
    windows = {arm: list(range(len(sizes))) for arm in s.arms}
    arms = list(s.arms)
    final: list[dict] = []
    for rung in range(RUNGS):
        steps, seeds = s.proxy_steps * 2**rung, min(rung + 1, 3)
        rung_records: dict[tuple, dict[int, dict]] = {arm: {} for arm in arms}
        stopped = False

        def run(arm, i, rung=rung, steps=steps, seeds=seeds, rung_records=rung_records) -> bool:
            if i in rung_records[arm]:
                return True
            if s.records and s.out_of_time(steps * (seeds + 1)):
                return False
            rung_records[arm][i] = s.evaluate(arm[0], arm[1], sizes[i], steps, seeds, f"halving rung {rung}")
            return True

        for arm in arms:
            for i in windows[arm]:
                if not run(arm, i):
                    stopped = True
                    break
            if stopped:
                break
            # walk the grid until the crossing (smallest size within the drop) is bracketed at this fidelity
            while not stopped:
                done = rung_records[arm]
                inside = [i for i, r in done.items() if r["within_drop"]]
                if not inside and max(done) + 1 < len(sizes):
                    stopped = not run(arm, max(done) + 1)
                elif inside and min(inside) == min(done) and min(done) > 0:
                    stopped = not run(arm, min(done) - 1)
                else:
                    break
            if stopped:
                break
        final = [r for recs in rung_records.values() for r in recs.values()]
        if stopped or rung == RUNGS - 1:
            break

        def crossing(arm, rung_records=rung_records) -> tuple:
            done = rung_records[arm]
            inside = sorted(i for i, r in done.items() if r["within_drop"])
            if inside:
                return (inside[0], done[inside[0]]["predicted_drop"])
            return (len(sizes), done[max(done)]["predicted_drop"]) if done else (len(sizes) + 1, math.inf)

        ranked = sorted(arms, key=crossing)
        arms = ranked[:max(min(2, len(ranked)), math.ceil(len(ranked) / ETA))]
        for arm in arms:
            c = crossing(arm)[0]
            c = min(c, len(sizes) - 1)
            windows[arm] = [i for i in (c - 1, c, c + 1) if 0 <= i < len(sizes)]
    return choose(_latest(s.records).values() if stopped or not final else final)


def _bayes(s: _Search, max_trials: int = BAYES_TRIALS) -> dict | None:
    try:
        import optuna
    except ImportError:  # pragma: no cover - a dependency of the package
        raise ConfigError("search 'bayes' needs optuna (pip install 'optuna>=3')") from None
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    steps, seeds = s.proxy_steps * 2, 2
    names = [_arm_name(*arm) for arm in s.arms]
    lo, hi = s.sizes[0], s.sizes[-1]
    study = optuna.create_study(direction="minimize", sampler=optuna.samplers.TPESampler(seed=s.random_state))
    seen: set[tuple] = set()
    for _ in range(max_trials):
        if s.records and s.out_of_time(steps * (seeds + 1)):
            break
        trial = study.ask()
        name = trial.suggest_categorical("method", names)
        k = trial.suggest_int("size", lo, hi, log=True) if hi > lo else lo
        method, soft = s.arms[names.index(name)]
        r = s.evaluate(method, soft, k, steps, seeds, "bayes")
        seen.add((name, k))
        shortfall = max(0.0, r["predicted_drop"] - s.max_drop)
        study.tell(trial, math.log(k) + BAYES_PENALTY * shortfall)
        if len(seen) >= len(names) * (hi - lo + 1):
            break  # every candidate tried
    return choose(_latest(s.records).values())


def _crossover(y: np.ndarray, a: np.ndarray, b: np.ndarray, counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    union = np.union1d(a, b)
    return np.sort(np.concatenate([rng.choice(union[y[union] == c], size=int(n), replace=False)
                                   for c, n in enumerate(counts) if n]))


def _mutate(y: np.ndarray, child: np.ndarray, pool: np.ndarray, n_swaps: int, rng: np.random.Generator) -> np.ndarray:
    child = child.copy()
    for pos in rng.choice(len(child), size=min(n_swaps, len(child)), replace=False):
        c = y[child[pos]]
        free = np.setdiff1d(pool[y[pool] == c], child, assume_unique=True)
        if len(free):
            child[pos] = rng.choice(free)
    return np.sort(child)


def _genetic(s: _Search) -> dict | None:
    from .guard import random_like

    # screening: one cheap pass over methods x sizes locates each method's crossing
    for arm in s.arms:
        for k in s.sizes:
            if s.records and s.out_of_time(s.proxy_steps * 2):
                return choose(s.records)
            s.evaluate(arm[0], arm[1], k, s.proxy_steps, 1, "genetic screening")
    screened = choose(s.records)
    idx = s.sizes.index(screened["size"])
    k = s.sizes[idx - 1] if screened["within_drop"] and idx > 0 else screened["size"]
    at_k = sorted((r for r in s.records if r["size"] == k), key=lambda r: r["predicted_drop"])
    best = at_k[0]
    method, soft = best["method"], best["soft"]
    steps, seeds = s.proxy_steps * 2, 1
    rng = np.random.default_rng([s.random_state, 7])
    y = s.dataset.y
    seeds_rows = [s.select(r["method"], k)[0] for r in at_k if r["soft"] == soft][:2]
    population = list(seeds_rows)
    while len(population) < GA_POPULATION:
        population.append(random_like(y, population[0], s.pool, rng))
    counts = np.bincount(y[population[0]], minlength=s.dataset.n_classes)
    label = f"genetic({_arm_name(method, soft)})"

    def fitness(rows, generation: int) -> dict:
        return s.evaluate(method, soft, k, steps, seeds, f"genetic generation {generation}", rows=rows, label=label,
                          val="fit")

    scored = []
    for rows in population:
        if s.out_of_time(steps):
            break
        scored.append((fitness(rows, 0), rows))
    n_swaps = max(1, int(round(GA_MUTATION * k)))
    for generation in range(1, GA_GENERATIONS + 1):
        if len(scored) < 2 or s.out_of_time(steps * 2):
            break
        scored.sort(key=lambda t: -t[0]["proxy_mean"])
        nxt = scored[:2]  # elitism
        while len(nxt) < GA_POPULATION and not s.out_of_time(steps):
            pa, pb = (min(rng.choice(len(scored), size=2, replace=False)) for _ in range(2))  # tournaments of 2
            child = _mutate(y, _crossover(y, scored[pa][1], scored[pb][1], counts, rng), s.pool, n_swaps, rng)
            nxt.append((fitness(child, generation), child))
        scored = nxt
    if not scored:
        return screened
    _, rows = max(scored, key=lambda t: t[0]["proxy_mean"])
    # the fittest subset was chosen on one half of the validation rows: judge it on the other half
    top = s.evaluate(method, soft, k, steps, 3, "genetic best, held-out half", rows=rows, label=label, val="check")
    top["rows"] = rows
    if top["within_drop"] and top["size"] < screened["size"] or (top["within_drop"] and not screened["within_drop"]):
        return top
    return screened


# --- verification -----------------------------------------------------------------------------------
class _Verifier:
    def __init__(self, s: _Search, cfg, seeds: int, bar):
        self.s, self.cfg, self.seeds, self.bar = s, cfg, int(seeds), bar
        self.full: list[float] | None = None
        self.random: dict[tuple, tuple[list[float], np.ndarray]] = {}
        self.seconds = 0.0
        self.X_test = s.pre.transform(s.dataset.test.X)

    def _train(self, rows, seed, soft=None, temperature=1.0) -> float:
        from . import training
        from .evaluation import scaled_patience
        from .models import build_model

        s = self.s
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        rows = rows[order]
        cfg = scaled_patience(self.cfg, len(rows))
        if soft is not None:
            soft = np.asarray(soft)[order]
            cfg = replace(cfg, soft_temperature=float(temperature))
        t0 = time.perf_counter()
        net = build_model(s.model, s.pre.model_shape, s.dataset.n_classes, seed=seed)
        result = training.train(net, s.X[rows], s.dataset.y[rows], cfg, soft_labels=soft,
                                validation=(s.X[s.val], s.dataset.y[s.val]), device=s.device, seed=seed)
        acc = training.accuracy(result.model, self.X_test, s.dataset.test.y, device=s.device)
        self.seconds += time.perf_counter() - t0
        if self.bar is not None:
            self.bar.update(1)
        return acc

    def full_accuracy(self) -> list[float]:
        if self.full is None:
            self.full = [self._train(self.s.pool, seed) for seed in range(self.seeds)]
        return self.full

    def random_accuracy(self, rows: np.ndarray) -> tuple[list[float], np.ndarray]:
        """Test accuracy of random subsets with ``rows``' class counts (one per seed) and the seed-0 draw."""
        from .guard import random_like

        key = tuple(np.bincount(self.s.dataset.y[rows], minlength=self.s.dataset.n_classes))
        if key not in self.random:
            draws = [random_like(self.s.dataset.y, rows, self.s.pool, np.random.default_rng([self.s.random_state, 99, seed]))
                     for seed in range(self.seeds)]
            self.random[key] = ([self._train(d, seed) for seed, d in enumerate(draws)], draws[0])
        return self.random[key]

    def verify(self, cand: dict, rows: np.ndarray) -> dict:
        from .report import mean_std

        s = self.s
        soft, temperature = (s.soft_targets(cand["base_method"], rows) if cand["soft"] else (None, 1.0))
        sub = [self._train(rows, seed, soft, temperature) for seed in range(self.seeds)]
        full = self.full_accuracy()
        rand, _ = self.random_accuracy(rows)
        (sm, ss), (fm, fs), (rm, rs) = mean_std(sub), mean_std(full), mean_std(rand)
        is_random = cand["base_method"] in RANDOM_METHODS and not cand["soft"] and "rows" not in cand
        return {"method": cand["method"], "base_method": cand["base_method"], "soft": cand["soft"],
                "size": len(rows), "ratio": len(rows) / len(s.pool), "subset_accuracy": sub, "full_accuracy": full,
                "random_accuracy": rand, "subset_mean": sm, "subset_std": ss, "full_mean": fm, "full_std": fs,
                "random_mean": rm, "random_std": rs, "drop": 100 * (fm - sm), "within_drop": 100 * (fm - sm) <= s.max_drop,
                "loses_to_random": bool(sm < rm and not is_random), "outcome": ""}


def _check_dataset(dataset, model: str) -> None:
    """ConfigError unless ``dataset`` is a Dataset with a test split that ``model`` can take."""
    from .models import check_model_for

    if not isinstance(dataset, Dataset):
        raise ConfigError(f"auto needs a datadistill Dataset, got {type(dataset).__name__}")
    check_model_for(model, images=dataset.is_image, data_name=dataset.name, shape=dataset.sample_shape)
    if dataset.test is None:
        raise ConfigError(f"{dataset.name} has no test split; auto verifies its result on one "
                          "(load the data with datadistill.load, which makes a stratified split)")


def _search_deadline(s: _Search, cfg, step: float, budget: float, budget_minutes: float, verify_seeds: int,
                     start: float) -> float:
    """When the search must stop so that verification fits in ``budget`` seconds; ConfigError when nothing fits.

    Args:
        step: measured seconds per proxy optimiser step.
        start: ``time.perf_counter()`` when auto began.
    """
    one_proxy = s.proxy_estimate(s.proxy_steps)
    verify_steps = _verification_steps(cfg, len(s.pool))
    reserve = 1.2 * 3 * int(verify_seeds) * verify_steps * step  # subset, full and random per seed
    elapsed = time.perf_counter() - start
    need = max((elapsed + 2 * one_proxy) / SEARCH_SHARE, elapsed + 2 * one_proxy + reserve)
    if budget < need:
        raise ConfigError(
            f"budget_minutes={budget_minutes} is too small: one {s.model} proxy ({s.proxy_steps} optimiser "
            f"steps at {1000 * step:.2f} ms per step, measured here) takes about {one_proxy:.1f} s and the "
            f"search trains at least two (the full-data reference and one candidate); verification trains "
            f"{3 * int(verify_seeds)} models of at least {verify_steps} steps (about {reserve:.0f} s), and the "
            f"search gets at most {int(100 * SEARCH_SHARE)}% of the budget: give at least "
            f"{math.ceil(need / 60 * 100) / 100:.2f} minutes (more leaves room for selection and the search)")
    return start + budget - max((1 - SEARCH_SHARE) * budget, reserve)


def _settings(s: _Search, cfg, dev: str, *, max_drop, model, search, methods, soft_labels, method_params,
              budget_minutes, verify_seeds, random_state, command) -> dict:
    """The run's data, options, size grid, proxy timing and verification recipe, as the search report shows them."""
    from .evaluation import budget_rule

    dataset = s.dataset
    return {"dataset": dataset.name, "fingerprint": dataset.fingerprint, "n_train": len(dataset),
            "pool_size": len(s.pool), "validation_size": len(s.val), "test_size": len(dataset.test),
            "max_drop": float(max_drop), "model": model, "search": search, "methods": methods,
            "soft_labels": bool(soft_labels), "method_params": method_params, "sizes": s.sizes,
            "proxy_steps": s.proxy_steps, "proxy_step_seconds": s.step_seconds,
            "budget_minutes": budget_minutes, "verify_seeds": int(verify_seeds), "random_state": int(random_state),
            "recipe": cfg.to_dict(), "budget_rule": budget_rule(cfg), "device": dev, "command": command}


def _auto_result(s: _Search, chosen: dict, verified_result: tuple, notes: list[str], settings: dict,
                 timings: dict, dev: str) -> AutoResult:
    """The AutoResult of a finished search and verification; the set's meta records the choice."""
    from .evaluation import environment

    subset, verified, verification, fallback = verified_result
    subset.meta["timings"]["auto_seconds"] = timings["total_seconds"]
    candidates = [{k: v for k, v in r.items() if k != "rows"} for r in s.records]
    chosen_record = {k: v for k, v in chosen.items() if k != "rows"}
    subset.meta["auto"] = {"search": settings["search"], "max_drop": settings["max_drop"], "chosen": chosen_record,
                           "verified": {k: verified[k] for k in ("method", "soft", "size", "subset_mean", "subset_std",
                                                                 "full_mean", "full_std", "random_mean", "random_std",
                                                                 "drop", "within_drop")},
                           "fallback": fallback, "notes": notes, "seconds": timings["total_seconds"]}
    return AutoResult(set=subset, chosen=chosen_record, candidates=candidates, verification=verification,
                      verified=verified, settings=settings, timings=timings, notes=notes, fallback=fallback,
                      environment=environment(dev))


def auto(dataset: Dataset, *, max_drop: float = 1.0, model: str = "mlp", budget_minutes: float | None = None,
         search: str = "halving", methods: Sequence[str] | str | None = None, soft_labels: bool = False,
         method_params: dict | None = None, ratios: Sequence[float] | None = None, proxy_steps: int = PROXY_STEPS,
         validation_fraction: float = 0.1, verify_seeds: int = 3, train_config=None, random_state: int = 0,
         device: str | None = None, progress: bool = True, out: str | os.PathLike | None = None,
         overwrite: bool = False, command: str | None = None) -> AutoResult:
    """Search method x size (x soft labels) with cheap proxies; return the smallest set verified within ``max_drop``.

    Args:
        dataset: training data with a test split (the test split is used only for verification).
        max_drop: accuracy points the set may lose against full data, in [0, 100).
        model: the model the set is for (logreg, mlp, convnet, resnet18); proxies are this model trained briefly.
        budget_minutes: wall-clock budget for search + verification (None: no limit).
        search: ``halving`` (default), ``bayes`` (optuna TPE) or ``genetic`` (evolves the subset at one size).
        methods: selection methods to search (default: stratified, entropy, margin, el2n, forgetting, herding;
            with ``soft_labels``: entropy, margin, least-confidence, el2n).
        soft_labels: also search each probe method with its probe's soft labels.
        method_params: per-method selector parameters, e.g. ``{"entropy": {"model": "logreg"}}``.
        ratios: candidate sizes as fractions of the pool (default: 8 geometric steps from 1% to 50%).
        proxy_steps: optimiser steps of the cheapest proxy (survivors of halving get 2x, 4x).
        validation_fraction: share of the training rows carved out (stratified) to score proxies and stop
            verification training early.
        verify_seeds: seeds of the verification (subset, full and random rows each).
        train_config: the verification recipe (default: ``evaluation.default_recipe(model)``).
        random_state: seeds the split, selectors, proxies and random subsets.
        device: "auto"/None (CUDA when present), "cpu" or "cuda".
        progress: a progress bar on stderr (silent when stderr is not a terminal).
        out: when given, write ``out/set`` (the DistilledSet), ``out/search.json`` and ``out/search.md``.
        overwrite: replace an ``out`` folder written by auto.
        command: the command line, recorded in the search report.
    """
    from . import training
    from .evaluation import default_recipe
    from .progress import bar as progress_bar

    methods, method_params = check_options(
        max_drop=max_drop, model=model, budget_minutes=budget_minutes, search=search, methods=methods,
        soft_labels=soft_labels, method_params=method_params, validation_fraction=validation_fraction,
        verify_seeds=verify_seeds, proxy_steps=proxy_steps, ratios=ratios, random_state=random_state)
    _check_dataset(dataset, model)
    if out is not None:
        check_out(Path(out), overwrite)
    cfg = train_config or default_recipe(model)
    dev = str(training.resolve_device(device))
    start = time.perf_counter()
    budget = None if budget_minutes is None else 60.0 * float(budget_minutes)
    bar = progress_bar(desc=f"auto ({search})", unit="model", enabled=progress, leave=False)
    try:
        s = _Search(dataset, model=model, methods=methods, method_params=method_params, soft=bool(soft_labels),
                    validation_fraction=validation_fraction, proxy_steps=proxy_steps, random_state=random_state,
                    device=dev, ratios=ratios, max_drop=max_drop, bar=bar, start=start,
                    search_deadline=None)
        step = s.time_one_step()
        if budget is not None:
            s.deadline = _search_deadline(s, cfg, step, budget, budget_minutes, verify_seeds, start)
        setup_seconds = time.perf_counter() - start
        chosen = {"halving": _halving, "bayes": _bayes, "genetic": _genetic}[search](s)
        search_seconds = time.perf_counter() - start - setup_seconds
        notes: list[str] = []
        if s.stopped:
            notes.append("the search stopped when its share of the budget was spent; the best candidate so far "
                         "was verified")
        result = _verify_and_build(s, chosen, cfg, verify_seeds, bar, notes, start, budget)
    finally:
        bar.close()
    total = time.perf_counter() - start
    settings = _settings(s, cfg, dev, max_drop=max_drop, model=model, search=search, methods=methods,
                         soft_labels=soft_labels, method_params=method_params, budget_minutes=budget_minutes,
                         verify_seeds=verify_seeds, random_state=random_state, command=command)
    timings = {"setup_seconds": setup_seconds, "search_seconds": search_seconds,
               "verify_seconds": total - setup_seconds - search_seconds, "selection_seconds": s.selection_seconds,
               "proxy_seconds": s.proxy_seconds, "total_seconds": total}
    res = _auto_result(s, chosen, result, notes, settings, timings, dev)
    if out is not None:
        res.save(out, overwrite=overwrite)
    return res


def _verify_and_build(s: _Search, chosen: dict, cfg, verify_seeds: int, bar, notes: list[str], start: float,
                      budget: float | None):
    """Verify ``chosen`` (stepping up sizes, falling back as the protocol says) -> (set, verified, rows, fallback)."""
    v = _Verifier(s, cfg, verify_seeds, bar)
    latest = list(_latest(s.records).values())

    def spent() -> bool:
        return budget is not None and time.perf_counter() - start >= budget

    def rows_of(cand: dict) -> np.ndarray:
        return cand["rows"] if "rows" in cand else s.select(cand["base_method"], cand["size"])[0]

    def best_at(k: int, exclude: set) -> dict | None:
        options = [r for r in latest if r["size"] == k and "rows" not in r and not r["method"].startswith("genetic")
                   and (r["method"], r["soft"]) not in exclude]
        return min(options, key=lambda r: r["predicted_drop"]) if options else None

    verification: list[dict] = []
    cand, fallback, final, final_rows = chosen, None, None, None
    while True:
        rows = rows_of(cand)
        row = v.verify(cand, rows)
        verification.append(row)
        k = row["size"]
        if row["loses_to_random"]:
            row["outcome"] = "below random"
            alt = None if spent() else best_at(k, {(cand["method"], cand["soft"]), (cand["base_method"], cand["soft"])})
            if alt is not None:
                alt_rows = rows_of(alt)
                alt_row = v.verify(alt, alt_rows)
                verification.append(alt_row)
                if not alt_row["loses_to_random"]:
                    row, rows, cand = alt_row, alt_rows, alt
                else:
                    alt_row["outcome"] = "below random"
            if row["loses_to_random"]:
                rand_acc, draw = v.random_accuracy(rows)
                fallback = (f"{cand['method']} at {k} rows scored below random subsets of the same size in "
                            "verification; returned a random subset with the same class counts (the seed-0 draw, "
                            f"{100 * rand_acc[0]:.2f}%; its row shows the {len(rand_acc)} random draws) instead")
                row = dict(row, method="random (fallback)", base_method="stratified", soft=False,
                           subset_accuracy=rand_acc, subset_mean=row["random_mean"], subset_std=row["random_std"],
                           drop=100 * (row["full_mean"] - row["random_mean"]), loses_to_random=False,
                           outcome="fallback: random")
                row["within_drop"] = row["drop"] <= s.max_drop
                verification.append(row)
                rows, cand = draw, {"method": "stratified", "base_method": "stratified", "soft": False, "size": k}
        final, final_rows = row, rows
        if row["within_drop"]:
            row["outcome"] = row["outcome"] or "returned"
            break
        larger = [size for size in s.sizes if size > k]
        if not larger:
            notes.append(f"no size up to {k} rows ({100 * k / len(s.pool):.0f}% of the pool) stayed within "
                         f"{s.max_drop} points in verification; returned the largest verified, with its drop")
            row["outcome"] = row["outcome"] or "returned (drop above max)"
            break
        if spent():
            notes.append("the time budget was spent before a size within the drop was verified; returned the last "
                         "verified set, with its drop")
            row["outcome"] = row["outcome"] or "returned (drop above max; budget spent)"
            break
        row["outcome"] = row["outcome"] or "drop above max: next size"
        nxt = _calibrated_next(cand, row, larger, best_at, s.max_drop)
        if nxt is None:
            base = cand.get("base_method", cand["method"])
            nxt = {"method": base, "base_method": base, "soft": cand["soft"], "size": larger[0]}
        cand = nxt
    subset = _build_set(s, cand, final_rows)
    return subset, final, verification, fallback


def _calibrated_next(cand: dict, row: dict, larger: list[int], best_at, max_drop: float) -> dict | None:
    """The next candidate after a verified drop above ``max_drop``, skipping sizes the proxies cannot rescue.

    Cheap proxies saturate below the verified model, so they under-predict a small set's drop. The gap seen in
    this verification (verified drop minus the candidate's predicted drop, at least 0) is added to the other
    sizes' predictions; the next candidate is the best one at the smallest larger size whose corrected
    prediction is within ``max_drop`` (the largest size when none is), instead of stepping one size at a time.
    """
    predicted = cand.get("predicted_drop")
    offset = max(0.0, row["drop"] - predicted) if predicted is not None and math.isfinite(predicted) else 0.0
    options = [best_at(size, set()) for size in larger]
    for opt in options:
        if opt is not None and opt.get("predicted_drop") is not None and opt["predicted_drop"] + offset <= max_drop:
            return opt
    known = [opt for opt in options if opt is not None]
    if offset > 0 and known:
        return known[-1]
    return known[0] if known else None


def _build_set(s: _Search, cand: dict, rows: np.ndarray) -> DistilledSet:
    ds = s.dataset
    method = cand["base_method"] if cand["method"].startswith("genetic") else cand["method"]
    sel = s.selectors.get(cand["base_method"])
    weights = None
    if not cand["method"].startswith("genetic") and (cand["base_method"], len(rows)) in s.selections:
        kept, w = s.selections[(cand["base_method"], len(rows))]
        weights = w if np.array_equal(kept, rows) else None
    params = dict(sel.get_params()) if sel is not None and method != "stratified" else {}
    params.pop("size", None)
    params.pop("ratio", None)
    meta = {"kind": "selection", "method": f"auto:{cand['method']}", "parameters": jsonable(
                {k: v if isinstance(v, (str, int, float, bool, type(None), list, tuple, dict)) else repr(v)
                 for k, v in params.items()}),
            "seed": s.random_state, "source": ds.name, "source_fingerprint": ds.fingerprint,
            "source_samples": len(ds), "timings": {"select_seconds": s.selection_seconds}}
    soft = None
    if cand.get("soft"):
        soft, temperature = s.soft_targets(cand["base_method"], rows)
        meta["soft_labels"] = {"temperature": temperature, "teacher": f"{cand['base_method']} probe"}
    validation = {"fraction": len(s.val) / len(ds), "random_state": s.random_state, "rows": len(s.val)}
    return DistilledSet(X=ds.X[rows], y=ds.y[rows], classes=ds.classes, indices=np.asarray(rows, dtype=np.int64),
                        weights=weights, soft_labels=soft, meta=meta).record_source(ds, validation=validation)
