"""Performance matching (BPTT meta-learning, kernel ridge regression) on digits and on tabular data."""

import numpy as np
import pytest
import torch
from sklearn.datasets import make_classification

from datadistill.data.dataset import Dataset
from datadistill.errors import ConfigError
from datadistill.synth import get_distiller
from datadistill.synth.performance import network_pool
from datadistill.synth.protocol import evaluate_protocol, random_real_subset

NET = {"width": 16, "depth": 2}
BPTT = dict(model_kwargs=NET, inner_steps=5, lr_inner_init=0.1, lr_images=0.05, batch_real=16, device="cpu")
KRR = dict(model_kwargs=NET, lr_images=0.05, batch_real=16, device="cpu")


@pytest.fixture(scope="module")
def tabular():
    X, y = make_classification(n_samples=1500, n_features=20, n_informative=8, n_redundant=4, n_classes=4,
                               n_clusters_per_class=2, class_sep=1.0, random_state=0)
    return Dataset.create(X[:1200].astype(np.float32), y[:1200], test=(X[1200:], y[1200:]), name="tabular")


def _mean_accuracy(dataset, distilled, **kw) -> float:
    return float(np.mean([r["test_accuracy"] for r in evaluate_protocol(dataset, distilled, **kw)]))


def _lowered(curve, share: float) -> bool:
    c = np.asarray(curve)
    return bool(np.isfinite(c).all() and c[-10:].mean() < share * c[:10].mean())


@pytest.fixture(scope="module")
def bptt_run(digits):
    return get_distiller("bptt", ipc=1, iterations=40, random_state=0, **BPTT).fit(digits)


@pytest.fixture(scope="module")
def krr_run(digits):
    return get_distiller("krr", ipc=1, iterations=40, random_state=0, **KRR).fit(digits)


@pytest.fixture(scope="module")
def random_accuracy(digits):
    return _mean_accuracy(digits, random_real_subset(digits, 1, 0), **EVAL)


EVAL = dict(n_models=3, epochs=150, lr=0.01, model_kwargs=NET, device="cpu", seed=0)


def test_bptt_lowers_its_loss_and_beats_random(digits, bptt_run, random_accuracy):
    assert _lowered(bptt_run.meta["curves"]["matching_loss"], 0.97)
    training = bptt_run.meta["training"]
    assert len(training["inner_lrs"]) == 5 and all(lr > 0 for lr in training["inner_lrs"])
    assert _mean_accuracy(digits, bptt_run, **EVAL) > random_accuracy + 0.05


def test_krr_lowers_its_loss_and_beats_random(digits, krr_run, random_accuracy):
    assert _lowered(krr_run.meta["curves"]["matching_loss"], 0.9)
    assert krr_run.soft_labels is None and krr_run.meta["training"]["soft_labels"] is False
    assert _mean_accuracy(digits, krr_run, **EVAL) > random_accuracy + 0.05


def test_krr_interpolates_its_own_synthetic_set(digits):
    d = get_distiller("krr", ipc=2, iterations=1, ridge=1e-6, n_networks=2, **KRR)
    captured = {}
    orig = d._step

    def step(ctx, it):
        base, params = network_pool(d, ctx, it)
        captured["pred"] = d.predict(ctx, ctx.X_syn, base, params).detach()
        captured["y"] = ctx.y_syn.clone()
        return orig(ctx, it)

    d._step = step
    d.fit(digits)
    onehot = torch.nn.functional.one_hot(captured["y"], 10).float()
    # with a vanishing ridge, each network's kernel regressor reproduces the targets it was fitted on
    assert captured["pred"].shape == (2, 20, 10)
    assert torch.allclose(captured["pred"], onehot.expand(2, -1, -1), atol=0.05)


