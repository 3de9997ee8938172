"""The Cross-Iteration BN study at laptop scale: does pooling statistics over iterations, with Taylor
compensation, recover small-batch BatchNorm?

Setting (fixed before any run): scikit-learn's 8×8 digits (1,348 training / 449 test images,
``workbench.data.natural.digits``), ``workbench.cbn.SmallResNet`` (stem + two basic blocks, widths 16/32,
~30 k parameters, six conv→norm pairs), SGD momentum 0.9, weight decay 5e-4, learning rate linearly scaled
with the batch (``lr = 0.1 · B / 32``, half-epoch warm-up, cosine to 0), the same number of epochs for
every batch size, ``workbench.train.fit``. Test accuracy is measured in eval mode (running statistics).

- main grid: batch size {2, 4, 8, 16, 32} × {BN, naive window (ρ = 0), CBN (ρ = 1), GroupNorm}, window 4,
  no burn-in, seeds {0, 1};
- window ablation at batch 4: windows {2, 8} × ρ {0, 1} (window 4 and window 1 = BN are in the grid);
- burn-in ablation at batch 4, window 4: plain BN for the first {1, 2} epochs;
- gradient ablation at batch 4 and 32: BN whose forward is exact but whose gradient through μ, σ² is
  scaled by 1/4, as in CBN's backward with a full window of 4 (``StatGradScaledBN``).

Each finished run is appended to ``studies/cbn/runs.jsonl`` (runs already there are skipped, so the
job resumes); ``studies/cbn/README.md`` holds the tables. ``cbn-diagnostic`` records one layer's
statistics during a short run (``studies/cbn/diagnostic.json``, replayed by the app and the notebook);
``cbn-demo`` trains the demo checkpoint ``workbench/assets/checkpoints/cbn_digits.pt``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from workbench import cbn
from workbench.records import markdown_table, read_jsonl, studies_dir, write_jsonl, write_markdown

BATCH_SIZES = (2, 4, 8, 16, 32)
SEEDS = (0, 1)
EPOCHS = 4
BASE_LR = 0.1  # at batch 32
ABLATION_BATCH = 4
DEMO_COMMAND = "workbench train cbn-demo"
DIAG_COMMAND = "workbench train cbn-diagnostic"
LABELS = {"bn": "BN", "naive": "naive window (ρ=0)", "cbn": "CBN (ρ=1)", "gn": "GroupNorm",
          "bn-grad": "BN, ¼ of the statistics gradient (ablation)"}


def load_data(name: str = "digits"):
    """``((x_train, y_train), (x_test, y_test))``: ``digits`` (8×8 grey) or ``shapes`` (16×16 RGB procedural
    shapes on five kinds of background, 3,000 / 1,000 images)."""
    if name == "digits":
        from workbench.data.natural import digits

        return digits("train"), digits("test")
    if name == "digits-jitter":
        from workbench.data.natural import digits

        out = []
        for split, seed in (("train", 0), ("test", 1)):
            x, y = digits(split)
            out.append((jitter_intensity(x, seed), y))
        return tuple(out)
    if name == "shapes":
        from workbench.data import shapes

        out = []
        for n, seed in ((3000, 0), (1000, 1)):
            d = shapes.load(shapes.ShapesConfig(n=n, size=16, seed=seed))
            x = torch.from_numpy(d.images).permute(0, 3, 1, 2).float() / 255.0
            out.append((x, torch.from_numpy(d.labels).long()))
        return tuple(out)
    raise ValueError(f"unknown study data {name!r}; use 'digits' or 'shapes'")


def jitter_intensity(x: torch.Tensor, seed: int) -> torch.Tensor:
    """Per-image random contrast and brightness (``a·x + b``, ``a ~ U(0.2, 1)``, ``b ~ U(0, 1 − a)``) and a
    random inversion (p = ½), drawn once: images whose statistics differ from image to image, as
    illumination makes them differ in natural photos."""
    g = torch.Generator().manual_seed(seed)
    n = x.shape[0]
    a = 0.2 + 0.8 * torch.rand(n, 1, 1, 1, generator=g)
    b = (1 - a) * torch.rand(n, 1, 1, 1, generator=g)
    out = a * x + b
    inv = torch.rand(n, 1, 1, 1, generator=g) < 0.5
    return torch.where(inv, 1 - out, out)


class StatGradScaledBN(torch.nn.BatchNorm2d):
    """BatchNorm whose forward is exactly BN's but whose gradient through μ and σ² is ``1/k`` of BN's — what
    CBN's backward gives when all ``k`` window entries are kept (past statistics are constants). Isolates
    that effect from the staleness of the pooled statistics (the ``grad`` ablation)."""

    def __init__(self, bn: torch.nn.BatchNorm2d, k: int):
        super().__init__(bn.num_features, bn.eps, bn.momentum)
        self.load_state_dict(bn.state_dict())
        self.k = k

    def forward(self, x):
        if not self.training:
            return super().forward(x)
        with torch.no_grad():
            mu, nu = cbn.batch_stats(x)
        sums = torch.stack([mu, nu]) * (self.k - 1)  # as if k − 1 identical past entries were pooled
        cnt = torch.full_like(mu, float(self.k))
        y, mu_t, var_t, _ = cbn._WindowNorm.apply(x, sums, cnt, self.weight, self.bias, self.eps)
        n = x.shape[0] * x.shape[2] * x.shape[3]
        with torch.no_grad():
            self.num_batches_tracked.add_(1)
            self.running_mean.mul_(1 - self.momentum).add_(mu_t, alpha=self.momentum)
            self.running_var.mul_(1 - self.momentum).add_(var_t, alpha=self.momentum * n / (n - 1))
        return y


def _make(norm: str, window: int, burnin: int, rho, seed: int, in_chans: int) -> torch.nn.Module:
    if norm != "bn-grad":
        return cbn.make_model(norm, window=window, burnin=burnin, rho=rho, seed=seed, in_chans=in_chans)
    model = cbn.make_model("bn", seed=seed, in_chans=in_chans)
    for name, mod in list(model.named_modules()):
        if isinstance(mod, torch.nn.BatchNorm2d):
            parent, _, attr = name.rpartition(".")
            setattr(model.get_submodule(parent) if parent else model, attr, StatGradScaledBN(mod, window))
    return model


def run_one(norm: str, batch_size: int, seed: int, *, epochs: int = EPOCHS, window: int = 4, rho: float | None = None,
            burnin_epochs: float = 0.0, base_lr: float = BASE_LR, data=None) -> dict:
    """Train one SmallResNet and return its record (test accuracy in eval mode)."""
    from torch.utils.data import TensorDataset

    from workbench.train import TrainConfig, evaluate_accuracy, fit

    (xtr, ytr), (xte, yte) = data if data is not None else load_data()
    steps_per_epoch = len(xtr) // batch_size
    burnin = int(round(burnin_epochs * steps_per_epoch))
    model = _make(norm, window, burnin, rho, seed, xtr.shape[1])
    lr = base_lr * batch_size / 32
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_lr=0.0, warmup_epochs=0.5, weight_decay=5e-4,
                      optimizer="sgd", momentum=0.9, clip_grad=None, seed=seed, progress=False, log_every=0,
                      device="cpu")

    def loss_fn(m, batch):
        x, y = batch
        return F.cross_entropy(m(x), y)

    t0, c0 = time.perf_counter(), time.process_time()
    res = fit(model, TensorDataset(xtr, ytr), loss_fn, cfg)
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {"norm": norm, "batch_size": batch_size, "seed": seed, "epochs": epochs,
            "window": window if norm in ("cbn", "naive", "bn-grad") else 1,
            "rho": (0.0 if norm == "naive" else (1.0 if rho is None else rho)) if norm in ("cbn", "naive") else None,
            "burnin": burnin, "burnin_epochs": burnin_epochs, "lr": lr, "steps": res["steps"],
            "train_loss": round(res["history"][-1]["train_loss"], 5),
            "test_acc": round(evaluate_accuracy(model, xte, yte), 5),
            "train_acc_eval": round(evaluate_accuracy(model, xtr, ytr), 5), "seconds": round(secs, 2),
            "cpu_seconds": round(cpu, 2)}


def plan(part: str, batch_sizes=BATCH_SIZES, norms=cbn.NORMS, seeds=SEEDS, epochs: int = EPOCHS) -> list[dict]:
    """The run specifications of the study, in execution order."""
    runs = []
    if part in ("main", "all"):
        for b in batch_sizes:
            for s in seeds:
                for n in norms:
                    runs.append(dict(part="main", norm=n, batch_size=b, seed=s, epochs=epochs, window=4, rho=None,
                                     burnin_epochs=0.0))
    if part in ("ablations", "all"):
        for s in seeds:
            for w in (2, 8):
                for n in ("naive", "cbn"):
                    runs.append(dict(part="window", norm=n, batch_size=ABLATION_BATCH, seed=s, epochs=epochs, window=w,
                                     rho=None, burnin_epochs=0.0))
            for be in (1.0, 2.0):
                runs.append(dict(part="burnin", norm="cbn", batch_size=ABLATION_BATCH, seed=s, epochs=epochs,
                                 window=4, rho=None, burnin_epochs=be))
            for b in (ABLATION_BATCH, 32):
                runs.append(dict(part="grad", norm="bn-grad", batch_size=b, seed=s, epochs=epochs, window=4, rho=None,
                                 burnin_epochs=0.0))
    return runs


def _key(r: dict) -> tuple:
    return (r["part"], r["norm"], r["batch_size"], r["seed"], r["epochs"], r["window"], r["burnin_epochs"])


def _mean_std(vals: list[float]) -> str:
    if not vals:
        return "–"
    m = 100 * statistics.fmean(vals)
    s = 100 * statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{m:.1f} ± {s:.1f}"


def summarize(records: list[dict]) -> dict:
    """Aggregate records into the tables' numbers: ``{"main": {norm: {batch: [acc...]}}, "window": ..., "burnin": ...}``."""
    main: dict = {}
    window: dict = {}
    burnin: dict = {}
    for r in records:
        if r["part"] == "main":
            main.setdefault(r["norm"], {}).setdefault(r["batch_size"], []).append(r["test_acc"])
            if r["batch_size"] == ABLATION_BATCH and r["norm"] == "bn":  # window 1 = BN
                window.setdefault(("naive", 1), []).append(r["test_acc"])
                window.setdefault(("cbn", 1), []).append(r["test_acc"])
            if r["batch_size"] == ABLATION_BATCH and r["norm"] in ("naive", "cbn"):
                window.setdefault((r["norm"], r["window"]), []).append(r["test_acc"])
            if r["batch_size"] == ABLATION_BATCH and r["norm"] == "cbn":
                burnin.setdefault(0.0, []).append(r["test_acc"])
        elif r["part"] == "window":
            window.setdefault((r["norm"], r["window"]), []).append(r["test_acc"])
        elif r["part"] == "burnin":
            burnin.setdefault(r["burnin_epochs"], []).append(r["test_acc"])
        elif r["part"] == "grad":
            main.setdefault("bn-grad", {}).setdefault(r["batch_size"], []).append(r["test_acc"])
    return {"main": main, "window": window, "burnin": burnin}


