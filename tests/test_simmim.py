"""Tests for workbench.simmim: masking, AvgDist, loss, head, model, key mapping, reconstruction.

Oracles: the official generator's documented counts, a chi-square test of uniformity, brute-force float64
distance loops, hand-written loss loops, explicit PixelShuffle index arithmetic, and state round trips.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import simmim as sm

torch.set_num_threads(1)


# ----------------------------------------------------------------------------------------------------------
# a tiny stand-in encoder following the backbone contract (patch embed, mask-token blend, stride, norm)
# ----------------------------------------------------------------------------------------------------------
class TinyEncoder(nn.Module):
    def __init__(self, patch=4, stride=16, dim=8, mask_token=True):
        super().__init__()
        self.patch_size, self.encoder_stride, self.num_features, self.in_chans = patch, stride, dim, 3
        self.num_layers = 4  # ids: patch 0, blocks 1-2, the rest (norm, head) 3
        self.patch_embed = nn.Conv2d(3, dim, patch, patch)
        self.mask_token = nn.Parameter(torch.randn(1, 1, dim) * 0.02) if mask_token else None
        self.blocks = nn.ModuleList([nn.Conv2d(dim, dim, 3, padding=1), nn.Conv2d(dim, dim, 2, 2)])
        self.reduce = nn.Conv2d(dim, dim, stride // patch // 2, stride // patch // 2)
        self.cpb_mlp = nn.Linear(2, 4)  # a name the key mapping must rename
        self.register_buffer("relative_position_index", torch.arange(4))
        self.norm = nn.GroupNorm(1, dim)
        self.last_blend = None

    def forward_features(self, x, mask=None):
        t = self.patch_embed(x)  # (B, C, h, w)
        if mask is not None:
            w = mask.unsqueeze(1).to(t.dtype)
            t = t * (1 - w) + self.mask_token.view(1, -1, 1, 1) * w
        self.last_blend = t
        t = self.blocks[1](F.gelu(self.blocks[0](t)))
        return self.norm(self.reduce(t))

    def get_layer_id(self, name):
        if name.startswith(("patch_embed", "mask_token")):
            return 0
        if name.startswith("blocks."):
            return int(name.split(".")[1]) + 1
        return self.num_layers - 1

    def no_weight_decay(self):
        return {"cpb_mlp"}


def tiny_simmim(**cfg):
    torch.manual_seed(0)
    return sm.SimMIM(TinyEncoder(), sm.SimMIMConfig(**cfg))


# ----------------------------------------------------------------------------------------------------------
# masking
# ----------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("input_size,mask_patch,model_patch,ratio,grid,coarse_count", [
    (192, 32, 4, 0.6, 48, 22),   # official Swin: 6x6 coarse grid, ceil(21.6) = 22
    (224, 32, 16, 0.6, 14, 30),  # official ViT: 7x7 grid, ceil(29.4) = 30
    (64, 16, 4, 0.5, 16, 8),
    (64, 8, 4, 0.75, 16, 48),
    (64, 4, 4, 0.1, 16, 26),     # ceil(25.6)
])
def test_mask_generator_count_and_shape(input_size, mask_patch, model_patch, ratio, grid, coarse_count):
    gen = sm.MaskGenerator(input_size, mask_patch, model_patch, ratio)
    for seed in range(5):
        m = gen(seed=seed)
        assert m.shape == (grid, grid)
        assert set(np.unique(m)) <= {0, 1}
        scale = mask_patch // model_patch
        assert m.sum() == coarse_count * scale * scale
        c = gen.coarse(seed=seed)
        assert np.array_equal(m, np.kron(c, np.ones((scale, scale), dtype=np.int64)))


@pytest.mark.parametrize("n_side", [2, 3, 4, 6, 8, 16])
@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.45, 0.6, 0.9])
def test_mask_count_is_the_ceiling(n_side, ratio):
    gen = sm.MaskGenerator(n_side * 8, 8, 4, ratio)
    n = n_side * n_side
    k = int(gen.coarse(seed=1).sum())
    # smallest integer whose fraction reaches the ratio (allowing the float product the official code uses)
    assert k / n >= ratio - 1e-12 and (k - 1) / n < ratio + 1e-12
    assert k == math.ceil(n * ratio)


def test_mask_is_uniform_chi_square():
    from scipy.stats import chisquare

    gen = sm.MaskGenerator(192, 32, 4, 0.6)
    rng = np.random.default_rng(123)
    draws = 3000
    counts = sum(gen.coarse(rng=rng) for _ in range(draws)).ravel()
    expected = np.full(36, draws * 22 / 36)
    assert counts.sum() == draws * 22
    assert chisquare(counts, expected).pvalue > 1e-3
    # the number of masked mask-patches in each row follows the hypergeometric mean 6 * 22 / 36
    assert np.allclose(counts.reshape(6, 6).sum(1) / draws, 6 * 22 / 36, atol=0.1)


def test_mask_seeding_and_generator():
    gen = sm.MaskGenerator(64, 16, 4, 0.5)
    assert np.array_equal(gen(seed=3), gen(seed=3))
    assert any(not np.array_equal(gen(seed=3), gen(seed=s)) for s in range(4, 10))
    b = gen.batch(4, seed=0)
    assert b.shape == (4, 16, 16) and int(b.sum()) == 4 * 8 * 16


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, float("nan"), "x", None])
def test_bad_ratio_rejected(bad):
    with pytest.raises(ValueError):
        sm.MaskGenerator(64, 16, 4, bad)
    with pytest.raises(ValueError):
        sm.make_mask("square", 64, 16, 4, bad)


def test_bad_sizes_rejected():
    with pytest.raises(ValueError):
        sm.MaskGenerator(64, 24, 4, 0.5)  # 64 not a multiple of 24
    with pytest.raises(ValueError):
        sm.MaskGenerator(64, 16, 6, 0.5)
    with pytest.raises(ValueError):
        sm.make_mask("checkerboard", 64, 16, 4, 0.5)


@pytest.mark.parametrize("ratio", [0.1, 0.25, 0.6, 0.9])
def test_square_mask_is_central(ratio):
    m = sm.square_mask(64, 4, ratio)
    side = int(round(math.sqrt(ratio) * 16))
    assert m.sum() == side * side
    rows, cols = np.nonzero(m)
    assert rows.max() - rows.min() + 1 == side and cols.max() - cols.min() + 1 == side
    # centred: the masked box's centre is within half a token of the image centre
    assert abs((rows.min() + rows.max()) / 2 - 7.5) <= 0.5 and abs((cols.min() + cols.max()) / 2 - 7.5) <= 0.5


def test_blockwise_mask_structure():
    reached = 0
    for seed in range(20):
        m = sm.blockwise_mask(192, 16, 4, 0.4, seed=seed)
        assert m.shape == (48, 48)
        coarse = m[::4, ::4]
        assert np.array_equal(m, np.kron(coarse, np.ones((4, 4), dtype=np.int64)))
        target = math.ceil(144 * 0.4)
        assert coarse.sum() <= target
        reached += coarse.sum() == target
    assert reached >= 15  # BEiT's procedure reaches the target almost always on a 12x12 grid


class _NumpyAsPythonRandom:
    """Python ``random``'s two calls used by BEiT, drawn from a numpy Generator (same stream as ours)."""

    def __init__(self, seed):
        self.g = np.random.default_rng(seed)

    def uniform(self, a, b):  # random.uniform: a + (b - a) * random(), valid for b < a too
        return a + (b - a) * self.g.random()

    def randint(self, a, b):  # inclusive, like random.randint
        return int(self.g.integers(a, b + 1))


