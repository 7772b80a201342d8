"""Report: evaluation rows + run context -> aggregated table, JSON, Markdown, figures and one HTML page."""

from __future__ import annotations

import base64
import html
import io
import json
import math
import os
import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .data.artifact import atomic_write, jsonable
from .errors import ArtifactError

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_HTML = "report.html"
FIGURES_DIR = "figures"
FULL = "full"
RANDOM = "random"
SAME = "same"
TABLE_HEAD = ("method", "model", "protocol", "size", "ratio", "seeds", "test accuracy %", "vs full (points)", "train s",
              "train speedup", "select s", "total speedup", "epochs", "steps (best)")


def printable(text: object) -> str:
    """``text`` with control characters (ANSI escapes, newlines, bidi overrides) shown as ``\\x1b``-style escapes."""
    return "".join(
        ch if unicodedata.category(ch) not in ("Cc", "Cf", "Zl", "Zp")
        else f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}"
        for ch in str(text))


_MARKDOWN_SPECIAL = {"&": "&amp;", "<": "&lt;", ">": "&gt;", **{c: "\\" + c for c in "\\`*_[]|~#"}}


def markdown_text(text: object) -> str:
    """``text`` safe to put inline in Markdown: control characters, Markdown and HTML specials escaped."""
    return "".join(_MARKDOWN_SPECIAL.get(ch, ch) for ch in printable(text))


