"""Doors in and out (arrays, pandas, torch, Hugging Face datasets) and the estimator protocol they feed."""

import sys
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.base import clone
from sklearn.datasets import make_blobs
from torch.utils.data import Dataset as TorchDataset
from torch.utils.data import IterableDataset, TensorDataset

from datadistill.data.artifact import DistilledSet
from datadistill.data.dataset import Dataset
from datadistill.errors import ConfigError, DataError
from datadistill.interop import (
    from_arrays,
    from_hf,
    from_pandas,
    from_torch,
    report_to_dataframe,
    to_pandas,
    to_torch,
)
from datadistill.report import Report
from datadistill.select import REGISTRY as SELECTORS
from datadistill.synth import REGISTRY as DISTILLERS


@pytest.fixture(scope="module")
def blobs():
    X, y = make_blobs(n_samples=150, centers=6, n_features=4, cluster_std=2.0, random_state=0)
    return X.astype(np.float32), (y % 3).astype(np.int64)


def images(n=30, side=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, size=(n, side, side), dtype=np.uint8), np.arange(n) % 3


# --- from_arrays --------------------------------------------------------------------------------------
def test_from_arrays_keeps_samples_and_names(blobs):
    X, y = blobs
    ds = from_arrays(X, y, classes=["a", "b", "c"], name="blobs")
    assert isinstance(ds, Dataset) and ds.name == "blobs" and ds.test is None
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.classes == ("a", "b", "c") and ds.info["format"] == "arrays"


def test_from_arrays_test_pair_split_and_tensors(blobs):
    X, y = blobs
    names = np.array(["cat", "dog", "eel"])[y]
    ds = from_arrays(torch.from_numpy(X[:100]), names[:100], test=(torch.from_numpy(X[100:]), names[100:]))
    assert ds.classes == ("cat", "dog", "eel") and len(ds) == 100 and len(ds.test) == 50
    np.testing.assert_array_equal(np.array(ds.classes)[ds.test.y], names[100:])

    split = from_arrays(X, y, test_size=0.2, random_state=4)
    assert len(split.test) == 30 and len(split) == 120
    assert split.info["split"]["random_state"] == 4 and split.info["split"]["test_fraction"] == 0.2
    np.testing.assert_array_equal(np.bincount(split.test.y), [10, 10, 10])  # stratified
    with pytest.raises(ConfigError, match="not both"):
        from_arrays(X, y, test=(X, y), test_size=0.2)
    with pytest.raises(ConfigError, match="test_size must be a fraction"):
        from_arrays(X, y, test_size=1.5)


def test_from_arrays_names_a_bad_row(blobs):
    X, y = blobs
    X = X.copy()
    X[17, 2] = np.nan
    with pytest.raises(DataError, match="row 17"):
        from_arrays(X, y)


# --- from_pandas --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pd():
    return pytest.importorskip("pandas")


def frame(pd, blobs):
    X, y = blobs
    df = pd.DataFrame(X, columns=["w", "x", "y", "z"], index=[f"r{i}" for i in range(len(X))])
    df["species"] = np.array(["cat", "dog", "eel"])[y]
    return df


def test_from_pandas_label_and_features(pd, blobs):
    X, y = blobs
    df = frame(pd, blobs)
    ds = from_pandas(df, label="species")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.classes == ("cat", "dog", "eel")
    assert ds.info["features"] == ["w", "x", "y", "z"] and ds.info["label"] == "species"
    two = from_pandas(df, label="species", features=["z", "x"])
    np.testing.assert_array_equal(two.X, X[:, [3, 1]])


def test_from_pandas_categorical_bool_and_test_frame(pd, blobs):
    df = frame(pd, blobs)
    df["flag"] = df["w"] > 0
    df["species"] = pd.Categorical(df["species"], categories=["eel", "dog", "cat"])
    ds = from_pandas(df.iloc[:120], label="species", test=df.iloc[120:])
    assert ds.classes == ("eel", "dog", "cat")  # the categorical's own order
    assert ds.X.shape == (120, 5) and set(np.unique(ds.X[:, 4])) <= {0.0, 1.0}
    assert len(ds.test) == 30
    np.testing.assert_array_equal(np.array(ds.classes)[ds.test.y], df["species"].iloc[120:].astype(str))


