"""Paper scale: ``workbench train <study> --scale paper`` runs the paper's recipe instead of the laptop one.

What changes with ``--scale paper`` (the default ``--scale laptop`` is the unchanged laptop study):

* **the recipe** — full-size backbones from :func:`workbench.models.create_model` and the paper's hyper-parameters,
  one :class:`Recipe` per training phase, collected per paper in :data:`SCALES` (a :class:`PaperScale`). Every
  value names its source (:data:`SOURCES`): the notes in ``/work/shared/papers``, an official repository's config
  file, or ``assumed`` where nothing confirmed it;
* **the data** — a user-supplied folder ``--data-dir`` with ``train/`` and ``val/`` (class sub-folders, read by
  :class:`workbench.data.folders.ImageFolder`; DNL: ``images/`` + ``masks/``, :class:`SegmentationFolder`);
* **the machines** — under ``torchrun`` every process joins the process group through
  :func:`workbench.train.setup_distributed` (NCCL on GPUs, gloo on CPUs), :func:`workbench.train.fit` wraps the model
  in DDP and shards the data; evaluation is sharded too and summed over processes (:meth:`Run.evaluate`). The
  learning rate follows the paper's scaling rule (``base_lr x batch per GPU x processes / reference batch``);
* **the outputs** — the same :class:`workbench.studies.protocol.Study` records and ``claims.json`` as at laptop
  scale, written by rank 0 into ``--out`` (``workbench report --studies <parent of --out>`` shows them);
  ``--commit`` is refused: paper-scale results never overwrite the committed laptop studies;
* ``--dry-run`` — every arm of every part, one seed, exactly :data:`DRY_STEPS` optimizer steps at
  :data:`DRY_BATCH` images per process, then one evaluation pass over ``val/``. It writes
  ``records.dry-run.jsonl``, ``claims.dry-run.json`` and one ``dry-run/rank<r>.json`` per process (steps,
  losses, parameter hashes before and after, backbone parameter count) into ``--out`` and nothing else.
  ``--dry-run-img-size`` replaces the image size of every phase to keep CPU dry runs short: width and depth stay
  the paper's; a Swin whose window cannot tile the smaller image runs with the largest window that can
  (:meth:`Run.arch`).

The commands, recipe tables (ours against the paper), GPU estimates and what was verified are in ``docs/scale.md``.
"""
from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from workbench.data import transforms as T
from workbench.data.folders import ImageFolder
from workbench.models import family_of, model_config
from workbench.studies import protocol
from workbench.train import TrainConfig, fit, is_distributed, is_main_process, setup_distributed

DRY_STEPS = 1   # one step shows the gradients synchronised (equal parameters after it) and the parameters moved
DRY_BATCH = 2
SCALES_CHOICES = ("laptop", "paper")

SOURCES: dict[str, str] = {
    "notes:swin": "/work/shared/papers/swin-simmim-moby.md",
    "notes:cbn-dnl-icar": "/work/shared/papers/cbn-dnl-icar.md",
    "notes:sparse": "/work/shared/papers/balanced-sparsity.md",
    "swin-config": "microsoft/Swin-Transformer: config.py defaults (DATA.BATCH_SIZE 128, TRAIN.*, AUG.*), "
                   "configs/swinv2/swinv2_tiny_patch4_window8_256.yaml; main.py scales lr / warm-up lr / min lr "
                   "by the total batch / 512",
    "simmim-config": "microsoft/SimMIM: configs/swin_base__100ep/simmim_pretrain__swin_base__img192_window6__100ep"
                     ".yaml and simmim_finetune__swin_base__img224_window7__100ep.yaml, config.py (AUG defaults), "
                     "README (16 GPUs x batch 128); lr scaled by the total batch / 512",
    "moby-config": "SwinTransformer/Transformer-SSL: configs/moby_swin_tiny.yaml, config.py, moby_linear.py, "
                   "get_started.md (8 GPUs x batch 64); lr scaled by the total batch / 512",
    "cbn-code": "Howal/Cross-iterationBatchNorm: README and configs (mask_rcnn_r50_fpn_cbn_buffer3_burnin8_1x: "
                "3 buffered iterations, i.e. a window of 4; COCO detection only)",
    "dnl-config": "yinmh17/DNL-Semantic-Segmentation: configs/seg/cityscapes/NLbn_fcn_cityscapes_seg.conf "
                  "(the DNL block: whiten 'channel', temp 0.05, with_gc; ResNet-101 dilated 8)",
    "assumed": "assumed here: no source read in this project confirmed it",
}


