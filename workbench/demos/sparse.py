"""Balanced-sparsity demo: pruning patterns of a trained weight, live CPU speed (kernel and whole model, with the
path the dispatcher took and why), the committed benchmark, the dispatcher's crossover map and the accuracy study.

Used by the "Sparse" dashboard tab, the explorer of notebook 07 and the tests. Numbers come from
:mod:`workbench.sparse.measure`; figures from :mod:`workbench.viz.sparse`.
"""
from __future__ import annotations

from pathlib import Path

from workbench.demos.common import Panel, check_choice, check_float, check_int
from workbench.sparse import measure

BANKS = (16, 32, 64)
SIZES = tuple(s for s in (256, 512, 1024, 2048) if s <= measure.LIVE_MAX_SIZE)   # never more than the live limit
METHODS = ("dense", "csr", "block", "balanced", "model")
SWEEP = (0.5, 0.75, 0.9, 0.95)
TASKS = {"MLP on digits": "mlp", "char-LSTM language model": "lstm", "Swin V2 on shapes": "swin"}


def patterns(sparsity: float = 0.9, bank_size: int = 32, weight: str | None = None) -> Panel:
    """Every pruning pattern of a trained weight at ``sparsity``, nonzeros per bank and per row, and a summary."""
    from workbench.viz import sparse as vz

    sparsity = check_float("sparsity", sparsity, 0.0, 1.0, open_hi=True)
    bank_size = check_choice("bank size", int(bank_size), BANKS)
    name, W = measure.example_weight(weight)
    masks = measure.masks_for(W, sparsity, bank_size)
    bal = measure.load_balance(masks, bank_size)
    lines = ["| method | kept | row work max/mean |", "|---|---|---|"]
    for m, mask in masks.items():
        lines.append(f"| {vz.LABELS.get(m, m)} | {100 * float(mask.float().mean()):.2f}% | {bal[m]['imbalance']:.2f} |")
    fig = vz.pattern_figure(W, masks, rows=32, cols=2 * bank_size, bank_size=bank_size,
                            title=f"{name} {tuple(W.shape)}: kept weights at {100 * sparsity:.1f}% (top-left crop)")
    return Panel({"patterns": fig, "per_bank": vz.bank_histogram(bal, bank_size),
                  "per_row": vz.bank_histogram(bal, bank_size, key="per_row")}, "\n".join(lines),
                 values={"balance": bal})


def live(size: int = 1024, batch: int = 1, sparsity: float = 0.9, bank_size: int = 64, methods=METHODS,
         progress=None) -> Panel:
    """Time the kernels and a whole model on this CPU over a sparsity sweep (plus the chosen sparsity)."""
    from workbench.viz import sparse as vz

    size = check_choice("matrix size", check_int("matrix size", size, 1, 1 << 20), SIZES)
    batch = check_int("batch", batch, 1, measure.LIVE_MAX_BATCH)
    bank_size = check_choice("bank size", int(bank_size), BANKS)
    sparsity = check_float("sparsity", sparsity, 0.0, 1.0, open_hi=True)
    methods = list(methods or [])
    if not methods:
        raise ValueError("choose at least one method")
    sweep = sorted(set(SWEEP) | {round(sparsity, 4)})
    rows = measure.live_speed(size, batch, sweep, bank_size, methods=methods, repeats=5, progress=progress)
    fig = vz.live_speed_figure(rows, gpu_rows=measure.gpu_records(), size=size, batch=batch)
    fig.add_vline(x=sparsity, line_dash="dash", line_color="#888")
    txt = "| sparsity | " + " | ".join(methods) + " |\n|---|" + "---|" * len(methods) + "\n"
    for s in sweep:
        cells = {r["method"]: r for r in rows if r["sparsity"] == s}
        txt += f"| {s:.3f} | " + " | ".join(f"{cells[m]['median_ms']:.3f} ms ({cells[m]['speedup']:.2f}x)"
                                             if m in cells else "" for m in methods) + " |\n"
    chosen = {r["method"]: r for r in rows if r["sparsity"] == round(sparsity, 4)}
    for m in ("balanced", "model"):
        if m in chosen and chosen[m].get("path"):
            what = "the balanced kernel" if m == "balanced" else "the model's layers"
            txt += f"\nAt {sparsity:.3f}, {what}: **{chosen[m]['path']}** — {chosen[m]['reason']}"
    gpu = measure.gpu_records()
    txt += ("\n\nGPU curves: committed records from " + gpu[0].get("device", "a GPU") if gpu
            else "\n\nNo GPU records are committed yet (`workbench bench sparse --device cuda` on a GPU machine).")
    return Panel({"speed": fig}, txt, values={"rows": rows})