def tables(records: list[dict]) -> list[tuple[str, str]]:
    s = summarize(records)
    sections = []
    bs = sorted({b for d in s["main"].values() for b in d})
    if bs:
        rows = [[LABELS.get(n, n)] + [_mean_std(s["main"][n].get(b, [])) for b in bs]
                for n in cbn.NORMS + ("bn-grad",) if n in s["main"]]
        sections.append(("Test accuracy (%) by batch size (mean ± std over seeds)",
                         markdown_table(["norm"] + [f"B={b}" for b in bs], rows)))
        if "bn" in s["main"] and "cbn" in s["main"] and max(bs) in s["main"]["bn"]:
            ref = statistics.fmean(s["main"]["bn"][max(bs)])
            rows = []
            for b in bs:
                row = [f"B={b}"]
                for n in ("bn", "naive", "cbn", "gn"):
                    v = s["main"].get(n, {}).get(b)
                    row.append(f"{100 * (statistics.fmean(v) - ref):+.1f}" if v else "–")
                rows.append(row)
            sections.append((f"Gap to BN at B={max(bs)} (accuracy points)",
                             markdown_table(["batch", "BN", "naive", "CBN", "GN"], rows)))
    if s["window"]:
        ws = sorted({w for (_, w) in s["window"]})
        rows = [[lab] + [_mean_std(s["window"].get((n, w), [])) if (n, w) in s["window"] else "–" for w in ws]
                for n, lab in (("naive", "naive (ρ=0)"), ("cbn", "CBN (ρ=1)"))]
        sections.append((f"Window ablation at B={ABLATION_BATCH} (test accuracy %, window 1 = BN)",
                         markdown_table(["ρ"] + [f"k={w}" for w in ws], rows)))
    if s["burnin"]:
        bes = sorted(s["burnin"])
        sections.append((f"Burn-in ablation at B={ABLATION_BATCH}, window 4 (test accuracy %)",
                         markdown_table(["burn-in (epochs)"] + [f"{b:g}" for b in bes],
                                        [["CBN"] + [_mean_std(s["burnin"][b]) for b in bes]])))
    return sections


