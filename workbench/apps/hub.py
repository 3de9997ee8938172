"""The app hub: one ``gr.Blocks`` with a welcome tab and one tab per entry of ``apps/registry.py``.

Adding a paper never edits this file: its module ``apps/<module>.py`` exposes ``build()`` and the
registry names it. A registered module that does not exist yet shows what is coming; a module that fails
to import, or whose ``build()`` fails (e.g. a demo checkpoint is missing), shows the error in its tab instead of
taking the hub down.
"""
from __future__ import annotations

import importlib
import traceback

from workbench import report
from workbench.apps.common import configure, guard, launch_kwargs, log, user_message
from workbench.apps.registry import TABS
from workbench.data import shapes
from workbench.demos.common import shape_sample_panel

INTRO = """# Vision Workbench
Run, see and trust seven vision papers: **Swin Transformer V2**, **SimMIM**, **MoBY**,
**Cross-Iteration BN**, **Disentangled Non-Local**, **iCAR** and **Balanced Sparsity**.
Each tab is a thin shell over the `workbench` package; the notebooks in `notebooks/` show the same figures
with the equations and our measured numbers."""


def load_tab_module(module: str):
    """Import ``apps.<module>``: returns ``(module, None)``, ``(None, "coming")`` or ``(None, error text)``."""
    try:
        return importlib.import_module(f"workbench.apps.{module}"), None
    except ModuleNotFoundError as e:
        if e.name == f"workbench.apps.{module}":
            return None, "coming"
        return None, traceback.format_exc(limit=3)
    except Exception:
        return None, traceback.format_exc(limit=3)


def build_tab(mod, module: str) -> str | None:
    """Build one tab's content; a tab whose build fails (e.g. a demo checkpoint that is missing or no longer fits)
    is hidden and its error returned, so the other tabs still work. The server log gets the traceback."""
    import gradio as gr

    with gr.Column() as body:
        try:
            mod.build()
        except Exception as e:
            log.exception("the %s tab failed to build", module)
            body.visible = False
            return f"{type(e).__name__}: {user_message(e)}"
    return None


def _welcome():
    import gradio as gr

    gr.Markdown("### The shapes dataset\nEvery study uses procedurally generated shapes (or photos and digits "
                "that installed packages ship). Pick the attributes of a sample:")
    with gr.Row():
        shape = gr.Dropdown(list(shapes.CLASSES), value="star", label="shape", elem_id="hub-shape")
        color = gr.Dropdown(list(shapes.COLORS), value="red", label="colour")
        size = gr.Dropdown(list(shapes.SIZES), value="large", label="size")
        background = gr.Dropdown(list(shapes.BACKGROUNDS), value="striped", label="background")
        seed = gr.Slider(0, 99, value=0, step=1, label="seed")
    caption = gr.Markdown(elem_id="hub-caption")
    plot = gr.Plot(elem_id="hub-shapes-plot")

    def show(shape, color, size, background, seed):
        p = shape_sample_panel(shape, color, size, background, seed, 64)
        return p.figures["sample"], f"*{p.text}*"

    inputs = [shape, color, size, background, seed]
    for i, c in enumerate(inputs):
        c.change(guard(show), inputs, [plot, caption], api_name="shapes_sample" if i == 0 else False)
    return (show, inputs, [plot, caption])


def study_findings(paper: str) -> str | None:
    """The paper's committed study verdicts as a markdown table (the notebooks show the same table), or None when
    the paper has no ``claims.json``."""
    try:
        return report.claims_markdown(paper)
    except (FileNotFoundError, ValueError):
        return None


def build_hub(only: str | None = None):
    import gradio as gr

    tabs = [t for t in TABS if only is None or t.module == only]
    if only is not None and not tabs:
        raise ValueError(f"unknown tab {only!r}; choose from {[t.module for t in TABS]}")
    with gr.Blocks(title="Vision Workbench") as demo:
        gr.Markdown(INTRO)
        with gr.Tabs(overflow_behavior="wrap"):  # every tab stays in sight on a narrow window (no "More tabs" menu)
            if only is None:
                with gr.Tab("Welcome", id="welcome", elem_id="tab-welcome"):
                    show, inputs, outputs = _welcome()
                demo.load(guard(show), inputs, outputs, api_name=False)
            for t in tabs:
                with gr.Tab(t.title, id=t.module, elem_id=f"tab-{t.module}"):
                    gr.Markdown(f"*{t.blurb}*")
                    mod, problem = load_tab_module(t.module)
                    if mod is not None:
                        problem = build_tab(mod, t.module)
                    findings = study_findings(t.module) if problem is None else None
                    if findings:
                        with gr.Accordion("What the study found (the verdicts of claims.json; every claim with its "
                                          "plot: docs/report.html or `workbench report`)", open=False,
                                          elem_id=f"hub-{t.module}-claims"):
                            gr.Markdown(findings)
                    if problem == "coming":
                        gr.Markdown(f"**Coming soon.** The `{t.module}` app has not landed yet; "
                                    "nothing in this tab runs.", elem_id=f"hub-{t.module}-coming")
                    elif problem is not None:
                        gr.Markdown(f"**This tab failed to load.**\n```\n{problem}\n```",
                                    elem_id=f"hub-{t.module}-load-error")
    return configure(demo)


def main(host: str = "127.0.0.1", port: int = 7860, tab: str | None = None):
    demo = build_hub(only=tab)
    print(f"Vision Workbench hub on http://{host}:{port}")
    demo.launch(**launch_kwargs(host, port))


if __name__ == "__main__":
    import argparse

    p = argparse.ArgumentParser(description="Vision Workbench app hub")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--tab", default=None)
    a = p.parse_args()
    main(a.host, a.port, a.tab)
