"""The Distiller contract: learn a few synthetic samples per class; resumable; returns a DistilledSet.

A subclass sets ``name``/``summary``/``needs_images`` and implements :meth:`Distiller._setup` (build
its state: optimisers, learned learning rates, expert buffers) and :meth:`Distiller._step` (one outer
iteration, returning the matching loss). The base class owns validation, preprocessing, synthetic
initialisation, the iteration loop with progress, checkpoints, learning curves and the artifact.

Determinism: every random draw of iteration ``it`` must come from :meth:`iteration_generator` (or a
seed from :meth:`iteration_seed`), so that a run resumed from a checkpoint equals an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import numbers
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .. import progress
from ..data.artifact import DistilledSet, atomic_write
from ..data.dataset import Dataset
from ..data.preprocess import Preprocessor
from ..errors import ArtifactError, ConfigError, DataError
from ..estimator import Estimator, as_dataset
from ..models import IMAGE_MODELS, build_model, check_model_options
from ..params import check_parameter_types, check_random_state, init_parameter_names
from ..training import TrainConfig, accuracy, resolve_device, train

REGISTRY: dict[str, type[Distiller]] = {}
TABULAR_OK = "dm, dc, bptt and krr (with --model mlp)"
MAX_LR = 1e8  # far above any published image learning rate; beyond it a step only blows the samples up


def register(cls: type[Distiller]) -> type[Distiller]:
    REGISTRY[cls.name] = cls
    return cls


@dataclass
class Context:
    """What a distiller's step sees: real data (model space, on device) and the synthetic parameters."""

    dataset: Dataset
    preprocessor: Preprocessor
    device: torch.device
    X_real: torch.Tensor                  # (N, ...) standardised
    y_real: torch.Tensor                  # (N,)
    class_index: list[torch.Tensor]       # rows of each class
    X_syn: torch.Tensor                   # (K * ipc, ...) leaf tensor, requires_grad
    y_syn: torch.Tensor                   # (K * ipc,)
    n_classes: int
    input_shape: tuple[int, ...]
    state: dict = field(default_factory=dict)  # method-specific tensors and optimisers

    def real_batch(self, c: int, n: int, gen: torch.Generator) -> torch.Tensor:
        """``n`` random real samples of class ``c`` (all of them if the class is smaller)."""
        idx = self.class_index[c]
        if n < len(idx):
            idx = idx[torch.randperm(len(idx), generator=gen)[:n].to(idx.device)]
        return self.X_real[idx]

    def syn_of(self, c: int, ipc: int) -> torch.Tensor:
        return self.X_syn[c * ipc:(c + 1) * ipc]


