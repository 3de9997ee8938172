"""App tab "iCAR zero-shot": pick or upload an image, edit the class list (name + description) in a table,
see the predicted probabilities with and without descriptions and the captions nearest to the image.
Layout and wiring only: every number and figure comes from ``workbench.icar`` and ``workbench.viz.icar``."""
from __future__ import annotations

from workbench.apps.common import guard, launch, read_image

# example images: (shape, colour, size, background, seed); the held-out classes come first
EXAMPLES = [
    ("ring", "red", "large", "plain", 0), ("pentagon", "blue", "large", "striped", 1),
    ("crescent", "yellow", "large", "plain", 2), ("star", "green", "large", "checkered", 3),
    ("circle", "purple", "medium", "plain", 4), ("square", "orange", "large", "gradient", 5),
    ("triangle", "cyan", "large", "noisy", 6), ("hexagon", "white", "large", "plain", 7),
    ("diamond", "red", "medium", "striped", 8), ("cross", "blue", "large", "plain", 9),
]
HEADERS = ["name", "description"]


def example_names() -> list[str]:
    return [f"{s} ({c}, {z}, {b} background)" for s, c, z, b, _ in EXAMPLES]


def example_image(choice: str):
    from workbench.data import shapes

    names = example_names()
    if choice not in names:
        raise ValueError(f"unknown example {choice!r}")
    s, c, z, b, seed = EXAMPLES[names.index(choice)]
    return shapes.render(s, c, z, b, seed=seed, image_size=128)["image"]


def default_rows(which: str = "all") -> list[list[str]]:
    from workbench import icar
    from workbench.studies.icar import HELD_OUT

    return icar.default_class_rows(HELD_OUT if which == "held-out" else None)


def _table_rows(table) -> list:
    if table is None:
        raise ValueError("the class list is empty: add at least one class (name and description)")
    if hasattr(table, "values") and hasattr(table, "columns"):
        return table.values.tolist()
    if isinstance(table, dict) and "data" in table:
        return table["data"]
    return list(table)


def predict(example: str, upload, table, k=5):
    """(probability figure, caption figure, markdown with the numbers and notices) for one image + class table."""
    from workbench import icar
    from workbench.viz import icar as vi

    model, tok, captions = icar.demo_bundle()
    image = read_image(upload) if upload is not None else example_image(example)
    rep = icar.zero_shot_report(model, tok, image, _table_rows(table), k=int(k), captions=captions)
    fig_p = vi.probability_chart(rep["names"], rep["with_desc"], rep["names_only"])
    fig_c = vi.caption_chart(rep["captions"], rep["scores"])
    return fig_p, fig_c, vi.probability_markdown(rep)


def build():
    import gradio as gr

    gr.Markdown("A cosine classifier whose class weights are *written*: the text encoder turns each "
                "`name: description` into a class weight, so you can add or edit classes without retraining. "
                "The demo model never saw labels for **ring, pentagon, crescent** (held out).")
    with gr.Row():
        with gr.Column(scale=1):
            example = gr.Dropdown(example_names(), value=example_names()[0], label="example image",
                                  elem_id="icar-example")
            upload = gr.Image(type="numpy", label="or upload an image (used when present)", height=220,
                              elem_id="icar-upload")
            k = gr.Slider(1, 10, value=5, step=1, label="captions to retrieve", elem_id="icar-k")
        with gr.Column(scale=2):
            table = gr.Dataframe(value=default_rows(), headers=HEADERS, datatype=["str", "str"],
                                 column_count=2, row_count=10, interactive=True,
                                 label="classes (edit names and descriptions; add or delete rows)",
                                 wrap=True, elem_id="icar-classes")
            with gr.Row():
                run = gr.Button("Predict", variant="primary", elem_id="icar-predict")
                reset = gr.Button("All ten classes", elem_id="icar-reset")
                held = gr.Button("Held-out classes only", elem_id="icar-held-out")
    with gr.Row():
        probs = gr.Plot(label="probabilities", elem_id="icar-probs")
        caps = gr.Plot(label="nearest captions", elem_id="icar-captions")
    numbers = gr.Markdown(elem_id="icar-numbers")
    run.click(guard(predict), [example, upload, table, k], [probs, caps, numbers], api_name="icar_predict")
    reset.click(lambda: default_rows(), None, table, api_name="icar_reset")
    held.click(lambda: default_rows("held-out"), None, table, api_name="icar_held_out")


if __name__ == "__main__":
    launch(build, title="iCAR zero-shot")
