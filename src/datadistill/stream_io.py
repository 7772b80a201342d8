"""Reading data too large for memory in pieces, and streaming it through a streaming selector.

Sources: a directory of Parquet shards (``*.parquet``, read in name order), one Parquet file, or one CSV file.
Features are every numeric column except the label, or one list column of fixed-length embeddings.
Memory stays bounded by one piece (``batch_size`` rows) plus the selector's state.

``run_stream_select(path, method, size, out)`` makes two passes: a cheap one over the labels and feature
statistics (class budgets fixed from the class counts, which the selectors' guarantees need, and the
per-feature standardisation the offline selectors use) that also keeps bounded seeded uniform samples of the
rows (the probe's training rows, each class's warm-up or evaluation rows: :class:`UniformSample`), then the
selection pass. The first rows of a file need not look like the rest, so nothing is fixed from them.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConfigError, DataError

STREAM_METHODS = ("stream-kcenter", "stream-facility-location", "stream-reservoir")
LABEL_NAMES = ("label", "target", "class", "y")


def _pyarrow():
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq
    except ImportError:  # pragma: no cover - pyarrow is a dependency
        raise ConfigError("streaming from Parquet or CSV needs pyarrow: pip install 'pyarrow>=12'") from None
    return pa, pq, pcsv


@dataclass
class StreamSource:
    """What a stream holds: its files, kind (parquet/csv), label column and feature layout."""

    path: Path
    files: list[Path]
    kind: str
    label: str
    features: list[str]
    embedding: str | None = None  # the list column, when features come as embeddings
    dim: int = 0
    score_column: str | None = None
    delimiter: str = ","
    types: dict = field(default_factory=dict)

    @property
    def columns(self) -> list[str]:
        cols = [self.embedding] if self.embedding else list(self.features)
        return cols + [self.label] + ([self.score_column] if self.score_column else [])


def _stream_files(path: Path) -> tuple[list[Path], str]:
    """The stream's files in read order and their kind (parquet or csv)."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in {".parquet", ".pq"} and p.is_file())
        if not files:
            raise DataError(f"{path}: no .parquet shards in this directory")
        return files, "parquet"
    if not path.is_file():
        raise DataError(f"{path}: no such file or directory")
    kind = "parquet" if path.suffix.lower() in {".parquet", ".pq"} else "csv"
    if kind == "csv" and path.suffix.lower() not in {".csv", ".tsv", ".txt"}:
        raise DataError(f"{path}: unknown format '{path.suffix}'; stream a .csv file, a .parquet file or a "
                        "directory of .parquet shards")
    return [path], kind


def _column_names(first: Path, kind: str, delimiter: str) -> tuple[list[str], dict]:
    """The first file's column names and, for Parquet, their arrow types (CSV: no types)."""
    pa, pq, _ = _pyarrow()
    if kind == "parquet":
        try:
            schema = pq.read_schema(first)
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{first}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
        names = list(schema.names)
        return names, {n: schema.field(n).type for n in names}
    if len(delimiter) != 1:
        raise ConfigError(f"{first}: the delimiter must be one character, got {delimiter!r}")
    try:
        with open(first, newline="", encoding="utf-8") as fh:
            header = next(csv.reader(fh, delimiter=delimiter), None)
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{first}: cannot read ({exc})") from None
    if not header:
        raise DataError(f"{first}: empty file (no header line)")
    return [h.strip() for h in header], {}


def _label_column(first: Path, names: list[str], label: str | None, score_column: str | None) -> str:
    """The label column (given, or the first of LABEL_NAMES present), after checking names are unique."""
    repeated = sorted({c for c in names if names.count(c) > 1})
    if repeated:
        raise DataError(f"{first}: duplicate column name(s) {', '.join(map(repr, repeated))}")
    if label is None:
        label = next((c for c in LABEL_NAMES if c in names), None)
        if label is None:
            raise DataError(f"{first}: no label column given and none named {'/'.join(LABEL_NAMES)}; columns: "
                            f"{names}; pass --label NAME")
    if label not in names:
        raise DataError(f"{first}: label column '{label}' not found; columns: {names}")
    if score_column is not None and score_column not in names:
        raise DataError(f"{first}: score column '{score_column}' not found; columns: {names}")
    return label