class Distiller(Estimator):
    """Base class for synthetic distillation methods.

    Args:
        ipc: synthetic images (samples) per class.
        model: network the method matches through (``convnet`` for images; ``mlp`` for tabular data).
        iterations: outer iterations.
        lr_images: learning rate of the synthetic samples.
        init: ``real`` (start from random real samples of each class) or ``noise``.
        batch_real: real samples per class per iteration.
        device: ``auto`` (CUDA when present), ``cpu`` or ``cuda``.
        random_state: seed.
        checkpoint: a file to save progress to every ``checkpoint_every`` iterations and resume from.
        model_kwargs: passed to :func:`datadistill.models.build_model` (e.g. ``width``).
        progress: show a progress bar with the current matching loss and the time left.
        time_budget: wall-clock seconds for the whole fit (set-up included); after at least one iteration,
            the loop stops before an iteration that would end past it and returns the samples as they are
            then, recording in ``meta["timings"]`` how many iterations ran and that the budget stopped it
            (with a checkpoint, a rerun continues from there). ``None``: run all ``iterations``.
        eval_every: every this many iterations (and on the initial and the final samples), train a small
            network briefly on the current samples and score it on a validation slice held out of the
            training data; the artifact holds the best-scoring samples, not necessarily the last, and
            ``meta["periodic_evaluation"]`` records every (iteration, val_accuracy) and the iteration kept.
            The slice is not used for matching. ``0``: off (all training data is matched; the last samples
            are returned).
        eval_samples: size of the validation slice (stratified; at least one sample per class); ``None``:
            10% of the training rows, at most 1000.
        eval_steps: optimiser steps of each evaluation's training (batch 256, no augmentation).
    """

    name = "base"
    summary = ""
    needs_images = False

    def __init__(self, ipc: int = 10, *, model: str = "convnet", iterations: int = 1000, lr_images: float = 1.0,
                 init: str = "real", batch_real: int = 256, device: str | None = "auto", random_state: int = 0,
                 checkpoint: str | os.PathLike | None = None, checkpoint_every: int = 50,
                 model_kwargs: dict | None = None, progress: bool = False, time_budget: float | None = None,
                 eval_every: int = 0, eval_samples: int | None = None, eval_steps: int = 200):
        self.ipc = ipc
        self.model = model
        self.iterations = iterations
        self.lr_images = lr_images
        self.init = init
        self.batch_real = batch_real
        self.device = device
        self.random_state = random_state
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.model_kwargs = model_kwargs
        self.progress = progress
        self.time_budget = time_budget
        self.eval_every = eval_every
        self.eval_samples = eval_samples
        self.eval_steps = eval_steps

    # --- helpers for subclasses -----------------------------------------------------------------
    def iteration_seed(self, it: int, stream: int = 0) -> int:
        """A seed that depends only on (random_state, iteration, stream)."""
        h = hashlib.sha256(f"{self.random_state}:{it}:{stream}".encode()).digest()
        return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF

    def iteration_generator(self, it: int, stream: int = 0) -> torch.Generator:
        return torch.Generator(device="cpu").manual_seed(self.iteration_seed(it, stream))

    def new_network(self, ctx: Context, seed: int) -> torch.nn.Module:
        """A freshly initialised network of the matching architecture, on the context's device."""
        return build_model(self.model, ctx.input_shape, ctx.n_classes, seed=seed,
                           **self._model_options()).to(ctx.device)

    def _model_options(self) -> dict:
        """``model_kwargs`` as a run uses it (``None``: no options)."""
        return dict(self.model_kwargs or {})

    def _resolved_params(self) -> dict:
        """Parameters whose value a run derives at fit time (defaults that depend on others), as it uses them."""
        return {"model_kwargs": self._model_options()}

    def params(self) -> dict:
        """The settings that decide a run's result (meta "parameters", checkpoint key), JSON-ready."""
        # get_params() with fit-time defaults resolved, so keys of checkpoints written before stay equal
        values = self.get_params(deep=False) | self._resolved_params()
        out = {}
        for n in init_parameter_names(self, skip=("progress", "checkpoint", "checkpoint_every", "time_budget")):
            v = values.get(n)
            out[n] = v if isinstance(v, (str, int, float, bool, type(None), dict, list)) else repr(v)
        return out

    # --- hooks -------------------------------------------------------------------------------
    def _setup(self, ctx: Context) -> None:
        """Build method state in ``ctx.state`` (optimisers must be created here so checkpoints restore them)."""

    def _step(self, ctx: Context, it: int) -> float:
        """One outer iteration; update ``ctx.X_syn`` (and state); return the matching loss."""
        raise NotImplementedError

    def _training_recipe(self, ctx: Context) -> dict:
        """What evaluation needs to reproduce this method's result (learned lr, augmentation, ...)."""
        return {}

    def _soft_labels(self, ctx: Context) -> np.ndarray | None:
        return None

    # --- validation ----------------------------------------------------------------------------
    def check_params(self) -> None:
        """Refuse settings that no data could make valid, before any data is loaded (``fit`` calls this first)."""
        def whole(name: str, value, low: int) -> None:
            if (isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
                    or int(value) != value or value < low):
                raise ConfigError(f"{name} must be a whole number >= {low}, got {value!r}")

        whole("ipc", self.ipc, 1)
        whole("iterations", self.iterations, 0)
        whole("batch_real (--batch-real)", self.batch_real, 1)
        whole("checkpoint_every", self.checkpoint_every, 1)
        whole("eval_every", self.eval_every, 0)
        if self.eval_samples is not None:
            whole("eval_samples", self.eval_samples, 1)
        whole("eval_steps", self.eval_steps, 1)
        check_random_state(self.random_state)
        lr = self.lr_images
        if isinstance(lr, bool) or not isinstance(lr, numbers.Real) or not math.isfinite(lr) or not 0 < lr <= MAX_LR:
            raise ConfigError(f"lr_images (--lr-images) must be a finite number in (0, {MAX_LR:g}], got {lr!r}")
        budget = self.time_budget
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, numbers.Real)
                                   or not math.isfinite(budget) or budget <= 0):
            raise ConfigError(f"time_budget (--time-budget) must be a positive number of seconds, got {budget!r}")
        if self.init not in ("real", "noise"):
            raise ConfigError(f"init must be 'real' or 'noise', got {self.init!r}")
        if self.model_kwargs is not None and not isinstance(self.model_kwargs, dict):
            raise ConfigError(f"model_kwargs must be a dict, got {self.model_kwargs!r}")
        check_model_options(self.model, **self._model_options())

    def _validate(self, dataset: Dataset) -> None:
        if not isinstance(dataset, Dataset):
            raise ConfigError(f"fit() needs a datadistill Dataset, got {type(dataset).__name__}")
        self.check_params()
        counts = dataset.class_counts()
        if self.ipc > counts.min():
            c = int(np.argmin(counts))
            raise DataError(f"ipc {self.ipc} is larger than the smallest class ('{dataset.classes[c]}' has "
                            f"{counts[c]} samples); use --ipc {counts.min()} or less")
        if not dataset.is_image:
            if self.needs_images:
                raise DataError(f"{self.name} needs image data; {dataset.name} is tabular. Methods that work on "
                                f"tabular data: {TABULAR_OK}")
            if self.model in IMAGE_MODELS:
                raise ConfigError(f"{dataset.name} is tabular: use --model mlp (or logreg) with {self.name}")

    # --- the loop --------------------------------------------------------------------------------
    def fit(self, dataset: Dataset, y=None) -> DistilledSet:
        """Learn ``ipc`` synthetic samples per class of ``dataset`` (or of arrays ``X, y``); resume from ``checkpoint``."""
        fit_start = time.perf_counter()
        dataset = as_dataset(dataset, y, method="fit")
        self._validate(dataset)
        dev = resolve_device(self.device)
        train_set, val_rows = self._split_validation(dataset)
        pre = Preprocessor.fit(train_set)
        self._check_model(pre.model_shape, dataset.n_classes)
        ctx = self._context(train_set, pre, dev)
        validation = None
        if val_rows is not None:
            validation = (torch.as_tensor(pre.transform(dataset.X[val_rows]), device=dev),
                          torch.as_tensor(dataset.y[val_rows], device=dev))
        self._setup(ctx)
        run = _Run()
        ckpt = Path(self.checkpoint) if self.checkpoint else None
        if ckpt is not None and ckpt.exists():
            run.start_it, run.curve, run.seconds_before = self._restore(ckpt, ctx, dataset, run)
        self._loop(ctx, run, dataset, ckpt, fit_start, validation)
        if run.best is not None:
            _load_snapshot(ctx, run.best)
        self._check_finite(ctx, run.done - 1)
        X_out = pre.inverse(ctx.X_syn.detach().float().cpu().numpy())
        meta = self._meta(ctx, run, dataset, dev, fit_start)
        if validation is not None:
            meta["periodic_evaluation"] = self._evaluation_record(run, len(val_rows))
        return DistilledSet(X=X_out, y=ctx.y_syn.cpu().numpy(), classes=dataset.classes,
                            soft_labels=self._soft_labels(ctx), meta=meta)

    def _context(self, dataset: Dataset, pre: Preprocessor, dev: torch.device) -> Context:
        """Real data in model space on ``dev`` and the initial synthetic samples (real draws or noise)."""
        X_real = torch.as_tensor(pre.transform(dataset.X), device=dev)
        y_real = torch.as_tensor(dataset.y, device=dev)
        K = dataset.n_classes
        class_index = [torch.nonzero(y_real == c).flatten() for c in range(K)]
        gen = self.iteration_generator(-1)
        if self.init == "real":
            picks = [class_index[c][torch.randperm(len(class_index[c]), generator=gen)[: self.ipc].to(dev)]
                     for c in range(K)]
            X_syn = X_real[torch.cat(picks)].clone()
        else:
            X_syn = torch.randn((K * self.ipc, *X_real.shape[1:]), generator=gen).to(dev)
        y_syn = torch.arange(K, device=dev).repeat_interleave(self.ipc)
        return Context(dataset=dataset, preprocessor=pre, device=dev, X_real=X_real, y_real=y_real,
                       class_index=class_index, X_syn=X_syn.requires_grad_(True), y_syn=y_syn, n_classes=K,
                       input_shape=tuple(X_real.shape[1:]))

    def _loop(self, ctx: Context, run: _Run, dataset: Dataset, ckpt: Path | None, fit_start: float,
              validation: tuple[torch.Tensor, torch.Tensor] | None) -> None:
        """The outer iterations from ``run.start_it``: steps, periodic evaluations, checkpoints, time budget."""
        bar = progress.bar(self.iterations, initial=run.start_it, desc=f"distill {self.name}") if self.progress else None
        budget = float(self.time_budget) if self.time_budget is not None else None
        t0 = time.perf_counter()
        run.done, saved = run.start_it, run.start_it
        if validation is not None and not run.evaluations:
            self._evaluate(ctx, run, validation)
        for it in range(run.start_it, self.iterations):
            if budget is not None and it > run.start_it:
                now = time.perf_counter()
                per_iteration = (now - t0) / (it - run.start_it)
                if now - fit_start + per_iteration + run.last_eval_seconds > budget:
                    run.stopped_by_budget = True
                    break
            loss = float(torch.as_tensor(self._step(ctx, it)).detach())
            if not math.isfinite(loss):
                self._diverged(it, "the matching loss")
            run.curve.append({"iteration": it, "loss": loss})
            run.done = it + 1
            if validation is not None and run.done % self.eval_every == 0:
                self._evaluate(ctx, run, validation)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(self._progress_note(loss, fit_start, budget))
            if ckpt is not None and (run.done % self.checkpoint_every == 0 or run.done == self.iterations):
                self._check_finite(ctx, it)
                self._save_checkpoint(ckpt, ctx, run.done, run.curve, dataset, run=run,
                                      seconds=_known(run.seconds_before) + time.perf_counter() - t0)
                saved = run.done
        if validation is not None and run.evaluations[-1]["iteration"] != run.done:
            self._evaluate(ctx, run, validation)
        if ckpt is not None and run.done != saved:
            self._check_finite(ctx, run.done - 1)
            self._save_checkpoint(ckpt, ctx, run.done, run.curve, dataset, run=run,
                                  seconds=_known(run.seconds_before) + time.perf_counter() - t0)
        if bar is not None:
            bar.close()
        run.seconds = time.perf_counter() - t0

    def _meta(self, ctx: Context, run: _Run, dataset: Dataset, dev: torch.device, fit_start: float) -> dict:
        """The artifact's provenance: method, parameters, source, timings, learning curve and training recipe."""
        budget = float(self.time_budget) if self.time_budget is not None else None
        total = time.perf_counter() - fit_start
        return {
            "kind": "synthetic",
            "method": self.name,
            "parameters": self.params(),
            "seed": self.random_state,
            "ipc": self.ipc,
            "source": dataset.name,
            "source_fingerprint": dataset.fingerprint,
            "source_samples": len(dataset),
            "timings": {**_run_timings(run.start_it, run.done, run.seconds_before, run.seconds),
                        "iterations_done": run.done, "iterations_planned": self.iterations,
                        "time_budget_seconds": budget, "stopped_by_time_budget": run.stopped_by_budget,
                        "total_seconds": total, "setup_seconds": max(0.0, total - run.seconds)},
            "device": str(dev),
            "curves": {"matching_loss": [r["loss"] for r in run.curve]},
            "training": {"preprocessor": ctx.preprocessor.to_dict(), "model": self.model,
                         "model_kwargs": self._model_options(), **self._training_recipe(ctx)},
        }

    # --- periodic evaluation (eval_every) -------------------------------------------------------
    def _split_validation(self, dataset: Dataset) -> tuple[Dataset, np.ndarray | None]:
        """With ``eval_every``: the training rows without a stratified, seeded validation slice, and that slice.

        Every class gives its share of ``eval_samples`` (at least one row) and keeps at least ``ipc`` rows.
        Without ``eval_every`` the data is returned whole.
        """
        if not self.eval_every:
            return dataset, None
        y = np.asarray(dataset.y)
        rng = np.random.default_rng(self.iteration_seed(-2))
        wanted = min(1000, len(y) // 10) if self.eval_samples is None else int(self.eval_samples)
        share = min(1.0, wanted / len(y))
        val = []
        for c in range(dataset.n_classes):
            rows = rng.permutation(np.flatnonzero(y == c))
            k = max(1, int(round(share * len(rows))))
            if len(rows) - k < self.ipc:
                raise DataError(f"eval_every: class '{dataset.classes[c]}' has {len(rows)} samples, too few to "
                                f"hold {k} out for validation and keep ipc {self.ipc}; lower eval_samples "
                                f"(now {wanted}) or ipc, or set eval_every=0")
            val.append(rows[:k])
        val_rows = np.sort(np.concatenate(val))
        keep = np.setdiff1d(np.arange(len(y)), val_rows)
        return dataset.subset(keep, name=f"{dataset.name}[distil]"), val_rows

    def _evaluate(self, ctx: Context, run: _Run, validation: tuple[torch.Tensor, torch.Tensor]) -> None:
        """Train a fresh network briefly on the current samples, score it on the validation slice, keep the best."""
        t = time.perf_counter()
        iteration = run.done
        X = ctx.X_syn.detach().float()
        net = build_model(self.model, ctx.input_shape, ctx.n_classes, seed=self.iteration_seed(iteration, 7),
                          **self._model_options())
        soft = self._soft_labels(ctx)
        result = train(net, X, ctx.y_syn.cpu().numpy(), _validation_recipe(self.model, int(self.eval_steps)), soft_labels=soft,
                       device=ctx.device, seed=self.iteration_seed(iteration, 8))
        acc = accuracy(result.model, validation[0], validation[1], device=ctx.device)
        run.evaluations.append({"iteration": iteration, "val_accuracy": acc})
        if run.best is None or acc >= run.best["val_accuracy"]:  # ties: the later, more distilled samples
            run.best = {"iteration": iteration, "val_accuracy": acc, "X_syn": X.clone(),
                        "state": {k: v.detach().clone() for k, v in ctx.state.items() if isinstance(v, torch.Tensor)}}
        run.last_eval_seconds = time.perf_counter() - t
        run.eval_seconds += run.last_eval_seconds

    def _evaluation_record(self, run: _Run, n_validation: int) -> dict:
        """meta["periodic_evaluation"]: the settings, every (iteration, val_accuracy) and the iteration kept."""
        return {"every": int(self.eval_every), "validation_samples": int(n_validation),
                "steps": int(self.eval_steps), "model": self.model,
                "records": [dict(r) for r in run.evaluations], "kept_iteration": run.best["iteration"],
                "kept_val_accuracy": run.best["val_accuracy"], "last_iteration": run.done,
                "seconds_this_run": run.eval_seconds}

    def _check_model(self, input_shape: tuple[int, ...], n_classes: int) -> None:
        """Build the matching network once, so a model that does not fit the data fails before any work."""
        build_model(self.model, input_shape, n_classes, seed=0, **self._model_options())

    def _diverged(self, it: int, what: str) -> None:
        raise ConfigError(f"{self.name} diverged at iteration {it}: {what} became NaN or infinite; lower "
                          f"--lr-images (now {self.lr_images:g}) or check the data's scale")

    def _check_finite(self, ctx: Context, it: int) -> None:
        if not bool(torch.isfinite(ctx.X_syn.detach()).all()):
            self._diverged(it, "the synthetic samples")

    @staticmethod
    def _progress_note(loss: float, fit_start: float, budget: float | None) -> dict:
        """Postfix of the progress bar: the loss and, under a time budget, the time left before it stops."""
        note = {"loss": f"{loss:.4g}"}
        if budget is not None:
            from tqdm import tqdm

            note["budget left"] = tqdm.format_interval(max(0.0, budget - (time.perf_counter() - fit_start)))
        return note

    # --- checkpoints ---------------------------------------------------------------------------
    def _checkpoint_key(self) -> str:
        params = self.params() | {"iterations": None}
        if not self.eval_every:  # off: the key of a checkpoint written before periodic evaluation existed
            params = {k: v for k, v in params.items() if k not in ("eval_every", "eval_samples", "eval_steps")}
        return json.dumps(params, sort_keys=True, default=str)

    def _save_checkpoint(self, path: Path, ctx: Context, it: int, curve: list[dict], dataset: Dataset, *,
                         seconds: float = 0.0, run: _Run | None = None) -> None:
        state = {}
        for k, v in ctx.state.items():
            if hasattr(v, "state_dict"):
                state[k] = ("state_dict", v.state_dict())
            elif isinstance(v, torch.Tensor):
                state[k] = ("tensor", v.detach().clone())
        blob = {"iteration": it, "curve": curve, "X_syn": ctx.X_syn.detach().cpu(), "state": state,
                "fingerprint": dataset.fingerprint, "method": self.name, "key": self._checkpoint_key(),
                "seconds": float(seconds)}
        if run is not None and run.evaluations:
            blob["evaluations"] = [dict(r) for r in run.evaluations]
            blob["best"] = {k: (v.cpu() if isinstance(v, torch.Tensor) else
                                {n: t.cpu() for n, t in v.items()} if isinstance(v, dict) else v)
                            for k, v in run.best.items()}
        buffer = io.BytesIO()
        torch.save(blob, buffer)
        atomic_write(path, buffer.getvalue())

    def _checkpoint_holds(self, ctx: Context, entry: str) -> bool:
        """Whether this run's checkpoint already holds state ``entry`` (then set-up need not train it again)."""
        path = Path(self.checkpoint) if self.checkpoint else None
        if path is None or not path.exists():
            return False
        try:
            blob = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - the base class reports an unreadable checkpoint when it restores
            return False
        return (isinstance(blob, dict) and blob.get("key") == self._checkpoint_key()
                and blob.get("fingerprint") == ctx.dataset.fingerprint
                and isinstance(blob.get("state"), dict) and entry in blob["state"])

    def _restore(self, path: Path, ctx: Context, dataset: Dataset, run: _Run | None = None
                 ) -> tuple[int, list[dict], float | None]:
        """Load a checkpoint into ``ctx``: the iterations done, the learning curve and the seconds spent so far
        (None for a checkpoint written before they were recorded); periodic evaluations and the best
        snapshot so far into ``run``."""
        try:
            # weights_only: tensors, dicts, lists, tuples, strings and numbers; a pickle that would run code is refused
            blob = torch.load(path, map_location=ctx.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise ArtifactError(f"{path}: unreadable or unsafe checkpoint ({first}); delete it to start afresh") from None
        _check_checkpoint(path, blob, ctx)
        if blob.get("fingerprint") != dataset.fingerprint:
            raise ArtifactError(f"{path}: checkpoint was made on different data (fingerprint "
                                f"{str(blob.get('fingerprint'))[:12]} vs {dataset.fingerprint[:12]}); "
                                "delete it or point --checkpoint elsewhere")
        if blob.get("method") != self.name or blob.get("key") != self._checkpoint_key():
            raise ArtifactError(f"{path}: checkpoint was made with other settings ({blob.get('method')}); "
                                "delete it or use the same settings")
        try:
            with torch.no_grad():
                ctx.X_syn.copy_(blob["X_syn"].to(ctx.device))
            for k, (kind, v) in blob["state"].items():
                if kind == "state_dict":
                    ctx.state[k].load_state_dict(v)
                else:
                    with torch.no_grad():
                        ctx.state[k].copy_(v)
        except (RuntimeError, ValueError, KeyError, TypeError) as exc:
            raise ArtifactError(f"{path}: checkpoint state does not fit this run ({exc}); delete it to start "
                                "afresh") from None
        if run is not None and blob.get("evaluations"):
            run.evaluations = [dict(r) for r in blob["evaluations"]]
            best = blob["best"]
            run.best = {"iteration": int(best["iteration"]), "val_accuracy": float(best["val_accuracy"]),
                        "X_syn": best["X_syn"].to(ctx.device),
                        "state": {k: v.to(ctx.device) for k, v in best["state"].items()}}
        seconds = blob.get("seconds")
        return int(blob["iteration"]), list(blob["curve"]), None if seconds is None else float(seconds)


@dataclass
class _Run:
    """One fit's loop state: where it starts and ends, its learning curve, its evaluations and best snapshot."""

    start_it: int = 0
    done: int = 0
    curve: list[dict] = field(default_factory=list)
    seconds_before: float | None = 0.0    # of earlier runs (resumed from a checkpoint); None: not recorded
    seconds: float = 0.0                  # of this run's loop
    stopped_by_budget: bool = False
    evaluations: list[dict] = field(default_factory=list)   # {"iteration", "val_accuracy"}
    best: dict | None = None              # {"iteration", "val_accuracy", "X_syn", "state": {name: tensor}}
    eval_seconds: float = 0.0
    last_eval_seconds: float = 0.0


def _load_snapshot(ctx: Context, snapshot: dict) -> None:
    """Put a kept snapshot's samples and method tensors (learned rates, latents) back into ``ctx``."""
    with torch.no_grad():
        ctx.X_syn.copy_(snapshot["X_syn"].to(ctx.X_syn.device, ctx.X_syn.dtype))
        for k, v in snapshot["state"].items():
            ctx.state[k].copy_(v)


def _validation_recipe(model: str, steps: int) -> TrainConfig:
    """The short training of a periodic evaluation: ``steps`` steps, the evaluation recipe's optimiser."""
    if model in IMAGE_MODELS:
        return TrainConfig(epochs=1, batch_size=256, lr=0.01, optimizer="sgd", momentum=0.9, weight_decay=5e-4,
                           schedule="step", max_steps=steps)
    return TrainConfig(epochs=1, batch_size=256, lr=1e-3, optimizer="adam", schedule="step", max_steps=steps)


def _known(seconds: float | None) -> float:
    """Seconds of earlier runs, 0 where a checkpoint did not record them."""
    return 0.0 if seconds is None else seconds


def _run_timings(start_it: int, done: int, seconds_before: float | None, seconds: float) -> dict:
    """Iterations and seconds of a distillation: over all its runs (resumed ones too) and of this run alone."""
    this_run = done - start_it
    total = _known(seconds_before) + seconds
    return {"distill_seconds": total, "iterations_run": done, "this_run_seconds": seconds,
            "this_run_iterations": this_run, "resumed_from_iteration": start_it,
            "seconds_before_resume": seconds_before,
            "seconds_per_iteration": seconds / this_run if this_run else total / max(1, done)}


def _check_checkpoint(path: Path, blob: object, ctx: Context) -> None:
    """Raise ArtifactError naming ``path`` unless ``blob`` has the structure ``_save_checkpoint`` writes."""
    def bad(problem: str) -> ArtifactError:
        return ArtifactError(f"{path}: not a datadistill checkpoint ({problem}); delete it to start afresh")

    if not isinstance(blob, dict):
        raise bad(f"holds a {type(blob).__name__}, not a dict")
    missing = [k for k in ("iteration", "curve", "X_syn", "state", "fingerprint", "method", "key") if k not in blob]
    if missing:
        raise bad(f"no {', '.join(missing)}")
    for k in ("fingerprint", "method", "key"):
        if not isinstance(blob[k], str):
            raise bad(f"{k} is a {type(blob[k]).__name__}, not a string")
    it = blob["iteration"]
    if not isinstance(it, int) or isinstance(it, bool) or it < 0:
        raise bad(f"iteration {it!r} is not a non-negative integer")
    seconds = blob.get("seconds", 0.0)
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not 0 <= seconds < math.inf:
        raise bad(f"seconds {seconds!r} is not a non-negative number")
    curve = blob["curve"]
    if not isinstance(curve, list) or not all(
            isinstance(r, dict) and isinstance(r.get("iteration"), int) and isinstance(r.get("loss"), (int, float))
            for r in curve):
        raise bad("the learning curve is not a list of {iteration, loss} records")
    X = blob["X_syn"]
    if not isinstance(X, torch.Tensor) or tuple(X.shape) != tuple(ctx.X_syn.shape) or not X.is_floating_point():
        shape = tuple(X.shape) if isinstance(X, torch.Tensor) else type(X).__name__
        raise bad(f"X_syn is {shape}, expected a float tensor of shape {tuple(ctx.X_syn.shape)}")
    state = blob["state"]
    if not isinstance(state, dict):
        raise bad("state is not a dict")
    for k, entry in state.items():
        if k not in ctx.state or not isinstance(entry, (tuple, list)) or len(entry) != 2:
            raise bad(f"state entry {k!r} is unknown to this method or not a (kind, value) pair")
        kind, value = entry
        if kind == "state_dict" and isinstance(value, dict) and hasattr(ctx.state[k], "load_state_dict"):
            continue
        if (kind == "tensor" and isinstance(value, torch.Tensor) and isinstance(ctx.state[k], torch.Tensor)
                and value.shape == ctx.state[k].shape):
            continue
        raise bad(f"state entry {k!r} ({kind!r}) does not match this method's state")
    if blob.get("evaluations"):
        _check_checkpoint_evaluations(blob, ctx, bad)


def _check_checkpoint_evaluations(blob: dict, ctx: Context, bad) -> None:
    """The periodic evaluations and best snapshot of a checkpoint have the structure ``_save_checkpoint`` writes."""
    evals, best = blob["evaluations"], blob.get("best")
    if not isinstance(evals, list) or not all(
            isinstance(r, dict) and isinstance(r.get("iteration"), int) and isinstance(r.get("val_accuracy"), float)
            for r in evals):
        raise bad("the periodic evaluations are not a list of {iteration, val_accuracy} records")
    if (not isinstance(best, dict) or not isinstance(best.get("iteration"), int)
            or not isinstance(best.get("val_accuracy"), float) or not isinstance(best.get("X_syn"), torch.Tensor)
            or tuple(best["X_syn"].shape) != tuple(ctx.X_syn.shape) or not isinstance(best.get("state"), dict)):
        raise bad("the best snapshot is missing or does not match the synthetic samples")
    for k, v in best["state"].items():
        if not (isinstance(v, torch.Tensor) and isinstance(ctx.state.get(k), torch.Tensor) and v.shape == ctx.state[k].shape):
            raise bad(f"best snapshot entry {k!r} does not match this method's state")


def get_distiller(method: str, **params) -> Distiller:
    """Instantiate a registered distiller by name."""
    if method not in REGISTRY:
        raise ConfigError(f"unknown distillation method '{method}'; choose one of: {', '.join(sorted(REGISTRY))}")
    check_parameter_types(REGISTRY[method], params, method)
    try:
        return REGISTRY[method](**params)
    except TypeError as exc:
        raise ConfigError(f"{method}: {exc}") from None


def distill(dataset: Dataset, method: str, *, ipc: int = 10, **params) -> DistilledSet:
    """One-line form: ``distill(ds, "dm", ipc=10)`` -> DistilledSet."""
    return get_distiller(method, ipc=ipc, **params).fit(dataset)
