"""The validated in-memory Dataset every other part of datadistill consumes."""

from __future__ import annotations

import hashlib
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from ..errors import DataError

MIN_IMAGE_SIDE = 4
ACCEPTED_SHAPES = ("(N, d) features, (N, H, W) grayscale images, or (N, H, W, C) / (N, C, H, W) images with "
                   f"C = 1, 3 or 4 channels and H, W >= {MIN_IMAGE_SIDE}")


def check_sample_shape(shape: tuple[int, ...], origin: str) -> None:
    """Refuse per-sample shapes that are neither feature vectors nor images in a layout the models read."""
    shape = tuple(int(s) for s in shape)
    if any(s == 0 for s in shape):
        raise DataError(f"{origin}: samples of shape {shape} hold no values; accepted: {ACCEPTED_SHAPES}")
    if len(shape) == 1:
        return
    if len(shape) == 2:
        side = shape
    elif len(shape) == 3 and shape[-1] in (1, 3, 4) and shape[0] not in (1, 3, 4):
        side = shape[:2]
    elif len(shape) == 3 and shape[0] in (1, 3, 4):
        side = shape[1:]
    else:
        side = None
    if side is None or min(side) < MIN_IMAGE_SIDE:
        raise DataError(f"{origin}: samples of shape {shape} are not images datadistill can read; accepted: "
                        f"{ACCEPTED_SHAPES}. For feature vectors, flatten them: X.reshape(len(X), -1)")


def _first_bad_row(X: np.ndarray) -> int | None:
    flat = X.reshape(len(X), -1)
    bad = ~np.isfinite(flat).all(axis=1)
    hits = np.flatnonzero(bad)
    return int(hits[0]) if len(hits) else None


def encode_labels(
    y: Sequence | np.ndarray, classes: Sequence[str] | None = None, origin: str = "labels"
) -> tuple[np.ndarray, tuple[str, ...]]:
    """Map raw labels (ints 0..K-1, other ints, or strings) to int64 0..K-1 and class names.

    Integer labels already in 0..K-1 keep their ids; other label sets are sorted and renumbered.
    """
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{origin}: labels must be one-dimensional, got shape {y.shape}")
    if len(y) == 0:
        raise DataError(f"{origin}: no samples")
    if y.dtype.kind == "f":
        if not np.isfinite(y).all():
            row = int(np.flatnonzero(~np.isfinite(y))[0])
            raise DataError(f"{origin}: label in row {row} is NaN or infinite; remove or fill that row")
        if not np.all(np.mod(y, 1) == 0):
            row = int(np.flatnonzero(np.mod(y, 1) != 0)[0])
            raise DataError(
                f"{origin}: label in row {row} is {y[row].item()!r}, not an integer class; "
                "datadistill needs class labels (classification), not regression targets"
            )
        y = y.astype(np.int64)
    if y.dtype.kind in "iu":
        y = y.astype(np.int64)
        values = np.unique(y)
        k = int(values.max()) + 1 if values.min() >= 0 else 0
        if classes is not None and values.min() >= 0 and values.max() < len(classes):
            return y, tuple(str(c) for c in classes)
        if values.min() >= 0 and len(values) == k:
            names = tuple(str(c) for c in classes) if classes is not None and len(classes) == k else tuple(
                str(v) for v in range(k)
            )
            return y, names
        codes = np.searchsorted(values, y)
        return codes.astype(np.int64), tuple(str(v) for v in values)
    values, codes = np.unique(y.astype(str), return_inverse=True)
    return codes.astype(np.int64), tuple(str(v) for v in values)


def _validated_features(X, origin: str) -> np.ndarray:
    """``X`` as float32 (features, images) or uint8 (images): DataError for non-numeric, empty, NaN, inf,
    float32 overflow or a shape the models cannot read (``origin`` names the source in the message)."""
    X = np.asarray(X)
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise DataError(f"{origin}: features must be numeric, got dtype {X.dtype}")
    if X.ndim < 2:
        raise DataError(f"{origin}: features must be 2-D (samples x features) or images, got shape {X.shape}")
    if len(X) == 0:
        raise DataError(f"{origin}: the data set is empty (0 samples)")
    check_sample_shape(X.shape[1:], origin)
    if X.dtype.kind == "b":
        X = X.astype(np.float32)
    if X.dtype.kind == "f":
        row = _first_bad_row(X)
        if row is not None:
            raise DataError(f"{origin}: row {row} contains NaN or infinite values; remove or impute it before distilling")
        with np.errstate(over="ignore"):
            X = X.astype(np.float32, copy=False)
        row = _first_bad_row(X)
        if row is not None:
            raise DataError(f"{origin}: row {row} has values beyond float32's range (about 3.4e38); "
                            "rescale the features")
    elif X.dtype != np.uint8:
        if X.min() >= 0 and X.max() <= 255 and X.ndim >= 3:
            X = X.astype(np.uint8)
        else:
            X = X.astype(np.float32)
    return X


