"""Feature spaces for geometric selectors: standardised raw inputs or a probe's embedding, optional PCA."""

from __future__ import annotations

import numpy as np
import torch

from ..data.dataset import Dataset
from ..errors import ConfigError
from ..training import embed, predict_logits, resolve_device
from .base import PROBE_NOTE, Selector
from .memo import memoized, memoized_score

FEATURE_SPACES = ("raw", "embedding")


def sample_features(dataset: Dataset, *, features: str = "raw", pca: int | None = None, model: str = "mlp",
                    epochs: int = 5, seed: int = 0, device: str | torch.device | None = "auto",
                    probe_params: dict | None = None, return_logits: bool = False):
    """One float32 row per training sample: the space geometric selectors measure distances in.

    Args:
        features: "raw" (standardised, flattened inputs) or "embedding" (penultimate layer of a probe).
        pca: reduce to this many principal components (randomised SVD) for speed; None keeps all.
        model, epochs, device: the probe used for "embedding".
        seed: the probe's and PCA's seed.
        probe_params: extra probe recipe options (``min_steps``, ``lr``, ``batch_size``).
        return_logits: also return the embedding probe's logits (None for "raw").
    """
    from ..scores.probe import model_inputs, train_probe

    if features not in FEATURE_SPACES:
        raise ConfigError(f"features must be one of {', '.join(FEATURE_SPACES)}, got {features!r}")
    inputs, pre = model_inputs(dataset)
    if features == "embedding":
        net, _ = train_probe(dataset, model=model, epochs=epochs, seed=seed, device=device, preprocessor=pre,
                             inputs=inputs, **(probe_params or {}))
        Z = embed(net, inputs)
        logits = predict_logits(net, inputs)
    else:
        logits = None
        Z = inputs.reshape(len(inputs), -1)
    Z = np.ascontiguousarray(Z, dtype=np.float32)
    if pca is not None:
        pca = int(pca)
        if pca < 1:
            raise ConfigError(f"pca must be a positive number of components, got {pca}")
        if pca < Z.shape[1]:
            from sklearn.decomposition import PCA

            Z = PCA(n_components=pca, svd_solver="randomized", random_state=seed).fit_transform(Z)
            Z = np.ascontiguousarray(Z, dtype=np.float32)
    return (Z, logits) if return_logits else Z


class FeatureSelector(Selector):
    """Base for selectors that work on a feature space (see :func:`sample_features`).

    Args:
        features: "raw" or "embedding".
        pca: optional number of principal components.
        model, epochs: the probe for "embedding"; probe_params: its recipe options (``min_steps``, ``lr``).
        device: "auto" (CUDA when present), "cpu" or "cuda" for the method's tensor work.
        soft_labels, temperature: store the embedding probe's class probabilities at ``temperature`` with the
            selected set (needs ``features="embedding"``).
        drop_misclassified: leave out the rows a probe misclassifies (when a class has fewer other rows than
            its budget, all of those are kept and the method picks only the rest among the misclassified). A coverage set keeps about one row per region, so a wrong label there has no neighbours to
            outvote it, and label noise hurts a coverage set more than a random one (k-center lost 3.9 points
            to random on MNIST with 20% of the labels flipped, at 1%). The probe is the one the score
            selectors train (an MLP for ``epochs`` on the data, shared with them inside ``reuse_probes``), or
            the embedding probe when ``features="embedding"``. False: every row is a candidate, no probe.
    """

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features: str = "raw",
                 pca: int | None = None, model: str = "mlp", epochs: int = 5, device: str = "auto",
                 probe_params: dict | None = None, min_per_class: int = 0, soft_labels: bool = False,
                 temperature: float = 4.0, drop_misclassified: bool = True):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, min_per_class=min_per_class)
        self.features = features
        self.pca = pca
        self.model = model
        self.epochs = epochs
        self.device = device
        self.probe_params = probe_params
        self.soft_labels = soft_labels
        self.temperature = temperature
        self.drop_misclassified = drop_misclassified

    def check_params(self) -> None:
        super().check_params()
        if self.features not in FEATURE_SPACES:
            raise ConfigError(f"{self.name}: features must be one of {', '.join(FEATURE_SPACES)}, got {self.features!r}")
        if self.soft_labels and self.features != "embedding":
            raise ConfigError(f"{self.name}: soft labels need a probe; use features='embedding' ({PROBE_NOTE})")

    def _prepare(self, dataset: Dataset, rng: np.random.Generator) -> None:
        self.device_ = resolve_device(self.device)
        seed = 0 if self.random_state is None else int(self.random_state)
        settings = {"features": self.features, "pca": self.pca, "model": self.model, "epochs": self.epochs,
                    "seed": seed, "device": str(self.device_), "probe": self.probe_params}
        (self.features_, self.probe_logits_), self.reused_seconds_ = memoized(dataset.fingerprint, "features", settings, lambda: sample_features(
            dataset, features=self.features, pca=self.pca, model=self.model, epochs=self.epochs, seed=seed,
            device=self.device_, probe_params=self.probe_params, return_logits=True))
        self.wrong_ = None
        if self.drop_misclassified:
            logits = self.probe_logits_
            if logits is None:
                logits, saved = self._probe_logits(dataset, seed)
                self.reused_seconds_ += saved
            self.wrong_ = logits.argmax(axis=1) != dataset.y
            self.probe_error_ = float(self.wrong_.mean())

    def _probe_logits(self, dataset: Dataset, seed: int) -> tuple[np.ndarray, float]:
        """A probe's logits on the training rows: the score selectors' probe (shared with them when memoized)."""
        (_, logits), saved = memoized_score(dataset, "entropy", model=self.model, epochs=self.epochs, seeds=(seed,),
                                            device=self.device, params=self.probe_params)
        return logits, saved

    def _select_part(self, pool: np.ndarray, k: int, seed: list[int], executor=None,
                     diagnostics: dict | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Leave the probe-misclassified rows out of the pool; when fewer than ``k`` others remain, keep them
        all and let the method choose only the rest among the misclassified rows."""
        if self.wrong_ is None:
            return super()._select_part(pool, k, seed, executor, diagnostics)
        right = pool[~self.wrong_[pool]]
        if len(right) >= k:
            return super()._select_part(right, k, seed, executor, diagnostics)
        rest, w = super()._select_part(pool[self.wrong_[pool]], k - len(right), seed, executor, diagnostics)
        return np.concatenate([right, rest]), np.concatenate([np.ones(len(right)), w])

    def _tensor(self, pool: np.ndarray) -> torch.Tensor:
        """The pool's features as a float32 tensor on the method's device."""
        return torch.as_tensor(self.features_[pool], device=self.device_)


def nearest(A: torch.Tensor, C: torch.Tensor, *, block: int = 1 << 24) -> tuple[torch.Tensor, torch.Tensor]:
    """For each row of A, the index of its nearest row of C and the Euclidean distance.

    Chunked over A so that at most ``block`` distances exist at once.
    """
    chunk = max(1, block // max(1, len(C)))
    idx, dist = [], []
    for i in range(0, len(A), chunk):
        d = torch.cdist(A[i:i + chunk], C, compute_mode="use_mm_for_euclid_dist")
        m = d.min(dim=1)
        idx.append(m.indices)
        dist.append(m.values)
    return torch.cat(idx), torch.cat(dist)


def voronoi_counts(A: torch.Tensor, C: torch.Tensor) -> np.ndarray:
    """How many rows of A have each row of C as their nearest (sums to len(A))."""
    idx, _ = nearest(A, C)
    return np.bincount(idx.cpu().numpy(), minlength=len(C)).astype(np.float64)
