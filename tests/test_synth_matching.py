"""DSA augmentation, distribution matching (dm, dm-multilayer) and gradient matching (dc, dsa) on digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datadistill.data import Dataset
from datadistill.errors import ArtifactError, ConfigError, DataError
from datadistill.synth import DSA, get_distiller
from datadistill.synth.augment import strategy_for
from datadistill.synth.distribution import block_outputs
from datadistill.synth.gradient import GradientMatching, default_loops, gradient_distance
from datadistill.synth.protocol import evaluate_protocol, random_real_subset

# a ConvNet small enough for 8x8 digits: two blocks of 32 channels (three would pool down to 1x1)
NET = {"width": 32, "depth": 2}
ITERATIONS = {"dm": 40, "dm-multilayer": 30, "dc": 12, "dsa": 12}
EVAL = {"n_models": 2, "epochs": 100, "augmentation": "none", "model_kwargs": NET}


@pytest.fixture(scope="module")
def digits_tabular(digits) -> Dataset:
    return Dataset.create(digits.X.reshape(len(digits), -1), digits.y, digits.classes, name="digits-flat",
                          test=(digits.test.X.reshape(len(digits.test), -1), digits.test.y))


@pytest.fixture(scope="module")
def random_accuracy(digits) -> float:
    rows = evaluate_protocol(digits, random_real_subset(digits, 1, seed=0), **EVAL)
    return float(np.mean([r["test_accuracy"] for r in rows]))


# --- DSA ----------------------------------------------------------------------------------------------
def test_dsa_is_differentiable_with_respect_to_the_images():
    x = torch.randn(6, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    aug = DSA(mode="all")
    out = aug(x, 7)
    (out * torch.randn_like(out)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    # the transformation is linear in x for fixed parameters: check the gradient numerically on one entry
    x0 = x.detach().clone()
    eps = torch.zeros_like(x0)
    eps[1, 0, 3, 4] = 1e-6
    weights = torch.randn(6, 3, 8, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    x1 = x0.clone().requires_grad_(True)
    (aug(x1, 7) * weights).sum().backward()
    numeric = ((aug(x0 + eps, 7) - aug(x0 - eps, 7)) * weights).sum() / 2e-6
    assert torch.allclose(x1.grad[1, 0, 3, 4], numeric, rtol=1e-4, atol=1e-6)


def test_dsa_same_seed_same_transform_for_real_and_synthetic_batches():
    gen = torch.Generator().manual_seed(0)
    real = torch.randn(2 * 20, 1, 12, 12, generator=gen)  # 2 classes x 20 real samples
    syn = real.view(2, 20, 1, 12, 12)[:, :3].reshape(6, 1, 12, 12).clone()  # 2 classes x 3 synthetic
    for mode in ("single", "all"):
        aug = DSA("color_crop_cutout_flip_scale_rotate", mode=mode)
        for seed in range(5):
            a_real = aug(real, seed, groups=2).view(2, 20, 1, 12, 12)[:, :3].reshape(6, 1, 12, 12)
            a_syn = aug(syn, seed, groups=2)
            assert torch.allclose(a_real, a_syn, atol=1e-6)
    aug = DSA(mode="all")
    assert not torch.allclose(aug(syn, 1, groups=2), aug(syn, 2, groups=2))
    # per-sample mode (training): samples get different transformations
    per_sample = DSA(mode="all", siamese=False)
    twins = syn[:1].repeat(4, 1, 1, 1)
    out = per_sample(twins, torch.Generator().manual_seed(3))
    assert not torch.allclose(out[0], out[1])


def test_dsa_operations_and_strategy():
    x = torch.randn(4, 1, 8, 8)
    flip = DSA("flip", mode="all", flip_probability=1.0)
    assert torch.allclose(flip(x, 0), x.flip(3), atol=1e-5)
    crop = DSA("crop", mode="all")
    shifted = crop(x, 5)
    # an integer translation keeps pixel values (up to the zero padding)
    vals = shifted[0][shifted[0].abs() > 1e-6]
    assert all(torch.isclose(v, x[0]).any() for v in vals[:10])
    assert "flip" not in strategy_for((1, 28, 28)) and "flip" in strategy_for((3, 32, 32))
    with pytest.raises(ConfigError):
        DSA("color_warp")
    with pytest.raises(ConfigError):
        DSA()(torch.randn(4, 64), 0)


# --- each method lowers its own loss and beats random real at the same IPC ---------------------------
@pytest.mark.parametrize("method", ["dm", "dm-multilayer", "dc", "dsa"])
def test_method_lowers_its_loss_and_beats_random(method, digits, random_accuracy):
    distilled = get_distiller(method, ipc=1, iterations=ITERATIONS[method], model_kwargs=NET, batch_real=64,
                              random_state=0).fit(digits)
    curve = np.asarray(distilled.meta["curves"]["matching_loss"])
    assert len(curve) == ITERATIONS[method]
    assert curve[-3:].mean() < 0.9 * curve[:3].mean()
    assert distilled.X.shape == (10, 8, 8) and distilled.meta["method"] == method
    # samples come back in the source's pixel scale (digits: 0..16), not standardised
    assert -8 < distilled.X.mean() < 24
    rows = evaluate_protocol(digits, distilled, **EVAL)
    acc = float(np.mean([r["test_accuracy"] for r in rows]))
    assert acc > random_accuracy + 0.08, (method, acc, random_accuracy)


def test_recipe_records_augmentation(digits):
    dsa = get_distiller("dsa", ipc=1, iterations=1, model_kwargs=NET, batch_real=16).fit(digits)
    dc = get_distiller("dc", ipc=1, iterations=1, model_kwargs=NET, batch_real=16).fit(digits)
    assert dsa.meta["training"]["augmentation"] == "dsa" and "flip" not in dsa.meta["training"]["dsa_strategy"]
    assert dc.meta["training"]["augmentation"] is None
    assert dsa.meta["training"]["lr"] == 0.01 and dsa.meta["training"]["preprocessor"]["sample_shape"] == [8, 8]


# --- tabular data --------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dm", "dc"])
def test_tabular_with_mlp(method, digits_tabular):
    its = 30 if method == "dm" else 10
    distilled = get_distiller(method, ipc=2, iterations=its, model="mlp", model_kwargs={"hidden": (64,)},
                              batch_real=64).fit(digits_tabular)
    assert distilled.X.shape == (20, 64)
    curve = np.asarray(distilled.meta["curves"]["matching_loss"])
    assert curve[-3:].mean() < curve[:3].mean()
    assert distilled.meta["training"]["augmentation"] is None
    rows = evaluate_protocol(digits_tabular, distilled, n_models=1, epochs=50)
    assert rows[0]["architecture"] == "mlp" and rows[0]["test_accuracy"] > 0.5


def test_bad_input(digits, digits_tabular):
    with pytest.raises(DataError, match="tabular.*dm, dc"):
        get_distiller("dsa", ipc=1, model="mlp").fit(digits_tabular)
    with pytest.raises(ConfigError, match="mlp"):
        get_distiller("dm", ipc=1).fit(digits_tabular)
    with pytest.raises(ConfigError, match="DSA"):
        get_distiller("dm", ipc=1, model="mlp", dsa=True, iterations=1).fit(digits_tabular)
    smallest = int(digits.class_counts().min())
    with pytest.raises(DataError, match="smallest class"):
        get_distiller("dm", ipc=smallest + 1).fit(digits)


# --- building blocks -----------------------------------------------------------------------------------
def test_block_outputs_and_loops():
    from datadistill.models import build_model

    net = build_model("convnet", (1, 8, 8), 10, width=8, depth=2, seed=0)
    outs = block_outputs(net.body, torch.randn(3, 1, 8, 8))
    assert [tuple(o.shape) for o in outs] == [(3, 8, 4, 4), (3, 32)]
    mlp = build_model("mlp", (64,), 10, hidden=(16, 12), seed=0)
    assert [tuple(o.shape) for o in block_outputs(mlp.body, torch.randn(3, 64))] == [(3, 16), (3, 12)]
    assert default_loops(1) == (1, 1) and default_loops(10) == (10, 50) and default_loops(50) == (50, 10)
    assert default_loops(5) == (1, 1) and default_loops(100) == (50, 10)


def test_gradient_distance_and_vectorised_gradients(digits):
    g = {"w": torch.randn(2, 4, 3, 3, 3), "b": torch.randn(2, 4)}
    assert float(gradient_distance(g, g)) == pytest.approx(0.0, abs=1e-5)
    assert float(gradient_distance(g, {k: -v for k, v in g.items()})) == pytest.approx(2 * 2 * 4, rel=1e-5)
    d = GradientMatching(ipc=1, model_kwargs=NET)
    from datadistill.synth.base import Context

    x = torch.randn(10 * 3, 1, 8, 8)
    ctx = Context(dataset=digits, preprocessor=None, device=torch.device("cpu"), X_real=x, y_real=None,
                  class_index=[], X_syn=x, y_syn=None, n_classes=10, input_shape=(1, 8, 8))
    net = d.new_network(ctx, seed=0)
    params = {k: v.detach() for k, v in net.named_parameters()}
    d.vectorize = False
    looped = d._class_gradients(net, params, x, 10, 3, ctx)
    d.vectorize = True
    vectorised = d._class_gradients(net, params, x, 10, 3, ctx)
    for k in looped:
        assert torch.allclose(looped[k], vectorised[k], atol=1e-5)


# --- checkpoints -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["dm", "dc"])
def test_resume_equals_uninterrupted(method, digits, tmp_path):
    kw = dict(ipc=2, model_kwargs=NET, batch_real=32, random_state=3)
    if method == "dc":
        kw.update(outer_loop=2, inner_loop=3)
    full = get_distiller(method, iterations=4, **kw).fit(digits)
    ckpt = tmp_path / "run.ckpt"
    get_distiller(method, iterations=2, checkpoint=ckpt, checkpoint_every=2, **kw).fit(digits)
    assert ckpt.exists()
    resumed = get_distiller(method, iterations=4, checkpoint=ckpt, checkpoint_every=2, **kw).fit(digits)
    assert resumed.meta["timings"]["session_iterations"] == 2
    np.testing.assert_array_equal(resumed.X, full.X)
    assert resumed.meta["curves"]["matching_loss"] == full.meta["curves"]["matching_loss"]
    other = digits.subset(np.arange(1000), name="other")
    with pytest.raises(ArtifactError, match="different data"):
        get_distiller(method, iterations=4, checkpoint=ckpt, **kw).fit(other)
