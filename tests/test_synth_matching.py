"""DSA augmentation, distribution matching (dm, dm with the MMD loss, dm-multilayer) and gradient matching (dc, dsa)
on digits; the protocol's ConvNet; periodic evaluation (eval_every) keeping the best snapshot."""

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
@pytest.mark.parametrize("method", ["dm", "dm-mmd", "dm-multilayer", "dc", "dsa"])
def test_method_lowers_its_loss_and_beats_random(method, digits, random_accuracy):
    extra = {"loss": "mmd"} if method == "dm-mmd" else {}
    method = method.removesuffix("-mmd")
    distilled = get_distiller(method, ipc=1, iterations=ITERATIONS[method], model_kwargs=NET, batch_real=64,
                              random_state=0, **extra).fit(digits)
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
    assert resumed.meta["timings"]["this_run_iterations"] == 2
    np.testing.assert_array_equal(resumed.X, full.X)
    assert resumed.meta["curves"]["matching_loss"] == full.meta["curves"]["matching_loss"]
    other = digits.subset(np.arange(1000), name="other")
    with pytest.raises(ArtifactError, match="different data"):
        get_distiller(method, iterations=4, checkpoint=ckpt, **kw).fit(other)


# --- the protocol's ConvNet ----------------------------------------------------------------------------
def test_convnet_is_the_published_network_on_28x28_images():
    from datadistill.models import build_model

    x = torch.randn(2, 1, 28, 28)
    net = build_model("convnet", (1, 28, 28), 10, seed=0)
    # first convolution padded by 3: maps 32 -> 16 -> 8 -> 4, a 128 * 4 * 4 = 2048-d embedding
    assert net.body[0].padding == (3, 3) and net.feature_dim == 2048
    assert [tuple(o.shape) for o in block_outputs(net.body, x)] == [(2, 128, 16, 16), (2, 128, 8, 8), (2, 2048)]
    assert tuple(net(x).shape) == (2, 10)
    # the earlier variant stays available: padding 1 throughout, 28 -> 14 -> 7 -> 3, 1152-d
    p1 = build_model("convnet-p1", (1, 28, 28), 10, seed=0)
    assert p1.body[0].padding == (1, 1) and p1.feature_dim == 1152 and tuple(p1.features(x).shape) == (2, 1152)
    # other shapes keep padding 1 (as the reference does for 32x32 colour images)
    rgb = build_model("convnet", (3, 32, 32), 10, seed=0)
    assert rgb.body[0].padding == (1, 1) and rgb.feature_dim == 2048
    assert build_model("convnet", (1, 8, 8), 10, width=8, depth=2, seed=0).feature_dim == 32
    # the padded maps allow one more block than the raw 28x28 images
    assert build_model("convnet", (1, 28, 28), 10, width=8, depth=5, seed=0).feature_dim == 8
    with pytest.raises(ConfigError, match="use --depth 4 or less"):
        build_model("convnet-p1", (1, 28, 28), 10, depth=5)
    with pytest.raises(ConfigError, match="use --depth 5 or less"):
        build_model("convnet", (1, 28, 28), 10, depth=6)


# --- higher-order distribution matching (loss="mmd") ---------------------------------------------------
def test_mmd_loss_properties():
    from datadistill.synth.distribution import mmd_loss

    gen = torch.Generator().manual_seed(0)
    real = torch.randn(3, 60, 16, generator=gen)
    syn = torch.randn(3, 6, 16, generator=gen)
    assert float(mmd_loss(real, real)) == pytest.approx(0.0, abs=1e-5)
    near, far = float(mmd_loss(real, syn)), float(mmd_loss(real, syn + 2.0))
    assert 0 < near < far
    # same mean, other spread: invisible to the mean loss, seen by the kernel
    centred = syn - syn.mean(dim=1, keepdim=True) + real.mean(dim=1, keepdim=True)
    assert float(mmd_loss(real, 4 * centred - 3 * real.mean(dim=1, keepdim=True))) > float(mmd_loss(real, centred))
    # a very wide kernel tends to DM's mean loss (the same learning rate carries over)
    mean_loss = float(((real.mean(1) - (syn + 0.3).mean(1)) ** 2).sum())
    assert float(mmd_loss(real, syn + 0.3, scales=(1e4,))) == pytest.approx(mean_loss, rel=0.02)


def test_dm_mmd_lowers_the_mmd_of_fresh_networks(digits):
    from datadistill.data.preprocess import Preprocessor
    from datadistill.models import build_model
    from datadistill.synth.distribution import mmd_loss

    kw = dict(ipc=2, model_kwargs=NET, batch_real=64, random_state=0, loss="mmd")
    start = get_distiller("dm", iterations=0, **kw).fit(digits)   # the random real samples it starts from
    end = get_distiller("dm", iterations=40, **kw).fit(digits)
    assert end.meta["parameters"]["loss"] == "mmd"
    pre = Preprocessor.fit(digits)
    real = torch.as_tensor(pre.transform(digits.X))
    rows = torch.cat([torch.nonzero(torch.as_tensor(digits.y) == c).flatten()[:100] for c in range(10)])

    def mmd(ds, seed):  # networks the distillation never drew (its seeds come from iteration hashes)
        net = build_model("convnet", (1, 8, 8), 10, seed=10_000 + seed, **NET)
        with torch.no_grad():
            fr = net.features(real[rows]).reshape(10, 100, -1)
            fs = net.features(torch.as_tensor(pre.transform(ds.X))).reshape(10, 2, -1)
        return float(mmd_loss(fr, fs))

    before = np.mean([mmd(start, s) for s in range(4)])
    after = np.mean([mmd(end, s) for s in range(4)])
    assert after < 0.8 * before, (before, after)


