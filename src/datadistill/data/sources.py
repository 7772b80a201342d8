"""Sources -> Dataset: .npz/.npy archives, CSV, Parquet, image folders, CIFAR-10 batches, built-ins."""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path

import numpy as np

from ..errors import DataError
from .dataset import Dataset

BUILTINS = {
    "digits": "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)",
    "two-gaussians": "2-D two-class demo: two overlapping Gaussian clouds (2,000 points)",
    "blobs": "2-D four-class Gaussian blobs (2,000 points)",
    "mnist": "MNIST from a local mnist.npz (see DATADISTILL_DATA); 60,000 train / 10,000 test",
    "cifar10": "CIFAR-10 from a local copy of the python batches (cifar-10-batches-py)",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


def data_dirs() -> list[Path]:
    """Folders searched for standard data sets: $DATADISTILL_DATA (os.pathsep-separated), ~/.cache/datadistill."""
    dirs = [Path(p) for p in os.environ.get("DATADISTILL_DATA", "").split(os.pathsep) if p]
    dirs.append(Path.home() / ".cache" / "datadistill")
    return dirs


def load(
    source: str | os.PathLike,
    *,
    label: str | None = None,
    test_fraction: float = 0.2,
    random_state: int = 0,
    ensure_test: bool = True,
) -> Dataset:
    """Load a data set by built-in name or path; make a seeded stratified test split if it has none.

    Args:
        source: a built-in name (``datadistill.data.BUILTINS``), a ``.npz``/``.npy``/``.csv``/``.parquet`` file,
            a folder of images with one sub-folder per class, or a CIFAR-10 python-batch folder.
        label: label column name for CSV/Parquet (default: ``label``, ``target``, ``class`` or ``y``).
        test_fraction: share held out when the source has no test split.
        random_state: seed of that split.
        ensure_test: make the split (default); False keeps the source as it is.
    """
    if not 0 < test_fraction < 1:
        raise DataError(f"test_fraction must be in (0, 1), got {test_fraction}")
    name = str(source)
    if name in BUILTINS and not Path(name).exists():
        ds = _load_builtin(name, random_state)
    else:
        path = Path(source)
        if not path.exists():
            known = ", ".join(BUILTINS)
            raise DataError(f"{path}: no such file or folder (built-in data sets: {known})")
        ds = _load_path(path, label)
    return ds.with_test_split(test_fraction, random_state) if ensure_test else ds


def _load_path(path: Path, label: str | None) -> Dataset:
    if path.is_dir():
        if is_cifar10_folder(path) or is_cifar10_folder(path / "cifar-10-batches-py"):
            return load_cifar10_batches(path)
        if (path / "data_batch_1").exists() and not any(p.is_dir() for p in path.iterdir()):
            raise DataError(f"{path}: looks like a CIFAR-10 python-batch folder but is incomplete; it needs "
                            "data_batch_1..N and test_batch as regular files (batches.meta optional)")
        return load_image_folder(path)
    suffix = path.suffix.lower()
    if suffix == ".npz":
        return load_npz(path)
    if suffix == ".npy":
        raise DataError(f"{path}: a single .npy holds no labels; save features and labels together in a .npz (X, y)")
    if suffix in {".csv", ".tsv", ".txt"}:
        return load_table(path, label)
    if suffix in {".parquet", ".pq"}:
        return load_table(path, label)
    raise DataError(
        f"{path}: unknown format '{suffix}'; use .npz, .csv, .parquet, an image folder or a built-in name"
    )


def load_npz(path: str | os.PathLike) -> Dataset:
    """Arrays ``x_train/y_train[/x_test/y_test]`` or ``X/y``, optional ``class_names``."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"{path}: not a readable .npz archive ({exc})") from None
    classes = [str(c) for c in arrays["class_names"]] if "class_names" in arrays else None
    if "x_train" in arrays and "y_train" in arrays:
        test = (arrays["x_test"], arrays["y_test"]) if "x_test" in arrays and "y_test" in arrays else None
        return Dataset.create(
            arrays["x_train"], arrays["y_train"], classes, test=test, name=path.stem, origin=str(path),
            info={"source": str(path), "format": "npz"},
        )
    if "X" in arrays and "y" in arrays:
        return Dataset.create(
            arrays["X"], arrays["y"], classes, name=path.stem, origin=str(path),
            info={"source": str(path), "format": "npz"},
        )
    raise DataError(
        f"{path}: expected arrays x_train/y_train (and optionally x_test/y_test) or X/y; found {sorted(arrays)}"
    )


def load_table(path: str | os.PathLike, label: str | None = None) -> Dataset:
    """CSV or Parquet: one label column (by name), every other column numeric features."""
    import pyarrow as pa

    path = Path(path)
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot parse ({str(exc).splitlines()[0]})") from None
    columns = table.column_names
    if label is None:
        label = next((c for c in ("label", "target", "class", "y") if c in columns), None)
        if label is None:
            raise DataError(f"{path}: no label column given and none named label/target/class/y; columns: {columns}; "
                            "pass --label NAME")
    if label not in columns:
        raise DataError(f"{path}: label column '{label}' not found; columns: {columns}")
    features = [c for c in columns if c != label]
    if not features:
        raise DataError(f"{path}: no feature columns besides the label '{label}'")
    cols = []
    for c in features:
        col = table.column(c)
        if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type) or pa.types.is_boolean(col.type)):
            example = next((v for v in col.to_pylist() if v is not None), None)
            raise DataError(
                f"{path}: column '{c}' is not numeric (type {col.type}, e.g. {example!r}); "
                "encode it as numbers or drop it"
            )
        arr = col.to_numpy(zero_copy_only=False).astype(np.float64)
        if col.null_count:
            row = int(np.flatnonzero(np.isnan(arr))[0])
            raise DataError(f"{path}: row {row}, column '{c}' is missing or NaN; fill or drop that row")
        cols.append(arr)
    X = np.stack(cols, axis=1).astype(np.float32)
    bad = ~np.isfinite(X)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise DataError(f"{path}: row {row}, column '{features[col]}' is NaN or infinite; fix or drop that row")
    ycol = table.column(label)
    if ycol.null_count:
        values = ycol.to_pylist()
        row = next(i for i, v in enumerate(values) if v is None)
        raise DataError(f"{path}: label column '{label}' is empty in row {row}")
    y = ycol.to_numpy(zero_copy_only=False)
    return Dataset.create(
        X, y, name=path.stem, origin=str(path),
        info={"source": str(path), "format": path.suffix.lower().lstrip("."), "label": label, "features": features},
    )


def load_image_folder(path: str | os.PathLike) -> Dataset:
    """One sub-folder per class of equally sized images (grayscale kept as N x H x W, colour as N x H x W x C)."""
    from PIL import Image

    path = Path(path)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir())
    if not class_dirs:
        raise DataError(f"{path}: no class sub-folders; expected {path}/<class>/<image>.png")
    images, labels = [], []
    shape = None
    for c, d in enumerate(class_dirs):
        files = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I;16") else im.convert("RGB"))
            except OSError as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from None
            if shape is None:
                shape = arr.shape
            elif arr.shape != shape:
                raise DataError(f"{f}: image shape {arr.shape} differs from {shape} of the first image; resize all "
                                "images to one size")
            images.append(arr)
            labels.append(c)
    if not images:
        raise DataError(f"{path}: no images found in its class sub-folders")
    return Dataset.create(
        np.stack(images).astype(np.uint8), np.array(labels), [d.name for d in class_dirs], name=path.name,
        origin=str(path), info={"source": str(path), "format": "image-folder"},
    )


_TRAIN_BATCH = re.compile(r"^data_batch_([1-9][0-9]*)$")


def is_cifar10_folder(path: Path) -> bool:
    """The CIFAR-10 python layout: data_batch_1..N and test_batch as regular files, and no sub-folders."""
    if path.is_symlink() or not path.is_dir():
        return False
    entries = list(path.iterdir())
    if any(e.is_dir() for e in entries):
        return False
    numbers = sorted(int(m.group(1)) for e in entries if (m := _TRAIN_BATCH.match(e.name)))
    regular = all((path / n).is_file() for n in ["test_batch", *(f"data_batch_{i}" for i in numbers)])
    return bool(numbers) and numbers == list(range(1, len(numbers) + 1)) and regular


class _BatchUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10 batches hold: dicts, lists, bytes, numbers and numpy arrays.

    Any other global (the way a pickle runs code) is refused before it is looked up.
    """

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),  # numpy ints in label lists
        ("numpy", "ndarray"), ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refused global {module}.{name}")
        if name in ("_reconstruct", "scalar"):
            from numpy._core import multiarray

            return getattr(multiarray, name)
        return getattr(np, name)


