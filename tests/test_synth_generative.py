"""The generative route (ae-kmeans, ae-dm, plugged decoders) and teacher soft labels on tiny bar images."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from datadistill.data import Dataset
from datadistill.errors import ConfigError, DatadistillWarning
from datadistill.synth import get_distiller
from datadistill.synth.protocol import evaluate_protocol, random_real_subset
from datadistill.synth.relabel import relabel, train_teacher

SIDE = 12
NET = {"width": 16, "depth": 2}
AE = {"ae_width": 8, "ae_steps": 150, "latent_dim": 8, "device": "cpu", "model_kwargs": NET}
EVAL = {"n_models": 1, "epochs": 60, "augmentation": "none", "model_kwargs": NET, "device": "cpu"}


def bars(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """4 classes of 12x12 images: a horizontal bar in the left / right half, a vertical bar in the top / bottom half."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0.0, 0.15, size=(4 * n_per_class, SIDE, SIDE)).astype(np.float32)
    y = np.repeat(np.arange(4), n_per_class)
    half = SIDE // 2
    for i, (c, p) in enumerate(zip(y, rng.integers(2, SIDE - 2, size=len(y)))):
        rows, cols = {0: (slice(p - 1, p + 1), slice(0, half)), 1: (slice(p - 1, p + 1), slice(half, SIDE)),
                      2: (slice(0, half), slice(p - 1, p + 1)), 3: (slice(half, SIDE), slice(p - 1, p + 1))}[c]
        X[i, rows, cols] += 1.0
    return X, y


@pytest.fixture(scope="module")
def data() -> Dataset:
    X, y = bars(60, seed=0)
    Xt, yt = bars(25, seed=1)
    return Dataset.create(X, y, ["h-left", "h-right", "v-top", "v-bottom"], name="bars", test=(Xt, yt))


@pytest.fixture(scope="module")
def kmeans_run(data):
    est = get_distiller("ae-kmeans", ipc=3, random_state=0, **AE)
    return est, est.fit(data)


def mean_accuracy(data, distilled) -> float:
    return float(np.mean([r["test_accuracy"] for r in evaluate_protocol(data, distilled, **EVAL)]))


# --- the autoencoder route --------------------------------------------------------------------------
def test_ae_kmeans_gives_decoded_prototypes_with_the_right_shape_classes_and_storage(data, kmeans_run):
    est, out = kmeans_run
    assert out.X.shape == (12, SIDE, SIDE) and np.isfinite(out.X).all()
    np.testing.assert_array_equal(out.y, np.repeat(np.arange(4), 3))
    assert tuple(out.classes) == tuple(data.classes) and out.method == "ae-kmeans"
    latent = out.meta["latent"]
    assert latent["latent_dim"] == 8 and latent["latent_bytes_per_sample"] == 32
    assert latent["decoded_bytes_per_sample"] == SIDE * SIDE * 4 and latent["decoder"] == "own conv autoencoder"
    assert latent["autoencoder_training"]["steps"] == 150
    assert est.latents_.shape == (12, 8)
    # the stored samples are the decoded latents, in the data's own shape and scale
    np.testing.assert_allclose(est.decode(est.latents_), out.X, atol=1e-4)
    assert out.meta["timings"]["iterations_done"] == 1


def test_ae_kmeans_matches_class_means_better_than_random_latents_and_beats_noise(data, kmeans_run):
    est, out = kmeans_run
    real_means = np.stack([data.X[data.y == c].mean(axis=0) for c in range(4)])

    def class_mean_error(X):
        return float(np.mean([np.linalg.norm(X[out.y == c].mean(axis=0) - real_means[c]) for c in range(4)]))

    rng = np.random.default_rng(0)
    scale = est.latents_.std(axis=0, keepdims=True)
    random_latents = rng.normal(size=est.latents_.shape) * scale + est.latents_.mean(axis=0, keepdims=True)
    assert class_mean_error(out.X) < 0.6 * class_mean_error(est.decode(random_latents))
    # a model trained on the decoded prototypes beats one trained on noise of the same scale by far
    noise = out.__class__(X=rng.normal(out.X.mean(), out.X.std(), size=out.X.shape).astype(np.float32), y=out.y,
                          classes=out.classes, meta=dict(out.meta))
    acc, noise_acc = mean_accuracy(data, out), mean_accuracy(data, noise)
    assert acc > 0.7 and acc > noise_acc + 0.3


def test_ae_dm_moves_latents_and_keeps_shapes(data):
    est = get_distiller("ae-dm", ipc=2, iterations=8, random_state=1, **AE)
    out = est.fit(data)
    assert out.X.shape == (8, SIDE, SIDE) and out.method == "ae-dm"
    start = get_distiller("ae-dm", ipc=2, iterations=0, random_state=1, **AE)
    start.fit(data)
    assert not np.allclose(start.latents_, est.latents_)  # the matching optimised the k-means start
    curve = out.meta["curves"]["matching_loss"]
    assert len(curve) == 8 and np.isfinite(curve).all()


