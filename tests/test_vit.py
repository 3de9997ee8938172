"""ViT backbone against HF transformers' BEiT (same architecture family: q/v biases, layer scale, relative
position bias with three class-token entries), closed forms and the SDPA/explicit equivalence."""
from __future__ import annotations

import math
import re

import pytest
import torch
import torch.nn.functional as F

from workbench import vit
from workbench.models import create_model

torch.set_num_threads(1)


def randomize_(model, seed=0, scale=0.2):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "norm" in n and n.endswith("weight"):
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(scale * torch.randn(p.shape, generator=g))
    return model


def _to_hf(sd):
    out = {}
    for k, v in sd.items():
        m = re.match(r"blocks\.(\d+)\.(.*)", k)
        if m:
            i, rest = m.groups()
            b = f"beit.layers.{i}."
            if rest == "attn.qkv.weight":
                for nm, t in zip(("q_proj", "k_proj", "v_proj"), v.chunk(3, 0)):
                    out[b + f"attention.{nm}.weight"] = t
                continue
            ren = {"attn.q_bias": "attention.q_proj.bias", "attn.v_bias": "attention.v_proj.bias",
                   "attn.proj.weight": "attention.o_proj.weight", "attn.proj.bias": "attention.o_proj.bias",
                   "gamma_1": "lambda_1", "gamma_2": "lambda_2",
                   "norm1.weight": "layernorm_before.weight", "norm1.bias": "layernorm_before.bias",
                   "norm2.weight": "layernorm_after.weight", "norm2.bias": "layernorm_after.bias",
                   "attn.relative_position_bias_table": "relative_position_bias.relative_position_bias_table"}
            out[b + ren.get(rest, rest)] = v
            continue
        ren = {"cls_token": "beit.embeddings.cls_token", "mask_token": "beit.embeddings.mask_token",
               "pos_embed": "beit.embeddings.position_embeddings",
               "patch_embed.proj.weight": "beit.embeddings.patch_embeddings.projection.weight",
               "patch_embed.proj.bias": "beit.embeddings.patch_embeddings.projection.bias",
               "rel_pos_bias.relative_position_bias_table": "beit.shared_position_bias.relative_position_bias_table",
               "norm.weight": "beit.layernorm.weight", "norm.bias": "beit.layernorm.bias",
               "fc_norm.weight": "beit.pooler.layernorm.weight", "fc_norm.bias": "beit.pooler.layernorm.bias",
               "head.weight": "classifier.weight", "head.bias": "classifier.bias"}
        out[ren[k]] = v
    return out


@pytest.mark.parametrize("variant", [
    dict(use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=False, use_mean_pooling=True),
    dict(use_abs_pos_emb=False, use_rel_pos_bias=True, use_shared_rel_pos_bias=False, use_mean_pooling=False),
    dict(use_abs_pos_emb=True, use_rel_pos_bias=False, use_shared_rel_pos_bias=True, use_mean_pooling=False),
])
@pytest.mark.parametrize("use_sdpa", [True, False])
def test_matches_hf_beit(variant, use_sdpa):
    from transformers import BeitConfig, BeitForImageClassification
    ours = create_model("vit_lite_patch8_64", drop_path_rate=0.0, use_sdpa=use_sdpa, **variant)
    randomize_(ours, 1).eval()
    hf = BeitForImageClassification(BeitConfig(
        image_size=64, patch_size=8, hidden_size=128, num_hidden_layers=6, num_attention_heads=4,
        intermediate_size=512, layer_norm_eps=1e-6, layer_scale_init_value=0.1, num_labels=10,
        use_absolute_position_embeddings=variant["use_abs_pos_emb"],
        use_relative_position_bias=variant["use_rel_pos_bias"],
        use_shared_relative_position_bias=variant["use_shared_rel_pos_bias"],
        use_mean_pooling=variant["use_mean_pooling"])).eval()
    missing, unexpected = hf.load_state_dict(_to_hf(ours.state_dict()), strict=False)
    assert not unexpected and all("relative_position_index" in k for k in missing), (missing, unexpected)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        d = (ours(x) - hf(pixel_values=x).logits).abs().max().item()
    assert d <= 1e-4, d


def test_beit_relative_index_closed_form():
    G = 3
    idx = vit.beit_relative_position_index(G)
    n_rel = (2 * G - 1) ** 2 + 3
    assert idx.shape == (G * G + 1, G * G + 1)
    assert idx[0, 0] == n_rel - 1 and idx[0, 5] == n_rel - 3 and idx[5, 0] == n_rel - 2
    for a in range(G * G):
        for b in range(G * G):
            dy, dx = a // G - b // G, a % G - b % G
            assert idx[a + 1, b + 1] == (dy + G - 1) * (2 * G - 1) + dx + G - 1


