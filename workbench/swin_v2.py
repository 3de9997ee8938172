"""Swin Transformer V2 (and V1) backbones.

Paper: Z. Liu et al., "Swin Transformer V2: Scaling Up Capacity and Resolution", CVPR 2022
(and Z. Liu et al., "Swin Transformer: Hierarchical Vision Transformer using Shifted Windows",
ICCV 2021, for the V1 switches).

What the code implements (one code path; switches in :class:`SwinConfig` select V1, V2 or the
paper's ablations):

* Residual post-normalisation (``norm="post"``, V2)::

      x = x + DropPath(LN(Attn(x)));   x = x + DropPath(LN(MLP(x)))

  versus pre-normalisation (``norm="pre"``, V1): ``x = x + DropPath(Attn(LN(x)))``.
  The post-norm LayerNorms start with weight = bias = 0 (every block is the identity at init).
* Scaled cosine attention (``attn="cosine"``, V2)::

      Sim(q_i, k_j) = cos(q_i, k_j) / tau_h + B_ij,   tau_h > 0.01 learnable per head

  parametrised as the official code does: ``logit_scale = log(1 / tau_h)``, initialised to log 10, used as
  ``exp(min(logit_scale, log 100))`` (the clamp value is float32 ``log(100)``, as the official
  ``torch.log(torch.tensor(1 / 0.01))``, held as a Python float so it works on any device);

  versus scaled dot product (``attn="dot"``, V1): ``q_i . k_j / sqrt(d) + B_ij``.
* Log-spaced continuous position bias (``bias="cpb_log"``, V2)::

      dx_hat = sign(dx) * log2(1 + |8 dx / (M_pre - 1)|) / log2(8),    B = 16 * sigmoid(G(dx_hat, dy_hat))

  with G a 2-512-nH MLP (``cpb_mlp``) and M_pre the pretrained window (or the window itself);
  ``bias="cpb_linear"`` uses dx / (M_pre - 1) (the paper's linear-spaced ablation) and
  ``bias="table"`` the V1 parametric table ``B = Bhat[dx + M - 1, dy + M - 1]``.
* Shifted windows (cyclic shift by M/2, -100 masks across shifted regions), patch merging
  (V2: Linear(4C->2C) then LN(2C); V1: LN(4C) then the linear) and stochastic depth.

Attention runs through :func:`torch.nn.functional.scaled_dot_product_attention` (the logit scale is
folded into q, bias + shift mask go in as the additive mask) or an explicit reference path
(``use_sdpa=False``); the two agree to float tolerance (tests/test_swin_v2.py).

State-dict keys are the official ones (``layers.{i}.blocks.{j}.attn.cpb_mlp.0.weight``, downsample at
the end of stages 0-2, ``head.weight``). Index tables, coordinate tables and shift masks are
non-persistent buffers, rebuilt from the config, so a state dict trained at one image size and
window loads into a model built for another (``convert_state_dict`` also handles V1 tables,
timm-format and ``rpe_mlp`` checkpoints).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, fields, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from workbench import inspect
from workbench.data.transforms import to_tensor
from workbench.layers import DropPath, Mlp

__all__ = [
    "SwinConfig", "SwinTransformerV2", "WindowAttention", "SwinBlock", "PatchMerging", "PatchEmbed",
    "CONFIGS", "build", "convert_state_dict", "relative_coords_table",
    "relative_position_index", "shift_attention_mask", "window_partition", "window_reverse",
    "cpb_bias", "interpolate_bias_table", "activation_amplitudes", "attention_logits",
    "transfer_state_dict", "V1_SWITCHES", "V2_SWITCHES", "bias_over_offsets", "table_over_offsets",
    "query_bias", "predict_topk",
]

V2_SWITCHES = dict(attn="cosine", norm="post", bias="cpb_log", merge="v2")
V1_SWITCHES = dict(attn="dot", norm="pre", bias="table", merge="v1")
# clamp of the learnable logit scale: the float32 value of log(100), as the official code's tensor, held as a
# Python float (a tensor constant breaks across devices, official issue #237)
_LOGIT_MAX = float(torch.log(torch.tensor(1.0 / 0.01)))


@dataclass
class SwinConfig:
    img_size: int = 256
    patch_size: int = 4
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 96
    depths: tuple = (2, 2, 6, 2)
    num_heads: tuple = (3, 6, 12, 24)
    window_size: int = 8
    pretrained_window_sizes: tuple = (0, 0, 0, 0)
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.2
    ape: bool = False
    patch_norm: bool = True
    mask_token: bool = False
    # switches: V2 defaults; V1_SWITCHES gives Swin V1; mixes give the paper's ablations
    attn: str = "cosine"      # "cosine" | "dot"
    norm: str = "post"        # "post" (residual post-norm) | "pre"
    bias: str = "cpb_log"     # "cpb_log" | "cpb_linear" | "table" | "none"
    merge: str = "v2"         # "v2" | "v1"
    cpb_hidden: int = 512
    use_sdpa: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self):
        self.depths = tuple(int(d) for d in self.depths)
        self.num_heads = tuple(int(h) for h in self.num_heads)
        pws = self.pretrained_window_sizes
        if isinstance(pws, int):
            pws = (pws,) * len(self.depths)
        self.pretrained_window_sizes = tuple(int(p) for p in pws)
        choices = dict(attn=("cosine", "dot"), norm=("post", "pre"),
                       bias=("cpb_log", "cpb_linear", "table", "none"), merge=("v2", "v1"))
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"{name}={getattr(self, name)!r} is not one of {allowed}")
        if not (len(self.depths) == len(self.num_heads) == len(self.pretrained_window_sizes)):
            raise ValueError("depths, num_heads and pretrained_window_sizes need one entry per stage; got "
                             f"{self.depths}, {self.num_heads}, {self.pretrained_window_sizes}")
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "window_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.img_size > 4096:
            raise ValueError(f"img_size={self.img_size} is absurdly large for this backbone (max 4096)")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")
        for i, h in enumerate(self.num_heads):
            dim = self.embed_dim * 2 ** i
            if dim % h:
                raise ValueError(f"stage {i}: width {dim} is not divisible by {h} heads")

    def stage_resolutions(self) -> list[int]:
        """Feature-map side of each stage; raises ValueError for sizes the model cannot tile."""
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}")
        res, out = self.img_size // self.patch_size, []
        for i in range(len(self.depths)):
            ws = min(self.window_size, res)
            if res % ws:
                raise ValueError(
                    f"img_size={self.img_size}: stage {i} has a {res}x{res} feature map, not divisible by the "
                    f"window {ws}; use an img_size that is a multiple of "
                    f"{self.patch_size * 2 ** (len(self.depths) - 1)} and of patch*window per stage")
            out.append(res)
            if i < len(self.depths) - 1:
                if res % 2:
                    raise ValueError(
                        f"img_size={self.img_size}: stage {i} has an odd {res}x{res} feature map, which patch "
                        f"merging cannot halve; use a multiple of {self.patch_size * 2 ** (len(self.depths) - 1)}")
                res //= 2
        return out


_TINY = dict(embed_dim=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24))
_SMALL = dict(embed_dim=96, depths=(2, 2, 18, 2), num_heads=(3, 6, 12, 24))
_BASE = dict(embed_dim=128, depths=(2, 2, 18, 2), num_heads=(4, 8, 16, 32))
_LITE = dict(embed_dim=32, depths=(2, 2, 2, 2), num_heads=(2, 4, 8, 16), num_classes=10)
CONFIGS: dict[str, SwinConfig] = {
    # official Swin V2 (ImageNet-1K, 256 px)
    "swinv2_tiny_window8_256": SwinConfig(img_size=256, window_size=8, drop_path_rate=0.2, **_TINY),
    "swinv2_tiny_window16_256": SwinConfig(img_size=256, window_size=16, drop_path_rate=0.2, **_TINY),
    "swinv2_small_window8_256": SwinConfig(img_size=256, window_size=8, drop_path_rate=0.3, **_SMALL),
    "swinv2_small_window16_256": SwinConfig(img_size=256, window_size=16, drop_path_rate=0.3, **_SMALL),
    "swinv2_base_window8_256": SwinConfig(img_size=256, window_size=8, drop_path_rate=0.5, **_BASE),
    "swinv2_base_window16_256": SwinConfig(img_size=256, window_size=16, drop_path_rate=0.5, **_BASE),
    "swinv2_base_window12to16_192to256": SwinConfig(img_size=256, window_size=16, drop_path_rate=0.2,
                                                    pretrained_window_sizes=(12, 12, 12, 6), **_BASE),
    "swinv2_base_window12to24_192to384": SwinConfig(img_size=384, window_size=24, drop_path_rate=0.2,
                                                    pretrained_window_sizes=(12, 12, 12, 6), **_BASE),
    # official Swin V1 (224 px, window 7)
    "swin_tiny_patch4_window7_224": SwinConfig(img_size=224, window_size=7, drop_path_rate=0.2, **_TINY, **V1_SWITCHES),
    "swin_small_patch4_window7_224": SwinConfig(img_size=224, window_size=7, drop_path_rate=0.3, **_SMALL,
                                                **V1_SWITCHES),
    "swin_base_patch4_window7_224": SwinConfig(img_size=224, window_size=7, drop_path_rate=0.5, **_BASE, **V1_SWITCHES),
    # laptop configs (~2.3M parameters with a 10-class head)
    "swinv2_lite_window4_64": SwinConfig(img_size=64, window_size=4, drop_path_rate=0.1, **_LITE),
    "swinv2_lite_window8_128": SwinConfig(img_size=128, window_size=8, drop_path_rate=0.1, **_LITE),
    "swin_lite_window4_64": SwinConfig(img_size=64, window_size=4, drop_path_rate=0.1, **_LITE, **V1_SWITCHES),
    # the studies' and the demo classifier's model (~0.6M parameters; 1 CPU thread trains it in minutes)
    "swinv2_micro_window4_64": SwinConfig(img_size=64, window_size=4, embed_dim=16, depths=(2, 2, 2, 2),
                                          num_heads=(1, 2, 4, 8), drop_path_rate=0.0, num_classes=10),
}


# --------------------------------------------------------------------------------------------------
# closed-form tables


def relative_position_index(window_size: int) -> torch.Tensor:
    """(M^2, M^2) int64: index of (dy + M - 1) * (2M - 1) + (dx + M - 1) for every token pair."""
    M = int(window_size)
    coords = torch.stack(torch.meshgrid(torch.arange(M), torch.arange(M), indexing="ij")).flatten(1)  # 2, M^2
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)  # M^2, M^2, 2
    return (rel[..., 0] + M - 1) * (2 * M - 1) + (rel[..., 1] + M - 1)


def relative_coords_table(window_size: int, pretrained_window_size: int = 0, mode: str = "log") -> torch.Tensor:
    """(1, 2M-1, 2M-1, 2) normalised offset coordinates fed to the CPB MLP.

    ``mode="log"``: sign(x) * log2(1 + |8 x / (P - 1)|) / log2(8) (V2); ``mode="linear"``: x / (P - 1),
    with P the pretrained window size if > 0, else the window itself.
    """
    M = int(window_size)
    r = torch.arange(-(M - 1), M, dtype=torch.float32)
    table = torch.stack(torch.meshgrid(r, r, indexing="ij"), dim=-1).unsqueeze(0)
    P = pretrained_window_size if pretrained_window_size > 0 else M
    if P > 1:
        table = table / (P - 1)
    if mode == "log":
        table = table * 8
        table = torch.sign(table) * torch.log2(table.abs() + 1.0) / math.log2(8)
    elif mode != "linear":
        raise ValueError(f"mode must be 'log' or 'linear', got {mode!r}")
    return table


def window_partition(x: torch.Tensor, ws: int) -> torch.Tensor:
    """(B, H, W, C) -> (B * H/ws * W/ws, ws, ws, C)."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, ws, ws, C)


