"""Data layer: sources -> validated Dataset -> (selected or synthetic) DistilledSet."""

from .artifact import DistilledSet
from .dataset import Dataset
from .preprocess import Preprocessor
from .sources import BUILTINS, load

__all__ = ["BUILTINS", "Dataset", "DistilledSet", "Preprocessor", "load"]
