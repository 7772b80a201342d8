"""`datadistill ...`: thin subcommands that parse arguments, call the public API and print.

Exit codes: 0 done; 1 an unexpected failure; 2 a usage or configuration error (argparse, ConfigError);
3 a data or artifact error (DataError, ArtifactError); 130 interrupted; 141 stdout closed early.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import tempfile
import textwrap
import traceback
import warnings
from pathlib import Path

import datadistill as dd

from . import progress

EXIT_FAILURE = 1       # anything unexpected (a bug): the traceback is printed
EXIT_USAGE = 2         # argparse and ConfigError: fix the command line
EXIT_DATA = 3          # DataError and ArtifactError: fix the input file or the saved set
EXIT_INTERRUPTED = 130  # 128 + SIGINT
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: what a shell reports for a writer whose reader (e.g. `head`) went away
CPU_TIME_BUDGET = 300.0  # distill's default on a CPU when no --iterations is given: minutes, not hours

EPILOG = """examples:
  datadistill demo                                   two-class 2-D demo + a short evaluation on digits
  datadistill methods                                every selection and distillation method, with its cost
  datadistill select mnist.npz --method kcenter --ratio 0.1 --out mnist-kcenter
  datadistill show mnist-kcenter
  datadistill auto mnist.npz --max-drop 1.0 --budget-minutes 30 --out mnist-auto
  datadistill evaluate mnist.npz --methods random,kcenter,entropy --ratios 0.01,0.1 --out eval-mnist
  datadistill distill mnist.npz --method dm --ipc 10 --out mnist-dm
  datadistill evaluate mnist.npz --distilled mnist-dm --protocol dc --out eval-dm

DATA is a .npz (x_train/y_train[/x_test/y_test] or X/y), a .csv or .parquet file (--label names the class column),
a folder of images with one sub-folder per class, a CIFAR-10 python-batch folder, or a built-in name:
digits, two-gaussians, blobs (no download), mnist / cifar10 (your local copy, found via $DATADISTILL_DATA).

output: results on stdout (--json: one JSON document, nothing else); data summaries, notes, warnings and
progress bars on stderr (bars only when stderr is a terminal; --quiet: no bars and no notes).

exit codes: 0 done, 1 unexpected failure, 2 usage or configuration error, 3 data or artifact error
(the input or a saved set: the message names the file, column or row), 130 interrupted."""


def _parse_value(text: str):
    low = text.lower()
    if low in ("true", "false"):
        return low == "true"
    if low in ("none", "null"):
        return None
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    if "," in text:
        return tuple(_parse_value(t) for t in text.split(","))
    return text


def _params(pairs: list[str] | None) -> dict:
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise dd.ConfigError(f"--param expects KEY=VALUE, got '{pair}'")
        key, value = pair.split("=", 1)
        out[key.strip().replace("-", "_")] = _parse_value(value.strip())
    return out


def _ratio(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: '{text}'") from None
    return value


_DURATION_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}


def _duration(text: str) -> float:
    """Seconds from ``90``, ``90s``, ``5m``, ``1.5h`` or ``1h30m``; ``none`` (no limit) gives infinity."""
    low = text.strip().lower().replace(" ", "")
    if low in ("none", "off", "unlimited"):
        return math.inf
    if re.fullmatch(r"\d+(\.\d*)?", low):
        seconds = float(low)
    elif re.fullmatch(r"(\d+(\.\d*)?[hms])+", low):
        seconds = sum(float(n) * _DURATION_UNITS[u] for n, _, u in re.findall(r"(\d+(\.\d*)?)([hms])", low))
    else:
        raise argparse.ArgumentTypeError(f"not a duration: '{text}' (e.g. 90, 90s, 5m, 1.5h or none)")
    if not 0 < seconds < math.inf:
        raise argparse.ArgumentTypeError(f"must be more than 0 seconds (or none for no limit), got '{text}'")
    return seconds


def _format_seconds(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.3g} s"
    return f"{seconds / 60:.3g} min" if seconds < 7200 else f"{seconds / 3600:.3g} h"


_DELIMITER_NAMES = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|", "space": " "}


def _delimiter(text: str) -> str:
    value = _DELIMITER_NAMES.get(text.lower(), text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"give one character or tab, comma, semicolon, pipe, space; got '{text}'")
    return value


def _load(args) -> dd.Dataset:
    """DATA as a Dataset (its summary on stderr unless --quiet); sequences (N, T, C) with --sequences."""
    if getattr(args, "sequences", False):
        dataset = _load_sequences(args)
    else:
        _sequence_options(args)  # refuses the sequence options without --sequences
        dataset = dd.load(args.data, label=args.label, test_fraction=args.test_fraction,
                          random_state=args.split_seed, delimiter=args.delimiter)
        _info(args, dataset.summary())
    return dataset


# the loader's keywords for a long table, and the options that set them
_SEQUENCE_FLAGS = {"pad": "--pad", "length": "--length", "id_column": "--id-column", "time_column": "--time-column",
                   "value_columns": "--value-columns", "label": "--label", "delimiter": "--delimiter"}
# the loader's messages name its Python keywords; the command line's user needs the options
_KEYWORD_SPELLINGS = ((r"pad='zero' or 'edge'", "--pad zero or edge"), (r"pad='zero'/'edge'", "--pad zero/edge"),
                      (r"pad='(zero|edge|truncate)'", r"--pad \1"), (r"\blength=T\b", "--length T"),
                      (r"\blength <= ", "--length <= "), (r"\b(id|time)_column=\.\.\.", r"--\1-column NAME"),
                      (r"\blabel=\.\.\.", "--label NAME"), (r"\bvalue_columns=\[\.\.\.\]", "--value-columns A,B"))


def _sequence_options(args) -> dict:
    """The long-table options given (keyword -> value); ConfigError for sequence-only options without --sequences."""
    options = {key: getattr(args, key) for key in _SEQUENCE_FLAGS if getattr(args, key, None) is not None}
    if not getattr(args, "sequences", False):
        given = [_SEQUENCE_FLAGS[key] for key in ("pad", "length", "id_column", "time_column", "value_columns")
                 if key in options]
        if given:
            raise dd.ConfigError(f"{', '.join(given)} describe{'s' if len(given) == 1 else ''} sequence data; add "
                                 "--sequences")
        return {}
    if "value_columns" in options:
        options["value_columns"] = [c.strip() for c in options["value_columns"].split(",") if c.strip()]
    return options


def _load_sequences(args) -> dd.Dataset:
    """--sequences: DATA through the sequence loader, its messages in the command line's terms."""
    from .data.timeseries import load_sequences

    path = Path(args.data)
    if not path.is_file():
        raise dd.DataError(f"{args.data}: {'a folder' if path.is_dir() else 'no such file'}; --sequences reads a .npz "
                           "(x of shape (N, T) or (N, T, C) and y) or a long CSV/Parquet table (one row per series "
                           "id and time step, with id, time, value and label columns)")
    options = _sequence_options(args)
    if path.suffix.lower() == ".npz" and options:
        raise dd.ConfigError(f"{', '.join(_SEQUENCE_FLAGS[k] for k in options)}: options of a long CSV/Parquet "
                             f"table; {args.data} is a .npz, whose sequences share one length already")
    try:
        dataset = load_sequences(path, test_fraction=args.test_fraction, random_state=args.split_seed, **options)
    except (dd.DataError, dd.ConfigError) as exc:
        message = str(exc)
        for pattern, flag in _KEYWORD_SPELLINGS:
            message = re.sub(pattern, flag, message)
        if " column '" in message and "not found" in message:
            message += ("; --sequences reads a long table, one row per series id and time step (a wide table of "
                        "one row per sample is read without --sequences)")
        raise type(exc)(message) from None
    steps, channels = dataset.sample_shape
    _info(args, f"{dataset.name}: {len(dataset)} training sequences, test {len(dataset.test)}, {dataset.n_classes} "
                f"classes, {steps} steps x {channels} channel{'s' if channels > 1 else ''} {dataset.X.dtype}")
    return dataset