def test_from_pandas_names_the_non_numeric_column(pd, blobs):
    df = frame(pd, blobs)
    df["colour"] = "red"
    with pytest.raises(DataError, match=r"column 'colour' is not numeric.*'red'"):
        from_pandas(df, label="species")
    assert from_pandas(df, label="species", features=["w", "x"]).X.shape == (150, 2)


def test_from_pandas_names_rows_with_nan(pd, blobs):
    df = frame(pd, blobs)
    df.loc["r3", "x"] = np.nan
    df.loc["r40", "z"] = np.inf
    with pytest.raises(DataError, match=r"2 rows with NaN.*'r3', 'r40'.*column 'x'.*dropna"):
        from_pandas(df, label="species")
    df = frame(pd, blobs)
    df.loc["r8", "species"] = None
    with pytest.raises(DataError, match=r"label column 'species' is missing in 1 row \(index 'r8'\)"):
        from_pandas(df, label="species")


def test_from_pandas_refuses_missing_columns(pd, blobs):
    df = frame(pd, blobs)
    with pytest.raises(DataError, match="label column 'label' not found"):
        from_pandas(df)
    with pytest.raises(DataError, match="feature column 'q' not found"):
        from_pandas(df, label="species", features=["w", "q"])
    with pytest.raises(ConfigError, match="needs a pandas DataFrame"):
        from_pandas(df.to_numpy(), label="species")


def test_pandas_missing_is_a_clear_import_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "pandas", None)
    with pytest.raises(ImportError, match=r"pip install 'datadistill\[pandas\]'"):
        from_pandas(object(), label="y")


# --- from_torch ---------------------------------------------------------------------------------------
class Counting(TorchDataset):
    """A map-style data set that counts reads and can return a bad sample at one index."""

    def __init__(self, X, y, bad=None, bad_item=None):
        self.X, self.y, self.bad, self.bad_item, self.reads = X, y, bad, bad_item, 0
        self.classes = ["zero", "one", "two"]

    def __len__(self):
        return len(self.X)

    def __getitem__(self, i):
        self.reads += 1
        if i == self.bad:
            return self.bad_item
        return torch.from_numpy(self.X[i]), int(self.y[i])


def test_from_torch_reads_every_sample_in_batches():
    X, y = images(n=23)
    source = Counting(X, y)
    ds = from_torch(source, batch_size=5)  # 5 batches, the last one short
    assert source.reads == 23 and ds.name == "Counting"
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.X.dtype == np.uint8 and ds.classes == ("zero", "one", "two")


def test_from_torch_tensor_dataset_pil_images_and_test(blobs):
    X, y = blobs
    ds = from_torch(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), test=TensorDataset(
        torch.from_numpy(X[:30]), torch.from_numpy(y[:30])), classes=["a", "b", "c"])
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.test.y, y[:30])
    assert ds.classes == ("a", "b", "c")

    pixels, labels = images(n=12, side=8)

    class Pictures(TorchDataset):
        def __len__(self):
            return len(pixels)

        def __getitem__(self, i):
            return Image.fromarray(pixels[i]), labels[i]  # numpy int labels, PIL samples (torchvision without ToTensor)

    pics = from_torch(Pictures(), batch_size=4, test_size=0.25)
    assert pics.X.shape[1:] == (8, 8) and len(pics) + len(pics.test) == 12
    assert pics.info["split"]["n_test"] == 3


def test_from_torch_names_the_bad_sample():
    X, y = images(n=20)
    with pytest.raises(DataError, match=r"sample 13 has shape \(5, 5\) but sample 0 has \(6, 6\)"):
        from_torch(Counting(X, y, bad=13, bad_item=(torch.zeros(5, 5), 1)), batch_size=8)
    with pytest.raises(DataError, match=r"sample 2 has shape \(5, 5\) but sample 0 has \(6, 6\)"):
        from_torch(Counting(X, y, bad=2, bad_item=(torch.zeros(5, 5), 1)), batch_size=8)  # across a batch edge too
    with pytest.raises(DataError, match="label of sample 4 has shape .*one-hot"):
        from_torch(Counting(X, y, bad=4, bad_item=(torch.zeros(6, 6), torch.eye(3)[1])))
    with pytest.raises(DataError, match="sample 0 is a str, not a .sample, label. pair"):
        from_torch(Counting(X, y, bad=0, bad_item="oops"))


