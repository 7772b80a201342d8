"""Bad input gets one clear line, never a traceback or a silently wrong result (issue 10).

Malformed files are made on the fly in tmp_path; property tests (hypothesis) throw random small arrays,
CSVs and data sets with duplicates at the loaders and the cheap selectors.
"""

import json
import math
import os
import struct
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from datadistill import cli
from datadistill.cli import main
from datadistill.data import Dataset, load
from datadistill.data.dataset import check_sample_shape
from datadistill.errors import ArtifactError, ConfigError, DatadistillWarning, DataError
from datadistill.report import Report
from datadistill.select import get_selector
from datadistill.synth import get_distiller
from datadistill.synth.distribution import DistributionMatching


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def one_line_error(code, err, fragment, exit_code=2):
    """Exit 2 (usage; 3 for data and artifact errors), the fragment in the error line, no traceback."""
    assert code == exit_code, err
    assert "Traceback" not in err
    error_lines = [line for line in err.splitlines() if ": error: " in line]
    assert len(error_lines) == 1, err
    assert fragment in error_lines[0], err


def write_csv(path, rows, header, delimiter=","):
    with open(path, "w") as fh:
        fh.write(delimiter.join(header) + "\n")
        for row in rows:
            fh.write(delimiter.join(str(v) for v in row) + "\n")
    return path


