"""App tab "SimMIM reconstructions": mask an image, let the pre-trained SimMIM model fill it in.

Thin: ``workbench.simmim`` computes (masks, AvgDist, reconstruction, loss), ``workbench.viz.simmim`` draws.
Run alone with ``workbench app --tab simmim``.
"""
from __future__ import annotations

from workbench.apps.common import guard, launch

UPLOAD = "upload"
DEFAULTS = dict(source="photo: astronaut", strategy="random", mask_ratio=0.6, mask_patch_size=16, seed=0,
                model="Swin V2 lite (SimMIM)")


def compute(source: str, upload, strategy: str, mask_ratio: float, mask_patch_size, seed, model: str):
    """(reconstruction figure, error heat map, summary markdown, notices) for one setting of the controls."""
    from workbench import simmim as sm
    from workbench.viz import simmim as vz

    notices: list[str] = []
    if source == UPLOAD:
        if upload is None:
            raise ValueError("Please upload an image (or pick a bundled photo or a shape).")
        if isinstance(upload, dict) and "path" in upload:
            upload = upload["path"]
        image, notices = sm.prepare_input(upload)
    else:
        image = sm.demo_image(source, seed=int(seed) if seed is not None else 0)
    if mask_patch_size is None:
        raise ValueError("Please choose a mask patch size.")
    rec = sm.explore(image, strategy, mask_ratio, int(mask_patch_size), 0 if seed is None else seed, model)
    return (vz.reconstruction_figure(rec), vz.error_heatmap_figure(rec), vz.summary_markdown(rec, model),
            notices)


def reconstruct(source, upload, strategy, mask_ratio, mask_patch_size, seed, model):
    import gradio as gr

    fig, err, text, notices = compute(source, upload, strategy, mask_ratio, mask_patch_size, seed, model)
    for n in notices:
        gr.Info(n)
    return fig, err, text


def build():
    import gradio as gr

    from workbench import simmim as sm

    gr.Markdown("SimMIM masks large patches of an image and regresses the raw pixels of the masked part with a "
                "one-layer head. Move the sliders: the masked fraction and the mask patch size set **AvgDist**, "
                "the mean distance from a masked pixel to the nearest visible one. Models: tiny Swin V2 / ViT "
                "pre-trained here on 64 px photo crops and shapes (`workbench train simmim`).")
    with gr.Row():
        source = gr.Dropdown(sm.demo_sources() + [UPLOAD], value=DEFAULTS["source"], label="image",
                             elem_id="simmim-source")
        model = gr.Dropdown(list(sm.DEMO_MODELS), value=DEFAULTS["model"], label="model", elem_id="simmim-model")
        strategy = gr.Radio(list(sm.STRATEGIES), value=DEFAULTS["strategy"], label="masking strategy",
                            elem_id="simmim-strategy")
    with gr.Row():
        ratio = gr.Slider(0.05, 0.95, value=DEFAULTS["mask_ratio"], step=0.05, label="mask ratio",
                          elem_id="simmim-ratio")
        patch = gr.Radio([4, 8, 16, 32], value=DEFAULTS["mask_patch_size"], label="mask patch size (px)",
                         elem_id="simmim-patch")
        seed = gr.Slider(0, 99, value=DEFAULTS["seed"], step=1, label="seed", elem_id="simmim-seed")
    upload = gr.Image(type="filepath", image_mode=None, label="your image (choose 'upload' above)",
                      elem_id="simmim-upload", height=200, sources=["upload"])
    try:  # first render at build time; a missing checkpoint becomes a note instead of a broken tab
        fig0, err0, text0, _ = compute(upload=None, **DEFAULTS)
    except ValueError as e:
        fig0, err0, text0 = None, None, f"**Not available:** {e}"
    summary = gr.Markdown(text0, elem_id="simmim-summary")
    plot = gr.Plot(fig0, elem_id="simmim-plot", label="original · masked · reconstruction · composite · error")
    err = gr.Plot(err0, elem_id="simmim-error", label="per-patch error")

    inputs = [source, upload, strategy, ratio, patch, seed, model]
    outputs = [plot, err, summary]
    handler = guard(reconstruct)
    ratio.change(handler, inputs, outputs, api_name="simmim_reconstruct", trigger_mode="always_last")
    for c in (source, upload, strategy, patch, seed, model):
        c.change(handler, inputs, outputs, api_name=False, trigger_mode="always_last")


if __name__ == "__main__":
    launch(build, title="SimMIM reconstructions")
