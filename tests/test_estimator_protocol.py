"""Selectors and distillers follow scikit-learn's estimator protocol: clone, get/set_params, repr, array input."""

import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import make_blobs
from sklearn.utils.estimator_checks import (
    check_get_params_invariance,
    check_no_attributes_set_in_init,
    check_parameters_default_constructible,
    check_set_params,
)

from datadistill.data.dataset import Dataset
from datadistill.errors import ConfigError
from datadistill.estimator import Estimator
from datadistill.select import REGISTRY as SELECTORS
from datadistill.synth import REGISTRY as DISTILLERS


def selector(name):
    return SELECTORS[name](size=12, random_state=3)


def distiller(name):
    # model_kwargs and buffer were rewritten in __init__ once (a copied dict, str(path)); clone must see them untouched
    extra = {"buffer": Path("experts")} if name == "mtt" else {}
    return DISTILLERS[name](ipc=3, random_state=5, model_kwargs={"width": 8}, **extra)


ESTIMATORS = ([pytest.param(selector, n, id=f"select-{n}") for n in sorted(SELECTORS)]
              + [pytest.param(distiller, n, id=f"distill-{n}") for n in sorted(DISTILLERS)])


@pytest.mark.parametrize(("make", "name"), ESTIMATORS)
def test_clone_gives_equal_parameters(make, name):
    est = make(name)
    twin = clone(est)
    assert type(twin) is type(est) and twin is not est
    assert twin.get_params(deep=False) == est.get_params(deep=False)
    assert twin.get_params(deep=False)["random_state"] == est.random_state


@pytest.mark.parametrize(("make", "name"), ESTIMATORS)
def test_set_params_round_trips_and_refuses_unknown_keys(make, name):
    est = make(name)
    params = est.get_params(deep=False)
    assert est.set_params(**params) is est
    assert all(est.get_params(deep=False)[k] is v for k, v in params.items())
    assert est.set_params(random_state=11).get_params()["random_state"] == 11
    with pytest.raises(ConfigError, match="unknown parameter 'no_such_option'.*random_state"):
        est.set_params(random_state=12, no_such_option=1)
    assert est.random_state == 11  # nothing set when a key is refused


@pytest.mark.parametrize(("make", "name"), ESTIMATORS)
def test_repr_names_the_class_and_changed_parameters_only(make, name):
    est = make(name)
    text = repr(est)
    assert text.startswith(f"{type(est).__name__}(") and text.endswith(")")
    assert "random_state=" in text
    assert "min_per_class" not in text and "checkpoint_every" not in text and "progress" not in text
    assert "random_state=7" in repr(est.set_params(random_state=7))


@pytest.mark.parametrize(("make", "name"), ESTIMATORS)
def test_deep_params_and_scikit_learn_parameter_checks(make, name):
    est = make(name)
    assert est.get_params(deep=True).items() >= est.get_params(deep=False).items()
    check_no_attributes_set_in_init(name, est)
    check_get_params_invariance(name, est)
    check_parameters_default_constructible(name, est)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it may advise delaying validation to fit; nothing to assert about that
        check_set_params(name, est)


def test_distiller_params_keep_resolved_defaults():
    """``params()`` (meta and checkpoint keys) still reports what a run uses, though __init__ stores the arguments."""
    dc = DISTILLERS["dc"](ipc=10)
    assert dc.outer_loop is None and dc.inner_loop is None and dc.dsa is None and dc.model_kwargs is None
    assert dc.params()["outer_loop"] == 10 and dc.params()["inner_loop"] == 50
    assert dc.params()["dsa"] is False and DISTILLERS["dsa"]().params()["dsa"] is True
    assert dc.params()["model_kwargs"] == {}
    assert DISTILLERS["mtt"](buffer=Path("experts")).params()["buffer"] == "experts"


# --- array input --------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def arrays():
    X, y = make_blobs(n_samples=240, centers=6, n_features=4, cluster_std=1.0, random_state=2)
    return X.astype(np.float32), y % 3


@pytest.mark.parametrize(("method", "params"), [("kcenter", {}), ("stratified", {}),
                                                ("el2n", {"score_params": {"min_steps": 20}})])
def test_fit_on_arrays_equals_fit_on_dataset(method, params, arrays):
    X, y = arrays
    on_arrays = SELECTORS[method](size=15, random_state=4, **params).fit(X, y)
    on_dataset = SELECTORS[method](size=15, random_state=4, **params).fit(Dataset.create(X, y, name="blobs"))
    np.testing.assert_array_equal(on_arrays.indices_, on_dataset.indices_)
    out = on_arrays.transform(X, y)
    np.testing.assert_array_equal(out.X, X[on_arrays.indices_])
    np.testing.assert_array_equal(out.y, y[on_arrays.indices_])
    np.testing.assert_array_equal(clone(on_arrays).fit_transform(X, y).indices, on_arrays.indices_)


def test_array_input_needs_labels_and_a_dataset_needs_none(arrays):
    X, y = arrays
    with pytest.raises(ConfigError, match="needs labels y"):
        SELECTORS["random"](size=5).fit(X)
    with pytest.raises(ConfigError, match="carries its own labels"):
        SELECTORS["random"](size=5).fit(Dataset.create(X, y), y)


def test_fit_on_pandas(arrays):
    pd = pytest.importorskip("pandas")
    X, y = arrays
    frame = pd.DataFrame(X, columns=[f"f{i}" for i in range(X.shape[1])])
    labels = pd.Series(np.array(["a", "b", "c"])[y])
    sel = SELECTORS["kcenter"](size=9, random_state=1).fit(frame, labels)
    np.testing.assert_array_equal(sel.indices_, SELECTORS["kcenter"](size=9, random_state=1).fit(X, y).indices_)
    assert sel.transform(frame, labels).classes == ("a", "b", "c")


def test_fit_on_objects_with_to_numpy(arrays):
    """Without pandas installed: anything with pandas' ``to_numpy`` goes through it."""
    class Frame:
        def __init__(self, a):
            self.a = a

        def to_numpy(self):
            return self.a

    X, y = arrays
    sel = SELECTORS["stratified"](size=9, random_state=1).fit(Frame(X), Frame(y))
    np.testing.assert_array_equal(sel.indices_, SELECTORS["stratified"](size=9, random_state=1).fit(X, y).indices_)


def test_nested_estimator_parameters():
    class Inner(Estimator):
        def __init__(self, alpha=1.0):
            self.alpha = alpha

    class Outer(Estimator):
        def __init__(self, inner=None, beta=2):
            self.inner = inner
            self.beta = beta

    outer = Outer(inner=Inner(alpha=3.0))
    assert outer.get_params()["inner__alpha"] == 3.0 and "inner__alpha" not in outer.get_params(deep=False)
    assert outer.set_params(inner__alpha=4.0, beta=5).inner.alpha == 4.0 and outer.beta == 5
    assert repr(outer) == "Outer(inner=Inner(alpha=4.0), beta=5)"
    with pytest.raises(ConfigError, match="no parameters of its own"):
        outer.set_params(beta__gamma=1)
    assert clone(outer).inner.alpha == 4.0


def test_distiller_fit_on_arrays(arrays):
    X, y = arrays
    kw = dict(ipc=1, iterations=1, model="mlp", model_kwargs={"hidden": (16,)}, batch_real=8, device="cpu")
    from_arrays = DISTILLERS["dm"](**kw).fit(X, y)
    from_dataset = DISTILLERS["dm"](**kw).fit(Dataset.create(X, y, name="blobs"))
    np.testing.assert_array_equal(from_arrays.X, from_dataset.X)
