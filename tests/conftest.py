"""Shared test setup: offline everything, deterministic threads, a private data cache."""
from __future__ import annotations

import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("PLOTLY_RENDERER", "plotly_mimetype")
os.environ.setdefault("WORKBENCH_CACHE", tempfile.mkdtemp(prefix="workbench-test-cache-"))

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    try:
        import torch

        # under pytest-xdist each worker takes one core; alone, the run may use two
        workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
        torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // workers)))
    except ImportError:
        pass


import pytest  # noqa: E402

# Files that take most of a `make test` run, with their seconds measured on 2 cores (fresh clone, 2026-11-30). The
# Makefile runs pytest-xdist with --dist loadfile --no-loadscope-reorder, so files are handed out in the order below:
# these first (longest first), then the rest by test count, as xdist's own reordering would. xdist alone sorts by
# test count only, which put test_load.py (2 tests, ~150 s) last, with the other worker idle for its whole length.
HEAVY_FILES = {
    "tests/test_scale.py": 200,
    "tests/test_load.py": 150,
    "tests/test_install.py": 60,
    "tests/test_cuda_compile.py": 45,
}


def pytest_collection_modifyitems(session, config, items):
    by_file: dict[str, list] = {}
    for item in items:
        by_file.setdefault(item.nodeid.split("::", 1)[0], []).append(item)
    order = sorted(by_file, key=lambda f: (-HEAVY_FILES.get(f, 0), -len(by_file[f])))
    items[:] = [item for f in order for item in by_file[f]]


@pytest.fixture(scope="session")
def hub_url():
    """One app hub for the whole session, on a free loopback port."""
    from workbench.apps.common import free_port, launch_kwargs
    from workbench.apps.hub import build_hub

    demo = build_hub()
    port = free_port()
    demo.launch(prevent_thread_lock=True, quiet=True, **launch_kwargs("127.0.0.1", port))
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        demo.close()
