"""Every plotly figure builder of the workbench: ``viz.core`` (generic) and one module per paper
(``viz.swin_v2``, ``viz.simmim`` ...). Notebook cells and app tabs call the same builders."""
from .core import (  # noqa: F401
    PALETTE,
    bar_chart,
    colorize_labels,
    grouped_bar_chart,
    heatmap,
    heatmap_over_image,
    image_grid,
    line_chart,
    scatter_2d,
    speedup_chart,
    table_figure,
    to_uint8_image,
)