def records(x: str = "target", value: str = "speedup_vs_dense", batch: int = 1) -> Panel:
    from workbench.viz import sparse as vz

    rows = measure.cpu_records()
    if not rows:
        raise ValueError("no committed CPU benchmark records; run `workbench bench sparse --commit`")
    check_choice("x axis", x, ("target", "size", "batch"))
    check_choice("value", value, ("speedup_vs_dense", "median_ms", "gbps", "pct_bw"))
    info = measure.cpu_results().get("machine", {})
    title = f"committed CPU benchmark ({info.get('threads', info.get('torch_threads', '?'))} threads, {info.get('cpu', '')})"
    return Panel({"records": vz.records_speed_figure(rows, x=x, value=value, batch=batch, title=title)},
                 "4096x4096, 90.6% balanced (committed):\n" + "\n".join(f"- {ln}" for ln in speed_summary(rows).splitlines())
                 + "\n\n90.6% balanced on the GPU (committed):\n"
                 + "\n".join(f"- {ln}" for ln in gpu_summary().splitlines()))


def gpu_summary(rows=None) -> str:
    """The committed GPU benchmark against issue 16's GPU goals, in a few lines (2 significant digits): at 90.6%,
    per call (the call alone on an idle GPU, host time included) and queued (the GPU's own time)."""
    rows = measure.gpu_records() if rows is None else rows
    if not rows:
        return "No committed GPU benchmark (`workbench bench sparse --device cuda --commit` on a GPU machine)."

    def at(size, batch, method):
        return next((r for r in rows if r["size"] == size and r["batch"] == batch and r.get("target") == 0.9
                     and r["method"] == method), None)

    def us(ms):
        return f"{ms * 1e3:.2g}" if ms < 0.1 else f"{ms * 1e3:.0f}"

    lines = [f"GPU: {rows[0].get('device', 'unknown')}"]
    for size, batch in ((4096, 1), (4096, 8), (16384, 1), (16384, 8)):
        b = at(size, batch, "balanced_fp32")
        if not b:
            continue
        lines.append(f"{size}^2 batch {batch} ({b.get('kernel', '')}): per call {us(b['median_ms'])} us, "
                     f"{b['speedup_vs_dense']:.2g}x cuBLAS, {b['speedup_vs_cusparse']:.2g}x cuSPARSE; queued "
                     f"{us(b['queued_ms'])} us, {b['queued_speedup_vs_dense']:.2g}x cuBLAS, "
                     f"{b['queued_speedup_vs_cusparse']:.2g}x cuSPARSE, {b['queued_pct_bw']:.0f}% of HBM bandwidth")
    return "\n".join(lines)


