"""Partitioned execution: a selector's work mapped over threads or a Dask cluster, by rows or by class.

``Selector.fit(dataset, executor=DaskExecutor(...))`` runs the same code as a plain ``fit``: the whole-set
step (``_prepare``: features, a probe's scores) where it is called, then the parts (one per class, or the
whole set) through the executor. Two ways to spread the parts:

``by="rows"``: each part's pool is cut into row partitions, placed on the workers once, and the method's
composable form runs there; only per-partition summaries come back and are reduced where ``fit`` runs:

- score top-k (``strategy="hardest"``/``"easiest"``): the top k of each partition by (score, tie rank),
  then the top k of their union. The same subset as the offline method for any number of partitions.
- k-center: greedy k-center on each partition, then greedy k-center on the union of their centres (the
  two-round composable k-center; with farthest-first, radius <= max partition radius + union radius <= 4 x
  optimal), then one assignment pass for the cell sizes and the exact radius.
- facility location: GreeDi (Mirzasoleiman et al., 2013): lazy greedy on each partition's kNN graph, then lazy
  greedy on the union of the candidates, each weighted by the rows it covered in its partition; then one
  assignment pass (the weights are the chosen rows' Voronoi cells).
- k-means: k-means on each partition, then k-means of the union of their centroids weighted by cluster size;
  then one pass that returns, per centroid, its nearest member and its cluster size. Only centroids cross the
  network after the rows are placed.

The k-center, facility location and k-means subsets depend on the number of partitions (fix
``n_partitions`` to get the same subset on any cluster), not on the number of workers.

``by="class"``: each part runs whole on a worker (the selector is sent to every worker); the subset equals a
single-process ``fit``. ``by="auto"`` (default) is "rows" where the method has a composable form.
"""

from __future__ import annotations

import os
import pickle
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import numpy as np

from .data.dataset import Dataset
from .errors import ConfigError
from .select.base import Executor, PartResult, Selector, run_part

BY = ("auto", "rows", "class")


# --- schedulers -----------------------------------------------------------------------------------------
def _import_distributed():
    try:
        import distributed
    except ImportError:
        raise ConfigError("Dask is not installed: pip install 'datadistill[dask]'") from None
    return distributed


@contextmanager
def _local_cluster(n_workers: int, threads_per_worker: int = 1):
    import dask

    distributed = _import_distributed()
    # Dask's default worker environment sets MALLOC_TRIM_THRESHOLD_, which turns every large temporary
    # array into a fresh memory mapping; selectors allocate many, and run about 2x slower under it.
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            distributed.LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                                     dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


@contextmanager
def _remote_client(address: str, timeout: float):
    distributed = _import_distributed()
    try:
        client = distributed.Client(address, timeout=f"{float(timeout)}s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"no Dask scheduler answered at {address} within {timeout:g} s ({exc}); start one "
                          "(dask scheduler) or use scheduler='threads' or 'local:N'") from None
    try:
        try:
            client.wait_for_workers(1, timeout=float(timeout))
        except (OSError, TimeoutError):
            raise ConfigError(f"the Dask scheduler at {address} has no workers (waited {timeout:g} s)") from None
        yield client
    finally:
        client.close()


@contextmanager
def connect(scheduler: str = "threads", *, timeout: float = 10.0):
    """A ``distributed.Client`` for ``scheduler``, closed on exit (None for ``"threads"``).

    ``scheduler``: "threads" (this process, one thread per core), "local:N" (a new LocalCluster of N worker
    processes, one thread each, stopped on exit) or a scheduler address "tcp://host:port" (an existing
    cluster; ConfigError when it does not answer, or has no worker, within ``timeout`` seconds).
    """
    if not isinstance(scheduler, str):
        raise ConfigError(f"scheduler must be 'threads', 'local:N' or 'tcp://host:port', got {scheduler!r}")
    if not (isinstance(timeout, (int, float)) and timeout > 0):
        raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
    if scheduler == "threads":
        yield None
    elif scheduler.startswith("local:"):
        n = scheduler.partition(":")[2]
        if not n.isdigit() or int(n) < 1:
            raise ConfigError(f"scheduler 'local:N' needs a positive number of workers, got {scheduler!r}")
        with _local_cluster(int(n)) as client:
            yield client
    elif "://" in scheduler:
        with _remote_client(scheduler, timeout) as client:
            yield client
    else:
        raise ConfigError(f"scheduler must be 'threads', 'local:N' or 'tcp://host:port', got {scheduler!r}")