def test_tabular_data_gets_an_mlp_autoencoder_and_a_conv_one_is_refused():
    rng = np.random.default_rng(3)
    X = np.concatenate([rng.normal(c * 3.0, 1.0, size=(40, 6)) for c in range(3)]).astype(np.float32)
    tab = Dataset.create(X, np.repeat(np.arange(3), 40), name="blobs")
    kw = {"ae_width": 8, "ae_steps": 50, "device": "cpu", "model": "mlp", "model_kwargs": {"hidden": (16,)}}
    out = get_distiller("ae-kmeans", ipc=2, **kw).fit(tab)
    assert out.X.shape == (6, 6) and out.meta["latent"]["latent_dim"] == 6  # capped at the feature count
    assert out.meta["latent"]["autoencoder_training"]["architecture"] == "mlp"
    with pytest.raises(ConfigError, match="convolutional autoencoder needs image data.*tabular"):
        get_distiller("ae-kmeans", ipc=2, autoencoder="conv", **kw).fit(tab)
    with pytest.raises(ConfigError, match=r"\(1, 4, 4\).*\(6,\)"):
        get_distiller("ae-dm", ipc=2, decoder=ShapedDecoder((1, 4, 4)), latent_dim=3, **kw).fit(tab)


# --- pluggable generators ---------------------------------------------------------------------------
class ConstantDecoder(nn.Module):
    """Ignores the latent (up to a zero term, so gradients flow): every sample is one checkerboard."""

    def __init__(self):
        super().__init__()
        board = (np.indices((SIDE, SIDE)).sum(axis=0) % 2).astype(np.float32) * 5.0 - 1.0
        self.pattern = nn.Parameter(torch.as_tensor(board))

    def forward(self, z):
        return self.pattern.expand(len(z), SIDE, SIDE) + 0.0 * z.sum(dim=1).view(-1, 1, 1)


class ClassDecoder(nn.Module):
    """Class-conditional: sample of class c is the constant image 10 * c (plus a zero latent term)."""

    latent_dim = 4

    def forward(self, z, y):
        return (10.0 * y.float()).view(-1, 1, 1, 1).expand(len(z), 1, SIDE, SIDE) + 0.0 * z.sum(dim=1).view(-1, 1, 1, 1)


class ShapedDecoder(nn.Module):
    def __init__(self, shape):
        super().__init__()
        self.shape = shape

    def forward(self, z):
        return torch.zeros(len(z), *self.shape) + z[:, :1].reshape(-1, *([1] * len(self.shape)))


def test_a_plugged_decoder_is_what_the_samples_come_from(data):
    out = get_distiller("ae-dm", ipc=2, iterations=3, decoder=ConstantDecoder(), latent_dim=5,
                        decoder_space="source", device="cpu", model_kwargs=NET).fit(data)
    board = ConstantDecoder().pattern.detach().numpy()
    for x in out.X:
        np.testing.assert_allclose(x, board, atol=1e-4)
    assert out.meta["latent"]["decoder"] == "ConstantDecoder" and out.meta["latent"]["conditional"] is False
    assert out.meta["latent"]["latent_bytes_per_sample"] == 20
    assert "autoencoder_training" in out.meta["latent"] and out.meta["latent"]["autoencoder_training"] is None

    cond = get_distiller("ae-dm", ipc=2, iterations=2, decoder=ClassDecoder(), device="cpu",
                         model_kwargs=NET).fit(data)
    assert cond.meta["latent"]["conditional"] is True and cond.meta["latent"]["latent_dim"] == 4
    # model-space output 10 * c, returned in the source's scale: one constant per class, ordered by class
    per_class = [np.unique(np.round(cond.X[cond.y == c], 3)) for c in range(4)]
    assert all(len(v) == 1 for v in per_class) and np.all(np.diff([v[0] for v in per_class]) > 0)


def test_a_decoder_with_the_wrong_output_shape_is_refused_naming_both_shapes(data):
    with pytest.raises(ConfigError, match=r"\(1, 10, 10\).*\(1, 12, 12\)"):
        get_distiller("ae-dm", ipc=1, decoder=ShapedDecoder((1, 10, 10)), latent_dim=3, device="cpu",
                      model_kwargs=NET).fit(data)
    with pytest.raises(ConfigError, match=r"\(1, 12, 12\).*\(12, 12\)"):  # source space: the data's own shape
        get_distiller("ae-dm", ipc=1, decoder=ShapedDecoder((1, SIDE, SIDE)), latent_dim=3, decoder_space="source",
                      device="cpu", model_kwargs=NET).fit(data)


