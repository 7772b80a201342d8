"""B1 auto: `datadistill auto --max-drop 1.0` on a real data set; size chosen, verified drop, random, time.

Runs :func:`datadistill.auto` (search with cheap proxies on a validation split of the training rows, then
verification with the real model on the test split against full data and random subsets of the same size) and
writes ``benchmarks/results/b1_auto_<dataset>.md`` / ``.json`` with the machine and the command, plus the run
folder ``b1_auto_<dataset>_run/`` (the set and auto's own ``search.md`` / ``search.json``).

    python benchmarks/b1_auto.py --data-dir ../shared/data --dataset mnist --max-drop 1.0
    python benchmarks/b1_auto.py --data-dir ../shared/data --dataset ijcnn1 --search bayes --budget-minutes 30
    python benchmarks/b1_auto.py --data-dir ../shared/data --dataset mnist --limit 3000   # a smoke test

``--limit N`` keeps N training rows (and at most N test rows), seeded, and ``--label-noise F`` flips a share F of
the training labels to another class (seeded); either adds a suffix to the result names, so a smoke test or a
noisy run never replaces the clean full-data result.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def load(data_dir: Path, name: str, limit: int | None, label_noise: float):
    import datadistill
    from datadistill.data import Dataset

    path = data_dir / f"{name}.npz"
    if not path.exists():
        sys.exit(f"b1_auto: no {path.name} in {data_dir} (have: {', '.join(p.name for p in data_dir.glob('*.npz'))})")
    ds = datadistill.load(path)
    X, y, test = ds.X, ds.y, ds.test
    if limit is not None and limit < len(ds):
        from sklearn.model_selection import train_test_split

        idx, _ = train_test_split(np.arange(len(ds)), train_size=limit, stratify=ds.y, random_state=0)
        idx = np.sort(idx)
        X, y = X[idx], y[idx]
        if len(test) > limit:
            tidx = np.sort(np.random.default_rng(1).choice(len(test), limit, replace=False))
            test = Dataset(X=test.X[tidx], y=test.y[tidx], classes=ds.classes, name=f"{ds.name}[test]")
    if label_noise > 0:
        rng = np.random.default_rng(2)
        y = y.copy()
        flip = rng.choice(len(y), int(round(label_noise * len(y))), replace=False)
        y[flip] = (y[flip] + rng.integers(1, ds.n_classes, len(flip))) % ds.n_classes
    return Dataset(X=X, y=y, classes=ds.classes, test=test, name=ds.name, info=ds.info), path


def markdown(record: dict) -> str:
    v, c, s, t = record["verified"], record["chosen"], record["settings"], record["timings"]
    pct = lambda m, sd: f"{100 * m:.2f} ± {100 * sd:.2f}"  # noqa: E731
    lines = [
        f"# B1 auto on {record['dataset']}", "",
        f"- data: `{record['data_file']}`: {s['n_train']:,} training rows ({s['pool_size']:,} in the pool, "
        f"{s['validation_size']:,} carved out for validation), {s['test_size']:,} test rows"
        + (f"; subsample --limit {record['limit']}" if record["limit"] else "")
        + (f"; {100 * record['label_noise']:.0f}% of training labels flipped (seeded)" if record["label_noise"] else ""),
        f"- machine: {record['environment']['machine']}; device {s['device']}; torch threads {record['threads']}",
        f"- versions: {', '.join(f'{k} {v_}' for k, v_ in record['environment']['versions'].items())}",
        f"- date: {record['environment']['date']}",
        f"- command: `{record['command']}`",
        f"- search: {s['search']} over {', '.join(s['methods'])}"
        f"{' (+ soft labels)' if s['soft_labels'] else ''}; sizes {', '.join(map(str, s['sizes']))}; "
        f"model {s['model']}; budget {s['budget_minutes'] or 'none'} min; max drop {s['max_drop']} points",
        f"- verification: {s['verify_seeds']} seeds, {s['budget_rule']}", "",
        "## Result", "",
        "| size chosen | ratio of pool | method | verified accuracy % | full % | random at that size % | drop (points) "
        "| within max drop | time s |",
        "|---:|---:|---|---:|---:|---:|---:|---|---:|",
        f"| {v['size']:,} | {100 * v['ratio']:.2f}% | {v['method']}{' + soft' if v['soft'] else ''} | "
        f"{pct(v['subset_mean'], v['subset_std'])} | {pct(v['full_mean'], v['full_std'])} | "
        f"{pct(v['random_mean'], v['random_std'])} | {v['drop']:.2f} | {'yes' if v['within_drop'] else 'no'} | "
        f"{t['total_seconds']:.0f} |", "",
        f"Chosen by the search: {c['method']}{' + soft' if c['soft'] else ''} at {c['size']:,} rows (proxy "
        f"{pct(c['proxy_mean'], c['proxy_std'])} vs full-data proxy {100 * c['reference_mean']:.2f}); "
        f"{len(record['candidates'])} candidates tried, {len(record['verification'])} verified.",
    ]
    if record["fallback"]:
        lines += ["", f"Fallback: {record['fallback']}"]
    lines += [f"Note: {n}" for n in record["notes"]]
    lines += ["", f"Time: setup {t['setup_seconds']:.0f} s, search {t['search_seconds']:.0f} s (selection "
              f"{t['selection_seconds']:.0f} s, proxies {t['proxy_seconds']:.0f} s), verification "
              f"{t['verify_seconds']:.0f} s, total {t['total_seconds']:.0f} s.", "",
              f"Every candidate and verification row: `{record['run_dir']}/search.md`.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    p.add_argument("--dataset", required=True, choices=["mnist", "ijcnn1"])
    p.add_argument("--max-drop", type=float, default=1.0)
    p.add_argument("--search", default="halving", choices=["halving", "bayes", "genetic"])
    p.add_argument("--budget-minutes", type=float)
    p.add_argument("--model", default="mlp")
    p.add_argument("--methods", help="comma-separated methods (default: auto's)")
    p.add_argument("--soft-labels", action="store_true")
    p.add_argument("--limit", type=int, help="keep this many training rows (a smoke test)")
    p.add_argument("--label-noise", type=float, default=0.0, help="share of training labels flipped (seeded)")
    p.add_argument("--threads", type=int, default=1, help="torch intra-op threads (1 is fastest on a busy box)")
    p.add_argument("--device", default=None)
    p.add_argument("--results-dir", type=Path, default=RESULTS)
    args = p.parse_args(argv)

    import torch

    import datadistill
    from datadistill.evaluation import environment
    from datadistill.training import resolve_device

    torch.set_num_threads(args.threads)
    ds, path = load(args.data_dir, args.dataset, args.limit, args.label_noise)
    suffix = (f"_limit{args.limit}" if args.limit else "") + (
        f"_noisy{round(100 * args.label_noise)}" if args.label_noise else "")
    name = f"b1_auto_{args.dataset}{suffix}"
    run_dir = args.results_dir / f"{name}_run"
    command = "python benchmarks/b1_auto.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    print(ds.summary(), flush=True)
    start = time.perf_counter()
    result = datadistill.auto(ds, max_drop=args.max_drop, model=args.model, budget_minutes=args.budget_minutes,
                              search=args.search, methods=args.methods, soft_labels=args.soft_labels,
                              device=args.device, out=run_dir, overwrite=True, command=command)
    seconds = time.perf_counter() - start
    record = {"dataset": args.dataset, "data_file": path.name, "limit": args.limit, "label_noise": args.label_noise,
              "threads": args.threads, "command": command, "seconds": seconds,
              "environment": environment(str(resolve_device(args.device))),
              "run_dir": str(run_dir.relative_to(REPO)) if run_dir.is_relative_to(REPO) else str(run_dir),
              **result.to_dict()}
    args.results_dir.mkdir(parents=True, exist_ok=True)
    (args.results_dir / f"{name}.json").write_text(json.dumps(record, indent=2, sort_keys=True) + "\n")
    (args.results_dir / f"{name}.md").write_text(markdown(record))
    print(result.summary())
    print(f"-> {args.results_dir / name}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