def _encode_test_labels(yt: np.ndarray, y_train: np.ndarray, y_codes: np.ndarray, names: Sequence[str],
                        origin: str) -> np.ndarray:
    """Test labels in the training set's codes (renumbered the way the training labels were)."""
    if yt.dtype.kind in "iuf" and y_train.dtype.kind in "iuf":
        yt_codes = yt.astype(np.int64)
        if not np.array_equal(y_codes, y_train.astype(np.int64)):
            # training labels were renumbered; renumber test labels the same way
            values = np.unique(y_train.astype(np.int64))
            unknown = ~np.isin(yt_codes, values)
            if unknown.any():
                raise DataError(f"{origin}: test label {yt[unknown][0].item()!r} never occurs in training")
            yt_codes = np.searchsorted(values, yt_codes)
    else:
        lookup = {n: i for i, n in enumerate(names)}
        try:
            yt_codes = np.array([lookup[str(v)] for v in yt], dtype=np.int64)
        except KeyError as exc:
            raise DataError(f"{origin}: test label {exc.args[0]!r} never occurs in training") from None
    if len(yt_codes) and (yt_codes.min() < 0 or yt_codes.max() >= len(names)):
        raise DataError(f"{origin}: test labels outside the training classes")
    return yt_codes


@dataclass(eq=False)
class Dataset:
    """Labelled samples: ``X`` (N x ...), ``y`` (int64 0..K-1), class names, optional test split.

    Build one with :meth:`Dataset.create` (validates) or a loader in :mod:`datadistill.data.sources`.
    ``X`` is float32 for tabular data and float32 or uint8 for images (N,H,W), (N,H,W,C) or (N,C,H,W)
    as the source had them; no scaling is applied here. ``source_rows``: the source's row id of each
    training sample where they differ from 0..N-1 (after a split datadistill made), else None.
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    test: Dataset | None = None
    name: str = "dataset"
    info: dict = field(default_factory=dict)
    source_rows: np.ndarray | None = None

    @classmethod
    def create(
        cls,
        X,
        y,
        classes: Sequence[str] | None = None,
        *,
        test: tuple | Dataset | None = None,
        name: str = "dataset",
        origin: str | None = None,
        info: dict | None = None,
        min_classes: int = 2,
    ) -> Dataset:
        """Validate arrays and build a Dataset; ``test`` may be an ``(X, y)`` pair or a Dataset."""
        origin = origin or name
        X = _validated_features(X, origin)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1:
            raise DataError(f"{origin}: labels must be one-dimensional, got shape {y_arr.shape}")
        if len(y_arr) != len(X):
            raise DataError(f"{origin}: {len(X)} feature rows but {len(y_arr)} labels")
        if len(X) == 0:
            raise DataError(f"{origin}: the data set is empty")
        y_codes, names = encode_labels(y_arr, classes, origin=origin)
        present = np.unique(y_codes)
        if len(present) < min_classes:
            raise DataError(
                f"{origin}: only {len(present)} class present ({', '.join(names[c] for c in present)}); "
                "distillation needs at least two labelled classes"
            )
        test_ds = test
        if test is not None and not isinstance(test, Dataset):
            Xt, yt = test
            Xt = np.asarray(Xt)
            if Xt.shape[1:] != X.shape[1:]:
                raise DataError(f"{origin}: test samples have shape {Xt.shape[1:]} but training samples {X.shape[1:]}")
            yt_codes = _encode_test_labels(np.asarray(yt), y_arr, y_codes, names, origin)
            test_ds = cls.create(Xt, yt_codes, names, name=f"{name}[test]", origin=f"{origin} (test split)",
                                 min_classes=1)
        return cls(X=X, y=y_codes, classes=tuple(names), test=test_ds, name=name, info=dict(info or {}))

    # --- shape facts -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.y)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def is_image(self) -> bool:
        return self.X.ndim >= 3

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return tuple(self.X.shape[1:])

    @property
    def n_features(self) -> int:
        return int(np.prod(self.X.shape[1:]))

    def class_counts(self) -> np.ndarray:
        return np.bincount(self.y, minlength=self.n_classes)

    def class_indices(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.y == c)

    @cached_property
    def fingerprint(self) -> str:
        """sha256 over the training and test content (features, labels, class names)."""
        h = hashlib.sha256()
        for part in (self, self.test):
            if part is None:
                h.update(b"no-test")
                continue
            h.update(str((part.X.dtype.str, part.X.shape)).encode())
            h.update(np.ascontiguousarray(part.X).data)
            h.update(np.ascontiguousarray(part.y).data)
        h.update("\x00".join(self.classes).encode())
        return h.hexdigest()

    # --- derived data sets -------------------------------------------------------------------
    def subset(self, indices, *, name: str | None = None) -> Dataset:
        """The training samples at ``indices`` (test split kept); no re-validation needed."""
        idx = np.asarray(indices, dtype=np.int64)
        return Dataset(
            X=self.X[idx], y=self.y[idx], classes=self.classes, test=self.test,
            name=name or f"{self.name}[subset]", info=dict(self.info),
            source_rows=self.row_ids()[idx],
        )

    def row_ids(self) -> np.ndarray:
        """The source's row id of every training sample (0..N-1 when no split or subset moved them)."""
        return np.arange(len(self), dtype=np.int64) if self.source_rows is None else self.source_rows

    def provenance(self) -> dict:
        """Where the training samples came from: source path and format, and the train/test split."""
        info = self.info
        source = str(info.get("source") or self.name)
        on_disk = info.get("format") != "builtin" and "source" in info and os.path.exists(source)
        out = {"name": self.name, "source": os.path.abspath(source) if on_disk else source,
               "format": info.get("format")}
        out.update({k: info[k] for k in ("label", "delimiter") if k in info})
        split = info.get("split")
        if split is not None:
            out["split"] = dict(split)
        else:
            out["split"] = {"kind": "given" if self.test is not None else "none", "n_train": len(self),
                            "n_test": len(self.test) if self.test is not None else 0}
        return out

    def with_test_split(self, test_fraction: float = 0.2, random_state: int = 0) -> Dataset:
        """Return self if a test split exists, else a seeded stratified split (recorded in ``info``)."""
        if self.test is not None:
            return self
        from sklearn.model_selection import train_test_split

        origin = self.info.get("source") or self.name
        counts = self.class_counts()
        single = [self.classes[c] for c in np.flatnonzero(counts == 1)]
        if single:
            raise DataError(f"{origin}: class{'es' if len(single) > 1 else ''} {', '.join(map(repr, single[:5]))} "
                            "with a single sample; a held-out test split needs at least 2 samples per class (one "
                            "to train on, one to test): add samples, drop the class, or give a test split")
        k = int((counts > 0).sum())
        n_test = math.ceil(test_fraction * len(self))
        if min(n_test, len(self) - n_test) < k:
            raise DataError(f"{origin}: {len(self)} samples are too few for a test split over {k} classes at "
                            f"test fraction {test_fraction} ({n_test} test, {len(self) - n_test} training); each "
                            f"side needs at least one sample per class ({k}): add samples or change the fraction")
        stratify = self.y
        idx = np.arange(len(self))
        tr, te = train_test_split(idx, test_size=test_fraction, random_state=random_state, stratify=stratify)
        tr, te = np.sort(tr), np.sort(te)
        untrained = [self.classes[c] for c in np.flatnonzero(counts > 0) if not np.any(self.y[tr] == c)]
        if untrained:
            raise DataError(f"{origin}: test fraction {test_fraction} leaves class{'es' if len(untrained) > 1 else ''} "
                            f"{', '.join(map(repr, untrained[:5]))} without a training sample; use a smaller "
                            "test fraction or add samples")
        info = dict(self.info)
        info["split"] = {
            "kind": "stratified" if stratify is not None else "random",
            "test_fraction": test_fraction,
            "random_state": random_state,
            "n_train": len(tr),
            "n_test": len(te),
        }
        test = Dataset(X=self.X[te], y=self.y[te], classes=self.classes, name=f"{self.name}[test]")
        return Dataset(X=self.X[tr], y=self.y[tr], classes=self.classes, test=test, name=self.name, info=info,
                       source_rows=self.row_ids()[tr])

    def summary(self) -> str:
        kind = ("sequences (T, C)" if self.info.get("layout") == "sequence" and self.X.ndim == 3
                else "images" if self.is_image else "tabular")
        test = f", test {len(self.test)}" if self.test is not None else ""
        return (
            f"{self.name}: {len(self)} training samples{test}, {self.n_classes} classes, "
            f"{kind} {self.sample_shape} {self.X.dtype}"
        )