def _beit_masking_generator(height, num_masking_patches, min_num_patches, rnd, min_aspect=0.3):
    """BEiT's MaskingGenerator (beit/masking_generator.py) restated with a cell-by-cell loop."""
    width = height
    max_num_patches = num_masking_patches
    log_aspect_ratio = (math.log(min_aspect), math.log(1 / min_aspect))
    mask = np.zeros((height, width), dtype=np.int64)

    def _mask(max_mask_patches):
        delta = 0
        for _attempt in range(10):
            target_area = rnd.uniform(min_num_patches, max_mask_patches)
            aspect_ratio = math.exp(rnd.uniform(*log_aspect_ratio))
            h = int(round(math.sqrt(target_area * aspect_ratio)))
            w = int(round(math.sqrt(target_area / aspect_ratio)))
            if w < width and h < height:
                top = rnd.randint(0, height - h)
                left = rnd.randint(0, width - w)
                num_masked = mask[top: top + h, left: left + w].sum()
                if 0 < h * w - num_masked <= max_mask_patches:
                    for i in range(top, top + h):
                        for j in range(left, left + w):
                            if mask[i, j] == 0:
                                mask[i, j] = 1
                                delta += 1
                if delta > 0:
                    break
        return delta

    mask_count = 0
    while mask_count < num_masking_patches:
        max_mask_patches = min(num_masking_patches - mask_count, max_num_patches)
        delta = _mask(max_mask_patches)
        if delta == 0:
            break
        mask_count += delta
    return mask


@pytest.mark.parametrize("input_size,mask_patch,ratio", [(192, 16, 0.4), (224, 16, 0.4), (64, 8, 0.6)])
def test_blockwise_mask_matches_beit_procedure(input_size, mask_patch, ratio):
    n = input_size // mask_patch
    target = math.ceil(n * n * ratio)
    min_patches = max(1, round(16 / 196 * n * n))
    for seed in range(25):
        ours = sm.blockwise_mask(input_size, mask_patch, mask_patch, ratio, seed=seed)
        ref = _beit_masking_generator(n, target, min_patches, _NumpyAsPythonRandom(seed))
        assert np.array_equal(ours, ref), seed


# ----------------------------------------------------------------------------------------------------------
# AvgDist
# ----------------------------------------------------------------------------------------------------------
def brute_avg_dist(m):
    m = np.asarray(m, dtype=np.int64)
    masked = np.argwhere(m == 1).astype(np.float64)
    visible = np.argwhere(m == 0).astype(np.float64)
    dists = []
    for p in masked:
        best = math.inf
        for q in visible:
            best = min(best, math.sqrt((p[0] - q[0]) ** 2 + (p[1] - q[1]) ** 2))
        dists.append(best)
    return float(np.mean(dists))


@pytest.mark.parametrize("seed", range(6))
def test_avg_dist_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    h, w = rng.integers(3, 13, size=2)
    m = (rng.random((h, w)) < rng.uniform(0.3, 0.9)).astype(np.int64)
    m[0, 0] = 0
    m[-1, -1] = 1
    assert sm.avg_dist(m) == pytest.approx(brute_avg_dist(m), rel=1e-12)


def test_avg_dist_of_upsampled_generator_mask_matches_brute_force():
    gen = sm.MaskGenerator(32, 8, 4, 0.6)
    m = sm.upsample_mask(gen(seed=5), 4)
    assert m.shape == (32, 32)
    assert sm.avg_dist(m) == pytest.approx(brute_avg_dist(m), rel=1e-12)