def _embedding_column(first: Path, features: list[str], types: dict) -> str | None:
    """The one list column holding embeddings, or None when every Parquet feature column is numeric."""
    pa, _, _ = _pyarrow()
    lists = [c for c in features if pa.types.is_list(types[c]) or pa.types.is_large_list(types[c])
             or pa.types.is_fixed_size_list(types[c])]
    if not lists:
        for c in features:
            if not _numeric(pa, types[c]):
                raise DataError(f"{first}: column '{c}' is not numeric (type {types[c]}); encode it as "
                                "numbers or drop it")
        return None
    if len(features) > 1:
        raise DataError(f"{first}: embedding column '{lists[0]}' beside other feature columns "
                        f"({', '.join(c for c in features if c != lists[0])}); give one list column or "
                        "numeric columns only")
    embedding = lists[0]
    if not _numeric(pa, types[embedding].value_type):
        raise DataError(f"{first}: embedding column '{embedding}' holds {types[embedding].value_type}, not numbers")
    return embedding


def open_stream(path: str | os.PathLike, label: str | None = None, *, score_column: str | None = None,
                delimiter: str = ",") -> StreamSource:
    """Inspect ``path`` (Parquet directory or file, or CSV) and check every Parquet shard's schema.

    Raises DataError naming the shard and the column when a shard lacks the label or a feature column,
    has extra columns, or a column's type differs from the first shard's.
    """
    pa, pq, _ = _pyarrow()
    path = Path(path)
    files, kind = _stream_files(path)
    names, types = _column_names(files[0], kind, delimiter)
    label = _label_column(files[0], names, label, score_column)
    features = [c for c in names if c not in (label, score_column)]
    if not features:
        raise DataError(f"{files[0]}: no feature columns besides the label '{label}'")
    embedding = None
    if kind == "parquet":
        embedding = _embedding_column(files[0], features, types)
        for shard in files[1:]:
            _check_shard(pa, pq, shard, files[0], names, types, label)
    return StreamSource(path=path, files=files, kind=kind, label=label, features=features, embedding=embedding,
                        score_column=score_column, delimiter=delimiter, types=types)


def _numeric(pa, t) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)


def _check_shard(pa, pq, shard: Path, first: Path, names: list[str], types: dict, label: str) -> None:
    try:
        schema = pq.read_schema(shard)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{shard}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    have = list(schema.names)
    if label not in have:
        raise DataError(f"{shard}: the label column '{label}' is missing in this shard (it is in {first.name}); "
                        "every shard needs the same columns")
    missing = [c for c in names if c not in have]
    if missing:
        raise DataError(f"{shard}: column '{missing[0]}' is missing in this shard (it is in {first.name}); every "
                        "shard needs the same columns")
    extra = [c for c in have if c not in names]
    if extra:
        raise DataError(f"{shard}: column '{extra[0]}' is not in the first shard {first.name}; every shard needs "
                        "the same columns")
    for c in names:
        t = schema.field(c).type
        if t != types[c] and not (_numeric(pa, t) and _numeric(pa, types[c]) and c != label):
            raise DataError(f"{shard}: column '{c}' has type {t} but {types[c]} in {first.name}; the schema "
                            "changed between shards")


def iter_batches(source: StreamSource, batch_size: int = 65_536, *, columns: list[str] | None = None
                 ) -> Iterator[tuple[Path, int, dict]]:
    """(file, first row of the piece within the file, {column: arrow array}) for each piece of the stream."""
    pa, pq, pcsv = _pyarrow()
    cols = columns or source.columns
    for f in source.files:
        offset = 0
        try:
            if source.kind == "parquet":
                batches = pq.ParquetFile(f).iter_batches(batch_size=batch_size, columns=cols)
            else:
                types = {c: pa.float64() for c in source.features}
                types[source.label] = pa.string()
                if source.score_column:
                    types[source.score_column] = pa.float64()
                batches = pcsv.open_csv(
                    f, read_options=pcsv.ReadOptions(block_size=max(1 << 20, batch_size * 64)),
                    parse_options=pcsv.ParseOptions(delimiter=source.delimiter),
                    convert_options=pcsv.ConvertOptions(column_types=types, include_columns=cols))
            for batch in batches:
                yield f, offset, {c: batch.column(c) for c in cols}
                offset += batch.num_rows
        except pa.ArrowInvalid as exc:
            raise DataError(f"{f}: cannot parse near row {offset} ({str(exc).splitlines()[0]})") from None
        except (pa.ArrowException, OSError) as exc:
            raise DataError(f"{f}: cannot read ({str(exc).splitlines()[0]})") from None


