"""Doors to and from the libraries around datadistill: numpy, pandas, torch and Hugging Face ``datasets``.

In: :func:`from_arrays`, :func:`from_pandas`, :func:`from_torch` and :func:`from_hf` build the validated
:class:`~datadistill.data.dataset.Dataset`. Out: :func:`to_torch` and :func:`to_pandas` turn a
:class:`~datadistill.data.artifact.DistilledSet` into a torch ``TensorDataset`` or a DataFrame, and
:func:`report_to_dataframe` turns a :class:`~datadistill.report.Report` into a DataFrame. pandas and
``datasets`` are optional: they are imported only by the functions that need them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from .data.artifact import DistilledSet
from .data.dataset import Dataset
from .errors import ConfigError, DataError

LABEL_COLUMN = "label"
WEIGHT_COLUMN = "weight"
ROW_COLUMN = "source_row"
SOFT_PREFIX = "soft_"
HF_IMAGE_COLUMNS = ("image", "img", "pixel_values")
HF_EXTRA = "pip install 'datadistill[hf]' (or: pip install datasets)"
PANDAS_EXTRA = "pip install 'datadistill[pandas]' (or: pip install pandas)"


def _import_pandas():
    try:
        import pandas as pd
    except ImportError:
        raise ImportError(f"this needs pandas, which is not installed; {PANDAS_EXTRA}") from None
    return pd


def _finish(ds: Dataset, test, test_size: float | None, random_state: int) -> Dataset:
    """``ds`` with the held-out split the caller asked for: given (``test``), made (``test_size``) or none."""
    if test is not None and test_size is not None:
        raise ConfigError("give either a test split (test=...) or a fraction to hold out (test_size=...), not both")
    if test_size is None:
        return ds
    if isinstance(test_size, bool) or not isinstance(test_size, (int, float)) or not 0 < test_size < 1:
        raise ConfigError(f"test_size must be a fraction in (0, 1), got {test_size!r}")
    return ds.with_test_split(float(test_size), random_state)


# --- in ------------------------------------------------------------------------------------------------
def from_arrays(
    X,
    y,
    *,
    classes: Sequence[str] | None = None,
    test: tuple | Dataset | None = None,
    test_size: float | None = None,
    random_state: int = 0,
    name: str = "arrays",
) -> Dataset:
    """A Dataset from feature/image array ``X`` and labels ``y`` (numpy, lists, CPU tensors, pandas).

    Args:
        X: (N, d) features or (N, H, W[, C]) / (N, C, H, W) images.
        y: N labels: ints 0..K-1, other ints or strings (renumbered in sorted order).
        classes: class names for labels 0..K-1.
        test: a held-out ``(X_test, y_test)`` pair (labels as in ``y``) or a Dataset.
        test_size: instead of ``test``, hold out this fraction (stratified, seeded by ``random_state``).
        random_state: seed of that split.
        name: the data set's name in reports and provenance.
    """
    if isinstance(test, tuple):
        if len(test) != 2:
            raise ConfigError(f"test must be an (X_test, y_test) pair or a Dataset, got a tuple of {len(test)}")
        test = (_numpy(test[0]), _numpy(test[1]))
    ds = Dataset.create(_numpy(X), _numpy(y), classes, test=test, name=name,
                        info={"source": name, "format": "arrays"})
    return _finish(ds, test, test_size, random_state)


def _numpy(a) -> np.ndarray:
    """An array from numpy, lists, pandas (``to_numpy``) or torch tensors (``detach().cpu()``)."""
    if hasattr(a, "detach") and hasattr(a, "cpu"):
        a = a.detach().cpu().numpy()
    elif callable(getattr(a, "to_numpy", None)):
        a = a.to_numpy()
    return np.asarray(a)


def from_pandas(
    df,
    label: str = LABEL_COLUMN,
    features: Sequence[str] | None = None,
    *,
    classes: Sequence[str] | None = None,
    test=None,
    test_size: float | None = None,
    random_state: int = 0,
    name: str = "dataframe",
) -> Dataset:
    """A Dataset from a pandas DataFrame: one label column, numeric feature columns.

    Args:
        df: the DataFrame; its rows are the samples, in order.
        label: the label column (ints or strings; categoricals keep their category order as class order).
        features: the feature columns (default: every column but ``label``); each must be numeric or bool.
        classes: class names for integer labels 0..K-1.
        test: a held-out DataFrame with the same columns (or a Dataset).
        test_size: instead of ``test``, hold out this fraction (stratified, seeded by ``random_state``).
        random_state: seed of that split.
        name: the data set's name in reports and provenance.
    """
    pd = _import_pandas()
    if not isinstance(df, pd.DataFrame):
        raise ConfigError(f"from_pandas needs a pandas DataFrame, got {type(df).__name__}")
    X, y, classes, features = _frame_arrays(df, label, features, classes, name)
    if isinstance(test, pd.DataFrame):
        Xt, yt, _, _ = _frame_arrays(test, label, features, None, f"{name} (test)")
        test = (Xt, yt)
    elif test is not None and not isinstance(test, Dataset):
        raise ConfigError(f"test must be a DataFrame or a Dataset, got {type(test).__name__}")
    ds = Dataset.create(X, y, classes, test=test, name=name,
                        info={"source": name, "format": "dataframe", "label": label, "features": list(features)})
    return _finish(ds, test, test_size, random_state)


def _frame_arrays(df, label: str, features: Sequence[str] | None, classes: Sequence[str] | None, origin: str):
    """(X float32, y, class names, feature names) of a DataFrame, naming the column or row that is unusable."""
    pd = _import_pandas()
    columns = list(df.columns)
    if len(df) == 0:
        raise DataError(f"{origin}: the DataFrame has no rows")
    if len(set(map(str, columns))) != len(columns):
        repeated = sorted({str(c) for c in columns if list(map(str, columns)).count(str(c)) > 1})
        raise DataError(f"{origin}: duplicate column name{'s' if len(repeated) > 1 else ''} "
                        f"{', '.join(map(repr, repeated))}; give every column its own name")
    if label not in columns:
        raise DataError(f"{origin}: label column {label!r} not found; columns: {columns}")
    features = [c for c in columns if c != label] if features is None else list(features)
    missing = [c for c in features if c not in columns]
    if missing:
        raise DataError(f"{origin}: feature column{'s' if len(missing) > 1 else ''} "
                        f"{', '.join(map(repr, missing))} not found; columns: {columns}")
    if label in features:
        raise DataError(f"{origin}: the label column {label!r} is also listed as a feature")
    if not features:
        raise DataError(f"{origin}: no feature columns besides the label {label!r}")
    for c in features:
        col = df[c]
        if not (pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col)):
            example = next((v for v in col if not _missing(v)), None)
            raise DataError(f"{origin}: column {c!r} is not numeric (dtype {col.dtype}, e.g. {example!r}); "
                            "encode it as numbers or leave it out of features=")
    X = df[features].to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(X)
    if bad.any():
        rows = np.flatnonzero(bad.any(axis=1))
        first_col = features[int(np.flatnonzero(bad[rows[0]])[0])]
        shown = ", ".join(repr(df.index[r]) for r in rows[:5]) + (f" and {len(rows) - 5} more" if len(rows) > 5 else "")
        raise DataError(f"{origin}: {len(rows)} row{'s' if len(rows) > 1 else ''} with NaN, missing or infinite "
                        f"features (index {shown}; first in column {first_col!r}); drop them (df.dropna()) or "
                        "fill them first")
    ycol = df[label]
    absent = np.flatnonzero(ycol.isna().to_numpy())
    if len(absent):
        shown = ", ".join(repr(df.index[r]) for r in absent[:5]) + (
            f" and {len(absent) - 5} more" if len(absent) > 5 else "")
        raise DataError(f"{origin}: label column {label!r} is missing in {len(absent)} "
                        f"row{'s' if len(absent) > 1 else ''} (index {shown}); drop or label them")
    if isinstance(ycol.dtype, pd.CategoricalDtype):
        names = [str(c) for c in ycol.cat.categories]
        if classes is None:
            classes = names
        y = ycol.cat.codes.to_numpy().astype(np.int64)
    elif pd.api.types.is_numeric_dtype(ycol) and not pd.api.types.is_bool_dtype(ycol):
        y = ycol.to_numpy(dtype=np.float64) if pd.api.types.is_float_dtype(ycol) else ycol.to_numpy(dtype=np.int64)
    else:
        y = ycol.astype(str).to_numpy(dtype=str)
    return X.astype(np.float32), y, classes, features


def _missing(value) -> bool:
    try:
        return bool(value is None or value != value)
    except (TypeError, ValueError):
        return False


def from_torch(
    dataset,
    *,
    classes: Sequence[str] | None = None,
    test=None,
    test_size: float | None = None,
    random_state: int = 0,
    batch_size: int = 512,
    num_workers: int = 0,
    name: str | None = None,
) -> Dataset:
    """A Dataset from a map-style torch ``Dataset`` of ``(sample, label)`` pairs, read in batches.

    Samples may be tensors, numpy arrays or PIL images (a torchvision data set with or without
    ``ToTensor``); labels ints or 0-d tensors. Class names come from ``classes`` or the data set's own
    ``classes`` attribute (torchvision's).

    Args:
        dataset: a map-style data set (``__len__`` and ``__getitem__``); an IterableDataset is refused.
        classes: class names for labels 0..K-1 (default: ``dataset.classes`` when it has one per label).
        test: a held-out map-style data set (read the same way) or a Dataset.
        test_size: instead of ``test``, hold out this fraction (stratified, seeded by ``random_state``).
        random_state: seed of that split.
        batch_size: samples read per batch.
        num_workers: DataLoader worker processes (0: read in this process).
        name: the data set's name (default: its class name).
    """
    name = name or type(dataset).__name__
    X, y = _read_torch(dataset, batch_size, num_workers, name)
    if classes is None:
        own = getattr(dataset, "classes", None)
        if isinstance(own, (list, tuple)) and len(own) > int(y.max()):
            classes = [str(c) for c in own]
    if test is not None and not isinstance(test, Dataset):
        test = _read_torch(test, batch_size, num_workers, f"{name} (test)")
    ds = Dataset.create(X, y, classes, test=test, name=name,
                        info={"source": name, "format": "torch", "class": type(dataset).__qualname__})
    return _finish(ds, test, test_size, random_state)


def _read_torch(dataset, batch_size: int, num_workers: int, origin: str) -> tuple[np.ndarray, np.ndarray]:
    from torch.utils.data import DataLoader, IterableDataset

    if isinstance(dataset, IterableDataset) or not (hasattr(dataset, "__len__") and hasattr(dataset, "__getitem__")):
        raise DataError(f"{origin}: from_torch needs a map-style data set (with __len__ and __getitem__), got "
                        f"{type(dataset).__name__}; collect an iterable one into tensors and use from_arrays")
    _check_batch_size(batch_size)
    n = len(dataset)
    if n == 0:
        raise DataError(f"{origin}: the data set is empty (0 samples)")
    loader = DataLoader(_Indexed(dataset), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                        collate_fn=_collate_numpy)
    X, labels = None, []
    for start, xs, ys in loader:
        X = _place(X, _stack(xs, start, None if X is None else X.shape[1:], origin, "sample"), start, n)
        labels.append(ys)
    return X, np.concatenate(labels)


def _check_batch_size(batch_size) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")


def _stack(items: list[np.ndarray], start: int, shape: tuple | None, origin: str, what: str,
           column: str = "") -> np.ndarray:
    """The samples of one batch (the first at row ``start``) stacked; each must have ``shape`` (row 0's)."""
    shape = items[0].shape if shape is None else tuple(shape)
    odd = next((j for j, x in enumerate(items) if x.shape != shape), None)
    if odd is not None:
        raise DataError(f"{origin}: {column}{what} {start + odd} has shape {items[odd].shape} but {what} 0 has {shape}; "
                        "resize every sample to one shape (and images to one mode, e.g. RGB)")
    return np.stack(items)


def _place(X: np.ndarray | None, xs: np.ndarray, start: int, n: int) -> np.ndarray:
    """Write one batch into the (n, ...) array ``X`` (allocated at the first batch, widened if a batch needs it)."""
    if X is None:
        X = np.empty((n, *xs.shape[1:]), dtype=xs.dtype)
    elif not np.can_cast(xs.dtype, X.dtype, casting="safe"):
        X = X.astype(np.result_type(X.dtype, xs.dtype))
    X[start:start + len(xs)] = xs
    return X


class _Indexed:
    """Wraps a data set so each item carries its index (to name the sample an error is about)."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int):
        return i, self.dataset[i]


def _collate_numpy(batch: list) -> tuple[int, list[np.ndarray], np.ndarray]:
    """(first index, samples as arrays, labels) of one batch of ``(index, (sample, label))`` items."""
    xs, ys = [], []
    for i, item in batch:
        if not isinstance(item, (tuple, list)) or len(item) < 2:
            raise DataError(f"sample {i} is a {type(item).__name__}, not a (sample, label) pair")
        x, label = item[0], item[1]
        x = x.detach().cpu().numpy() if hasattr(x, "detach") else np.asarray(x)
        if x.dtype == object or x.dtype.kind not in "biuf":
            raise DataError(f"sample {i} is not numeric (dtype {x.dtype}); return tensors, arrays or images")
        label = label.detach().cpu().numpy() if hasattr(label, "detach") else np.asarray(label)
        if label.size != 1:
            raise DataError(f"label of sample {i} has shape {label.shape}; give one class id per sample "
                            "(for one-hot labels, use label.argmax())")
        xs.append(x)
        ys.append(label.reshape(()))
    return batch[0][0], xs, np.stack(ys)


def from_hf(
    dataset,
    image: str | None = None,
    label: str = LABEL_COLUMN,
    *,
    test=None,
    test_size: float | None = None,
    random_state: int = 0,
    batch_size: int = 1024,
    name: str | None = None,
) -> Dataset:
    """A Dataset from a Hugging Face ``datasets.Dataset`` (or a ``DatasetDict`` with ``train``/``test``).

    Args:
        dataset: the data set, or a folder written by its ``save_to_disk``; a DatasetDict contributes its
            ``train`` split and, when present, ``test``.
        image: the sample column: images (``datasets.Image``), arrays or lists of numbers (default: the
            first of ``image``, ``img``, ``pixel_values``).
        label: the label column; a ``ClassLabel`` gives the class names.
        test: a held-out ``datasets.Dataset`` with the same columns (or a Dataset).
        test_size: instead of ``test``, hold out this fraction (stratified, seeded by ``random_state``).
        random_state: seed of that split.
        batch_size: rows decoded per batch.
        name: the data set's name (default: the data set's own ``info.dataset_name``, else ``hf``).
    """
    if isinstance(dataset, (str, os.PathLike)):
        dataset = _load_from_disk(dataset)
    if isinstance(dataset, Mapping):
        if "train" not in dataset:
            raise DataError(f"from_hf: a DatasetDict needs a 'train' split; it has {sorted(dataset)}")
        if test is None and test_size is None and "test" in dataset:
            test = dataset["test"]
        dataset = dataset["train"]
    if not (hasattr(dataset, "features") and hasattr(dataset, "with_format")):
        raise ConfigError(f"from_hf needs a Hugging Face datasets.Dataset, got {type(dataset).__name__}; load one "
                          "with datasets.load_dataset(...) or pass a folder saved by Dataset.save_to_disk")
    info = getattr(dataset, "info", None)
    name = name or getattr(info, "dataset_name", None) or "hf"
    image = image or _image_column(dataset)
    X, y, classes = _read_hf(dataset, image, label, batch_size, name)
    if test is not None and not isinstance(test, Dataset):
        Xt, yt, _ = _read_hf(test, image, label, batch_size, f"{name} (test)")
        test = (Xt, yt)
    ds = Dataset.create(X, y, classes, test=test, name=name,
                        info={"source": name, "format": "hf", "image": image, "label": label})
    return _finish(ds, test, test_size, random_state)


def _load_from_disk(path: str | os.PathLike):
    """A data set (or DatasetDict) written by ``save_to_disk``; needs the optional ``datasets`` package."""
    try:
        import datasets
    except ImportError:
        raise ImportError(f"from_hf reads Hugging Face data sets, and the datasets package is not installed; "
                          f"{HF_EXTRA}") from None
    if not Path(path).is_dir():
        raise DataError(f"{path}: no such folder; from_hf reads a folder written by datasets' save_to_disk "
                        "(for a name on the Hub, call datasets.load_dataset yourself and pass the result)")
    try:
        return datasets.load_from_disk(str(path))
    except (FileNotFoundError, ValueError, OSError) as exc:
        raise DataError(f"{path}: not a data set saved by datasets' save_to_disk ({exc})") from None


def _image_column(dataset) -> str:
    columns = list(dataset.features)
    found = next((c for c in HF_IMAGE_COLUMNS if c in columns), None)
    if found is None:
        raise DataError(f"from_hf: no sample column named {', '.join(HF_IMAGE_COLUMNS)}; columns: {columns}; "
                        "pass image=NAME")
    return found


def _read_hf(dataset, image: str, label: str, batch_size: int, origin: str):
    """(X, y, class names or None) of a ``datasets.Dataset``, decoding ``batch_size`` rows at a time."""
    columns = list(dataset.features)
    for role, col in (("sample", image), ("label", label)):
        if col not in columns:
            raise DataError(f"{origin}: {role} column {col!r} not found; columns: {columns}")
    if image == label:
        raise DataError(f"{origin}: the sample and label columns are both {image!r}")
    _check_batch_size(batch_size)
    names = getattr(dataset.features[label], "names", None)
    classes = [str(c) for c in names] if isinstance(names, (list, tuple)) and names else None
    n = len(dataset)
    if n == 0:
        raise DataError(f"{origin}: the data set is empty (0 rows)")
    if hasattr(dataset, "select_columns"):
        dataset = dataset.select_columns([image, label])  # decode no other column
    rows = dataset.with_format("numpy")
    X, labels = None, []
    for start in range(0, n, batch_size):
        batch = rows[start:start + batch_size]
        xs = _hf_samples(batch[image], start, None if X is None else X.shape[1:], image, origin)
        X = _place(X, xs, start, n)
        ys = np.asarray(batch[label])
        if ys.ndim != 1:
            raise DataError(f"{origin}: label column {label!r} holds values of shape {ys.shape[1:]} from row "
                            f"{start}; give one class per row")
        labels.append(ys.astype(str) if ys.dtype.kind in "OSU" else ys)
    return X, np.concatenate(labels), classes


def _hf_samples(values, start: int, shape: tuple | None, column: str, origin: str) -> np.ndarray:
    """One batch of a sample column as a stacked numeric array; a row whose shape differs from row 0's is named."""
    if isinstance(values, np.ndarray) and values.dtype != object and (shape is None or values.shape[1:] == shape):
        arr = values
    else:
        arr = _stack([np.asarray(v) for v in values], start, shape, origin, "row", f"column {column!r}, ")
    if arr.dtype == object or arr.dtype.kind not in "biuf":
        raise DataError(f"{origin}: column {column!r} is not numeric (dtype {arr.dtype}); choose the image or "
                        "feature column with image=NAME")
    return arr


# --- out -----------------------------------------------------------------------------------------------
def to_torch(distilled: DistilledSet, *, soft_labels: bool | None = None, weights: bool | None = None,
             dtype=None):
    """A torch ``TensorDataset`` of the set: ``(X, y)``, then soft labels, then weights where included.

    Args:
        distilled: the set.
        soft_labels: include the (n, K) float32 label distributions; None (default): where the set has them.
        weights: include the (n,) float32 sample weights; None (default): where the set has them.
        dtype: a torch dtype for X (e.g. ``torch.float32`` for uint8 images); default: X's own.

    Each item is then ``(x, y)``, ``(x, y, soft)``, ``(x, y, weight)`` or ``(x, y, soft, weight)``: pass
    ``soft_labels``/``weights`` explicitly to fix the shape of the items whatever the set holds.
    """
    import torch
    from torch.utils.data import TensorDataset

    tensors = [torch.from_numpy(np.ascontiguousarray(distilled.X)),
               torch.from_numpy(np.asarray(distilled.y, dtype=np.int64))]
    if dtype is not None:
        tensors[0] = tensors[0].to(dtype)
    for wanted, value, what, np_dtype in ((soft_labels, distilled.soft_labels, "soft labels", np.float32),
                                          (weights, distilled.weights, "weights", np.float32)):
        if wanted and value is None:
            raise ConfigError(f"to_torch: {what} asked for, but this {distilled.method} set has none")
        if value is not None and wanted is not False:
            tensors.append(torch.from_numpy(np.ascontiguousarray(value, dtype=np_dtype)))
    return TensorDataset(*tensors)


def to_pandas(distilled: DistilledSet, *, feature_names: Sequence[str] | None = None):
    """The set as a DataFrame: one column per feature (images flattened), ``label``, then the extras.

    ``label`` is categorical over the class names (``.cat.codes`` gives the ids); ``source_row`` (the
    source's training rows, selection only), ``weight`` and ``soft_<class>`` columns follow where the set
    has them. ``df.attrs`` keeps ``sample_shape`` (to reshape image rows), ``method`` and ``meta``.

    Args:
        distilled: the set.
        feature_names: the feature columns' names (default: the source's, where recorded, else ``x0, x1, ...``).
    """
    pd = _import_pandas()
    X = np.asarray(distilled.X)
    n, shape = len(X), tuple(X.shape[1:])
    flat = X.reshape(n, -1)
    recorded = distilled.meta.get("features")
    if feature_names is None and isinstance(recorded, list) and len(recorded) == flat.shape[1]:
        feature_names = recorded
    names = [str(c) for c in feature_names] if feature_names is not None else [f"x{i}" for i in range(flat.shape[1])]
    if len(names) != flat.shape[1]:
        raise ConfigError(f"to_pandas: {len(names)} feature names for {flat.shape[1]} features")
    columns: dict[str, object] = dict(zip(names, flat.T))
    extra = {LABEL_COLUMN: pd.Categorical.from_codes(np.asarray(distilled.y, dtype=np.int64),
                                                     categories=list(distilled.classes))}
    if distilled.indices is not None:
        extra[ROW_COLUMN] = np.asarray(distilled.indices, dtype=np.int64)
    if distilled.weights is not None:
        extra[WEIGHT_COLUMN] = np.asarray(distilled.weights, dtype=np.float64)
    if distilled.soft_labels is not None:
        soft = np.asarray(distilled.soft_labels, dtype=np.float32)
        extra.update({f"{SOFT_PREFIX}{c}": soft[:, k] for k, c in enumerate(distilled.classes)})
    clash = sorted(set(columns) & set(extra))
    if clash or len(set(names)) != len(names):
        raise ConfigError(f"to_pandas: feature names must be distinct and differ from {', '.join(extra)}; "
                          f"clashing: {', '.join(clash) or 'repeated names'}")
    df = pd.DataFrame({**columns, **extra})
    df.attrs.update({"sample_shape": shape, "method": distilled.method, "meta": dict(distilled.meta)})
    return df


def report_to_dataframe(report, *, aggregate: bool = False):
    """A Report's rows as a DataFrame: one row per (method, model, protocol, size, seed), or without seed aggregated.

    Per-seed rows carry every field but the chosen ``indices`` (read ``report.rows`` for those), with the
    ``model`` and ``protocol`` that trained them (filled in for reports written before rows named them);
    ``aggregate=True`` gives :meth:`Report.aggregate`'s mean ± std table. ``df.attrs["context"]`` keeps
    the run's context (data set, model, recipe, versions) without the plotted points.
    """
    pd = _import_pandas()
    records = report.aggregate() if aggregate else [
        {k: v for k, v in row.items() if k != "indices"} for row in report.rows_named()]
    lead = ["method", "model", "protocol", "kind", "size", "ratio"] + ([] if aggregate else ["seed"])
    seen: list[str] = []
    for r in records:
        seen += [k for k in r if k not in seen]
    order = [k for k in lead if k in seen] + [k for k in seen if k not in lead]
    df = pd.DataFrame.from_records(records, columns=order)
    df.attrs["context"] = {k: v for k, v in report.context.items() if k != "points"}
    return df
