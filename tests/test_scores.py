"""Per-sample scores: exact gradient norms, uncertainty on a known boundary, forgetting, the registry."""

import numpy as np
import pytest
import torch

from datadistill.data.dataset import Dataset
from datadistill.data.sources import load, two_gaussians
from datadistill.errors import ConfigError
from datadistill.models import build_model
from datadistill.scores import (
    SCORERS,
    el2n,
    entropy,
    least_confidence,
    margin,
    model_grad_norm,
    network_grad_norm,
    score,
    softmax,
    train_probe,
)


@pytest.fixture(scope="module")
def gaussians():
    X, y = two_gaussians(n=400, random_state=0)
    return Dataset.create(X, y, name="g")


def autograd_norms(model, X, y, params):
    out = []
    for i in range(len(y)):
        model.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(torch.as_tensor(X[i:i + 1])), torch.as_tensor(y[i:i + 1]))
        grads = torch.autograd.grad(loss, params)
        out.append(float(torch.sqrt(sum((g.double() ** 2).sum() for g in grads))))
    return np.array(out)


def test_logreg_closed_form_equals_autograd_loop():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(25, 7)).astype(np.float32)
    y = rng.integers(0, 3, size=25)
    model = build_model("logreg", (7,), 3, seed=1).eval()
    with torch.no_grad():
        model.head.weight.mul_(5)
    fast = model_grad_norm(model, X, y)
    slow = autograd_norms(model, X, y, list(model.parameters()))
    np.testing.assert_allclose(fast, slow, rtol=1e-4)


def test_mlp_vmap_norms_equal_autograd_loop_and_last_layer_closed_form():
    rng = np.random.default_rng(1)
    X = rng.normal(size=(20, 1, 4, 4)).astype(np.float32)
    y = rng.integers(0, 4, size=20)
    model = build_model("mlp", (1, 4, 4), 4, hidden=(8,), seed=0).eval()
    fast = network_grad_norm(model, X, y, chunk_size=7)
    slow = autograd_norms(model, X, y, list(model.parameters()))
    np.testing.assert_allclose(fast, slow, rtol=1e-4)
    last = model_grad_norm(model, X, y, last_layer=True)
    np.testing.assert_allclose(last, autograd_norms(model, X, y, list(model.head.parameters())), rtol=1e-4)
    assert np.all(last < fast)


def test_uncertainty_functions():
    p = np.array([[0.5, 0.5, 0.0], [1.0, 0.0, 0.0], [0.6, 0.3, 0.1]])
    np.testing.assert_allclose(entropy(p), [np.log(2), 0.0, -(0.6 * np.log(0.6) + 0.3 * np.log(0.3)
                                                             + 0.1 * np.log(0.1))])
    np.testing.assert_allclose(margin(p), [0.0, 1.0, 0.3])
    np.testing.assert_allclose(least_confidence(p), [0.5, 0.0, 0.4])
    z = np.array([[2.0, 0.0], [0.0, 3.0]])
    np.testing.assert_allclose(el2n(z, np.array([0, 0])), np.linalg.norm(softmax(z) - [[1, 0], [1, 0]], axis=1))


def test_entropy_picks_points_nearest_the_decision_boundary(gaussians):
    e = score(gaussians, "entropy", model="logreg")
    x0 = gaussians.X[:, 0]  # the classes' means differ only along x0, the Bayes boundary is x0 = 0
    top = np.argsort(-e)[:40]
    assert np.abs(x0[top]).max() < 0.35
    assert np.abs(x0[top]).mean() < 0.25 * np.abs(x0).mean()
    m = score(gaussians, "margin", model="logreg")
    assert len(np.intersect1d(np.argsort(m)[:40], top)) >= 38  # binary: margin and entropy agree


def test_gradnorm_and_el2n_rank_mislabelled_samples_first(gaussians):
    y = gaussians.y.copy()
    far = np.argsort(-np.abs(gaussians.X[:, 0]))[:10]  # deep inside their class
    y[far] = 1 - y[far]
    noisy = Dataset.create(gaussians.X, y, name="noisy")
    for name in ("gradnorm", "el2n"):
        s = score(noisy, name, model="logreg")
        assert set(np.argsort(-s)[:10]) == set(far), name
    f = score(noisy, "forgetting", model="logreg", min_steps=200)
    others = np.setdiff1d(np.arange(len(f)), far)
    assert np.all(f[far] >= 1)  # learned by chance at first, then forgotten, or never learned
    assert f[far].mean() > 10 * f[others].mean()
    assert f.max() == 101  # never learned: epochs + 1 (100 epochs of 2 steps reach min_steps=200)


def test_forgetting_counts_events_of_a_learned_set():
    ds = load("digits", ensure_test=False)
    ds = ds.subset(np.arange(300))
    f = score(ds, "forgetting", model="mlp", min_steps=60)
    assert f.shape == (300,)
    assert f.min() == 0 and np.all(f == np.round(f))
    assert (f == 0).mean() > 0.5  # most samples are learned once and never forgotten


def test_registry_directions_seeds_and_errors(gaussians):
    assert SCORERS["margin"].informative == "lowest"
    assert all(SCORERS[n].informative == "highest" for n in ("entropy", "gradnorm", "el2n", "forgetting",
                                                             "least-confidence"))
    a = score(gaussians, "el2n", model="logreg", seeds=(0,), min_steps=100)
    b = score(gaussians, "el2n", model="logreg", seeds=(1,), min_steps=100)
    ab = score(gaussians, "el2n", model="logreg", seeds=(0, 1), min_steps=100)
    np.testing.assert_allclose(ab, (a + b) / 2)
    np.testing.assert_array_equal(a, score(gaussians, "el2n", model="logreg", seeds=(0,), min_steps=100))
    with pytest.raises(ConfigError):
        score(gaussians, "nonsense")
    with pytest.raises(ConfigError):
        score(gaussians, "entropy", bogus_option=1)


def test_train_probe_learns(gaussians):
    net, pre = train_probe(gaussians, model="logreg", epochs=1)
    from datadistill.training import accuracy

    assert accuracy(net, pre.transform(gaussians.X), gaussians.y) > 0.85
