"""Progress bars: the one guard every loop that shows progress goes through.

A bar is drawn only when stderr is a terminal (tqdm's own detection, ``disable=None``) and progress
has not been silenced (the command line's ``--quiet``, or :func:`silenced` in a script), so a log
file never fills with carriage-return updates.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

_silenced = 0  # depth of nested silenced() blocks


def bar(total: float | None = None, *, desc: str | None = None, enabled: bool = True, **options):
    """A tqdm progress bar on stderr, disabled unless stderr is a terminal and progress is not silenced.

    Args:
        total: the number of steps (None: unknown).
        desc: the bar's label.
        enabled: False turns the bar off (a caller's own ``progress`` option).
        options: passed to tqdm (``leave``, ``unit``, ``initial``, ...).
    """
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=True if _silenced or not enabled else None, **options)


def is_silenced() -> bool:
    """Whether progress bars are switched off for this process."""
    return _silenced > 0


@contextmanager
def silenced(active: bool = True) -> Iterator[None]:
    """Switch every progress bar off inside the block (``active=False``: leave them as they are)."""
    global _silenced
    _silenced += int(active)
    try:
        yield
    finally:
        _silenced -= int(active)
