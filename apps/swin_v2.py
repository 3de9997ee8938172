"""App tab "Swin V2 position bias": the demo model's log-spaced continuous position bias for any window and
pretrained window, one query's bias over the window, the V1 parametric table interpolated to the same
window, and a shapes classifier panel (top-5). Layout and wiring only; everything else is workbench."""
from __future__ import annotations

import functools

from apps.common import guard, launch, read_image


@functools.lru_cache(maxsize=1)
def _demo():
    from workbench.studies.swin_v2 import load_demo_model

    return load_demo_model()


def bias_views(layer, block, head, window, pretrained_window, qy, qx):
    from workbench.viz.swin_v2 import bias_panel

    model, tables = _demo()
    f1, f2, f3, text = bias_panel(model, tables, layer=int(layer), block=int(block), head=int(head),
                                  window=int(window), pretrained_window=int(pretrained_window),
                                  query=(int(qy), int(qx)))
    return f1, f2, f3, text


def shapes_image(shape, seed):
    from workbench.data import shapes

    model, _ = _demo()
    return shapes.render(shape, seed=int(seed), image_size=model.img_size)["image"]


def classify(image):
    from workbench.data import shapes
    from workbench.swin_v2 import predict_topk
    from workbench.viz.swin_v2 import topk_figure

    model, _ = _demo()
    arr = read_image(image, size=model.img_size)
    pairs = predict_topk(model, arr, list(shapes.CLASSES), k=5)
    return topk_figure(pairs, title=f"top-5 of the demo model ({model.img_size} px)"), \
        f"**{pairs[0][0]}** ({pairs[0][1]:.0%})"


def build():
    import gradio as gr

    from workbench.data import shapes

    gr.Markdown(
        "Swin V2 replaces V1's learned bias table with a small MLP over **log-spaced** offsets: "
        "`B = 16·sigmoid(MLP(sign(Δ)·log2(1+|8Δ/(M_pre−1)|)/3))`. Because it is a function, it can be "
        "evaluated for any window — here a model trained with window 4 on 64 px shapes. Set the window "
        "larger than the pretrained one to see how it extrapolates; the right plot is the V1 table of the "
        "same training run, bicubically resized.")
    with gr.Row():
        layer = gr.Slider(0, 3, value=0, step=1, label="layer (stage)", elem_id="swin_v2-layer")
        block = gr.Slider(0, 1, value=0, step=1, label="block")
        head = gr.Slider(0, 7, value=0, step=1, label="head (stage i has 2^i heads)")
    with gr.Row():
        window = gr.Slider(2, 24, value=8, step=1, label="window size", elem_id="swin_v2-window")
        pretrained = gr.Slider(0, 24, value=4, step=1, label="pretrained window (0 = same as window)")
        qy = gr.Slider(0, 23, value=3, step=1, label="query row")
        qx = gr.Slider(0, 23, value=3, step=1, label="query column")
    info = gr.Markdown(elem_id="swin_v2-bias-text")
    with gr.Row():
        p1 = gr.Plot(label="CPB over offsets", elem_id="swin_v2-bias-plot")
        p2 = gr.Plot(label="one query", elem_id="swin_v2-query-plot")
        p3 = gr.Plot(label="V1 table, interpolated", elem_id="swin_v2-v1-plot")
    show = gr.Button("Show bias", variant="primary", elem_id="swin_v2-bias-button")
    inputs, outputs = [layer, block, head, window, pretrained, qy, qx], [p1, p2, p3, info]
    show.click(guard(bias_views), inputs, outputs, api_name="swin_bias")
    for c in inputs:
        c.release(guard(bias_views), inputs, outputs, api_name=False)

    gr.Markdown("### Classifier: the demo model on an uploaded image or a shapes sample")
    with gr.Row():
        with gr.Column():
            shape = gr.Dropdown(list(shapes.CLASSES), value="star", label="shapes sample")
            seed = gr.Slider(0, 99, value=0, step=1, label="seed")
            pick = gr.Button("Use this shapes sample", elem_id="swin_v2-pick")
            image = gr.Image(type="numpy", label="image (upload or pick)", elem_id="swin_v2-image",
                             height=256)
            run = gr.Button("Classify", variant="primary", elem_id="swin_v2-classify")
        with gr.Column():
            verdict = gr.Markdown(elem_id="swin_v2-verdict")
            bars = gr.Plot(label="top-5", elem_id="swin_v2-top5")
    pick.click(guard(shapes_image), [shape, seed], image, api_name="swin_shapes_image")
    run.click(guard(classify), image, [bars, verdict], api_name="swin_classify")


if __name__ == "__main__":
    launch(build, title="Swin V2 position bias")
