"""MoBY: self-supervised learning with Swin Transformers (Xie et al., 2021, arXiv:2105.04553).

MoBY joins MoCo v2 (a momentum key encoder and a queue of negative keys) and BYOL (an online predictor
and an asymmetric two-view augmentation). For two augmented views ``x1, x2`` of a batch:

* online branch (trained):   ``p_i = normalize(g(h(f(x_i))))``  — encoder ``f``, projector ``h``,
  predictor ``g``;
* target branch (no gradient): ``z_i = normalize(h_k(f_k(x_i)))`` — a momentum copy of ``f`` and ``h``;
* the symmetric contrastive loss with temperature ``tau`` (official 0.2), two key queues ``Q1, Q2``
  (one column per stored key) and label 0 for the positive::

      L(p, z, Q) = -log  exp(p.z / tau) / ( exp(p.z / tau) + sum_j exp(p.Q[:, j] / tau) )
      loss = mean_b L(p1_b, z2_b, Q2) + mean_b L(p2_b, z1_b, Q1)

  after which ``z1`` is enqueued into ``Q1`` and ``z2`` into ``Q2`` at one shared pointer (FIFO);
* the momentum update ``theta_k <- m theta_k + (1 - m) theta_q`` with the cosine schedule
  ``m(k) = 1 - (1 - m0) (cos(pi k / K) + 1) / 2`` that rises from ``m0 = 0.99`` to 1 over ``K`` steps;
* asymmetric drop path: 0.2 in the online encoder, 0 in the target encoder.

Evaluation on frozen features: the weighted kNN classifier (Wu et al. 2018, as used by DINO) with
``score_c = sum_{i in top-k, y_i = c} exp(cos_i / T)``, and a linear probe (a softmax classifier trained
on the frozen raw pooled features, as the official probe; ``standardize=True`` standardises them first).
``supervised_train`` fine-tunes (or trains from scratch) a whole encoder with a linear head for the supervised /
fine-tune columns of the study.

The backbones come from the registry, :func:`workbench.models.create_model` (Swin V2, Swin V1 and ViT names;
``num_classes=0`` returns pooled features); any module with ``num_features`` whose forward returns
``(B, num_features)`` works, which keeps the unit tests independent of the backbones.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from workbench.data.transforms import byol_two_view, normalize, to_tensor
from workbench.models import create_model
from workbench.train import (
    TrainConfig,
    concat_all_gather,
    evaluate_accuracy,
    fit,
    setup_distributed,
    unwrap,
    world_size,
)

__all__ = [
    "MoBYConfig", "OFFICIAL", "LAPTOP", "MLP", "MoBY", "build_moby", "create_encoder",
    "momentum_at", "momentum_update_", "contrastive_loss", "moby_loss",
    "extract_features", "knn_predict", "knn_accuracy", "linear_probe", "supervised_train", "Classifier", "LabeledImages",
    "two_view_transform", "two_views", "normalize_batch", "TwoViewImages", "pretrain",
]


# --------------------------------------------------------------------------------------------------
# configuration
# --------------------------------------------------------------------------------------------------
@dataclass
class MoBYConfig:
    """Dimensions and hyper-parameters of MoBY. The defaults are the official ones (``OFFICIAL``)."""

    proj_hidden: int = 4096  # projector hidden width
    pred_hidden: int = 4096  # predictor hidden width
    out_dim: int = 256  # projection / key dimension
    proj_layers: int = 2
    pred_layers: int = 2
    queue_size: int = 4096  # keys per queue (K); a multiple of the global batch
    temperature: float = 0.2  # tau
    momentum: float = 0.99  # m0, the start of the cosine schedule (ends at 1)
    drop_path_online: float = 0.2
    drop_path_target: float = 0.0

    def __post_init__(self):
        for name in ("proj_hidden", "pred_hidden", "out_dim", "queue_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"MoBYConfig.{name} must be a positive integer, got {v!r}")
        if self.proj_layers < 1 or self.pred_layers < 1:
            raise ValueError("MoBYConfig: proj_layers and pred_layers must be >= 1")
        if not (self.temperature > 0 and math.isfinite(self.temperature)):
            raise ValueError(f"MoBYConfig.temperature must be a positive number, got {self.temperature!r}")
        if not 0.0 <= self.momentum <= 1.0:
            raise ValueError(f"MoBYConfig.momentum must be in [0, 1], got {self.momentum!r}")
        for name in ("drop_path_online", "drop_path_target"):
            v = getattr(self, name)
            if not 0.0 <= v < 1.0:
                raise ValueError(f"MoBYConfig.{name} must be in [0, 1), got {v!r}")

    def to_dict(self) -> dict:
        return asdict(self)


OFFICIAL = MoBYConfig()
# Laptop scale: ~2M-parameter backbones, a few thousand 64 px images, batches of 32-64.
LAPTOP = MoBYConfig(proj_hidden=512, pred_hidden=512, out_dim=128, queue_size=1024, drop_path_online=0.1)


# --------------------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------------------
class MLP(nn.Module):
    """MoBY's projector / predictor: (Linear -> BN1d -> ReLU) x (num_layers - 1) -> Linear."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        d = in_dim
        for _ in range(num_layers - 1):
            layers += [nn.Linear(d, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True)]
            d = hidden
        layers.append(nn.Linear(d, out_dim))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def momentum_at(step: int, total: int, base: float = 0.99) -> float:
    """Cosine momentum schedule ``1 - (1 - base) (cos(pi step / total) + 1) / 2``: base at 0, 1 at total."""
    if total <= 0:
        raise ValueError(f"total steps must be positive, got {total}")
    step = min(max(int(step), 0), int(total))
    return 1.0 - (1.0 - base) * (math.cos(math.pi * step / total) + 1.0) / 2.0