@pytest.mark.parametrize(("method", "params", "message"), [
    ("ae-kmeans", {"latent_dim": 0}, "latent_dim must be a whole number >= 1"),
    ("ae-dm", {"decoder": lambda z: z, "latent_dim": 2}, "decoder must be a torch.nn.Module"),
    ("ae-kmeans", {"decoder": ConstantDecoder(), "latent_dim": 2}, "k-means needs the latent codes.*encoder="),
    ("ae-dm", {"decoder_space": "pixels"}, "decoder_space must be 'model' or 'source'"),
    ("ae-dm", {"temperature": 0.0, "soft_labels": True}, "temperature must be a positive number"),
    ("ae-dm", {"ae_time_fraction": 1.5}, r"ae_time_fraction must be a number in \(0, 1\]"),
])
def test_bad_settings_are_refused_before_any_work(data, method, params, message):
    with pytest.raises(ConfigError, match=message):
        get_distiller(method, ipc=1, device="cpu", **params).fit(data)


# --- soft labels ------------------------------------------------------------------------------------
def test_soft_labels_are_valid_distributions_stored_and_used(data):
    out = get_distiller("ae-kmeans", ipc=2, soft_labels=True, teacher_steps=120, temperature=4.0, random_state=2,
                        **AE).fit(data)
    soft = out.soft_labels
    assert soft.shape == (8, 4) and (soft >= 0).all()
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert soft.max() < 0.999  # temperature 4 softens: no one-hot rows
    assert (soft.argmax(axis=1) == out.y).mean() >= 0.75  # the teacher recognises most decoded prototypes
    assert out.meta["training"]["soft_labels"] is True and out.meta["soft_labels"]["temperature"] == 4.0
    assert out.meta["soft_labels"]["teacher"]["validation_accuracy"] > 0.8
    assert mean_accuracy(data, out) > 0.5  # evaluation trains on the soft labels without complaint


def test_relabel_any_set_temperature_orders_entropy_and_a_weak_teacher_warns(data):
    subset = random_real_subset(data, 3, seed=0)
    teacher = train_teacher(data, model="convnet", model_kwargs=NET, steps=120, device="cpu", random_state=0)
    assert teacher.validation_accuracy > 0.8
    sharp = relabel(subset, data, teacher=teacher, temperature=1.0)
    soft = relabel(subset, data, teacher=teacher, temperature=8.0)
    for s in (sharp, soft):
        assert s.soft_labels.shape == (12, 4)
        np.testing.assert_allclose(s.soft_labels.sum(axis=1), 1.0, atol=1e-5)
        np.testing.assert_array_equal(s.X, subset.X)
        np.testing.assert_array_equal(s.indices, subset.indices)

    def entropy(p):
        return float(-(p * np.log(p + 1e-12)).sum(axis=1).mean())

    assert entropy(soft.soft_labels) > entropy(sharp.soft_labels) + 0.1
    assert subset.soft_labels is None and soft.meta["soft_labels"]["temperature"] == 8.0
    with pytest.warns(DatadistillWarning, match="soft labels would mislead"):
        relabel(subset, data, model_kwargs=NET, steps=2, min_accuracy=1.01, device="cpu")
    with pytest.raises(ConfigError, match="temperature"):
        relabel(subset, data, teacher=teacher, temperature=-1)


# --- checkpoints and time budget ------------------------------------------------------------------
def test_checkpoint_resume_equals_an_uninterrupted_run(data, tmp_path):
    kw = {"ipc": 2, "random_state": 4, **AE}
    whole = get_distiller("ae-dm", iterations=6, **kw).fit(data)
    ckpt = tmp_path / "ae.pt"
    get_distiller("ae-dm", iterations=3, checkpoint=ckpt, **kw).fit(data)
    resumed_est = get_distiller("ae-dm", iterations=6, checkpoint=ckpt, **kw)
    resumed = resumed_est.fit(data)
    assert resumed.meta["timings"]["resumed_from_iteration"] == 3
    assert resumed.meta["latent"]["autoencoder_training"]["restored_from_checkpoint"] is True
    np.testing.assert_allclose(resumed.X, whole.X, atol=1e-5)


def test_time_budget_stops_the_matching_loop(data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = get_distiller("ae-dm", ipc=2, iterations=100_000, time_budget=3.0, **AE).fit(data)
    timings = out.meta["timings"]
    assert timings["stopped_by_time_budget"] is True and 1 <= timings["iterations_done"] < 100_000
    assert timings["total_seconds"] < 3.0 + 3.0  # at most about one iteration past the budget (loaded machine)
    assert out.X.shape == (8, SIDE, SIDE) and np.isfinite(out.X).all()
