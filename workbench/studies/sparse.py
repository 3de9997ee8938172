"""Balanced Sparsity study (Yao et al., AAAI 2019), at laptop scale: at equal sparsity, is balanced pruning as
accurate as unstructured pruning and better than block pruning?

Three tasks, each trained dense first and then pruned gradually (cubic schedule of Zhu & Gupta, masks recomputed
every few steps during the first 60% of fine-tuning, pruned weights re-zeroed after every optimizer step):

* ``mlp``   — a 64-256-256-10 MLP on scikit-learn's 8x8 digits (test accuracy),
* ``lstm``  — a character-level LSTM language model on an offline corpus (scikit-learn's dataset descriptions
              and the docstrings of a fixed list of Python standard-library modules; test perplexity per char),
* ``swin``  — a tiny Swin V2 (3 stages, 32 px) on procedural shapes (plain and gradient backgrounds), pruning
              its MLPs (test accuracy).

Sparsities are those a bank of 32 represents exactly (k = 16, 8, 4, 2 kept: 50, 75, 87.5, 93.75 %; the costly
Swin task runs the last three: ``--tasks swin --sparsities 0.75 0.875 0.9375``); the unstructured and block
(4x4) masks use the same sparsity. Records: ``studies/sparse/accuracy.jsonl`` and
``accuracy.md``. Jobs: ``workbench train sparse-study [--tasks mlp lstm swin] [--seeds 0 1]`` and
``workbench train sparse-demo`` (the pruned Swin V2 demo checkpoint).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.sparse.prune import PruneConfig, Pruner, cubic_sparsity

SPARSITIES = (0.5, 0.75, 0.875, 0.9375)
SWIN_SPARSITIES = (0.75, 0.875, 0.9375)  # the Swin task is the costly one: three points
METHODS = ("balanced", "unstructured", "block")
BANK = 32
DEMO_NAME = "sparse_swin"
DEMO_COMMAND = "workbench train sparse-demo"
SWIN_KW = dict(img_size=32, window_size=4, embed_dim=32, depths=(2, 2, 2), num_heads=(2, 4, 8),
               drop_path_rate=0.0, num_classes=10, pretrained_window_sizes=(0, 0, 0))
SWIN_MLP = r"mlp\.fc[12]$"
EXAMPLE_WEIGHTS = ("layers.1.blocks.0.mlp.fc1.weight", "layers.2.blocks.1.mlp.fc2.weight")


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


def char_batches(ids: torch.Tensor, seq: int, batch: int, steps: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, len(ids) - seq - 1, (steps, batch), generator=g)
    ar = torch.arange(seq + 1)
    return [ids[(s[:, None] + ar)] for s in starts]


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
    from workbench.models import create_model
    return create_model("swinv2_lite_window4_64", **SWIN_KW)


def swin_mlp_skip(model: nn.Module) -> list[str]:
    """Module names the Swin pruner leaves dense: everything that is not a block MLP."""
    import re
    return [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d)) and not re.search(SWIN_MLP, n)]


# ------------------------------------------------------------------------------------------------ training
def _adam_loop(model, batches, loss_fn, lr, *, on_step=None, wd=0.0, warmup=0.0):
    """AdamW, linear warm-up over the first ``warmup`` fraction of the steps, then cosine to zero."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=wd)
    total = len(batches)
    wsteps = int(warmup * total)
    model.train()
    for step, b in enumerate(batches):
        cur = lr * 0.5 * (1 + math.cos(math.pi * step / total))
        if step < wsteps:
            cur = lr * (step + 1) / wsteps
        for g in opt.param_groups:
            g["lr"] = cur
        loss = loss_fn(model, b)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        if on_step is not None:
            on_step(step + 1, total)
    model.eval()