def markdown_code(text: object) -> str:
    """``text`` as an inline Markdown code span that no backtick or control character inside can end."""
    text = printable(text)
    fence = "`" * (max((len(r) for r in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation of the values that are not None (0 for one value, NaN for none)."""
    arr = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if len(arr) == 0:
        return float("nan"), float("nan")
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0


def _class_means(rows: list[dict]) -> list[float | None] | None:
    """Per-class test accuracy averaged over seeds (None where rows carry none)."""
    per = [r["class_accuracy"] for r in rows if isinstance(r.get("class_accuracy"), list)]
    if not per:
        return None
    out = []
    for c in range(len(per[0])):
        vals = [p[c] for p in per if c < len(p) and p[c] is not None]
        out.append(float(np.mean(vals)) if vals else None)
    return out


CLASS_MARGIN_POINTS = 2.0


def _steps(steps: float | None, best: float | None) -> str:
    if steps is None:
        return "—"
    return f"{steps:,.0f}" + (f" ({best:,.0f})" if best is not None else "")


def _ratio(num: float, den: float) -> float:
    return num / den if den and den > 0 and math.isfinite(num) and math.isfinite(den) else float("nan")


def base_method(method: str, model: str) -> str:
    """The method of a row label without its `` [model]`` suffix (``random [convnet]`` -> ``random``)."""
    suffix = f" [{model}]"
    return method[:-len(suffix)] if method.endswith(suffix) else method


def _is(a: dict, baseline: str) -> bool:
    return base_method(a["method"], a["model"]) == baseline


def _points(value: float) -> str:
    return f"{value:+.2f}" if math.isfinite(value) else "—"


def _times(value) -> str:
    """A speedup cell: "—" where there is no full-data row of the same model and protocol to divide by."""
    return f"{value:.1f}x" if value is not None and math.isfinite(value) else "—"


def _table_cells(a: dict) -> list[str]:
    """One aggregated row as the table's cells (raw text, :data:`TABLE_HEAD` order)."""
    return [a["method"] + (" (weighted)" if a["weighted"] else ""), a["model"], a["protocol"], f"{a['size']:,}",
            f"{a['ratio']:.3g}", str(a["seeds"]), f"{a['accuracy_mean'] * 100:.2f} ± {a['accuracy_std'] * 100:.2f}",
            "—" if _is(a, FULL) else _points(a["vs_full_points"]),
            f"{a['train_seconds_mean']:.2f} ± {a['train_seconds_std']:.2f}", _times(a["train_speedup"]),
            f"{a['select_seconds_mean']:.2f}", _times(a["total_speedup"]), f"{a['epochs_mean']:.1f}",
            _steps(a["steps_mean"], a["best_step_mean"])]


def _key(a: dict) -> tuple[str, str, str]:
    return a["method"], a["model"], a["protocol"]


def display_names(agg: list[dict]) -> dict[tuple[str, str, str], str]:
    """(method, model, protocol) -> the label, with model and protocol added where the label alone is ambiguous."""
    pairs: dict[str, set[tuple[str, str]]] = {}
    for a in agg:
        pairs.setdefault(a["method"], set()).add((a["model"], a["protocol"]))
    return {_key(a): a["method"] if len(pairs[a["method"]]) == 1 else f"{a['method']} ({a['model']}, {a['protocol']})"
            for a in agg}


def _png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _new_figure(width: float = 6.4, height: float = 4.2):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height))


@dataclass
class Report:
    """Evaluation rows (one per method, size and seed) plus the run's context.

    ``rows``: dicts with at least ``method``, ``kind``, ``size``, ``ratio``, ``seed``, ``test_accuracy``,
    ``train_seconds``, ``select_seconds``, and the ``model`` and ``protocol`` that trained them (rows of older
    reports without them: see :meth:`row_model`); rows of 2-D data may carry the chosen ``indices``. A row is
    compared with the full and random rows of its own model and protocol.
    ``context``: dataset, fingerprint, model, recipe, device, versions, machine, date, command, ``rows_included``
    (which rows the table holds); for 2-D data
    ``points`` (``X``, ``y`` of the training pool) so chosen samples can be drawn without the data set.
    ``images``: optional ``{"title", "X", "y"}`` sample grids (e.g. synthetic sets) to draw.
    """

    rows: list[dict] = field(default_factory=list)
    context: dict = field(default_factory=dict)
    images: list[dict] = field(default_factory=list)

    # --- numbers --------------------------------------------------------------------------------
    def row_model(self, row: dict) -> tuple[str, str]:
        """(model, protocol) that trained ``row``.

        Rows written before rows named them: a row with an ``architecture`` in a dc run was trained by the dc
        protocol on that architecture; any other row by the run's model (``context["model"]``) under ``same``.
        """
        model, protocol = row.get("model"), row.get("protocol")
        dc_row = self.context.get("protocol") == "dc" and isinstance(row.get("architecture"), str)
        if not isinstance(model, str):
            model = row["architecture"] if dc_row else str(self.context.get("model", "?"))
        if not isinstance(protocol, str):
            protocol = "dc" if dc_row else SAME
        return model, protocol

    def rows_named(self) -> list[dict]:
        """The rows, each with its ``model`` and ``protocol`` (filled in for reports written before rows had them)."""
        return [{**r, **dict(zip(("model", "protocol"), self.row_model(r)))} for r in self.rows]

    def methods(self) -> list[str]:
        """Row labels in display order: full, random (``full [convnet]`` etc. too), then the others as they appear."""
        seen: dict[str, str] = {}
        for r in self.rows_named():
            seen.setdefault(r["method"], base_method(r["method"], r["model"]))
        head = [m for baseline in (FULL, RANDOM) for m, base in seen.items() if base == baseline]
        return head + [m for m in seen if m not in head]

    def _references(self, rows: list[dict]) -> dict[tuple[str, str], tuple[float, float]]:
        """(mean accuracy, mean training seconds) of the full rows of each (model, protocol)."""
        full: dict[tuple[str, str], list[dict]] = {}
        for r in rows:
            if base_method(r["method"], r["model"]) == FULL:
                full.setdefault((r["model"], r["protocol"]), []).append(r)
        return {k: (mean_std([r["test_accuracy"] for r in rs])[0], mean_std([r["train_seconds"] for r in rs])[0])
                for k, rs in full.items()}

    def aggregate(self) -> list[dict]:
        """Mean ± std over seeds per (method, model, protocol, size), against the full rows of the same model/protocol.

        Without full rows of its model and protocol, a row's accuracy drop and speedups are NaN.
        """
        rows = self.rows_named()
        groups: dict[tuple[str, str, str, int], list[dict]] = {}
        for r in rows:
            groups.setdefault((r["method"], r["model"], r["protocol"], int(r["size"])), []).append(r)
        refs = self._references(rows)
        order = {m: i for i, m in enumerate(self.methods())}
        out = []
        for (method, model, protocol, size), rs in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], *kv[0][1:])):
            full_acc, full_train = refs.get((model, protocol), (float("nan"), float("nan")))
            acc, acc_sd = mean_std([r["test_accuracy"] for r in rs])
            tr, tr_sd = mean_std([r["train_seconds"] for r in rs])
            sel, sel_sd = mean_std([r.get("select_seconds", 0.0) or 0.0 for r in rs])
            ep, _ = mean_std([r.get("epochs") for r in rs])
            st, _ = mean_std([r.get("steps") for r in rs])
            best, _ = mean_std([r.get("best_step") for r in rs])
            out.append({
                "method": method, "model": model, "protocol": protocol, "kind": rs[0].get("kind", "selection"),
                "size": size, "ratio": float(np.mean([r["ratio"] for r in rs])), "seeds": len(rs),
                "accuracy_mean": acc, "accuracy_std": acc_sd,
                "accuracy_drop": (full_acc - acc) * 100, "vs_full_points": (acc - full_acc) * 100,
                "class_accuracy": _class_means(rs),
                "train_seconds_mean": tr, "train_seconds_std": tr_sd,
                "select_seconds_mean": sel, "select_seconds_std": sel_sd,
                "epochs_mean": ep, "steps_mean": st if math.isfinite(st) else None,
                "best_step_mean": best if math.isfinite(best) else None,
                "train_speedup": _ratio(full_train, tr),
                "total_speedup": _ratio(full_train, tr + sel),
                "weighted": any(bool(r.get("weighted")) for r in rs),
            })
        return out

    def against_random(self) -> list[dict]:
        """For every non-baseline row with a random row of the same model, protocol and size: delta in points.

        One sign convention everywhere: method minus reference, negative = worse. ``beats``: mean above
        random's; ``clear``: the gap, either way, exceeds the two standard deviations combined (a significant
        gain when ``beats``, a significant loss otherwise).
        """
        agg = self.aggregate()
        random = {(a["model"], a["protocol"], a["size"]): a for a in agg if _is(a, RANDOM)}
        out = []
        for a in agg:
            key = (a["model"], a["protocol"], a["size"])
            if _is(a, FULL) or _is(a, RANDOM) or key not in random:
                continue
            r = random[key]
            delta = (a["accuracy_mean"] - r["accuracy_mean"]) * 100
            spread = (a["accuracy_std"] + r["accuracy_std"]) * 100
            out.append({"method": a["method"], "model": a["model"], "protocol": a["protocol"], "size": a["size"],
                        "ratio": a["ratio"], "random": r["method"], "delta_points": delta, "beats": delta > 0,
                        "clear": abs(delta) > spread})
        return out

    def class_losses(self, margin_points: float = CLASS_MARGIN_POINTS) -> list[dict]:
        """Classes a smaller set loses more on than it loses overall (by more than ``margin_points``).

        Per aggregated row: each class's accuracy against the full rows' of the same model and protocol; a
        class is flagged when its loss exceeds the overall loss plus the margin (rare patterns are the usual victims).
        """
        agg = self.aggregate()
        full = {(a["model"], a["protocol"]): a for a in agg if _is(a, FULL) and a.get("class_accuracy")}
        classes = list(self.context.get("classes", []))
        out = []
        for a in agg:
            ref = full.get((a["model"], a["protocol"]))
            if ref is None or _is(a, FULL) or not a.get("class_accuracy"):
                continue
            overall = -a["vs_full_points"]
            flagged = []
            for c, (f, v) in enumerate(zip(ref["class_accuracy"], a["class_accuracy"])):
                if f is None or v is None:
                    continue
                loss = (f - v) * 100
                if loss > overall + margin_points:
                    flagged.append({"class": classes[c] if c < len(classes) else str(c), "full": f * 100,
                                    "subset": v * 100, "vs_full_points": -loss})
            out.append({"method": a["method"], "model": a["model"], "protocol": a["protocol"], "size": a["size"],
                        "overall_vs_full_points": -overall, "flagged": flagged})
        return out

    # --- text -----------------------------------------------------------------------------------
    def table_markdown(self) -> str:
        """The aggregated table alone, as Markdown: one row per (method, model, protocol, size)."""
        lines = ["| " + " | ".join(TABLE_HEAD) + " |", "|---|---|---|" + "---:|" * (len(TABLE_HEAD) - 3)]
        lines += ["| " + " | ".join(markdown_text(c) for c in _table_cells(a)) + " |" for a in self.aggregate()]
        return "\n".join(lines)

    def rows_included(self) -> str:
        """Which rows the table holds: the run's own sentence, or (older reports) the labels of its rows."""
        stated = self.context.get("rows_included")
        if isinstance(stated, str) and stated:
            return stated
        return ("the rows in the table: " + ", ".join(self.methods())) if self.rows else "no rows"

    def _protocol_note(self) -> str | None:
        """The context's protocol note without the sentence on which rows are included (its own line now)."""
        note, rows = self.context.get("protocol_note"), self.context.get("rows_included")
        if isinstance(note, str) and isinstance(rows, str) and rows:
            note = note.replace(f"rows: {rows}. ", "", 1)
        return note

    def _context_items(self) -> list[tuple[str, str, bool]]:
        """(name, raw text, is the text code) of each context line; Markdown and HTML escape them their own way."""
        c = self.context
        env = c.get("environment", {})
        items = [
            ("data set", f"{c.get('dataset', '?')} (fingerprint {str(c.get('fingerprint', '?'))[:16]})"),
            ("training pool / validation / test", f"{c.get('pool_size', '?')} / {c.get('validation_size', '?')} / "
                                                  f"{c.get('test_size', '?')}"),
            ("rows included", self.rows_included()),
            ("model", c.get("model")),
            ("recipe", json.dumps(c.get("recipe", {}), sort_keys=True)),
            ("device", c.get("device")),
            ("machine", env.get("machine")),
            ("versions", ", ".join(f"{k} {v}" for k, v in env.get("versions", {}).items())),
            ("date", env.get("date")),
            ("command", c.get("command")),
            ("training budget", c.get("budget_rule")),
            ("soft labels", c.get("soft_label_teacher")),
            ("protocol", self._protocol_note()),
        ]
        return [(k, str(v), k in ("command", "recipe")) for k, v in items if v not in (None, "")]

    def context_markdown(self) -> str:
        return "\n".join(f"- {k}: {markdown_code(v) if code else markdown_text(v)}"
                         for k, v, code in self._context_items())

    def to_dataframe(self, *, aggregate: bool = False):
        """The rows (or, aggregated, the mean ± std table) as a pandas DataFrame."""
        from .interop import report_to_dataframe

        return report_to_dataframe(self, aggregate=aggregate)

    def to_markdown(self) -> str:
        """Context, the aggregated table and where each method beats random."""
        title = (f"# Evaluation: {markdown_text(self.context.get('dataset', 'data set'))}, "
                 f"model {markdown_text(self.context.get('model', '?'))}")
        parts = [title, "", self.context_markdown(), "", self.table_markdown(), ""]
        names = display_names(self.aggregate())
        versus = self.against_random()
        if versus:
            parts += ["Against random of the same model, protocol and size (method minus random, accuracy points; "
                      "* = significant: the gap, either way, is larger than both standard deviations together):", ""]
            by_method: dict[str, list[str]] = {}
            for v in versus:
                mark = "*" if v["clear"] else ""
                by_method.setdefault(names[_key(v)], []).append(f"{v['size']:,}: {v['delta_points']:+.2f}{mark}")
            parts += [f"- {markdown_text(m)}: {', '.join(s)}" for m, s in by_method.items()]
            parts.append("")
        losses = self.class_losses()
        if losses:
            parts += [f"What a smaller set loses, per class (classes whose accuracy drops more than the overall drop "
                      f"+ {CLASS_MARGIN_POINTS:g} points against full data of the same model and protocol):", ""]
            for item in losses:
                flagged = ", ".join(f"{markdown_text(f['class'])} {f['vs_full_points']:+.1f}" for f in item["flagged"])
                parts.append(f"- {markdown_text(names[_key(item)])} at {item['size']:,} (overall "
                             f"{item['overall_vs_full_points']:+.2f}): {flagged or 'no class beyond the margin'}")
            parts.append("")
        return "\n".join(parts)

    def to_dict(self) -> dict:
        return jsonable({"rows": self.rows, "context": self.context, "images": self.images,
                          "aggregate": self.aggregate()})

    def to_json(self, path: str | os.PathLike) -> Path:
        """Write rows, context and the aggregate to ``path`` (atomically)."""
        return atomic_write(path, json.dumps(self.to_dict(), indent=1, allow_nan=False))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> Report:
        """Read a report written by :meth:`to_json`."""
        path = Path(path)
        if not path.exists():
            raise ArtifactError(f"{path}: no such report; run `datadistill evaluate ... --out DIR` first")
        try:
            d = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ArtifactError(f"{path}: corrupt report JSON ({exc}); re-run the evaluation") from None
        if not isinstance(d, dict) or "rows" not in d:
            raise ArtifactError(f"{path}: not a datadistill report (no 'rows')")
        damaged = f"{path}: damaged report"
        if not isinstance(d["rows"], list) or not isinstance(d.get("context", {}), dict) or not isinstance(
                d.get("images", []), list):
            raise ArtifactError(f"{damaged} ('rows' and 'images' must be lists, 'context' an object); re-run the "
                                "evaluation with --resume")
        for i, row in enumerate(d["rows"]):
            if not isinstance(row, dict) or not isinstance(row.get("method"), str):
                raise ArtifactError(f"{damaged}: row {i} is not a result row (no method name); re-run the "
                                    "evaluation with --resume")
            bad = [k for k in ("size", "ratio", "test_accuracy", "train_seconds")
                   if isinstance(row.get(k), bool) or not isinstance(row.get(k), (int, float))]
            if bad:
                raise ArtifactError(f"{damaged}: row {i} ({row['method']}) has no number for {', '.join(bad)}; "
                                    "re-run the evaluation with --resume")
        return cls(rows=list(d["rows"]), context=dict(d.get("context", {})), images=list(d.get("images", [])))

    # --- figures --------------------------------------------------------------------------------
    def _curve(self, key: str) -> dict[str, tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
        """Display name -> (baseline it is: full, random or '', sizes, means, stds) of each row label's curve."""
        agg = self.aggregate()
        names = display_names(agg)
        curves: dict[str, list] = {}
        bases: dict[str, str] = {}
        for a in agg:
            name = names[_key(a)]
            bases[name] = FULL if _is(a, FULL) else RANDOM if _is(a, RANDOM) else ""
            curves.setdefault(name, []).append((a["size"], a[f"{key}_mean"], a[f"{key}_std"]))
        return {m: (bases[m], *(np.asarray(v, dtype=np.float64) for v in zip(*sorted(pts))))
                for m, pts in curves.items()}

    def _size_figure(self, key: str, ylabel: str, scale: float):
        fig = _new_figure()
        ax = fig.add_subplot(1, 1, 1)
        curves = self._curve(key)
        counts = {b: sum(c[0] == b for c in curves.values()) for b in (FULL, RANDOM)}
        seen = dict.fromkeys((FULL, RANDOM), 0)
        for name, (base, sizes, m, s) in curves.items():
            color = None
            if base:  # baselines in black, or one colour per model when there are several
                color = "black" if counts[base] == 1 else f"C{seen[base] % 10}"
                seen[base] += 1
            if base == FULL:
                label = "full data" if name == FULL else name
                ax.axhline(m[0] * scale, color=color, lw=1.5, label=f"{label} ({m[0] * scale:.3g})")
                ax.axhspan((m[0] - s[0]) * scale, (m[0] + s[0]) * scale, color=color, alpha=0.08)
                continue
            style = {"color": color, "ls": "--", "marker": "o"} if base == RANDOM else {"marker": "o"}
            ax.errorbar(sizes, m * scale, yerr=s * scale, capsize=3, label=name, **style)
        ax.set_xscale("log")
        from matplotlib.ticker import NullFormatter

        ax.xaxis.set_minor_formatter(NullFormatter())  # minor labels collide on short log ranges
        ax.set_xlabel("training samples (log scale)")
        ax.set_ylabel(ylabel)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        ax.set_title(f"{self.context.get('dataset', '')} — {self.context.get('model', '')}")
        return fig

    def accuracy_figure(self):
        """Test accuracy (%) vs subset size, log x, with the full-data line and the random curve."""
        return self._size_figure("accuracy", "test accuracy (%)", 100.0)

    def time_figure(self):
        """Training seconds vs subset size, log x, with the full-data line."""
        fig = self._size_figure("train_seconds", "training seconds", 1.0)
        fig.axes[0].set_yscale("log")
        return fig

    def points_figure(self):
        """For 2-D data: the chosen samples of each method (first seed, each size) over the whole pool."""
        pts = self.context.get("points")
        chosen = [r for r in self.rows if r.get("indices") is not None and r["method"] != FULL]
        if not pts or not chosen:
            return None
        X, y = np.asarray(pts["X"], dtype=np.float64), np.asarray(pts["y"], dtype=np.int64)
        first_seed = min(r["seed"] for r in chosen)
        panels = sorted({(r["method"], r["size"]) for r in chosen if r["seed"] == first_seed},
                        key=lambda p: (self.methods().index(p[0]), p[1]))
        ncols = min(4, len(panels))
        nrows = math.ceil(len(panels) / ncols)
        fig = _new_figure(3.2 * ncols, 3.0 * nrows)
        lookup = {(r["method"], r["size"]): r for r in chosen if r["seed"] == first_seed}
        for i, (method, size) in enumerate(panels):
            ax = fig.add_subplot(nrows, ncols, i + 1)
            ax.scatter(X[:, 0], X[:, 1], c=y, cmap="tab10", vmin=0, vmax=9, s=3, alpha=0.12, linewidths=0)
            idx = np.asarray(lookup[(method, size)]["indices"], dtype=np.int64)
            idx = idx[idx < len(X)]
            ax.scatter(X[idx, 0], X[idx, 1], c=y[idx], cmap="tab10", vmin=0, vmax=9, s=14,
                       edgecolors="black", linewidths=0.4)
            ax.set_title(f"{method}, {size} samples", fontsize=9)
            ax.set_xticks([])
            ax.set_yticks([])
        return fig

    def figures(self, directory: str | os.PathLike) -> list[Path]:
        """Render every figure as PNG into ``directory`` (atomically); returns the paths written."""
        directory = Path(directory)
        return [atomic_write(directory / name, png) for name, png in self._figure_pngs()]

    def _figure_pngs(self) -> list[tuple[str, bytes]]:
        out = []
        if self.rows:
            out.append(("accuracy_vs_size.png", _png(self.accuracy_figure())))
            out.append(("train_time_vs_size.png", _png(self.time_figure())))
        fig = self.points_figure()
        if fig is not None:
            out.append(("selected_points.png", _png(fig)))
        for i, grid in enumerate(self.images):
            fig = image_grid(np.asarray(grid["X"]), np.asarray(grid["y"]), grid.get("classes"),
                             title=grid.get("title"))
            out.append((f"samples_{i}.png", _png(fig)))
        return out

    def to_html(self, path: str | os.PathLike, *, figure_pngs: list[tuple[str, bytes]] | None = None) -> Path:
        """One self-contained HTML page: context, table, comparison with random, every figure embedded."""
        pngs = figure_pngs if figure_pngs is not None else self._figure_pngs()
        esc = html.escape
        title = f"Evaluation: {self.context.get('dataset', 'data set')}, model {self.context.get('model', '?')}"
        agg = self.aggregate()
        names = display_names(agg)
        body = "".join(('<tr class="baseline">' if _is(a, FULL) or _is(a, RANDOM) else "<tr>")
                       + "".join(f"<td>{esc(c)}</td>" for c in _table_cells(a)) + "</tr>" for a in agg)
        context = "".join(f"<li>{esc(k)}: {esc(f'`{v}`' if k == 'command' else v)}</li>"
                          for k, v, _ in self._context_items())
        versus = "".join(
            f"<li>{esc(names[_key(v)])} at {v['size']:,}: {v['delta_points']:+.2f} points"
            f"{(' (significant gain)' if v['beats'] else ' (significant loss)') if v['clear'] else ''}</li>"
            for v in self.against_random())
        class_items = "".join(
            f"<li>{esc(names[_key(item)])} at {item['size']:,} (overall {item['overall_vs_full_points']:+.2f}): "
            + (esc(", ".join(f"{f['class']} {f['vs_full_points']:+.1f}" for f in item["flagged"]))
               or "no class beyond the margin") + "</li>" for item in self.class_losses())
        figures = "".join(
            f'<figure><img alt="{esc(name)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'
            f"<figcaption>{esc(name)}</figcaption></figure>" for name, png in pngs)
        page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; font-size: 0.9em; }}