def write_tables(out: Path, records: list[dict], notes: str = "") -> Path:
    cpu = sum(r.get("cpu_seconds", r.get("seconds", 0.0)) for r in records)
    wall = sum(r.get("seconds", 0.0) for r in records)
    head = (f"{len(records)} runs, {cpu / 60:.1f} CPU-minutes of training with 1 thread ({wall / 60:.1f} wall-clock "
            f"minutes on a shared 2-core machine). "
            f"Reproduce: `workbench train cbn-study` (resumes from runs.jsonl; `--fresh` starts over).")
    analysis = out / "analysis.md"  # hand-written reading of the numbers, kept next to the records
    if not notes and analysis.exists():
        notes = analysis.read_text()
    return write_markdown(out / "README.md", "Cross-Iteration BN at laptop scale (digits, SmallResNet)",
                          [("Runs", head)] + tables(records), notes=notes)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="workbench train cbn-study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=("main", "ablations", "all"), default="all")
    ap.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    ap.add_argument("--norms", default=",".join(cbn.NORMS))
    ap.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--data", choices=("digits", "digits-jitter", "shapes"), default="digits")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None, help="records folder (default studies/cbn)")
    ap.add_argument("--fresh", action="store_true", help="ignore and overwrite existing records")
    ap.add_argument("--tables-only", action="store_true")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    out = Path(a.out) if a.out else studies_dir("cbn")
    path = out / "runs.jsonl"
    done = [] if a.fresh or not path.exists() else read_jsonl(path)
    if a.fresh:
        write_jsonl(path, [])
    if not a.tables_only:
        data = load_data(a.data)
        todo = plan(a.part, [int(b) for b in a.batch_sizes.split(",")], a.norms.split(","),
                    [int(s) for s in a.seeds.split(",")], a.epochs)
        have = {_key(r) for r in done}
        for spec in todo:
            if _key(spec) in have:
                continue
            part = spec.pop("part")
            rec = {"part": part, "data": a.data, **run_one(**spec, data=data)}
            done.append(rec)
            write_jsonl(path, [rec], append=True)
            print(f"{part:7s} {rec['norm']:5s} B={rec['batch_size']:2d} k={rec['window']} burnin={rec['burnin']:4d} "
                  f"seed={rec['seed']} test_acc={rec['test_acc']:.4f} ({rec['seconds']:.1f}s)", flush=True)
    write_tables(out, done)
    print((out / "README.md").read_text())