# ------------------------------------------------------------------------------------------------ recipes
@dataclass
class Recipe:
    """One training phase of a paper's recipe.

    ``lr_batch`` is the reference batch of the linear scaling rule: the learning rate is
    ``base_lr x (batch per GPU x processes) / lr_batch`` (``min_lr`` alike). ``epochs`` or ``iters`` sets the length.
    ``sources`` maps a field name to a key of :data:`SOURCES` (``"*"``: every field not named). ``missing`` says
    what of the paper's recipe is not implemented here.
    """

    phase: str
    backbone: str
    img_size: int
    batch_per_gpu: int
    gpus: int
    base_lr: float
    lr_batch: int
    warmup_epochs: float
    min_lr: float
    weight_decay: float
    epochs: int | None = None
    iters: int | None = None
    arch: dict = field(default_factory=dict)        # create_model overrides that keep the width / depth
    optimizer: str = "adamw"
    momentum: float = 0.9
    clip_grad: float | None = 5.0
    label_smoothing: float = 0.0
    layer_decay: float | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    random_erasing: float = 0.0
    crop_scale: tuple | None = (0.08, 1.0)           # RandomResizedCrop's area range (None: not a crop recipe)
    extra: dict = field(default_factory=dict)       # phase-specific settings (mask ratio, CBN window, ...)
    schedule: str = "linear warm-up from 0, cosine to min_lr, per step"
    augment: str = ""
    missing: str = ""
    sources: dict = field(default_factory=lambda: {"*": "assumed"})
    paper: dict = field(default_factory=dict)       # the paper's / official value where it differs from ours

    def __post_init__(self):
        if (self.epochs is None) == (self.iters is None):
            raise ValueError(f"{self.phase}: give epochs or iters, not both or neither")
        bad = {k for k in self.sources if k != "*" and k not in {f.name for f in fields(self)} and k not in self.extra}
        if bad or any(v not in SOURCES for v in self.sources.values()):
            raise ValueError(f"{self.phase}: bad sources {self.sources}")

    def source(self, name: str) -> str:
        return self.sources.get(name, self.sources.get("*", "assumed"))

    def total_batch(self, processes: int | None = None, batch_per_gpu: int | None = None) -> int:
        return (batch_per_gpu or self.batch_per_gpu) * (processes or self.gpus)

    def lr(self, processes: int | None = None, batch_per_gpu: int | None = None) -> float:
        return self.base_lr * self.total_batch(processes, batch_per_gpu) / self.lr_batch

    def markdown(self) -> str:
        """The recipe as a markdown table: setting, ours, the paper's (official) value, its source."""
        def fmt(v):
            if isinstance(v, float):
                return f"{v:g}"
            if isinstance(v, (tuple, list)):
                return "(" + ", ".join(fmt(x) for x in v) + ")"
            if isinstance(v, dict):
                return ", ".join(f"{k}={fmt(x)}" for k, x in v.items()) or "-"
            return "-" if v is None else str(v)

        rows = [("backbone", self.backbone), ("create_model overrides", self.arch), ("image size", self.img_size),
                ("images per GPU", self.batch_per_gpu), ("GPUs (total batch)", f"{self.gpus} ({self.total_batch()})"),
                ("base lr per reference batch -> lr", f"{fmt(self.base_lr)} per {self.lr_batch} -> {fmt(self.lr())}")]
        rows += [(n, getattr(self, n)) for n in ("epochs", "iters") if getattr(self, n) is not None]
        rows += [(n, getattr(self, n)) for n in ("warmup_epochs", "min_lr", "weight_decay", "optimizer")]
        if self.optimizer == "sgd":
            rows.append(("momentum", self.momentum))
        rows += [(n, getattr(self, n)) for n in ("clip_grad", "label_smoothing", "layer_decay", "mixup", "cutmix",
                                                  "random_erasing") if getattr(self, n) or n in self.paper]
        rows += [("crop_scale", self.crop_scale)] if self.crop_scale else []
        rows += [("schedule", self.schedule)] + list(self.extra.items())
        key = {"images per GPU": "batch_per_gpu", "GPUs (total batch)": "gpus", "image size": "img_size",
               "base lr per reference batch -> lr": "base_lr", "create_model overrides": "arch"}
        out = ["| setting | ours | paper / official | source |", "|---|---|---|---|"]
        for name, v in rows:
            f = key.get(name, name)
            src = self.source(f)
            theirs = self.paper.get(f, "same" if src != "assumed" else "not verified")
            out.append(f"| {name} | {fmt(v)} | {fmt(theirs)} | {src} |")
        return "\n".join(out)


@dataclass
class PaperScale:
    """A study at paper scale: its recipes (one per phase), the arms it runs and what it cannot scale."""

    paper: str
    job: str
    what: str
    recipes: dict[str, Recipe]
    arms: tuple[str, ...]
    runs: str                 # the runs of the default three seeds
    estimate: str             # GPU time per run: an estimate, nothing ran on a GPU here
    laptop_only: str = ""
    data: str = "ImageFolder: --data-dir/train/<class>/*.jpg and --data-dir/val/<class>/*.jpg"


_SWIN_AUG = ("RandomResizedCrop(scale 0.08-1), horizontal flip, RandAugment rand-m9-mstd0.5-inc1, random erasing "
             "p 0.25, mixup 0.8 / cutmix 1.0 (switch 0.5, per batch), label smoothing 0.1; eval: resize the shorter "
             "side to size x 256/224, centre crop")
_SWIN_MISSING = ("RandAugment is not implemented (no torchvision); bilinear instead of bicubic resizing; the warm-up "
                 "starts at 0 instead of the scaled 5e-7")

SWIN_V2_TRAIN = Recipe(
    "train", "swinv2_tiny_window8_256", 256, 128, 8, 5e-4, 512, 20, 5e-6, 0.05, epochs=300,
    label_smoothing=0.1, mixup=0.8, cutmix=1.0, random_erasing=0.25,
    extra={"transfer": ((384, 12), (512, 16))},
    augment=_SWIN_AUG, missing=_SWIN_MISSING,
    sources={"*": "swin-config", "gpus": "assumed", "transfer": "assumed"},
    paper={"schedule": "linear warm-up from 5e-7 (scaled), cosine to min_lr, per step",
           "gpus": "batch 1024 in the Swin papers (8 x 128)"})