def test_api_feature_map_mask_layer_ids():
    m = create_model("vit_lite_patch8_64", mask_token=True, drop_path_rate=0.0).eval()
    assert (m.num_features, m.embed_dim, m.patch_size, m.encoder_stride, m.img_size) == (128, 128, 8, 8, 64)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        f = m.forward_features(x)
        assert f.shape == (2, 128, 8, 8)
        toks = m.forward_tokens(x)
        assert torch.allclose(f.flatten(2).transpose(1, 2), toks[:, 1:])
        assert torch.allclose(m(x), m.forward_head(f), atol=1e-5)
        # an all-zero mask changes nothing; an all-one mask replaces every patch token by mask_token
        assert torch.allclose(m.forward_features(x, mask=torch.zeros(2, 8, 8)), f)
        fm = m.forward_features(x, mask=torch.ones(2, 8, 8))
        assert torch.allclose(fm[0], fm[1], atol=1e-5)
    ids = {n: m.get_layer_id(n) for n, _ in m.named_parameters()}
    assert ids["cls_token"] == ids["patch_embed.proj.weight"] == ids["mask_token"] == 0
    assert ids["blocks.0.attn.qkv.weight"] == 1 and ids["blocks.5.mlp.fc2.bias"] == 6
    assert ids["head.weight"] == m.num_layers - 1 == 7
    nwd = m.no_weight_decay()
    assert {"pos_embed", "cls_token", "mask_token", "blocks.0.gamma_1"} <= nwd
    assert "blocks.0.attn.qkv.weight" not in nwd
    m.reset_classifier(0)
    assert m(x).shape == (2, 128)


def test_sdpa_equals_explicit_with_grads():
    m = randomize_(create_model("vit_lite_patch8_64", drop_path_rate=0.0, use_rel_pos_bias=True), 2)
    x = torch.randn(2, 3, 64, 64)
    res = []
    for flag in (True, False):
        m.set_sdpa(flag).zero_grad()
        y = m(x)
        y.square().sum().backward()
        res.append((y.detach(), m.blocks[0].attn.qkv.weight.grad.clone()))
    assert (res[0][0] - res[1][0]).abs().max() < 1e-4
    assert torch.allclose(res[0][1], res[1][1], rtol=1e-3, atol=1e-4)


def test_grad_checkpointing_same_grads():
    m = randomize_(create_model("vit_lite_patch8_64", drop_path_rate=0.0), 3)
    x = torch.randn(2, 3, 64, 64)
    gs = []
    for flag in (False, True):
        m.set_grad_checkpointing(flag).zero_grad()
        m(x).sum().backward()
        gs.append(torch.cat([p.grad.flatten() for p in m.parameters() if p.grad is not None]))
    assert torch.allclose(gs[0], gs[1], atol=1e-6)


def test_convert_and_resize_pos_embed_and_table():
    src = randomize_(create_model("vit_lite_patch8_64", use_rel_pos_bias=True), 4)
    official = {"model": {"encoder." + k: v for k, v in src.state_dict().items()}}
    official["model"]["decoder.0.weight"] = torch.zeros(1)
    dst = create_model("vit_lite_patch8_64", use_rel_pos_bias=True)
    dst.load_state_dict(vit.convert_state_dict(official), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(src.state_dict().values(), dst.state_dict().values()))
    big = create_model("vit_lite_patch8_64", img_size=128, use_rel_pos_bias=True)
    big.load_state_dict(vit.convert_state_dict(src.state_dict(), big), strict=True)
    pe = src.pos_embed.detach()
    ref = F.interpolate(pe[:, 1:].reshape(1, 8, 8, 128).permute(0, 3, 1, 2), size=(16, 16), mode="bicubic",
                        align_corners=False).permute(0, 2, 3, 1).reshape(1, 256, 128)
    assert torch.allclose(big.pos_embed[:, 1:], ref, atol=1e-6) and torch.equal(big.pos_embed[:, :1], pe[:, :1])
    t_src = src.blocks[0].attn.relative_position_bias_table
    t_big = big.blocks[0].attn.relative_position_bias_table
    assert t_big.shape == (31 * 31 + 3, 4) and torch.equal(t_big[-3:], t_src[-3:])


def test_bad_inputs_and_configs():
    m = create_model("vit_lite_patch8_64")
    with pytest.raises(ValueError, match="64x64"):
        m(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError, match="mask token"):
        m.forward_features(torch.randn(1, 3, 64, 64), mask=torch.zeros(1, 8, 8))
    with pytest.raises(ValueError, match="divisible"):
        create_model("vit_lite_patch8_64", img_size=60)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("vit_giant")
    # one registry names every backbone
    from workbench import models, swin_v2
    assert "vit_lite_patch8_64" in models.model_names("vit")
    assert "swinv2_lite_window4_64" in models.model_names("swin")
    assert isinstance(create_model("vit_lite_patch8_64"), vit.VisionTransformer)
    assert isinstance(create_model("swin_tiny_patch4_window7_224", img_size=224), swin_v2.SwinTransformerV2)


