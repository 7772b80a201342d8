import json

import numpy as np
import pytest

import datadistill as dd
from datadistill.data import Dataset, DistilledSet, Preprocessor
from datadistill.data.sources import load_cifar10_batches
from datadistill.errors import ArtifactError, DataError


def test_builtins_have_stratified_recorded_split():
    ds = dd.load("digits")
    assert ds.test is not None and len(ds) + len(ds.test) == 1797
    split = ds.info["split"]
    assert split["kind"] == "stratified" and split["random_state"] == 0
    # stratified: class shares in train and test agree closely
    share_tr = ds.class_counts() / len(ds)
    share_te = ds.test.class_counts() / len(ds.test)
    assert np.abs(share_tr - share_te).max() < 0.02
    assert dd.load("digits").fingerprint == ds.fingerprint
    assert dd.load("digits", random_state=1).fingerprint != ds.fingerprint


def test_npz_round_trip_keeps_test_split_and_names(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.integers(0, 255, size=(50, 6, 6), dtype=np.uint8)
    y = np.arange(50) % 3
    path = tmp_path / "d.npz"
    np.savez(path, x_train=X, y_train=y, x_test=X[:9], y_test=y[:9], class_names=np.array(["a", "b", "c"]))
    ds = dd.load(path)
    assert ds.X.dtype == np.uint8 and ds.X.shape == (50, 6, 6)
    assert ds.classes == ("a", "b", "c")
    np.testing.assert_array_equal(ds.test.y, y[:9])
    assert "split" not in ds.info  # the source's own split is kept


def test_npz_X_y_gets_a_split(tmp_path):
    X = np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32)
    y = np.repeat([0, 1], 50)
    np.savez(tmp_path / "t.npz", X=X, y=y)
    ds = dd.load(tmp_path / "t.npz", test_fraction=0.3)
    assert len(ds.test) == 30 and len(ds) == 70


