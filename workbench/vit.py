"""Plain Vision Transformer backbone (the BEiT-style ViT used for SimMIM's ViT results).

Papers: A. Dosovitskiy et al., "An Image is Worth 16x16 Words" (ICLR 2021); the variant follows
H. Bao et al., "BEiT" (ICLR 2022) as used by Z. Xie et al., "SimMIM" (CVPR 2022):

* patch embedding (conv, stride = patch), a class token, optional absolute position embedding;
* pre-norm blocks with optional layer scale ``gamma`` (init ``init_values``)::

      x = x + DropPath(gamma_1 * Attn(LN(x)));   x = x + DropPath(gamma_2 * MLP(LN(x)))

* attention ``softmax(q k^T / sqrt(d) + B) v`` with q/v biases (no k bias) and an optional relative
  position bias B, per block (``use_rel_pos_bias``) or shared by all blocks (``use_shared_rel_pos_bias``);
  its table has (2W-1)^2 + 3 rows (the last three: cls->token, token->cls, cls->cls);
* pooling: mean of patch tokens + ``fc_norm`` (``use_mean_pooling``) or the class token after ``norm``.

Same API as :mod:`workbench.swin_v2`: named configs in ``CONFIGS`` and ``build(cfg, **overrides)`` (found by
:func:`workbench.models.create_model`), ``forward_features(x, mask)`` returns the patch
tokens as a map (B, C, H/patch, W/patch) after the final norm, ``mask_token`` blending, ``forward_head``,
``get_layer_id`` / ``num_layers``, ``no_weight_decay``; state-dict keys are the official (BEiT/SimMIM) ones.
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
from workbench.layers import DropPath, Mlp

__all__ = ["ViTConfig", "VisionTransformer", "CONFIGS", "build", "beit_relative_position_index",
           "convert_state_dict"]


@dataclass
class ViTConfig:
    img_size: int = 224
    patch_size: int = 16
    in_chans: int = 3
    num_classes: int = 1000
    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    drop_rate: float = 0.0
    attn_drop_rate: float = 0.0
    drop_path_rate: float = 0.1
    init_values: float | None = 0.1          # layer scale; None or 0 disables gamma_1/gamma_2
    use_abs_pos_emb: bool = True
    use_rel_pos_bias: bool = False
    use_shared_rel_pos_bias: bool = False
    use_mean_pooling: bool = False
    mask_token: bool = False                 # the SimMIM pre-training encoder (changes the init, see below)
    init_scale: float = 0.001                # the classification head's init is scaled by this
    layer_norm_eps: float = 1e-6
    use_sdpa: bool = True
    grad_checkpointing: bool = False

    def __post_init__(self):
        for name in ("img_size", "patch_size", "in_chans", "embed_dim", "depth", "num_heads"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if self.img_size % self.patch_size:
            raise ValueError(f"img_size={self.img_size} is not divisible by patch_size={self.patch_size}")
        if self.img_size > 4096:
            raise ValueError(f"img_size={self.img_size} is absurdly large (max 4096)")
        if self.embed_dim % self.num_heads:
            raise ValueError(f"embed_dim={self.embed_dim} is not divisible by num_heads={self.num_heads}")
        if self.num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {self.num_classes}")
        if not 0.0 <= self.drop_path_rate < 1.0:
            raise ValueError(f"drop_path_rate must be in [0, 1), got {self.drop_path_rate}")


CONFIGS: dict[str, ViTConfig] = {
    # SimMIM ViT-B pre-training (simmim_pretrain__vit_base__img224__800ep.yaml): shared relative bias,
    # layer scale 0.1, class-token pooling
    "vit_base_patch16_224": ViTConfig(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                      drop_path_rate=0.1, init_values=0.1, use_abs_pos_emb=False,
                                      use_shared_rel_pos_bias=True, use_mean_pooling=False),
    # SimMIM ViT-B fine-tuning (simmim_finetune__vit_base__img224__800ep.yaml): per-block relative bias
    # (the shared pre-training table is copied into each block), mean pooling + fc_norm
    "vit_base_patch16_224_finetune": ViTConfig(img_size=224, patch_size=16, embed_dim=768, depth=12,
                                               num_heads=12, drop_path_rate=0.1, init_values=0.1,
                                               use_abs_pos_emb=False, use_rel_pos_bias=True,
                                               use_mean_pooling=True),
    "vit_small_patch16_224": ViTConfig(img_size=224, patch_size=16, embed_dim=384, depth=12, num_heads=6,
                                       drop_path_rate=0.1, init_values=0.1),
    # laptop config (~1.2M parameters): 64 px, patch 8 -> 8x8 tokens
    "vit_lite_patch8_64": ViTConfig(img_size=64, patch_size=8, embed_dim=128, depth=6, num_heads=4,
                                    drop_path_rate=0.1, init_values=0.1, use_abs_pos_emb=True,
                                    use_mean_pooling=True, num_classes=10),
}


def beit_relative_position_index(grid: int) -> torch.Tensor:
    """(N+1, N+1) indices into a ((2G-1)^2 + 3)-row table; row/col 0 is the class token."""
    coords = torch.stack(torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    n_rel = (2 * grid - 1) ** 2 + 3
    idx = torch.zeros(grid * grid + 1, grid * grid + 1, dtype=torch.long)
    idx[1:, 1:] = (rel[..., 0] + grid - 1) * (2 * grid - 1) + (rel[..., 1] + grid - 1)
    idx[0, :] = n_rel - 3
    idx[:, 0] = n_rel - 2
    idx[0, 0] = n_rel - 1
    return idx


class RelativePositionBias(nn.Module):
    def __init__(self, grid: int, num_heads: int):
        super().__init__()
        self.grid, self.num_heads = grid, num_heads
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2 + 3, num_heads))
        self.register_buffer("relative_position_index", beit_relative_position_index(grid), persistent=False)

    def forward(self) -> torch.Tensor:
        n = self.grid * self.grid + 1
        b = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(n, n, -1)
        return b.permute(2, 0, 1)   # nH, N+1, N+1


class Attention(nn.Module):
    def __init__(self, dim, num_heads, qkv_bias=True, attn_drop=0.0, proj_drop=0.0, grid=None, use_sdpa=True):
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.use_sdpa = use_sdpa
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        if grid is not None:
            self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * grid - 1) ** 2 + 3, num_heads))
            self.register_buffer("relative_position_index", beit_relative_position_index(grid), persistent=False)
        else:
            self.relative_position_bias_table = None
        self.attn_drop = float(attn_drop)
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x, rel_pos_bias=None):
        B, N, C = x.shape
        bias = None
        if self.q_bias is not None:
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias, requires_grad=False), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        add = None
        if self.relative_position_bias_table is not None:
            b = self.relative_position_bias_table[self.relative_position_index.view(-1)].view(N, N, -1)
            add = b.permute(2, 0, 1).unsqueeze(0)
        if rel_pos_bias is not None:
            add = rel_pos_bias.unsqueeze(0) if add is None else add + rel_pos_bias.unsqueeze(0)
        p = self.attn_drop if self.training else 0.0
        if self.use_sdpa:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=None if add is None else add.to(q.dtype),
                                                 dropout_p=p)
        else:
            attn = (q * self.scale) @ k.transpose(-2, -1)
            if add is not None:
                attn = attn + add
            out = F.dropout(attn.softmax(-1), p, self.training) @ v
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(B, N, C)))


class Block(nn.Module):
    """One pre-norm block of ``cfg`` (``grid``: tokens per side when the block has its own relative bias).
    Emits ``out``, the residual stream after the block."""

    def __init__(self, cfg: ViTConfig, drop_path: float = 0.0, grid: int | None = None):
        super().__init__()
        dim, eps = cfg.embed_dim, cfg.layer_norm_eps
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, cfg.num_heads, cfg.qkv_bias, cfg.attn_drop_rate, cfg.drop_rate, grid, cfg.use_sdpa)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, int(dim * cfg.mlp_ratio), cfg.drop_rate, drop_after_act=False)  # as BEiT
        if cfg.init_values:
            self.gamma_1 = nn.Parameter(cfg.init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(cfg.init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x, rel_pos_bias=None):
        a = self.attn(self.norm1(x), rel_pos_bias)
        if self.gamma_1 is None:
            x = x + self.drop_path(a)
            x = x + self.drop_path(self.mlp(self.norm2(x)))
        else:
            x = x + self.drop_path(self.gamma_1 * a)
            x = x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))
        inspect.emit(self, "out", x)
        return x


class PatchEmbed(nn.Module):
    def __init__(self, patch_size, in_chans, embed_dim):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x):
        x = self.proj(x)
        hw = (int(x.shape[-2]), int(x.shape[-1]))
        return x.flatten(2).transpose(1, 2), hw


class VisionTransformer(nn.Module):
    def __init__(self, cfg: ViTConfig | None = None, **kw):
        super().__init__()
        cfg = replace(cfg, **kw) if cfg is not None else ViTConfig(**kw)
        self.cfg = cfg
        self.img_size, self.patch_size, self.in_chans = cfg.img_size, cfg.patch_size, cfg.in_chans
        self.embed_dim = self.num_features = cfg.embed_dim
        self.num_classes = cfg.num_classes
        self.encoder_stride = cfg.patch_size
        self.grid = cfg.img_size // cfg.patch_size
        self.num_layers = cfg.depth + 2      # layer ids 0 (embeddings) .. depth+1 (norm / head)
        self.grad_checkpointing = cfg.grad_checkpointing
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.in_chans, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim)) if cfg.mask_token else None
        self.pos_embed = (nn.Parameter(torch.zeros(1, self.grid ** 2 + 1, cfg.embed_dim))
                          if cfg.use_abs_pos_emb else None)
        self.pos_drop = nn.Dropout(cfg.drop_rate)
        self.rel_pos_bias = RelativePositionBias(self.grid, cfg.num_heads) if cfg.use_shared_rel_pos_bias else None
        dpr = torch.linspace(0, cfg.drop_path_rate, cfg.depth).tolist()
        self.blocks = nn.ModuleList([Block(cfg, dpr[i], self.grid if cfg.use_rel_pos_bias else None)
                                     for i in range(cfg.depth)])
        self.norm = nn.Identity() if cfg.use_mean_pooling else nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps)
        self.fc_norm = nn.LayerNorm(cfg.embed_dim, eps=cfg.layer_norm_eps) if cfg.use_mean_pooling else None
        self.head = nn.Linear(cfg.embed_dim, cfg.num_classes) if cfg.num_classes > 0 else nn.Identity()
        self._init_all()

    def _trunc_normal_(self, t: torch.Tensor, std: float = 0.02) -> None:
        # official: the SimMIM pre-training encoder truncates N(0, std) at +-std (so the effective std is
        # about 0.54 * std); the fine-tuning ViT uses timm's bounds +-2 (no practical truncation)
        bound = std if self.cfg.mask_token else 2.0
        nn.init.trunc_normal_(t, std=std, a=-bound, b=bound)

    def _init_all(self):
        """The official initialisation: truncated normal (std 0.02) for the position embedding, class and
        mask tokens, every Linear and the patch-embedding Conv2d (biases 0), LayerNorm (1, 0), BEiT's
        rescaling of the output projections by sqrt(2 * layer), and the head scaled by ``init_scale``."""
        for p in (self.pos_embed, self.cls_token, self.mask_token):
            if p is not None:
                self._trunc_normal_(p)
        self.apply(self._init_weights)
        self._rescale_blocks()
        if isinstance(self.head, nn.Linear):
            with torch.no_grad():
                self.head.weight.mul_(self.cfg.init_scale)
                self.head.bias.mul_(self.cfg.init_scale)

    def _init_weights(self, m):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            self._trunc_normal_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def _rescale_blocks(self):   # BEiT: divide output projections by sqrt(2 * layer_id)
        for i, blk in enumerate(self.blocks):
            blk.attn.proj.weight.data.div_(math.sqrt(2.0 * (i + 1)))
            blk.mlp.fc2.weight.data.div_(math.sqrt(2.0 * (i + 1)))

    def set_grad_checkpointing(self, enable: bool = True):
        self.grad_checkpointing = bool(enable)
        return self

    def set_sdpa(self, enable: bool = True):
        for blk in self.blocks:
            blk.attn.use_sdpa = bool(enable)
        return self

    def no_weight_decay(self) -> set[str]:
        keys = ("pos_embed", "cls_token", "mask_token", "relative_position_bias_table", "gamma_")
        return {n for n, _ in self.named_parameters() if any(k in n for k in keys)}

    def get_layer_id(self, name: str) -> int:
        name = name.removeprefix("module.").removeprefix("encoder.")
        # official get_vit_layer: tokens, position embedding and patch embedding are layer 0; the shared
        # relative position bias (and everything after the blocks) is the top layer
        if name in ("cls_token", "mask_token", "pos_embed") or name.startswith("patch_embed"):
            return 0
        m = re.match(r"blocks\.(\d+)\.", name)
        if m:
            return int(m.group(1)) + 1
        return self.num_layers - 1

    def reset_classifier(self, num_classes: int):
        self.num_classes = int(num_classes)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        if num_classes > 0:   # as if built with this head (the official reset keeps PyTorch's default init)
            self._init_weights(self.head)
            with torch.no_grad():
                self.head.weight.mul_(self.cfg.init_scale)

    def forward_tokens(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, 1 + N, C) tokens after the blocks and ``norm`` (class token first)."""
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected a (B, {self.in_chans}, H, W) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
        if tuple(x.shape[-2:]) != (self.img_size, self.img_size):
            raise ValueError(f"this ViT is built for {self.img_size}x{self.img_size} inputs, got "
                             f"{x.shape[-2]}x{x.shape[-1]}")
        x, hw = self.patch_embed(x)
        B, L, _ = x.shape
        if mask is not None:
            if self.mask_token is None:
                raise ValueError("a mask was given but the model has no mask token; create it with mask_token=True")
            if tuple(mask.shape) != (B, hw[0], hw[1]):
                raise ValueError(f"mask must have shape (B, H/patch, W/patch) = {(B,) + hw}, got {tuple(mask.shape)}")
            w = mask.flatten(1).unsqueeze(-1).type_as(x)
            x = x * (1.0 - w) + self.mask_token.to(x.dtype) * w
        x = torch.cat((self.cls_token.expand(B, -1, -1).to(x.dtype), x), dim=1)
        if self.pos_embed is not None:
            x = x + self.pos_embed
        x = self.pos_drop(x)
        rpb = self.rel_pos_bias() if self.rel_pos_bias is not None else None
        for blk in self.blocks:
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(blk, x, rpb, use_reentrant=False)
            else:
                x = blk(x, rpb)
        return self.norm(x)

    def forward_features(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """(B, C, H, W) -> (B, embed_dim, H/patch, W/patch): patch tokens after the final norm."""
        t = self.forward_tokens(x, mask)[:, 1:]
        B, L, C = t.shape
        return t.transpose(1, 2).reshape(B, C, self.grid, self.grid)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """A feature map (B, C, h, w) is mean-pooled; tokens (B, 1+N, C) use the class token unless the
        model mean-pools. ``fc_norm`` follows mean pooling."""
        if x.ndim == 4:
            x = x.mean(dim=(2, 3))
        elif x.ndim == 3:
            x = x[:, 1:].mean(1) if self.fc_norm is not None else x[:, 0]
        if self.fc_norm is not None:
            x = self.fc_norm(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_tokens(x))


def build(cfg: ViTConfig, **overrides) -> VisionTransformer:
    """A model from a config (``overrides`` replace config fields); named configs live in :data:`CONFIGS`
    and ``workbench.models.create_model`` looks names up across every backbone."""
    valid = {f.name for f in fields(ViTConfig)}
    bad = set(overrides) - valid
    if bad:
        raise ValueError(f"unknown override(s) {sorted(bad)}; valid: {sorted(valid)}")
    return VisionTransformer(replace(cfg, **overrides))


def convert_state_dict(state_dict: dict, model: nn.Module | None = None) -> dict:
    """Official / timm-style ViT state dicts -> ours: unwraps ``{"model": ...}``, strips ``module.`` and
    SimMIM's ``encoder.``, drops ``relative_position_index``; with ``model``: resizes ``pos_embed`` and
    relative bias tables to its grid (bicubic)."""
    sd = state_dict
    for k in ("model", "state_dict", "module"):
        if isinstance(sd, dict) and k in sd and isinstance(sd[k], dict):
            sd = sd[k]
    if not isinstance(sd, dict):
        raise ValueError(f"expected a state dict (a dict of tensors), got {type(sd).__name__}")
    has_encoder = any(k.startswith("encoder.") for k in sd)
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("module.")
        if has_encoder:
            if not k.startswith("encoder."):
                continue
            k = k[len("encoder."):]
        if k.endswith("relative_position_index"):
            continue
        out[k] = v
    if model is not None:
        own = model.state_dict()
        for k, v in list(out.items()):
            if k not in own or own[k].shape == v.shape:
                continue
            if k == "pos_embed":
                C = v.shape[-1]
                s_old, s_new = int(round(math.sqrt(v.shape[1] - 1))), int(round(math.sqrt(own[k].shape[1] - 1)))
                g = v[:, 1:].reshape(1, s_old, s_old, C).permute(0, 3, 1, 2).float()
                g = F.interpolate(g, size=(s_new, s_new), mode="bicubic", align_corners=False)
                out[k] = torch.cat((v[:, :1], g.permute(0, 2, 3, 1).reshape(1, -1, C).to(v.dtype)), 1)
            elif k.endswith("relative_position_bias_table"):
                nH = v.shape[1]
                s_old = int(round(math.sqrt(v.shape[0] - 3)))
                s_new = int(round(math.sqrt(own[k].shape[0] - 3)))
                g = v[:-3].T.reshape(1, nH, s_old, s_old).float()
                g = F.interpolate(g, size=(s_new, s_new), mode="bicubic", align_corners=False)
                out[k] = torch.cat((g.reshape(nH, -1).T.to(v.dtype), v[-3:]), 0)
    return out