def test_avg_dist_closed_forms():
    band = np.zeros((5, 9), dtype=np.int64)
    band[:, 3:6] = 1  # a vertical band 3 pixels wide: distances 1, 2, 1
    assert sm.avg_dist(band) == pytest.approx(4 / 3)
    one = np.zeros((4, 4), dtype=np.int64)
    one[2, 1] = 1
    assert sm.avg_dist(one) == 1.0
    assert sm.avg_dist(np.zeros((4, 4))) == 0.0
    assert sm.avg_dist(np.ones((4, 4))) == math.inf
    with pytest.raises(ValueError):
        sm.avg_dist(np.zeros((2, 2, 2)))
    with pytest.raises(ValueError):
        sm.avg_dist(np.full((3, 3), 2))


def test_avg_dist_grows_with_mask_patch_size():
    vals = [sm.expected_avg_dist(192, p, 0.6, draws=4) for p in (4, 8, 16, 32)]
    assert all(a < b for a, b in zip(vals, vals[1:]))


def test_upsample_mask_numpy_and_torch():
    m = np.random.default_rng(0).integers(0, 2, size=(3, 4))
    want = np.kron(m, np.ones((4, 4), dtype=m.dtype))
    assert np.array_equal(sm.upsample_mask(m, 4), want)
    assert np.array_equal(sm.upsample_mask(torch.from_numpy(m)[None], 4)[0].numpy(), want)
    with pytest.raises(ValueError):
        sm.upsample_mask(m, 0)


# ----------------------------------------------------------------------------------------------------------
# loss and targets
# ----------------------------------------------------------------------------------------------------------
def test_masked_l1_equals_hand_computation():
    x = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]], [[0.0, 0.0], [1.0, 1.0]], [[2.0, -1.0], [0.5, 0.5]]]],
                     dtype=torch.float64)
    y = torch.zeros_like(x)
    mask = torch.tensor([[[1, 0], [0, 1]]], dtype=torch.float64)
    # masked pixels (0,0) and (1,1): |x| summed over channels: (1+0+2) + (4+1+0.5) = 8.5
    want = 8.5 / (2 + 1e-5) / 3
    assert float(sm.masked_loss(x, y, mask, "l1")) == pytest.approx(want, rel=1e-12)
    want2 = (1 + 0 + 4 + 16 + 1 + 0.25) / (2 + 1e-5) / 3
    assert float(sm.masked_loss(x, y, mask, "l2")) == pytest.approx(want2, rel=1e-12)
    sl1 = lambda d: 0.5 * d * d if abs(d) < 1 else abs(d) - 0.5  # noqa: E731
    want3 = sum(sl1(v) for v in (1, 0, 2, 4, 1, 0.5)) / (2 + 1e-5) / 3
    assert float(sm.masked_loss(x, y, mask, "smooth_l1")) == pytest.approx(want3, rel=1e-12)


@pytest.mark.parametrize("kind", sm.LOSSES)
def test_loss_ignores_visible_pixels(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    y = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    mask = (torch.rand(2, 8, 8, generator=g) < 0.5).double()
    base = sm.masked_loss(x, y, mask, kind)
    x2 = x + torch.randn_like(x) * (1 - mask[:, None])
    y2 = y + 5 * torch.randn_like(y) * (1 - mask[:, None])
    assert float(sm.masked_loss(x2, y2, mask, kind)) == pytest.approx(float(base), rel=1e-12)
    y3 = y + 0.1 * mask[:, None]
    assert float(sm.masked_loss(x, y3, mask, kind)) != pytest.approx(float(base), rel=1e-6)
    yy = y.clone().requires_grad_(True)
    sm.masked_loss(x, yy, mask, kind).backward()
    assert torch.all(yy.grad * (1 - mask[:, None]) == 0)


def test_local_norm_targets_against_loop():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 2, 7, 6, generator=g, dtype=torch.float64)
    w = 5
    out = sm.local_norm_targets(x, w)
    want = torch.empty_like(x)
    for c in range(2):
        for i in range(7):
            for j in range(6):
                win = x[0, c, max(0, i - 2):i + 3, max(0, j - 2):j + 3].reshape(-1)
                want[0, c, i, j] = (x[0, c, i, j] - win.mean()) / math.sqrt(float(win.var(unbiased=True)) + 1e-6)
    assert torch.allclose(out, want, atol=1e-10)
    with pytest.raises(ValueError):
        sm.local_norm_targets(x, 4)


# ----------------------------------------------------------------------------------------------------------
# head and model
# ----------------------------------------------------------------------------------------------------------
def test_linear_head_is_conv1x1_then_pixel_shuffle():
    torch.manual_seed(0)
    head = sm.build_head(5, 4, 3, "linear").double()
    z = torch.randn(2, 5, 2, 3, dtype=torch.float64)
    with torch.no_grad():
        out = head(z)
    assert out.shape == (2, 3, 8, 12)
    W, b = head[0].weight.detach()[:, :, 0, 0], head[0].bias.detach()
    for n in range(2):
        for c in range(3):
            for i in range(8):
                for j in range(12):
                    h, w, di, dj = i // 4, j // 4, i % 4, j % 4
                    ch = c * 16 + di * 4 + dj
                    v = W[ch] @ z[n, :, h, w] + b[ch]
                    assert float(out[n, c, i, j]) == pytest.approx(float(v), abs=1e-12)
    mlp = sm.build_head(5, 4, 3, "mlp2", hidden=7)
    assert [type(m) for m in mlp] == [nn.Conv2d, nn.GELU, nn.Conv2d, nn.PixelShuffle]
    with pytest.raises(ValueError):
        sm.build_head(5, 4, 3, "transformer")


def test_simmim_requires_mask_token():
    with pytest.raises(ValueError, match="mask_token"):
        sm.SimMIM(TinyEncoder(mask_token=False))


