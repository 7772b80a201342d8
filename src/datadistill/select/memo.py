"""Reuse of probe work across fits: one probe per (data, probe settings) while :func:`reuse_probes` is active.

Selecting the same pool at several sizes (an evaluation curve, ``auto``) trains the same probe again for every
size; inside ``with reuse_probes():`` score and feature computations are remembered by the data's
fingerprint and their arguments, so each is done once. Outside it nothing is cached.
"""

from __future__ import annotations

import json
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_STACK: list[OrderedDict] = []


@contextmanager
def reuse_probes(max_items: int = 8) -> Iterator[None]:
    """Remember up to ``max_items`` probe results (least recently used dropped first) inside the block."""
    cache: OrderedDict = OrderedDict()
    cache.max_items = max_items  # type: ignore[attr-defined]
    _STACK.append(cache)
    try:
        yield
    finally:
        _STACK.pop()


def memoized(fingerprint: str, what: str, params: dict, compute: Callable[[], object]) -> tuple[object, float]:
    """(``compute()`` or its remembered result for the same data, kind of work and parameters, seconds saved).

    The seconds saved are what the remembered computation took (0 when it ran now), so callers can still
    report the full cost of a selection.
    """
    if not _STACK:
        return compute(), 0.0
    cache = _STACK[-1]
    key = (fingerprint, what, json.dumps(params, sort_keys=True, default=repr))
    if key in cache:
        cache.move_to_end(key)
        value, seconds = cache[key]
        return value, seconds
    start = time.perf_counter()
    value = compute()
    cache[key] = (value, time.perf_counter() - start)
    while len(cache) > cache.max_items:  # type: ignore[attr-defined]
        cache.popitem(last=False)
    return value, 0.0


def memoized_score(dataset, score: str, *, model: str, epochs: int, seeds, device, params: dict | None = None):
    """((scores, probe logits), seconds saved) of ``scores.score_with_logits`` under one memo key.

    Score selectors and the geometric selectors' misclassified filter both come here, so inside
    :func:`reuse_probes` a probe with the same settings is trained once for both.
    """
    from ..scores import score_with_logits

    seeds = tuple(seeds)
    key = {"score": score, "model": model, "epochs": epochs, "seeds": list(seeds), "device": device,
           **(params or {})}
    return memoized(dataset.fingerprint, "score", key, lambda: score_with_logits(
        dataset, score, model=model, epochs=epochs, seeds=seeds, device=device, **(params or {})))
