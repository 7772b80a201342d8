"""Hardening, security and data loss: no file runs code, --overwrite deletes only what datadistill wrote,
saved sets and run directories are checked on load, and interrupted writes leave nothing half-done.

Crafted pickles carry a harmless payload that creates a marker file when unpickled unsafely; each test
first proves its payload is live (an unsafe load does create the marker), then asserts that datadistill
refused the file and the marker was NOT created.
"""

from __future__ import annotations

import json
import os
import pickle
import shlex
import signal
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

import datadistill as dd
from datadistill import training
from datadistill.cli import main
from datadistill.data import Dataset, DistilledSet
from datadistill.data.artifact import MARKER_FILE, read_marker, remove_stale_temporaries, write_marker
from datadistill.errors import ArtifactError, ConfigError, DataError
from datadistill.evaluation import ROWS_FILE, evaluate
from datadistill.report import Report, markdown_code, markdown_text, printable
from datadistill.synth import get_distiller
from datadistill.training import TrainConfig

TINY = TrainConfig(epochs=2, batch_size=64, lr=1e-2, min_steps=8, max_epochs=20, patience=0)
NET = {"width": 8, "depth": 1}
DM = dict(ipc=1, model_kwargs=NET, batch_real=8, random_state=1)


# --- harmless payloads ---------------------------------------------------------------------------------
class _OpenPayload:
    """Unpickling this calls ``open(marker, "w")``: the marker file appears."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


class _ShellPayload:
    """Unpickling this runs a shell command (``os.system``) that creates the marker file."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {shlex.quote(self.marker)}",))


PAYLOADS = {"open": _OpenPayload, "shell": _ShellPayload}


def _unsafe_load_creates_marker(payload: type, tmp_path: Path, loader) -> None:
    """The payload is live: loading it the unsafe way does create its marker (so the real test can fail)."""
    live = tmp_path / "live-marker"
    path = tmp_path / "live.pkl"
    loader(path, payload(live))
    assert not live.exists()
    with open(path, "rb") as fh:
        try:
            pickle.load(fh)  # what an unrestricted loader does
        except Exception:  # noqa: BLE001 - only the side effect matters here
            pass
    assert live.exists(), "the test payload does not work, so the tests below would prove nothing"
    live.unlink()


def _pickle_to(path: Path, obj) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh)


def _run(args, capsys) -> tuple[int, str, str]:
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def _tree(path: Path) -> dict[str, bytes | None]:
    """Every entry under ``path`` with its bytes (None for folders): to prove a folder was left untouched."""
    return {str(p.relative_to(path)): (None if p.is_dir() else p.read_bytes()) for p in sorted(path.rglob("*"))}


@pytest.fixture(scope="module")
def blobs() -> Dataset:
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=450, n_features=3, centers=3, cluster_std=1.0, random_state=4)
    X = X.astype(np.float32)
    return Dataset.create(X[:300], y[:300], test=(X[300:], y[300:]), name="blobs3d")


def _evaluate(ds, **kw):
    kw.setdefault("model", "logreg")
    kw.setdefault("train_config", TINY)
    kw.setdefault("progress", False)
    kw.setdefault("methods", ["stratified"])
    kw.setdefault("ratios", [0.1])
    kw.setdefault("seeds", 1)
    return evaluate(ds, **kw)


# === 1. checkpoints: weights_only=True and a checked structure =========================================
@pytest.fixture(scope="module")
def genuine_checkpoint(digits, tmp_path_factory) -> tuple[Path, dict]:
    ckpt = tmp_path_factory.mktemp("ckpt") / "run.ckpt"
    get_distiller("dm", iterations=2, checkpoint=ckpt, checkpoint_every=2, **DM).fit(digits)
    return ckpt, torch.load(ckpt, weights_only=True)


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_crafted_checkpoint_is_refused_and_runs_nothing(payload, digits, genuine_checkpoint, tmp_path):
    # the payload is live: the old torch.load(weights_only=False) runs it
    live = tmp_path / "live-marker"
    torch.save({"iteration": 2, "payload": PAYLOADS[payload](live)}, tmp_path / "live.ckpt")
    torch.load(tmp_path / "live.ckpt", weights_only=False)
    assert live.exists(), "the test payload does not work, so this test would prove nothing"

    _, blob = genuine_checkpoint
    marker = tmp_path / "marker"
    crafted = tmp_path / "crafted.ckpt"
    # everything a genuine checkpoint has (right fingerprint, method and key) plus the payload
    torch.save({**blob, "key": PAYLOADS[payload](marker)}, crafted)
    with pytest.raises(ArtifactError, match="crafted.ckpt") as info:
        try:
            get_distiller("dm", iterations=3, checkpoint=crafted, **DM).fit(digits)
        finally:
            assert not marker.exists(), "the crafted checkpoint ran code"
    assert "unsafe" in str(info.value)


