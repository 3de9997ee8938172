"""The workbench's gradio component classes: an image input that never fails inside gradio (see
:func:`workbench.apps.common.upload_image`) and choice controls that take a choice by its value or its text (see
:func:`workbench.apps.common.choice_radio`).

Their own module because gradio writes a typing stub (``upload.pyi``, committed) next to the module that defines a
component class.
"""
from __future__ import annotations

import gradio as gr

from workbench.apps.images import image_file
from workbench.demos.common import user_message


class BadUpload(str):
    """What :class:`UploadImage` passes on for a file that is not a readable image (a ``str`` holding the reason)."""


class UploadImage(gr.Image):
    """``gr.Image`` whose preprocessing turns a corrupt, truncated or non-image file into a :class:`BadUpload`
    instead of raising (which would show a traceback in the log and error badges on the page)."""

    is_template = True   # the frontend is gradio's image component

    def preprocess(self, payload):
        try:
            return super().preprocess(payload)
        except Exception as e:  # corrupt, truncated or not an image at all
            return BadUpload(user_message(e))

    def postprocess(self, value):
        """Image outputs (a shapes sample shown in the upload box) reach gradio as a file written by
        write-then-rename (:func:`workbench.apps.images.image_file`): gradio writes numpy and PIL outputs in place
        over a hash-named cache file, which breaks an answer being sent when another session produces the same
        image at that moment."""
        import numpy as np
        from PIL import Image

        if isinstance(value, Image.Image):
            value = np.asarray(value.convert("RGBA" if "A" in value.getbands() else "RGB"))
        if isinstance(value, np.ndarray) and value.dtype == np.uint8:
            value = image_file(value)
        return super().postprocess(value)


def choice_by_text(choices, payload):
    """The choice a client means: ``gradio_client``'s ``view_api`` shows every choice quoted (``Literal['4', '8',
    '16', '32']`` for the SimMIM mask patch, whose values are integers), so a client sends ``'16'`` as often as
    ``16``, while gradio accepts only the value itself. A payload that is not a choice's value but reads the same as
    exactly one of them is taken as that value (``'16'`` -> 16; 2 -> ``'2'`` for the CBN statistics groups);
    anything else is passed on unchanged, for gradio to refuse."""
    values = [v for _, v in choices]
    if isinstance(payload, (str, int, float)) and not isinstance(payload, bool) and payload not in values:
        same = [v for v in values if str(v) == str(payload).strip()]
        if len(same) == 1:
            return same[0]
    return payload


class ChoiceRadio(gr.Radio):
    """``gr.Radio`` whose API takes a choice by its value or by its text (:func:`choice_by_text`)."""

    is_template = True   # the frontend is gradio's radio component

    def preprocess(self, payload):
        return super().preprocess(choice_by_text(self.choices, payload))


class ChoiceDropdown(gr.Dropdown):
    """``gr.Dropdown`` (one choice) whose API takes a choice by its value or by its text (:func:`choice_by_text`)."""

    is_template = True   # the frontend is gradio's dropdown component

    def preprocess(self, payload):
        return super().preprocess(choice_by_text(self.choices, payload))
