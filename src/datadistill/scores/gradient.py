"""Gradient-based importance: per-sample loss-gradient norm (all parameters or last layer) and EL2N.

Both follow Paul et al., "Deep Learning on a Data Diet" (2021): GraNd is the norm of the per-sample
cross-entropy gradient, EL2N the L2 norm of the error vector softmax(f(x)) - onehot(y). Higher means more
informative (harder, closer to the boundary, or mislabelled).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, grad, vmap

from ..training import as_tensor
from .uncertainty import softmax


def error_vectors(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """softmax(logits) - onehot(y), (N, K) float64."""
    p = softmax(logits)
    p[np.arange(len(y)), y] -= 1.0
    return p


def el2n(logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """EL2N score ||softmax - onehot||_2 per sample (higher = more informative)."""
    return np.linalg.norm(error_vectors(logits, y), axis=1)


def linear_grad_norm(features: np.ndarray, logits: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact gradient norm for a linear softmax layer on ``features``: ||p - onehot|| * ||[h, 1]||.

    The gradient of the cross entropy w.r.t. (W, b) of ``logits = W h + b`` is the outer product
    (p - e) [h, 1]^T, whose Frobenius norm factorises.
    """
    h = features.reshape(len(features), -1).astype(np.float64)
    return el2n(logits, y) * np.sqrt((h * h).sum(axis=1) + 1.0)


def network_grad_norm(model: nn.Module, X, y, *, chunk_size: int = 256, device=None) -> np.ndarray:
    """Per-sample norm of the cross-entropy gradient w.r.t. all trainable parameters (torch.func vmap(grad)).

    Args:
        model: the trained probe (evaluated in eval mode; buffers such as batch-norm statistics are frozen).
        X: model-space inputs (N, ...).
        y: int labels (N,).
        chunk_size: samples per vmap call; memory grows with chunk_size x number of parameters.
        device: where to compute (default: the model's device).
    """
    dev = torch.device(device) if device is not None else next(model.parameters()).device
    model = model.to(dev).eval()
    params = {k: v.detach() for k, v in model.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in model.named_buffers()}

    def sample_loss(p, xb, yb):
        out = functional_call(model, (p, buffers), (xb.unsqueeze(0),))
        return nn.functional.cross_entropy(out, yb.unsqueeze(0))

    per_sample_grad = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    y = np.asarray(y)
    norms = np.empty(len(y), dtype=np.float64)
    for i in range(0, len(y), chunk_size):
        xb = as_tensor(X[i:i + chunk_size], dev)
        yb = torch.as_tensor(y[i:i + chunk_size], dtype=torch.long, device=dev)
        grads = per_sample_grad(params, xb, yb)
        sq = sum(g.reshape(len(xb), -1).double().pow(2).sum(dim=1) for g in grads.values())
        norms[i:i + len(xb)] = sq.sqrt().cpu().numpy()
    return norms


def model_grad_norm(model: nn.Module, X, y, *, last_layer: bool = False, chunk_size: int = 256) -> np.ndarray:
    """Gradient norm of a datadistill Classifier: closed form when the gradient is that of a linear layer.

    Args:
        model: a model-zoo Classifier (``features`` + linear ``head``).
        X: model-space inputs.
        y: int labels.
        last_layer: only the head's parameters (closed form on penultimate features); logreg is always exact.
        chunk_size: samples per vmap call for the all-parameter case.
    """
    from ..training import embed, predict_logits

    has_body_params = any(p.requires_grad for p in model.body.parameters())
    if last_layer or not has_body_params:
        h = embed(model, X)
        logits = predict_logits(model, X)
        return linear_grad_norm(h, logits, np.asarray(y))
    return network_grad_norm(model, X, y, chunk_size=chunk_size)