SIMMIM_PRETRAIN = Recipe(
    "pretrain", "swin_base_patch4_window7_224", 192, 128, 16, 2e-4, 512, 10, 1e-5, 0.05, epochs=100,
    arch={"window_size": 6, "drop_path_rate": 0.0}, crop_scale=(0.67, 1.0),
    extra={"mask_patch_size": 32, "mask_ratio": 0.6},
    augment="RandomResizedCrop(192, scale 0.67-1, ratio 3/4-4/3), horizontal flip; random masks of 32 px patches "
            "at ratio 0.6; linear head; L1 on the masked pixels of the normalised image",
    missing="the warm-up starts at 0 instead of the scaled 1e-6",
    sources={"*": "simmim-config", "crop_scale": "notes:swin"},
    paper={"schedule": "linear warm-up from 1e-6 (scaled), cosine to min_lr, per step"})

SIMMIM_FINETUNE = Recipe(
    "finetune", "swin_base_patch4_window7_224", 224, 128, 16, 1.25e-3, 512, 20, 2.5e-7, 0.05, epochs=100,
    arch={"drop_path_rate": 0.1}, layer_decay=0.9, label_smoothing=0.1, mixup=0.8, cutmix=1.0, random_erasing=0.25,
    augment=_SWIN_AUG,
    missing=_SWIN_MISSING.replace("5e-7", "2.5e-7") + "; the scratch arm uses this 100-epoch recipe (the paper's "
            "scratch number comes from a 300-epoch supervised recipe)",
    sources={"*": "simmim-config"},
    paper={"schedule": "linear warm-up from 2.5e-7 (scaled), cosine to min_lr, per step"})

MOBY_PRETRAIN = Recipe(
    "pretrain", "swin_tiny_patch4_window7_224", 224, 64, 8, 1e-3, 512, 5, 5e-6, 0.05, epochs=300,
    extra={"queue_size": 4096, "proj_hidden": 4096, "out_dim": 256, "temperature": 0.2, "momentum": 0.99,
           "drop_path_online": 0.2, "drop_path_target": 0.0},
    augment="BYOL two views: RandomResizedCrop(224, scale 0.08-1), flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, "
            "grayscale p 0.2, blur p 1.0 / 0.1, solarize p 0 / 0.2",
    missing="projector BatchNorm is synchronised across GPUs only on CUDA (as the official code); the warm-up "
            "starts at 0",
    sources={"*": "moby-config"},
    paper={"schedule": "linear warm-up from 5e-7 (scaled), cosine to min_lr, per step"})

MOBY_LINEAR = Recipe(
    "linear", "swin_tiny_patch4_window7_224", 224, 64, 8, 1.0, 512, 5, 5e-6, 0.0, epochs=100,
    arch={"drop_path_rate": 0.2}, optimizer="sgd", label_smoothing=0.1,
    augment="RandomResizedCrop(224) and flip (AUG.SSL_LINEAR_AUG), frozen encoder in train mode (drop path 0.2 "
            "stays active, as moby_linear.py), only the linear head trained",
    missing="the crop scale of SSL_LINEAR_AUG (0.08-1 assumed)",
    sources={"*": "moby-config", "crop_scale": "assumed"},
    paper={"schedule": "linear warm-up from 5e-7 (scaled), cosine to min_lr, per step"})

CBN_TRAIN = Recipe(
    "train", "resnet18", 224, 4, 8, 0.1, 256, 0, 0.0, 1e-4, epochs=90, optimizer="sgd", clip_grad=None,
    extra={"window": 4, "burnin_epochs": 25, "large_batch_per_gpu": 32},
    augment="RandomResizedCrop(224, scale 0.08-1), horizontal flip; eval: resize 256, centre crop 224",
    missing="cosine instead of the step schedule; per-GPU BatchNorm statistics (no SyncBN) in every arm",
    sources={"*": "assumed", "window": "cbn-code"},
    paper={"schedule": "not verified (step decay is the usual ImageNet ResNet schedule)"})

DNL_TRAIN = Recipe(
    "train", "resnet101", 769, 2, 4, 0.01, 8, 0, 0.0, 5e-4, iters=60000, optimizer="sgd", clip_grad=None,
    arch={"dilate": (False, True, True)}, crop_scale=None,
    extra={"scale_range": (0.5, 2.0), "brightness_shift": 10, "head_channels": 512, "reduction": 2,
           "temperature": 0.05, "num_classes": 19, "ignore_index": 255},
    augment="random resize 0.5-2.0, random 769 x 769 crop (padded with the ignore label), brightness shift +-10, "
            "horizontal flip; eval: whole validation images at one scale",
    missing="ImageNet-pretrained backbone only through --backbone-init (a ResNet-101 state dict you supply); plain "
            "7x7 stem instead of the 'deepbase' 3-conv stem; no auxiliary (DSN, weight 0.4) head; unweighted "
            "cross-entropy; cosine instead of poly (power 0.9) decay; single-scale whole-image instead of "
            "multi-crop evaluation; SyncBN on CUDA (per-process BN on CPU)",
    sources={"*": "dnl-config", "gpus": "assumed", "batch_per_gpu": "assumed", "head_channels": "assumed",
             "lr_batch": "assumed", "reduction": "notes:cbn-dnl-icar", "ignore_index": "assumed"},
    paper={"backbone": "ResNet-101 'deepbase' (3-conv stem), dilated 8, ImageNet-pretrained",
           "lr_batch": "lr 0.01 at batch 8 (no scaling rule)", "schedule": "poly (power 0.9) per iteration, no warm-up",
           "head_channels": "not verified (mmsegmentation's DNLHead: 512)"})