def batch_features(source: StreamSource, f: Path, offset: int, cols: dict) -> np.ndarray:
    """The piece's feature rows as float64 (n, d); DataError naming the file, row and column on bad values."""
    pa, _, _ = _pyarrow()
    if source.embedding:
        arr = cols[source.embedding]
        if arr.null_count:
            row = next(i for i, v in enumerate(arr.to_pylist()) if v is None)
            raise DataError(f"{f}: row {offset + row}: embedding column '{source.embedding}' is empty")
        if pa.types.is_fixed_size_list(arr.type):
            d = arr.type.list_size
            flat = arr.flatten()
        else:
            lengths = np.diff(np.asarray(arr.offsets))
            d = int(lengths[0]) if len(lengths) else 0
            bad = np.flatnonzero(lengths != (source.dim or d))
            if len(bad):
                row = int(bad[0])
                raise DataError(f"{f}: row {offset + row}: embedding column '{source.embedding}' has "
                                f"{int(lengths[row])} values but earlier rows have {source.dim or d} (ragged "
                                "embeddings); every row needs the same length")
            flat = arr.flatten()
        if flat.null_count:
            raise DataError(f"{f}: rows {offset}..{offset + len(arr) - 1}: embedding column '{source.embedding}' "
                            "holds missing values")
        Z = np.asarray(flat.to_numpy(zero_copy_only=False), dtype=np.float64).reshape(len(arr), -1)
        if source.dim and Z.shape[1] != source.dim:
            raise DataError(f"{f}: row {offset}: embedding column '{source.embedding}' has {Z.shape[1]} values "
                            f"but earlier rows have {source.dim} (ragged embeddings)")
        source.dim = Z.shape[1]
    else:
        parts = []
        for c in source.features:
            arr = cols[c]
            if arr.null_count:
                row = next(i for i, v in enumerate(arr.to_pylist()) if v is None)
                raise DataError(f"{f}: row {offset + row}, column '{c}' is missing or NaN; fill or drop that row")
            parts.append(np.asarray(arr.to_numpy(zero_copy_only=False), dtype=np.float64))
        Z = np.stack(parts, axis=1)
    bad = ~np.isfinite(Z)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        where = source.embedding or source.features[col]
        raise DataError(f"{f}: row {offset + row}, column '{where}' is NaN or infinite; fix or drop that row")
    return Z


def batch_labels(source: StreamSource, f: Path, offset: int, cols: dict) -> np.ndarray:
    arr = cols[source.label]
    if arr.null_count:
        row = next(i for i, v in enumerate(arr.to_pylist()) if v is None)
        raise DataError(f"{f}: row {offset + row}: label column '{source.label}' is empty")
    return np.asarray(arr.to_numpy(zero_copy_only=False))


@dataclass
class StreamStats:
    """The first pass: row count, label values and counts, per-feature mean and std, content hash."""

    n_rows: int
    values: np.ndarray  # the raw label values, in class-id order
    classes: tuple[str, ...]
    counts: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    fingerprint: str

    def codes(self, raw: np.ndarray) -> np.ndarray:
        """Class ids of raw label values (every value was seen in the first pass)."""
        return np.searchsorted(self.values, _label_key(raw, self.values.dtype)).astype(np.int64)


def _integer_text(v) -> bool:
    if isinstance(v, (int, np.integer)):
        return True
    try:
        f = float(v)
    except (TypeError, ValueError):
        return False
    return np.isfinite(f) and f == int(f)


def _label_key(raw: np.ndarray, dtype) -> np.ndarray:
    if dtype.kind in "iu" and raw.dtype.kind not in "iu":
        return raw.astype(np.float64).astype(np.int64)
    return raw.astype(dtype) if dtype.kind != "U" else raw.astype(str)