def speed_summary(rows=None) -> str:
    """The committed CPU benchmark against issue 16's goals, in a few lines (2 significant digits): 4096x4096 at
    90.6% (6 of 64 kept) — batch 1 against dense, CSR and the bandwidth, batches 4-128 against dense and torch CSR,
    and the two whole models."""
    rows = measure.cpu_records() if rows is None else rows
    if not rows:
        return "No committed CPU benchmark (`workbench bench sparse --commit`)."

    def at(batch, method, size=4096):
        return next((r for r in rows if r["size"] == size and r["batch"] == batch and r.get("target") == 0.9
                     and r["method"] == method), None)

    def x(a, b):
        return f"{b['median_ms'] / a['median_ms']:.2g}x" if a and b else "n/a"

    lines = []
    b1 = at(1, "balanced")
    if b1:
        rd, ki = at(1, "read_same_bytes"), at(1, "kernel_into_y")
        lines.append(f"batch 1: {b1['median_ms']:.2g} ms, {b1['speedup_vs_dense']:.2g}x the best dense, "
                     f"{x(b1, at(1, 'csr_scipy'))} scipy CSR, {x(b1, at(1, 'csr_torch'))} torch CSR, "
                     f"{b1['pct_bw']:.0f}% of the read bandwidth"
                     + (f" ({100 * rd['median_ms'] / b1['median_ms']:.0f}% of the rate of a plain threaded read of "
                        "the same bytes)" if rd else "")
                     + (f"; the kernel alone, into a preallocated y: {ki['pct_bw']:.0f}%" if ki else ""))
    for n in (4, 8, 16, 32, 64, 128):
        b = at(n, "balanced")
        if b:
            lines.append(f"batch {n} ({b.get('kernel', '')}): {b['speedup_vs_dense']:.2g}x the best dense, "
                         f"{x(b, at(n, 'csr_torch'))} torch CSR")
    for kind, what in (("mlp", "three 4096x4096 Linear + GELU"), ("lstm", "2-layer LSTM, hidden 1500, 16 steps")):
        d = next((r for r in rows if r["method"] == f"model_{kind}_dense"), None)
        sp = next((r for r in rows if r["method"] == f"model_{kind}_sparse"), None)
        if d and sp:
            lines.append(f"in a model ({what}, batch 1): {d['median_ms'] / sp['median_ms']:.2g}x the dense model")
    return "\n".join(lines)


DEVICES = ("cpu", "cuda")


def crossover(device: str = "cpu") -> Panel:
    """The dispatcher's measured table for ``device`` ("cpu" or "cuda"): where the balanced kernel beats
    ``F.linear`` (by size, batch, sparsity)."""
    from workbench.viz import sparse as vz

    device = check_choice("device", device, DEVICES)
    m = measure.crossover_map(device)
    if not m["records"]:
        raise ValueError(f"no {device.upper()} crossover table; run `workbench bench sparse --crossover"
                         f"{' --device cuda' if device == 'cuda' else ''}`")
    if device == "cuda":
        how = (f"{m.get('gpu')}, fp32, layers timed 10 forwards in a row; on another GPU the dispatcher asks for "
               f"{m.get('other_gpu_margin')}x")
    else:
        how = f"{m.get('backend')}, {m.get('threads')} thread(s)"
    return Panel({"crossover": vz.crossover_figure(m["records"])},
                 f"Measured: {Path(m['source']).name} ({how}); the dispatcher uses the sparse kernel only where it is "
                 f"at least {m.get('margin')}x faster.", values=m)


def accuracy(task_label: str = "MLP on digits", records=None) -> Panel:
    """Metric vs sparsity per pruning method (mean ± sd over seeds) from the committed study records (or the
    protocol records given, e.g. a study read through ``report.packaged_studies()``)."""
    from workbench.viz import sparse as vz

    task = TASKS[check_choice("task", task_label, list(TASKS))]
    recs = [r for r in (measure.accuracy_records() if records is None else records) if r.get("part") == task]
    if not recs:
        raise ValueError(f"no study records for {task_label}; run `workbench train sparse-study --commit`")
    keys = [k for k in recs[0]["metrics"] if "@" in k and not k.endswith(":actual_sparsity")]
    curves: dict[str, dict[float, list[float]]] = {}
    for k in keys:
        method, s = k.split("@")
        curves.setdefault(method, {})[float(s)] = [r["metrics"][k] for r in recs]
    dense = [r["metrics"]["dense"] for r in recs]
    metric = "test perplexity" if task == "lstm" else "test accuracy"
    fig = vz.accuracy_figure(curves, dense, metric=metric, title=f"{task_label}: {metric} vs sparsity "
                                                                 f"(mean ± sd over {len(recs)} seeds)")
    return Panel({"accuracy": fig}, "", values={"curves": curves, "dense": dense})
