"""Sequences (N, T, C): loading, padding rules, leak-free window splits, conv1d selection/evaluation, DM."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from datadistill.data import timeseries as ts
from datadistill.errors import DataError
from datadistill.evaluation import RECIPES, evaluate
from datadistill.models import build_model

PROBE = {"min_steps": 60, "batch_size": 64}
FAST = replace(RECIPES["convnet"], optimizer="adam", lr=2e-3, momentum=0.0, weight_decay=0.0, batch_size=64,
               min_steps=60, patience_steps=60, eval_every=30, max_steps=150)


@pytest.fixture(scope="module")
def waves():
    X, y = ts.synthetic_waveforms(240, 32, n_classes=3, noise=0.2, random_state=0)
    Xt, yt = ts.synthetic_waveforms(90, 32, n_classes=3, noise=0.2, random_state=1)
    return ts.sequence_dataset(X, y, test=(Xt, yt), name="waves")


def test_npz_two_and_three_dimensional(tmp_path):
    X, y = ts.synthetic_waveforms(40, 16, n_classes=2, channels=3, random_state=0)
    np.savez(tmp_path / "multi.npz", x=X, y=y)
    np.savez(tmp_path / "uni.npz", x=X[:, :, 0], y=y)
    multi = ts.load_sequences(tmp_path / "multi.npz", test_fraction=0.25)
    uni = ts.load_sequence_npz(tmp_path / "uni.npz")
    assert multi.sample_shape == (16, 3) and ts.is_sequence(multi)
    assert len(multi) + len(multi.test) == 40 and multi.test.X.shape[1:] == (16, 3)
    assert uni.X.shape == (40, 16, 1) and uni.X.dtype == np.float32
    np.testing.assert_array_equal(uni.X[:, :, 0], X[:, :, 0])
    assert uni.info["sequence"] == {"length": 16, "channels": 1}
    bad = X.copy()
    bad[7, 3, 1] = np.nan
    np.savez(tmp_path / "bad.npz", x=bad, y=y)
    with pytest.raises(DataError, match="row 7"):
        ts.load_sequence_npz(tmp_path / "bad.npz")
    np.savez(tmp_path / "flat.npz", x=np.zeros((5, 2, 2, 2)), y=np.arange(5) % 2)
    with pytest.raises(DataError, match=r"\(N, T\) or \(N, T, C\)"):
        ts.load_sequence_npz(tmp_path / "flat.npz")


def _long_rows(lengths, labels, channels=("a", "b")):
    rows = []
    for sid, (n, lab) in enumerate(zip(lengths, labels)):
        for step in range(n):
            rows.append({"id": f"s{sid}", "time": float(step), **{c: sid * 100 + step + 0.5 * k
                                                                 for k, c in enumerate(channels)}, "label": lab})
    return rows


def test_long_csv_sorted_by_time_one_series_per_id(tmp_path):
    pd = pytest.importorskip("pandas")
    rows = _long_rows([6, 6, 6, 6], ["up", "down", "up", "down"])
    df = pd.DataFrame(rows).sample(frac=1.0, random_state=0)  # rows shuffled: time order must be restored
    df.to_csv(tmp_path / "long.csv", index=False)
    ds = ts.load_long_table(tmp_path / "long.csv")
    assert ds.X.shape == (4, 6, 2) and ds.classes == ("down", "up")
    s2 = ds.info["series_ids"].index("s2")
    np.testing.assert_allclose(ds.X[s2, :, 0], 200 + np.arange(6))
    np.testing.assert_allclose(ds.X[s2, :, 1], 200.5 + np.arange(6))
    assert ds.classes[ds.y[s2]] == "up"
    df.to_parquet(tmp_path / "long.parquet")
    pq = ts.load_long_table(tmp_path / "long.parquet", value_columns=["b"])
    assert pq.X.shape == (4, 6, 1)
    np.testing.assert_allclose(pq.X[s2, :, 0], 200.5 + np.arange(6))
    mixed = pd.DataFrame(_long_rows([3, 3], ["x", "y"]))
    mixed.loc[4, "label"] = "x"
    mixed.to_csv(tmp_path / "mixed.csv", index=False)
    with pytest.raises(DataError, match="id 's1' has label"):
        ts.load_long_table(tmp_path / "mixed.csv")
    dup = pd.DataFrame(_long_rows([3, 3], ["x", "y"]))
    dup.loc[1, "time"] = 0.0
    dup.to_csv(tmp_path / "dup.csv", index=False)
    with pytest.raises(DataError, match="two rows at time"):
        ts.load_long_table(tmp_path / "dup.csv")


def test_long_table_sorts_by_date_and_timestamp_columns(tmp_path):
    # dates as CSV text ("2024-03-02") arrive as arrow date32, which has no direct cast to int64
    dates = ["2024-03-03", "2024-03-01", "2024-03-02"]
    body = "".join(f"{sid},{d},{10 * k + i},{lab}\n" for k, (sid, lab) in enumerate([("a", "x"), ("b", "y")])
                   for i, d in enumerate(dates))
    (tmp_path / "dates.csv").write_text("id,time,v,label\n" + body)
    ds = ts.load_long_table(tmp_path / "dates.csv")
    np.testing.assert_array_equal(ds.X[:, :, 0], [[1, 2, 0], [11, 12, 10]])   # 03-01, 03-02, 03-03
    stamps = [d + "T12:00:00" for d in dates]
    (tmp_path / "stamps.csv").write_text("id,time,v,label\n" + body.replace("2024-03-0", "T").replace(
        "T1", stamps[1]).replace("T2", stamps[2]).replace("T3", stamps[0]))
    np.testing.assert_array_equal(ts.load_long_table(tmp_path / "stamps.csv").X, ds.X)
    (tmp_path / "twice.csv").write_text("id,time,v,label\na,2024-03-01,1,x\na,2024-03-01,2,x\nb,2024-03-01,1,y\n")
    with pytest.raises(DataError, match="two rows at time"):
        ts.load_long_table(tmp_path / "twice.csv")


def test_mixed_labels_message_shows_the_values(tmp_path):
    (tmp_path / "mixed.csv").write_text("id,time,v,label\na,1,2,x\na,2,3,y\nb,1,1,y\nb,2,1,y\n")
    with pytest.raises(DataError, match="id 'a' has label 'x' and, in row 1, 'y'; a sequence has one label"):
        ts.load_long_table(tmp_path / "mixed.csv")


def test_unequal_lengths_need_a_padding_rule(tmp_path):
    pd = pytest.importorskip("pandas")
    pd.DataFrame(_long_rows([5, 3, 4], ["x", "y", "x"])).to_csv(tmp_path / "ragged.csv", index=False)
    with pytest.raises(DataError) as err:
        ts.load_long_table(tmp_path / "ragged.csv")
    message = str(err.value)
    assert "unequal lengths" in message and "'s1' has 3" in message and "'s0' has 5" in message
    assert "pad='zero'" in message and "pad='edge'" in message and "pad='truncate'" in message
    zero = ts.load_long_table(tmp_path / "ragged.csv", pad="zero")
    edge = ts.load_long_table(tmp_path / "ragged.csv", pad="edge")
    cut = ts.load_long_table(tmp_path / "ragged.csv", pad="truncate")
    assert zero.X.shape == (3, 5, 2) and cut.X.shape == (3, 3, 2)
    np.testing.assert_allclose(zero.X[1, :, 0], [100, 101, 102, 0, 0])
    np.testing.assert_allclose(edge.X[1, :, 0], [100, 101, 102, 102, 102])
    np.testing.assert_allclose(cut.X[0, :, 0], [0, 1, 2])
    with pytest.raises(Exception, match="unknown padding rule"):
        ts.pad_sequences([np.zeros(3), np.zeros(4)], "mean")
    with pytest.raises(Exception, match="cannot truncate to 4 steps"):
        ts.pad_sequences([np.zeros(3), np.zeros(4)], "truncate", length=4)
    ds = ts.from_sequences([np.arange(4.0), np.arange(6.0)], ["a", "b"], pad="edge")
    assert ds.X.shape == (2, 6, 1) and ds.X[0, -1, 0] == 3.0


def _long_series(T=400, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(T) // 50) % 3
    freq = np.array([2.0, 5.0, 9.0])[labels]
    series = np.stack([np.sin(2 * np.pi * freq * np.arange(T) / 50), rng.normal(0, 0.1, T)], axis=1)
    return series, labels


def test_windows_and_split_by_time_never_leak():
    series, labels = _long_series()
    w = ts.windows(series, labels, length=20, stride=5)
    assert w.X.shape == (77, 20, 2) and len(w.y) == 77
    np.testing.assert_allclose(w.X[3], series[15:35])
    # steps 35-54: 15 steps of class 0, 5 of 1; 40-59: a 10/10 tie goes to the later label
    assert w.y[0] == 0 and w.y[7] == 0 and w.y[8] == 1 and w.y[9] == 1
    assert ts.windows(series, labels, 20, 5, label_rule="last").y[7] == 1
    ds = ts.split_windows(w, by="time", test_fraction=0.25, gap=10)
    train = ds.row_ids()
    train_end = w.start[train] + w.length
    assert train_end.max() <= 300  # cut at 75% of 400 steps
    test_starts = {int(s) for s in range(0, 381, 5) if s >= 310}
    assert len(ds.test) == len(test_starts) and len(ds) == len(train_end)
    assert ds.info["split"]["dropped_across_cut"] == 77 - len(ds) - len(ds.test)
    assert ts.is_sequence(ds) and ds.sample_shape == (20, 2)
    np.testing.assert_allclose(ds.test.X[0], series[310:330])
    # a random split of overlapping windows is refused, naming the windows that share steps
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(w))
    with pytest.raises(DataError, match="leaking window split.*share time steps"):
        ts.windows_dataset(w, perm[:60], perm[60:])
    # windows that do not overlap are fine; the gap option widens the refusal
    ts.windows_dataset(w, np.arange(0, 10), np.arange(14, 18))
    with pytest.raises(DataError, match="less than 10 steps apart"):
        ts.windows_dataset(w, np.arange(0, 10), np.arange(14, 18), gap=10)
    with pytest.raises(DataError, match="class '2' but no training window"):
        ts.windows_dataset(w, np.arange(0, 10), np.arange(14, 25))


def test_split_by_series_keeps_each_series_on_one_side():
    series = [_long_series(200, seed=s)[0] for s in range(5)]
    w = ts.windows(series, [s % 2 for s in range(5)], length=25, stride=10)
    ds = ts.split_windows(w, by="series", test_fraction=0.4, random_state=3)
    train_series = set(w.series[ds.row_ids()].tolist())
    assert len(train_series) == 3 and len(ds) + len(ds.test) == len(w)
    with pytest.raises(DataError, match="at least two series"):
        ts.split_windows(ts.windows(series[0], 0, 25), by="series")


def test_conv1d_reads_sequences_and_vectors():
    net = build_model("conv1d", (1, 32, 3), 4, seed=0)
    x = torch.randn(5, 1, 32, 3)
    assert net(x).shape == (5, 4) and net.features(x).shape == (5, 128)
    # the first convolution sees 3 channels over 32 steps: shifting every channel in time changes the output
    assert net.body[1].in_channels == 3
    assert build_model("conv1d", (40,), 2, seed=0)(torch.randn(2, 40)).shape == (2, 2)


def test_selection_and_evaluate_with_conv1d(waves):
    kc = ts.select_sequences(waves, "kcenter", ratio=0.1, epochs=1, probe_params=PROBE)
    assert kc.meta["parameters"]["model"] == "conv1d" and kc.meta["parameters"]["features"] == "embedding"
    assert len(kc) == 24 and kc.X.shape == (24, 32, 1)
    np.testing.assert_array_equal(kc.X, waves.X[kc.indices])
    report = evaluate(waves, methods=["entropy"], ratios=[0.2], model="conv1d", seeds=1, train_config=FAST,
                      progress=False, method_params={"entropy": {"model": "conv1d", "epochs": 1, "score_params": PROBE}})
    rows = {r["method"]: r for r in report.rows}
    assert set(rows) == {"full", "random", "entropy"}
    # three separable waveform classes: conv1d on all 216 pool samples is far above chance (33%)
    assert rows["full"]["test_accuracy"] > 0.8
    assert rows["entropy"]["size"] == rows["random"]["size"] == 43


def test_dm_of_sequences_keeps_the_sequence_shape(waves):
    dm = ts.distill_sequences(waves, ipc=4, iterations=20, batch_real=16, progress=False)
    assert dm.X.shape == (12, 32, 1) and np.isfinite(dm.X).all()
    assert sorted(np.bincount(dm.y).tolist()) == [4, 4, 4]
    assert dm.meta["parameters"]["model"] == "conv1d" and dm.meta["training"]["augmentation"] is None
    init = dm.meta["curves"]["matching_loss"]
    assert init[-1] < init[0]  # the synthetic sequences moved towards the real per-class statistics
    with pytest.raises(DataError, match="not a sequence data set"):
        ts.distill_sequences(replace(waves, info={}), ipc=2, iterations=1)


def test_sequence_settings_fill_only_what_is_not_given(tmp_path):
    assert ts.sequence_select_params("kcenter") == {"model": "conv1d", "features": "embedding"}
    assert ts.sequence_select_params("kcenter", {"features": "raw"}) == {"model": "conv1d", "features": "raw"}
    assert ts.sequence_select_params("entropy", {"epochs": 1}) == {"model": "conv1d", "epochs": 1}
    assert ts.sequence_select_params("random") == {}
    dm = ts.sequence_distiller("dm", ipc=2, iterations=1)
    assert dm.model == "conv1d" and dm.dsa is False
    assert ts.sequence_distiller("dm", ipc=2, dsa=True, model="mlp").dsa is True
    (tmp_path / "nolabel.csv").write_text("id,time,v,cls\na,1,2,x\na,2,3,x\n")
    with pytest.raises(DataError, match=r"label column 'label' not found; .* \(pass label=\.\.\.\)"):
        ts.load_long_table(tmp_path / "nolabel.csv")


def test_summary_calls_sequences_sequences():
    X, y = ts.synthetic_waveforms(60, 16, n_classes=3)
    ds = ts.sequence_dataset(X, y)
    assert "sequences (T, C)" in ds.summary() and "images" not in ds.summary()
