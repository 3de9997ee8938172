"""The timing protocol every benchmark under ``benchmarks/`` follows.

- methods are timed side by side in one process and *interleaved* (round-robin), so drifting machine load
  hits all of them alike; ratios come from the same run;
- an optional ``setup`` before each repetition (e.g. :func:`flush_cache`, so no method profits from data
  left in the caches by the previous one) and ``sync`` after each call (e.g. ``torch.cuda.synchronize``);
- medians (and p95) are reported, with the machine it ran on (:func:`machine_info`);
- results go to ``runs/benchmarks/<name>.json`` and ``.md`` in the current folder (``--out`` elsewhere);
  ``--commit`` writes the committed tables of the source checkout (``workbench/assets/benchmarks/``, linked as
  ``benchmarks/results/``), which ship with the package. Benchmarks never decide a test's outcome.

A benchmark is a module ``workbench/benchmarks/<name>.py`` with ``main(argv)``, a docstring whose first line
says what it measures, and ``DURATION`` (the expected wall time of a default run on 2 cores).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from .records import BENCHMARKS_DIR, PACKAGE_DIR, NotACheckout, markdown_table, repo_root

_FLUSH = None


def flush_cache(mb: int = 64) -> None:
    """Evict CPU caches by reading a buffer larger than the last-level cache. Reads only: a writing flush leaves the
    caches full of dirty lines, so the next call also pays for writing the flush's data back to memory (measured
    2026-11-30, 4096^2 balanced SpMV after a 64 MB flush: 0.366 ms after ``buf += 1``, 0.323 ms after ``buf.sum()``;
    a plain 6.3 MB sum 0.214 against 0.187 ms) - a cost of the benchmark, not of the method timed. In a model, what
    runs before a layer mostly reads (the previous layer's weights)."""
    global _FLUSH
    n = mb * 1024 * 1024 // 8
    if _FLUSH is None or _FLUSH.size != n:
        _FLUSH = np.ones(n, dtype=np.float64)
    float(_FLUSH.sum())


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info() -> dict:
    """CPU, cores, load, library versions, torch threads and the GPU (if any)."""
    import torch

    info = {
        "cpu": cpu_name(),
        "cores": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0] if hasattr(os, "getloadavg") else None,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "torch_threads": torch.get_num_threads(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    try:
        import scipy

        info["scipy"] = scipy.__version__
    except ImportError:
        pass
    return info


def interleaved(fns: Mapping[str, Callable[[], object]], repeats: int = 20, warmup: int = 2,
                setup: Callable[[], None] | None = None, sync: Callable[[], None] | None = None,
                max_seconds: float | None = None) -> dict[str, list[float]]:
    """Time each callable ``repeats`` times, round-robin, after ``warmup`` untimed rounds.

    Returns ``{name: [seconds, ...]}``. ``max_seconds`` stops early (at least 3 rounds) on slow machines.
    """
    if repeats < 1:
        raise ValueError("repeats must be >= 1")
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
            if sync:
                sync()
    out: dict[str, list[float]] = {k: [] for k in names}
    start = time.perf_counter()
    for r in range(repeats):
        order = names if r % 2 == 0 else names[::-1]  # alternate order: no method always runs first
        for k in order:
            if setup:
                setup()
            if sync:
                sync()
            t0 = time.perf_counter()
            fns[k]()
            if sync:
                sync()
            out[k].append(time.perf_counter() - t0)
        if max_seconds is not None and r >= 2 and time.perf_counter() - start > max_seconds:
            break
    return out


def resolve_devices(choice: str = "all") -> list[str]:
    """The devices a benchmark runs on: ``"cpu"``, ``"cuda"``, ``"all"`` (the CPU, plus CUDA when present)
    or ``"auto"`` (CUDA when present, else the CPU). Asking for CUDA without a GPU is a clear error."""
    import torch

    has_cuda = torch.cuda.is_available()
    table = {"cpu": ["cpu"], "cuda": ["cuda"], "all": ["cpu"] + (["cuda"] if has_cuda else []),
             "auto": ["cuda" if has_cuda else "cpu"]}
    if choice not in table:
        raise SystemExit(f"--device must be one of {sorted(table)}, got {choice!r}")
    if choice == "cuda" and not has_cuda:
        raise SystemExit("--device cuda needs a CUDA GPU")
    return table[choice]


def sync_for(device) -> Callable[[], None] | None:
    """``torch.cuda.synchronize`` for a CUDA device (kernels are asynchronous), ``None`` for the CPU."""
    import torch

    return torch.cuda.synchronize if str(device).startswith("cuda") else None


def summarize(samples: Sequence[float]) -> dict[str, float]:
    s = sorted(samples)
    if not s:
        raise ValueError("no samples")
    return {"median": statistics.median(s), "p95": s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))],
            "min": s[0], "n": len(s)}


def committed_results_dir() -> Path:
    """The committed tables, as shipped with the package (``workbench/assets/benchmarks``; ``benchmarks/results`` in
    the checkout)."""
    return BENCHMARKS_DIR


def results_dir() -> Path:
    """Where a benchmark writes by default: ``runs/benchmarks`` in the current folder (never committed)."""
    path = Path(os.environ.get("WORKBENCH_RUNS", "runs")) / "benchmarks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def add_output_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """``--out`` and ``--commit``, shared by every benchmark."""
    p.add_argument("--out", default=None,
                   help="Folder for <name>.json and <name>.md (default: runs/benchmarks in the current folder).")
    p.add_argument("--commit", action="store_true",
                   help="Overwrite the committed tables of the checkout (benchmarks/results/) instead.")
    return p


def output_dir(args: argparse.Namespace) -> Path:
    if getattr(args, "commit", False) and getattr(args, "out", None):
        raise SystemExit("give either --out or --commit, not both")
    if getattr(args, "commit", False):
        try:
            root = repo_root()
        except NotACheckout as e:
            raise SystemExit(f"--commit writes the committed results: {e}") from None
        return root / BENCHMARKS_DIR.relative_to(PACKAGE_DIR.parent)
    return Path(args.out) if getattr(args, "out", None) else results_dir()


def write_results(name: str, rows: Sequence[dict], *, title: str, columns: Sequence[str] | None = None,
                  notes: str = "", out_dir: str | os.PathLike | None = None, info: dict | None = None,
                  floatfmt: str = ".4g") -> tuple[Path, Path]:
    """Write ``<name>.json`` (rows + machine info) and ``<name>.md`` (a table of ``columns``)."""
    out = Path(out_dir) if out_dir else results_dir()
    out.mkdir(parents=True, exist_ok=True)
    info = info or machine_info()
    jpath, mpath = out / f"{name}.json", out / f"{name}.md"
    jpath.write_text(json.dumps({"name": name, "title": title, "machine": info, "rows": list(rows),
                                 "notes": notes}, indent=1, default=float))
    columns = list(columns) if columns else (list(rows[0]) if rows else [])
    table = markdown_table(columns, [[r.get(c, "") for c in columns] for r in rows], floatfmt=floatfmt)
    machine = ", ".join(f"{k}: {v}" for k, v in info.items() if v is not None)
    mpath.write_text(f"# {title}\n\n{table}\n\nMachine: {machine}\n\n{notes.strip()}\n")
    return jpath, mpath


def load_results(name: str, out_dir: str | os.PathLike | None = None) -> dict:
    path = (Path(out_dir) if out_dir else committed_results_dir()) / f"{name}.json"
    if not path.exists():
        raise FileNotFoundError(f"no benchmark results at {path}; run `workbench bench {name}`")
    return json.loads(path.read_text())
