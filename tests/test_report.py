"""Report: aggregation arithmetic, JSON round trip, rendering, self-contained HTML."""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from datadistill.errors import ArtifactError
from datadistill.report import (
    FIGURES_DIR,
    REPORT_HTML,
    REPORT_JSON,
    REPORT_MD,
    Report,
    image_grid_figure,
    render,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _rows() -> list[dict]:
    rows = []
    for seed, (full_acc, rand_acc, sel_acc) in enumerate([(0.90, 0.80, 0.85), (0.92, 0.82, 0.89)]):
        rows.append({"method": "full", "kind": "full", "size": 100, "ratio": 1.0, "seed": seed,
                     "test_accuracy": full_acc, "train_seconds": 10.0, "select_seconds": 0.0, "epochs": 10,
                     "steps": 40, "weighted": False})
        for method, acc, sel in (("random", rand_acc, 0.0), ("kcenter", sel_acc, 3.0)):
            rows.append({"method": method, "kind": "selection", "size": 10, "ratio": 0.1, "seed": seed,
                         "test_accuracy": acc, "train_seconds": 1.0 + seed, "select_seconds": sel, "epochs": 10,
                         "steps": 4, "weighted": False, "indices": list(range(seed, 100, 10))})
            rows.append({"method": method, "kind": "selection", "size": 50, "ratio": 0.5, "seed": seed,
                         "test_accuracy": acc + 0.05, "train_seconds": 5.0, "select_seconds": sel, "epochs": 10,
                         "steps": 20, "weighted": False, "indices": list(range(seed, 100, 2))})
    return rows


def _report(two_d: bool = True) -> Report:
    rng = np.random.default_rng(0)
    context = {"dataset": "toy", "fingerprint": "ab" * 32, "model": "mlp", "pool_size": 100,
               "validation_size": 10, "test_size": 50, "recipe": {"epochs": 10},
               "environment": {"machine": "test cpu", "versions": {"numpy": np.__version__}, "date": "today"}}
    if two_d:
        context["points"] = {"X": rng.normal(size=(100, 2)).tolist(), "y": (np.arange(100) % 3).tolist()}
    return Report(rows=_rows(), context=context)


def test_aggregate_means_drops_and_speedups():
    agg = {(a["method"], a["size"]): a for a in _report().aggregate()}
    assert list(agg)[0] == ("full", 100) and list(agg)[1][0] == "random"
    k = agg[("kcenter", 10)]
    assert k["seeds"] == 2
    assert k["accuracy_mean"] == pytest.approx(0.87)
    assert k["accuracy_std"] == pytest.approx(np.std([0.85, 0.89], ddof=1))
    assert k["accuracy_drop"] == pytest.approx((0.91 - 0.87) * 100)
    assert k["train_seconds_mean"] == pytest.approx(1.5)
    assert k["train_speedup"] == pytest.approx(10.0 / 1.5)
    assert k["total_speedup"] == pytest.approx(10.0 / 4.5)
    versus = {(v["method"], v["size"]): v for v in _report().against_random()}
    assert versus[("kcenter", 10)]["delta_points"] == pytest.approx(6.0)
    assert versus[("kcenter", 10)]["beats"] and versus[("kcenter", 10)]["clear"]


def test_markdown_has_every_aggregate_row():
    md = _report().to_markdown()
    assert md.count("\n| kcenter |") == 2 and md.count("\n| random |") == 2 and "\n| full |" in md
    assert "91.00 ± 1.41" in md
    assert "kcenter: 10: +6.00*" in md


def test_report_round_trips_through_json(tmp_path):
    report = _report()
    path = report.to_json(tmp_path / "r.json")
    again = Report.from_json(path)
    assert again.rows == report.rows
    assert again.context == report.context
    assert again.aggregate() == report.aggregate()
    assert again.to_markdown() == report.to_markdown()


def test_from_json_refuses_missing_or_corrupt_files(tmp_path):
    with pytest.raises(ArtifactError, match="no such report"):
        Report.from_json(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ArtifactError, match="corrupt"):
        Report.from_json(bad)


def test_html_embeds_every_figure(tmp_path):
    report = _report()
    report.images.append({"title": "synthetic", "X": np.random.default_rng(1).random((6, 8, 8)).tolist(),
                          "y": [0, 0, 1, 1, 2, 2], "classes": ["a", "b", "c"]})
    report.render(tmp_path)
    files = sorted((tmp_path / FIGURES_DIR).glob("*.png"))
    names = {f.name for f in files}
    assert names == {"accuracy_vs_size.png", "train_time_vs_size.png", "selected_points.png", "samples_0.png"}
    page = (tmp_path / REPORT_HTML).read_text()
    assert "<script" not in page and "src=\"http" not in page  # self-contained
    embedded = re.findall(r'<img alt="([^"]+)" src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)
    assert {name for name, _ in embedded} == names
    for name, data in embedded:
        png = base64.b64decode(data)
        assert png.startswith(PNG_MAGIC)
        assert png == (tmp_path / FIGURES_DIR / name).read_bytes()
    assert "<td>kcenter</td>" in page


def test_render_rebuilds_everything_from_report_json(tmp_path):
    _report(two_d=False).render(tmp_path)
    for name in (REPORT_MD, REPORT_HTML):
        (tmp_path / name).unlink()
    for f in (tmp_path / FIGURES_DIR).iterdir():
        f.unlink()
    written = render(tmp_path)
    report = Report.from_json(tmp_path / REPORT_JSON)
    assert (tmp_path / REPORT_MD).read_text() == report.to_markdown()
    assert tmp_path / REPORT_HTML in written and tmp_path / REPORT_MD in written
    assert (tmp_path / REPORT_JSON).exists()
    assert sorted(f.name for f in (tmp_path / FIGURES_DIR).iterdir()) == ["accuracy_vs_size.png",
                                                                         "train_time_vs_size.png"]
    with pytest.raises(ArtifactError):
        render(tmp_path / "missing")


def test_image_grid_figure_writes_a_png(tmp_path):
    X = np.random.default_rng(0).integers(0, 255, size=(12, 3, 6, 6)).astype(np.uint8)
    path = image_grid_figure(X, np.arange(12) % 4, ["w", "x", "y", "z"], tmp_path / "g.png", per_class=3)
    assert path.read_bytes().startswith(PNG_MAGIC)


def test_one_sign_convention_significant_losses_and_per_class_flags():
    rows = []
    for seed in range(2):
        rows.append({"method": "full", "kind": "full", "size": 100, "ratio": 1.0, "seed": seed,
                     "test_accuracy": 0.9, "train_seconds": 10.0, "class_accuracy": [0.9, 0.9, 0.9]})
        rows.append({"method": "random", "kind": "selection", "size": 10, "ratio": 0.1, "seed": seed,
                     "test_accuracy": 0.85 + seed * 0.002, "train_seconds": 1.0, "class_accuracy": [0.85, 0.85, 0.85]})
        # loses 6 points overall but 20 on the rare class 'c'
        rows.append({"method": "bad", "kind": "selection", "size": 10, "ratio": 0.1, "seed": seed,
                     "test_accuracy": 0.84 - seed * 0.002, "train_seconds": 1.0, "class_accuracy": [0.9, 0.92, 0.70]})
    report = Report(rows=rows, context={"classes": ["a", "b", "c"], "budget_rule": "trained to convergence"})
    agg = {a["method"]: a for a in report.aggregate()}
    assert agg["random"]["vs_full_points"] < 0 and agg["bad"]["vs_full_points"] < 0
    versus = {v["method"]: v for v in report.against_random()}
    assert versus["bad"]["delta_points"] < 0 and versus["bad"]["clear"] and not versus["bad"]["beats"]
    flags = {c["method"]: c["flagged"] for c in report.class_losses()}
    assert [f["class"] for f in flags["bad"]] == ["c"] and flags["random"] == []
    md = report.to_markdown()
    assert "c -20.0" in md and "trained to convergence" in md and "vs full (points)" in md


# --- rows name their model and protocol ----------------------------------------------------------------
def _row(method: str, size: int, seed: int, acc: float, **kw) -> dict:
    return {"method": method, "kind": kw.pop("kind", "selection"), "size": size, "ratio": size / 100, "seed": seed,
            "test_accuracy": acc, "train_seconds": kw.pop("train_seconds", 1.0), "select_seconds": 0.0, **kw}


def _dc_report() -> Report:
    """A dc table over two architectures: labels carry ``[arch]``, each row its model and protocol dc."""
    accs = {("full", "convnet"): 0.95, ("full", "mlp"): 0.90, ("random", "convnet"): 0.80,
            ("random", "mlp"): 0.70, ("dm", "convnet"): 0.85, ("dm", "mlp"): 0.68}
    rows = []
    for seed in range(2):
        for (method, arch), acc in accs.items():
            size = 100 if method == "full" else 10
            rows.append(_row(f"{method} [{arch}]", size, seed, acc + 0.01 * seed, model=arch, protocol="dc",
                             train_seconds=10.0 if method == "full" else 2.0))
    return Report(rows=rows, context={"dataset": "toy", "model": "convnet/mlp (dc protocol)", "protocol": "dc"})


def test_tables_show_each_rows_model_and_protocol(tmp_path):
    report = _report(two_d=False)
    md = report.table_markdown()
    assert md.splitlines()[0].startswith("| method | model | protocol | size |")
    assert "\n| kcenter | mlp | same | 10 |" in md and "\n| full | mlp | same | 100 |" in md
    page = report.to_html(tmp_path / "r.html", figure_pngs=[]).read_text()
    assert "<th>model</th><th>protocol</th>" in page
    assert "<td>kcenter</td><td>mlp</td><td>same</td><td>10</td>" in page
    assert all({"model": "mlp", "protocol": "same"}.items() <= a.items() for a in report.aggregate())


def test_dc_rows_are_compared_with_random_and_full_of_the_same_model(tmp_path):
    report = _dc_report()
    assert report.methods()[:4] == ["full [convnet]", "full [mlp]", "random [convnet]", "random [mlp]"]
    agg = {a["method"]: a for a in report.aggregate()}
    assert agg["dm [convnet]"]["model"] == "convnet" and agg["dm [convnet]"]["protocol"] == "dc"
    assert agg["dm [convnet]"]["vs_full_points"] == pytest.approx(-10.0)  # 0.855 vs convnet's full 0.955
    assert agg["dm [mlp]"]["vs_full_points"] == pytest.approx(-22.0)      # 0.685 vs mlp's full 0.905
    assert agg["dm [mlp]"]["train_speedup"] == pytest.approx(5.0)
    versus = {v["method"]: v for v in report.against_random()}
    assert set(versus) == {"dm [convnet]", "dm [mlp]"}
    assert versus["dm [convnet]"]["random"] == "random [convnet]"
    assert versus["dm [convnet]"]["delta_points"] == pytest.approx(5.0) and versus["dm [convnet]"]["beats"]
    assert versus["dm [mlp]"]["delta_points"] == pytest.approx(-2.0) and not versus["dm [mlp]"]["beats"]
    md = report.to_markdown()
    assert "- dm \\[convnet\\]: 10: +5.00*" in md and "- dm \\[mlp\\]: 10: -2.00*" in md
    assert "\n| dm \\[mlp\\] | mlp | dc | 10 |" in md
    report.render(tmp_path)  # a full line and a random curve per architecture
    assert (tmp_path / FIGURES_DIR / "accuracy_vs_size.png").read_bytes().startswith(PNG_MAGIC)


def test_one_label_under_two_models_stays_two_rows():
    rows = []
    for seed in range(2):
        for model, protocol, base in (("mlp", "same", 0.9), ("convnet", "dc", 0.8)):
            rows += [_row("full", 100, seed, base, model=model, protocol=protocol, kind="full"),
                     _row("random", 10, seed, base - 0.2 + 0.001 * seed, model=model, protocol=protocol),
                     _row("kcenter", 10, seed, base - (0.1 if model == "mlp" else 0.3), model=model,
                          protocol=protocol)]
    report = Report(rows=rows, context={"dataset": "toy", "model": "mlp"})
    agg = {(a["method"], a["model"]): a for a in report.aggregate()}
    assert len(agg) == 6 and agg[("kcenter", "convnet")]["seeds"] == 2
    assert agg[("kcenter", "convnet")]["accuracy_mean"] == pytest.approx(0.5)
    versus = {(v["method"], v["model"]): v["delta_points"] for v in report.against_random()}
    assert versus == {("kcenter", "mlp"): pytest.approx(9.95), ("kcenter", "convnet"): pytest.approx(-10.05)}
    md = report.to_markdown()
    assert "- kcenter (mlp, same): 10: +9.95*" in md and "- kcenter (convnet, dc): 10: -10.05*" in md


def test_header_states_the_rows_included_on_their_own_line(tmp_path):
    report = _report(two_d=False)
    rows = "full data and random subsets (the baselines); selections by kcenter"
    report.context.update(rows_included=rows, protocol_note=f"rows: {rows}. ratio = size / 100, the pool")
    md = report.to_markdown()
    assert f"\n- rows included: {rows}\n" in md
    protocol_line = next(line for line in md.splitlines() if line.startswith("- protocol:"))
    assert protocol_line == "- protocol: ratio = size / 100, the pool"
    page = report.to_html(tmp_path / "r.html", figure_pngs=[]).read_text()
    assert f"<li>rows included: {rows}</li>" in page and "<li>protocol: ratio = size / 100, the pool</li>" in page


def test_a_report_json_from_before_rows_named_their_model_still_renders(tmp_path):
    import json

    old = _report(two_d=False)
    # an older dc run: a synthetic set's rows carry the architecture; the other rows trained the run's mlp
    old.rows += [_row("dm", 10, seed, 0.6 + 0.01 * seed, kind="synthetic", architecture="convnet")
                 for seed in range(2)]
    old.context.update(protocol="dc", protocol_note="validation rows come from the training split")
    assert not any("model" in r or "protocol" in r for r in old.rows)
    (tmp_path / REPORT_JSON).write_text(json.dumps({"rows": old.rows, "context": old.context}))
    render(tmp_path)
    md = (tmp_path / REPORT_MD).read_text()
    assert "\n| kcenter | mlp | same | 10 |" in md and "\n| random | mlp | same | 50 |" in md
    assert "\n| dm | convnet | dc | 10 | 0.1 | 2 | 60.50 ± 0.71 | — |" in md  # no convnet full row to compare with
    assert "- rows included: the rows in the table: full, random, kcenter, dm\n" in md
    assert "- kcenter: 10: +6.00*" in md and "- dm:" not in md  # no dc random row for dm
    again = Report.from_json(tmp_path / REPORT_JSON)
    assert again.rows == old.rows


def test_without_a_full_row_speedups_are_a_dash_not_nan():
    """evaluate --no-baselines: no full-data row to divide by, so no speedup (it printed "nanx")."""
    report = _report(two_d=False)
    report.rows = [r for r in report.rows if r["method"] != "full"]
    text = report.to_markdown()
    assert "nan" not in text.lower() and "kcenter" in text
