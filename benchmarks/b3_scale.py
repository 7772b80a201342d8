"""B3 at scale: selection on one machine, side by side with the libraries users would pick instead.

Parts (each timed with its peak resident memory above the process's baseline):
  bandwidth  the machine's copy and read bandwidth (NumPy), the yardstick for k-center
  kcenter    streaming k-center (farthest-first and D²) vs a chunked NumPy farthest-first on the generated
             mixture (N x 128): seconds per centre, fraction of the copy bandwidth, identical picks
  knn        kNN graph: exact (scikit-learn) vs faiss IVF / HNSW (and pynndescent when installed): build+query
             time and recall@k against exact search
  facility   facility location (ours, kNN graph + lazy greedy) vs apricot (dense, lazy greedy), objective in
             apricot's terms (sum_i max_j in S (max d^2 - d^2(i, j)))
  kmedoids   ours (FasterPAM matrix engine; CLARA beyond) vs FasterPAM from 3 random starts
  kmeans     faiss k-means vs scikit-learn (MiniBatch)KMeans, prototypes + inertia
Read ratios measured in the same run, not absolute seconds (a shared, loaded 2-core machine).

Run from the repository root:
  python benchmarks/b3_scale.py [--data-dir ../shared/data] [--only kcenter,knn] [--n 1000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
PARTS = ("bandwidth", "kcenter", "knn", "facility", "kmedoids", "kmeans", "scale_1m")


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Measure:
    """Wall time and peak RSS above the starting RSS (sampled every 20 ms) of a with-block."""

    def __enter__(self):
        self.base = self.peak = rss()
        self.stop = False
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        self.t0 = time.perf_counter()
        return self

    def _watch(self):
        while not self.stop:
            self.peak = max(self.peak, rss())
            time.sleep(0.02)

    def __exit__(self, *exc):
        self.seconds = time.perf_counter() - self.t0
        self.stop = True
        self.thread.join()
        self.peak = max(self.peak, rss())
        self.mb = (self.peak - self.base) / 2**20
        return False


def machine() -> dict:
    try:
        from datadistill.evaluation import cpu_name

        cpu = cpu_name()
    except Exception:  # the CPU's name is decoration
        cpu = platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version(),
            "load_average_start": os.getloadavg()}


def mixture(n: int, d: int = 128, centers: int = 10, seed: int = 0, out=None, labels: bool = False):
    """The generated mixture: ``centers`` Gaussians (unit variance, centres N(0, 9 I)) in d dimensions.

    ``out``: an (n, d) float32 array (e.g. a memory map) to fill; ``labels=True`` also returns the components."""
    rng = np.random.default_rng(seed)
    C = rng.normal(size=(centers, d)).astype(np.float32) * 3
    X = np.empty((n, d), dtype=np.float32) if out is None else out
    y = np.empty(n, dtype=np.int64)
    for s in range(0, n, 1 << 16):
        e = min(n, s + (1 << 16))
        y[s:e] = rng.integers(centers, size=e - s)
        X[s:e] = C[y[s:e]] + rng.standard_normal((e - s, d), dtype=np.float32)
    return (X, y) if labels else X


def mnist_pca(data_dir: str, dim: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    with np.load(Path(data_dir) / "mnist.npz") as f:
        key = next(k for k in f.files if k.lower().startswith("x") and "test" not in k.lower())
        X = f[key].reshape(len(f[key]), -1).astype(np.float32) / 255.0
    return np.ascontiguousarray(PCA(dim, svd_solver="randomized", random_state=0).fit_transform(X), dtype=np.float32)


def bandwidth(n_bytes: int = 1 << 29) -> dict:
    a = np.ones(n_bytes // 4, dtype=np.float32)
    b = np.empty_like(a)
    copy = read = 0.0
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        copy = max(copy, 2 * a.nbytes / (time.perf_counter() - t))  # STREAM convention: read + write bytes
        t = time.perf_counter()
        a.sum()
        read = max(read, a.nbytes / (time.perf_counter() - t))
    return {"copy_GBps": copy / 1e9, "read_GBps": read / 1e9}


def numpy_farthest_first(X: np.ndarray, k: int, first: int = 0, chunk: int = 16384) -> np.ndarray:
    """The baseline: farthest-first with a chunked NumPy distance update (X - c, squared, summed)."""
    n = len(X)
    mind = np.full(n, np.inf, dtype=np.float32)
    out, c = [], first
    for _ in range(k):
        out.append(c)
        x = X[c]
        for s in range(0, n, chunk):
            diff = X[s:s + chunk] - x
            np.minimum(mind[s:s + chunk], np.einsum("ij,ij->i", diff, diff), out=mind[s:s + chunk])
        c = int(np.argmax(mind))
    return np.asarray(out)


def numpy_blas_farthest_first(X: np.ndarray, k: int, first: int = 0, chunk: int = 16384) -> np.ndarray:
    """A faster NumPy baseline: the same update through BLAS matrix-vector products (|x|^2 + |c|^2 - 2 x.c)."""
    n = len(X)
    sq = np.einsum("ij,ij->i", X, X)
    mind = np.full(n, np.inf, dtype=np.float32)
    out, c = [], first
    for _ in range(k):
        out.append(c)
        x = X[c]
        for s in range(0, n, chunk):
            d = sq[s:s + chunk] + sq[c] - 2 * (X[s:s + chunk] @ x)
            np.minimum(mind[s:s + chunk], d, out=mind[s:s + chunk])
        c = int(np.argmax(mind))
    return np.asarray(out)


def part_kcenter(args, rows, bw):
    from datadistill.select.kcenter import kcenter_greedy

    n, k = args.n, args.kcenter_k
    X = mixture(n)
    gb = X.nbytes / 1e9
    Xt = torch.as_tensor(X)
    res = {}
    for name, fn in [("ours farthest", lambda: kcenter_greedy(Xt, k, first=0)[0]),
                     ("ours d2", lambda: kcenter_greedy(Xt, k, first=0, d2=True, rng=np.random.default_rng(0))[0]),
                     ("numpy chunked farthest-first", lambda: numpy_farthest_first(X, k)),
                     ("numpy BLAS farthest-first", lambda: numpy_blas_farthest_first(X, k))]:
        with Measure() as m:
            picks = fn()
        res[name] = (m, picks)
        per = m.seconds / k
        rows.append({"bench": "kcenter", "method": name, "N": n, "d": 128, "k": k, "seconds": m.seconds,
                     "s_per_centre": per, "GBps": gb / per, "copy_bw_fraction": gb / per / bw["copy_GBps"],
                     "read_bw_fraction": gb / per / bw["read_GBps"], "peak_MB": m.mb,
                     "x_vs_numpy_chunked": None, "same_picks_as_numpy": None})
        print(rows[-1], flush=True)
    base = res["numpy chunked farthest-first"]
    for r in rows:
        if r["bench"] == "kcenter" and r["N"] == n:
            r["x_vs_numpy_chunked"] = base[0].seconds / res[r["method"]][0].seconds
            if r["method"] != "ours d2":
                r["same_picks_as_numpy"] = bool(np.array_equal(res[r["method"]][1], base[1]))


def recall(idx, ref):
    return float(np.mean([len(np.intersect1d(a, b)) / ref.shape[1] for a, b in zip(idx, ref)]))


def part_knn(args, rows, data):
    from datadistill.neighbors import knn

    k = 21
    for name, Z in data.items():
        n = len(Z)
        q = np.random.default_rng(0).choice(n, 2000, replace=False)
        with Measure() as m:
            if n <= 20_000:
                _, ref = knn(Z, k, backend="exact")
                ref = ref[q]
            else:  # exact reference on 2,000 query rows, its time scaled to the whole graph
                _, ref = knn(Z, k, queries=Z[q], backend="exact")
        exact_s = m.seconds if n <= 20_000 else m.seconds * n / len(q)
        rows.append({"bench": "knn", "data": name, "N": n, "k": k - 1, "backend": "exact (scikit-learn)",
                     "seconds": exact_s, "peak_MB": m.mb, "recall": 1.0, "x_vs_exact": 1.0,
                     "note": "" if n <= 20_000 else "time scaled from 2,000 queries"})
        print(rows[-1], flush=True)
        for backend in ("ivf", "hnsw"):
            with Measure() as m:
                _, idx = knn(Z, k, backend=backend)
            rows.append({"bench": "knn", "data": name, "N": n, "k": k - 1, "backend": f"faiss {backend}",
                         "seconds": m.seconds, "peak_MB": m.mb, "recall": recall(idx[q], ref),
                         "x_vs_exact": exact_s / m.seconds, "note": ""})
            print(rows[-1], flush=True)
        if args.pynndescent:
            try:
                import pynndescent
            except ImportError:
                continue
            pynndescent.NNDescent(Z[:1000], n_neighbors=k, random_state=0)  # compile outside the timing
            with Measure() as m:
                idx, _ = pynndescent.NNDescent(Z, n_neighbors=k, random_state=0).neighbor_graph
            rows.append({"bench": "knn", "data": name, "N": n, "k": k - 1, "backend": "pynndescent (warm)",
                         "seconds": m.seconds, "peak_MB": m.mb, "recall": recall(idx[q], ref),
                         "x_vs_exact": exact_s / m.seconds, "note": "numba compilation excluded"})
            print(rows[-1], flush=True)


def apricot_objective(Z: np.ndarray, S: np.ndarray) -> tuple[float, float]:
    """apricot's facility location value for metric='euclidean' (similarity max d^2 - d^2) and the mean
    squared distance to the nearest chosen row; chunked."""
    Zt = torch.as_tensor(Z, dtype=torch.float64)
    C = Zt[torch.as_tensor(S)]
    dmax, near = 0.0, []
    for s in range(0, len(Z), 4096):
        near.append((torch.cdist(Zt[s:s + 4096], C) ** 2).min(dim=1).values)
        dmax = max(dmax, float((torch.cdist(Zt[s:s + 4096], Zt) ** 2).max()))
    near = torch.cat(near)
    return float(len(Z) * dmax - near.sum()), float(near.mean())


def part_facility(args, rows, Z):
    from datadistill.select.facility_location import facility_location_greedy, knn_similarity

    for n in args.facility_n:
        X = Z[:n]
        k = n // 10
        with Measure() as m:
            W = knn_similarity(X, 20)
            ours, _, _ = facility_location_greedy(W, k, np.random.default_rng(0))
        f_ours, msd_ours = apricot_objective(X, ours)
        rows.append({"bench": "facility", "N": n, "k": k, "method": "ours (auto kNN graph, lazy greedy)",
                     "seconds": m.seconds, "peak_MB": m.mb, "apricot_objective": f_ours, "mean_sq_dist": msd_ours,
                     "x_vs_apricot": None, "objective_vs_apricot": None})
        print(rows[-1], flush=True)
        try:
            from apricot import FacilityLocationSelection
        except ImportError:
            continue
        if n > 20_000:
            continue  # its dense matrix needs ~29 GB at 60,000 (B3 anchor figures)
        with Measure() as m:
            sel = FacilityLocationSelection(k, metric="euclidean", optimizer="lazy").fit(X)
        f_ap, msd_ap = apricot_objective(X, np.asarray(sel.ranking))
        rows.append({"bench": "facility", "N": n, "k": k, "method": "apricot (dense, lazy greedy)",
                     "seconds": m.seconds, "peak_MB": m.mb, "apricot_objective": f_ap, "mean_sq_dist": msd_ap,
                     "x_vs_apricot": 1.0, "objective_vs_apricot": 1.0})
        rows[-2]["x_vs_apricot"] = m.seconds / rows[-2]["seconds"]
        rows[-2]["objective_vs_apricot"] = f_ours / f_ap
        print(rows[-2], rows[-1], flush=True)


def part_kmedoids(args, rows, Z):
    import kmedoids as kmedoids_pkg

    from datadistill.select.kmedoids import dissimilarity_matrix, kmedoids

    for n in args.kmedoids_n:
        X = Z[:n]
        k = n // 10
        Xt = torch.as_tensor(X)
        ref = None
        if n <= 20_000:
            with Measure() as m:
                D = dissimilarity_matrix(Xt)
                ref = min(float(kmedoids_pkg.fasterpam(D, k, init="random", random_state=s, n_cpu=1).loss)
                          for s in range(3))
            del D
            rows.append({"bench": "kmedoids", "N": n, "k": k, "method": "FasterPAM (kmedoids, 3 random starts)",
                         "seconds": m.seconds, "peak_MB": m.mb, "objective": ref, "x_vs_fasterpam": 1.0,
                         "objective_vs_fasterpam": 1.0})
            print(rows[-1], flush=True)
            fp_s = m.seconds
        with Measure() as m:
            _, _, obj = kmedoids(Xt, k, np.random.default_rng(0))
        engine = "matrix" if n <= 20_000 else "CLARA"
        rows.append({"bench": "kmedoids", "N": n, "k": k, "method": f"ours ({engine} engine)", "seconds": m.seconds,
                     "peak_MB": m.mb, "objective": obj, "x_vs_fasterpam": fp_s / m.seconds if ref else None,
                     "objective_vs_fasterpam": obj / ref if ref else None})
        print(rows[-1], flush=True)
        if n <= args.clara_compare_max:
            with Measure() as m:
                _, _, obj = kmedoids(Xt, k, np.random.default_rng(0), max_matrix=n // 2)
            rows.append({"bench": "kmedoids", "N": n, "k": k, "method": "ours (CLARA engine, forced)",
                         "seconds": m.seconds, "peak_MB": m.mb, "objective": obj,
                         "x_vs_fasterpam": fp_s / m.seconds if ref else None,
                         "objective_vs_fasterpam": obj / ref if ref else None})
            print(rows[-1], flush=True)


def part_kmeans(args, rows):
    from datadistill.select.kmeans import kmeans_prototypes

    for n, k in args.kmeans_nk:
        X = mixture(n)
        out = {}
        for engine in ("faiss", "sklearn"):
            with Measure() as m:
                _, _, inertia = kmeans_prototypes(X, k, random_state=0, engine=engine, minibatch_above=0)
            out[engine] = (m.seconds, inertia)
            rows.append({"bench": "kmeans", "N": n, "d": 128, "k": k,
                         "method": "faiss k-means (20 iter)" if engine == "faiss" else "scikit-learn MiniBatchKMeans",
                         "seconds": m.seconds, "peak_MB": m.mb, "data_MB": X.nbytes / 2**20, "inertia": inertia,
                         "x_vs_sklearn": None, "inertia_vs_sklearn": None})
            print(rows[-1], flush=True)
        for r in rows[-2:]:
            eng = "faiss" if r["method"].startswith("faiss") else "sklearn"
            r["x_vs_sklearn"] = out["sklearn"][0] / out[eng][0]
            r["inertia_vs_sklearn"] = out[eng][1] / out["sklearn"][1]

# --- the 1M table: one row per selector, each in its own process with a time limit ----------------------------------
OUT_OF_CORE = ("kcenter", "kmeans", "entropy", "margin", "random")
SCALE_ROWS = (  # (method, how it runs at this size, seconds allowed)
    ("kcenter", "out of core (select_out_of_core)", 300),
    ("kmeans", "out of core (select_out_of_core, streamed mini-batch)", 300),
    ("entropy", "out of core (probe on 50,000 rows, one scoring pass)", 300),
    ("margin", "out of core (probe on 50,000 rows, one scoring pass)", 300),
    ("random", "out of core (reference)", 120),
    ("kmedoids", "in memory, sampled (CLARA + FasterPAM) engine", 300),
    ("facility-location", "in memory, kNN graph (auto backend) + lazy greedy", 180),
    ("herding", "in memory", 90),
    ("dbscan", "in memory", 90),
    ("agglomerative", "in memory (Ward; k-means pre-clustering beyond max_ward)", 90),
)


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike getrusage's ru_maxrss it does not keep the parent's
    high-water mark across fork + exec)."""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def coverage(X: np.ndarray, y: np.ndarray, picks: np.ndarray, std: np.ndarray) -> dict:
    """Objectives of the kept rows in the standardised space the selectors work in (features / ``std``), each class
    covered by its own picks (the selection is split per class): k-center radius (largest distance to the nearest
    pick), k-means-style summed squared distance and k-medoids summed distance, over all N rows; float32
    distances, float64 sums."""
    scale = torch.as_tensor(1.0 / np.asarray(std, dtype=np.float32))
    radius, sq, dist = 0.0, 0.0, 0.0
    for c in np.unique(y):
        P = torch.as_tensor(np.asarray(X[np.sort(picks[y[picks] == c])])) * scale
        if len(P) == 0:
            return {"kcenter_radius": float("inf"), "sum_sq_dist": float("inf"), "sum_dist": float("inf")}
        rows = np.flatnonzero(y == c)
        for s in range(0, len(rows), 8192):
            Q = torch.as_tensor(np.asarray(X[rows[s:s + 8192]])) * scale
            m = torch.cdist(Q, P).min(dim=1).values.double()
            radius = max(radius, float(m.max()))
            sq += float((m * m).sum())
            dist += float(m.sum())
    return {"kcenter_radius": radius, "sum_sq_dist": sq, "sum_dist": dist}