def load_cifar10_batches(path: str | os.PathLike) -> Dataset:
    """CIFAR-10 python batches (``data_batch_1..5``, ``test_batch``, ``batches.meta``); torchvision's root works too."""
    path = Path(path)
    if (path / "cifar-10-batches-py").is_dir():
        path = path / "cifar-10-batches-py"

    def read(name: str) -> dict:
        f = path / name
        if not f.is_file():
            raise DataError(f"{f}: missing CIFAR-10 batch file")
        with open(f, "rb") as fh:
            try:
                batch = _BatchUnpickler(fh, encoding="bytes").load()
            except pickle.UnpicklingError as exc:
                raise DataError(f"{f}: not a CIFAR-10 python batch ({exc}); only dicts of bytes, lists and numpy "
                                "arrays are read from these files") from None
            except Exception as exc:  # noqa: BLE001 - any other unpickling failure means a bad file
                raise DataError(f"{f}: not a CIFAR-10 python batch ({type(exc).__name__}: {exc})") from None
        if not isinstance(batch, dict):
            raise DataError(f"{f}: not a CIFAR-10 python batch (holds a {type(batch).__name__}, not a dict)")
        return batch

    def arrays(name: str) -> tuple[np.ndarray, np.ndarray]:
        batch, f = read(name), path / name
        for key in (b"data", b"labels"):
            if key not in batch:
                found = ", ".join(repr(k) for k in list(batch)[:8])
                raise DataError(f"{f}: key {key!r} missing (found {found or 'nothing'})")
        data = batch[b"data"]
        if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
            shape = getattr(data, "shape", None)
            raise DataError(f"{f}: key b'data' must be a uint8 array of shape (n, 3072), got "
                            f"{type(data).__name__} {getattr(data, 'dtype', '')} {shape}")
        labels = batch[b"labels"]
        if not isinstance(labels, (list, np.ndarray)) or not all(
                isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in labels):
            raise DataError(f"{f}: key b'labels' must be a list of integer class ids")
        labels = np.asarray(labels, dtype=np.int64).reshape(-1)
        if len(labels) != len(data):
            raise DataError(f"{f}: key b'labels' has {len(labels)} entries but b'data' {len(data)} images")
        if len(labels) and labels.min() < 0:
            raise DataError(f"{f}: key b'labels' holds the negative class id {int(labels.min())}")
        return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels

    train_files = sorted((p.name for p in path.iterdir() if _TRAIN_BATCH.match(p.name)),
                         key=lambda n: int(n.rsplit("_", 1)[1]))
    if not train_files:
        raise DataError(f"{path / 'data_batch_1'}: missing CIFAR-10 batch file")
    parts = [arrays(n) for n in train_files]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    Xt, yt = arrays("test_batch")
    classes = None
    if (path / "batches.meta").exists():
        meta = read("batches.meta")
        names = meta.get(b"label_names", [])
        if not isinstance(names, list) or not all(isinstance(n, (bytes, str)) for n in names):
            raise DataError(f"{path / 'batches.meta'}: key b'label_names' must be a list of names")
        classes = [n.decode(errors="replace") if isinstance(n, bytes) else n for n in names] or None
    return Dataset.create(X, y, classes, test=(Xt, yt), name="cifar10", origin=str(path),
                          info={"source": str(path), "format": "cifar10-python"})


