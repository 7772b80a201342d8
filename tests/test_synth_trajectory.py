"""Trajectory matching (MTT) and its expert buffer, on scikit-learn's 8x8 digits with a small ConvNet."""

import json
import time

import numpy as np
import pytest
import torch

from datadistill.data.sources import load
from datadistill.errors import ArtifactError, ConfigError, DataError
from datadistill.models import build_model
from datadistill.synth import get_distiller
from datadistill.synth.protocol import evaluate_protocol, random_real_subset
from datadistill.synth.trajectory import ExpertBuffer, FlatNetwork, build_expert_buffer

# depth 2 keeps instance norm away from 1x1 feature maps on 8x8 inputs
NET = {"width": 16, "depth": 2}
MTT = dict(model_kwargs=NET, n_experts=2, expert_batch=64, expert_epochs=2, max_start_epoch=3, syn_steps=16,
           lr_images=100.0, device="cpu")


@pytest.fixture(scope="module")
def buffer_dir(tmp_path_factory, digits):
    path = tmp_path_factory.mktemp("experts")
    build_expert_buffer(digits, path, n_experts=2, epochs=5, model="convnet", model_kwargs=NET, lr=0.01,
                        batch_size=64, device="cpu", seed=0)
    return path


def test_expert_buffer_layout_and_reuse(digits, buffer_dir):
    buf = ExpertBuffer.open(buffer_dir)
    manifest = json.loads((buffer_dir / "manifest.json").read_text())
    assert manifest["fingerprint"] == digits.fingerprint and buf.n_experts == 2 and buf.epochs == 5
    traj = buf.trajectory(0)
    net = build_model("convnet", (1, 8, 8), 10, seed=0, **NET)
    assert traj.shape == (6, FlatNetwork(net).n_params)
    assert torch.equal(traj[0], FlatNetwork(net).flatten())       # epoch 0 = the expert's initialisation
    assert not torch.equal(traj[1], traj[0])                      # training moved it
    mtimes = [p.stat().st_mtime_ns for p in sorted(buffer_dir.glob("expert_*.pt"))]
    t0 = time.perf_counter()
    again = build_expert_buffer(digits, buffer_dir, n_experts=2, epochs=4, model="convnet", model_kwargs=NET,
                                lr=0.01, batch_size=64, device="cpu")
    assert time.perf_counter() - t0 < 2.0
    assert again.n_experts == 2 and [p.stat().st_mtime_ns for p in sorted(buffer_dir.glob("expert_*.pt"))] == mtimes


def test_expert_buffer_rejects_other_data_model_or_recipe(digits, buffer_dir):
    other = digits.subset(np.arange(1000), name="digits-part")
    with pytest.raises(ArtifactError, match="different data"):
        build_expert_buffer(other, buffer_dir, n_experts=2, epochs=5, model="convnet", model_kwargs=NET,
                            lr=0.01, batch_size=64, device="cpu")
    with pytest.raises(ArtifactError, match="experts"):
        build_expert_buffer(digits, buffer_dir, n_experts=2, epochs=5, model="convnet", model_kwargs={"width": 8},
                            lr=0.01, batch_size=64, device="cpu")
    with pytest.raises(ArtifactError, match="trained with"):
        build_expert_buffer(digits, buffer_dir, n_experts=2, epochs=5, model="convnet", model_kwargs=NET,
                            lr=0.1, batch_size=64, device="cpu")
    with pytest.raises(ArtifactError, match="epochs"):
        build_expert_buffer(digits, buffer_dir, n_experts=2, epochs=50, model="convnet", model_kwargs=NET,
                            lr=0.01, batch_size=64, device="cpu")


def test_expert_buffer_adds_missing_experts_only(digits, tmp_path):
    kw = dict(epochs=1, model="convnet", model_kwargs={"width": 8, "depth": 2}, lr=0.01, device="cpu")
    build_expert_buffer(digits, tmp_path, n_experts=1, **kw)
    first = (tmp_path / "expert_000.pt").stat().st_mtime_ns
    buf = build_expert_buffer(digits, tmp_path, n_experts=2, **kw)
    assert buf.n_experts == 2 and (tmp_path / "expert_000.pt").stat().st_mtime_ns == first
    assert not torch.equal(buf.trajectory(0)[0], buf.trajectory(1)[0])   # experts differ in initialisation


def test_expert_trajectory_is_one_continuous_training(digits, buffer_dir):
    from datadistill.data.preprocess import Preprocessor
    from datadistill.training import TrainConfig, train

    traj = ExpertBuffer.open(buffer_dir).trajectory(0)
    X = torch.as_tensor(Preprocessor.fit(digits).transform(digits.X))
    cfg = TrainConfig(epochs=5, batch_size=64, lr=0.01, optimizer="sgd", momentum=0.0)
    for epochs in (2, 5):  # the first k epochs of one run: a k-epoch run from the same seed
        net = build_model("convnet", (1, 8, 8), 10, seed=0, **NET)
        train(net, X, digits.y, TrainConfig(**{**cfg.to_dict(), "epochs": epochs}), device="cpu", seed=0)
        assert torch.equal(traj[epochs], FlatNetwork(net).flatten())