td, th {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }}
td:nth-child(-n+3), th:nth-child(-n+3) {{ text-align: left; }}
tr.baseline {{ background: #f3f3f3; }}
figure {{ display: inline-block; margin: 1em; }} img {{ max-width: 100%; }}
</style></head><body>
<h1>{esc(title)}</h1>
<ul>{context}</ul>
<h2>Results (mean ± std over seeds)</h2>
<table><thead><tr>{"".join(f"<th>{esc(h)}</th>" for h in TABLE_HEAD)}</tr></thead><tbody>{body}</tbody></table>
<h2>Against random of the same model, protocol and size (method minus random, points)</h2>
<ul>{versus or "<li>no method rows with a random row of the same model, protocol and size</li>"}</ul>
<h2>What a smaller set loses, per class (beyond the overall drop + {CLASS_MARGIN_POINTS:g} points)</h2>
<ul>{class_items or "<li>no per-class accuracy in these rows</li>"}</ul>
<h2>Figures</h2>
{figures}
</body></html>
"""
        return atomic_write(path, page)

    def render(self, directory: str | os.PathLike) -> list[Path]:
        """Write report.json, report.md, report.html and figures/*.png into ``directory``."""
        directory = Path(directory)
        pngs = self._figure_pngs()
        written = [self.to_json(directory / REPORT_JSON), atomic_write(directory / REPORT_MD, self.to_markdown())]
        written += [atomic_write(directory / FIGURES_DIR / name, png) for name, png in pngs]
        written.append(self.to_html(directory / REPORT_HTML, figure_pngs=pngs))
        return written


def render(directory: str | os.PathLike) -> list[Path]:
    """Re-render report.md, report.html and figures from ``directory/report.json`` (``datadistill report DIR``).

    Returns the paths written.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ArtifactError(f"{directory}: no such run directory")
    return Report.from_json(directory / REPORT_JSON).render(directory)


def image_grid(X: np.ndarray, y: np.ndarray, classes: Sequence[str] | None = None, *, per_class: int = 10,
               title: str | None = None):
    """A matplotlib Figure with up to ``per_class`` samples of each class in a row (images or (N, d) vectors)."""
    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.int64)
    K = int(y.max()) + 1 if len(y) else 0
    names = list(classes) if classes is not None else [str(c) for c in range(K)]
    cols = max(1, min(per_class, max((int((y == c).sum()) for c in range(K)), default=1)))
    fig = _new_figure(0.9 * cols + 1.0, 0.9 * max(K, 1) + 0.4)
    for c in range(K):
        idx = np.flatnonzero(y == c)[:cols]
        for j, i in enumerate(idx):
            ax = fig.add_subplot(K, cols, c * cols + j + 1)
            ax.imshow(_as_image(X[i]), cmap="gray" if _as_image(X[i]).ndim == 2 else None)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(names[c] if c < len(names) else str(c), fontsize=7, rotation=0, ha="right")
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


def _as_image(x: np.ndarray) -> np.ndarray:
    """One sample as an HxW or HxWxC array scaled to [0, 1] for display."""
    if x.ndim == 1:
        side = math.ceil(math.sqrt(len(x)))
        x = np.pad(x, (0, side * side - len(x))).reshape(side, side)
    elif x.ndim == 3 and x.shape[0] in (1, 3, 4) and x.shape[-1] not in (1, 3, 4):
        x = x.transpose(1, 2, 0)
    if x.ndim == 3 and x.shape[-1] == 1:
        x = x[..., 0]
    lo, hi = float(x.min()), float(x.max())
    return (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)


def image_grid_figure(X: np.ndarray, y: np.ndarray, classes: Sequence[str] | None, path: str | os.PathLike, *,
                      per_class: int = 10, title: str | None = None) -> Path:
    """Render :func:`image_grid` to a PNG file at ``path`` (atomically)."""
    return atomic_write(path, _png(image_grid(X, y, classes, per_class=per_class, title=title)))
