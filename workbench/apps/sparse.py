"""App tab "Sparse" (Balanced Sparsity, Yao et al., AAAI 2019): pruning patterns, live CPU speed of the kernel and of
a whole model (with the path the dispatcher took and why), the committed benchmark, the dispatcher's crossover map
and the accuracy study. Layout and wiring only: ``workbench.demos.sparse`` computes, ``workbench.viz.sparse`` draws.
Run alone with ``workbench app --tab sparse``."""
from __future__ import annotations

from workbench.apps.common import choice_dropdown, guard, launch, on_load


def patterns(sparsity, bank):
    from workbench.demos import sparse as demo

    p = demo.patterns(sparsity, bank)
    return p.figures["patterns"], p.figures["per_bank"], p.figures["per_row"], p.text


def measure(size, batch, sparsity, bank, methods, progress=None):
    from workbench.demos import sparse as demo

    cb = (lambda f, t: progress(f, desc=t)) if progress is not None else None
    p = demo.live(size, batch, sparsity, bank, methods, progress=cb)
    return p.figures["speed"], p.text


def records(x, value):
    from workbench.demos import sparse as demo

    p = demo.records(x, value)
    return p.figures["records"], p.text


def crossover(device="cpu"):
    from workbench.demos import sparse as demo

    p = demo.crossover(device)
    return p.figures["crossover"], p.text


def accuracy(task):
    from workbench.demos import sparse as demo

    p = demo.accuracy(task)
    return p.figures["accuracy"], p.text


def build():
    import gradio as gr

    from workbench.demos import sparse as demo

    with gr.Row():
        sparsity = gr.Slider(0.5, 0.95, value=0.9, step=0.0125, label="sparsity", elem_id="sparse-sparsity")
        bank = choice_dropdown([(str(b), b) for b in demo.BANKS], value=64, label="bank size", elem_id="sparse-bank")
        size = choice_dropdown([(str(s), s) for s in demo.SIZES], value=1024,
                               label=f"matrix size (live, up to {max(demo.SIZES)})", elem_id="sparse-size")
        batch = gr.Slider(1, 128, value=1, step=1, label="batch", elem_id="sparse-batch")
        methods = gr.CheckboxGroup(list(demo.METHODS), value=list(demo.METHODS), label="methods ('model': a 3-layer "
                                   "MLP of this size, dense vs sparsify_)", elem_id="sparse-methods")
    with gr.Tab("Pruning patterns"):
        summary = gr.Markdown(elem_id="sparse-pattern-summary")
        pattern = gr.Plot(label="kept weights", elem_id="sparse-pattern-plot")
        with gr.Row():
            hist = gr.Plot(label="nonzeros per bank", elem_id="sparse-hist-plot")
            rowhist = gr.Plot(label="nonzeros per row", elem_id="sparse-row-plot")
    with gr.Tab("Speed"):
        run = gr.Button("Measure on this CPU", variant="primary", elem_id="sparse-measure")
        speed = gr.Plot(label="speedup over dense", elem_id="sparse-speed-plot")
        speed_txt = gr.Markdown("Press *Measure* to time the kernels and the model on this CPU (a few seconds; "
                                "the first time also builds the C++ kernels, about half a minute).",
                                elem_id="sparse-speed-table")
        with gr.Row():
            rx = gr.Radio(["target", "size", "batch"], value="target", label="committed records: x axis",
                          elem_id="sparse-rec-x")
            rv = gr.Radio(["speedup_vs_dense", "median_ms", "gbps", "pct_bw"], value="speedup_vs_dense", label="value",
                          elem_id="sparse-rec-value")
        rec_txt = gr.Markdown(elem_id="sparse-records-text")   # status line: missing records are said here
        rec = gr.Plot(label="committed CPU benchmark", elem_id="sparse-records-plot")
        cross_dev = gr.Radio(list(demo.DEVICES), value="cpu", label="crossover map of the device",
                             elem_id="sparse-crossover-device")
        cross_txt = gr.Markdown(elem_id="sparse-crossover-text")
        cross = gr.Plot(label="the dispatcher's crossover map", elem_id="sparse-crossover-plot")
    with gr.Tab("Accuracy"):
        task = gr.Dropdown(list(demo.TASKS), value="MLP on digits", label="task", elem_id="sparse-task")
        acc_txt = gr.Markdown(elem_id="sparse-accuracy-text")
        acc = gr.Plot(label="accuracy vs sparsity", elem_id="sparse-accuracy-plot")

    def _measure(size, batch, sparsity, bank, methods, progress=gr.Progress()):
        return measure(size, batch, sparsity, bank, methods, progress=progress)

    pat_out = [pattern, hist, rowhist, summary]
    for ctl in (sparsity, bank):
        ctl.change(guard(patterns, 4), [sparsity, bank], pat_out, api_name=False)
    run.click(guard(_measure, 2), [size, batch, sparsity, bank, methods], [speed, speed_txt], api_name="sparse_measure")
    # load events run on every page of the hub: a missing record set goes to the tab's status lines, never to a
    # page-wide error toast
    task.change(guard(accuracy, 2), [task], [acc, acc_txt], api_name=False)
    for ctl in (rx, rv):
        ctl.change(guard(records, 2), [rx, rv], [rec, rec_txt], api_name=False)
    on_load(guard(patterns, 4), [sparsity, bank], pat_out, api_name="sparse_patterns")
    on_load(guard(accuracy, 2), [task], [acc, acc_txt])
    on_load(guard(records, 2), [rx, rv], [rec, rec_txt])
    cross_dev.change(guard(crossover, 2), [cross_dev], [cross, cross_txt], api_name=False)
    on_load(guard(crossover, 2), [cross_dev], [cross, cross_txt])


if __name__ == "__main__":
    launch(build, title="Balanced sparsity")
