"""Swin Transformer V2 claims at laptop scale: ``workbench train swinv2-study``.

1. Activation growth (paper Fig. 2): per-block residual-stream amplitude of a deep narrow model with
   pre-norm (V1) versus residual post-norm (V2), at initialisation and after a short training on shapes.
2. Attention logits: the range of the attention logits (q.k/sqrt(d) for dot product, tau*cos for scaled
   cosine) of the same models; cosine logits are bounded by the learnable scale.
3. Resolution / window transfer (paper Table 1): train at 64 px / window 4 on shapes, evaluate at 128 px /
   window 8 without fine-tuning and after a short fine-tune, for the parametric bias (bicubic
   interpolation), linear-spaced CPB and log-spaced CPB.

Records go to ``studies/swin_v2/*.jsonl`` and ``studies/swin_v2/README.md``; ``--save-demo`` writes the
demo checkpoint ``workbench/assets/checkpoints/swinv2_micro_shapes64.pt`` (the log-CPB model of part 3,
float16, plus the parametric model's bias tables for the app's comparison).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F

STUDY_MODEL = "swinv2_micro_window4_64"
DEMO_NAME = "swinv2_micro_shapes64"
DEMO_COMMAND = "workbench train swinv2-study --part transfer --save-demo"
BIAS_VARIANTS = {
    "parametric (bicubic)": dict(bias="table"),
    "linear-spaced CPB": dict(bias="cpb_linear"),
    "log-spaced CPB": dict(bias="cpb_log"),
}
NORM_VARIANTS = {
    "V1: pre-norm + dot": dict(norm="pre", attn="dot", bias="table", merge="v1"),
    "pre-norm + cosine": dict(norm="pre", attn="cosine", bias="cpb_log", merge="v2"),
    "V2: res-post-norm + cosine": dict(norm="post", attn="cosine", bias="cpb_log", merge="v2"),
}


def shapes_tensors(n: int, size: int, seed: int, backgrounds: tuple[str, ...] | None = None):
    """(x float (N,3,S,S) in [0,1], y int64) from the procedural shapes set."""
    from workbench.data import shapes

    kw = {"backgrounds": tuple(backgrounds)} if backgrounds else {}
    d = shapes.generate(shapes.ShapesConfig(n=n, size=size, seed=seed, **kw))
    x = torch.from_numpy(d.images).permute(0, 3, 1, 2).float().div_(255)
    return x, torch.from_numpy(d.labels).long()


def _loss(model, batch):
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": float((logits.argmax(-1) == y).float().mean())}


def train_classifier(model, x, y, *, epochs: int, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                     warmup_epochs: float = 1.0, weight_decay: float = 0.05) -> dict:
    """Supervised training with workbench.train.fit (AdamW, cosine schedule, grad clip 5)."""
    from torch.utils.data import TensorDataset

    from workbench.train import TrainConfig, fit

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_lr=lr / 20, warmup_epochs=warmup_epochs,
                      weight_decay=weight_decay, seed=seed, progress=False, device="cpu", log_every=0)
    return fit(model, TensorDataset(x, y), _loss, cfg)


def effective_windows(model) -> tuple[int, ...]:
    """The window each stage really uses (it shrinks to the feature map when that is smaller)."""
    return tuple(layer.blocks[0].window_size for layer in model.layers)


def transfer(model, img_size: int, window_size: int, set_pretrained: bool = True):
    """A copy of ``model`` built for ``img_size`` / ``window_size`` loaded with nothing but its state dict
    (CPB: pretrained window sizes set to the source windows; V1 tables: bicubic interpolation)."""
    from workbench import swin_v2

    cfg = dict(vars(model.cfg))
    cfg.update(img_size=img_size, window_size=window_size)
    if set_pretrained:
        cfg["pretrained_window_sizes"] = effective_windows(model)
    new = swin_v2.SwinTransformerV2(swin_v2.SwinConfig(**cfg))
    swin_v2.transfer_state_dict(new, model.state_dict())
    return new


def accuracy(model, x, y) -> float:
    from workbench.train import evaluate_accuracy

    return evaluate_accuracy(model, x, y, batch_size=128)


# ---------------------------------------------------------------------------------------- part 1 + 2


def logit_stats(model, x) -> list[dict]:
    from workbench.swin_v2 import attention_logits

    out = []
    for lg in attention_logits(model, x):
        out.append({"min": float(lg.min()), "max": float(lg.max()), "std": float(lg.std()),
                    "absmax": float(lg.abs().max())})
    return out


def deep_narrow_model(depth: int = 12, **switches):
    """One stage of ``depth`` blocks, width 16, 2 heads, 16x16 tokens (64 px, patch 4), window 4: an
    isotropic Swin whose residual stream can be compared block to block."""
    from workbench import swin_v2

    return swin_v2.create_model(STUDY_MODEL, depths=(depth,), num_heads=(2,), embed_dim=16,
                                pretrained_window_sizes=(0,), **switches)


def run_activations(args, out: Path) -> list[dict]:
    from workbench import swin_v2
    from workbench.records import write_jsonl

    x, y = shapes_tensors(args.n_deep, 64, seed=0, backgrounds=args.backgrounds)
    probe = x[:32]
    records = []
    for name, sw in NORM_VARIANTS.items():
        torch.manual_seed(0)
        model = deep_narrow_model(args.deep, **sw)
        depths = model.depths
        rec = {"variant": name, "depths": list(depths), "epochs": args.deep_epochs}
        rec["amp_init"] = swin_v2.activation_amplitudes(model, probe)
        rec["logits_init"] = logit_stats(model, probe)
        t0 = time.process_time()
        hist = train_classifier(model, x, y, epochs=args.deep_epochs, lr=args.lr)
        rec["train_cpu_s"] = round(time.process_time() - t0, 1)
        rec["train_acc"] = hist["history"][-1].get("train_acc")
        rec["amp_trained"] = swin_v2.activation_amplitudes(model, probe)
        rec["logits_trained"] = logit_stats(model, probe)
        records.append(rec)
        print(f"[activations] {name}: last/first amplitude init "
              f"{rec['amp_init'][-1] / rec['amp_init'][0]:.2f}, trained {rec['amp_trained'][-1] / rec['amp_trained'][0]:.2f}"
              f"; |logit| max trained {max(s['absmax'] for s in rec['logits_trained']):.2f}")
    write_jsonl(out / "activations.jsonl", records)
    return records


# ---------------------------------------------------------------------------------------- part 3


def run_transfer(args, out: Path) -> list[dict]:
    from workbench import swin_v2
    from workbench.records import write_jsonl

    bg = args.backgrounds
    x, y = shapes_tensors(args.n_train, 64, seed=0, backgrounds=bg)
    xt64, yt = shapes_tensors(args.n_test, 64, seed=1, backgrounds=bg)
    xt128, yt128 = shapes_tensors(args.n_test, 128, seed=1, backgrounds=bg)   # the same scenes at 128 px
    assert torch.equal(yt, yt128)
    xf, yf = shapes_tensors(args.n_finetune, 128, seed=2, backgrounds=bg)
    records, models = [], {}
    variants = {k: v for k, v in BIAS_VARIANTS.items() if not args.variants or v["bias"] in args.variants}
    for name, sw in variants.items():
        torch.manual_seed(0)
        model = swin_v2.create_model(STUDY_MODEL, **sw)
        t0 = time.process_time()
        hist = train_classifier(model, x, y, epochs=args.epochs, lr=args.lr)
        rec = {"variant": name, "bias": sw["bias"], "train": "64px / window 4", "epochs": args.epochs,
               "n_train": args.n_train, "train_acc": hist["history"][-1].get("train_acc"),
               "acc_64_w4": accuracy(model, xt64, yt)}
        big = transfer(model, 128, 8)
        rec["acc_128_w8_zero_shot"] = accuracy(big, xt128, yt)
        train_classifier(big, xf, yf, epochs=args.ft_epochs, lr=args.ft_lr, warmup_epochs=0.0)
        rec["acc_128_w8_finetuned"] = accuracy(big, xt128, yt)
        rec["cpu_s"] = round(time.process_time() - t0, 1)
        records.append(rec)
        models[sw["bias"]] = model
        if args.save_models:
            from workbench.checkpoints import save_checkpoint

            cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(model.cfg).items()}
            save_checkpoint(out / f"model_{sw['bias']}.pt", model, config=cfg, data_seed=0)
        print(f"[transfer] {name}: 64/w4 {rec['acc_64_w4']:.3f} -> 128/w8 zero-shot "
              f"{rec['acc_128_w8_zero_shot']:.3f}, fine-tuned {rec['acc_128_w8_finetuned']:.3f}")
    write_jsonl(out / f"transfer{args.tag}.jsonl", records)
    if args.save_demo:
        save_demo(models["cpb_log"], models["table"], args)
    return records


def save_demo(model, table_model, args=None, path=None):
    """The demo checkpoint: log-CPB model (fp16) + the parametric model's V1 tables (in ``extra``)."""
    from workbench.checkpoints import demo_path, save_checkpoint

    tables = {n: p.detach().half() for n, p in table_model.named_parameters()
              if n.endswith("relative_position_bias_table")}
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in vars(model.cfg).items()}
    return save_checkpoint(path or demo_path(DEMO_NAME), model, config={"name": STUDY_MODEL, **cfg},
                           command=DEMO_COMMAND, data_seed=0, half=True,
                           extra={"v1_tables": tables, "classes": _classes()})