@torch.no_grad()
def momentum_update_(target: nn.Module, online: nn.Module, m: float) -> None:
    """In place ``theta_k <- m theta_k + (1 - m) theta_q`` over matching parameters (buffers are kept)."""
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum must be in [0, 1], got {m}")
    tp = dict(target.named_parameters())
    op = dict(online.named_parameters())
    if tp.keys() != op.keys():
        missing = sorted(set(tp) ^ set(op))[:5]
        raise ValueError(f"target and online modules differ in parameters, e.g. {missing}")
    for name, pt in tp.items():
        po = op[name]
        if pt.shape != po.shape:
            raise ValueError(f"parameter {name}: target {tuple(pt.shape)} vs online {tuple(po.shape)}")
        pt.mul_(m).add_(po.detach(), alpha=1.0 - m)


def contrastive_loss(q: torch.Tensor, k: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE with the positive at index 0: ``CE([q.k, q.queue] / tau, 0)`` averaged over the batch.

    ``q``, ``k``: (B, D) L2-normalised; ``queue``: (D, K) of L2-normalised columns (no gradient).
    """
    if q.ndim != 2 or k.shape != q.shape:
        raise ValueError(f"q and k must both be (B, D); got {tuple(q.shape)} and {tuple(k.shape)}")
    if queue.ndim != 2 or queue.shape[0] != q.shape[1]:
        raise ValueError(f"queue must be (D, K) with D = {q.shape[1]}; got {tuple(queue.shape)}")
    l_pos = (q * k).sum(dim=1, keepdim=True)
    l_neg = q @ queue.detach()
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature
    labels = torch.zeros(q.shape[0], dtype=torch.long, device=q.device)
    return F.cross_entropy(logits, labels)


def moby_loss(p1, p2, z1, z2, queue1, queue2, temperature: float) -> torch.Tensor:
    """Symmetric MoBY loss: view-1 predictions against view-2 keys and queue 2, and vice versa."""
    return contrastive_loss(p1, z2, queue2, temperature) + contrastive_loss(p2, z1, queue1, temperature)


# --------------------------------------------------------------------------------------------------
# the model
# --------------------------------------------------------------------------------------------------
def _gather(t: torch.Tensor) -> torch.Tensor:
    """All-gather keys across DDP ranks (identity when not distributed)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return concat_all_gather(t)
    return t


class MoBY(nn.Module):
    """Online encoder + projector + predictor, momentum encoder + projector, two key queues.

    ``encoder_factory(drop_path_rate)`` builds one encoder (called twice: online and target, which gives
    the asymmetric drop path); the target starts as an exact copy of the online weights. Without ``cfg`` the
    official hyper-parameters are used (:data:`OFFICIAL`); the laptop studies pass their own (e.g. :data:`LAPTOP`).
    """

    def __init__(self, encoder_factory: Callable[[float], nn.Module], cfg: MoBYConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg if cfg is not None else MoBYConfig()
        self.encoder = encoder_factory(cfg.drop_path_online)
        self.encoder_k = encoder_factory(cfg.drop_path_target)
        nf = getattr(self.encoder, "num_features", None)
        if not isinstance(nf, int):
            raise ValueError("the encoder must expose an integer `num_features`")
        self.encoder_k.load_state_dict(self.encoder.state_dict())
        self.projector = MLP(nf, cfg.proj_hidden, cfg.out_dim, cfg.proj_layers)
        self.projector_k = copy.deepcopy(self.projector)
        self.predictor = MLP(cfg.out_dim, cfg.pred_hidden, cfg.out_dim, cfg.pred_layers)
        for p in list(self.encoder_k.parameters()) + list(self.projector_k.parameters()):
            p.requires_grad_(False)
        self.register_buffer("queue1", F.normalize(torch.randn(cfg.out_dim, cfg.queue_size), dim=0))
        self.register_buffer("queue2", F.normalize(torch.randn(cfg.out_dim, cfg.queue_size), dim=0))
        self.register_buffer("queue_ptr", torch.zeros(1, dtype=torch.long))
        self.last_momentum = cfg.momentum

    # -- branches --------------------------------------------------------------------------------
    def online(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised predictions ``p = normalize(g(h(f(x))))``."""
        return F.normalize(self.predictor(self.projector(self.encoder(x))), dim=1)

    @torch.no_grad()
    def target(self, x: torch.Tensor) -> torch.Tensor:
        """Normalised keys ``z = normalize(h_k(f_k(x)))`` (never part of the autograd graph)."""
        return F.normalize(self.projector_k(self.encoder_k(x)), dim=1)

    def target_modules(self) -> tuple[nn.Module, nn.Module]:
        return self.encoder_k, self.projector_k

    def no_weight_decay(self) -> set[str]:
        """The backbone's no-decay names / keywords (matched as substrings by the training helper)."""
        return set(self.encoder.no_weight_decay()) if hasattr(self.encoder, "no_weight_decay") else set()

    @torch.no_grad()
    def momentum_update(self, step: int, total: int) -> float:
        """Momentum step ``k`` of ``K``: encoder_k, projector_k <- m (.)_k + (1 - m) (.)_q. Returns m."""
        m = momentum_at(step, total, self.cfg.momentum)
        momentum_update_(self.encoder_k, self.encoder, m)
        momentum_update_(self.projector_k, self.projector, m)
        self.last_momentum = m
        return m

    @torch.no_grad()
    def enqueue(self, k1: torch.Tensor, k2: torch.Tensor) -> None:
        """Write gathered keys (all ranks) into the queues at the shared pointer; advance it (mod K)."""
        k1, k2 = _gather(k1.detach()), _gather(k2.detach())
        b = k1.shape[0]
        size = self.cfg.queue_size
        if size % b != 0:
            raise ValueError(
                f"MoBY queue_size ({size}) must be a multiple of the global batch size ({b} = per-GPU batch x "
                f"world size); choose a batch size that divides {size} (or drop the last incomplete batch)")
        ptr = int(self.queue_ptr)
        self.queue1[:, ptr:ptr + b] = k1.T.to(self.queue1.dtype)
        self.queue2[:, ptr:ptr + b] = k2.T.to(self.queue2.dtype)
        self.queue_ptr[0] = (ptr + b) % size

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, enqueue: bool = True) -> torch.Tensor:
        """The symmetric loss for two views (the keys are enqueued after the loss is formed)."""
        if x1.shape != x2.shape:
            raise ValueError(f"the two views must have the same shape, got {tuple(x1.shape)} and {tuple(x2.shape)}")
        p1, p2 = self.online(x1), self.online(x2)
        z1, z2 = self.target(x1), self.target(x2)
        loss = moby_loss(p1, p2, z1, z2, self.queue1.clone(), self.queue2.clone(), self.cfg.temperature)
        if enqueue:   # as the official forward: the keys are enqueued in training and in eval mode alike
            self.enqueue(z1, z2)
        return loss


def create_encoder(backbone: str, drop_path_rate: float = 0.0, **overrides) -> nn.Module:
    """A registered backbone (:func:`workbench.models.create_model`: Swin V2, Swin V1 or ViT names) without
    classifier head: its forward returns pooled features."""
    return create_model(backbone, num_classes=0, drop_path_rate=drop_path_rate, **overrides)


def build_moby(backbone: str = "swinv2_lite_window4_64", cfg: MoBYConfig | None = None, **overrides) -> MoBY:
    """MoBY around a named backbone (``overrides`` go to ``create_model``, e.g. ``img_size``)."""
    return MoBY(lambda dp: create_encoder(backbone, dp, **overrides), cfg)


# --------------------------------------------------------------------------------------------------
# augmentation
# --------------------------------------------------------------------------------------------------
def two_view_transform(size: int, normalize: bool = True, scale=(0.08, 1.0)):
    """The BYOL/MoBY asymmetric two-view recipe from :mod:`workbench.data.transforms`.

    Both views: RandomResizedCrop(scale 0.08-1), flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, grayscale
    p 0.2; view 1: blur p 1.0; view 2: blur p 0.1 and solarize p 0.2; then ImageNet normalisation
    (``normalize=False`` keeps [0, 1] values for display).
    """
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise ValueError(f"view size must be an integer in [8, 1024], got {size!r}")
    return byol_two_view(size, scale=scale, normalize=normalize)


def normalize_batch(x: torch.Tensor) -> torch.Tensor:
    """ImageNet mean / std normalisation of a float batch (N, 3, H, W) in [0, 1] (what the encoder sees):
    :func:`workbench.data.transforms.normalize`."""
    return normalize(x)


def _as_chw(image) -> torch.Tensor:
    """uint8 (H, W, 3) array / float (3, H, W) tensor in [0, 1] -> float (3, H, W) tensor."""
    if isinstance(image, torch.Tensor) and image.dtype.is_floating_point:
        t = image
    else:
        a = np.asarray(image)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {a.shape}")
        t = to_tensor(a)
    if t.ndim != 3 or t.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError("the image contains NaN or infinite values")
    return t.clamp(0, 1)


def two_views(image, size: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two augmented views (float (3, size, size) in [0, 1], not normalised) of one image, reproducible
    from ``seed``."""
    t = _as_chw(image)
    g = torch.Generator().manual_seed(int(seed))
    out = two_view_transform(size, normalize=False)(t, g)
    return out[0], out[1]


class TwoViewImages(torch.utils.data.Dataset):
    """A pre-training set: float images (N, 3, H, W) in [0, 1] -> two normalised augmented views (global RNG)."""

    def __init__(self, images: torch.Tensor, size: int | None = None):
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be (N, 3, H, W), got {tuple(images.shape)}")
        self.images = images
        self.views = two_view_transform(int(size or images.shape[-1]))

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        return self.views(self.images[i].float())


def pretrain(model: MoBY, images, train_cfg, *, eval_fn: Callable | None = None,
             size: int | None = None) -> dict:
    """MoBY pre-training through :func:`workbench.train.fit`: the symmetric loss per batch of two views,
    the cosine momentum update after every optimizer step, keys enqueued (all-gathered under DDP).

    ``images``: float images (N, 3, H, W) in [0, 1] (two views by :class:`TwoViewImages`), or any Dataset
    that yields ``(view1, view2)`` pairs."""
    _, _, device = setup_distributed()  # under torchrun: join the process group before counting processes
    if world_size() > 1 and device.type == "cuda":
        nn.SyncBatchNorm.convert_sync_batchnorm(model)  # as the official code: projector BN over the global batch
    global_batch = train_cfg.batch_size * world_size()
    if model.cfg.queue_size % global_batch:
        raise ValueError(f"MoBY queue_size ({model.cfg.queue_size}) must be a multiple of the global batch size "
                         f"({train_cfg.batch_size} x {world_size()} process(es) = {global_batch})")
    if not train_cfg.drop_last:
        raise ValueError("MoBY pre-training needs drop_last=True (every batch must have the same size)")

    def loss_fn(m, batch):
        loss = m(batch[0], batch[1])
        return loss, {"momentum": unwrap(m).last_momentum}

    data = TwoViewImages(images, size) if isinstance(images, torch.Tensor) else images
    return fit(model, data, loss_fn, train_cfg, eval_fn=eval_fn,
               on_step=lambda m, step, total: m.momentum_update(step, total))


# --------------------------------------------------------------------------------------------------
# evaluation on frozen features
# --------------------------------------------------------------------------------------------------
@torch.no_grad()
def extract_features(encoder: nn.Module, images: torch.Tensor, batch_size: int = 128,
                     normalize: Callable | None = None) -> torch.Tensor:
    """Pooled features ``(N, D)`` of float images ``(N, C, H, W)`` with the encoder in eval mode."""
    if images.ndim != 4:
        raise ValueError(f"images must be (N, C, H, W), got {tuple(images.shape)}")
    was = encoder.training
    encoder.eval()
    dev = next(encoder.parameters()).device
    feats = []
    try:
        for i in range(0, images.shape[0], batch_size):
            x = images[i:i + batch_size].to(dev, torch.float32)
            if normalize is not None:
                x = normalize(x)
            f = encoder(x)
            if f.ndim != 2:
                raise ValueError(f"the encoder must return pooled (B, D) features, got {tuple(f.shape)}")
            feats.append(f.float().cpu())
    finally:
        encoder.train(was)
    return torch.cat(feats) if feats else torch.zeros(0, 0)


@torch.no_grad()
def knn_predict(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                k: int = 20, temperature: float = 0.07, num_classes: int | None = None,
                chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted kNN on cosine similarity: ``score_c = sum_{top-k, y=c} exp(s / T)``. Returns (pred, scores)."""
    if train_feats.ndim != 2 or test_feats.ndim != 2 or train_feats.shape[1] != test_feats.shape[1]:
        raise ValueError(f"features must be (N, D) with equal D, got {tuple(train_feats.shape)} and "
                         f"{tuple(test_feats.shape)}")
    if train_labels.shape != (train_feats.shape[0],):
        raise ValueError("train_labels must have one label per training feature")
    if not (isinstance(k, int) and k >= 1):
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be positive, got {temperature}")
    n_cls = int(num_classes if num_classes is not None else int(train_labels.max()) + 1)
    k = min(k, train_feats.shape[0])
    tr = F.normalize(train_feats.float(), dim=1)
    te = F.normalize(test_feats.float(), dim=1)
    labels = train_labels.long()
    preds, all_scores = [], []
    for i in range(0, te.shape[0], chunk):
        sim = te[i:i + chunk] @ tr.T
        s, idx = sim.topk(k, dim=1)
        w = (s / temperature).exp()
        scores = torch.zeros(sim.shape[0], n_cls).scatter_add_(1, labels[idx], w)
        preds.append(scores.argmax(1))
        all_scores.append(scores)
    return torch.cat(preds), torch.cat(all_scores)


def knn_accuracy(train_feats, train_labels, test_feats, test_labels, k: int = 20,
                 temperature: float = 0.07) -> float:
    """Top-1 accuracy (%) of :func:`knn_predict`."""
    n_cls = int(max(int(train_labels.max()), int(test_labels.max()))) + 1
    pred, _ = knn_predict(train_feats, train_labels, test_feats, k, temperature, n_cls)
    return 100.0 * (pred == test_labels.long()).float().mean().item()


def linear_probe(train_feats: torch.Tensor, train_labels: torch.Tensor, test_feats: torch.Tensor,
                 test_labels: torch.Tensor, *, epochs: int = 100, lr: float = 1.0, weight_decay: float = 0.0,
                 batch_size: int = 256, momentum: float = 0.9, seed: int = 0, standardize: bool = False) -> dict:
    """Linear evaluation: a softmax classifier on frozen features (SGD momentum 0.9, cosine lr, as MoBY's
    linear protocol). By default on the raw pooled features, as the official probe; ``standardize=True``
    standardises them with the training mean / std first (a BN without affine).

    The objective is ``mean CE + weight_decay / 2 * ||W||^2`` (bias not decayed). Returns
    ``{"acc", "train_acc", "loss", "weight", "bias", "mean", "std"}``.
    """
    if train_feats.ndim != 2 or test_feats.ndim != 2:
        raise ValueError("features must be (N, D)")
    if not torch.isfinite(train_feats).all() or not torch.isfinite(test_feats).all():
        raise ValueError("features contain NaN or infinite values")
    if epochs < 1 or lr <= 0:
        raise ValueError("epochs must be >= 1 and lr > 0")
    g = torch.Generator().manual_seed(seed)
    x = train_feats.double()
    mean = x.mean(0) if standardize else torch.zeros(x.shape[1], dtype=x.dtype)
    std = x.std(0).clamp_min(1e-6) if standardize else torch.ones(x.shape[1], dtype=x.dtype)
    x = ((x - mean) / std).float()
    xt = ((test_feats.double() - mean) / std).float()
    y, yt = train_labels.long(), test_labels.long()
    n_cls = int(max(int(y.max()), int(yt.max()))) + 1
    head = nn.Linear(x.shape[1], n_cls)
    nn.init.zeros_(head.weight)
    nn.init.zeros_(head.bias)
    opt = torch.optim.SGD(head.parameters(), lr=lr, momentum=momentum)
    n = x.shape[0]
    steps_per_epoch = max(1, math.ceil(n / batch_size))
    total = epochs * steps_per_epoch
    step = 0
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            for group in opt.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = F.cross_entropy(head(x[idx]), y[idx]) + 0.5 * weight_decay * head.weight.pow(2).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    with torch.no_grad():
        full = F.cross_entropy(head(x), y) + 0.5 * weight_decay * head.weight.pow(2).sum()
        acc = 100.0 * (head(xt).argmax(1) == yt).float().mean().item()
        train_acc = 100.0 * (head(x).argmax(1) == y).float().mean().item()
    return {"acc": acc, "train_acc": train_acc, "loss": float(full), "weight": head.weight.detach().clone(),
            "bias": head.bias.detach().clone(), "mean": mean.float(), "std": std.float()}


class Classifier(nn.Module):
    """An encoder (pooled features) with a linear head: supervised training and fine-tuning."""

    def __init__(self, encoder: nn.Module, num_classes: int):
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(encoder.num_features, num_classes)

    def forward(self, x):
        return self.head(self.encoder(x))

    def no_weight_decay(self):
        return set(self.encoder.no_weight_decay()) if hasattr(self.encoder, "no_weight_decay") else set()


class LabeledImages(torch.utils.data.Dataset):
    """Float images (N, 3, H, W) in [0, 1] + labels; ``augment(x)`` per sample (global RNG), then ImageNet
    normalisation."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: Callable | None = None):
        if images.ndim != 4 or labels.shape != (images.shape[0],):
            raise ValueError("images (N, C, H, W) and labels (N,) expected")
        self.images, self.labels, self.augment = images, labels.long(), augment

    def __len__(self):
        return self.images.shape[0]

    def __getitem__(self, i):
        x = self.images[i].float()
        if self.augment is not None:
            x = self.augment(x)
        return normalize_batch(x[None])[0], self.labels[i]


def supervised_train(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, *, epochs: int = 5,
                     lr: float = 1e-3, weight_decay: float = 0.05, batch_size: int = 64, seed: int = 0,
                     augment: Callable | None = None, test: tuple[torch.Tensor, torch.Tensor] | None = None,
                     device: str = "auto") -> dict:
    """Train ``encoder`` + a linear head end to end with cross-entropy through :func:`workbench.train.fit`
    (AdamW, 1 warm-up epoch, cosine). Supervised training from scratch and fine-tuning of a pre-trained
    encoder (same budget). Returns ``{"acc" (if test), "train_loss", "steps", "model"}``."""
    n_cls = int(labels.max()) + 1 if test is None else int(max(int(labels.max()), int(test[1].max()))) + 1
    torch.manual_seed(seed)
    model = Classifier(encoder, n_cls)
    cfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, min_lr=lr * 0.01, warmup_epochs=1,
                      weight_decay=weight_decay, seed=seed, progress=False, log_every=0, device=device)
    res = fit(model, LabeledImages(images, labels, augment), lambda m, b: F.cross_entropy(m(b[0]), b[1]), cfg)
    out = {"train_loss": res["history"][-1]["train_loss"] if res["history"] else float("nan"),
           "steps": res["steps"], "model": model}
    if test is not None:
        out["acc"] = 100.0 * evaluate_accuracy(model, test[0].float(), test[1].long(), batch_size=256,
                                               preprocess=normalize_batch)
    return out