def gradual_prune(model, batches, loss_fn, lr, cfg: PruneConfig, skip=(), updates: int = 10):
    """Fine-tune with gradual pruning: sparsity follows eq. (2) over the first 60% of the steps."""
    pruner = Pruner(model, cfg, skip=skip)
    total = len(batches)
    ramp = max(1, int(0.6 * total))
    every = max(1, ramp // updates)

    def on_step(step, _total):
        if step <= ramp and (step % every == 0 or step == ramp):
            pruner.update(cubic_sparsity(min(step, ramp), ramp, cfg.sparsity))
        else:
            pruner.apply()

    pruner.update(cubic_sparsity(0, ramp, cfg.sparsity))
    _adam_loop(model, batches, loss_fn, lr, on_step=on_step)
    pruner.update(cfg.sparsity)  # exact final pattern
    return pruner


def _ce(model, b):
    x, y = b
    return F.cross_entropy(model(x), y)


def _lm_loss(model, b):
    logits = model(b[:, :-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1))


def _image_batches(x, y, batch, epochs, seed):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(epochs):
        perm = torch.randperm(len(x), generator=g)
        for i in range(0, len(x) - batch + 1, batch):
            j = perm[i:i + batch]
            out.append((x[j], y[j]))
    return out


@torch.no_grad()
def accuracy(model, x, y, batch=512) -> float:
    model.eval()
    correct = sum(int((model(x[i:i + batch]).argmax(-1) == y[i:i + batch]).sum()) for i in range(0, len(x), batch))
    return correct / len(x)


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
    build: object      # () -> model
    pretrain: object   # (model, seed) -> None
    finetune: object   # (seed) -> batches
    lr: float
    evaluate: object   # model -> float
    skip: object       # model -> list of module names kept dense


def _mlp_task() -> Task:
    from workbench.data.natural import digits
    xtr, ytr = digits("train")
    xte, yte = digits("test")
    return Task("mlp", "test accuracy", True, make_mlp,
                lambda m, s: _adam_loop(m, _image_batches(xtr, ytr, 64, 30, s), _ce, 3e-3),
                lambda s: _image_batches(xtr, ytr, 64, 20, s + 1000), 1e-3,
                lambda m: accuracy(m, xte, yte), lambda m: [])


def _lstm_task() -> Task:
    d = char_data()
    return Task("lstm", "test perplexity", False, lambda: CharLSTM(len(d.vocab)),
                lambda m, s: _adam_loop(m, char_batches(d.train, 48, 32, 500, s), _lm_loss, 5e-3),
                lambda s: char_batches(d.train, 48, 32, 150, s + 1000), 2e-3,
                lambda m: perplexity(m, d.test), lambda m: ["head"])


SWIN_BACKGROUNDS = ("plain", "gradient")


def _shapes(n, seed):
    from workbench.data.shapes import ShapesConfig, load
    data = load(ShapesConfig(n=n, size=32, seed=seed, backgrounds=SWIN_BACKGROUNDS))
    x = torch.from_numpy(data.images).permute(0, 3, 1, 2).float() / 255.0
    return x, torch.from_numpy(data.labels).long()


def _swin_task() -> Task:
    xtr, ytr = _shapes(2000, 11)
    xte, yte = _shapes(500, 12)
    return Task("swin", "test accuracy", True, make_swin,
                lambda m, s: _adam_loop(m, _image_batches(xtr, ytr, 32, 16, s), _ce, 3e-3, wd=0.05, warmup=0.1),
                lambda s: _image_batches(xtr, ytr, 32, 2, s + 1000), 5e-4,
                lambda m: accuracy(m, xte, yte), swin_mlp_skip)


TASKS = {"mlp": _mlp_task, "lstm": _lstm_task, "swin": _swin_task}


def run_task(name: str, seeds=(0, 1), sparsities=SPARSITIES, methods=METHODS, log=print) -> list[dict]:
    task = TASKS[name]()
    records = []
    for seed in seeds:
        torch.manual_seed(seed)
        dense = task.build()
        t0 = time.perf_counter()
        task.pretrain(dense, seed)
        base = task.evaluate(dense)
        rec = dict(task=name, method="dense", sparsity=0.0, actual_sparsity=0.0, seed=seed, metric=task.metric,
                   value=base, seconds=round(time.perf_counter() - t0, 1))
        records.append(rec)
        log(json.dumps(rec))
        for s in sparsities:
            for method in methods:
                t0 = time.perf_counter()
                model = copy.deepcopy(dense)
                torch.manual_seed(seed)
                cfg = PruneConfig(method=method, sparsity=s, bank_size=BANK, block=(4, 4))
                pruner = gradual_prune(model, task.finetune(seed), _ce if name != "lstm" else _lm_loss, task.lr,
                                       cfg, skip=task.skip(model))
                rec = dict(task=name, method=method, sparsity=s, actual_sparsity=round(pruner.sparsity(), 4),
                           seed=seed, metric=task.metric, value=task.evaluate(model),
                           seconds=round(time.perf_counter() - t0, 1))
                records.append(rec)
                log(json.dumps(rec))
    return records


def summary_rows(records: list[dict]) -> list[dict]:
    """Mean (and spread) over seeds per task x method x sparsity."""
    groups: dict[tuple, list[float]] = {}
    for r in records:
        groups.setdefault((r["task"], r["method"], r["sparsity"]), []).append(r["value"])
    rows = []
    for (task, method, s), vals in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][2], kv[0][1])):
        mean = sum(vals) / len(vals)
        rows.append(dict(task=task, method=method, sparsity=s, mean=mean, min=min(vals), max=max(vals), seeds=len(vals)))
    return rows


def accuracy_table(records: list[dict]) -> str:
    """Markdown: one row per task x sparsity, one column per method (mean over seeds)."""
    from workbench.records import markdown_table
    rows = summary_rows(records)
    tasks = sorted({r["task"] for r in rows})
    out = []
    for t in tasks:
        metric = next(r["metric"] for r in records if r["task"] == t)
        dense = [r for r in rows if r["task"] == t and r["method"] == "dense"]
        table = []
        for s in sorted({r["sparsity"] for r in rows if r["task"] == t and r["method"] != "dense"}):
            cells = {r["method"]: r["mean"] for r in rows if r["task"] == t and r["sparsity"] == s}
            table.append([f"{100 * s:.2f}%"] + [round(cells.get(m, float("nan")), 4) for m in METHODS])
        head = f"**{t}** ({metric}; dense {dense[0]['mean']:.4f}; mean of {dense[0]['seeds']} seeds)" if dense else t
        out.append(head + "\n\n" + markdown_table(["sparsity", *METHODS], table, floatfmt=".4f"))
    return "\n\n".join(out)


