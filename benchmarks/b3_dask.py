"""B3 (scale-out): row-partitioned selection on a Dask LocalCluster of 1 and of 2 worker processes.

Generated data (a mixture of Gaussians, one per class, float32). For each method the pools (one per class)
are cut into the same number of row partitions on both clusters, so both choose the same subset; reported:
fit seconds on 1 and on 2 workers (the whole-set step, standardising the features, is done once beforehand
and reused), the speedup, whether the subsets are identical, and the bytes that cross the network, measured
as the summed sizes of the objects placed on the workers (the rows, once), sent with the tasks and gathered
from them (``DaskExecutor.traffic``). A by-class k-center row shows what sending the selector to every
worker costs instead.

Run from the repository root:
    python benchmarks/b3_dask.py [--n 200000] [--d 64] [--classes 10] [--ratio 0.01] [--partitions 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
METHODS = (("top-k score", "score", {}), ("k-center (farthest)", "kcenter", {"sampling": "farthest"}),
           ("facility location (GreeDi)", "facility-location", {"n_neighbors": 10}),
           ("k-means (partition centroids)", "kmeans", {}))


def machine() -> dict:
    import dask
    import distributed
    import numpy as np
    import torch

    from datadistill.evaluation import cpu_name

    return {"platform": platform.platform(), "cpu": cpu_name(), "cpu_count": os.cpu_count(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "dask": dask.__version__, "distributed": distributed.__version__}


def make_data(n: int, d: int, classes: int, seed: int = 0):
    import numpy as np

    from datadistill.data.dataset import Dataset

    rng = np.random.default_rng(seed)
    centres = rng.normal(scale=3.0, size=(classes, d))
    y = rng.integers(classes, size=n)
    X = (centres[y] + rng.normal(size=(n, d))).astype(np.float32)
    return Dataset.create(X, y, name=f"mixture-{n}x{d}")


def make_selector(method: str, ratio: float, extra: dict):
    import numpy as np

    from datadistill.select import get_selector
    from datadistill.select.scored import ScoreSelector

    class ProjectionScore(ScoreSelector):
        """A score without a probe: each row's projection on a fixed random direction (top-k: hardest)."""

        name = "projection-score"

        def _prepare(self, dataset, rng):
            self.order_ = "highest"
            self.scores_ = dataset.X @ np.random.default_rng(0).normal(size=dataset.X.shape[1]).astype(np.float32)

    if method == "score":
        return ProjectionScore(ratio=ratio, strategy="hardest", random_state=0)
    return get_selector(method, ratio=ratio, drop_misclassified=False, random_state=0, **extra)


def timed_fit(client, data, method, ratio, extra, by, partitions):
    import numpy as np

    from datadistill.parallel import DaskExecutor

    sel = make_selector(method, ratio, extra)
    sel._prepare(data, np.random.default_rng(0))  # warm the memoised features: the runs time the parts only
    ex = DaskExecutor(client, by=by, n_partitions=partitions)
    t = time.perf_counter()
    sel.fit(data, executor=ex)
    return sel, time.perf_counter() - t, dict(ex.traffic)


