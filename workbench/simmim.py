"""SimMIM: masked image modelling with raw-pixel regression.

Paper: Z. Xie, Z. Zhang, Y. Cao, Y. Lin, J. Bao, Z. Yao, Q. Dai, H. Hu,
"SimMIM: A Simple Framework for Masked Image Modeling", CVPR 2022.

What this module implements (names as in the paper and the official code):

* Random masking with large mask patches (``MaskGenerator``): an image of ``S`` pixels is cut into
  ``(S / P_mask)^2`` mask patches; ``ceil(r * n)`` of them are drawn uniformly without replacement and the
  mask-patch grid is repeated ``P_mask / P_model`` times along both axes, giving a token-level 0/1 mask
  (1 = masked). ``square_mask`` (a central square) and ``blockwise_mask`` (BEiT-style random blocks) are
  the other strategies the paper compares.
* AvgDist (``avg_dist``): for a pixel-level mask ``M``,
  ``AvgDist = mean_{p : M(p) = 1} min_{q : M(q) = 0} ||p - q||_2`` — the exact Euclidean distance transform.
* The model (``SimMIM``): encoder ``f`` with a learnable mask token blended after patch embedding,
  ``z_i = (1 - m_i) e_i + m_i t`` ; a one-layer prediction head
  ``y = PixelShuffle_s(W z)`` with ``W`` a 1x1 convolution to ``s^2 * 3`` channels (``s`` = encoder stride);
* the loss on masked pixels only, normalised as the official code:
  ``L = sum(|x - y| * M) / (sum(M) + 1e-5) / C`` (L1; the L2 and smooth-L1 ablations use the same mask
  normalisation). Optional local target normalisation replaces ``x`` by ``(x - mu_w) / sqrt(var_w + 1e-6)``
  with mean/variance over a ``w x w`` window (unbiased variance, as in the SwinV2 SimMIM recipe).

Also: ``reconstruct`` (one call used by the notebook and the app), official checkpoint key mapping
(``encoder.*``, ``decoder.0.*``, the ``rpe_mlp`` spelling of the SwinV2 CPB MLP), layer-wise lr decay
groups for fine-tuning, and the pre-training / fine-tuning loops built on ``workbench.train.fit``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench.data.transforms import denormalize, normalize, to_tensor
from workbench.models import create_model

STRATEGIES = ("random", "square", "blockwise")
LOSSES = ("l1", "l2", "smooth_l1")
HEADS = ("linear", "mlp2")
BUFFER_SUFFIXES = ("relative_position_index", "relative_coords_table", "attn_mask")


# ----------------------------------------------------------------------------------------------------------
# masking
# ----------------------------------------------------------------------------------------------------------
def _rng(seed: int | None = None, rng: np.random.Generator | None = None) -> np.random.Generator:
    if rng is not None:
        if not isinstance(rng, np.random.Generator):
            raise ValueError("rng must be a numpy.random.Generator")
        return rng
    return np.random.default_rng(seed)


def _check_ratio(mask_ratio: float) -> float:
    try:
        r = float(mask_ratio)
    except (TypeError, ValueError):
        raise ValueError(f"mask ratio must be a number in (0, 1), got {mask_ratio!r}") from None
    if not math.isfinite(r) or not 0.0 < r < 1.0:
        raise ValueError(f"mask ratio must lie strictly between 0 and 1, got {mask_ratio!r}")
    return r


def _check_sizes(input_size: int, mask_patch_size: int, model_patch_size: int) -> None:
    for name, v in (("input_size", input_size), ("mask_patch_size", mask_patch_size),
                    ("model_patch_size", model_patch_size)):
        if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v <= 0:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if input_size % mask_patch_size:
        raise ValueError(f"input size {input_size} is not a multiple of the mask patch size {mask_patch_size}")
    if mask_patch_size % model_patch_size:
        raise ValueError(f"mask patch size {mask_patch_size} is not a multiple of the model patch size "
                         f"{model_patch_size}")


class MaskGenerator:
    """The official SimMIM random masking, token-level output (1 = masked).

    ``mask_count = ceil(token_count * mask_ratio)`` is computed in floating point exactly as the official
    ``int(np.ceil(self.token_count * self.mask_ratio))`` (so e.g. 10 x 0.3 = 3.0000000000000004 gives 4).
    """

    def __init__(self, input_size: int = 192, mask_patch_size: int = 32, model_patch_size: int = 4,
                 mask_ratio: float = 0.6):
        _check_sizes(input_size, mask_patch_size, model_patch_size)
        self.input_size = int(input_size)
        self.mask_patch_size = int(mask_patch_size)
        self.model_patch_size = int(model_patch_size)
        self.mask_ratio = _check_ratio(mask_ratio)
        self.rand_size = self.input_size // self.mask_patch_size
        self.scale = self.mask_patch_size // self.model_patch_size
        self.token_count = self.rand_size ** 2
        self.mask_count = int(np.ceil(self.token_count * self.mask_ratio))

    @property
    def token_grid(self) -> int:
        return self.rand_size * self.scale

    def coarse(self, seed: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        """The (rand_size, rand_size) mask-patch grid before repetition."""
        g = _rng(seed, rng)
        idx = g.permutation(self.token_count)[: self.mask_count]
        m = np.zeros(self.token_count, dtype=np.int64)
        m[idx] = 1
        return m.reshape(self.rand_size, self.rand_size)

    def __call__(self, seed: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
        m = self.coarse(seed, rng)
        return m.repeat(self.scale, axis=0).repeat(self.scale, axis=1)

    def batch(self, n: int, rng: np.random.Generator | None = None, seed: int | None = None) -> torch.Tensor:
        g = _rng(seed, rng)
        return torch.from_numpy(np.stack([self(rng=g) for _ in range(n)]))

    def __repr__(self) -> str:
        return (f"MaskGenerator(input_size={self.input_size}, mask_patch_size={self.mask_patch_size}, "
                f"model_patch_size={self.model_patch_size}, mask_ratio={self.mask_ratio})")


def square_mask(input_size: int = 192, model_patch_size: int = 4, mask_ratio: float = 0.6) -> np.ndarray:
    """Central square masking: a centred square of ``round(sqrt(r) * G)`` tokens per side (G tokens a side)."""
    _check_sizes(input_size, model_patch_size, model_patch_size)
    r = _check_ratio(mask_ratio)
    grid = input_size // model_patch_size
    side = min(grid - 1, max(1, int(round(math.sqrt(r) * grid))))
    top = (grid - side) // 2
    m = np.zeros((grid, grid), dtype=np.int64)
    m[top:top + side, top:top + side] = 1
    return m


def blockwise_mask(input_size: int = 192, mask_patch_size: int = 16, model_patch_size: int = 4,
                   mask_ratio: float = 0.4, seed: int | None = None, rng: np.random.Generator | None = None,
                   min_num_patches: int | None = None, max_num_patches: int | None = None,
                   min_aspect: float = 0.3, max_attempts: int = 10) -> np.ndarray:
    """BEiT-style block-wise masking on the grid of ``mask_patch_size`` units, repeated to tokens.

    Follows BEiT's ``MaskingGenerator`` line by line: until ``ceil(r * n)`` units are masked, up to
    ``max_attempts`` blocks are drawn with area ~ U(min_num_patches, remaining) (Python's ``uniform``
    accepts a reversed range) and log-uniform aspect in [min_aspect, 1/min_aspect]; a block is kept only
    when ``h < n`` and ``w < n`` (strictly: a block never spans the whole grid) and it adds between 1 and
    ``remaining`` new units; the round ends at the first kept block, and the mask stops early when a
    round keeps none (so it can undershoot, as BEiT's does). ``min_num_patches`` defaults to BEiT's 16 of
    196 scaled to this grid; ``max_num_patches`` caps a block's area (BEiT: the target count).
    Only the random number generator differs (numpy instead of Python's ``random``).
    """
    _check_sizes(input_size, mask_patch_size, model_patch_size)
    r = _check_ratio(mask_ratio)
    g = _rng(seed, rng)
    n = input_size // mask_patch_size
    total = n * n
    target = int(np.ceil(total * r))
    if min_num_patches is None:
        min_num_patches = max(1, int(round(16 / 196 * total)))
    if max_num_patches is None:
        max_num_patches = target
    log_aspect = (math.log(min_aspect), math.log(1.0 / min_aspect))
    m = np.zeros((n, n), dtype=np.int64)
    count = 0
    while count < target:
        remaining = min(target - count, max_num_patches)
        delta = 0
        for _ in range(max_attempts):
            area = min_num_patches + (remaining - min_num_patches) * g.random()  # random.uniform's formula
            aspect = math.exp(log_aspect[0] + (log_aspect[1] - log_aspect[0]) * g.random())
            h = int(round(math.sqrt(area * aspect)))
            w = int(round(math.sqrt(area / aspect)))
            if h < n and w < n:
                top = int(g.integers(0, n - h + 1))
                left = int(g.integers(0, n - w + 1))
                new = h * w - int(m[top:top + h, left:left + w].sum())
                if 0 < new <= remaining:
                    m[top:top + h, left:left + w] = 1
                    delta = new
                    break
        if delta == 0:
            break
        count += delta
    s = mask_patch_size // model_patch_size
    return m.repeat(s, axis=0).repeat(s, axis=1)


def make_mask(strategy: str = "random", input_size: int = 192, mask_patch_size: int = 32,
              model_patch_size: int = 4, mask_ratio: float = 0.6, seed: int | None = 0) -> np.ndarray:
    """One token-level mask from any of the three strategies (the app's and notebook's single entry)."""
    if strategy == "random":
        return MaskGenerator(input_size, mask_patch_size, model_patch_size, mask_ratio)(seed=seed)
    if strategy == "square":
        _check_sizes(input_size, mask_patch_size, model_patch_size)
        return square_mask(input_size, model_patch_size, mask_ratio)
    if strategy == "blockwise":
        return blockwise_mask(input_size, mask_patch_size, model_patch_size, mask_ratio, seed=seed)
    raise ValueError(f"unknown masking strategy {strategy!r}; choose one of {STRATEGIES}")


def upsample_mask(mask, scale: int):
    """Repeat a token mask ``scale`` times along its last two axes (numpy array or torch tensor)."""
    if not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale!r}")
    if isinstance(mask, torch.Tensor):
        if mask.dim() < 2:
            raise ValueError("mask must have at least two dimensions")
        return mask.repeat_interleave(scale, -2).repeat_interleave(scale, -1)
    mask = np.asarray(mask)
    if mask.ndim < 2:
        raise ValueError("mask must have at least two dimensions")
    return mask.repeat(scale, axis=-2).repeat(scale, axis=-1)


def avg_dist(mask) -> float:
    """AvgDist: mean Euclidean distance from each masked pixel (1) to its nearest visible pixel (0).

    ``mask`` is a 2-D 0/1 array at pixel resolution. No masked pixel gives 0.0; no visible pixel gives
    ``inf`` (the distance to an empty set).
    """
    from scipy.ndimage import distance_transform_edt

    m = mask.detach().cpu().numpy() if isinstance(mask, torch.Tensor) else np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"avg_dist expects a 2-D mask, got shape {m.shape}")
    if m.size and not np.isin(m, (0, 1)).all():
        raise ValueError("avg_dist expects a 0/1 mask")
    m = m.astype(bool)
    if not m.any():
        return 0.0
    if m.all():
        return math.inf
    return float(distance_transform_edt(m)[m].mean())


def expected_avg_dist(input_size: int, mask_patch_size: int, mask_ratio: float, model_patch_size: int = 4,
                      strategy: str = "random", draws: int = 8, seed: int = 0) -> float:
    """AvgDist of a strategy averaged over ``draws`` masks (pixel resolution)."""
    vals = [avg_dist(upsample_mask(make_mask(strategy, input_size, mask_patch_size, model_patch_size,
                                             mask_ratio, seed=seed + i), model_patch_size))
            for i in range(draws)]
    return float(np.mean(vals))


# ----------------------------------------------------------------------------------------------------------
# loss, targets, head
# ----------------------------------------------------------------------------------------------------------
def _pixel_mask(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    if mask.dim() == 3:
        mask = mask.unsqueeze(1)
    if mask.dim() != 4 or mask.shape[1] != 1:
        raise ValueError(f"mask must be (B, H, W) or (B, 1, H, W), got {tuple(mask.shape)}")
    if mask.shape[-2:] != like.shape[-2:]:
        raise ValueError(f"mask {tuple(mask.shape[-2:])} and image {tuple(like.shape[-2:])} sizes differ")
    return mask.to(like.dtype)


def masked_loss(x: torch.Tensor, x_rec: torch.Tensor, mask: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """``sum(d(x, x_rec) * M) / (sum(M) + 1e-5) / C`` with d = L1 (official), L2 or smooth-L1 (beta 1).

    ``mask`` is at pixel resolution, (B, H, W) or (B, 1, H, W), 1 = masked.
    """
    if x.shape != x_rec.shape:
        raise ValueError(f"target {tuple(x.shape)} and reconstruction {tuple(x_rec.shape)} shapes differ")
    m = _pixel_mask(mask, x)
    if kind == "l1":
        d = F.l1_loss(x_rec, x, reduction="none")
    elif kind == "l2":
        d = F.mse_loss(x_rec, x, reduction="none")
    elif kind == "smooth_l1":
        d = F.smooth_l1_loss(x_rec, x, reduction="none", beta=1.0)
    else:
        raise ValueError(f"unknown loss {kind!r}; choose one of {LOSSES}")
    return (d * m).sum() / (m.sum() + 1e-5) / x.shape[1]


def local_stats(x: torch.Tensor, window: int = 47) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and unbiased variance of each pixel's ``window x window`` neighbourhood (zero padding not
    counted), per channel — the statistics of the SwinV2 SimMIM local target normalisation."""
    if window < 3 or window % 2 == 0:
        raise ValueError(f"the normalisation window must be an odd size >= 3, got {window}")
    pad = window // 2
    mean = F.avg_pool2d(x, window, stride=1, padding=pad, count_include_pad=False)
    sq = F.avg_pool2d(x * x, window, stride=1, padding=pad, count_include_pad=False)
    count = F.avg_pool2d(torch.ones_like(x[:, :1]), window, stride=1, padding=pad,
                         count_include_pad=True) * window * window
    var = ((sq - mean * mean) * (count / (count - 1))).clamp(min=0.0)
    return mean, var


def local_norm_targets(x: torch.Tensor, window: int = 47) -> torch.Tensor:
    """Normalise each pixel by the mean and unbiased variance of its ``window x window`` neighbourhood
    (zero padding not counted), as the SwinV2 SimMIM recipe does: ``(x - mu) / sqrt(var + 1e-6)``."""
    mean, var = local_stats(x, window)
    return (x - mean) / (var + 1e-6).sqrt()


def build_head(in_features: int, stride: int, out_chans: int = 3, kind: str = "linear",
               hidden: int = 256) -> nn.Sequential:
    """The prediction head. ``linear``: Conv1x1(C -> s^2 * out) + PixelShuffle(s) (official ``decoder``);
    ``mlp2``: Conv1x1(C -> hidden) + GELU + Conv1x1(hidden -> s^2 * out) + PixelShuffle(s)."""
    n = stride * stride * out_chans
    if kind == "linear":
        return nn.Sequential(nn.Conv2d(in_features, n, 1), nn.PixelShuffle(stride))
    if kind == "mlp2":
        return nn.Sequential(nn.Conv2d(in_features, hidden, 1), nn.GELU(), nn.Conv2d(hidden, n, 1),
                             nn.PixelShuffle(stride))
    raise ValueError(f"unknown head {kind!r}; choose one of {HEADS}")


@dataclass
class SimMIMConfig:
    loss: str = "l1"
    head: str = "linear"
    head_hidden: int = 256
    norm_target_window: int | None = None  # e.g. 47 at 192 px; None = raw (normalised) pixels

    def __post_init__(self):
        if self.loss not in LOSSES:
            raise ValueError(f"unknown loss {self.loss!r}; choose one of {LOSSES}")
        if self.head not in HEADS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {HEADS}")


class SimMIM(nn.Module):
    """Encoder (with a mask token) + prediction head; ``forward(x, mask)`` returns the loss.

    ``x`` is the (ImageNet-normalised) image batch, ``mask`` the token mask (B, H/patch, W/patch).
    The encoder follows the backbone contract: ``forward_features(x, mask)`` blends its ``mask_token`` and
    returns (B, num_features, H/stride, W/stride); attributes ``encoder_stride``, ``patch_size``.
    """

    def __init__(self, encoder: nn.Module, cfg: SimMIMConfig | None = None):
        super().__init__()
        self.cfg = cfg or SimMIMConfig()
        if getattr(encoder, "mask_token", None) is None:
            raise ValueError("the encoder has no mask_token: create it with mask_token=True")
        self.encoder = encoder
        self.encoder_stride = int(encoder.encoder_stride)
        self.patch_size = int(encoder.patch_size)
        self.in_chans = int(getattr(encoder, "in_chans", 3))
        self.decoder = build_head(int(encoder.num_features), self.encoder_stride, self.in_chans,
                                  self.cfg.head, self.cfg.head_hidden)

    def check_inputs(self, x: torch.Tensor, mask: torch.Tensor) -> None:
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected images (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        H, W = x.shape[-2:]
        want = (x.shape[0], H // self.patch_size, W // self.patch_size)
        if tuple(mask.shape) != want:
            raise ValueError(f"token mask must have shape {want}, got {tuple(mask.shape)}")

    def predict(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, mask)
        z = self.encoder.forward_features(x, mask.to(x.dtype))
        return self.decoder(z)

    def target(self, x: torch.Tensor) -> torch.Tensor:
        w = self.cfg.norm_target_window
        return x if w is None else local_norm_targets(x, w)

    def loss(self, x: torch.Tensor, x_rec: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        m = upsample_mask(mask, self.patch_size)
        return masked_loss(self.target(x), x_rec, m, self.cfg.loss)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.loss(x, self.predict(x, mask), mask)

    def no_weight_decay(self) -> set[str]:
        nwd = getattr(self.encoder, "no_weight_decay", None)
        names = set(nwd()) if callable(nwd) else set()
        return {"encoder." + n for n in names} | {"encoder.mask_token"}


def build_simmim(name: str = "swinv2_lite_window4_64", cfg: SimMIMConfig | None = None,
                 **overrides) -> SimMIM:
    """A SimMIM model around a backbone of ``workbench.swin_v2`` / ``workbench.vit`` by name."""
    enc = create_model(name, mask_token=True, num_classes=0, **overrides)
    return SimMIM(enc, cfg)


# ----------------------------------------------------------------------------------------------------------
# official checkpoint keys
# ----------------------------------------------------------------------------------------------------------
def convert_official_state_dict(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Map an official SimMIM checkpoint (``{"model": ...}`` or a bare state dict) to our key names:
    strips ``module.``, renames the SwinV2 ``rpe_mlp`` to ``cpb_mlp`` and drops the derived buffers
    (``relative_position_index``, ``relative_coords_table``, ``attn_mask``) that the model rebuilds."""
    if not isinstance(sd, dict):
        raise ValueError("a checkpoint state dict must be a dict of tensors")
    if "model" in sd and isinstance(sd["model"], dict):
        sd = sd["model"]
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if not isinstance(v, torch.Tensor):
            continue
        if k.startswith("module."):
            k = k[len("module."):]
        k = k.replace(".rpe_mlp.", ".cpb_mlp.")
        if k.rsplit(".", 1)[-1] in BUFFER_SUFFIXES:
            continue
        out[k] = v
    return out


def to_official_state_dict(model: nn.Module, rpe_mlp: bool = False) -> dict[str, dict[str, torch.Tensor]]:
    """Our model's weights under the official layout ``{"model": {encoder.*, decoder.0.*}}``
    (``rpe_mlp=True`` writes the CPB MLP under the alternative ``rpe_mlp`` name)."""
    sd = {}
    for k, v in model.state_dict().items():
        if rpe_mlp:
            k = k.replace(".cpb_mlp.", ".rpe_mlp.")
        sd[k] = v.detach().clone()
    return {"model": sd}


def load_official(model: nn.Module, sd: dict[str, Any]) -> nn.Module:
    """Load an official-format checkpoint strictly; derived buffers missing from it are kept from ``model``."""
    conv = convert_official_state_dict(sd)
    own = model.state_dict()
    for k, v in own.items():
        if k not in conv and k.rsplit(".", 1)[-1] in BUFFER_SUFFIXES:
            conv[k] = v
    missing = sorted(set(own) - set(conv))
    unexpected = sorted(set(conv) - set(own))
    shapes = sorted(k for k in set(own) & set(conv) if own[k].shape != conv[k].shape)
    if missing or unexpected or shapes:
        raise ValueError(f"checkpoint does not match the model: missing {missing[:8]}, unexpected "
                         f"{unexpected[:8]}, shape mismatch {shapes[:8]}")
    model.load_state_dict(conv, strict=True)
    return model


def encoder_state_dict(sd: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The encoder weights of a SimMIM checkpoint, ready for a classifier: ``encoder.`` stripped, the
    mask token and the decoder dropped (what the official fine-tuning loader keeps)."""
    conv = convert_official_state_dict(sd)
    return {k[len("encoder."):]: v for k, v in conv.items()
            if k.startswith("encoder.") and k != "encoder.mask_token"}


def geometric_positions(src_size: int, dst_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Source and target coordinates of the official fine-tuning remap (``remap_pretrained_keys_*``).

    The ``src_size`` relative offsets of a pre-trained table are placed at geometrically spaced
    coordinates ``0, ±1, ±(1 + q), ±(1 + q + q^2), …`` where ``q`` is found by bisection in [1.01, 1.5]
    so that the outermost coordinate reaches ``dst_size // 2``; the target offsets are the integers
    ``-dst_size // 2 .. dst_size // 2``."""
    def geometric_sum(r: float, n: int) -> float:
        return (1.0 - r ** n) / (1.0 - r)

    lo, hi = 1.01, 1.5
    while hi - lo > 1e-6:
        q = (lo + hi) / 2.0
        if geometric_sum(q, src_size // 2) > dst_size // 2:
            hi = q
        else:
            lo = q
    dis, cur = [], 1.0
    for i in range(src_size // 2):
        dis.append(cur)
        cur += q ** (i + 1)
    x = np.array([-d for d in reversed(dis)] + [0.0] + dis)
    t = dst_size // 2
    return x, np.arange(-t, t + 0.1, 1.0)


def resize_relative_position_table(table: torch.Tensor, dst_rows: int, extra_tokens: int = 0) -> torch.Tensor:
    """Resize a ((2W-1)^2 [+ extra], heads) relative-position bias table to ``dst_rows`` rows the way the
    official SimMIM fine-tuning loader does: bicubic spline interpolation (``scipy`` ``interp2d(kind=
    'cubic')``, i.e. an interpolating not-a-knot tensor spline) from the geometric source coordinates of
    :func:`geometric_positions` to the integer target offsets, per head; the ``extra_tokens`` last rows
    (ViT: cls->token, token->cls, cls->cls) are kept as they are."""
    from scipy.interpolate import RectBivariateSpline

    if table.ndim != 2:
        raise ValueError(f"a relative position table is (rows, heads), got shape {tuple(table.shape)}")
    src_rows, heads = table.shape
    src = int(round((src_rows - extra_tokens) ** 0.5))
    dst = int(round((dst_rows - extra_tokens) ** 0.5))
    if src * src != src_rows - extra_tokens or dst * dst != dst_rows - extra_tokens:
        raise ValueError(f"cannot resize a {src_rows}-row table to {dst_rows} rows: not square grids")
    if src == dst:
        return table.clone()
    body, extra = table[:src_rows - extra_tokens], table[src_rows - extra_tokens:]
    x, dx = geometric_positions(src, dst)
    z = body.detach().double().cpu().numpy()
    out = []
    for h in range(heads):
        # interp2d(x, y, z)(dx, dy) == RectBivariateSpline(y, x, z)(dy, dx) with cubic splines and s=0
        spline = RectBivariateSpline(x, x, z[:, h].reshape(src, src), kx=3, ky=3, s=0)
        out.append(torch.from_numpy(spline(dx, dx)).reshape(-1, 1))
    new = torch.cat(out, dim=1).to(table.dtype)
    return torch.cat([new, extra.to(table.dtype)], dim=0)


def remap_for_finetune(classifier: nn.Module, enc: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The official ``remap_pretrained_keys_swin`` / ``remap_pretrained_keys_vit`` on encoder weights:

    * a shared ViT relative position bias (``rel_pos_bias.relative_position_bias_table``) is copied into
      every block's own table when the classifier has per-block tables (pre-training shares one table,
      fine-tuning gives each block a copy);
    * every relative position table whose size differs from the classifier's is resized by
      :func:`resize_relative_position_table` (SimMIM pre-trains Swin at window 6 / 192 px and fine-tunes
      at window 7 / 224 px); ViT tables keep their 3 class-token rows;
    * derived buffers (index, coordinate table, attention mask) always come from the classifier.
    Swin V2 has no table to resize (its continuous position bias MLP transfers as it is)."""
    enc = {k: v for k, v in enc.items() if k.rsplit(".", 1)[-1] not in BUFFER_SUFFIXES}
    own = classifier.state_dict()
    shared = "rel_pos_bias.relative_position_bias_table"
    if shared in enc and shared not in own:
        table = enc.pop(shared)
        for k in own:
            if k.startswith("blocks.") and k.endswith(".attn.relative_position_bias_table"):
                enc[k] = table.clone()
    is_vit = any(k.startswith("blocks.") for k in own)
    for k, v in list(enc.items()):
        if k.endswith("relative_position_bias_table") and k in own and own[k].shape != v.shape:
            if own[k].shape[1] != v.shape[1]:
                raise ValueError(f"{k}: {v.shape[1]} heads in the checkpoint, {own[k].shape[1]} in the model")
            enc[k] = resize_relative_position_table(v, own[k].shape[0], extra_tokens=3 if is_vit else 0)
    return enc


def load_encoder_for_finetune(classifier: nn.Module, sd: dict[str, Any]) -> list[str]:
    """Load SimMIM encoder weights into a classifier as the official fine-tuning does (see
    :func:`remap_for_finetune`); only the classification head (and a mean-pooling ``fc_norm``) may stay
    missing. Returns the missing keys."""
    enc = remap_for_finetune(classifier, encoder_state_dict(sd))
    own = classifier.state_dict()
    for k, v in own.items():
        if k not in enc and k.rsplit(".", 1)[-1] in BUFFER_SUFFIXES:
            enc[k] = v
    enc.pop("mask_token", None)
    missing = sorted(set(own) - set(enc))
    bad = [k for k in missing if not k.startswith(("head", "fc_norm"))]
    unexpected = sorted(set(enc) - set(own))
    if unexpected == ["norm.bias", "norm.weight"] and getattr(classifier, "fc_norm", None) is not None:
        unexpected = []   # mean pooling: the pre-training norm is unused (the official load is non-strict)
        enc.pop("norm.weight"), enc.pop("norm.bias")
    shapes = sorted(k for k in set(own) & set(enc) if own[k].shape != enc[k].shape)
    if bad or unexpected or shapes:
        raise ValueError(f"encoder weights do not fit the classifier: missing {bad[:8]}, unexpected "
                         f"{unexpected[:8]}, shape mismatch {shapes[:8]}")
    classifier.load_state_dict(enc, strict=False)
    return missing


def layer_decay_param_groups(model: nn.Module, weight_decay: float, layer_decay: float,
                             skip: set[str] | tuple = ()) -> list[dict]:
    """Parameter groups with ``lr_scale = decay ** (max_id - layer_id)`` and no weight decay for 1-D
    parameters, biases and the model's ``no_weight_decay`` names / keywords.

    The backbones number layers ``0 .. num_layers - 1`` (patch embedding 0, one id per block, the head and
    final norm ``num_layers - 1``), so ``max_id = num_layers - 1``; with the official ``num_layers`` =
    sum(depths) this is the official ``decay ** (num_layers + 1 - layer_id)``.
    """
    max_id = int(model.num_layers) - 1
    nwd = set(skip)
    if hasattr(model, "no_weight_decay"):
        nwd |= set(model.no_weight_decay())
    groups: dict[tuple[int, bool], dict] = {}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = p.ndim == 1 or name.endswith(".bias") or name in nwd or any(k in name for k in nwd)
        lid = int(model.get_layer_id(name))
        key = (lid, no_decay)
        if key not in groups:
            groups[key] = {"params": [], "names": [], "weight_decay": 0.0 if no_decay else weight_decay,
                           "lr_scale": layer_decay ** (max_id - lid)}
        groups[key]["params"].append(p)
        groups[key]["names"].append(name)
    return [groups[k] for k in sorted(groups)]


# ----------------------------------------------------------------------------------------------------------
# reconstruction (notebook + app)
# ----------------------------------------------------------------------------------------------------------
def image_to_tensor(image) -> torch.Tensor:
    """uint8 (H, W, 3) array or float tensor (3, H, W) in [0, 1] -> float tensor (3, H, W)."""
    if isinstance(image, torch.Tensor):
        t = image.detach().float()
        if t.dim() != 3 or t.shape[0] != 3:
            raise ValueError(f"expected an image tensor (3, H, W), got {tuple(t.shape)}")
    else:
        a = np.asarray(image)
        if a.ndim != 3 or a.shape[-1] != 3:
            raise ValueError(f"expected an RGB image (H, W, 3), got shape {a.shape}")
        t = to_tensor(a)
    if not torch.isfinite(t).all():
        raise ValueError("the image contains NaN or infinite values")
    if t.min() < 0 or t.max() > 1:
        raise ValueError("float images must lie in [0, 1]")
    return t.contiguous()


@dataclass
class Reconstruction:
    original: np.ndarray        # (H, W, 3) float in [0, 1]
    masked_input: np.ndarray    # masked pixels shown grey
    reconstruction: np.ndarray  # the prediction everywhere, in [0, 1]
    composite: np.ndarray       # visible pixels kept, masked ones predicted
    patch_error: np.ndarray     # (H/patch, W/patch) mean |target - prediction| (normalised units)
    token_mask: np.ndarray      # (H/patch, W/patch) 0/1
    loss: float                 # the model's training loss on this image and mask
    avg_dist: float             # AvgDist of the mask at pixel resolution
    extra: dict = field(default_factory=dict)


@torch.no_grad()
def reconstruct(model: SimMIM, image, mask) -> Reconstruction:
    """Run SimMIM on one image (uint8 (H,W,3) or float (3,H,W) in [0,1]) with a token mask (h, w)."""
    model.eval()
    img = image_to_tensor(image)
    H, W = img.shape[-2:]
    p = model.patch_size
    if H % model.encoder_stride or W % model.encoder_stride:
        raise ValueError(f"image size {H}x{W} must be a multiple of the encoder stride {model.encoder_stride}")
    m = torch.as_tensor(np.asarray(mask) if not isinstance(mask, torch.Tensor) else mask)
    if tuple(m.shape) != (H // p, W // p):
        raise ValueError(f"token mask must have shape {(H // p, W // p)}, got {tuple(m.shape)}")
    if not torch.isin(m, torch.tensor([0, 1], dtype=m.dtype)).all():
        raise ValueError("the mask must be 0/1")
    m = m.float()
    dev = next(model.parameters()).device
    x = normalize(img).unsqueeze(0).to(dev)
    mb = m.unsqueeze(0).to(dev)
    rec = model.predict(x, mb)
    target = model.target(x)
    loss = float(model.loss(x, rec, mb))
    w = model.cfg.norm_target_window
    if w is None:
        rec_px = denormalize(rec[0])
    else:  # undo the local normalisation with the same local statistics as the target (display only)
        mean, var = local_stats(x, w)
        rec_px = denormalize((rec * (var + 1e-6).sqrt() + mean)[0])
    rec_px = rec_px.clamp(0, 1).cpu()
    mpx = upsample_mask(m, p)
    comp = img * (1 - mpx) + rec_px * mpx
    masked_in = img * (1 - mpx) + 0.5 * mpx
    err = (target - rec).abs().mean(1, keepdim=True)  # (1,1,H,W)
    perr = F.avg_pool2d(err, p)[0, 0].cpu().numpy()
    hwc = lambda t: t.permute(1, 2, 0).numpy().astype(np.float32)  # noqa: E731
    return Reconstruction(hwc(img), hwc(masked_in), hwc(rec_px), hwc(comp), perr.astype(np.float32),
                          m.numpy().astype(np.int64), loss, avg_dist(mpx.numpy()))


# ----------------------------------------------------------------------------------------------------------
# pre-training and fine-tuning (on top of workbench.train.fit)
# ----------------------------------------------------------------------------------------------------------
def mim_loss_fn(mask_gen: MaskGenerator, seed: int = 0, strategy: str = "random") -> Callable:
    """``loss_fn(model, batch)`` for ``workbench.train.fit``: draws masks, normalises the images."""
    rng = np.random.default_rng(seed)

    def loss_fn(model, batch):
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        dev = next(model.parameters()).device
        x = normalize(x.to(dev))
        if strategy == "random":
            mask = mask_gen.batch(x.shape[0], rng=rng)
        else:
            mask = torch.from_numpy(np.stack([
                make_mask(strategy, mask_gen.input_size, mask_gen.mask_patch_size, mask_gen.model_patch_size,
                          mask_gen.mask_ratio, seed=int(rng.integers(2**31))) for _ in range(x.shape[0])]))
        return model(x, mask.to(dev))

    return loss_fn


def classification_loss_fn(label_smoothing: float = 0.1) -> Callable:
    def loss_fn(model, batch):
        x, y = batch
        dev = next(model.parameters()).device
        logits = model(normalize(x.to(dev)))
        loss = F.cross_entropy(logits, y.to(dev), label_smoothing=label_smoothing)
        acc = (logits.argmax(1) == y.to(dev)).float().mean().item()
        return loss, {"acc": acc}

    return loss_fn