def _bad_blobs(blob: dict) -> dict[str, object]:
    X = blob["X_syn"]
    opt = blob["state"]["optimizer"][1]
    return {
        "a list, not a dict": [1, 2, 3],
        "no X_syn": {k: v for k, v in blob.items() if k != "X_syn"},
        "iteration as text": {**blob, "iteration": "2"},
        "negative iteration": {**blob, "iteration": -1},
        "curve not a list": {**blob, "curve": "loss"},
        "curve of numbers": {**blob, "curve": [1.0, 2.0]},
        "X_syn wrong shape": {**blob, "X_syn": X[:1].clone()},
        "X_syn a list": {**blob, "X_syn": X.tolist()},
        "X_syn integers": {**blob, "X_syn": X.long()},
        "unknown state entry": {**blob, "state": {"evil": ("tensor", torch.zeros(1))}},
        "state entry not a pair": {**blob, "state": {"optimizer": "sgd"}},
        "state kind unknown": {**blob, "state": {"optimizer": ("pickle", opt)}},
        "optimizer state that does not fit": {**blob, "state": {"optimizer": ("state_dict", {**opt,
                                                                                              "param_groups": []})}},
        "fingerprint a number": {**blob, "fingerprint": 7},
    }


@pytest.mark.parametrize("case", list(_bad_blobs({"X_syn": torch.zeros(2, 1, 8, 8),
                                                  "state": {"optimizer": ("state_dict", {})}})))
def test_checkpoint_of_the_wrong_structure_is_refused_naming_the_file(case, digits, genuine_checkpoint, tmp_path):
    _, blob = genuine_checkpoint
    path = tmp_path / "odd.ckpt"
    torch.save(_bad_blobs(blob)[case], path)
    with pytest.raises(ArtifactError, match="odd.ckpt"):
        get_distiller("dm", iterations=3, checkpoint=path, **DM).fit(digits)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", b"PK\x03\x04truncated"])
def test_unreadable_checkpoint_is_one_clear_error(content, digits, tmp_path):
    path = tmp_path / "junk.ckpt"
    path.write_bytes(content)
    with pytest.raises(ArtifactError, match="junk.ckpt.*delete it"):
        get_distiller("dm", iterations=3, checkpoint=path, **DM).fit(digits)


def test_genuine_checkpoint_still_resumes_exactly(digits, genuine_checkpoint, tmp_path):
    ckpt, _ = genuine_checkpoint
    copy = tmp_path / "copy.ckpt"
    copy.write_bytes(ckpt.read_bytes())
    resumed = get_distiller("dm", iterations=3, checkpoint=copy, checkpoint_every=2, **DM).fit(digits)
    whole = get_distiller("dm", iterations=3, **DM).fit(digits)
    assert resumed.meta["timings"]["this_run_iterations"] == 1
    np.testing.assert_array_equal(resumed.X, whole.X)
    assert resumed.meta["curves"]["matching_loss"] == whole.meta["curves"]["matching_loss"]
    # what _save_checkpoint writes (optimizer state included) loads with weights_only=True
    blob = torch.load(copy, weights_only=True)
    assert blob["iteration"] == 3 and blob["state"]["optimizer"][0] == "state_dict"


# === 2. CIFAR-10 batches: a restricted unpickler, and only a real CIFAR layout goes there ================
def _cifar_batch(n: int, seed: int = 0, numpy_labels: bool = False) -> dict:
    rng = np.random.default_rng(seed)
    labels = [int(v) for v in np.arange(n) % 10]
    return {b"batch_label": b"training batch", b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8),
            b"labels": list(np.asarray(labels)) if numpy_labels else labels,
            b"filenames": [f"img{i}.png".encode() for i in range(n)]}


def _write_cifar(root: Path, numpy_labels: bool = False) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i, (name, n) in enumerate([("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)]):
        _pickle_to(root / name, _cifar_batch(n, seed=i, numpy_labels=numpy_labels))
    _pickle_to(root / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)],
                                       b"num_vis": 3072})
    return root


@pytest.mark.parametrize("numpy_labels", [False, True])
def test_genuine_cifar_folder_still_loads(numpy_labels, tmp_path):
    root = _write_cifar(tmp_path / "cifar", numpy_labels=numpy_labels)
    ds = dd.load(root, ensure_test=False)
    assert ds.info["format"] == "cifar10-python"
    assert ds.X.shape == (40, 32, 32, 3) and len(ds.test) == 10 and ds.classes[3] == "c3"
    first = _cifar_batch(20, seed=0)[b"data"]
    np.testing.assert_array_equal(ds.X[0, :, :, 0].ravel(), first[0, :1024])
    # torchvision's root (a folder holding cifar-10-batches-py) is routed there too
    _write_cifar(tmp_path / "tv" / "cifar-10-batches-py")
    assert dd.load(tmp_path / "tv", ensure_test=False).info["format"] == "cifar10-python"


