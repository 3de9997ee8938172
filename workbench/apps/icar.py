"""App tab "iCAR": pick or upload an image, edit the class list (name + description) in a table, see the predicted
probabilities with and without descriptions and the captions nearest to the image.
Layout and wiring only: ``workbench.demos.icar`` computes, ``workbench.viz.icar`` draws.
Run alone with ``workbench app --tab icar``."""
from __future__ import annotations

from workbench.apps.common import guard, launch, upload_image


def predict(example: str, upload, table, k=5):
    from workbench.demos import icar as demo

    p = demo.panel(example, upload, table, k)
    return p.figures["probabilities"], p.figures["captions"], p.text


def rows(which: str = "all"):
    from workbench.demos import icar as demo

    return demo.default_class_rows(demo.held_out() if which == "held-out" else None)


def build():
    import gradio as gr

    from workbench.demos import icar as demo

    gr.Markdown("A cosine classifier whose class weights are *written*: the text encoder turns each "
                "`name: description` into a class weight, so you can add or edit classes without retraining. "
                f"The demo model never saw labels for **{', '.join(demo.held_out())}** (held out).")
    first = demo.panel()
    with gr.Row():
        with gr.Column(scale=1):
            example = gr.Dropdown(demo.example_names(), value=demo.example_names()[0], label="example image",
                                  elem_id="icar-example")
            upload = upload_image(label="or upload an image (used when present)", height=220, elem_id="icar-upload")
            k = gr.Slider(1, 10, value=5, step=1, label="captions to retrieve", elem_id="icar-k")
        with gr.Column(scale=2):
            table = gr.Dataframe(value=rows(), headers=demo.HEADERS, datatype=["str", "str"],
                                 column_count=2, row_count=10, interactive=True,
                                 label="classes (edit names and descriptions; add or delete rows)",
                                 wrap=True, elem_id="icar-classes")
            with gr.Row():
                run = gr.Button("Predict", variant="primary", elem_id="icar-predict")
                reset = gr.Button("All ten classes", elem_id="icar-reset")
                held = gr.Button("Held-out classes only", elem_id="icar-held-out")
    numbers = gr.Markdown(first.text, elem_id="icar-numbers")
    with gr.Row():
        probs = gr.Plot(first.figures["probabilities"], label="probabilities", elem_id="icar-probs")
        caps = gr.Plot(first.figures["captions"], label="nearest captions", elem_id="icar-captions")
    outputs = [probs, caps, numbers]
    run.click(guard(predict, 3), [example, upload, table, k], outputs, api_name="icar_predict")
    example.change(guard(predict, 3), [example, upload, table, k], outputs, api_name=False)
    reset.click(lambda: rows(), None, table, api_name="icar_reset")
    held.click(lambda: rows("held-out"), None, table, api_name="icar_held_out")


if __name__ == "__main__":
    launch(build, title="iCAR zero-shot")