@contextmanager
def dask_client(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1,
                timeout: float = 10.0):
    """A ``distributed.Client`` to ``address``, or to a new local process cluster closed on exit."""
    if address:
        with _remote_client(address, timeout) as client:
            yield client
    else:
        with _local_cluster(n_workers, threads_per_worker) as client:
            yield client


# --- mapping over placed blocks ----------------------------------------------------------------------
def payload_bytes(obj) -> int:
    """Bytes of an object sent to or gathered from a worker: arrays and containers of them by their buffers
    (dask's ``sizeof``), anything else by its pickled size."""
    from dask.sizeof import sizeof

    if isinstance(obj, (np.ndarray, list, tuple, dict, int, float, str, bytes, type(None))):
        return int(sizeof(obj))
    return len(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


class _Mapper:
    """Place blocks on the workers once; map a function over them; count the bytes that move."""

    def __init__(self, client=None, n_threads: int | None = None):
        self.client = client
        self.n_threads = n_threads or os.cpu_count() or 1
        self.traffic = {"placed": 0, "sent": 0, "gathered": 0, "tasks": 0}

    @property
    def workers(self) -> int:
        if self.client is None:
            return self.n_threads
        return max(1, len(self.client.scheduler_info()["workers"]))

    def place(self, blocks: list) -> list:
        self.traffic["placed"] += sum(payload_bytes(b) for b in blocks)
        if self.client is None:
            return blocks
        return self.client.scatter(blocks, hash=False)

    def map(self, fn, handles: list, *args, seeds=None) -> list:
        """``fn(block, *args)`` on every placed block (with ``seed=seeds[i]`` when given), in block order."""
        kws = [{} if seeds is None else {"seed": int(s)} for s in (seeds if seeds is not None else handles)]
        self.traffic["sent"] += sum(payload_bytes((args, kw)) for kw in kws)
        self.traffic["tasks"] += len(handles)
        if self.client is None:
            with ThreadPoolExecutor(min(self.n_threads, len(handles))) as pool:
                out = list(pool.map(lambda hk: fn(hk[0], *args, **hk[1]), zip(handles, kws)))
        else:
            out = self.client.gather([self.client.submit(fn, h, *args, pure=False, **kw)
                                      for h, kw in zip(handles, kws)])
        self.traffic["gathered"] += sum(payload_bytes(o) for o in out)
        return out


class DaskExecutor(Executor):
    """Run ``fit``'s work on a Dask ``client`` (None: threads of this process), by rows or by class.

    Args:
        client: a ``distributed.Client`` (see :func:`connect`), or None for threads.
        by: "rows", "class" or "auto" (rows where the method has a composable form, see the module notes).
        n_partitions: row partitions per pool (default: the number of workers).
        n_threads: threads for ``client=None`` (default: the cores).

    ``traffic``: bytes placed on workers (rows, once per pool), sent with tasks and gathered from them.
    """

    def __init__(self, client=None, *, by: str = "auto", n_partitions: int | None = None,
                 n_threads: int | None = None):
        if by not in BY:
            raise ConfigError(f"by must be one of {', '.join(BY)}, got {by!r}")
        if n_partitions is not None and (isinstance(n_partitions, bool) or not isinstance(n_partitions, int)
                                         or n_partitions < 1):
            raise ConfigError(f"n_partitions must be a positive integer, got {n_partitions!r}")
        self.by = by
        self.n_partitions = n_partitions
        self.mapper = _Mapper(client, n_threads)

    @property
    def traffic(self) -> dict:
        return self.mapper.traffic

    def resolve_by(self, selector: Selector) -> str:
        """"rows" or "class" for ``selector`` (ConfigError for "rows" without a composable form)."""
        row_form = composable(selector)
        if self.by == "rows" and row_form is None:
            raise ConfigError(f"{selector.name}: no row-partitioned form; the row form exists for {ROW_METHODS}; "
                              "use by='class'")
        return "rows" if self.by == "rows" or (self.by == "auto" and row_form is not None) else "class"

    def map_parts(self, selector: Selector, parts) -> list[PartResult]:
        if self.resolve_by(selector) == "rows":
            return super().map_parts(selector, parts)  # parts in turn; each pool spread over the workers
        client, traffic = self.mapper.client, self.mapper.traffic
        traffic["tasks"] += len(parts)
        if client is None:
            with ThreadPoolExecutor(min(self.mapper.n_threads, max(1, len(parts)))) as pool:
                return list(pool.map(lambda p: run_part(selector, *p, None, True), parts))
        traffic["placed"] += payload_bytes(selector) * self.mapper.workers
        shared = client.scatter(selector, broadcast=True, hash=False)
        traffic["sent"] += sum(payload_bytes((pool, k, seed)) for pool, k, seed in parts)
        futures = [client.submit(run_part, shared, pool, k, seed, None, True, pure=False) for pool, k, seed in parts]
        results = client.gather(futures)
        traffic["gathered"] += sum(payload_bytes(tuple(r)) for r in results)
        return results

    def select_pool(self, selector: Selector, pool: np.ndarray, k: int, rng: np.random.Generator):
        if self.resolve_by(selector) == "class":
            return selector._select_pool(pool, k, rng)
        n_parts = max(1, min(self.n_partitions or self.mapper.workers, len(pool)))
        return composable(selector)(self.mapper, selector, pool, k, rng, n_parts)


def fit_distributed(selector: Selector, dataset: Dataset, *, scheduler: str | None = None, by: str = "auto",
                    n_partitions: int | None = None, timeout: float = 10.0, client=None,
                    address: str | None = None, n_workers: int = 2) -> Selector:
    """Fit ``selector`` on ``dataset`` with its work spread by :class:`DaskExecutor`.

    Args:
        scheduler: "threads", "local:N" or "tcp://host:port" (see :func:`connect`); default: ``address``
            when given, else a local cluster of ``n_workers`` processes.
        by, n_partitions: see :class:`DaskExecutor`.
        timeout: seconds to wait for a remote scheduler (and a worker) before a ConfigError.
        client: an existing ``distributed.Client`` (then ``scheduler`` is not used).
    """
    executor = DaskExecutor(client, by=by, n_partitions=n_partitions)
    executor.resolve_by(selector)  # refuse an impossible by='rows' before starting a cluster
    if client is not None:
        return selector.fit(dataset, executor=executor)
    with connect(scheduler or address or f"local:{int(n_workers)}", timeout=timeout) as own:
        return selector.fit(dataset, executor=DaskExecutor(own, by=by, n_partitions=n_partitions))


# --- the composable forms ------------------------------------------------------------------------------
def _place_rows(mapper: _Mapper, pool: np.ndarray, n_parts: int, **columns) -> list:
    """Cut ``pool`` into ``n_parts`` contiguous row partitions and place each ({"rows", column...}) once."""
    blocks = [{"rows": pool[c], **{name: values[c] for name, values in columns.items()}}
              for c in np.array_split(np.arange(len(pool)), n_parts)]
    return mapper.place(blocks)


def _local_topk(block: dict, k: int) -> dict:
    order = np.lexsort((block["rank"], block["key"]))[:k]
    return {name: values[order] for name, values in block.items()}


def _topk_rows(mapper, selector, pool, k, rng, n_parts):
    """Top k of the pool by the selector's difficulty, ties broken as ``choose`` does (a seeded rank)."""
    s = selector.scores_[pool]
    difficulty = s if selector.order_ == "highest" else -s
    key = -difficulty if selector.strategy == "hardest" else difficulty
    rank = np.empty(len(pool), dtype=np.int64)
    rank[rng.permutation(len(pool))] = np.arange(len(pool))
    handles = _place_rows(mapper, pool, n_parts, key=key, rank=rank)
    found = mapper.map(_local_topk, handles, k)
    union = {name: np.concatenate([f[name] for f in found]) for name in ("rows", "key", "rank")}
    return _local_topk(union, k)["rows"], None


def _local_kcenter(block: dict, k: int, d2: bool, trim: float, *, seed: int) -> dict:
    import torch

    from .select.kcenter import kcenter_greedy

    X = block["X"]
    rng = np.random.default_rng(seed)
    chosen, _, _ = kcenter_greedy(torch.as_tensor(X), min(k, len(X)), first=int(rng.integers(len(X))), trim=trim,
                                  rng=rng, d2=d2)
    return {"rows": block["rows"][chosen], "X": X[chosen]}


def _assign(block: dict, C: np.ndarray, members: bool = False) -> dict:
    """Each row's nearest row of ``C``: per-centre counts and the largest distance; with ``members``, also
    each centre's nearest row among those assigned to it (row, distance; -1 for none)."""
    import torch

    from .select.features import nearest

    idx, dist = nearest(torch.as_tensor(block["X"]), torch.as_tensor(C))
    idx, dist = idx.numpy(), dist.numpy().astype(np.float64)
    out = {"count": np.bincount(idx, minlength=len(C)).astype(np.float64),
           "radius": float(dist.max()) if len(dist) else 0.0}
    if members:
        order = np.lexsort((block["rows"], dist, idx))  # by centre, then distance, then row
        first = order[np.r_[True, idx[order][1:] != idx[order][:-1]]] if len(order) else order
        out["member"] = np.full(len(C), -1, dtype=np.int64)
        out["member_dist"] = np.full(len(C), np.inf)
        out["member"][idx[first]] = block["rows"][first]
        out["member_dist"][idx[first]] = dist[first]
    return out


def _cells(mapper, handles, C: np.ndarray) -> tuple[np.ndarray, float]:
    """Cell sizes of the centres ``C`` over all partitions (at least 1) and the largest distance to them."""
    cells = mapper.map(_assign, handles, C)
    sizes = np.sum([c["count"] for c in cells], axis=0)
    sizes[sizes == 0] = 1.0
    return sizes, max(c["radius"] for c in cells)


def _kcenter_rows(mapper, selector, pool, k, rng, n_parts):
    """Two-round composable k-center, then one assignment pass (cell sizes, the exact radius)."""
    import torch

    from .select.kcenter import auto_trim, kcenter_greedy

    trim = auto_trim(k / len(pool)) if selector.trim == "auto" else float(selector.trim)
    d2 = selector.sampling == "d2"
    handles = _place_rows(mapper, pool, n_parts, X=selector.features_[pool])
    local = mapper.map(_local_kcenter, handles, k, d2, trim, seeds=rng.integers(2**31, size=n_parts))
    rows = np.concatenate([p["rows"] for p in local])
    U = np.concatenate([p["X"] for p in local])
    chosen, _, _ = kcenter_greedy(torch.as_tensor(U), k, first=int(rng.integers(len(U))), trim=trim, rng=rng,
                                  d2=d2)
    sizes, radius = _cells(mapper, handles, U[chosen])
    return rows[chosen], sizes, {"radius_": radius}


def _local_facility(block: dict, k: int, n_neighbors: int, backend: str, *, seed: int) -> dict:
    from .select.facility_location import facility_location_greedy, knn_similarity

    X = block["X"]
    rng = np.random.default_rng(seed)
    W = knn_similarity(X, n_neighbors, backend=backend, random_state=int(rng.integers(2**31)))
    chosen, _, counts = facility_location_greedy(W, min(k, len(X)), rng)
    return {"rows": block["rows"][chosen], "X": X[chosen], "weight": np.maximum(counts, 1.0)}


def _greedi_rows(mapper, selector, pool, k, rng, n_parts):
    """GreeDi: lazy greedy per partition, then lazy greedy on the weighted union of the candidates."""
    from .select.facility_location import facility_location_greedy, knn_similarity

    n_neighbors, backend = int(selector.n_neighbors), selector.knn_backend
    handles = _place_rows(mapper, pool, n_parts, X=selector.features_[pool])
    local = mapper.map(_local_facility, handles, k, n_neighbors, backend, seeds=rng.integers(2**31, size=n_parts))
    rows = np.concatenate([p["rows"] for p in local])
    U = np.concatenate([p["X"] for p in local])
    W = knn_similarity(U, n_neighbors, backend=backend, random_state=int(rng.integers(2**31)))
    W = (W.multiply(np.concatenate([p["weight"] for p in local])[:, None])).tocsc()  # row i counts weight_i times
    chosen, gains, _ = facility_location_greedy(W, k, rng)
    sizes, _ = _cells(mapper, handles, U[chosen])
    return rows[chosen], sizes, {"gains_": gains, "objective_": float(gains.sum())}


def _local_kmeans(block: dict, k: int, max_iter: int, *, seed: int) -> dict:
    from sklearn.cluster import KMeans

    X = np.asarray(block["X"], dtype=np.float64)
    k = min(k, len(X))
    km = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=seed).fit(X)
    return {"C": km.cluster_centers_.astype(np.float32),
            "weight": np.bincount(km.labels_, minlength=k).astype(np.float64)}


