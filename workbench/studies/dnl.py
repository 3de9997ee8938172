"""Disentangled Non-Local at laptop scale: ``workbench train dnl-study`` under the study protocol.

Claims of Yin et al. (ECCV 2020), tested on multi-object shapes scenes (64 px, 3-4 objects each, so objects are
small and boundaries many), with ``workbench.dnl.SegNet`` (output stride 4: 16 x 16 attention maps) and a
context head of each kind — none, NL, DNL, GC — over five seeds:

1. Segmentation: DNL > NL > no context block in mIoU (paper: Cityscapes NL 78.3 -> DNL ~80.2).
2. The whitened pairwise term attends within the query's own region (share of an object query's attention on
   its own label, DNL's whitened pairwise map vs NL's attention).
3. The unary term highlights boundaries: the unary map's mass on *boundary cells* — the cells of the attention
   grid whose pixels carry more than one label, i.e. the thin bands along object outlines the paper's figures
   show lit up — against the share a uniform map would put there.

Recipe: AdamW lr 2e-3, warm-up + cosine, weight decay 0.01, batch 32, per-pixel cross-entropy, ImageNet-
normalised inputs, one thread. ``--save-demo`` writes the seed-0 NL and DNL models as the app's demo checkpoints.

``dnl-study --scale paper --data-dir <segmentation folder>`` runs the paper's Cityscapes setting instead
(:func:`main_paper`): a dilated ResNet-101 (output stride 8) under SegNet's head with each context block, the
official DNL recipe (769 px crops, SGD lr 0.01, 60k iterations), torchrun; see :mod:`workbench.studies.scale` and
docs/scale.md.
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F

from workbench import dnl
from workbench.checkpoints import demo_path, save_checkpoint
from workbench.data import shapes
from workbench.data.folders import SegmentationFolder
from workbench.data.transforms import images_to_tensor, normalize
from workbench.models import create_model
from workbench.studies import protocol, scale
from workbench.train import TrainConfig, fit

PAPER = "dnl"
DEMO_HEADS = ("nl", "dnl")
DEMO_COMMAND = "workbench train dnl-study --commit --save-demo"
HEADS = ("none", "nl", "dnl", "gc")
SEEDS = (0, 1, 2, 3, 4)
LABELS = {"none": "no context block", "nl": "NL", "dnl": "DNL", "gc": "GC"}


@dataclass
class StudyConfig:
    size: int = 64
    stride: int = 4
    depth: int = 1
    width: int = 16
    head_channels: int = 64
    temperature: float = 0.05
    min_objects: int = 3
    max_objects: int = 4
    n_train: int = 2000
    n_test: int = 300
    n_stats: int = 96          # test scenes used for the attention statistics
    steps: int = 600
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 0.01
    data_seed: int = 60

    def net_config(self, head: str) -> dnl.SegNetConfig:
        return dnl.SegNetConfig(head=head, stride=self.stride, depth=self.depth, width=self.width,
                                head_channels=self.head_channels, temperature=self.temperature)


def scenes(cfg: StudyConfig, n: int, seed: int):
    """Multi-object scenes: (float images (N, 3, S, S) in [0, 1], int64 label masks (N, S, S))."""
    d = shapes.load(n=n, size=cfg.size, seed=seed, min_objects=cfg.min_objects, max_objects=cfg.max_objects)
    return images_to_tensor(d.images), torch.from_numpy(d.masks.astype(np.int64))


@torch.no_grad()
def predict(model: dnl.SegNet, x: torch.Tensor, batch_size: int = 100) -> torch.Tensor:
    model.eval()
    return torch.cat([model(normalize(x[i:i + batch_size])).argmax(1) for i in range(0, len(x), batch_size)])


def boundary_cells(masks: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """(B, h·w) 1.0 for the cells of an (h, w) grid over the image whose pixels carry more than one label."""
    m = torch.as_tensor(masks).long()
    n_lab = int(m.max()) + 1
    frac = dnl.label_fractions(m, hw, max(n_lab, 2))          # (B, L, N)
    return (frac.max(dim=1).values < 1.0 - 1e-9).double()


@torch.no_grad()
def attention_stats(model: dnl.SegNet, x: torch.Tensor, masks: torch.Tensor) -> dict:
    """Within-region share of the pairwise maps; unary mass on boundary cells against a uniform map."""
    model.eval()
    if model.cfg.head == "none":
        return {}
    _, maps = dnl.attention_maps(model, normalize(x))
    entry = maps["block"]
    hw, out = entry["hw"], {}
    for key in ("pairwise", "whitened"):
        if key in entry:
            s = dnl.within_region_share(entry[key], masks, hw, num_labels=11)
            out.update({f"{key}_share": s["share"], f"{key}_uniform": s["uniform"], f"{key}_lift": s["lift"]})
    if "unary" in entry:
        b = boundary_cells(masks, hw)
        u = entry["unary"].double()
        out["unary_boundary_mass"] = float((u * b).sum(-1).mean())
        out["boundary_uniform"] = float(b.mean(-1).mean())
        out["unary_boundary_lift"] = out["unary_boundary_mass"] / out["boundary_uniform"]
    return out


def _loss(m, batch):
    return F.cross_entropy(m(batch[0]), batch[1])


def train_one(head: str, seed: int, cfg: StudyConfig, progress: bool = True):
    """Train one SegNet; returns (model, metrics)."""
    x, y = scenes(cfg, cfg.n_train, cfg.data_seed)
    xt, yt = scenes(cfg, cfg.n_test, cfg.data_seed + 1)
    torch.manual_seed(seed)
    model = dnl.SegNet(cfg.net_config(head))
    per_epoch = cfg.n_train // cfg.batch_size
    tcfg = TrainConfig(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, min_lr=cfg.lr * 0.01,
                       warmup_epochs=0.05 * cfg.steps / per_epoch, weight_decay=cfg.weight_decay, seed=seed,
                       progress=progress, log_every=0, device="cpu")
    hist = fit(model, torch.utils.data.TensorDataset(normalize(x), y), _loss, tcfg)
    pred = predict(model, xt)
    m, _ = dnl.miou(dnl.confusion_matrix(pred, yt, 11))
    rec = {"miou": m, "pixel_acc": float((pred == yt).double().mean()), "train_loss": hist["history"][-1]["train_loss"]}
    if head == "dnl":
        rec["gamma"] = float(model.block.gamma.detach())
    rec.update(attention_stats(model, xt[:cfg.n_stats], yt[:cfg.n_stats]))
    return model, rec


def claims(command: str) -> list[protocol.Claim]:
    common = dict(part="segmentation", metric="miou", direction="higher", chance=None, perfect=1.0, command=command,
                  baselines=[LABELS[h] for h in HEADS])
    return [
        protocol.Claim(id="dnl_vs_nl", claim="DNL segments better than NL (mIoU).",
                       paper_value="Cityscapes val, ResNet-101: NL 78.3 -> DNL 80.2 mIoU (Table 5)",
                       baseline="NL", method="DNL", **common),
        protocol.Claim(id="nl_vs_none", claim="A non-local context block improves on no context block (mIoU).",
                       paper_value="Cityscapes: baseline FCN ~75.8 -> NL 78.3 (Table 5; baseline value unverified)",
                       baseline="no context block", method="NL", **common),
        protocol.Claim(id="dnl_vs_gc", claim="DNL segments better than a unary-only block (GC).",
                       paper_value="COCO Mask R-CNN: GC 40.1 vs DNL 40.3 box AP (Table 7)",
                       baseline="GC", method="DNL", **common),
    ]


def derived_claims(study: protocol.Study, command: str) -> list[dict]:
    """Claims whose arms are two measurements of one run (a map against uniform, or two maps)."""
    out = []
    seg = study.records("segmentation")

    def vals(head, key):
        return {r["seed"]: r["metrics"][key] for r in seg if r["arm"] == LABELS[head] and key in r["metrics"]}

    dnl_mass, dnl_uni = vals("dnl", "unary_boundary_mass"), vals("dnl", "boundary_uniform")
    if dnl_mass:
        c = protocol.Claim(id="unary_boundaries",
                           claim="The unary term concentrates on object boundaries (mass on boundary cells vs a uniform map).",
                           paper_value="Sec. 4 / Fig. 4: unary maps highlight boundary pixels (qualitative)",
                           metric="share of the map on boundary cells", direction="higher", baseline="uniform map",
                           method="DNL unary map", part="segmentation", chance=None, command=command)
        out.append(protocol.judge(c, {"uniform map": dnl_uni, "DNL unary map": dnl_mass,
                                      "NL implicit unary": vals("nl", "unary_boundary_mass"),
                                      "GC context map": vals("gc", "unary_boundary_mass")}))
    dnl_share, nl_share = vals("dnl", "pairwise_share"), vals("nl", "pairwise_share")
    if dnl_share and nl_share:
        c = protocol.Claim(id="whitened_within_region",
                           claim="The whitened pairwise term attends within the query's own region more than NL's attention.",
                           paper_value="Sec. 3 / Fig. 1: NL maps are nearly query-independent; DNL's whitened maps follow "
                                       "the query's region (qualitative)",
                           metric="share of an object query's attention on its own label", direction="higher",
                           baseline="NL attention", method="DNL whitened pairwise", part="segmentation", chance=None,
                           command=command)
        out.append(protocol.judge(c, {"NL attention": nl_share, "DNL whitened pairwise": dnl_share,
                                      "uniform map": vals("dnl", "pairwise_uniform")}))
    return out


def main(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="workbench train dnl-study",
                                description="NL vs DNL vs GC vs none as segmentation heads on multi-object shapes "
                                            "scenes; attention maps measured against the scenes' masks.")
    protocol.add_arguments(p, PAPER)
    p.set_defaults(seeds=list(SEEDS))
    d = StudyConfig()
    p.add_argument("--heads", nargs="+", default=list(HEADS), choices=list(HEADS), help="Context heads to train.")
    p.add_argument("--steps", type=int, default=d.steps, help="Optimizer steps per run.")
    p.add_argument("--n-train", type=int, default=d.n_train, help="Training scenes.")
    p.add_argument("--n-test", type=int, default=d.n_test, help="Test scenes.")
    p.add_argument("--save-demo", action="store_true",
                   help="Overwrite the committed demo checkpoints dnl_seg_nl.pt and dnl_seg_dnl.pt with the seed-0 models.")
    scale.add_arguments(p)
    p.add_argument("--num-classes", type=int, default=scale.DNL_TRAIN.extra["num_classes"],
                   help="Paper scale: classes of the masks (Cityscapes train ids: 19; 255 = ignore).")
    p.add_argument("--backbone-init", default=None,
                   help="Paper scale: an ImageNet ResNet-101 state dict (conv1 / bn1 / layer1.0.conv1 ... names) to start "
                        "the backbone from, as the paper does.")
    a = p.parse_args(argv)
    if a.scale == "paper":
        return main_paper(a, argv)
    scale.check_laptop(a)
    if a.backbone_init:
        raise SystemExit("--backbone-init only with --scale paper")
    study = protocol.open_study(a, PAPER)
    command = protocol.command_line("workbench train dnl-study", argv)
    cfg = replace(d, steps=a.steps, n_train=a.n_train, n_test=a.n_test, n_stats=min(d.n_stats, a.n_test))
    if a.budget_min is not None:
        cfg = replace(cfg, steps=protocol.plan_steps(cfg.steps, len(a.seeds) * len(a.heads), 0.25, a.budget_min))
        print(f"budget: {cfg.steps} steps per run")
    progress = not a.no_progress

    def arm(head):
        def run(seed):
            model, rec = train_one(head, seed, cfg, progress)
            if a.save_demo and head in DEMO_HEADS and seed == a.seeds[0]:
                save_checkpoint(demo_path(f"dnl_seg_{head}"), model, config=asdict(cfg.net_config(head)),
                                command=DEMO_COMMAND, data_seed=cfg.data_seed, half=True,
                                extra={"miou": rec["miou"], "study": asdict(cfg), "normalize": "imagenet"})
            return rec
        return run

    study.run("segmentation", {LABELS[h]: arm(h) for h in a.heads}, asdict(cfg))
    doc = protocol.write_claims(PAPER, claims(command), study, extra=derived_claims(study, command))
    print(protocol.claims_table(doc))


# ------------------------------------------------------------------------------------------------ paper scale
class SegTrainTransform:
    """The official training pipeline on an (image, mask) pair: random rescale in ``scale_range``, a random
    ``crop`` x ``crop`` window (padded with 0 / the ignore label where the image is smaller), a brightness shift of
    up to ``shift`` / 255, horizontal flip, ImageNet normalisation. Global torch RNG (seeded by ``fit``)."""

    def __init__(self, crop: int, scale_range=(0.5, 2.0), shift: float = 10, ignore: int = 255):
        self.crop, self.scale_range, self.shift, self.ignore = int(crop), scale_range, shift / 255.0, ignore

    def __call__(self, x: torch.Tensor, y: torch.Tensor):
        lo, hi = self.scale_range
        f = lo + (hi - lo) * float(torch.rand(()))
        h, w = max(1, round(x.shape[1] * f)), max(1, round(x.shape[2] * f))
        x = F.interpolate(x[None], size=(h, w), mode="bilinear", align_corners=False)[0]
        y = F.interpolate(y[None, None].float(), size=(h, w), mode="nearest")[0, 0].long()
        ph, pw = max(0, self.crop - h), max(0, self.crop - w)
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph))
            y = F.pad(y, (0, pw, 0, ph), value=self.ignore)
        top = int(torch.randint(0, x.shape[1] - self.crop + 1, ()))
        left = int(torch.randint(0, x.shape[2] - self.crop + 1, ()))
        x, y = x[:, top:top + self.crop, left:left + self.crop], y[top:top + self.crop, left:left + self.crop]
        x = (x + (2 * float(torch.rand(())) - 1) * self.shift).clamp(0, 1)
        if float(torch.rand(())) < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        return normalize(x), y


def _eval_pair(x, y):
    return normalize(x), y


class _Features(torch.nn.Module):
    """A backbone's feature map (``forward_features``) as SegNet's ``backbone``."""

    def __init__(self, net: torch.nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return self.net.forward_features(x)


def paper_net(head: str, num_classes: int, r, arch: dict, init: str | None = None) -> tuple[dnl.SegNet, torch.nn.Module]:
    """SegNet's head (conv, context block, conv, concatenation, conv, classifier) on a dilated ResNet-101: the
    backbone and the two layers that read its 2048 channels replace SegNet's compact conv stack."""
    hc = r.extra["head_channels"]
    net = dnl.SegNet(dnl.SegNetConfig(head=head, num_classes=num_classes, stride=8, width=1, depth=1, head_channels=hc,
                                      reduction=r.extra["reduction"], temperature=r.extra["temperature"]))
    backbone = create_model(r.backbone, num_classes=0, **arch)
    if init:
        sd = torch.load(init, map_location="cpu", weights_only=True)
        sd = sd.get("state_dict", sd.get("model", sd)) if isinstance(sd, dict) else sd
        sd = {k.removeprefix("module."): v for k, v in sd.items() if not k.removeprefix("module.").startswith("fc.")}
        missing, unexpected = backbone.load_state_dict(sd, strict=False)
        if missing or unexpected:
            raise SystemExit(f"--backbone-init {init}: missing {missing[:5]}, unexpected {unexpected[:5]}")
    net.backbone = _Features(backbone)
    net.conv_in = dnl._conv_bn(backbone.num_features, hc)
    net.fuse = dnl._conv_bn(backbone.num_features + hc, hc)
    return net, backbone


