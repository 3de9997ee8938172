"""What every app tab shares: error handling, image inputs and a safe launch.

Tabs are thin: layout and event wiring only. Every number and figure comes from ``workbench``.
"""
from __future__ import annotations

import functools
import inspect
import logging
import os
import socket

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
    from workbench.apps.upload import UploadImage  # local: keeps gradio out of apps.common

    kwargs.setdefault("type", "filepath")
    kwargs.setdefault("sources", ["upload", "clipboard"])
    return UploadImage(**kwargs)


def choice_radio(choices, **kwargs):
    """``gr.Radio`` whose API takes a choice by its value or its text: ``view_api`` lists integer choices quoted
    (``'16'``), and both ``16`` and ``'16'`` select the choice 16."""
    from workbench.apps.upload import ChoiceRadio  # local: keeps gradio out of apps.common

    return ChoiceRadio(choices, **kwargs)


def choice_dropdown(choices, **kwargs):
    """``gr.Dropdown`` (one choice) whose API takes a choice by its value or its text (see :func:`choice_radio`)."""
    from workbench.apps.upload import ChoiceDropdown  # local: keeps gradio out of apps.common

    return ChoiceDropdown(choices, **kwargs)


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


# Tab labels with 6 px of side padding instead of Gradio's 16: the hub's eight tabs then fit a 1280 px window, so
# no paper's tab hides in Gradio's "More tabs" menu on a laptop screen (tests/browser/test_hub_browser.py).
CSS = ".tab-container > button[role='tab'] { padding-left: 6px; padding-right: 6px; }"


def launch_kwargs(host: str = "127.0.0.1", port: int | None = None) -> dict:
    return dict(server_name=host, server_port=port, share=False, max_file_size=MAX_FILE_SIZE,
                show_error=True, footer_links=["api", "settings"], theme=theme(), css=CSS)


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
