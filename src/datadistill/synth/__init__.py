"""Synthetic dataset distillation: learn a few samples per class that stand in for the whole set."""

from . import performance, trajectory  # noqa: F401 - registers mtt, bptt, krr
from .augment import DSA
from .base import REGISTRY, Context, Distiller, distill, get_distiller, register
from .distribution import DistributionMatching, MultiLayerDistributionMatching
from .figures import image_grid
from .gradient import DifferentiableSiameseAugmentation, GradientMatching
from .protocol import evaluate_protocol, random_real_subset

__all__ = ["DSA", "REGISTRY", "Context", "DifferentiableSiameseAugmentation", "Distiller", "DistributionMatching",
           "GradientMatching", "MultiLayerDistributionMatching", "distill", "evaluate_protocol", "get_distiller",
           "image_grid", "random_real_subset", "register"]
from . import (
           generative,  # noqa: F401,E402 - registers ae-kmeans, ae-dm
           rded,  # noqa: F401,E402 - registers rded
)