def test_from_torch_batch_edge_shape_error():
    X, y = images(n=20)
    # sample 8 opens the second batch of 8: the check across batches names it
    with pytest.raises(DataError, match=r"sample 8 has shape \(5, 5\) but sample 0 has \(6, 6\)"):
        from_torch(Counting(X, y, bad=8, bad_item=(torch.zeros(5, 5, dtype=torch.uint8), 1)), batch_size=8)


def test_from_torch_refuses_iterable_datasets():
    class Stream(IterableDataset):
        def __iter__(self):
            yield torch.zeros(3), 0

    with pytest.raises(DataError, match="map-style"):
        from_torch(Stream())
    with pytest.raises(ConfigError, match="batch_size"):
        from_torch(Counting(*images(n=4)), batch_size=0)


def test_from_torch_result_feeds_a_selector(blobs):
    X, y = blobs
    ds = from_torch(TensorDataset(torch.from_numpy(X), torch.from_numpy(y)), test_size=0.2)
    out = SELECTORS["kcenter"](size=12, random_state=0).fit_transform(ds)
    assert len(out) == 12 and out.source_fingerprint == ds.fingerprint


# --- from_hf ------------------------------------------------------------------------------------------
class ClassLabelLike:
    def __init__(self, names):
        self.names = names


class FakeHF:
    """Behaves like datasets.Dataset where from_hf looks: features, len, column / row-slice access, with_format."""

    def __init__(self, columns, features=None):
        self.columns = columns
        self.features = features or {k: object() for k in columns}
        self.formats = []
        self.slices = []

    def __len__(self):
        return len(next(iter(self.columns.values())))

    def with_format(self, kind):
        self.formats.append(kind)
        return self

    def __getitem__(self, key):
        if isinstance(key, str):
            return list(self.columns[key])
        self.slices.append((key.start, key.stop))
        return {k: np.asarray(v[key]) if not isinstance(v, list) else v[key] for k, v in self.columns.items()}


def test_from_hf_reads_a_stand_in_in_batches():
    X, y = images(n=25)
    fake = FakeHF({"img": X, "label": y, "note": np.array(["x"] * 25)},
                  {"img": object(), "label": ClassLabelLike(["c0", "c1", "c2"]), "note": object()})
    ds = from_hf(fake, batch_size=10)  # "img" found without being named
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.classes == ("c0", "c1", "c2") and ds.info["image"] == "img"
    assert fake.formats == ["numpy"] and fake.slices == [(0, 10), (10, 20), (20, 30)]


def test_from_hf_dict_with_test_string_labels_and_lists(blobs):
    X, y = blobs
    names = np.array(["ant", "bee", "cow"])[y]
    train = FakeHF({"features": [list(map(float, r)) for r in X[:100]], "y": list(names[:100])})
    test = FakeHF({"features": [list(map(float, r)) for r in X[100:]], "y": list(names[100:])})
    ds = from_hf({"train": train, "test": test}, image="features", label="y", name="toy")
    assert ds.name == "toy" and ds.classes == ("ant", "bee", "cow")
    np.testing.assert_allclose(ds.X, X[:100])
    np.testing.assert_array_equal(np.array(ds.classes)[ds.test.y], names[100:])


def test_from_hf_names_ragged_rows_and_missing_columns():
    rows = [np.zeros((6, 6), np.uint8)] * 7 + [np.zeros((6, 6, 3), np.uint8)] + [np.zeros((6, 6), np.uint8)] * 4
    fake = FakeHF({"image": rows, "label": [i % 2 for i in range(12)]})
    with pytest.raises(DataError, match=r"column 'image', row 7 has shape \(6, 6, 3\) but row 0 has \(6, 6\)"):
        from_hf(fake, batch_size=5)
    with pytest.raises(DataError, match=r"row 5 has shape \(6, 6, 3\) but row 0 has \(6, 6\)"):
        from_hf(FakeHF({"image": rows[2:], "label": list(range(10))}), batch_size=5)
    with pytest.raises(DataError, match=r"no sample column named image, img, pixel_values; columns: \['x', 'label'\]"):
        from_hf(FakeHF({"x": [[1.0]], "label": [0]}))
    with pytest.raises(DataError, match="label column 'target' not found"):
        from_hf(FakeHF({"image": rows, "label": [0] * 12}), label="target")
    with pytest.raises(ConfigError, match="needs a Hugging Face datasets.Dataset"):
        from_hf([1, 2, 3])


