"""rded (Sun et al. 2024) on digits: teacher-scored crops of real images, stitched 2 x 2 or kept whole, soft labels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from datadistill.data import Dataset
from datadistill.data.artifact import DistilledSet
from datadistill.errors import ConfigError, DatadistillWarning, DataError
from datadistill.synth import get_distiller
from datadistill.synth.protocol import evaluate_protocol, random_real_subset
from datadistill.synth.rded import crop_resize, grid_cells

# a ConvNet small enough for 8x8 digits (as in test_synth_matching): two blocks of 32 channels
NET = {"width": 32, "depth": 2}
FAST = {"model_kwargs": NET, "device": "cpu"}
EVAL = {"n_models": 2, "epochs": 100, "augmentation": "none", "model_kwargs": NET, "device": "cpu"}


def mean_accuracy(digits, distilled) -> float:
    return float(np.mean([r["test_accuracy"] for r in evaluate_protocol(digits, distilled, **EVAL)]))


def downscale(image: np.ndarray, box, size) -> np.ndarray:
    """A crop (top, left, height, width) of one 8x8 image resized to ``size`` by plain bilinear interpolation."""
    top, left, h, w = (int(v) for v in box)
    crop = torch.as_tensor(image[top:top + h, left:left + w], dtype=torch.float32)[None, None]
    return F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0, 0].numpy()


@pytest.fixture(scope="module")
def stitched(digits):
    est = get_distiller("rded", ipc=3, patches_per_image=4, teacher_steps=150, random_state=0, **FAST)
    return est, est.fit(digits)


# --- the artifact -----------------------------------------------------------------------------------
def test_stitched_images_have_the_right_shape_labels_and_stored_soft_labels(digits, stitched, tmp_path):
    est, out = stitched
    assert out.X.shape == (30, 8, 8) and np.isfinite(out.X).all() and out.method == "rded"
    np.testing.assert_array_equal(out.y, np.repeat(np.arange(10), 3))
    assert tuple(out.classes) == tuple(digits.classes)
    soft = out.soft_labels
    assert soft.shape == (30, 10) and (soft >= 0).all() and soft.max() < 0.999  # temperature 4 softens
    np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
    assert (soft.argmax(axis=1) == out.y).mean() >= 0.9
    # per patch region: the image's label is the mean of its four regions' teacher probabilities
    assert est.region_soft_labels_.shape == (30, 4, 10)
    np.testing.assert_allclose(soft, est.region_soft_labels_.mean(axis=1), atol=1e-6)
    assert out.meta["training"]["soft_labels"] is True
    assert out.meta["soft_labels"]["temperature"] == 4.0 and out.meta["soft_labels"]["mode"] == "patches"
    assert out.meta["soft_labels"]["teacher"]["validation_accuracy"] > 0.9
    assert out.meta["rded"]["patches_per_image"] == 4 and out.meta["rded"]["mean_realism"] <= 0
    # saved and opened again, it is a normal synthetic set that still carries its soft labels
    back = DistilledSet.open(out.save(tmp_path / "rded"))
    np.testing.assert_allclose(back.soft_labels, soft)
    assert back.meta["rded"]["patch_rows"] == out.meta["rded"]["patch_rows"]


def test_every_quadrant_is_a_downscaled_crop_of_a_distinct_real_image_of_its_class(digits, stitched):
    est, out = stitched
    sources = est.patch_sources_
    assert sources.shape == (30, 4, 5)
    for c in range(10):
        rows = sources[out.y == c, :, 0].ravel()
        assert len(set(rows.tolist())) == 12  # one patch per real image
        assert (digits.y[rows] == c).all()
    for i in range(30):
        for q, (top, left, h, w) in enumerate(grid_cells(8, 8, 4)):
            row, *box = sources[i, q]
            np.testing.assert_allclose(out.X[i, top:top + h, left:left + w], downscale(digits.X[row], box, (h, w)),
                                       atol=1e-3)
    # patches come in the teacher's order of realism: ranks 0..11 of a class fill images 0..2, quadrants 0..3
    realism = est.patch_realism_.reshape(10, 12)
    assert (np.diff(realism, axis=1) <= 1e-6).all() and (realism <= 0).all()


def test_whole_image_crops_make_quadrants_that_are_halved_real_images_of_the_class(digits):
    """Without the recorded provenance: each quadrant is found among the class's 2x2-averaged real images."""
    est = get_distiller("rded", ipc=2, patches_per_image=4, min_crop_scale=1.0, teacher_steps=30, random_state=3,
                        min_accuracy=None, **FAST)
    out = est.fit(digits)
    halved = digits.X.reshape(-1, 4, 2, 4, 2).mean(axis=(2, 4))  # every real image downscaled to 4x4
    for i in range(len(out.y)):
        for top, left, h, w in grid_cells(8, 8, 4):
            distance = np.abs(halved - out.X[i, top:top + h, left:left + w]).max(axis=(1, 2))
            assert distance.min() < 1e-3 and digits.y[np.argmin(distance)] == out.y[i]