def _kmeans_rows(mapper, selector, pool, k, rng, n_parts):
    """k-means per partition, k-means of the weighted union of centroids, then each centroid's nearest member."""
    from sklearn.cluster import KMeans

    max_iter = int(selector.max_iter or 100)
    handles = _place_rows(mapper, pool, n_parts, X=selector.features_[pool])
    local = mapper.map(_local_kmeans, handles, k, max_iter, seeds=rng.integers(2**31, size=n_parts))
    U = np.concatenate([p["C"] for p in local]).astype(np.float64)
    w = np.concatenate([p["weight"] for p in local])
    C = KMeans(n_clusters=k, n_init=1, max_iter=max_iter, random_state=int(rng.integers(2**31))
               ).fit(U, sample_weight=w).cluster_centers_.astype(np.float32)
    found = mapper.map(_assign, handles, C, True)
    dist = np.stack([f["member_dist"] for f in found])
    best = np.argmin(dist, axis=0)
    protos = np.stack([f["member"] for f in found])[best, np.arange(k)]
    sizes = np.sum([f["count"] for f in found], axis=0)
    if (protos < 0).any():  # empty clusters: a seeded draw of unused rows, then the prototypes' own cells
        empty = np.flatnonzero(protos < 0)
        protos[empty] = rng.choice(np.setdiff1d(pool, protos[protos >= 0]), size=len(empty), replace=False)
        sizes, _ = _cells(mapper, handles, selector.features_[protos])
    return protos, sizes


ROWS = {"kcenter": _kcenter_rows, "facility-location": _greedi_rows, "kmeans": _kmeans_rows}
ROW_METHODS = "kcenter, facility-location, kmeans and the score methods with strategy 'hardest' or 'easiest'"


def composable(selector: Selector):
    """The row-partitioned form of ``selector``'s method, or None when it has none."""
    from .select.scored import ScoreSelector

    if isinstance(selector, ScoreSelector):
        return _topk_rows if selector.strategy in ("hardest", "easiest") else None
    return ROWS.get(selector.name)
