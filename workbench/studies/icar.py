"""The iCAR study at laptop scale: does deep fusion of classification and image-text alignment beat each task
alone and shallow fusion, and do class descriptions help?

Setting (fixed before any run): the procedural shapes (32 px, one object per image, captions such as
"a large red star on a striped background"). The last three classes of ``shapes.CLASSES`` (ring, pentagon,
crescent) are *held out*: their images are in the training set with their captions, but never carry a class
label, so the classification loss never sees them. Every method trains on the same batches
(:data:`workbench.icar.METHODS`) with ``workbench.train.fit``; two seeds each.

Measured on a separate test set:
- ``seen_acc``: accuracy on the seven seen classes (the method's own classifier; alignment-only classifies
  with the class names through its text encoder);
- ``zs_names`` / ``zs_desc``: zero-shot accuracy on the held-out classes (3-way), class texts = names or
  "name: description"; only methods with a text encoder;
- ``fs1`` / ``fs5``: 1- and 5-shot accuracy on the held-out classes (nearest class mean of the backbone's
  pooled features, 3-way, mean over 20 episodes, supports drawn from the training set);
- ``r1`` / ``r5``: image -> text retrieval recall among the distinct test captions.

``workbench train icar-study`` writes ``studies/icar/records.jsonl`` and ``studies/icar/table.md`` and
the demo checkpoint; ``workbench train icar-demo`` trains only the demo model.
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from .. import icar
from ..data import shapes

HELD_OUT: tuple[str, ...] = shapes.CLASSES[-3:]
SEEN: tuple[str, ...] = tuple(c for c in shapes.CLASSES if c not in HELD_OUT)
ALL_CLASSES = [icar.ClassText(n, shapes.CLASS_DESCRIPTIONS[n]) for n in shapes.CLASSES]
REPO = Path(__file__).resolve().parents[2]
DEFAULT_OUT = REPO / "studies" / "icar"
METRICS = ("seen_acc", "zs_names", "zs_desc", "fs1", "fs5", "r1", "r5")


def class_list(names) -> list[icar.ClassText]:
    return [icar.ClassText(n, shapes.CLASS_DESCRIPTIONS[n]) for n in names]


def build_data(n_train: int = 3000, n_test: int = 1000, size: int = 32, seed: int = 100):
    """Train / test shapes sets, the tokenizer (built from training captions and all class texts) and tensors."""
    train = shapes.load(shapes.ShapesConfig(n=n_train, size=size, seed=seed))
    test = shapes.load(shapes.ShapesConfig(n=n_test, size=size, seed=seed + 1))
    tok = icar.WordTokenizer.build(train.captions + icar.class_texts(ALL_CLASSES)
                                   + icar.class_texts(ALL_CLASSES, False))
    return train, test, tok


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float().div_(255)


def train_tensors(train, tok, context_length: int):
    """Mixed batches: image, label among the seen classes (-1 for held-out), caption ids, caption identity."""
    seen_index = {c: i for i, c in enumerate(SEEN)}
    labels = torch.tensor([seen_index.get(shapes.CLASSES[int(l)], -1) for l in train.labels])
    uid = {c: i for i, c in enumerate(dict.fromkeys(train.captions))}
    return torch.utils.data.TensorDataset(to_tensor(train.images), labels,
                                          tok.batch(train.captions, context_length),
                                          torch.tensor([uid[c] for c in train.captions]))


def make_model(method: str, tok, *, image_encoder: str = "cnn", image_size: int = 32, **kw) -> icar.ICARModel:
    spec = icar.METHODS[method]
    cfg = icar.ICARConfig(method=method, image_encoder=image_encoder, image_size=image_size,
                          num_classes=len(SEEN) if spec.head in ("linear", "cosine") else 0,
                          vocab_size=len(tok), **kw)
    return icar.ICARModel(cfg)


@torch.no_grad()
def _embed(model, x, batch: int = 500):
    feats, emb = [], []
    for i in range(0, len(x), batch):
        f = model.features(x[i:i + batch])
        feats.append(f)
        if model.cfg.has_text:
            emb.append(model.image_proj(f))
    return torch.cat(feats), (torch.cat(emb) if emb else None)


@torch.no_grad()
def evaluate(model: icar.ICARModel, tok, train, test, *, episodes: int = 20, seed: int = 0) -> dict:
    model.eval()
    spec = model.cfg.spec
    xt = to_tensor(test.images)
    names = [shapes.CLASSES[int(l)] for l in test.labels]
    seen_m = np.array([n in SEEN for n in names])
    held_m = ~seen_m
    out = {}
    # seen-class accuracy with the method's own classifier
    xs = xt[torch.from_numpy(seen_m)]
    ys = torch.tensor([SEEN.index(n) for n, m in zip(names, seen_m) if m])
    if spec.head is None:  # alignment only: classify through the text encoder with the class names
        probs = icar.predict_proba(model, tok, xs, class_list(SEEN), use_descriptions=False)
    else:
        ids = tok.batch(icar.class_texts(class_list(SEEN), spec.use_descriptions), model.cfg.context_length)
        probs = model.classify(xs, ids)
    out["seen_acc"] = float((probs.argmax(1) == ys).double().mean())
    # zero-shot on the held-out classes
    xh = xt[torch.from_numpy(held_m)]
    yh = torch.tensor([HELD_OUT.index(n) for n, m in zip(names, held_m) if m])
    for key, use_desc in (("zs_names", False), ("zs_desc", True)):
        if model.cfg.has_text:
            p = icar.predict_proba(model, tok, xh, class_list(HELD_OUT), use_descriptions=use_desc)
            out[key] = float((p.argmax(1) == yh).double().mean())
        else:
            out[key] = float("nan")
    # few-shot on the held-out classes: nearest class mean of backbone features
    tr_names = np.array([shapes.CLASSES[int(l)] for l in train.labels])
    tr_held = np.flatnonzero(np.isin(tr_names, HELD_OUT))
    ftr = torch.zeros(len(tr_names), model.backbone.num_features)
    ftr[tr_held] = _embed(model, to_tensor(train.images[tr_held]))[0]
    fte, _ = _embed(model, xh)
    rng = np.random.default_rng(seed + 12345)
    for k in (1, 5):
        accs = []
        for _ in range(episodes):
            idx, lab = [], []
            for c, name in enumerate(HELD_OUT):
                pool = np.flatnonzero(tr_names == name)
                idx += list(rng.choice(pool, k, replace=False))
                lab += [c] * k
            accs.append(icar.prototype_accuracy(ftr[idx], torch.tensor(lab), fte, yh))
        out[f"fs{k}"] = float(np.mean(accs))
    # image -> text retrieval over the distinct test captions
    if model.cfg.has_text:
        caps = list(dict.fromkeys(test.captions))
        where = {c: i for i, c in enumerate(caps)}
        target = torch.tensor([where[c] for c in test.captions])
        t = torch.nn.functional.normalize(model.encode_text(tok.batch(caps, model.cfg.context_length)), dim=-1)
        _, emb_all = _embed(model, xt)
        top = (torch.nn.functional.normalize(emb_all, dim=-1) @ t.t()).topk(5, dim=1).indices
        out["r1"] = float((top[:, 0] == target).double().mean())
        out["r5"] = float((top == target[:, None]).any(1).double().mean())
    else:
        out["r1"] = out["r5"] = float("nan")
    return out


def run_one(method: str, seed: int, data, *, epochs: int, batch_size: int = 64, lr: float = 2e-3,
            image_encoder: str = "cnn", log=print, **model_kw) -> tuple[dict, icar.ICARModel]:
    from ..train import TrainConfig, fit, seed_everything

    train, test, tok = data
    seed_everything(seed)
    model = make_model(method, tok, image_encoder=image_encoder, image_size=train.images.shape[1], **model_kw)
    ds = train_tensors(train, tok, model.cfg.context_length)
    class_ids = tok.batch(icar.class_texts(class_list(SEEN), model.cfg.spec.use_descriptions),
                          model.cfg.context_length)

    def loss_fn(m, batch):
        return m.loss(*batch, class_ids=class_ids)

    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_lr=lr * 0.01, warmup_epochs=1,
                      weight_decay=0.05, seed=seed, progress=False, device="cpu")
    t0 = time.process_time()
    res = fit(model, ds, loss_fn, cfg)
    train_cpu = time.process_time() - t0
    metrics = evaluate(model, tok, train, test, seed=seed)
    last = res["history"][-1]
    rec = {"method": method, "seed": seed, "epochs": epochs, "image_encoder": image_encoder,
           "label": icar.METHODS[method].label, **{k: round(v, 4) for k, v in metrics.items()},
           "train_loss": round(last.get("train_loss", float("nan")), 4),
           "train_cpu_s": round(train_cpu, 1), "steps": res["steps"]}
    log(json.dumps(rec))
    return rec, model


def _fmt(vals):
    vals = [v for v in vals if not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return "—"
    m = 100 * float(np.mean(vals))
    return f"{m:.1f}" if len(vals) == 1 else f"{m:.1f} ± {100 * float(np.std(vals)):.1f}"


def summarize(records: list[dict]) -> list[dict]:
    """One row per method: mean and std (in %) of every metric over seeds, in METHODS order."""
    rows = []
    for method in icar.METHODS:
        rs = [r for r in records if r["method"] == method]
        if not rs:
            continue
        row = {"method": method, "label": icar.METHODS[method].label, "seeds": len(rs)}
        for k in METRICS:
            vals = [float(r[k]) for r in rs]
            finite = [v for v in vals if not math.isnan(v)]
            row[k] = float(np.mean(finite)) if finite else float("nan")
            row[k + "_std"] = float(np.std(finite)) if len(finite) > 1 else float("nan")
            row[k + "_text"] = _fmt(vals)
        rows.append(row)
    return rows


def markdown_table(records: list[dict]) -> str:
    head = ("| method | seen acc | zero-shot (names) | zero-shot (name: description) | 1-shot | 5-shot "
            "| image→text R@1 | R@5 |\n|---|---|---|---|---|---|---|---|\n")
    body = "".join(f"| {r['label']} | " + " | ".join(r[k + '_text'] for k in METRICS) + " |\n"
                   for r in summarize(records))
    return head + body


def read_records(path=DEFAULT_OUT / "records.jsonl") -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def _parser(prog: str, desc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog=prog, description=desc)
    p.add_argument("--epochs", type=int, default=12)
    p.add_argument("--n-train", type=int, default=3000)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--image-encoder", choices=("cnn", "swin"), default="cnn")
    p.add_argument("--threads", type=int, default=1)
    return p


def study_main(argv: list[str]) -> None:
    p = _parser("workbench train icar-study", "Train every method on the held-out split; write records + table.")
    p.add_argument("--methods", nargs="+", default=list(icar.METHODS), choices=list(icar.METHODS))
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--no-checkpoint", action="store_true", help="do not write the demo checkpoint")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    size = 64 if a.image_encoder == "swin" else 32
    data = build_data(a.n_train, a.n_test, size)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    records = []
    t0 = time.process_time()
    with open(out / "records.jsonl", "w") as f:
        for method in a.methods:
            for seed in a.seeds:
                rec, model = run_one(method, seed, data, epochs=a.epochs, image_encoder=a.image_encoder)
                records.append(rec)
                f.write(json.dumps(rec) + "\n")
                f.flush()
                if method == "icar" and seed == a.seeds[0] and not a.no_checkpoint:
                    _save_demo(model, data[2], rec)
    total = time.process_time() - t0
    meta = {"held_out": list(HELD_OUT), "seen": list(SEEN), "epochs": a.epochs, "n_train": a.n_train,
            "n_test": a.n_test, "image_encoder": a.image_encoder, "threads": a.threads,
            "total_cpu_s": round(total, 1), "command": "workbench train icar-study " + " ".join(argv)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    (out / "table.md").write_text(
        f"# iCAR study (shapes {size}px, held out: {', '.join(HELD_OUT)}; {len(a.seeds)} seeds, "
        f"mean ± std in %)\n\n" + markdown_table(records)
        + f"\nCommand: `{meta['command']}` — total CPU time {total / 60:.1f} min with {a.threads} thread(s).\n")
    print(markdown_table(records))


def _save_demo(model, tok, rec):
    from ..checkpoints import demo_path

    icar.save_model(demo_path(icar.DEMO_NAME), model, tok, command=icar.DEMO_COMMAND,
                    extra={"held_out": list(HELD_OUT), "seen": list(SEEN), "metrics": {
                        k: rec[k] for k in METRICS}, "method": rec["method"], "seed": rec["seed"]})


def demo_main(argv: list[str]) -> None:
    p = _parser("workbench train icar-demo", "Train the iCAR demo model (seed 0) and write its checkpoint.")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    size = 64 if a.image_encoder == "swin" else 32
    data = build_data(a.n_train, a.n_test, size)
    rec, model = run_one("icar", 0, data, epochs=a.epochs, image_encoder=a.image_encoder)
    _save_demo(model, data[2], rec)


JOBS = {
    "icar-study": (study_main, "iCAR: every method x seeds on held-out shapes classes -> studies/icar/"),
    "icar-demo": (demo_main, "iCAR: train the demo model -> workbench/assets/checkpoints/icar_shapes.pt"),
}