def scale_row(args) -> int:
    """Child process: one selector on the 1M mixture; prints one line 'ROW {json}'."""
    from datadistill.data.dataset import Dataset
    from datadistill.data.outofcore import open_out_of_core, preprocessor, select_out_of_core
    from datadistill.select.base import get_selector

    method, data, labels = args.row, Path(args.row_data), Path(args.row_data).with_suffix(".labels.npy")
    geometric = method not in ("entropy", "margin", "random")
    params = {"per_class": "proportional", "random_state": 0}
    if geometric:
        params["drop_misclassified"] = False  # no probe: selection on the features alone
    rss0 = peak_rss_mb()
    t0 = time.perf_counter()
    if method in OUT_OF_CORE:
        out = select_out_of_core(data, method, ratio=args.scale_ratio, labels=labels, scratch_dir=data.parent,
                                 **params)
    else:
        ds = Dataset.create(np.load(data), np.load(labels), name="mixture-1m")
        out = get_selector(method, ratio=args.scale_ratio, **params).fit_transform(ds)
        del ds
    seconds = time.perf_counter() - t0
    peak = peak_rss_mb()
    picks = np.asarray(out.indices, dtype=np.int64)
    np.save(data.parent / f"b3_picks_{method}.npy", picks)
    std = preprocessor(open_out_of_core(data, labels)).std  # the selectors' standardisation (50,000-row sample)
    obj = coverage(np.load(data, mmap_mode="r"), np.load(labels), picks, std)
    print("ROW " + json.dumps({"seconds": seconds, "peak_RSS_MB": peak, "RSS_after_imports_MB": rss0,
                               "kept": int(len(picks)), "distinct": int(len(np.unique(picks))), **obj}), flush=True)
    return 0


