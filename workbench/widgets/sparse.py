"""The "Explore" panel of notebook 07 (Balanced Sparsity): the ipywidgets twin of the "Sparse" dashboard tab, built
from the same functions (``workbench.demos.sparse``)."""
from __future__ import annotations

from workbench.widgets.core import explorer

VIEWS = ("pruning patterns", "nonzeros per bank", "nonzeros per row", "live CPU speed (256x256)",
         "committed CPU speed vs sparsity", "crossover map", "GPU crossover map", "accuracy: MLP on digits",
         "accuracy: char-LSTM language model", "accuracy: Swin V2 on shapes")


def render_sparse(view: str = "pruning patterns", sparsity: float = 0.9, bank_size: int = 32, batch: int = 1):
    """One figure of the dashboard for the chosen controls (and a summary as HTML)."""
    from workbench.demos import sparse as demo
    if view not in VIEWS:
        raise ValueError(f"unknown view {view!r}")
    if view.startswith("accuracy"):
        return demo.accuracy(view.split(": ")[1]).figures["accuracy"]
    if view.startswith("committed"):
        return demo.records("target", "speedup_vs_dense", batch=1 if batch == 1 else 128).figures["records"]
    if view in ("crossover map", "GPU crossover map"):
        p = demo.crossover("cuda" if view.startswith("GPU") else "cpu")
        return p.figures["crossover"], p.text
    if view.startswith("live"):
        p = demo.live(256, batch, sparsity, bank_size, methods=("dense", "csr", "balanced", "model"))
        return p.figures["speed"], "<pre>" + p.text + "</pre>"
    p = demo.patterns(sparsity, bank_size)
    key = {"pruning patterns": "patterns", "nonzeros per bank": "per_bank", "nonzeros per row": "per_row"}[view]
    return p.figures[key], "<pre>" + p.text + "</pre>"


def sparse_explorer():
    import ipywidgets as W

    from workbench.demos import sparse as demo
    controls = {
        "view": W.Dropdown(options=list(VIEWS), value="pruning patterns", description="view"),
        "sparsity": W.FloatSlider(value=0.9, min=0.5, max=0.95, step=0.0125, description="sparsity"),
        "bank_size": W.Dropdown(options=list(demo.BANKS), value=32, description="bank"),
        "batch": W.IntSlider(value=1, min=1, max=128, description="batch"),
    }
    return explorer(controls, render_sparse, title="Balanced sparsity explorer")
