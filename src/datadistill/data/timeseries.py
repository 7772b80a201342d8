"""Time series and other sequences -> Dataset of shape (N, T, C); sliding windows with leak-free splits.

A sequence Dataset is an ordinary :class:`~datadistill.data.dataset.Dataset` whose ``X`` is float32
(N, T, C) (T time steps, C channels) and whose ``info["layout"]`` is ``"sequence"``. The preprocessor reads
each (T, C) sample as a one-channel plane, so models see (1, T, C); the ``conv1d`` model of the zoo turns
that into C channels over T steps. Selectors and distillers take sequences like any other data set; the
settings that suit them are in :data:`SEQUENCE_SELECT_DEFAULTS` and :func:`distill_sequences`.

Windows cut from one long series overlap, so a random split of them puts the same time steps in training and
test. :func:`split_windows` splits by time (every training window ends before any test window of its series
starts) or by series, and :func:`windows_dataset` refuses any pair of overlapping train/test windows.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DataError
from .dataset import Dataset

PAD_RULES = ("zero", "edge", "truncate")
LAYOUT = "sequence"
# Geometric selectors on sequences measure distances in the conv1d probe's embedding: its global average
# pooling makes two copies of a waveform shifted in time neighbours, where raw flattened steps put them far apart.
SEQUENCE_SELECT_DEFAULTS = {"model": "conv1d", "features": "embedding"}


# --- building and recognising sequence data sets --------------------------------------------------------
def _as_3d(X, origin: str) -> np.ndarray:
    X = np.asarray(X)
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise DataError(f"{origin}: sequence values must be numeric, got dtype {X.dtype}")
    if X.ndim == 2:
        X = X[:, :, None]
    if X.ndim != 3:
        raise DataError(f"{origin}: sequences must be (N, T) or (N, T, C) (samples, time steps, channels), "
                        f"got shape {X.shape}")
    if X.shape[1] < 2:
        raise DataError(f"{origin}: sequences of {X.shape[1]} time step hold no temporal structure; "
                        "use them as tabular features instead")
    return X


def sequence_dataset(X, y, classes: Sequence[str] | None = None, *, test: tuple | None = None,
                     name: str = "sequences", origin: str | None = None, info: dict | None = None) -> Dataset:
    """Validate sequences (N, T) or (N, T, C) with labels and build a Dataset of float32 (N, T, C).

    Args:
        X, y: sequences and one label per sequence.
        classes: class names (as :meth:`Dataset.create` takes them).
        test: an optional ``(X_test, y_test)`` pair of sequences of the same (T, C).
        name, origin: the data set's name and where it came from (for messages).
        info: extra provenance; ``layout`` and ``sequence`` (length, channels) are added.
    """
    origin = origin or name
    X = _as_3d(X, origin)
    n, t, c = X.shape
    flat_test = None
    if test is not None:
        Xt = _as_3d(test[0], f"{origin} (test split)")
        if Xt.shape[1:] != X.shape[1:]:
            raise DataError(f"{origin}: test sequences are (T, C) = {Xt.shape[1:]} but training sequences "
                            f"{X.shape[1:]}; pad or cut them to one length")
        flat_test = (Xt.reshape(len(Xt), -1), test[1])
    meta = {**(info or {}), "layout": LAYOUT, "sequence": {"length": int(t), "channels": int(c)}}
    # Dataset.create validates rows (NaN/inf, labels, classes, lengths) on the flattened steps; the (T, C)
    # shape is restored afterwards (create reads a 2-D sample as an image plane and wants both sides >= 4).
    flat = Dataset.create(X.reshape(n, -1), y, classes, test=flat_test, name=name, origin=origin, info=meta)
    test_ds = None
    if flat.test is not None:
        test_ds = replace(flat.test, X=flat.test.X.reshape(len(flat.test), t, c), info=dict(meta))
    return replace(flat, X=flat.X.reshape(n, t, c), test=test_ds)


def is_sequence(dataset: Dataset) -> bool:
    """Whether ``dataset`` holds sequences (N, T, C) built by this module."""
    return dataset.info.get("layout") == LAYOUT and dataset.X.ndim == 3


def pad_sequences(sequences: Sequence[np.ndarray], pad: str | None = None, *, length: int | None = None,
                  names: Sequence[str] | None = None, origin: str = "sequences") -> np.ndarray:
    """Stack sequences of (T_i, C) into (N, T, C), refusing unequal lengths unless ``pad`` says what to do.

    Args:
        sequences: one array (T_i,) or (T_i, C) per sequence.
        pad: ``"zero"`` (append zeros up to the longest, or ``length``), ``"edge"`` (repeat each sequence's
            last value) or ``"truncate"`` (cut every sequence to the shortest, or ``length``); None: lengths must
            be equal.
        length: the common length to pad or cut to (default: the longest for zero/edge, the shortest for
            truncate); longer sequences are cut to it under every rule.
        names: a name per sequence (e.g. its id) for messages.
    """
    if pad is not None and pad not in PAD_RULES:
        raise ConfigError(f"{origin}: unknown padding rule {pad!r}; choose pad='zero', 'edge' or 'truncate'")
    seqs = [np.asarray(s) for s in sequences]
    if not seqs:
        raise DataError(f"{origin}: no sequences")
    seqs = [s[:, None] if s.ndim == 1 else s for s in seqs]
    names = [str(v) for v in names] if names is not None else [str(i) for i in range(len(seqs))]
    channels = {s.shape[1] for s in seqs if s.ndim == 2}
    if any(s.ndim != 2 for s in seqs) or len(channels) != 1:
        raise DataError(f"{origin}: every sequence must be (T,) or (T, C) with the same C; got channel counts "
                        f"{sorted(channels)}")
    lengths = np.array([len(s) for s in seqs])
    if length is not None and (isinstance(length, bool) or int(length) < 2):
        raise ConfigError(f"{origin}: length must be an integer of at least 2, got {length!r}")
    if pad is None:
        if lengths.min() != lengths.max():
            short, long_ = int(np.argmin(lengths)), int(np.argmax(lengths))
            raise DataError(
                f"{origin}: sequences have unequal lengths ({lengths.min()} to {lengths.max()} steps; "
                f"'{names[short]}' has {lengths[short]}, '{names[long_]}' has {lengths[long_]}). Choose a padding "
                f"rule: pad='zero' (append zeros up to {lengths.max()} steps), pad='edge' (repeat each sequence's "
                f"last value up to {lengths.max()}) or pad='truncate' (cut every sequence to {lengths.min()}); "
                "length=T sets the common length")
        target = int(length) if length is not None else int(lengths[0])
        if target > lengths[0]:
            raise ConfigError(f"{origin}: length {target} is longer than the sequences ({lengths[0]}); "
                              "choose pad='zero' or 'edge' to pad them")
    elif pad == "truncate":
        target = int(length) if length is not None else int(lengths.min())
        if target > lengths.min():
            short = int(np.argmin(lengths))
            raise ConfigError(f"{origin}: cannot truncate to {target} steps: '{names[short]}' has only "
                              f"{lengths[short]}; choose length <= {lengths.min()} or pad='zero'/'edge'")
    else:
        target = int(length) if length is not None else int(lengths.max())
    c = channels.pop()
    out = np.zeros((len(seqs), target, c), dtype=np.float64)
    for i, s in enumerate(seqs):
        k = min(len(s), target)
        out[i, :k] = s[:k]
        if pad == "edge" and k < target:
            out[i, k:] = s[k - 1]
    return out


def from_sequences(sequences: Sequence[np.ndarray], labels, *, pad: str | None = None, length: int | None = None,
                   classes: Sequence[str] | None = None, name: str = "sequences") -> Dataset:
    """A sequence Dataset from a list of arrays (T_i,) or (T_i, C) and one label each (see :func:`pad_sequences`)."""
    X = pad_sequences(sequences, pad, length=length, origin=name)
    return sequence_dataset(X, labels, classes, name=name, info={"format": "arrays", "pad": pad})


# --- files ----------------------------------------------------------------------------------------------------
def load_sequence_npz(path: str | os.PathLike) -> Dataset:
    """Arrays ``x``/``X`` (N, T) or (N, T, C) and ``y``, or ``x_train/y_train[/x_test/y_test]``; ``class_names``."""
    from .sources import _read_npz

    path = Path(path)
    arrays = _read_npz(path)
    classes = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None
    info = {"source": str(path), "format": "npz"}
    if "x_train" in arrays and "y_train" in arrays:
        test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays and "y_test" in arrays else None
        return sequence_dataset(arrays["x_train"], arrays["y_train"], classes, test=test, name=path.stem,
                                origin=str(path), info=info)
    key = "X" if "X" in arrays else "x"
    if key in arrays and "y" in arrays:
        return sequence_dataset(arrays[key], arrays["y"], classes, name=path.stem, origin=str(path), info=info)
    raise DataError(f"{path}: expected arrays x (or X) of shape (N, T) or (N, T, C) and y, or x_train/y_train; "
                    f"found {sorted(arrays)}")


def _read_table(path: Path, delimiter: str | None):
    import pyarrow as pa

    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            import pyarrow.parquet as pq

            return pq.read_table(path)
        import pyarrow.csv as pcsv

        options = pcsv.ParseOptions(delimiter=delimiter) if delimiter else pcsv.ParseOptions()
        return pcsv.read_csv(path, parse_options=options)
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None


def _long_table_columns(table, path: Path, id_column: str, time_column: str, label: str,
                        value_columns: Sequence[str] | None) -> list[str]:
    """The value columns of a long table, after checking that id, time and label exist and are never empty."""
    columns = table.column_names
    for role, col in (("id", id_column), ("time", time_column), ("label", label)):
        if col not in columns:
            keyword = "label" if role == "label" else f"{role}_column"
            raise DataError(f"{path}: {role} column '{col}' not found; columns: {columns} (pass {keyword}=...)")
    values = list(value_columns) if value_columns is not None else [
        c for c in columns if c not in (id_column, time_column, label)]
    if not values:
        raise DataError(f"{path}: no value columns besides id '{id_column}', time '{time_column}' and label '{label}'")
    missing = [c for c in values if c not in columns]
    if missing:
        raise DataError(f"{path}: value column{'s' if len(missing) > 1 else ''} {', '.join(map(repr, missing))} "
                        f"not found; columns: {columns}")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows")
    for col in [id_column, time_column, label]:
        if table.column(col).null_count:
            row = next(i for i, v in enumerate(table.column(col).to_pylist()) if v is None)
            raise DataError(f"{path}: row {row}: column '{col}' is empty")
    return values


def _channel_values(table, values: Sequence[str], path: Path) -> np.ndarray:
    """The value columns as float64 (rows, channels); DataError for a non-numeric column or a missing value."""
    import pyarrow as pa

    vals = []
    for c in values:
        col = table.column(c)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            raise DataError(f"{path}: value column '{c}' is not numeric (type {col.type}); encode it as numbers or "
                            "leave it out with value_columns=[...]")
        arr = col.to_numpy(zero_copy_only=False).astype(np.float64)
        bad = ~np.isfinite(arr)
        if bad.any():
            raise DataError(f"{path}: row {int(np.flatnonzero(bad)[0])}, column '{c}' is missing, NaN or infinite; "
                            "fill or drop that row (a gap in a series is filled by you, not guessed here)")
        vals.append(arr)
    return np.stack(vals, axis=1)


def _time_values(table, time_column: str, path: Path) -> np.ndarray:
    """The time column as numbers that sort like it (timestamps and dates as int64 ticks)."""
    import pyarrow as pa

    tcol = table.column(time_column)
    if pa.types.is_timestamp(tcol.type):
        return tcol.cast(pa.int64()).to_numpy(zero_copy_only=False)
    if pa.types.is_date(tcol.type):  # arrow casts no date to int64: days through numpy
        return tcol.to_numpy(zero_copy_only=False).astype("datetime64[D]").astype(np.int64)
    if pa.types.is_integer(tcol.type) or pa.types.is_floating(tcol.type):
        return tcol.to_numpy(zero_copy_only=False).astype(np.float64)
    raise DataError(f"{path}: time column '{time_column}' is {tcol.type}, not numbers or timestamps")


def _series_by_id(ids: np.ndarray, times: np.ndarray, labels: np.ndarray, V: np.ndarray,
                  path: Path) -> tuple[np.ndarray, list[np.ndarray], list]:
    """Rows grouped per id and sorted by time -> (sorted ids, one (T_i, C) array each, one label each).

    DataError for two rows of one id at the same time, or an id whose rows carry different labels.
    """
    uid, inverse = np.unique(ids, return_inverse=True)
    order = np.lexsort((times, inverse))
    inv_sorted, t_sorted = inverse[order], times[order]
    repeat = np.flatnonzero((np.diff(inv_sorted) == 0) & (np.diff(t_sorted) == 0))
    if len(repeat):
        r = order[repeat[0] + 1]
        raise DataError(f"{path}: id '{ids[r]}' has two rows at time {times[r]} (row {int(r)}); one row per id and "
                        "time step")
    starts = np.r_[0, np.flatnonzero(np.diff(inv_sorted)) + 1]
    ends = np.r_[starts[1:], len(order)]
    seqs, y = [], []
    for s, e in zip(starts, ends):
        rows = order[s:e]
        lab = labels[rows]
        if np.any(lab.astype(str) != str(lab[0])):
            other = rows[int(np.flatnonzero(lab.astype(str) != str(lab[0]))[0])]
            raise DataError(f"{path}: id '{ids[rows[0]]}' has label {lab[0].item()!r} and, in row {int(other)}, "
                            f"{labels[other].item()!r}; a sequence has one label")
        seqs.append(V[rows])
        y.append(lab[0])
    return uid, seqs, y


def load_long_table(path: str | os.PathLike, *, id_column: str = "id", time_column: str = "time",
                    value_columns: Sequence[str] | None = None, label: str = "label", pad: str | None = None,
                    length: int | None = None, delimiter: str | None = None) -> Dataset:
    """A long CSV/Parquet table (one row per series and time step) -> one sequence per id, sorted by time.

    Args:
        id_column: the series id; every id becomes one sample.
        time_column: numeric or timestamp column the steps of a series are sorted by (no repeats within an id).
        value_columns: the channels (default: every column except id, time and label).
        label: the label column; constant within an id.
        pad, length: what to do with series of unequal length (see :func:`pad_sequences`).
        delimiter: CSV field separator (default ``,``).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    table = _read_table(path, delimiter)
    values = _long_table_columns(table, path, id_column, time_column, label, value_columns)
    V = _channel_values(table, values, path)
    times = _time_values(table, time_column, path)
    ids = np.asarray(table.column(id_column).to_pylist()).astype(str)
    labels = np.asarray(table.column(label).to_pylist())
    uid, seqs, y = _series_by_id(ids, times, labels, V, path)
    X = pad_sequences(seqs, pad, length=length, names=list(uid), origin=str(path))
    info = {"source": str(path), "format": path.suffix.lower().lstrip("."), "label": label, "id_column": id_column,
            "time_column": time_column, "value_columns": values, "pad": pad, "series_ids": [str(u) for u in uid]}
    return sequence_dataset(X, np.asarray(y), name=path.stem, origin=str(path), info=info)


