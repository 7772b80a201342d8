"""Selection on data larger than memory: a memory-mapped ``.npy`` or a directory of Parquet shards.

Sources (:func:`open_out_of_core`):

- a ``.npy`` file of numeric features, opened as a memory map (``np.load(mmap_mode="r", allow_pickle=False)``),
  with its labels given as an array or as another ``.npy`` file (a ``.npy`` holds one array);
- a directory of Parquet shards (or one Parquet file, or a CSV file): numeric feature columns or one list
  column of fixed-length embeddings, plus a label column. Shards are read in batches with pyarrow through
  :mod:`datadistill.stream_io`, which checks every shard's schema when the source is opened.

Memory stays bounded by one batch of rows plus O(N) per-sample state (labels, scores, each row's distance to
its nearest centre); pages of the memory maps leave the resident set after each piece (they stay in the page
cache), except a pool's scratch file while k-center reads it once per centre. :func:`select_out_of_core` runs these methods, with the in-memory selectors' parameters:

- ``kcenter``: greedy k-center. Each pool's rows (a class, or all rows with ``per_class=None``) are first
  written once, standardised as the in-memory selectors standardise them, to a feature-major float32 scratch
  file; then every new centre is one streaming pass over that file in column tiles
  (:func:`datadistill.select.kcenter.kcenter_columns`, the in-memory kernel itself), so the picks are
  identical to ``KCenterSelector(drop_misclassified=False)`` with the same seed, for every ``sampling``/``trim``.
- ``kmeans``: mini-batch k-means over batches of the same scratch file, then one assignment pass that keeps
  each centroid's nearest real row (:func:`datadistill.select.kmeans.streamed_kmeans_prototypes`);
  ``max_iter`` is the number of mini-batch passes (default 2).
- ``entropy``, ``margin``, ``least-confidence``: a probe trained on ``probe_rows`` seeded sample rows scores
  every row batch by batch; each class then keeps its budget by the score selectors' strategy
  (``strategy="hardest"`` is the plain top-k by score; the default ``coverage`` as in memory).
- ``random``, ``stratified``: seeded draws, as in memory.

The geometric methods take ``drop_misclassified=True`` to leave out the rows that the probe (trained as for
the scores) misclassifies; out of core it is off by default, since it costs a probe and a scoring pass.
Scratch files go to ``scratch_dir`` (default: the system's temporary folder; as large as the float32 data)
and are deleted when the selection ends.

Example::

    import numpy as np
    from datadistill.data.outofcore import open_out_of_core, select_out_of_core

    X = np.lib.format.open_memmap("emb.npy", mode="w+", dtype=np.float32, shape=(1_000_000, 128))
    ...                                     # fill X in pieces; np.save("labels.npy", y)
    source = open_out_of_core("emb.npy", labels="labels.npy")     # or a folder of .parquet shards
    subset = select_out_of_core(source, "kcenter", ratio=0.01, sampling="farthest")
    subset.save("emb-kcenter")              # a DistilledSet: the kept rows, labels, indices, weights
"""

from __future__ import annotations

import mmap
import os
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

from ..errors import ConfigError, DataError
from .dataset import encode_labels

DEFAULT_BATCH = 65_536
GEOMETRIC = ("kcenter", "kmeans")
PROBE_METHODS = ("entropy", "margin", "least-confidence")
SAMPLED = ("random", "stratified")
METHODS = GEOMETRIC + PROBE_METHODS + SAMPLED