def test_dm_loss_options_refused():
    for bad in ({"loss": "cubic"}, {"loss": "mmd", "mmd_scales": []}, {"loss": "mmd", "mmd_scales": (1.0, -2.0)},
                {"mmd_scales": float("nan")}):
        with pytest.raises(ConfigError, match="loss|mmd_scales"):
            get_distiller("dm", ipc=1, **bad).check_params()
    get_distiller("dm", ipc=1, loss="mmd", mmd_scales=2.0).check_params()  # one number is one bandwidth


# --- periodic evaluation keeps the best snapshot -------------------------------------------------------
def _spoiled_after(distiller, good_steps: int, seen: dict):
    """Make every step after ``good_steps`` add heavy noise to the samples; record the samples before each step."""
    honest = distiller._step

    def step(ctx, it):
        seen[it] = ctx.X_syn.detach().clone()
        seen["pre"], seen["n_real"] = ctx.preprocessor, len(ctx.X_real)
        if it < good_steps:
            return honest(ctx, it)
        with torch.no_grad():
            ctx.X_syn.add_(3.0 * torch.randn(ctx.X_syn.shape, generator=distiller.iteration_generator(it, 9)))
        return 1.0

    distiller._step = step


def test_eval_every_keeps_the_best_snapshot(digits):
    d = get_distiller("dm", ipc=2, iterations=24, model_kwargs=NET, batch_real=64, random_state=0, eval_every=4,
                      eval_samples=300, eval_steps=60)
    seen: dict = {}
    _spoiled_after(d, 8, seen)
    out = d.fit(digits)
    ev = out.meta["periodic_evaluation"]
    records = ev["records"]
    assert [r["iteration"] for r in records] == [0, 4, 8, 12, 16, 20, 24]
    accs = [r["val_accuracy"] for r in records]
    assert ev["kept_val_accuracy"] == max(accs) and ev["kept_iteration"] <= 8 and ev["last_iteration"] == 24
    assert accs[-1] < max(accs) - 0.1  # the noisy last iterate is clearly worse
    assert ev["validation_samples"] in range(290, 311) and out.meta["timings"]["iterations_done"] == 24
    # the artifact holds the kept iteration's samples (in the source's scale), not the last ones
    kept = seen["pre"].inverse(seen[ev["kept_iteration"]].numpy())
    np.testing.assert_allclose(out.X, kept, rtol=1e-5, atol=1e-4)
    # the validation slice is held out of matching
    assert seen["n_real"] == len(digits) - ev["validation_samples"] and out.meta["source_samples"] == len(digits)


def test_eval_every_resume_equals_uninterrupted(digits, tmp_path):
    kw = dict(ipc=1, model_kwargs=NET, batch_real=32, random_state=1, eval_every=3, eval_samples=200, eval_steps=20)
    full = get_distiller("dm", iterations=8, **kw).fit(digits)
    ckpt = tmp_path / "ev.ckpt"
    get_distiller("dm", iterations=4, checkpoint=ckpt, checkpoint_every=4, **kw).fit(digits)
    resumed = get_distiller("dm", iterations=8, checkpoint=ckpt, checkpoint_every=4, **kw).fit(digits)
    drop = ("seconds_this_run",)
    strip = lambda m: {k: v for k, v in m["periodic_evaluation"].items() if k not in drop}  # noqa: E731
    assert strip(resumed.meta) == strip(full.meta)
    np.testing.assert_array_equal(resumed.X, full.X)
    # a checkpoint of a run without periodic evaluation is refused (other settings)
    with pytest.raises(ArtifactError, match="other settings"):
        get_distiller("dm", iterations=8, checkpoint=ckpt, **(kw | {"eval_every": 0})).fit(digits)


def test_eval_every_bad_input(digits):
    for bad in ({"eval_every": -1}, {"eval_every": 1.5}, {"eval_samples": 0}, {"eval_steps": 0}):
        with pytest.raises(ConfigError, match="eval_"):
            get_distiller("dm", ipc=1, **bad).check_params()
    # the default slice: 10% of the training rows (at most 1000), the rest is matched
    out = get_distiller("dm", ipc=1, iterations=0, eval_every=5, eval_steps=5, model_kwargs=NET).fit(digits)
    ev = out.meta["periodic_evaluation"]
    assert abs(ev["validation_samples"] - len(digits) // 10) <= 10 and ev["kept_iteration"] == 0
    smallest = int(digits.class_counts().min())
    with pytest.raises(DataError, match="too few to hold"):
        get_distiller("dm", ipc=smallest, iterations=1, eval_every=1, model_kwargs=NET).fit(digits)
