"""`datadistill demo`: the two-class 2-D demo, then a short full-vs-random-vs-selected evaluation on digits."""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import numpy as np

from .data import load
from .data.artifact import atomic_write, check_replaceable, write_marker
from .errors import ArtifactError

FIGURE = "two_gaussians.png"
RUNS = ("two-gaussians", "digits")

DEMO_SELECTIONS = (
    ("gradnorm", "largest loss-gradient norm first (strategy=hardest)", {"model": "logreg", "strategy": "hardest"}),
    ("entropy", "the default strategy (coverage)", {"model": "logreg"}),
    ("kcenter", "k-center (representative, D² sampling)", {}),
)


def _boundary(ax, dataset) -> None:
    """Draw the decision boundary of logistic regression trained on all training data."""
    from .data.preprocess import Preprocessor
    from .models import build_model
    from .training import TrainConfig, predict_proba, train

    pre = Preprocessor.fit(dataset)
    model = build_model("logreg", pre.model_shape, dataset.n_classes, seed=0)
    train(model, pre.transform(dataset.X), dataset.y, TrainConfig(epochs=50, lr=0.05), seed=0)
    lo, hi = dataset.X.min(0) - 0.5, dataset.X.max(0) + 0.5
    gx, gy = np.meshgrid(np.linspace(lo[0], hi[0], 200), np.linspace(lo[1], hi[1], 200))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(np.float32)
    p = predict_proba(model, pre.transform(grid))[:, 1].reshape(gx.shape)
    ax.contour(gx, gy, p, levels=[0.5], colors="k", linewidths=1.2, linestyles="--")


def two_gaussians_figure(dataset, selections: dict[str, np.ndarray], path: Path) -> Path:
    """Three panels: every training point faint, the chosen ones highlighted, the full-data boundary dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(selections), figsize=(5 * len(selections), 4.6), sharex=True, sharey=True)
    colors = np.array(["tab:blue", "tab:orange"])
    for ax, (title, idx) in zip(np.atleast_1d(axes), selections.items()):
        ax.scatter(*dataset.X.T, c=colors[dataset.y], s=6, alpha=0.15, linewidths=0)
        ax.scatter(*dataset.X[idx].T, c=colors[dataset.y[idx]], s=28, edgecolors="k", linewidths=0.6)
        _boundary(ax, dataset)
        ax.set_title(f"{title}\n{len(idx)} of {len(dataset)} points")
        ax.set_xlabel("x1")
    np.atleast_1d(axes)[0].set_ylabel("x2")
    fig.suptitle("two Gaussian classes: chosen points highlighted, full-data decision boundary dashed")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    return atomic_write(path, buf.getvalue())


def run_demo(out: str | Path = "datadistill-demo", *, overwrite: bool = False, quick: bool = False) -> Path:
    """Run both demo parts, printing tables and writing figures and reports under ``out``."""
    out = Path(out)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise ArtifactError(f"{out}: already exists; pass --overwrite or choose another --out")
        check_demo_replaceable(out)
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_marker(out, "demo")
    started = time.perf_counter()
    import torch

    # the demo's models are tiny: one intra-op thread is faster than several and immune to busy neighbours
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _run_parts(out, quick)
    finally:
        torch.set_num_threads(threads)
    print(f"demo finished in {time.perf_counter() - started:.0f} s; everything is in {out}/")
    return out


def check_demo_replaceable(out: Path) -> None:
    """Raise ArtifactError unless ``out`` is a demo folder holding only what the demo writes."""
    from .evaluation import _RunDir

    def run(directory: Path) -> list[str]:
        _RunDir.check_replaceable(directory)
        return []

    # FIGURE + ".tmp.png": the temporary of earlier versions; atomic_write's own temporaries are recognised
    check_replaceable(out, "demo", files=(FIGURE, FIGURE + ".tmp.png"), folders=dict.fromkeys(RUNS, run),
                      legacy=lambda p: any((p / name).exists() for name in (FIGURE, *RUNS)))


def _run_parts(out: Path, quick: bool) -> None:
    from .evaluation import evaluate
    from .select import get_selector

    seeds = 2 if quick else 3

    # Part 1: the 2-D demo, logistic regression: hardest-first gradient norm, entropy's default strategy, k-center.
    ds2 = load("two-gaussians")
    ratio = 0.0625
    print(f"[1/2] {ds2.summary()}\n      keeping {ratio:.2%} of the points by each criterion "
          "(logistic-regression probe)")
    chosen = {}
    for name, title, params in DEMO_SELECTIONS:
        sel = get_selector(name, ratio=ratio, random_state=0, **params).fit(ds2)
        chosen[f"{name}: {title}"] = sel.indices_
    fig = two_gaussians_figure(ds2, chosen, out / FIGURE)
    report2 = evaluate(ds2, methods=[m for m, _, _ in DEMO_SELECTIONS], ratios=[ratio], model="logreg",
                       seeds=seeds, method_params={m: p for m, _, p in DEMO_SELECTIONS if p},
                       out=out / RUNS[0], progress=False)
    print("\nLogistic regression trained on each subset, tested on the held-out split:\n")
    print(report2.table_markdown())
    print("\nThe largest-gradient points are the misclassified ones on the wrong side of the boundary: alone they\n"
          "teach the opposite rule, which is why hardest-first is never a default. The default strategy leaves\n"
          "misclassified points out and spreads its picks over easy, typical and hard ones; k-center covers the space.")
    print(f"figure: {fig}")

    # Part 2: a short evaluation on the built-in digits (8x8 images, 10 classes) with an MLP.
    digits = load("digits")
    methods = ["kcenter", "kmeans", "herding", "entropy"] if not quick else ["kcenter", "entropy"]
    ratios = [0.02, 0.05, 0.1, 0.2, 0.5] if not quick else [0.05, 0.2]
    print(f"\n[2/2] {digits.summary()}\n      MLP on full data vs random vs {', '.join(methods)} at "
          f"{', '.join(f'{r:g}' for r in ratios)} of the training set, {seeds} seeds")
    report = evaluate(digits, methods=methods, ratios=ratios, model="mlp", seeds=seeds, out=out / RUNS[1],
                      progress=True)
    print()
    print(report.table_markdown())
    print(f"\nreport (open in a browser): {out / 'digits' / 'report.html'}")
    print(f"accuracy vs size figure: {out / 'digits' / 'figures'}")
