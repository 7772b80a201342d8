"""Sources -> Dataset: .npz/.npy archives, CSV, Parquet, image folders, CIFAR-10 batches, built-ins."""

from __future__ import annotations

import csv
import os
import pickle
import re
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np

from ..errors import ConfigError, DatadistillWarning, DataError
from .dataset import Dataset

BUILTINS = {
    "digits": "scikit-learn's bundled 8x8 handwritten digits (1,797 images, 10 classes)",
    "two-gaussians": "2-D two-class demo: two overlapping Gaussian clouds (2,000 points)",
    "blobs": "2-D four-class Gaussian blobs (2,000 points)",
    "mnist": "MNIST from a local mnist.npz (see DATADISTILL_DATA); 60,000 train / 10,000 test",
    "cifar10": "CIFAR-10 from a local copy of the python batches (cifar-10-batches-py)",
}
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}
MAX_IMAGE_PIXELS = 4096 * 4096  # per training image; PIL's own limit (about 89 million) is far above any data set's


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
    delimiter: str | None = None,
) -> Dataset:
    """Load a data set by built-in name or path; make a seeded stratified test split if it has none.

    Args:
        source: a built-in name (``datadistill.data.BUILTINS``), a ``.npz``/``.npy``/``.csv``/``.parquet`` file,
            a folder of images with one sub-folder per class, or a CIFAR-10 python-batch folder.
        label: label column name for CSV/Parquet (default: ``label``, ``target``, ``class`` or ``y``).
        test_fraction: share held out when the source has no test split.
        random_state: seed of that split.
        ensure_test: make the split (default); False keeps the source as it is.
        delimiter: CSV field separator (default: detected among ``,`` ``;`` tab ``|``, with a warning when
            it is not the usual one for the file's suffix).
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
        ds = _load_path(path, label, delimiter)
    return ds.with_test_split(test_fraction, random_state) if ensure_test else ds


def _load_path(path: Path, label: str | None, delimiter: str | None = None) -> Dataset:
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
        raise DataError(f"{path}: a single .npy holds no labels; save features and labels together in a .npz (X, y), "
                        "or select from it out of core: datadistill.data.select_out_of_core(path, method, "
                        "labels=LABELS.npy, ratio=...)")
    if suffix in {".csv", ".tsv", ".txt"}:
        return load_table(path, label, delimiter=delimiter)
    if suffix in {".parquet", ".pq"}:
        return load_table(path, label)
    raise DataError(
        f"{path}: unknown format '{suffix}'; use .npz, .csv, .parquet, an image folder or a built-in name"
    )


def load_npz(path: str | os.PathLike) -> Dataset:
    """Arrays ``x_train/y_train[/x_test/y_test]`` or ``X/y``, optional ``class_names``."""
    path = Path(path)
    arrays = _read_npz(path)
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


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of a .npz; anything that is not a zip of plain (non-object) .npy arrays is a DataError."""
    resave = "re-save it with numpy.savez(path, X=..., y=...)"
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise DataError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise DataError(f"{path}: empty file (0 bytes), not a valid .npz archive; {resave}")
    # np.load falls back to unpickling for anything that is neither a zip nor a .npy, and its error then
    # suggests loading the file unsafely; check the zip structure first instead
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not a valid .npz archive (no zip structure: truncated, damaged or another "
                        f"format); {resave}")
    arrays: dict[str, np.ndarray] = {}
    key = "?"
    try:
        with np.load(path, allow_pickle=False) as z:
            for key in z.files:
                arrays[key] = z[key]
    except ValueError as exc:
        if "pickle" in str(exc).lower() or "object arrays" in str(exc).lower():
            raise DataError(f"{path}: array '{key}' holds Python objects, which datadistill never unpickles; "
                            "save numeric (or string) arrays") from None
        raise DataError(f"{path}: not a valid .npz archive ({exc}); {resave}") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as exc:
        raise DataError(f"{path}: not a valid .npz archive (damaged member: {exc}); {resave}") from None
    return arrays


def _detect_delimiter(path: Path) -> tuple[str, bool]:
    """The CSV delimiter and whether it was detected (not the suffix's usual one).

    The candidate that splits the header and the first rows into the same number (> 1) of fields wins;
    ``,`` (``\\t`` for .tsv) when none or several do.
    """
    usual = "\t" if path.suffix.lower() == ".tsv" else ","
    try:
        with open(path, newline="", encoding="utf-8", errors="replace") as fh:
            lines = [line for line in (fh.readline() for _ in range(20)) if line.strip()]
    except OSError:
        return usual, False
    if not lines:
        return usual, False
    consistent = []
    for cand in (usual, ",", ";", "\t", "|"):
        counts = {len(next(csv.reader([line], delimiter=cand))) for line in lines}
        if len(counts) == 1 and counts.pop() > 1 and cand not in consistent:
            consistent.append(cand)
    if not consistent or consistent[0] == usual:
        return usual, False
    return consistent[0], True


