"""Subset selection: keep the most informative real samples."""

from .base import REGISTRY, Selector, allocate, get_selector, register, resolve_size, select

__all__ = ["REGISTRY", "Selector", "allocate", "get_selector", "register", "resolve_size", "select"]
