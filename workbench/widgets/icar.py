"""The notebook twin of the "iCAR" app tab: a shapes image, an editable class list, zero-shot probabilities with and
without descriptions and the nearest captions (``workbench.demos.icar.panel``)."""
from __future__ import annotations

import html as _html

from ..demos.common import sample_image
from .core import Explorer, explorer, shape_controls


def render_zero_shot(*, shape="ring", color="red", size="large", background="plain", seed=0, classes_text="", k=5):
    """(figure, html) for one rendered shapes image and a class list given as 'name: description' lines."""
    from ..demos import icar as demo

    img = sample_image(shape, seed, color, size, background, image_size=128)
    p = demo.panel(upload=img, table=demo.rows_from_lines(classes_text), k=k)
    rep = p.values
    caps = "".join(f"<li>{_html.escape(c)} <small>({s:.3f})</small></li>" for c, s in zip(rep["captions"], rep["scores"]))
    notes = "".join(f"<div><i>{_html.escape(n)}</i></div>" for n in rep["notices"])
    return p.figures["probabilities"], f"{notes}<b>nearest captions</b><ol>{caps}</ol>"


def icar_explorer() -> Explorer:
    """Pick a shapes image (class, colour, size, background, seed), edit the class list, see the predictions."""
    import ipywidgets as W

    from ..demos import icar as demo

    lines = "\n".join(f"{n}: {d}" for n, d in demo.default_class_rows())
    controls = {
        **shape_controls(shape="ring", background="plain", max_seed=50),
        "k": W.IntSlider(value=5, min=1, max=10, description="captions"),
        "classes_text": W.Textarea(value=lines, description="classes", rows=10, layout=W.Layout(width="640px")),
    }
    return explorer(controls, render_zero_shot, title="iCAR zero-shot: edit a class name or description", columns=3)
