"""scikit-learn's estimator protocol for selectors and distillers: get_params, set_params, repr, array input.

Like ``sklearn.base.BaseEstimator``, parameters are the named ``__init__`` arguments, stored untouched
(``sklearn.base.clone`` checks this), and anything derived from them is resolved at ``fit``. Unlike it,
the names are collected over the whole class hierarchy, because our subclasses pass their base
class's arguments on through ``**kwargs``.
"""

from __future__ import annotations

import inspect

from .errors import ConfigError
from .params import init_parameter_names


def init_parameter_defaults(cls: type) -> dict:
    """Default of every named ``__init__`` parameter of ``cls`` and its bases (the subclass's default wins)."""
    defaults: dict = {}
    for klass in cls.__mro__:
        if klass is object:
            continue
        for p in inspect.signature(klass.__init__).parameters.values():
            if p.kind in (p.VAR_KEYWORD, p.VAR_POSITIONAL) or p.name == "self" or p.name in defaults:
                continue
            defaults[p.name] = p.default
    return defaults


class Estimator:
    """Base of selectors and distillers: ``get_params(deep)``, ``set_params(**params)`` and a readable repr."""

    def get_params(self, deep: bool = True) -> dict:
        """The constructor parameters and their values; ``deep`` adds ``name__key`` for nested estimators."""
        out = {}
        for name in init_parameter_names(self):
            value = getattr(self, name)
            if deep and hasattr(value, "get_params") and not isinstance(value, type):
                out.update({f"{name}__{k}": v for k, v in value.get_params(deep=True).items()})
            out[name] = value
        return out

    def set_params(self, **params) -> Estimator:
        """Set constructor parameters (``name__key`` reaches into a nested estimator); returns ``self``."""
        valid = init_parameter_names(self)
        nested: dict[str, dict] = {}
        for key in params:
            name, _, sub = key.partition("__")
            if name not in valid:
                raise ConfigError(f"{type(self).__name__}: unknown parameter {name!r}; valid parameters: "
                                  f"{', '.join(sorted(valid))}")
            if sub:
                if not hasattr(getattr(self, name), "set_params"):
                    raise ConfigError(f"{type(self).__name__}: parameter {name!r} has no parameters of its own "
                                      f"(got {key!r})")
                nested.setdefault(name, {})[sub] = params[key]
        for key, value in params.items():
            if "__" not in key:
                setattr(self, key, value)
        for name, sub_params in nested.items():
            getattr(self, name).set_params(**sub_params)
        return self

    def __repr__(self) -> str:
        defaults = init_parameter_defaults(type(self))
        changed = [f"{name}={value!r}" for name, value in self.get_params(deep=False).items()
                   if defaults.get(name, inspect.Parameter.empty) is inspect.Parameter.empty
                   or not _same(value, defaults[name])]
        return f"{type(self).__name__}({', '.join(changed)})"


def _same(value, default) -> bool:
    """Whether a parameter still holds its default (by identity, then by repr, as scikit-learn's repr does)."""
    return value is default or (type(value) is type(default) and repr(value) == repr(default))


def as_dataset(X, y=None, *, method: str = "fit"):
    """``X`` when it is a Dataset (``y`` must then be None); else ``Dataset.create(X, y, name="array")``.

    Arrays, lists and pandas DataFrames/Series (through ``numpy.asarray``) are accepted; labels are required.
    """
    from .data.dataset import Dataset

    if isinstance(X, Dataset):
        if y is not None:
            raise ConfigError(f"{method}(): a Dataset carries its own labels; pass y only with an array X")
        return X
    if y is None:
        raise ConfigError(f"{method}(X, y) needs labels y with an array X (or pass a datadistill Dataset)")
    return Dataset.create(_to_numpy(X), _to_numpy(y), name="array")


def _to_numpy(a):
    """pandas objects through their own ``to_numpy`` (pandas is not a dependency); anything else as given."""
    to_numpy = getattr(a, "to_numpy", None)
    return to_numpy() if callable(to_numpy) else a