def test_simmim_forward_is_masked_loss_of_prediction():
    model = tiny_simmim()
    x = torch.randn(2, 3, 32, 32)
    mask = sm.MaskGenerator(32, 8, 4, 0.5).batch(2, seed=0).float()
    rec = model.predict(x, mask)
    assert rec.shape == x.shape
    want = sm.masked_loss(x, rec, sm.upsample_mask(mask, 4), "l1")
    assert float(model(x, mask).detach()) == pytest.approx(float(want.detach()), rel=1e-6)
    with pytest.raises(ValueError):
        model(x, mask[:, :4])
    keys = {k for k in model.state_dict() if k.startswith("decoder")}
    assert keys == {"decoder.0.weight", "decoder.0.bias"}


def test_mask_token_only_affects_masked_tokens_in_stand_in():
    model = tiny_simmim()
    x = torch.randn(1, 3, 32, 32)
    mask = torch.from_numpy(sm.MaskGenerator(32, 8, 4, 0.5)(seed=2)).float()[None]
    model.encoder.forward_features(x, mask)
    a = model.encoder.last_blend.clone()
    with torch.no_grad():
        model.encoder.mask_token.add_(1.0)
    model.encoder.forward_features(x, mask)
    diff = (model.encoder.last_blend - a).abs().sum(1)[0]
    assert torch.all(diff[mask[0] == 0] == 0) and torch.all(diff[mask[0] == 1] > 0)


def test_local_target_normalisation_changes_the_target_only():
    model = tiny_simmim(norm_target_window=5)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(model.target(x), sm.local_norm_targets(x, 5))


def test_no_weight_decay_prefixed():
    assert tiny_simmim().no_weight_decay() == {"encoder.cpb_mlp", "encoder.mask_token"}


# ----------------------------------------------------------------------------------------------------------
# checkpoint keys
# ----------------------------------------------------------------------------------------------------------
def test_official_key_round_trip_with_rpe_mlp():
    model = tiny_simmim()
    off = sm.to_official_state_dict(model, rpe_mlp=True)
    keys = set(off["model"])
    assert any(".rpe_mlp." in k for k in keys) and not any(".cpb_mlp." in k for k in keys)
    assert {"decoder.0.weight", "encoder.mask_token"} <= keys
    # an official checkpoint carries a 'module.' prefix sometimes and the derived buffers may be absent
    off2 = {"model": {"module." + k: v for k, v in off["model"].items()
                      if not k.endswith("relative_position_index")}}
    torch.manual_seed(99)
    fresh = sm.SimMIM(TinyEncoder())
    sm.load_official(fresh, off2)
    for k, v in model.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    x = torch.randn(1, 3, 32, 32)
    mask = sm.MaskGenerator(32, 8, 4, 0.5).batch(1, seed=0).float()
    assert torch.equal(fresh(x, mask), model(x, mask))
    bad = {"model": {**off["model"], "encoder.extra.weight": torch.zeros(1)}}
    with pytest.raises(ValueError, match="unexpected"):
        sm.load_official(fresh, bad)


def test_encoder_state_dict_for_finetune():
    model = tiny_simmim()
    enc = sm.encoder_state_dict(sm.to_official_state_dict(model, rpe_mlp=True))
    assert "mask_token" not in enc and not any(k.startswith("decoder") for k in enc)
    assert "cpb_mlp.weight" in enc

    class Clf(TinyEncoder):
        def __init__(self):
            super().__init__(mask_token=False)
            self.head = nn.Linear(8, 4)

    clf = Clf()
    missing = sm.load_encoder_for_finetune(clf, sm.to_official_state_dict(model))
    assert missing == ["head.bias", "head.weight"]
    assert torch.equal(clf.patch_embed.weight, model.encoder.patch_embed.weight)


def test_layer_decay_param_groups():
    enc = TinyEncoder()
    enc.head = nn.Linear(8, 4)
    groups = sm.layer_decay_param_groups(enc, 0.05, 0.5)
    by_name = {n: g for g in groups for n in g["names"]}
    assert by_name["patch_embed.weight"]["lr_scale"] == 0.5 ** 3
    assert by_name["blocks.1.weight"]["lr_scale"] == 0.5 ** 1
    assert by_name["head.weight"]["lr_scale"] == 1.0
    assert by_name["head.bias"]["weight_decay"] == 0.0 and by_name["head.weight"]["weight_decay"] == 0.05
    assert by_name["cpb_mlp.weight"]["weight_decay"] == 0.0
    assert sum(len(g["params"]) for g in groups) == len(list(enc.parameters()))


# ----------------------------------------------------------------------------------------------------------
# reconstruction
# ----------------------------------------------------------------------------------------------------------
def test_reconstruct_composite_and_errors():
    model = tiny_simmim()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    mask = sm.MaskGenerator(32, 8, 4, 0.5)(seed=1)
    r = sm.reconstruct(model, img, mask)
    m = sm.upsample_mask(mask, 4).astype(bool)
    orig = img.astype(np.float32) / 255
    assert np.allclose(r.original, orig)
    assert np.array_equal(r.composite[~m], r.original[~m])
    assert np.array_equal(r.composite[m], r.reconstruction[m])
    assert np.all(r.masked_input[m] == 0.5)
    assert r.avg_dist == pytest.approx(sm.avg_dist(m.astype(int)))
    # the loss is the model's training loss; the per-patch error is a slow loop over patches
    x = sm.normalize(torch.from_numpy(orig).permute(2, 0, 1))[None]
    mt = torch.from_numpy(mask).float()[None]
    with torch.no_grad():
        rec = model.predict(x, mt)
        assert r.loss == pytest.approx(float(model(x, mt)), rel=1e-5)
    e = (x - rec).abs().mean(1)[0].numpy()
    for i in range(8):
        for j in range(8):
            assert r.patch_error[i, j] == pytest.approx(e[4 * i:4 * i + 4, 4 * j:4 * j + 4].mean(), rel=1e-5)