def test_from_hf_path_without_datasets_names_the_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)
    with pytest.raises(ImportError, match=r"pip install 'datadistill\[hf\]'"):
        from_hf(tmp_path)


@pytest.fixture(scope="module")
def hf():
    return pytest.importorskip("datasets")


def test_from_hf_real_images_and_class_labels(hf, tmp_path):
    pixels, labels = images(n=14, side=7)
    features = hf.Features({"image": hf.Image(), "label": hf.ClassLabel(names=["red", "green", "blue"]),
                            "caption": hf.Value("string")})
    real = hf.Dataset.from_dict({"image": [Image.fromarray(p) for p in pixels], "label": labels.tolist(),
                                 "caption": ["text"] * 14}, features=features)
    ds = from_hf(real, batch_size=4)
    np.testing.assert_array_equal(ds.X, pixels)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.classes == ("red", "green", "blue") and ds.X.dtype == np.uint8

    # a DatasetDict saved to disk and read back from its folder: train and test
    split = real.train_test_split(test_size=6, seed=0, stratify_by_column="label")
    split.save_to_disk(tmp_path / "saved")
    again = from_hf(tmp_path / "saved")
    assert len(again) == 8 and len(again.test) == 6 and again.classes == ("red", "green", "blue")
    with pytest.raises(DataError, match="no such folder"):
        from_hf(tmp_path / "absent")


def test_from_hf_real_feature_vectors(hf, blobs):
    X, y = blobs
    real = hf.Dataset.from_dict({"x": X.tolist(), "target": np.array(["p", "q", "r"])[y].tolist()})
    ds = from_hf(real, image="x", label="target", test_size=0.2)
    assert ds.X.dtype == np.float32 and ds.X.shape == (120, 4) and ds.classes == ("p", "q", "r")
    assert ds.info["split"]["n_test"] == 30


# --- the way out --------------------------------------------------------------------------------------
def distilled(soft=True, weights=True, indices=True, X=None):
    X = np.arange(24, dtype=np.float32).reshape(6, 4) if X is None else X
    y = np.array([0, 1, 2, 0, 1, 2])
    rng = np.random.default_rng(0)
    p = rng.random((6, 3)).astype(np.float32)
    return DistilledSet(X=X, y=y, classes=("a", "b", "c"),
                        indices=np.array([5, 9, 2, 40, 7, 11]) if indices else None,
                        weights=np.array([1.0, 2.0, 3.0, 1.0, 2.0, 3.0]) if weights else None,
                        soft_labels=p / p.sum(1, keepdims=True) if soft else None, meta={"method": "toy"})


def test_to_torch_carries_soft_labels_and_weights():
    s = distilled()
    tds = to_torch(s)
    x, y, soft, w = tds[1]
    assert torch.equal(x, torch.from_numpy(s.X[1])) and int(y) == 1 and y.dtype == torch.int64
    assert torch.allclose(soft, torch.from_numpy(s.soft_labels[1])) and float(w) == 2.0
    assert len(tds[0]) == 4 and len(tds) == 6
    assert len(to_torch(s, soft_labels=False)[0]) == 3
    assert len(to_torch(s, soft_labels=False, weights=False)[0]) == 2
    plain = distilled(soft=False, weights=False)
    assert len(to_torch(plain)[0]) == 2
    with pytest.raises(ConfigError, match="soft labels asked for"):
        to_torch(plain, soft_labels=True)


def test_to_torch_dtype_and_a_training_step():
    pixels, labels = images(n=9, side=6)
    s = DistilledSet(X=pixels, y=labels, classes=("a", "b", "c"), meta={"method": "random"})
    tds = to_torch(s, dtype=torch.float32)
    assert tds.tensors[0].dtype == torch.float32 and torch.equal(tds.tensors[0], torch.from_numpy(pixels).float())
    assert to_torch(s).tensors[0].dtype == torch.uint8  # the source's own space by default
    loader = torch.utils.data.DataLoader(tds, batch_size=4)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(36, 3))
    xb, yb = next(iter(loader))
    torch.nn.functional.cross_entropy(model(xb), yb).backward()
    assert model[1].weight.grad is not None


