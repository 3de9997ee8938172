"""CBN demo: how well do past iterations' statistics, moved to today's weights by a Taylor step, match the truth?

A *diagnostic run* trains a small ResNet with CBN on 32 px shapes and records, for one layer, the current-batch,
CBN-pooled, naive-window, compensated-window and *true* window statistics of every step
(:class:`workbench.cbn.ConvCBN` emits them to a :func:`workbench.inspect.capture`). The statistics may come from
groups of a few images of the batch (``stat_batch``: emulated GPUs, each normalising its own images; the record is
the first group's), which is where the CBN study finds BN's small-batch gap: the committed run uses the study's
setting, an optimiser batch of 32 with one image per statistics group. The app tab and notebook 04 replay it
(``workbench train cbn-demo --commit``) or train live with the chosen batch, statistics batch, window, ρ and
burn-in.
"""
from __future__ import annotations

import contextvars
import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F

from workbench import cbn, inspect
from workbench.data import shapes
from workbench.data.transforms import normalize
from workbench.demos.common import Panel, check_choice, check_float, check_int
from workbench.records import studies_dir

COMMAND = "workbench train cbn-demo --commit"
WIDTHS = (32, 64, 128)
LAYERS = ("stem", "blocks.0.conv1", "blocks.0.conv2", "blocks.1.conv1", "blocks.1.conv2", "blocks.2.conv1",
          "blocks.2.conv2")
LIMITS = dict(batch_size=(2, 64), window=(2, 16), rho=(0.0, 2.0), burnin=(0, 300), steps=(10, 400))


@dataclass
class DiagnosticConfig:
    """A short SGD run of ``SmallResNet`` (widths 32/64/128) with CBN on 32 px shapes, one layer recorded."""

    batch_size: int = 4
    stat_batch: int | None = None   # images per statistics group (an emulated GPU); None: the whole batch
    window: int = 4
    rho: float = 1.0
    burnin: int = 0
    steps: int = 150
    lr: float = 0.0125          # 0.1 x batch / 32, the linear scaling rule of the study
    layer: str = "blocks.1.conv1"
    seed: int = 0
    every: int = 10             # yield every this many steps

    def validate(self) -> DiagnosticConfig:
        self.batch_size = check_int("batch size", self.batch_size, *LIMITS["batch_size"])
        if self.stat_batch is not None:
            self.stat_batch = check_int("images per statistics group", self.stat_batch, 1, self.batch_size)
            if self.batch_size % self.stat_batch:
                raise ValueError(f"images per statistics group ({self.stat_batch}) must divide the batch size "
                                 f"({self.batch_size})")
        self.window = check_int("window", self.window, *LIMITS["window"])
        self.rho = check_float("rho", self.rho, *LIMITS["rho"])
        self.burnin = check_int("burn-in", self.burnin, *LIMITS["burnin"])
        self.steps = check_int("steps", self.steps, *LIMITS["steps"])
        self.every = check_int("every", self.every, 1, 2000)
        self.lr = check_float("lr", self.lr, 0.0, 1.0, open_lo=True)
        check_choice("layer", self.layer, LAYERS)
        return self


def channels(layer: str) -> int:
    """Output channels of a layer of the demo network (the channel control's range follows the layer)."""
    check_choice("layer", layer, LAYERS)
    if layer == "stem":
        return WIDTHS[0]
    return WIDTHS[int(layer.split(".")[1])]


def data(n: int = 5000, seed: int = 51):
    x, y = shapes.tensors(n=n, size=32, seed=seed)
    return normalize(x), y