def test_csv_and_parquet_load_the_same(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    X = rng.normal(size=(40, 3))
    labels = np.where(rng.random(40) > 0.5, "cat", "dog")
    table = pa.table({"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2], "animal": labels})
    pq.write_table(table, tmp_path / "t.parquet")
    with open(tmp_path / "t.csv", "w") as fh:
        fh.write("f0,f1,f2,animal\n")
        for row, lab in zip(X, labels):
            fh.write(",".join(f"{v:.17g}" for v in row) + f",{lab}\n")
    a = dd.load(tmp_path / "t.csv", label="animal", ensure_test=False)
    b = dd.load(tmp_path / "t.parquet", label="animal", ensure_test=False)
    assert a.classes == b.classes == ("cat", "dog")
    np.testing.assert_allclose(a.X, b.X)
    np.testing.assert_array_equal(a.y, b.y)
    np.testing.assert_allclose(a.X, X.astype(np.float32))


@pytest.mark.parametrize(
    "content, label, fragment",
    [
        ("a,b,label\n1,2,0\n3,x,1\n", "label", "column 'b' is not numeric"),
        ("a,b,label\n1,2,0\n3,nan,1\n", "label", "row 1, column 'b'"),
        ("a,b,label\n1,2,0\n3,4,0\n", "label", "only 1 class"),
        ("a,b,label\n1,2,0\n3,4,1\n", "cls", "label column 'cls' not found"),
    ],
)
def test_csv_errors_name_the_problem(tmp_path, content, label, fragment):
    f = tmp_path / "bad.csv"
    f.write_text(content)
    with pytest.raises(DataError, match=fragment) as exc:
        dd.load(f, label=label, ensure_test=False)
    assert str(f) in str(exc.value)


def test_unknown_format_and_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        dd.load(tmp_path / "missing.npz")
    (tmp_path / "x.xyz").write_text("1")
    with pytest.raises(DataError, match="unknown format"):
        dd.load(tmp_path / "x.xyz")


def test_dataset_validation():
    with pytest.raises(DataError, match="row 2"):
        Dataset.create(np.array([[0.0], [1.0], [np.inf], [2.0]]), [0, 1, 0, 1])
    with pytest.raises(DataError, match="3 feature rows but 2 labels"):
        Dataset.create(np.zeros((3, 2)), [0, 1])
    with pytest.raises(DataError, match="not an integer class"):
        Dataset.create(np.zeros((3, 2)), [0.0, 1.5, 1.0])
    ds = Dataset.create(np.zeros((4, 2)), [3, 7, 3, 7])
    np.testing.assert_array_equal(ds.y, [0, 1, 0, 1])
    assert ds.classes == ("3", "7")


def test_test_split_labels_follow_the_training_codes():
    X = np.arange(12, dtype=np.float32).reshape(6, 2)
    ds = Dataset.create(X, [5, 9, 5, 9, 5, 9], test=(X[:3], [9, 5, 9]))
    np.testing.assert_array_equal(ds.test.y, [1, 0, 1])       # renumbered the way training labels were
    assert ds.test.classes == ("5", "9") and ds.test.name == "dataset[test]"
    named = Dataset.create(X, ["b", "a", "b", "a", "b", "a"], test=(X[:2], ["a", "b"]))
    np.testing.assert_array_equal(named.test.y, [0, 1])
    with pytest.raises(DataError, match=r"test label 7 never occurs in training"):
        Dataset.create(X, [5, 9, 5, 9, 5, 9], test=(X[:2], [5, 7]))
    with pytest.raises(DataError, match=r"test label 'c' never occurs in training"):
        Dataset.create(X, ["b", "a", "b", "a", "b", "a"], test=(X[:2], ["a", "c"]))
    with pytest.raises(DataError, match="test labels outside the training classes"):
        Dataset.create(X, [0, 1, 0, 1, 0, 1], test=(X[:2], [0, 2]))
    with pytest.raises(DataError, match=r"test samples have shape \(1,\) but training samples \(2,\)"):
        Dataset.create(X, [0, 1, 0, 1, 0, 1], test=(X[:2, :1], [0, 1]))
    with pytest.raises(DataError, match=r"label in row 1 is 1.5, not an integer class"):
        Dataset.create(X, [0.0, 1.5, 1.0, 0.0, 1.0, 0.0])


def test_image_folder(tmp_path):
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in ("ants", "bees"):
        (tmp_path / c).mkdir()
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (5, 7), dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    ds = dd.load(tmp_path, ensure_test=False)
    assert ds.X.shape == (8, 5, 7) and ds.classes == ("ants", "bees")
    Image.fromarray(np.zeros((6, 7), dtype=np.uint8)).save(tmp_path / "bees" / "odd.png")
    with pytest.raises(DataError, match="odd.png"):
        dd.load(tmp_path, ensure_test=False)


def test_cifar10_python_batches(tmp_path):
    import pickle

    rng = np.random.default_rng(0)
    root = tmp_path / "cifar-10-batches-py"
    root.mkdir()
    for name, n in [("data_batch_1", 20), ("data_batch_2", 20), ("test_batch", 10)]:
        batch = {b"data": rng.integers(0, 255, (n, 3072), dtype=np.uint8), b"labels": list(np.arange(n) % 10)}
        with open(root / name, "wb") as fh:
            pickle.dump(batch, fh)
    with open(root / "batches.meta", "wb") as fh:
        pickle.dump({b"label_names": [f"c{i}".encode() for i in range(10)]}, fh)
    ds = load_cifar10_batches(tmp_path)
    assert ds.X.shape == (40, 32, 32, 3) and len(ds.test) == 10 and ds.classes[3] == "c3"
    with open(root / "data_batch_1", "rb") as fh:
        raw = pickle.load(fh)
    # the first image's red channel is the first 1024 bytes, row-major
    np.testing.assert_array_equal(ds.X[0, :, :, 0].ravel(), raw[b"data"][0, :1024])
    pre = Preprocessor.fit(ds)
    assert pre.model_shape == (3, 32, 32)
    np.testing.assert_allclose(pre.inverse(pre.transform(ds.X)), ds.X, atol=1e-3)


def test_artifact_save_is_atomic_and_refuses_overwrite(tmp_path, monkeypatch):
    ds = dd.load("digits")
    s = dd.select(ds, "stratified", size=30, random_state=3)
    out = s.save(tmp_path / "set")
    back = DistilledSet.open(out)
    np.testing.assert_array_equal(back.X, ds.X[back.indices])
    assert back.meta["source_fingerprint"] == ds.fingerprint
    assert json.loads((out / "meta.json").read_text())["method"] == "stratified"
    with pytest.raises(ArtifactError, match="already exists"):
        s.save(out)

    # a failure while writing leaves the previous set intact and no temporary directory behind
    def boom(*a, **k):
        raise RuntimeError("disk full")

    monkeypatch.setattr(np, "savez_compressed", boom)
    with pytest.raises(RuntimeError):
        s.save(out, overwrite=True)
    assert DistilledSet.open(out).meta["method"] == "stratified"
    assert [p.name for p in tmp_path.iterdir()] == ["set"]


def test_atomic_write_replaces_whole_files_or_nothing(tmp_path, monkeypatch):
    import os

    from datadistill.data import artifact
    from datadistill.report import atomic_write as report_atomic_write

    assert report_atomic_write is artifact.atomic_write          # one implementation, imported from both places
    target = tmp_path / "sub" / "state.json"
    assert artifact.atomic_write(target, '{"a": 1}') == target and target.read_text() == '{"a": 1}'
    artifact.atomic_write(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"

    def broken_fsync(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError, match="No space"):
        artifact.atomic_write(target, "never seen")
    assert target.read_bytes() == b"\x00\x01"                    # the old content, whole
    assert sorted(p.name for p in target.parent.iterdir()) == ["state.json"]   # no temporary left behind
    with pytest.raises(OSError, match="No space"):
        artifact.write_marker(tmp_path, "demo")                    # markers are written the same way
    assert not (tmp_path / artifact.MARKER_FILE).exists()
