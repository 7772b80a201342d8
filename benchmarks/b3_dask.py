"""B3 (scale-out): a per-class selector run single-process vs on a Dask LocalCluster of 1 and 2 workers.

The selector's whole-set step (PCA features) runs where ``fit_distributed`` is called; its per-class parts
(here k-medoids on each class pool) run on the workers. Reported: wall-clock seconds of each run, speedup
of 2 workers over 1, and whether each run chose exactly the same rows as the single-process ``fit``.
Cluster start-up is timed separately and not included in the ``fit`` seconds.

Run from the repository root:
    python benchmarks/b3_dask.py [--data-dir /work/shared/data] [--n 20000] [--method kmedoids]
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


def machine() -> dict:
    import dask
    import distributed
    import numpy as np
    import torch

    import datadistill
    from datadistill.evaluation import cpu_name

    return {"cpu": cpu_name(), "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "dask": dask.__version__, "distributed": distributed.__version__,
            "datadistill": getattr(datadistill, "__version__", "?"), "load_average": os.getloadavg()}


def render(meta: dict, rows: list[dict]) -> str:
    m = meta["machine"]
    lines = [f"# B3: scale-out with Dask ({meta['date']})", "",
             f"Command: `{meta['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores; torch {m['torch']} ({m['torch_threads']} thread per "
             f"process), numpy {m['numpy']}, dask {m['dask']}, distributed {m['distributed']}, Python {m['python']}; "
             f"load average at the end {tuple(round(x, 1) for x in m['load_average'])}  ",
             f"Data: {meta['data']}  ",
             f"Selector: `{meta['selector']}` ({meta['parts']} per-class parts, {meta['selected']} rows chosen)  ",
             f"Whole-set step (PCA features, runs in the calling process, included in every time): "
             f"{meta['prepare_seconds']:.1f} s", "",
             "| run | worker environment | workers | cluster start s | fit s | speedup vs 1 worker "
             "| indices identical to fit |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        sp = f"{r['speedup_vs_1_worker']:.2f}" if r.get("speedup_vs_1_worker") else "-"
        start = f"{r['cluster_start_s']:.1f}" if r["cluster_start_s"] is not None else "-"
        lines.append(f"| {r['run']} | {r['worker_env']} | {r['workers'] if r['workers'] else '-'} | {start} | "
                     f"{r['seconds']:.1f} | {sp} | {'yes' if r['identical'] else 'NO'} |")
    lines += ["", meta["note"], ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default="/work/shared/data")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--n", type=int, default=20_000, help="first N training rows of MNIST (0: all 60,000)")
    ap.add_argument("--method", default="kmedoids")
    ap.add_argument("--ratio", type=float, default=0.1)
    ap.add_argument("--pca", type=int, default=64)
    ap.add_argument("--workers", type=int, nargs="*", default=[1, 2])
    ap.add_argument("--worker-env", nargs="*", default=["dask-default", "no-malloc-trim"],
                    choices=("dask-default", "no-malloc-trim"),
                    help="worker process environment: Dask's default (sets MALLOC_TRIM_THRESHOLD_=65536, which "
                         "makes every large allocation an mmap/munmap) and/or the same without that variable")
    args = ap.parse_args(argv)

    # one intra-op thread per process, workers included (they inherit the environment)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    import numpy as np
    import torch

    torch.set_num_threads(1)
    from distributed import Client, LocalCluster

    import datadistill
    from datadistill.parallel import fit_distributed
    from datadistill.select import get_selector

    data = datadistill.load(Path(args.data_dir) / "mnist.npz")
    if args.n:
        data = data.subset(np.arange(min(args.n, len(data))))
    params = {"ratio": args.ratio, "pca": args.pca, "random_state": 0}

    def make():
        return get_selector(args.method, **params)

    rows = []
    t = time.perf_counter()
    ref = make().fit(data)
    single_s = time.perf_counter() - t
    # the whole-set step alone, for reference
    probe = make()
    t = time.perf_counter()
    probe._prepare(data, np.random.default_rng(0))
    prepare_s = time.perf_counter() - t
    rows.append({"run": "fit (single process)", "worker_env": "-", "workers": 0, "cluster_start_s": None, "seconds": single_s,
                 "identical": True, "selected": int(len(ref.indices_))})
    print(f"fit: {single_s:.1f} s, {len(ref.indices_)} rows", flush=True)
    import dask

    default_env = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    for env, w in [(e, w) for e in args.worker_env for w in args.workers]:
        environ = default_env if env == "dask-default" else {k: v for k, v in default_env.items()
                                                              if k != "MALLOC_TRIM_THRESHOLD_"}
        dask.config.set({"distributed.nanny.pre-spawn-environ": environ})
        if env != "dask-default":  # a previous cluster leaves it in this process's environment, which workers inherit
            os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
        t = time.perf_counter()
        with LocalCluster(n_workers=w, threads_per_worker=1, processes=True, dashboard_address=None) as cluster, \
                Client(cluster) as client:
            client.run(lambda: __import__("torch").set_num_threads(1))
            start_s = time.perf_counter() - t
            t = time.perf_counter()
            sel = fit_distributed(make(), data, client=client)
            secs = time.perf_counter() - t
        same = bool(np.array_equal(sel.indices_, ref.indices_) and np.array_equal(sel.weights_, ref.weights_))
        rows.append({"run": "fit_distributed", "worker_env": env, "workers": w, "cluster_start_s": start_s,
                     "seconds": secs, "identical": same, "selected": int(len(sel.indices_))})
        print(f"fit_distributed ({env}), {w} worker(s): {secs:.1f} s (cluster start {start_s:.1f} s), identical: {same}",
              flush=True)

    for r in rows:
        one = next((q["seconds"] for q in rows if q["workers"] == 1 and q["worker_env"] == r["worker_env"]), None)
        r["speedup_vs_1_worker"] = one / r["seconds"] if one else None
    meta = {"benchmark": "B3 scale-out with Dask",
            "data": f"MNIST train, first {len(data):,} rows (of 60,000), pixels as loaded by datadistill.load",
            "selector": f"get_selector({args.method!r}, " + ", ".join(f"{k}={v!r}" for k, v in params.items()) + ")",
            "parts": len(ref.partitions(data, len(ref.indices_))), "selected": int(len(ref.indices_)),
            "prepare_seconds": prepare_s, "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv]),
            "note": "Each process (the caller and every worker) runs torch on one thread, so 2 workers use the "
                    "2 cores and the speedup is bounded by the per-class part times (the largest class pool "
                    "sets the critical path), by the whole-set PCA step, which runs in the caller, and by "
                    "whatever else runs on the machine (see the load average). Dask's default worker "
                    "environment sets MALLOC_TRIM_THRESHOLD_=65536, which turns off glibc's adaptive mmap "
                    "threshold: every large temporary (k-medoids allocates one per candidate block) is then "
                    "mapped and unmapped, which roughly halves the speed of a part on a worker; the "
                    "no-malloc-trim rows start the workers without that variable.",
            "worker_env": {"dask-default": default_env}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "b3_dask.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out / "b3_dask.md").write_text(render(meta, rows))
    print(f"wrote {out / 'b3_dask.md'} and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