DELIMITER_NAMES = {",": "','", ";": "';'", "\t": "tab", "|": "'|'"}


def load_table(path: str | os.PathLike, label: str | None = None, *, delimiter: str | None = None) -> Dataset:
    """CSV or Parquet: one label column (by name), every other column numeric features.

    ``delimiter``: the CSV field separator; by default detected (``,`` ``;`` tab ``|``) with a
    :class:`DatadistillWarning` when it is not the suffix's usual one (``,``; tab for .tsv).
    """
    import pyarrow as pa

    path = Path(path)
    is_csv = path.suffix.lower() not in {".parquet", ".pq"}
    if is_csv and delimiter is not None and len(delimiter) != 1:
        raise ConfigError(f"{path}: the delimiter must be one character, got {delimiter!r}")
    if is_csv and delimiter is None:
        delimiter, detected = _detect_delimiter(path)
        if detected:
            usual = "tab" if path.suffix.lower() == ".tsv" else "','"
            warnings.warn(f"{path}: fields are separated by {DELIMITER_NAMES[delimiter]}, not {usual}; reading it "
                          "that way (pass --delimiter to choose)", DatadistillWarning, stacklevel=3)
    try:
        if not is_csv:
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter=delimiter))
    except (pa.ArrowException, OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot parse ({(str(exc).splitlines() or [type(exc).__name__])[0]})") from None
    columns = table.column_names
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise DataError(f"{path}: duplicate column name{'s' if len(repeated) > 1 else ''} "
                        f"{', '.join(map(repr, repeated))}; give every column its own name")
    if table.num_rows == 0:
        raise DataError(f"{path}: no data rows (only a header: {columns}); add samples below the header")
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
            hint = ""
            if isinstance(example, str) and delimiter == ";" and "," in example:
                hint = " (a decimal comma? write numbers with a decimal point)"
            raise DataError(
                f"{path}: column '{c}' is not numeric (type {col.type}, e.g. {example!r}){hint}; "
                "encode it as numbers or drop it"
            )
        if col.null_count:
            row = next(i for i, v in enumerate(col.to_pylist()) if v is None)
            raise DataError(f"{path}: row {row}, column '{c}' is missing or NaN; fill or drop that row")
        cols.append(col.to_numpy(zero_copy_only=False).astype(np.float64))
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
        info={"source": str(path), "format": path.suffix.lower().lstrip("."), "label": label, "features": features,
              **({"delimiter": delimiter} if is_csv else {})},
    )


def load_image_folder(path: str | os.PathLike) -> Dataset:
    """One sub-folder per class of equally sized images (grayscale kept as N x H x W, colour as N x H x W x C).

    Hidden folders are ignored; class folders without images are skipped with a warning.
    """
    path = Path(path)
    class_dirs = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not class_dirs:
        raise DataError(f"{path}: no class sub-folders; expected {path}/<class>/<image>.png")
    class_files = {d: sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
                   for d in class_dirs}
    empty = [d.name for d in class_dirs if not class_files[d]]
    class_dirs = [d for d in class_dirs if class_files[d]]
    if empty and len(class_dirs) < 2:
        raise DataError(f"{path}: only {len(class_dirs)} class folder{'s' if len(class_dirs) != 1 else ''} with "
                        f"images; {', '.join(map(repr, empty[:5]))} {'has' if len(empty) == 1 else 'have'} none "
                        f"(image suffixes: {', '.join(sorted(IMAGE_SUFFIXES))})")
    if empty:
        warnings.warn(f"{path}: skipping class folder{'s' if len(empty) > 1 else ''} "
                      f"{', '.join(map(repr, empty[:5]))}{' ...' if len(empty) > 5 else ''} without images",
                      DatadistillWarning, stacklevel=2)
    images, labels = [], []
    shape = None
    for c, d in enumerate(class_dirs):
        for f in class_files[d]:
            arr = _read_image(f)
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


def _read_image(f: Path) -> np.ndarray:
    """One image file as uint8 (H, W) grayscale or (H, W, 3) colour; oversized or unreadable -> DataError."""
    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(f) as im:
                # Image.open reads only the header: refuse huge declared sizes before decoding a pixel
                if im.width * im.height > MAX_IMAGE_PIXELS:
                    raise DataError(f"{f}: image of {im.width} x {im.height} pixels is larger than the "
                                    f"{MAX_IMAGE_PIXELS:,} pixels datadistill reads (a decompression bomb?); "
                                    "resize it or remove it")
                return np.asarray(im.convert("L") if im.mode in ("L", "1", "P", "I;16") else im.convert("RGB"))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{f}: refused as a possible decompression bomb ({exc}); resize it or remove it") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:
        raise DataError(f"{f}: not a readable image ({exc})") from None


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
