"""`workbench bench simmim`: SimMIM pre-training throughput and the app's reconstruction latency.

1. Pre-training images/s (forward + backward + AdamW step, masked L1, random masks) of the tiny Swin V2
   (``swinv2_lite_window4_64``) and the tiny ViT (``vit_lite_patch8_64``) at the laptop size (64 px) and
   at the paper's 192 px (Swin: window 6 so the 48/24/12/6 stage maps tile; ViT: 24x24 tokens),
   interleaved with workbench.bench.
2. The app tab's latency for a slider change: ``demos.simmim.panel`` (mask, reconstruction, AvgDist, both
   figures, the classical inpainters) with a different mask ratio each call, median and p95 — the target is < 0.3 s median on CPU.

    workbench bench simmim                  # CPU, 1 thread
    workbench bench simmim --device cuda    # on a GPU (batch 64)
"""
from __future__ import annotations

import argparse
import os

from workbench import bench
from workbench.helptext import HelpFormatter

DURATION = "about 5 minutes"  # a default run on 2 cores


def _pretrain_step_fns(device, batch: int, sizes: tuple[int, ...]):
    import torch

    from workbench import simmim as sm

    fns, meta = {}, {}
    for name in ("swinv2_lite_window4_64", "vit_lite_patch8_64"):
        for size in sizes:
            over = {"img_size": size}
            if name.startswith("swin") and size != 64:
                over["window_size"] = 6
            torch.manual_seed(0)
            model = sm.build_simmim(name, **over).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.05)
            mask_patch = 32 if size >= 192 else 16
            gen = sm.MaskGenerator(size, mask_patch, model.patch_size, 0.6)
            x = torch.randn(batch, 3, size, size, device=device)
            mask = gen.batch(batch, seed=0).float().to(device)

            def step(model=model, opt=opt, x=x, mask=mask):
                loss = model(x, mask)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 5.0)
                opt.step()

            key = f"{name} @ {size}px"
            fns[key] = step
            meta[key] = {"model": name, "img_size": size, "mask_patch": mask_patch,
                         "params_M": sum(p.numel() for p in model.parameters()) / 1e6}
    return fns, meta


def _with_cpu_time(fn, sink: list):
    """Wrap ``fn`` so each call's process CPU time lands in ``sink`` (a load-independent proxy on a shared CPU)."""
    import time

    def wrapped():
        t0 = time.process_time()
        fn()
        sink.append(time.process_time() - t0)

    return wrapped


def main(argv: list[str] | None = None) -> int:
    import numpy as np
    import torch

    p = argparse.ArgumentParser(prog="workbench bench simmim", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when present).")
    p.add_argument("--batch", type=int, default=None, help="Pre-training batch (default: 16 on CPU, 64 on GPU).")
    p.add_argument("--sizes", default="64,192", help="Comma-separated image sizes.")
    p.add_argument("--repeats", type=int, default=5, help="Timed repetitions of a pre-training step.")
    p.add_argument("--latency-repeats", type=int, default=40, help="Timed app requests.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads.")
    p.add_argument("--max-seconds", type=float, default=120.0, help="Time budget of one configuration, in seconds.")
    bench.add_output_arguments(p)
    p.add_argument("--name", default="simmim", help="File name of the results (without extension).")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(bench.resolve_devices(args.device)[0])
    gpu = device.type == "cuda"
    batch = args.batch or (64 if gpu else 16)
    sync = torch.cuda.synchronize if gpu else None
    rows = []

    fns, meta = _pretrain_step_fns(device, batch, tuple(int(s) for s in args.sizes.split(",")))
    cpu = {k: [] for k in fns}
    timed = {k: (_with_cpu_time(f, cpu[k]) if not gpu else f) for k, f in fns.items()}
    times = bench.interleaved(timed, repeats=args.repeats, warmup=1, sync=sync, max_seconds=args.max_seconds)
    for k, t in times.items():
        s = bench.summarize(t)
        c = float(np.median(cpu[k][-len(t):])) if cpu[k] else float("nan")
        rows.append({"measure": "pre-training step", "what": k, "batch": batch,
                     "params (M)": round(meta[k]["params_M"], 2), "median (s)": s["median"], "p95 (s)": s["p95"],
                     "images/s": batch / s["median"], "CPU s/call": c,
                     "images/CPU-s": batch / c if cpu[k] else "", "n": s["n"]})
        print(f"{k}: {batch / s['median']:.1f} images/s wall, {batch / c:.1f} images per CPU-second", flush=True)

    if not gpu:  # the app runs on CPU
        from workbench.demos import simmim as demo

        ratios = np.round(np.linspace(0.1, 0.9, 17), 2)
        for model in ("Swin V2 lite (SimMIM)", "ViT lite (SimMIM)"):
            state = {"i": 0}

            def change(model=model, state=state):
                r = float(ratios[state["i"] % len(ratios)])
                state["i"] += 1
                demo.panel("photo: astronaut", "random", r, 16, 0, model)  # what the app tab's handler runs

            sink: list = []
            t = bench.interleaved({model: _with_cpu_time(change, sink)}, repeats=args.latency_repeats, warmup=2)[model]
            s = bench.summarize(t)
            c = float(np.median(sink[-len(t):]))
            rows.append({"measure": "app slider change", "what": model, "batch": 1, "params (M)": "",
                         "median (s)": s["median"], "p95 (s)": s["p95"], "images/s": "", "CPU s/call": c,
                         "images/CPU-s": "", "n": s["n"]})
            print(f"app latency {model}: median {s['median'] * 1000:.0f} ms, p95 {s['p95'] * 1000:.0f} ms wall, "
                  f"{c * 1000:.0f} ms CPU", flush=True)

    notes = ("Pre-training step = forward + masked L1 + backward + clip + AdamW on random inputs with SimMIM random "
             "masks (ratio 0.6; mask patch 16 px at 64 px, 32 px at 192 px). App slider change = "
             "`demos.simmim.panel` (the app tab's function: demo image, mask, reconstruction, AvgDist, figures, classical inpainters) with a new "
             f"mask ratio each call; target < 0.3 s median on CPU. Threads: {args.threads}. The machine is shared "
             f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores at the end of this run), so wall "
             "times include waiting for a core; 'CPU s/call' is the process CPU time of one call, what a call "
             "costs on an idle core.")
    bench.write_results(args.name, rows, title="SimMIM: pre-training throughput and app latency",
                        columns=["measure", "what", "batch", "params (M)", "median (s)", "p95 (s)", "images/s",
                                 "CPU s/call", "images/CPU-s", "n"],
                        notes=notes, out_dir=bench.output_dir(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
