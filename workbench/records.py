"""Study records and benchmark tables: where they live and how they are written.

The committed records ship inside the package, so notebooks, apps and ``workbench report`` read them the same way
from a source checkout and from an installed wheel: studies under ``workbench/assets/studies/<paper>/``
(:data:`STUDIES_DIR`; the checkout's ``studies/`` is a link to it) and benchmark tables under
``workbench/assets/benchmarks/`` (:data:`BENCHMARKS_DIR`; ``benchmarks/results/`` links to it). Runs write under
``runs/`` in the current folder; only ``--commit`` writes the committed records, and only inside a source
checkout (:func:`repo_root`).
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent
ASSETS_DIR = PACKAGE_DIR / "assets"
STUDIES_DIR = ASSETS_DIR / "studies"
BENCHMARKS_DIR = ASSETS_DIR / "benchmarks"
PROJECT_NAME = "vision-workbench"


class NotACheckout(RuntimeError):
    """A command that writes the committed files (``--commit``) or opens the notebooks ran outside the source
    checkout."""


def checkout_root() -> Path | None:
    """The source checkout this package was imported from (the folder holding this project's ``pyproject.toml`` next
    to ``workbench/``), ``$WORKBENCH_ROOT`` if set, or ``None`` for an installed (non-editable) package."""
    if os.environ.get("WORKBENCH_ROOT"):
        return Path(os.environ["WORKBENCH_ROOT"])
    root = PACKAGE_DIR.parent
    try:
        text = (root / "pyproject.toml").read_text()
    except OSError:
        return None
    return root if f'name = "{PROJECT_NAME}"' in text else None


def repo_root() -> Path:
    """The source checkout (:func:`checkout_root`); raises :class:`NotACheckout` with a clear message for an
    installed package. Only what edits the repository needs it; reading committed records does not."""
    root = checkout_root()
    if root is None:
        raise NotACheckout(f"this needs the source checkout of {PROJECT_NAME} (the package in use is installed at "
                           f"{PACKAGE_DIR}); run it inside the repository or set WORKBENCH_ROOT to it")
    return root


def studies_root() -> Path:
    """The committed study folders shipped with the package (:data:`STUDIES_DIR`), or the folder named by the
    ``WORKBENCH_STUDIES`` environment variable (to read studies run elsewhere, e.g. ``runs/``)."""
    env = os.environ.get("WORKBENCH_STUDIES")
    return Path(env) if env else STUDIES_DIR


def studies_dir(paper: str) -> Path:
    """The committed records of ``paper``'s study, as shipped with the package (read-only use)."""
    return studies_root() / paper


def markdown_table(header: Sequence[str], rows: Sequence[Sequence], floatfmt: str = ".3f") -> str:
    """A GitHub-flavoured markdown table; floats formatted with ``floatfmt``."""
    def fmt(v):
        return format(v, floatfmt) if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def write_jsonl(path, records: Sequence[dict], append: bool = False) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a" if append else "w") as f:
        for r in records:
            f.write(json.dumps(r, default=float) + "\n")
    return path


def read_jsonl(path) -> list[dict]:
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no records at {path}; run the study that produces them")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_markdown(path, title: str, sections: Sequence[tuple[str, str]] | str, notes: str = "") -> Path:
    """Write ``# title`` followed by ``(heading, body)`` sections (or one body string) and notes."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = [f"# {title}", ""]
    if isinstance(sections, str):
        parts += [sections, ""]
    else:
        for heading, body in sections:
            parts += [f"## {heading}", "", body, ""]
    if notes:
        parts += [notes.strip(), ""]
    path.write_text("\n".join(parts))
    return path
