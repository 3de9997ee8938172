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

    def postprocess(self, value):
        """Image outputs (a shapes sample shown in the upload box) reach gradio as a file written by
        write-then-rename (:func:`workbench.apps.images.image_file`): gradio writes numpy and PIL outputs in place
        over a hash-named cache file, which breaks an answer being sent when another session produces the same
        image at that moment."""
        import numpy as np
        from PIL import Image

        from workbench.apps.images import image_file

        if isinstance(value, Image.Image):
            value = np.asarray(value.convert("RGBA" if "A" in value.getbands() else "RGB"))
        if isinstance(value, np.ndarray) and value.dtype == np.uint8:
            value = image_file(value)
        return super().postprocess(value)
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component