"""The "Explore" panel of notebook 07 (Balanced Sparsity): the ipywidgets twin of the "Sparse speedup dashboard"
tab, built from the same workbench functions (workbench.sparse.measure + workbench.viz.sparse)."""
from __future__ import annotations

from workbench.widgets.core import explorer

VIEWS = ("pruning patterns", "nonzeros per bank", "nonzeros per row", "live CPU speed (256x256)",
         "committed CPU speed vs sparsity", "accuracy: mlp", "accuracy: lstm", "accuracy: swin")


def render_sparse(view: str = "pruning patterns", sparsity: float = 0.9, bank_size: int = 32, batch: int = 1):
    """One figure of the dashboard for the chosen controls (and the summary table as HTML)."""
    from workbench.sparse import measure
    from workbench.viz import sparse as vz
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}")
    if view.startswith("accuracy"):
        return vz.accuracy_figure(measure.accuracy_records(), view.split(": ")[1])
    if view.startswith("committed"):
        rows = measure.cpu_records()
        if not rows:
            raise ValueError("no committed CPU benchmark records; run `workbench bench sparse`")
        return vz.records_speed_figure(rows, x="target", batch=1 if batch == 1 else 128, value="speedup_vs_dense")
    if view.startswith("live"):
        rows = measure.live_speed(256, batch, sorted({0.5, 0.75, 0.95, round(sparsity, 4)}), bank_size, repeats=3)
        return vz.live_speed_figure(rows, gpu_rows=measure.gpu_records(), size=256, batch=batch)
    name, W = measure.example_weight()
    pat, hist, rowhist, md = vz.pattern_panel(W, sparsity, bank_size, name=name)
    fig = {"pruning patterns": pat, "nonzeros per bank": hist, "nonzeros per row": rowhist}[view]
    return fig, "<pre>" + md + "</pre>"


def sparse_explorer():
    import ipywidgets as W
    controls = {
        "view": W.Dropdown(options=list(VIEWS), value="pruning patterns", description="view"),
        "sparsity": W.FloatSlider(value=0.9, min=0.5, max=0.95, step=0.0125, description="sparsity"),
        "bank_size": W.Dropdown(options=[16, 32, 64], value=32, description="bank"),
        "batch": W.IntSlider(value=1, min=1, max=128, description="batch"),
    }
    return explorer(controls, render_sparse, title="Balanced sparsity explorer")