def _sequence_model(args, default: str, option: str = "--model") -> str:
    """The model for sequence data: ``default`` (conv1d) unless given; image-only models refused."""
    from .models import IMAGE_MODELS

    model = args.model or default
    if model in IMAGE_MODELS:
        raise dd.ConfigError(f"{option} {model} takes images (C, H, W); sequences (N, T, C) train conv1d (the "
                             "default with --sequences), mlp or logreg")
    return model


def _info(args, text: str) -> None:
    """A note on stderr, left out under --quiet (results go to stdout, warnings and errors always show)."""
    if not getattr(args, "quiet", False):
        print(text, file=sys.stderr)


def _print_json(document: dict) -> None:
    from .data.artifact import jsonable

    print(json.dumps(jsonable(document), indent=2, sort_keys=True))


def _check_location(path: str | None, option: str, *, folder: bool = True) -> None:
    """Refuse an output path that cannot be written, before any work (a missing parent folder is made later)."""
    if not path:
        return
    target = Path(path)
    if folder and target.exists() and not target.is_dir():
        raise dd.ConfigError(f"{option} {path}: an existing file, not a folder; choose a folder path")
    if not folder and target.is_dir():
        raise dd.ConfigError(f"{option} {path}: an existing folder; give a file path")
    nearest = target.absolute().parent
    while not nearest.exists() and nearest != nearest.parent:
        nearest = nearest.parent
    if not nearest.is_dir():
        raise dd.ConfigError(f"{option} {path}: {nearest} is a file, so no folder can be made in it")
    for probe in ([target] if folder and target.is_dir() else []) + [nearest]:
        try:
            fd, name = tempfile.mkstemp(prefix=".datadistill-write-test-", dir=probe)
        except OSError as exc:
            raise dd.ConfigError(f"{option} {path}: cannot write in {probe} ({exc.strerror or exc}); choose a "
                              "writable location") from None
        os.close(fd)
        os.unlink(name)


def _open_set(directory: str):
    """DistilledSet.open, with any failure it does not explain itself turned into one ArtifactError line."""
    try:
        return dd.open(directory)
    except dd.DatadistillError:
        raise
    except Exception as exc:  # noqa: BLE001 - a damaged set fails in many ways; the user needs one line
        raise dd.ArtifactError(f"{directory}: damaged datadistill set ({type(exc).__name__}: {exc}); re-create it "
                            "with select or distill") from None


def _warning_printer(command: str):
    """showwarning that prints datadistill's own warnings as one line and leaves others to Python."""
    original = warnings.showwarning

    def show(message, category, filename, lineno, file=None, line=None):
        if issubclass(category, dd.DatadistillWarning):
            print(f"datadistill {command}: warning: {message}", file=sys.stderr)
        else:
            original(message, category, filename, lineno, file, line)

    return show


def _refuse_existing(out: str | None, overwrite: bool, *, empty_ok: bool = False,
                     hint: str = "pass --overwrite") -> None:
    """An existing --out without --overwrite is a usage error (exit 2), refused before any work."""
    target = Path(out) if out else None
    if target is None or overwrite or not target.exists():
        return
    if empty_ok and target.is_dir() and not any(target.iterdir()):
        return
    raise dd.ConfigError(f"{out}: already exists; choose another --out, or {hint}")


def _check_out(out: str | None, overwrite: bool) -> None:
    _check_location(out, "--out")
    _refuse_existing(out, overwrite)
    if out:
        dd.DistilledSet.check_target(out, overwrite=overwrite)  # --overwrite replaces only a set datadistill wrote


def _data_arguments(p: argparse.ArgumentParser, *, sequences: bool = False) -> None:
    p.add_argument("data", metavar="DATA", help="data file or folder, or a built-in name (see datadistill --help)")
    p.add_argument("--label", help="label column of a CSV/Parquet file (default: label/target/class/y)")
    p.add_argument("--test-fraction", type=float, default=0.2,
                   help="held-out share when DATA has no test split (default 0.2, stratified)")
    p.add_argument("--split-seed", type=int, default=0, help="seed of that split (default 0)")
    p.add_argument("--delimiter", type=_delimiter, metavar="CHAR",
                   help="CSV field separator: a character or tab/comma/semicolon/pipe (default: detected among "
                        "',' ';' tab '|', with a warning when it is not ',')")
    if sequences:
        _sequence_arguments(p)


def _sequence_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sequences (time series)")
    g.add_argument("--sequences", action="store_true",
                   help="read DATA as sequences (N, T, C): a .npz with x of shape (N, T) or (N, T, C) and y, or a "
                        "long CSV/Parquet table with one row per series id and time step (id, time, value and "
                        "label columns); whole series go to the test split")
    g.add_argument("--pad", choices=["zero", "edge", "truncate"],
                   help="series of unequal length in a long table: zero (append zeros up to the longest), edge "
                        "(repeat each series' last value) or truncate (cut all to the shortest); without it unequal "
                        "lengths are an error")
    g.add_argument("--length", type=int, metavar="T", help="the common length to pad or cut series to")
    g.add_argument("--id-column", metavar="NAME", help="series id column of a long table (default id)")
    g.add_argument("--time-column", metavar="NAME",
                   help="column the steps of a series are sorted by: numbers, dates or timestamps (default time)")
    g.add_argument("--value-columns", metavar="A,B",
                   help="comma-separated value columns, one channel each (default: every column but id, time and "
                        "label)")


