"""Balanced Sparsity study (Yao et al., AAAI 2019), at laptop scale, under the study protocol: at equal sparsity,
is balanced pruning as accurate as unstructured pruning and better than block pruning?

Three tasks, each trained dense first and then pruned gradually (cubic schedule of Zhu & Gupta, masks recomputed
every few steps during the first 60% of fine-tuning, pruned weights re-zeroed after every optimizer step):

* ``mlp``   — a 64-256-256-10 MLP on scikit-learn's 8x8 digits (test accuracy),
* ``lstm``  — a character-level LSTM language model on an offline corpus (scikit-learn's dataset descriptions
              and the docstrings of a fixed list of Python standard-library modules; test perplexity per char),
* ``swin``  — the Swin V2 demo recipe (``swinv2_micro_window4_64``, 64 px single-object shapes, ImageNet-normalised),
              pruning the MLPs of its blocks (test accuracy).

Sparsities are those a bank of 32 represents exactly (k = 8, 4, 2 kept: 75, 87.5, 93.75 %); the unstructured and
block (4x4) masks use the same sparsity. Every run trains through :func:`workbench.train.fit` (AdamW, warm-up +
cosine, the pruner applied after every optimizer step). Three seeds per (task, method, sparsity); the dense model
of a seed is shared by its pruned arms. Claims: balanced beats block, and balanced is not worse than unstructured by
more than a small margin (1 point of accuracy; 2% of the dense perplexity), as the paper reports.
Jobs: ``workbench train sparse-study`` and ``workbench train sparse-demo`` (the pruned Swin V2 whose dense weights
the dashboard shows).

``sparse-study --scale paper --data-dir <ImageFolder>`` prunes a full-size model instead (:func:`main_paper`): a dense
Swin V2-T trained with the Swin V2 recipe (or loaded with ``--dense-checkpoint``), then gradual pruning of its
block MLPs with fine-tuning, per method and sparsity, under torchrun; see :mod:`workbench.studies.scale` and
docs/scale.md.
"""
from __future__ import annotations

import argparse
import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.checkpoints import demo_path, load_checkpoint, load_demo, save_checkpoint
from workbench.data import shapes
from workbench.data.natural import digits
from workbench.data.transforms import RandomHorizontalFlip, TensorImages, normalize
from workbench.helptext import HelpFormatter
from workbench.models import create_model
from workbench.sparse.nn import SparsifyConfig, sparsify_
from workbench.sparse.prune import PruneConfig, Pruner, cubic_sparsity
from workbench.studies import protocol, scale
from workbench.train import TrainConfig, evaluate_accuracy, fit

SPARSITIES = (0.75, 0.875, 0.9375)
METHODS = ("balanced", "unstructured", "block")
BANK = 32
DEMO_NAME = "sparse_swin"
DEMO_COMMAND = "workbench train sparse-demo --save-demo"
PAPER = "sparse"
SWIN_MODEL = "swinv2_micro_window4_64"
SWIN_MLP = r"mlp\.fc[12]$"
EXAMPLE_WEIGHTS = ("layers.2.blocks.0.mlp.fc1.weight", "layers.3.blocks.1.mlp.fc2.weight")


# ------------------------------------------------------------------------------------------------ data
STDLIB_MODULES = ("collections", "functools", "itertools", "json", "textwrap", "string", "heapq", "bisect",
                  "statistics", "fractions", "decimal", "difflib", "shlex", "csv", "random", "pathlib",
                  "argparse", "calendar", "contextlib", "dataclasses")


def text_corpus(max_chars: int = 160_000) -> str:
    """An offline English/technical corpus from text that installed packages ship (no downloads): the
    scikit-learn dataset descriptions, then docstrings of a fixed list of standard-library modules."""
    import importlib
    import inspect
    from importlib import resources

    parts = []
    descr = resources.files("sklearn.datasets") / "descr"
    for f in sorted(descr.iterdir(), key=lambda p: p.name):
        if f.name.endswith(".rst"):
            parts.append(f.read_text(encoding="utf-8"))
    for name in STDLIB_MODULES:
        mod = importlib.import_module(name)
        parts.append(inspect.getdoc(mod) or "")
        for attr in sorted(dir(mod)):
            obj = getattr(mod, attr, None)
            if attr.startswith("_") or not (inspect.isfunction(obj) or inspect.isclass(obj)):
                continue
            doc = inspect.getdoc(obj)
            if doc:
                parts.append(doc)
    text = "\n\n".join(parts)
    text = "".join(c if (32 <= ord(c) < 127 or c == "\n") else "?" for c in text)
    return text[:max_chars]


