"""Study records and tables: where they live and how they are written.

Studies write JSON lines (one record per run) and a markdown table under ``studies/<paper>/`` at the
repository root; benchmarks write under ``benchmarks/results/``. Notebooks and apps read them back.
"""
from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path

PACKAGE_DIR = Path(__file__).resolve().parent


def repo_root() -> Path:
    """The source checkout (the folder holding ``pyproject.toml`` next to ``workbench/``), or the current
    directory for a non-editable install. ``WORKBENCH_ROOT`` overrides."""
    if "WORKBENCH_ROOT" in os.environ:
        return Path(os.environ["WORKBENCH_ROOT"])
    root = PACKAGE_DIR.parent
    return root if (root / "pyproject.toml").exists() else Path.cwd()


def studies_dir(paper: str) -> Path:
    return repo_root() / "studies" / paper


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