def _output_arguments(p: argparse.ArgumentParser, *, json_summary: bool = False) -> None:
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bars and no notes on stderr "
                                                               "(results, warnings and errors still show)")
    if json_summary:
        p.add_argument("--json", action="store_true",
                       help="print a machine-readable JSON summary on stdout (and nothing else there)")


def _subcommand(sub, name: str, *, help: str, description: str, examples: list[tuple[str, str]]):
    """A subcommand whose --help ends with worked examples (command, then what it does)."""
    lines = ["examples:"]
    for command, what in examples:
        lines += [f"  {command}", *textwrap.wrap(what, 100, initial_indent="      ", subsequent_indent="      ")]
    return sub.add_parser(name, help=help, description=textwrap.fill(description, 100), epilog="\n".join(lines),
                          formatter_class=argparse.RawDescriptionHelpFormatter)


# --- subcommands ---------------------------------------------------------------------------------
def _selection_params(args, options: tuple[str, ...] = ()) -> dict:
    """``select``'s method parameters: ``--param KEY=VALUE`` pairs plus the named options that were given, after
    checking that exactly one of ``--ratio`` and ``--size`` was."""
    if (args.ratio is None) == (args.size is None):
        raise dd.ConfigError("give exactly one of --ratio R (a fraction in (0, 1]) or --size K")
    params = _params(getattr(args, "param", None))
    for key in options:
        if getattr(args, key, None):
            params[key] = getattr(args, key)
    return params


def cmd_select(args) -> int:
    if getattr(args, "stream", False):
        if args.sequences:
            raise dd.ConfigError("--stream reads tabular rows in pieces; sequences (--sequences) are read whole")
        from .stream_io import cmd_select_stream

        return cmd_select_stream(args)
    if args.out_of_core:
        return _cmd_select_out_of_core(args)
    params = _selection_params(args, ("features", "device", "strategy", "min_per_class"))
    if args.soft_labels:
        params["soft_labels"] = True
    per_class = None if args.per_class == "none" else args.per_class
    if args.sequences:  # the conv1d probe, and its embedding for geometric methods, unless --param says otherwise
        from .data.timeseries import sequence_selector as make_selector
    else:
        make_selector = dd.get_selector
    selector = make_selector(args.method, size=args.size, ratio=args.ratio, per_class=per_class,
                             random_state=args.seed, **params)
    selector.check_params()  # size, ratio and seed before a large file is read
    _check_out(args.out, args.overwrite)
    dataset = _load(args)
    scheduler = args.scheduler or (None if args.dask is None else (args.dask or f"local:{args.workers}"))
    if scheduler is not None:
        dd.fit_distributed(selector, dataset, scheduler=scheduler, by=args.by, n_partitions=args.partitions,
                           timeout=args.scheduler_timeout)
    else:
        selector.fit(dataset)
    result = selector.transform(dataset).record_source(dataset)
    if args.check:
        check = dd.check_against_random(dataset, selector.indices_, model=args.check, random_state=args.seed,
                                        method=args.method, device=args.device)
        result.meta["check"] = check.to_dict()
        if check.worse:  # a warning shows under --quiet too
            print(check.message(), file=sys.stderr)
        else:
            _info(args, check.message())
    result.save(args.out, overwrite=args.overwrite)
    if args.json:
        _print_json({"command": "select", "out": str(args.out), "method": args.method, "kept": len(result),
                     "source_samples": len(dataset), "reduction": len(dataset) / len(result),
                     "select_seconds": selector.seconds_, "seed": args.seed, "check": result.meta.get("check"),
                     "provenance": result.meta["provenance"]})
    else:
        print(f"kept {len(result)} of {len(dataset)} samples ({len(dataset) / len(result):.1f}x smaller) "
              f"with {args.method} in {selector.seconds_:.1f} s -> {args.out}")
    return 0


def _cmd_select_out_of_core(args) -> int:
    """``select --out-of-core``: a memory-mapped .npy or Parquet shards, read in batches (data/outofcore.py)."""
    if args.sequences or args.scheduler or args.dask is not None or args.check:
        raise dd.ConfigError("--out-of-core reads rows in batches in this process; it does not combine with "
                             "--sequences, --scheduler/--dask or --check")
    params = _selection_params(args, ("device", "strategy", "min_per_class"))
    _check_out(args.out, args.overwrite)
    result = dd.select_out_of_core(args.data, args.method, size=args.size, ratio=args.ratio, labels=args.labels,
                                   label=args.label, batch_size=args.batch_size, scratch_dir=args.scratch_dir,
                                   per_class=None if args.per_class == "none" else args.per_class,
                                   random_state=args.seed, progress=not args.quiet, **params)
    result.save(args.out, overwrite=args.overwrite)
    n = int(result.meta.get("source_samples", 0)) or len(result)
    if args.json:
        _print_json({"command": "select", "out": str(args.out), "method": args.method, "kept": len(result),
                     "source_samples": n, "reduction": n / len(result), "out_of_core": True, "seed": args.seed})
    else:
        print(f"kept {len(result)} of {n} rows ({n / len(result):.1f}x smaller) with {args.method} out of core "
              f"-> {args.out}")
    return 0


def cmd_auto(args) -> int:
    from .auto import SEARCH_MD, SET_DIR, check_options, check_out
    from .evaluation import default_recipe, parse_ratios

    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    ratios = parse_ratios(args.ratios) if args.ratios else None
    options = {"max_drop": args.max_drop, "model": args.model, "budget_minutes": args.budget_minutes,
               "search": args.search, "methods": methods, "soft_labels": args.soft_labels, "ratios": ratios,
               "proxy_steps": args.proxy_steps, "verify_seeds": args.verify_seeds, "random_state": args.seed}
    check_options(**options)  # before a large file is read
    _check_location(args.out, "--out")
    _refuse_existing(args.out, args.overwrite, empty_ok=True)
    check_out(Path(args.out), args.overwrite)
    recipe = None
    if args.verify_steps is not None:
        if args.verify_steps < 1:
            raise dd.ConfigError(f"--verify-steps must be a positive number of optimiser steps, got {args.verify_steps}")
        from dataclasses import replace

        recipe = default_recipe(args.model)
        recipe = replace(recipe, max_steps=args.verify_steps, min_steps=min(recipe.min_steps, args.verify_steps),
                         patience_steps=min(recipe.patience_steps, args.verify_steps),
                         eval_every=min(recipe.eval_every, args.verify_steps))
    dataset = _load(args)
    result = dd.auto(dataset, **options, train_config=recipe, device=args.device, out=args.out,
                     overwrite=args.overwrite, progress=not args.quiet,
                     command=" ".join(["datadistill", *sys.argv[1:]]))
    for note in result.notes:
        _info(args, f"datadistill auto: note: {note}")
    if result.fallback:
        print(f"datadistill auto: warning: {result.fallback}", file=sys.stderr)
    if not result.within_drop:
        print(f"datadistill auto: warning: the returned set lost {result.verified['drop']:.2f} points against full "
              f"data in verification, more than --max-drop {args.max_drop}", file=sys.stderr)
    print(result.summary())
    print(f"set: {Path(args.out) / SET_DIR}; search report: {Path(args.out) / SEARCH_MD}")
    return 0