def scale_data(args) -> Path:
    """The 1M x 128 mixture (labels = components) as .npy files in --scratch, written once."""
    path = Path(args.scratch) / f"b3_mixture_{args.scale_n}.npy"
    if not path.exists() or not path.with_suffix(".labels.npy").exists():
        X = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(args.scale_n, 128))
        _, y = mixture(args.scale_n, out=X, labels=True)
        X.flush()
        del X
        np.save(path.with_suffix(".labels.npy"), y)
    return path


def part_scale(args, rows, save):
    data = scale_data(args)
    n = args.scale_n
    wanted = set(args.scale_methods.split(",")) if args.scale_methods else None
    for method, how, limit in SCALE_ROWS:
        if wanted is not None and method not in wanted:
            continue
        cmd = [sys.executable, str(Path(__file__).resolve()), "--row", method, "--row-data", str(data),
               "--scale-ratio", str(args.scale_ratio)]
        row = {"bench": "scale_1m", "method": method, "engine": how, "N": n, "d": 128,
               "k": int(round(n * args.scale_ratio)), "seconds": None, "peak_RSS_MB": None, "kcenter_radius": None,
               "sum_sq_dist": None, "sum_dist": None, "load_1min": os.getloadavg()[0], "note": ""}
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, cwd=ROOT)
            got = [ln for ln in p.stdout.splitlines() if ln.startswith("ROW ")]
            if got:
                res = json.loads(got[-1][4:])
                row.update({k: res[k] for k in row if k in res})
                row["note"] = (f"RSS after imports {res['RSS_after_imports_MB']:.0f} MB; kept {res['kept']} "
                               f"({res['distinct']} distinct)")
            else:
                tail = (p.stderr.strip().splitlines() or ["no output"])[-1]
                row["note"] = f"failed (exit {p.returncode}): {tail[:200]}"
        except subprocess.TimeoutExpired:
            row["note"] = f"did not finish in {limit} s (stopped)"
        rows.append(row)
        print(row, flush=True)
        save()