def test_selection_set_to_torch(blobs):
    X, y = blobs
    out = SELECTORS["stratified"](size=9, random_state=0).fit_transform(X, y)
    x, label, weight = to_torch(out)[:]
    np.testing.assert_array_equal(x.numpy(), X[out.indices])
    np.testing.assert_array_equal(label.numpy(), y[out.indices])
    assert weight.shape == (9,)


def test_to_pandas_columns_and_attrs(pd):
    s = distilled()
    df = to_pandas(s)
    assert list(df.columns) == ["x0", "x1", "x2", "x3", "label", "source_row", "weight", "soft_a", "soft_b",
                                "soft_c"]
    assert list(df["label"].cat.categories) == ["a", "b", "c"]
    np.testing.assert_array_equal(df["label"].cat.codes, s.y)
    np.testing.assert_array_equal(df[["x0", "x1", "x2", "x3"]].to_numpy(), s.X)
    np.testing.assert_array_equal(df["source_row"], s.indices)
    np.testing.assert_allclose(df[["soft_a", "soft_b", "soft_c"]].to_numpy(), s.soft_labels)
    assert df.attrs["method"] == "toy" and df.attrs["sample_shape"] == (4,)
    named = to_pandas(distilled(soft=False, weights=False, indices=False), feature_names=["p", "q", "r", "s"])
    assert list(named.columns) == ["p", "q", "r", "s", "label"]
    with pytest.raises(ConfigError, match="clashing: label"):
        to_pandas(s, feature_names=["p", "q", "r", "label"])
    with pytest.raises(ConfigError, match="3 feature names for 4 features"):
        to_pandas(s, feature_names=["p", "q", "r"])


def test_to_pandas_images_flatten_and_round_trip(pd):
    pixels, labels = images(n=9, side=6)
    s = DistilledSet(X=pixels, y=labels, classes=("a", "b", "c"), meta={"method": "random"})
    df = to_pandas(s)
    assert df.shape == (9, 37)
    back = df.drop(columns="label").to_numpy().reshape(-1, *df.attrs["sample_shape"])
    np.testing.assert_array_equal(back, pixels)
    ds = from_pandas(df, label="label")
    np.testing.assert_array_equal(ds.X.reshape(9, 6, 6), pixels)
    np.testing.assert_array_equal(ds.y, labels)
    assert ds.classes == ("a", "b", "c")


def report():
    rows = []
    for seed in (0, 1):
        rows.append({"method": "full", "kind": "full", "size": 100, "ratio": 1.0, "seed": seed,
                     "test_accuracy": 0.9 + 0.02 * seed, "train_seconds": 2.0, "select_seconds": 0.0})
        rows.append({"method": "kcenter", "kind": "selection", "size": 10, "ratio": 0.1, "seed": seed,
                     "test_accuracy": 0.7 + 0.04 * seed, "train_seconds": 0.5, "select_seconds": 0.1,
                     "indices": list(range(10))})
    return Report(rows=rows, context={"dataset": "toy", "model": "mlp", "points": {"X": [[0, 0]], "y": [0]}})


def test_report_to_dataframe_rows_and_aggregate(pd):
    r = report()
    df = report_to_dataframe(r)
    assert len(df) == 4 and list(df.columns[:7]) == ["method", "model", "protocol", "kind", "size", "ratio", "seed"]
    assert "indices" not in df.columns and "test_accuracy" in df.columns
    # rows written before rows named their model: the run's model under the same recipe
    assert set(df.model) == {"mlp"} and set(df.protocol) == {"same"}
    assert all("model" not in row for row in r.rows)  # the report's own rows are left as read
    assert df.attrs["context"] == {"dataset": "toy", "model": "mlp"}
    k = df[df.method == "kcenter"]
    np.testing.assert_allclose(k.test_accuracy, [0.7, 0.74])
    agg = report_to_dataframe(r, aggregate=True)
    assert list(agg.method) == ["full", "kcenter"] and "seed" not in agg.columns
    row = agg.set_index("method").loc["kcenter"]
    assert row.accuracy_mean == pytest.approx(0.72) and row.seeds == 2
    assert row.vs_full_points == pytest.approx((0.72 - 0.91) * 100)
    assert list(agg.columns[:3]) == ["method", "model", "protocol"] and set(agg.protocol) == {"same"}


