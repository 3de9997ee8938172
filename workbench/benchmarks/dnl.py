"""Benchmark ``workbench bench dnl``: forward time and peak memory of NL / DNL / GC blocks vs map size.

For feature maps of 16x16 to 64x64 positions (batch 2, 64 channels, d = 32): the NL and DNL blocks with the
explicit softmax (the (B, HW, HW) matrix materialised) and with ``F.scaled_dot_product_attention``, and the
GC block (no pairwise term).  Times: median of interleaved repetitions (``workbench.bench``), under
``torch.no_grad()`` with one thread unless ``--threads``.  Peak memory: the growth of the peak resident set
of a fresh subprocess running one forward pass (CPU; ``torch.cuda.max_memory_allocated`` on a GPU).
DNL's overhead over NL is reported as a time ratio at the same path.

    workbench bench dnl [--sizes 16 32 48 64] [--repeats 15] [--threads 1] [--no-memory]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from workbench.helptext import HelpFormatter

DURATION = "about 4 minutes"  # a default run on 2 cores

VARIANTS = {  # name -> (block kind, attention path)
    "NL explicit": ("nl", "explicit"),
    "NL sdpa": ("nl", "sdpa"),
    "DNL explicit": ("dnl", "explicit"),
    "DNL sdpa": ("dnl", "sdpa"),
    "GC": ("gc", "sdpa"),
}
CHANNELS, BATCH = 64, 2

_MEMORY_SNIPPET = r"""
import json, os, sys, torch
torch.set_num_threads(int(sys.argv[4]))
from workbench import dnl

def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key + ":"))

kind, path, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
block = dnl.make_block(kind, CHANNELS).to(dev).eval()
block.attention = path
x = torch.randn(BATCH, CHANNELS, side, side, device=dev)
with torch.no_grad():
    block(x[:, :, :2, :2])  # warm-up on a tiny map: lazy initialisation without a large allocation
    if dev == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (VmHWM) to the current one
        base = status("VmRSS")
    y = block(x)
    if dev == "cuda":
        torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = status("VmHWM") - base
print(json.dumps({"peak_bytes": int(peak)}))
""".replace("CHANNELS", str(CHANNELS)).replace("BATCH", str(BATCH))


def peak_memory_mb(kind: str, path: str, side: int, threads: int) -> float:
    """Peak memory growth (MiB) of one forward pass in a fresh process (after a tiny warm-up pass)."""
    # run from the folder that holds the ``workbench`` package (the checkout or site-packages), so the child imports
    # the same code; not from inside the package, where workbench/inspect.py would shadow the standard library's
    root = Path(__file__).resolve().parents[2]
    # glibc: serve every allocation above 64 KiB with mmap and return it on free, so the resident set
    # follows the live tensors instead of hiding them in memory freed earlier
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run([sys.executable, "-c", _MEMORY_SNIPPET, kind, path, str(side), str(threads)], cwd=root,
                         capture_output=True, text=True, timeout=300, env=env)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"] / 2 ** 20


def main(argv: list[str] | None = None) -> None:
    import torch

    from workbench import bench, dnl

    p = argparse.ArgumentParser(prog="workbench bench dnl", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--sizes", nargs="+", type=int, default=[16, 32, 48, 64], help="Feature-map sides to time.")
    p.add_argument("--repeats", type=int, default=30, help="Timed repetitions per method.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads.")
    p.add_argument("--max-seconds", type=float, default=60.0, help="Time budget of one map size, in seconds.")
    p.add_argument("--no-memory", action="store_true", help="Skip the peak-memory measurement.")
    bench.add_output_arguments(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else None
    rows = []
    for side in a.sizes:
        torch.manual_seed(0)
        x = torch.randn(BATCH, CHANNELS, side, side, device=dev)
        fns = {}
        for name, (kind, path) in VARIANTS.items():
            block = dnl.make_block(kind, CHANNELS).to(dev).eval()
            block.attention = path

            def run(block=block, x=x):
                with torch.no_grad():
                    return block(x)

            fns[name] = run
        times = bench.interleaved(fns, repeats=a.repeats, warmup=2, sync=sync, max_seconds=a.max_seconds)
        med = {k: bench.summarize(v)["median"] for k, v in times.items()}
        low = {k: bench.summarize(v)["min"] for k, v in times.items()}
        for name, (kind, path) in VARIANTS.items():
            row = {"positions": side * side, "map": f"{side}x{side}", "block": name,
                   "ms": med[name] * 1e3, "min_ms": low[name] * 1e3}
            if kind == "dnl":
                row["dnl_over_nl"] = low[name] / low[f"NL {path}"]
            if path == "sdpa" and kind != "gc":
                row["explicit_over_sdpa"] = low[name.replace("sdpa", "explicit")] / low[name]
            row["attn_matrix_mb"] = BATCH * (side * side) ** 2 * 4 / 2 ** 20 if path == "explicit" else 0.0
            if not a.no_memory:
                row["peak_mb"] = peak_memory_mb(kind, path, side, a.threads)
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    cols = ["map", "positions", "block", "ms", "min_ms", "dnl_over_nl", "explicit_over_sdpa", "attn_matrix_mb"]
    if not a.no_memory:
        cols.append("peak_mb")
    notes = (f"Batch {BATCH}, {CHANNELS} channels (d = {CHANNELS // 2}), forward only, no_grad, {a.threads} thread(s), "
             f"device {dev}. ms / min_ms: median / fastest of {a.repeats} interleaved repetitions; the ratios use the "
             "fastest times (robust on a shared, loaded machine): dnl_over_nl = DNL / NL on the same path, "
             "explicit_over_sdpa = explicit softmax / SDPA for the same block. attn_matrix_mb: size of the "
             "(B, HW, HW) float32 attention matrix the explicit path materialises (SDPA never does). peak_mb: "
             "growth of the peak resident set (VmHWM reset via /proc/self/clear_refs) over one forward pass in a "
             "fresh process with glibc's mmap threshold at 64 KiB (CPU); peak allocated memory on a GPU.")
    bench.write_results("dnl", rows, title="NL / DNL / GC blocks: forward time and peak memory vs map size",
                        columns=cols, notes=notes, out_dir=bench.output_dir(a))


if __name__ == "__main__":
    main(sys.argv[1:])
