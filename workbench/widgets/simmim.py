"""The SimMIM explorer: the notebook twin of the "SimMIM reconstructions" app tab.

Same controls (image, masking strategy, mask ratio, mask patch size, seed, model) and the same functions:
``workbench.simmim.explore`` computes, ``workbench.viz.simmim`` draws.
"""
from __future__ import annotations

from .core import Explorer, explorer


def render(source: str = "photo: astronaut", strategy: str = "random", mask_ratio: float = 0.6,
           mask_patch_size: int = 16, seed: int = 0, model: str = "Swin V2 lite (SimMIM)"):
    """(figure, html) for one setting of the controls."""
    import html

    from .. import simmim as sm
    from ..viz import simmim as vz

    rec = sm.explore(sm.demo_image(source, seed=seed), strategy, mask_ratio, mask_patch_size, seed, model)
    text = vz.summary_markdown(rec, model)
    text = html.escape(text).replace("**", "")
    return vz.reconstruction_figure(rec), text


def simmim_explorer(source: str = "photo: astronaut") -> Explorer:
    import ipywidgets as W

    from .. import simmim as sm

    controls = {
        "source": W.Dropdown(options=sm.demo_sources(), value=source, description="image"),
        "strategy": W.Dropdown(options=list(sm.STRATEGIES), value="random", description="masking"),
        "model": W.Dropdown(options=list(sm.DEMO_MODELS), value="Swin V2 lite (SimMIM)", description="model"),
        "mask_ratio": W.FloatSlider(value=0.6, min=0.05, max=0.95, step=0.05, description="mask ratio"),
        "mask_patch_size": W.Dropdown(options=[4, 8, 16, 32], value=16, description="mask patch"),
        "seed": W.IntSlider(value=0, min=0, max=99, description="seed"),
    }
    return explorer(controls, render, title="SimMIM reconstructions")
