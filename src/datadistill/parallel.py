"""Partitioned execution on Dask: a selector's per-class parts run on workers (a local cluster by default).

The selector first computes what it needs over the whole set (scores, a probe's features) where it is
called; the parts — one per class, each with its own seeded generator — are then independent and run on
the cluster. The result is identical to a single-process ``fit`` for the same ``random_state``.
"""

from __future__ import annotations

import copy
import os
import time
from contextlib import contextmanager

import numpy as np

from .data.dataset import Dataset
from .errors import ConfigError
from .select.base import Selector, resolve_size


@contextmanager
def dask_client(address: str | None = None, n_workers: int = 2, threads_per_worker: int = 1):
    """A ``distributed.Client`` to ``address``, or to a new local process cluster closed on exit."""
    try:
        from distributed import Client, LocalCluster
    except ImportError:
        raise ConfigError("Dask is not installed: pip install 'datadistill[dask]'") from None
    if address:
        client = Client(address)
        try:
            yield client
        finally:
            client.close()
        return
    import dask

    # Dask's default worker environment sets MALLOC_TRIM_THRESHOLD_, which turns every large temporary
    # array into a fresh memory mapping; selectors allocate many, and run about 2x slower under it.
    environ = {k: v for k, v in dask.config.get("distributed.nanny.pre-spawn-environ", {}).items()
               if k != "MALLOC_TRIM_THRESHOLD_"}
    os.environ.pop("MALLOC_TRIM_THRESHOLD_", None)
    with dask.config.set({"distributed.nanny.pre-spawn-environ": environ}), \
            LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker, processes=True,
                         dashboard_address=None) as cluster, Client(cluster) as client:
        yield client


def _run_part(selector: Selector, pool: np.ndarray, k: int, seed: list[int]):
    """One part on a worker; also returns the per-part diagnostics (list attributes) the part appended."""
    part = copy.copy(selector)
    names = [n for n, v in vars(selector).items() if isinstance(v, list)]
    for n in names:
        setattr(part, n, [])
    return part._select_part(pool, k, seed), {n: getattr(part, n) for n in names}


def fit_distributed(selector: Selector, dataset: Dataset, *, client=None, address: str | None = None,
                    n_workers: int = 2) -> Selector:
    """Fit ``selector`` on ``dataset`` with its independent parts running on a Dask cluster.

    Args:
        client: an existing ``distributed.Client``; else one is made for ``address`` or a local cluster.
        address: scheduler address (``tcp://host:8786``); None starts a local cluster of ``n_workers``.
    """
    if client is None:
        with dask_client(address, n_workers) as own:
            return fit_distributed(selector, dataset, client=own)
    start = time.perf_counter()
    k = resolve_size(len(dataset), selector.size, selector.ratio)
    selector.scores_ = None
    selector._prepare(dataset, np.random.default_rng(selector.random_state))
    shared = client.scatter(selector, broadcast=True)
    parts = selector.partitions(dataset, k)
    futures = [client.submit(_run_part, shared, pool, kc, seed, pure=False) for pool, kc, seed in parts]
    results = []
    for result, diagnostics in client.gather(futures):
        results.append(result)
        for name, values in diagnostics.items():
            getattr(selector, name).extend(values)
    selector._finish(dataset, results, start)
    return selector