@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_crafted_data_batch_in_an_image_folder_loads_as_images(payload, tmp_path):
    from PIL import Image

    _unsafe_load_creates_marker(PAYLOADS[payload], tmp_path, _pickle_to)
    folder = tmp_path / "photos"
    rng = np.random.default_rng(0)
    for c in ("ants", "bees"):
        (folder / c).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(rng.integers(0, 255, (5, 7), dtype=np.uint8)).save(folder / c / f"{i}.png")
    marker = tmp_path / "marker"
    for name in ("data_batch_1", "test_batch"):  # even the whole CIFAR file set does not make it a CIFAR folder
        _pickle_to(folder / name, PAYLOADS[payload](marker))
    try:
        ds = dd.load(folder, ensure_test=False)
    finally:
        assert not marker.exists(), "the crafted data_batch_1 ran code"
    assert ds.info["format"] == "image-folder" and ds.classes == ("ants", "bees") and ds.X.shape == (6, 5, 7)


@pytest.mark.parametrize("crafted", ["data_batch_1", "data_batch_2", "test_batch", "batches.meta"])
@pytest.mark.parametrize("payload", sorted(PAYLOADS))
def test_crafted_batch_in_a_cifar_folder_is_refused_and_runs_nothing(crafted, payload, tmp_path):
    _unsafe_load_creates_marker(PAYLOADS[payload], tmp_path, _pickle_to)
    root = _write_cifar(tmp_path / "cifar")
    marker = tmp_path / "marker"
    _pickle_to(root / crafted, {b"data": PAYLOADS[payload](marker), b"labels": [0]})
    with pytest.raises(DataError, match=f"{crafted}.*refused global") as info:
        try:
            dd.load(root, ensure_test=False)
        finally:
            assert not marker.exists(), f"the crafted {crafted} ran code"
    assert "system" in str(info.value) or "open" in str(info.value)


