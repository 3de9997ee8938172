"""App tab "MoBY embeddings": the demo encoder's embedding map of a shapes / digits gallery (PCA or
t-SNE), a chosen point's (or an uploaded image's) nearest neighbours with cosine similarities, and the
two augmented MoBY views of an image with a re-roll button. Layout and wiring only: every number and
figure comes from ``workbench.moby``, ``workbench.widgets.moby`` and ``workbench.viz.moby``."""
from __future__ import annotations

import math

from workbench.apps.common import guard, launch, read_image

MAX_K = 14


def _point(point) -> int:
    if point is None or (isinstance(point, float) and not math.isfinite(point)):
        raise ValueError("Please enter a point number (hover over the map to see them).")
    if float(point) != int(point):
        raise ValueError(f"the point number must be a whole number, got {point}")
    return int(point)


def _k(k) -> int:
    if k is None or not 1 <= int(k) <= MAX_K:
        raise ValueError(f"the number of neighbours must be between 1 and {MAX_K}")
    return int(k)


def draw_map(dataset: str, projection: str, point):
    """The embedding map with the chosen point and its neighbours ringed; the neighbour line."""
    from workbench.widgets.moby import render_embeddings
    fig, text = render_embeddings(dataset, projection, _point(point), 8)
    return fig, text


def show_neighbours(dataset: str, projection: str, point, k):
    """Map (with highlights), neighbour images and the similarity line of a gallery point."""
    from workbench.widgets.moby import render_embeddings, render_neighbours
    p, kk = _point(point), _k(k)
    fig_map, _ = render_embeddings(dataset, projection, p, kk)
    fig_nn, text = render_neighbours(dataset, p, kk)
    return fig_map, fig_nn, text


def upload_neighbours(dataset: str, image, k):
    """Nearest gallery neighbours of an uploaded image."""
    from workbench import moby
    from workbench.viz import moby as vm
    from workbench.widgets.moby import neighbour_text
    img = read_image(image)
    res = moby.query_neighbours(dataset, image=img, k=_k(k))
    idx = moby.demo_index(dataset)
    fig = vm.neighbours_figure(res["query"], [idx["images"][j] for j in res["indices"]], res["sims"],
                               res["labels"], res["names"], indices=res["indices"], query_title="your image")
    return fig, neighbour_text(res)


def show_views(source: str, image, seed):
    """Two augmented views of the uploaded image (if any) or of the chosen source."""
    from workbench.widgets.moby import render_views
    if seed is None or not 0 <= int(seed) <= 10**9:
        raise ValueError("the seed must be a whole number between 0 and 1e9")
    img = read_image(image) if image is not None else source
    return render_views(img, int(seed))


def reroll(source: str, image, seed):
    """The next seed and its views."""
    new = (int(seed or 0) + 1) % 10**9
    return new, show_views(source, image, new)


def build():
    import gradio as gr

    from workbench import moby
    from workbench.widgets.moby import view_sources

    gr.Markdown("A tiny Swin V2 pre-trained with MoBY (no labels) embeds a gallery of shapes or digits. "
                "Hover over the map to read point numbers; pick one to see its nearest neighbours.")
    with gr.Row():
        dataset = gr.Dropdown(list(moby.GALLERIES), value="shapes", label="gallery", elem_id="moby-dataset")
        projection = gr.Radio(["pca", "tsne"], value="pca", label="2-D map", elem_id="moby-projection")
        point = gr.Number(value=0, precision=0, minimum=0, label="point #", elem_id="moby-point")
        k = gr.Slider(1, MAX_K, value=8, step=1, label="neighbours", elem_id="moby-k")
    with gr.Row():
        map_btn = gr.Button("Draw map", elem_id="moby-map-btn")
        nn_btn = gr.Button("Show neighbours", variant="primary", elem_id="moby-neighbours-btn")
    emb_map = gr.Plot(label="embedding map", elem_id="moby-map")
    nn_text = gr.Markdown(elem_id="moby-neighbours-text")
    nn_plot = gr.Plot(label="nearest neighbours", elem_id="moby-neighbours")
    with gr.Accordion("Neighbours of your own image", open=False):
        upload = gr.Image(type="numpy", label="image", elem_id="moby-upload")
        up_btn = gr.Button("Find neighbours", elem_id="moby-upload-btn")
    gr.Markdown("### Two augmented views\nView 1 is always blurred; view 2 is blurred with p 0.1 and "
                "solarised with p 0.2 (both: crop, flip, colour jitter p 0.8, grayscale p 0.2).")
    with gr.Row():
        source = gr.Dropdown(view_sources(), value=view_sources()[0], label="image", elem_id="moby-view-source")
        seed = gr.Number(value=0, precision=0, minimum=0, label="seed", elem_id="moby-seed")
        roll = gr.Button("Re-roll", elem_id="moby-reroll")
    views_upload = gr.Image(type="numpy", label="or upload an image", elem_id="moby-view-upload")
    views_plot = gr.Plot(label="views", elem_id="moby-views")

    map_btn.click(guard(draw_map), [dataset, projection, point], [emb_map, nn_text], api_name="moby_map")
    nn_btn.click(guard(show_neighbours), [dataset, projection, point, k], [emb_map, nn_plot, nn_text],
                 api_name="moby_neighbours")
    up_btn.click(guard(upload_neighbours), [dataset, upload, k], [nn_plot, nn_text], api_name="moby_upload")
    roll.click(guard(reroll), [source, views_upload, seed], [seed, views_plot], api_name="moby_reroll")
    source.change(guard(show_views), [source, views_upload, seed], views_plot, api_name="moby_views")


if __name__ == "__main__":
    launch(build, title="MoBY embeddings")
