"""Herding (Welling, "Herding dynamical weights to learn", ICML 2009; kernel herding, Chen, Welling & Smola,
UAI 2010): greedily add the sample that brings the chosen set's mean embedding closest to the pool's.

With the linear kernel this matches the class mean in feature space (the herding baseline of dataset
condensation papers); with the RBF kernel it greedily minimises the maximum mean discrepancy.
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import ConfigError
from .base import register
from .features import FeatureSelector


def _rbf_mean_embedding(X: torch.Tensor, gamma: float, rng: np.random.Generator, max_reference: int
                        ) -> torch.Tensor:
    """mean_j k(x, x_j) for every row (exact up to ``max_reference`` reference rows, else a seeded sample)."""
    ref = X if len(X) <= max_reference else X[torch.as_tensor(rng.choice(len(X), max_reference, replace=False),
                                                              device=X.device)]
    step = max(1, (1 << 24) // len(ref))
    return torch.cat([torch.exp(-gamma * torch.cdist(X[i:i + step], ref).pow(2)).mean(dim=1)
                      for i in range(0, len(X), step)])


def herding(X: torch.Tensor, k: int, *, kernel: str = "linear", gamma: float | None = None,
            rng: np.random.Generator | None = None, max_reference: int = 20_000) -> np.ndarray:
    """Greedy kernel herding on rows of ``X``; returns k distinct rows in selection order.

    Step t picks argmin_x  MMD^2(S ∪ {x}, pool), i.e. argmin_x [2 sum_{s in S} k(x, s) + k(x, x)] / (t + 1)^2
    - 2 m(x) / (t + 1) with m(x) = mean_j k(x, x_j). O(k·N·d) time, O(N) extra memory.

    Args:
        X: (N, d) float tensor.
        k: samples to choose.
        kernel: "linear" (match the mean) or "rbf".
        gamma: RBF width (default 1 / (d · mean feature variance)).
        rng: seeded generator (only used to subsample the RBF reference set of very large pools).
        max_reference: RBF mean embedding uses at most this many reference rows.
    """
    n = len(X)
    Xd = X.double()
    if kernel == "linear":
        m = Xd @ Xd.mean(dim=0)
        self_k = (Xd * Xd).sum(dim=1)
    elif kernel == "rbf":
        if gamma is None:
            gamma = 1.0 / (X.shape[1] * float(X.var(dim=0).mean()) + 1e-12)
        m = _rbf_mean_embedding(X, gamma, rng or np.random.default_rng(0), max_reference).double()
        self_k = torch.ones(n, dtype=torch.float64, device=X.device)
    else:
        raise ConfigError(f"herding kernel must be 'linear' or 'rbf', got {kernel!r}")
    acc = torch.zeros(n, dtype=torch.float64, device=X.device)  # sum over chosen s of k(x, s)
    taken = torch.zeros(n, dtype=torch.bool, device=X.device)
    chosen = []
    for t in range(k):
        obj = (2.0 * acc + self_k) / (t + 1) ** 2 - 2.0 * m / (t + 1)
        obj[taken] = float("inf")
        c = int(torch.argmin(obj))
        chosen.append(c)
        taken[c] = True
        if kernel == "linear":
            acc += Xd @ Xd[c]
        else:
            acc += torch.exp(-gamma * ((X - X[c]) ** 2).sum(dim=1)).double()
    return np.asarray(chosen, dtype=np.int64)


@register
class HerdingSelector(FeatureSelector):
    """Herding: greedily match the pool's kernel mean embedding with the kept samples' (MMD with an RBF kernel).

    Args (besides the feature-space ones): ``kernel`` ("rbf", the default, matches the whole distribution;
    "linear" matches only the mean, the herding baseline of dataset-condensation papers, and keeps the most
    central samples: on ijcnn1 it lost 2.5 points to random at 10% and 5.1 at 2%, RBF won 0.25 and 0.85),
    ``gamma`` (RBF width).
    """

    name = "herding"
    summary = "herding: greedily match the class distribution (RBF kernel mean embedding, MMD) with the kept samples"
    cost = "O(N·k·d) time, O(N·d) memory"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, features="raw",
                 pca=None, model="mlp", epochs=5, device="auto", probe_params=None, min_per_class=0, soft_labels=False,
                 temperature=4.0, drop_misclassified=True,
                 kernel: str = "rbf",
                 gamma: float | None = None):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state, features=features, pca=pca,
                         model=model, epochs=epochs, device=device, probe_params=probe_params,
                         min_per_class=min_per_class, soft_labels=soft_labels, temperature=temperature,
                         drop_misclassified=drop_misclassified)
        self.kernel = kernel
        self.gamma = gamma

    def _select_pool(self, pool, k, rng):
        return pool[herding(self._tensor(pool), k, kernel=self.kernel, gamma=self.gamma, rng=rng)], None