@dataclass
class OutOfCoreSource:
    """Rows read in batches: ``n_rows`` x ``dim`` features, int64 class ids ``y`` (O(N)) and ``classes``.

    ``batches()`` yields (first row, float32 rows) pieces of at most ``batch_size`` rows, each checked for
    NaN/inf; ``take(rows)`` returns the given rows (one pass over a Parquet source, a gather on a memory map).
    """

    path: Path
    kind: str  # "npy" or "parquet" (a Parquet or CSV stream)
    n_rows: int
    dim: int
    y: np.ndarray
    classes: tuple[str, ...]
    batch_size: int = DEFAULT_BATCH
    files: list[Path] = field(default_factory=list)
    _array: np.ndarray | None = None
    _stream: object = None

    def __len__(self) -> int:
        return self.n_rows

    def batches(self, batch_size: int | None = None) -> Iterator[tuple[int, np.ndarray]]:
        bs = int(batch_size or self.batch_size)
        if self._array is not None:
            for s in range(0, self.n_rows, bs):
                B = np.array(self._array[s:s + bs], dtype=np.float32)
                release(self._array)
                _check_finite(B, self.path, s)
                yield s, B
            return
        from ..stream_io import batch_features, iter_batches

        start = 0
        src = self._stream
        for f, offset, cols in iter_batches(src, bs, columns=[src.embedding] if src.embedding else src.features):
            B = batch_features(src, f, offset, cols).astype(np.float32)
            _check_finite(B, f, offset)
            yield start, B
            start += len(B)

    def take(self, rows) -> np.ndarray:
        rows = np.asarray(rows, dtype=np.int64)
        order = np.argsort(rows, kind="stable")
        srt = rows[order]
        if len(srt) and (srt[0] < 0 or srt[-1] >= self.n_rows):
            raise DataError(f"{self.path}: row {int(srt[-1] if srt[-1] >= self.n_rows else srt[0])} is outside "
                            f"0..{self.n_rows - 1}")
        out = np.empty((len(rows), self.dim), dtype=np.float32)
        if self._array is not None:
            for a in range(0, len(srt), 512):  # a scattered gather maps pages around every row: release often
                out[order[a:a + 512]] = self._array[srt[a:a + 512]]
                release(self._array)
            return out
        for s, B in self.batches():
            lo, hi = np.searchsorted(srt, [s, s + len(B)])
            out[order[lo:hi]] = B[srt[lo:hi] - s]
        return out


def release(array) -> None:
    """Drop a memory map's pages from this process's resident set (they stay in the page cache, and a later read
    maps them again): read pieces then count against memory only while they are in use. Linux; else a no-op."""
    m = getattr(array, "_mmap", None)
    if m is not None and hasattr(m, "madvise") and hasattr(mmap, "MADV_DONTNEED"):
        m.madvise(mmap.MADV_DONTNEED)


def _check_finite(B: np.ndarray, where, first: int) -> None:
    bad = ~np.isfinite(B)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"{where}: row {first + row}, feature {col} is NaN or infinite (or beyond float32's "
                        "range); fix or drop that row")