# ----------------------------------------------------------------------------------------------------------
# official SimMIM initialisation, feed-forward dropout and layer-decay ids (issue 18.5, 18.7, 18.8)
# ----------------------------------------------------------------------------------------------------------
def _weights(m):
    return [mod.weight for mod in m.modules() if isinstance(mod, (torch.nn.Linear, torch.nn.Conv2d))]


def test_pretraining_encoder_init_is_truncated_at_one_std():
    """VisionTransformerForSimMIM truncates N(0, 0.02) at +-0.02: every weight, the patch-embedding conv,
    the class/mask tokens and the position embedding; biases 0; effective std 0.02 * 0.5399."""
    torch.manual_seed(0)
    m = create_model("vit_lite_patch8_64", mask_token=True, num_classes=0)
    for t in _weights(m) + [m.cls_token, m.mask_token, m.pos_embed]:
        assert t.abs().max() <= 0.02 + 1e-7
    assert m.patch_embed.proj.bias.abs().max() == 0
    # the fc1 / qkv weights are not rescaled: their spread is the truncated normal's
    w = torch.cat([b.mlp.fc1.weight.flatten() for b in m.blocks])
    phi = math.exp(-0.5) / math.sqrt(2 * math.pi)
    expected = 0.02 * math.sqrt(1 - 2 * phi / (2 * 0.5 * math.erf(1 / math.sqrt(2))))
    assert abs(w.std().item() - expected) / expected < 0.03


def test_finetune_init_uses_timm_bounds_and_scales_the_head():
    """The fine-tuning VisionTransformer: N(0, 0.02) with timm's +-2 bounds (no practical truncation) for
    Linear and the patch conv (bias 0, not PyTorch's default), the head scaled by init_scale = 0.001."""
    torch.manual_seed(0)
    m = create_model("vit_lite_patch8_64", num_classes=10)
    w = torch.cat([b.mlp.fc1.weight.flatten() for b in m.blocks])
    assert abs(w.std().item() - 0.02) < 0.001 and w.abs().max() > 0.05
    conv = m.patch_embed.proj
    assert abs(conv.weight.std().item() - 0.02) < 0.002 and conv.bias.abs().max() == 0
    assert conv.weight.abs().max() > 1 / math.sqrt(conv.weight[0].numel())   # beyond kaiming-uniform's bound
    assert 0 < m.head.weight.abs().max() <= 2.0 * 0.001 and abs(m.head.weight.std().item() - 2e-5) < 3e-6
    assert m.head.bias.abs().max() == 0
    m.reset_classifier(4)
    assert m.head.weight.abs().max() < 1e-3


def test_vit_mlp_drops_out_only_after_fc2():
    """The SimMIM/BEiT ViT Mlp has no dropout between GELU and fc2 (Swin's has)."""
    blk = create_model("vit_lite_patch8_64", drop_rate=0.5).blocks[0].mlp.train()
    x = torch.randn(64, 128)
    torch.manual_seed(1)
    y = blk(x)
    ref = blk.fc2(blk.act(blk.fc1(x)))
    kept = y != 0
    assert 0.4 < kept.float().mean() < 0.6
    assert torch.allclose(y[kept], 2 * ref[kept], atol=1e-5)
    from workbench.layers import Mlp
    swin_mlp = Mlp(128, 512, drop=0.5).train()
    torch.manual_seed(1)
    ys = swin_mlp(x)
    ref_s = swin_mlp.fc2(swin_mlp.act(swin_mlp.fc1(x)))
    keep = ys != 0
    assert not torch.allclose(ys[keep], 2 * ref_s[keep], atol=1e-3)   # hidden units were dropped too


def test_layer_ids_follow_official_get_vit_layer():
    m = create_model("vit_lite_patch8_64", use_shared_rel_pos_bias=True, use_abs_pos_emb=True)
    assert m.get_layer_id("rel_pos_bias.relative_position_bias_table") == m.num_layers - 1
    assert m.get_layer_id("pos_embed") == m.get_layer_id("cls_token") == 0
    assert m.get_layer_id("encoder.blocks.2.attn.proj.weight") == 3


def test_finetune_config_matches_official_yaml():
    cfg = vit.CONFIGS["vit_base_patch16_224_finetune"]
    assert cfg.use_mean_pooling and cfg.use_rel_pos_bias and not cfg.use_shared_rel_pos_bias
    assert not cfg.use_abs_pos_emb and cfg.drop_path_rate == 0.1
    pre = vit.CONFIGS["vit_base_patch16_224"]
    assert pre.use_shared_rel_pos_bias and not pre.use_mean_pooling
