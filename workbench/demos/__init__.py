"""The demo layer: one module per paper, used alike by the app tabs, the notebook explorers and the tests.

Each module loads its paper's committed demo model (once per process, thread-safe), offers the demo inputs
(shapes samples, bundled photos, uploads) and *panel functions* that turn control values into plain data and
plotly figures (drawn by :mod:`workbench.viz`). Controls are validated here, with short messages
(``ValueError``); apps and widgets only lay the controls out and call these functions. The direction of
dependence: data -> backbones -> methods -> demos -> viz -> widgets / apps.
"""
from __future__ import annotations

import importlib

_SUBMODULES = {"common", "swin_v2", "simmim", "moby", "cbn", "dnl", "icar", "sparse"}


def __getattr__(name: str):
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module 'workbench.demos' has no attribute {name!r}")