def open_out_of_core(path: str | os.PathLike, labels=None, *, label: str | None = None,
                     batch_size: int = DEFAULT_BATCH) -> OutOfCoreSource:
    """Open ``path`` for out-of-core selection without reading its features into memory.

    Args:
        path: a ``.npy`` file (memory-mapped), a directory of Parquet shards, a Parquet file or a CSV file.
        labels: ``.npy`` only: the labels, as an array or the path of a ``.npy`` file (None: one class).
        label: Parquet/CSV: the label column (default: label/target/class/y).
        batch_size: rows per piece.

    Raises DataError naming the file (and shard, column or row) for bad input: a shard with another schema, a
    label column missing in one shard, ragged embeddings, an object-dtype ``.npy``, NaN or infinite values.
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    path = Path(path)
    if path.suffix.lower() == ".npy":
        if label is not None:
            raise ConfigError(f"{path}: a .npy has no columns; give its labels with labels=ARRAY or a .npy path")
        return _open_npy(path, labels, batch_size)
    if labels is not None:
        raise ConfigError(f"{path}: labels= is for a .npy source; Parquet and CSV sources name a column (label=)")
    return _open_table(path, label, batch_size)


def _open_npy(path: Path, labels, batch_size: int) -> OutOfCoreSource:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        X = np.load(path, mmap_mode="r", allow_pickle=False)
    except ValueError as exc:
        if "object" in str(exc).lower() or "pickle" in str(exc).lower():
            raise DataError(f"{path}: holds Python objects (dtype object), which datadistill never unpickles; "
                            "save a numeric array") from None
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: not a readable .npy file ({exc})") from None
    if X.dtype.kind not in "biuf":
        raise DataError(f"{path}: features must be numeric, got dtype {X.dtype}")
    if X.ndim < 2 or len(X) == 0:
        raise DataError(f"{path}: features must be a non-empty array of samples x features, got shape {X.shape}")
    if not X.flags.c_contiguous:
        raise DataError(f"{path}: stored in Fortran (column) order; re-save it with np.save(path, "
                        "np.ascontiguousarray(X)) so rows can be read in pieces")
    X = X.reshape(len(X), -1)
    if labels is None:
        y, classes = np.zeros(len(X), dtype=np.int64), ("all",)
    else:
        y, classes = _npy_labels(labels, len(X), path)
    return OutOfCoreSource(path=path, kind="npy", n_rows=len(X), dim=X.shape[1], y=y, classes=classes,
                           batch_size=batch_size, files=[path], _array=X)


def _npy_labels(labels, n: int, path: Path) -> tuple[np.ndarray, tuple[str, ...]]:
    where = path
    if isinstance(labels, (str, os.PathLike)):
        where = Path(labels)
        try:
            labels = np.load(where, allow_pickle=False)
        except ValueError as exc:
            raise DataError(f"{where}: labels not readable without unpickling ({exc}); save a numeric or "
                            "string array") from None
        except OSError as exc:
            raise DataError(f"{where}: cannot read the labels ({exc})") from None
    y = np.asarray(labels)
    if y.ndim != 1 or len(y) != n:
        raise DataError(f"{where}: {n} feature rows in {path.name} but labels of shape {y.shape}")
    if y.dtype == object:
        raise DataError(f"{where}: labels hold Python objects; give numbers or strings")
    codes, names = encode_labels(y, None, origin=str(where))
    return codes, tuple(names)


def _open_table(path: Path, label: str | None, batch_size: int) -> OutOfCoreSource:
    """Parquet shards (or one Parquet/CSV file): schemas checked, then one pass reads and checks every row."""
    from ..stream_io import batch_features, batch_labels, iter_batches, open_stream

    stream = open_stream(path, label)
    raw, n, dim = [], 0, 0
    for f, offset, cols in iter_batches(stream, batch_size):
        B = batch_features(stream, f, offset, cols)
        _check_finite(B.astype(np.float32), f, offset)
        lab = batch_labels(stream, f, offset, cols)
        raw.append(lab.astype(str) if lab.dtype.kind in "OUS" else lab)
        n += len(B)
        dim = B.shape[1]
    if n == 0:
        raise DataError(f"{path}: no data rows")
    try:
        y_raw = np.concatenate(raw)
    except (TypeError, ValueError):
        y_raw = np.concatenate([r.astype(str) for r in raw])
    codes, names = encode_labels(y_raw, None, origin=str(path))
    return OutOfCoreSource(path=path, kind="parquet", n_rows=n, dim=dim, y=codes, classes=tuple(names),
                           batch_size=batch_size, files=list(stream.files), _stream=stream)


# --- standardisation, pools and scratch files -----------------------------------------------------------------
class _Rows:
    """The source's rows as an indexable array for :meth:`Preprocessor.fit` (which reads a seeded sample)."""

    def __init__(self, source: OutOfCoreSource):
        self.source, self.dtype, self.shape = source, np.dtype(np.float32), (source.n_rows, source.dim)

    def __len__(self) -> int:
        return self.source.n_rows

    def __getitem__(self, rows) -> np.ndarray:
        return self.source.take(rows)

    def astype(self, dtype, copy: bool = True) -> np.ndarray:
        return self.source.take(np.arange(self.source.n_rows)).astype(dtype)


def preprocessor(source: OutOfCoreSource):
    """The standardisation the in-memory selectors use (:meth:`Preprocessor.fit`: a seeded 50,000-row sample)."""
    from .preprocess import Preprocessor

    return Preprocessor.fit(SimpleNamespace(sample_shape=(source.dim,), X=_Rows(source)))


class _Labels:
    """What :meth:`Selector.partitions` reads of a data set: labels, class names and counts."""

    def __init__(self, source: OutOfCoreSource):
        self.y, self.classes = source.y, source.classes

    def __len__(self) -> int:
        return len(self.y)

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=len(self.classes))

    def class_indices(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.y == c)


