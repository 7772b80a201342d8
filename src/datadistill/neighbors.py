"""k nearest neighbours: exact search (scikit-learn) for small pools and as the reference, faiss indexes above.

Backends, chosen by ``knn(..., backend=...)``:

- ``"exact"``: scikit-learn's NearestNeighbors (brute force / trees), O(N^2·d) for a full graph.
- ``"ivf"``: faiss IndexIVFFlat, 4·sqrt(N) inverted lists from a seeded k-means, ``nprobe`` = 16 of them
  searched; deterministic. Measured (benchmarks/b3_scale.py) recall@20 0.98 on MNIST (PCA 64) at N = 60,000,
  with the whole graph ~5x faster than exact search on a loaded 2-core machine.
- ``"hnsw"``: faiss IndexHNSWFlat (M = 32, efConstruction 40, efSearch max(64, 2k)); higher recall (0.999 on
  the same data) but a graph built on one thread (so the result does not depend on scheduling) costs ~2x IVF.
- ``"auto"``: exact up to ``EXACT_MAX`` rows, else hnsw when faiss imports, else exact. Not ivf: on an
  isotropic 128-d mixture (N = 100,000) its recall@20 fell to 0.49, where hnsw kept 0.91 at 1.8x exact's
  speed; a selector's quality should not depend on the data being clustered.

pynndescent was measured too: its numba compilation alone took 28 s on the benchmark machine, more than
the whole faiss graph at N = 20,000, so it is not a backend.
"""

from __future__ import annotations

import math

import numpy as np

from .errors import ConfigError

BACKENDS = ("auto", "exact", "ivf", "hnsw")
EXACT_MAX = 20_000


def faiss_available() -> bool:
    """Whether faiss imports."""
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_backend(n: int, backend: str = "auto") -> str:
    """The backend ``knn`` uses for ``n`` indexed rows."""
    if backend not in BACKENDS:
        raise ConfigError(f"knn backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "auto":
        return "hnsw" if n > EXACT_MAX and faiss_available() else "exact"
    if backend in ("ivf", "hnsw") and not faiss_available():
        raise ConfigError(f"knn backend {backend!r} needs faiss: pip install faiss-cpu")
    return backend


def knn(Z: np.ndarray, k: int, *, queries: np.ndarray | None = None, backend: str = "auto",
        random_state: int = 0, nprobe: int = 16) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` nearest rows of ``Z`` to each query; returns (distances (M, k) float32, indices (M, k) int64).

    Args:
        Z: (N, d) rows to search.
        k: neighbours per query (at most N).
        queries: (M, d) query rows; None queries every row of Z with itself included (usually column 0, as
            scikit-learn's ``kneighbors(Z)`` on the fitted data).
        backend: "auto", "exact", "ivf" or "hnsw" (see the module docstring).
        random_state: seed of the ivf index's k-means.
        nprobe: inverted lists searched per query (ivf).

    Euclidean distances, ascending along each row. An approximate backend may miss true neighbours (recall
    below 1) and then returns the best it found; a slot it cannot fill holds index -1 and distance inf.
    """
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    n = len(Z)
    k = int(k)
    if not 1 <= k <= n:
        raise ConfigError(f"knn: k must be in [1, {n}], got {k}")
    Q = Z if queries is None else np.ascontiguousarray(queries, dtype=np.float32)
    method = resolve_backend(n, backend)
    if method == "exact":
        from sklearn.neighbors import NearestNeighbors

        dist, idx = NearestNeighbors(n_neighbors=k).fit(Z).kneighbors(Q)
        return dist.astype(np.float32), idx.astype(np.int64)
    import faiss

    d = Z.shape[1]
    if method == "hnsw":
        index = faiss.IndexHNSWFlat(d, 32)
        index.hnsw.efConstruction = 40
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)  # insertion order decides the graph: one thread keeps it reproducible
        try:
            index.add(Z)
        finally:
            faiss.omp_set_num_threads(threads)
        index.hnsw.efSearch = max(64, 2 * k)
    else:
        nlist = max(1, min(int(4 * math.sqrt(n)), n // 39))  # faiss wants >= 39 training rows per list
        quantizer = faiss.IndexFlatL2(d)
        index = faiss.IndexIVFFlat(quantizer, d, nlist)
        index.cp.seed = int(random_state)
        train = Z
        if n > 64 * nlist:
            train = Z[np.sort(np.random.default_rng(random_state).choice(n, 64 * nlist, replace=False))]
        index.train(train)
        index.add(Z)
        index.nprobe = min(nlist, int(nprobe))
    sq, idx = index.search(Q, k)
    dist = np.sqrt(np.maximum(sq, 0), dtype=np.float32)
    dist[idx < 0] = np.inf
    return dist, idx.astype(np.int64)


def k_distance(Z: np.ndarray, k: int, *, backend: str = "auto", random_state: int = 0) -> np.ndarray:
    """Distance from each row of ``Z`` to its ``k``-th nearest other row (the DBSCAN k-distance), shape (N,)."""
    k = min(int(k), len(Z) - 1)
    if k < 1:
        return np.zeros(len(Z), dtype=np.float32)
    dist, _ = knn(Z, k + 1, backend=backend, random_state=random_state)
    return dist[:, k]