def test_expert_buffer_trains_each_expert_once_with_one_optimiser(digits, tmp_path, monkeypatch):
    import datadistill.synth.trajectory as trajectory

    calls, steps = [], []

    def counted_train(*args, **kwargs):
        calls.append(args[3].epochs)
        return trajectory_train(*args, **kwargs, batch_callbacks=[lambda step, loss: steps.append(step)])

    trajectory_train = trajectory.train
    monkeypatch.setattr(trajectory, "train", counted_train)
    buf = build_expert_buffer(digits, tmp_path, n_experts=2, epochs=3, model="convnet",
                              model_kwargs={"width": 8, "depth": 2}, lr=0.01, batch_size=256, device="cpu")
    per_expert = 3 * int(np.ceil(len(digits) / 256))
    assert calls == [3, 3]                                   # one training per expert, not one per epoch
    assert steps == list(range(1, per_expert + 1)) * 2       # the step count never restarts within an expert
    assert buf.trajectory(1).shape[0] == 4                   # the initialisation and one snapshot per epoch


def test_normalised_loss_at_iteration_zero_is_sane(digits, buffer_dir):
    still = get_distiller("mtt", ipc=1, iterations=1, buffer=buffer_dir, lr_syn_init=1e-9, **MTT).fit(digits)
    # a student that does not move is exactly one "expert move" away from the target
    assert still.meta["curves"]["matching_loss"][0] == pytest.approx(1.0, abs=1e-4)
    moving = get_distiller("mtt", ipc=1, iterations=1, buffer=buffer_dir, **MTT).fit(digits)
    loss0 = moving.meta["curves"]["matching_loss"][0]
    assert np.isfinite(loss0) and 0.0 < loss0 < 5.0


@pytest.fixture(scope="module")
def mtt_run(digits, buffer_dir):
    return get_distiller("mtt", ipc=1, iterations=40, buffer=buffer_dir, random_state=0, **MTT).fit(digits)


def test_mtt_lowers_matching_loss(mtt_run):
    curve = np.asarray(mtt_run.meta["curves"]["matching_loss"])
    assert len(curve) == 40 and np.isfinite(curve).all()
    assert curve[-10:].mean() < 0.85 * curve[:10].mean()


def test_mtt_beats_random_real_subset(digits, mtt_run):
    assert mtt_run.X.shape == (10, 8, 8) and mtt_run.meta["training"]["lr"] > 0
    kw = dict(n_models=3, epochs=150, lr=0.01, model_kwargs=NET, device="cpu", seed=0)
    ours = np.mean([r["test_accuracy"] for r in evaluate_protocol(digits, mtt_run, **kw)])
    rand = np.mean([r["test_accuracy"] for r in evaluate_protocol(digits, random_real_subset(digits, 1, 0), **kw)])
    assert ours > rand + 0.05, (ours, rand)


def test_mtt_resume_equals_uninterrupted(digits, buffer_dir, tmp_path):
    kw = dict(MTT, ipc=1, buffer=buffer_dir, random_state=3, syn_steps=4)
    full = get_distiller("mtt", iterations=4, **kw).fit(digits)
    ck = tmp_path / "mtt.ckpt"
    get_distiller("mtt", iterations=2, checkpoint=ck, checkpoint_every=2, **kw).fit(digits)
    resumed = get_distiller("mtt", iterations=4, checkpoint=ck, checkpoint_every=2, **kw).fit(digits)
    assert resumed.meta["timings"]["this_run_iterations"] == 2
    np.testing.assert_allclose(resumed.X, full.X, rtol=0, atol=1e-5)
    assert resumed.meta["curves"]["matching_loss"] == pytest.approx(full.meta["curves"]["matching_loss"], rel=1e-5)
    assert resumed.meta["training"]["lr"] == pytest.approx(full.meta["training"]["lr"], rel=1e-6)


def test_constant_memory_gradient_agrees_with_full_unroll(digits, buffer_dir):
    kw = dict(MTT, ipc=1, iterations=1, buffer=buffer_dir, random_state=1, lr_images=1.0)
    start = get_distiller("mtt", **dict(kw, iterations=0)).fit(digits).X
    full = get_distiller("mtt", memory="full", **kw).fit(digits).X - start
    const = get_distiller("mtt", memory="constant", **kw).fit(digits).X - start
    cos = float((full * const).sum() / (np.linalg.norm(full) * np.linalg.norm(const)))
    assert np.abs(full).max() > 0 and cos > 0.9


def test_mtt_with_dsa_records_augmentation(digits, buffer_dir, tmp_path):
    out = get_distiller("mtt", ipc=1, iterations=2, buffer=tmp_path / "dsa-experts", augment=True,
                        **dict(MTT, n_experts=1, max_start_epoch=1, expert_epochs=1, syn_steps=2)).fit(digits)
    training = out.meta["training"]
    assert training["augmentation"] == "dsa" and "flip" not in training["dsa_strategy"]
    assert np.isfinite(out.meta["curves"]["matching_loss"]).all()
    assert json.loads((tmp_path / "dsa-experts" / "manifest.json").read_text())["recipe"]["augmentation"] == "dsa"


def test_mtt_refuses_tabular_data_and_bad_settings(digits, buffer_dir):
    blobs = load("blobs")
    with pytest.raises(DataError, match="bptt and krr"):
        get_distiller("mtt", ipc=1, model="mlp").fit(blobs)
    with pytest.raises(ConfigError, match="expert_train_epochs"):
        get_distiller("mtt", ipc=1, expert_train_epochs=2, max_start_epoch=3, expert_epochs=2).fit(digits)
    with pytest.raises(ConfigError, match="memory"):
        get_distiller("mtt", ipc=1, memory="tiny").fit(digits)
    with pytest.raises(ArtifactError, match="epochs"):
        get_distiller("mtt", ipc=1, iterations=1, buffer=buffer_dir,
                      **dict(MTT, max_start_epoch=5, expert_epochs=2)).fit(digits)