def _find_standard(filename: str, what: str) -> Path:
    for d in data_dirs():
        if (d / filename).exists():
            return d / filename
    searched = ", ".join(str(d) for d in data_dirs())
    raise DataError(
        f"{what}: {filename} not found in {searched}; put your copy there or set DATADISTILL_DATA to its folder"
    )


def _load_builtin(name: str, random_state: int) -> Dataset:
    if name == "digits":
        from sklearn.datasets import load_digits

        d = load_digits()
        images = d.images.astype(np.float32)  # 8x8, values 0..16
        return Dataset.create(images, d.target, [str(i) for i in range(10)], name="digits",
                              info={"source": "sklearn.datasets.load_digits", "format": "builtin"})
    if name == "two-gaussians":
        X, y = two_gaussians(n=2000, random_state=random_state)
        return Dataset.create(X, y, ["class 0", "class 1"], name="two-gaussians",
                              info={"source": "builtin two-gaussians", "format": "builtin"})
    if name == "blobs":
        from sklearn.datasets import make_blobs

        X, y = make_blobs(n_samples=2000, centers=4, cluster_std=1.5, random_state=random_state)
        return Dataset.create(X.astype(np.float32), y, name="blobs",
                              info={"source": "sklearn.datasets.make_blobs", "format": "builtin"})
    if name == "mnist":
        return load_npz(_find_standard("mnist.npz", "mnist"))
    if name == "cifar10":
        for d in data_dirs():
            for cand in (d / "cifar-10-batches-py", d / "cifar10"):
                if cand.is_dir():
                    return load_cifar10_batches(cand)
        _find_standard("cifar-10-batches-py", "cifar10")
    raise DataError(f"unknown built-in data set '{name}'")


def two_gaussians(n: int = 2000, separation: float = 2.5, random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two isotropic 2-D Gaussian classes whose means are ``separation`` apart (they overlap near the middle)."""
    rng = np.random.default_rng(random_state)
    y = np.arange(n) % 2
    means = np.array([[-separation / 2, 0.0], [separation / 2, 0.0]])
    X = means[y] + rng.normal(size=(n, 2))
    perm = rng.permutation(n)
    return X[perm].astype(np.float32), y[perm].astype(np.int64)