def _classes():
    from workbench.data import shapes

    return list(shapes.CLASSES)


def load_demo_model():
    """(log-CPB demo model in eval mode, {param name: V1 table}); CheckpointError says how to rebuild it."""
    from workbench import swin_v2
    from workbench.checkpoints import load_demo, load_into

    ck = load_demo(DEMO_NAME, DEMO_COMMAND)
    cfg = dict(ck.meta.get("config", {}))
    cfg.pop("name", None)
    model = swin_v2.SwinTransformerV2(swin_v2.SwinConfig(**cfg))
    load_into(model, ck)
    tables = {k: v.float() for k, v in ck.extra.get("v1_tables", {}).items()}
    return model.eval(), tables


# ---------------------------------------------------------------------------------------- tables


def tables_markdown(out: Path) -> str:
    from workbench.records import markdown_table, read_jsonl

    parts = []
    tr = out / "transfer.jsonl"
    if tr.exists():
        rows = [[r["variant"], r["acc_64_w4"], r["acc_128_w8_zero_shot"], r["acc_128_w8_finetuned"],
                 r["acc_128_w8_zero_shot"] - r["acc_64_w4"]] for r in read_jsonl(tr)]
        r0 = read_jsonl(tr)[0]
        parts.append((f"Resolution / window transfer (train 64 px / window 4 on {r0.get('n_train', '?')} images for "
                      f"{r0['epochs']} epochs; test 128 px / window 8: the same 512 test scenes rendered larger)",
                      markdown_table(["position bias", "64/w4", "128/w8 no fine-tune", "128/w8 fine-tuned",
                                      "drop without fine-tune"], rows)))
    ac = out / "activations.jsonl"
    if ac.exists():
        recs = read_jsonl(ac)
        rows = []
        for r in recs:
            for phase in ("init", "trained"):
                a = r[f"amp_{phase}"]
                lg = r[f"logits_{phase}"]
                rows.append([r["variant"], phase, a[0], a[len(a) // 2], a[-1], a[-1] / a[0],
                             min(s["min"] for s in lg), max(s["max"] for s in lg)])
        parts.append((f"Activation amplitude and attention logits (one stage of {recs[0]['depths'][0]} blocks, "
                      f"width 16, {recs[0]['epochs']} epochs on shapes)",
                      markdown_table(["variant", "phase", "amp block 1", "amp middle block", "amp last block",
                                      "last / first", "min logit", "max logit"], rows)))
    return parts


def findings(out: Path) -> str:
    """One data-driven paragraph per claim, computed from the records."""
    from workbench.records import read_jsonl

    lines = []
    if (out / "activations.jsonl").exists():
        ac = {r["variant"]: r for r in read_jsonl(out / "activations.jsonl")}
        g = {k: r["amp_trained"][-1] / r["amp_trained"][0] for k, r in ac.items()}
        v1, v2 = g.get("V1: pre-norm + dot"), g.get("V2: res-post-norm + cosine")
        if v1 is not None and v2 is not None:
            lines.append(f"- Activation growth (last/first block after training): V1 {v1:.2f}x, V2 {v2:.2f}x; "
                         + ("residual post-norm grows less, as the paper reports (one seed; the effect is small at "
                            "this depth and training length)." if v2 < v1 else
                            "not reproduced at this scale."))
        for k, r in ac.items():
            lo = min(s["min"] for s in r["logits_trained"])
            hi = max(s["max"] for s in r["logits_trained"])
            lines.append(f"- Attention logits, {k}: [{lo:.2f}, {hi:.2f}] after training.")
        lines.append("- Cosine logits are bounded by the learned scale tau (<= 100, here about 10) by construction; "
                     "the dot-product logits of this small, briefly trained model stay far below that bound, so "
                     "the drift the paper sees in large models does not show here (the notebook provokes it by "
                     "scaling q/k weights).")
    if (out / "transfer.jsonl").exists():
        tr = read_jsonl(out / "transfer.jsonl")
        best = max(tr, key=lambda r: r["acc_128_w8_zero_shot"] - r["acc_64_w4"])
        ok = best["bias"] == "cpb_log"
        lines.append(f"- Window transfer without fine-tuning: the smallest drop is {best['variant']} "
                     f"({best['acc_128_w8_zero_shot'] - best['acc_64_w4']:+.3f}); the paper's claim (log-spaced CPB "
                     f"degrades least) is {'reproduced' if ok else 'not reproduced'} at this scale. Every variant "
                     "loses most of its accuracy because the objects become twice as many tokens wide, a scale "
                     "change no position bias addresses; the paper transfers ImageNet models trained for 300 "
                     "epochs.")
    return "\n".join(lines)


def write_readme(out: Path, args=None) -> Path:
    from workbench.records import write_markdown

    notes = ("Data: procedural shapes on plain backgrounds (10 classes), 64 px for training. "
             "Fine-tune: one epoch at 128 px / window 8 on 1024 other scenes. "
             "Amplitude: mean |x| of the residual stream after each block on 32 training images. Logits: "
             "attention logits before bias, mask and softmax (q.k/sqrt(d) or tau*cos(q,k)). "
             f"Reproduce: `workbench train swinv2-study` (model `{STUDY_MODEL}`, 1 CPU thread).")
    parts = list(tables_markdown(out))
    text = findings(out)
    if text:
        parts.append(("What the numbers say", text))
    return write_markdown(out / "README.md", "Swin Transformer V2 study (laptop scale)", parts, notes)


def main(argv: list[str] | None = None) -> None:
    from workbench.records import studies_dir

    p = argparse.ArgumentParser(prog="workbench train swinv2-study", description=__doc__.splitlines()[0])
    p.add_argument("--part", choices=["all", "activations", "transfer"], default="all")
    p.add_argument("--out", default=None, help="record folder (default studies/swin_v2)")
    p.add_argument("--n-train", type=int, default=4096)
    p.add_argument("--n-test", type=int, default=512)
    p.add_argument("--n-finetune", type=int, default=1024)
    p.add_argument("--n-deep", type=int, default=1024, help="training images of the activation study")
    p.add_argument("--backgrounds", type=lambda s: tuple(s.split(",")), default=("plain",),
                   help="comma-separated shapes backgrounds (default: plain, which this ~0.6M-parameter "
                        "transformer learns within the CPU budget)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--ft-epochs", type=int, default=1)
    p.add_argument("--deep", type=int, default=12, help="blocks of the deep narrow (one-stage) model")
    p.add_argument("--deep-epochs", type=int, default=2)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--ft-lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--variants", type=lambda s: tuple(s.split(",")), default=None,
                   help="only these position biases of the transfer study (table,cpb_linear,cpb_log)")
    p.add_argument("--tag", default="", help="suffix of the transfer record file (parallel runs)")
    p.add_argument("--save-models", action="store_true", help="also save each trained 64 px model to --out")
    p.add_argument("--save-demo", action="store_true", help=f"write the demo checkpoint {DEMO_NAME}.pt")
    args = p.parse_args(argv)
    if min(args.n_train, args.n_test, args.n_finetune, args.n_deep) < 64 or args.epochs < 1 or args.deep < 1:
        raise SystemExit("n-train/n-test/n-finetune must be >= 64 and epochs/deep >= 1")
    torch.set_num_threads(args.threads)
    out = Path(args.out) if args.out else studies_dir("swin_v2")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.process_time()
    if args.part in ("all", "activations"):
        run_activations(args, out)
    if args.part in ("all", "transfer"):
        run_transfer(args, out)
    path = write_readme(out, args)
    print(f"wrote {path} (CPU {time.process_time() - t0:.0f} s)")


JOBS = {"swinv2-study": (main, "Swin V2: activation growth, attention logits, window transfer (CPB vs table)")}
