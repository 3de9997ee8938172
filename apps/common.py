"""What every app tab shares: error handling, image inputs and a safe launch.

Tabs are thin: layout and event wiring only. Every number and figure comes from ``workbench``.
"""
from __future__ import annotations

import functools
import inspect
import os
import socket
import sys
from pathlib import Path

# importable both as `apps.common` and when a tab runs as `python apps/<module>.py`
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MAX_FILE_SIZE = "10mb"  # uploads above this are refused by the server
CONCURRENCY_LIMIT = 2  # simultaneous runs of one event (2 cores); the rest wait in the queue
QUEUE_SIZE = 64  # waiting requests beyond this are turned away with a message
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, IndexError)


def _to_gr_error(e: BaseException):
    import gradio as gr

    msg = str(e).strip("'\"") or type(e).__name__
    return gr.Error(msg, print_exception=False)


def guard(fn):
    """Wrap an event handler so bad input becomes a readable message (``gr.Error``), not a traceback.

    ``ValueError`` (including ``CheckpointError``), ``FileNotFoundError``, ``KeyError`` and ``IndexError``
    are shown to the user; other exceptions propagate (they are bugs). Generators (streaming handlers)
    stay generators; the signature is kept, so gradio still injects ``gr.SelectData`` and ``gr.Progress``.
    """
    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as e:
                raise _to_gr_error(e) from None

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            raise _to_gr_error(e) from None

    return wrapper


def read_image(value, size: int | None = None):
    """An image from a gradio ``Image(type="numpy")`` or ``File`` value, checked by
    ``workbench.data.images.prepare_image``; notices (e.g. "resized") are shown with ``gr.Info``."""
    import gradio as gr

    from workbench.data.images import prepare_image

    if value is None:
        raise ValueError("Please choose or upload an image first.")
    if isinstance(value, dict) and "path" in value:  # FileData
        value = value["path"]
    arr, notices = prepare_image(value, size=size)
    for n in notices:
        gr.Info(n)
    return arr


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def configure(demo):
    """Queue with a per-event concurrency limit and a bounded waiting line."""
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)


def launch_kwargs(host: str = "127.0.0.1", port: int | None = None) -> dict:
    return dict(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE,
                show_error=True, footer_links=["api", "settings"])


def single_app(build, title: str):
    """A gr.Blocks holding one tab's content (for ``python apps/<module>.py``)."""
    import gradio as gr

    with gr.Blocks(title=f"{title} · Vision Workbench") as demo:
        gr.Markdown(f"## {title}\n*Vision Workbench* — run `workbench app` for all papers.")
        build()
    return configure(demo)


def launch(build, title: str, host: str | None = None, port: int | None = None):
    """Run one tab as a stand-alone app on 127.0.0.1 (``--host``/``--port`` on the command line)."""
    import argparse

    p = argparse.ArgumentParser(description=title)
    p.add_argument("--host", default=host or "127.0.0.1")
    p.add_argument("--port", type=int, default=port or 7860)
    args, _ = p.parse_known_args()
    demo = single_app(build, title)
    demo.launch(**launch_kwargs(args.host, args.port))