@pytest.fixture
def csv3(tmp_path):
    """60 rows, 3 classes, 4 features."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 4))
    y = np.arange(60) % 3
    X[:, 0] += 3 * y
    return write_csv(tmp_path / "three.csv", [[*(f"{v:.5f}" for v in x), c] for x, c in zip(X, y)],
                     ["a", "b", "c", "d", "label"])


@pytest.fixture
def csv10(tmp_path):
    """100 rows, 10 classes, 2 features."""
    rng = np.random.default_rng(1)
    y = np.arange(100) % 10
    X = rng.normal(size=(100, 2)) + y[:, None]
    return write_csv(tmp_path / "ten.csv", [[f"{a:.4f}", f"{b:.4f}", c] for (a, b), c in zip(X, y)],
                     ["f1", "f2", "label"])


def good_npz(path, n=40):
    rng = np.random.default_rng(0)
    np.savez(path, X=rng.normal(size=(n, 3)), y=np.arange(n) % 2)
    return path


# --- loaders: malformed files ------------------------------------------------------------------
def test_empty_npz(tmp_path):
    path = tmp_path / "empty.npz"
    path.write_bytes(b"")
    with pytest.raises(DataError, match="empty file.*not a valid .npz archive"):
        load(path)


def test_truncated_npz(tmp_path):
    whole = good_npz(tmp_path / "whole.npz").read_bytes()
    for cut in (10, len(whole) // 2, len(whole) - 5):
        path = tmp_path / f"cut{cut}.npz"
        path.write_bytes(whole[:cut])
        with pytest.raises(DataError, match="not a valid .npz archive") as err:
            load(path)
        assert str(path) in str(err.value)


def test_random_bytes_npz_gets_no_unpickling_advice(tmp_path):
    path = tmp_path / "noise.npz"
    path.write_bytes(np.random.default_rng(0).bytes(700))
    with pytest.raises(DataError) as err:
        load(path)
    message = str(err.value)
    assert "not a valid .npz archive" in message
    assert "allow_pickle" not in message and "unsafe" not in message and "pickle.load" not in message


def test_object_array_in_npz_is_refused_without_unpickling(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, X=np.array([[1, None]] * 4, dtype=object), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="'X' holds Python objects"):
        load(path)


def test_zero_row_array(tmp_path):
    path = tmp_path / "zero.npz"
    np.savez(path, X=np.zeros((0, 3)), y=np.zeros(0, dtype=int))
    with pytest.raises(DataError, match="empty"):
        load(path)


def test_zero_feature_array(tmp_path):
    path = tmp_path / "nofeatures.npz"
    np.savez(path, X=np.zeros((10, 0)), y=np.arange(10) % 2)
    with pytest.raises(DataError, match="hold no values"):
        load(path)


@pytest.mark.parametrize("shape", [(20, 3, 500), (20, 2, 2), (20, 5, 7, 9), (20, 3, 8, 8, 2)])
def test_arrays_that_are_not_images_of_an_accepted_shape(tmp_path, shape):
    path = tmp_path / "odd.npz"
    np.savez(path, X=np.random.default_rng(0).random(shape), y=np.arange(20) % 2)
    with pytest.raises(DataError, match=r"accepted: \(N, d\) features, \(N, H, W\)") as err:
        load(path)
    assert str(shape[1:]) in str(err.value)


@pytest.mark.parametrize("shape", [(8, 8), (28, 28, 1), (1, 28, 28), (32, 32, 3), (3, 32, 32)])
def test_image_shapes_that_are_accepted(shape):
    check_sample_shape(shape, "x")


def test_values_beyond_float32(tmp_path):
    path = tmp_path / "huge.npz"
    X = np.ones((20, 3))
    X[4, 1] = 1e300
    np.savez(path, X=X, y=np.arange(20) % 2)
    with pytest.raises(DataError, match="row 4 has values beyond float32"):
        load(path)


def test_scalar_labels(tmp_path):
    path = tmp_path / "scalar.npz"
    np.savez(path, X=np.ones((20, 3)), y=np.array(3))
    with pytest.raises(DataError, match="labels must be one-dimensional"):
        load(path)


def test_duplicate_csv_columns(tmp_path):
    path = write_csv(tmp_path / "dup.csv", [[i, i + 1, i % 2] for i in range(10)], ["a", "a", "label"])
    with pytest.raises(DataError, match="duplicate column name 'a'"):
        load(path)


def test_csv_with_only_a_header(tmp_path):
    path = write_csv(tmp_path / "header.csv", [], ["a", "b", "label"])
    with pytest.raises(DataError, match="no data rows"):
        load(path)


def test_semicolon_csv_is_detected_and_said(tmp_path, capsys):
    rows = [[f"{i * 0.5}", f"{i % 3}", i % 2] for i in range(20)]
    path = write_csv(tmp_path / "semi.csv", rows, ["a", "b", "label"], delimiter=";")
    with pytest.warns(DatadistillWarning, match="separated by ';'"):
        ds = load(path)
    assert ds.n_features == 2 and ds.info["delimiter"] == ";"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load(path, delimiter=";").fingerprint == ds.fingerprint  # said explicitly: no warning
    code, out, err = run(["select", path, "--method", "random", "--ratio", "0.5", "--out", tmp_path / "o"], capsys)
    assert code == 0 and "warning: " in err and "separated by ';'" in err and "Traceback" not in err
    code, out, err = run(["select", path, "--delimiter", "semicolon", "--method", "random", "--ratio", "0.5",
                          "--out", tmp_path / "o2"], capsys)
    assert code == 0 and "warning" not in err


def test_decimal_comma_gets_a_hint(tmp_path):
    rows = [[f"{i},5", f"{i % 3}", i % 2] for i in range(20)]
    path = write_csv(tmp_path / "comma.csv", rows, ["a", "b", "label"], delimiter=";")
    with pytest.warns(DatadistillWarning), pytest.raises(DataError, match="decimal comma"):
        load(path)


def png_header(path: Path, width: int, height: int) -> Path:
    """A PNG that declares width x height pixels but holds almost no data (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def small_png(path: Path, value: int) -> Path:
    from PIL import Image

    Image.fromarray(np.full((8, 8), value, dtype=np.uint8)).save(path)
    return path


@pytest.mark.parametrize("side", [5_000, 20_000])  # above our limit; above PIL's own error limit
def test_decompression_bomb_image(tmp_path, side):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(3):
            small_png(tmp_path / "imgs" / c / f"{i}.png", 40 * i)
    bomb = png_header(tmp_path / "imgs" / "b" / "bomb.png", side, side)
    with pytest.raises(DataError) as err:
        load(tmp_path / "imgs")
    assert str(bomb) in str(err.value) and "decompression bomb" in str(err.value)


def test_empty_class_folder_is_skipped_with_a_warning(tmp_path):
    for c in ("a", "b"):
        (tmp_path / "imgs" / c).mkdir(parents=True)
        for i in range(4):
            small_png(tmp_path / "imgs" / c / f"{i}.png", 30 * i + (c == "b") * 100)
    (tmp_path / "imgs" / "c_empty").mkdir()
    (tmp_path / "imgs" / "c_empty" / "notes.txt").write_text("no images here")
    with pytest.warns(DatadistillWarning, match="skipping class folder 'c_empty'"):
        ds = load(tmp_path / "imgs")
    assert ds.classes == ("a", "b")


def test_empty_class_folders_leaving_one_class_are_refused(tmp_path):
    (tmp_path / "imgs" / "a").mkdir(parents=True)
    (tmp_path / "imgs" / "b").mkdir()
    for i in range(4):
        small_png(tmp_path / "imgs" / "a" / f"{i}.png", i)
    with pytest.raises(DataError, match="only 1 class folder with images; 'b' has none"):
        load(tmp_path / "imgs")


def test_two_row_csv_cannot_be_split(tmp_path):
    path = write_csv(tmp_path / "two.csv", [[1, 2, 0], [3, 4, 1]], ["a", "b", "label"])
    with pytest.raises(DataError, match="at least 2 samples per class"):
        load(path)


def test_too_few_rows_for_a_test_split_over_every_class(tmp_path):
    rows = [[i, i, i % 3] for i in range(6)]  # 2 per class; 20% test = 2 rows < 3 classes
    path = write_csv(tmp_path / "six.csv", rows, ["a", "b", "label"])
    with pytest.raises(DataError, match="too few for a test split over 3 classes"):
        load(path)


def test_test_fraction_that_leaves_a_class_untrained():
    X = np.arange(100, dtype=np.float32)[:, None]
    y = np.r_[np.zeros(2, dtype=int), np.ones(98, dtype=int)]
    with pytest.raises(DataError, match="without a training sample"):
        Dataset.create(X, y).with_test_split(0.9)


# --- CLI options --------------------------------------------------------------------------------
def loaded(err):
    """Whether the data set was read (its summary line is printed right after loading)."""
    return "training samples" in err


@pytest.mark.parametrize("command", ["select", "distill"])
def test_negative_seed(tmp_path, csv3, capsys, command):
    extra = ["--size", "6"] if command == "select" else ["--model", "mlp", "--iterations", "1"]
    code, _, err = run([command, csv3, "--method", "random" if command == "select" else "dm", *extra,
                        "--seed", "-1", "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "--seed")
    assert not loaded(err)


def test_non_numeric_param(tmp_path, csv3, capsys):
    code, _, err = run(["select", csv3, "--method", "kmeans", "--size", "6", "--param", "max_iter=abc",
                        "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "max_iter must be an integer, got 'abc'")
    code, _, err = run(["distill", csv3, "--method", "dc", "--model", "mlp", "--param", "lr_net=fast",
                        "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "lr_net must be a number, got 'fast'")
    code, _, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--param", "amp=maybe",
                        "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "amp must be true or false")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("option, value, fragment", [
    ("--width", "0", "width (--width) must be a positive integer"),
    ("--depth", "0", "depth (--depth) must be a positive integer"),
    ("--batch-real", "0", "batch_real (--batch-real)"),
    ("--lr-images", "nan", "lr_images"),
    ("--lr-images", "1e30", "lr_images (--lr-images)"),
    ("--lr-images", "-1", "lr_images (--lr-images)"),
    ("--ipc", "0", "ipc must be a whole number >= 1"),
    ("--iterations", "-3", "iterations must be a whole number >= 0"),
    ("--eval-epochs", "-1", "epochs (--eval-epochs)"),
    ("--eval-models", "-2", "n_models (--eval-models)"),
])
def test_distill_options_refused_before_loading(tmp_path, csv3, capsys, option, value, fragment):
    args = ["distill", csv3, "--method", "dm", "--model", "mlp", "--iterations", "2", option, value,
            "--out", tmp_path / "o"]
    if option == "--eval-epochs":
        args += ["--eval-models", "1"]
    code, _, err = run(args, capsys)
    one_line_error(code, err, fragment)
    assert not loaded(err) and not (tmp_path / "o").exists()


def test_eval_epochs_zero_and_epochs_without_models(tmp_path, csv3, capsys):
    for extra in (["--eval-models", "1", "--eval-epochs", "0"], ["--eval-epochs", "5"]):
        code, _, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--iterations", "2", *extra,
                            "--out", tmp_path / "o"], capsys)
        assert code == 2 and not loaded(err) and "--eval-" in err


def test_convnet_deeper_than_the_images_allow(tmp_path, capsys):
    path = tmp_path / "img.npz"
    np.savez(path, X=np.random.default_rng(0).random((40, 8, 8)), y=np.arange(40) % 2)
    code, _, err = run(["distill", path, "--method", "dm", "--depth", "4", "--iterations", "2",
                        "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "use --depth 3 or less")


@pytest.mark.parametrize("extra, fragment", [
    (["--eval-models", "0"], "n_models (--eval-models)"),
    (["--eval-epochs", "0"], "epochs (--eval-epochs)"),
    (["--eval-epochs", "-1"], "epochs (--eval-epochs)"),
])
def test_evaluate_protocol_options_refused_before_anything_trains(tmp_path, csv3, capsys, extra, fragment):
    code, _, err = run(["evaluate", csv3, "--ratios", "0.5", "--seeds", "1", "--protocol", "dc", *extra,
                        "--out", tmp_path / "run"], capsys)
    one_line_error(code, err, fragment)
    assert not loaded(err) and not (tmp_path / "run").exists()


def test_evaluate_library_refuses_protocol_options_first(tmp_path):
    from datadistill.evaluation import evaluate

    ds = load("two-gaussians")
    for options in ({"n_models": 0}, {"epochs": -1}, {"n_modles": 3}):
        with pytest.raises(ConfigError):
            evaluate(ds, ratios=(0.1,), seeds=1, protocol="dc", protocol_options=options, out=tmp_path / "run",
                     progress=False)
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("extra, fragment", [
    (["--ratio", "2"], "ratio must be in (0, 1]"),
    (["--ratio", "nan"], "ratio must be in (0, 1]"),
    (["--size", "0"], "size must be a positive integer"),
    (["--size", "-4"], "size must be a positive integer"),
])
def test_ratio_and_size_checked_before_loading(tmp_path, capsys, extra, fragment):
    big = tmp_path / "big.npz"
    np.savez(big, X=np.zeros((50_000, 20), dtype=np.float32), y=np.arange(50_000) % 2)
    code, _, err = run(["select", big, "--method", "random", *extra, "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, fragment)
    assert not loaded(err)


def test_size_smaller_than_the_classes_warns(tmp_path, csv10, capsys):
    code, out, err = run(["select", csv10, "--method", "stratified", "--size", "3", "--per-class", "balanced",
                          "--out", tmp_path / "o"], capsys)
    assert code == 0 and "Traceback" not in err
    warning = [line for line in err.splitlines() if ": warning: " in line]
    assert len(warning) == 1 and "leaves 7 classes with no sample" in warning[0]
    assert "at least 10 samples" in warning[0]
    code, out, err = run(["select", csv10, "--method", "stratified", "--size", "10", "--per-class", "balanced",
                          "--out", tmp_path / "o2"], capsys)
    assert code == 0 and "warning" not in err


def test_out_naming_an_existing_file(tmp_path, csv3, capsys):
    existing = tmp_path / "notes.txt"
    existing.write_text("mine")
    for command in (["select", csv3, "--method", "random", "--size", "6"],
                    ["distill", csv3, "--method", "dm", "--model", "mlp", "--iterations", "1"],
                    ["evaluate", csv3, "--ratios", "0.5", "--seeds", "1"]):
        for flags in ([], ["--overwrite"]):
            code, _, err = run([*command, "--out", existing, *flags], capsys)
            one_line_error(code, err, "an existing file, not a folder")
            assert not loaded(err)
        code, _, err = run([*command, "--out", existing / "sub"], capsys)
        one_line_error(code, err, "is a file, so no folder can be made in it")
    assert existing.read_text() == "mine"


def test_checkpoint_naming_a_folder(tmp_path, csv3, capsys):
    code, _, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--iterations", "1",
                        "--checkpoint", tmp_path, "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "--checkpoint")


def _writable(folder: Path) -> bool:
    try:
        fd, name = tempfile.mkstemp(dir=folder)
    except OSError:
        return False
    os.close(fd)
    os.unlink(name)
    return True


@pytest.fixture
def read_only_dir(tmp_path):
    """A folder this user cannot write in: a chmod 555 folder, or /proc where permissions do not bind (root)."""
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    try:
        if not _writable(ro):
            yield ro
        elif Path("/proc").is_dir() and not _writable(Path("/proc")):
            yield Path("/proc")
        else:
            pytest.skip("no folder on this platform refuses writes to this user")
    finally:
        ro.chmod(0o755)


@pytest.mark.parametrize("where", ["out", "out/missing/parent"])
def test_read_only_output_location_refused_before_work(tmp_path, csv3, capsys, read_only_dir, where):
    target = read_only_dir / where
    for command in (["select", csv3, "--method", "random", "--size", "6"],
                    ["distill", csv3, "--method", "dm", "--model", "mlp", "--iterations", "1"],
                    ["evaluate", csv3, "--ratios", "0.5", "--seeds", "1"]):
        code, _, err = run([*command, "--out", target], capsys)
        one_line_error(code, err, "cannot write in")
        assert not loaded(err)


def test_missing_parent_folders_are_fine(tmp_path, csv3, capsys):
    code, _, err = run(["select", csv3, "--method", "random", "--size", "6", "--out", tmp_path / "a" / "b" / "c"],
                       capsys)
    assert code == 0 and (tmp_path / "a" / "b" / "c" / "meta.json").exists()
    assert not [p for p in tmp_path.rglob(".datadistill-write-test-*")]


def test_methods_into_a_closed_pipe():
    proc = subprocess.Popen([sys.executable, "-m", "datadistill.cli", "methods"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()  # like `| head -1` exiting before the listing is written
    err = proc.stderr.read().decode()
    proc.wait(timeout=300)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
    assert proc.returncode == cli.EXIT_BROKEN_PIPE


# --- damaged sets and run directories -------------------------------------------------------------
@pytest.fixture
def saved_set(tmp_path, csv3, capsys):
    out = tmp_path / "set"
    assert run(["select", csv3, "--method", "random", "--size", "9", "--out", out], capsys)[0] == 0
    return out


def test_damaged_sets_get_one_line(tmp_path, csv3, saved_set, capsys):
    import shutil

    cases = {}
    meta_list = tmp_path / "meta_list"
    shutil.copytree(saved_set, meta_list)
    (meta_list / "meta.json").write_text("[1, 2]")
    cases[meta_list] = "meta.json"
    no_x = tmp_path / "no_x"
    shutil.copytree(saved_set, no_x)
    with np.load(saved_set / "data.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "X"}
    np.savez(no_x / "data.npz", **arrays)
    cases[no_x] = "data.npz"
    garbage = tmp_path / "garbage"
    shutil.copytree(saved_set, garbage)
    (garbage / "data.npz").write_bytes(b"PK\x03\x04 not really")
    cases[garbage] = "garbage"
    for directory, fragment in cases.items():
        code, _, err = run(["show", directory], capsys)
        one_line_error(code, err, fragment, exit_code=3)
        code, _, err = run(["evaluate", csv3, "--ratios", "0.5", "--seeds", "1", "--distilled", directory], capsys)
        one_line_error(code, err, fragment, exit_code=3)
        assert not loaded(err)


@pytest.mark.parametrize("content, fragment", [
    ({"rows": 5}, "must be lists"),
    ({"rows": [], "context": 3}, "must be lists"),
    ({"rows": [{"size": 3}]}, "row 0 is not a result row"),
    ({"rows": ["x"]}, "row 0 is not a result row"),
    ({"rows": [{"method": "random", "size": 3, "ratio": 0.1, "test_accuracy": "high", "train_seconds": 1}]},
     "no number for test_accuracy"),
])
def test_damaged_report(tmp_path, capsys, content, fragment):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "report.json").write_text(json.dumps(content))
    with pytest.raises(ArtifactError, match="damaged report"):
        Report.from_json(run_dir / "report.json")
    code, _, err = run(["report", run_dir], capsys)
    one_line_error(code, err, fragment, exit_code=3)


# --- library: parameters --------------------------------------------------------------------------
def test_selector_and_distiller_parameters_are_checked_in_the_library():
    with pytest.raises(ConfigError, match="max_iter must be an integer"):
        get_selector("kmeans", size=5, max_iter="abc")
    with pytest.raises(ConfigError, match="whole number"):
        get_selector("kmeans", size=5, max_iter=2.5)
    with pytest.raises(ConfigError, match="--seed"):
        get_selector("random", size=5, random_state=-1).check_params()
    with pytest.raises(ConfigError, match="size must be a positive integer"):
        get_selector("random", size=0).check_params()
    with pytest.raises(ConfigError, match="finite"):
        get_distiller("dm", lr_images=float("nan"))
    for params, fragment in [({"lr_images": 1e30}, "lr_images"), ({"batch_real": 0}, "batch_real"),
                             ({"random_state": 2**40}, "--seed"), ({"time_budget": -1}, "time_budget"),
                             ({"time_budget": float("inf")}, "time_budget"),
                             ({"model_kwargs": {"width": 0}}, "width"),
                             ({"model_kwargs": {"widht": 8}}, "unknown model option widht")]:
        with pytest.raises(ConfigError, match=fragment):
            get_distiller("dm", model="mlp", **params).check_params()


# --- distillation time budget ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny():
    import torch

    torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)  # its first use imports torch._dynamo (seconds)
    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    return Dataset.create(rng.normal(size=(60, 5)).astype(np.float32) + y[:, None], y,
                          test=(rng.normal(size=(15, 5)), np.arange(15) % 3), name="tiny")


def test_time_budget_stops_cleanly_and_records_it(tiny, tmp_path):
    budget = 1.0
    start = time.perf_counter()
    ds = get_distiller("dm", ipc=2, model="mlp", iterations=10**7, batch_real=8, lr_images=0.1, device="cpu",
                       time_budget=budget, checkpoint=tmp_path / "ckpt.pt").fit(tiny)
    elapsed = time.perf_counter() - start
    t = ds.meta["timings"]
    assert t["stopped_by_time_budget"] is True and t["time_budget_seconds"] == budget
    assert 0 < t["iterations_done"] < 10**7 and t["iterations_run"] == t["iterations_done"]
    assert t["iterations_planned"] == 10**7
    assert len(ds.meta["curves"]["matching_loss"]) == t["iterations_done"]
    assert t["total_seconds"] <= budget + 0.5 and elapsed < budget + 3
    assert np.isfinite(ds.X).all() and len(ds) == 6
    # the checkpoint holds the iterations done: a rerun without a budget continues from there
    again = get_distiller("dm", ipc=2, model="mlp", iterations=t["iterations_done"] + 3, batch_real=8,
                          lr_images=0.1, device="cpu", checkpoint=tmp_path / "ckpt.pt").fit(tiny)
    assert again.meta["timings"]["this_run_iterations"] == 3  # iterations_run counts the earlier run's too
    assert again.meta["timings"]["iterations_run"] == t["iterations_done"] + 3
    assert again.meta["timings"]["stopped_by_time_budget"] is False


def test_no_budget_runs_every_iteration(tiny):
    ds = get_distiller("dm", ipc=1, model="mlp", iterations=4, device="cpu").fit(tiny)
    t = ds.meta["timings"]
    assert t["iterations_done"] == 4 and t["stopped_by_time_budget"] is False and t["time_budget_seconds"] is None


def test_divergence_is_refused_not_saved(tiny, tmp_path, csv3, capsys):
    class Exploding(DistributionMatching):
        def _step(self, ctx, it):
            super()._step(ctx, it)
            if it == 2:
                with __import__("torch").no_grad():
                    ctx.X_syn.mul_(float("inf"))
            return 0.0 if it < 3 else float("nan")

    with pytest.raises(ConfigError, match=r"diverged at iteration \d.*lower --lr-images"):
        Exploding(ipc=1, model="mlp", iterations=10, device="cpu").fit(tiny)
    # a rate this large blows distribution matching up on this data: refused, nothing saved
    code, _, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--lr-images", "1e7",
                        "--iterations", "200", "--device", "cpu", "--out", tmp_path / "o"], capsys)
    one_line_error(code, err, "diverged at iteration")
    assert not (tmp_path / "o").exists()


def test_distill_cli_time_budget(tmp_path, csv3, capsys, monkeypatch):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)  # progress bars are drawn on a terminal only
    code, out, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--ipc", "2", "--iterations",
                          "10000000", "--time-budget", "1s", "--lr-images", "0.1", "--device", "cpu",
                          "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "time budget of 1 s reached after" in out and "of 10,000,000 iterations" in out
    assert "budget left" in err  # the progress bar says when it will stop
    meta = json.loads((tmp_path / "o" / "meta.json").read_text())
    assert meta["timings"]["stopped_by_time_budget"] is True


def test_distill_cli_default_budget_on_cpu(tmp_path, csv3, capsys, monkeypatch):
    monkeypatch.setattr(cli, "CPU_TIME_BUDGET", 1.0)
    code, out, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--ipc", "2", "--device", "cpu",
                          "--lr-images", "0.1", "--out", tmp_path / "o"], capsys)
    assert code == 0, err
    assert "on a CPU: stopping after 1 s" in err and "of 20,000 iterations" in out
    code, out, err = run(["distill", csv3, "--method", "dm", "--model", "mlp", "--ipc", "2", "--device", "cpu",
                          "--iterations", "3", "--out", tmp_path / "o2"], capsys)
    assert code == 0 and "time budget" not in out and "on a CPU" not in err


@pytest.mark.parametrize("text", ["soon", "0", "-5", "5d"])
def test_time_budget_option_refuses_nonsense(tmp_path, csv3, capsys, text):
    with pytest.raises(SystemExit) as exc:
        main(["distill", str(csv3), "--method", "dm", "--time-budget", text, "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "--time-budget" in capsys.readouterr().err


@pytest.mark.parametrize("text, seconds", [("90", 90), ("90s", 90), ("5m", 300), ("1.5h", 5400),
                                           ("1h30m", 5400), ("none", math.inf)])
def test_time_budget_option_formats(text, seconds):
    assert cli._duration(text) == seconds


def test_help_names_the_paper_scale_budget(capsys):
    with pytest.raises(SystemExit):
        main(["distill", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "dm and dm-multilayer 20,000" in text and "--time-budget" in text and "5m on a CPU" in text


# --- property tests ----------------------------------------------------------------------------------
PROPERTY = settings(max_examples=30, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])


def assert_valid(ds):
    """The Dataset contract: labels 0..K-1, at least two classes in training, finite floats, a test split."""
    assert isinstance(ds, Dataset) and ds.test is not None
    assert len(np.unique(ds.y)) >= 2
    check_sample_shape(ds.sample_shape, "dataset")
    for part in (ds, ds.test):
        assert len(part.X) == len(part.y) > 0
        assert part.y.dtype == np.int64 and part.y.min() >= 0 and part.y.max() < ds.n_classes
        assert part.X.dtype in (np.float32, np.uint8)
        assert np.isfinite(part.X).all()
        assert part.X.shape[1:] == ds.X.shape[1:]


def load_or_data_error(path):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DatadistillWarning)
            ds = load(path)
    except DataError:
        return None
    assert_valid(ds)
    return ds


SHAPES = [(1,), (3,), (6,), (4, 4), (8, 8), (4, 4, 1), (6, 5, 3), (3, 4, 4),  # accepted
          (0,), (2, 2), (3, 9), (5, 7, 9), (2, 3, 4, 5)]  # refused
MUTATIONS = [None] * 8 + ["nan", "inf", "huge", "fewer labels", "more labels", "one class", "half label",
                          "nan label", "zero rows", "lonely class", "2-D labels"]


@st.composite
def npz_contents(draw):
    """Arrays that mostly make a valid data set, with random shapes, dtypes and duplicate rows, then maybe one fault."""
    n = draw(st.integers(6, 30))
    shape = draw(st.sampled_from(SHAPES))
    dtype = draw(st.sampled_from([np.float64, np.float32, np.int64, np.uint8, np.bool_]))
    elements = st.floats(-1e3, 1e3, width=32) if np.dtype(dtype).kind == "f" else None
    X = draw(hnp.arrays(dtype, (n, *shape), elements=elements))
    if draw(st.booleans()):  # duplicate rows
        X = X[draw(st.lists(st.integers(0, n - 1), min_size=n, max_size=n))]
    k = draw(st.integers(2, 3))
    y = np.asarray(draw(st.permutations(list(np.arange(n) % k))), dtype=np.int64)
    labels = draw(st.sampled_from(["ids", "offset", "str", "float"]))
    y = {"ids": y, "offset": y * 7 - 5, "str": np.array(["cat", "dog", "é"])[y], "float": y.astype(float)}[labels]
    mutation = draw(st.sampled_from(MUTATIONS))
    if mutation in ("nan", "inf", "huge"):
        X = X.astype(np.float64)
        X.reshape(n, -1)[draw(st.integers(0, n - 1)), 0:1] = {"nan": np.nan, "inf": -np.inf, "huge": 1e300}[mutation]
    elif mutation == "fewer labels":
        y = y[:-1]
    elif mutation == "more labels":
        y = np.concatenate([y, y[:1]])
    elif mutation == "one class":
        y = np.full_like(y, y[0])
    elif mutation in ("half label", "nan label"):
        y = (y if y.dtype.kind in "iuf" else np.arange(len(y)) % k).astype(float)
        y[0 if mutation == "half label" else -1] = 0.5 if mutation == "half label" else np.nan
    elif mutation == "zero rows":
        X, y = X[:0], y[:0]
    elif mutation == "lonely class":
        y = y.copy()
        y[0] = y.max() + 1 if y.dtype.kind in "iuf" else "lonely"
    elif mutation == "2-D labels":
        y = np.stack([y, y], axis=1)
    keys = draw(st.sampled_from([("X", "y"), ("x_train", "y_train")]))
    return {keys[0]: X, keys[1]: y}


@PROPERTY
@given(npz_contents())
def test_property_random_npz_loads_or_says_why(arrays):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        np.savez(path, **arrays)
        load_or_data_error(path)


@PROPERTY
@given(st.binary(max_size=400), st.booleans())
def test_property_random_bytes_npz(blob, zip_header):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.npz"
        path.write_bytes((b"PK\x03\x04" if zip_header else b"") + blob)
        with pytest.raises(DataError):
            load(path)


BAD_CELLS = ["", "nan", "NA", "x", "1e400", "1,5", "inf"]


@st.composite
def csv_text(draw):
    """A CSV that mostly loads, with random shapes, delimiters and duplicate rows, then maybe one fault."""
    n = draw(st.integers(6, 30))
    n_features = draw(st.integers(1, 4))
    header = [f"f{i}" for i in range(n_features)] + ["label"]
    values = draw(st.lists(st.lists(st.floats(-1e6, 1e6).map(lambda v: f"{v:.6g}") | st.integers(-9, 9).map(str),
                                    min_size=n_features, max_size=n_features), min_size=n, max_size=n))
    k = draw(st.integers(2, 3))
    labels = draw(st.permutations([str(i % k) for i in range(n)]))
    if draw(st.booleans()):
        labels = [["ant", "bee", "cow"][int(c)] for c in labels]
    rows = [r + [c] for r, c in zip(values, labels)]
    if draw(st.booleans()):  # duplicate rows
        rows = rows + rows[: draw(st.integers(1, n))]
    mutation = draw(st.sampled_from([None] * 5 + ["bad cell", "missing label", "duplicate header", "only header",
                                                   "ragged row", "no label column", "one class", "empty lines"]))
    if mutation == "bad cell":
        rows[draw(st.integers(0, len(rows) - 1))][draw(st.integers(0, n_features - 1))] = draw(st.sampled_from(BAD_CELLS))
    elif mutation == "missing label":
        rows[draw(st.integers(0, len(rows) - 1))][-1] = ""
    elif mutation == "duplicate header":
        header[0] = "label"
    elif mutation == "only header":
        rows = []
    elif mutation == "ragged row":
        rows[draw(st.integers(0, len(rows) - 1))].append("7")
    elif mutation == "no label column":
        header[-1] = "kind"
    elif mutation == "one class":
        rows = [r[:-1] + ["0"] for r in rows]
    delimiter = draw(st.sampled_from([",", ";", "\t", "|"]))
    lines = [delimiter.join(r) for r in [header, *rows]]
    if mutation == "empty lines":
        lines.insert(draw(st.integers(1, len(lines))), "")
    return "\n".join(lines) + "\n"


@PROPERTY
@given(csv_text())
def test_property_random_csv_loads_or_says_why(text):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "data.csv"
        path.write_text(text)
        load_or_data_error(path)


CHEAP_SELECTORS = ["random", "stratified", "kcenter", "kmeans", "herding", "facility-location", "dbscan",
                   "agglomerative"]


@st.composite
def small_datasets(draw):
    k = draw(st.integers(2, 3))
    d = draw(st.integers(1, 4))
    n_distinct = draw(st.integers(2, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    pool = rng.normal(size=(n_distinct, d)).astype(np.float32)
    n = draw(st.integers(max(2 * k, 6), 40))
    rows = rng.integers(0, n_distinct, size=n)  # duplicates whenever n > n_distinct
    y = np.arange(n) % k
    return Dataset.create(pool[rows], y, name="dups")


@pytest.mark.parametrize("method", CHEAP_SELECTORS)
@settings(max_examples=20, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_property_selector_invariants(method, data):
    ds = data.draw(small_datasets())
    size = data.draw(st.integers(1, len(ds)))
    per_class = data.draw(st.sampled_from(["proportional", "balanced", None]))
    seed = data.draw(st.integers(0, 1000))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DatadistillWarning)
        first = get_selector(method, size=size, per_class=per_class, random_state=seed).fit(ds)
        second = get_selector(method, size=size, per_class=per_class, random_state=seed).fit(ds)
    idx = first.indices_
    assert len(idx) == size
    assert len(np.unique(idx)) == len(idx)
    assert idx.min() >= 0 and idx.max() < len(ds)
    np.testing.assert_array_equal(idx, second.indices_)
    assert len(first.weights_) == size and np.isfinite(first.weights_).all()


def test_no_write_probe_left_behind(tmp_path, csv3, capsys):
    out = tmp_path / "o"
    run(["select", csv3, "--method", "random", "--size", "6", "--out", out], capsys)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".datadistill-write-test-")]
