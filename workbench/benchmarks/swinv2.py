"""`workbench bench swinv2`: Swin V2 tiny (window 8, 256 px) throughput and peak memory.

Forward and forward+backward images/s of our backbone with the SDPA path and with the explicit reference
path, and of HF transformers' Swinv2ForImageClassification built from the same config, all in one process,
interleaved (workbench.bench). timm's swinv2 cannot be imported here (it needs torchvision, which has no CPU
build on these machines), so HF transformers is the reference implementation instead.

    workbench bench swinv2                       # CPU: batches 1 and 4, 1 thread (32 takes minutes per call on a shared CPU)
    workbench bench swinv2 --batches 1,32        # on a GPU (the default there)
    workbench bench swinv2 --out /tmp/x          # write the results elsewhere (default runs/benchmarks)
"""
from __future__ import annotations

import argparse
import json
import sys

from workbench import bench
from workbench.helptext import HelpFormatter

DURATION = "about 8 minutes"  # a default run on 2 cores


def _models(img, device, dtype):
    import torch
    from transformers import Swinv2Config, Swinv2ForImageClassification

    from workbench.models import create_model

    torch.manual_seed(0)
    ours = create_model("swinv2_tiny_window8_256", img_size=img, drop_path_rate=0.0)
    hf = Swinv2ForImageClassification(Swinv2Config(image_size=img, patch_size=4, embed_dim=96, depths=[2, 2, 6, 2],
                                                   num_heads=[3, 6, 12, 24], window_size=8, num_labels=1000))
    explicit = create_model("swinv2_tiny_window8_256", img_size=img, drop_path_rate=0.0, use_sdpa=False)
    explicit.load_state_dict(ours.state_dict())
    return {"ours (SDPA)": ours.to(device, dtype), "ours (explicit)": explicit.to(device, dtype),
            "HF transformers Swinv2": hf.to(device, dtype)}


def _call(model, x):
    out = model(x)
    return out if not hasattr(out, "logits") else out.logits


def main(argv: list[str] | None = None) -> int:
    import torch

    p = argparse.ArgumentParser(prog="workbench bench swinv2", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--device", default="auto", help="cpu, cuda or auto (a GPU when present).")
    p.add_argument("--batches", default=None, help="Comma-separated batch sizes (default: 1,4 on CPU, 1,32 on GPU).")
    p.add_argument("--img-size", type=int, default=256, help="Image side in pixels.")
    p.add_argument("--repeats", type=int, default=None, help="Timed repetitions (default: as many as the budget allows).")
    p.add_argument("--threads", type=int, default=1, help="Torch threads.")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"], help="Compute dtype.")
    p.add_argument("--max-seconds", type=float, default=120.0, help="Time budget of one (batch, mode), in seconds.")
    bench.add_output_arguments(p)
    p.add_argument("--name", default="swinv2", help="File name of the results (without extension).")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device(bench.resolve_devices(args.device)[0])
    gpu = device.type == "cuda"
    batches = [int(b) for b in (args.batches or ("1,32" if gpu else "1,4")).split(",")]
    repeats = args.repeats or (20 if gpu else 5)
    dtype = getattr(torch, args.dtype)
    models = _models(args.img_size, device, dtype)
    sync = torch.cuda.synchronize if gpu else None
    rows = []
    for bs in batches:
        x = torch.randn(bs, 3, args.img_size, args.img_size, device=device, dtype=dtype)
        for mode in ("forward", "forward+backward"):
            fns = {}
            for name, m in models.items():
                if mode == "forward":
                    m.eval()

                    def fn(m=m, x=x):
                        with torch.no_grad():
                            _call(m, x)
                else:
                    m.train()

                    def fn(m=m, x=x):
                        _call(m, x).float().square().mean().backward()
                        m.zero_grad(set_to_none=True)
                fns[name] = fn
            samples = bench.interleaved(fns, repeats=repeats, warmup=1, sync=sync,
                                        setup=None if gpu else bench.flush_cache, max_seconds=args.max_seconds)
            peak = {}
            if gpu:
                for name, fn in fns.items():
                    torch.cuda.reset_peak_memory_stats()
                    fn()
                    torch.cuda.synchronize()
                    peak[name] = torch.cuda.max_memory_allocated() / 2**20
            ref = bench.summarize(samples["HF transformers Swinv2"])["median"]
            for name in models:
                s = bench.summarize(samples[name])
                rows.append({"batch": bs, "mode": mode, "implementation": name,
                             "images/s": round(bs / s["median"], 2), "median ms": round(1e3 * s["median"], 2),
                             "p95 ms": round(1e3 * s["p95"], 2), "n": s["n"],
                             "speed vs HF": round(ref / s["median"], 3),
                             "peak MiB": round(peak[name], 1) if name in peak else "n/a (CPU)"})
                print(json.dumps(rows[-1]), flush=True)
    notes = (f"Swin V2 tiny, window 8, random weights, {args.img_size} px, {args.dtype}; {args.threads} thread(s). `speed vs HF` = HF median time / "
             "this median time (> 1 means faster than HF transformers' Swinv2 in the same process). timm's swinv2 "
             "could not be measured: timm imports torchvision, which has no CPU build here, so HF transformers is "
             "the reference implementation. Peak memory is measured on CUDA only (torch.cuda.max_memory_allocated)."
             )
    bench.write_results(args.name, rows, title=f"Swin V2 tiny throughput ({device.type})", notes=notes,
                        columns=["batch", "mode", "implementation", "images/s", "median ms", "p95 ms", "n",
                                 "speed vs HF", "peak MiB"], out_dir=bench.output_dir(args))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
