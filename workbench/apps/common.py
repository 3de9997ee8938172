"""What every app tab shares: error handling, image inputs and a safe launch.

Tabs are thin: layout and event wiring only. Every number and figure comes from ``workbench``.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import socket
import tempfile
import threading
import time
from pathlib import Path

from workbench.demos.common import user_message

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MAX_FILE_SIZE = "10mb"  # uploads above this are refused by the server
CONCURRENCY_LIMIT = 2  # simultaneous runs of one event (2 cores); the rest wait in the queue
QUEUE_SIZE = 64  # waiting requests beyond this are turned away with a message
USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError, KeyError, IndexError)

log = logging.getLogger("workbench.apps")


def guard(fn, n_outputs: int | None = None):
    """Wrap an event handler so bad input becomes a short message, never a traceback.

    ``ValueError`` (including ``CheckpointError``), ``FileNotFoundError``, ``KeyError`` and ``IndexError`` are the
    user's; other exceptions propagate (they are bugs). The server log gets one line per user error.

    * With ``n_outputs`` the handler's *last* output is the tab's status line: a user error clears every other
      output (no stale result, no error badges) and puts the message there.
    * Without it the message is raised as ``gr.Error`` (a toast), for events whose outputs keep their value.

    Generators (streaming handlers) stay generators; the signature is kept, so gradio still injects
    ``gr.SelectData`` and ``gr.Progress``.
    """
    def fail(e):
        import gradio as gr

        msg = user_message(e)
        log.warning("%s: %s", fn.__name__, msg)
        if n_outputs is None:
            raise gr.Error(msg, print_exception=False) from None
        out = [None] * (n_outputs - 1) + [f"⚠️ {msg}"]
        return out[0] if n_outputs == 1 else tuple(out)

    if inspect.isgeneratorfunction(fn):
        @functools.wraps(fn)
        def gen_wrapper(*args, **kwargs):
            try:
                yield from fn(*args, **kwargs)
            except USER_ERRORS as e:
                yield fail(e)

        return gen_wrapper

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except USER_ERRORS as e:
            return fail(e)

    return wrapper


def upload_image(**kwargs):
    """An image input that never fails inside gradio: a file that PIL cannot open reaches the handler as a
    ``BadUpload`` (then ``demos.common.read_image`` says "could not read the image: ...") instead of a traceback and
    error badges. Values are file paths (decoded by the workbench, with its size checks)."""
    from workbench.apps.upload import UploadImage

    kwargs.setdefault("type", "filepath")
    kwargs.setdefault("sources", ["upload", "clipboard"])
    return UploadImage(**kwargs)


IMAGE_FILES_KEPT = 512  # image_file() keeps this many newest files; older ones go once IMAGE_MIN_AGE_S old
IMAGE_MIN_AGE_S = 60.0
_image_lock = threading.Lock()


def image_dir() -> Path:
    """This process's folder of images handed to gradio (under the system temp folder)."""
    d = Path(tempfile.gettempdir()) / f"workbench-images-{os.getpid()}"
    d.mkdir(mode=0o700, exist_ok=True)
    return d


def _mtime(p: Path) -> int:
    try:
        return p.stat().st_mtime_ns
    except OSError:  # removed meanwhile by another process's pruning
        return 0


def image_file(arr) -> str:
    """An image output as a PNG file written atomically, named by its content.

    gradio 6 writes a numpy image output straight over a cache file named by the image's hash; two sessions that
    produce the same image at once (the same scene and query) then truncate the file while the other one's answer
    is being sent ("peer closed connection without sending complete message body" in the load test). A path
    output is copied into gradio's cache by a write-then-rename, which is safe, so the tab returns this path."""
    import hashlib

    import numpy as np
    from PIL import Image

    a = np.ascontiguousarray(np.asarray(arr, dtype=np.uint8))
    key = hashlib.sha256(str(a.shape).encode() + a.tobytes()).hexdigest()[:32]
    d = image_dir()
    path = d / f"{key}.png"
    if path.exists():
        try:
            os.utime(path)          # handed out again: newest, so pruning keeps it
            return str(path)
        except OSError:             # pruned meanwhile: write it again
            pass
    fd, tmp = tempfile.mkstemp(dir=d, prefix=".", suffix=".png")
    try:
        with os.fdopen(fd, "wb") as f:
            Image.fromarray(a).save(f, format="PNG")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    with _image_lock:
        files = sorted(d.glob("*.png"), key=_mtime)
        cutoff = time.time_ns() - int(IMAGE_MIN_AGE_S * 1e9)
        for old in files[:max(0, len(files) - IMAGE_FILES_KEPT)]:
            if old != path and _mtime(old) < cutoff:
                old.unlink(missing_ok=True)
    return str(path)


def on_load(fn, inputs, outputs, api_name=False):
    """Run ``fn`` when a page opens (the tab shows something meaningful before any click)."""
    import gradio as gr

    demo = gr.context.Context.root_block
    if demo is not None:
        demo.load(fn, inputs, outputs, api_name=api_name)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def configure(demo):
    """Queue with a per-event concurrency limit and a bounded waiting line."""
    return demo.queue(default_concurrency_limit=CONCURRENCY_LIMIT, max_size=QUEUE_SIZE)


# Gradio's bundled web fonts cover only part of the glyphs in this environment: bold text fell back to
# DejaVu Sans glyph by glyph, so "MoBY", "iCAR" and "BN" mixed two fonts. The theme uses the system font
# stack only, so every weight comes from one installed family (and the page loads no font files).


def theme():
    import gradio as gr

    return gr.themes.Default(font=["ui-sans-serif", "system-ui", "sans-serif"],
                             font_mono=["ui-monospace", "Consolas", "monospace"])


def launch_kwargs(host: str = "127.0.0.1", port: int | None = None) -> dict:
    return dict(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE,
                show_error=True, footer_links=["api", "settings"], theme=theme())


def single_app(build, title: str):
    """A gr.Blocks holding one tab's content (``python -m workbench.apps.<module>``)."""
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
