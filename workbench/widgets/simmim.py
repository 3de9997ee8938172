"""The notebook twin of the "SimMIM" app tab: same controls (image, masking strategy, mask ratio, mask patch size,
seed, model) and the same function, ``workbench.demos.simmim.panel``."""
from __future__ import annotations

from .core import Explorer, explorer


def render(source: str = "shapes scene", strategy: str = "random", mask_ratio: float = 0.6,
           mask_patch_size: int = 16, seed: int = 0, label: str = "Swin V2 lite (SimMIM)"):
    """(figure, html) for one setting of the controls."""
    import html

    from ..demos import simmim as demo

    p = demo.panel(source, strategy, mask_ratio, mask_patch_size, seed, label)
    return p.figures["reconstruction"], html.escape(p.text).replace("**", "")


def simmim_explorer(source: str = "shapes scene") -> Explorer:
    import ipywidgets as W

    from .. import simmim as sm
    from ..demos import simmim as demo

    models = demo.available_models()
    controls = {
        "source": W.Dropdown(options=demo.sources(), value=source, description="image"),
        "strategy": W.Dropdown(options=list(sm.STRATEGIES), value="random", description="masking"),
        "label": W.Dropdown(options=models, value=models[0], description="model"),
        "mask_ratio": W.FloatSlider(value=0.6, min=0.05, max=0.95, step=0.05, description="mask ratio"),
        "mask_patch_size": W.Dropdown(options=demo.mask_patches(models[0]), value=16, description="mask patch"),
        "seed": W.IntSlider(value=0, min=0, max=99, description="seed"),
    }

    def follow_model(change):   # the mask-patch choices follow the model, as in the app
        allowed = demo.mask_patches(change["new"])
        keep = controls["mask_patch_size"].value
        controls["mask_patch_size"].options = allowed
        controls["mask_patch_size"].value = keep if keep in allowed else max(allowed)

    controls["label"].observe(follow_model, names="value")
    return explorer(controls, render, title="SimMIM reconstructions")