def window_reverse(windows: torch.Tensor, ws: int, H: int, W: int) -> torch.Tensor:
    """Inverse of :func:`window_partition`."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C)
    return x.permute(0, 1, 3, 2, 4, 5).reshape(-1, H, W, C)


def shift_attention_mask(H: int, W: int, window_size: int, shift_size: int,
                         device=None, dtype=torch.float32) -> torch.Tensor | None:
    """(nW, M^2, M^2) additive mask: 0 within a shifted region, -100 across regions; None without shift."""
    if shift_size <= 0:
        return None
    img = torch.zeros(1, H, W, 1, device=device, dtype=dtype)
    cnt = 0
    for hs in (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None)):
        for wsl in (slice(0, -window_size), slice(-window_size, -shift_size), slice(-shift_size, None)):
            img[:, hs, wsl, :] = cnt
            cnt += 1
    mw = window_partition(img, window_size).view(-1, window_size * window_size)
    mask = mw.unsqueeze(1) - mw.unsqueeze(2)
    return mask.masked_fill(mask != 0, -100.0).masked_fill(mask == 0, 0.0)


def interpolate_bias_table(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """Resize a V1 table ((2M-1)^2, nH) to another window by bicubic interpolation (per head)."""
    L, nH = table.shape
    S = int(round(math.sqrt(L)))
    if S * S != L:
        raise ValueError(f"bias table with {L} rows is not square")
    T = 2 * int(window_size) - 1
    if S == T:
        return table.clone()
    grid = table.T.reshape(1, nH, S, S).float()
    out = F.interpolate(grid, size=(T, T), mode="bicubic", align_corners=False)
    return out.reshape(nH, T * T).T.contiguous().to(table.dtype)


# --------------------------------------------------------------------------------------------------
# modules


class WindowAttention(nn.Module):
    """Window multi-head self-attention with V2 (cosine, CPB) or V1 (dot, table) flavours.

    ``cfg`` supplies the switches (attn, bias, qkv_bias, dropouts, cpb_hidden, use_sdpa); the arguments
    the geometry of this block. Emits (:mod:`workbench.inspect`) ``logits`` — q·k before bias, mask and
    softmax, (B·nW, nH, N, N) — through the explicit path when a capture wants them.
    """

    def __init__(self, cfg: SwinConfig, dim: int, num_heads: int, window_size: int, pretrained_window_size: int = 0):
        super().__init__()
        attn, bias = cfg.attn, cfg.bias
        self.dim, self.window_size, self.num_heads = dim, int(window_size), num_heads
        self.pretrained_window_size = int(pretrained_window_size)
        self.attn_type, self.bias_type, self.use_sdpa = attn, bias, cfg.use_sdpa
        self.head_dim = dim // num_heads
        if attn == "cosine":
            self.logit_scale = nn.Parameter(torch.log(10 * torch.ones(num_heads, 1, 1)))
        else:
            self.scale = self.head_dim ** -0.5
        if bias in ("cpb_log", "cpb_linear"):
            self.cpb_mlp = nn.Sequential(nn.Linear(2, cfg.cpb_hidden, bias=True), nn.ReLU(inplace=True),
                                         nn.Linear(cfg.cpb_hidden, num_heads, bias=False))
            table = relative_coords_table(window_size, pretrained_window_size,
                                          "log" if bias == "cpb_log" else "linear")
            self.register_buffer("relative_coords_table", table, persistent=False)
        elif bias == "table":
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
            nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        if bias != "none":
            self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=False)
        if attn == "cosine":
            self.qkv = nn.Linear(dim, dim * 3, bias=False)
            if cfg.qkv_bias:
                self.q_bias = nn.Parameter(torch.zeros(dim))
                self.v_bias = nn.Parameter(torch.zeros(dim))
            else:
                self.q_bias = self.v_bias = None
        else:
            self.qkv = nn.Linear(dim, dim * 3, bias=cfg.qkv_bias)
        self.attn_drop = float(cfg.attn_drop_rate)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(cfg.drop_rate)

    def position_bias(self) -> torch.Tensor | None:
        """(nH, M^2, M^2) additive bias: 16*sigmoid(CPB) (V2), the gathered table (V1), or None."""
        N = self.window_size ** 2
        if self.bias_type in ("cpb_log", "cpb_linear"):
            table = self.cpb_mlp(self.relative_coords_table).view(-1, self.num_heads)
            b = table[self.relative_position_index.view(-1)].view(N, N, -1).permute(2, 0, 1)
            return 16 * torch.sigmoid(b)
        if self.bias_type == "table":
            b = self.relative_position_bias_table[self.relative_position_index.view(-1)]
            return b.view(N, N, -1).permute(2, 0, 1)
        return None

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x: (B*nW, N, C); mask: (nW, N, N) additive or None."""
        B_, N, C = x.shape
        if self.attn_type == "cosine":
            bias = None
            if self.q_bias is not None:
                bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
            qkv = F.linear(x, self.qkv.weight, bias)
        else:
            qkv = self.qkv(x)
        q, k, v = qkv.reshape(B_, N, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        if self.attn_type == "cosine":
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
            q = q * torch.clamp(self.logit_scale, max=_LOGIT_MAX).exp()   # fold the logit scale into q
        else:
            q = q * self.scale
        pos = self.position_bias()
        p_drop = self.attn_drop if self.training else 0.0
        if self.use_sdpa and not inspect.wants(self, "logits"):
            add = None if pos is None else pos.to(q.dtype).unsqueeze(0)                # 1, nH, N, N
            if mask is not None:
                nW = mask.shape[0]
                m = mask.to(q.dtype).unsqueeze(1)                                       # nW, 1, N, N
                add = m if add is None else add + m                                     # nW, nH, N, N
                add = add.expand(nW, self.num_heads, N, N).reshape(1, nW * self.num_heads, N, N)
                shape = (B_ // nW, nW * self.num_heads, N, self.head_dim)
                out = F.scaled_dot_product_attention(q.reshape(shape), k.reshape(shape), v.reshape(shape),
                                                     attn_mask=add, dropout_p=p_drop, scale=1.0)
                out = out.view(B_, self.num_heads, N, self.head_dim)
            else:
                out = F.scaled_dot_product_attention(q, k, v, attn_mask=add, dropout_p=p_drop, scale=1.0)
        else:
            attn = q @ k.transpose(-2, -1)
            inspect.emit(self, "logits", attn)
            if pos is not None:
                attn = attn + pos.unsqueeze(0)
            if mask is not None:
                nW = mask.shape[0]
                attn = attn.view(B_ // nW, nW, self.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
                attn = attn.view(-1, self.num_heads, N, N)
            attn = F.dropout(attn.softmax(dim=-1), p_drop, self.training)
            out = attn @ v
        x = out.transpose(1, 2).reshape(B_, N, C)
        return self.proj_drop(self.proj(x))


class SwinBlock(nn.Module):
    """One (shifted) window block; window and shift shrink when the feature map is no larger than the window.

    Block ``index`` of stage ``stage`` of ``cfg`` (odd blocks are shifted by half a window). Emits ``out``,
    the residual stream after the block (B, L, C).
    """

    def __init__(self, cfg: SwinConfig, stage: int, index: int, input_resolution: int, drop_path: float = 0.0):
        super().__init__()
        dim = cfg.embed_dim * 2 ** stage
        self.dim, self.input_resolution, self.num_heads = dim, int(input_resolution), cfg.num_heads[stage]
        self.window_size, self.norm_type = int(cfg.window_size), cfg.norm
        self.shift_size = 0 if index % 2 == 0 else cfg.window_size // 2
        if self.input_resolution <= self.window_size:
            self.shift_size, self.window_size = 0, self.input_resolution
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(cfg, dim, self.num_heads, self.window_size, cfg.pretrained_window_sizes[stage])
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate)
        R = self.input_resolution
        self.register_buffer("attn_mask", shift_attention_mask(R, R, self.window_size, self.shift_size),
                             persistent=False)

    def _mask(self, H, W, x):
        if self.shift_size == 0:
            return None
        if (H, W) == (self.input_resolution,) * 2:
            return self.attn_mask
        return shift_attention_mask(H, W, self.window_size, self.shift_size, device=x.device)

    def forward(self, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        H, W = hw
        B, L, C = x.shape
        ws, s = self.window_size, self.shift_size
        if L != H * W:
            raise ValueError(f"got {L} tokens for a {H}x{W} feature map")
        if H % ws or W % ws:
            raise ValueError(f"a {H}x{W} feature map cannot be tiled by windows of {ws}; "
                             "choose an input size whose stage maps are multiples of the window")
        shortcut = x
        if self.norm_type == "pre":
            x = self.norm1(x)
        x = x.view(B, H, W, C)
        if s > 0:
            x = torch.roll(x, shifts=(-s, -s), dims=(1, 2))
        win = window_partition(x, ws).view(-1, ws * ws, C)
        win = self.attn(win, self._mask(H, W, x))
        x = window_reverse(win.view(-1, ws, ws, C), ws, H, W)
        if s > 0:
            x = torch.roll(x, shifts=(s, s), dims=(1, 2))
        x = x.reshape(B, H * W, C)
        if self.norm_type == "post":
            x = shortcut + self.drop_path(self.norm1(x))
            x = x + self.drop_path(self.norm2(self.mlp(x)))
        else:
            x = shortcut + self.drop_path(x)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        inspect.emit(self, "out", x)
        return x


class PatchMerging(nn.Module):
    """2x2 neighbourhood concat (4C) -> 2C. V2: Linear then LN(2C); V1: LN(4C) then Linear."""

    def __init__(self, dim, version="v2"):
        super().__init__()
        self.version = version
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(2 * dim if version == "v2" else 4 * dim)

    def forward(self, x, hw):
        H, W = hw
        B, L, C = x.shape
        if H % 2 or W % 2:
            raise ValueError(f"patch merging needs an even feature map, got {H}x{W}")
        x = x.view(B, H, W, C)
        x = torch.cat([x[:, 0::2, 0::2], x[:, 1::2, 0::2], x[:, 0::2, 1::2], x[:, 1::2, 1::2]], -1)
        x = x.view(B, -1, 4 * C)
        if self.version == "v2":
            x = self.norm(self.reduction(x))
        else:
            x = self.reduction(self.norm(x))
        return x, (H // 2, W // 2)


class PatchEmbed(nn.Module):
    def __init__(self, patch_size=4, in_chans=3, embed_dim=96, norm=True):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if norm else None

    def forward(self, x):
        x = self.proj(x)
        hw = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, (int(hw[0]), int(hw[1]))


class BasicLayer(nn.Module):
    """Stage ``i``: its blocks, then (stages 0 .. n-2) the patch merging that halves the map."""

    def __init__(self, cfg: SwinConfig, i: int, resolution: int, dpr: list[float]):
        super().__init__()
        self.grad_checkpointing = cfg.grad_checkpointing
        self.blocks = nn.ModuleList([SwinBlock(cfg, i, j, resolution, dpr[j]) for j in range(cfg.depths[i])])
        self.downsample = PatchMerging(cfg.embed_dim * 2 ** i, cfg.merge) if i < len(cfg.depths) - 1 else None

    def forward_blocks(self, x, hw):
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, hw, use_reentrant=False)
            else:
                x = blk(x, hw)
        return x

    def forward(self, x, hw):
        x = self.forward_blocks(x, hw)
        if self.downsample is not None:
            return self.downsample(x, hw)
        return x, hw


class SwinTransformerV2(nn.Module):
    """Swin Transformer V2 / V1 backbone + optional linear head (``num_classes=0``: pooled features)."""

    def __init__(self, cfg: SwinConfig | None = None, **kw):
        super().__init__()
        cfg = replace(cfg, **kw) if cfg is not None else SwinConfig(**kw)
        self.cfg = cfg
        res = cfg.stage_resolutions()
        n = len(cfg.depths)
        self.img_size, self.patch_size, self.in_chans = cfg.img_size, cfg.patch_size, cfg.in_chans
        self.embed_dim, self.num_classes = cfg.embed_dim, cfg.num_classes
        self.num_features = cfg.embed_dim * 2 ** (n - 1)
        self.encoder_stride = cfg.patch_size * 2 ** (n - 1)
        self.num_layers = sum(cfg.depths) + 2   # layer ids 0 .. sum(depths)+1 (layer-wise lr decay)
        self.depths = cfg.depths
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim, cfg.patch_norm)
        if cfg.ape:
            self.absolute_pos_embed = nn.Parameter(torch.zeros(1, res[0] ** 2, cfg.embed_dim))
            nn.init.trunc_normal_(self.absolute_pos_embed, std=0.02)
        else:
            self.absolute_pos_embed = None
        if cfg.mask_token:
            self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        else:
            self.mask_token = None
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        dpr = torch.linspace(0, cfg.drop_path_rate, sum(cfg.depths)).tolist()
        self.layers = nn.ModuleList([
            BasicLayer(cfg, i, res[i], dpr[sum(cfg.depths[:i]):sum(cfg.depths[:i + 1])]) for i in range(n)])
        self.norm = nn.LayerNorm(self.num_features)
        self.head = nn.Linear(self.num_features, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self.apply(self._init_weights)
        if cfg.norm == "post":   # residual post-norm starts as the identity (official _init_respostnorm)
            for layer in self.layers:
                for blk in layer.blocks:
                    for ln in (blk.norm1, blk.norm2):
                        nn.init.zeros_(ln.weight)
                        nn.init.zeros_(ln.bias)
        if self.mask_token is not None:
            nn.init.trunc_normal_(self.mask_token, std=0.02)

    @staticmethod
    def _init_weights(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    # ---- API shared with workbench.vit --------------------------------------------------------
    def set_grad_checkpointing(self, enable: bool = True):
        for layer in self.layers:
            layer.grad_checkpointing = bool(enable)
        self.cfg.grad_checkpointing = bool(enable)
        return self

    def set_sdpa(self, enable: bool = True):
        for m in self.modules():
            if isinstance(m, WindowAttention):
                m.use_sdpa = bool(enable)
        self.cfg.use_sdpa = bool(enable)
        return self

    def no_weight_decay(self) -> set[str]:
        keys = ("cpb_mlp", "logit_scale", "relative_position_bias_table", "absolute_pos_embed", "mask_token")
        return {n for n, _ in self.named_parameters() if any(k in n for k in keys)}

    def get_layer_id(self, name: str) -> int:
        name = name.removeprefix("module.").removeprefix("encoder.")
        # official get_swin_layer: mask token and patch embedding are layer 0; everything outside the
        # stages (absolute_pos_embed included) falls through to the top layer
        if name == "mask_token" or name.startswith("patch_embed"):
            return 0
        m = re.match(r"layers\.(\d+)\.(blocks\.(\d+)|downsample)", name)
        if m:
            i = int(m.group(1))
            if m.group(3) is None:
                return sum(self.depths[:i + 1])
            return sum(self.depths[:i]) + int(m.group(3)) + 1
        return self.num_layers - 1

    def reset_classifier(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.cfg.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:
            self._init_weights(self.head)

    def _check_input(self, x):
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f"expected a (B, {self.in_chans}, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.shape[1] != self.in_chans:
            raise ValueError(f"expected {self.in_chans} input channels, got {x.shape[1]}")
        H, W = x.shape[-2:]
        if H % self.encoder_stride or W % self.encoder_stride:
            raise ValueError(f"input {H}x{W} is not a multiple of the encoder stride {self.encoder_stride}")
        if self.absolute_pos_embed is not None and (H, W) != (self.img_size, self.img_size):
            raise ValueError(f"this model has absolute position embeddings for {self.img_size}px; got {H}x{W}")

    def _embed(self, x, mask):
        self._check_input(x)
        x, hw = self.patch_embed(x)
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("a mask was given but the model has no mask token; create it with mask_token=True")
            if mask.shape != (x.shape[0], hw[0], hw[1]):
                raise ValueError(f"mask must have shape (B, H/patch, W/patch) = {(x.shape[0],) + hw}, "
                                 f"got {tuple(mask.shape)}")
            w = mask.flatten(1).unsqueeze(-1).type_as(x)
            x = x * (1.0 - w) + self.mask_token.to(x.dtype) * w
        if self.absolute_pos_embed is not None:
            x = x + self.absolute_pos_embed
        return self.pos_drop(x), hw

    def forward_pyramid(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Multi-scale maps (stride patch*1, *2, *4, *8): each stage's output before its patch merging;
        the last one is after the final norm (equal to :meth:`forward_features`)."""
        x, hw = self._embed(x, mask)
        outs = []
        for i, layer in enumerate(self.layers):
            x = layer.forward_blocks(x, hw)
            out = self.norm(x) if i == len(self.layers) - 1 else x
            B, L, C = out.shape
            outs.append(out.transpose(1, 2).reshape(B, C, hw[0], hw[1]))
            if layer.downsample is not None:
                x, hw = layer.downsample(x, hw)
        return outs

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, num_features, H/encoder_stride, W/encoder_stride), after the final norm."""
        x, hw = self._embed(x, mask)
        for layer in self.layers:
            x, hw = layer(x, hw)
        x = self.norm(x)
        B, L, C = x.shape
        return x.transpose(1, 2).reshape(B, C, hw[0], hw[1])

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        if x.ndim == 4:
            x = x.mean(dim=(2, 3))
        elif x.ndim == 3:
            x = x.mean(dim=1)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


# --------------------------------------------------------------------------------------------------
# factory and state-dict conversion


def build(cfg: SwinConfig, **overrides) -> SwinTransformerV2:
    """A model from a config (``overrides`` replace config fields; ``version="v1"|"v2"`` sets the four
    architecture switches). Named configs live in :data:`CONFIGS`; ``workbench.models.create_model`` looks
    names up across every backbone."""
    version = overrides.pop("version", None)
    if version is not None:
        if version not in ("v1", "v2"):
            raise ValueError(f"version must be 'v1' or 'v2', got {version!r}")
        overrides = {**(V1_SWITCHES if version == "v1" else V2_SWITCHES), **overrides}
    valid = {f.name for f in fields(SwinConfig)}
    bad = set(overrides) - valid
    if bad:
        raise ValueError(f"unknown override(s) {sorted(bad)}; valid: {sorted(valid)}")
    return SwinTransformerV2(replace(cfg, **overrides))


_BUFFER_KEYS = ("relative_position_index", "relative_coords_table", "attn_mask")


def _unwrap(sd):
    for k in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    if not isinstance(sd, dict):
        raise ValueError(f"expected a state dict (a dict of tensors), got {type(sd).__name__}")
    return sd


def convert_state_dict(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Official / timm / ``rpe_mlp`` Swin state dicts -> ours (official key names).

    * unwraps ``{"model": ...}``, strips ``module.`` and SimMIM's ``encoder.`` prefixes (decoder dropped);
    * ``rpe_mlp`` -> ``cpb_mlp`` (some SimMIM-pretrained V2 checkpoints);
    * timm layout (downsample at the start of stages 1..3, ``head.fc``) -> official (end of stages 0..2,
      ``head``);
    * drops ``relative_position_index``, ``relative_coords_table``, ``attn_mask`` (rebuilt, never loaded);
    * with ``model``: V1 bias tables are resized bicubically to the model's windows and the absolute
      position embedding to its grid (resolution / window transfer).
    """
    sd = _unwrap(state_dict)
    out = {}
    has_encoder = any(k.startswith("encoder.") for k in sd)
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if has_encoder:
            if not k.startswith("encoder."):
                continue
            k = k[len("encoder."):]
        if any(k.endswith(b) for b in _BUFFER_KEYS):
            continue
        k = k.replace(".rpe_mlp.", ".cpb_mlp.")
        out[k] = v
    ds = {int(m.group(1)) for k in out for m in [re.match(r"layers\.(\d+)\.downsample\.", k)] if m}
    timm = "head.fc.weight" in out or (ds and 0 not in ds)
    if timm:
        conv = {}
        for k, v in out.items():
            m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
            if m and 0 not in ds:
                k = f"layers.{int(m.group(1)) - 1}.downsample.{m.group(2)}"
            if k.startswith("head.fc."):
                k = "head." + k[len("head.fc."):]
            conv[k] = v
        out = conv
    if model is not None:
        out = _adapt_to(out, model)
    return out


def _adapt_to(sd: dict, model: nn.Module) -> dict:
    own = model.state_dict()
    if "mask_token" in sd and "mask_token" not in own:    # SimMIM pre-training checkpoints carry one
        sd.pop("mask_token")
    for k, v in list(sd.items()):
        if k not in own or own[k].shape == v.shape:
            continue
        if k.endswith("relative_position_bias_table") and v.ndim == 2 and own[k].shape[1] == v.shape[1]:
            M = (int(round(math.sqrt(own[k].shape[0]))) + 1) // 2
            sd[k] = interpolate_bias_table(v, M)
        elif k == "absolute_pos_embed":
            n_old, C = v.shape[1], v.shape[2]
            s_old, s_new = int(round(math.sqrt(n_old))), int(round(math.sqrt(own[k].shape[1])))
            grid = v.reshape(1, s_old, s_old, C).permute(0, 3, 1, 2)
            grid = F.interpolate(grid.float(), size=(s_new, s_new), mode="bicubic", align_corners=False)
            sd[k] = grid.permute(0, 2, 3, 1).reshape(1, s_new * s_new, C).to(v.dtype)
    return sd


def transfer_state_dict(model: nn.Module, state_dict: dict, strict: bool = True):
    """Load a (possibly other-resolution / other-window / timm-format) state dict into ``model``."""
    return model.load_state_dict(convert_state_dict(state_dict, model), strict=strict)


# --------------------------------------------------------------------------------------------------
# measurements used by the studies, the notebook and the app


def attention_module(model: nn.Module, layer: int = 0, block: int = 0) -> WindowAttention:
    """The attention module of block ``block`` in stage ``layer``, with a clear error for bad indices."""
    if not 0 <= layer < len(model.layers):
        raise ValueError(f"layer must be in 0..{len(model.layers) - 1}, got {layer}")
    blocks = model.layers[layer].blocks
    if not 0 <= block < len(blocks):
        raise ValueError(f"block must be in 0..{len(blocks) - 1}, got {block}")
    return blocks[block].attn


def cpb_bias(model_or_attn: nn.Module, layer: int = 0, block: int = 0) -> torch.Tensor:
    """(nH, M^2, M^2) position bias of one attention module (16*sigmoid(CPB) or the V1 table)."""
    attn = model_or_attn
    if isinstance(model_or_attn, SwinTransformerV2):
        attn = attention_module(model_or_attn, layer, block)
    with torch.no_grad():
        b = attn.position_bias()
    if b is None:
        raise ValueError("this model has no position bias (bias='none')")
    return b


@torch.no_grad()
def activation_amplitudes(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Mean absolute activation of the residual stream after every block (eval mode)."""
    was = model.training
    model.eval()
    try:
        with inspect.capture(model, "*.out") as cap:
            model.forward_features(x)
    finally:
        model.train(was)
    return [float(v.float().abs().mean()) for v in cap.select("*.out")]


@torch.no_grad()
def attention_logits(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention logits (before bias, mask and softmax) of every block, via the explicit path."""
    was = model.training
    model.eval()
    try:
        with inspect.capture(model, "*.attn.logits") as cap:
            model.forward_features(x)
    finally:
        model.train(was)
    return cap.select("*.attn.logits")


def bias_over_offsets(attn: WindowAttention, window_size: int | None = None,
                      pretrained_window_size: int | None = None) -> torch.Tensor:
    """(nH, 2M-1, 2M-1) bias as a function of the offset (dy, dx) in -(M-1)..(M-1) for any window M.

    CPB: 16*sigmoid(G(coords)) with the coordinates of window M normalised by the pretrained window
    (continuous, so any M works). V1 table: the learned table, bicubically resized to M.
    """
    M = int(window_size or attn.window_size)
    if not 1 <= M <= 64:
        raise ValueError(f"window size must be between 1 and 64, got {M}")
    P = attn.pretrained_window_size if pretrained_window_size is None else int(pretrained_window_size)
    if P < 0 or P > 64:
        raise ValueError(f"pretrained window size must be between 0 and 64, got {P}")
    with torch.no_grad():
        if attn.bias_type in ("cpb_log", "cpb_linear"):
            w = attn.cpb_mlp[0].weight
            coords = relative_coords_table(M, P, "log" if attn.bias_type == "cpb_log" else "linear")
            return (16 * torch.sigmoid(attn.cpb_mlp(coords.to(w.device, w.dtype))))[0].permute(2, 0, 1).float()
        if attn.bias_type == "table":
            return table_over_offsets(attn.relative_position_bias_table, M)
    raise ValueError("this attention has no position bias (bias='none')")


def table_over_offsets(table: torch.Tensor, window_size: int) -> torch.Tensor:
    """A V1 table ((2m-1)^2, nH) as (nH, 2M-1, 2M-1) over offsets, bicubically resized to window M."""
    t = interpolate_bias_table(table.detach().float(), window_size)
    T = 2 * int(window_size) - 1
    return t.T.reshape(-1, T, T)


def query_bias(offset_bias: torch.Tensor, qy: int, qx: int) -> torch.Tensor:
    """(M, M) bias from query (qy, qx) to every key (ky, kx) of the window: offset (qy-ky, qx-kx)."""
    if offset_bias.ndim != 2 or offset_bias.shape[0] != offset_bias.shape[1] or offset_bias.shape[0] % 2 == 0:
        raise ValueError(f"expected a (2M-1, 2M-1) offset grid, got {tuple(offset_bias.shape)}")
    M = (offset_bias.shape[0] + 1) // 2
    if not (0 <= qy < M and 0 <= qx < M):
        raise ValueError(f"query ({qy}, {qx}) is outside the {M}x{M} window")
    ky = torch.arange(M)
    iy = (qy - ky + M - 1).view(M, 1).expand(M, M)
    ix = (qx - ky + M - 1).view(1, M).expand(M, M)
    return offset_bias[iy, ix]


def predict_topk(model: nn.Module, image, class_names, k: int = 5) -> list[tuple[str, float]]:
    """Top-k (class, probability) for one image: uint8 (H, W, 3) or float (3, H, W) in [0, 1], already at
    the model's input size."""
    import numpy as np

    if isinstance(image, np.ndarray):
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"expected an (H, W, 3) RGB image, got shape {image.shape}")
        x = to_tensor(image)
    elif isinstance(image, torch.Tensor):
        x = image.float()
    else:
        raise ValueError(f"expected an image array, got {type(image).__name__}")
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a (3, H, W) image, got {tuple(x.shape)}")
    if not torch.isfinite(x).all():
        raise ValueError("the image contains NaN or infinite values")
    size = getattr(model, "img_size", x.shape[-1])
    if tuple(x.shape[-2:]) != (size, size):
        raise ValueError(f"the model expects {size}x{size} images, got {x.shape[-2]}x{x.shape[-1]}")
    if len(class_names) != model.num_classes:
        raise ValueError(f"{len(class_names)} class names for a {model.num_classes}-class model")
    with torch.no_grad():
        p = model.eval()(x.unsqueeze(0)).softmax(-1)[0]
    k = max(1, min(int(k), len(class_names)))
    vals, idx = p.topk(k)
    return [(class_names[i], float(v)) for v, i in zip(vals.tolist(), idx.tolist())]