def method_catalogue() -> dict:
    """Every registered selector and distiller and every model, with what each does and costs."""
    return {
        "selection": {name: {"summary": cls.summary, "cost": cls.cost} for name, cls in sorted(dd.SELECTORS.items())},
        "synthesis": {name: {"summary": cls.summary, "images_only": bool(cls.needs_images)}
                      for name, cls in sorted(dd.DISTILLERS.items())},
        "models": dict(dd.MODELS),
    }


def cmd_methods(args) -> int:
    catalogue = method_catalogue()
    if args.json:
        _print_json(catalogue)
        return 0
    print("selection (keep real samples)   datadistill select DATA --method NAME --ratio R")
    for name, entry in catalogue["selection"].items():
        print(f"  {name:<18} {entry['summary']}  [{entry['cost']}]")
    print("\nsynthesis (learn synthetic samples)   datadistill distill DATA --method NAME --ipc N")
    for name, entry in catalogue["synthesis"].items():
        kind = "images only" if entry["images_only"] else "images or tabular (with --model mlp)"
        print(f"  {name:<18} {entry['summary']}  [{kind}]")
    print("\nmodels (--model)")
    for name, text in catalogue["models"].items():
        print(f"  {name:<18} {text}")
    return 0


def _provenance_lines(ds) -> list[str]:
    """What ``show`` prints about where a set's rows came from (sets saved before provenance: one line)."""
    prov = ds.meta.get("provenance")
    if not isinstance(prov, dict):
        return ["  provenance   not recorded (saved by an earlier datadistill): indices name rows of the training "
                "split, which this set does not describe"]
    source = f"{prov.get('source')} ({prov.get('format') or '?'}"
    source += f", label column '{prov['label']}')" if prov.get("label") else ")"
    lines = [f"  source path  {source}"]
    split = prov.get("split") if isinstance(prov.get("split"), dict) else {}
    counts = f"{split.get('n_train', '?')} training / {split.get('n_test', '?')} test rows"
    if split.get("kind") in ("given", "none"):
        lines.append(f"  split        {'given by the source' if split['kind'] == 'given' else 'none'}: {counts}")
    else:
        lines.append(f"  split        {split.get('kind', '?')}, test fraction {split.get('test_fraction')}, seed "
                     f"{split.get('random_state')} (--test-fraction, --split-seed): {counts}")
    if isinstance(prov.get("validation"), dict):
        lines.append(f"  validation   {json.dumps(prov['validation'], sort_keys=True)}")
    rows = prov.get("row_ids")
    if rows == "indices":
        lines.append("  row ids      indices are rows of the source's training data, in order")
    elif rows:
        lines.append(f"  row ids      source rows of the kept samples: source_rows[indices] ({rows}; "
                     "DistilledSet.source_row_ids())")
    return lines


def cmd_show(args) -> int:
    from .report import printable

    ds = _open_set(args.dir)
    meta = ds.meta
    if args.json:
        weights = None if ds.weights is None else {"sum": float(ds.weights.sum()), "min": float(ds.weights.min()),
                                                   "max": float(ds.weights.max())}
        _print_json({"path": str(args.dir), "n_samples": len(ds), "classes": list(ds.classes), "method": ds.method,
                     "kind": meta.get("kind"), "sample_shape": list(ds.X.shape[1:]), "dtype": str(ds.X.dtype),
                     "class_histogram": ds.class_histogram(), "weights": weights,
                     "soft_labels": ds.soft_labels is not None, "provenance": meta.get("provenance"),
                     "source_rows_stored": ds.source_rows is not None, "meta": meta})
        return 0
    lines = [
        f"{args.dir}: {len(ds)} samples, {len(ds.classes)} classes, {meta.get('kind', '?')} by '{ds.method}'",
        f"  source       {meta.get('source')} ({meta.get('source_samples', '?')} samples), fingerprint "
        f"{str(meta.get('source_fingerprint'))[:16]}",
        *_provenance_lines(ds),
        f"  seed         {meta.get('seed')}",
        f"  parameters   {json.dumps(meta.get('parameters', {}), sort_keys=True)}",
        f"  timings      {json.dumps(meta.get('timings', {}), sort_keys=True)}",
        f"  created      {meta.get('created')} with datadistill {meta.get('library_version')}",
        f"  sample shape {tuple(ds.X.shape[1:])} {ds.X.dtype}",
    ]
    if ds.source_fingerprint and meta.get("source_samples"):
        lines.append(f"  reduction    {meta['source_samples'] / len(ds):.1f}x")
    if ds.weights is not None:
        lines.append(f"  weights      sum {ds.weights.sum():.0f}, min {ds.weights.min():.3g}, max {ds.weights.max():.3g}")
    if "accuracy" in meta:
        lines.append(f"  accuracy     {json.dumps(meta['accuracy'])}")
    print("\n".join(printable(line) for line in lines))  # meta.json is data: no escape sequence reaches the terminal
    print("  class histogram")
    hist = ds.class_histogram()
    top = max(hist.values()) or 1
    for name, n in hist.items():
        print(f"    {printable(name)[:16]:<16} {n:>7}  {'#' * max(1 if n else 0, round(30 * n / top))}")
    return 0


RESERVED_SELECTOR_PARAMS = ("size", "ratio", "random_state")  # evaluate sets these per row


def _method_params(pairs: list[str] | None, methods: list[str]) -> dict[str, dict]:
    """``--param METHOD.KEY=VALUE`` pairs as ``{method: {key: value}}``, each selector built once to check them."""
    out: dict[str, dict] = {}
    for pair in pairs or []:
        name, sep, _ = pair.partition("=")
        method, dot, key = name.partition(".")
        if not sep or not dot or not method.strip() or not key.strip():
            raise dd.ConfigError(f"--param expects METHOD.KEY=VALUE (e.g. kmeans.pca=50), got '{pair}'")
        method = method.strip()
        if method not in dd.SELECTORS:
            raise dd.ConfigError(f"--param {name}: unknown selection method '{method}'; choose one of: "
                                 f"{', '.join(sorted(dd.SELECTORS))}")
        if method not in methods and method != "random":
            raise dd.ConfigError(f"--param {name}: '{method}' is not among --methods ({', '.join(methods) or 'random'})")
        out.setdefault(method, {}).update(_params([pair.split(".", 1)[1]]))
    for method, params in out.items():
        reserved = [k for k in params if k in RESERVED_SELECTOR_PARAMS]
        if reserved:
            raise dd.ConfigError(f"--param {method}.{reserved[0]}: evaluate sets {reserved[0]} itself (use --ratios "
                                 "and --seeds)")
        dd.get_selector(method, size=1, random_state=0, **params).check_params()
    return out


