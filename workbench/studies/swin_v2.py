"""Swin Transformer V2 at laptop scale: the demo classifier and the paper's claims, under the study protocol.

Jobs (``workbench train <job> --help`` lists every option):

* ``swinv2-demo``  the demo classifier of the app and notebook 01: ``swinv2_micro_window4_64`` on single-object
  shapes at 64 px (all backgrounds), ImageNet-normalised inputs, flips, AdamW with warm-up + cosine. Its test
  accuracy on unseen shapes is stored in the checkpoint. A V1-table model trained with the same recipe supplies
  the interpolated tables the app shows beside the continuous position bias.
* ``swinv2-study`` two parts, >= 3 seeds each, records in ``records.jsonl``, verdicts in ``claims.json``:

  - ``transfer`` (paper Sec. 3.4 and Table 1): train at 64 px / window 4 with a log-spaced CPB, a linear-spaced
    CPB or V1's parametric table, then evaluate with a larger window (64 px / window 8) and at a larger
    resolution and window (128 px / window 8, the same test scenes rendered larger), without and with a short
    fine-tune. The CPB variants are evaluated on the new window's coordinates normalised by the pretrained
    window; the table is bicubically interpolated (V1's recipe).
  - ``activations`` (paper Sec. 3.1, Fig. 2): a one-stage model of 12 blocks (width 32, 16x16 tokens) with V1
    (pre-norm, dot product, table), pre-norm + cosine attention, or V2 (residual post-norm + cosine + log
    CPB); the residual-stream amplitude of the last block over the first, after a short training.

The paper's models are ImageNet-scale (Swin-T 28M parameters, 300 epochs); here a 0.6M-parameter model
trains for minutes. ``--scale paper`` runs part ``transfer`` at the paper's size instead: Swin V2-T at 256 px /
window 8 with each position bias, trained on ``--data-dir`` with the official recipe, then tested at 384 / W12 and
512 / W16 without fine-tuning (:func:`main_paper`; docs/scale.md).
"""
from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F

from workbench import swin_v2
from workbench.checkpoints import demo_path, save_checkpoint
from workbench.data import shapes
from workbench.data.transforms import RandomHorizontalFlip, TensorImages, normalize
from workbench.helptext import HelpFormatter
from workbench.models import create_model
from workbench.studies import protocol, scale
from workbench.train import TrainConfig, evaluate_accuracy, fit

PAPER = "swin_v2"
STUDY_MODEL = "swinv2_micro_window4_64"
DEMO_NAME = "swinv2_micro_shapes64"
DEMO_COMMAND = "workbench train swinv2-demo --save-demo"
STUDY_COMMAND = "workbench train swinv2-study --commit"

BIAS_VARIANTS = {
    "log-spaced CPB": dict(bias="cpb_log"),
    "linear-spaced CPB": dict(bias="cpb_linear"),
    "V1 table (bicubic)": dict(bias="table"),
}
NORM_VARIANTS = {
    "V1: pre-norm + dot": dict(norm="pre", attn="dot", bias="table", merge="v1"),
    "pre-norm + cosine": dict(norm="pre", attn="cosine", bias="cpb_log", merge="v2"),
    "V2: res-post-norm + cosine": dict(norm="post", attn="cosine", bias="cpb_log", merge="v2"),
}


@dataclass
class ClassifierConfig:
    """One supervised run on single-object shapes (every study arm and the demo use this recipe)."""

    model: str = STUDY_MODEL
    img_size: int = 64
    n_train: int = 20000
    n_test: int = 1000
    steps: int = 2500
    batch_size: int = 64
    lr: float = 2e-3
    min_lr: float = 1e-5
    warmup_frac: float = 0.05
    weight_decay: float = 0.05
    drop_path_rate: float = 0.0
    flip: bool = True
    data_seed: int = 11      # training scenes; the test scenes use data_seed + 1
    switches: dict | None = None


@dataclass
class TransferConfig:
    base: ClassifierConfig
    big_size: int = 128
    big_window: int = 8
    ft_steps: int = 200
    ft_batch_size: int = 32
    ft_lr: float = 5e-4
    n_finetune: int = 4000


@dataclass
class ActivationConfig:
    depth: int = 12
    embed_dim: int = 32
    num_heads: int = 2
    steps: int = 600
    batch_size: int = 64
    lr: float = 1e-3
    n_train: int = 10000
    n_probe: int = 64