def test_report_to_dataframe_keeps_each_rows_model_and_protocol(pd):
    rows = [{"method": f"{m} [{arch}]", "kind": "selection", "size": 10, "ratio": 0.1, "seed": 0, "model": arch,
             "protocol": "dc", "test_accuracy": acc, "train_seconds": 1.0}
            for m, arch, acc in (("random", "convnet", 0.5), ("random", "mlp", 0.4), ("dm", "convnet", 0.6))]
    r = Report(rows=rows, context={"dataset": "toy", "model": "convnet (dc protocol)", "protocol": "dc"})
    df = report_to_dataframe(r)
    assert list(df.columns[:3]) == ["method", "model", "protocol"]
    assert list(zip(df.model, df.protocol)) == [("convnet", "dc"), ("mlp", "dc"), ("convnet", "dc")]
    agg = report_to_dataframe(r, aggregate=True)
    assert sorted(zip(agg.method, agg.model)) == [("dm [convnet]", "convnet"), ("random [convnet]", "convnet"),
                                                  ("random [mlp]", "mlp")]


# --- the estimator protocol (issue 12, item 1) --------------------------------------------------------
@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_clones_from_defaults_and_when_fitted(name, blobs):
    X, y = blobs
    est = SELECTORS[name](size=9)
    twin = clone(est)
    assert type(twin) is type(est) and twin.get_params() == est.get_params()
    if name in ("random", "stratified", "kcenter", "herding", "kmeans"):
        est.fit(X, y)
        fresh = clone(est)
        assert not hasattr(fresh, "indices_") and fresh.get_params() == est.get_params()


@pytest.mark.parametrize("name", sorted(DISTILLERS))
def test_every_distiller_clones_from_defaults(name):
    est = DISTILLERS[name]()
    twin = clone(est)
    assert type(twin) is type(est) and twin is not est
    assert twin.get_params(deep=False) == est.get_params(deep=False)
    assert clone(est.set_params(random_state=9)).random_state == 9


@pytest.mark.parametrize("name", sorted(SELECTORS))
def test_every_selector_fits_arrays_as_it_fits_a_dataset(name, blobs):
    X, y = blobs
    extra = {"epochs": 2, "score_params": {"min_steps": 10}} if "seeds" in SELECTORS[name]().get_params() else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        on_arrays = SELECTORS[name](size=12, random_state=2, **extra).fit(X, y)
        on_dataset = SELECTORS[name](size=12, random_state=2, **extra).fit(from_arrays(X, y, name="array"))
    np.testing.assert_array_equal(on_arrays.indices_, on_dataset.indices_)
    assert len(on_arrays.indices_) == 12


SCORE_SELECTORS = sorted(n for n, c in SELECTORS.items() if "seeds" in c().get_params())


def test_score_selectors_are_the_probe_methods():
    assert set(SCORE_SELECTORS) >= {"el2n", "entropy", "forgetting", "gradnorm", "margin", "least-confidence"}


@pytest.mark.parametrize("name", SCORE_SELECTORS)
def test_random_state_seeds_the_probe(name, blobs):
    X, y = blobs
    kw = {"size": 15, "epochs": 2, "score_params": {"min_steps": 10}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        one = SELECTORS[name](random_state=1, **kw).fit(X, y)
        again = SELECTORS[name](random_state=1, **kw).fit(X, y)
        two = SELECTORS[name](random_state=2, **kw).fit(X, y)
        pinned = SELECTORS[name](random_state=2, seeds=(1,), **kw).fit(X, y)
    np.testing.assert_array_equal(one.scores_, again.scores_)
    assert not np.allclose(one.scores_, two.scores_)  # another seed, another probe
    np.testing.assert_array_equal(pinned.scores_, one.scores_)  # explicit probe seeds win over random_state


@pytest.mark.parametrize("name", ["dm", "dc"])
def test_random_state_changes_a_distilled_set(name, blobs):
    X, y = blobs
    kw = dict(ipc=2, iterations=2, model="mlp", model_kwargs={"hidden": (16,)}, batch_real=8, device="cpu")
    a = DISTILLERS[name](random_state=1, **kw).fit(X, y)
    b = DISTILLERS[name](random_state=1, **kw).fit(X, y)
    c = DISTILLERS[name](random_state=2, **kw).fit(X, y)
    np.testing.assert_array_equal(a.X, b.X)
    assert not np.allclose(a.X, c.X)
