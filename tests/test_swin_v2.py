"""Swin V2 / V1 backbones against independent oracles.

Oracles: HF transformers' Swinv2ForImageClassification / SwinForImageClassification (built offline from a
config, random weights mapped onto ours), closed forms of the CPB coordinate table and the shift masks, a
slow per-window loop for shifted-window attention, float64 references, and hand-applied key renames for
the timm / rpe_mlp formats.
"""
from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from workbench import swin_v2
from workbench.models import create_model

torch.set_num_threads(1)


def randomize_(model, seed=0, scale=0.2):
    """Give every parameter non-trivial values (post-norm LNs start at zero, which would hide bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n.endswith("logit_scale"):
                p.copy_(math.log(10) + 0.5 * torch.randn(p.shape, generator=g))
            elif "norm" in n and n.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


# ---- mapping our (official) keys onto HF's ---------------------------------------------------------


def _to_hf(sd: dict, v2: bool, prefix: str) -> dict:
    out = {}
    for k, v in sd.items():
        if k.startswith("head."):
            out["classifier." + k[5:]] = v
            continue
        m = re.match(r"layers\.(\d+)\.blocks\.(\d+)\.(.*)", k)
        if m:
            i, j, rest = m.groups()
            b = f"{prefix}.encoder.layers.{i}.blocks.{j}."
            if rest == "attn.qkv.weight":
                q, kk, vv = v.chunk(3, 0)
                names = ("attention.self.query", "attention.self.key", "attention.self.value") if v2 else \
                    ("attention.q_proj", "attention.k_proj", "attention.v_proj")
                for nm, t in zip(names, (q, kk, vv)):
                    out[b + nm + ".weight"] = t
                continue
            if rest == "attn.qkv.bias":   # V1
                for nm, t in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, 0)):
                    out[b + f"attention.{nm}.bias"] = t
                continue
            ren = {
                "attn.q_bias": "attention.self.query.bias", "attn.v_bias": "attention.self.value.bias",
                "attn.logit_scale": "attention.self.logit_scale",
                "attn.cpb_mlp.0.weight": "attention.self.continuous_position_bias_mlp.0.weight",
                "attn.cpb_mlp.0.bias": "attention.self.continuous_position_bias_mlp.0.bias",
                "attn.cpb_mlp.2.weight": "attention.self.continuous_position_bias_mlp.2.weight",
                "attn.proj.weight": "attention.output.dense.weight" if v2 else "attention.o_proj.weight",
                "attn.proj.bias": "attention.output.dense.bias" if v2 else "attention.o_proj.bias",
                "attn.relative_position_bias_table": "attention.relative_position_bias.relative_position_bias_table",
                "norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
                "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
                "mlp.fc1.weight": "intermediate.dense.weight" if v2 else "mlp.fc1.weight",
                "mlp.fc1.bias": "intermediate.dense.bias" if v2 else "mlp.fc1.bias",
                "mlp.fc2.weight": "output.dense.weight" if v2 else "mlp.fc2.weight",
                "mlp.fc2.bias": "output.dense.bias" if v2 else "mlp.fc2.bias",
            }
            out[b + ren[rest]] = v
            continue
        k2 = (k.replace("patch_embed.proj.", "embeddings.patch_embeddings.projection.")
               .replace("patch_embed.norm.", "embeddings.norm."))
        k2 = re.sub(r"^layers\.", "encoder.layers.", k2)
        if k2.startswith("norm."):
            k2 = "layernorm." + k2[5:]
        out[f"{prefix}.{k2}"] = v
    return out


def _hf_pair(v2: bool, img=256, window=8, embed=96, depths=(2, 2, 6, 2), heads=(3, 6, 12, 24), seed=0,
             num_classes=1000, pws=(0, 0, 0, 0)):
    from transformers import (
        SwinConfig,
        SwinForImageClassification,
        Swinv2Config,
        Swinv2ForImageClassification,
    )
    kw = dict(image_size=img, patch_size=4, embed_dim=embed, depths=list(depths), num_heads=list(heads),
              window_size=window, num_labels=num_classes, drop_path_rate=0.0)
    if v2:
        hf = Swinv2ForImageClassification(Swinv2Config(pretrained_window_sizes=list(pws), **kw))
    else:
        hf = SwinForImageClassification(SwinConfig(**kw))
    ours = swin_v2.SwinTransformerV2(
        img_size=img, window_size=window, embed_dim=embed, depths=depths, num_heads=heads, num_classes=num_classes,
        drop_path_rate=0.0, pretrained_window_sizes=pws, **(swin_v2.V2_SWITCHES if v2 else swin_v2.V1_SWITCHES))
    randomize_(ours, seed)
    missing, unexpected = hf.load_state_dict(_to_hf(ours.state_dict(), v2, "swinv2" if v2 else "swin"), strict=False)
    assert not unexpected, unexpected
    assert all(re.search(r"relative_position_index|relative_coords_table", k) for k in missing), missing
    return ours.eval(), hf.eval()


@pytest.mark.parametrize("use_sdpa", [True, False])
def test_tiny_window8_matches_hf_swinv2(use_sdpa):
    ours, hf = _hf_pair(True)
    ours.set_sdpa(use_sdpa)
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        a = ours(x)
        b = hf(pixel_values=x).logits
    assert a.shape == b.shape == (1, 1000)
    assert (a - b).abs().max().item() <= 1e-4, (a - b).abs().max().item()


def test_lite_pretrained_window_matches_hf_swinv2():
    ours, hf = _hf_pair(True, img=64, window=4, embed=32, depths=(2, 2, 2, 2), heads=(2, 4, 8, 16),
                        num_classes=10, pws=(2, 2, 3, 2), seed=3)
    x = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert (ours(x) - hf(pixel_values=x).logits).abs().max().item() <= 1e-4


def test_v1_switches_match_hf_swin():
    ours, hf = _hf_pair(False, img=224, window=7, embed=32, depths=(2, 2, 2, 2), heads=(1, 2, 4, 8), seed=4)
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert (ours(x) - hf(pixel_values=x).logits).abs().max().item() <= 1e-4


def test_mask_token_blend_matches_hf_bool_masked_pos():
    from transformers import Swinv2Config, Swinv2Model
    cfg = dict(img_size=64, window_size=4, embed_dim=32, depths=(2, 2), num_heads=(2, 4),
               pretrained_window_sizes=(0, 0), drop_path_rate=0.0, mask_token=True, num_classes=0)
    ours = randomize_(swin_v2.SwinTransformerV2(**cfg), 5).eval()
    hf = Swinv2Model(Swinv2Config(image_size=64, patch_size=4, embed_dim=32, depths=[2, 2], num_heads=[2, 4],
                                  window_size=4), use_mask_token=True).eval()
    sd = {k.removeprefix("swinv2."): v for k, v in _to_hf(ours.state_dict(), True, "swinv2").items()}
    sd["embeddings.mask_token"] = sd.pop("mask_token")
    hf.load_state_dict(sd, strict=False)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 64, 64, generator=g)
    mask = (torch.rand(2, 16, 16, generator=g) < 0.6).long()
    with torch.no_grad():
        ours_map = ours.forward_features(x, mask=mask)
        h = hf(pixel_values=x, bool_masked_pos=mask.flatten(1).bool()).last_hidden_state  # B, 64, 64
    assert ours_map.shape == (2, 64, 8, 8)
    assert torch.allclose(ours_map.flatten(2).transpose(1, 2), h, atol=1e-4)


# ---- closed forms ----------------------------------------------------------------------------------


@pytest.mark.parametrize("M,P", [(4, 0), (8, 0), (8, 4), (16, 8), (12, 12)])
def test_cpb_coordinates_closed_form(M, P):
    t = swin_v2.relative_coords_table(M, P, "log")[0]
    assert t.shape == (2 * M - 1, 2 * M - 1, 2)
    denom = (P if P > 0 else M) - 1
    for i, dy in enumerate(range(-(M - 1), M)):
        for j, dx in enumerate(range(-(M - 1), M)):
            for val, d in ((t[i, j, 0], dy), (t[i, j, 1], dx)):
                u = 8.0 * d / denom
                ref = math.copysign(math.log2(abs(u) + 1) / 3.0, u) if u else 0.0
                assert abs(val.item() - ref) < 1e-6
    lin = swin_v2.relative_coords_table(M, P, "linear")[0]
    assert torch.allclose(lin[..., 1], torch.arange(-(M - 1), M).float().expand(2 * M - 1, -1) / denom)


def test_cpb_bias_is_16_sigmoid_of_mlp_at_each_offset():
    m = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 7)
    attn = m.layers[0].blocks[1].attn
    M = attn.window_size
    bias = swin_v2.cpb_bias(m, 0, 1)          # nH, M^2, M^2
    W1, b1 = attn.cpb_mlp[0].weight.double(), attn.cpb_mlp[0].bias.double()
    W2 = attn.cpb_mlp[2].weight.double()
    for qi in range(M * M):
        for ki in range(M * M):
            dy, dx = qi // M - ki // M, qi % M - ki % M
            c = torch.tensor([dy, dx], dtype=torch.float64) * 8 / (M - 1)
            c = torch.sign(c) * torch.log2(c.abs() + 1) / 3
            ref = 16 * torch.sigmoid(W2 @ torch.relu(W1 @ c + b1))
            assert torch.allclose(bias[:, qi, ki].double(), ref, atol=1e-5)
    assert float(bias.min()) >= 0 and float(bias.max()) <= 16


def test_relative_position_index_closed_form():
    M = 5
    idx = swin_v2.relative_position_index(M)
    for qi in range(M * M):
        for ki in range(M * M):
            dy, dx = qi // M - ki // M, qi % M - ki % M
            assert idx[qi, ki] == (dy + M - 1) * (2 * M - 1) + dx + M - 1


@pytest.mark.parametrize("H,M", [(8, 4), (16, 4), (12, 6)])
def test_shift_mask_matches_region_labels(H, M):
    s = M // 2
    mask = swin_v2.shift_attention_mask(H, H, M, s)
    # region of each position of the rolled map, from its original (unrolled) coordinate
    def region(c):
        return 0 if c < H - M else (1 if c < H - s else 2)
    nW = (H // M) ** 2
    assert mask.shape == (nW, M * M, M * M)
    for w in range(nW):
        wy, wx = divmod(w, H // M)
        labels = [region(wy * M + a) * 3 + region(wx * M + b) for a in range(M) for b in range(M)]
        for i in range(M * M):
            for j in range(M * M):
                assert mask[w, i, j].item() == (0.0 if labels[i] == labels[j] else -100.0)
    assert swin_v2.shift_attention_mask(H, H, M, 0) is None


def test_shifted_block_equals_slow_loop_over_windows():
    """One shifted block vs. an independent loop: roll, attend inside each window with masks, roll back."""
    torch.manual_seed(0)
    cfg = swin_v2.SwinConfig(img_size=32, embed_dim=16, depths=(2,), num_heads=(2,), window_size=4,
                             pretrained_window_sizes=(0,), attn="cosine", bias="cpb_log", norm="post")
    blk = swin_v2.SwinBlock(cfg, stage=0, index=1, input_resolution=8)   # odd index: shifted by M/2 = 2
    assert (blk.window_size, blk.shift_size) == (4, 2)
    randomize_(blk, 1)
    blk.eval()
    x = torch.randn(2, 64, 16)
    out = blk(x, (8, 8)).double()
    a = blk.attn
    H = W = 8
    M, s, nH, hd = 4, 2, 2, 8
    xd = x.double().view(2, H, W, 16)
    rolled = torch.roll(xd, (-s, -s), (1, 2))
    region = lambda c: 0 if c < H - M else (1 if c < H - s else 2)
    res = torch.zeros_like(rolled)
    Wq = a.qkv.weight.double()
    bias = a.position_bias().double()
    scale = torch.clamp(a.logit_scale.double(), max=math.log(100)).exp().view(nH)
    for b in range(2):
        for wy in range(0, H, M):
            for wx in range(0, W, M):
                tok = rolled[b, wy:wy + M, wx:wx + M].reshape(M * M, 16)
                lab = [region(wy + i) * 3 + region(wx + j) for i in range(M) for j in range(M)]
                qkv = tok @ Wq.T + torch.cat([a.q_bias.double(), torch.zeros(16).double(), a.v_bias.double()])
                q, k, v = qkv.split(16, -1)
                o = torch.zeros(M * M, 16, dtype=torch.float64)
                for h in range(nH):
                    qh, kh, vh = (t[:, h * hd:(h + 1) * hd] for t in (q, k, v))
                    logit = F.normalize(qh, dim=-1) @ F.normalize(kh, dim=-1).T * scale[h] + bias[h]
                    for i in range(M * M):
                        for j in range(M * M):
                            if lab[i] != lab[j]:
                                logit[i, j] -= 100.0
                    o[:, h * hd:(h + 1) * hd] = logit.softmax(-1) @ vh
                o = o @ a.proj.weight.double().T + a.proj.bias.double()
                res[b, wy:wy + M, wx:wx + M] = o.view(M, M, 16)
    attn_out = torch.roll(res, (s, s), (1, 2)).reshape(2, 64, 16)
    n1 = F.layer_norm(attn_out, (16,), blk.norm1.weight.double(), blk.norm1.bias.double())
    y = x.double() + n1
    h1 = F.gelu(y @ blk.mlp.fc1.weight.double().T + blk.mlp.fc1.bias.double())
    m = h1 @ blk.mlp.fc2.weight.double().T + blk.mlp.fc2.bias.double()
    ref = y + F.layer_norm(m, (16,), blk.norm2.weight.double(), blk.norm2.bias.double())
    assert (out - ref).abs().max().item() < 1e-4


@pytest.mark.parametrize("switches", [swin_v2.V2_SWITCHES, swin_v2.V1_SWITCHES,
                                      dict(attn="cosine", norm="pre", bias="cpb_linear", merge="v2")])
def test_sdpa_path_equals_explicit_path_forward_and_backward(switches):
    m = randomize_(create_model("swinv2_lite_window8_128", drop_path_rate=0.0, **switches), 2)
    x = torch.randn(2, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    outs, grads = [], []
    for flag in (True, False):
        m.set_sdpa(flag).zero_grad()
        y = m(x)
        y.square().sum().backward()
        outs.append(y.detach())
        grads.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert (outs[0] - outs[1]).abs().max().item() < 1e-4
    assert torch.allclose(grads[0], grads[1], rtol=1e-3, atol=1e-4)


def test_float64_reference_agrees_with_float32():
    m = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 3).eval()
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y32 = m(x)
        y64 = m.double().set_sdpa(False)(x.double())
    assert (y32.double() - y64).abs().max().item() < 1e-3


def test_gradient_checkpointing_gives_the_same_gradients():
    m = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 4)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    grads = []
    for flag in (False, True):
        m.set_grad_checkpointing(flag).zero_grad()
        m(x).sum().backward()
        grads.append([p.grad.clone() for p in m.parameters()])
    for a, b in zip(*grads):
        assert torch.allclose(a, b, atol=1e-6)


# ---- structure, API, configs -----------------------------------------------------------------------


def test_tiny_parameter_count_and_official_keys():
    m = create_model("swinv2_tiny_window8_256")
    assert round(sum(p.numel() for p in m.parameters()) / 1e6, 2) == 28.35
    keys = set(m.state_dict())
    # the official checkpoint has 250 keys: ours + the 24 index/coords buffers + 5 shift masks
    n_blocks, n_shift = 12, 5
    assert len(keys) + 2 * n_blocks + n_shift == 250
    for k in ("patch_embed.proj.weight", "patch_embed.norm.weight", "layers.0.blocks.0.attn.logit_scale",
              "layers.0.blocks.0.attn.q_bias", "layers.0.blocks.0.attn.v_bias", "layers.0.blocks.0.attn.qkv.weight",
              "layers.0.blocks.0.attn.cpb_mlp.0.weight", "layers.0.blocks.0.attn.cpb_mlp.2.weight",
              "layers.2.downsample.reduction.weight", "layers.2.downsample.norm.weight", "norm.weight", "head.weight"):
        assert k in keys, k
    assert "layers.0.blocks.0.attn.qkv.bias" not in keys and "layers.3.downsample.reduction.weight" not in keys
    assert m.layers[0].blocks[0].attn.cpb_mlp[0].weight.shape == (512, 2)
    assert m.layers[0].blocks[0].attn.logit_scale.shape == (3, 1, 1)
    assert m.layers[0].downsample.norm.weight.shape == (192,)          # V2 merge: LN(2C)
    v1 = create_model("swin_tiny_patch4_window7_224")
    assert v1.layers[0].downsample.norm.weight.shape == (384,)         # V1 merge: LN(4C)
    assert round(sum(p.numel() for p in v1.parameters()) / 1e6, 2) == 28.29


def test_post_norm_starts_as_identity_and_logit_scale_log10():
    m = create_model("swinv2_lite_window4_64")
    blk = m.layers[0].blocks[0]
    assert blk.norm1.weight.abs().sum() == 0 and blk.norm2.bias.abs().sum() == 0
    assert torch.allclose(blk.attn.logit_scale, torch.full((2, 1, 1), math.log(10)))
    x = torch.randn(1, 256, 32)
    assert torch.equal(blk(x, (16, 16)), x)


def test_api_shapes_pyramid_head_and_layer_ids():
    m = create_model("swinv2_lite_window4_64", num_classes=0, mask_token=True, drop_path_rate=0.0).eval()
    assert (m.num_features, m.embed_dim, m.patch_size, m.encoder_stride, m.img_size) == (256, 32, 4, 32, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        pyr = m.forward_pyramid(x)
        assert f.shape == (2, 256, 2, 2)
        assert [p.shape[-1] for p in pyr] == [16, 8, 4, 2] and [p.shape[1] for p in pyr] == [32, 64, 128, 256]
        assert torch.allclose(pyr[-1], f, atol=1e-6)
        assert torch.allclose(m(x), f.mean((2, 3)), atol=1e-6)      # num_classes=0 -> pooled features
    m.reset_classifier(7)
    assert m(x).shape == (2, 7) and m.forward_head(f, pre_logits=True).shape == (2, 256)
    assert m.num_layers == sum(m.depths) + 2
    ids = {n: m.get_layer_id(n) for n, _ in m.named_parameters()}
    assert ids["patch_embed.proj.weight"] == 0 and ids["mask_token"] == 0
    assert ids["layers.0.blocks.0.attn.qkv.weight"] == 1 and ids["layers.1.blocks.1.norm1.weight"] == 4
    assert ids["layers.0.downsample.reduction.weight"] == 2
    assert ids["norm.weight"] == ids["head.weight"] == m.num_layers - 1
    assert max(ids.values()) == m.num_layers - 1
    nwd = m.no_weight_decay()
    assert "mask_token" in nwd and "layers.0.blocks.0.attn.logit_scale" in nwd
    assert "layers.0.blocks.0.attn.cpb_mlp.0.weight" in nwd and "layers.0.blocks.0.attn.qkv.weight" not in nwd


def test_mask_token_blend_is_exact_at_the_embedding():
    m = create_model("swinv2_lite_window4_64", mask_token=True)
    x = torch.randn(1, 3, 64, 64)
    tok, hw = m.patch_embed(x)
    mask = torch.zeros(1, 16, 16)
    mask[0, 3, 5] = 1
    blended, _ = m._embed(x, mask)
    assert torch.allclose(blended[0, 3 * 16 + 5], m.mask_token[0, 0])
    assert torch.allclose(blended[0, 0], tok[0, 0])


def test_window_larger_than_feature_map_shrinks_and_drops_shift():
    m = create_model("swinv2_lite_window8_128", img_size=64)   # stage maps 16, 8, 4, 2 with window 8
    ws = [(b.window_size, b.shift_size) for layer in m.layers for b in layer.blocks]
    assert ws == [(8, 0), (8, 4), (8, 0), (8, 0), (4, 0), (4, 0), (2, 0), (2, 0)]
    assert m(torch.randn(1, 3, 64, 64)).shape == (1, 10)


@pytest.mark.parametrize("kw,msg", [
    (dict(img_size=66), "not divisible by patch_size"),
    (dict(img_size=72, window_size=3), "odd"),
    (dict(img_size=96, window_size=5), "not divisible by the window"),
    (dict(attn="nope"), "attn"),
    (dict(img_size=100000), "absurd"),
])
def test_bad_configs_raise_clear_errors(kw, msg):
    with pytest.raises(ValueError, match=msg):
        create_model("swinv2_lite_window4_64", **kw)


def test_bad_inputs_raise_clear_errors():
    m = create_model("swinv2_lite_window4_64")
    with pytest.raises(ValueError, match="channels"):
        m(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="encoder stride"):
        m(torch.randn(1, 3, 70, 70))
    with pytest.raises(ValueError, match="mask token"):
        m.forward_features(torch.randn(1, 3, 64, 64), mask=torch.zeros(1, 16, 16))
    with pytest.raises(ValueError, match="unknown model"):
        create_model("swinv9_huge")
    with pytest.raises(ValueError, match="unknown override"):
        create_model("swinv2_lite_window4_64", windw_size=3)


# ---- state-dict formats and transfer ---------------------------------------------------------------


def _official_checkpoint(model):
    """Our state dict + the buffers the official checkpoints carry, wrapped like the official files."""
    sd = dict(model.state_dict())
    for name, mod in model.named_modules():
        if isinstance(mod, swin_v2.WindowAttention):
            sd[f"{name}.relative_position_index"] = mod.relative_position_index
            if hasattr(mod, "relative_coords_table"):
                sd[f"{name}.relative_coords_table"] = mod.relative_coords_table
        if isinstance(mod, swin_v2.SwinBlock) and mod.attn_mask is not None:
            sd[f"{name}.attn_mask"] = mod.attn_mask
    return {"model": sd}


def _timm_format(sd):
    """The documented timm layout: downsample at the start of stages 1..3, head.fc, no buffers."""
    out = {}
    for k, v in sd.items():
        m = re.match(r"layers\.(\d+)\.downsample\.(.*)", k)
        if m:
            k = f"layers.{int(m.group(1)) + 1}.downsample.{m.group(2)}"
        if k.startswith("head."):
            k = "head.fc." + k[5:]
        out[k] = v
    return out


def test_convert_official_timm_and_rpe_mlp_formats():
    src = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 6).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        ref = src(x)
    official = _official_checkpoint(src)
    timm_sd = _timm_format(src.state_dict())
    rpe = {("encoder." + k).replace("cpb_mlp", "rpe_mlp"): v for k, v in official["model"].items()}
    rpe["decoder.0.weight"] = torch.zeros(3)
    for sd in (official, timm_sd, rpe, {"module." + k: v for k, v in src.state_dict().items()}):
        dst = create_model("swinv2_lite_window4_64", drop_path_rate=0.0).eval()
        dst.load_state_dict(swin_v2.convert_state_dict(sd), strict=True)
        with torch.no_grad():
            assert torch.equal(dst(x), ref)
    assert set(swin_v2.convert_state_dict(timm_sd)) == set(src.state_dict())


def test_v2_state_dict_transfers_to_other_resolution_and_window():
    """256/w8 -> 512/w16 style transfer at laptop scale: 64/w4 -> 128/w8, nothing but the state dict."""
    src = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 8)
    dst = create_model("swinv2_lite_window8_128", pretrained_window_sizes=(4, 4, 4, 2), drop_path_rate=0.0)
    dst.load_state_dict(src.state_dict(), strict=True)          # V2: no shape depends on the window
    # with the pretrained window set, the CPB sees exactly the coordinates it was trained on at the old offsets
    c_src = src.layers[0].blocks[0].attn.relative_coords_table[0]
    c_dst = dst.layers[0].blocks[0].attn.relative_coords_table[0]
    assert torch.allclose(c_dst[4:11, 4:11], c_src)
    b_src = swin_v2.cpb_bias(src, 0, 0)
    b_dst = swin_v2.cpb_bias(dst, 0, 0)
    # bias between tokens (0,0) and (dy,dx) agrees for every offset the small window has
    for dy in range(4):
        for dx in range(4):
            assert torch.allclose(b_dst[:, 0, dy * 8 + dx], b_src[:, 0, dy * 4 + dx], atol=1e-6)
    assert dst(torch.randn(1, 3, 128, 128)).shape == (1, 10)


def test_v1_table_is_interpolated_bicubically_on_transfer():
    src = randomize_(create_model("swin_lite_window4_64", drop_path_rate=0.0), 9)
    dst = create_model("swin_lite_window4_64", img_size=128, window_size=8, drop_path_rate=0.0)
    with pytest.raises(RuntimeError):
        dst.load_state_dict(src.state_dict())
    swin_v2.transfer_state_dict(dst, src.state_dict())
    t_src = src.layers[0].blocks[0].attn.relative_position_bias_table    # 49 x nH
    t_dst = dst.layers[0].blocks[0].attn.relative_position_bias_table    # 225 x nH
    nH = t_src.shape[1]
    ref = F.interpolate(t_src.detach().T.reshape(1, nH, 7, 7), size=(15, 15), mode="bicubic",
                        align_corners=False).reshape(nH, 225).T
    assert torch.allclose(t_dst, ref, atol=1e-6)
    with torch.no_grad():   # and the transferred V1 model still runs at the new size
        assert dst(torch.randn(1, 3, 128, 128)).shape == (1, 10)


def test_measurements_activation_amplitudes_and_logits():
    m = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 10)
    x = torch.randn(2, 3, 64, 64)
    amps = swin_v2.activation_amplitudes(m, x)
    assert len(amps) == 8
    # first block amplitude by hand
    with torch.no_grad():
        t, hw = m._embed(x, None)
        ref = m.layers[0].blocks[0](t, hw).abs().mean().item()
    assert abs(amps[0] - ref) < 1e-5
    logits = swin_v2.attention_logits(m, x)
    assert len(logits) == 8
    # cosine logits are bounded by the (clamped) scale: |cos| <= 1
    for lg, a in zip(logits, [mm for mm in m.modules() if isinstance(mm, swin_v2.WindowAttention)]):
        bound = torch.clamp(a.logit_scale, max=math.log(100)).exp().max().item()
        assert lg.abs().max().item() <= bound * (1 + 1e-5)


# ---- functions behind the notebook, the app and the study -------------------------------------------


def test_bias_over_offsets_gathers_to_the_attention_bias():
    m = randomize_(create_model("swinv2_lite_window4_64"), 11)
    for attn in (m.layers[0].blocks[0].attn, m.layers[3].blocks[1].attn):
        grid = swin_v2.bias_over_offsets(attn)                     # own window and pretrained window
        M = attn.window_size
        full = attn.position_bias()
        for qi in range(M * M):
            q = swin_v2.query_bias(grid[1 % attn.num_heads], qi // M, qi % M)
            assert torch.allclose(q.flatten(), full[1 % attn.num_heads, qi], atol=1e-6)
    # a larger window with the pretrained window = the trained one: the old offsets keep their values
    attn = m.layers[0].blocks[0].attn
    big = swin_v2.bias_over_offsets(attn, 8, 4)
    assert torch.allclose(big[:, 4:11, 4:11], swin_v2.bias_over_offsets(attn), atol=1e-6)
    v1 = randomize_(create_model("swin_lite_window4_64"), 12).layers[0].blocks[0].attn
    assert torch.allclose(swin_v2.bias_over_offsets(v1)[0].flatten(), v1.relative_position_bias_table[:, 0])
    with pytest.raises(ValueError, match="window size"):
        swin_v2.bias_over_offsets(attn, 1000)
    with pytest.raises(ValueError, match="outside"):
        swin_v2.query_bias(big[0], 9, 0)


def test_predict_topk_is_the_softmax_of_the_logits():
    import numpy as np

    m = randomize_(create_model("swinv2_lite_window4_64", drop_path_rate=0.0), 13).eval()
    img = (np.random.default_rng(0).random((64, 64, 3)) * 255).astype(np.uint8)
    names = [f"c{i}" for i in range(10)]
    top = swin_v2.predict_topk(m, img, names, k=5)
    with torch.no_grad():
        p = m(torch.from_numpy(img).permute(2, 0, 1).float().div(255)[None]).softmax(-1)[0]
    order = p.argsort(descending=True)[:5]
    assert [t[0] for t in top] == [names[i] for i in order]
    assert np.allclose([t[1] for t in top], p[order].numpy(), atol=1e-6)
    bad = img.astype(float)
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        swin_v2.predict_topk(m, bad, names)
    with pytest.raises(ValueError, match="64x64"):
        swin_v2.predict_topk(m, img[:32], names)
    with pytest.raises(ValueError, match="RGB"):
        swin_v2.predict_topk(m, img[..., 0], names)


def test_study_transfer_builds_the_big_model_from_the_state_dict_only():
    from workbench.studies import swin_v2 as study

    src = randomize_(create_model(study.STUDY_MODEL), 14)
    assert study.effective_windows(src) == (4, 4, 4, 2)
    big = study.transfer(src, 128, 8)
    assert study.effective_windows(big) == (8, 8, 8, 4) and big.cfg.pretrained_window_sizes == (4, 4, 4, 2)
    a_src, a_big = src.layers[1].blocks[1].attn, big.layers[1].blocks[1].attn
    assert torch.allclose(swin_v2.bias_over_offsets(a_big), swin_v2.bias_over_offsets(a_src, 8, 4))
    v1 = randomize_(create_model(study.STUDY_MODEL, bias="table"), 15)
    big1 = study.transfer(v1, 128, 8)
    assert torch.allclose(swin_v2.bias_over_offsets(big1.layers[0].blocks[0].attn),
                          swin_v2.bias_over_offsets(v1.layers[0].blocks[0].attn, 8), atol=1e-6)


@pytest.mark.slow
def test_study_writes_records_and_claims(tmp_path):
    """Two seeds of a tiny study: one record per (part, arm, seed); claims.json follows the schema and its
    statistics agree with the records; a second run with --resume trains nothing."""
    import json

    from workbench.studies import protocol
    from workbench.studies import swin_v2 as study

    argv = ["--out", str(tmp_path), "--steps", "4", "--ft-steps", "2", "--deep-steps", "2", "--depth", "2", "--n-train", "400", "--n-test", "100",
            "--seeds", "0", "1", "--no-progress"]
    study.main_study(argv)
    recs = protocol.Study("swin_v2", tmp_path).records()
    assert {(r["part"], r["arm"], r["seed"]) for r in recs} == (
        {("transfer", a, s) for a in study.BIAS_VARIANTS for s in (0, 1)}
        | {("activations", a, s) for a in study.NORM_VARIANTS for s in (0, 1)})
    doc = json.loads((tmp_path / "claims.json").read_text())
    for c in doc["claims"]:
        assert c["verdict"] in protocol.VERDICTS and c["arms"][c["baseline"]]["n"] == 2
        vals = [r["metrics"][c["metric"]] for r in recs if r["arm"] == c["method"] and r["metrics"].get(c["metric"]) is not None]
        assert c["arms"][c["method"]]["mean"] == pytest.approx(sum(vals) / len(vals))
    # the V2 variant starts as the identity in every block: flat amplitudes at init
    v2 = [r for r in recs if r["arm"] == "V2: res-post-norm + cosine"]
    assert all(abs(r["metrics"]["ratio_init"] - 1.0) < 1e-6 for r in v2)
    n = len(recs)
    study.main_study(argv + ["--resume"])
    assert len(protocol.Study("swin_v2", tmp_path).records()) == n


# ---- demo checkpoint, demo panels, app handlers and the notebook explorer --------------------------------


def test_demo_checkpoint_loads_and_reproduces_its_accuracy():
    """The committed demo classifier (fp16 on disk) loads into float32 and, with ImageNet-normalised inputs,
    reproduces the accuracy recorded at training time on the same 2,000 unseen shapes (seed 12), and stays that
    good on 300 shapes no training or test run used."""
    from workbench.data import shapes
    from workbench.data.transforms import normalize
    from workbench.demos import swin_v2 as demo
    from workbench.studies import swin_v2 as study
    from workbench.train import evaluate_accuracy

    model, tables, info = demo.model()
    assert model.img_size == 64 and model.num_classes == 10 and model.cfg.bias == "cpb_log" and not model.training
    assert set(tables) == {n for n, _ in create_model(study.STUDY_MODEL, bias="table").named_parameters()
                           if n.endswith("relative_position_bias_table")}
    assert model.state_dict()["norm.weight"].dtype == torch.float32
    x, y = shapes.tensors(n=info["n_test"], size=64, seed=study.ClassifierConfig().data_seed + 1)
    acc = evaluate_accuracy(model, x, y, batch_size=250, preprocess=normalize)
    assert acc == pytest.approx(info["test_accuracy"], abs=0.005)
    xf, yf = shapes.tensors(n=300, size=64, seed=4242)
    assert evaluate_accuracy(model, xf, yf, batch_size=300, preprocess=normalize) >= 0.95
    # without the normalisation the model is much worse: the demo must normalise (as demo.classify does)
    assert evaluate_accuracy(model, xf, yf, batch_size=300) < acc


def test_demo_classifies_the_apps_samples():
    """demo.classify on demo.sample(shape, seed) — what the app's picker shows — for every class and five seeds
    is right at least 95% of the time; its top-5 is the softmax of the model on the normalised image."""
    from workbench.data import shapes
    from workbench.data.transforms import normalize
    from workbench.demos import swin_v2 as demo

    net, _, _ = demo.model()
    right = 0
    for c in shapes.CLASSES:
        for seed in range(5):
            p = demo.classify(demo.sample(c, seed))
            right += p.values["pairs"][0][0] == c
    assert right / (5 * len(shapes.CLASSES)) >= 0.95, right
    img = demo.sample("star", 3)
    p = demo.classify(img)
    with torch.no_grad():
        prob = net(normalize(torch.from_numpy(img).permute(2, 0, 1).float().div(255))[None]).softmax(-1)[0]
    order = prob.argsort(descending=True)[:5]
    assert [n for n, _ in p.values["pairs"]] == [shapes.CLASSES[i] for i in order]
    assert np.allclose([v for _, v in p.values["pairs"]], prob[order].numpy(), atol=1e-6)
    assert list(p.figures["top5"].data[0].y) == [n for n, _ in p.values["pairs"]]


def test_demo_bias_panel_is_the_models_bias():
    """The panel's maps are swin_v2.bias_over_offsets / query_bias / table_over_offsets of the demo model."""
    from workbench.demos import swin_v2 as demo

    model, tables, _ = demo.model()
    p = demo.bias_panel(1, 1, 1, 12, 4, 2, 5)
    grid = swin_v2.bias_over_offsets(model.layers[1].blocks[1].attn, 12, 4)[1]
    torch.testing.assert_close(p.values["cpb"], grid)
    assert np.allclose(np.asarray(p.figures["cpb"].data[0].z, dtype=float), grid.numpy(), atol=1e-5)
    q = swin_v2.query_bias(grid, 2, 5)
    torch.testing.assert_close(p.values["query"], q)
    assert abs(float(p.figures["query"].data[0].z[0][0]) - float(q[0, 0])) < 1e-5
    t = swin_v2.table_over_offsets(tables["layers.1.blocks.1.attn.relative_position_bias_table"], 12)[1]
    assert np.allclose(np.asarray(p.figures["v1"].data[0].z, dtype=float), t.numpy(), atol=1e-5)
    assert f"{float(grid.min()):.2f}" in p.text and f"{float(grid.max()):.2f}" in p.text
    # query coordinates beyond the window are clamped to its last row / column
    assert demo.bias_panel(0, 0, 0, 4, 4, 20, 20).values["query"].shape == (4, 4)


