"""DistilledSet: the small data set plus its provenance, saved atomically as a directory."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import socket
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from .dataset import Dataset

DATA_FILE = "data.npz"
META_FILE = "meta.json"
IMAGES_FILE = "images.png"
MARKER_FILE = ".datadistill"
SET_FILES = (DATA_FILE, META_FILE, IMAGES_FILE)
KIND_NAMES = {"distilled-set": "a datadistill set", "evaluation-run": "an evaluation run directory",
              "demo": "a datadistill demo folder", "active-run": "an active-learning run folder"}
# a temporary directory of save(): ".NAME.tmp-PID-" + tempfile's random suffix; the previous set while it is
# being replaced: ".NAME.old-PID"
_TEMP_DIR = re.compile(r"^\..+\.tmp-(\d+)-[a-z0-9_]+$")
_OLD_DIR = re.compile(r"^\.(.+)\.old-(\d+)$")


def library_version() -> str:
    from .. import __version__

    return __version__


def atomic_write(path: str | os.PathLike, data: bytes | str) -> Path:
    """Write ``data`` to a temporary sibling of ``path`` and rename it into place (readers never see half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def jsonable(obj):
    """``obj`` with numpy arrays/scalars and paths turned into plain JSON values (non-finite floats -> None)."""
    if isinstance(obj, dict):
        return {str(k): jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        return jsonable(obj.item())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


# --- ownership: what this tool wrote, and may therefore replace ------------------------------------
def write_marker(directory: str | os.PathLike, kind: str, files: Iterable[str] = ()) -> Path:
    """Mark ``directory`` as written by datadistill (``kind``: distilled-set, evaluation-run or demo).

    ``files``: names written there beyond the kind's usual ones (accepted when it is replaced).
    """
    path = Path(directory) / MARKER_FILE
    marker = {"kind": kind, "version": library_version(), "pid": os.getpid(), "host": socket.gethostname()}
    if files:
        marker["files"] = sorted(files)
    return atomic_write(path, json.dumps(marker) + "\n")


def read_marker(directory: str | os.PathLike) -> dict | None:
    """The marker of a directory datadistill wrote, or None (absent, unreadable or not a JSON object)."""
    try:
        marker = json.loads((Path(directory) / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) and isinstance(marker.get("kind"), str) else None


def _own_temporary(name: str, files: Iterable[str]) -> bool:
    """``.NAME.xxxx``: a temporary that atomic writes of one of ``files`` leave when killed."""
    return name.startswith(".") and any(name.startswith(f".{f}.") for f in files)


def foreign_entries(directory: Path, files: Iterable[str],
                    folders: dict[str, Callable[[Path], list[str]]] | None = None) -> list[str]:
    """Entries of ``directory`` that are neither one of ``files`` (or its temporary) nor an accepted sub-folder.

    ``folders`` maps a sub-folder name to a function returning the foreign entries inside it.
    """
    files = set(files) | {MARKER_FILE}
    folders = folders or {}
    out = []
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and not entry.is_symlink():
            if entry.name in folders:
                out += [f"{entry.name}/{n}" for n in folders[entry.name](entry)]
            else:
                out.append(f"{entry.name}/")
        elif not (entry.name in files or _own_temporary(entry.name, files)):
            out.append(entry.name)
    return out


def check_replaceable(path: str | os.PathLike, kind: str, *, files: Iterable[str],
                      folders: dict[str, Callable[[Path], list[str]]] | None = None,
                      legacy: Callable[[Path], bool] | None = None) -> None:
    """Raise ArtifactError unless ``path`` may be replaced: empty, or written by datadistill as ``kind``.

    Written by datadistill means: it carries the marker of ``kind`` (or, for directories from before
    markers, ``legacy(path)`` holds) and everything in it is a file or folder datadistill writes there.
    """
    path = Path(path)
    what = KIND_NAMES.get(kind, kind)
    if path.is_symlink() or not path.is_dir():
        raise ArtifactError(f"{path}: exists and is not a directory; refusing to replace it, choose another --out")
    if not any(path.iterdir()):
        return
    marker = read_marker(path)
    files = list(files)
    if marker is not None and marker["kind"] == kind and isinstance(marker.get("files"), list):
        files += [f for f in marker["files"] if isinstance(f, str) and "/" not in f]
    foreign = foreign_entries(path, files, folders)
    listing = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
    if marker is None:
        if foreign or legacy is None or not legacy(path):
            held = listing or ", ".join(sorted(e.name for e in path.iterdir())[:5])
            raise ArtifactError(f"{path}: not {what} (no {MARKER_FILE} marker from datadistill; it holds "
                                f"{held}); refusing to replace it, choose another --out")
        return
    if marker["kind"] != kind:
        raise ArtifactError(f"{path}: is {KIND_NAMES.get(marker['kind'], marker['kind'])}, not {what}; refusing to "
                            "replace it, choose another --out")
    if foreign:
        raise ArtifactError(f"{path}: holds entries datadistill did not write ({listing}); refusing to replace it: "
                            "move them elsewhere or choose another --out")


def _is_legacy_set(path: Path) -> bool:
    names = {e.name for e in path.iterdir()}
    return {DATA_FILE, META_FILE} <= names <= set(SET_FILES)


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError, OSError):
        return True
    return True


def remove_stale_temporaries(parent: str | os.PathLike) -> list[Path]:
    """Remove temporary set directories in ``parent`` left by a killed save() on this host; returns them.

    Only directories named like save()'s temporaries whose creating process is gone, and that hold
    our marker (or nothing at all), are removed.
    """
    removed = []
    try:
        entries = list(Path(parent).iterdir())
    except OSError:
        return removed
    host = socket.gethostname()
    for entry in entries:
        temp, old = _TEMP_DIR.match(entry.name), _OLD_DIR.match(entry.name)
        if temp is None and old is None or entry.is_symlink() or not entry.is_dir():
            continue
        pid = int(temp.group(1) if temp else old.group(2))
        if _pid_alive(pid):
            continue
        if old is not None and not (entry.parent / old.group(1)).is_dir():
            continue  # killed between the two renames: this is the only copy of the previous set
        marker = read_marker(entry)
        ours = marker is not None and marker["kind"] == "distilled-set" and marker.get("host") == host
        if (temp is not None and ours and marker.get("pid") == pid) or (old is not None and ours) or (
                temp is not None and not any(entry.iterdir())):
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
    return removed


@dataclass(eq=False)
class DistilledSet:
    """A distilled or selected training set in the source's own space, with provenance.

    ``X``/``y``: the samples and int labels; ``indices``: rows of the source's training split they
    came from (selection only); ``weights``: how many originals each sample stands for (if known);
    ``soft_labels``: optional (n, K) label distributions learned by a distiller;
    ``source_rows``: the source's row id of every row of that training split (see :meth:`record_source`),
    so that ``source_rows[indices]`` names rows of the user's file;
    ``meta``: method, parameters, seed, source fingerprint, timings, library version, under
    ``"provenance"`` the source path and the train/test split, and under ``"training"`` whatever
    evaluation needs to reproduce the distiller's own result.
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None
    soft_labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)
    source_rows: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.y)

    @property
    def method(self) -> str:
        return str(self.meta.get("method", "unknown"))

    @property
    def source_fingerprint(self) -> str | None:
        return self.meta.get("source_fingerprint")

    def to_dataset(self, source: Dataset | None = None) -> Dataset:
        """The samples as a Dataset (keeping ``source``'s test split when given)."""
        return Dataset(X=self.X, y=np.asarray(self.y, dtype=np.int64), classes=tuple(self.classes),
                       test=source.test if source is not None else None, name=f"{self.method}-distilled",
                       info={"distilled": True})

    def to_torch(self, *, soft_labels: bool | None = None, weights: bool | None = None, dtype=None):
        """The set as a torch TensorDataset: (X, y[, soft labels][, weights]); see datadistill.interop.to_torch."""
        from ..interop import to_torch

        return to_torch(self, soft_labels=soft_labels, weights=weights, dtype=dtype)

    def to_pandas(self, *, feature_names=None):
        """The set as a pandas DataFrame (features, label, source_row, weight, soft_<class>)."""
        from ..interop import to_pandas

        return to_pandas(self, feature_names=feature_names)

    def record_source(self, dataset: Dataset, *, validation: dict | None = None) -> DistilledSet:
        """Record where the set came from: ``dataset``'s source path, format and split in ``meta["provenance"]``.

        For a selection (``indices`` set) the source row id of every training row is kept too (saved in
        ``data.npz`` as ``source_rows``), so :meth:`source_row_ids` maps the set back to the user's file.

        Args:
            dataset: the training data the set was made from (the one given to ``fit``).
            validation: how rows were held out of the pool for validation, if any (e.g. seed and fraction).
        """
        if len(dataset) != self.meta.get("source_samples", len(dataset)):
            raise ArtifactError(f"record_source: {dataset.name} has {len(dataset)} training rows, but the set was "
                                f"made from {self.meta['source_samples']}")
        provenance = dataset.provenance()
        if validation is not None:
            provenance["validation"] = dict(validation)
        rows = dataset.source_rows
        if self.indices is not None and rows is not None:
            provenance["row_ids"] = f"{DATA_FILE}:source_rows"
            self.source_rows = np.asarray(rows, dtype=np.int64)
        elif self.indices is not None:
            provenance["row_ids"] = "indices"  # the training rows are the source's rows, in order
        self.meta["provenance"] = provenance
        return self

    def source_row_ids(self) -> np.ndarray | None:
        """The source's row id of each sample (a selection with recorded provenance), else None.

        Row ids count from 0: for CSV/Parquet the first data row, for a .npz the row of ``X`` or
        ``x_train``, for an image folder the image's position in the sorted listing (class folders, then files).
        """
        if self.indices is None:
            return None
        if self.source_rows is not None:
            return np.asarray(self.source_rows)[self.indices]
        provenance = self.meta.get("provenance")
        if isinstance(provenance, dict) and provenance.get("row_ids") == "indices":
            return np.asarray(self.indices)
        return None

    def class_histogram(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.y, dtype=np.int64), minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    # --- persistence ---------------------------------------------------------------------------
    @staticmethod
    def check_target(path: str | os.PathLike, *, overwrite: bool = False) -> None:
        """Raise ArtifactError where :meth:`save` to ``path`` would be refused (call it before long work)."""
        path = Path(path)
        if not (path.exists() or path.is_symlink()):
            return
        if not overwrite:
            raise ArtifactError(f"{path}: already exists; choose another --out or pass --overwrite")
        check_replaceable(path, "distilled-set", files=SET_FILES, legacy=_is_legacy_set)

    def save(self, path: str | os.PathLike, *, overwrite: bool = False,
             extra: Callable[[Path], object] | None = None) -> Path:
        """Write ``data.npz`` + ``meta.json`` into a temporary sibling directory, then rename into place.

        Args:
            path: the set's directory.
            overwrite: replace an existing set written by datadistill (any other directory is refused).
            extra: called with the temporary directory to write more files there (e.g. ``images.png``), so
                that they are part of the same atomic step.
        """
        path = Path(path)
        self.check_target(path, overwrite=overwrite)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            remove_stale_temporaries(path.parent)
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-{os.getpid()}-", dir=path.parent))
        except OSError as exc:
            raise ArtifactError(f"{path}: cannot write there ({exc.strerror or exc})") from None
        try:
            write_marker(tmp, "distilled-set")
            arrays = {"X": self.X, "y": np.asarray(self.y, dtype=np.int64),
                      "class_names": np.array(self.classes, dtype=str)}
            if self.indices is not None:
                arrays["indices"] = np.asarray(self.indices, dtype=np.int64)
            if self.weights is not None:
                arrays["weights"] = np.asarray(self.weights, dtype=np.float64)
            if self.soft_labels is not None:
                arrays["soft_labels"] = np.asarray(self.soft_labels, dtype=np.float32)
            if self.source_rows is not None:
                rows = np.asarray(self.source_rows, dtype=np.int64)
                arrays["source_rows"] = rows.astype(np.int32) if rows.max(initial=0) < 2**31 else rows
            np.savez_compressed(tmp / DATA_FILE, **arrays)
            meta = dict(self.meta)
            meta.setdefault("library_version", library_version())
            meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            meta["n_samples"] = len(self)
            meta["classes"] = list(self.classes)
            (tmp / META_FILE).write_text(json.dumps(jsonable(meta), indent=2, sort_keys=True))
            if extra is not None:
                extra(tmp)
                written = {e.name for e in tmp.iterdir()} - set(SET_FILES) - {MARKER_FILE}
                if written:
                    write_marker(tmp, "distilled-set", files=written)
            if path.exists():
                backup = path.with_name(f".{path.name}.old-{os.getpid()}")
                path.rename(backup)
                try:
                    tmp.rename(path)
                except BaseException:
                    backup.rename(path)
                    raise
                shutil.rmtree(backup, ignore_errors=True)
            else:
                tmp.rename(path)
        except OSError as exc:
            shutil.rmtree(tmp, ignore_errors=True)
            raise ArtifactError(f"{path}: cannot write the set ({exc.strerror or exc}); nothing was replaced") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def open(cls, path: str | os.PathLike) -> DistilledSet:
        """Read a directory written by :meth:`save`, refusing (ArtifactError) contents that are not a usable set."""
        path = Path(path)
        meta_file, data_file = path / META_FILE, path / DATA_FILE
        if not meta_file.is_file() or not data_file.is_file():
            raise ArtifactError(f"{path}: not a datadistill set (expected {DATA_FILE} and {META_FILE} inside)")
        try:
            meta = json.loads(meta_file.read_text())
        except (ValueError, OSError) as exc:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            raise ArtifactError(f"{meta_file}: corrupt or unreadable JSON ({exc})") from None
        if not isinstance(meta, dict):
            raise ArtifactError(f"{meta_file}: not a JSON object (found a {type(meta).__name__}); the set is damaged")
        try:
            archive = np.load(data_file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):
                raise ValueError("a single array, not a .npz archive")
            with archive:
                arrays = {k: archive[k] for k in archive.files}
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, OSError, KeyError) as exc:
            # numpy's own text for pickled content suggests loading it unsafely: never pass that on
            detail = "it holds pickled objects, which a saved set never does" if "pickle" in str(exc) else (
                f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else 'no detail'}")
            raise ArtifactError(f"{data_file}: damaged or truncated archive ({detail}); save the set again") from None
        _check_arrays(arrays, data_file, meta)
        return cls(
            X=arrays["X"], y=arrays["y"].astype(np.int64), classes=tuple(str(c) for c in arrays["class_names"]),
            indices=arrays.get("indices"), weights=arrays.get("weights"),
            soft_labels=arrays.get("soft_labels"), meta=meta,
            source_rows=arrays["source_rows"].astype(np.int64) if "source_rows" in arrays else None,
        )


def _check_arrays(arrays: dict[str, np.ndarray], where: Path, meta: dict) -> None:
    """Raise ArtifactError naming ``where`` unless the arrays of a saved set are consistent and finite."""
    def bad(problem: str) -> ArtifactError:
        return ArtifactError(f"{where}: {problem}; the set is damaged or was not written by datadistill")

    missing = [k for k in ("X", "y", "class_names") if k not in arrays]
    if missing:
        raise bad(f"no array {', '.join(missing)} (found {', '.join(sorted(arrays)) or 'none'})")
    X, y, names = arrays["X"], arrays["y"], arrays["class_names"]
    if X.dtype.kind not in "biuf" or X.ndim < 2:
        raise bad(f"X must be a numeric array of samples, got dtype {X.dtype} and shape {X.shape}")
    if y.ndim != 1 or y.dtype.kind not in "iu":
        raise bad(f"y must be a 1-D array of integer labels, got dtype {y.dtype} and shape {y.shape}")
    n = len(y)
    if n == 0:
        raise bad("it holds no samples")
    if len(X) != n:
        raise bad(f"{len(X)} samples in X but {n} labels in y")
    if X.dtype.kind == "f" and not np.isfinite(X).all():
        row = int(np.flatnonzero(~np.isfinite(X.reshape(n, -1)).all(axis=1))[0])
        raise bad(f"X row {row} contains NaN or infinite values")
    if names.ndim != 1 or names.dtype.kind not in "US" or len(names) == 0:
        raise bad(f"class_names must be a non-empty 1-D array of names, got dtype {names.dtype} and shape {names.shape}")
    k = len(names)
    out = np.flatnonzero((y < 0) | (y >= k))
    if len(out):
        raise bad(f"label {int(y[out[0]])} in row {int(out[0])} is outside 0..{k - 1} ({k} class names)")
    classes = meta.get("classes")
    if isinstance(classes, list) and len(classes) != k:
        raise bad(f"{k} class names but meta.json lists {len(classes)} classes")
    if "indices" in arrays:
        idx = arrays["indices"]
        if idx.ndim != 1 or idx.dtype.kind not in "iu" or len(idx) != n:
            raise bad(f"indices must be {n} integers (one per sample), got dtype {idx.dtype} and shape {idx.shape}")
        limit = meta.get("source_samples")
        if idx.min() < 0 or (isinstance(limit, int) and idx.max() >= limit):
            where_bad = int(np.flatnonzero((idx < 0) | (idx >= (limit if isinstance(limit, int) else np.inf)))[0])
            bound = f"0..{limit - 1}" if isinstance(limit, int) else "non-negative"
            raise bad(f"index {int(idx[where_bad])} in row {where_bad} is outside the source's rows ({bound})")
    if "source_rows" in arrays:
        _check_source_rows(arrays["source_rows"], arrays.get("indices"), meta, bad)
    if "weights" in arrays:
        w = arrays["weights"]
        if w.ndim != 1 or w.dtype.kind not in "iuf" or len(w) != n:
            raise bad(f"weights must be {n} numbers (one per sample), got dtype {w.dtype} and shape {w.shape}")
        wrong = np.flatnonzero(~np.isfinite(w) | (w < 0))
        if len(wrong) or not w.sum() > 0:
            row = int(wrong[0]) if len(wrong) else 0
            raise bad(f"weight {float(w[row])!r} in row {row}: weights must be finite, non-negative and not all 0")
    if "soft_labels" in arrays:
        soft = arrays["soft_labels"]
        if soft.shape != (n, k) or soft.dtype.kind != "f":
            raise bad(f"soft_labels must be {n} x {k} floats, got dtype {soft.dtype} and shape {soft.shape}")
        wrong = np.flatnonzero(~(np.isfinite(soft) & (soft >= 0)).all(axis=1))
        if len(wrong):
            raise bad(f"soft_labels row {int(wrong[0])} holds a negative, NaN or infinite value")


def _check_source_rows(rows: np.ndarray, indices: np.ndarray | None, meta: dict, bad) -> None:
    """``source_rows``: one distinct non-negative integer row id per row of the source's training split."""
    limit = meta.get("source_samples")
    if rows.ndim != 1 or rows.dtype.kind not in "iu" or (isinstance(limit, int) and len(rows) != limit):
        expected = f"{limit} integers (one per training row)" if isinstance(limit, int) else "a 1-D integer array"
        raise bad(f"source_rows must be {expected}, got dtype {rows.dtype} and shape {rows.shape}")
    if len(rows) and rows.min() < 0:
        row = int(np.flatnonzero(rows < 0)[0])
        raise bad(f"source_rows holds the negative row id {int(rows[row])} at position {row}")
    if len(np.unique(rows)) != len(rows):
        raise bad("source_rows names a source row twice")
    if indices is not None and len(indices) and indices.max() >= len(rows):
        raise bad(f"index {int(indices.max())} is beyond the {len(rows)} rows of source_rows")