# ------------------------------------------------------------------------------------------------ training
def _loss(model, batch):
    x, y = batch
    logits = model(x)
    return F.cross_entropy(logits, y), {"acc": float((logits.argmax(-1) == y).float().mean())}


def train(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, *, steps: int, batch_size: int, lr: float,
          seed: int, min_lr: float = 1e-5, warmup_frac: float = 0.05, weight_decay: float = 0.05,
          flip: bool = True, progress: bool = True) -> dict:
    """Supervised training through :func:`workbench.train.fit`: normalised inputs, flips, AdamW, warm-up +
    cosine over exactly ``steps`` steps."""
    n = len(x)
    per_epoch = max(1, n // batch_size)
    cfg = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, min_lr=min_lr, warmup_epochs=warmup_frac * steps / per_epoch,
                      weight_decay=weight_decay, seed=seed, progress=progress, device="cpu", log_every=0)
    ds = TensorImages(x, y, transform=RandomHorizontalFlip() if flip else None)
    return fit(model, ds, _loss, cfg)


def accuracy(model, x, y) -> float:
    return evaluate_accuracy(model, x, y, batch_size=200, preprocess=normalize)


def build(cfg: ClassifierConfig, **switches) -> swin_v2.SwinTransformerV2:
    sw = dict(cfg.switches or {})
    sw.update(switches)
    return create_model(cfg.model, img_size=cfg.img_size, drop_path_rate=cfg.drop_path_rate, **sw)


def train_classifier(cfg: ClassifierConfig, seed: int, progress: bool = True, **switches):
    """Build, train and test one classifier: ``(model, {"acc", "train_loss"})``."""
    x, y = shapes.tensors(n=cfg.n_train, size=cfg.img_size, seed=cfg.data_seed)
    xt, yt = shapes.tensors(n=cfg.n_test, size=cfg.img_size, seed=cfg.data_seed + 1)
    torch.manual_seed(seed)
    model = build(cfg, **switches)
    res = train(model, x, y, steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, seed=seed, min_lr=cfg.min_lr,
                warmup_frac=cfg.warmup_frac, weight_decay=cfg.weight_decay, flip=cfg.flip, progress=progress)
    return model, {"acc": accuracy(model, xt, yt), "train_loss": res["history"][-1]["train_loss"]}


def effective_windows(model) -> tuple[int, ...]:
    """The window each stage really uses (it shrinks to the feature map when that is smaller)."""
    return tuple(layer.blocks[0].window_size for layer in model.layers)


def transfer(model, img_size: int, window_size: int):
    """A copy of ``model`` for ``img_size`` / ``window_size`` loaded from its state dict alone (CPB: the
    pretrained windows are the source windows; V1 tables: bicubic interpolation)."""
    cfg = replace(model.cfg, img_size=img_size, window_size=window_size,
                  pretrained_window_sizes=effective_windows(model))
    new = swin_v2.SwinTransformerV2(cfg)
    swin_v2.transfer_state_dict(new, model.state_dict())
    return new