# --------------------------------------------------------------------------------------------------
# the recorded diagnostic run (app replay, notebook) and the demo checkpoint
# --------------------------------------------------------------------------------------------------
def diagnostic_path() -> Path:
    return studies_dir("cbn") / "diagnostic.json"


def load_diagnostic(path=None) -> dict:
    """The committed diagnostic run (``cbn.diagnostic_series`` form)."""
    path = Path(path) if path else diagnostic_path()
    if not path.exists():
        raise FileNotFoundError(f"no recorded diagnostic run at {path}; run `{DIAG_COMMAND}`")
    return json.loads(path.read_text())


def load_runs(path=None) -> list[dict]:
    """The committed study records (``studies/cbn/runs.jsonl``)."""
    return read_jsonl(Path(path) if path else studies_dir("cbn") / "runs.jsonl")


def diagnostic_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="workbench train cbn-diagnostic",
                                 description="record one CBN layer's statistics during a short run")
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--rho", type=float, default=1.0)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--layer", default="blocks.0.conv1")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    cfg = cbn.DiagnosticConfig(batch_size=a.batch_size, window=a.window, rho=a.rho, steps=a.steps, lr=a.lr,
                               layer=a.layer, seed=a.seed, every=a.steps)
    *_, last = cbn.diagnostic_run(cfg)
    out = Path(a.out) if a.out else diagnostic_path()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(cbn.diagnostic_series(last, cfg), separators=(",", ":")))
    d = json.loads(out.read_text())
    e = {k: statistics.fmean(v for v in d[k] if v is not None) for k in
         ("err_mu_naive", "err_mu_comp", "err_nu_naive", "err_nu_comp")}
    print(f"wrote {out} ({out.stat().st_size // 1024} KB); mean per-entry errors: " +
          ", ".join(f"{k}={v:.2e}" for k, v in e.items()))


