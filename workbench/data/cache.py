"""Where generated data is cached: ``$WORKBENCH_CACHE`` or ``~/.cache/vision-workbench``."""
from __future__ import annotations

import os
from pathlib import Path


def cache_dir(sub: str = "") -> Path:
    root = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "vision-workbench"))
    path = root / sub if sub else root
    path.mkdir(parents=True, exist_ok=True)
    return path