def test_reconstruct_bad_inputs():
    model = tiny_simmim()
    img = np.zeros((32, 32, 3), dtype=np.uint8)
    mask = sm.MaskGenerator(32, 8, 4, 0.5)(seed=1)
    with pytest.raises(ValueError):
        sm.reconstruct(model, img, mask[:4])
    with pytest.raises(ValueError):
        sm.reconstruct(model, np.zeros((32, 32)), mask)
    with pytest.raises(ValueError):
        sm.reconstruct(model, np.full((32, 32, 3), np.nan, dtype=np.float32), mask)
    with pytest.raises(ValueError):
        sm.reconstruct(model, np.zeros((36, 36, 3), dtype=np.uint8), np.zeros((9, 9)))
    with pytest.raises(ValueError):
        sm.reconstruct(model, img, mask * 2)


# ----------------------------------------------------------------------------------------------------------
# the real laptop backbones
# ----------------------------------------------------------------------------------------------------------
BACKBONES = [("swinv2_lite_window4_64", 32, 4, "layers"), ("vit_lite_patch8_64", 8, 8, "blocks")]


@pytest.mark.parametrize("name,stride,patch,first", BACKBONES)
def test_real_backbone_mask_token_only_affects_masked_tokens(name, stride, patch, first):
    torch.manual_seed(0)
    model = sm.build_simmim(name)
    assert model.encoder_stride == stride and model.patch_size == patch
    x = torch.randn(2, 3, 64, 64)
    mask = sm.MaskGenerator(64, 16, patch, 0.5).batch(2, seed=0).float()
    seen = []
    hook = getattr(model.encoder, first)[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].clone()))
    model.eval()
    with torch.no_grad():
        rec = model.predict(x, mask)
        model.encoder.mask_token.add_(0.5)
        model.predict(x, mask)
    hook.remove()
    assert rec.shape == x.shape
    diff = (seen[1] - seen[0]).abs().sum(-1)  # (B, L) or (B, 1 + L) with the class token first
    if diff.shape[1] == mask[0].numel() + 1:
        assert torch.all(diff[:, 0] == 0)
        diff = diff[:, 1:]
    m = mask.flatten(1).bool()
    assert torch.all(diff[~m] == 0) and torch.all(diff[m] > 0)
    # the blended value at a masked token is the mask token itself (plus any position embedding)
    assert torch.allclose((seen[1] - seen[0])[:, -m.shape[1]:][m], torch.full_like(
        (seen[1] - seen[0])[:, -m.shape[1]:][m], 0.5), atol=1e-5)


@pytest.mark.parametrize("name", [b[0] for b in BACKBONES])
def test_real_backbone_official_round_trip_and_finetune_load(name):
    torch.manual_seed(0)
    model = sm.build_simmim(name)
    off = sm.to_official_state_dict(model, rpe_mlp=True)
    if name.startswith("swin"):
        assert any(".rpe_mlp." in k for k in off["model"])
    off["model"] = {k: v for k, v in off["model"].items() if k.rsplit(".", 1)[-1] not in sm.BUFFER_SUFFIXES}
    torch.manual_seed(1)
    fresh = sm.build_simmim(name)
    sm.load_official(fresh, off)
    x = torch.randn(1, 3, 64, 64)
    mask = sm.MaskGenerator(64, 16, model.patch_size, 0.6).batch(1, seed=3).float()
    model.eval(), fresh.eval()
    with torch.no_grad():
        assert torch.equal(model(x, mask), fresh(x, mask))
    from workbench.models import create_model

    clf = create_model(name, num_classes=10)   # the registry builds the fine-tuning classifier
    missing = sm.load_encoder_for_finetune(clf, off)
    clf.eval()
    assert missing and all(k.startswith("head") for k in missing)
    with torch.no_grad():
        assert torch.allclose(clf.forward_features(x), model.encoder.forward_features(x), atol=1e-6)
    groups = sm.layer_decay_param_groups(clf, 0.05, 0.75)
    scales = {n: g["lr_scale"] for g in groups for n in g["names"]}
    assert scales["head.weight"] == 1.0
    assert scales["patch_embed.proj.weight"] == pytest.approx(0.75 ** (clf.num_layers - 1))


# ----------------------------------------------------------------------------------------------------------
# the demo layer, figures and the app tab (random-init models stand in for the checkpoints, except in the
# checkpoint tests at the end)
# ----------------------------------------------------------------------------------------------------------
@pytest.fixture
def random_demo_models(monkeypatch):
    from workbench.demos import common
    from workbench.demos import simmim as demo

    def drop():
        for k in [k for k in common._CACHE if k[0] == demo.__name__]:
            common._CACHE.pop(k, None)

    drop()
    cache = {}
    for label, (_, backbone, _) in demo.MODELS.items():
        torch.manual_seed(0)
        cache[label] = sm.build_simmim(backbone).eval()
    monkeypatch.setattr(demo, "model", lambda label="Swin V2 lite (SimMIM)": (cache[label], {}))
    yield cache
    drop()


def _png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)
    return str(path)