def _parts(selector, source: OutOfCoreSource, k: int, wrong: np.ndarray | None) -> list[tuple]:
    """(candidate rows, budget, seed, rows kept outright) per part, as the in-memory selectors split the budget.

    With ``wrong`` (probe-misclassified rows), a part's candidates are its other rows while they can fill
    the budget; else those are all kept and the budget's rest is chosen among the misclassified rows.
    """
    out = []
    for pool, kc, seed in selector.partitions(_Labels(source), k):
        kept = np.empty(0, dtype=np.int64)
        if wrong is not None:
            right = pool[~wrong[pool]]
            if len(right) >= kc:
                pool = right
            else:
                kept, pool, kc = right, pool[wrong[pool]], kc - len(right)
        out.append((pool, kc, seed, kept))
    return out


def _spill(source: OutOfCoreSource, pre, pools: list[np.ndarray], folder: Path) -> list[Path]:
    """Write each pool's standardised rows once to a feature-major (d, n) float32 file; one pass over the source.

    Pools hold sorted rows, so a piece's rows of one pool fill one column range (found by bisection: no
    per-row bookkeeping beyond the pools themselves). Written pages leave the resident set after each piece.
    """
    paths = [folder / f"pool{i}.f32" for i in range(len(pools))]
    maps = [np.memmap(f, dtype=np.float32, mode="w+", shape=(source.dim, max(1, len(p))))
            for f, p in zip(paths, pools)]
    for start, B in source.batches():
        Z = None
        for p, m in zip(pools, maps):
            lo, hi = np.searchsorted(p, [start, start + len(B)])
            if hi > lo:
                Z = pre.transform(B) if Z is None else Z
                m[:, lo:hi] = Z[p[lo:hi] - start].T
                release(m)
    for m in maps:
        m.flush()
    return paths


# --- the methods on one pool ------------------------------------------------------------------------------------
def _kcenter_pool(selector, XT: np.ndarray, k: int, rng: np.random.Generator, progress: bool):
    from ..select.kcenter import auto_trim, kcenter_columns, tile_rows

    n, dim = XT.shape[1], XT.shape[0]
    first = int(rng.integers(n))
    trim = auto_trim(k / n) if selector.trim == "auto" else float(selector.trim)
    chosen, sizes, radius = kcenter_columns(torch.from_numpy(XT), k, first=first, progress=progress, trim=trim,
                                            rng=rng, d2=selector.sampling == "d2",
                                            tile=tile_rows(n, dim, torch.device("cpu")))
    return chosen, sizes, {"radius": radius}


def _kmeans_pool(selector, XT: np.ndarray, k: int, rng: np.random.Generator, batch_size: int):
    from ..select.kmeans import streamed_kmeans_prototypes

    n = XT.shape[1]

    def batches():
        for s in range(0, n, batch_size):
            B = torch.from_numpy(np.ascontiguousarray(XT[:, s:s + batch_size].T))
            release(XT)
            yield s, B

    def take(pos):
        pos = np.asarray(pos)
        rows = np.empty((len(pos), XT.shape[0]), dtype=np.float32)
        for a in range(0, len(pos), 512):  # a column gather maps pages of every feature row: release often
            rows[a:a + 512] = XT[:, pos[a:a + 512]].T
            release(XT)
        return rows

    protos, sizes, inertia = streamed_kmeans_prototypes(batches, take, n, k, random_state=int(rng.integers(2**31)),
                                                        epochs=selector.max_iter or 2)
    return protos, sizes, {"inertia": inertia}