def cmd_evaluate(args) -> int:
    from .evaluation import parse_ratios
    from .synth.protocol import check_protocol_options

    ratios = parse_ratios(args.ratios)
    if args.methods is None:  # not given: random, unless the baselines are off (then only what is asked for)
        args.methods = "" if args.no_baselines else "random"
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    method_params = _method_params(args.param, methods)
    model = args.model or "mlp"
    if args.sequences:
        model = _sequence_model(args, "conv1d")
        method_params = _sequence_method_params(args, methods, method_params)
    options = {"n_models": args.eval_models}
    if args.eval_epochs is not None:
        options["epochs"] = args.eval_epochs
    if args.architectures:
        options["architectures"] = tuple(a.strip() for a in args.architectures.split(",") if a.strip())
    check_protocol_options(**options)
    for directory in args.distilled or ():
        _open_set(directory)  # a damaged set is refused in one line before anything loads or trains
    _check_location(args.out, "--out")
    _refuse_existing(args.out, args.overwrite or args.resume, empty_ok=True,
                     hint="pass --resume to continue that run or --overwrite to replace it")
    dataset = _load(args)
    report = dd.evaluate(dataset, methods=methods, ratios=ratios, model=model, seeds=args.seeds,
                         distilled=args.distilled or (), protocol=args.protocol, protocol_options=options,
                         method_params=method_params, out=args.out, resume=args.resume, overwrite=args.overwrite,
                         device=args.device, use_weights=args.use_weights, progress=not args.quiet,
                         command=" ".join(["datadistill", *sys.argv[1:]]), budget=args.budget, epochs=args.epochs,
                         budgeted_full=args.budgeted_full, soft_labels=_soft_list(args.soft_labels, methods),
                         temperature=args.temperature, baselines=not args.no_baselines)
    if args.json:
        _print_json({"command": "evaluate", "out": None if args.out is None else str(args.out),
                     "report": None if args.out is None else str(Path(args.out) / "report.html"),
                     **report.to_dict()})
        return 0
    print(report.to_markdown())
    if args.out:
        print(f"\nreport: {Path(args.out) / 'report.html'}")
    return 0


def _sequence_method_params(args, methods: list[str], method_params: dict[str, dict]) -> dict[str, dict]:
    """evaluate --sequences: every selector gets the conv1d probe (geometric ones its embedding) unless --param sets
    them; the dataset-condensation protocol, made for images, is refused."""
    from .data.timeseries import sequence_select_params

    if args.protocol == "dc":
        raise dd.ConfigError("--protocol dc is the image dataset-condensation protocol (ConvNets, image "
                             "augmentation); evaluate sequences with --protocol same (conv1d by default)")
    out = dict(method_params)
    for method in methods:
        if method in dd.SELECTORS:
            filled = sequence_select_params(method, method_params.get(method))
            if filled:
                out[method] = filled
    return out


def _soft_list(text: str | None, methods: list[str]) -> list[str] | bool:
    if not text:
        return []
    if text.strip() == "all":
        return True
    return [m.strip() for m in text.split(",") if m.strip()]


def cmd_report(args) -> int:
    from .report import render

    paths = render(args.dir)
    for p in paths:
        print(p)
    return 0


def cmd_distill(args) -> int:
    from .synth.protocol import check_protocol_options
    from .training import resolve_device

    params = _params(args.param)
    for key in ("iterations", "model", "init", "checkpoint", "lr_images", "batch_real", "eval_every"):
        value = getattr(args, key)
        if value is not None:
            params[key] = value
    model_kwargs = {k: getattr(args, k) for k in ("width", "depth") if getattr(args, k) is not None}
    if model_kwargs:
        params["model_kwargs"] = model_kwargs
    budget, budget_note = args.time_budget, ""
    if (budget is None and args.iterations is None and "time_budget" not in params
            and resolve_device(args.device or "auto").type == "cpu"):
        budget = CPU_TIME_BUDGET
        budget_note = (f"on a CPU: stopping after {_format_seconds(budget)} (--time-budget) with the samples so "
                       "far; pass --iterations N or --time-budget none for the method's full budget (hours)")
    if budget is not None and "time_budget" not in params:
        params["time_budget"] = None if math.isinf(budget) else budget
    make_distiller = dd.get_distiller
    if args.sequences:  # conv1d networks and no image augmentation, unless --model / --param say otherwise
        from .data.timeseries import sequence_distiller as make_distiller

        params["model"] = _sequence_model(args, "conv1d")
    distiller = make_distiller(args.method, ipc=args.ipc, random_state=args.seed, device=args.device or "auto",
                               progress=True, **params)
    distiller.check_params()
    if args.eval_models or args.eval_epochs is not None:
        check_protocol_options(n_models=args.eval_models, epochs=args.eval_epochs)
    _check_out(args.out, args.overwrite)
    _check_location(args.checkpoint, "--checkpoint", folder=False)
    dataset = _load(args)
    if budget_note:
        _info(args, budget_note)
    result = distiller.fit(dataset).record_source(dataset)
    timings = result.meta["timings"]
    if timings.get("stopped_by_time_budget"):
        print(f"time budget of {_format_seconds(timings['time_budget_seconds'])} reached after "
              f"{timings['iterations_done']:,} of {timings['iterations_planned']:,} iterations; keeping the samples "
              "as they are" + ("; rerun with the same --checkpoint to continue" if args.checkpoint else ""))
    if args.eval_models > 0 and dataset.test is not None:
        _protocol_accuracy(args, dataset, result)

    def write_figures(directory: Path) -> None:
        if dataset.is_image and not args.sequences:
            from .synth import figures

            figures.image_grid(result, directory / "images.png")

    result.save(args.out, overwrite=args.overwrite, extra=write_figures)
    timings = result.meta["timings"]
    seconds = timings["distill_seconds"] + timings.get("setup_seconds", 0.0)
    print(f"{len(result)} synthetic samples ({args.ipc} per class) by {args.method} in {seconds:.1f} s "
          f"(set-up included) -> {args.out}")
    return 0


