"""An image input that never fails inside gradio (see :func:`workbench.apps.common.upload_image`).

Its own module because gradio writes a typing stub (``upload.pyi``, committed) next to the module that defines a
component class.
"""
from __future__ import annotations

import gradio as gr


class BadUpload(str):
    """What :class:`UploadImage` passes on for a file that is not a readable image (a ``str`` holding the reason)."""

from gradio.events import Dependency

class UploadImage(gr.Image):
    """``gr.Image`` whose preprocessing turns a corrupt, truncated or non-image file into a :class:`BadUpload`
    instead of raising (which would show a traceback in the log and error badges on the page)."""

    is_template = True   # the frontend is gradio's image component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as e:  # corrupt, truncated or not an image at all
            from workbench.demos.common import user_message

            return BadUpload(user_message(e))
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component