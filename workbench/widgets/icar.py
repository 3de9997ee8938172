"""The iCAR "Explore" panel: a shapes image, an editable class list, zero-shot probabilities with and without
descriptions and the nearest captions — the notebook twin of the app tab (same workbench functions)."""
from __future__ import annotations

import html as _html

from .core import Explorer, explorer, shape_controls


def render_zero_shot(model, tokenizer, captions, *, shape="ring", color="red", size="large",
                     background="plain", seed=0, classes_text="", k=5):
    """(figure, html) for one rendered shapes image and a class list given as 'name: description' lines."""
    from .. import icar
    from ..data import shapes
    from ..viz import icar as vi

    img = shapes.render(shape, color, size, background, seed=int(seed), image_size=model.cfg.image_size)["image"]
    rep = icar.zero_shot_report(model, tokenizer, img, icar.rows_from_lines(classes_text), k=int(k),
                                captions=captions)
    fig = vi.probability_chart(rep["names"], rep["with_desc"], rep["names_only"],
                               title=f"zero-shot: {size} {color} {shape} on a {background} background")
    caps = "".join(f"<li>{_html.escape(c)} <small>({s:.3f})</small></li>"
                   for c, s in zip(rep["captions"], rep["scores"]))
    notes = "".join(f"<div><i>{_html.escape(n)}</i></div>" for n in rep["notices"])
    return fig, f"{notes}<b>nearest captions</b><ol>{caps}</ol>"


def icar_explorer(model=None, tokenizer=None, captions=None) -> Explorer:
    """Pick a shapes image (class, colour, size, background, seed), edit the class list, see the predictions."""
    import ipywidgets as W

    from .. import icar

    if model is None:
        model, tokenizer, _ = icar.load_demo()
    captions = icar.caption_pool() if captions is None else list(captions)
    lines = "\n".join(f"{n}: {d}" for n, d in icar.default_class_rows())
    controls = {
        **shape_controls(shape="ring", background="plain", max_seed=50),
        "k": W.IntSlider(value=5, min=1, max=10, description="captions"),
        "classes_text": W.Textarea(value=lines, description="classes", rows=10,
                                   layout=W.Layout(width="640px")),
    }

    def render(**kw):
        return render_zero_shot(model, tokenizer, captions, **kw)

    return explorer(controls, render, title="iCAR zero-shot: edit a class name or description", columns=3)
