"""The one training helper every paper's ``workbench train`` job uses: functions, not a framework.

- optimisers: AdamW or SGD, with parameter groups (no weight decay for norms/biases, ``lr_scale`` for
  layer-wise decay);
- schedule: linear warmup then cosine to ``min_lr``, updated every step (:func:`lr_at`);
- gradient clipping, AMP (bfloat16/float16 autocast on CUDA only), checkpoint save/resume, tqdm progress,
  metrics appended as JSON lines;
- unchanged under ``torchrun``: :func:`setup_distributed` reads the torchrun environment, wraps the model in
  DistributedDataParallel (gloo on CPU, NCCL on GPU) and shards a Dataset with a DistributedSampler.
"""
from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from workbench.checkpoints import load_checkpoint, save_checkpoint


@dataclass
class TrainConfig:
    epochs: int = 10
    steps: int | None = None  # when set: exactly this many optimizer steps (epochs = as many as needed)
    batch_size: int = 64
    lr: float = 1e-3
    min_lr: float = 1e-5
    warmup_epochs: float = 1.0
    weight_decay: float = 0.05
    optimizer: str = "adamw"  # or "sgd"
    momentum: float = 0.9
    betas: tuple[float, float] = (0.9, 0.999)
    clip_grad: float | None = 5.0
    amp: bool = False  # autocast on CUDA only; ignored on CPU
    seed: int = 0
    out_dir: str | None = None  # metrics.jsonl and last.pt go here
    resume: bool = False
    log_every: int = 50
    progress: bool = True
    device: str = "auto"
    num_workers: int = 0
    drop_last: bool = True
    no_decay_keywords: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self):
        if self.epochs < 0 or self.batch_size < 1:
            raise ValueError("epochs must be >= 0 and batch_size >= 1")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1 when given, got {self.steps}")
        if self.optimizer not in ("adamw", "sgd"):
            raise ValueError(f"optimizer must be 'adamw' or 'sgd', got {self.optimizer!r}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"lr must be a positive number, got {self.lr}")


# ------------------------------------------------------------------------------------------------ setup


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def setup_distributed() -> tuple[int, int, torch.device]:
    """Initialise the process group when launched by torchrun. Returns ``(rank, world_size, device)``."""
    if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
        return 0, 1, get_device()
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        device, backend = torch.device("cuda", local), "nccl"
    else:
        device, backend = torch.device("cpu"), "gloo"
    if not dist.is_initialized():
        dist.init_process_group(backend=backend)
    return rank, world, device


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def is_main_process() -> bool:
    return not is_distributed() or dist.get_rank() == 0


def world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


@torch.no_grad()
def concat_all_gather(t: torch.Tensor) -> torch.Tensor:
    """Concatenate ``t`` from every process along dim 0 (no gradient); ``t`` itself when not distributed."""
    if not is_distributed():
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts, 0)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


# ------------------------------------------------------------------------------------------------ optimiser


