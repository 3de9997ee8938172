import numpy as np
import plotly.graph_objects as go
import pytest
import torch

from workbench import viz
from workbench.viz import core


def test_to_uint8_image_conversions():
    chw = torch.rand(3, 5, 7)
    a = core.to_uint8_image(chw)
    assert a.shape == (5, 7, 3) and a.dtype == np.uint8
    assert np.abs(a.astype(float) - chw.permute(1, 2, 0).numpy() * 255).max() <= 0.5 + 1e-6
    g = core.to_uint8_image(np.full((4, 4), 200, np.uint8))
    assert g.shape == (4, 4, 3) and (g == 200).all()


def test_image_grid_layout():
    fig = viz.image_grid([np.zeros((8, 8, 3), np.uint8)] * 5, titles=list("abcde"), cols=3)
    assert len(fig.data) == 5 and all(isinstance(t, go.Image) for t in fig.data)
    assert fig.data[4].xaxis == "x5" and [a.text for a in fig.layout.annotations] == list("abcde")
    with pytest.raises(ValueError):
        viz.image_grid([])


def test_heatmap_keeps_values():
    z = np.arange(12.0).reshape(3, 4)
    fig = viz.heatmap(z, text_fmt=".1f")
    assert np.array_equal(np.asarray(fig.data[0].z), z)
    with pytest.raises(ValueError):
        viz.heatmap(np.zeros(3))


def test_heatmap_over_image_aligns_cells_with_pixels():
    fig = viz.heatmap_over_image(np.zeros((64, 32, 3), np.uint8), np.ones((8, 4)), marker=(10, 20))
    hm = fig.data[1]
    assert hm.dx == 8 and hm.dy == 8 and hm.x0 == 3.5 and len(fig.data) == 3


def test_line_chart_band_polygon():
    x, y, s = np.arange(4.0), np.array([1.0, 2, 3, 4]), np.array([0.5, 0.5, 1, 1])
    fig = viz.line_chart({"a": (x, y, s), "b": (x, y)})
    band = fig.data[0]
    assert np.allclose(band.y, np.concatenate([y + s, (y - s)[::-1]]))
    assert [t.name for t in fig.data] == ["a band", "a", "b"]


def test_bar_and_grouped_and_scatter():
    fig = viz.bar_chart(["x", "y"], [1.0, 3.0], errors=[0.1, 0.2], reference=1.0)
    assert list(fig.data[0].y) == [1.0, 3.0] and list(fig.data[0].error_y.array) == [0.1, 0.2]
    g = viz.grouped_bar_chart(["b1", "b2"], {"s1": [1, 2], "s2": [3, 4]})
    assert len(g.data) == 2 and g.layout.barmode == "group"
    xy = np.random.default_rng(0).normal(size=(10, 2))
    sc = viz.scatter_2d(xy, np.array([0, 1] * 5), names=["even", "odd"], highlight=[3])
    assert [t.name for t in sc.data] == ["even", "odd", "selected"]
    assert list(sc.data[1].customdata) == [1, 3, 5, 7, 9]


def test_colorize_labels():
    m = np.array([[0, 1], [2, 11]])
    c = viz.colorize_labels(m)
    assert (c[0, 0] == 0).all() and not (c[0, 1] == c[1, 0]).all() and (c[1, 1] == c[0, 1]).all()


def test_explorer_updates_figure_and_reports_errors():
    import ipywidgets as W

    from workbench.widgets import explorer

    def render(n, fail):
        if fail:
            raise ValueError("n is too large")
        return viz.bar_chart([str(i) for i in range(n)], list(range(n)))

    e = explorer({"n": W.IntSlider(value=2, min=1, max=9), "fail": W.Checkbox(value=False)}, render)
    assert len(e.figure.data[0].x) == 2
    e.controls["n"].value = 5
    assert len(e.figure.data[0].x) == 5 and e.message.value == ""
    e.controls["fail"].value = True
    assert "too large" in e.message.value and len(e.figure.data[0].x) == 5  # old figure kept


def test_shapes_explorer_follows_controls():
    from workbench.widgets import shapes_explorer

    e = shapes_explorer()
    assert "large red star" in e.message.value
    e.controls["shape"].value = "ring"
    e.controls["color"].value = "blue"
    assert "large blue ring" in e.message.value and len(e.figure.data) == 2


def test_cbn_explorer_statistics_groups_follow_the_batch():
    """As in the app: the group-size control offers only sizes that divide the batch and keeps a valid choice."""
    from workbench.demos import cbn as demo
    from workbench.widgets.cbn import cbn_explorer

    c = cbn_explorer(demo.recorded()).controls
    assert c["stat_batch"].value == "1" and c["batch_size"].value % 2 == 0
    c["stat_batch"].value = "2"
    c["batch_size"].value = 6
    assert list(c["stat_batch"].options) == ["1", "2", "3", "whole batch"] and c["stat_batch"].value == "2"
    c["batch_size"].value = 9
    assert list(c["stat_batch"].options) == ["1", "3", "whole batch"] and c["stat_batch"].value == "1"


def test_shapes_sample_widget_and_hub_share_the_demo_panel():
    """The tour's shapes explorer and the hub's welcome tab draw ``demos.common.shape_sample_panel``."""
    import gradio as gr

    from workbench.apps.hub import _welcome
    from workbench.demos.common import shape_sample_panel
    from workbench.widgets.core import render_shape_sample

    p = shape_sample_panel("ring", "blue", "small", "plain", 3, 64)
    fig, html = render_shape_sample("ring", "blue", "small", "plain", 3, 64)
    assert fig.to_json() == p.figures["sample"].to_json() and html == f"<i>{p.text}</i>"
    with gr.Blocks():
        show, _, _ = _welcome()
    hub_fig, caption = show("ring", "blue", "small", "plain", 3)
    assert hub_fig.to_json() == p.figures["sample"].to_json() and caption == f"*{p.text}*"
    with pytest.raises(ValueError, match="seed"):
        shape_sample_panel(seed=-1)


def test_cbn_explorer_draws_the_demo_panel_of_a_live_run():
    """The explorer's live run is ``demos.cbn.live_record`` (the app's configuration) drawn by ``demos.cbn.panel``."""
    from workbench.demos import cbn as demo
    from workbench.widgets.cbn import render_cbn

    fig, html = render_cbn("live", batch_size=4, window=3, rho=1.0, burnin=0, steps=10, layer="stem", channel=1,
                           stat_batch="2")
    p = demo.panel(demo.live_record(4, 3, 1.0, 0, 10, "stem", 2), 1)
    assert fig.to_json() == p.figures["trajectories"].to_json() and "statistics groups of 2" in html
    assert p.values["diag"]["config"]["lr"] == demo.live_config(batch_size=4).lr == 0.1 * 4 / 32
    with pytest.raises(ValueError, match="channel"):
        render_cbn("live", batch_size=4, window=3, rho=1.0, burnin=0, steps=10, layer="stem", channel=99,
                   stat_batch="2")


def test_sparse_explorer_shows_either_crossover_map():
    from workbench.widgets.sparse import render_sparse
    _, cpu_txt = render_sparse("crossover map")
    fig, gpu_txt = render_sparse("GPU crossover map")
    assert "crossover.json" in cpu_txt and "crossover_cuda.json" in gpu_txt and "NVIDIA H200" in gpu_txt
    assert len(fig.data) > 0