class UniformSample:
    """A seeded uniform sample without replacement of at most ``cap`` rows per pool, kept in one pass.

    Each row draws a uniform key in arrival order (so the sample does not depend on how the stream is cut
    into pieces); a pool keeps the rows with the ``cap`` smallest keys (bottom-k sampling), so its rows with
    the m smallest keys are a uniform sample of m rows of the pool for any m <= cap. Pools: one per raw label
    value (``per_class``) or one for all rows. Holds at most ``cap`` rows per pool between pieces
    (``max_held_``: the most it held), each as its raw features, raw label, row number and score.
    """

    def __init__(self, cap: int, seed: list[int], per_class: bool):
        self.cap = int(cap)
        self.per_class = per_class
        self.rng = np.random.default_rng(seed)
        self.pools: dict = {}  # label key -> (keys, X, raw labels, rows, scores)
        self.max_held_ = 0

    def held(self) -> int:
        return sum(len(p[0]) for p in self.pools.values())

    def add(self, X: np.ndarray, raw: np.ndarray, first_row: int, scores: np.ndarray | None = None) -> None:
        """Offer the piece's rows (numbered from ``first_row``) to their pools."""
        keys = self.rng.random(len(X))
        if self.cap <= 0 or len(X) == 0:
            return
        rows = np.arange(first_row, first_row + len(X), dtype=np.int64)
        scores = np.zeros(len(X)) if scores is None else np.asarray(scores, dtype=np.float64)
        if self.per_class:
            lab = raw.astype(str) if raw.dtype.kind in "OUS" else raw
            vals, inv = np.unique(lab, return_inverse=True)
            groups = [(v, np.flatnonzero(inv == i)) for i, v in enumerate(vals.tolist())]
        else:
            groups = [(None, np.arange(len(X)))]
        for v, sel in groups:
            new = (keys[sel], X[sel], raw[sel], rows[sel], scores[sel])
            old = self.pools.get(v)
            if old is not None and len(old[0]) >= self.cap:  # only rows under the current cut can enter
                under = new[0] < old[0].max()
                new = tuple(a[under] for a in new)
            merged = new if old is None else tuple(np.concatenate([a, b]) for a, b in zip(old, new))
            self.pools[v] = self._bottom(merged, self.cap)
        self.max_held_ = max(self.max_held_, self.held())

    @staticmethod
    def _bottom(pool: tuple, m: int) -> tuple:
        """The pool's rows with the ``m`` smallest keys, in arrival order."""
        if len(pool[0]) <= m:
            return pool
        keep = np.sort(np.argpartition(pool[0], m - 1)[:m])
        return tuple(a[keep] for a in pool)

    def by_class(self, stats: StreamStats) -> dict:
        """{class id (None: one pool): (X, y, rows, scores, keys)} after the pass, keys ascending-capped."""
        merged: dict = {}
        for keys, X, raw, rows, scores in self.pools.values():
            c = None if not self.per_class else int(stats.codes(np.asarray([raw[0]]))[0])
            part = (keys, X, stats.codes(raw), rows, scores)
            old = merged.get(c)
            merged[c] = part if old is None else tuple(np.concatenate([a, b]) for a, b in zip(old, part))
        out = {}
        for c, (keys, X, y, rows, scores) in merged.items():
            order = np.argsort(rows, kind="stable")
            keys, X, y, rows, scores = self._bottom((keys[order], X[order], y[order], rows[order],
                                                     scores[order]), self.cap)
            out[c] = (X, y, rows, scores, keys)
        return out

    @staticmethod
    def smallest(part: tuple, m: int) -> tuple:
        """The ``m`` rows of a ``by_class`` part with the smallest keys (a uniform sample), in arrival order."""
        X, y, rows, scores, keys = part
        b = UniformSample._bottom((keys, X, y, rows, scores), m)
        return b[1], b[2], b[3], b[4]


