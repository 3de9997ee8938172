"""``workbench bench moby``: MoBY pre-training step time and its breakdown.

Parts of one step (batch B, two views) timed side by side, interleaved (workbench.bench):

* ``augment``      the asymmetric two-view augmentation of B images (data side, per-sample, CPU);
* ``online``       online encoder + projector + predictor forward of both views, then backward;
* ``target``       momentum encoder + projector forward of both views (no gradient);
* ``loss``         the symmetric contrastive loss against the two queues (forward + backward);
* ``queue``        enqueue of both key batches at the shared pointer;
* ``momentum``     the momentum update of encoder_k and projector_k;
* ``step``         the whole training step (forward, backward, AdamW step, momentum update, enqueue).

CPU always; CUDA as well when a GPU is present (``--device cuda`` only).
"""
from __future__ import annotations

import argparse

from workbench import bench
from workbench.helptext import HelpFormatter

DURATION = "about 3 minutes"  # a default run on 2 cores


def _parts(backbone: str, img_size: int, batch: int, device: str, queue: int):
    import torch
    import torch.nn.functional as F

    from workbench import moby

    torch.manual_seed(0)
    cfg = moby.MoBYConfig(proj_hidden=512, pred_hidden=512, out_dim=128, queue_size=queue, drop_path_online=0.1)
    model = moby.build_moby(backbone, cfg, img_size=img_size).to(device).train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    x1 = torch.rand(batch, 3, img_size, img_size, device=device)
    x2 = torch.rand(batch, 3, img_size, img_size, device=device)
    imgs = torch.rand(batch, 3, img_size + img_size // 4, img_size + img_size // 4)
    views = moby.two_view_transform(img_size)
    with torch.no_grad():
        z1, z2 = model.target(x1), model.target(x2)
    p1 = F.normalize(torch.randn(batch, cfg.out_dim, device=device), dim=1).requires_grad_()
    p2 = F.normalize(torch.randn(batch, cfg.out_dim, device=device), dim=1).requires_grad_()
    state = {"k": 0}

    def augment():
        g = torch.Generator().manual_seed(0)
        for x in imgs:
            views(x, g)

    def online():
        loss = model.online(x1).sum() + model.online(x2).sum()
        loss.backward()
        opt.zero_grad(set_to_none=True)

    def target():
        with torch.no_grad():
            model.target(x1), model.target(x2)

    def loss():
        moby.moby_loss(p1, p2, z1, z2, model.queue1, model.queue2, cfg.temperature).backward()

    def queue_():
        model.enqueue(z1, z2)

    def momentum():
        model.momentum_update(state["k"] % 100, 100)

    def step():
        opt.zero_grad(set_to_none=True)
        model(x1, x2).backward()
        opt.step()
        state["k"] += 1
        model.momentum_update(state["k"] % 100, 100)

    parts = {"augment": augment, "online": online, "target": target, "loss": loss, "queue": queue_,
             "momentum": momentum, "step": step}
    if device != "cpu":
        parts.pop("augment")  # the augmentation runs on the CPU data side
    return parts


def main(argv: list[str] | None = None) -> None:
    import torch

    p = argparse.ArgumentParser(prog="workbench bench moby", description=__doc__.split("\n\n")[0],
                                formatter_class=HelpFormatter)
    p.add_argument("--backbones", nargs="+", default=["swinv2_lite_window4_64", "vit_lite_patch8_64"],
                   help="Backbones to time.")
    p.add_argument("--img-size", type=int, default=32, help="Image side in pixels.")
    p.add_argument("--batch", type=int, default=64, help="Images per batch.")
    p.add_argument("--queue", type=int, default=1024, help="Keys per MoBY queue.")
    p.add_argument("--repeats", type=int, default=7, help="Timed repetitions per part.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads.")
    p.add_argument("--device", choices=["all", "cpu", "cuda"], default="all", help="Devices to time (cuda only when present).")
    p.add_argument("--max-seconds", type=float, default=60.0, help="Time budget of one backbone and device, in seconds.")
    bench.add_output_arguments(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = []
    for device in bench.resolve_devices(a.device):
        sync = bench.sync_for(device)
        for backbone in a.backbones:
            fns = _parts(backbone, a.img_size, a.batch, device, a.queue)
            samples = bench.interleaved(fns, repeats=a.repeats, warmup=1, sync=sync, max_seconds=a.max_seconds)
            step = bench.summarize(samples["step"])["median"]
            for name, s in samples.items():
                st = bench.summarize(s)
                rows.append({"device": device, "backbone": backbone, "part": name, "median_ms": 1e3 * st["median"],
                             "p95_ms": 1e3 * st["p95"], "share_of_step": st["median"] / step, "n": st["n"]})
                print(f"{device:4s} {backbone:24s} {name:9s} {1e3 * st['median']:9.2f} ms  "
                      f"({100 * st['median'] / step:5.1f}% of a step)")
    notes = (f"Batch {a.batch} images of {a.img_size} px, two views, queue {a.queue}, projector/predictor 512-128, "
             f"{a.threads} CPU thread(s). `online` is forward + backward of both views; `target` is the no-grad "
             "momentum branch; `step` is one whole optimizer step (its parts overlap: it is not their sum). "
             "`augment` is the per-sample two-view augmentation of the batch (CPU data side). Wall-clock medians: "
             "on a shared, loaded machine (load average above) compare the parts of one run, which are interleaved, "
             "rather than absolute values across machines. "
             + ("" if torch.cuda.is_available() else "No GPU on this machine: CUDA rows appear when one is present. ")
             +
             "Command: `workbench bench moby` (" + " ".join(argv or []) + ").")
    bench.write_results("moby", rows, title="MoBY pre-training step breakdown",
                        columns=["device", "backbone", "part", "median_ms", "p95_ms", "share_of_step", "n"],
                        notes=notes, out_dir=bench.output_dir(a))


if __name__ == "__main__":
    main()