def test_demo_reconstruct_matches_reconstruct_and_avg_dist(random_demo_models):
    from workbench.demos import simmim as demo

    img, notices = demo.image("photo: astronaut")
    assert img.shape == (64, 64, 3) and img.dtype == np.uint8 and notices == []
    r = demo.reconstruct(img, "random", 0.6, 16, 3, "Swin V2 lite (SimMIM)")
    mask = sm.MaskGenerator(64, 16, 4, 0.6)(seed=3)
    want = sm.reconstruct(random_demo_models["Swin V2 lite (SimMIM)"], img, mask)
    assert np.array_equal(r.token_mask, mask) and r.loss == pytest.approx(want.loss)
    np.testing.assert_array_equal(r.reconstruction, want.reconstruction)
    assert r.avg_dist == pytest.approx(sm.avg_dist(sm.upsample_mask(mask, 4)))
    v = demo.reconstruct(img, "square", 0.5, 16, 0, "ViT lite (SimMIM)")
    assert v.token_mask.shape == (8, 8) and np.array_equal(v.token_mask, sm.square_mask(64, 8, 0.5))
    b = demo.reconstruct(img, "blockwise", 0.4, 16, 5)
    assert np.array_equal(b.token_mask, sm.blockwise_mask(64, 16, 4, 0.4, seed=5))


def test_demo_images_of_every_source(random_demo_models, tmp_path):
    from workbench.data import natural, shapes
    from workbench.demos import simmim as demo

    srcs = demo.sources()
    assert srcs[0] == "shapes scene" and f"photo: {natural.photo_names()[0]}" in srcs
    assert all(f"shapes: {c}" in srcs for c in shapes.CLASSES)
    scene, _ = demo.image("shapes scene", 4)
    ref = shapes.generate(n=1, size=64, seed=10_004, min_objects=1, max_objects=2).images[0]
    np.testing.assert_array_equal(scene, ref)
    star, _ = demo.image("shapes: star", 2)
    np.testing.assert_array_equal(star, shapes.render("star", color="red", size="large", background="striped",
                                                      seed=2, image_size=64)["image"])
    grey = _png(tmp_path / "g.png", np.random.default_rng(0).integers(0, 256, size=(80, 120), dtype=np.uint8))
    rgba = _png(tmp_path / "a.png", np.random.default_rng(0).integers(0, 256, size=(70, 70, 4), dtype=np.uint8))
    for p in (grey, rgba):
        arr, notes = demo.image(demo.UPLOAD, upload=p)
        assert arr.shape == (64, 64, 3) and arr.dtype == np.uint8 and notes
    big, notes = demo.image(demo.UPLOAD, upload=np.zeros((3000, 2000, 3), dtype=np.uint8))
    assert big.shape == (64, 64, 3) and any("resized" in n for n in notes)
    (tmp_path / "x.png").write_bytes(b"this is not an image")
    with pytest.raises(ValueError, match="^could not read the image"):
        demo.image(demo.UPLOAD, upload=str(tmp_path / "x.png"))
    with pytest.raises(ValueError):
        demo.image("video: cat")


def test_figures_show_the_reconstruction(random_demo_models):
    from workbench.demos import simmim as demo
    from workbench.viz import core
    from workbench.viz import simmim as vz

    r = demo.reconstruct(demo.image("shapes: star")[0], "random", 0.5, 16, 0)
    fig = vz.reconstruction_figure(r)
    assert len(fig.data) == 1 and fig.data[0].type == "image"
    # the strip decodes back to the five panels (PNG round trip of uint8), composite and error included
    import base64
    import io

    from PIL import Image

    src = fig.data[0].source.split(",", 1)[1]
    png = np.asarray(Image.open(io.BytesIO(base64.b64decode(src))).convert("RGB"))
    assert png.shape == (64, 5 * 64 + 4 * 4, 3)
    panel = lambda i: png[:, i * 68:i * 68 + 64]  # noqa: E731
    assert np.array_equal(panel(0), core.to_uint8_image(r.original))
    assert np.array_equal(panel(3), core.to_uint8_image(r.composite))
    assert np.array_equal(panel(4), vz.error_image(r))
    assert [a.text for a in fig.layout.annotations] == list(vz.PANEL_TITLES)
    hm = vz.error_heatmap_figure(r)
    z = np.asarray(hm.data[1].z, dtype=float)
    assert np.allclose(z[r.token_mask == 1], r.patch_error[r.token_mask == 1]) and np.isnan(z[r.token_mask == 0]).all()
    err = vz.error_image(r)
    m = sm.upsample_mask(r.token_mask, 4).astype(bool)
    assert np.all(err[~m] == 128)
    text = vz.summary_markdown(r, "Swin V2 lite (SimMIM)")
    assert f"{r.avg_dist:.2f}" in text and f"{r.loss:.4f}" in text
    masks = {s: sm.upsample_mask(sm.make_mask(s, 64, 16, 4, 0.5, seed=0), 4) for s in sm.STRATEGIES}
    mf = vz.masks_figure(r.original, masks, {s: sm.avg_dist(m) for s, m in masks.items()})
    assert len(mf.data) == 3


def test_demo_panel_compares_with_classical_inpainting(random_demo_models):
    """The panel's numbers: SimMIM's masked-pixel L1 on this image is recomputed from the reconstruction, the
    biharmonic and mean-colour numbers from the study's inpainters on the same mask."""
    from workbench.demos import simmim as demo
    from workbench.studies.simmim import biharmonic_inpaint, masked_l1, mean_fill_inpaint

    p = demo.panel("shapes scene", "random", 0.6, 16, 1)
    rec = p.values["rec"]
    pm = sm.upsample_mask(rec.token_mask, 4).astype(bool)
    assert p.values["l1"] == pytest.approx(float(np.abs(rec.reconstruction - rec.original)[pm].mean()), rel=1e-6)
    x = torch.from_numpy(rec.original).permute(2, 0, 1)[None]
    t = torch.from_numpy(pm)[None]
    assert p.values["biharmonic"] == pytest.approx(float(masked_l1(biharmonic_inpaint(x, t), x, t)[0]), rel=1e-5)
    assert p.values["mean_fill"] == pytest.approx(float(masked_l1(mean_fill_inpaint(x, t), x, t)[0]), rel=1e-5)
    assert f"SimMIM {p.values['l1']:.3f}" in p.text and f"biharmonic {p.values['biharmonic']:.3f}" in p.text
    assert "160/256" in p.text
    # every patch masked (ratio 0.95 of 16 mask patches rounds up to all 16): no visible pixel for the classical
    # inpainters, the panel still answers
    full = demo.panel("shapes scene", "random", 0.95, 16, 0)
    assert int(full.values["rec"].token_mask.sum()) == 256 and "every pixel masked" in full.text
    assert math.isnan(full.values["biharmonic"]) and "no visible pixel" in full.text and math.isfinite(full.values["l1"])


