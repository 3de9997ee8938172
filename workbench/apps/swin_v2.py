"""App tab "Swin V2": the demo classifier's continuous position bias for any window, one query's bias, V1's
interpolated table, and the classifier itself. Layout and wiring only: ``workbench.demos.swin_v2`` computes.
Run alone with ``workbench app --tab swin_v2``."""
from __future__ import annotations

from workbench.apps.common import guard, launch, upload_image
from workbench.data import shapes


def bias_views(layer, block, head, window, pretrained_window, qy, qx):
    from workbench.demos import swin_v2 as demo

    p = demo.bias_panel(layer, block, head, window, pretrained_window, qy, qx)
    return p.figures["cpb"], p.figures["query"], p.figures.get("v1"), p.text


def head_range(layer, head):
    """The head slider follows the chosen stage (stage i has its own number of heads)."""
    import gradio as gr

    from workbench.demos import swin_v2 as demo

    n = demo.heads(layer)
    return gr.update(**head_slider(n), value=min(int(head), n - 1))


def head_slider(n: int) -> dict:
    """Slider range for ``n`` heads: gradio needs minimum < maximum, so a one-head stage gets a fixed slider at 0."""
    return dict(maximum=max(n - 1, 1), interactive=n > 1)


def pick_sample(shape, seed):
    from workbench.demos import swin_v2 as demo

    return demo.sample(shape, seed)


def classify(image):
    from workbench.demos import swin_v2 as demo

    p = demo.classify(image)
    notes = "".join(f"\n\n*{n}*" for n in p.notices)
    return p.figures["top5"], p.text + notes


def build():
    import gradio as gr

    from workbench.demos import swin_v2 as demo

    gr.Markdown(
        "Swin V2 replaces V1's learned bias table with a small MLP over **log-spaced** offsets: "
        "`B = 16·sigmoid(MLP(sign(Δ)·log2(1+|8Δ/(M_pre−1)|)/3))`. Because it is a function, it can be "
        "evaluated for any window — here the demo classifier, trained with window 4 on 64 px shapes. Set the "
        "window above the pretrained one to see how it extrapolates; the right plot is the V1 table of a model "
        "trained the same way, bicubically resized.")
    net, _, info = demo.model()
    with gr.Row():
        layer = gr.Slider(0, len(net.layers) - 1, value=0, step=1, label="stage", elem_id="swin_v2-layer")
        block = gr.Slider(0, 1, value=0, step=1, label="block")
        head = gr.Slider(minimum=0, value=0, step=1, label="head", elem_id="swin_v2-head", **head_slider(demo.heads(0)))
    with gr.Row():
        window = gr.Slider(2, demo.MAX_WINDOW, value=8, step=1, label="window size", elem_id="swin_v2-window")
        pretrained = gr.Slider(0, demo.MAX_WINDOW, value=4, step=1, label="pretrained window (0 = the window)")
        qy = gr.Slider(0, demo.MAX_WINDOW - 1, value=3, step=1, label="query row")
        qx = gr.Slider(0, demo.MAX_WINDOW - 1, value=3, step=1, label="query column")
    first = demo.bias_panel()
    info_md = gr.Markdown(first.text, elem_id="swin_v2-bias-text")
    with gr.Row():
        p1 = gr.Plot(first.figures["cpb"], label="CPB over offsets", elem_id="swin_v2-bias-plot")
        p2 = gr.Plot(first.figures["query"], label="one query", elem_id="swin_v2-query-plot")
        p3 = gr.Plot(first.figures.get("v1"), label="V1 table, interpolated", elem_id="swin_v2-v1-plot")
    inputs, outputs = [layer, block, head, window, pretrained, qy, qx], [p1, p2, p3, info_md]
    show = gr.Button("Show bias", variant="primary", elem_id="swin_v2-bias-button")
    show.click(guard(bias_views, len(outputs)), inputs, outputs, api_name="swin_bias")
    layer.change(guard(head_range), [layer, head], head, api_name=False)
    for c in inputs:
        c.release(guard(bias_views, len(outputs)), inputs, outputs, api_name=False)

    acc = info.get("test_accuracy")
    gr.Markdown("### The classifier: a shapes sample or your image"
                + (f"\nTest accuracy on {info.get('n_test')} unseen single-object shapes: **{acc:.1%}**." if acc else ""))
    sample = demo.sample("star", 0)
    top = demo.classify(sample)
    with gr.Row():
        with gr.Column():
            shape = gr.Dropdown(list(shapes.CLASSES), value="star", label="shapes sample")
            seed = gr.Slider(0, 99, value=0, step=1, label="seed")
            pick = gr.Button("Use this shapes sample", elem_id="swin_v2-pick")
            image = upload_image(value=sample, label="image (upload, paste or pick a sample)", elem_id="swin_v2-image",
                                 height=256)
            run = gr.Button("Classify", variant="primary", elem_id="swin_v2-classify")
        with gr.Column():
            verdict = gr.Markdown(top.text, elem_id="swin_v2-verdict")
            bars = gr.Plot(top.figures["top5"], label="top-5", elem_id="swin_v2-top5")
    pick.click(guard(pick_sample), [shape, seed], image, api_name="swin_shapes_image")
    run.click(guard(classify, 2), image, [bars, verdict], api_name="swin_classify")


if __name__ == "__main__":
    launch(build, title="Swin V2 position bias")