def scan(source: StreamSource, batch_size: int = 65_536, samples: tuple[UniformSample, ...] = ()) -> StreamStats:
    """One pass over the stream: label counts and per-feature mean/std (float64 sums).

    No rows are kept except by ``samples`` (:class:`UniformSample`), each of which keeps a bounded uniform
    sample of the rows seen (the probe's training rows, each class's warm-up or evaluation rows).
    """
    n = 0
    s1 = s2 = None
    labels: dict = {}
    digest = hashlib.sha256()
    for f, offset, cols in iter_batches(source, batch_size):
        Z = batch_features(source, f, offset, cols)
        raw = batch_labels(source, f, offset, cols)
        if source.score_column:
            s = np.asarray(cols[source.score_column].to_numpy(zero_copy_only=False), dtype=np.float64)
            if not np.isfinite(s).all():
                row = int(np.flatnonzero(~np.isfinite(s))[0])
                raise DataError(f"{f}: row {offset + row}: score column '{source.score_column}' is missing or not "
                                "a finite number")
        if s1 is None:
            s1, s2 = np.zeros(Z.shape[1]), np.zeros(Z.shape[1])
        elif Z.shape[1] != len(s1):
            raise DataError(f"{f}: row {offset}: {Z.shape[1]} features after {len(s1)} in earlier rows")
        for sample in samples:
            sample.add(Z, raw, n, None if not source.score_column else s)
        s1 += Z.sum(axis=0)
        s2 += (Z * Z).sum(axis=0)
        n += len(Z)
        vals, cnt = np.unique(raw.astype(str) if raw.dtype.kind in "OUS" else raw, return_counts=True)
        for v, c in zip(vals.tolist(), cnt.tolist()):
            labels[v] = labels.get(v, 0) + c
        digest.update(np.ascontiguousarray(Z, dtype=np.float32).tobytes())
        digest.update(np.asarray(raw).astype(str).tobytes())
    if n == 0:
        raise DataError(f"{source.path}: no data rows")
    keyed: dict = {}
    as_int = all(_integer_text(v) for v in labels)  # CSV labels come as text: integers when they all are
    for v, c in labels.items():
        key = int(float(v)) if as_int else (str(v) if isinstance(v, str) else v)
        keyed[key] = keyed.get(key, 0) + c
    values = np.array(sorted(keyed))
    counts = np.array([keyed[v] for v in sorted(keyed)], dtype=np.int64)
    classes = tuple(str(v) for v in values.tolist())
    if len(values) < 2:
        raise DataError(f"{source.path}: only one class ({classes[0]}) in label column '{source.label}'; "
                        "distillation needs at least two labelled classes")
    mean = s1 / n
    std = np.sqrt(np.maximum(s2 / n - mean * mean, 0.0))
    std = np.where(std < 1e-8, 1.0, std)
    return StreamStats(n_rows=n, values=values, classes=classes, counts=counts,
                       mean=mean, std=std, fingerprint=digest.hexdigest())


def _class_budgets(stats: StreamStats, size: int | None, ratio: float | None, per_class: str | None,
                   params: dict) -> tuple[int, np.ndarray | None]:
    """The kept-row count and its split over classes, fixed from the first pass's class counts."""
    from .select.base import allocate, apply_floor, resolve_size

    k = resolve_size(stats.n_rows, size, ratio)
    budgets = allocate(stats.counts, k, per_class)
    if params.get("min_per_class") and budgets is not None:
        budgets = apply_floor(budgets, stats.counts, int(params["min_per_class"]), k, stats.classes)
    return k, budgets


def _sample_plan(selector, size: int | None, score_column: str | None) -> tuple[int, int]:
    """(rows of the probe's uniform sample, rows of each pool's uniform sample) the first pass keeps.

    As ``fit(dataset)``: stream-reservoir's probe trains on ``probe_rows`` uniform rows and each pool's edges
    come from ``warmup`` uniform rows (their scores); stream-facility-location's probe (``drop_misclassified``)
    trains on ``probe_rows`` uniform rows and each class's evaluation sample is ``eval_rows(k)`` uniform rows
    of the class (its budget k is known only after the pass: at most ``eval_rows(size)`` rows are kept,
    ``max(probe_rows, eval_rows(0))`` for a ``ratio``). ``probe_sample="head"`` keeps the first rows instead.
    """
    uniform = getattr(selector, "probe_sample", "head") == "uniform"
    if selector.name == "stream-reservoir":
        probe = int(selector.probe_rows) if uniform and score_column is None else 0
        return probe, int(selector.warmup) if uniform and selector.edges is None else 0
    if selector.name == "stream-facility-location":
        probe = int(selector.probe_rows) if uniform and selector.drop_misclassified else 0
        if selector.eval_sample != "uniform" or selector.per_class is None:  # one pool: E is its first rows
            return probe, 0
        cap = selector.eval_rows(size) if size is not None else max(selector.eval_rows(0), int(selector.probe_rows))
        return probe, int(cap)
    return 0, 0