def demo_main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="workbench train cbn-demo",
                                 description="train the CBN demo checkpoint (SmallResNet on digits, batch 4)")
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    from torch.utils.data import TensorDataset

    from workbench.checkpoints import demo_path, save_checkpoint
    from workbench.train import TrainConfig, evaluate_accuracy, fit

    (xtr, ytr), (xte, yte) = load_data()
    model = cbn.make_model("cbn", window=4, seed=0)
    cfg = TrainConfig(epochs=a.epochs, batch_size=4, lr=BASE_LR * 4 / 32, min_lr=0.0, warmup_epochs=0.5,
                      weight_decay=5e-4, optimizer="sgd", momentum=0.9, clip_grad=None, seed=0, progress=False,
                      log_every=0, device="cpu")
    fit(model, TensorDataset(xtr, ytr), lambda m, b: F.cross_entropy(m(b[0]), b[1]), cfg)
    acc = evaluate_accuracy(model, xte, yte)
    path = Path(a.out) if a.out else demo_path("cbn_digits")
    save_checkpoint(path, model, config={"norm": "cbn", "window": 4, "batch_size": 4, "epochs": a.epochs},
                    command=DEMO_COMMAND, data_seed=0, extra={"test_acc": acc}, half=True)
    print(f"wrote {path} ({path.stat().st_size // 1024} KB), test accuracy {acc:.4f}")


JOBS = {
    "cbn-study": (main, "CBN vs BN / naive window / GN across batch sizes on digits, window and burn-in ablations"),
    "cbn-diagnostic": (diagnostic_main, "record one CBN layer's current / naive / compensated / true statistics"),
    "cbn-demo": (demo_main, "train the CBN demo checkpoint (workbench/assets/checkpoints/cbn_digits.pt)"),
}