def test_app_handler_and_guard(random_demo_models, tmp_path):
    import gradio  # noqa: F401

    from workbench.apps import simmim as app
    from workbench.apps.common import guard

    fig, err, text = app.reconstruct("photo: coffee", None, "random", 0.6, 16, 0, "Swin V2 lite (SimMIM)")
    fig2, _, text2 = app.reconstruct("photo: coffee", None, "random", 0.3, 16, 0, "Swin V2 lite (SimMIM)")
    assert "160/256" in text and "80/256" in text2  # ceil(16 * 0.6) = 10 and ceil(16 * 0.3) = 5 mask patches of 16 tokens
    assert text != text2 and fig.data[0].source != fig2.data[0].source
    up = _png(tmp_path / "u.png", np.random.default_rng(1).integers(0, 256, size=(50, 90, 4), dtype=np.uint8))
    f3, _, text3 = app.reconstruct("upload", up, "blockwise", 0.4, 16, 2, "Swin V2 lite (SimMIM)")
    assert len(f3.data) == 1 and "centre square" in text3          # the notices are shown under the summary
    handler = guard(app.reconstruct, 3)
    for args, msg in [(("photo: coffee", None, "random", 1.0, 16, 0, "Swin V2 lite (SimMIM)"), "mask ratio"),
                      (("upload", None, "random", 0.5, 16, 0, "Swin V2 lite (SimMIM)"), "upload"),
                      (("upload", str(tmp_path / "missing.png"), "random", 0.5, 16, 0, "Swin V2 lite (SimMIM)"),
                       "could not read the image"),
                      (("photo: coffee", None, "random", 0.5, 4, 0, "ViT lite (SimMIM)"), "mask patch")]:
        out = handler(*args)
        assert out[:2] == (None, None) and out[2].startswith("⚠️ ") and msg in out[2] and "/" not in out[2], out


def test_app_mask_patch_choices_follow_the_model(random_demo_models):
    import gradio  # noqa: F401

    from workbench.apps import simmim as app
    from workbench.demos import simmim as demo

    upd = app.patch_choices("ViT lite (SimMIM)", 4)
    assert [v for _, v in upd["choices"]] == demo.mask_patches("ViT lite (SimMIM)") == [8, 16, 32]
    assert upd["value"] == 32                      # 4 is not allowed with 8 px patches: the largest is chosen
    upd = app.patch_choices("Swin V2 lite (SimMIM)", 8)
    assert [v for _, v in upd["choices"]] == [4, 8, 16, 32] and upd["value"] == 8


def test_explorer_mirrors_the_app(random_demo_models):
    import ipywidgets  # noqa: F401

    from workbench.apps import simmim as app
    from workbench.widgets import simmim as ws

    ex = ws.simmim_explorer()
    fig, _, text = app.reconstruct("shapes scene", None, "random", 0.6, 16, 0, "Swin V2 lite (SimMIM)")
    assert ex.figure.data[0].source == fig.data[0].source and "160/256" in ex.message.value
    ex.controls["label"].value = "ViT lite (SimMIM)"       # mask-patch options follow the model
    assert list(ex.controls["mask_patch_size"].options) == [8, 16, 32]
    ex.controls["mask_ratio"].value = 0.95
    assert "AvgDist" in ex.message.value


@pytest.mark.parametrize("label", ["Swin V2 lite (SimMIM)", "ViT lite (SimMIM)"])
def test_committed_demo_checkpoint_reconstructs_better_than_baselines(label):
    """The committed demo model beats a random-init model and the 'predict the mean colour' baseline on
    masked L1 over unseen photo crops and shapes scenes (fixed masks)."""
    from workbench.checkpoints import demo_path, load_checkpoint
    from workbench.demos import simmim as demo
    from workbench.studies.simmim import photo_test_images, test_scenes

    name, backbone, command = demo.MODELS[label]
    assert demo_path(name).exists(), f"demo checkpoint missing: run `{command}`"
    assert load_checkpoint(demo_path(name)).meta["command"].startswith("workbench train simmim")
    model, _ = demo.model(label)
    torch.manual_seed(0)
    random_model = sm.build_simmim(backbone).eval()
    imgs = torch.cat([test_scenes(16, seed=99), photo_test_images(n=8, seed=9)])  # sets the demo never used
    x = sm.normalize(imgs)
    mask = sm.MaskGenerator(64, 16, model.patch_size, 0.6).batch(len(x), seed=5).float()
    with torch.no_grad():
        trained, rand = float(model(x, mask)), float(random_model(x, mask))
        mean_pred = float(sm.masked_loss(x, torch.zeros_like(x), sm.upsample_mask(mask, model.patch_size)))
    assert trained < 0.9 * rand and trained < 0.9 * mean_pred