def test_crop_resize_equals_interpolating_each_crop():
    gen = torch.Generator().manual_seed(0)
    X = torch.randn(3, 2, 9, 7, generator=gen)
    boxes = torch.tensor([[0, 0, 9, 7], [2, 1, 4, 5], [5, 3, 3, 2]])
    for size in ((9, 7), (4, 3), (12, 10)):
        out = crop_resize(X, boxes, size)
        for i, (t, left, h, w) in enumerate(boxes.tolist()):
            want = F.interpolate(X[i:i + 1, :, t:t + h, left:left + w], size=size, mode="bilinear", align_corners=False)
            torch.testing.assert_close(out[i:i + 1], want, atol=1e-5, rtol=1e-5)


# --- reproducibility, options, checkpoints ----------------------------------------------------------
def test_deterministic_with_a_seed_and_another_seed_gives_another_set(digits):
    kw = {"ipc": 2, "patches_per_image": 4, "teacher_steps": 40, "min_accuracy": None, **FAST}
    a = get_distiller("rded", random_state=1, **kw).fit(digits)
    b = get_distiller("rded", random_state=1, **kw).fit(digits)
    c = get_distiller("rded", random_state=2, **kw).fit(digits)
    np.testing.assert_array_equal(a.X, b.X)
    np.testing.assert_array_equal(a.soft_labels, b.soft_labels)
    assert a.meta["rded"]["patch_rows"] == b.meta["rded"]["patch_rows"]
    assert not np.allclose(a.X, c.X)


