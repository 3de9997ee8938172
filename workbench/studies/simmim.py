"""SimMIM experiments behind ``workbench train simmim | simmim-finetune | simmim-study``.

Laptop-scale versions of the paper's claims (Xie et al., CVPR 2022):

1. SimMIM pre-training then fine-tuning beats training from scratch with the same fine-tuning budget
   (tiny Swin V2 and tiny ViT; shapes classification and scikit-learn digits upsampled to 64 px).
2. Masking: mask patch size x mask ratio -> AvgDist (the whole grid, cheap) and fine-tuned accuracy
   (a subset); the paper finds a moderate AvgDist (large mask patches, ratio ~0.6) works best.
3. Prediction head (linear vs 2-layer) and target loss (L1 vs L2).

Recipe (the official one scaled down): AdamW (0.9, 0.999), weight decay 0.05, linear warmup + cosine to
1e-5, gradient clipping 5.0; fine-tuning with layer-wise lr decay 0.75 (the SwinV2 recipe) and label
smoothing 0.1. Images are ImageNet-normalised; the regression target is the normalised image.

Pre-training data: random resized crops of the bundled photos (``workbench.data.natural.NaturalCrops``)
plus procedural shapes images, no labels. Every run is seeded; one thread keeps numbers reproducible.
"""
from __future__ import annotations

import argparse
import json
import math
import shlex
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch

from workbench import simmim as sm

REPO = Path(__file__).resolve().parents[2]
STUDY_DIR = REPO / "studies" / "simmim"
DEMO_MODELS = {  # checkpoint name -> backbone
    "simmim_swinv2_lite": "swinv2_lite_window4_64",
    "simmim_vit_lite": "vit_lite_patch8_64",
}
DEMO_COMMANDS = {
    "simmim_swinv2_lite": "workbench train simmim --model swinv2_lite_window4_64 --n-natural 3000 "
                          "--n-shapes 1000 --epochs 4 --save workbench/assets/checkpoints/simmim_swinv2_lite.pt",
    "simmim_vit_lite": "workbench train simmim --model vit_lite_patch8_64 --n-natural 3000 "
                       "--n-shapes 1000 --epochs 4 --save workbench/assets/checkpoints/simmim_vit_lite.pt",
}