def test_committed_demo_checkpoint_reproduces_its_recorded_inpainting():
    """The numbers the app quotes (SimMIM vs biharmonic on 200 unseen shapes scenes, ratio 0.6, 16 px mask patches,
    mask seed 99) are recomputed from the committed model; the pre-trained model fills masked pixels better than the
    mean visible colour."""
    from workbench.demos import simmim as demo
    from workbench.studies.simmim import inpainting_scores, test_scenes

    model, info = demo.model("Swin V2 lite (SimMIM)")
    rec = (info.get("inpainting") or {}).get("shapes")
    assert rec, "the committed checkpoint records no inpainting numbers: run `workbench train simmim-demo --save-demo`"
    got = inpainting_scores(model, test_scenes())
    for k in ("simmim", "biharmonic", "mean_fill"):
        assert got[k] == pytest.approx(rec[k], rel=0.02, abs=1e-3), k
    assert got["simmim"] < got["mean_fill"]
    p = demo.panel()
    assert f"**{rec['ratio_to_biharmonic']:.2f}×**" in p.text


# ----------------------------------------------------------------------------------------------------------
# fine-tuning remap (official remap_pretrained_keys_swin / _vit)
# ----------------------------------------------------------------------------------------------------------
def test_geometric_positions_official_recipe_window6_to_7():
    # Swin-B: pre-trained window 6 (11 offsets per axis), fine-tuned window 7 (13 offsets)
    x, dx = sm.geometric_positions(11, 13)
    assert np.array_equal(dx, np.arange(-6.0, 7.0))
    assert len(x) == 11 and np.allclose(x, -x[::-1]) and x[5] == 0 and x[6] == 1
    steps = np.diff(x[5:])
    q = steps[2] / steps[1]
    assert np.allclose(steps[1:] / steps[:-1], q) and 1.01 < q < 1.5       # a geometric progression
    assert abs(x[-1] - 6) < 1e-4                                             # reaching dst // 2


def test_resize_table_is_a_not_a_knot_bicubic_interpolant():
    """Independent route: a not-a-knot cubic interpolating spline along one axis then the other (what
    interp2d(kind='cubic') with s=0 computes on a grid)."""
    from scipy.interpolate import make_interp_spline
    g = torch.Generator().manual_seed(0)
    table = torch.randn(11 * 11, 3, generator=g, dtype=torch.float64)
    new = sm.resize_relative_position_table(table, 13 * 13)
    x, dx = sm.geometric_positions(11, 13)
    dxc = np.clip(dx, x[0], x[-1])
    for h in range(3):
        z = table[:, h].reshape(11, 11).numpy()
        rows = make_interp_spline(x, z, k=3, axis=0)(dxc)           # (13, 11)
        ref = make_interp_spline(x, rows, k=3, axis=1)(dxc)          # (13, 13)
        assert np.allclose(new[:, h].reshape(13, 13).numpy(), ref, atol=1e-9)
    # values at the source's own offsets 0 and +-1 are kept (they are nodes of both grids)
    t = table.reshape(11, 11, 3)
    n = new.reshape(13, 13, 3)
    assert torch.allclose(n[6, 6], t[5, 5]) and torch.allclose(n[7, 5], t[6, 4])
    # ViT tables keep their three class-token rows
    vt = torch.randn(11 * 11 + 3, 2, generator=g)
    nv = sm.resize_relative_position_table(vt, 13 * 13 + 3, extra_tokens=3)
    assert nv.shape == (172, 2) and torch.equal(nv[-3:], vt[-3:])
    with pytest.raises(ValueError, match="not square"):
        sm.resize_relative_position_table(table, 150)


def test_swin_v1_pretrained_at_window4_finetunes_at_window8():
    """SimMIM's own recipe pre-trains at one window and fine-tunes at another; the loader resizes."""
    from workbench.models import create_model
    torch.manual_seed(0)
    pre = sm.SimMIM(create_model("swin_lite_window4_64", mask_token=True, num_classes=0), sm.SimMIMConfig())
    clf = create_model("swin_lite_window4_64", window_size=8, num_classes=5)
    missing = sm.load_encoder_for_finetune(clf, sm.to_official_state_dict(pre))
    assert missing == ["head.bias", "head.weight"]
    key = "layers.0.blocks.0.attn.relative_position_bias_table"
    src = pre.encoder.state_dict()[key]
    assert clf.state_dict()[key].shape == (15 * 15, src.shape[1])
    assert torch.allclose(clf.state_dict()[key].reshape(15, 15, -1)[7, 7], src.reshape(7, 7, -1)[3, 3])


def test_vit_shared_bias_is_copied_into_every_block():
    from workbench.models import create_model
    torch.manual_seed(0)
    enc = create_model("vit_lite_patch8_64", mask_token=True, num_classes=0, use_abs_pos_emb=False,
                       use_shared_rel_pos_bias=True, use_mean_pooling=False)
    with torch.no_grad():
        enc.rel_pos_bias.relative_position_bias_table.normal_()
    pre = sm.SimMIM(enc, sm.SimMIMConfig())
    clf = create_model("vit_lite_patch8_64", use_abs_pos_emb=False, use_rel_pos_bias=True,
                       use_mean_pooling=True, num_classes=5)
    missing = sm.load_encoder_for_finetune(clf, sm.to_official_state_dict(pre))
    assert set(missing) == {"head.bias", "head.weight", "fc_norm.bias", "fc_norm.weight"}
    shared = enc.rel_pos_bias.relative_position_bias_table
    for blk in clf.blocks:
        assert torch.equal(blk.attn.relative_position_bias_table, shared)
    assert blk.attn.relative_position_bias_table.data_ptr() != shared.data_ptr()


def test_local_norm_display_uses_the_targets_statistics():
    """Feeding the exact target as the prediction must give back the original image exactly."""
    model = tiny_simmim(norm_target_window=5)
    model.predict = lambda x, m: model.target(x)
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    r = sm.reconstruct(model, img, np.ones((8, 8), dtype=np.int64))
    assert np.abs(r.reconstruction - img / 255.0).max() < 1e-4
