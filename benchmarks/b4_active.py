"""B4, active learning with an oracle: labels needed to reach 95% of full-data accuracy, vs random labelling.

Protocol: one data set from --data-dir, its own test split. Every model is the same recipe (the probe recipe of
datadistill: --model, Adam, --epochs raised to at least --min-steps optimiser steps), trained from scratch.
Per seed:
  full     the recipe on every training row; the target is --target-share x the mean full accuracy over seeds;
  active   ``datadistill.active`` with the oracle: a k-means cold start of --initial labels, then batches of
           --batch-size chosen by --strategy (diverse batches), retrained every round, until the test accuracy
           reaches the target (or --max-labels);
  random   the same recipe on the first n rows of a seeded random order, n = --initial, --initial + --batch-size,
           ... (the same grid as active), until the target (or --max-random labels).
Labels to target = the first grid point whose test accuracy reaches the target.

    python benchmarks/b4_active.py --data-dir ../shared/data --dataset mnist
    python benchmarks/b4_active.py --data-dir ../shared/data --dataset ijcnn1 --batch-size 20 --initial 20
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def load(data_dir: Path, name: str):
    import datadistill

    path = data_dir / (name if name.endswith(".npz") else f"{name}.npz")
    if not path.exists():
        sys.exit(f"b4: no data set {path.name} in {data_dir} (have: {', '.join(p.name for p in data_dir.glob('*.npz'))})")
    return datadistill.load(path), path


def train_eval(ds, pre, inputs, test_inputs, rows, seed, args) -> float:
    from datadistill.data import Dataset
    from datadistill.scores.probe import train_probe
    from datadistill.training import accuracy

    part = Dataset(X=ds.X[rows], y=ds.y[rows], classes=ds.classes)
    net, _ = train_probe(part, model=args.model, epochs=args.epochs, seed=seed, device=args.device, preprocessor=pre,
                         inputs=inputs[rows], min_steps=args.min_steps)
    return accuracy(net, test_inputs, ds.test.y)


def first_reaching(points: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, acc in points if acc >= target), None)


def mean_std(values: list[float]) -> str:
    v = np.asarray(values, dtype=float)
    return f"{v.mean():.1f} ± {v.std():.1f}"


def parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--strategy", default="margin")
    p.add_argument("--diversity", default="kmeans")
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--initial", type=int, help="cold-start labels (default --batch-size)")
    p.add_argument("--max-labels", type=int, default=3000)
    p.add_argument("--max-random", type=int, default=8000)
    p.add_argument("--model", default="mlp")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--min-steps", type=int, default=500)
    p.add_argument("--target-share", type=float, default=0.95)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu")
    p.add_argument("--work-dir", type=Path, help="run folders of the active loops (default: a temporary folder)")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    args.initial = args.initial or args.batch_size
    args.command = " ".join(["python", "benchmarks/b4_active.py",
                             *map(shlex.quote, argv if argv is not None else sys.argv[1:])])
    return args


def run_seed(s: int, ds, pre, inputs, test_inputs, full: float, target: float, work: Path, args) -> dict:
    """One seed: the active loop until the target, then random labelling on the same grid."""
    from datadistill.active import active

    t = time.perf_counter()
    result = active(ds, work / f"{args.strategy}-seed{s}", labels="oracle", strategy=args.strategy,
                    diversity=args.diversity, batch_size=args.batch_size, initial=args.initial,
                    budget=args.max_labels, model=args.model, epochs=args.epochs, min_steps=args.min_steps,
                    compare_random=False, until_accuracy=target, random_state=s, device=args.device,
                    progress=True)
    active_seconds = time.perf_counter() - t
    active_points = [(p["labels"], p["accuracy"]) for p in result.curve]
    t = time.perf_counter()
    order = np.random.default_rng([s, 7]).permutation(len(ds))
    random_points = []
    for i, n in enumerate(range(args.initial, args.max_random + 1, args.batch_size)):
        acc = train_eval(ds, pre, inputs, test_inputs, order[:n], s * 1000 + i, args)
        random_points.append((n, acc))
        print(f"random seed {s}: {n} labels, accuracy {acc:.4f}", flush=True)
        if acc >= target:
            break
    row = {"seed": s, "full_accuracy": full,
           "active_labels": first_reaching(active_points, target),
           "random_labels": first_reaching(random_points, target),
           "active_curve": active_points, "random_curve": random_points,
           "active_seconds": active_seconds, "random_seconds": time.perf_counter() - t,
           "query_seconds": result.labelled_set.meta["timings"]["query_seconds"]}
    print(f"seed {s}: active {row['active_labels']} labels, random {row['random_labels']} labels", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)

    import torch

    from datadistill.data.preprocess import Preprocessor
    from datadistill.evaluation import environment

    torch.set_num_threads(args.threads)
    ds, path = load(args.data_dir, args.dataset)
    tag = path.stem
    print(ds.summary(), flush=True)
    pre = Preprocessor.fit(ds)
    inputs, test_inputs = pre.transform(ds.X), pre.transform(ds.test.X)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix=f"b4-{tag}-"))
    seeds = list(range(args.seeds))
    start_all = time.perf_counter()

    full = {}
    for s in seeds:
        t = time.perf_counter()
        full[s] = train_eval(ds, pre, inputs, test_inputs, np.arange(len(ds)), s, args)
        print(f"full seed {s}: {full[s]:.4f} ({time.perf_counter() - t:.0f} s)", flush=True)
    full_mean = float(np.mean(list(full.values())))
    target = args.target_share * full_mean
    print(f"target: {args.target_share:.0%} of {full_mean:.4f} = {target:.4f}", flush=True)
    rows = [run_seed(s, ds, pre, inputs, test_inputs, full[s], target, work, args) for s in seeds]

    total_seconds = time.perf_counter() - start_all
    env = environment(args.device)
    reached = [r for r in rows if r["active_labels"] and r["random_labels"]]
    ratios = [r["random_labels"] / r["active_labels"] for r in reached]
    summary = {
        "dataset": tag, "n_train": len(ds), "n_test": len(ds.test), "classes": len(ds.classes),
        "full_accuracy_mean": full_mean, "target_share": args.target_share, "target_accuracy": target,
        "active_labels": [r["active_labels"] for r in rows], "random_labels": [r["random_labels"] for r in rows],
        "ratio_per_seed": ratios,
        "ratio_of_means": (float(np.mean([r["random_labels"] for r in reached]) /
                           np.mean([r["active_labels"] for r in reached])) if reached else None),
    }
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "command"}
    doc = {"benchmark": "b4_active", "command": args.command, "environment": env, "threads": args.threads,
           "settings": settings, "summary": summary, "seeds": rows, "total_seconds": total_seconds}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"b4_active_{tag}.json").write_text(json.dumps(doc, indent=1) + "\n")
    plot(rows, target, full_mean, args, args.out / f"b4_active_{tag}.png")
    text = report(rows, summary, ratios, path, ds, env, seeds, total_seconds, args)
    (args.out / f"b4_active_{tag}.md").write_text(text)
    print(text)
    return 0


def report(rows, summary, ratios, path: Path, ds, env, seeds, total_seconds: float, args) -> str:
    """The markdown results file."""
    tag, full_mean, target = summary["dataset"], summary["full_accuracy_mean"], summary["target_accuracy"]
    reached = [r for r in rows if r["active_labels"] and r["random_labels"]]
    spread = {"kmeans": "k-means on them, the row nearest each centre", "kmeans++": "k-means++ (D²) sampling",
              "kcenter": "farthest-first k-center", "none": "none (top-k)"}.get(args.diversity, args.diversity)

    def fmt(v):
        return "not reached" if v is None else f"{v:,}"

    lines = [
        f"# B4: active learning on {tag} (oracle labels)",
        "",
        f"- data: `{path.name}`: {len(ds):,} training rows (the pool), {len(ds.test):,} test rows, "
        f"{len(ds.classes)} classes",
        f"- model: {args.model}, probe recipe (Adam, {args.epochs} epochs raised to at least {args.min_steps} "
        "optimiser steps), retrained from scratch on every labelled set; the same recipe for full, active and random",
        f"- active: strategy {args.strategy}; the 10 x batch most uncertain rows are the candidates, diversity "
        f"{args.diversity} ({spread}) in the model's embedding; k-means cold start of {args.initial} labels, "
        f"then batches of {args.batch_size}",
        f"- random: the first n rows of a seeded random order, n on the same grid ({args.initial}, "
        f"{args.initial + args.batch_size}, ...)",
        f"- target: {args.target_share:.0%} of the mean full-data test accuracy {100 * full_mean:.2f}% = "
        f"{100 * target:.2f}%; labels to target = the first grid point at or above it",
        f"- seeds: {seeds}",
        f"- machine: {env['machine']}; device {args.device}; torch threads {args.threads}; shared with other jobs",
        f"- versions: {', '.join(f'{k} {v}' for k, v in env['versions'].items())}",
        f"- date: {env['date']}; total time {total_seconds / 60:.1f} min",
        f"- command: `{args.command}`",
        "",
        "| seed | full accuracy (%) | active: labels to target | random: labels to target | random / active |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        ratio = (f"{r['random_labels'] / r['active_labels']:.2f}x" if r["active_labels"] and r["random_labels"]
                 else "—")
        lines.append(f"| {r['seed']} | {100 * r['full_accuracy']:.2f} | {fmt(r['active_labels'])} | "
                     f"{fmt(r['random_labels'])} | {ratio} |")
    if reached:
        lines.append(f"| mean ± std | {100 * full_mean:.2f} | {mean_std([r['active_labels'] for r in reached])} | "
                     f"{mean_std([r['random_labels'] for r in reached])} | {summary['ratio_of_means']:.2f}x "
                     f"(per seed {', '.join(f'{x:.2f}' for x in ratios)}) |")
    lines += ["", f"![learning curves](b4_active_{tag}.png)", "",
              "Seconds per seed (machine shared, so indicative only): " + "; ".join(
                  f"seed {r['seed']}: active {r['active_seconds']:.0f} s (of which querying {r['query_seconds']:.0f} s), "
                  f"random {r['random_seconds']:.0f} s" for r in rows), ""]
    return "\n".join(lines)


def plot(rows, target, full, args, path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    for i, r in enumerate(rows):
        a, b = zip(*r["active_curve"]), zip(*r["random_curve"])
        ax.plot(*a, "-", color="C0", alpha=0.8, label=f"active ({args.strategy})" if i == 0 else None)
        ax.plot(*b, "--", color="grey", alpha=0.8, label="random labelling" if i == 0 else None)
    ax.axhline(full, color="black", lw=0.8, label="full data (mean)")
    ax.axhline(target, color="C3", lw=0.8, ls=":", label=f"target ({args.target_share:.0%} of full)")
    ax.set_xlabel("labels spent")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(max(0.0, target - 0.25), min(1.0, full + 0.03))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.savefig(path, dpi=110, bbox_inches="tight")


if __name__ == "__main__":
    sys.exit(main())
