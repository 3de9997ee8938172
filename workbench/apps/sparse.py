"""Tab "Sparse speedup dashboard" (Balanced Sparsity, Yao et al., AAAI 2019): layout and wiring only — every
number and figure comes from workbench.sparse.measure and workbench.viz.sparse."""
from __future__ import annotations

from workbench.apps.common import guard, launch

SIZES = [256, 512, 1024, 2048, 4096, 8192]
BANKS = [16, 32, 64]
METHODS = ["dense", "csr", "block", "balanced"]
TASKS = {"MLP on digits": "mlp", "char-LSTM language model": "lstm", "tiny Swin V2 on shapes": "swin"}
SWEEP = (0.5, 0.75, 0.9, 0.95)


def pattern_view(sparsity: float, bank_size: int, weight: str | None = None):
    """Pruning patterns of a trained weight at ``sparsity`` + per-bank and per-row histograms + summary."""
    from workbench.sparse import measure
    from workbench.viz import sparse as vz
    name, W = measure.example_weight(weight)
    return vz.pattern_panel(W, sparsity, bank_size, name=name)


def measure_view(size: int, batch: int, sparsity: float, bank_size: int, methods: list[str], progress=None):
    """Live CPU timing over a sparsity sweep (plus the chosen sparsity), committed GPU records overlaid."""
    from workbench.sparse import measure
    from workbench.viz import sparse as vz
    size, batch, bank_size = int(size), int(batch), int(bank_size)
    sweep = sorted(set(SWEEP) | {round(float(sparsity), 4)})
    cb = (lambda f, t: progress(f, desc=t)) if progress is not None else None
    rows = measure.live_speed(size, batch, sweep, bank_size, methods=methods, repeats=5, progress=cb)
    fig = vz.live_speed_figure(rows, gpu_rows=measure.gpu_records(), size=size, batch=batch)
    fig.add_vline(x=float(sparsity), line_dash="dash", line_color="#888")
    txt = "| sparsity | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    for s in sweep:
        cells = {r["method"]: r for r in rows if r["sparsity"] == s}
        txt += f"| {s:.3f} | " + " | ".join(f"{cells[m]['median_ms']:.3f} ms ({cells[m]['speedup']:.2f}x)"
                                             if m in cells else "" for m in methods) + " |\n"
    gpu = measure.gpu_records()
    txt += ("\nGPU curves: committed records from " + gpu[0].get("device", "a GPU") if gpu
            else "\nNo GPU records are committed yet (`workbench bench sparse --device cuda` on a GPU machine).")
    return fig, txt


def accuracy_view(task_label: str):
    from workbench.sparse import measure
    from workbench.viz import sparse as vz
    if task_label not in TASKS:
        raise ValueError(f"unknown task {task_label!r}")
    return vz.accuracy_figure(measure.accuracy_records(), TASKS[task_label])


def records_view(x: str, value: str):
    from workbench.sparse import measure
    from workbench.viz import sparse as vz
    rows = measure.cpu_records()
    if not rows:
        raise ValueError("no committed CPU benchmark records; run `workbench bench sparse`")
    return vz.records_speed_figure(rows, x=x, value=value, title="committed CPU benchmark (2 threads)")


def build():
    import gradio as gr

    with gr.Row():
        sparsity = gr.Slider(0.5, 0.95, value=0.9, step=0.0125, label="sparsity", elem_id="sparse-sparsity")
        bank = gr.Dropdown(BANKS, value=32, label="bank size", elem_id="sparse-bank")
        size = gr.Dropdown(SIZES, value=1024, label="matrix size (live: up to 2048)", elem_id="sparse-size")
        batch = gr.Slider(1, 128, value=1, step=1, label="batch", elem_id="sparse-batch")
        methods = gr.CheckboxGroup(METHODS, value=METHODS, label="methods", elem_id="sparse-methods")
    with gr.Tab("Pruning patterns"):
        summary = gr.Markdown(elem_id="sparse-pattern-summary")
        pattern = gr.Plot(label="kept weights", elem_id="sparse-pattern-plot")
        with gr.Row():
            hist = gr.Plot(label="nonzeros per bank", elem_id="sparse-hist-plot")
            rowhist = gr.Plot(label="nonzeros per row", elem_id="sparse-row-plot")
    with gr.Tab("Speed"):
        run = gr.Button("Measure on this CPU", variant="primary", elem_id="sparse-measure")
        speed = gr.Plot(label="speedup over dense", elem_id="sparse-speed-plot")
        speed_txt = gr.Markdown(elem_id="sparse-speed-table")
        with gr.Row():
            rx = gr.Radio(["target", "size", "batch"], value="target", label="committed records: x axis", elem_id="sparse-rec-x")
            rv = gr.Radio(["speedup_vs_dense", "median_ms", "gbps"], value="speedup_vs_dense", label="value",
                          elem_id="sparse-rec-value")
        rec = gr.Plot(label="committed CPU benchmark", elem_id="sparse-records-plot")
    with gr.Tab("Accuracy"):
        task = gr.Dropdown(list(TASKS), value="MLP on digits", label="task", elem_id="sparse-task")
        acc = gr.Plot(label="accuracy vs sparsity", elem_id="sparse-accuracy-plot")

    def _measure(size, batch, sparsity, bank, methods, progress=gr.Progress()):
        return measure_view(size, batch, sparsity, bank, methods, progress=progress)

    pat_out = [pattern, hist, rowhist, summary]
    for ctl in (sparsity, bank):
        ctl.change(guard(pattern_view), [sparsity, bank], pat_out, api_name=False)
    run.click(guard(_measure), [size, batch, sparsity, bank, methods], [speed, speed_txt], api_name="sparse_measure")
    task.change(guard(accuracy_view), [task], [acc], api_name=False)
    for ctl in (rx, rv):
        ctl.change(guard(records_view), [rx, rv], [rec], api_name=False)
    demo = gr.context.Context.root_block
    if demo is not None:
        demo.load(guard(pattern_view), [sparsity, bank], pat_out, api_name="sparse_patterns")
        demo.load(guard(accuracy_view), [task], [acc], api_name=False)
        demo.load(guard(records_view), [rx, rv], [rec], api_name=False)


if __name__ == "__main__":
    launch(build, title="Sparse speedup dashboard")