def _stream_probe(source: StreamSource, stats: StreamStats, selector, sample: UniformSample | None,
                  batch_size: int, score: str):
    """The probe of the stream: trained on the first pass's uniform sample (or the first rows, "head")."""
    from .data.dataset import Dataset
    from .select import stream

    if sample is None:
        return _first_rows_probe(source, stats, selector, batch_size, score)
    X, y, _, _, _ = sample.by_class(stats)[None]
    ds = Dataset.create(X.astype(np.float32), y, stats.classes, name="stream-probe-rows", min_classes=1,
                        origin=f"{source.path} ({len(y)} rows drawn uniformly in the first pass)")
    return stream.probe_scorer(ds, score=score, model=selector.model, epochs=selector.epochs,
                               seed=selector.random_state or 0, device=selector.device)


def _warm_start(selector, stats: StreamStats, pools: dict, probe, standardize: bool) -> None:
    """Each pool's state before the selection pass, from the first pass's uniform samples, as fit(dataset):
    stream-reservoir's edges from its warm-up scores, stream-facility-location's evaluation rows."""
    if selector.name == "stream-reservoir":
        for c, (X, y, _, scores, _) in pools.items():
            if probe is None:  # the score column's values
                s, wrong = scores, np.zeros(len(scores), dtype=bool)
            else:
                s, wrong = probe(X.astype(np.float32), y, return_wrong=True)
            state = selector._new_part(selector._budget(c), -1 if c is None else c)
            state.warm_start(s, wrong)
            selector.parts_[c] = state
        return
    for c, part in sorted(pools.items()):
        count, k = int(stats.counts[c]), selector._budget(c)
        X, y, rows, _ = UniformSample.smallest(part, min(count, selector.eval_rows(k)))
        m = len(y)
        X = X.astype(np.float32)
        if probe is not None:
            right = ~probe(X, y, return_wrong=True)[1]
            if right.any():
                X, y, rows = X[right], y[right], rows[right]
        Z = (X.astype(np.float64) - stats.mean) / stats.std if standardize else X.astype(np.float64)
        neighbours = max(1, round(int(selector.n_neighbors) * m / count)) if selector.sigma is None else None
        state = selector._new_part(k, c)
        state.fix_evaluation(Z, rows.tolist(), list(zip(X, y.tolist())), neighbours=neighbours)
        selector.parts_[c] = state


def _selection_pass(source: StreamSource, stats: StreamStats, selector, *, batch_size: int, standardize: bool,
                    score_column: str | None, probe, progress: bool) -> None:
    """The second pass: every piece through ``selector.partial_fit``, with stream-reservoir's scores and the
    rows the probe misclassifies (stream-reservoir, stream-facility-location)."""
    from .progress import bar as progress_bar

    reservoir = selector.name == "stream-reservoir"
    source.dim = 0
    bar = progress_bar(stats.n_rows, desc="streamed", unit="row", unit_scale=True, enabled=progress)
    try:
        for f, offset, cols in iter_batches(source, batch_size):
            X = batch_features(source, f, offset, cols)
            y = stats.codes(batch_labels(source, f, offset, cols))
            Z = (X - stats.mean) / stats.std if standardize else X
            X32 = X.astype(np.float32)
            kw = {}
            if reservoir and score_column is not None:
                kw["scores"] = np.asarray(cols[score_column].to_numpy(zero_copy_only=False), dtype=np.float64)
            elif reservoir:
                kw["scores"], kw["wrong"] = probe(X32, y, return_wrong=True)
            elif probe is not None:
                kw["wrong"] = probe(X32, y, return_wrong=True)[1]
            selector.partial_fit(X32, y, features=Z, **kw)
            bar.update(len(X))
    finally:
        bar.close()