@dataclass
class CharData:
    train: torch.Tensor
    test: torch.Tensor
    vocab: list[str]


def char_data(max_chars: int = 160_000) -> CharData:
    text = text_corpus(max_chars)
    vocab = sorted(set(text))
    idx = {c: i for i, c in enumerate(vocab)}
    ids = torch.tensor([idx[c] for c in text], dtype=torch.long)
    cut = int(len(ids) * 0.9)
    return CharData(ids[:cut], ids[cut:], vocab)


# ------------------------------------------------------------------------------------------------ models
class CharLSTM(nn.Module):
    def __init__(self, vocab: int, emb: int = 64, hidden: int = 128):
        super().__init__()
        self.emb = nn.Embedding(vocab, emb)
        self.lstm = nn.LSTM(emb, hidden, batch_first=True)
        self.head = nn.Linear(hidden, vocab)

    def forward(self, t):
        h, _ = self.lstm(self.emb(t))
        return self.head(h)


def make_mlp() -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                         nn.Linear(256, 10))


def make_swin() -> nn.Module:
    return create_model(SWIN_MODEL, drop_path_rate=0.0)


def swin_mlp_skip(model: nn.Module) -> list[str]:
    """Module names the Swin pruner leaves dense: everything that is not a block MLP."""
    import re
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and not re.search(SWIN_MLP, n)]