def load_sequences(path: str | os.PathLike, *, test_fraction: float = 0.2, random_state: int = 0,
                   ensure_test: bool = True, **options) -> Dataset:
    """Load sequences from .npz or a long CSV/Parquet (``options``: see :func:`load_long_table`); split by series.

    Each sample is a whole series, so the seeded stratified test split puts every series on one side only.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.suffix.lower() == ".npz":
        if options:
            raise ConfigError(f"{path}: options {', '.join(sorted(options))} apply to long CSV/Parquet tables only")
        ds = load_sequence_npz(path)
    elif path.suffix.lower() in {".csv", ".tsv", ".txt", ".parquet", ".pq"}:
        ds = load_long_table(path, **options)
    else:
        raise DataError(f"{path}: unknown sequence format '{path.suffix}'; use .npz or a long .csv/.parquet")
    if not ensure_test or ds.test is not None:
        return ds
    split = ds.with_test_split(test_fraction, random_state)
    return replace(split, test=replace(split.test, info=dict(ds.info)))


# --- sliding windows ------------------------------------------------------------------------------------------
@dataclass
class Windows:
    """Windows cut from one or more long series: ``X`` (M, length, C), a label, series and start step each."""

    X: np.ndarray
    y: np.ndarray
    series: np.ndarray
    start: np.ndarray
    length: int
    stride: int
    series_lengths: np.ndarray

    def __len__(self) -> int:
        return len(self.X)


def windows(series, labels, length: int, stride: int | None = None, *, label_rule: str = "majority") -> Windows:
    """Cut sliding windows of ``length`` steps every ``stride`` steps (default: ``length``, no overlap).

    Args:
        series: one long series (T,) or (T, C), or a list of them (each cut on its own).
        labels: per-step labels (T,) for each series, or one label per series (a scalar, or a list of them).
        label_rule: a window's label from per-step labels: ``"majority"`` (the most frequent; ties go to the
            label seen last) or ``"last"`` (the label at its final step).
    """
    if label_rule not in ("majority", "last"):
        raise ConfigError(f"label_rule must be 'majority' or 'last', got {label_rule!r}")
    stride = length if stride is None else stride
    for key, value in (("length", length), ("stride", stride)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ConfigError(f"windows: {key} must be a positive integer, got {value!r}")
    if length < 2:
        raise ConfigError("windows: length must be at least 2 steps")
    single = not isinstance(series, (list, tuple))
    all_series = [series] if single else list(series)
    all_labels = [labels] if single else list(labels)
    if len(all_labels) != len(all_series):
        raise DataError(f"windows: {len(all_series)} series but {len(all_labels)} label entries")
    X, y, sid, start, lengths = [], [], [], [], []
    channels = None
    for i, (s, lab) in enumerate(zip(all_series, all_labels)):
        s = np.asarray(s, dtype=np.float64)
        s = s[:, None] if s.ndim == 1 else s
        if s.ndim != 2:
            raise DataError(f"windows: series {i} must be (T,) or (T, C), got shape {s.shape}")
        if channels is not None and s.shape[1] != channels:
            raise DataError(f"windows: series {i} has {s.shape[1]} channels, series 0 has {channels}")
        channels = s.shape[1]
        T = len(s)
        if T < length:
            raise DataError(f"windows: series {i} has {T} steps, fewer than the window length {length}")
        lab = np.asarray(lab)
        if lab.ndim == 1 and len(lab) != T:
            raise DataError(f"windows: series {i} has {T} steps but {len(lab)} per-step labels")
        starts = np.arange(0, T - length + 1, stride)
        cut = np.lib.stride_tricks.sliding_window_view(s, length, axis=0)[starts]  # (M, C, length)
        X.append(cut.transpose(0, 2, 1))
        if lab.ndim == 0:
            y += [lab.item()] * len(starts)
        else:
            spans = np.lib.stride_tricks.sliding_window_view(lab, length)[starts]
            if label_rule == "last":
                y += list(spans[:, -1])
            else:
                for span in spans:
                    values, first_rev = np.unique(span[::-1], return_index=True)
                    counts = np.array([(span == v).sum() for v in values])
                    best = np.flatnonzero(counts == counts.max())
                    y.append(values[best[np.argmin(first_rev[best])]])
        sid += [i] * len(starts)
        start += list(starts)
        lengths.append(T)
    return Windows(X=np.concatenate(X).astype(np.float32), y=np.asarray(y), series=np.asarray(sid, dtype=np.int64),
                   start=np.asarray(start, dtype=np.int64), length=int(length), stride=int(stride),
                   series_lengths=np.asarray(lengths, dtype=np.int64))


def check_no_leakage(w: Windows, train: np.ndarray, test: np.ndarray, *, gap: int = 0) -> None:
    """Refuse a split in which a training and a test window of the same series share a time step.

    With ``gap``, windows of one series must also lie at least ``gap`` steps apart.
    """
    train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    both = np.intersect1d(train, test)
    if len(both):
        raise DataError(f"window {int(both[0])} is in both the training and the test split; a window split must "
                        "not share windows (use split_windows(w, by='time' or 'series'))")
    reach = w.length + int(gap)
    for s in np.unique(w.series[test]):
        tr = train[w.series[train] == s]
        if not len(tr):
            continue
        order = np.argsort(w.start[tr])
        tr, tr_start = tr[order], w.start[tr][order]
        for j in test[w.series[test] == s]:
            a = w.start[j]
            # a train window starting in (a - reach, a + reach) shares a step (or lies within the gap)
            k = np.searchsorted(tr_start, a - reach, side="right")
            if k < len(tr) and tr_start[k] < a + reach:
                i = tr[k]
                raise DataError(
                    f"leaking window split: training window {int(i)} (series {int(s)}, steps {int(w.start[i])}-"
                    f"{int(w.start[i]) + w.length - 1}) and test window {int(j)} (steps {int(a)}-{int(a) + w.length - 1})"
                    f"{' share time steps' if not gap else f' lie less than {gap} steps apart'}: overlapping windows "
                    "would put test data into training. Split by time (split_windows(w, by='time')) or by series "
                    "(by='series'), or cut windows with stride >= length")


def windows_dataset(w: Windows, train, test, *, gap: int = 0, classes: Sequence[str] | None = None,
                    name: str = "windows", info: dict | None = None) -> Dataset:
    """A sequence Dataset with the windows ``train`` for training and ``test`` as its test split (leaks refused)."""
    train, test = np.asarray(train, dtype=np.int64), np.asarray(test, dtype=np.int64)
    if not len(train) or not len(test):
        raise DataError(f"{name}: the split leaves {len(train)} training and {len(test)} test windows; both need some")
    check_no_leakage(w, train, test, gap=gap)
    meta = {"format": "windows", "windows": {"length": w.length, "stride": w.stride, "n_windows": len(w)},
            **(info or {})}
    from .dataset import encode_labels

    codes, names = encode_labels(w.y, classes, origin=name)
    present = np.unique(codes[train])
    unseen = sorted(set(codes[test].tolist()) - set(present.tolist()))
    if unseen:
        raise DataError(f"{name}: test windows of class{'es' if len(unseen) > 1 else ''} "
                        f"{', '.join(repr(names[c]) for c in unseen)} but no training window of it; a split by time "
                        "puts late classes in test only: change test_fraction, split by series, or cut more series")
    codes = np.searchsorted(present, codes)  # a class only in dropped windows is left out
    names = tuple(names[c] for c in present)
    ds = sequence_dataset(w.X[train], codes[train], names, test=(w.X[test], codes[test]), name=name, info=meta)
    # selections then name windows by their index in ``w``
    return replace(ds, source_rows=train)


def split_windows(w: Windows, *, by: str = "time", test_fraction: float = 0.2, gap: int = 0, random_state: int = 0,
                  classes: Sequence[str] | None = None, name: str = "windows") -> Dataset:
    """Split windows into training and test without leakage, by time or by series.

    Args:
        by: ``"time"``: in every series, training windows end at or before the cut at ``1 - test_fraction`` of its
            steps and test windows start at or after the cut plus ``gap``; windows across the cut are dropped.
            ``"series"``: whole series go to the test side (seeded; needs at least two series).
        test_fraction: share of steps (by time) or of series (by series) held out.
        gap: extra steps between training and test windows of a series (temporal correlation reaches past a
            window's end).
        random_state: seed of the series draw.
    """
    if not 0 < test_fraction < 1:
        raise ConfigError(f"test_fraction must be in (0, 1), got {test_fraction}")
    if isinstance(gap, bool) or int(gap) < 0:
        raise ConfigError(f"gap must be a non-negative number of steps, got {gap!r}")
    n_series = len(w.series_lengths)
    if by == "time":
        cut = np.floor((1 - test_fraction) * w.series_lengths).astype(np.int64)[w.series]
        end = w.start + w.length
        train = np.flatnonzero(end <= cut)
        test = np.flatnonzero(w.start >= cut + int(gap))
    elif by == "series":
        if n_series < 2:
            raise DataError(f"{name}: a split by series needs at least two series, got one; split by time instead")
        rng = np.random.default_rng(random_state)
        n_test = min(n_series - 1, max(1, int(round(test_fraction * n_series))))
        held = rng.choice(n_series, n_test, replace=False)
        is_test = np.isin(w.series, held)
        train, test = np.flatnonzero(~is_test), np.flatnonzero(is_test)
    else:
        raise ConfigError(f"split_windows: by must be 'time' or 'series', got {by!r}")
    dropped = len(w) - len(train) - len(test)
    info = {"split": {"kind": f"windows by {by}", "test_fraction": test_fraction, "gap": int(gap),
                      "random_state": random_state if by == "series" else None, "n_train": len(train),
                      "n_test": len(test), "dropped_across_cut": int(dropped)}}
    return windows_dataset(w, train, test, gap=gap if by == "time" else 0, classes=classes, name=name, info=info)


# --- selection and distillation settings for sequences ------------------------------------------------------
def _sequence_fill(selector, params: dict) -> dict:
    """The sequence defaults ``selector`` takes and ``params`` does not set (the probe; features of geometric methods)."""
    from ..select.features import FeatureSelector

    defaults = {"model": SEQUENCE_SELECT_DEFAULTS["model"]}
    if isinstance(selector, FeatureSelector):
        defaults["features"] = SEQUENCE_SELECT_DEFAULTS["features"]
    keys = selector.get_params() if hasattr(selector, "get_params") else {}
    return {k: v for k, v in defaults.items() if k not in params and k in keys}


def sequence_selector(method: str, *, size: int | None = None, ratio: float | None = None, **params):
    """The (unfitted) selector ``method`` with the sequence defaults; ``params`` override them."""
    from ..select import get_selector

    selector = get_selector(method, size=size, ratio=ratio, **params)
    fill = _sequence_fill(selector, params)
    if fill:
        selector.set_params(**fill)
    return selector


def sequence_select_params(method: str, params: dict | None = None) -> dict:
    """``params`` of selector ``method`` with the sequence defaults added (e.g. for ``evaluate(method_params=...)``)."""
    from ..select import get_selector

    params = dict(params or {})
    return {**_sequence_fill(get_selector(method, size=1, **params), params), **params}


def select_sequences(dataset: Dataset, method: str, *, size: int | None = None, ratio: float | None = None,
                     **params):
    """``datadistill.select`` with the sequence defaults: the conv1d probe, and its embedding for geometric methods.

    ``params`` override :data:`SEQUENCE_SELECT_DEFAULTS` (e.g. ``features="raw"``); returns the DistilledSet.
    """
    selector = sequence_selector(method, size=size, ratio=ratio, **params)
    return selector.fit(dataset).transform(dataset)


def sequence_distiller(method: str = "dm", *, ipc: int = 10, **params):
    """The (unfitted) distiller ``method`` for sequences: conv1d networks, no image augmentation unless asked.

    The matching methods switch DSA on for any 3-D model input, and DSA's crops, rotations and flips treat
    (T, C) as an image plane, so sequences get ``dsa=False`` (and trajectory matching ``augment=False``) unless
    ``params`` set them.
    """
    from ..synth import get_distiller

    distiller = get_distiller(method, ipc=ipc, **{"model": "conv1d", **params})
    for switch in ("dsa", "augment"):  # matching methods' DSA; trajectory matching's augmentation
        if switch not in params and hasattr(distiller, switch):
            distiller.set_params(**{switch: False})
    return distiller


def distill_sequences(dataset: Dataset, *, ipc: int = 10, method: str = "dm", **params):
    """Distribution matching (or ``method``) on sequences with :func:`sequence_distiller`'s settings."""
    if not is_sequence(dataset):
        raise DataError(f"{dataset.name}: not a sequence data set (N, T, C); build it with datadistill.data.timeseries")
    return sequence_distiller(method, ipc=ipc, **params).fit(dataset)


# --- generated data ---------------------------------------------------------------------------------------------
WAVEFORMS = ("sine", "square", "sawtooth", "triangle", "chirp", "bump")


def synthetic_waveforms(n: int = 1000, length: int = 64, *, n_classes: int = 6, noise: float = 0.3,
                        max_shift: float = 1.0, label_noise: float = 0.0, channels: int = 1,
                        random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Seeded multi-class waveforms (N, length, channels) and labels: one shape per class.

    Each sample draws a frequency (1.5-3 cycles), amplitude (0.7-1.3), offset and a time shift (a fraction of a
    period up to ``max_shift`` periods), then adds Gaussian noise of sd ``noise``; ``label_noise`` flips that share
    of labels to another class. Extra channels are the same wave with their own noise and shift.
    """
    if not 2 <= n_classes <= len(WAVEFORMS):
        raise ConfigError(f"n_classes must be in 2..{len(WAVEFORMS)}, got {n_classes}")
    rng = np.random.default_rng(random_state)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    t = np.linspace(0.0, 1.0, length, endpoint=False)[None, :]
    X = np.empty((n, length, channels), dtype=np.float32)
    for c in range(channels):
        freq = rng.uniform(1.5, 3.0, (n, 1))
        amp = rng.uniform(0.7, 1.3, (n, 1))
        offset = rng.normal(0.0, 0.2, (n, 1))
        phase = freq * t + rng.uniform(0.0, max_shift, (n, 1))
        frac = phase % 1.0
        waves = {
            "sine": np.sin(2 * np.pi * phase),
            "square": np.sign(np.sin(2 * np.pi * phase)),
            "sawtooth": 2 * frac - 1,
            "triangle": 2 * np.abs(2 * frac - 1) - 1,
            "chirp": np.sin(2 * np.pi * (freq * t + 2.0 * t ** 2 + (phase - freq * t))),
            "bump": 2 * np.exp(-((frac - 0.5) ** 2) / 0.01) - 1,
        }
        stack = np.stack([waves[k] for k in WAVEFORMS[:n_classes]])  # (K, n, length)
        X[:, :, c] = amp * stack[y, np.arange(n)] + offset + rng.normal(0.0, noise, (n, length))
    if label_noise:
        flip = rng.random(n) < label_noise
        y = y.copy()
        y[flip] = (y[flip] + rng.integers(1, n_classes, flip.sum())) % n_classes
    return X, y.astype(np.int64)
