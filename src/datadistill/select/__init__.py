"""Subset selection: keep the most informative real samples.

Importing this package registers every method in :data:`REGISTRY` (name -> Selector class with
``summary`` and ``cost``).
"""

from . import agglomerative, dbscan, facility_location, herding, kcenter, kmeans, kmedoids, scored, stream  # noqa: F401
from .base import REGISTRY, Selector, allocate, get_selector, register, resolve_size, select
from .features import FeatureSelector, sample_features

__all__ = ["REGISTRY", "FeatureSelector", "Selector", "allocate", "get_selector", "register", "resolve_size",
           "sample_features", "select"]