# ------------------------------------------------------------------------------------------------ demo
def main_demo(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="workbench train swinv2-demo", formatter_class=HelpFormatter,
                                description="Train the Swin V2 demo classifier (and the V1-table model whose tables "
                                            "the app shows) on single-object 64 px shapes.")
    d = ClassifierConfig()
    p.add_argument("--steps", type=int, default=8000, help="Optimizer steps of the demo model.")
    p.add_argument("--table-steps", type=int, default=3000, help="Optimizer steps of the V1-table model.")
    p.add_argument("--n-train", type=int, default=40000, help="Training scenes.")
    p.add_argument("--n-test", type=int, default=2000, help="Unseen test scenes.")
    p.add_argument("--lr", type=float, default=d.lr, help="Peak learning rate (AdamW).")
    p.add_argument("--seed", type=int, default=0, help="Initialisation and data-order seed.")
    p.add_argument("--save-demo", action="store_true",
                   help=f"Overwrite the committed demo checkpoint workbench/assets/checkpoints/{DEMO_NAME}.pt.")
    p.add_argument("--out", default=f"runs/{PAPER}/{DEMO_NAME}.pt",
                   help="Where to write the checkpoint when --save-demo is not given.")
    p.add_argument("--threads", type=int, default=1, help="Torch threads.")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    cfg = replace(d, steps=a.steps, n_train=a.n_train, n_test=a.n_test, lr=a.lr)
    print(f"training the demo model ({cfg.model}, {cfg.steps} steps on {cfg.n_train} scenes)")
    model, res = train_classifier(cfg, a.seed)
    print(f"demo model: test accuracy {res['acc']:.1%} on {cfg.n_test} unseen shapes")
    print(f"training the V1-table model ({a.table_steps} steps)")
    table_model, tres = train_classifier(replace(cfg, steps=a.table_steps), a.seed, bias="table")
    print(f"V1-table model: test accuracy {tres['acc']:.1%}")
    path = demo_path(DEMO_NAME) if a.save_demo else a.out
    tables = {n: t.detach().half() for n, t in table_model.named_parameters()
              if n.endswith("relative_position_bias_table")}
    save_checkpoint(path, model, config={"name": cfg.model, **_plain_cfg(model.cfg)},
                    command=protocol.command_line("workbench train swinv2-demo", argv), data_seed=cfg.data_seed,
                    half=True, extra={"v1_tables": tables, "classes": list(shapes.CLASSES), "normalize": "imagenet",
                                      "test_accuracy": res["acc"], "n_test": cfg.n_test,
                                      "table_test_accuracy": tres["acc"], "recipe": asdict(cfg)})
    print(f"wrote {path}")


def _plain_cfg(cfg) -> dict:
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(cfg).items()}


# ------------------------------------------------------------------------------------------------ study parts
def transfer_arm(tc: TransferConfig, switches: dict, progress: bool):
    base = tc.base

    def run(seed: int) -> dict:
        model, res = train_classifier(base, seed, progress=progress, **switches)
        out = {"acc_64_w4": res["acc"]}
        xt, yt = shapes.tensors(n=base.n_test, size=base.img_size, seed=base.data_seed + 1)
        xb, yb = shapes.tensors(n=base.n_test, size=tc.big_size, seed=base.data_seed + 1)   # the same scenes, larger
        for tag, size, xe, ye in (("64_w8", base.img_size, xt, yt), ("128_w8", tc.big_size, xb, yb)):
            big = transfer(model, size, tc.big_window)
            out[f"acc_{tag}"] = accuracy(big, xe, ye)
            xf, yf = shapes.tensors(n=tc.n_finetune, size=size, seed=base.data_seed + 2)
            train(big, xf, yf, steps=tc.ft_steps, batch_size=tc.ft_batch_size, lr=tc.ft_lr, seed=seed,
                  warmup_frac=0.1, progress=progress)
            out[f"acc_{tag}_ft"] = accuracy(big, xe, ye)
        return out

    return run


def deep_model(ac: ActivationConfig, **switches):
    """One stage of ``depth`` blocks over 16x16 tokens (64 px, patch 4, window 4): an isotropic Swin whose
    residual stream can be compared block by block."""
    return create_model(STUDY_MODEL, depths=(ac.depth,), num_heads=(ac.num_heads,), embed_dim=ac.embed_dim,
                                pretrained_window_sizes=(0,), drop_path_rate=0.0, **switches)


def amplitude_ratio(model, x) -> tuple[float, list[float]]:
    amps = swin_v2.activation_amplitudes(model, normalize(x))
    return amps[-1] / amps[0], amps


def activation_arm(ac: ActivationConfig, switches: dict, progress: bool):
    def run(seed: int) -> dict:
        x, y = shapes.tensors(n=ac.n_train, size=64, seed=21)
        probe = x[:ac.n_probe]
        torch.manual_seed(seed)
        model = deep_model(ac, **switches)
        r0, a0 = amplitude_ratio(model, probe)
        res = train(model, x, y, steps=ac.steps, batch_size=ac.batch_size, lr=ac.lr, seed=seed, progress=progress)
        r1, a1 = amplitude_ratio(model, probe)
        logits = swin_v2.attention_logits(model, normalize(probe))
        return {"ratio_trained": r1, "ratio_init": r0, "train_loss": res["history"][-1]["train_loss"],
                "max_abs_logit": max(float(t.abs().max()) for t in logits),
                "_extra": {"amplitudes_init": a0, "amplitudes_trained": a1}}

    return run


