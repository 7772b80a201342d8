"""Synthetic dataset distillation: learn a few samples per class that stand in for the whole set."""

from .base import REGISTRY, Context, Distiller, distill, get_distiller, register

__all__ = ["REGISTRY", "Context", "Distiller", "distill", "get_distiller", "register"]