def test_image_mode_labels_the_stitched_image_and_one_patch_images_are_full_size_crops(digits):
    est = get_distiller("rded", ipc=2, patches_per_image=4, soft_label_mode="image", temperature=2.0,
                        teacher_steps=40, min_accuracy=None, random_state=0, **FAST)
    out = est.fit(digits)
    np.testing.assert_allclose(out.soft_labels.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(out.soft_labels, est.region_soft_labels_.mean(axis=1), atol=1e-3)
    one = get_distiller("rded", ipc=2, teacher_steps=40, min_accuracy=None, random_state=0, **FAST)
    single = one.fit(digits)
    assert one.patch_sources_.shape == (20, 1, 5)
    for i in range(20):
        row, *box = one.patch_sources_[i, 0]
        np.testing.assert_allclose(single.X[i], downscale(digits.X[row], box, (8, 8)), atol=1e-3)


def test_a_checkpointed_run_is_restored_without_training_the_teacher_again(digits, tmp_path):
    kw = {"ipc": 2, "teacher_steps": 30, "min_accuracy": None, "random_state": 5, "checkpoint": tmp_path / "r.pt",
          **FAST}
    first = get_distiller("rded", **kw).fit(digits)
    again = get_distiller("rded", **kw).fit(digits)
    assert again.meta["soft_labels"]["teacher"]["restored_from_checkpoint"] is True
    np.testing.assert_allclose(again.X, first.X, atol=1e-6)
    np.testing.assert_allclose(again.soft_labels, first.soft_labels, atol=1e-6)
    assert again.meta["rded"]["patch_rows"] == first.meta["rded"]["patch_rows"]


def test_time_budget_bounds_the_teacher(digits):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a teacher stopped this early may warn that it is weak
        out = get_distiller("rded", ipc=2, teacher_steps=100_000, time_budget=1.5, **FAST).fit(digits)
    teacher = out.meta["soft_labels"]["teacher"]
    assert 1 <= teacher["steps"] < 100_000 and teacher["seconds"] < 1.5 * 0.8 + 1.0  # its share, one step past
    assert out.meta["timings"]["total_seconds"] < 1.5 + 3.0  # scoring after it (loaded machine)
    assert out.X.shape == (20, 8, 8) and out.meta["rded"]["mean_realism"] <= 0


# --- bad input --------------------------------------------------------------------------------------
@pytest.mark.parametrize(("params", "error", "message"), [
    ({"patches_per_image": 3}, ConfigError, "patches_per_image must be 1 or 4"),
    ({"patches_per_image": True}, ConfigError, "patches_per_image"),
    ({"iterations": 5}, ConfigError, "one pass"),
    ({"crops_per_image": 0}, ConfigError, "crops_per_image"),
    ({"min_crop_scale": 0.0}, ConfigError, "min_crop_scale"),
    ({"temperature": -1.0}, ConfigError, "temperature"),
    ({"soft_label_mode": "pixels"}, ConfigError, "soft_label_mode"),
    ({"ipc": 10, "patches_per_image": 4, "real_per_class": 30}, ConfigError, "real_per_class .* at least"),
    ({"min_accuracy": 2.0}, ConfigError, "min_accuracy"),
    ({"ipc": 200}, DataError, "ipc 200 is larger than the smallest class"),
    ({"ipc": 40, "patches_per_image": 4, "real_per_class": None}, DataError, "needs 160 real images per class"),
])
def test_bad_input_is_refused_before_any_training(digits, params, error, message):
    with pytest.raises(error, match=message):
        get_distiller("rded", **{"ipc": 1, **FAST, **params}).fit(digits)


def test_tabular_data_is_refused_and_a_weak_teacher_warns(digits):
    flat = Dataset.create(digits.X.reshape(len(digits), -1)[:200], digits.y[:200], digits.classes, name="flat")
    with pytest.raises(DataError, match="rded needs image data"):
        get_distiller("rded", ipc=1, model="mlp", device="cpu").fit(flat)
    with pytest.warns(DatadistillWarning, match="soft labels would mislead"):
        out = get_distiller("rded", ipc=1, teacher_steps=1, min_accuracy=0.99, **FAST).fit(digits)
    assert out.meta["soft_labels"]["teacher"]["below_min_accuracy"] is True


# --- accuracy against random real images ------------------------------------------------------------
@pytest.mark.parametrize(("ipc", "margin"), [(1, 0.08), (5, 0.0)])
def test_rded_beats_random_real_images_of_the_same_ipc(digits, ipc, margin):
    random_acc = float(np.mean([mean_accuracy(digits, random_real_subset(digits, ipc, seed=s)) for s in range(3)]))
    out = get_distiller("rded", ipc=ipc, teacher_steps=300, random_state=0, **FAST).fit(digits)
    acc = mean_accuracy(digits, out)
    assert acc > random_acc + margin, (ipc, acc, random_acc)


def test_timings_count_the_teachers_set_up(stitched):
    """A method that trains a teacher before its loop reports the set-up, so equal-time comparisons are fair."""
    from datadistill.evaluation import _set_seconds

    _, syn = stitched
    t = syn.meta["timings"]
    assert t["setup_seconds"] > 0 and t["total_seconds"] >= t["setup_seconds"]
    assert _set_seconds(syn) == pytest.approx(t["distill_seconds"] + t["setup_seconds"])
