"""App tab "MoBY": the demo encoder's embedding map of a shapes / digits gallery (PCA or t-SNE), a point's (or an
uploaded image's) nearest neighbours with cosine similarities, and the two augmented views it learns from.
Layout and wiring only: ``workbench.demos.moby`` computes, ``workbench.viz.moby`` draws.
Run alone with ``workbench app --tab moby``."""
from __future__ import annotations

from workbench.apps.common import guard, launch, upload_image


def show(dataset, method, point, k):
    from workbench.demos import moby as demo

    p = demo.map_panel(dataset, method, point, k)
    return p.figures["map"], p.figures["neighbours"], p.text


def point_range(dataset, point):
    import gradio as gr

    from workbench.demos import moby as demo

    n = len(demo.index(dataset)["labels"])
    return gr.update(maximum=n - 1, value=min(int(point or 0), n - 1))


def upload_neighbours(dataset, image, k):
    from workbench.demos import moby as demo

    p = demo.upload_panel(dataset, image, k)
    return p.figures["neighbours"], p.text + "".join(f"\n\n*{n}*" for n in p.notices)


def views(source, seed):
    from workbench.demos import moby as demo

    p = demo.views_panel(source, seed)
    return p.figures["views"], p.text


def reroll(source, seed):
    new = (int(seed or 0) + 1) % 10**9
    fig, text = views(source, new)
    return new, fig, text


def build():
    import gradio as gr

    from workbench.demos import moby as demo

    gr.Markdown("A tiny Swin V2 pre-trained with MoBY — no labels — embeds a gallery of unseen shapes or digits. "
                "Hover over the map to read point numbers; pick one to see its nearest neighbours. "
                f"{demo.summary()}")
    first = demo.map_panel()
    with gr.Row():
        dataset = gr.Dropdown(list(demo.GALLERIES), value="shapes", label="gallery", elem_id="moby-dataset")
        method = gr.Radio(list(demo.PROJECTIONS), value="pca", label="2-D map", elem_id="moby-projection")
        point = gr.Slider(0, demo.N - 1, value=0, step=1, label="point #", elem_id="moby-point")
        k = gr.Slider(1, demo.MAX_K, value=8, step=1, label="neighbours", elem_id="moby-k")
    nn_text = gr.Markdown(first.text, elem_id="moby-neighbours-text")
    with gr.Row():
        emb_map = gr.Plot(first.figures["map"], label="embedding map", elem_id="moby-map")
        nn_plot = gr.Plot(first.figures["neighbours"], label="nearest neighbours", elem_id="moby-neighbours")
    with gr.Accordion("Neighbours of your own image", open=False):
        upload = upload_image(label="image", elem_id="moby-upload", height=200)
        up_btn = gr.Button("Find neighbours", elem_id="moby-upload-btn")
        up_plot = gr.Plot(label="nearest neighbours of your image", elem_id="moby-upload-neighbours")
        up_text = gr.Markdown(elem_id="moby-upload-text")
    gr.Markdown("### Two augmented views")
    first_views = demo.views_panel()
    with gr.Row():
        source = gr.Dropdown(demo.view_sources(), value="shapes #0", label="image", elem_id="moby-view-source")
        seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="moby-seed")
        roll = gr.Button("Re-roll", elem_id="moby-reroll")
    views_text = gr.Markdown(first_views.text, elem_id="moby-views-text")
    views_plot = gr.Plot(first_views.figures["views"], label="views", elem_id="moby-views")

    outputs = [emb_map, nn_plot, nn_text]
    for c in (dataset, method, k):
        c.change(guard(show, len(outputs)), [dataset, method, point, k], outputs, api_name=False)
    point.release(guard(show, len(outputs)), [dataset, method, point, k], outputs, api_name="moby_neighbours")
    dataset.change(guard(point_range), [dataset, point], point, api_name=False)
    up_btn.click(guard(upload_neighbours, 2), [dataset, upload, k], [up_plot, up_text], api_name="moby_upload")
    roll.click(guard(reroll, 3), [source, seed], [seed, views_plot, views_text], api_name="moby_reroll")
    source.change(guard(views, 2), [source, seed], [views_plot, views_text], api_name="moby_views")


if __name__ == "__main__":
    launch(build, title="MoBY embeddings")