ICAR_TRAIN = Recipe(
    "train", "swin_tiny_patch4_window7_224", 224, 128, 8, 5e-4, 512, 20, 5e-6, 0.05, epochs=300,
    extra={"text_layers": 12, "text_width": 512, "text_heads": 8, "context_length": 77, "embed_dim": 512,
           "tau_init": 10.0, "align_weight": 1.0},
    augment="RandomResizedCrop(224, scale 0.08-1), flip; class texts 'name: description' from --class-texts",
    missing="the optimisation values are Swin-T's supervised ImageNet recipe (swin-config) standing in for "
            "iCAR's, which no source here confirmed; no image-text pairs (only the classification data, each image "
            "paired with its class text); the alignment loss uses the negatives of one process; no mixup / cutmix "
            "(the text head needs hard labels)",
    sources={"*": "assumed"})

SPARSE_PRUNE = Recipe(
    "prune", "swinv2_tiny_window8_256", 256, 128, 8, 5e-5, 512, 0, 5e-7, 0.05, epochs=30, label_smoothing=0.1,
    extra={"bank_size": 32, "ramp": 0.6, "mask_updates": 100, "block": (4, 4)},
    augment="RandomResizedCrop(256, scale 0.08-1), flip, label smoothing 0.1",
    missing="the paper prunes VGG-16 / LSTMs (no official code); here the block MLPs of a full-size Swin V2-T",
    sources={"*": "assumed", "bank_size": "notes:sparse"},
    paper={"backbone": "VGG-16 (ImageNet), LSTM language / speech models"})

SCALES: dict[str, PaperScale] = {
    "swin_v2": PaperScale(
        "swin_v2", "swinv2-study", "Table 1: log-spaced CPB vs linear-spaced CPB vs the V1 bias table, Swin V2-T "
        "trained at 256 px / window 8 on ImageNet-1K, then tested at 384 / W12 and 512 / W16 without fine-tuning",
        {"train": SWIN_V2_TRAIN}, ("log-spaced CPB", "linear-spaced CPB", "V1 table (bicubic)"),
        "3 arms x 3 seeds", "~2 days on 8 GPUs (300 epochs of Swin V2-T at 256 px)",
        laptop_only="the activation-growth part"),
    "simmim": PaperScale(
        "simmim", "simmim-study", "SimMIM pre-training of Swin-B (192 px, window 6, 100 epochs) then fine-tuning at "
        "224 px / window 7 against the same fine-tuning from scratch",
        {"pretrain": SIMMIM_PRETRAIN, "finetune": SIMMIM_FINETUNE}, ("scratch", "SimMIM"),
        "1 pre-training + 2 arms x 3 seeds", "pre-training ~2 days, each fine-tuning ~2 days, on 16 GPUs (Swin-B, "
        "100 epochs each)", laptop_only="the AvgDist masking sweep (one pre-training per mask)"),
    "moby": PaperScale(
        "moby", "moby-study", "MoBY pre-training of Swin-T (300 epochs) and its linear probe against the linear probe "
        "of a random encoder (paper: 75.0% top-1)", {"pretrain": MOBY_PRETRAIN, "linear": MOBY_LINEAR},
        ("MoBY", "random init"),
        "2 arms x 3 seeds (pre-training in the MoBY arm)", "pre-training ~4 days on 8 GPUs (two Swin-T, two views, "
        "300 epochs); linear evaluation ~8 hours",
        laptop_only="the supervised and SimMIM arms, kNN and the post-norm controls"),
    "cbn": PaperScale(
        "cbn", "cbn-study", "ResNet-18 on ImageNet with 4 images per GPU: BN vs the naive window vs CBN, and BN with "
        "32 images per GPU", {"train": CBN_TRAIN},
        ("BN, b = 4", "naive window, b = 4", "CBN, b = 4", "BN, b = 32"),
        "4 arms x 3 seeds", "~1 day on 8 GPUs at 32 images per GPU, 2-3 days at 4 (ResNet-18, 90 epochs; small "
        "batches use a GPU poorly)",
        laptop_only="part 'why' and the GroupNorm arm"),
    "dnl": PaperScale(
        "dnl", "dnl-study", "Cityscapes-style segmentation, dilated ResNet-101 (output stride 8) with a context head: "
        "none / NL / DNL / GC", {"train": DNL_TRAIN}, ("no context block", "NL", "DNL", "GC"),
        "4 heads x 3 seeds", "~1 day on 4 GPUs (ResNet-101 at output stride 8, 60k iterations of 8 crops of 769 px)",
        laptop_only="the attention statistics (within-region share, unary mass on boundaries)",
        data="segmentation folder: --data-dir/{train,val}/images/<name>.png|jpg with --data-dir/{train,val}/masks/"
             "<name>.png (class ids 0..18, 255 = ignore: Cityscapes *_labelTrainIds.png)"),
    "icar": PaperScale(
        "icar", "icar-study", "ImageNet-style classification with class texts: linear vs cosine classifier vs iCAR "
        "(text-encoder class weights + alignment), with descriptions and names only",
        {"train": ICAR_TRAIN}, ("linear classifier", "cosine classifier (parametric weights)",
                                "iCAR deep fusion (names + descriptions)", "iCAR deep fusion (names only)"),
        "4 arms x 3 seeds", "~2-3 days on 8 GPUs (Swin-T and a 12-layer text encoder, 300 epochs)",
        laptop_only="zero-shot and few-shot on held-out classes, retrieval (they need captions / held-out classes)",
        data="ImageFolder (as above) plus --class-texts: a JSON object {folder: {\"name\": ..., \"description\": ...}}"),
    "sparse": PaperScale(
        "sparse", "sparse-study", "a dense Swin V2-T (the Swin V2 recipe, or --dense-checkpoint), then gradual "
        "pruning of its block MLPs to balanced / unstructured / block sparsity with fine-tuning",
        {"dense": replace(SWIN_V2_TRAIN, phase="dense"), "prune": SPARSE_PRUNE},
        ("dense + pruned",), "3 seeds x (1 dense + 3 methods x 3 sparsities)", "dense as the Swin V2 study (~2 days "
        "on 8 GPUs; none with --dense-checkpoint), then ~8 hours on 8 GPUs per pruned model (30 epochs)",
        laptop_only="the MLP / digits and LSTM tasks"),
}