# ------------------------------------------------------------------------------------------------ training
def train(model, data, loss_fn, *, steps: int, lr: float, batch_size: int, seed: int, weight_decay: float = 0.0,
          warmup_frac: float = 0.05, on_step=None, progress: bool = False) -> None:
    """:func:`workbench.train.fit` for exactly ``steps`` steps (AdamW, warm-up + cosine, clipping 5)."""
    per_epoch = max(1, len(data) // batch_size)
    tc = TrainConfig(steps=steps, batch_size=batch_size, lr=lr, min_lr=0.0, warmup_epochs=warmup_frac * steps / per_epoch,
                     weight_decay=weight_decay, seed=seed, progress=progress, device="cpu", log_every=0)
    fit(model, data, loss_fn, tc, on_step=on_step)
    model.eval()


def gradual_prune(model, data, loss_fn, cfg: PruneConfig, *, steps: int, lr: float, batch_size: int, seed: int,
                  skip=(), updates: int = 10, progress: bool = False):
    """Fine-tune with gradual pruning: sparsity follows the cubic schedule (Zhu & Gupta, the paper's eq. 2) over
    the first 60% of the steps, masks recomputed ``updates`` times; the mask is re-applied after every step."""
    pruner = Pruner(model, cfg, skip=skip)
    ramp = max(1, int(0.6 * steps))
    every = max(1, ramp // updates)

    def on_step(_model, step, _total):
        if step <= ramp and (step % every == 0 or step == ramp):
            pruner.update(cubic_sparsity(min(step, ramp), ramp, cfg.sparsity))
        else:
            pruner.apply()

    pruner.update(cubic_sparsity(0, ramp, cfg.sparsity))
    train(model, data, loss_fn, steps=steps, lr=lr, batch_size=batch_size, seed=seed, on_step=on_step, progress=progress)
    pruner.update(cfg.sparsity)  # exact final pattern
    return pruner


def _ce(model, b):
    x, y = b
    return F.cross_entropy(model(x), y)


def _lm_loss(model, b):
    b = b[0] if isinstance(b, (tuple, list)) else b
    logits = model(b[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1))


class Windows(torch.utils.data.Dataset):
    """Random ``seq + 1``-character windows of a token stream (a fixed set, drawn from ``seed``)."""

    def __init__(self, ids: torch.Tensor, seq: int, n: int, seed: int):
        g = torch.Generator().manual_seed(seed)
        self.starts = torch.randint(0, len(ids) - seq - 1, (n,), generator=g)
        self.ids, self.seq = ids, seq

    def __len__(self):
        return len(self.starts)

    def __getitem__(self, i):
        s = int(self.starts[i])
        return self.ids[s:s + self.seq + 1]


@torch.no_grad()
def perplexity(model, ids: torch.Tensor, seq: int = 128) -> float:
    model.eval()
    n = (len(ids) - 1) // seq
    x = ids[: n * seq].reshape(n, seq)
    y = ids[1: n * seq + 1].reshape(n, seq)
    logits = model(x)
    return math.exp(float(F.cross_entropy(logits.reshape(-1, logits.shape[-1]), y.reshape(-1))))


# ------------------------------------------------------------------------------------------------ tasks
@dataclass
class Task:
    name: str
    metric: str
    higher_better: bool
    build: object        # () -> model
    data: object         # the training Dataset
    loss: object
    batch_size: int
    pretrain_steps: int
    pretrain_lr: float
    finetune_steps: int
    finetune_lr: float
    evaluate: object     # model -> float
    skip: object         # model -> list of module names kept dense
    weight_decay: float = 0.0


def _mlp_task() -> Task:
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    return Task("mlp", "test accuracy", True, make_mlp, torch.utils.data.TensorDataset(xtr, ytr), _ce, 64,
                600, 3e-3, 400, 1e-3, lambda m: evaluate_accuracy(m, xte, yte), lambda m: [])


def _lstm_task() -> Task:
    d = char_data()
    return Task("lstm", "test perplexity", False, lambda: CharLSTM(len(d.vocab)), Windows(d.train, 48, 16000, 7),
                _lm_loss, 32, 500, 5e-3, 150, 2e-3, lambda m: perplexity(m, d.test), lambda m: ["head"])


def _swin_task() -> Task:
    x, y = shapes.tensors(n=20000, size=64, seed=11)
    xt, yt = shapes.tensors(n=1000, size=64, seed=12)
    return Task("swin", "test accuracy", True, make_swin, TensorImages(x, y, transform=RandomHorizontalFlip()), _ce,
                64, 2500, 2e-3, 300, 5e-4, lambda m: evaluate_accuracy(m, xt, yt, preprocess=normalize), swin_mlp_skip,
                weight_decay=0.05)


TASKS = {"mlp": _mlp_task, "lstm": _lstm_task, "swin": _swin_task}


def run_seed(task: Task, seed: int, sparsities, methods, progress: bool = False) -> dict:
    """The dense model of a seed and every pruned variant of it: ``{"dense": value, "<method>@<s>": value}``."""
    torch.manual_seed(seed)
    dense = task.build()
    train(dense, task.data, task.loss, steps=task.pretrain_steps, lr=task.pretrain_lr, batch_size=task.batch_size,
          seed=seed, weight_decay=task.weight_decay, progress=progress)
    out = {"dense": task.evaluate(dense)}
    for s in sparsities:
        for method in methods:
            model = copy.deepcopy(dense)
            cfg = PruneConfig(method=method, sparsity=s, bank_size=BANK, block=(4, 4))
            pruner = gradual_prune(model, task.data, task.loss, cfg, steps=task.finetune_steps, lr=task.finetune_lr,
                                   batch_size=task.batch_size, seed=seed + 1000, skip=task.skip(model), progress=progress)
            out[f"{method}@{s}"] = task.evaluate(model)
            out[f"{method}@{s}:actual_sparsity"] = round(pruner.sparsity(), 4)
    return out


def claims(command: str, tasks, sparsities) -> list[protocol.Claim]:
    out = []
    for t in tasks:
        higher = t != "lstm"
        margin = 0.01 if higher else None
        for s in sparsities:
            c = dict(part=t, direction="higher" if higher else "lower", chance=0.1 if higher else None,
                     perfect=1.0, command=command, baselines=["dense"], metric=f"{t} @ {100 * s:.2f}%")
            out.append(protocol.Claim(
                id=f"{t}_balanced_vs_block_{s}", claim=f"Balanced sparsity is more accurate than block sparsity "
                                                      f"({t}, {100 * s:.2f}%).",
                paper_value="Tables 1-3: at equal sparsity balanced stays close to unstructured while block (4x4 / "
                            "vector) loses accuracy (VGG-16, LSTM on PTB, speech)",
                baseline="block", method="balanced", **c))
            out.append(protocol.Claim(
                id=f"{t}_balanced_vs_unstructured_{s}",
                claim=f"Balanced sparsity is as accurate as unstructured sparsity ({t}, {100 * s:.2f}%; not worse by more "
                      f"than {'1 point' if higher else '2% of the dense perplexity'}).",
                paper_value="Tables 1-3: balanced within a few tenths of unstructured (e.g. VGG-16 top-5)",
                baseline="unstructured", method="balanced", margin=margin, **c))
    return out


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="workbench train sparse-study",
                                description="Balanced vs unstructured vs block pruning at equal sparsity (MLP on digits, "
                                            "character LSTM, Swin V2 on shapes), under the study protocol.")
    protocol.add_arguments(p, PAPER)
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS), help="Tasks to run.")
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES), help="Target sparsities.")
    scale.add_arguments(p)
    p.add_argument("--dense-checkpoint", default=None,
                   help="Paper scale: start from this dense Swin V2-T (a workbench checkpoint, e.g. a last.pt of "
                        "swinv2-study --scale paper's log-spaced CPB arm) instead of training one per seed.")
    a = p.parse_args(argv)
    if a.scale == "paper":
        return main_paper(a, argv)
    scale.check_laptop(a)
    if a.dense_checkpoint:
        raise SystemExit("--dense-checkpoint only with --scale paper")
    study = protocol.open_study(a, PAPER)
    command = protocol.command_line("workbench train sparse-study", argv)
    prog = not a.no_progress
    values = {}
    for t in a.tasks:
        task = TASKS[t]()
        shared = {"task": t, "sparsities": list(a.sparsities), "bank": BANK, "pretrain_steps": task.pretrain_steps,
                  "finetune_steps": task.finetune_steps}
        study.run(t, {"dense + pruned": lambda s, task=task: run_seed(task, s, a.sparsities, METHODS, prog)}, shared)
    extra = []
    for t in a.tasks:
        recs = [r for r in study.records(t) if r["arm"] == "dense + pruned"]
        if not recs:
            continue
        dense = {r["seed"]: r["metrics"]["dense"] for r in recs}
        for s in a.sparsities:
            values = {"dense": dense, **{m: {r["seed"]: r["metrics"][f"{m}@{s}"] for r in recs} for m in METHODS}}
            for c in claims(command, [t], [s]):
                if t == "lstm" and c.margin is None and "unstructured" in c.baseline:
                    c.margin = 0.02 * sum(dense.values()) / len(dense)
                extra.append(protocol.judge(c, values))
    doc = protocol.write_claims(PAPER, [], study, extra=extra)
    print(protocol.claims_table(doc))