def score_out_of_core(source: OutOfCoreSource, score: str = "entropy", *, model: str = "mlp", epochs: int = 5,
                      seed: int = 0, device: str = "auto", probe_rows: int = 50_000
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per-row difficulty (higher = harder) and the probe's misclassified rows, one scoring pass over ``source``.

    The probe (``model`` for ``epochs``) is trained on ``probe_rows`` rows drawn with ``seed`` (all rows when
    fewer); ``score`` is ``entropy``, ``least-confidence`` or ``margin`` (scored as 1 - margin).
    """
    from ..select.stream import probe_scorer
    from .dataset import Dataset

    if len(source.classes) < 2:
        raise ConfigError(f"{source.path}: scores need labels with at least two classes")
    if isinstance(probe_rows, bool) or not isinstance(probe_rows, int) or probe_rows < 2:
        raise ConfigError(f"probe_rows must be an integer of at least 2, got {probe_rows!r}")
    n = source.n_rows
    rows = np.arange(n) if probe_rows >= n else np.sort(np.random.default_rng(seed).choice(n, probe_rows,
                                                                                            replace=False))
    ds = Dataset.create(source.take(rows), source.y[rows], source.classes, name=f"{source.path.name}-probe-rows",
                        origin=f"{source.path} ({len(rows)} sampled rows)")
    scorer = probe_scorer(ds, score=score, model=model, epochs=epochs, seed=seed, device=device)
    difficulty = np.empty(n, dtype=np.float64)
    wrong = np.zeros(n, dtype=bool)
    for s, B in source.batches():
        difficulty[s:s + len(B)], wrong[s:s + len(B)] = scorer(B, source.y[s:s + len(B)], return_wrong=True)
    return difficulty, wrong


# --- the entry point ---------------------------------------------------------------------------------------------
def select_out_of_core(source: OutOfCoreSource | str | os.PathLike, method: str, *, size: int | None = None,
                       ratio: float | None = None, labels=None, label: str | None = None,
                       batch_size: int | None = None, probe_rows: int = 50_000,
                       scratch_dir: str | os.PathLike | None = None, progress: bool = False, **params):
    """Select ``size`` rows (or ``ratio`` of them) of an out-of-core ``source`` with ``method``; see the module doc.

    Args:
        source: an :class:`OutOfCoreSource` or a path for :func:`open_out_of_core` (with ``labels``/``label``).
        method: one of :data:`METHODS`.
        batch_size: rows per piece (default: the source's).
        probe_rows: rows the probe trains on (score methods, ``drop_misclassified``).
        scratch_dir: folder for the geometric methods' scratch files (deleted afterwards).
        params: the in-memory selector's parameters (``per_class``, ``random_state``, ``min_per_class``,
            ``sampling``, ``trim``, ``strategy``, ``model``, ``epochs``, ``max_iter``, ...).

    Returns a DistilledSet: the kept rows in the source's values, their labels, ``indices`` into the source's
    rows and ``weights``; ``meta["out_of_core"]`` records the source, batch size and per-pool details.
    """
    from ..select.base import get_selector, resolve_size

    if method not in METHODS:
        raise ConfigError(f"out-of-core selection supports {', '.join(METHODS)}; got '{method}'")
    if method in GEOMETRIC:
        params.setdefault("drop_misclassified", False)
    selector = get_selector(method, size=size, ratio=ratio, **params)
    selector.check_params()
    _check_supported(selector, method)
    if not isinstance(source, OutOfCoreSource):
        source = open_out_of_core(source, labels, label=label, batch_size=batch_size or DEFAULT_BATCH)
    if len(source.classes) < 2 and selector.per_class is not None:
        selector.set_params(per_class=None)  # unlabelled rows: one pool
    t0 = time.perf_counter()
    k = resolve_size(source.n_rows, size, ratio)
    wrong = difficulty = None
    if method in PROBE_METHODS or getattr(selector, "drop_misclassified", False):
        difficulty, wrong = _probe_pass(selector, source, method, probe_rows)
    parts = _parts(selector, source, k, wrong if getattr(selector, "drop_misclassified", False) else None)
    bs = int(batch_size or source.batch_size)
    results, details = _run_parts(selector, method, source, parts, difficulty, wrong, bs, scratch_dir, progress)
    return _result(selector, method, source, results, details, bs, time.perf_counter() - t0)


def _check_supported(selector, method: str) -> None:
    if method in GEOMETRIC and (selector.features != "raw" or selector.pca is not None or selector.soft_labels):
        raise ConfigError(f"{method} out of core works on the standardised raw features: features='raw', no pca, "
                          "no soft labels")
    if method in PROBE_METHODS:
        if selector.soft_labels or selector.score_params:
            raise ConfigError(f"{method} out of core: soft_labels and score_params are not available")
        if selector.seeds is not None and len(np.atleast_1d(selector.seeds)) > 1:
            raise ConfigError(f"{method} out of core trains one probe; give one seed, got {selector.seeds!r}")


def _probe_pass(selector, source: OutOfCoreSource, method: str, probe_rows: int):
    seed = selector.seeds if getattr(selector, "seeds", None) is not None else selector.random_state
    seed = 0 if seed is None else int(np.atleast_1d(seed)[0])
    score = method if method in PROBE_METHODS else "entropy"
    return score_out_of_core(source, score, model=selector.model, epochs=selector.epochs, seed=seed,
                             device=selector.device, probe_rows=probe_rows)


def _run_parts(selector, method, source, parts, difficulty, wrong, bs, scratch_dir, progress):
    """Each part's (chosen rows, weights), in partition order; geometric parts read from scratch files."""
    work = [i for i, (pool, kc, _, _) in enumerate(parts) if kc < len(pool)]
    results, details = [], []
    with tempfile.TemporaryDirectory(prefix="datadistill-ooc-", dir=scratch_dir) as folder:
        files = {}
        if method in GEOMETRIC and work:
            files = dict(zip(work, _spill(source, preprocessor(source), [parts[i][0] for i in work], Path(folder))))
        for i, (pool, kc, seed, kept) in enumerate(parts):
            info = {"pool": int(len(pool)), "budget": int(kc)}
            # a pool's scratch file is mapped only while that pool is selected
            XT = np.memmap(files[i], dtype=np.float32, mode="r+", shape=(source.dim, len(pool))) if i in files else None
            idx, w = _one_part(selector, method, pool, kc, np.random.default_rng(seed if seed else None),
                               XT, difficulty, wrong, bs, progress, info)
            del XT
            results.append((np.concatenate([kept, idx]).astype(np.int64),
                            np.concatenate([np.ones(len(kept)), np.asarray(w, dtype=np.float64)])))
            details.append(info)
    return results, details


def _one_part(selector, method, pool, kc, rng, XT, difficulty, wrong, bs, progress, info):
    if kc >= len(pool):  # nothing to choose: every method keeps the whole pool, as in memory
        return pool, np.ones(len(pool))
    if method in GEOMETRIC:
        run = _kcenter_pool if method == "kcenter" else _kmeans_pool
        pos, w, extra = run(selector, XT, kc, rng, progress if method == "kcenter" else bs)
        info.update(extra)
        return pool[pos], w
    if method in PROBE_METHODS:
        return pool[_choose(selector, method, difficulty[pool], wrong[pool], kc, rng)], np.ones(kc)
    return rng.choice(pool, size=kc, replace=False), np.ones(kc)


def _choose(selector, method: str, difficulty: np.ndarray, wrong: np.ndarray, k: int, rng) -> np.ndarray:
    from ..scores import SCORERS
    from ..select.strategy import choose

    if selector.order is not None and selector.order != SCORERS[method].informative:
        difficulty = -difficulty
    prune = None if selector.prune == "auto" else float(selector.prune)
    return choose(difficulty, k, rng, strategy=selector.strategy, wrong=wrong if selector.drop_misclassified else None,
                  n_strata=selector.n_strata, strata=selector.strata, prune=prune)


def _result(selector, method, source: OutOfCoreSource, results, details, bs: int, seconds: float):
    from ..select.base import _plain
    from .artifact import DistilledSet

    indices = np.concatenate([r[0] for r in results]) if results else np.empty(0, dtype=np.int64)
    weights = np.concatenate([r[1] for r in results]) if results else np.empty(0)
    if len(np.unique(indices)) != len(indices):
        raise AssertionError(f"{method} chose a row twice")  # an invariant, not user input
    meta = {"kind": "selection", "method": method, "parameters": _plain(selector.get_params(deep=False)),
            "seed": selector.random_state, "source": str(source.path), "source_samples": source.n_rows,
            "out_of_core": {"kind": source.kind, "files": [str(f) for f in source.files], "batch_size": bs,
                            "dim": source.dim, "pools": details},
            "timings": {"select_seconds": seconds}}
    return DistilledSet(X=source.take(indices), y=source.y[indices], classes=source.classes, indices=indices,
                        weights=weights, meta=meta)