def main_paper(a: argparse.Namespace, argv: list[str]) -> None:
    """The context heads on a dilated ResNet-101 at the paper's size (see :mod:`workbench.studies.scale`)."""
    run = scale.start(a, argv, PAPER)
    r = run.scale.recipes["train"]
    crop, n_cls, ignore = run.img_size(r), int(a.num_classes), r.extra["ignore_index"]
    train = SegmentationFolder(run.data_dir("train"), n_cls, SegTrainTransform(
        crop, r.extra["scale_range"], r.extra["brightness_shift"], ignore), ignore_index=ignore)
    val = SegmentationFolder(run.data_dir("val"), n_cls, _eval_pair, ignore_index=ignore)

    def loss(m, batch):
        return F.cross_entropy(m(batch[0]).float(), batch[1], ignore_index=ignore)

    def confusion(m, batch):
        x, y = batch
        pred = m(x).argmax(1)
        keep = y != ignore
        return {"conf": torch.bincount(y[keep] * n_cls + pred[keep], minlength=n_cls * n_cls)}

    def evaluate(m):
        conf = run.evaluate(m, val, confusion, {"conf": torch.zeros(n_cls * n_cls)}, 1)["conf"].reshape(n_cls, n_cls)
        return {"miou": dnl.miou(conf)[0], "pixel_acc": float(conf.diag().sum() / conf.sum().clamp_min(1))}

    def arm(head):
        def one(seed):
            torch.manual_seed(seed)
            net, backbone = paper_net(head, n_cls, r, run.arch(r), a.backbone_init)
            if run.world > 1 and run.device.type == "cuda":   # 2 crops per GPU: BN over all GPUs, as the paper
                net = torch.nn.SyncBatchNorm.convert_sync_batchnorm(net)
            res = run.fit(net, train, loss, r, seed=seed, tag=f"{LABELS[head]}, seed {seed}",
                          backbone_params=scale.count_params(backbone), evaluate=evaluate, work=run.work(head, seed))
            return {**res["eval"], "train_loss": res["history"][-1]["train_loss"] if res["history"] else None}
        return one

    run.study.run("segmentation", {LABELS[h]: arm(h) for h in a.heads},
                  scale.shared_config(run, classes=n_cls, backbone_init=a.backbone_init), seeds=run.seeds)
    run.finish(claims(run.command))


JOBS = {"dnl-study": (main, "DNL vs NL vs GC vs none: mIoU, within-region attention, unary maps at boundaries")}
