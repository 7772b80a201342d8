"""Data layer: sources -> validated Dataset -> (selected or synthetic) DistilledSet."""

from .artifact import DistilledSet
from .dataset import Dataset
from .outofcore import OutOfCoreSource, open_out_of_core, select_out_of_core
from .preprocess import Preprocessor
from .sources import BUILTINS, load

__all__ = ["BUILTINS", "Dataset", "DistilledSet", "OutOfCoreSource", "Preprocessor", "load", "open_out_of_core",
           "select_out_of_core"]