# ------------------------------------------------------------------------------------------------ paper scale
PAPER_TASK = "swin_v2_t"


def main_paper(a: argparse.Namespace, argv: list[str]) -> None:
    """A dense full-size Swin V2-T, then every (method, sparsity) pruned gradually from it with fine-tuning (see
    :mod:`workbench.studies.scale`). One record per seed, as the laptop tasks: ``dense`` and ``<method>@<s>``."""
    run = scale.start(a, argv, PAPER)
    dr, pr = run.scale.recipes["dense"], run.scale.recipes["prune"]
    size = run.img_size(dr)
    train_dense = run.folder("train", scale.train_transform(size, dr))
    train_prune = run.folder("train", scale.train_transform(run.img_size(pr), pr))
    val = run.folder("val", scale.eval_transform(size))
    n_cls, x = len(val.classes), pr.extra

    def accuracy(m):
        return {"acc": run.accuracy(m, val, run.batch(pr))}

    def seed_run(seed):
        torch.manual_seed(seed)
        dense = create_model(dr.backbone, num_classes=n_cls, img_size=size, **run.arch(dr))
        n_backbone = scale.count_params(dense) - scale.count_params(dense.head)
        if a.dense_checkpoint:
            dense.load_state_dict(load_checkpoint(a.dense_checkpoint).state_dict)
            out = {"dense": accuracy(dense.to(run.device))["acc"]}
        else:
            res = run.fit(dense, train_dense, scale.classification_loss(dr, n_cls), dr, seed=seed,
                          tag=f"dense, seed {seed}", backbone_params=n_backbone, evaluate=accuracy,
                          work=run.work("dense", seed))
            out = {"dense": res["eval"]["acc"]}
        for s in a.sparsities:
            for method in METHODS:
                model = copy.deepcopy(dense)
                cfg = PruneConfig(method=method, sparsity=s, bank_size=x["bank_size"], block=tuple(x["block"]))
                pruner = Pruner(model, cfg, skip=swin_mlp_skip(model))
                pruner.update(0.0)

                def on_step(_m, step, total, pruner=pruner, s=s):
                    ramp = max(1, int(x["ramp"] * total))   # the cubic schedule over the first 60% of the steps
                    every = max(1, ramp // x["mask_updates"])
                    if step <= ramp and (step % every == 0 or step == ramp):
                        pruner.update(cubic_sparsity(min(step, ramp), ramp, s))
                    else:
                        pruner.apply()

                def final(m, pruner=pruner, s=s):
                    pruner.update(s)   # the exact final pattern
                    return accuracy(m)

                res = run.fit(model, train_prune, scale.classification_loss(pr, n_cls), pr, seed=seed + 1000,
                              tag=f"{method} {100 * s:.2f}%, seed {seed}", backbone_params=n_backbone,
                              backbone_arch=run.arch(dr), on_step=on_step, evaluate=final,
                              work=run.work("prune", f"{method}-{s}", seed))
                out[f"{method}@{s}"] = res["eval"]["acc"]
                out[f"{method}@{s}:actual_sparsity"] = round(pruner.sparsity(), 4)
        return out

    run.study.run(PAPER_TASK, {"dense + pruned": seed_run},
                  scale.shared_config(run, classes=n_cls, sparsities=list(a.sparsities), methods=list(METHODS),
                                      dense_checkpoint=a.dense_checkpoint), seeds=run.seeds)
    extra = []
    recs = [r for r in run.study.records(PAPER_TASK) if r["arm"] == "dense + pruned"]
    if recs:
        dense = {r["seed"]: r["metrics"]["dense"] for r in recs}
        for s in a.sparsities:
            values = {"dense": dense, **{m: {r["seed"]: r["metrics"][f"{m}@{s}"] for r in recs} for m in METHODS}}
            for c in claims(run.command, [PAPER_TASK], [s]):
                c.chance = 1.0 / n_cls
                extra.append(protocol.judge(c, values))
    run.finish([], extra=extra)


def demo_main(argv: list[str] | None = None) -> None:
    """Train the Swin V2 of the study's Swin task, prune its MLPs to 87.5% balanced sparsity, save fp16 weights."""
    p = argparse.ArgumentParser(prog="workbench train sparse-demo", formatter_class=HelpFormatter,
                                description="Train the Swin V2 demo for the sparsity dashboard and prune its MLPs.")
    p.add_argument("--seed", type=int, default=0, help="Initialisation and data-order seed.")
    p.add_argument("--sparsity", type=float, default=0.875, help="Balanced sparsity of the block MLPs.")
    p.add_argument("--save-demo", action="store_true",
                   help=f"Overwrite the committed demo checkpoint workbench/assets/checkpoints/{DEMO_NAME}.pt.")
    p.add_argument("--out", default=f"runs/{PAPER}/{DEMO_NAME}.pt", help="Checkpoint path without --save-demo.")
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    task = _swin_task()
    torch.manual_seed(a.seed)
    model = task.build()
    train(model, task.data, task.loss, steps=task.pretrain_steps, lr=task.pretrain_lr, batch_size=task.batch_size,
          seed=a.seed, weight_decay=task.weight_decay, progress=True)
    dense_acc = task.evaluate(model)
    examples = {k: v.detach().clone().half() for k, v in model.state_dict().items() if k in EXAMPLE_WEIGHTS}
    cfg = PruneConfig("balanced", a.sparsity, bank_size=BANK)
    gradual_prune(model, task.data, task.loss, cfg, steps=task.finetune_steps, lr=task.finetune_lr,
                  batch_size=task.batch_size, seed=a.seed + 1000, skip=task.skip(model), progress=True)
    acc = task.evaluate(model)
    path = demo_path(DEMO_NAME) if a.save_demo else a.out
    save_checkpoint(path, model, half=True, config=dict(model=SWIN_MODEL, overrides={"drop_path_rate": 0.0},
                                                         bank_size=BANK, sparsity=a.sparsity, prune=SWIN_MLP),
                    command=protocol.command_line("workbench train sparse-demo", argv or []), data_seed=11,
                    extra={"dense_accuracy": dense_acc, "sparse_accuracy": acc, "dense_examples": examples,
                           "normalize": "imagenet"})
    print(f"wrote {path}: dense accuracy {dense_acc:.3f}, {100 * a.sparsity:.1f}% balanced accuracy {acc:.3f}")


def demo_model(sparse: bool = True):
    """The demo Swin V2 (fp32, eval mode) with its 87.5%-balanced MLPs; ``sparse=True`` replaces those MLP Linear
    layers by ``BalancedSparseLinear`` via ``sparsify_``. Returns (model, checkpoint)."""
    ck = load_demo(DEMO_NAME, DEMO_COMMAND)
    model = make_swin()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck.state_dict.items()})
    model.eval()
    if sparse:
        sparsify_(model, SparsifyConfig(sparsity=ck.meta.get("config", {}).get("sparsity", 0.875), bank_size=BANK,
                                        include=SWIN_MLP))
    return model, ck


JOBS = {
    "sparse-study": (main, "Balanced vs unstructured vs block pruning: MLP/digits, LSTM LM, Swin V2 on shapes"),
    "sparse-demo": (demo_main, "Swin V2 on shapes with 87.5% balanced-sparse MLPs (the dashboard's demo checkpoint)"),
}
