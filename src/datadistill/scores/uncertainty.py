"""Uncertainty sampling scores of a probe's predictive distribution (Settles, "Active Learning Literature
Survey", 2009): entropy and least confidence (higher = more informative), margin (lower = more informative)."""

from __future__ import annotations

import numpy as np


def softmax(logits: np.ndarray) -> np.ndarray:
    """Row-wise softmax in float64."""
    z = logits.astype(np.float64)
    z = z - z.max(axis=1, keepdims=True)
    p = np.exp(z)
    return p / p.sum(axis=1, keepdims=True)


def entropy(probs: np.ndarray) -> np.ndarray:
    """Predictive entropy -sum p log p in nats (higher = more uncertain)."""
    p = np.clip(probs, 1e-300, 1.0)
    return -(probs * np.log(p)).sum(axis=1)


def margin(probs: np.ndarray) -> np.ndarray:
    """Top-1 minus top-2 probability (lower = more uncertain)."""
    top2 = np.partition(probs, -2, axis=1)[:, -2:]
    return top2[:, 1] - top2[:, 0]


def least_confidence(probs: np.ndarray) -> np.ndarray:
    """1 - max probability (higher = more uncertain)."""
    return 1.0 - probs.max(axis=1)
