"""`datadistill select|evaluate|distill DATA --sequences`: time series from a .npz or a long table, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest

import datadistill as dd
from datadistill.cli import main
from datadistill.data import timeseries as ts

T = 32


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    X, y = ts.synthetic_waveforms(150, T, n_classes=3, noise=0.2, random_state=0)
    path = tmp_path_factory.mktemp("seq") / "waves.npz"
    np.savez(path, x=X[:, :, 0], y=y)  # (N, T): one channel
    return path, X, y


@pytest.fixture()
def ragged(tmp_path):
    """A long table: 6 series of 5 or 6 steps (s1 and s4 are short), two channels, rows out of time order."""
    rows = []
    for sid, (n, label) in enumerate(zip([6, 5, 6, 6, 5, 6], "updown")):
        for step in reversed(range(n)):
            rows.append(f"s{sid},{step},{10 * sid + step},{-step},{'x' if label in 'up' else 'y'}")
    path = tmp_path / "ragged.csv"
    path.write_text("id,t,a,b,label\n" + "\n".join(rows) + "\n")
    return path


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_select_npz_uses_the_conv1d_embedding(waves, tmp_path, capsys):
    path, X, y = waves
    out = tmp_path / "kept"
    code, stdout, err = run(["select", path, "--sequences", "--method", "kcenter", "--ratio", "0.1",
                             "--param", "epochs=1", "--out", out], capsys)
    assert code == 0, err
    assert "kept 12 of 120 samples" in stdout
    assert "120 training sequences, test 30, 3 classes, 32 steps x 1 channel" in err
    kept = dd.open(out)
    assert kept.meta["parameters"]["model"] == "conv1d" and kept.meta["parameters"]["features"] == "embedding"
    assert kept.X.shape == (12, T, 1) and sorted(np.bincount(kept.y).tolist()) == [4, 4, 4]
    rows = kept.source_row_ids()  # rows of the file's x: the samples are the file's own series
    np.testing.assert_allclose(kept.X[:, :, 0], X[rows, :, 0], atol=1e-6)
    np.testing.assert_array_equal(kept.y, y[rows])


def test_select_long_table_with_a_padding_rule(ragged, tmp_path, capsys):
    base = ["select", ragged, "--sequences", "--time-column", "t", "--test-fraction", "0.34",
            "--method", "random", "--size", "2"]
    code, _, err = run([*base, "--out", tmp_path / "none"], capsys)
    assert code == 3 and not (tmp_path / "none").exists()
    assert "unequal lengths (5 to 6 steps; 's1' has 5, 's0' has 6)" in err
    assert "--pad zero" in err and "--pad edge" in err and "--pad truncate" in err and "pad='" not in err
    code, _, err = run([*base[:-2], "--ratio", "1", "--pad", "edge", "--value-columns", "a", "--out",
                        tmp_path / "edge"], capsys)
    assert code == 0, err
    kept = dd.open(tmp_path / "edge")
    assert kept.X.shape == (kept.meta["source_samples"], 6, 1)  # every training series, padded, channel a only
    series = {int(round(s[0, 0])) // 10: s[:, 0] for s in kept.X}
    assert {1, 4} & set(series)  # a short series among them
    for sid, values in series.items():  # steps back in time order; the short series repeat their last value
        n = 5 if sid in (1, 4) else 6
        np.testing.assert_allclose(values, 10 * sid + np.minimum(np.arange(6), n - 1))
    code, _, err = run([*base, "--pad", "truncate", "--out", tmp_path / "cut"], capsys)
    assert code == 0, err
    assert dd.open(tmp_path / "cut").X.shape == (2, 5, 2)
    code, _, err = run([*base, "--pad", "truncate", "--length", "6", "--out", tmp_path / "long"], capsys)
    assert code == 2 and "choose --length <= 5 or --pad zero/edge" in err


def test_evaluate_defaults_to_conv1d_and_the_sequence_selectors(waves, tmp_path, capsys, monkeypatch):
    path = waves[0]
    seen = {}
    real = dd.evaluate

    def spy(dataset, **kwargs):
        seen.update(kwargs, sequence=ts.is_sequence(dataset))
        return real(dataset, **kwargs)

    monkeypatch.setattr(dd, "evaluate", spy)
    code, stdout, err = run(["evaluate", path, "--sequences", "--methods", "kcenter", "--ratios", "0.1", "--seeds", "1",
                             "--param", "kcenter.features=raw", "--budget", "epochs", "--epochs", "2", "--json",
                             "--out", tmp_path / "ev"], capsys)
    assert code == 0, err
    assert seen["sequence"] and seen["model"] == "conv1d"
    assert seen["method_params"] == {"kcenter": {"features": "raw", "model": "conv1d"}}  # --param kept, probe filled
    report = json.loads(stdout)
    rows = {r["method"]: r for r in report["rows"]}
    assert set(rows) == {"full", "random", "kcenter"} and {r["model"] for r in rows.values()} == {"conv1d"}
    assert rows["kcenter"]["size"] == rows["random"]["size"] == 11
    for extra, message in ((["--model", "convnet"], "--model convnet takes images"),
                           (["--protocol", "dc"], "evaluate sequences with --protocol same")):
        code, _, err = run(["evaluate", path, "--sequences", "--methods", "random", *extra], capsys)
        assert code == 2 and message in err


def test_distill_dm_then_evaluate_the_set(waves, tmp_path, capsys):
    path = waves[0]
    out = tmp_path / "syn"
    code, stdout, err = run(["distill", path, "--sequences", "--method", "dm", "--ipc", "5", "--iterations", "10",
                             "--batch-real", "16", "--out", out], capsys)
    assert code == 0, err
    assert "15 synthetic samples (5 per class) by dm" in stdout
    syn = dd.open(out)
    assert syn.X.shape == (15, T, 1) and np.isfinite(syn.X).all()
    assert syn.meta["parameters"]["model"] == "conv1d" and syn.meta["parameters"]["dsa"] is False
    assert not (out / "images.png").exists()
    code, stdout, err = run(["evaluate", path, "--sequences", "--distilled", out, "--no-baselines", "--seeds", "1",
                             "--budget", "epochs", "--epochs", "1", "--json"], capsys)
    assert code == 0, err
    (row,) = json.loads(stdout)["rows"]
    assert row["model"] == "conv1d" and row["size"] == 15
    code, _, err = run(["distill", path, "--sequences", "--method", "dm", "--model", "convnet", "--out",
                        tmp_path / "x"], capsys)
    assert code == 2 and "--model convnet takes images" in err


def test_bad_sequence_input(waves, tmp_path, capsys):
    path = waves[0]
    select = ["select", "--method", "random", "--size", "2", "--out", tmp_path / "out"]
    wide = tmp_path / "wide.csv"
    wide.write_text("f1,f2,label\n1,2,a\n3,4,b\n5,6,a\n7,8,b\n")
    np.savez(tmp_path / "images.npz", x=np.zeros((8, 4, 4, 3)), y=np.arange(8) % 2)
    cases = [  # (arguments, exit code, a phrase of the message)
        ([tmp_path, "--sequences"], 3, "a folder; --sequences reads a .npz"),
        (["digits", "--sequences"], 3, "no such file; --sequences reads"),
        ([wide, "--sequences"], 3, "id column 'id' not found"),
        ([tmp_path / "images.npz", "--sequences"], 3, "sequences must be (N, T) or (N, T, C)"),
        ([path, "--sequences", "--pad", "zero"], 2, "--pad: options of a long CSV/Parquet table"),
        ([wide, "--pad", "zero"], 2, "--pad describes sequence data; add --sequences"),
        ([path, "--sequences", "--stream"], 2, "sequences (--sequences) are read whole"),
    ]
    for extra, expected, phrase in cases:
        code, _, err = run([select[0], *extra, *select[1:]], capsys)
        assert code == expected and phrase in err, (extra, code, err)
    assert not (tmp_path / "out").exists()
    _, _, err = run([select[0], wide, "--sequences", *select[1:]], capsys)
    assert "(pass --id-column NAME); --sequences reads a long table" in err
