"""Score-based selectors: keep the top-k samples of a per-sample importance score (see datadistill.scores)."""

from __future__ import annotations

import numpy as np

from ..data.dataset import Dataset
from ..errors import ConfigError
from .base import Selector, register


class ScoreSelector(Selector):
    """Keep the k samples with the highest (or lowest) score in each pool.

    Args:
        order: "highest", "lowest" or None (the score's most informative end: see ``datadistill.scores``).
        model: the probe model (logreg, mlp, convnet, resnet18).
        epochs: probe epochs (raised on small data so the probe converges).
        seeds: one probe per seed, scores averaged.
        device: "auto" (CUDA when present), "cpu" or "cuda".
        score_params: extra scorer options (e.g. ``{"last_layer": True}`` for gradnorm).
    """

    score_name = ""
    cost = "one probe training + one pass over the data"

    def __init__(self, size=None, ratio=None, *, per_class="proportional", random_state=0, order: str | None = None,
                 model: str = "mlp", epochs: int = 5, seeds=(0,), device: str = "auto",
                 score_params: dict | None = None):
        super().__init__(size, ratio, per_class=per_class, random_state=random_state)
        self.order = order
        self.model = model
        self.epochs = epochs
        self.seeds = seeds
        self.device = device
        self.score_params = score_params

    def _prepare(self, dataset: Dataset, rng: np.random.Generator) -> None:
        from ..scores import SCORERS, score

        order = self.order or SCORERS[self.score_name].informative
        if order not in ("highest", "lowest"):
            raise ConfigError(f"{self.name}: order must be 'highest' or 'lowest', got {self.order!r}")
        self.order_ = order
        self.scores_ = score(dataset, self.score_name, model=self.model, epochs=self.epochs, seeds=self.seeds,
                             device=self.device, **(self.score_params or {}))

    def _select_pool(self, pool, k, rng):
        s = self.scores_[pool]
        key = -s if self.order_ == "highest" else s
        # ties broken by a seeded permutation so equal scores do not favour low row numbers
        perm = rng.permutation(len(pool))
        order = perm[np.argsort(key[perm], kind="stable")]
        return pool[order[:k]], None


def _score_selector(method: str, score_name: str, summary: str) -> type[ScoreSelector]:
    cls = type(f"{score_name.title().replace('-', '')}Selector", (ScoreSelector,),
               {"name": method, "score_name": score_name, "summary": summary, "__module__": __name__,
                "__doc__": f"Top-k by the '{score_name}' score. {summary}."})
    return register(cls)


GradNormSelector = _score_selector("gradnorm", "gradnorm", "largest per-sample loss-gradient norm (GraNd)")
EL2NSelector = _score_selector("el2n", "el2n", "largest error vector ||softmax - onehot|| (EL2N)")
EntropySelector = _score_selector("entropy", "entropy", "highest predictive entropy of a probe")
MarginSelector = _score_selector("margin", "margin", "smallest top-1 minus top-2 probability of a probe")
LeastConfidenceSelector = _score_selector("least-confidence", "least-confidence", "lowest max-probability of a probe")
ForgettingSelector = _score_selector("forgetting", "forgetting", "most forgetting events while a probe trains")
ForgettingSelector.cost = "one probe training with a prediction pass after every epoch"
GradNormSelector.cost = "one probe training + one per-sample backward pass (vmap) over the data"
