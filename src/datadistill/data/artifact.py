"""DistilledSet: the small data set plus its provenance, saved atomically as a directory."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import ArtifactError
from .dataset import Dataset

DATA_FILE = "data.npz"
META_FILE = "meta.json"


def library_version() -> str:
    from .. import __version__

    return __version__


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


@dataclass(eq=False)
class DistilledSet:
    """A distilled or selected training set in the source's own space, with provenance.

    ``X``/``y``: the samples and int labels; ``indices``: rows of the source's training split they
    came from (selection only); ``weights``: how many originals each sample stands for (if known);
    ``soft_labels``: optional (n, K) label distributions learned by a distiller;
    ``meta``: method, parameters, seed, source fingerprint, timings, library version, and under
    ``"training"`` whatever evaluation needs to reproduce the distiller's own result.
    """

    X: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    indices: np.ndarray | None = None
    weights: np.ndarray | None = None
    soft_labels: np.ndarray | None = None
    meta: dict = field(default_factory=dict)

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

    def class_histogram(self) -> dict[str, int]:
        counts = np.bincount(np.asarray(self.y, dtype=np.int64), minlength=len(self.classes))
        return {name: int(n) for name, n in zip(self.classes, counts)}

    # --- persistence ---------------------------------------------------------------------------
    def save(self, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
        """Write ``data.npz`` + ``meta.json`` into a temporary sibling directory, then rename into place."""
        path = Path(path)
        if path.exists() and not overwrite:
            raise ArtifactError(f"{path}: already exists; choose another --out or pass --overwrite")
        if path.exists() and not (path / META_FILE).exists() and any(path.iterdir()):
            raise ArtifactError(f"{path}: exists and is not a datadistill set; refusing to replace it")
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
        try:
            arrays = {"X": self.X, "y": np.asarray(self.y, dtype=np.int64),
                      "class_names": np.array(self.classes, dtype=str)}
            if self.indices is not None:
                arrays["indices"] = np.asarray(self.indices, dtype=np.int64)
            if self.weights is not None:
                arrays["weights"] = np.asarray(self.weights, dtype=np.float64)
            if self.soft_labels is not None:
                arrays["soft_labels"] = np.asarray(self.soft_labels, dtype=np.float32)
            np.savez_compressed(tmp / DATA_FILE, **arrays)
            meta = dict(self.meta)
            meta.setdefault("library_version", library_version())
            meta.setdefault("created", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
            meta["n_samples"] = len(self)
            meta["classes"] = list(self.classes)
            (tmp / META_FILE).write_text(json.dumps(jsonable(meta), indent=2, sort_keys=True))
            if path.exists():
                backup = path.with_name(f".{path.name}.old-{os.getpid()}")
                path.rename(backup)
                tmp.rename(path)
                shutil.rmtree(backup, ignore_errors=True)
            else:
                tmp.rename(path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return path

    @classmethod
    def open(cls, path: str | os.PathLike) -> DistilledSet:
        """Read a directory written by :meth:`save`."""
        path = Path(path)
        if not (path / META_FILE).exists() or not (path / DATA_FILE).exists():
            raise ArtifactError(f"{path}: not a datadistill set (expected {DATA_FILE} and {META_FILE} inside)")
        try:
            meta = json.loads((path / META_FILE).read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path / META_FILE}: corrupt JSON ({exc})") from None
        with np.load(path / DATA_FILE, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        return cls(
            X=arrays["X"], y=arrays["y"], classes=tuple(str(c) for c in arrays["class_names"]),
            indices=arrays.get("indices"), weights=arrays.get("weights"),
            soft_labels=arrays.get("soft_labels"), meta=meta,
        )