def lr_at(step: int, total: int, warmup: int, base: float, min_lr: float = 0.0) -> float:
    """Linear warmup from 0 over ``warmup`` steps, then cosine from ``base`` to ``min_lr`` at ``total``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    if total <= warmup:
        return base
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (base - min_lr) * (1 + math.cos(math.pi * t))


def param_groups_weight_decay(model: nn.Module, weight_decay: float, skip: Iterable[str] = ()) -> list[dict]:
    """Two groups: decayed weights and everything 1-D (norms, biases) or named in ``skip``/``no_weight_decay()``."""
    skip = set(skip)
    if hasattr(model, "no_weight_decay"):
        skip |= set(model.no_weight_decay())
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim <= 1 or name.endswith(".bias") or any(s in name for s in skip):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=tuple(cfg.betas), weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


# ------------------------------------------------------------------------------------------------ logging


class JsonlLogger:
    """Append one JSON object per line (only on the main process)."""

    def __init__(self, path: str | os.PathLike | None):
        self.path = Path(path) if path else None
        if self.path and is_main_process():
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def log(self, **record: Any) -> None:
        if self.path is None or not is_main_process():
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record, default=float) + "\n")


def read_jsonl(path) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


# ------------------------------------------------------------------------------------------------ loop


def _to_device(batch, device):
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(b, device) for b in batch)
    if isinstance(batch, dict):
        return {k: _to_device(v, device) for k, v in batch.items()}
    return batch


def _make_loader(data, cfg: TrainConfig, collate_fn, seed: int):
    from torch.utils.data import DataLoader, Dataset, DistributedSampler

    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        sampler = None
        if is_distributed():
            sampler = DistributedSampler(data, shuffle=True, seed=cfg.seed, drop_last=cfg.drop_last)
        g = torch.Generator().manual_seed(cfg.seed)
        loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=sampler is None, sampler=sampler,
                            num_workers=cfg.num_workers, drop_last=cfg.drop_last, collate_fn=collate_fn,
                            generator=g if sampler is None else None)
        return loader, sampler, g
    return data, None, None


def fit(model: nn.Module, data, loss_fn: Callable, cfg: TrainConfig, *, eval_fn: Callable | None = None,
        param_groups: list[dict] | None = None, on_step: Callable | None = None,
        collate_fn: Callable | None = None, ddp_kwargs: dict | None = None) -> dict:
    """Train ``model`` for ``cfg.epochs`` epochs and return ``{"history": [...], "steps": n}``.

    ``loss_fn(model, batch)`` returns a loss or ``(loss, {metric: float})``. ``eval_fn(model, epoch)``
    returns metrics logged at the end of each epoch. ``param_groups`` entries may carry ``lr_scale``.
    ``on_step(model, step, total_steps)`` runs after each optimizer step. Under torchrun the model is wrapped
    in DDP (``loss_fn`` receives the wrapper) and ``data`` (a Dataset) is sharded; ``ddp_kwargs`` go to
    ``DistributedDataParallel`` (e.g. ``forward_sync_buffers=False`` for layers whose buffers are per-process state).
    """
    from tqdm.auto import tqdm

    rank, world, device = setup_distributed()
    if cfg.device != "auto" and not is_distributed():
        device = torch.device(cfg.device)
    seed_everything(cfg.seed + rank)
    model.to(device)
    groups = param_groups if param_groups is not None else param_groups_weight_decay(
        model, cfg.weight_decay, cfg.no_decay_keywords)
    opt = build_optimizer(groups, cfg)
    for g in opt.param_groups:
        g.setdefault("lr_scale", 1.0)
    use_amp = cfg.amp and device.type == "cuda"
    amp_dtype = torch.bfloat16 if use_amp and torch.cuda.is_bf16_supported() else torch.float16
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    train_model = model
    if is_distributed():
        train_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None, **(ddp_kwargs or {}))

    out = Path(cfg.out_dir) if cfg.out_dir else None
    logger = JsonlLogger(out / "metrics.jsonl" if out else None)
    start_epoch, step, history = 0, 0, []
    if out and cfg.resume and (out / "last.pt").exists():
        ck = load_checkpoint(out / "last.pt", map_location=device)
        model.load_state_dict(ck.state_dict)
        opt.load_state_dict(ck.extra["optimizer"])
        if "scaler" in ck.extra and ck.extra["scaler"]:
            scaler.load_state_dict(ck.extra["scaler"])
        start_epoch, step = int(ck.extra["epoch"]) + 1, int(ck.extra["step"])
        history = list(ck.extra.get("history", []))

    loader, sampler, order_gen = _make_loader(data, cfg, collate_fn, cfg.seed)
    try:
        steps_per_epoch = len(loader)
    except TypeError as e:
        raise ValueError("data must be a Dataset or a sized iterable of batches") from e
    if steps_per_epoch == 0:
        raise ValueError(f"no batches: {len(data) if hasattr(data, '__len__') else '?'} samples with batch size "
                         f"{cfg.batch_size} and drop_last={cfg.drop_last}")
    total = cfg.steps if cfg.steps is not None else steps_per_epoch * cfg.epochs
    n_epochs = math.ceil(total / steps_per_epoch)
    warmup = int(round(cfg.warmup_epochs * steps_per_epoch))

    for epoch in range(start_epoch, n_epochs):
        if sampler is not None:
            sampler.set_epoch(epoch)
        if order_gen is not None:  # the data order of an epoch depends on (seed, epoch) only: resumable
            order_gen.manual_seed(cfg.seed * 100_003 + epoch)
        train_model.train()
        t0, sums, count = time.perf_counter(), {}, 0
        bar = tqdm(loader, desc=f"epoch {epoch + 1}/{n_epochs}", leave=False,
                   disable=not (cfg.progress and is_main_process()))
        for batch in bar:
            if step >= total:
                break
            lr = lr_at(step, total, warmup, cfg.lr, cfg.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr * g["lr_scale"]
            batch = _to_device(batch, device)
            with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
                res = loss_fn(train_model, batch)
            loss, metrics = (res if isinstance(res, tuple) else (res, {}))
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss became {loss.item()} at step {step} (epoch {epoch + 1}); "
                                         "lower the learning rate or enable gradient clipping")
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            grad_norm = None
            if cfg.clip_grad:
                scaler.unscale_(opt)
                grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.clip_grad))
            scaler.step(opt)
            scaler.update()
            step += 1
            if on_step is not None:
                on_step(model, step, total)
            count += 1
            sums["loss"] = sums.get("loss", 0.0) + float(loss.detach())
            for k, v in metrics.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if cfg.progress:
                bar.set_postfix(loss=f"{float(loss.detach()):.4f}", lr=f"{lr:.2e}")
            if cfg.log_every and step % cfg.log_every == 0:
                logger.log(kind="step", epoch=epoch + 1, step=step, lr=lr, loss=float(loss.detach()),
                           grad_norm=grad_norm, **{k: float(v) for k, v in metrics.items()})
        record = {"kind": "epoch", "epoch": epoch + 1, "step": step,
                  **{f"train_{k}": v / max(count, 1) for k, v in sums.items()},
                  "epoch_seconds": time.perf_counter() - t0}
        if eval_fn is not None:
            model.eval()
            with torch.no_grad():
                record.update(eval_fn(model, epoch + 1) or {})
        history.append(record)
        logger.log(**record)
        if out and is_main_process():
            save_checkpoint(out / "last.pt", model, config=asdict(cfg), extra={
                "optimizer": opt.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                "epoch": epoch, "step": step, "history": history})
    return {"history": history, "steps": step}


@torch.no_grad()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256,
                   preprocess: Callable | None = None) -> torch.Tensor:
    """Logits of ``model`` on ``x`` in batches (eval mode, no gradients; the train/eval mode is restored).
    ``preprocess`` (e.g. normalisation) is applied to each batch first."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    out = []
    try:
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].to(device)
            out.append(model(preprocess(xb) if preprocess is not None else xb).float().cpu())
    finally:
        model.train(was)
    return torch.cat(out) if out else torch.zeros(0)


def evaluate_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256,
                      preprocess: Callable | None = None) -> float:
    """Top-1 accuracy (a fraction) of ``model`` on tensors ``x``, ``y``; see :func:`predict_logits`."""
    logits = predict_logits(model, x, batch_size, preprocess)
    return float((logits.argmax(-1) == y.cpu()).sum()) / max(1, len(x))
