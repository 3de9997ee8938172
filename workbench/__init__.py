"""Vision Workbench: run, see and trust seven vision papers.

Importing ``workbench`` is light: it loads no torch, gradio, jupyter or CuPy. Submodules load on first
attribute access (``workbench.swin_v2``, ``workbench.data`` ...).
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_SUBMODULES = {
    "bench", "checkpoints", "cli", "data", "inspect", "layers", "records", "train", "viz", "widgets", "studies",
    "models", "demos", "report", "swin_v2", "vit", "simmim", "moby", "cbn", "dnl", "icar", "sparse",
}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_SUBMODULES))