def diagnostic_run(cfg: DiagnosticConfig, dataset=None) -> Iterator[dict]:
    """Train for ``cfg.steps`` SGD steps (momentum 0.9) with the statistics of ``cfg.layer`` captured; yield
    ``{"step", "loss": [...], "records": [...]}`` (cumulative) every ``cfg.every`` steps and at the end."""
    cfg.validate()
    x_all, y_all = dataset if dataset is not None else data()
    g = torch.Generator().manual_seed(cfg.seed)
    model = cbn.make_model("cbn", window=cfg.window, burnin=cfg.burnin, rho=cfg.rho, seed=cfg.seed, in_chans=3,
                           widths=WIDTHS, devices=cfg.batch_size // (cfg.stat_batch or cfg.batch_size))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    model.train()
    losses: list[float] = []
    key = f"{cfg.layer}.stats"

    def train(first: int, last: int) -> None:
        for _ in range(first, last):
            idx = torch.randint(0, len(x_all), (cfg.batch_size,), generator=g)
            loss = F.cross_entropy(model(x_all[idx]), y_all[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))

    # The capture lives in a context of its own: a streaming consumer (gradio, asyncio) may resume this generator
    # in another thread / context after each yield, where a capture opened here would be invisible and could not
    # be closed. Every chunk of training runs inside that one context, so the capture (and the past inputs it
    # keeps for the true window statistics) spans the whole run.
    ctx = contextvars.copy_context()
    cm = inspect.capture(model, key, keep="all")
    cap = ctx.run(cm.__enter__)
    try:
        done = 0
        while done < cfg.steps:
            nxt = min(cfg.steps, (done // cfg.every + 1) * cfg.every)
            ctx.run(train, done, nxt)
            done = nxt
            yield {"step": done, "loss": list(losses), "records": cap.all(key)}
    finally:
        ctx.run(cm.__exit__, None, None, None)


def diagnostic_series(result: dict, cfg: DiagnosticConfig, digits: int = 5) -> dict:
    """A compact JSON-able form of a ``diagnostic_run`` result: per step, the per-channel statistics
    ``{mu,var}_{cur,naive,comp,true,cbn}`` and the per-entry errors ``err_{mu,nu}_{naive,comp}``, plus ``loss`` per
    step and the config. The app, the notebook and the committed record use this form."""
    def rnd(t):
        return [round(float(v), digits) for v in t]

    recs = result["records"]
    out = {"config": asdict(cfg), "step": [r["step"] for r in recs], "n_past": [r["n_past"] for r in recs],
           "loss": [round(float(v), 5) for v in result["loss"]]}
    for k in ("cur", "naive", "comp", "true", "cbn"):
        for s in ("mu", "var"):
            out[f"{s}_{k}"] = [rnd(r[f"{s}_{k}"]) for r in recs]
    for k in ("err_mu_naive", "err_mu_comp", "err_nu_naive", "err_nu_comp"):
        out[k] = [float(f"{r[k]:.4g}") if k in r else None for r in recs]
    return out


def recorded_path():
    return studies_dir("cbn") / "diagnostic.json"


def recorded() -> dict:
    """The committed diagnostic run; ``FileNotFoundError`` names the command that writes it."""
    path = recorded_path()
    if not path.exists():
        raise FileNotFoundError(f"no recorded diagnostic run yet; run `{COMMAND}`")
    return json.loads(path.read_text())


def panel(diag: dict, channel: int = 0) -> Panel:
    """Trajectories of one channel, compensation errors and loss of a diagnostic record."""
    from workbench.viz import cbn as vz

    if not diag:
        raise ValueError("Nothing to show yet: replay the recorded run or start a live one.")
    n = vz.num_channels(diag)
    c = check_int(f"channel (layer {diag['config'].get('layer')} has {n})", channel, 0, n - 1)
    return Panel({"trajectories": vz.trajectories_figure(diag, c), "errors": vz.error_figure(diag),
                  "loss": vz.loss_figure(diag["loss"])}, vz.diagnostic_summary(diag), values={"diag": diag})


def warm() -> None:
    """Read the demo network's conv -> BN pairs once (``cbn.conv_bn_pairs`` traces with ``torch.fx``, which must not
    run while other users' models do): the app calls this while it builds, before it serves anyone."""
    cbn.make_model("cbn", in_chans=3, widths=WIDTHS)


def stat_batches(batch_size) -> list[int]:
    """The statistics batches a batch of ``batch_size`` can be split into (the app's choices follow the batch)."""
    b = check_int("batch size", batch_size, *LIMITS["batch_size"])
    return [s for s in range(1, b + 1) if b % s == 0]


WHOLE = "whole batch"


def stat_batch_choices(batch_size) -> list[str]:
    """The statistics-group control's choices (app and explorer): the group sizes that divide the batch, then
    ``WHOLE``."""
    return [str(s) for s in stat_batches(batch_size) if s < int(batch_size)] + [WHOLE]


def parse_stat_batch(choice) -> int | None:
    """The statistics-group control's value as :class:`DiagnosticConfig` takes it: an image count, or None for
    the whole batch."""
    if choice in (None, "", WHOLE):
        return None
    try:
        return int(choice)
    except (TypeError, ValueError):
        raise ValueError(f"images per statistics group must be a number or {WHOLE!r}, got {choice!r}") from None


def live_config(batch_size=4, window=4, rho=1.0, burnin=0, steps=120, layer="blocks.1.conv1",
                stat_batch=None) -> DiagnosticConfig:
    """The validated :class:`DiagnosticConfig` of a live run from the controls (lr 0.1 x batch / 32, the study's
    linear scaling rule); the app and the notebook explorer train with it."""
    cfg = DiagnosticConfig(batch_size=batch_size, window=window, rho=rho, burnin=burnin, steps=steps, layer=layer,
                           stat_batch=stat_batch,
                           lr=0.1 * check_int("batch size", batch_size, *LIMITS["batch_size"]) / 32)
    return cfg.validate()


def live_record(batch_size=4, window=4, rho=1.0, burnin=0, steps=120, layer="blocks.1.conv1",
                stat_batch=None) -> dict:
    """A whole live run as a diagnostic record (:func:`diagnostic_series`), for :func:`panel`: the notebook
    explorer trains once per setting and then only redraws."""
    cfg = live_config(batch_size, window, rho, burnin, steps, layer, stat_batch)
    cfg.every = cfg.steps
    *_, last = diagnostic_run(cfg)
    return diagnostic_series(last, cfg)


def live(batch_size=4, window=4, rho=1.0, burnin=0, steps=120, layer="blocks.1.conv1", channel=0,
         stat_batch=None) -> Iterator[Panel]:
    """Train live and yield a :class:`Panel` every few steps (the app streams them). ``stat_batch``: images per
    statistics group (None: the whole batch)."""
    cfg = live_config(batch_size, window, rho, burnin, steps, layer, stat_batch)
    cfg.every = max(5, cfg.steps // 8)
    n = channels(layer)
    c = min(check_int("channel", channel, 0, 1023), n - 1)
    for res in diagnostic_run(cfg):
        yield panel(diagnostic_series(res, cfg), c)