def _protocol_accuracy(args, dataset, result) -> None:
    """distill --eval-models: fresh models trained on the set (the DC protocol); stored in its meta and printed."""
    import numpy as np

    rows = dd.evaluate_protocol(dataset, result, n_models=args.eval_models, epochs=args.eval_epochs,
                                device=args.device or "auto", seed=0, progress=not args.quiet)
    accs = [r["test_accuracy"] for r in rows]
    std = float(np.std(accs, ddof=1)) if len(accs) > 1 else 0.0
    result.meta["accuracy"] = {"protocol": "dc", "models": len(accs), "epochs": rows[0].get("epochs"),
                               "mean": float(np.mean(accs)), "std": std, "seeds": [r["seed"] for r in rows]}
    print(f"test accuracy of fresh models trained on the distilled set: {100 * np.mean(accs):.2f} ± "
          f"{100 * std:.2f} % ({len(accs)} models)")


def cmd_demo(args) -> int:
    from .demo import run_demo

    _check_location(args.out, "--out")
    run_demo(args.out, overwrite=args.overwrite, quick=args.quick)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="datadistill",
        description="Shrink a labelled training set to a small one that trains models almost as well: select "
                    "informative real samples (coresets) or learn synthetic ones (dataset distillation), and "
                    "prove it against the full set and a random subset.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"datadistill {dd.__version__}")
    parser.add_argument("--threads", type=int, metavar="N",
                        help="CPU threads for torch (default: torch's choice; 1 is often fastest for small models "
                             "or on a busy machine)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in (_select_parser, _auto_parser, _distill_parser, _evaluate_parser, _report_parser, _methods_parser,
                _show_parser, _demo_parser):
        add(sub)
    from .cli_active import add_parser as add_active_parser

    active = add_active_parser(sub)
    active.description = textwrap.fill(active.description, 100)  # raw formatting keeps the epilog's layout only
    _output_arguments(active)
    return parser


def _select_parser(sub) -> None:
    p = _subcommand(sub, "select", help="keep the most informative real samples",
                    description="Select a subset of DATA's training samples and save it as a DistilledSet directory "
                                "(data.npz + meta.json, with the source path, the train/test split and the source "
                                "row of every kept sample).",
                    examples=[("datadistill select data.csv --label target --method kcenter --ratio 0.1 --out kc",
                               "keep 10% of data.csv's training rows by k-center greedy"),
                              ("datadistill select mnist.npz --method entropy --size 600 --check --out ent",
                               "600 rows by a probe's predictive entropy, compared with random subsets"),
                              ("datadistill select digits --method kmeans --ratio 0.05 --param pca=20 --json --out km",
                               "method parameters with --param; a JSON summary on stdout"),
                              ("datadistill select waves.npz --sequences --method kcenter --ratio 0.1 --out kept",
                               "time series (N, T, C): k-center in the embedding of a conv1d probe"),
                              ("datadistill select emb.npy --labels y.npy --out-of-core --method kcenter --ratio 0.01 "
                               "--out kc", "a memory-mapped .npy larger than memory, read in batches")])
    _data_arguments(p, sequences=True)
    p.add_argument("--method", required=True, help="selection method (see `datadistill methods`)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--ratio", type=_ratio, help="fraction of the training set to keep, in (0, 1]")
    size.add_argument("--size", type=int, help="number of samples to keep")
    p.add_argument("--per-class", default="proportional", choices=["proportional", "balanced", "none"],
                   help="budget per class: keep class shares (default), equal counts, or choose globally; a "
                        "--size below the number of classes leaves some classes out (with a warning)")
    p.add_argument("--features", choices=["raw", "embedding"],
                   help="feature space of geometric methods: raw inputs or a probe network's penultimate layer")
    p.add_argument("--strategy", choices=["coverage", "moderate", "hardest", "easiest"],
                   help="score methods: how a difficulty score becomes a subset. coverage (default): drop rows the "
                        "probe misclassifies, spread the budget over score strata; hardest: plain top-k (collapses at "
                        "small budgets and on noisy labels); moderate: nearest the median score")
    p.add_argument("--soft-labels", action="store_true",
                   help="store the probe's class probabilities (temperature 4) with the set (methods with a probe)")
    p.add_argument("--min-per-class", type=int, default=0, metavar="N",
                   help="every class keeps at least N samples (taken from the largest classes' budgets)")
    p.add_argument("--param", action="append", metavar="KEY=VALUE",
                   help="method-specific parameter, repeatable (e.g. --param model=logreg --param epochs=10)")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--scheduler", metavar="WHERE",
                   help="run the selection on Dask: threads, local:N (a local cluster of N processes) or "
                        "tcp://host:port (an existing cluster; one that does not answer within "
                        "--scheduler-timeout is an error)")
    p.add_argument("--by", choices=["auto", "rows", "class"], default="auto",
                   help="how Dask splits the work: rows (partitions of rows, reduced globally: score top-k, "
                        "composable k-center, GreeDi, k-means of partition centroids), class (one task per "
                        "class, the offline subset), auto (rows where the method has a row form; default)")
    p.add_argument("--partitions", type=int, metavar="N",
                   help="row partitions per class for --by rows (default: the number of workers)")
    p.add_argument("--scheduler-timeout", type=float, default=10.0, metavar="S",
                   help="seconds to wait for the scheduler and a worker (default 10)")
    p.add_argument("--dask", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="same as --scheduler ADDRESS (a local cluster of --workers processes without one)")
    p.add_argument("--workers", type=int, default=2, help="processes of the local cluster of --dask (default 2)")
    p.add_argument("--check", nargs="?", const="logreg", choices=["logreg", "mlp"], metavar="MODEL",
                   help="compare the subset with random subsets of the same size (a cheap logreg or mlp proxy on "
                        "held-out training rows); warns in one line when it is worse; recorded in meta.json")
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    from .stream_io import add_stream_arguments

    add_stream_arguments(p)
    g = p.add_argument_group("out of core (data larger than memory, offline methods)")
    g.add_argument("--out-of-core", action="store_true",
                   help="read DATA (a .npy opened as a memory map, a directory of Parquet shards, a Parquet or CSV "
                        "file) in batches of --batch-size rows: kcenter, kmeans, entropy, margin, least-confidence, "
                        "random, stratified; memory: one batch plus a few numbers per row")
    g.add_argument("--labels", metavar="PATH", help="--out-of-core with a .npy: the labels as another .npy file")
    g.add_argument("--scratch-dir", metavar="DIR",
                   help="--out-of-core k-center/k-means: folder for the scratch file (as large as the float32 "
                        "features; deleted afterwards; default: the system's temporary folder)")
    _output_arguments(p, json_summary=True)
    p.set_defaults(func=cmd_select)