def _first_pass(source: StreamSource, selector, size: int | None, score_column: str | None, batch_size: int):
    """The first pass with the uniform samples the selector needs: (stats, probe sample, pool sample)."""
    probe_rows, pool_rows = _sample_plan(selector, size, score_column)
    seed = 0 if selector.random_state is None else int(selector.random_state)
    probe_sample = UniformSample(probe_rows, [seed, 7], per_class=False) if probe_rows else None
    pool_sample = (UniformSample(pool_rows, [seed, 13], per_class=selector.per_class is not None)
                   if pool_rows else None)
    stats = scan(source, batch_size, tuple(x for x in (probe_sample, pool_sample) if x is not None))
    return stats, probe_sample, pool_sample


def _needs_probe(selector, score_column: str | None) -> bool:
    if selector.name == "stream-reservoir":
        return score_column is None
    return selector.name == "stream-facility-location" and bool(selector.drop_misclassified)


def run_stream_select(path: str | os.PathLike, method: str, size: int | None = None, out: str | os.PathLike | None
                      = None, *, ratio: float | None = None, label: str | None = None,
                      per_class: str | None = "proportional", batch_size: int = 65_536, standardize: bool = True,
                      random_state: int | None = 0, overwrite: bool = False, score_column: str | None = None,
                      delimiter: str = ",", progress: bool = False, **params):
    """Stream ``path`` through the streaming selector ``method`` and save the kept rows as a DistilledSet.

    Args:
        path: a directory of Parquet shards, a Parquet file or a CSV file.
        method: ``stream-kcenter``, ``stream-facility-location`` or ``stream-reservoir``.
        size: rows to keep (or ``ratio`` of the rows, resolved after the first pass).
        out: the set's directory (None: return the set without saving).
        label: the label column (default: label/target/class/y).
        per_class: how the budget is split over classes (fixed from the first pass's class counts).
        batch_size: rows per piece.
        standardize: measure distances on per-feature standardised rows (as the offline selectors do); the
            saved rows are always the source's own values.
        score_column: ``stream-reservoir``: a column of per-row difficulty (e.g. a probe's loss); without
            it a probe is trained on ``probe_rows`` rows drawn uniformly in the first pass.
        params: further selector parameters (``eps``, ``n_eval``, ``n_strata``, ``probe_sample``, ...).

    The selectors' defaults are those of ``get_selector(method).fit(dataset)``: the probe (stream-reservoir's
    scores, stream-facility-location's misclassified rows) trains on a uniform sample of the stream, and the
    reservoir's edges and the sieve's evaluation rows come from uniform samples of each class, all kept in the
    first pass with bounded memory (:func:`_sample_plan`), not from the first rows of the file.

    Returns the DistilledSet (saved to ``out`` when given); its meta records the source and both passes.
    """
    from .data.artifact import DistilledSet
    from .select import base as select_base
    from .select import stream  # noqa: F401 - registers the streaming selectors

    if method not in STREAM_METHODS:
        raise ConfigError(f"--stream works with {', '.join(STREAM_METHODS)}; got '{method}'")
    selector = select_base.get_selector(method, size=size, ratio=ratio, per_class=per_class,
                                        random_state=random_state, **params)
    selector.check_params()
    if out is not None:
        DistilledSet.check_target(out, overwrite=overwrite)
    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
    t0 = time.perf_counter()
    source = open_stream(path, label, score_column=score_column, delimiter=delimiter)
    stats, probe_sample, pool_sample = _first_pass(source, selector, size, score_column, batch_size)
    scan_seconds = time.perf_counter() - t0
    k, budgets = _class_budgets(stats, size, ratio, per_class, params)
    selector.set_params(size=k, ratio=None, allocation=None if budgets is None else [int(b) for b in budgets])
    t1 = time.perf_counter()
    selector._class_rows = stats.counts  # the pools' sizes, known from the first pass (as fit(dataset))
    try:
        selector._reset()
        probe = None
        if _needs_probe(selector, score_column):
            probe = _stream_probe(source, stats, selector, probe_sample, batch_size,
                                  getattr(selector, "score", "entropy"))
        if pool_sample is not None:
            _warm_start(selector, stats, pool_sample.by_class(stats), probe, standardize)
        _selection_pass(source, stats, selector, batch_size=batch_size, standardize=standardize,
                        score_column=score_column, probe=probe, progress=progress)
    finally:
        selector._class_rows = None
    result = selector.result(classes=stats.classes)
    result.meta.update({
        "source": str(path), "source_fingerprint": stats.fingerprint, "source_samples": stats.n_rows,
        "stream": {"files": [str(p) for p in source.files], "label": source.label,
                   "features": [source.embedding] if source.embedding else source.features,
                   "batch_size": batch_size, "standardized": standardize, "score_column": score_column,
                   "class_budgets": None if budgets is None else [int(b) for b in budgets],
                   "max_stored_rows": int(selector.max_stored_rows_),
                   "probe_rows": None if probe_sample is None else probe_sample.held(),
                   "scan_sample_rows": sum(x.max_held_ for x in (probe_sample, pool_sample) if x is not None)},
        "timings": {"scan_seconds": scan_seconds, "select_seconds": time.perf_counter() - t1},
    })
    if out is not None:
        result.save(out, overwrite=overwrite)
    return result


