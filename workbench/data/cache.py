"""Where generated data is cached: ``$WORKBENCH_CACHE`` or ``~/.cache/vision-workbench`` — a user folder, never the
source checkout nor the installed package, so an installed wheel runs from any directory."""
from __future__ import annotations

import os
from pathlib import Path


def cache_root() -> Path:
    """``$WORKBENCH_CACHE``, else ``~/.cache/vision-workbench`` (not created)."""
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "vision-workbench")


def cache_dir(sub: str = "") -> Path:
    """``cache_root() / sub``, created if missing."""
    root = cache_root()
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path
