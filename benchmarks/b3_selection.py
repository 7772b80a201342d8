"""B3: selection speed and scale on MNIST (PCA 64): k-medoids vs FasterPAM, k-center greedy vs a plain NumPy
k-center, full-MNIST selection through the public API, facility location time vs N.

Run from the repository root:  python benchmarks/b3_selection.py [--data-dir ../shared/data] [--quick]
[--only kmedoids]  (--only re-runs the named parts and merges them into the saved results)
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

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    from datadistill.evaluation import cpu_name

    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "gpu": gpu,
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "load_average": os.getloadavg()}


def numpy_kcenter(X: np.ndarray, k: int, first: int = 0) -> float:
    """The plain NumPy k-center greedy baseline (full distance update per centre)."""
    mind = np.full(len(X), np.inf, dtype=np.float32)
    c = first
    for _ in range(k):
        mind = np.minimum(mind, ((X - X[c]) ** 2).sum(axis=1))
        c = int(np.argmax(mind))
    return float(np.sqrt(mind.max()))


def fmt(key: str, value) -> str:
    if not isinstance(value, float):
        return str(value)
    if "ratio" in key:
        return f"{value:.5f}"
    return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"


def render(meta: dict, rows: list[dict]) -> str:
    """The Markdown report: one table per benchmark part."""
    m = meta["machine"]
    lines = [f"# B3: selection speed and scale ({meta['date']})", "",
             f"Command: `{meta['command']}`  ", f"Machine: {m['cpu']}, {m['cores']} cores, torch threads "
             f"{m['torch_threads']}, torch {m['torch']}, numpy {m['numpy']}, device {meta['device']}, "
             f"load average at the end {tuple(round(x, 1) for x in m['load_average'])}  ",
             f"Data: {meta['data']} (PCA took {meta['pca_seconds']:.1f} s)", ""]
    for rerun in meta.get("partial_reruns", []):
        rm = rerun["machine"]
        lines += [f"Re-run of {', '.join(rerun['parts'])} ({rerun['date']}): `{rerun['command']}`, {rm['cpu']}, "
                  f"{rm['cores']} cores, torch threads {rm['torch_threads']}, load average at the end "
                  f"{tuple(round(x, 1) for x in rm['load_average'])}  "]
    if meta.get("partial_reruns"):
        lines.append("")
    for bench in dict.fromkeys(r["bench"] for r in rows):
        part = [r for r in rows if r["bench"] == bench]
        keys = [k for k in part[0] if k != "bench"]
        lines += [f"## {bench}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(fmt(k, r[k]) for k in keys) + " |" for r in part]
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch CPU threads (default 1: on a busy 2-core machine more threads only contend)")
    ap.add_argument("--render-only", action="store_true", help="rewrite the Markdown from the saved JSON")
    ap.add_argument("--methods", nargs="*", default=None,
                    help="instead: time select(mnist, METHOD, ratio=0.1, pca=64) for each named geometric method")
    ap.add_argument("--only", nargs="*", default=None, choices=("kmedoids", "kcenter", "api", "facility-location"),
                    help="run only these parts; their rows replace those in the saved JSON, the rest are kept")
    args = ap.parse_args(argv)
    parts = set(args.only) if args.only else {"kmedoids", "kcenter", "api", "facility-location"}
    stem = "b3_selection_quick" if args.quick else "b3_selection"
    if args.methods is not None:
        stem = "b3_selection_methods"
    out_dir = Path(args.out)
    if args.render_only:
        saved = json.loads((out_dir / f"{stem}.json").read_text())
        (out_dir / f"{stem}.md").write_text(render(saved["meta"], saved["rows"]))
        return 0
    if args.threads > 0:
        torch.set_num_threads(args.threads)
        from threadpoolctl import threadpool_limits

        threadpool_limits(args.threads)  # scikit-learn / BLAS thread pools too

    import kmedoids as fasterpam_pkg
    from sklearn.decomposition import PCA

    from datadistill.data.sources import load_npz
    from datadistill.select import select
    from datadistill.select.facility_location import facility_location_greedy, knn_similarity
    from datadistill.select.kcenter import kcenter_greedy
    from datadistill.select.kmedoids import kmedoids
    from datadistill.training import resolve_device

    dev = resolve_device(args.device)
    mnist = load_npz(Path(args.data_dir) / "mnist.npz")
    X = mnist.X.reshape(len(mnist), -1).astype(np.float32) / 255.0
    t = time.perf_counter()
    Z = PCA(64, svd_solver="randomized", random_state=0).fit_transform(X).astype(np.float32)
    pca_s = time.perf_counter() - t
    rows: list[dict] = []

    def add(**row):
        rows.append(row)
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), flush=True)

    for method in args.methods or []:
        t = time.perf_counter()
        out = select(mnist, method, ratio=0.1, pca=64, device=str(dev))
        add(bench="methods", method=method, n=len(mnist), selected=len(out.y), weights_sum=float(out.weights.sum()),
            seconds=time.perf_counter() - t)

    if args.methods is None:
        # k-medoids vs FasterPAM (same data, same distance matrix; FasterPAM's time excludes building it)
        for n in ((1000, 2000) if args.quick else (2000, 5000)) if "kmedoids" in parts else ():
            k = n // 10
            Zn = torch.as_tensor(Z[:n], device=dev)
            t = time.perf_counter()
            medoids, _, _ = kmedoids(Zn, k, np.random.default_rng(0))
            ours_s = time.perf_counter() - t
            D = torch.cdist(torch.as_tensor(Z[:n]).double(), torch.as_tensor(Z[:n]).double()).numpy()
            np.fill_diagonal(D, 0.0)
            ours = float(D[:, medoids].min(axis=1).sum())  # scored on FasterPAM's float64 matrix
            # FasterPAM's BUILD seeding is O(k·N^2): 8 s at N = 2,000 but 283 s at N = 5,000 here, so only the first
            for init in ("random", "build") if n <= 2000 else ("random",):
                t = time.perf_counter()
                ref = fasterpam_pkg.fasterpam(D, k, init=init, random_state=0, n_cpu=1)
                ref_s = time.perf_counter() - t
                add(bench="kmedoids", n=n, k=k, fasterpam_init=init, ours_objective=ours, fasterpam_objective=float(ref.loss),
                    objective_ratio=ours / float(ref.loss), ours_s=ours_s, fasterpam_s=ref_s)

        if "kcenter" in parts:
            # k-center greedy at N = 60,000, k = 6,000 (d = 64) vs plain NumPy
            n_kc, k_kc = (20_000, 2_000) if args.quick else (60_000, 6_000)
            Zt = torch.as_tensor(Z[:n_kc], device=dev)
            t = time.perf_counter()
            _, _, r_ours = kcenter_greedy(Zt, k_kc, first=0)
            if dev.type == "cuda":
                torch.cuda.synchronize()
            ours_s = time.perf_counter() - t
            t = time.perf_counter()
            r_np = numpy_kcenter(Z[:n_kc], k_kc, first=0)
            np_s = time.perf_counter() - t
            add(bench="kcenter", n=n_kc, k=k_kc, ours_s=ours_s, numpy_s=np_s, speedup=np_s / ours_s, ours_radius=r_ours,
                numpy_radius=r_np)

        if "api" in parts:
            # the public API on full MNIST at ratio 0.1 (per-class budgets)
            full = mnist if not args.quick else mnist.subset(np.arange(20_000))
            for method, params in (("kcenter", {"pca": 64}), ("kcenter", {}), ("entropy", {"model": "mlp", "epochs": 5}),
                                   ("gradnorm", {"model": "mlp", "epochs": 5, "score_params": {"last_layer": True}})):
                t = time.perf_counter()
                out = select(full, method, ratio=0.1, device=str(dev), **params)
                add(bench="api", method=method, params=json.dumps(params), n=len(full), selected=len(out.y),
                    seconds=time.perf_counter() - t)

        if "facility-location" in parts:
            # facility location (kNN-sparse, lazy greedy) time vs N, k = N / 10
            for n in ((2000, 5000, 10_000) if args.quick else (5000, 10_000, 20_000, 60_000)):
                t = time.perf_counter()
                W = knn_similarity(Z[:n], 20)
                graph_s = time.perf_counter() - t
                t = time.perf_counter()
                _, gains, _ = facility_location_greedy(W, n // 10, np.random.default_rng(0))
                greedy_s = time.perf_counter() - t
                add(bench="facility-location", n=n, k=n // 10, knn_graph_s=graph_s, greedy_s=greedy_s,
                    total_s=graph_s + greedy_s, objective=float(gains.sum()))

    meta = {"benchmark": "B3 selection speed and scale", "data": "MNIST train (60,000 x 784), pixels / 255, PCA 64",
            "pca_seconds": pca_s, "device": str(dev), "machine": machine(),
            "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "command": " ".join(["python", *sys.argv])}
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_path = out_dir / f"{stem}.json"
    if args.only and saved_path.exists():  # merge: replace the re-run parts, keep the others (and their meta)
        saved = json.loads(saved_path.read_text())
        kept = [r for r in saved["rows"] if r["bench"] not in parts]
        merged = []
        for bench in dict.fromkeys(r["bench"] for r in saved["rows"] + rows):
            merged += [r for r in (rows if bench in parts else kept) if r["bench"] == bench]
        rows = merged
        meta = {**saved["meta"], "partial_reruns": [*saved["meta"].get("partial_reruns", []),
                                                    {"parts": sorted(parts), "date": meta["date"],
                                                     "command": meta["command"], "machine": meta["machine"]}]}
    (out_dir / f"{stem}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (out_dir / f"{stem}.md").write_text(render(meta, rows))
    print(f"wrote {out_dir / stem}.md and .json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