def _first_rows_probe(source: StreamSource, stats: StreamStats, selector, batch_size: int, score: str = "entropy"):
    """A probe trained on the first ``probe_rows`` rows of the stream (``probe_sample="head"``)."""
    from .data.dataset import Dataset
    from .select import stream

    need = int(selector.probe_rows)
    Xs, ys = [], []
    have = 0
    for f, offset, cols in iter_batches(source, min(batch_size, need)):
        Xs.append(batch_features(source, f, offset, cols).astype(np.float32))
        ys.append(stats.codes(batch_labels(source, f, offset, cols)))
        have += len(Xs[-1])
        if have >= need:
            break
    X, y = np.concatenate(Xs)[:need], np.concatenate(ys)[:need]
    ds = Dataset.create(X, y, stats.classes, name="stream-probe-rows", min_classes=1,
                        origin=f"{source.path} (first {need} rows)")
    return stream.probe_scorer(ds, score=score, model=selector.model, epochs=selector.epochs,
                               seed=selector.random_state or 0, device=selector.device)


# --- the command line ----------------------------------------------------------------------------------------
def add_stream_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--stream`` and its options to the ``select`` subcommand's parser."""
    g = parser.add_argument_group("streaming (data larger than memory)")
    g.add_argument("--stream", action="store_true",
                   help="read DATA (a directory of Parquet shards, a Parquet file or a CSV file) in pieces through a "
                        f"streaming method ({', '.join(STREAM_METHODS)}); memory: one piece plus the kept rows")
    g.add_argument("--batch-size", type=int, default=65_536, metavar="N", help="rows per piece (default 65536)")
    g.add_argument("--score-column", metavar="NAME",
                   help="stream-reservoir: a column of per-row difficulty (e.g. a probe's loss); default: a probe "
                        "trained on rows drawn uniformly in the first pass")
    g.add_argument("--no-standardize", action="store_true",
                   help="measure distances on the raw feature values instead of standardised ones")


def cmd_select_stream(args: argparse.Namespace) -> int:
    """Handler for ``datadistill select --stream``: parse the shared select options and stream."""
    from .cli import _selection_params  # select's --ratio/--size check and --param KEY=VALUE parser

    params = _selection_params(args, ("min_per_class",))
    if getattr(args, "device", None) and args.method == "stream-reservoir":
        params["device"] = args.device
    per_class = None if args.per_class == "none" else args.per_class
    result = run_stream_select(args.data, args.method, args.size, args.out, ratio=args.ratio,
                               label=getattr(args, "label", None), per_class=per_class, batch_size=args.batch_size,
                               standardize=not args.no_standardize, random_state=args.seed,
                               overwrite=args.overwrite, score_column=args.score_column,
                               delimiter=getattr(args, "delimiter", None) or ",", progress=True, **params)
    n = result.meta["source_samples"]
    print(f"kept {len(result)} of {n} rows ({n / len(result):.1f}x smaller) with {args.method} streaming "
          f"(at most {result.meta['stream']['max_stored_rows']} rows held) -> {args.out}")
    return 0