def _auto_parser(sub) -> None:
    p = _subcommand(sub, "auto", help="find the smallest selected set within --max-drop of full data, verified",
                    description="Search selection method x size (x soft labels) with cheap proxy models on a "
                                "validation split of the training rows, keep the smallest set predicted to stay "
                                "within --max-drop accuracy points of full data, then verify it with the real "
                                "model on the test split against full data and random subsets of the same "
                                "size. Writes OUT/set (the set), OUT/search.json and OUT/search.md.",
                    examples=[("datadistill auto data.csv --max-drop 1.0 --out data-auto",
                               "the smallest set that loses at most 1 accuracy point, verified on the test split"),
                              ("datadistill auto mnist.npz --budget-minutes 30 --methods entropy,herding --out m",
                               "search two methods for at most 30 minutes")])
    _data_arguments(p)
    p.add_argument("--max-drop", type=float, default=1.0,
                   help="accuracy points the set may lose against full data (default 1.0)")
    p.add_argument("--model", default="mlp", help="logreg, mlp (default), convnet or resnet18")
    p.add_argument("--budget-minutes", type=float, metavar="N",
                   help="time for search and verification together (default: no limit)")
    p.add_argument("--search", default="halving", choices=["halving", "bayes", "genetic"],
                   help="successive halving (default), Bayesian optimisation (optuna TPE), or a genetic search "
                        "that evolves the subset itself")
    p.add_argument("--methods", help="comma-separated selection methods to search (default: stratified, entropy, "
                                     "margin, el2n, forgetting, herding)")
    p.add_argument("--soft-labels", action="store_true",
                   help="also search each probe method with its probe's soft labels (probe methods only)")
    p.add_argument("--ratios", help="comma-separated candidate sizes as fractions of the pool (default: 8 "
                                    "geometric steps from 0.01 to 0.5)")
    p.add_argument("--proxy-steps", type=int, default=200, help="optimiser steps of the cheapest proxy (200)")
    p.add_argument("--verify-seeds", type=int, default=3, help="seeds of the verification (3)")
    p.add_argument("--verify-steps", type=int, metavar="N",
                   help="cap verification training at N optimiser steps (default: the evaluation recipe's rule)")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--out", required=True, help="output directory (refused if it exists, unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an output directory auto wrote")
    _output_arguments(p)
    p.set_defaults(func=cmd_auto)


def _distill_parser(sub) -> None:
    p = _subcommand(sub, "distill", help="learn a few synthetic samples per class",
                    description="Learn IPC synthetic samples per class of DATA and save them (in DATA's own "
                                "pixel or feature space) with everything evaluation needs.",
                    examples=[("datadistill distill mnist.npz --method dm --ipc 10 --out mnist-dm",
                               "10 synthetic images per class by distribution matching"),
                              ("datadistill distill data.csv --method dm --model mlp --iterations 500 --out dm",
                               "tabular data: match through an MLP"),
                              ("datadistill distill mnist.npz --method dm --param loss=mmd --eval-every 50 --out dm",
                               "DM with a Gaussian-kernel MMD loss; the best of the periodic evaluations is kept"),
                              ("datadistill distill mnist.npz --method mtt --checkpoint mtt.ckpt --time-budget 1h "
                               "--out mnist-mtt",
                               "stop after an hour; rerun the same command to continue from the checkpoint"),
                              ("datadistill distill waves.npz --sequences --method dm --ipc 5 --out syn",
                               "5 synthetic time series per class, matched through conv1d networks")])
    _data_arguments(p, sequences=True)
    p.add_argument("--method", required=True, help="dm, dm-multilayer, dc, dsa, mtt, bptt or krr")
    p.add_argument("--ipc", type=int, default=10, help="synthetic samples per class (default 10)")
    p.add_argument("--iterations", type=int,
                   help="outer iterations (default: the method's own, the papers' budgets: dm and dm-multilayer "
                        "20,000, mtt 5,000, dc and dsa 1,000; bptt and krr 1,000. That takes hours on a CPU, so "
                        "there a run without --iterations stops at --time-budget)")
    p.add_argument("--model", help="network to match through: convnet (images, default; the published network), "
                                   "convnet-p1 (padding 1 everywhere), mlp (tabular) or conv1d (sequences, the "
                                   "default with --sequences)")
    p.add_argument("--width", type=int, help="ConvNet channels (default 128)")
    p.add_argument("--depth", type=int, help="ConvNet blocks (default 3)")
    p.add_argument("--init", choices=["real", "noise"], help="start from real samples (default) or noise")
    p.add_argument("--lr-images", type=float, help="learning rate of the synthetic samples")
    p.add_argument("--batch-real", type=int, help="real samples per class per iteration")
    p.add_argument("--checkpoint", help="checkpoint file: progress is saved there and a rerun resumes from it")
    p.add_argument("--eval-every", type=int, metavar="N",
                   help="every N iterations, train a small model on the samples and score it on a validation "
                        "slice held out of the training rows; keep the best snapshot, not the last (default off)")
    p.add_argument("--time-budget", type=_duration, metavar="TIME",
                   help="stop after this much wall-clock time (90, 90s, 5m, 1.5h), keeping the samples so far and "
                        "recording how many iterations ran; 'none': no limit. Default: 5m on a CPU when "
                        "--iterations is not given, none otherwise")
    p.add_argument("--param", action="append", metavar="KEY=VALUE", help="method-specific parameter, repeatable")
    p.add_argument("--eval-models", type=int, default=0,
                   help="after distilling, train this many fresh models on the result and store their accuracy")
    p.add_argument("--eval-epochs", type=int, help="epochs of that evaluation (default: the DC protocol's)")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    p.add_argument("--device", help="auto (default), cpu or cuda")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output directory")
    _output_arguments(p)
    p.set_defaults(func=cmd_distill)


def _evaluate_parser(sub) -> None:
    p = _subcommand(sub, "evaluate", help="train fresh models on full, random and distilled sets; report",
                    description="For each method and size: select (or load --distilled sets), train a fresh "
                                "model with the full-data recipe, test on the real test split, over seeds; "
                                "write rows.jsonl, report.md/.json/.html and figures to --out.",
                    examples=[("datadistill evaluate mnist.npz --methods random,kcenter,entropy --ratios 0.01,0.1 "
                               "--out ev", "three methods at 1% and 10%, 3 seeds each, against full data"),
                              ("datadistill evaluate mnist.npz --methods kmeans --param kmeans.pca=50 --out ev",
                               "selector options per method with --param METHOD.KEY=VALUE"),
                              ("datadistill evaluate mnist.npz --distilled mnist-dm --protocol dc --json --out ev",
                               "a saved set under the dataset-condensation protocol; the report as JSON on stdout"),
                              ("datadistill evaluate series.csv --sequences --pad edge --methods kcenter --ratios 0.1 "
                               "--out ev", "time series from a long table (id, time, value, label), conv1d models")])
    _data_arguments(p, sequences=True)
    p.add_argument("--methods", help="comma-separated selection methods (default random)")
    p.add_argument("--ratios", default="0.01,0.05,0.1,0.2,0.5", help="comma-separated fractions in (0, 1]")
    p.add_argument("--model", help="logreg, mlp (default), convnet, resnet18 or conv1d (the default with "
                                   "--sequences)")
    p.add_argument("--seeds", type=int, default=3, help="seeds per row (default 3)")
    p.add_argument("--distilled", action="append", metavar="DIR", help="a saved DistilledSet to evaluate too")
    p.add_argument("--protocol", choices=["same", "dc"], default="same",
                   help="same: every row with the --model recipe (default); dc: every set (full, random, "
                        "selections, --distilled sets) with the dataset-condensation protocol (fresh ConvNets on "
                        "images, SGD, 300 epochs, 1000 with DSA); each row names its model and protocol")
    p.add_argument("--no-baselines", action="store_true",
                   help="leave out the full-data and random rows (kept by default: every comparison needs the "
                        "random line); name full or random in --methods to keep either")
    p.add_argument("--eval-models", type=int, default=5,
                   help="--protocol dc: fresh models per architecture for each --distilled set (5); drawn sets "
                        "(full, random, selections) train one model per seed")
    p.add_argument("--param", action="append", metavar="METHOD.KEY=VALUE",
                   help="a selector parameter for one method, repeatable (e.g. --param kmeans.pca=50); checked "
                        "before anything trains")
    p.add_argument("--eval-epochs", type=int,
                   help="--protocol dc: epochs (default 1000 with the set's DSA augmentation, 300 without)")
    p.add_argument("--architectures",
                   help="--protocol dc: comma-separated models, e.g. convnet,mlp,resnet18 (default: the set's own)")
    p.add_argument("--use-weights", action="store_true", help="weight kept samples by how many they stand for")
    p.add_argument("--budget", choices=["converge", "epochs"], default="converge",
                   help="converge (default): every row trains until validation accuracy stops improving, under one "
                        "rule counted in optimiser steps (stated in the report); epochs: the same --epochs for every "
                        "row, no early stopping (the founding paper's protocol: a 10x smaller set trains ~10x faster)")
    p.add_argument("--epochs", type=int, default=10, help="--budget epochs: epochs per row (default 10)")
    p.add_argument("--budgeted-full", action="store_true",
                   help="also train full data for as many optimiser steps as each random subset took")
    p.add_argument("--soft-labels", metavar="METHODS",
                   help="comma-separated methods (or 'all') that also get a +soft row: the subset trained on the "
                        "soft labels of a teacher (this seed's full-data model)")
    p.add_argument("--temperature", type=float, default=4.0, help="soft-label temperature (default 4)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--out", help="run directory (rows, report, figures)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace an existing --out")
    _output_arguments(p, json_summary=True)
    p.set_defaults(func=cmd_evaluate)


def _report_parser(sub) -> None:
    p = _subcommand(sub, "report", help="re-render a run's tables and figures from its saved JSON",
                    description="Re-render report.md, report.html and figures/ of an evaluate --out directory from "
                                "its report.json (after an interrupted run, or with a newer datadistill).",
                    examples=[("datadistill report eval-mnist", "rewrite eval-mnist/report.* and figures")])
    p.add_argument("dir", metavar="DIR", help="an evaluate --out directory")
    _output_arguments(p)
    p.set_defaults(func=cmd_report)


def _methods_parser(sub) -> None:
    p = _subcommand(sub, "methods", help="list every method with what it does and its cost",
                    description="Every selection and distillation method and every model, with what it does and "
                                "what it costs.",
                    examples=[("datadistill methods", "the list as text"),
                              ("datadistill methods --json", "the same as JSON (selection, synthesis, models)")])
    _output_arguments(p, json_summary=True)
    p.set_defaults(func=cmd_methods)


def _show_parser(sub) -> None:
    p = _subcommand(sub, "show", help="provenance and class histogram of a saved set",
                    description="Print a saved set's provenance (method, parameters, source path, train/test split, "
                                "how its indices map to the source's rows, timings) and its class histogram.",
                    examples=[("datadistill show mnist-kcenter", "what the set is and where its rows came from"),
                              ("datadistill show mnist-kcenter --json", "the same as JSON, meta.json included")])
    p.add_argument("dir", metavar="DIR", help="a directory written by select or distill")
    _output_arguments(p, json_summary=True)
    p.set_defaults(func=cmd_show)


def _demo_parser(sub) -> None:
    p = _subcommand(sub, "demo", help="the two-class 2-D demo and a short evaluation on digits (~2 minutes)",
                    description="Select points of a two-class 2-D set by several criteria and plot them, then "
                                "evaluate a few selectors on scikit-learn's digits; figures and tables go to --out.",
                    examples=[("datadistill demo", "everything in ./datadistill-demo"),
                              ("datadistill demo --quick --out /tmp/demo", "smaller settings, a smoke test")])
    p.add_argument("--out", default="datadistill-demo", help="folder for figures and tables (default "
                                                              "./datadistill-demo)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing demo folder")
    p.add_argument("--quick", action="store_true", help="smaller settings (for a smoke test)")
    _output_arguments(p)
    p.set_defaults(func=cmd_demo)


def _exit_code(exc: BaseException) -> int:
    """2 for what the command line got wrong, 3 for what the data or a saved set got wrong."""
    return EXIT_DATA if isinstance(exc, (dd.DataError, dd.ArtifactError)) else EXIT_USAGE


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise dd.ConfigError(f"--threads must be at least 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        with warnings.catch_warnings(), progress.silenced(getattr(args, "quiet", False)):
            warnings.simplefilter("default", dd.DatadistillWarning)
            warnings.showwarning = _warning_printer(args.command)
            code = int(args.func(args) or 0)
        sys.stdout.flush()  # a closed pipe (`| head -1`) fails here, inside this handler, not at exit
        return code
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush at exit
        return EXIT_BROKEN_PIPE
    except dd.DatadistillError as exc:
        print(f"datadistill {args.command}: error: {exc}", file=sys.stderr)
        return _exit_code(exc)
    except KeyboardInterrupt:
        print(f"datadistill {args.command}: interrupted; finished output is kept (evaluate: rerun with --resume)",
              file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:  # noqa: BLE001 - a bug: show where, and exit 1 rather than as a usage error
        traceback.print_exc()
        print(f"datadistill {args.command}: error: unexpected {type(exc).__name__}: {exc} (a bug in datadistill: "
              "please report it with the traceback above)", file=sys.stderr)
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
