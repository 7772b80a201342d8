"""`datadistill active`: the active-learning loop from the command line (oracle or human labels)."""

from __future__ import annotations

import argparse
import sys

from .errors import ConfigError

EPILOG = """examples:
  # simulate with the data's own labels: k-means cold start of 100, then 10 margin batches of 100
  datadistill active mnist.npz --batch-size 100 --budget 1100 --out al-mnist
  # a person labels: each run writes OUT/batch-NNN.csv (and .parquet) with columns id,label and stops;
  # fill in the label column (class names) and run the same command again to continue
  datadistill active pool.npy --human --classes cat,dog,bird --batch-size 20 --out al-pool
  datadistill active pool.npy --human --classes cat,dog,bird --batch-size 20 --out al-pool
  # start from labels you already have (a CSV with columns id,label) and use BADGE batches
  datadistill active pool.csv --human --classes cat,dog --seed-labels known.csv --strategy badge --out al-pool

Ids are row numbers (from 0) of DATA's training rows; in --human mode DATA is read as it is (no test split is
carved out), so ids are the file's rows. Deleting a row from a batch file skips that sample. The run folder
holds state.json (the loop's whole state), the batch files, labelled/ (the labelled set, a datadistill set),
curve.json and curve.png (test accuracy vs labels spent, beside random labelling in oracle mode)."""


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register the ``active`` subcommand on ``subparsers`` (from ``ArgumentParser.add_subparsers``)."""
    from .active import COLD_STARTS, DIVERSITY, STRATEGIES
    from .cli import _data_arguments

    p = subparsers.add_parser(
        "active", help="active learning: propose which samples to label next (oracle or a person)",
        description="Pool-based active learning. Train a model on the labelled rows, score the unlabelled pool and "
                    "propose a diverse batch to label; with --human the batch is written to a file and the run "
                    "stops until it is labelled. A rerun with the same --out continues.",
        epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    _data_arguments(p)
    p.add_argument("--human", action="store_true",
                   help="labels from a person via batch files (default: the oracle, i.e. DATA's own labels)")
    p.add_argument("--classes", help="comma-separated class names of an unlabelled pool (with --human)")
    p.add_argument("--strategy", default="margin", choices=list(STRATEGIES),
                   help="; ".join(f"{k}: {v}" for k, v in STRATEGIES.items()))
    p.add_argument("--diversity", default="kmeans", choices=list(DIVERSITY),
                   help="how a batch is spread over the candidates in the model's embedding: kmeans (default: k-means "
                        "on the candidates, the one nearest each centre), kmeans++ (D² sampling), kcenter "
                        "(farthest-first) or none (plain top-k, batches of near-duplicates)")
    p.add_argument("--batch-size", type=int, default=10, help="labels asked per round (default 10)")
    p.add_argument("--budget", type=int,
                   help="total labels to spend, seed set included (oracle default: initial + 10 batches; --human: no "
                        "limit); may be raised on a rerun")
    p.add_argument("--initial", type=int, help="cold-start labels when there is no seed set (default --batch-size)")
    p.add_argument("--cold-start", default="kmeans", choices=list(COLD_STARTS),
                   help="how the first batch is chosen without labels (default kmeans prototypes)")
    p.add_argument("--seed-labels", metavar="FILE",
                   help="labels you already have: a CSV/Parquet file with columns id,label (class names)")
    p.add_argument("--labels-file", metavar="FILE",
                   help="--human: read this labelled file instead of the pending batch-NNN.csv/.parquet")
    p.add_argument("--candidates", type=int, default=10,
                   help="the batch is spread over the candidates x batch-size most informative rows (default 10)")
    p.add_argument("--model", default="mlp", help="model trained every round: logreg, mlp (default), convnet")
    p.add_argument("--epochs", type=int, default=5, help="epochs per round (raised to --min-steps steps; default 5)")
    p.add_argument("--min-steps", type=int, default=500, help="at least this many optimiser steps per round (500)")
    p.add_argument("--no-random", action="store_true",
                   help="oracle mode: skip the random-labelling comparison (halves training time)")
    p.add_argument("--seed", type=int, default=0, help="random_state (default 0)")
    p.add_argument("--device", default="auto", help="auto (default), cpu or cuda")
    p.add_argument("--out", required=True, help="run folder; an existing run there is continued")
    p.set_defaults(func=cmd_active)
    return p


def _load_pool(args):
    """(data for :func:`datadistill.active.active`, classes or None)."""
    from .data import load

    if args.human and args.classes:
        from .active import read_pool

        classes = [c.strip() for c in args.classes.split(",") if c.strip()]
        return read_pool(args.data, label=args.label), classes
    if args.classes:
        raise ConfigError("--classes names the classes of an unlabelled pool; it needs --human")
    if args.human:
        return load(args.data, label=args.label, ensure_test=False, delimiter=args.delimiter), None
    return load(args.data, label=args.label, test_fraction=args.test_fraction, random_state=args.split_seed,
                delimiter=args.delimiter), None


def cmd_active(args) -> int:
    """Run or continue the loop; 0 when a batch waits for labels or the loop is done."""
    from .active import active, read_label_file
    from .data import Dataset

    if args.batch_size < 1:
        raise ConfigError(f"--batch-size must be at least 1, got {args.batch_size}")
    data, classes = _load_pool(args)
    if isinstance(data, Dataset):
        print(data.summary(), file=sys.stderr)
        n, names = len(data), data.classes
    else:
        n, names = len(data), tuple(classes)
    seed_ids = seed_labels = None
    if args.seed_labels:
        got = read_label_file(args.seed_labels, names, n_pool=n)
        if got is None:
            raise ConfigError(f"{args.seed_labels}: no row has a label")
        seed_ids, seed_labels = got
    result = active(data, args.out, labels="human" if args.human else "oracle", strategy=args.strategy,
                    diversity=args.diversity, batch_size=args.batch_size, budget=args.budget, initial=args.initial,
                    seed_ids=seed_ids, seed_labels=seed_labels, cold_start=args.cold_start,
                    candidates=args.candidates, model=args.model, epochs=args.epochs, min_steps=args.min_steps,
                    classes=classes, compare_random=not args.no_random, labels_file=args.labels_file,
                    random_state=args.seed, device=args.device, progress=True)
    print(result.summary())
    return 0