def _bad_batches() -> dict[str, tuple[bytes, str]]:
    good = _cifar_batch(20)
    cut = pickle.dumps(good)
    return {
        "no data": (pickle.dumps({b"labels": good[b"labels"]}), "b'data' missing"),
        "no labels": (pickle.dumps({b"data": good[b"data"]}), "b'labels' missing"),
        "data of the wrong width": (pickle.dumps({**good, b"data": good[b"data"][:, :100]}), "b'data'"),
        "data as floats": (pickle.dumps({**good, b"data": good[b"data"].astype(np.float32)}), "b'data'"),
        "data as a list": (pickle.dumps({**good, b"data": [bytes(3072)] * 20}), "b'data'"),
        "fewer labels than images": (pickle.dumps({**good, b"labels": good[b"labels"][:5]}), "b'labels' has 5"),
        "negative label": (pickle.dumps({**good, b"labels": [-1] * 20}), "negative"),
        "labels as bytes": (pickle.dumps({**good, b"labels": [b"cat"] * 20}), "b'labels'"),
        "a list, not a dict": (pickle.dumps([good[b"data"]]), "not a dict"),
        "truncated": (cut[: len(cut) // 2], "not a CIFAR-10 python batch"),
        "empty": (b"", "not a CIFAR-10 python batch"),
        "random bytes": (bytes(np.random.default_rng(0).integers(0, 255, 200, dtype=np.uint8)), "CIFAR-10"),
    }


@pytest.mark.parametrize("case", list(_bad_batches()))
def test_malformed_cifar_batch_is_one_clear_error(case, tmp_path):
    content, fragment = _bad_batches()[case]
    root = _write_cifar(tmp_path / "cifar")
    (root / "data_batch_2").write_bytes(content)
    with pytest.raises(DataError, match="data_batch_2") as info:
        dd.load(root, ensure_test=False)
    assert fragment in str(info.value)


def test_cifar_meta_and_incomplete_folders_are_clear_errors(tmp_path):
    root = _write_cifar(tmp_path / "cifar")
    _pickle_to(root / "batches.meta", {b"label_names": 10})
    with pytest.raises(DataError, match="batches.meta.*label_names"):
        dd.load(root, ensure_test=False)
    lone = tmp_path / "lone"
    lone.mkdir()
    marker = tmp_path / "marker"
    _pickle_to(lone / "data_batch_1", _OpenPayload(marker))
    with pytest.raises(DataError, match="incomplete"):
        try:
            dd.load(lone, ensure_test=False)
        finally:
            assert not marker.exists(), "the crafted data_batch_1 ran code"


# === 3. a saved set is checked when it is opened ========================================================
@pytest.fixture(scope="module")
def saved_arrays(digits, tmp_path_factory) -> tuple[dict, dict]:
    chosen = dd.select(digits, "stratified", size=30, random_state=0)
    path = chosen.save(tmp_path_factory.mktemp("set") / "set")
    with np.load(path / "data.npz") as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads((path / "meta.json").read_text())


def _with(arrays: dict, **changes) -> dict:
    out = {k: v.copy() for k, v in arrays.items()}
    for k, v in changes.items():
        if v is None:
            out.pop(k)
        else:
            out[k] = v
    return out


def _bad_sets(a: dict) -> dict[str, tuple[dict, str]]:
    X, y, n = a["X"], a["y"], len(a["y"])
    nan_X, inf_X = X.copy(), X.copy()
    nan_X[3, 0, 0] = np.nan
    inf_X[5, 1, 1] = np.inf
    soft = np.full((n, 10), 0.1, dtype=np.float32)
    neg_soft = soft.copy()
    neg_soft[2, 0] = -0.5
    return {
        "NaN in X": (_with(a, X=nan_X), "X row 3"),
        "inf in X": (_with(a, X=inf_X), "X row 5"),
        "label 99": (_with(a, y=np.where(np.arange(n) == 4, 99, y)), "label 99 in row 4"),
        "label -1": (_with(a, y=np.where(np.arange(n) == 0, -1, y)), "label -1"),
        "fewer labels than samples": (_with(a, y=y[:-1], indices=a["indices"][:-1], weights=a["weights"][:-1]),
                                      f"{n} samples in X but {n - 1} labels"),
        "short class_names": (_with(a, class_names=a["class_names"][:3]), "outside 0..2"),
        "no class_names": (_with(a, class_names=None), "class_names"),
        "no X": (_with(a, X=None), "no array X"),
        "no y": (_with(a, y=None), "no array y"),
        "float labels": (_with(a, y=y.astype(np.float64)), "integer labels"),
        "X as text": (_with(a, X=np.array([["a"]] * n)), "numeric"),
        "X one-dimensional": (_with(a, X=np.zeros(n, dtype=np.float32)), "numeric array of samples"),
        "no samples": (_with(a, X=X[:0], y=y[:0], indices=a["indices"][:0], weights=a["weights"][:0]),
                       "no samples"),
        "negative index": (_with(a, indices=np.where(np.arange(n) == 2, -5, a["indices"])), "index -5"),
        "index past the source": (_with(a, indices=np.where(np.arange(n) == 2, 10**6, a["indices"])),
                                  "index 1000000"),
        "indices of another length": (_with(a, indices=a["indices"][:5]), "indices"),
        "weight -1e30": (_with(a, weights=np.where(np.arange(n) == 1, -1e30, a["weights"])), "weight -1e+30"),
        "weight NaN": (_with(a, weights=np.where(np.arange(n) == 1, np.nan, a["weights"])), "weight nan"),
        "weights of another length": (_with(a, weights=a["weights"][:3]), "weights"),
        "soft labels of the wrong shape": (_with(a, soft_labels=soft[:, :4]), "soft_labels"),
        "negative soft label": (_with(a, soft_labels=neg_soft), "soft_labels row 2"),
    }


@pytest.mark.parametrize("case", list(_bad_sets({"X": np.zeros((8, 8, 8), np.float32), "y": np.zeros(8, int),
                                                 "indices": np.zeros(8, int), "weights": np.ones(8),
                                                 "class_names": np.array(["0"])})))
def test_damaged_set_arrays_are_refused_on_open(case, saved_arrays, tmp_path):
    arrays, meta = saved_arrays
    bad, fragment = _bad_sets(arrays)[case]
    path = tmp_path / "set"
    path.mkdir()
    np.savez(path / "data.npz", **bad)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ArtifactError, match="data.npz") as info:
        DistilledSet.open(path)
    assert fragment in str(info.value)


def _bad_files(arrays: dict, tmp_path: Path) -> dict[str, tuple[str, bytes, str]]:
    np.savez_compressed(tmp_path / "good.npz", **arrays)
    good = (tmp_path / "good.npz").read_bytes()
    np.save(tmp_path / "single.npy", arrays["X"])
    np.savez(tmp_path / "objects.npz", X=np.array([{"a": 1}] * 3, dtype=object), y=np.zeros(3, int))
    return {
        "meta.json a list": ("meta.json", b"[1, 2]", "not a JSON object"),
        "meta.json a string": ("meta.json", b'"hello"', "not a JSON object"),
        "meta.json corrupt": ("meta.json", b'{"method": ', "corrupt"),
        "meta.json not UTF-8": ("meta.json", b"\xff\xfe{}", "meta.json"),
        "data.npz truncated": ("data.npz", good[: len(good) // 2], "damaged or truncated"),
        "data.npz empty": ("data.npz", b"", "damaged or truncated"),
        "data.npz random bytes": ("data.npz", bytes(range(256)) * 4, "damaged or truncated"),
        "data.npz a single .npy": ("data.npz", (tmp_path / "single.npy").read_bytes(), "damaged or truncated"),
        "data.npz with pickled objects": ("data.npz", (tmp_path / "objects.npz").read_bytes(), "damaged"),
        "data.npz corrupt inside": ("data.npz", good[:60] + bytes(len(good) - 120) + good[-60:], "data.npz"),
    }


@pytest.mark.parametrize("case", ["meta.json a list", "meta.json a string", "meta.json corrupt",
                                  "meta.json not UTF-8", "data.npz truncated", "data.npz empty",
                                  "data.npz random bytes", "data.npz a single .npy",
                                  "data.npz with pickled objects", "data.npz corrupt inside"])
def test_damaged_set_files_are_refused_on_open(case, saved_arrays, tmp_path):
    arrays, meta = saved_arrays
    name, content, fragment = _bad_files(arrays, tmp_path)[case]
    path = tmp_path / "set"
    path.mkdir()
    np.savez_compressed(path / "data.npz", **arrays)
    (path / "meta.json").write_text(json.dumps(meta))
    (path / name).write_bytes(content)
    with pytest.raises(ArtifactError, match=name) as info:
        DistilledSet.open(path)
    assert fragment in str(info.value)
    assert "unsafely" not in str(info.value)  # never advise loading pickles


def test_damaged_set_is_refused_by_evaluate_and_show(saved_arrays, tmp_path, capsys):
    arrays, meta = saved_arrays
    path = tmp_path / "set"
    path.mkdir()
    bad = _with(arrays)
    bad["X"] = bad["X"].copy()
    bad["X"][0, 0, 0] = np.nan
    np.savez(path / "data.npz", **bad)
    (path / "meta.json").write_text(json.dumps(meta))
    for args in (["show", path], ["evaluate", "digits", "--distilled", path, "--seeds", "1", "--ratios", "0.1"]):
        code, _, err = _run(args, capsys)
        assert code == 3 and "X row 0 contains NaN" in err and "Traceback" not in err


def test_set_saved_before_markers_still_opens(saved_arrays, tmp_path):
    arrays, meta = saved_arrays
    path = tmp_path / "old-set"
    path.mkdir()
    np.savez_compressed(path / "data.npz", **arrays)
    (path / "meta.json").write_text(json.dumps(meta))
    back = DistilledSet.open(path)
    assert len(back) == 30 and back.meta["method"] == "stratified"


# === 4. no escape sequence from a file reaches the terminal or the Markdown report ======================
HOSTILE = "\x1b[31mred\x1b]0;pwned\x07\u202eevil\nfake line\r"


def test_show_escapes_control_characters(tmp_path, capsys):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 2)).astype(np.float32)
    ds = Dataset.create(X, np.arange(60) % 2, ["\x1b[2Jclass-a", "b\nline"], name="hostile")
    path = dd.select(ds, "stratified", size=10, random_state=0).save(tmp_path / "set")
    meta = json.loads((path / "meta.json").read_text())
    meta.update(method=HOSTILE, source=HOSTILE, created=HOSTILE, library_version=HOSTILE, kind=HOSTILE)
    (path / "meta.json").write_text(json.dumps(meta))
    code, out, _ = _run(["show", path], capsys)
    assert code == 0
    for raw in ("\x1b", "\x07", "\u202e", "\r"):
        assert raw not in out
    assert "\\x1b[31mred" in out and "\\u202eevil" in out
    assert len([line for line in out.splitlines() if line.startswith("    ")]) == 2  # one line per class
    assert "fake line" not in [line.strip() for line in out.splitlines()]


def test_markdown_report_escapes_names_and_html_stays_escaped(tmp_path):
    evil = "<img src=x onerror=alert(1)>|*x*_[a](javascript:b)"
    rows = []
    for method in ("full", "random", evil):
        for seed in (0, 1):
            rows.append({"method": method, "kind": "selection", "size": 100 if method == "full" else 10,
                         "ratio": 0.1, "seed": seed, "test_accuracy": 0.8, "train_seconds": 1.0,
                         "select_seconds": 0.0, "epochs": 3})
    report = Report(rows=rows, context={"dataset": "my<b>folder</b>" + HOSTILE, "model": "mlp|x",
                                        "command": "datadistill evaluate `rm` x\x1b[2J", "fingerprint": "ab"})
    md = report.to_markdown()
    for raw in ("<img", "<b>", "\x1b", "\x07", "\u202e", "\r"):
        assert raw not in md
    assert "&lt;img src=x onerror=alert(1)&gt;\\|\\*x\\*\\_\\[a\\](javascript:b)" in md
    table = [line for line in md.splitlines() if line.startswith("| ") and "---" not in line]
    assert len(table) == 4  # header, full, random, the hostile method: no row split by its '|'
    for line in table:
        assert len(line.replace("\\|", "").split("|")) == 16  # 14 columns (model and protocol included)
    assert "``datadistill evaluate `rm` x\\x1b[2J``" in md
    page = report.to_html(tmp_path / "report.html").read_text()
    assert "<img src=x" not in page and "&lt;img src=x" in page and "<b>folder" not in page


def test_text_helpers():
    assert printable("a\x1bb\tc\u2028") == "a\\x1bb\\x09c\\u2028"
    assert printable("plain ünïcode") == "plain ünïcode"
    assert markdown_text("a|b<c>&d") == "a\\|b&lt;c&gt;&amp;d"
    assert markdown_code("x `y` z") == "``x `y` z``"
    assert markdown_code("`") == "`` ` ``"


# === 5. --overwrite replaces only what datadistill wrote ================================================
def _user_folder(path: Path, with_meta: bool = True) -> Path:
    (path / "thesis").mkdir(parents=True)
    (path / "thesis" / "chapter1.tex").write_text("years of work")
    (path / "notes.txt").write_text("mine")
    if with_meta:
        (path / "meta.json").write_text('{"mine": true}')
    return path


@pytest.mark.parametrize("command", ["select", "distill"])
def test_overwrite_refuses_a_user_folder_that_merely_has_meta_json(command, tmp_path, csv_file, capsys):
    out = _user_folder(tmp_path / "mine")
    before = _tree(out)
    args = ([command, csv_file, "--method", "random", "--size", "10"] if command == "select" else
            [command, csv_file, "--method", "dm", "--ipc", "1", "--model", "mlp", "--iterations", "1"])
    code, _, err = _run([*args, "--out", out, "--overwrite"], capsys)
    assert code == 3 and "Traceback" not in err
    assert "notes.txt" in err and "thesis/" in err and "refusing to replace" in err
    assert _tree(out) == before


def test_overwrite_replaces_an_earlier_output_and_refuses_one_with_foreign_files(tmp_path, csv_file, capsys):
    out = tmp_path / "sel"
    args = ["select", csv_file, "--method", "random", "--size", "10", "--out", out]
    assert _run(args, capsys)[0] == 0
    assert read_marker(out)["kind"] == "distilled-set"
    assert _run([*args, "--overwrite", "--seed", "3"], capsys)[0] == 0
    assert json.loads((out / "meta.json").read_text())["seed"] == 3
    # a file of the user's inside our own output: refused, named, kept
    (out / "my-notes.txt").write_text("keep me")
    code, _, err = _run([*args, "--overwrite", "--seed", "4"], capsys)
    assert code == 3 and "my-notes.txt" in err and "did not write" in err
    assert (out / "my-notes.txt").read_text() == "keep me"
    assert json.loads((out / "meta.json").read_text())["seed"] == 3


def test_overwrite_of_sets_from_before_markers(tmp_path, digits):
    chosen = dd.select(digits, "stratified", size=20, random_state=0)
    old = chosen.save(tmp_path / "old")
    (old / MARKER_FILE).unlink()  # as saved before this change
    chosen.save(old, overwrite=True)
    assert read_marker(old) is not None
    (old / MARKER_FILE).unlink()
    (old / "extra.csv").write_text("user data")
    with pytest.raises(ArtifactError, match="extra.csv"):
        chosen.save(old, overwrite=True)
    assert (old / "extra.csv").exists()
    # an evaluation run or a plain file is not a set either
    run = tmp_path / "run"
    run.mkdir()
    write_marker(run, "evaluation-run")
    (run / ROWS_FILE).write_text("")
    with pytest.raises(ArtifactError, match="evaluation run directory, not a datadistill set"):
        chosen.save(run, overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ArtifactError, match="not a directory"):
        chosen.save(tmp_path / "file", overwrite=True)
    assert (run / ROWS_FILE).exists() and (tmp_path / "file").read_text() == "x"


def test_evaluate_overwrite_refuses_foreign_entries(blobs, tmp_path):
    out = _user_folder(tmp_path / "mine", with_meta=False)
    (out / "run.json").write_text("{}")  # looks like a run, is not one of ours
    before = _tree(out)
    with pytest.raises(ArtifactError, match="not an evaluation run directory"):
        _evaluate(blobs, out=out, overwrite=True)
    assert _tree(out) == before
    run = tmp_path / "run"
    _evaluate(blobs, out=run)
    assert read_marker(run)["kind"] == "evaluation-run"
    (run / "figures" / "my-plot.svg").write_text("<svg/>")
    with pytest.raises(ArtifactError, match="figures/my-plot.svg"):
        _evaluate(blobs, out=run, overwrite=True)
    (run / "figures" / "my-plot.svg").unlink()
    report = _evaluate(blobs, out=run, overwrite=True, seeds=2)
    assert len(report.rows) == 6 and len((run / ROWS_FILE).read_text().splitlines()) == 6


def test_demo_overwrite_refuses_a_user_folder_and_replaces_its_own(tmp_path, monkeypatch):
    from datadistill import demo

    ran = []
    monkeypatch.setattr(demo, "_run_parts", lambda out, quick: ran.append(out))
    mine = _user_folder(tmp_path / "mine")
    before = _tree(mine)
    with pytest.raises(ArtifactError, match="notes.txt"):
        demo.run_demo(mine, overwrite=True)
    assert _tree(mine) == before and not ran
    # a demo folder as the demo writes it: figure, two run directories
    out = tmp_path / "demo"
    demo.run_demo(out)
    assert read_marker(out)["kind"] == "demo"
    (out / "two_gaussians.png").write_bytes(b"png")
    for name in demo.RUNS:
        (out / name / "figures").mkdir(parents=True)
        write_marker(out / name, "evaluation-run")
        (out / name / ROWS_FILE).write_text("")
        (out / name / "figures" / "accuracy_vs_size.png").write_bytes(b"png")
    (out / "digits" / "figures" / "keep.txt").write_text("mine")
    with pytest.raises(ArtifactError, match="keep.txt"):
        demo.run_demo(out, overwrite=True)
    (out / "digits" / "figures" / "keep.txt").unlink()
    demo.run_demo(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == [MARKER_FILE]


# === 6. evaluate --overwrite validates everything before it replaces the old run ========================
def test_evaluate_overwrite_with_invalid_settings_keeps_the_old_run(blobs, tmp_path):
    run = tmp_path / "run"
    _evaluate(blobs, out=run)
    before = _tree(run)
    with pytest.raises(ConfigError, match="nosuch"):
        _evaluate(blobs, out=run, overwrite=True, methods=["nosuch"])
    assert _tree(run) == before
    # a recipe that fails only once training starts: the old run is still there
    with pytest.raises(ConfigError, match="optimizer"):
        _evaluate(blobs, out=run, overwrite=True, train_config=replace(TINY, optimizer="adamw"))
    assert _tree(run) == before
    # nothing at all is written for a run that fails before its first row
    fresh = tmp_path / "fresh"
    with pytest.raises(ConfigError):
        _evaluate(blobs, out=fresh, train_config=replace(TINY, optimizer="adamw"))
    assert not fresh.exists()


# === 7. a row cut off mid-write is dropped on --resume ================================================
@pytest.mark.parametrize("damage", ["half a line", "half a line and more", "NUL bytes", "no newline"])
def test_resume_after_a_cut_off_last_row(damage, blobs, tmp_path, monkeypatch):
    run = tmp_path / "run"
    _evaluate(blobs, out=run, seeds=2)
    rows = run / ROWS_FILE
    lines = rows.read_bytes().splitlines(keepends=True)
    assert len(lines) == 6
    last = lines[-1]
    tail = {"half a line": last[: len(last) // 2], "half a line and more": last[: len(last) - 5],
            "NUL bytes": b"\x00" * 40 + b"\n", "no newline": last.rstrip(b"\n")}[damage]
    rows.write_bytes(b"".join(lines[:-1]) + tail)
    calls = []
    real = training.train
    monkeypatch.setattr(training, "train", lambda *a, **k: calls.append(1) or real(*a, **k))
    report = _evaluate(blobs, out=run, seeds=2, resume=True)
    assert len(calls) == 1 and len(report.rows) == 6
    again = _evaluate(blobs, out=run, seeds=2, resume=True)  # failed before: a glued line was "damaged"
    assert len(calls) == 1 and len(again.rows) == 6
    text = rows.read_bytes()
    assert text.endswith(b"\n")
    parsed = [json.loads(line) for line in text.splitlines()]
    assert len(parsed) == 6 and len({(r["method"], r["size"], r["seed"]) for r in parsed}) == 6


def test_resume_refuses_a_damaged_middle_row(blobs, tmp_path):
    run = tmp_path / "run"
    _evaluate(blobs, out=run, seeds=2)
    rows = run / ROWS_FILE
    lines = rows.read_bytes().splitlines(keepends=True)
    rows.write_bytes(b"".join(lines[:2]) + b"garbage\n" + b"".join(lines[3:]))
    with pytest.raises(ArtifactError, match="line 3 is not a row"):
        _evaluate(blobs, out=run, seeds=2, resume=True)
    (run / "run.json").write_text("[]")
    with pytest.raises(ArtifactError, match="run.json: not a JSON object"):
        _evaluate(blobs, out=run, seeds=2, resume=True)


# === 8. every file of a set is written in the atomic step; stale temporaries are cleaned =================
def _tiny_set(seed: int = 0) -> DistilledSet:
    rng = np.random.default_rng(seed)
    return DistilledSet(X=rng.normal(size=(4, 2)).astype(np.float32), y=np.array([0, 1, 0, 1]), classes=("a", "b"),
                        meta={"method": "test", "seed": seed})


def test_extra_files_are_part_of_the_atomic_save(tmp_path):
    def figure(directory: Path) -> None:
        (directory / "images.png").write_bytes(b"png")
        (directory / "extra.txt").write_text("written by the tool")

    path = _tiny_set().save(tmp_path / "set", extra=figure)
    assert (path / "images.png").read_bytes() == b"png"
    assert sorted(p.name for p in path.iterdir()) == [MARKER_FILE, "data.npz", "extra.txt", "images.png", "meta.json"]
    _tiny_set(1).save(path, overwrite=True, extra=figure)  # extra.txt is recorded as ours
    assert DistilledSet.open(path).meta["seed"] == 1

    def disk_full(directory: Path) -> None:
        (directory / "images.png").write_bytes(b"pn")
        raise OSError(28, "No space left on device")

    with pytest.raises(ArtifactError, match="No space left on device.*nothing was replaced"):
        _tiny_set(2).save(path, overwrite=True, extra=disk_full)
    assert DistilledSet.open(path).meta["seed"] == 1 and (path / "images.png").read_bytes() == b"png"
    with pytest.raises(ArtifactError, match="No space left"):
        _tiny_set(2).save(tmp_path / "new", extra=disk_full)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]  # no half-written set, no temporary


def test_distill_writes_images_png_inside_the_atomic_step(tmp_path, capsys, monkeypatch):
    from datadistill.synth import figures

    args = ["distill", "digits", "--method", "dm", "--ipc", "1", "--iterations", "1", "--width", "8", "--depth", "1",
            "--batch-real", "8"]

    def no_space(distilled, path, **kw):
        Path(path).write_bytes(b"\x89PNG cut")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(figures, "image_grid", no_space)
    code, _, err = _run([*args, "--out", tmp_path / "out"], capsys)
    assert code == 3 and "No space left" in err and "Traceback" not in err
    assert list(tmp_path.iterdir()) == []  # no committed set with a cut-off figure, nothing blocking a rerun
    monkeypatch.undo()
    code, _, _ = _run([*args, "--out", tmp_path / "out"], capsys)
    assert code == 0
    assert (tmp_path / "out" / "images.png").read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def test_temporary_of_a_killed_save_is_removed_by_the_next_save(tmp_path):
    out = tmp_path / "set"
    script = (
        "import os, signal\n"
        "import numpy as np\n"
        "from datadistill.data.artifact import DistilledSet\n"
        "np.savez_compressed = lambda *a, **k: os.kill(os.getpid(), signal.SIGKILL)\n"
        "DistilledSet(X=np.zeros((4, 2), np.float32), y=np.array([0, 1, 0, 1]), classes=('a', 'b'))"
        f".save({str(out)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    stale = [p for p in tmp_path.iterdir() if p.name.startswith(".set.tmp-")]
    assert len(stale) == 1 and read_marker(stale[0])["kind"] == "distilled-set"
    assert not out.exists()

    # look-alikes that are not ours to remove
    dead = int(stale[0].name.split("-")[1])
    keep = {
        "no marker": tmp_path / f".photos.tmp-{dead}-abcd1234",
        "live process": tmp_path / f".other.tmp-{os.getpid()}-abcd1234",
        "another host": tmp_path / f".remote.tmp-{dead}-abcd1234",
        "not our name": tmp_path / ".set.backup",
    }
    for p in keep.values():
        p.mkdir()
    (keep["no marker"] / "user.txt").write_text("mine")
    for p in (keep["live process"], keep["not our name"]):
        write_marker(p, "distilled-set")
    (keep["another host"] / MARKER_FILE).write_text(json.dumps(
        {"kind": "distilled-set", "pid": dead, "host": socket.gethostname() + "-elsewhere"}))

    _tiny_set().save(tmp_path / "next")
    assert not stale[0].exists()
    for what, p in keep.items():
        assert p.exists(), what
    assert DistilledSet.open(tmp_path / "next").meta["method"] == "test"


def test_stale_backup_is_removed_only_when_the_new_set_is_in_place(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    committed = _tiny_set().save(tmp_path / "a")
    backup_a = tmp_path / f".a.old-{dead}"
    backup_b = tmp_path / f".b.old-{dead}"  # killed between the renames: the only copy of set b
    for b in (backup_a, backup_b):
        b.mkdir()
        write_marker(b, "distilled-set")
    removed = remove_stale_temporaries(tmp_path)
    assert removed == [backup_a] and backup_b.exists() and committed.exists()