def claims(command: str) -> list[protocol.Claim]:
    common = dict(part="transfer", direction="higher", chance=0.1, perfect=1.0, command=command,
                  baselines=list(BIAS_VARIANTS))
    out = []
    for tag, what in (("64_w8", "window 4 -> 8 at 64 px"), ("128_w8", "64 px / window 4 -> 128 px / window 8")):
        for ft, when in (("", "without fine-tuning"), ("_ft", "after a short fine-tune")):
            for other in ("V1 table (bicubic)", "linear-spaced CPB"):
                out.append(protocol.Claim(
                    id=f"transfer_{tag}{ft}_vs_{'table' if 'table' in other else 'linear'}",
                    claim=f"Log-spaced CPB transfers better than {other} ({what}, {when}).",
                    paper_value="Table 1 (Swin-T, ImageNet, 256 px/W8 -> larger windows): log-spaced CPB keeps the "
                                "most accuracy without fine-tuning and after it",
                    metric=f"acc_{tag}{ft}", baseline=other, method="log-spaced CPB", **common))
    out.append(protocol.Claim(
        id="activation_growth",
        claim="Residual post-norm keeps the activation amplitude of deep layers from growing (V2 vs V1).",
        paper_value="Fig. 2: pre-norm amplitudes grow with depth (up to ~10^4x in the largest V1 model); "
                    "res-post-norm stays flat",
        metric="ratio_trained", direction="lower", baseline="V1: pre-norm + dot", method="V2: res-post-norm + cosine",
        part="activations", chance=None, perfect=1.0, command=command))
    out.append(protocol.Claim(
        id="activation_growth_norm_only",
        claim="The post-norm, not cosine attention, removes the growth (pre-norm + cosine vs V2).",
        paper_value="Sec. 3.1: residual post-norm is what bounds the amplitudes",
        metric="ratio_trained", direction="lower", baseline="pre-norm + cosine", method="V2: res-post-norm + cosine",
        part="activations", chance=None, perfect=1.0, command=command))
    return out