def fmt(value) -> str:
    if isinstance(value, bool) or value is None:
        return "" if value is None else str(value)
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 100 else f"{value:.3g}"
    return str(value)


def render(meta: dict, rows: list[dict]) -> str:
    m = meta["machine"]
    lines = [f"# B3 at scale ({meta['date']})", "", f"Command: `{meta['command']}`  ",
             f"Machine: {m['cpu']}, {m['cores']} cores (shared with other jobs), torch threads {m['torch_threads']}, "
             f"torch {m['torch']}, numpy {m['numpy']}; load average at start "
             f"{tuple(round(x, 1) for x in m['load_average_start'])}, at end "
             f"{tuple(round(x, 1) for x in meta['load_average_end'])}  ", "",
             "Seconds are wall time on a loaded shared machine: compare rows of one table (same run), not runs. "
             "peak_MB: peak resident memory above the process's level before the row.", ""]
    if meta.get("carried"):
        c = meta["carried"]
        lines += [f"Tables {', '.join(c['benches'])}: carried from the run of {c['date']} (`{c['command']}`, load "
                  f"average at start {tuple(round(x, 1) for x in c['load_average_start'])}), not rerun.", ""]
    if meta.get("notes"):
        lines += ["Notes:", ""] + [f"- {note}" for note in meta["notes"]] + [""]
    if any(r["bench"] == "scale_1m" for r in rows):
        lines += ["scale_1m: each row a separate process with a time limit; seconds = the selection call (the "
                  "in-memory rows include loading the .npy and building the Dataset); peak_RSS_MB = the child "
                  "process's peak resident memory (VmHWM, imports and data included; file-backed pages of the "
                  "out-of-core rows' memory maps count). Objectives are evaluated on the kept rows in the "
                  "standardised space the selectors work in (features / their standard deviation over a seeded "
                  "50,000-row sample), each class against its own picks: kcenter_radius = largest distance to the nearest pick, sum_sq_dist = "
                  "k-means-style inertia to the kept rows, sum_dist = the k-medoids objective.", ""]
    for bench in dict.fromkeys(r["bench"] for r in rows):
        part = [r for r in rows if r["bench"] == bench]
        keys = [k for k in part[0] if k != "bench"]
        lines += [f"## {bench}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
        lines += ["| " + " | ".join(fmt(r.get(k)) for k in keys) + " |" for r in part]
        lines.append("")
    return "\n".join(lines)


def parse(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    ap.add_argument("--name", default="b3_scale", help="stem of the result files (<out>/<name>.md and .json)")
    ap.add_argument("--carry", default=None,
                    help="an earlier result .json: its tables of parts not run now are kept, marked as carried")
    ap.add_argument("--only", default=",".join(PARTS))
    ap.add_argument("--n", type=int, default=1_000_000, help="rows of the mixture for k-center")
    ap.add_argument("--kcenter-k", type=int, default=100, help="centres timed per k-center method")
    ap.add_argument("--facility-n", default="10000,20000")
    ap.add_argument("--kmedoids-n", default="5000,10000,60000")
    ap.add_argument("--clara-compare-max", type=int, default=10000)
    ap.add_argument("--kmeans", default="200000x2000", help="NxK pairs, comma-separated")
    ap.add_argument("--knn-mixture-n", type=int, default=100_000)
    ap.add_argument("--pynndescent", action="store_true")
    ap.add_argument("--scale-n", type=int, default=1_000_000, help="rows of the mixture for the scale_1m part")
    ap.add_argument("--scale-ratio", type=float, default=0.01, help="kept share, split per class (scale_1m)")
    ap.add_argument("--scale-methods", default="", help="comma-separated subset of the scale_1m rows (default all)")
    ap.add_argument("--scratch", default="/tmp", help="folder for the scale_1m data files")
    ap.add_argument("--rerender", default=None, help="a result .json: write its .md again, then stop")
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)  # child process of scale_1m
    ap.add_argument("--row-data", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.facility_n = [int(v) for v in args.facility_n.split(",") if v]
    args.kmedoids_n = [int(v) for v in args.kmedoids_n.split(",") if v]
    args.kmeans_nk = [tuple(int(x) for x in v.split("x")) for v in args.kmeans.split(",") if v]
    return args


def carried(path, parts) -> tuple[list[dict], dict]:
    """Rows of the parts not run now from an earlier result file, and a note naming that run."""
    old = json.loads(Path(path).read_text())
    rows = [r for r in old["rows"] if r["bench"] not in parts and r["bench"] != "bandwidth"]
    benches = list(dict.fromkeys(r["bench"] for r in rows))
    return rows, {"benches": benches, "date": old["meta"]["date"], "command": old["meta"]["command"],
                  "load_average_start": old["meta"]["machine"]["load_average_start"]}


def rerender(path: str) -> int:
    """Write the .md of a result .json again (after notes were added to its meta)."""
    res = json.loads(Path(path).read_text())
    Path(path).with_suffix(".md").write_text(render(res["meta"], res["rows"]))
    return 0


def main(argv=None) -> int:
    args = parse(argv)
    if args.row:
        return scale_row(args)
    if args.rerender:
        return rerender(args.rerender)
    parts = [p for p in args.only.split(",") if p]
    meta = {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python benchmarks/b3_scale.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "machine": machine()}
    rows: list[dict] = []
    old_rows = []
    if args.carry:
        old_rows, meta["carried"] = carried(args.carry, parts)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)

    def save():
        meta["load_average_end"] = os.getloadavg()
        (out / f"{args.name}.json").write_text(json.dumps({"meta": meta, "rows": rows + old_rows}, indent=1,
                                                          default=str))
        (out / f"{args.name}.md").write_text(render(meta, rows + old_rows))

    bw = bandwidth()
    rows.append({"bench": "bandwidth", **bw})
    print(rows[-1], flush=True)
    mnist = None
    if {"knn", "facility", "kmedoids"} & set(parts):
        mnist = {64: mnist_pca(args.data_dir, 64), 50: None}
    steps = {"kcenter": lambda: part_kcenter(args, rows, bw),
             "knn": lambda: part_knn(args, rows, {"MNIST PCA 64 (20k)": mnist[64][:20_000],
                                                  "MNIST PCA 64 (60k)": mnist[64],
                                                  f"mixture d=128 ({args.knn_mixture_n // 1000}k)":
                                                      mixture(args.knn_mixture_n)}),
             "facility": lambda: part_facility(args, rows, mnist[64]),
             "kmedoids": lambda: part_kmedoids(args, rows, mnist_pca(args.data_dir, 50)),
             "kmeans": lambda: part_kmeans(args, rows),
             "scale_1m": lambda: part_scale(args, rows, save)}
    for part in parts:  # in the order given
        steps[part]()
        save()
    save()
    print(render(meta, rows + old_rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