def test_app_handlers_show_the_demo_panels():
    import gradio  # noqa: F401  (a dependency: fail loudly if missing)

    from workbench.apps import swin_v2 as app
    from workbench.apps.common import guard
    from workbench.demos import swin_v2 as demo

    f1, f2, f3, text = app.bias_views(1, 1, 1, 12, 4, 2, 5)
    p = demo.bias_panel(1, 1, 1, 12, 4, 2, 5)
    assert f1.to_json() == p.figures["cpb"].to_json() and f3.to_json() == p.figures["v1"].to_json()
    assert text == p.text
    img = app.pick_sample("star", 3)
    np.testing.assert_array_equal(img, demo.sample("star", 3))
    fig, verdict = app.classify(img)
    assert verdict.startswith(demo.classify(img).text)
    # user errors clear the outputs and land on the status line (the last output)
    assert guard(app.classify, 2)(None) == (None, "⚠️ Please choose or upload an image first.")
    out = guard(app.bias_views, 4)(0, 0, 5, 8, 4, 0, 0)          # stage 0 has one head
    assert out[:3] == (None, None, None) and out[3].startswith("⚠️ head")


def test_app_head_slider_follows_the_stage():
    import gradio  # noqa: F401

    from workbench.apps import swin_v2 as app
    from workbench.demos import swin_v2 as demo

    net, _, _ = demo.model()
    for layer in range(len(net.layers)):
        n = demo.heads(layer)
        upd = app.head_range(layer, 7)
        assert upd["value"] == min(7, n - 1)
        if n > 1:
            assert upd["maximum"] == n - 1 and upd["interactive"] is True
        else:   # one head: the slider cannot move (a gradio slider needs maximum > minimum)
            assert upd["interactive"] is False and upd["value"] == 0