def render(meta: dict, rows: list[dict]) -> str:
    m = meta["machine"]
    mb = 1e6
    lines = [f"# B3: row-partitioned selection on Dask ({meta['date']})", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {m['platform']}, {m['cpu']}, {m['cpu_count']} cores (2-core machine, loaded: shared with "
             f"other jobs; load average {meta['load_before']} before, {meta['load_after']} after); "
             f"numpy {m['numpy']}, torch {m['torch']}, dask {m['dask']}, distributed {m['distributed']}, "
             f"Python {m['python']}  ",
             f"Data: {meta['data']}; budget {meta['ratio']} of each class ({meta['selected']} rows); "
             f"{meta['partitions']} row partitions per class pool on both clusters; one thread per process", "",
             "| method | by | 1 worker s | 2 workers s | speedup | identical | placed MB (rows, once) "
             "| sent MB | gathered MB | tasks |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        t = r["traffic_2"]
        lines.append(f"| {r['method']} | {r['by']} | {r['seconds_1']:.1f} | {r['seconds_2']:.1f} | "
                     f"{r['speedup']:.2f} | {'yes' if r['identical'] else 'NO'} | {t['placed'] / mb:.1f} | "
                     f"{t['sent'] / mb:.3f} | {t['gathered'] / mb:.3f} | {t['tasks']} |")
    lines += ["", meta["note"]]
    load = max(meta["load_before"][0], meta["load_after"][0])
    if load > m["cpu_count"]:
        lines += ["", f"This run had a load average of up to {load:.1f} on {m['cpu_count']} cores, so a second "
                  "worker process found no free core: these ratios do not measure what two idle cores give (the "
                  "issue asks for an otherwise idle machine; none was available). The subsets and the bytes do "
                  "not depend on the load."]
    return "\n".join(lines + [""])


def run(args) -> tuple[dict, list[dict]]:
    import numpy as np

    from datadistill.parallel import connect

    data = make_data(args.n, args.d, args.classes)
    load_before = tuple(round(x, 1) for x in os.getloadavg())
    plan = [(label, method, extra, "rows") for label, method, extra in METHODS]
    plan.append(("k-center (farthest)", "kcenter", {"sampling": "farthest"}, "class"))
    results: dict[int, list] = {}
    for workers in (1, 2):
        with connect(f"local:{workers}") as client:
            client.run(lambda: __import__("torch").set_num_threads(1))
            for label, method, extra, by in plan:
                sel, secs, traffic = timed_fit(client, data, method, args.ratio, extra, by, args.partitions)
                results.setdefault(workers, []).append((sel, secs, traffic))
                print(f"{label} by {by}, {workers} worker(s): {secs:.1f} s, traffic {traffic}", flush=True)
    rows = []
    for i, (label, method, _extra, by) in enumerate(plan):
        (s1, t1, _), (s2, t2, traffic) = results[1][i], results[2][i]
        rows.append({"method": label, "selector": method, "by": by, "seconds_1": t1, "seconds_2": t2,
                     "speedup": t1 / t2, "identical": bool(np.array_equal(s1.indices_, s2.indices_)),
                     "selected": int(len(s2.indices_)), "traffic_2": traffic})
    meta = {"benchmark": "B3 row-partitioned Dask", "n": args.n, "d": args.d, "classes": args.classes,
            "ratio": args.ratio, "partitions": args.partitions, "selected": rows[0]["selected"],
            "data": f"generated mixture of {args.classes} Gaussians (one per class), N = {args.n:,}, d = {args.d}, "
                    f"float32 ({data.X.nbytes / 1e6:.1f} MB)",
            "load_before": load_before, "load_after": tuple(round(x, 1) for x in os.getloadavg())}
    return meta, rows


NOTE = ("Seconds are the parts only (the whole-set step is warmed beforehand) and exclude cluster start-up. "
        "Traffic is measured on the 2-worker cluster (the 1-worker cluster moves the same objects). 'placed' is "
        "the rows' features, sent once per pool; after that, top-k gathers k candidates per partition, k-center "
        "and GreeDi gather k candidate rows per partition and send the k chosen centres back for one assignment "
        "pass, and k-means gathers k centroids per partition and sends the k merged centroids back once. The by-"
        "class row sends the whole selector (features of every row) to each worker. On a 2-core machine shared "
        "with other jobs the speedup is bounded by the caller's reduce step (round 2 runs where fit runs) and by "
        "the other load; read the ratios, not the seconds.")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--n", type=int, default=200_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--classes", type=int, default=10)
    ap.add_argument("--ratio", type=float, default=0.01)
    ap.add_argument("--partitions", type=int, default=2)
    ap.add_argument("--render", action="store_true", help="only rewrite the .md from the saved .json")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.render:
        saved = json.loads((out / "b3_dask.json").read_text())
        (out / "b3_dask.md").write_text(render(saved["meta"], saved["rows"]))
        return 0
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"  # one thread per process, workers included (they inherit the environment)
    import torch

    torch.set_num_threads(1)
    meta, rows = run(args)
    meta.update(machine=machine(), date=datetime.now(timezone.utc).isoformat(timespec="seconds"),
                command=" ".join(["python", *sys.argv]), note=NOTE)
    out.mkdir(parents=True, exist_ok=True)
    (out / "b3_dask.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "b3_dask.md").write_text(render(meta, rows))
    print(f"wrote {out / 'b3_dask.md'} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
