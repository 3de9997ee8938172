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