def markdown() -> str:
    """Every study's recipes as markdown (the tables of docs/scale.md: ``python -m workbench.studies.scale``)."""
    parts = []
    for sc in SCALES.values():
        for phase, r in sc.recipes.items():
            parts.append(f"<!-- recipe {sc.paper}/{phase} -->\n{r.markdown()}\n\nAugmentations: {r.augment}\n\n"
                         f"Not as the paper: {r.missing or 'nothing known'}.")
    return "\n\n".join(parts)


# ------------------------------------------------------------------------------------------------ CLI
def add_arguments(p: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The paper-scale options every study job takes (all but ``--scale`` need ``--scale paper``)."""
    g = p.add_argument_group("paper scale (docs/scale.md)")
    g.add_argument("--scale", choices=SCALES_CHOICES, default="laptop",
                   help="laptop: the study as committed; paper: the paper's recipe on --data-dir (full-size backbone, "
                        "torchrun on several GPUs).")
    g.add_argument("--data-dir", default=None, help="Paper scale: the dataset folder (train/ and val/).")
    g.add_argument("--dry-run", action="store_true",
                   help=f"Paper scale: one seed, {DRY_STEPS} optimizer step(s) per phase at {DRY_BATCH} images per "
                        "process, one evaluation pass; writes only *.dry-run.* files into --out.")
    g.add_argument("--dry-run-img-size", type=int, default=None,
                   help="With --dry-run: replace the image size of every phase to keep CPU runs short (same width "
                        "and depth; a Swin window that cannot tile it shrinks).")
    g.add_argument("--batch-per-gpu", type=int, default=None,
                   help="Paper scale: images per process instead of the recipe's (the lr follows the scaling rule).")
    g.add_argument("--workers", type=int, default=8, help="Paper scale: data-loading processes per GPU.")
    g.add_argument("--no-amp", action="store_true", help="Paper scale: no mixed precision on CUDA.")
    return p


def check_laptop(a: argparse.Namespace) -> None:
    """At laptop scale the paper-scale options are errors, not silently ignored."""
    given = [o for o, v in (("--data-dir", a.data_dir), ("--dry-run", a.dry_run),
                            ("--dry-run-img-size", a.dry_run_img_size), ("--batch-per-gpu", a.batch_per_gpu))
             if v not in (None, False)]
    if given:
        raise SystemExit(f"{', '.join(given)} only with --scale paper")


# ------------------------------------------------------------------------------------------------ records
class RankStudy(protocol.Study):
    """The protocol's records on every process, written by rank 0 only: every rank sees the same records (rank 0's,
    broadcast at the start), so all of them skip and run the same (arm, seed) runs in the same order."""

    def __post_init__(self):
        if is_main_process():
            super().__post_init__()
        else:
            self.out = Path(self.out)
            self._records = []
        if is_distributed():
            import torch.distributed as dist

            box = [self._records]
            dist.broadcast_object_list(box, src=0)
            self._records = box[0]

    def append(self, record: dict) -> None:
        if is_main_process():
            super().append(record)
        else:
            self._records.append(record)


# ------------------------------------------------------------------------------------------------ data
class ResizeShorter:
    """Resize so that the shorter side is ``size`` (aspect ratio kept)."""

    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, x, g=None):
        h, w = x.shape[-2:]
        s = self.size / min(h, w)
        return T.Resize((max(1, round(h * s)), max(1, round(w * s))))(x)


class CenterCrop:
    def __init__(self, size: int):
        self.size = int(size)

    def __call__(self, x, g=None):
        h, w = x.shape[-2:]
        top, left = max(0, (h - self.size) // 2), max(0, (w - self.size) // 2)
        return x[..., top:top + self.size, left:left + self.size]


class RandomErasing:
    """Erase one random rectangle (area 2-33%, aspect 0.3-3.3) with per-pixel normal noise, with probability ``p``
    (timm's ``RandomErasing(mode='pixel')`` as the Swin recipes use it, on the normalised image)."""

    def __init__(self, p: float):
        self.p = p

    def __call__(self, x, g=None):
        if float(torch.rand((), generator=g)) >= self.p:
            return x
        _, h, w = x.shape
        for _ in range(10):
            area = h * w * (0.02 + (1 / 3 - 0.02) * float(torch.rand((), generator=g)))
            ar = math.exp(math.log(0.3) + (math.log(1 / 0.3) - math.log(0.3)) * float(torch.rand((), generator=g)))
            eh, ew = int(round(math.sqrt(area * ar))), int(round(math.sqrt(area / ar)))
            if eh < h and ew < w:
                top = int(torch.randint(0, h - eh + 1, (), generator=g))
                left = int(torch.randint(0, w - ew + 1, (), generator=g))
                x = x.clone()
                x[:, top:top + eh, left:left + ew] = torch.randn(x.shape[0], eh, ew, generator=g)
                return x
        return x


def train_transform(size: int, r: Recipe, normalize: bool = True) -> T.Compose:
    ts = [T.RandomResizedCrop(size, scale=tuple(r.crop_scale)), T.RandomHorizontalFlip()]
    if normalize:
        ts.append(T.Normalize())
        if r.random_erasing:
            ts.append(RandomErasing(r.random_erasing))
    return T.Compose(ts)


def eval_transform(size: int, normalize: bool = True) -> T.Compose:
    """Resize the shorter side to ``size x 256/224`` and crop the centre ``size`` (the Swin recipes' TEST.CROP)."""
    ts = [ResizeShorter(int(size * 256 / 224)), CenterCrop(size)]
    return T.Compose(ts + ([T.Normalize()] if normalize else []))


class Unlabeled(torch.utils.data.Dataset):
    """The images of a labelled dataset without their labels (pre-training)."""

    def __init__(self, ds):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i][0]


