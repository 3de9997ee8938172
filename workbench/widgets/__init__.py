"""ipywidgets explorers (``widgets.core`` + one module per paper), the notebook twins of the app tabs."""
from .core import Explorer, explorer, render_shape_sample, shape_controls, shapes_explorer  # noqa: F401
