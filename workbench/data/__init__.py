"""Data for the workbench: procedural shapes, bundled natural images, digits, user folders and CIFAR,
and torch-only transforms. Submodules load lazily."""
from __future__ import annotations

import importlib

_SUBMODULES = {"shapes", "natural", "images", "folders", "cifar", "transforms", "cache"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'workbench.data' has no attribute {name!r}")
