"""Constructor parameters of estimator classes (selectors, distillers), scikit-learn style."""

from __future__ import annotations

import inspect


def init_parameter_names(obj, skip: tuple[str, ...] = ()) -> list[str]:
    """Named ``__init__`` parameters of ``obj``'s class and its bases, subclass first, without ``self`` or ``*args``/``**kw``."""
    names: list[str] = []
    for klass in type(obj).__mro__:
        if klass is object:
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name == "self" or p.name in skip:
                continue
            if p.name not in names:
                names.append(p.name)
    return names
