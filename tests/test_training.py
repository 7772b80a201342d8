import numpy as np
import pytest
import torch

import datadistill as dd
from datadistill.data import Preprocessor
from datadistill.errors import ConfigError
from datadistill.models import MODELS, build_model
from datadistill.training import TrainConfig, accuracy, embed, train, validation_split


@pytest.fixture(scope="module")
def digits_inputs():
    ds = dd.load("digits")
    pre = Preprocessor.fit(ds)
    return ds, pre, pre.transform(ds.X), pre.transform(ds.test.X)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_model_builds_and_embeds(name, digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    model = build_model(name, pre.model_shape, ds.n_classes, seed=0, width=8)
    out = model(torch.as_tensor(Xm[:4]))
    assert out.shape == (4, 10)
    assert embed(model, Xm[:4]).shape == (4, model.feature_dim)


def test_seeded_models_are_identical_and_global_rng_untouched():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = build_model("mlp", (5,), 3, seed=7)
    after = torch.rand(1)
    b = build_model("mlp", (5,), 3, seed=7)
    assert torch.equal(before, after)
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.equal(p, q)


def test_training_learns_and_is_deterministic(digits_inputs):
    ds, pre, Xm, Xt = digits_inputs
    accs = []
    for _ in range(2):
        model = build_model("mlp", pre.model_shape, 10, seed=1)
        result = train(model, Xm, ds.y, TrainConfig(epochs=20), seed=3)
        accs.append(accuracy(model, Xt, ds.test.y))
    assert accs[0] == accs[1]
    assert accs[0] > 0.93
    assert result.epochs == 20 and result.steps == 20 * int(np.ceil(len(ds) / 256))


def test_min_steps_scales_epochs_for_small_sets():
    cfg = TrainConfig(epochs=10, batch_size=256, min_steps=500, max_epochs=300)
    assert cfg.planned_epochs(60000) == 10
    assert cfg.planned_epochs(100) == 300  # 1 step per epoch, capped
    assert cfg.planned_epochs(2560) == 50


def test_early_stopping_restores_best_and_uses_only_given_validation(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    tr, va = validation_split(ds.y, 0.2, random_state=0)
    assert len(np.intersect1d(tr, va)) == 0 and len(tr) + len(va) == len(ds)
    model = build_model("mlp", pre.model_shape, 10, seed=0)
    result = train(model, Xm[tr], ds.y[tr], TrainConfig(epochs=30, patience=3, lr=5e-3),
                   validation=(Xm[va], ds.y[va]))
    best = max(h["val_accuracy"] for h in result.history)
    assert accuracy(model, Xm[va], ds.y[va]) == pytest.approx(best)
    assert result.best_epoch is not None


def test_sample_weights_change_the_fit():
    X = np.array([[-1.0], [1.0], [0.1]], dtype=np.float32)
    y = np.array([0, 1, 0])
    w = np.array([1.0, 1.0, 50.0])
    m1 = build_model("logreg", (1,), 2, seed=0)
    m2 = build_model("logreg", (1,), 2, seed=0)
    cfg = TrainConfig(epochs=300, lr=0.05, batch_size=3)
    train(m1, X, y, cfg)
    train(m2, X, y, cfg, sample_weight=w)
    p = lambda m: torch.softmax(m(torch.tensor([[0.3]])), 1)[0, 0].item()  # noqa: E731
    assert p(m2) > p(m1)


def test_bad_recipe_is_a_config_error(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    with pytest.raises(ConfigError, match="optimizer"):
        train(build_model("logreg", pre.model_shape, 10), Xm, ds.y, TrainConfig(optimizer="rmsprop"))
    with pytest.raises(ConfigError, match="unknown model"):
        build_model("vgg", (3,), 2)
    with pytest.raises(ConfigError, match="needs images"):
        build_model("convnet", (3,), 2)


def test_dask_parts_equal_sequential_fit():
    from datadistill.parallel import dask_client, fit_distributed
    from datadistill.select import get_selector

    ds = dd.load("digits")
    with dask_client(n_workers=2) as client:
        for method in ("stratified", "kmedoids"):
            a = get_selector(method, ratio=0.2, random_state=4).fit(ds)
            b = fit_distributed(get_selector(method, ratio=0.2, random_state=4), ds, client=client)
            np.testing.assert_array_equal(a.indices_, b.indices_)
            np.testing.assert_array_equal(a.weights_, b.weights_)
    # per-part diagnostics come back from the workers too
    assert b.objective_ == a.objective_ and len(b.objective_) == ds.n_classes


def test_step_rule_caps_steps_stops_on_patience_and_restores_best(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    tr, va = validation_split(ds.y, 0.2, random_state=0)
    capped = train(build_model("mlp", pre.model_shape, 10, seed=0), Xm[tr], ds.y[tr],
                   TrainConfig(max_steps=37, batch_size=64, epochs=1, max_epochs=1))
    assert capped.steps == 37 and capped.stop_reason == "budget"
    model = build_model("mlp", pre.model_shape, 10, seed=0)
    cfg = TrainConfig(max_steps=5000, patience_steps=100, eval_every=10, min_steps=50, batch_size=64, lr=1e-2)
    result = train(model, Xm[tr], ds.y[tr], cfg, validation=(Xm[va], ds.y[va]))
    assert result.stop_reason == "patience" and result.steps < 5000
    assert result.steps - result.best_step >= 100 and result.steps >= 50
    best = max(h["val_accuracy"] for h in result.history if h.get("val_accuracy") is not None)
    assert accuracy(model, Xm[va], ds.y[va]) == pytest.approx(best)


def test_callbacks_see_every_epoch_and_can_stop(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    seen = []

    def cb(epoch, model):
        seen.append(epoch)
        return epoch == 2

    result = train(build_model("logreg", pre.model_shape, 10, seed=0), Xm, ds.y, TrainConfig(epochs=10),
                   callbacks=[cb])
    assert seen == [0, 1, 2] and result.epochs == 3 and result.stop_reason == "callback"


def test_soft_targets_at_a_temperature_train_toward_the_teacher(digits_inputs):
    ds, pre, Xm, Xt = digits_inputs
    teacher = build_model("mlp", pre.model_shape, 10, seed=0)
    train(teacher, Xm, ds.y, TrainConfig(epochs=20))
    z = torch.as_tensor(teacher(torch.as_tensor(Xm)).detach().numpy() / 4.0)
    soft = torch.softmax(z, dim=1).numpy()
    student = build_model("mlp", pre.model_shape, 10, seed=1)
    train(student, Xm, ds.y, TrainConfig(epochs=20, soft_temperature=4.0), soft_labels=soft)
    assert accuracy(student, Xt, ds.test.y) > 0.9


def test_batch_callbacks_see_every_step_and_can_stop(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    losses = []

    def cb(step, loss):
        losses.append((step, loss))
        return step == 9

    per_epoch = int(np.ceil(len(ds) / 256))
    result = train(build_model("logreg", pre.model_shape, 10, seed=0), Xm, ds.y, TrainConfig(epochs=10),
                   batch_callbacks=[cb])
    assert [s for s, _ in losses] == list(range(1, 10))
    assert result.steps == 9 and result.stop_reason == "callback" and result.epochs == -(-9 // per_epoch)
    # the epoch's loss is the batch losses weighted by batch size (the last batch is short)
    sizes = [min(256, len(ds) - i) for i in range(0, len(ds), 256)]
    first = [loss for _, loss in losses[:per_epoch]]
    assert result.history[0]["loss"] == pytest.approx(np.dot(first, sizes) / len(ds), rel=1e-12)


def test_first_epochs_of_a_run_equal_a_shorter_run(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    snapshots = []

    def snapshot(epoch, model):
        snapshots.append([p.detach().clone() for p in model.parameters()])

    cfg = TrainConfig(epochs=4, optimizer="sgd", lr=0.05, momentum=0.9, batch_size=128)
    long = build_model("mlp", pre.model_shape, 10, seed=2)
    train(long, Xm, ds.y, cfg, seed=7, callbacks=[snapshot])
    short = build_model("mlp", pre.model_shape, 10, seed=2)
    train(short, Xm, ds.y, TrainConfig(**{**cfg.to_dict(), "epochs": 2}), seed=7)
    assert len(snapshots) == 4
    for p, q in zip(snapshots[1], short.parameters()):
        assert torch.equal(p, q)
    for p, q in zip(snapshots[3], long.parameters()):
        assert torch.equal(p, q)


def test_observing_callbacks_leave_training_bit_identical(digits_inputs):
    ds, pre, Xm, _ = digits_inputs
    tr, va = validation_split(ds.y, 0.2, random_state=0)
    cfg = TrainConfig(epochs=3, batch_size=128, patience=5, schedule="cosine")
    runs = []
    for hooks in ({}, {"callbacks": [lambda epoch, model: None], "batch_callbacks": [lambda step, loss: False]}):
        model = build_model("mlp", pre.model_shape, 10, seed=4)
        result = train(model, Xm[tr], ds.y[tr], cfg, validation=(Xm[va], ds.y[va]), seed=9, **hooks)
        runs.append((result, [p.detach().clone() for p in model.parameters()]))
    (a, wa), (b, wb) = runs
    assert a.history == b.history and a.steps == b.steps == 3 * int(np.ceil(len(tr) / 128))
    assert all(torch.equal(p, q) for p, q in zip(wa, wb))