# ----------------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------------
class ImageTensors(torch.utils.data.Dataset):
    """uint8 (N, 3, S, S) images -> float (3, S, S) in [0, 1]; optional labels."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor | None = None):
        self.images, self.labels = images, labels

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        x = self.images[i].float().div_(255)
        return x if self.labels is None else (x, int(self.labels[i]))


def pretrain_images(n_natural: int = 2000, n_shapes: int = 1000, size: int = 64, seed: int = 0) -> torch.Tensor:
    """Unlabelled pre-training images: photo crops + shapes, uint8 (N, 3, S, S)."""
    from workbench.data import natural, shapes

    parts = []
    if n_natural:
        crops = natural.NaturalCrops(n_natural, size, seed=seed, scale=(0.2, 1.0))
        parts.append(torch.stack([crops[i] for i in range(n_natural)]).mul(255).round().to(torch.uint8))
    if n_shapes:
        d = shapes.load(shapes.ShapesConfig(n=n_shapes, size=size, seed=seed + 1000))
        parts.append(torch.from_numpy(np.ascontiguousarray(d.images)).permute(0, 3, 1, 2).contiguous())
    return torch.cat(parts)


def task_data(task: str, size: int = 64, n_train: int = 1000, n_test: int = 500):
    """(x_train, y_train, x_test, y_test) float images in [0, 1] for ``shapes`` or ``digits``."""
    if task == "shapes":
        from workbench.data import shapes

        tr = shapes.load(shapes.ShapesConfig(n=n_train, size=size, seed=1))
        te = shapes.load(shapes.ShapesConfig(n=n_test, size=size, seed=2))
        f = lambda d: torch.from_numpy(np.ascontiguousarray(d.images)).permute(0, 3, 1, 2).float() / 255  # noqa: E731
        return f(tr), torch.from_numpy(tr.labels), f(te), torch.from_numpy(te.labels)
    if task == "digits":
        from workbench.data import natural

        xtr, ytr = natural.digits("train", size=size, rgb=True)
        xte, yte = natural.digits("test", size=size, rgb=True)
        return xtr[:n_train], ytr[:n_train], xte[:n_test], yte[:n_test]
    raise ValueError(f"unknown task {task!r}; choose 'shapes' or 'digits'")


# ----------------------------------------------------------------------------------------------------------
# pre-training and fine-tuning
# ----------------------------------------------------------------------------------------------------------
@dataclass
class PretrainConfig:
    model: str = "swinv2_lite_window4_64"
    mask_patch_size: int = 16
    mask_ratio: float = 0.6
    strategy: str = "random"
    loss: str = "l1"
    head: str = "linear"
    norm_target_window: int | None = None
    n_natural: int = 1400
    n_shapes: int = 600
    epochs: int = 1
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 0.1
    weight_decay: float = 0.05
    clip_grad: float = 5.0
    seed: int = 0
    log_every: int = 5


@dataclass
class FinetuneConfig:
    task: str = "shapes"
    epochs: int = 3
    batch_size: int = 32
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 0.2
    weight_decay: float = 0.05
    layer_decay: float = 0.75
    label_smoothing: float = 0.1
    n_train: int = 800
    n_test: int = 500
    seed: int = 0


def _train_config(c, out_dir=None, log_every=0):
    from workbench.train import TrainConfig

    return TrainConfig(epochs=c.epochs, batch_size=c.batch_size, lr=c.lr, min_lr=c.min_lr,
                       warmup_epochs=c.warmup_epochs, weight_decay=c.weight_decay,
                       clip_grad=getattr(c, "clip_grad", 5.0), seed=c.seed, out_dir=out_dir,
                       log_every=log_every, progress=False, device="cpu")


def pretrain(cfg: PretrainConfig, out_dir: str | None = None, images: torch.Tensor | None = None):
    """SimMIM pre-training; returns (model, {"history", "steps", "curve", "seconds"})."""
    from workbench.train import fit, read_jsonl

    torch.manual_seed(cfg.seed)
    model = sm.build_simmim(cfg.model, sm.SimMIMConfig(loss=cfg.loss, head=cfg.head,
                                                       norm_target_window=cfg.norm_target_window))
    size = model.encoder.img_size
    if images is None:
        images = pretrain_images(cfg.n_natural, cfg.n_shapes, size, cfg.seed)
    gen = sm.MaskGenerator(size, cfg.mask_patch_size, model.patch_size, cfg.mask_ratio)
    if out_dir:
        p = Path(out_dir) / "metrics.jsonl"
        if p.exists():
            p.unlink()
    t0 = time.process_time()
    res = fit(model, ImageTensors(images), sm.mim_loss_fn(gen, cfg.seed, cfg.strategy),
              _train_config(cfg, out_dir, cfg.log_every),
              param_groups=_weight_decay_groups(model, cfg.weight_decay))
    res["seconds"] = time.process_time() - t0
    res["curve"] = []
    if out_dir and (Path(out_dir) / "metrics.jsonl").exists():
        res["curve"] = [(r["step"], r["loss"]) for r in read_jsonl(Path(out_dir) / "metrics.jsonl")
                        if r.get("kind") == "step"]
    model.eval()
    return model, res


def _weight_decay_groups(model, wd):
    from workbench.train import param_groups_weight_decay

    return param_groups_weight_decay(model, wd)


def finetune(model_name: str, cfg: FinetuneConfig, init: dict | None = None, data=None) -> dict:
    """Fine-tune a classifier (from SimMIM weights ``init`` — an official-layout state dict — or scratch)."""
    from workbench.train import fit

    xtr, ytr, xte, yte = data if data is not None else task_data(cfg.task, 64, cfg.n_train, cfg.n_test)
    torch.manual_seed(cfg.seed)
    clf = sm.create_encoder(model_name, num_classes=10, img_size=xtr.shape[-1])
    if init is not None:
        sm.load_encoder_for_finetune(clf, init)
    groups = sm.layer_decay_param_groups(clf, cfg.weight_decay, cfg.layer_decay if init is not None else 1.0)
    t0 = time.process_time()
    res = fit(clf, ImageTensors((xtr * 255).round().to(torch.uint8), ytr),
              sm.classification_loss_fn(cfg.label_smoothing), _train_config(cfg), param_groups=groups)
    acc = sm.evaluate_accuracy(clf, xte, yte)
    return {"acc": acc, "train_loss": res["history"][-1]["train_loss"], "seconds": time.process_time() - t0,
            "model": clf}


# ----------------------------------------------------------------------------------------------------------
# command-line jobs
# ----------------------------------------------------------------------------------------------------------
def _add_common(p: argparse.ArgumentParser):
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 keeps numbers reproducible)")


def main_pretrain(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="workbench train simmim", description="SimMIM pre-training of one backbone.")
    d = PretrainConfig()
    p.add_argument("--model", default=d.model)
    p.add_argument("--mask-patch-size", type=int, default=d.mask_patch_size)
    p.add_argument("--mask-ratio", type=float, default=d.mask_ratio)
    p.add_argument("--strategy", default=d.strategy, choices=sm.STRATEGIES)
    p.add_argument("--loss", default=d.loss, choices=sm.LOSSES)
    p.add_argument("--head", default=d.head, choices=sm.HEADS)
    p.add_argument("--norm-target-window", type=int, default=None)
    p.add_argument("--n-natural", type=int, default=d.n_natural)
    p.add_argument("--n-shapes", type=int, default=d.n_shapes)
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out-dir", default=None, help="metrics.jsonl + last.pt go here")
    p.add_argument("--save", default=None, help="write the pre-trained model here (float16 demo checkpoint)")
    _add_common(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = PretrainConfig(model=a.model, mask_patch_size=a.mask_patch_size, mask_ratio=a.mask_ratio,
                         strategy=a.strategy, loss=a.loss, head=a.head, norm_target_window=a.norm_target_window,
                         n_natural=a.n_natural, n_shapes=a.n_shapes, epochs=a.epochs, batch_size=a.batch_size,
                         lr=a.lr, seed=a.seed)
    model, res = pretrain(cfg, a.out_dir)
    last = res["history"][-1]
    print(f"pre-trained {cfg.model}: {res['steps']} steps, final train loss {last['train_loss']:.4f}, "
          f"{res['seconds']:.0f} s CPU")
    if a.save:
        from workbench.checkpoints import save_checkpoint

        save_checkpoint(a.save, model, config=asdict(cfg), half=True, data_seed=cfg.seed,
                        command="workbench train simmim " + shlex.join(argv),
                        extra={"curve": res["curve"], "history": res["history"]})
        print(f"saved {a.save}")


def main_finetune(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="workbench train simmim-finetune",
                                description="Fine-tune a backbone (SimMIM checkpoint or scratch) on shapes/digits.")
    d = FinetuneConfig()
    p.add_argument("--model", default="swinv2_lite_window4_64")
    p.add_argument("--init", default=None, help="a SimMIM checkpoint (ours or official); omit for scratch")
    p.add_argument("--task", default=d.task, choices=("shapes", "digits"))
    p.add_argument("--epochs", type=int, default=d.epochs)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--layer-decay", type=float, default=d.layer_decay)
    p.add_argument("--seed", type=int, default=d.seed)
    _add_common(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    init = None
    if a.init:
        from workbench.checkpoints import load_checkpoint

        init = load_checkpoint(a.init).state_dict
        init = {k: v.float() for k, v in init.items()}
    cfg = FinetuneConfig(task=a.task, epochs=a.epochs, lr=a.lr, layer_decay=a.layer_decay, seed=a.seed)
    r = finetune(a.model, cfg, init)
    print(f"{a.model} ({'SimMIM' if init else 'scratch'}) on {a.task}: top-1 {100 * r['acc']:.1f}% "
          f"({r['seconds']:.0f} s CPU)")


# ----------------------------------------------------------------------------------------------------------
# the study
# ----------------------------------------------------------------------------------------------------------
STUDY_MASK_PATCHES = (4, 8, 16, 32)
STUDY_RATIOS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# (mask patch, ratio) pairs pre-trained + fine-tuned in part 2: AvgDist from ~2 to ~27 px at 64 px
STUDY_MASK_RUNS = ((4, 0.6), (8, 0.6), (16, 0.6), (32, 0.3), (32, 0.6), (16, 0.9))
MASK_TASK = "digits"  # parts 2 and 3 fine-tune on digits (the cheaper, less noisy task at this budget)


def study_runs() -> list[dict]:
    """The runs of the committed study.

    Part 1 (claim1) fine-tunes the committed demo checkpoints (4 epochs on 4,000 images, see DEMO_COMMANDS)
    against scratch. Parts 2 (masking) and 3 (head_loss) pre-train for one epoch on 2,000 images each.
    """
    base = PretrainConfig()
    runs = []
    for demo, model in DEMO_MODELS.items():
        runs.append({"part": "claim1", "name": f"{model} scratch", "model": model, "pretrain": None,
                     "tasks": ["shapes", "digits"]})
        runs.append({"part": "claim1", "name": f"{model} simmim", "model": model, "demo": demo,
                     "pretrain": None, "tasks": ["shapes", "digits"]})
    for p, r in STUDY_MASK_RUNS:
        runs.append({"part": "masking", "name": f"mask {p}px r{r}", "model": base.model,
                     "pretrain": replace(base, mask_patch_size=p, mask_ratio=r), "tasks": [MASK_TASK]})
    runs.append({"part": "head_loss", "name": "2-layer head, L1", "model": base.model,
                 "pretrain": replace(base, head="mlp2"), "tasks": [MASK_TASK]})
    runs.append({"part": "head_loss", "name": "linear head, L2", "model": base.model,
                 "pretrain": replace(base, loss="l2"), "tasks": [MASK_TASK]})
    return runs


def avgdist_grid(size: int = 64, model_patch: int = 4, draws: int = 8) -> list[dict]:
    rows = []
    for p in STUDY_MASK_PATCHES:
        for r in STUDY_RATIOS:
            rows.append({"mask_patch_size": p, "mask_ratio": r,
                         "avg_dist": sm.expected_avg_dist(size, p, r, model_patch, draws=draws)})
    return rows


def _fmt(v, nd=1):
    return "∞" if isinstance(v, float) and math.isinf(v) else f"{v:.{nd}f}"


def write_tables(out: Path = STUDY_DIR) -> str:
    """results.md from the committed records (also what the notebook prints)."""
    recs = [json.loads(x) for x in (out / "records.jsonl").read_text().splitlines() if x.strip()]
    grid = json.loads((out / "avgdist.json").read_text())
    ft = FinetuneConfig()
    lines = ["# SimMIM study (laptop scale)", "",
             "Generated by `workbench train simmim-study` (1 CPU thread, single seed). Top-1 accuracy (%) on held-out "
             f"test sets (shapes 500, digits 450 images). Every fine-tuning run: {ft.epochs} epochs on {ft.n_train} "
             f"labelled 64 px images, AdamW lr {ft.lr:g}, layer-wise decay {ft.layer_decay} for pre-trained "
             "encoders, label smoothing 0.1 — identical for scratch and pre-trained models. 'held-out L1' is the "
             "masked L1 of the pre-trained model on 300 unseen images with fixed masks.", ""]
    lines += ["## 1. SimMIM pre-training vs scratch",
              "", "Pre-trained = the committed demo checkpoints (`workbench train simmim ... --epochs 4`: 500 steps "
              "of batch 32 on 4,000 photo crops + shapes, mask patch 16 px, ratio 0.6).", "",
              "| backbone | init | shapes | digits | held-out L1 |", "|---|---|---|---|---|"]
    for r in recs:
        if r["part"] == "claim1":
            pre = r.get("demo") or r.get("pretrain")
            lines.append(f"| {r['model']} | {'SimMIM' if pre else 'scratch'} | "
                         f"{100 * r['acc']['shapes']:.1f} | {100 * r['acc']['digits']:.1f} | "
                         f"{_fmt(r['pretrain_l1'], 3) if pre else '-'} |")
    lines += ["", "## 2. Masking: AvgDist (pixels, 64 px input, mean of 8 masks)", "",
              "| mask patch \\ ratio | " + " | ".join(f"{r:.1f}" for r in STUDY_RATIOS) + " |",
              "|---|" + "---|" * len(STUDY_RATIOS)]
    for p in STUDY_MASK_PATCHES:
        vals = [g["avg_dist"] for g in grid if g["mask_patch_size"] == p]
        lines.append(f"| {p} | " + " | ".join(_fmt(v) for v in vals) + " |")
    scratch = [r for r in recs if r["part"] == "claim1" and not (r.get("demo") or r.get("pretrain"))
               and r["model"].startswith("swin")]
    base = f" (Swin V2 lite from scratch: {100 * scratch[0]['acc'][MASK_TASK]:.1f})" if scratch else ""
    lines += ["", f"Swin V2 lite pre-trained 1 epoch (2,000 images) with each mask, then fine-tuned on {MASK_TASK}{base}:",
              "", f"| mask patch | ratio | AvgDist | held-out L1 | {MASK_TASK} top-1 |", "|---|---|---|---|---|"]
    mrows = [r for r in recs if r["part"] == "masking"]
    for r in sorted(mrows, key=lambda r: r["avg_dist"]):
        lines.append(f"| {r['pretrain']['mask_patch_size']} | {r['pretrain']['mask_ratio']:.1f} | "
                     f"{_fmt(r['avg_dist'])} | {r['pretrain_l1']:.3f} | {100 * r['acc'][MASK_TASK]:.1f} |")
    lines += ["", "## 3. Head and loss (Swin V2 lite, mask 16 px, ratio 0.6, 1 epoch)", "",
              f"| head | loss | held-out L1 | {MASK_TASK} top-1 |", "|---|---|---|---|"]
    for r in recs:
        pc = r.get("pretrain")
        ref = r["part"] == "masking" and pc and (pc["mask_patch_size"], pc["mask_ratio"]) == (16, 0.6)
        if r["part"] == "head_loss" or ref:
            lines.append(f"| {pc['head']} | {pc['loss']} | {r['pretrain_l1']:.3f} | {100 * r['acc'][MASK_TASK]:.1f} |")
    total = sum(r["seconds"] for r in recs)
    lines += ["", f"Total CPU time of the study runs: {total / 60:.1f} min (the demo checkpoints of part 1 "
              "are made separately, ~2 min CPU each).", ""]
    text = "\n".join(lines)
    (out / "results.md").write_text(text)
    return text


@torch.no_grad()
def held_out_l1(model: sm.SimMIM, images: torch.Tensor, gen: sm.MaskGenerator, seed: int = 123) -> float:
    """Masked L1 (official normalisation) on held-out images with fixed masks — comparable across losses."""
    model.eval()
    rng = np.random.default_rng(seed)
    x = sm.normalize(images.float() / 255)
    mask = gen.batch(len(x), rng=rng).float()
    rec = model.predict(x, mask)
    return float(sm.masked_loss(model.target(x), rec, sm.upsample_mask(mask, model.patch_size), "l1"))


def main_study(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="workbench train simmim-study",
                                description="The SimMIM laptop study: pre-train vs scratch, masking, head/loss.")
    p.add_argument("--out", default=str(STUDY_DIR))
    p.add_argument("--only", default=None, help="comma-separated parts: claim1,masking,head_loss")
    p.add_argument("--resume", action="store_true", help="skip runs already in records.jsonl")
    p.add_argument("--tables-only", action="store_true", help="rewrite results.md from the records")
    p.add_argument("--quick", action="store_true", help="a tiny smoke run (few images, first runs only)")
    _add_common(p)
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    if a.tables_only:
        print(write_tables(out))
        return
    (out / "avgdist.json").write_text(json.dumps(avgdist_grid(), indent=1))
    rec_path = out / "records.jsonl"
    done = set()
    if a.resume and rec_path.exists():
        done = {json.loads(x)["name"] for x in rec_path.read_text().splitlines() if x.strip()}
    elif rec_path.exists():
        rec_path.unlink()
    parts = set(a.only.split(",")) if a.only else None
    n_nat, n_sh, n_tr, n_te = (64, 32, 64, 64) if a.quick else (PretrainConfig.n_natural, PretrainConfig.n_shapes,
                                                                FinetuneConfig.n_train, FinetuneConfig.n_test)
    images = pretrain_images(n_nat, n_sh, 64, 0)
    held = pretrain_images(n_nat // 10 + 1, n_sh // 10 + 1, 64, 7)
    data = {t: task_data(t, 64, n_tr, n_te) for t in ("shapes", "digits")}
    runs = study_runs()
    if a.quick:
        runs = [runs[0], runs[1], runs[4], runs[-1]]
    from workbench.checkpoints import demo_path

    queue, deferred = list(runs), 0
    while queue:
        run = queue.pop(0)
        if run.get("demo") and not demo_path(run["demo"]).exists() and deferred < 3 * len(runs):
            queue.append(run)  # its checkpoint is still training: run it after the others
            deferred += 1
            if all(r.get("demo") for r in queue):
                time.sleep(30)
            continue
        if run["name"] in done or (parts and run["part"] not in parts):
            continue
        t0 = time.process_time()
        rec = {"part": run["part"], "name": run["name"], "model": run["model"], "pretrain": None}
        init = None
        if run.get("demo"):
            from workbench.checkpoints import load_demo

            ck = load_demo(run["demo"], DEMO_COMMANDS[run["demo"]])
            pc = PretrainConfig(**{k: v for k, v in ck.meta["config"].items() if k in PretrainConfig.__dataclass_fields__})
            model = sm.build_simmim(pc.model, sm.SimMIMConfig(loss=pc.loss, head=pc.head))
            from workbench.checkpoints import load_into

            load_into(model, ck)
            gen = sm.MaskGenerator(64, pc.mask_patch_size, model.patch_size, pc.mask_ratio)
            rec.update(pretrain=asdict(pc), demo=run["demo"], pretrain_loss=ck.extra["history"][-1]["train_loss"],
                       pretrain_l1=held_out_l1(model, held, gen),
                       avg_dist=sm.expected_avg_dist(64, pc.mask_patch_size, pc.mask_ratio, 4, draws=8),
                       curve=ck.extra.get("curve", []))
            init = sm.to_official_state_dict(model)
        elif run["pretrain"] is not None:
            pc = run["pretrain"]
            curve_dir = out / "curves" / run["name"].replace(" ", "_")
            model, res = pretrain(pc, str(curve_dir), images)
            gen = sm.MaskGenerator(64, pc.mask_patch_size, model.patch_size, pc.mask_ratio)
            rec.update(pretrain=asdict(pc), pretrain_loss=res["history"][-1]["train_loss"],
                       pretrain_l1=held_out_l1(model, held, gen),
                       avg_dist=sm.expected_avg_dist(64, pc.mask_patch_size, pc.mask_ratio, 4, draws=8),
                       curve=res["curve"])
            (curve_dir / "last.pt").unlink(missing_ok=True)
            init = sm.to_official_state_dict(model)
        rec["acc"] = {}
        for task in run["tasks"]:
            r = finetune(run["model"], FinetuneConfig(task=task), init, data[task])
            rec["acc"][task] = r["acc"]
        rec["seconds"] = time.process_time() - t0
        with open(rec_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(f"{run['name']}: " + ", ".join(f"{k} {100 * v:.1f}%" for k, v in rec["acc"].items())
              + f" ({rec['seconds']:.0f} s)", flush=True)
    print(write_tables(out))


JOBS = {
    "simmim": (main_pretrain, "SimMIM pre-training of one backbone (--save writes a demo checkpoint)"),
    "simmim-finetune": (main_finetune, "fine-tune a SimMIM-pre-trained or scratch backbone on shapes / digits"),
    "simmim-study": (main_study, "the SimMIM laptop study: pre-train vs scratch, masking (AvgDist), head/loss"),
}
