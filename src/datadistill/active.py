"""Active learning: the pool-based labelling loop, with its whole state on disk so that a rerun continues.

Each round trains a model (through :func:`datadistill.training.train`, recipe of the probes) on the labelled
rows, scores the unlabelled pool and proposes a *diverse* batch:

- ``entropy`` / ``margin`` / ``least-confidence``: uncertainty sampling (Settles 2009), the scores of
  :mod:`datadistill.scores.uncertainty`; the ``candidates`` x batch most uncertain rows are kept, then the batch
  is spread over them in the model's embedding, so a batch is not a cluster of near-duplicates: by default
  k-means on the candidates with one row nearest each centre (Zhdanov 2019), or k-means++ seeding (D²
  sampling) or farthest-first k-center (Sener & Savarese, ICLR 2018). ``diversity="none"`` is plain top-k.
- ``badge``: BADGE (Ash et al., "Deep Batch Active Learning by Diverse, Uncertain Gradient Lower Bounds",
  ICLR 2020): k-means++ seeding over the last layer's gradient embeddings (p - onehot(ŷ)) ⊗ [h, 1] with ŷ the
  predicted class. Distances are computed from the factors, never materialising the K·(d+1) embeddings.
- ``coverage``: the candidates are spread over entropy strata by the coverage strategy of
  :mod:`datadistill.select.strategy` (the hardest tail is dropped at small budgets), then made diverse as above.
- ``random``: uniformly random rows (the baseline).

Without a labelled seed set the first batch is a representative cold start: k-means prototypes or k-center
(D² sampling) on the standardised inputs (:mod:`datadistill.select.kmeans`, :mod:`datadistill.select.kcenter`).

Labels come from an oracle (the data's own labels: simulations, benchmarks) or from a person: the batch is
written to ``OUT/batch-NNN.csv`` (and ``.parquet``), the call returns, and the next call reads the filled-in
label column and goes on. Sample ids are row numbers (from 0) of the pool (the data's training rows).
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from .data.artifact import DistilledSet, read_marker, write_marker
from .data.dataset import Dataset, check_sample_shape
from .data.preprocess import Preprocessor
from .errors import ArtifactError, ConfigError, DataError
from .report import atomic_write
from .scores.gradient import error_vectors
from .scores.probe import train_probe
from .scores.uncertainty import entropy, least_confidence, margin, softmax
from .training import accuracy, embed, predict_logits, resolve_device

STRATEGIES = {
    "margin": "smallest top-1 minus top-2 probability, spread over the candidates (default)",
    "entropy": "highest predictive entropy, spread over the candidates",
    "least-confidence": "highest 1 - max probability, spread over the candidates",
    "badge": "k-means++ seeding over last-layer gradient embeddings (BADGE, Ash et al. 2020)",
    "coverage": "candidates spread over entropy strata (coverage strategy), then spread in the embedding",
    "random": "uniformly random unlabelled rows (the baseline)",
}
DIVERSITY = ("kmeans++", "kmeans", "kcenter", "none")
COLD_STARTS = ("kmeans", "kcenter", "random")
LABEL_SOURCES = ("oracle", "human")
STATE_FILE = "state.json"
CURVE_JSON = "curve.json"
CURVE_PNG = "curve.png"
SET_DIR = "labelled"
RUN_KIND = "active-run"
_UNCERTAINTY = {  # higher = more informative
    "entropy": entropy,
    "least-confidence": least_confidence,
    "margin": lambda p: -margin(p),
}
# options that must not change between the calls of one loop (the budget may)
_FIXED = ("labels", "strategy", "diversity", "batch_size", "initial", "cold_start", "candidates", "model", "epochs",
          "min_steps", "lr", "train_batch_size", "random_state", "compare_random")


@dataclass
class ActiveResult:
    """Where the loop stands after a call.

    ``status``: "waiting" (a batch file awaits labels), or "done" (the budget is spent or the pool is empty).
    ``ids``/``labels``: the labelled rows so far and their class ids; ``curve``: one point per trained round
    (labels spent, test accuracy, random labelling's accuracy at the same count); ``batch_file``: the file to
    fill in when waiting; ``out``: the run folder.
    """

    status: str
    out: Path
    ids: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    curve: list[dict] = field(default_factory=list)
    batch_ids: np.ndarray | None = None
    batch_file: Path | None = None

    @property
    def labelled_set(self) -> DistilledSet:
        """The labelled rows as saved in ``OUT/labelled``."""
        return DistilledSet.open(self.out / SET_DIR)

    def summary(self) -> str:
        last = self.curve[-1] if self.curve else {}
        acc = last.get("accuracy")
        text = f"{len(self.ids)} labels" + (f", test accuracy {acc:.4f}" if acc is not None else "")
        if last.get("random_accuracy") is not None:
            text += f" (random labelling {last['random_accuracy']:.4f})"
        if self.status == "waiting":
            text += (f"; waiting for labels: fill in the label column of {self.batch_file} "
                     f"({len(self.batch_ids)} samples; classes: {', '.join(self.classes)}) and run again")
        else:
            text += f"; done -> {self.out / SET_DIR}"
        return text


# --- scoring and batch proposal ---------------------------------------------------------------------
def pool_fingerprint(X: np.ndarray) -> str:
    """sha256 of the pool's features (dtype, shape and bytes): a rerun must see the same rows."""
    h = hashlib.sha256(str((X.dtype.str, X.shape)).encode())
    h.update(np.ascontiguousarray(X).data)
    return h.hexdigest()


def _spread(features: np.ndarray, order: np.ndarray, k: int, rng: np.random.Generator, diversity: str) -> np.ndarray:
    """``k`` of the candidate positions ``order`` (most informative first), spread in ``features``.

    ``kmeans``: k-means with ``k`` clusters on the candidates, the candidate nearest each centre (Zhdanov 2019,
    "Diverse mini-batch active learning"): one typical row per region of the uncertain set. ``kmeans++`` /
    ``kcenter``: D² sampling / farthest-first, which reach further out, to isolated (often atypical) rows.
    """
    if diversity == "none" or k >= len(order):
        return order[:k]
    if diversity == "kmeans":
        from .select.kmeans import kmeans_prototypes

        Z = np.ascontiguousarray(features[order].reshape(len(order), -1), dtype=np.float32)
        protos, _, _ = kmeans_prototypes(Z, k, random_state=int(rng.integers(2**31)))
        protos = np.unique(protos)  # one row per cluster, so distinct; kept as a guard
        if len(protos) < k:
            rest = np.setdiff1d(np.arange(len(order)), protos)  # most informative first
            protos = np.concatenate([protos, rest[:k - len(protos)]])
        return order[protos]
    from .select.kcenter import kcenter_greedy

    Z = torch.as_tensor(np.ascontiguousarray(features[order], dtype=np.float32))
    chosen, _, _ = kcenter_greedy(Z, k, first=0, rng=rng, d2=diversity == "kmeans++")
    return order[chosen]


def badge(logits: np.ndarray, hidden: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """BADGE: positions of ``k`` rows by k-means++ seeding over gradient embeddings (p - onehot(ŷ)) ⊗ [h, 1].

    ||g_i - g_j||² = |a_i|²H_i + |a_j|²H_j - 2 (a_i·a_j)(h_i·h_j + 1) with a = p - onehot(ŷ), H = |h|² + 1,
    so each new centre costs O(N·(K + d)) and memory stays O(N·(K + d)). The first centre is the row with the
    largest gradient norm, as in the paper's code.
    """
    n = len(logits)
    if k >= n:
        return np.arange(n)
    A = torch.as_tensor(error_vectors(logits, logits.argmax(axis=1)))
    Hm = torch.as_tensor(np.asarray(hidden, dtype=np.float64).reshape(n, -1))
    sq = (A * A).sum(1) * ((Hm * Hm).sum(1) + 1.0)
    mind = torch.full((n,), math.inf, dtype=torch.float64)
    chosen = [int(torch.argmax(sq))]
    while True:
        c = chosen[-1]
        d = (sq + sq[c] - 2.0 * (A @ A[c]) * (Hm @ Hm[c] + 1.0)).clamp_(min=0)
        torch.minimum(mind, d, out=mind)
        mind[chosen] = 0.0
        if len(chosen) == k:
            break
        w = mind.numpy()
        total = w.sum()
        if total <= 0:  # every remaining row coincides with a centre: fill up at random
            rest = np.setdiff1d(np.arange(n), chosen)
            chosen += list(rng.choice(rest, size=k - len(chosen), replace=False))
            break
        chosen.append(int(rng.choice(n, p=w / total)))
    return np.asarray(chosen, dtype=np.int64)


def query(strategy: str, logits: np.ndarray, features: np.ndarray, k: int, rng: np.random.Generator, *,
          diversity: str = "kmeans", candidates: int = 10) -> np.ndarray:
    """Positions (into the unlabelled rows) of the next batch of ``k``, distinct.

    Args:
        strategy: a key of :data:`STRATEGIES`.
        logits: the model's logits on the unlabelled rows (n, K).
        features: the model's penultimate features on those rows (n, d): the space diversity is measured in.
        k: batch size.
        rng: seeded generator.
        diversity: "kmeans" (the candidate nearest each of k k-means centres), "kmeans++" (D² sampling among the
            candidates), "kcenter" (farthest-first) or "none" (top-k).
        candidates: the ``candidates`` x k most informative rows are the candidates of the diverse step.
    """
    n = len(logits)
    k = min(int(k), n)
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if diversity not in DIVERSITY:
        raise ConfigError(f"unknown diversity {diversity!r}; choose one of: {', '.join(DIVERSITY)}")
    if strategy == "random":
        return rng.choice(n, size=k, replace=False)
    if strategy == "badge":
        return badge(logits, features, k, rng)
    m = min(n, max(k, int(candidates) * k))
    probs = softmax(logits)
    if strategy == "coverage":
        from .select.strategy import choose

        difficulty = entropy(probs)
        picked = choose(difficulty, m, rng, strategy="coverage")
        order = picked[np.argsort(-difficulty[picked], kind="stable")]
    else:
        informative = _UNCERTAINTY[strategy](probs)
        perm = rng.permutation(n)  # ties broken at random, not by row number
        order = perm[np.argsort(-informative[perm], kind="stable")][:m]
    return _spread(features, order, k, rng, diversity)


def cold_start(inputs: np.ndarray, k: int, method: str, rng: np.random.Generator, *, pca: int = 50) -> np.ndarray:
    """Positions of ``k`` representative rows of the standardised ``inputs`` with no labels at all.

    ``kmeans``: the row nearest each k-means centroid; ``kcenter``: k-center with D² sampling; ``random``.
    High-dimensional inputs are first reduced to ``pca`` principal components.
    """
    n = len(inputs)
    k = min(int(k), n)
    if method == "random":
        return rng.choice(n, size=k, replace=False)
    if method not in COLD_STARTS:
        raise ConfigError(f"unknown cold start {method!r}; choose one of: {', '.join(COLD_STARTS)}")
    Z = inputs.reshape(n, -1)
    if Z.shape[1] > pca and n > pca:
        from sklearn.decomposition import PCA

        Z = PCA(n_components=pca, svd_solver="randomized", random_state=int(rng.integers(2**31))).fit_transform(Z)
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if method == "kmeans":
        from .select.kmeans import kmeans_prototypes

        protos, _, _ = kmeans_prototypes(Z, k, random_state=int(rng.integers(2**31)))
        protos = np.unique(protos)
        if len(protos) < k:  # duplicates in the data can map two centroids to one row
            rest = np.setdiff1d(np.arange(n), protos)
            protos = np.concatenate([protos, rng.choice(rest, size=k - len(protos), replace=False)])
        return protos
    from .select.kcenter import kcenter_greedy

    chosen, _, _ = kcenter_greedy(torch.as_tensor(Z), k, first=int(rng.integers(n)), rng=rng, d2=True)
    return chosen


# --- label files ------------------------------------------------------------------------------------
def _cell_text(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        if math.isnan(value):
            return ""
        if value.is_integer():
            return str(int(value))
    return str(value).strip()


def _read_table(path: Path) -> tuple[list[str], list[dict], str]:
    """(column names, rows as dicts, how rows are numbered) of a CSV or Parquet label file."""
    if path.suffix.lower() in (".parquet", ".pq"):
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(f"{path}: reading Parquet needs pyarrow (pip install pyarrow); or use the CSV") from None
        try:
            table = pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise DataError(f"{path}: cannot read as Parquet ({type(exc).__name__}: {exc})") from None
        data = table.to_pydict()
        names = list(data)
        rows = [{c: data[c][i] for c in names} for i in range(table.num_rows)]
        return names, rows, "row"
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            names = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: cannot read as CSV ({exc})") from None
    return names, rows, "line"


def _where(kind: str, i: int) -> str:
    # CSV: the file's line number (the header is line 1); Parquet: the data row, counted from 1
    return f"line {i + 2}" if kind == "line" else f"row {i + 1}"


def _listing(problems: list[str], limit: int = 10) -> str:
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(problems[:limit]) + more


def read_label_file(path: str | os.PathLike, classes: Sequence[str], *, allowed: np.ndarray | None = None,
                    n_pool: int | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """(ids, class ids) from a CSV/Parquet file with ``id`` and ``label`` columns; None if no row has a label yet.

    Args:
        classes: the class names a label must be one of.
        allowed: the ids that may appear (the proposed batch); None allows any row of the pool.
        n_pool: the pool's size (ids must be in 0..n_pool-1).

    Every bad row (an id not proposed, out of range, repeated or not a whole number; a label outside the
    classes; a missing label once others are given) is named in one :class:`DataError`.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such label file")
    names, rows, kind = _read_table(path)
    lower = {c.strip().lower(): c for c in names if c is not None}
    missing = [c for c in ("id", "label") if c not in lower]
    if missing:
        raise DataError(f"{path}: needs columns 'id' and 'label'; missing {', '.join(map(repr, missing))} "
                        f"(found {', '.join(map(repr, names)) or 'no columns'})")
    id_col, label_col = lower["id"], lower["label"]
    texts = [_cell_text(r.get(label_col)) for r in rows]
    if not any(texts):
        return None
    lookup = {str(c): i for i, c in enumerate(classes)}
    allowed_set = None if allowed is None else {int(i) for i in allowed}
    problems: list[str] = []
    ids, labels = [], []
    seen: dict[int, int] = {}
    for i, (row, text) in enumerate(zip(rows, texts)):
        where = _where(kind, i)
        raw = _cell_text(row.get(id_col))
        try:
            sid = int(raw)
        except ValueError:
            problems.append(f"{where}: id {raw!r} is not a whole number")
            continue
        if n_pool is not None and not 0 <= sid < n_pool:
            problems.append(f"{where}: id {sid} is outside the pool's rows 0..{n_pool - 1}")
            continue
        if allowed_set is not None and sid not in allowed_set:
            problems.append(f"{where}: id {sid} was not proposed in this batch")
            continue
        if sid in seen:
            problems.append(f"{where}: id {sid} repeats {_where(kind, seen[sid])}")
            continue
        seen[sid] = i
        if not text:
            problems.append(f"{where}: id {sid} has no label (label it, or delete the row to skip the sample)")
            continue
        if text not in lookup:
            problems.append(f"{where}: label {text!r} for id {sid} is not a class")
            continue
        ids.append(sid)
        labels.append(lookup[text])
    if problems:
        names_list = ", ".join(map(repr, classes[:20])) + (" ..." if len(classes) > 20 else "")
        raise DataError(f"{path}: {len(problems)} bad row{'s' if len(problems) > 1 else ''}: {_listing(problems)}. "
                        f"Labels must be one of the class names ({names_list})")
    return np.asarray(ids, dtype=np.int64), np.asarray(labels, dtype=np.int64)


def write_batch(out: Path, round_: int, ids: np.ndarray, *, parquet: bool = True) -> list[Path]:
    """Write the batch's ids with an empty label column to ``batch-NNN.csv`` (and ``.parquet``); atomic."""
    stem = f"batch-{round_:03d}"
    text = "id,label\n" + "".join(f"{int(i)},\n" for i in ids)
    files = [atomic_write(out / f"{stem}.csv", text)]
    if parquet:
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return files
        import io

        table = pa.table({"id": pa.array(np.asarray(ids, dtype=np.int64)),
                          "label": pa.array([None] * len(ids), type=pa.string())})
        buf = io.BytesIO()
        pq.write_table(table, buf)
        files.append(atomic_write(out / f"{stem}.parquet", buf.getvalue()))
    return files


# --- the pool ---------------------------------------------------------------------------------------
def read_pool(path: str | os.PathLike, *, label: str | None = None) -> np.ndarray:
    """Features of an unlabelled pool: ``.npy``, ``.npz`` (``x_train`` or ``X``) or CSV/Parquet (numeric columns;
    a ``label`` column, or the one named, is left out)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            X = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npy array of numbers ({exc})") from None
    elif suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                key = next((k for k in ("x_train", "X") if k in z.files), None)
                if key is None:
                    raise DataError(f"{path}: expected an array x_train or X; found {sorted(z.files)}")
                X = z[key]
        except (ValueError, OSError, EOFError) as exc:
            raise DataError(f"{path}: not a readable .npz archive of numbers ({exc})") from None
    elif suffix in (".csv", ".tsv", ".parquet", ".pq"):
        import pyarrow as pa

        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pcsv

            table = pcsv.read_csv(path, parse_options=pcsv.ParseOptions(delimiter="\t" if suffix == ".tsv" else ","))
        drop = {label} if label else {"label", "target", "class", "y", "id"}
        columns = [c for c in table.column_names if c not in drop]
        numeric = (pa.types.is_integer, pa.types.is_floating, pa.types.is_boolean)
        bad = [c for c in columns if not any(test(table[c].type) for test in numeric)]
        if bad:
            raise DataError(f"{path}: column{'s' if len(bad) > 1 else ''} {', '.join(map(repr, bad[:5]))} "
                            "not numeric; an unlabelled pool needs numeric feature columns only")
        X = np.column_stack([table[c].to_numpy(zero_copy_only=False).astype(np.float32) for c in columns])
    else:
        raise DataError(f"{path}: unknown pool format {suffix!r} (use .npy, .npz, .csv or .parquet)")
    return _check_pool(np.asarray(X), str(path))


def _check_pool(X: np.ndarray, origin: str) -> np.ndarray:
    if X.dtype == object or X.dtype.kind not in "biuf":
        raise DataError(f"{origin}: features must be numeric, got dtype {X.dtype}")
    if X.ndim < 2 or len(X) == 0:
        raise DataError(f"{origin}: the pool must hold samples x features (or images), got shape {X.shape}")
    check_sample_shape(X.shape[1:], origin)
    if X.dtype.kind == "f":
        bad = np.flatnonzero(~np.isfinite(X.reshape(len(X), -1)).all(axis=1))
        if len(bad):
            raise DataError(f"{origin}: row {int(bad[0])} contains NaN or infinite values")
        return X.astype(np.float32, copy=False)
    return X if X.dtype == np.uint8 else X.astype(np.float32)


# --- the loop ---------------------------------------------------------------------------------------
def _options(**kw) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in kw.items()}


def _check_options(o: dict, budget: int | None) -> None:
    if o["labels"] not in LABEL_SOURCES:
        raise ConfigError(f"labels must be 'oracle' or 'human', got {o['labels']!r}")
    if o["strategy"] not in STRATEGIES:
        raise ConfigError(f"unknown strategy {o['strategy']!r}; choose one of: {', '.join(STRATEGIES)}")
    if o["diversity"] not in DIVERSITY:
        raise ConfigError(f"unknown diversity {o['diversity']!r}; choose one of: {', '.join(DIVERSITY)}")
    if o["cold_start"] not in COLD_STARTS:
        raise ConfigError(f"unknown cold start {o['cold_start']!r}; choose one of: {', '.join(COLD_STARTS)}")
    for key in ("batch_size", "initial", "candidates", "epochs", "train_batch_size"):
        v = o[key]
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ConfigError(f"{key} must be a positive whole number, got {v!r}")
    if isinstance(o["min_steps"], bool) or not isinstance(o["min_steps"], (int, np.integer)) or o["min_steps"] < 0:
        raise ConfigError(f"min_steps must be a whole number >= 0, got {o['min_steps']!r}")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1):
        raise ConfigError(f"budget must be a positive number of labels, got {budget!r}")


class _Loop:
    """One active-learning run folder: its state, model training and outputs."""

    def __init__(self, X, y_true, classes, test, out: Path, options: dict, budget, device, progress, source_name,
                 source_fingerprint):
        self.X, self.y_true, self.classes, self.test = X, y_true, tuple(classes), test
        self.out, self.o, self.budget = out, options, budget
        self.device = resolve_device(device)
        self.progress = progress
        self.source_name, self.source_fingerprint = source_name, source_fingerprint
        self.n = len(X)
        shaped = Dataset(X=X, y=np.zeros(self.n, dtype=np.int64), classes=self.classes)
        self.pre = Preprocessor.fit(shaped, random_state=int(options["random_state"]))
        self.inputs = self.pre.transform(X)
        self.test_inputs = self.pre.transform(test.X) if test is not None else None

    # state ------------------------------------------------------------------------------------------
    def save_state(self) -> None:
        atomic_write(self.out / STATE_FILE, json.dumps(self.state, indent=1))

    def new_state(self, fingerprint: str) -> dict:
        return {"format": 1, "options": self.o, "budget": self.budget, "status": "running",
                "pool": {"n": self.n, "fingerprint": fingerprint, "classes": list(self.classes),
                         "sample_shape": list(self.X.shape[1:])},
                "ids": [], "labels": [], "label_round": [], "skipped": [], "round": 0, "pending": None,
                "curve": [], "timings": {"train_seconds": 0.0, "query_seconds": 0.0}}

    @property
    def ids(self) -> np.ndarray:
        return np.asarray(self.state["ids"], dtype=np.int64)

    @property
    def labels(self) -> np.ndarray:
        return np.asarray(self.state["labels"], dtype=np.int64)

    def unlabelled(self) -> np.ndarray:
        mask = np.ones(self.n, dtype=bool)
        mask[self.ids] = False
        mask[np.asarray(self.state["skipped"], dtype=np.int64)] = False
        return np.flatnonzero(mask)

    def add(self, ids: np.ndarray, labels: np.ndarray, round_: int) -> None:
        self.state["ids"] += [int(i) for i in ids]
        self.state["labels"] += [int(c) for c in labels]
        self.state["label_round"] += [int(round_)] * len(ids)

    def target(self) -> int | None:
        return self.state["budget"]

    # training ----------------------------------------------------------------------------------------
    def fit(self, ids: np.ndarray, labels: np.ndarray, seed: int):
        data = Dataset(X=self.X[ids], y=labels, classes=self.classes)
        o = self.o
        net, _ = train_probe(data, model=o["model"], epochs=o["epochs"], seed=seed, device=self.device,
                             preprocessor=self.pre, inputs=self.inputs[ids], min_steps=o["min_steps"], lr=o["lr"],
                             batch_size=o["train_batch_size"])
        return net

    def test_accuracy(self, net) -> float | None:
        if self.test is None:
            return None
        return accuracy(net, self.test_inputs, self.test.y)

    def random_ids(self, count: int) -> np.ndarray:
        """Random labelling's rows at ``count`` labels: the seed set, then a fixed random order of the rest."""
        seed_ids = np.asarray(self.state.get("seed_ids", []), dtype=np.int64)
        rest = np.setdiff1d(np.arange(self.n), seed_ids)
        perm = np.random.default_rng([int(self.o["random_state"]), 7]).permutation(rest)
        return np.concatenate([seed_ids, perm[:max(0, count - len(seed_ids))]])

    def model_seed(self) -> int:
        return int(self.o["random_state"]) * 1000 + int(self.state["round"])

    def train_round(self):
        """Train on the labelled rows, record the curve point; returns the model."""
        round_ = self.state["round"]
        seed = self.model_seed()
        start = time.perf_counter()
        net = self.fit(self.ids, self.labels, seed)
        point = {"round": round_, "labels": len(self.ids), "accuracy": self.test_accuracy(net),
                 "train_seconds": time.perf_counter() - start}
        if self.o["compare_random"] and self.o["labels"] == "oracle":
            rid = self.random_ids(len(self.ids))
            point["random_accuracy"] = self.test_accuracy(self.fit(rid, self.y_true[rid], seed))
        self.state["timings"]["train_seconds"] += time.perf_counter() - start
        self.state["curve"].append(point)
        self.save_state()
        self.write_outputs(figure=False)
        if self.progress:
            acc = point["accuracy"]
            rnd = point.get("random_accuracy")
            print(f"active: round {round_}: {point['labels']} labels"
                  + (f", accuracy {acc:.4f}" if acc is not None else "")
                  + (f" (random {rnd:.4f})" if rnd is not None else ""), flush=True)
        return net

    def propose(self, net) -> np.ndarray:
        """The next batch (pool row ids), or an empty array when the budget is spent or the pool is empty."""
        pool = self.unlabelled()
        k = min(self.o["batch_size"], len(pool))
        if self.target() is not None:
            k = min(k, self.target() - len(self.ids))
        if k <= 0:
            return np.zeros(0, dtype=np.int64)
        rng = np.random.default_rng([int(self.o["random_state"]), int(self.state["round"]), 1])
        start = time.perf_counter()
        if net is None:  # no labels yet: the cold-start batch
            k = min(self.o["initial"], len(pool))
            if self.target() is not None:
                k = min(k, self.target())
            picked = pool[cold_start(self.inputs[pool], k, self.o["cold_start"], rng)]
        else:
            logits = predict_logits(net, self.inputs[pool])
            hidden = embed(net, self.inputs[pool])
            picked = pool[query(self.o["strategy"], logits, hidden, k, rng, diversity=self.o["diversity"],
                                candidates=self.o["candidates"])]
        self.state["timings"]["query_seconds"] += time.perf_counter() - start
        if len(np.unique(picked)) != len(picked):
            raise AssertionError("a batch proposed a sample twice")  # an invariant, not user input
        return np.asarray(picked, dtype=np.int64)

    # outputs -----------------------------------------------------------------------------------------
    def write_outputs(self, figure: bool = True) -> None:
        """The labelled set, curve.json and (with ``figure``) curve.png, each written atomically."""
        if not len(self.ids):
            return
        ids = self.ids
        meta = {"kind": "selection", "method": f"active-{self.o['strategy']}", "parameters": self.o,
                "seed": self.o["random_state"], "source": self.source_name,
                "source_fingerprint": self.source_fingerprint, "source_samples": self.n,
                "active": {"label_round": self.state["label_round"], "skipped": self.state["skipped"],
                           "curve": self.state["curve"], "budget": self.state["budget"]},
                "timings": dict(self.state["timings"])}
        DistilledSet(X=self.X[ids], y=self.labels, classes=self.classes, indices=ids, meta=meta).save(
            self.out / SET_DIR, overwrite=True)
        curve = {"strategy": self.o["strategy"], "diversity": self.o["diversity"], "labels_source": self.o["labels"],
                 "model": self.o["model"], "pool_size": self.n,
                 "test_size": len(self.test) if self.test is not None else None, "points": self.state["curve"]}
        atomic_write(self.out / CURVE_JSON, json.dumps(curve, indent=1))
        points = [p for p in self.state["curve"] if p.get("accuracy") is not None]
        if points and figure:
            atomic_write(self.out / CURVE_PNG, learning_curve_png(points, self.o["strategy"]))


def learning_curve_png(points: list[dict], strategy: str, *, full: float | None = None) -> bytes:
    """PNG bytes of test accuracy vs labels spent, with random labelling's curve where recorded."""
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 4.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    n = [p["labels"] for p in points]
    ax.plot(n, [100 * p["accuracy"] for p in points], "o-", label=f"active ({strategy})")
    rnd = [(p["labels"], p["random_accuracy"]) for p in points if p.get("random_accuracy") is not None]
    if rnd:
        ax.plot([a for a, _ in rnd], [100 * b for _, b in rnd], "s--", color="grey", label="random labelling")
    if full is not None:
        ax.axhline(100 * full, color="black", lw=0.8, label="full data")
    ax.set_xlabel("labels spent")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _prepare_out(out: Path) -> dict | None:
    """The saved state of a run in ``out``, or None for a new run; refuses a folder this loop did not write."""
    if out.exists() and not out.is_dir():
        raise ArtifactError(f"{out}: exists and is not a folder; choose another out")
    if out.is_dir() and any(out.iterdir()):
        marker = read_marker(out)
        if marker is None or marker["kind"] != RUN_KIND:
            raise ArtifactError(f"{out}: not an active-learning run folder (no marker from datadistill active); "
                                "choose an empty or new folder")
        try:
            state = json.loads((out / STATE_FILE).read_text())
        except FileNotFoundError:
            return None
        except (ValueError, OSError) as exc:
            raise ArtifactError(f"{out / STATE_FILE}: unreadable ({exc}); the run cannot be continued") from None
        if not isinstance(state, dict) or state.get("format") != 1:
            raise ArtifactError(f"{out / STATE_FILE}: not a state file this version can continue")
        return state
    out.mkdir(parents=True, exist_ok=True)
    write_marker(out, RUN_KIND)
    return None


def _as_pool(data, classes, test):
    """(X, y or None, classes, test Dataset or None, name, fingerprint) of a Dataset or an array pool."""
    if isinstance(data, Dataset):
        if classes is not None and tuple(map(str, classes)) != tuple(data.classes):
            raise ConfigError(f"classes {list(classes)} differ from the data set's {list(data.classes)}")
        test_ds = data.test if test is None else test
        if test_ds is not None and not isinstance(test_ds, Dataset):
            Xt, yt = test_ds
            test_ds = Dataset.create(Xt, yt, data.classes, name=f"{data.name}[test]", origin="test", min_classes=1)
        return data.X, data.y, data.classes, test_ds, data.name, data.fingerprint
    X = _check_pool(np.asarray(data), "pool")
    if classes is None or len(classes) < 2:
        raise ConfigError("an unlabelled pool needs its class names (classes=[...], at least two)")
    classes = tuple(str(c) for c in classes)
    if len(set(classes)) != len(classes):
        raise ConfigError(f"class names repeat: {list(classes)}")
    if test is not None and not isinstance(test, Dataset):
        Xt, yt = test
        test = Dataset.create(Xt, yt, classes, name="pool[test]", origin="test", min_classes=1)
    return X, None, classes, test, "pool", None


def active(
    data: Dataset | np.ndarray,
    out: str | os.PathLike,
    *,
    labels: str = "oracle",
    strategy: str = "margin",
    diversity: str = "kmeans",
    batch_size: int = 10,
    budget: int | None = None,
    initial: int | None = None,
    seed_ids: Sequence[int] | None = None,
    seed_labels: Sequence | None = None,
    cold_start: str = "kmeans",
    candidates: int = 10,
    model: str = "mlp",
    epochs: int = 5,
    min_steps: int = 500,
    lr: float | None = None,
    train_batch_size: int = 256,
    classes: Sequence[str] | None = None,
    test: Dataset | tuple | None = None,
    compare_random: bool = True,
    labels_file: str | os.PathLike | None = None,
    until_accuracy: float | None = None,
    random_state: int = 0,
    device: str | torch.device | None = "auto",
    progress: bool = False,
) -> ActiveResult:
    """Run (or continue) the active-learning loop whose state lives in ``out``.

    Args:
        data: a Dataset (its labels are the oracle; its test split scores the curve) or an unlabelled array
            pool (N, ...) with ``classes`` (human labels only).
        out: the run folder; a rerun with the same folder continues where the last call stopped.
        labels: "oracle" (read labels from ``data``; runs to the budget in one call) or "human" (write each
            batch to ``out/batch-NNN.csv``/``.parquet`` and return; the next call reads the filled-in labels).
        strategy: a key of :data:`STRATEGIES`.
        diversity: how a batch is spread over the candidates: "kmeans" (nearest each k-means centre),
            "kmeans++", "kcenter" or "none" (top-k).
        batch_size: labels asked per round.
        budget: total labels to spend, seed included (oracle default: ``initial`` + 10 batches; human: no limit).
            May be raised on a rerun.
        initial: cold-start batch size when there is no seed set (default ``batch_size``).
        seed_ids, seed_labels: a labelled seed set (pool row ids; labels as class names or ids, read from the
            oracle when omitted). None: cold start.
        cold_start: "kmeans", "kcenter" or "random" for the first batch without labels.
        candidates: the diverse step picks the batch among candidates x batch_size most informative rows.
        model, epochs, min_steps, lr, train_batch_size: the model trained every round (probe recipe).
        classes: class names of an unlabelled pool.
        test: a held-out labelled set for the curve (default: ``data.test``).
        compare_random: oracle mode: also train on random rows of the same count at every round.
        labels_file: human mode: the labelled file to read (default: the pending ``batch-NNN.csv``/``.parquet``).
        until_accuracy: stop once the curve's test accuracy reaches this share (simulations and benchmarks).
        random_state: seed of every choice and model.
        device: "auto", "cpu" or "cuda".
        progress: print one line per round.
    """
    X, y_true, classes, test, source_name, source_fingerprint = _as_pool(data, classes, test)
    o = _options(labels=labels, strategy=strategy, diversity=diversity, batch_size=batch_size,
                 initial=batch_size if initial is None else initial, cold_start=cold_start, candidates=candidates,
                 model=model, epochs=epochs, min_steps=min_steps, lr=lr, train_batch_size=train_batch_size,
                 random_state=random_state, compare_random=bool(compare_random))
    _check_options(o, budget)
    if labels == "oracle" and y_true is None:
        raise ConfigError("labels='oracle' needs labelled data (a Dataset); an unlabelled pool takes labels='human'")
    from .models import check_model_options

    check_model_options(model)
    if budget is None and labels == "oracle":
        budget = (len(seed_ids) if seed_ids is not None else o["initial"]) + 10 * batch_size
    saved = _prepare_out(Path(out))  # before the pool is preprocessed: a wrong folder fails fast
    loop = _Loop(X, y_true, classes, test, Path(out), o, budget, device, progress, source_name, source_fingerprint)
    _open_state(loop, saved, budget, seed_ids, seed_labels)
    return _run(loop, labels_file, until_accuracy)


def _open_state(loop: _Loop, saved: dict | None, budget: int | None, seed_ids, seed_labels) -> None:
    """Give ``loop`` its state: a new one (with the seed set, if any) or ``saved``, the one in its folder."""
    fingerprint = pool_fingerprint(loop.X)
    if saved is None:
        loop.state = loop.new_state(fingerprint)
        if seed_ids is not None:
            sid, slab = _seed_set(seed_ids, seed_labels, loop.y_true, loop.classes, loop.n)
            loop.state["seed_ids"] = [int(i) for i in sid]
            loop.add(sid, slab, 0)
        loop.save_state()
        return
    _check_resume(saved, loop.o, fingerprint, loop.n, loop.classes, loop.out)
    loop.state = saved
    if budget is not None and budget != saved["budget"]:
        saved["budget"] = int(budget)
        saved["status"] = "running"


def _seed_set(seed_ids, seed_labels, y_true, classes, n):
    sid = np.asarray(seed_ids)
    if sid.ndim != 1 or (len(sid) and sid.dtype.kind not in "iu"):
        raise ConfigError("seed_ids must be a list of whole row numbers")
    sid = sid.astype(np.int64)
    bad = [f"position {i}: id {int(v)}" for i, v in enumerate(sid) if not 0 <= v < n]
    if bad:
        raise DataError(f"seed ids outside the pool's rows 0..{n - 1}: {_listing(bad)}")
    _, first = np.unique(sid, return_index=True)
    dup = np.setdiff1d(np.arange(len(sid)), first)
    if len(dup):
        raise DataError(f"seed ids repeat: {_listing([f'position {i}: id {int(sid[i])}' for i in dup])}")
    if seed_labels is None:
        if y_true is None:
            raise ConfigError("a seed set on an unlabelled pool needs seed_labels")
        return sid, y_true[sid]
    if len(seed_labels) != len(sid):
        raise ConfigError(f"{len(sid)} seed ids but {len(seed_labels)} seed labels")
    lookup = {c: i for i, c in enumerate(classes)}
    out, bad = [], []
    for i, v in enumerate(seed_labels):
        key = _cell_text(v)
        if key in lookup:
            out.append(lookup[key])
        elif isinstance(v, (int, np.integer)) and 0 <= int(v) < len(classes):
            out.append(int(v))
        else:
            bad.append(f"position {i} (id {int(sid[i])}): label {v!r}")
    if bad:
        raise DataError(f"seed labels outside the classes ({', '.join(classes)}): {_listing(bad)}")
    return sid, np.asarray(out, dtype=np.int64)


def _check_resume(saved: dict, o: dict, fingerprint: str, n: int, classes, out: Path) -> None:
    pool = saved.get("pool", {})
    if pool.get("fingerprint") != fingerprint:
        raise DataError(f"{out}: this run was started on other data ({pool.get('n')} rows, fingerprint "
                        f"{str(pool.get('fingerprint'))[:12]}; now {n} rows, {fingerprint[:12]}); give the same data "
                        "or a new out folder")
    if list(pool.get("classes", [])) != list(classes):
        raise DataError(f"{out}: this run's classes are {pool.get('classes')}, now {list(classes)}")
    before = saved.get("options", {})
    changed = [f"{k}={before.get(k)!r} (now {o[k]!r})" for k in _FIXED if before.get(k) != o[k]]
    if changed:
        raise ConfigError(f"{out}: this run was started with {', '.join(changed)}; rerun with the same options, "
                          "or choose a new out folder")


def _pending_labels(loop: _Loop, labels_file) -> tuple[np.ndarray, np.ndarray] | None:
    pending = loop.state["pending"]
    allowed = np.asarray(pending["ids"], dtype=np.int64)
    if labels_file is not None:
        files = [Path(labels_file)]
    else:
        files = [loop.out / f for f in pending["files"] if (loop.out / f).is_file()]
        files.sort(key=lambda p: p.stat().st_mtime, reverse=True)  # the one edited last
    for f in files:
        got = read_label_file(f, loop.classes, allowed=allowed, n_pool=loop.n)
        if got is not None:
            return got
    return None


def _run(loop: _Loop, labels_file, until_accuracy: float | None) -> ActiveResult:
    state = loop.state
    human = loop.o["labels"] == "human"

    def result(status: str, batch=None, batch_file=None) -> ActiveResult:
        return ActiveResult(status=status, out=loop.out, ids=loop.ids, labels=loop.labels, classes=loop.classes,
                            curve=list(state["curve"]), batch_ids=batch, batch_file=batch_file)

    if state["pending"] is not None:
        pending = state["pending"]
        got = _pending_labels(loop, labels_file)
        if got is None:
            return result("waiting", np.asarray(pending["ids"], dtype=np.int64), loop.out / pending["files"][0])
        ids, labels = got
        skipped = np.setdiff1d(np.asarray(pending["ids"], dtype=np.int64), ids)
        loop.add(ids, labels, pending["round"])
        state["skipped"] += [int(i) for i in skipped]
        state["pending"] = None
        state["round"] = pending["round"]
        loop.save_state()
    elif labels_file is not None:
        raise ConfigError(f"labels_file {labels_file}: no batch is waiting for labels in {loop.out}")
    while True:
        trained_at = state["curve"][-1]["labels"] if state["curve"] else None
        net = loop.train_round() if len(loop.ids) and trained_at != len(loop.ids) else None
        last = state["curve"][-1].get("accuracy") if state["curve"] else None
        reached = until_accuracy is not None and last is not None and last >= until_accuracy
        spent = loop.target() is not None and len(loop.ids) >= loop.target()
        if reached or spent or not len(loop.unlabelled()):
            state["status"] = "done"
            loop.save_state()
            loop.write_outputs()
            return result("done")
        if net is None and len(loop.ids):  # resumed after the round's curve point: the same model again
            net = loop.fit(loop.ids, loop.labels, loop.model_seed())
        batch = loop.propose(net)
        state["round"] += 1
        if human:
            files = write_batch(loop.out, state["round"], batch)
            state["pending"] = {"round": state["round"], "ids": [int(i) for i in batch],
                                "files": [f.name for f in files]}
            loop.save_state()
            loop.write_outputs()
            return result("waiting", batch, files[0])
        loop.add(batch, loop.y_true[batch], state["round"])
        loop.save_state()
