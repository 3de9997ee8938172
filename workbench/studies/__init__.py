"""The experiments behind ``workbench train <job>``: one module per paper, each exposing
``JOBS = {"<job-name>": (main(argv), "help text")}``. :func:`discover` collects them."""
from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable


def discover() -> tuple[dict[str, tuple[Callable, str, str]], dict[str, str]]:
    """Return ``({job: (main, help, module)}, {module: import error})`` over every study module."""
    jobs, errors = {}, {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        try:
            mod = importlib.import_module(f"{__name__}.{info.name}")
        except Exception as e:  # one broken study must not hide the others
            errors[info.name] = f"{type(e).__name__}: {e}"
            continue
        for name, (fn, help_text) in getattr(mod, "JOBS", {}).items():
            jobs[name] = (fn, help_text, info.name)
    return jobs, errors
