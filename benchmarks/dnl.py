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
import subprocess
import sys
from pathlib import Path

VARIANTS = {  # name -> (block kind, attention path)
    "NL explicit": ("nl", "explicit"),
    "NL sdpa": ("nl", "sdpa"),
    "DNL explicit": ("dnl", "explicit"),
    "DNL sdpa": ("dnl", "sdpa"),
    "GC": ("gc", "sdpa"),
}
CHANNELS, BATCH = 64, 2

_MEMORY_SNIPPET = r"""
import json, resource, sys, torch
torch.set_num_threads(int(sys.argv[4]))
from workbench import dnl
kind, path, side = sys.argv[1], sys.argv[2], int(sys.argv[3])
dev = "cuda" if torch.cuda.is_available() else "cpu"
torch.manual_seed(0)
block = dnl.make_block(kind, CHANNELS).to(dev).eval()
block.attention = path
x = torch.randn(BATCH, CHANNELS, side, side, device=dev)
with torch.no_grad():
    block(x[:, :, :2, :2])  # warm-up on a tiny map: lazy init without raising the peak
    if dev == "cuda":
        torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); base = torch.cuda.memory_allocated()
    else:
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    y = block(x)
    if dev == "cuda":
        torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated() - base
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
print(json.dumps({"peak_bytes": int(peak)}))
""".replace("CHANNELS", str(CHANNELS)).replace("BATCH", str(BATCH))


def peak_memory_mb(kind: str, path: str, side: int, threads: int) -> float:
    """Peak memory growth (MiB) of one forward pass in a fresh process (after a tiny warm-up pass)."""
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", _MEMORY_SNIPPET, kind, path, str(side), str(threads)], cwd=root,
                         capture_output=True, text=True, timeout=300)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])["peak_bytes"] / 2 ** 20


def main(argv: list[str] | None = None) -> None:
    import torch

    from workbench import bench, dnl

    p = argparse.ArgumentParser(prog="workbench bench dnl", description=__doc__.splitlines()[0])
    p.add_argument("--sizes", nargs="+", type=int, default=[16, 32, 48, 64], help="feature-map sides")
    p.add_argument("--repeats", type=int, default=15)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--max-seconds", type=float, default=60.0, help="per map size")
    p.add_argument("--no-memory", action="store_true")
    p.add_argument("--out", default=None, help="results folder (default benchmarks/results)")
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
        for name, (kind, path) in VARIANTS.items():
            row = {"positions": side * side, "map": f"{side}x{side}", "block": name,
                   "ms": med[name] * 1e3, "p95_ms": bench.summarize(times[name])["p95"] * 1e3}
            if kind == "dnl":
                row["dnl_over_nl"] = med[name] / med[f"NL {path}"]
            if path == "sdpa" and kind != "gc":
                row["explicit_over_sdpa"] = med[name.replace("sdpa", "explicit")] / med[name]
            if not a.no_memory:
                row["peak_mb"] = peak_memory_mb(kind, path, side, a.threads)
            rows.append(row)
            print(json.dumps({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}), flush=True)
    cols = ["map", "positions", "block", "ms", "p95_ms", "dnl_over_nl", "explicit_over_sdpa"]
    if not a.no_memory:
        cols.append("peak_mb")
    notes = (f"Batch {BATCH}, {CHANNELS} channels (d = {CHANNELS // 2}), forward only, no_grad, {a.threads} thread(s), "
             f"device {dev}. ms: median of interleaved repetitions; dnl_over_nl: DNL time / NL time on the same "
             "path; explicit_over_sdpa: explicit-softmax time / SDPA time of the same block; peak_mb: growth of "
             "the peak resident memory of a fresh process over one forward pass (CPU) or peak allocated memory "
             "(GPU). The explicit path holds the (B, HW, HW) attention matrix: 2 x 4096^2 x 4 B = 128 MiB at 64x64.")
    bench.write_results("dnl", rows, title="NL / DNL / GC blocks: forward time and peak memory vs map size",
                        columns=cols, notes=notes, out_dir=a.out)


if __name__ == "__main__":
    main(sys.argv[1:])
