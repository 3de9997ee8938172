"""Tests of workbench.dnl: the decomposition identity, whitening, capture, slow-loop oracles, metrics."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from workbench import dnl

torch.set_num_threads(1)


def _randomise(block: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Replace the zero initialisation by random weights so every branch contributes."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * std)
    return block


def _x(shape, seed=1, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _conv1x1(conv: torch.nn.Conv2d, x: torch.Tensor, i: int, j: int) -> torch.Tensor:
    """The 1x1 conv at one pixel, by hand: W x + b."""
    w = conv.weight[:, :, 0, 0]
    return w @ x[:, i, j] + (conv.bias if conv.bias is not None else 0)


# --------------------------------------------------------------------------------------------------
# the identity and whitening
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_decomposition_identity_random(seed):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 37, 6, generator=g, dtype=torch.float64) * 2 + torch.randn(6, generator=g, dtype=torch.float64)
    k = torch.randn(2, 37, 6, generator=g, dtype=torch.float64) * 2 - 1.5
    scale = 1 / math.sqrt(6)
    pairwise, unary = dnl.decompose_logits(q, k, scale)
    nl = torch.softmax(q @ k.transpose(1, 2) * scale, -1)
    split = torch.softmax(pairwise + unary[:, None, :], -1)
    torch.testing.assert_close(nl, split, rtol=0, atol=1e-12)
    # and the dropped bracket really is constant over keys: logits - pairwise - unary has zero spread per row
    rest = q @ k.transpose(1, 2) * scale - pairwise - unary[:, None, :]
    assert (rest.max(-1).values - rest.min(-1).values).abs().max() < 1e-10


def test_nl_block_attention_equals_whitened_plus_unary_softmax():
    """NL's captured attention equals softmax(whitened pairwise + mu_q.k), computed here by hand from the
    block's own conv weights, one pixel at a time."""
    block = _randomise(dnl.NonLocal2d(6, reduction=2).double())
    x = _x((1, 6, 4, 5))[0]
    pos = [(i, j) for i in range(4) for j in range(5)]
    q = torch.stack([_conv1x1(block.conv_query, x, i, j) for i, j in pos])
    k = torch.stack([_conv1x1(block.conv_key, x, i, j) for i, j in pos])
    mq, mk = q.mean(0), k.mean(0)
    s = 1 / math.sqrt(3)
    logits = torch.stack([torch.stack([((q[a] - mq) @ (k[b] - mk) + mq @ k[b]) * s for b in range(20)])
                          for a in range(20)])
    _, maps = dnl.attention_maps(block, x[None])
    torch.testing.assert_close(maps[""]["pairwise"][0], torch.softmax(logits, -1), rtol=0, atol=1e-12)


def test_whitening_invariant_to_constant_shift_of_keys_and_queries():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(1, 30, 4, generator=g, dtype=torch.float64)
    k = torch.randn(1, 30, 4, generator=g, dtype=torch.float64)
    c = torch.randn(4, generator=g, dtype=torch.float64) * 5
    p0, _ = dnl.decompose_logits(q, k)
    p_k, _ = dnl.decompose_logits(q, k + c)
    p_q, _ = dnl.decompose_logits(q + c, k)
    torch.testing.assert_close(p_k, p0, rtol=0, atol=1e-12)
    torch.testing.assert_close(p_q, p0, rtol=0, atol=1e-12)


