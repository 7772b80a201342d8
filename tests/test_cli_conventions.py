"""Command-line conventions (exit codes, --json, --quiet, progress, --help examples, evaluate --param) and
provenance that maps a saved set back to the rows of the user's file."""

import io
import json
import shlex
import sys

import numpy as np
import pytest
import torch

import datadistill as dd
from datadistill import cli, progress
from datadistill.cli import main
from datadistill.data import Dataset, DistilledSet


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def loaded(err):
    return "training samples" in err


@pytest.fixture
def saved(tmp_path, csv_file, capsys):
    out = tmp_path / "sel"
    code, _, err = run(["select", csv_file, "--method", "random", "--size", "12", "--split-seed", "5",
                        "--out", out], capsys)
    assert code == 0, err
    return out


# --- exit codes -----------------------------------------------------------------------------------
def test_exit_codes_separate_usage_data_and_artifact_errors(tmp_path, csv_file, capsys):
    with pytest.raises(SystemExit) as exc:  # argparse: an unknown option
        main(["select", str(csv_file), "--no-such-option"])
    assert exc.value.code == cli.EXIT_USAGE == 2
    code, _, err = run(["select", csv_file, "--method", "random", "--ratio", "2", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "ratio must be in (0, 1]" in err  # ConfigError
    code, _, err = run(["select", tmp_path / "nope.csv", "--method", "random", "--size", "3",
                        "--out", tmp_path / "o"], capsys)
    assert code == cli.EXIT_DATA == 3 and "no such file" in err  # DataError
    code, _, err = run(["show", tmp_path], capsys)
    assert code == 3 and "not a datadistill set" in err  # ArtifactError
    assert "Traceback" not in err
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    for command in (["evaluate", csv_file, "--ratios", "0.5"], ["auto", csv_file], ["select", csv_file, "--method",
                                                                                      "random", "--size", "3"]):
        code, _, err = run([*command, "--out", taken], capsys)  # an existing --out: fix the command line
        assert code == 2 and "already exists" in err and "--overwrite" in err and not loaded(err), command
    assert (taken / "notes.txt").read_text() == "mine"


def test_interrupt_exits_130_and_a_bug_exits_1_with_its_traceback(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(cli, "cmd_methods", interrupted)
    code, _, err = run(["methods"], capsys)
    assert code == cli.EXIT_INTERRUPTED == 130 and "interrupted" in err
    monkeypatch.setattr(cli, "cmd_methods", broken)
    code, _, err = run(["methods"], capsys)
    assert code == cli.EXIT_FAILURE == 1
    assert "Traceback" in err and "error: unexpected ZeroDivisionError: boom" in err.splitlines()[-1]


# --- --json ---------------------------------------------------------------------------------------
def test_methods_json_lists_every_method_and_model(capsys):
    code, out, _ = run(["methods", "--json"], capsys)
    assert code == 0
    doc = json.loads(out)
    assert set(doc["selection"]) == set(dd.SELECTORS) and set(doc["synthesis"]) == set(dd.DISTILLERS)
    assert set(doc["models"]) == set(dd.MODELS)
    assert doc["selection"]["kcenter"]["cost"] == dd.SELECTORS["kcenter"].cost
    assert isinstance(doc["synthesis"]["mtt"]["images_only"], bool)


def test_select_and_show_json(tmp_path, csv_file, capsys):
    out = tmp_path / "sel"
    code, stdout, err = run(["select", csv_file, "--method", "stratified", "--ratio", "0.25", "--json",
                             "--out", out], capsys)
    assert code == 0 and loaded(err)  # notes stay on stderr
    doc = json.loads(stdout)  # stdout holds the JSON document and nothing else
    assert doc["kept"] == 24 and doc["source_samples"] == 96 and doc["reduction"] == pytest.approx(4.0)
    assert doc["out"] == str(out) and doc["provenance"]["split"]["n_train"] == 96
    code, stdout, _ = run(["show", out, "--json"], capsys)
    assert code == 0
    shown = json.loads(stdout)
    assert shown["n_samples"] == 24 and sum(shown["class_histogram"].values()) == 24
    assert shown["method"] == "stratified" and shown["meta"]["method"] == "stratified"
    assert shown["source_rows_stored"] is True and shown["provenance"]["source"] == str(csv_file.resolve())


def test_evaluate_json_and_param(tmp_path, csv_file, capsys, monkeypatch):
    seen = {}

    class FakeReport:
        def to_dict(self):
            return {"rows": [{"method": "kmeans", "test_accuracy": 0.5}], "aggregate": []}

        def to_markdown(self):
            return "| table |"

    def fake_evaluate(dataset, **kwargs):
        seen.update(kwargs)
        return FakeReport()

    monkeypatch.setattr(dd, "evaluate", fake_evaluate)
    code, stdout, _ = run(["evaluate", csv_file, "--methods", "kmeans,kcenter", "--ratios", "0.1",
                           "--param", "kmeans.pca=2", "--param", "kmeans.max_iter=50", "--param", "kcenter.trim=0.1",
                           "--json"], capsys)
    assert code == 0
    assert seen["method_params"] == {"kmeans": {"pca": 2, "max_iter": 50}, "kcenter": {"trim": 0.1}}
    doc = json.loads(stdout)
    assert doc["rows"][0]["method"] == "kmeans" and doc["out"] is None


@pytest.mark.parametrize("param, fragment", [
    ("pca=2", "METHOD.KEY=VALUE"),
    ("kmeans.pca", "METHOD.KEY=VALUE"),
    ("nosuch.pca=2", "unknown selection method 'nosuch'"),
    ("herding.kernel=rbf", "'herding' is not among --methods"),
    ("kmeans.max_iter=abc", "max_iter must be an integer"),
    ("kmeans.no_such_option=1", "no_such_option"),
    ("kmeans.size=5", "evaluate sets size itself"),
])
def test_evaluate_param_refused_before_loading(tmp_path, csv_file, capsys, param, fragment):
    code, _, err = run(["evaluate", csv_file, "--methods", "kmeans", "--ratios", "0.1", "--param", param,
                        "--out", tmp_path / "run"], capsys)
    assert code == 2 and fragment in err and "Traceback" not in err
    assert not loaded(err) and not (tmp_path / "run").exists()


def test_evaluate_json_end_to_end(tmp_path, csv_file, capsys):
    code, stdout, err = run(["evaluate", csv_file, "--methods", "random", "--ratios", "0.5", "--seeds", "1",
                             "--model", "logreg", "--budget", "epochs", "--epochs", "2", "--json", "--quiet"],
                            capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert {r["method"] for r in doc["rows"]} >= {"random", "full"} and doc["aggregate"]
    assert doc["out"] is None and doc["report"] is None
    assert err == ""  # --quiet: no summary, no bar


def test_evaluate_no_baselines(tmp_path, csv_file, capsys, monkeypatch):
    code, stdout, err = run(["evaluate", csv_file, "--methods", "stratified", "--ratios", "0.5", "--seeds", "1",
                             "--model", "logreg", "--budget", "epochs", "--epochs", "2", "--no-baselines", "--json",
                             "--quiet"], capsys)
    assert code == 0, err
    doc = json.loads(stdout)
    assert {r["method"] for r in doc["rows"]} == {"stratified"}
    assert all((r["model"], r["protocol"]) == ("logreg", "same") for r in doc["rows"])
    assert doc["context"]["baselines"] is False and "baselines off" in doc["context"]["rows_included"]
    code, _, err = run(["evaluate", csv_file, "--no-baselines", "--quiet"], capsys)
    assert code == 2 and "nothing to evaluate" in err and "Traceback" not in err

    seen = []

    class FakeReport:
        def to_markdown(self):
            return "| table |"

    def fake_evaluate(dataset, **kwargs):
        seen.append(kwargs)
        return FakeReport()

    monkeypatch.setattr(dd, "evaluate", fake_evaluate)
    assert run(["evaluate", csv_file, "--quiet"], capsys)[0] == 0
    assert run(["evaluate", csv_file, "--quiet", "--no-baselines", "--methods", "kcenter"], capsys)[0] == 0
    assert [(kw["methods"], kw["baselines"]) for kw in seen] == [(["random"], True), (["kcenter"], False)]


# --- --quiet and progress -------------------------------------------------------------------------
def test_quiet_drops_notes_but_keeps_the_result(tmp_path, csv_file, capsys):
    code, out, err = run(["select", csv_file, "--method", "random", "--size", "10", "--quiet",
                          "--out", tmp_path / "q"], capsys)
    assert code == 0 and "kept 10 of 96" in out and err == ""
    code, _, err = run(["select", csv_file, "--method", "random", "--size", "10", "--out", tmp_path / "n"], capsys)
    assert code == 0 and loaded(err)


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_bar_only_on_a_terminal_and_not_when_silenced():
    assert progress.bar(3, file=io.StringIO()).disable  # a file or pipe: no bar
    assert not progress.bar(3, file=_Terminal()).disable
    assert progress.bar(3, file=_Terminal(), enabled=False).disable
    with progress.silenced():
        assert progress.is_silenced() and progress.bar(3, file=_Terminal()).disable
        with progress.silenced(False):
            assert progress.is_silenced()
    assert not progress.is_silenced()


def test_distill_bar_follows_the_terminal_and_quiet(tmp_path, csv_file, capsys, monkeypatch):
    args = ["distill", csv_file, "--method", "dm", "--model", "mlp", "--ipc", "2", "--iterations", "3",
            "--device", "cpu"]
    code, _, err = run([*args, "--out", tmp_path / "a"], capsys)
    assert code == 0 and "distill dm" not in err and "\r" not in err  # stderr is not a terminal here
    prov = DistilledSet.open(tmp_path / "a").meta["provenance"]  # a synthetic set records its source and split
    assert prov["source"] == str(csv_file.resolve()) and prov["split"]["n_train"] == 96 and "row_ids" not in prov
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    code, _, err = run([*args, "--out", tmp_path / "b"], capsys)
    assert code == 0 and "distill dm" in err
    code, out, err = run([*args, "--quiet", "--out", tmp_path / "c"], capsys)
    assert code == 0 and err == "" and "synthetic samples" in out
    assert not progress.is_silenced()  # --quiet ends with the command


# --- --help ---------------------------------------------------------------------------------------
def test_every_subcommand_help_has_examples():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    assert {"select", "auto", "distill", "evaluate", "report", "methods", "show", "demo"} <= set(subparsers)
    for name, sub in subparsers.items():
        text = sub.format_help()
        assert "examples:" in text and f"datadistill {name}" in text.split("examples:")[1], name
        assert max(len(line) for line in text.split("examples:")[0].splitlines()) <= 120, name  # wrapped
        commands = [line.strip() for line in text.split("examples:")[1].splitlines()
                    if line.startswith("  datadistill ")]
        for command in commands:  # every example is a valid command line
            args = parser.parse_args(shlex.split(command)[1:])
            assert args.command == name


# --- provenance -----------------------------------------------------------------------------------
def test_indices_map_back_to_rows_of_the_users_file(saved, csv_file):
    s = DistilledSet.open(saved)
    prov = s.meta["provenance"]
    assert prov["source"] == str(csv_file.resolve()) and prov["format"] == "csv" and prov["label"] == "label"
    assert prov["split"]["random_state"] == 5 and prov["split"]["test_fraction"] == 0.2
    assert prov["split"]["n_train"] == 96 and len(s.source_rows) == 96
    table = np.loadtxt(csv_file, delimiter=",", skiprows=1)
    rows = s.source_row_ids()
    np.testing.assert_allclose(table[rows, :3], s.X, atol=1e-6)
    np.testing.assert_array_equal(table[rows, 3], s.y)
    assert not np.array_equal(rows, s.indices)  # the split moved them: indices alone would name other rows


def test_show_prints_the_provenance(saved, capsys):
    code, out, _ = run(["show", saved], capsys)
    assert code == 0
    assert "source path" in out and "data.csv" in out and "label column 'label'" in out
    assert "test fraction 0.2, seed 5" in out and "96 training / 24 test rows" in out
    assert "source_rows[indices]" in out


def test_given_split_maps_indices_directly(tmp_path):
    rng = np.random.default_rng(1)
    path = tmp_path / "given.npz"
    np.savez(path, x_train=rng.normal(size=(40, 3)), y_train=np.arange(40) % 2, x_test=rng.normal(size=(10, 3)),
             y_test=np.arange(10) % 2)
    ds = dd.load(path)
    s = dd.select(ds, "random", size=6, random_state=0).record_source(ds)
    s.save(tmp_path / "set")
    back = DistilledSet.open(tmp_path / "set")
    assert back.source_rows is None and back.meta["provenance"]["row_ids"] == "indices"
    assert back.meta["provenance"]["split"]["kind"] == "given"
    np.testing.assert_array_equal(back.source_row_ids(), back.indices)
    with np.load(tmp_path / "set" / "data.npz") as z:
        assert "source_rows" not in z.files


def test_subset_and_split_compose_row_ids():
    rng = np.random.default_rng(2)
    ds = Dataset.create(rng.normal(size=(50, 2)).astype(np.float32), np.arange(50) % 2, name="d")
    split = ds.with_test_split(0.2, random_state=3)
    sub = split.subset([4, 0, 7])
    np.testing.assert_array_equal(sub.source_rows, split.source_rows[[4, 0, 7]])
    np.testing.assert_array_equal(ds.X[sub.source_rows], sub.X)
    prov = split.provenance()  # arrays from memory: no path to make absolute
    assert prov["source"] == "d" and prov["split"]["random_state"] == 3 and prov["split"]["n_train"] == 40


def test_set_without_provenance_still_opens_and_shows(saved, capsys):
    meta = json.loads((saved / "meta.json").read_text())
    del meta["provenance"]
    (saved / "meta.json").write_text(json.dumps(meta))
    with np.load(saved / "data.npz") as z:
        arrays = {k: z[k] for k in z.files if k != "source_rows"}
    np.savez_compressed(saved / "data.npz", **arrays)
    s = DistilledSet.open(saved)
    assert s.source_rows is None and s.source_row_ids() is None
    code, out, _ = run(["show", saved], capsys)
    assert code == 0 and "provenance   not recorded" in out


@pytest.mark.parametrize("rows, fragment", [
    (lambda r: r[:-1], "source_rows must be 96 integers"),
    (lambda r: r.astype(np.float64), "source_rows must be 96 integers"),
    (lambda r: np.where(np.arange(len(r)) == 3, -1, r), "negative row id -1"),
    (lambda r: np.where(np.arange(len(r)) == 3, r[4], r), "names a source row twice"),
])
def test_damaged_source_rows_are_refused(saved, capsys, rows, fragment):
    with np.load(saved / "data.npz") as z:
        arrays = {k: z[k] for k in z.files}
    arrays["source_rows"] = rows(arrays["source_rows"])
    np.savez_compressed(saved / "data.npz", **arrays)
    with pytest.raises(dd.ArtifactError, match=fragment):
        DistilledSet.open(saved)
    code, _, err = run(["show", saved], capsys)
    assert code == 3 and fragment.split()[0] in err


def test_record_source_refuses_other_data(saved):
    s = DistilledSet.open(saved)
    other = Dataset.create(np.zeros((10, 3), dtype=np.float32) + np.arange(10)[:, None], np.arange(10) % 2)
    with pytest.raises(dd.ArtifactError, match="10 training rows"):
        s.record_source(other)


# --- distill: time across resumes -----------------------------------------------------------------
def test_resumed_distill_keeps_the_time_already_spent(tmp_path):
    rng = np.random.default_rng(0)
    y = np.arange(45) % 3
    ds = Dataset.create(rng.normal(size=(45, 4)).astype(np.float32) + y[:, None], y, name="tiny",
                        test=(rng.normal(size=(9, 4)), np.arange(9) % 3))
    ckpt = tmp_path / "run.ckpt"
    kw = dict(ipc=1, model="mlp", batch_real=8, device="cpu", checkpoint=ckpt)
    first = dd.get_distiller("dm", iterations=3, **kw).fit(ds).meta["timings"]
    again = dd.get_distiller("dm", iterations=5, **kw).fit(ds).meta["timings"]
    done = dd.get_distiller("dm", iterations=5, **kw).fit(ds).meta["timings"]  # nothing left to do
    assert first["iterations_run"] == 3 and first["resumed_from_iteration"] == 0
    assert again["iterations_run"] == 5 and again["this_run_iterations"] == 2 and again["resumed_from_iteration"] == 3
    assert again["seconds_before_resume"] > 0
    assert again["distill_seconds"] == pytest.approx(again["seconds_before_resume"] + again["this_run_seconds"])
    assert again["distill_seconds"] > again["this_run_seconds"]
    assert done["iterations_run"] == 5 and done["this_run_iterations"] == 0
    assert done["distill_seconds"] >= again["seconds_before_resume"] > 0
    # a checkpoint from before seconds were recorded: the earlier time is unknown, not 0
    blob = torch.load(ckpt, weights_only=True)
    del blob["seconds"]
    torch.save(blob, ckpt)
    old = dd.get_distiller("dm", iterations=6, **kw).fit(ds).meta["timings"]
    assert old["seconds_before_resume"] is None and old["iterations_run"] == 6
    blob["seconds"] = -1.0
    torch.save(blob, ckpt)
    with pytest.raises(dd.ArtifactError, match="seconds -1.0"):
        dd.get_distiller("dm", iterations=6, **kw).fit(ds)


# --- Dask flags -----------------------------------------------------------------------------------
def test_select_scheduler_threads_by_rows_matches_by_class_for_top_k(tmp_path, csv_file, capsys):
    """--scheduler threads --by rows: the score top-k reduced over row partitions is the offline subset."""
    pytest.importorskip("distributed")
    picks = {}
    for by in ("rows", "class"):
        out = tmp_path / by
        code, _, err = run(["select", csv_file, "--method", "entropy", "--size", "15", "--param", "strategy=hardest",
                            "--scheduler", "threads", "--by", by, "--partitions", "3", "--quiet", "--out", out],
                           capsys)
        assert code == 0, err
        picks[by] = DistilledSet.open(out).indices
    assert np.array_equal(np.sort(picks["rows"]), np.sort(picks["class"]))


def test_select_unreachable_scheduler_is_a_clear_error_not_a_hang(tmp_path, csv_file, capsys):
    pytest.importorskip("distributed")
    import socket

    with socket.socket() as s:  # a free local port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, _, err = run(["select", csv_file, "--method", "kcenter", "--size", "10", "--scheduler",
                        f"tcp://127.0.0.1:{port}", "--scheduler-timeout", "1", "--out", tmp_path / "o"], capsys)
    assert code == 2 and "127.0.0.1" in err
    assert not (tmp_path / "o").exists()


def test_select_out_of_core_from_a_memory_mapped_npy(tmp_path, capsys):
    """select --out-of-core: the same k-center picks as the Python call on the same files."""
    rng = np.random.default_rng(0)
    X = rng.normal(size=(400, 6)).astype(np.float32)
    y = (X[:, 0] > 0).astype(np.int64)
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "y.npy", y)
    code, out, err = run(["select", tmp_path / "x.npy", "--labels", tmp_path / "y.npy", "--out-of-core", "--method",
                          "kcenter", "--size", "20", "--batch-size", "64", "--json", "--out", tmp_path / "kc"], capsys)
    assert code == 0, err
    assert json.loads(out)["kept"] == 20
    ref = dd.select_out_of_core(tmp_path / "x.npy", "kcenter", size=20, labels=tmp_path / "y.npy", batch_size=64,
                                random_state=0)
    assert np.array_equal(np.sort(DistilledSet.open(tmp_path / "kc").indices), np.sort(ref.indices))
    code, _, err = run(["select", tmp_path / "x.npy", "--out-of-core", "--method", "dbscan", "--size", "20",
                        "--out", tmp_path / "db"], capsys)
    assert code == 2 and "out-of-core selection supports" in err