def test_app_tab_builds_with_content_on_load():
    """The tab shows the default bias maps and a classified sample before any click."""
    import gradio as gr

    from workbench.apps import swin_v2 as app
    from workbench.demos import swin_v2 as demo

    with gr.Blocks() as blocks:
        app.build()
    comps = {getattr(b, "elem_id", None): b for b in blocks.blocks.values()}
    assert comps["swin_v2-bias-text"].value == demo.bias_panel().text
    assert comps["swin_v2-bias-plot"].value is not None and comps["swin_v2-top5"].value is not None
    assert comps["swin_v2-verdict"].value == demo.classify(demo.sample("star", 0)).text
    assert comps["swin_v2-head"].maximum >= 1


def test_bias_explorer_updates_and_reports_errors():
    import ipywidgets  # noqa: F401  (a dependency: fail loudly if missing)

    from workbench.demos import swin_v2 as demo
    from workbench.widgets.swin_v2 import bias_explorer

    ex = bias_explorer()
    assert len(ex.figure.data) >= 3 and ex.message.value == demo.bias_panel().text
    ex.controls["window"].value = 6
    assert ex.figure.data[0].z.shape == (11, 11)
    ex.controls["layer"].value = 3                   # the head slider follows the stage
    assert ex.controls["head"].max == demo.heads(3) - 1
    ex.controls["head"].value = demo.heads(3) - 1
    assert "head" not in ex.message.value
    ex.controls["layer"].value = 0                   # stage 0 has one head: the head slider is clamped to 0
    assert ex.controls["head"].max == 0 and ex.controls["head"].value == 0


