"""App tab "DNL": click a point of an image to see where the non-local blocks look from it.
Layout and wiring only: ``workbench.demos.dnl`` computes, ``workbench.viz.dnl`` draws.
Run alone with ``workbench app --tab dnl``."""

from workbench.apps.common import guard, launch, upload_image
from workbench.apps.images import image_file

CLICK_DISPLAY = 256  # pixels of the clickable image (the 64 px model input, enlarged)
DEFAULTS = dict(source="shapes scene", seed=0, temperature=0.05, query=(44, 46))


def update(source, seed, upload, temperature, query):
    from workbench.demos import dnl as demo

    p = demo.panel(source, seed, temperature, query, upload, CLICK_DISPLAY)
    text = p.text + "".join(f"\n\n*{n}*" for n in p.notices)
    return image_file(p.values["click_image"]), p.figures["attention"], p.figures["segmentation"], query, text


def select(source, seed, upload, temperature, query, index=None):
    """A click on the enlarged image chooses the query; without a click (e.g. an API call) the query stays."""
    from workbench.demos import dnl as demo

    return update(source, seed, upload, temperature, demo.click_to_query(index, query, display=CLICK_DISPLAY))


def build():
    import gradio as gr

    from workbench.demos import dnl as demo

    gr.Markdown("The non-local block's attention splits exactly into a **whitened pairwise** term (how pixel *i* "
                "relates to pixel *j*) and a **unary** term (how salient *j* is for every query). The disentangled "
                "block (DNL) gives each its own softmax. **Click a point** on the image to make it the query: "
                "NL's attention next to DNL's whitened pairwise map, the unary maps and the predicted segmentation. "
                f"Models: small segmentation networks trained here on shapes scenes (`{demo.COMMAND}`).")
    first = demo.panel(**DEFAULTS, display=CLICK_DISPLAY)
    with gr.Row():
        source = gr.Dropdown(demo.sources() + [demo.UPLOAD], value=DEFAULTS["source"], label="image",
                             elem_id="dnl-source")
        seed = gr.Slider(0, 99, value=DEFAULTS["seed"], step=1, label="scene seed", elem_id="dnl-seed")
        temperature = gr.Slider(0.01, 1.0, value=DEFAULTS["temperature"], step=0.01,
                                label="DNL pairwise temperature (trained at 0.05)", elem_id="dnl-temperature")
    query = gr.State(DEFAULTS["query"])
    with gr.Row():
        with gr.Column(scale=1):
            click = gr.Image(image_file(first.values["click_image"]), label="click to choose the query", interactive=False,
                             elem_id="dnl-image", format="png", buttons=[], type="filepath")
            upload = upload_image(label="your image (choose 'upload' above)", elem_id="dnl-upload", height=160)
        with gr.Column(scale=3):
            summary = gr.Markdown(first.text, elem_id="dnl-summary")
            attention = gr.Plot(first.figures["attention"], elem_id="dnl-attention",
                                label="pairwise (NL vs DNL) and unary maps")
            segmentation = gr.Plot(first.figures["segmentation"], elem_id="dnl-segmentation",
                                   label="predicted segmentation")
    inputs = [source, seed, upload, temperature, query]
    outputs = [click, attention, segmentation, query, summary]

    def on_select(source_, seed_, upload_, temperature_, query_, evt: gr.SelectData = None):
        return select(source_, seed_, upload_, temperature_, query_, getattr(evt, "index", None))

    # a click is a UI event (gradio builds its SelectData from the browser); the API computes the same through
    # /dnl_update, with the query kept in the session state
    click.select(guard(on_select, len(outputs)), inputs, outputs, api_name=False)
    temperature.change(guard(update, len(outputs)), inputs, outputs, api_name="dnl_update", trigger_mode="always_last")
    for c in (source, seed, upload):
        c.change(guard(update, len(outputs)), inputs, outputs, api_name=False, trigger_mode="always_last")


if __name__ == "__main__":
    launch(build, title="DNL attention maps")