def study_main(argv: list[str] | None = None) -> None:
    from workbench.records import read_jsonl, studies_dir, write_jsonl, write_markdown
    p = argparse.ArgumentParser(prog="workbench train sparse-study", description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--sparsities", nargs="+", type=float, default=list(SPARSITIES))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=None, help="records folder (default studies/sparse)")
    p.add_argument("--merge", nargs="*", default=None, metavar="JSONL",
                   help="only merge these record files into the records folder (by task) and rewrite the table")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = studies_dir("sparse") if a.out is None else __import__("pathlib").Path(a.out)
    path = out / "accuracy.jsonl"
    new = []
    if a.merge is not None:
        for f in a.merge:
            new += read_jsonl(f)
        a.tasks = sorted({r["task"] for r in new})
    for t in (a.tasks if a.merge is None else []):
        new += run_task(t, tuple(a.seeds), tuple(a.sparsities), tuple(a.methods))
    # read the other tasks' records only now: separate invocations per task may run side by side
    old = [r for r in (read_jsonl(path) if path.exists() else []) if r["task"] not in a.tasks]
    records = old + new
    write_jsonl(path, records)
    notes = ("Gradual pruning (cubic schedule over the first 60% of the fine-tuning steps) from the same dense model "
             "per seed; balanced banks of 32 along rows; block = 4x4 tiles; unstructured = per-layer magnitude. "
             "Made by `workbench train sparse-study --tasks mlp lstm` and `workbench train sparse-study --tasks swin "
             "--sparsities 0.75 0.875 0.9375` (1 thread; about 7 CPU-minutes in all). The tiny Swin V2 reaches only "
             "~40% on 10 shape classes in this budget, so its column says little: all methods stay within the "
             "seed-to-seed spread.")
    write_markdown(out / "accuracy.md", "Balanced Sparsity: accuracy at equal sparsity", accuracy_table(records), notes)


def demo_main(argv: list[str] | None = None) -> None:
    """Train the tiny Swin V2 on shapes, prune its MLPs to 87.5% balanced sparsity, save fp16 weights."""
    from workbench.checkpoints import demo_path, save_checkpoint
    p = argparse.ArgumentParser(prog="workbench train sparse-demo")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sparsity", type=float, default=0.875)
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    task = _swin_task()
    torch.manual_seed(a.seed)
    model = task.build()
    task.pretrain(model, a.seed)
    dense_acc = task.evaluate(model)
    examples = {k: v.detach().clone().half() for k, v in model.state_dict().items() if k in EXAMPLE_WEIGHTS}
    cfg = PruneConfig("balanced", a.sparsity, bank_size=BANK)
    gradual_prune(model, task.finetune(a.seed), _ce, task.lr, cfg, skip=task.skip(model))
    acc = task.evaluate(model)
    sd = {k: (v.half() if v.is_floating_point() else v) for k, v in model.state_dict().items()}
    path = a.out or demo_path(DEMO_NAME)
    save_checkpoint(path, sd, config=dict(model="swinv2_lite_window4_64", overrides=SWIN_KW, bank_size=BANK,
                                          sparsity=a.sparsity, prune=SWIN_MLP),
                    command=DEMO_COMMAND, data_seed=11, extra={"dense_accuracy": dense_acc, "sparse_accuracy": acc, "dense_examples": examples})
    print(f"saved {path}: dense accuracy {dense_acc:.3f}, {100 * a.sparsity:.1f}% balanced accuracy {acc:.3f}")


def demo_model(sparse: bool = True):
    """The demo tiny Swin V2 (fp32, eval mode) with its 87.5%-balanced MLPs; ``sparse=True`` replaces those MLP
    Linear layers by ``BalancedSparseLinear`` (numba kernels) via ``sparsify_``. Returns (model, checkpoint)."""
    from workbench.checkpoints import load_demo
    from workbench.sparse.nn import SparsifyConfig, sparsify_
    ck = load_demo(DEMO_NAME, DEMO_COMMAND)
    model = make_swin()
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in ck.state_dict.items()})
    model.eval()
    if sparse:
        sparsify_(model, SparsifyConfig(sparsity=ck.meta.get("config", {}).get("sparsity", 0.875), bank_size=BANK,
                                        include=SWIN_MLP))
    return model, ck


JOBS = {
    "sparse-study": (study_main, "Balanced vs unstructured vs block pruning: MLP/digits, LSTM LM, tiny Swin V2"),
    "sparse-demo": (demo_main, "Tiny Swin V2 on shapes with 87.5% balanced-sparse MLPs (demo checkpoint)"),
}
