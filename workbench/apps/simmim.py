"""App tab "SimMIM": mask an image, let the pre-trained SimMIM model fill it in, compare with classical inpainting.
Layout and wiring only: ``workbench.demos.simmim`` computes, ``workbench.viz.simmim`` draws.
Run alone with ``workbench app --tab simmim``."""
from __future__ import annotations

from workbench.apps.common import choice_radio, guard, launch, upload_image

DEFAULTS = dict(source="shapes scene", strategy="random", mask_ratio=0.6, mask_patch_size=16, seed=0,
                label="Swin V2 lite (SimMIM)")


def reconstruct(source, upload, strategy, mask_ratio, mask_patch_size, seed, label):
    from workbench.demos import simmim as demo

    p = demo.panel(source, strategy, mask_ratio, mask_patch_size, seed, label, upload=upload)
    return p.figures["reconstruction"], p.figures["error"], p.text + "".join(f"\n\n*{n}*" for n in p.notices)


def patch_choices(label, patch):
    """The mask-patch choices follow the model (a mask patch must be a multiple of its patch size)."""
    import gradio as gr

    from workbench.demos import simmim as demo

    allowed = demo.mask_patches(label)
    return gr.update(choices=[(str(p), p) for p in allowed], value=patch if patch in allowed else max(allowed))


def build():
    import gradio as gr

    from workbench import simmim as sm
    from workbench.demos import simmim as demo

    gr.Markdown("SimMIM masks large patches of an image and regresses the raw pixels of the masked part with a "
                "one-layer head. The mask ratio and the mask patch size set **AvgDist**, the mean distance from a "
                "masked pixel to the nearest visible one. The summary compares the model's error on the masked "
                "pixels with scikit-image's biharmonic inpainting on the same mask. The model was pre-trained here "
                "on 64 px shapes scenes and photo crops (`workbench train simmim-demo`).")
    models = demo.available_models()
    with gr.Row():
        source = gr.Dropdown(demo.sources() + [demo.UPLOAD], value=DEFAULTS["source"], label="image",
                             elem_id="simmim-source")
        label = gr.Dropdown(models, value=DEFAULTS["label"], label="model", elem_id="simmim-model")
        strategy = gr.Radio(list(sm.STRATEGIES), value=DEFAULTS["strategy"], label="masking strategy",
                            elem_id="simmim-strategy")
    with gr.Row():
        ratio = gr.Slider(0.05, 0.95, value=DEFAULTS["mask_ratio"], step=0.05, label="mask ratio",
                          elem_id="simmim-ratio")
        patch = choice_radio([(str(p), p) for p in demo.mask_patches(DEFAULTS["label"])],
                             value=DEFAULTS["mask_patch_size"], label="mask patch size (px)",
                             elem_id="simmim-patch")
        seed = gr.Slider(0, 99, value=DEFAULTS["seed"], step=1, label="seed", elem_id="simmim-seed")
    upload = upload_image(label="your image (choose 'upload' above)", elem_id="simmim-upload", height=200)
    first = demo.panel(**DEFAULTS)
    summary = gr.Markdown(first.text, elem_id="simmim-summary")
    plot = gr.Plot(first.figures["reconstruction"], elem_id="simmim-plot",
                   label="original · masked · reconstruction · composite · error")
    err = gr.Plot(first.figures["error"], elem_id="simmim-error", label="per-patch error")

    inputs = [source, upload, strategy, ratio, patch, seed, label]
    outputs = [plot, err, summary]
    handler = guard(reconstruct, len(outputs))
    ratio.change(handler, inputs, outputs, api_name="simmim_reconstruct", trigger_mode="always_last")
    label.change(guard(patch_choices), [label, patch], patch, api_name=False)
    for c in (source, upload, strategy, patch, seed, label):
        c.change(handler, inputs, outputs, api_name=False, trigger_mode="always_last")


if __name__ == "__main__":
    launch(build, title="SimMIM reconstructions")
