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


MAX_SEED = 2**32 - 1  # numpy's legacy RandomState (used by scikit-learn) takes seeds in [0, 2**32)


def check_random_state(value, name: str = "random_state") -> None:
    """Refuse a seed that is not None or an integer in [0, 2**32)."""
    import numbers

    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= int(value) <= MAX_SEED:
        from .errors import ConfigError

        raise ConfigError(f"{name} (--seed) must be an integer from 0 to {MAX_SEED}, got {value!r}")


def _expected_kinds(parameter: inspect.Parameter) -> set[str]:
    """What a parameter takes, read from its default and annotation: subsets of {bool, int, float, str}."""
    kinds: set[str] = set()
    default = parameter.default
    if default is not inspect.Parameter.empty and default is not None:
        kinds.add(type(default).__name__)
    annotation = parameter.annotation
    if annotation is inspect.Parameter.empty:
        return kinds
    if isinstance(annotation, type):
        annotation = annotation.__name__
    if isinstance(annotation, str):
        words = set(annotation.replace("|", " ").replace(",", " ").replace("[", " ").replace("]", " ").split())
        kinds |= words & {"bool", "int", "float", "str"}
        if words - {"bool", "int", "float", "str", "None"}:
            return set()  # a richer type (dict, Sequence, ...): leave it to the class
    return kinds


def check_parameter_types(cls: type, params: dict, method: str) -> None:
    """Refuse values of the wrong kind for ``cls.__init__``'s numeric and boolean parameters (e.g. ``--param``).

    A parameter wants a number when its default or annotation says int or float and nothing says str;
    ints must be whole, numbers finite, and booleans true/false.
    """
    import math
    import numbers

    from .errors import ConfigError

    signatures = {}
    for klass in reversed(cls.__mro__):
        if klass is not object and "__init__" in vars(klass):
            signatures.update(inspect.signature(klass.__init__).parameters)
    for key, value in params.items():
        parameter = signatures.get(key)
        if parameter is None or value is None:
            continue
        kinds = _expected_kinds(parameter)
        if not kinds or "str" in kinds:
            continue
        if kinds == {"bool"}:
            if not isinstance(value, bool):
                raise ConfigError(f"{method}: parameter {key} must be true or false, got {value!r}")
            continue
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            want = "an integer" if "float" not in kinds else "a number"
            raise ConfigError(f"{method}: parameter {key} must be {want}, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{method}: parameter {key} must be a finite number, got {value!r}")
        if "float" not in kinds and int(value) != value:
            raise ConfigError(f"{method}: parameter {key} must be a whole number, got {value!r}")
