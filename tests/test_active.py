"""Active learning: the oracle loop, diverse batches, the human-in-the-loop round trip on disk, bad label files."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from datadistill.active import STATE_FILE, active, cold_start, query, read_label_file
from datadistill.data import Dataset, DistilledSet
from datadistill.errors import ConfigError, DataError

FAST = {"model": "logreg", "min_steps": 60, "epochs": 5}


@pytest.fixture(scope="module")
def blobs():
    """Four classes in 10-D, overlapping enough that labels matter: 600 pool rows, 400 test rows."""
    from sklearn.datasets import make_classification

    X, y = make_classification(n_samples=1000, n_features=10, n_informative=6, n_redundant=0, n_classes=4,
                               n_clusters_per_class=1, class_sep=1.5, random_state=3)
    return Dataset.create(X[:600], y[:600], ["a", "b", "c", "d"], test=(X[600:], y[600:]), name="blobs")


def test_oracle_loop_improves_accuracy_and_beats_its_start(blobs, tmp_path):
    result = active(blobs, tmp_path / "run", strategy="margin", batch_size=10, initial=8, budget=48, **FAST)
    assert result.status == "done"
    labels = [p["labels"] for p in result.curve]
    assert labels == [8, 18, 28, 38, 48]
    acc = [p["accuracy"] for p in result.curve]
    assert acc[-1] > acc[0] + 0.1
    assert np.mean(acc[-2:]) > np.mean(acc[:2]) + 0.05
    assert all(p["random_accuracy"] is not None for p in result.curve)
    assert len(np.unique(result.ids)) == len(result.ids) == 48
    np.testing.assert_array_equal(result.labels, blobs.y[result.ids])  # the oracle read the data's labels
    saved = DistilledSet.open(tmp_path / "run" / "labelled")
    np.testing.assert_array_equal(saved.indices, result.ids)
    np.testing.assert_array_equal(saved.y, blobs.y[result.ids])
    assert saved.meta["method"] == "active-margin" and saved.meta["source_fingerprint"] == blobs.fingerprint
    curve = json.loads((tmp_path / "run" / "curve.json").read_text())
    assert [p["labels"] for p in curve["points"]] == labels
    assert (tmp_path / "run" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_oracle_rerun_continues_with_a_raised_budget(blobs, tmp_path):
    first = active(blobs, tmp_path / "run", batch_size=10, budget=30, strategy="badge", compare_random=False, **FAST)
    again = active(blobs, tmp_path / "run", batch_size=10, budget=30, strategy="badge", compare_random=False, **FAST)
    np.testing.assert_array_equal(again.ids, first.ids)  # done: nothing new
    assert len(again.curve) == len(first.curve)
    more = active(blobs, tmp_path / "run", batch_size=10, budget=50, strategy="badge", compare_random=False, **FAST)
    np.testing.assert_array_equal(more.ids[:30], first.ids)
    assert len(more.ids) == 50 and len(np.unique(more.ids)) == 50
    assert [p["labels"] for p in more.curve] == [10, 20, 30, 40, 50]
    with pytest.raises(ConfigError, match="strategy='badge'"):
        active(blobs, tmp_path / "run", batch_size=10, budget=50, strategy="margin", **FAST)
    other = Dataset.create(blobs.X[::-1].copy(), blobs.y[::-1].copy(), blobs.classes, test=blobs.test)
    with pytest.raises(DataError, match="other data"):
        active(other, tmp_path / "run", batch_size=10, budget=50, strategy="badge", compare_random=False, **FAST)


def _near_duplicate_pool(seed: int = 0):
    """40 near-copies of one point, all the most uncertain, beside 200 spread-out rows of lower uncertainty."""
    rng = np.random.default_rng(seed)
    spread = rng.normal(size=(200, 5)) * 3
    dup = np.ones((40, 5)) + rng.normal(scale=1e-3, size=(40, 5))
    features = np.vstack([dup, spread]).astype(np.float32)
    logits = np.zeros((240, 3))
    logits[40:, 0] = rng.uniform(0.5, 3.0, size=200)  # confident-ish
    logits[:40] += rng.normal(scale=1e-3, size=(40, 3))  # uniform probabilities: the most uncertain
    return logits, features


@pytest.mark.parametrize("strategy", ["margin", "entropy", "least-confidence"])
def test_diverse_batches_have_no_duplicates_and_differ_from_top_k(strategy):
    logits, features = _near_duplicate_pool()
    top = query(strategy, logits, features, 10, np.random.default_rng(0), diversity="none")
    assert set(top) <= set(range(40))  # plain top-k: ten copies of the same point
    for diversity in ("kmeans", "kmeans++", "kcenter"):
        batch = query(strategy, logits, features, 10, np.random.default_rng(0), diversity=diversity, candidates=10)
        assert len(batch) == 10 and len(np.unique(batch)) == 10
        assert set(batch) != set(top)
        assert np.sum(batch < 40) <= 2  # at most a couple of the near-duplicates


def test_kmeans_diversity_takes_one_typical_row_per_region_not_the_outliers():
    """Three tight groups of 30 equally uncertain rows and three isolated rows: the k-means spread takes a row
    from the middle of each group; D² sampling reaches the isolated rows in some draws."""
    rng = np.random.default_rng(0)
    centres = np.array([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    groups = np.vstack([c + rng.normal(scale=0.3, size=(30, 2)) for c in centres])
    outliers = np.array([[5.0, 5.0], [-5.0, -3.0], [13.0, 8.0]])
    features = np.vstack([groups, outliers]).astype(np.float32)
    logits = np.zeros((93, 4))
    for seed in range(5):
        batch = query("margin", logits, features, 3, np.random.default_rng(seed), diversity="kmeans", candidates=31)
        assert sorted(batch // 30) == [0, 1, 2], batch  # one row from each group, none of rows 90-92
        for b in batch:  # and a central one: within 0.5 of its group's centre
            assert np.linalg.norm(features[b] - centres[b // 30]) < 0.5
    d2 = [query("margin", logits, features, 3, np.random.default_rng(s), diversity="kmeans++", candidates=31)
          for s in range(20)]
    assert any((b >= 90).any() for b in d2)


def test_badge_and_coverage_batches_are_distinct_and_spread():
    logits, features = _near_duplicate_pool(1)
    for strategy in ("badge", "coverage", "random"):
        batch = query(strategy, logits, features, 12, np.random.default_rng(0))
        assert len(batch) == 12 and len(np.unique(batch)) == 12
        assert batch.min() >= 0 and batch.max() < 240
        assert np.sum(batch < 40) <= 3, strategy
    # the whole pool asked for: every row once
    assert sorted(query("badge", logits, features, 240, np.random.default_rng(0))) == list(range(240))


def test_cold_start_covers_every_cluster_with_zero_labels(tmp_path):
    from sklearn.datasets import make_blobs

    X, y = make_blobs(n_samples=500, centers=5, n_features=4, cluster_std=0.5, center_box=(-20, 20), random_state=1)
    for method in ("kmeans", "kcenter"):
        picked = cold_start(X.astype(np.float32), 5, method, np.random.default_rng(0))
        assert len(np.unique(picked)) == 5
        assert sorted(y[picked]) == [0, 1, 2, 3, 4], method
    ds = Dataset.create(X[:400], y[:400], test=(X[400:], y[400:]))
    result = active(ds, tmp_path / "cold", batch_size=5, initial=5, budget=15, cold_start="kmeans", **FAST)
    assert result.curve[0]["labels"] == 5
    assert sorted(ds.y[result.ids[:5]]) == [0, 1, 2, 3, 4]  # no labels used to choose them, yet every class
    assert result.curve[0]["accuracy"] > 0.9


def _fill(path, ids, names):
    path.write_text("id,label\n" + "".join(f"{i},{n}\n" for i, n in zip(ids, names)))


def test_human_round_trip_survives_a_fresh_process(blobs, tmp_path):
    out = tmp_path / "human"
    first = active(blobs, out, labels="human", batch_size=6, initial=8, budget=19, **FAST)
    assert first.status == "waiting" and first.batch_file == out / "batch-001.csv"
    assert (out / "batch-001.parquet").is_file()
    assert len(first.batch_ids) == 8 and len(first.ids) == 0
    rows = (out / "batch-001.csv").read_text().splitlines()
    assert rows[0] == "id,label" and [int(r.split(",")[0]) for r in rows[1:]] == list(first.batch_ids)
    # nothing labelled yet: a rerun keeps waiting on the same batch
    again = active(blobs, out, labels="human", batch_size=6, initial=8, budget=19, **FAST)
    assert again.status == "waiting" and list(again.batch_ids) == list(first.batch_ids)
    # a person labels the batch, leaving one row out (skipped); the next step runs in a fresh process
    ids = first.batch_ids
    _fill(out / "batch-001.csv", ids[:-1], [blobs.classes[c] for c in blobs.y[ids[:-1]]])
    np.savez(tmp_path / "pool.npz", X=blobs.X, y=blobs.y, class_names=np.array(blobs.classes))
    script = textwrap.dedent(f"""
        import json, sys
        import numpy as np, torch
        torch.set_num_threads(1)
        from datadistill.active import active
        from datadistill.data import Dataset
        z = np.load({str(tmp_path / 'pool.npz')!r}, allow_pickle=False)
        ds = Dataset(X=z["X"], y=z["y"], classes=tuple(z["class_names"]), name="blobs")
        r = active(ds, {str(out)!r}, labels="human", batch_size=6, initial=8, budget=19, test={{}},
                   model="logreg", min_steps=60, epochs=5)
        print(json.dumps({{"status": r.status, "ids": r.ids.tolist(), "batch": r.batch_ids.tolist()}}))
    """).replace("test={}", "test=(z['X'][:50], z['y'][:50])")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    step = json.loads(proc.stdout.strip().splitlines()[-1])
    assert step["status"] == "waiting" and step["ids"] == [int(i) for i in ids[:-1]]
    assert len(step["batch"]) == 6 and not set(step["batch"]) & set(ids.tolist())  # skipped row not re-proposed
    state = json.loads((out / STATE_FILE).read_text())
    assert state["skipped"] == [int(ids[-1])] and state["pending"]["round"] == 2
    # the second batch is labelled in the Parquet file instead
    import pyarrow as pa
    import pyarrow.parquet as pq

    batch2 = np.asarray(step["batch"])
    pq.write_table(pa.table({"id": batch2, "label": [blobs.classes[c] for c in blobs.y[batch2]]}),
                   out / "batch-002.parquet")
    third = active(blobs, out, labels="human", batch_size=6, initial=8, budget=19, **FAST)
    assert third.status == "waiting" and len(third.ids) == 13 and len(third.batch_ids) == 6
    _fill(out / "batch-003.csv", third.batch_ids, [blobs.classes[c] for c in blobs.y[third.batch_ids]])
    done = active(blobs, out, labels="human", batch_size=6, initial=8, budget=19, **FAST)
    assert done.status == "done" and len(done.ids) == 19  # 7 + 6 + 6: the budget is spent
    saved = DistilledSet.open(out / "labelled")
    np.testing.assert_array_equal(saved.indices, done.ids)
    np.testing.assert_array_equal(saved.y, blobs.y[done.ids])
    assert [p["labels"] for p in done.curve] == [7, 13, 19]


def test_bad_label_files_name_the_rows_and_change_nothing(blobs, tmp_path):
    out = tmp_path / "bad"
    first = active(blobs, out, labels="human", batch_size=5, initial=5, budget=19, **FAST)
    ids = [int(i) for i in first.batch_ids]
    not_proposed = next(i for i in range(600) if i not in ids)
    before = (out / STATE_FILE).read_text()
    (out / "batch-001.csv").write_text(
        "id,label\n"
        f"{ids[0]},a\n"           # line 2: fine
        f"{not_proposed},b\n"     # line 3: not proposed
        f"{ids[1]},zebra\n"       # line 4: not a class
        f"{ids[2]},\n"            # line 5: missing label
        f"{ids[0]},c\n"           # line 6: repeated id
        "seven,a\n"               # line 7: not a number
        "9999,a\n")               # line 8: outside the pool
    with pytest.raises(DataError) as err:
        active(blobs, out, labels="human", batch_size=5, initial=5, budget=19, **FAST)
    text = str(err.value)
    assert "6 bad rows" in text
    for fragment in (f"line 3: id {not_proposed} was not proposed", "line 4: label 'zebra'", "line 5: id",
                     "has no label", "line 6: id", "repeats line 2", "line 7: id 'seven'", "line 8: id 9999"):
        assert fragment in text, fragment
    assert "'a', 'b', 'c', 'd'" in text
    assert (out / STATE_FILE).read_text() == before  # nothing was applied
    with pytest.raises(DataError, match="missing 'label'"):
        (out / "labels.csv").write_text("id,klass\n1,a\n")
        active(blobs, out, labels="human", batch_size=5, initial=5, budget=20, labels_file=out / "labels.csv", **FAST)
    (out / "empty.csv").write_text(f"id,label\n{ids[0]},\n{ids[1]},\n")
    assert read_label_file(out / "empty.csv", blobs.classes, allowed=np.asarray(ids)) is None  # not labelled yet


def test_seed_set_unlabelled_pool_and_bad_seed(blobs, tmp_path):
    X = blobs.X
    with pytest.raises(ConfigError, match="needs its class names"):
        active(X, tmp_path / "a", labels="human")
    with pytest.raises(ConfigError, match="oracle"):
        active(X, tmp_path / "b", classes=["a", "b"], labels="oracle")
    with pytest.raises(DataError, match=r"position 1 \(id 3\): label 'q'"):
        active(X, tmp_path / "c", classes=["a", "b", "c", "d"], labels="human", seed_ids=[1, 3],
               seed_labels=["a", "q"])
    r = active(X, tmp_path / "d", classes=["a", "b", "c", "d"], labels="human", seed_ids=[0, 1, 2, 3],
               seed_labels=[blobs.classes[c] for c in blobs.y[:4]], batch_size=4, **FAST)
    assert r.status == "waiting" and list(r.ids) == [0, 1, 2, 3]
    assert r.curve[0]["labels"] == 4 and r.curve[0]["accuracy"] is None  # no test split: no accuracy
    assert not set(r.batch_ids) & {0, 1, 2, 3}


def test_cli_human_loop_and_errors(blobs, tmp_path):
    import argparse

    from datadistill.cli_active import add_parser

    parser = argparse.ArgumentParser(prog="datadistill")
    add_parser(parser.add_subparsers(dest="command"))
    np.save(tmp_path / "pool.npy", blobs.X)
    argv = ["active", str(tmp_path / "pool.npy"), "--human", "--classes", "a,b,c,d", "--batch-size", "5",
            "--model", "logreg", "--min-steps", "50", "--out", str(tmp_path / "run")]
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    batch = [int(line.split(",")[0]) for line in (tmp_path / "run" / "batch-001.csv").read_text().splitlines()[1:]]
    assert len(batch) == 5
    _fill(tmp_path / "run" / "batch-001.csv", batch, [blobs.classes[c] for c in blobs.y[batch]])
    args = parser.parse_args(argv)
    assert args.func(args) == 0
    state = json.loads((tmp_path / "run" / STATE_FILE).read_text())
    assert state["ids"] == batch and state["pending"]["round"] == 2
    args = parser.parse_args([*argv[:-2], "--strategy", "badge", "--out", str(tmp_path / "run")])
    with pytest.raises(ConfigError, match="strategy='margin'"):
        args.func(args)
    help_text = parser._subparsers._group_actions[0].choices["active"].format_help()
    assert "examples:" in help_text and "--human" in help_text