def mix(x: torch.Tensor, y: torch.Tensor, num_classes: int, r: Recipe) -> tuple[torch.Tensor, torch.Tensor]:
    """Mixup (alpha ``r.mixup``) or CutMix (alpha ``r.cutmix``), one of them per batch with probability 0.5 each,
    pairing the batch with its reverse; returns the mixed images and soft targets with label smoothing folded in
    (timm's ``Mixup(mode='batch')`` as the Swin recipes configure it)."""
    use_cutmix = r.cutmix > 0 and (r.mixup <= 0 or float(torch.rand(())) < 0.5)
    alpha = r.cutmix if use_cutmix else r.mixup
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    if use_cutmix:
        h, w = x.shape[-2:]
        ch, cw = int(h * math.sqrt(1 - lam)), int(w * math.sqrt(1 - lam))
        cy, cx = int(torch.randint(0, h, ())), int(torch.randint(0, w, ()))
        y0, y1, x0, x1 = max(cy - ch // 2, 0), min(cy + ch // 2, h), max(cx - cw // 2, 0), min(cx + cw // 2, w)
        x = x.clone()
        x[..., y0:y1, x0:x1] = x.flip(0)[..., y0:y1, x0:x1]
        lam = 1 - (y1 - y0) * (x1 - x0) / (h * w)
    else:
        x = x * lam + x.flip(0) * (1 - lam)
    off = r.label_smoothing / num_classes
    t = torch.full((len(y), num_classes), off, device=x.device)
    t.scatter_(1, y[:, None], 1 - r.label_smoothing + off)
    return x, t * lam + t.flip(0) * (1 - lam)


def classification_loss(r: Recipe, num_classes: int) -> Callable:
    """Cross-entropy for ``workbench.train.fit``: mixed soft targets when the recipe mixes, else label smoothing."""
    mixing = r.mixup > 0 or r.cutmix > 0

    def loss_fn(model, batch):
        x, y = batch
        if mixing:
            x, t = mix(x, y, num_classes, r)
            return -(t * F.log_softmax(model(x).float(), 1)).sum(1).mean()
        return F.cross_entropy(model(x).float(), y, label_smoothing=r.label_smoothing)

    return loss_fn


def top1(model, batch) -> dict[str, torch.Tensor]:
    """Sums for :meth:`Run.evaluate`: correct predictions and images."""
    x, y = batch
    return {"correct": (model(x).argmax(1) == y).sum(), "count": torch.tensor(len(y))}


# ------------------------------------------------------------------------------------------------ the run
def param_hash(model: nn.Module) -> str:
    """SHA-256 of every parameter's bytes in name order: equal on two processes only if every bit is equal."""
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
        h.update(name.encode())
        h.update(memoryview(p.detach().float().cpu().contiguous().numpy()).cast("B"))
    return h.hexdigest()


def count_params(m: nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@torch.no_grad()
def average_running_stats(model: nn.Module) -> None:
    """Average the BatchNorm running statistics over processes (when each process kept its own, e.g. under
    ``forward_sync_buffers=False``), so that every process evaluates the same network."""
    if not is_distributed():
        return
    import torch.distributed as dist

    for name, b in sorted(model.named_buffers(), key=lambda kv: kv[0]):
        if name.endswith(("running_mean", "running_var")):
            dist.all_reduce(b)
            b.div_(dist.get_world_size())


@dataclass
class Run:
    """One paper-scale invocation on one process: the options, the process group, the records and the dry-run log."""

    args: argparse.Namespace
    scale: PaperScale
    rank: int
    world: int
    device: torch.device
    out: Path
    study: RankStudy
    command: str
    report: list = field(default_factory=list)
    folders: dict = field(default_factory=dict)

    @property
    def dry(self) -> bool:
        return bool(self.args.dry_run)

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def seeds(self) -> list[int]:
        return list(self.args.seeds[:1] if self.dry else self.args.seeds)

    def log(self, msg: str) -> None:
        if self.main:
            print(msg, flush=True)

    def batch(self, r: Recipe) -> int:
        b = self.args.batch_per_gpu or r.batch_per_gpu
        return min(b, DRY_BATCH) if self.dry else b

    def img_size(self, r: Recipe) -> int:
        return int(self.args.dry_run_img_size) if self.dry and self.args.dry_run_img_size else r.img_size

    def arch(self, r: Recipe, **more) -> dict:
        """The recipe's ``create_model`` overrides (plus ``more``). With ``--dry-run-img-size`` a Swin whose window
        cannot tile the smaller image gets the largest smaller window that can (width and depth never change; a V1
        model's bias tables shrink with its window)."""
        arch = {**r.arch, **more}
        if not (self.dry and self.args.dry_run_img_size):
            return arch
        if family_of(r.backbone) != "swin":
            return arch
        size, w = self.img_size(r), model_config(r.backbone, **arch).window_size
        for cand in range(w, 0, -1):
            try:
                model_config(r.backbone, **{**arch, "img_size": size, "window_size": cand}).stage_resolutions()
            except ValueError:
                continue
            return arch if cand == w else {**arch, "window_size": cand}
        raise SystemExit(f"{r.backbone}: no window tiles {size} px")

    def data_dir(self, split: str) -> Path:
        return Path(self.args.data_dir) / split

    def folder(self, split: str, transform: Callable | None = None):
        """``--data-dir/<split>`` as an :class:`~workbench.data.folders.ImageFolder` with ``transform``. The file
        lists of ``train/`` and ``val/`` are read once (ImageNet: 1.3M files) and must name the same classes."""
        if not self.folders:
            self.folders = {s: ImageFolder(self.data_dir(s)) for s in ("train", "val")}
            if self.folders["train"].classes != self.folders["val"].classes:
                raise SystemExit(f"{self.args.data_dir}: val/ and train/ must have the same class folders")
        ds = copy.copy(self.folders[split])
        ds.transform = transform
        return ds

    def work(self, *parts) -> Path | None:
        """Where a run keeps ``last.pt`` for ``--resume`` (None in a dry run: nothing is written)."""
        return None if self.dry else self.out.joinpath("work", *[str(p).replace(" ", "_").replace("/", "-")
                                                               for p in parts])

    def train_config(self, r: Recipe, seed: int, work: Path | None, batch: int | None = None) -> TrainConfig:
        b = batch or self.batch(r)
        lr = r.lr(self.world, b)
        return TrainConfig(
            epochs=r.epochs or 1, steps=DRY_STEPS if self.dry else r.iters, batch_size=b, lr=lr,
            min_lr=r.min_lr * r.total_batch(self.world, b) / r.lr_batch, warmup_epochs=r.warmup_epochs,
            weight_decay=r.weight_decay, optimizer=r.optimizer, momentum=r.momentum, clip_grad=r.clip_grad,
            amp=not self.args.no_amp, seed=seed, out_dir=str(work) if work else None,
            resume=bool(self.args.resume), log_every=0 if self.dry else 100, progress=not self.args.no_progress,
            num_workers=0 if self.dry else self.args.workers)

    def fit(self, model: nn.Module, data, loss_fn: Callable, r: Recipe, *, seed: int, tag: str,
            backbone_params: int | None = None, backbone_name: str | None = None, backbone_arch: dict | None = None,
            evaluate: Callable[[nn.Module], dict] | None = None, work: Path | None = None, batch: int | None = None,
            param_groups: list[dict] | None = None, on_step: Callable | None = None,
            ddp_kwargs: dict | None = None) -> dict:
        """:func:`workbench.train.fit` with the recipe's settings; then ``evaluate(model)``. A dry run logs the
        steps, the losses, the parameter hashes before / after and the backbone's size (``backbone_params``: the
        parameters of ``backbone_name`` built with ``backbone_arch``, i.e. without the task's head) for the test."""
        cfg = self.train_config(r, seed, work, batch)
        self.log(f"  {tag}: {r.backbone} at {self.img_size(r)} px, {cfg.batch_size} images x {self.world} process(es), "
                 f"lr {cfg.lr:.3g}, " + (f"{cfg.steps} steps" if cfg.steps else f"{cfg.epochs} epochs"))
        losses, steps = [], []

        def logged_loss(m, batch):
            res = loss_fn(m, batch)
            losses.append(float((res[0] if isinstance(res, tuple) else res).detach()))
            return res

        def counted_step(m, step, total):
            steps.append(step)
            if on_step is not None:
                on_step(m, step, total)

        before = param_hash(model) if self.dry else None
        res = fit(model, data, logged_loss, cfg, param_groups=param_groups, on_step=counted_step,
                  ddp_kwargs=ddp_kwargs)
        metrics = evaluate(model) if evaluate is not None else {}
        if self.dry:
            self.report.append({
                "tag": tag, "phase": r.phase, "seed": seed, "rank": self.rank, "world": self.world,
                "steps": res["steps"], "optimizer_steps": len(steps), "losses": losses, "eval": metrics,
                "params_before": before, "params_after": param_hash(model), "lr": cfg.lr,
                "batch_per_process": cfg.batch_size, "img_size": self.img_size(r),
                "backbone": backbone_name or r.backbone, "backbone_arch": backbone_arch if backbone_arch is not None
                else self.arch(r), "backbone_params": backbone_params,
                "model_params": count_params(model)})
        return {**res, "eval": metrics}

    @torch.no_grad()
    def evaluate(self, model: nn.Module, dataset, fn: Callable, init: dict[str, torch.Tensor], batch_size: int) -> dict:
        """Sum ``fn(model, batch)`` (a dict of tensors shaped like ``init``) over this process's share of ``dataset``
        (every ``world``-th item from ``rank``), then over all processes; eval mode, bfloat16 autocast on CUDA.
        Returns floats for one-element sums, CPU tensors otherwise."""
        import torch.distributed as dist

        idx = list(range(self.rank, len(dataset), self.world))
        loader = torch.utils.data.DataLoader(torch.utils.data.Subset(dataset, idx), batch_size=batch_size,
                                             num_workers=0 if self.dry else self.args.workers)
        was = model.training
        model.eval()
        sums = {k: v.detach().clone().double().to(self.device) for k, v in init.items()}
        amp = self.device.type == "cuda" and not self.args.no_amp
        for batch in loader:
            batch = [b.to(self.device, non_blocking=True) for b in batch]
            with torch.autocast(self.device.type, enabled=amp, dtype=torch.bfloat16):
                out = fn(model, batch)
            for k in sums:
                sums[k] += out[k].double().to(self.device)
        model.train(was)
        if is_distributed():
            for k in sorted(sums):
                dist.all_reduce(sums[k])
        return {k: (float(v) if v.numel() == 1 else v.cpu()) for k, v in sums.items()}

    def accuracy(self, model: nn.Module, dataset, batch_size: int) -> float:
        s = self.evaluate(model, dataset, top1, {"correct": torch.zeros(()), "count": torch.zeros(())}, batch_size)
        return s["correct"] / max(1.0, s["count"])

    def finish(self, claims: Sequence[protocol.Claim], extra: Sequence[dict] = ()) -> None:
        """Claims from the records (rank 0), the dry-run log of every process, then leave the process group."""
        name = "claims.dry-run.json" if self.dry else "claims.json"
        if self.main:
            doc = protocol.write_claims(self.scale.paper, claims, self.study, path=self.out / name, extra=extra)
            print(protocol.claims_table(doc))
            print(f"wrote {self.out / name}")
        if self.dry:
            d = self.out / "dry-run"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"rank{self.rank}.json").write_text(json.dumps({"job": self.scale.job, "rank": self.rank,
                                                                 "world": self.world, "phases": self.report},
                                                                indent=1, default=float))
        if is_distributed():
            import torch.distributed as dist

            dist.barrier()
            dist.destroy_process_group()


def start(a: argparse.Namespace, argv: Sequence[str], paper: str) -> Run:
    """Join the process group (torchrun), check the options and the data, open the records."""
    sc = SCALES[paper]
    if a.commit:
        raise SystemExit("--commit writes the committed laptop studies; paper-scale results go to --out")
    if a.budget_min is not None:
        raise SystemExit("--budget-min plans laptop runs; the paper recipe fixes the length of every run")
    if not a.data_dir:
        raise SystemExit(f"--scale paper needs --data-dir ({sc.data})")
    for split in ("train", "val"):
        if not (Path(a.data_dir) / split).is_dir():
            raise SystemExit(f"--data-dir {a.data_dir} has no {split}/ folder ({sc.data})")
    if a.dry_run_img_size is not None and not a.dry_run:
        raise SystemExit("--dry-run-img-size only with --dry-run")
    rank, world, device = setup_distributed()
    torch.set_num_threads(max(1, int(a.threads)))
    out = Path(a.out) if a.out else Path(os.environ.get("WORKBENCH_RUNS", "runs")) / "paper" / paper
    out.mkdir(parents=True, exist_ok=True)
    study = RankStudy(paper, out, seeds=a.seeds[:1] if a.dry_run else a.seeds, resume=a.resume,
                      progress=not a.no_progress and rank == 0,
                      log=print if rank == 0 else (lambda *_: None),
                      records_name="records.dry-run.jsonl" if a.dry_run else "records.jsonl")
    command = protocol.command_line(f"torchrun --nproc_per_node <gpus> -m workbench.cli train {sc.job}", argv)
    run = Run(a, sc, rank, world, device, out, study, command)
    run.log(f"{sc.job} --scale paper{' --dry-run' if a.dry_run else ''}: {sc.what}")
    run.log(f"  {world} process(es) on {device.type}; records: {study.path}")
    if len(a.seeds) < 3 and not a.dry_run:
        run.log(f"note: {len(a.seeds)} seed(s); the protocol asks for at least 3 before a verdict of 'reproduced'.")
    return run


def shared_config(run: Run, **more) -> dict:
    """What every record's configuration hash covers at paper scale (recipes, processes, batch, dry run)."""
    return {"scale": "paper", "dry_run": run.dry, "processes": run.world,
            "recipes": {k: asdict(r) for k, r in run.scale.recipes.items()},
            "batch_per_gpu": run.args.batch_per_gpu, "img_size": run.args.dry_run_img_size, **more}


if __name__ == "__main__":
    print(markdown())
