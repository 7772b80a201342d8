"""The DC evaluation protocol, random real subsets, artifact round trip in a fresh process, image grid."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datadistill.data import DistilledSet, load
from datadistill.errors import ConfigError, DataError
from datadistill.synth import evaluate_protocol, get_distiller, image_grid, random_real_subset

NET = {"width": 16, "depth": 2}


@pytest.fixture(scope="module")
def dsa_set(digits) -> DistilledSet:
    return get_distiller("dsa", ipc=2, iterations=2, model_kwargs=NET, batch_real=16, random_state=1).fit(digits)


def test_random_real_subset(digits):
    a = random_real_subset(digits, 3, seed=4)
    assert len(a) == 30 and a.class_histogram() == {c: 3 for c in digits.classes}
    np.testing.assert_array_equal(a.X, digits.X[a.indices])
    np.testing.assert_array_equal(a.y, digits.y[a.indices])
    np.testing.assert_array_equal(random_real_subset(digits, 3, seed=4).indices, a.indices)
    assert not np.array_equal(random_real_subset(digits, 3, seed=5).indices, a.indices)
    with pytest.raises(DataError, match="smallest class"):
        random_real_subset(digits, 10_000)


def test_protocol_rows_are_deterministic_and_follow_the_recipe(digits, dsa_set):
    rows = evaluate_protocol(digits, dsa_set, n_models=2, epochs=6)
    assert len(rows) == 2
    for r in rows:
        assert set(r) >= {"method", "size", "ipc", "seed", "architecture", "test_accuracy", "train_seconds",
                          "epochs", "protocol"}
        assert r["method"] == "dsa" and r["size"] == 20 and r["ipc"] == 2 and r["protocol"] == "dc"
        assert r["augmentation"] == "dsa" and r["architecture"] == "convnet" and r["epochs"] == 6
    assert [r["seed"] for r in rows] == [0, 1]
    again = evaluate_protocol(digits, dsa_set, n_models=2, epochs=6)
    assert [r["test_accuracy"] for r in again] == [r["test_accuracy"] for r in rows]
    # the learned/recommended learning rate is read from the artifact
    dsa_set.meta["training"]["lr"] = 0.05
    try:
        assert evaluate_protocol(digits, dsa_set, n_models=1, epochs=1)[0]["lr"] == 0.05
    finally:
        dsa_set.meta["training"]["lr"] = 0.01
    plain = evaluate_protocol(digits, random_real_subset(digits, 2), n_models=1, epochs=2)
    assert plain[0]["augmentation"] == "none" and plain[0]["method"] == "random"


def test_cross_architecture(digits, dsa_set):
    rows = evaluate_protocol(digits, dsa_set, n_models=1, epochs=2, architectures=("mlp", "resnet18"))
    assert [r["architecture"] for r in rows] == ["mlp", "resnet18"]
    assert all(0.0 <= r["test_accuracy"] <= 1.0 for r in rows)


def test_protocol_refuses_other_data(digits, dsa_set):
    other = digits.subset(np.arange(1000), name="other")
    with pytest.raises(DataError, match="other data"):
        evaluate_protocol(other, dsa_set, n_models=1, epochs=1)
    with pytest.raises(ConfigError, match="architecture"):
        evaluate_protocol(digits, dsa_set, n_models=1, epochs=1, architectures=("vgg",))
    with pytest.raises(DataError, match="test split"):
        evaluate_protocol(load("digits", ensure_test=False), random_real_subset(digits, 1), check_source=False)


def test_saved_artifact_reproduces_accuracy_in_a_fresh_process(digits, dsa_set, tmp_path):
    rows = evaluate_protocol(digits, dsa_set, n_models=2, epochs=5)
    path = dsa_set.save(tmp_path / "dsa-set")
    script = textwrap.dedent(f"""
        import json, torch
        torch.set_num_threads(1)
        from datadistill.data import DistilledSet, load
        from datadistill.synth import evaluate_protocol
        rows = evaluate_protocol(load("digits"), DistilledSet.open({str(path)!r}), n_models=2, epochs=5)
        print(json.dumps([r["test_accuracy"] for r in rows]))
    """)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, check=True)
    fresh = json.loads(out.stdout.strip().splitlines()[-1])
    assert fresh == [r["test_accuracy"] for r in rows]


def test_image_grid(digits, dsa_set, tmp_path):
    out = image_grid(dsa_set, tmp_path / "grid.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    img = matplotlib.image.imread(out)
    assert img.shape[0] > img.shape[1] > 0  # ten class rows, two columns
    flat = DistilledSet(X=np.zeros((4, 64), np.float32), y=np.array([0, 0, 1, 1]), classes=("a", "b"))
    with pytest.raises(DataError, match="tabular"):
        image_grid(flat, tmp_path / "flat.png")