def main_study(argv: list[str]) -> None:
    p = argparse.ArgumentParser(prog="workbench train swinv2-study",
                                description="Swin V2 claims under the study protocol: window/resolution transfer "
                                            "of the position bias and activation growth across depth.")
    protocol.add_arguments(p, PAPER)
    p.add_argument("--part", choices=["all", "transfer", "activations"], default="all", help="Which part to run.")
    d, ad = ClassifierConfig(), ActivationConfig()
    p.add_argument("--steps", type=int, default=d.steps, help="Training steps of each transfer base model.")
    p.add_argument("--ft-steps", type=int, default=TransferConfig(d).ft_steps, help="Fine-tuning steps after transfer.")
    p.add_argument("--deep-steps", type=int, default=ad.steps, help="Training steps of each deep model.")
    p.add_argument("--depth", type=int, default=ad.depth, help="Blocks of the deep one-stage model.")
    p.add_argument("--n-train", type=int, default=d.n_train,
                   help="Training scenes of each base model (the fine-tuning set is a fifth, the deep models' "
                        "set a half of it).")
    p.add_argument("--n-test", type=int, default=d.n_test, help="Test scenes of every accuracy.")
    scale.add_arguments(p)
    a = p.parse_args(argv)
    if a.scale == "paper":
        return main_paper(a, argv)
    scale.check_laptop(a)
    study = protocol.open_study(a, PAPER)
    command = protocol.command_line("workbench train swinv2-study", argv)
    progress = not a.no_progress
    n_runs = len(a.seeds) * len(BIAS_VARIANTS)
    if a.part in ("all", "transfer"):
        base = replace(d, steps=a.steps, n_train=a.n_train, n_test=a.n_test)
        if a.budget_min is not None:
            spec = protocol.seconds_per_step(_one_step(base))
            share = a.budget_min * (0.85 if a.part == "all" else 1.0)
            base = replace(base, steps=protocol.plan_steps(a.steps, n_runs, spec * 1.5, share))
            print(f"budget: {base.steps} steps per base model")
        tc = TransferConfig(base, ft_steps=a.ft_steps, n_finetune=a.n_train // 5)
        study.run("transfer", {k: transfer_arm(tc, v, progress) for k, v in BIAS_VARIANTS.items()}, asdict(tc),
                  arm_configs=BIAS_VARIANTS)
    if a.part in ("all", "activations"):
        ac = replace(ad, steps=a.deep_steps, depth=a.depth, n_train=a.n_train // 2)
        if a.budget_min is not None:
            ac = replace(ac, steps=protocol.plan_steps(ac.steps, n_runs, 0.12, a.budget_min * 0.15))
        study.run("activations", {k: activation_arm(ac, v, progress) for k, v in NORM_VARIANTS.items()}, asdict(ac),
                  arm_configs=NORM_VARIANTS)
    doc = protocol.write_claims(PAPER, claims(command), study)
    print(protocol.claims_table(doc))


# ------------------------------------------------------------------------------------------------ paper scale
def paper_claims(command: str, sizes: list[tuple[int, int]], chance: float) -> list[protocol.Claim]:
    """Table 1 at paper scale: log-spaced CPB against the linear-spaced CPB and the V1 table at every larger
    size / window, without fine-tuning."""
    out = []
    for s, w in sizes:
        for other in ("V1 table (bicubic)", "linear-spaced CPB"):
            out.append(protocol.Claim(
                id=f"transfer_{s}_w{w}_vs_{'table' if 'table' in other else 'linear'}",
                claim=f"Log-spaced CPB transfers better than {other} ({s} px / window {w}, without fine-tuning).",
                paper_value="Table 1 (Swin-T, ImageNet-1K, trained at 256 px / W8, tested at larger windows without "
                            "fine-tuning): the log-spaced CPB keeps the most accuracy (values unverified here)",
                metric=f"acc_{s}_w{w}", direction="higher", baseline=other, method="log-spaced CPB",
                part="transfer_paper", chance=chance, perfect=1.0, command=command, baselines=list(BIAS_VARIANTS)))
    return out


def main_paper(a: argparse.Namespace, argv: list[str]) -> None:
    """Part ``transfer`` at the paper's size (see :mod:`workbench.studies.scale` and docs/scale.md)."""
    run = scale.start(a, argv, PAPER)
    r = run.scale.recipes["train"]
    size = run.img_size(r)
    train = run.folder("train", scale.train_transform(size, r))
    n_cls = len(train.classes)
    sizes = [(size * s // r.img_size, w) for s, w in r.extra["transfer"]]

    def val(px):
        return run.folder("val", scale.eval_transform(px))

    def arm(name, switches):
        def one(seed):
            torch.manual_seed(seed)
            arch = run.arch(r, **switches)
            model = create_model(r.backbone, num_classes=n_cls, img_size=size, **arch)

            def evaluate(m):
                out = {f"acc_{size}_w{m.cfg.window_size}": run.accuracy(m, val(size), run.batch(r))}
                for s, w in sizes:   # the trained weights in a model for the larger image and window
                    out[f"acc_{s}_w{w}"] = run.accuracy(transfer(m, s, w).to(run.device), val(s), run.batch(r))
                return out

            res = run.fit(model, train, scale.classification_loss(r, n_cls), r, seed=seed, tag=f"{name}, seed {seed}",
                          backbone_params=scale.count_params(model) - scale.count_params(model.head),
                          backbone_arch=arch, evaluate=evaluate,
                          work=run.work("transfer", name, f"seed{seed}"))
            return {**res["eval"], "train_loss": res["history"][-1]["train_loss"] if res["history"] else None}
        return one

    run.study.run("transfer_paper", {k: arm(k, v) for k, v in BIAS_VARIANTS.items()},
                  scale.shared_config(run, classes=n_cls), seeds=run.seeds, arm_configs=BIAS_VARIANTS)
    run.finish(paper_claims(run.command, sizes, 1.0 / n_cls))


def _one_step(cfg: ClassifierConfig):
    model = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), 1e-4)
    x, y = torch.randn(cfg.batch_size, 3, cfg.img_size, cfg.img_size), torch.randint(0, 10, (cfg.batch_size,))

    def step():
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


JOBS = {
    "swinv2-demo": (main_demo, "the Swin V2 demo classifier (>= 95% on unseen single-object shapes)"),
    "swinv2-study": (main_study, "Swin V2 claims: window/resolution transfer (CPB vs table), activation growth"),
}