def test_krr_learned_labels_are_stored_as_soft_labels(digits):
    out = get_distiller("krr", ipc=1, iterations=5, learn_labels=True, lr_labels=0.05, **KRR).fit(digits)
    assert out.meta["training"]["soft_labels"] is True
    soft = out.soft_labels
    assert soft.shape == (10, 10) and np.allclose(soft.sum(1), 1.0, atol=1e-5)
    assert (soft.argmax(1) == out.y).all()
    start = torch.softmax(torch.tensor(5.0 * np.eye(10)), dim=1).numpy()
    assert np.abs(soft - start).max() > 1e-3      # the labels moved


def test_bptt_resume_equals_uninterrupted(digits, tmp_path):
    kw = dict(BPTT, ipc=1, random_state=5, inner_steps=3)
    full = get_distiller("bptt", iterations=4, **kw).fit(digits)
    ck = tmp_path / "bptt.ckpt"
    get_distiller("bptt", iterations=2, checkpoint=ck, checkpoint_every=2, **kw).fit(digits)
    resumed = get_distiller("bptt", iterations=4, checkpoint=ck, checkpoint_every=2, **kw).fit(digits)
    assert resumed.meta["timings"]["this_run_iterations"] == 2
    np.testing.assert_allclose(resumed.X, full.X, rtol=0, atol=1e-5)
    assert resumed.meta["curves"]["matching_loss"] == pytest.approx(full.meta["curves"]["matching_loss"], rel=1e-5)
    assert resumed.meta["training"]["inner_lrs"] == pytest.approx(full.meta["training"]["inner_lrs"], rel=1e-6)


@pytest.mark.parametrize("method", ["bptt", "krr"])
def test_tabular_data_with_mlp(tabular, method):
    params = dict(model="mlp", model_kwargs={"hidden": (64,)}, batch_real=32, device="cpu", lr_images=0.05,
                  random_state=0)
    if method == "bptt":
        params |= {"inner_steps": 5, "lr_inner_init": 0.1}
    out = get_distiller(method, ipc=2, iterations=40, **params).fit(tabular)
    assert out.X.shape == (8, 20) and out.X.dtype == np.float32
    assert _lowered(out.meta["curves"]["matching_loss"], 0.97)
    ev = dict(n_models=3, epochs=150, lr=0.01, model_kwargs={"hidden": (64,)}, device="cpu", seed=0)
    ours = _mean_accuracy(tabular, out, **ev)
    rand = _mean_accuracy(tabular, random_real_subset(tabular, 2, 0), **ev)
    assert ours > rand + 0.03, (ours, rand)


def test_bad_settings_are_refused(digits, tabular):
    with pytest.raises(ConfigError, match="mlp"):
        get_distiller("bptt", ipc=1).fit(tabular)
    with pytest.raises(ConfigError, match="inner_steps"):
        get_distiller("bptt", ipc=1, inner_steps=0).fit(digits)
    with pytest.raises(ConfigError, match="loss"):
        get_distiller("krr", ipc=1, loss="hinge").fit(digits)


def test_krr_online_pool_resumes_exactly(digits, tmp_path):
    # the FRePo-like pool (trained online, re-initialised by age) lives in the checkpoint too
    kw = dict(KRR, ipc=1, random_state=2, n_networks=2, online_steps=3, lr_online=0.05, learn_labels=True)
    full = get_distiller("krr", iterations=4, **kw).fit(digits)
    ck = tmp_path / "krr.ckpt"
    get_distiller("krr", iterations=2, checkpoint=ck, checkpoint_every=2, **kw).fit(digits)
    resumed = get_distiller("krr", iterations=4, checkpoint=ck, checkpoint_every=2, **kw).fit(digits)
    np.testing.assert_allclose(resumed.X, full.X, rtol=0, atol=1e-5)
    np.testing.assert_allclose(resumed.soft_labels, full.soft_labels, rtol=0, atol=1e-6)
    fresh = get_distiller("krr", iterations=4, **dict(kw, online_steps=0)).fit(digits)
    assert np.abs(fresh.X - full.X).max() > 1e-4     # the pool, not fresh networks, drove the run
