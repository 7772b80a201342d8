import json
import subprocess
import sys

import numpy as np
import pytest

from datadistill.cli import main


def run(args, capsys):
    code = main([str(a) for a in args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_select_show_round_trip(tmp_path, csv_file, capsys):
    out = tmp_path / "sel"
    code, stdout, _ = run(["select", csv_file, "--method", "stratified", "--ratio", "0.25", "--out", out], capsys)
    assert code == 0 and "kept 24 of 96" in stdout
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "stratified" and len(meta["classes"]) == 2
    code, stdout, _ = run(["show", out], capsys)
    assert code == 0 and "class histogram" in stdout and "stratified" in stdout
    # the class histogram lines add up to the kept count
    counts = [int(line.split()[1]) for line in stdout.splitlines() if line.startswith("    ")]
    assert sum(counts) == 24


@pytest.mark.parametrize(
    "extra, fragment, exit_code",
    [
        (["--method", "nosuch", "--ratio", "0.1"], "unknown selection method 'nosuch'", 2),
        (["--method", "random", "--ratio", "1.5"], "ratio must be in (0, 1]", 2),
        (["--method", "random", "--ratio", "0"], "ratio must be in (0, 1]", 2),
        (["--method", "random", "--size", "5000"], "only 96", 3),
        (["--method", "random"], "exactly one of --ratio", 2),
    ],
)
def test_select_rejects_bad_options(tmp_path, csv_file, capsys, extra, fragment, exit_code):
    code, _, err = run(["select", csv_file, *extra, "--out", tmp_path / "o"], capsys)
    assert code == exit_code
    assert fragment in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists()


def test_select_bad_inputs(tmp_path, capsys):
    code, _, err = run(["select", tmp_path / "missing.csv", "--method", "random", "--ratio", "0.1",
                        "--out", tmp_path / "o"], capsys)
    assert code == 3 and "missing.csv: no such file" in err
    bad = tmp_path / "bad.csv"
    bad.write_text("a,label\n1,0\nfoo,1\n2,1\n")
    code, _, err = run(["select", bad, "--method", "random", "--ratio", "0.5", "--out", tmp_path / "o"], capsys)
    assert code == 3 and "column 'a' is not numeric" in err
    nolabel = tmp_path / "nolabel.csv"
    nolabel.write_text("a,b\n1,0\n2,1\n")
    code, _, err = run(["select", nolabel, "--method", "random", "--ratio", "0.5", "--out", tmp_path / "o"], capsys)
    assert code == 3 and "--label" in err


def test_existing_output_is_refused_unless_overwrite(tmp_path, csv_file, capsys):
    out = tmp_path / "sel"
    args = ["select", csv_file, "--method", "random", "--size", "10", "--out", out]
    assert run(args, capsys)[0] == 0
    code, _, err = run(args, capsys)
    assert code == 2 and "already exists" in err
    assert run([*args, "--overwrite", "--seed", "3"], capsys)[0] == 0


def test_methods_lists_every_registered_method(capsys):
    from datadistill.select import REGISTRY

    code, stdout, _ = run(["methods"], capsys)
    assert code == 0
    for name in REGISTRY:
        assert name in stdout


def test_console_script_help_and_usage_errors():
    proc = subprocess.run([sys.executable, "-m", "datadistill.cli", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "select" in proc.stdout and "evaluate" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "datadistill.cli", "select"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_distill_then_evaluate_saved_set_reproduces_accuracy(tmp_path, capsys):
    out = tmp_path / "dm"
    code, stdout, _ = run(["distill", "digits", "--method", "dm", "--ipc", "1", "--iterations", "3", "--width", "8",
                           "--depth", "2", "--eval-models", "2", "--eval-epochs", "5", "--out", out], capsys)
    assert code == 0 and (out / "images.png").exists()
    measured = json.loads((out / "meta.json").read_text())["accuracy"]
    code, _, _ = run(["evaluate", "digits", "--distilled", out, "--protocol", "dc", "--eval-models", "2",
                      "--eval-epochs", "5", "--methods", "random", "--ratios", "0.05", "--seeds", "1",
                      "--no-baselines", "--out", tmp_path / "ev"], capsys)
    assert code == 0
    rows = [json.loads(line) for line in (tmp_path / "ev" / "rows.jsonl").read_text().splitlines()]
    accs = sorted(r["test_accuracy"] for r in rows if r["method"].startswith("dm:"))
    assert len(accs) == 2
    assert np.mean(accs) == pytest.approx(measured["mean"], abs=1e-12)
    # the random subset (named in --methods, so kept without the baselines) is judged by the same protocol
    random_rows = [r for r in rows if r["method"] == "random"]
    assert len(random_rows) == 1 and (random_rows[0]["model"], random_rows[0]["protocol"]) == ("convnet", "dc")
    assert not any(r["method"] == "full" for r in rows)


def test_evaluate_rejects_bad_ratios_and_unknown_model(tmp_path, capsys):
    code, _, err = run(["evaluate", "digits", "--ratios", "0.1,2", "--out", tmp_path / "e"], capsys)
    assert code == 2 and "outside (0, 1]" in err
    code, _, err = run(["evaluate", "digits", "--model", "vgg", "--out", tmp_path / "e"], capsys)
    assert code == 2 and "unknown model 'vgg'" in err


def test_distill_eval_every_and_dm_loss_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "dm"
    code, _, err = run(["distill", "digits", "--method", "dm", "--ipc", "1", "--iterations", "4", "--width", "8",
                        "--depth", "2", "--eval-every", "2", "--param", "loss=mmd", "--param", "eval_steps=5",
                        "--out", out], capsys)
    assert code == 0, err
    meta = json.loads((out / "meta.json").read_text())
    record = meta["periodic_evaluation"]
    assert [e["iteration"] for e in record["records"]] == [0, 2, 4]
    assert record["kept_iteration"] in (0, 2, 4)