def test_dnl_pairwise_invariant_to_key_and_query_bias_but_nl_is_not():
    """Shifting the query/key conv biases adds a constant vector to every query/key.  DNL's whitened
    pairwise map ignores both; NL's attention changes with a query shift (the unary term mu_q.k moves)."""
    x = _x((2, 8, 5, 6))
    dnl_block = _randomise(dnl.DNL2d(8).double())
    nl_block = _randomise(dnl.NonLocal2d(8).double())

    def maps(block):
        return dnl.attention_maps(block, x)[1][""]["pairwise"]

    base_dnl, base_nl = maps(dnl_block), maps(nl_block)
    shift = torch.randn(4, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 3
    with torch.no_grad():
        dnl_block.conv_key.bias += shift
        dnl_block.conv_query.bias -= 2 * shift
        nl_block.conv_query.bias -= 2 * shift
    torch.testing.assert_close(maps(dnl_block), base_dnl, rtol=0, atol=1e-12)
    assert (maps(nl_block) - base_nl).abs().max() > 1e-3


# --------------------------------------------------------------------------------------------------
# slow-loop oracles of the three blocks (the fast SDPA path against float64 loops)
# --------------------------------------------------------------------------------------------------
def _loop_dnl(block, x, pairwise=True, unary=True):
    b, c, h, w = x.shape
    out = torch.empty_like(x)
    d = block.value_channels
    for n in range(b):
        pos = [(i, j) for i in range(h) for j in range(w)]
        v = torch.stack([_conv1x1(block.conv_value, x[n], i, j) for i, j in pos])
        agg = torch.zeros(len(pos), d, dtype=x.dtype)
        if pairwise:
            q = torch.stack([_conv1x1(block.conv_query, x[n], i, j) for i, j in pos])
            k = torch.stack([_conv1x1(block.conv_key, x[n], i, j) for i, j in pos])
            q, k = q - q.mean(0), k - k.mean(0)
            for a in range(len(pos)):
                logit = torch.stack([q[a] @ k[bb] for bb in range(len(pos))]) / math.sqrt(block.inter_channels) / block.temperature
                wgt = torch.exp(logit - logit.max())
                agg[a] += block.gamma[0] * (wgt / wgt.sum()) @ v
        if unary:
            m = torch.stack([_conv1x1(block.conv_mask, x[n], i, j)[0] for i, j in pos])
            wu = torch.exp(m - m.max())
            agg += (wu / wu.sum()) @ v
        for i, j in pos:
            y = agg.T.reshape(d, h, w)
            out[n, :, i, j] = x[n, :, i, j] + (y[:, i, j] if block.conv_out is None else _conv1x1(block.conv_out, y, i, j))
    return out


@pytest.mark.parametrize("use_out", [False, True])
@pytest.mark.parametrize("shape", [(1, 6, 3, 5), (2, 6, 4, 4), (1, 6, 7, 2)])
@pytest.mark.parametrize("kind", ["dnl", "pairwise", "unary"])
def test_dnl_block_matches_slow_loop(shape, kind, use_out):
    block = _randomise(dnl.DNL2d(6, temperature=0.3, pairwise=kind != "unary", unary=kind != "pairwise",
                                 use_out=use_out).double())
    x = _x(shape)
    got = block(x)
    want = _loop_dnl(block, x, pairwise=kind != "unary", unary=kind != "pairwise")
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("shape", [(1, 4, 3, 5), (2, 4, 5, 5)])
def test_nl_block_matches_slow_loop(shape):
    block = _randomise(dnl.NonLocal2d(4, reduction=1).double())
    x = _x(shape)
    b, c, h, w = shape
    pos = [(i, j) for i in range(h) for j in range(w)]
    want = torch.empty_like(x)
    for n in range(b):
        q = torch.stack([_conv1x1(block.conv_query, x[n], i, j) for i, j in pos])
        k = torch.stack([_conv1x1(block.conv_key, x[n], i, j) for i, j in pos])
        v = torch.stack([_conv1x1(block.conv_value, x[n], i, j) for i, j in pos])
        for a, (i, j) in enumerate(pos):
            logit = torch.stack([q[a] @ k[bb] for bb in range(len(pos))]) / math.sqrt(4)
            agg = torch.softmax(logit, 0) @ v
            want[n, :, i, j] = x[n, :, i, j] + block.conv_out.weight[:, :, 0, 0] @ agg + block.conv_out.bias
    torch.testing.assert_close(block(x), want, rtol=1e-9, atol=1e-9)


def test_gc_block_matches_slow_loop():
    block = _randomise(dnl.GlobalContext2d(8, reduction=2).double())
    x = _x((2, 8, 3, 4))
    want = torch.empty_like(x)
    for n in range(2):
        pos = [(i, j) for i in range(3) for j in range(4)]
        m = torch.stack([_conv1x1(block.conv_mask, x[n], i, j)[0] for i, j in pos])
        wu = torch.softmax(m, 0)
        ctx = sum(wu[a] * x[n, :, i, j] for a, (i, j) in enumerate(pos))
        t1 = block.transform[0].weight[:, :, 0, 0] @ ctx + block.transform[0].bias
        ln = block.transform[1]
        t1 = (t1 - t1.mean()) / torch.sqrt(t1.var(unbiased=False) + ln.eps) * ln.weight[:, 0, 0] + ln.bias[:, 0, 0]
        t2 = block.transform[3].weight[:, :, 0, 0] @ torch.relu(t1) + block.transform[3].bias
        want[n] = x[n] + t2[:, None, None]
    torch.testing.assert_close(block(x), want, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("kind", ["nl", "gc", "pairwise"])
def test_fresh_blocks_are_identity(kind):
    """NL and GC: zero-initialised output projections; pairwise-only DNL: gamma = 0 (official). A new block
    passes its input through unchanged."""
    x = _x((2, 8, 5, 3), dtype=torch.float32)
    torch.testing.assert_close(dnl.make_block(kind, 8)(x), x, rtol=0, atol=0)


def test_dnl_official_configuration():
    """The official shipped block (use_out=False): q/k of width C/2, value C -> C without bias, no W_out,
    gamma = 0, convolutions N(0, 0.01) with zero biases."""
    torch.manual_seed(0)
    block = dnl.DNL2d(64)
    assert block.conv_query.out_channels == block.conv_key.out_channels == 32
    assert block.conv_value.out_channels == 64 and block.conv_value.bias is None and block.conv_out is None
    assert block.gamma.item() == 0.0
    w = torch.cat([block.conv_query.weight.flatten(), block.conv_key.weight.flatten(), block.conv_value.weight.flatten()])
    assert abs(w.std().item() - 0.01) < 0.001 and abs(w.mean().item()) < 0.001
    assert block.conv_query.bias.abs().max() == 0 and block.conv_mask.bias.abs().max() == 0


@pytest.mark.parametrize("use_out", [False, True])
def test_every_dnl_parameter_learns(use_out):
    """Official initialisation: at step 1 the unary path feeds value, mask and gamma (and W_out) a gradient;
    after one SGD step gamma is non-zero and queries and keys receive one too — every parameter learns."""
    torch.manual_seed(0)
    block = dnl.DNL2d(8, temperature=0.5, use_out=use_out)
    x, target = torch.randn(4, 8, 6, 6), torch.randn(4, 8, 6, 6)
    opt = torch.optim.SGD(block.parameters(), lr=0.5)

    def grads():
        opt.zero_grad()
        torch.nn.functional.mse_loss(block(x), target).backward()
        return {n: p.grad.abs().sum().item() for n, p in block.named_parameters()}

    first = grads()
    for name in ("gamma", "conv_value.weight", "conv_mask.weight"):
        assert first[name] > 0, name
    assert first["conv_query.weight"] == 0.0 == first["conv_key.weight"]   # gamma = 0 blocks them at step 1
    opt.step()
    second = grads()
    assert block.gamma.abs().item() > 0
    # the query and key biases (whitened away) and the unary mask's bias (one constant added to every position's
    # logit) shift logits that a softmax normalises: their gradient is zero up to rounding (exactly 0 or 1e-19 to
    # 1e-10 depending on the CPU's kernels), so they are checked against the scale of the others, not for being > 0
    shift_invariant = {"conv_query.bias", "conv_key.bias", "conv_mask.bias"}
    scale = max(second.values())
    assert all(second[n] < 1e-6 * scale for n in shift_invariant if n in second), second
    assert all(v > 0 for n, v in second.items() if n not in shift_invariant), second


# --------------------------------------------------------------------------------------------------
# capture
# --------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["nl", "dnl", "gc", "pairwise", "unary"])
@pytest.mark.parametrize("shape", [(1, 8, 5, 7), (3, 8, 4, 4), (2, 8, 1, 9)])
def test_capture_keeps_outputs_and_rows(kind, shape):
    block = _randomise(dnl.make_block(kind, 8, temperature=0.2), std=0.4)
    x = _x(shape, dtype=torch.float32)
    plain = block(x)
    captured, full = dnl.attention_maps(block, x)
    n = shape[2] * shape[3]
    queries = [0, n - 1, n // 2]
    captured_rows, rows = dnl.attention_maps(block, x, queries=queries)
    torch.testing.assert_close(captured, plain, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(captured_rows, plain, rtol=0, atol=0)  # rows use the fast path unchanged
    entry, part = full[""], rows[""]
    assert entry["hw"] == shape[2:]
    if "pairwise" in entry:
        assert entry["pairwise"].shape == (shape[0], n, n)
        torch.testing.assert_close(entry["pairwise"].sum(-1), torch.ones(shape[0], n))
        assert part["pairwise"].shape == (shape[0], 3, n)
        torch.testing.assert_close(part["pairwise"], entry["pairwise"][:, queries], rtol=1e-5, atol=1e-6)
    if "unary" in entry:
        assert entry["unary"].shape == (shape[0], n)
        torch.testing.assert_close(entry["unary"].sum(-1), torch.ones(shape[0]))
        torch.testing.assert_close(part["unary"], entry["unary"])
    assert ("pairwise" in entry) == (kind in ("nl", "dnl", "pairwise"))
    assert ("unary" in entry) == (kind != "pairwise")


@pytest.mark.parametrize("kind", ["nl", "dnl", "pairwise"])
def test_explicit_path_matches_sdpa(kind):
    block = _randomise(dnl.make_block(kind, 8, temperature=0.2), std=0.4)
    x = _x((2, 8, 6, 5), dtype=torch.float32)
    fast = block(x)
    block.attention = "explicit"
    torch.testing.assert_close(block(x), fast, rtol=1e-5, atol=1e-5)
    block.attention = "flash"
    with pytest.raises(ValueError, match="attention"):
        block(x)


@pytest.mark.parametrize("kind", ["nl", "dnl"])
def test_fast_path_uses_the_fused_sdpa_kernel(kind):
    """The fast path must not fall back to SDPA's math kernel (which builds the HW x HW matrix): the fused
    CPU kernel needs contiguous inputs, and a transposed view would silently lose it."""
    from torch.profiler import ProfilerActivity, profile

    block = dnl.make_block(kind, 8).eval()
    x = torch.randn(1, 8, 6, 7)
    with torch.no_grad(), profile(activities=[ProfilerActivity.CPU]) as prof:
        block(x)
    ops = {e.key for e in prof.key_averages()}
    assert "aten::scaled_dot_product_attention" in ops
    assert "aten::_scaled_dot_product_attention_math" not in ops, sorted(ops)


def test_nl_capture_terms_match_decomposition():
    block = _randomise(dnl.NonLocal2d(8))
    x = _x((2, 8, 4, 6), dtype=torch.float32)
    _, maps = dnl.attention_maps(block, x)
    f = lambda conv: conv(x).flatten(2).transpose(1, 2)  # noqa: E731
    pw, un = dnl.decompose_logits(f(block.conv_query), f(block.conv_key), block.scale)
    torch.testing.assert_close(maps[""]["whitened"], torch.softmax(pw, -1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(maps[""]["unary"], torch.softmax(un, -1), rtol=1e-5, atol=1e-6)


def test_capture_query_forms_agree_and_reject_bad_queries():
    block = _randomise(dnl.DNL2d(8))
    x = _x((1, 8, 4, 6), dtype=torch.float32)
    _, flat = dnl.attention_maps(block, x, queries=[7, 20])
    _, rc = dnl.attention_maps(block, x, queries=[(1, 1), (3, 2)])
    torch.testing.assert_close(flat[""]["pairwise"], rc[""]["pairwise"], rtol=0, atol=0)
    for bad in ([24], [-1], [(4, 0)], [(0, 6)], [[1, 2, 3]]):
        with pytest.raises(ValueError):
            dnl.attention_maps(block, x, queries=bad)
    from workbench import inspect
    assert not inspect.active()  # nothing is left open after an exception


def test_capture_on_segnet_names_blocks_and_is_removed_afterwards():
    net = dnl.SegNet(head="dnl").eval()
    x = torch.rand(2, 3, 40, 56)
    y, maps = dnl.attention_maps(net, x, queries=[3])
    assert list(maps) == ["block"]
    assert maps["block"]["hw"] == (5, 7) and maps["block"]["pairwise"].shape == (2, 1, 35)
    torch.testing.assert_close(net(x), y, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="no NonLocal2d"):
        dnl.attention_maps(dnl.SegNet(head="none"), x)


def test_temperature_scales_whitened_logits():
    block = _randomise(dnl.DNL2d(8, temperature=0.1))
    x = _x((1, 8, 5, 5), dtype=torch.float64)
    block.double()

    def logits():
        return dnl.attention_maps(block, x)[1][""]["pairwise"][0].log()  # log softmax = logits - logsumexp(row)

    a = logits()
    block.temperature = 0.4
    b = logits()
    # centred log-rows scale by T_old / T_new
    ca, cb = a - a.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    torch.testing.assert_close(cb, ca * 0.25, rtol=1e-9, atol=1e-9)
    for bad in (0, -1, float("nan"), float("inf"), 1e9, "hot"):
        with pytest.raises(ValueError):
            block.temperature = bad


def test_blocks_reject_bad_inputs():
    block = dnl.DNL2d(8)
    with pytest.raises(ValueError, match="channels"):
        block(torch.randn(1, 4, 3, 3))
    with pytest.raises(ValueError, match="feature map"):
        block(torch.randn(8, 3, 3))
    with pytest.raises(ValueError):
        dnl.make_block("transformer", 8)
    with pytest.raises(ValueError):
        dnl.DNL2d(8, pairwise=False, unary=False)
    with pytest.raises(ValueError):
        dnl.SegNetConfig(head="bogus")
    with pytest.raises(ValueError):
        dnl.SegNet(head="dnl")(torch.rand(1, 1, 32, 32))


@pytest.mark.parametrize("hw", [(64, 64), (45, 71), (8, 8)])
def test_segnet_shapes(hw):
    net = dnl.SegNet(head="nl", num_classes=5).eval()
    assert net(torch.rand(1, 3, *hw)).shape == (1, 5, *hw)


# --------------------------------------------------------------------------------------------------
# metrics and statistics
# --------------------------------------------------------------------------------------------------
def test_confusion_and_miou_against_sklearn():
    from sklearn.metrics import confusion_matrix as sk_conf
    from sklearn.metrics import jaccard_score

    rng = np.random.default_rng(0)
    t = rng.integers(0, 5, size=500)
    p = np.where(rng.random(500) < 0.6, t, rng.integers(0, 4, size=500))  # class 4 never predicted
    conf = dnl.confusion_matrix(torch.from_numpy(p), torch.from_numpy(t), 6)  # class 5 absent everywhere
    np.testing.assert_array_equal(conf.numpy(), sk_conf(t, p, labels=range(6)))
    m, iou = dnl.miou(conf)
    want = jaccard_score(t, p, labels=range(5), average=None)
    np.testing.assert_allclose(iou[:5].numpy(), want, rtol=1e-12)
    assert math.isnan(iou[5]) and m == pytest.approx(want.mean(), rel=1e-12)
    with pytest.raises(ValueError):
        dnl.confusion_matrix(torch.tensor([0, 7]), torch.tensor([0, 1]), 6)


def test_boundary_map_against_scipy():
    from scipy import ndimage

    rng = np.random.default_rng(1)
    m = np.zeros((2, 20, 23), dtype=np.uint8)
    m[0, 3:9, 4:15] = 2
    m[0, 12:18, 10:20] = 5
    m[1] = rng.integers(0, 3, size=(20, 23)) * (rng.random((20, 23)) < 0.1)
    for r in (1, 2):
        got = dnl.boundary_map(torch.from_numpy(m), r).numpy()
        size = (1, 2 * r + 1, 2 * r + 1)
        want = ndimage.maximum_filter(m, size, mode="nearest") != ndimage.minimum_filter(m, size, mode="nearest")
        np.testing.assert_array_equal(got.astype(bool), want)


def test_within_region_share_loop_and_limits():
    rng = np.random.default_rng(2)
    masks = np.zeros((2, 16, 16), dtype=np.int64)
    masks[0, 2:10, 3:9] = 3
    masks[0, 11:15, 10:16] = 1
    masks[1, 4:12, 4:12] = 2
    hw, n = (4, 4), 16
    attn = torch.from_numpy(rng.random((2, n, n)))
    attn = attn / attn.sum(-1, keepdim=True)
    got = dnl.within_region_share(attn, torch.from_numpy(masks), hw, num_labels=4)
    # loop oracle: cells are 4x4 pixel blocks
    shares, unif = [], []
    for b in range(2):
        frac = np.zeros((4, n))
        for lab in range(4):
            frac[lab] = (masks[b] == lab).reshape(4, 4, 4, 4).mean(axis=(1, 3)).reshape(-1)
        for i in range(n):
            lab = int(np.argmax(frac[:, i]))
            if lab == 0:
                continue
            shares.append(float(attn[b, i].numpy() @ frac[lab]))
            unif.append(frac[lab].mean())
    assert got["n"] == len(shares)
    assert got["share"] == pytest.approx(np.mean(shares), rel=1e-12)
    assert got["uniform"] == pytest.approx(np.mean(unif), rel=1e-12)
    # uniform attention: lift exactly 1; attention only on the query's own cell: share = own cell purity
    flat = dnl.within_region_share(torch.full((2, n, n), 1 / n), torch.from_numpy(masks), hw)
    assert flat["lift"] == pytest.approx(1.0, rel=1e-12)
    eye = dnl.within_region_share(torch.eye(n).expand(2, n, n), torch.from_numpy(masks), hw, queries=None)
    assert eye["share"] > got["share"] and eye["lift"] > 1
    rows = dnl.within_region_share(attn[:, [5, 6]], torch.from_numpy(masks), hw, queries=[5, 6])
    assert rows["n"] == 3  # cells 5, 6 are objects in image 0 (label 3); in image 1 only cell 5 is (label 2)


def test_boundary_concentration_against_numpy():
    masks = np.zeros((2, 16, 16), dtype=np.int64)
    masks[0, 4:12, 4:12] = 1
    masks[1, 0:8, :] = 2
    rng = np.random.default_rng(3)
    u = torch.from_numpy(rng.random((2, 16)))
    u = u / u.sum(-1, keepdim=True)
    got = dnl.boundary_concentration(u, torch.from_numpy(masks), (4, 4), radius=2)
    bmap = dnl.boundary_map(torch.from_numpy(masks), 2).numpy()
    b = bmap.reshape(2, 4, 4, 4, 4).mean(axis=(2, 4)).reshape(2, 16)
    corr = np.mean([np.corrcoef(u[i].numpy(), b[i])[0, 1] for i in range(2)])
    assert got["corr"] == pytest.approx(corr, rel=1e-10)
    assert got["mass"] == pytest.approx(np.mean((u.numpy() * b).sum(-1)), rel=1e-12)
    assert got["uniform"] == pytest.approx(b.mean(), rel=1e-12)
    # a map that puts all mass on the most boundary-heavy cell has lift = max(b) / mean(b)
    peak = torch.zeros(2, 16, dtype=torch.float64)
    peak[torch.arange(2), torch.from_numpy(b.argmax(-1))] = 1
    assert dnl.boundary_concentration(peak, torch.from_numpy(masks), (4, 4))["mass"] == pytest.approx(b.max(-1).mean())


def test_object_concentration_loop():
    masks = np.zeros((2, 8, 8), dtype=np.int64)
    masks[0, 0:4, 0:4] = 2
    masks[1, 2:8, 3:5] = 1
    rng = np.random.default_rng(4)
    u = rng.random((2, 16))
    u /= u.sum(-1, keepdims=True)
    got = dnl.object_concentration(torch.from_numpy(u), torch.from_numpy(masks), (4, 4))
    o = (masks > 0).reshape(2, 4, 2, 4, 2).mean(axis=(2, 4)).reshape(2, 16)
    assert got["mass"] == pytest.approx(np.mean((u * o).sum(-1)), rel=1e-12)
    assert got["uniform"] == pytest.approx(o.mean(), rel=1e-12)


def test_query_index():
    assert dnl.query_index(0, 0, (64, 64), (8, 8)) == 0
    assert dnl.query_index(63, 63, (64, 64), (8, 8)) == 63
    assert dnl.query_index(17, 40, (64, 64), (8, 8)) == 2 * 8 + 5
    with pytest.raises(ValueError):
        dnl.query_index(64, 0, (64, 64), (8, 8))


# --------------------------------------------------------------------------------------------------
# the demo layer (workbench.demos.dnl), the app tab and the explorer. Random-initialised SegNets stand in for the
# demo checkpoints (being retrained), except in the checkpoint tests at the end.
# --------------------------------------------------------------------------------------------------
def _drop_demo_cache():
    from workbench.demos import common

    common.clear_cache("workbench.demos.dnl")


@pytest.fixture
def standin(monkeypatch):
    from workbench.demos import dnl as demo

    _drop_demo_cache()
    nets = {}
    for i, head in enumerate(demo.HEADS):
        torch.manual_seed(i)
        net = dnl.SegNet(dnl.SegNetConfig(head=head, temperature=0.05)).eval()
        _randomise(net, seed=10 + i, std=0.3)     # every branch contributes: maps far from uniform, gamma != 0
        nets[head] = net
    monkeypatch.setattr(demo, "model", lambda head: nets[head])
    yield nets
    _drop_demo_cache()


def _normalised(image):
    from workbench.data.transforms import normalize

    return normalize(torch.from_numpy(image).permute(2, 0, 1).float().div(255))[None]


def test_explore_maps_follow_the_query_and_match_a_direct_capture(standin):
    from workbench.demos import dnl as demo

    image, mask, _ = demo.image(demo.SCENE, 0)
    a = demo.explore(image, (44, 46), mask=mask)
    b = demo.explore(image, (16, 16), mask=mask)
    hw = (64 // standin["dnl"].cfg.stride,) * 2
    for name in ("NL attention", "DNL pairwise"):
        assert a.maps[name].shape == hw
        assert a.maps[name].sum() == pytest.approx(1.0, abs=1e-5)
        assert np.abs(a.maps[name] - b.maps[name]).max() > 1e-4  # the pairwise maps depend on the query
    np.testing.assert_array_equal(a.maps["DNL unary"], b.maps["DNL unary"])  # the unary map does not
    # the same rows straight from a full capture of each model, on the normalised image
    q = dnl.query_index(44, 46, (64, 64), hw)
    for head, name, unary in (("dnl", "DNL pairwise", "DNL unary"), ("nl", "NL attention", "NL implicit unary")):
        with torch.no_grad():
            logits, full = dnl.attention_maps(standin[head], _normalised(image))
        np.testing.assert_allclose(a.maps[name].reshape(-1), full["block"]["pairwise"][0, q].numpy(), rtol=1e-5,
                                   atol=1e-6)
        np.testing.assert_allclose(a.maps[unary].reshape(-1), full["block"]["unary"][0].numpy(), rtol=1e-5, atol=1e-7)
        np.testing.assert_array_equal(a.segmentation[head], logits.argmax(1)[0].numpy())
    assert a.query_cell == divmod(q, hw[1])
    # statistics against the scene's mask: the within-region share is the map's mass on the query's own label
    s = a.stats["DNL pairwise"]
    assert s["n"] in (0, 1)
    if s["n"]:
        own = mask[44, 46]
        cells = dnl.label_fractions(torch.from_numpy(mask)[None], hw, int(mask.max()) + 1)[0, own].numpy()
        assert s["share"] == pytest.approx(float((a.maps["DNL pairwise"].reshape(-1) * cells).sum()), rel=1e-4)


def test_explore_temperature_only_changes_dnl_pairwise(standin):
    from workbench.demos import dnl as demo

    image, _, _ = demo.image("photo: astronaut")
    a = demo.explore(image, (30, 30), temperature=0.5)
    b = demo.explore(image, (30, 30), temperature=2.0)
    assert b.temperature == 2.0 and demo.model("dnl").block.temperature == 0.05  # the shared model is untouched
    assert demo.explore(image, (30, 30)).temperature == 0.05                       # default: the trained one
    np.testing.assert_array_equal(a.maps["NL attention"], b.maps["NL attention"])
    np.testing.assert_array_equal(a.maps["DNL unary"], b.maps["DNL unary"])
    # a higher temperature flattens the whitened pairwise map: centred log-rows scale by T_old / T_new
    la, lb = np.log(a.maps["DNL pairwise"].astype(np.float64)), np.log(b.maps["DNL pairwise"].astype(np.float64))
    np.testing.assert_allclose(lb - lb.mean(), (la - la.mean()) * 0.25, rtol=1e-3, atol=1e-3)
    assert b.maps["DNL pairwise"].max() < a.maps["DNL pairwise"].max()
    with pytest.raises(ValueError):
        demo.explore(np.zeros((64, 64), np.uint8))
    with pytest.raises(ValueError, match="square"):
        demo.explore(np.zeros((64, 32, 3), np.uint8))


def test_explore_is_thread_safe_on_the_shared_models(standin):
    """16 requests at once on the shared cached models (the "10 of 48 fail under 16 parallel clients" bug): each
    gets exactly the maps of its own query, as computed alone."""
    import threading

    from workbench.demos import dnl as demo

    image, mask, _ = demo.image(demo.SCENE, 3)
    queries = [(4 * i + 2, 63 - 4 * i) for i in range(16)]
    alone = {q: demo.explore(image, q, temperature=0.05 + 0.05 * (i % 2), mask=mask) for i, q in enumerate(queries)}
    barrier = threading.Barrier(16)
    got, errors = {}, []

    def work(i, q):
        try:
            barrier.wait(timeout=30)
            got[q] = demo.explore(image, q, temperature=0.05 + 0.05 * (i % 2), mask=mask)
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i, q)) for i, q in enumerate(queries)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for q in queries:
        for name, m in alone[q].maps.items():
            np.testing.assert_allclose(got[q].maps[name], m, rtol=1e-5, atol=1e-7, err_msg=f"{q} {name}")
        assert got[q].query == q


def test_app_functions(standin, tmp_path):
    import gradio  # noqa: F401
    from PIL import Image

    from workbench.apps import dnl as app
    from workbench.apps.common import guard
    from workbench.demos import dnl as demo

    path, att, seg, query, text = app.update("shapes scene", 0, None, 0.05, (44, 46))
    img = np.asarray(Image.open(path))
    p = demo.panel("shapes scene", 0, 0.05, (44, 46))
    assert img.shape == (app.CLICK_DISPLAY, app.CLICK_DISPLAY, 3) and query == (44, 46)
    np.testing.assert_array_equal(img, p.values["click_image"])
    assert text == p.text and "row 44, col 46" in text and "own label" in text
    assert len(att.data) == 4 and len(seg.data) == 4  # four maps; image, NL, DNL, ground truth
    # a click on the enlarged image chooses the query; without a click the query stays
    *_, q2, text2 = app.select("shapes scene", 0, None, 0.05, (44, 46), [64, 128])
    assert q2 == (32, 16) and "row 32, col 16" in text2
    assert app.select("shapes scene", 0, None, 0.05, (44, 46), None)[3] == (44, 46)
    # uploads: grayscale converted, huge resized (with notices), non-images refused with a clear message
    big = tmp_path / "big.png"
    Image.fromarray(np.full((2400, 1600), 128, np.uint8)).save(big)
    *_, text3 = app.update("upload", 0, str(big), 0.05, None)
    assert "converted" in text3 and "64x64" in text3
    bad = tmp_path / "x.png"
    bad.write_text("not an image")
    handler = guard(app.update, 5)
    for args, msg in (((demo.UPLOAD, 0, str(bad), 0.05, None), "could not read the image"),
                      ((demo.UPLOAD, 0, None, 0.05, None), "upload"),
                      (("photo: nowhere", 0, None, 0.05, None), "unknown photo"),
                      (("shapes scene", 0, None, 0.0, (1, 1)), "temperature")):
        out = handler(*args)
        assert out[:4] == (None,) * 4 and out[4].startswith("⚠️ ") and msg in out[4] and "/" not in out[4], out


def test_widget_render_matches_the_panel(standin):
    from workbench.demos import dnl as demo
    from workbench.widgets import dnl as wd

    fig, text = wd.render("shapes scene", 0, 44, 46, 0.05)
    p = demo.panel("shapes scene", 0, 0.05, (44, 46))
    assert fig.to_json() == p.figures["overview"].to_json()
    assert "row 44, col 46" in text and "own label" in text and "**" not in text
    with pytest.raises(ValueError):
        wd.render("shapes scene", 0, 80, 0, 0.05)
    ex = wd.dnl_explorer()
    ex.controls["row"].value = 10
    assert "row 10" in ex.message.value


def test_missing_demo_checkpoint_names_the_command(monkeypatch, tmp_path):
    from workbench import checkpoints
    from workbench.demos import dnl as demo

    _drop_demo_cache()
    monkeypatch.setattr(checkpoints, "DEMO_DIR", tmp_path)
    try:
        with pytest.raises(checkpoints.CheckpointError, match="workbench train dnl-study"):
            demo.model("dnl")
    finally:
        _drop_demo_cache()


@pytest.mark.parametrize("head", ["nl", "dnl"])
def test_demo_checkpoint_loads_and_reproduces_its_miou(head):
    """The committed demo SegNets (seed 0 of the study) load strictly into the current DNL2d / NonLocal2d and
    reproduce the mIoU recorded when they were saved on the study's unseen test scenes; the DNL block follows
    the official design (no W_out) and has learnt a non-zero gamma."""
    from workbench.demos import dnl as demo
    from workbench.studies import dnl as study

    net = demo.model(head)
    from workbench.checkpoints import demo_path, load_checkpoint

    ck = load_checkpoint(demo_path(f"dnl_seg_{head}"))
    assert ck.meta["command"] == demo.COMMAND and ck.extra.get("normalize") == "imagenet"
    cfg = study.StudyConfig(**{k: v for k, v in ck.extra["study"].items() if k in study.StudyConfig.__dataclass_fields__})
    x, y = study.scenes(cfg, cfg.n_test, cfg.data_seed + 1)
    m, _ = dnl.miou(dnl.confusion_matrix(study.predict(net, x), y, 11))
    assert m == pytest.approx(ck.extra["miou"], abs=0.01)
    assert m > 0.5
    if head == "dnl":
        assert net.block.conv_out is None and float(net.block.gamma) != 0.0
