"""App tab "DNL attention maps": click a point of an image to see where the non-local blocks look from it.

Thin: ``workbench.dnl`` computes (demo models, capture of the attention rows, statistics),
``workbench.viz.dnl`` draws.  Run alone with ``workbench app --tab dnl``.
"""


from workbench.apps.common import guard, launch

UPLOAD = "upload"
CLICK_DISPLAY = 256  # pixels of the clickable image (the 64 px model input, enlarged)
DEFAULTS = dict(source="shapes scene", seed=0, temperature=0.05, query=(44, 46))


def load_image(source: str, seed, upload):
    """(uint8 (64, 64, 3) image, label mask or None, notices) for the chosen source."""
    from workbench import dnl

    if source == UPLOAD:
        if upload is None:
            raise ValueError("Please upload an image (or pick a shapes scene or a bundled photo).")
        if isinstance(upload, dict) and "path" in upload:
            upload = upload["path"]
        image, notices = dnl.prepare_upload(upload)
        return image, None, notices
    return (*dnl.demo_image(source, 0 if seed is None else seed), [])


def compute(source: str, seed, upload, temperature, query):
    """(clickable image, attention figure, segmentation figure, summary markdown, notices) for the controls."""
    from workbench import dnl
    from workbench.viz import dnl as vz

    image, mask, notices = load_image(source, seed, upload)
    if temperature is None:
        raise ValueError("Please choose a temperature.")
    exp = dnl.explore(image, tuple(query) if query is not None else None, temperature, mask=mask)
    return (vz.click_image(exp.image, exp.query, CLICK_DISPLAY), vz.attention_figure(exp),
            vz.segmentation_figure(exp), vz.exploration_markdown(exp), notices)


def click_to_query(index, query=None, image_size: int = 64, display: int = CLICK_DISPLAY):
    """Gradio's select index (x, y) on the enlarged image -> (row, col) in model-input pixels."""
    if index is None or len(index) != 2:
        return query
    x, y = index
    f = display / image_size
    row, col = int(min(max(y / f, 0), image_size - 1)), int(min(max(x / f, 0), image_size - 1))
    return (row, col)


def _run(source, seed, upload, temperature, query):
    import gradio as gr

    img, att, seg, text, notices = compute(source, seed, upload, temperature, query)
    for n in notices:
        gr.Info(n)
    return img, att, seg, text, query


def update(source, seed, upload, temperature, query):
    return _run(source, seed, upload, temperature, query)


def select(source, seed, upload, temperature, query, evt=None):
    return _run(source, seed, upload, temperature, click_to_query(getattr(evt, "index", None), query))


def build():
    import gradio as gr

    from workbench import dnl

    gr.Markdown("The non-local block's attention splits exactly into a **whitened pairwise** term (how pixel *i* "
                "relates to pixel *j*) and a **unary** term (how salient *j* is for every query). The disentangled "
                "block (DNL) gives each its own softmax. **Click a point** on the image to make it the query: "
                "see NL's attention next to DNL's whitened pairwise map, the unary maps and the predicted "
                "segmentation. Models: small segmentation networks trained here on shapes scenes "
                f"(`{dnl.DEMO_COMMAND}`).")
    try:  # first render at build time; a missing checkpoint becomes a note instead of a broken tab
        img0, att0, seg0, text0, _ = compute(upload=None, **DEFAULTS)
    except ValueError as e:
        img0, att0, seg0, text0 = None, None, None, f"**Not available:** {e}"
    with gr.Row():
        source = gr.Dropdown(dnl.demo_sources() + [UPLOAD], value=DEFAULTS["source"], label="image",
                             elem_id="dnl-source")
        seed = gr.Slider(0, 99, value=DEFAULTS["seed"], step=1, label="scene seed", elem_id="dnl-seed")
        temperature = gr.Slider(0.01, 1.0, value=DEFAULTS["temperature"], step=0.01,
                                label="DNL pairwise temperature (trained at 0.05)", elem_id="dnl-temperature")
    query = gr.State(DEFAULTS["query"])
    with gr.Row():
        with gr.Column(scale=1):
            click = gr.Image(img0, label="click to choose the query", interactive=False, elem_id="dnl-image",
                             format="png", buttons=[], type="numpy")
            upload = gr.Image(type="filepath", image_mode=None, label="your image (choose 'upload' above)",
                              elem_id="dnl-upload", height=160, sources=["upload"])
        with gr.Column(scale=3):
            summary = gr.Markdown(text0, elem_id="dnl-summary")
            attention = gr.Plot(att0, elem_id="dnl-attention", label="pairwise (NL vs DNL) and unary maps")
            segmentation = gr.Plot(seg0, elem_id="dnl-segmentation", label="predicted segmentation")
    inputs = [source, seed, upload, temperature, query]
    outputs = [click, attention, segmentation, summary, query]

    def on_select(source_, seed_, upload_, temperature_, query_, evt: gr.SelectData):
        return select(source_, seed_, upload_, temperature_, query_, evt)

    click.select(guard(on_select), inputs, outputs, api_name="dnl_select")
    temperature.change(guard(update), inputs, outputs, api_name="dnl_update", trigger_mode="always_last")
    for c in (source, seed, upload):
        c.change(guard(update), inputs, outputs, api_name=False, trigger_mode="always_last")


if __name__ == "__main__":
    launch(build, title="DNL attention maps")