def test_layer_ids_follow_official_get_swin_layer():
    """SimMIM's get_swin_layer: mask token and patch embedding are layer 0, everything outside the stages
    (the absolute position embedding included) the top layer; a stage's downsample ends the stage."""
    m = create_model("swinv2_lite_window4_64", ape=True, mask_token=True)
    assert m.get_layer_id("absolute_pos_embed") == m.num_layers - 1
    assert m.get_layer_id("encoder.mask_token") == m.get_layer_id("patch_embed.norm.weight") == 0


def test_logit_scale_clamp_is_the_float32_log_100():
    """Official: ``torch.clamp(logit_scale, max=torch.log(torch.tensor(1. / 0.01))).exp()`` — the clamp is the
    float32 value of log(100), which a float64 model sees too (a Python ``math.log(100)`` differs by ~1e-7)."""
    c32 = float(np.float32(np.log(np.float32(100.0))))
    assert swin_v2._LOGIT_MAX == c32 and c32 != math.log(100)
    cfg = swin_v2.SwinConfig(img_size=16, embed_dim=16, depths=(1,), num_heads=(2,), window_size=4,
                             pretrained_window_sizes=(0,), attn="cosine", bias="cpb_log", norm="post", use_sdpa=False)
    a = randomize_(swin_v2.WindowAttention(cfg, 16, 2, 4), 3).double().eval()
    with torch.no_grad():
        a.logit_scale.copy_(torch.tensor([6.0, 1.0], dtype=torch.float64).view(2, 1, 1))   # head 0 is clamped
    x = torch.randn(3, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        got = a(x)

    def reference(clamp):
        qkv = x @ a.qkv.weight.T + torch.cat([a.q_bias, torch.zeros(16, dtype=torch.float64), a.v_bias])
        q, k, v = (t.view(3, 16, 2, 8).transpose(1, 2) for t in qkv.split(16, -1))
        scale = torch.exp(torch.minimum(a.logit_scale.view(2), torch.tensor(clamp, dtype=torch.float64)))
        logits = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-1, -2) * scale.view(1, 2, 1, 1)
        o = (logits + a.position_bias()).softmax(-1) @ v
        return o.transpose(1, 2).reshape(3, 16, 16) @ a.proj.weight.T + a.proj.bias

    with torch.no_grad():
        torch.testing.assert_close(got, reference(c32), rtol=0, atol=1e-12)
        assert (got - reference(math.log(100))).abs().max().item() > 1e-10
