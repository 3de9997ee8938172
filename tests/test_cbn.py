"""Cross-Iteration BN: oracles are nn.BatchNorm2d, autograd, float64 recomputation and a slow
list-based re-implementation of the official algorithm."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import cbn, inspect
from workbench.cbn import (
    ConvCBN,
    ConvGeometry,
    CrossIterationBatchNorm2d,
    batch_stats,
    compensate,
    convert_to_cbn,
    make_model,
    stat_grads,
    stat_grads_autograd,
    stat_grads_unfold,
)

torch.set_num_threads(1)


def _batches(n, shape=(4, 3, 6, 6), seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g, dtype=dtype) * 1.5 + 0.3 for _ in range(n)]


def _sgd_steps(pair_a, pair_b, xs, lr=0.2):
    """Run the same inputs and updates through two conv+norm pairs; yield both outputs per step."""
    opt_a = torch.optim.SGD(pair_a.parameters(), lr=lr)
    opt_b = torch.optim.SGD(pair_b.parameters(), lr=lr)
    for x in xs:
        ya, yb = pair_a(x), pair_b(x)
        yield ya, yb
        for y, opt in ((ya, opt_a), (yb, opt_b)):
            opt.zero_grad()
            (y.square() * torch.linspace(0.5, 1.5, y.shape[1])[None, :, None, None]).mean().backward()
            opt.step()


class _ConvBN(nn.Module):
    def __init__(self, conv, bn):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x):
        return self.bn(self.conv(x))


class _ConvRawCBN(nn.Module):  # the official call: cbn(conv(x), conv.weight)
    def __init__(self, conv, bn):
        super().__init__()
        self.conv, self.bn = conv, bn

    def forward(self, x):
        return self.bn(self.conv(x), self.conv.weight)


def _conv(seed=0, cin=3, cout=5, **kw):
    torch.manual_seed(seed)
    return nn.Conv2d(cin, cout, 3, padding=1, **kw)


# --- plain BN equivalence --------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["pair", "raw"])
@pytest.mark.parametrize("window,burnin", [(1, 0), (4, 6)])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_window1_and_burnin_equal_batchnorm(kind, window, burnin, momentum):
    ref = _ConvBN(_conv(), nn.BatchNorm2d(5, momentum=momentum))
    conv = _conv()
    if kind == "pair":
        pair = ConvCBN(conv, window=window, burnin=burnin, momentum=momentum)
    else:
        pair = _ConvRawCBN(conv, CrossIterationBatchNorm2d(5, window=window, burnin=burnin, momentum=momentum))
    with torch.no_grad():
        ref.bn.weight.copy_(torch.linspace(0.5, 2, 5))
        pair.bn.weight.copy_(torch.linspace(0.5, 2, 5))
    for ya, yb in _sgd_steps(ref, pair, _batches(6)):
        assert torch.equal(ya, yb)
    for key in ("running_mean", "running_var", "num_batches_tracked"):
        assert torch.equal(getattr(ref.bn, key), getattr(pair.bn, key)), key
    ref.eval(), pair.eval()
    x = _batches(1, seed=9)[0]
    assert torch.equal(ref(x), pair(x))


def test_running_stats_follow_current_batch_like_bn():
    """Inference statistics are the EMA of the current, uncompensated batch statistics: a BN fed the
    same inputs ends with the same running statistics although the window is in use."""
    conv, bn, layer = _conv(), nn.BatchNorm2d(5), CrossIterationBatchNorm2d(5, window=3)
    g = torch.Generator().manual_seed(0)
    for x in _batches(7):
        y = conv(x)
        bn(y.detach())
        layer(y, conv.weight)
        with torch.no_grad():
            conv.weight.add_(0.05 * torch.randn(conv.weight.shape, generator=g))
    assert int(layer.past_filled) == 2
    torch.testing.assert_close(layer.running_mean, bn.running_mean, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(layer.running_var, bn.running_var, rtol=1e-5, atol=1e-6)


# --- closed-form statistics gradients ---------------------------------------------------------------
@pytest.mark.parametrize("stride,padding,dilation,groups,bias", [
    (1, 1, 1, 1, False), (2, 1, 1, 1, True), (1, 0, 1, 1, True), (2, 2, 2, 1, False), (1, 1, 1, 2, True),
    ((2, 1), (0, 1), 1, 1, True),
])
def test_closed_form_grads_match_autograd(stride, padding, dilation, groups, bias):
    torch.manual_seed(1)
    conv = nn.Conv2d(4, 6, (3, 2), stride, padding, dilation, groups, bias).double()
    with torch.no_grad():
        conv.bias.uniform_(-1, 1) if bias else None
    u = torch.randn(3, 4, 9, 8, dtype=torch.float64) + 0.5
    y = conv(u)
    mu, nu = batch_stats(y)
    dmu_a, dnu_a = stat_grads_autograd(mu, nu, conv.weight)
    geom = ConvGeometry.of(conv)
    for fn in (stat_grads, stat_grads_unfold):
        dmu, dnu = fn(u, y, geom)
        assert dmu.dtype == torch.float64
        torch.testing.assert_close(dmu, dmu_a, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(dnu, dnu_a, rtol=1e-10, atol=1e-12)


def test_grads_are_channel_diagonal():
    """Row c of the closed form is the full gradient of μ_c: other filters get exactly zero."""
    conv = _conv(cin=2, cout=3).double()
    u = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    y = conv(u)
    mu, nu = batch_stats(y)
    dmu, dnu = stat_grads(u, y, ConvGeometry.of(conv))
    for c in range(3):
        (g_mu,) = torch.autograd.grad(mu[c], conv.weight, retain_graph=True)
        (g_nu,) = torch.autograd.grad(nu[c], conv.weight, retain_graph=True)
        others = [i for i in range(3) if i != c]
        assert g_mu[others].abs().max() == 0 and g_nu[others].abs().max() == 0
        torch.testing.assert_close(g_mu[c].reshape(-1), dmu[c])
        torch.testing.assert_close(g_nu[c].reshape(-1), dnu[c])


# --- compensation ----------------------------------------------------------------------------------
def _one_sgd_step(dtype=torch.float64, lr=0.1):
    conv = _conv(seed=3, cin=3, cout=8).to(dtype)
    u_past, u_new = _batches(2, shape=(4, 3, 7, 7), seed=4, dtype=dtype)
    y = conv(u_past)
    mu, nu = batch_stats(y)
    dmu, dnu = stat_grads(u_past, y, ConvGeometry.of(conv))
    w_past = conv.weight.detach().reshape(8, -1).clone()
    loss = (F.relu(conv(u_new)) - 1).square().mean()
    loss.backward()
    with torch.no_grad():
        conv.weight -= lr * conv.weight.grad  # one plain SGD step
    w_now = conv.weight.detach().reshape(8, -1)
    with torch.no_grad():
        mu_true, nu_true = batch_stats(conv(u_past))
    return (mu, nu, dmu, dnu, w_past, w_now, mu_true, nu_true)


def test_mean_compensation_is_exact_for_a_conv():
    mu, nu, dmu, dnu, w_past, w_now, mu_true, nu_true = _one_sgd_step()
    comp = compensate(mu.detach(), dmu, w_now, w_past)
    assert (mu.detach() - mu_true).abs().max() > 5e-3  # the step did move the statistics
    torch.testing.assert_close(comp, mu_true, rtol=0, atol=1e-6)


def test_second_moment_compensation_beats_naive():
    mu, nu, dmu, dnu, w_past, w_now, mu_true, nu_true = _one_sgd_step()
    err_comp = (compensate(nu.detach(), dnu, w_now, w_past) - nu_true).abs().mean()
    err_naive = (nu.detach() - nu_true).abs().mean()
    assert err_comp < 0.2 * err_naive, (float(err_comp), float(err_naive))
    # ν is quadratic in W: the Taylor error is exactly the curvature term E[(ΔW·p)²]
    dw = (w_now - w_past).reshape(8, 3, 3, 3)
    u_past = _batches(2, shape=(4, 3, 7, 7), seed=4, dtype=torch.float64)[0]
    curv = F.conv2d(u_past, dw, padding=1).square().mean(dim=(0, 2, 3))
    torch.testing.assert_close(nu_true - compensate(nu.detach(), dnu, w_now, w_past), curv, rtol=1e-8, atol=1e-10)


def _reference_cbn(pair_conv, xs, window, rho, lr, gamma):
    """Slow list-based CBN in float64 (autograd statistics gradients, like the official layer)."""
    conv = pair_conv
    past, outs, grads = [], [], []
    for x in xs:
        x = x.double().requires_grad_(True)
        y = conv(x)
        mu_t, nu_t = y.mean((0, 2, 3)), y.square().mean((0, 2, 3))
        dmu = torch.autograd.grad(mu_t.sum(), conv.weight, retain_graph=True)[0].reshape(y.shape[1], -1)
        dnu = torch.autograd.grad(nu_t.sum(), conv.weight, retain_graph=True)[0].reshape(y.shape[1], -1)
        w = conv.weight.detach().reshape(y.shape[1], -1)
        mu_sum, nu_sum, cnt = mu_t, nu_t, 1.0
        for m, v, dm, dv, wp in past:
            mc = m + rho * ((w - wp) * dm).sum(1)
            vc = v + rho * ((w - wp) * dv).sum(1)
            ok = (vc >= mc ** 2).double()
            mu_sum, nu_sum, cnt = mu_sum + mc * ok, nu_sum + vc * ok, cnt + ok
        mu = mu_sum / cnt
        var = nu_sum / cnt - mu ** 2
        out = (y - mu[None, :, None, None]) / torch.sqrt(var[None, :, None, None] + 1e-5) * gamma[None, :, None, None]
        loss = (out.square() * torch.linspace(0.5, 1.5, y.shape[1], dtype=torch.float64)[None, :, None, None]).mean()
        gx, gw = torch.autograd.grad(loss, [x, conv.weight])
        outs.append(out.detach())
        grads.append((gx, gw))
        past = [(mu_t.detach(), nu_t.detach(), dmu, dnu, w.clone())] + past[:window - 2]
        with torch.no_grad():
            conv.weight -= lr * gw
    return outs, grads


@pytest.mark.parametrize("gradients", ["closed", "autograd"])
@pytest.mark.parametrize("rho", [1.0, 0.0])
def test_layer_matches_slow_reference(gradients, rho):
    window, lr = 3, 0.3
    gamma = torch.linspace(0.5, 2, 5, dtype=torch.float64)
    xs = _batches(6, seed=2)
    ref_outs, ref_grads = _reference_cbn(_conv(bias=False).double(), xs, window, rho, lr, gamma)
    pair = ConvCBN(_conv(bias=False), window=window, rho=rho, gradients=gradients)
    with torch.no_grad():
        pair.bn.weight.copy_(gamma)
    for i, x in enumerate(xs):
        x = x.clone().requires_grad_(True)
        out = pair(x)
        loss = (out.square() * torch.linspace(0.5, 1.5, 5)[None, :, None, None]).mean()
        pair.zero_grad()
        loss.backward()
        torch.testing.assert_close(out.double(), ref_outs[i], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(x.grad.double(), ref_grads[i][0], rtol=1e-3, atol=1e-5)
        torch.testing.assert_close(pair.conv.weight.grad.double(), ref_grads[i][1], rtol=1e-3, atol=1e-5)
        with torch.no_grad():
            pair.conv.weight -= lr * pair.conv.weight.grad
    assert int(pair.bn.past_filled) == window - 1


def test_fixed_weights_window_equals_large_batch_bn():
    """Without weight changes the window pools exactly the statistics of the concatenated batches."""
    k = 4
    xs = _batches(k, seed=5)
    pair = ConvCBN(_conv(), window=k)
    for x in xs:
        out = pair(x)
    big = torch.cat(xs)
    y_big = pair.conv(big)
    ref = F.batch_norm(y_big, None, None, pair.bn.weight, pair.bn.bias, True, 0.0, pair.bn.eps)
    torch.testing.assert_close(out, ref[-xs[-1].shape[0]:], rtol=1e-4, atol=1e-4)


def test_invalid_past_entries_are_left_out():
    layer = CrossIterationBatchNorm2d(2, window=2)
    conv = _conv(cin=1, cout=2)
    x1 = torch.randn(3, 1, 5, 5)
    layer(conv(x1), conv.weight)
    with torch.no_grad():  # corrupt the stored entry of channel 0 so that ν < μ²
        layer.past_stats[0, 1, 0] = -1.0  # ν of channel 0
        layer.past_grads[0, 1, 0] = 0.0
    x2 = torch.randn(3, 1, 5, 5)
    y2 = conv(x2)
    out = layer(y2, conv.weight)
    ref0 = F.batch_norm(y2[:, :1], None, None, training=True, eps=layer.eps)  # channel 0 = current batch only
    torch.testing.assert_close(out[:, :1], ref0, rtol=1e-4, atol=1e-5)


# --- state -----------------------------------------------------------------------------------------
def test_state_dict_round_trip_mid_window():
    xs = _batches(6, seed=7)
    a = make_model("cbn", window=4, seed=0, in_chans=3)
    opt = torch.optim.SGD(a.parameters(), lr=0.1)
    for x in xs[:3]:  # window partially filled
        opt.zero_grad()
        a(x).logsumexp(1).mean().backward()
        opt.step()
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b = make_model("cbn", window=4, seed=123, in_chans=3)
    b.load_state_dict(torch.load(buf, weights_only=True))
    for x in xs[3:]:
        ya, yb = a(x), b(x)
        assert torch.equal(ya, yb)
    # the official-call layer learns its fan-in lazily: loading fills it in
    conv = _conv()
    lay = CrossIterationBatchNorm2d(5, window=3)
    for x in xs[:2]:
        lay(conv(x), conv.weight)
    lay2 = CrossIterationBatchNorm2d(5, window=3)
    lay2.load_state_dict(lay.state_dict())
    assert torch.equal(lay(conv(xs[2]), conv.weight), lay2(conv(xs[2]), conv.weight))


def test_buffers_are_registered_state():
    pair = ConvCBN(_conv(), window=5)
    names = dict(pair.named_buffers())
    assert names["bn.past_weight"].shape == (4, 5, 27)
    assert names["bn.past_grads"].shape == (4, 2, 5, 27)
    assert names["bn.past_stats"].shape == (4, 2, 5)
    assert pair.double().bn.past_weight.dtype == torch.float64  # buffers follow .to()/.double()


# --- conversion ------------------------------------------------------------------------------------
def test_convert_keeps_function_in_eval_and_finds_all_pairs():
    torch.manual_seed(0)
    ref = make_model("bn", in_chans=3)
    ref.train()
    for x in _batches(3, seed=8):  # non-trivial running statistics
        ref(x)
    ref.eval()
    model = convert_to_cbn(copy.deepcopy(ref), window=4)
    assert len(cbn.cbn_layers(model)) == 6
    x = _batches(1, seed=9)[0]
    torch.testing.assert_close(model(x), ref(x))


def test_convert_refuses_bn_not_after_conv():
    class Bad(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)
            self.conv2 = nn.Conv2d(4, 4, 1)
            self.bn2 = nn.BatchNorm2d(4)

        def forward(self, x):
            x = self.bn(self.conv(x))
            return self.bn2(F.relu(self.conv2(x)))

    with pytest.raises(ValueError, match="bn2.*does not follow a Conv2d"):
        convert_to_cbn(Bad())
    m = convert_to_cbn(Bad(), strict=False)
    assert isinstance(m.conv, ConvCBN) and isinstance(m.bn2, nn.BatchNorm2d)


def test_convert_refuses_conv_output_used_twice():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    with pytest.raises(ValueError, match="feeds more than"):
        convert_to_cbn(Branch())


# --- bad input -------------------------------------------------------------------------------------
def test_bad_input_messages():
    for w in (0, -1, 1.5, 1000):
        with pytest.raises(ValueError, match="window"):
            CrossIterationBatchNorm2d(4, window=w)
    with pytest.raises(ValueError, match="rho"):
        CrossIterationBatchNorm2d(4, rho=float("nan"))
    with pytest.raises(ValueError, match="burnin"):
        CrossIterationBatchNorm2d(4, burnin=-1)
    layer = CrossIterationBatchNorm2d(5)
    conv = _conv()
    y = conv(torch.randn(2, 3, 4, 4))
    with pytest.raises(ValueError, match="output channels"):
        layer(y, torch.randn(4, 3, 3, 3, requires_grad=True))
    with pytest.raises(ValueError, match="channels"):
        layer(torch.randn(2, 4, 3, 3), conv.weight)
    with pytest.raises(ValueError, match="needs the preceding conv's weight"):
        layer(y)
    with pytest.raises(ValueError, match="not the one that produced"):
        layer(y, torch.randn(5, 3, 3, 3, requires_grad=True))
    with torch.no_grad():
        with pytest.raises(ValueError, match="autograd"):
            layer(conv(torch.randn(2, 3, 4, 4)), conv.weight)
    with pytest.raises(ValueError, match="Conv2d"):
        ConvCBN(nn.Linear(3, 3))
    with pytest.raises(ValueError, match="padding_mode"):
        ConvCBN(nn.Conv2d(3, 3, 3, padding=1, padding_mode="reflect"))


def test_nan_input_rejected_without_poisoning_window():
    pair = ConvCBN(_conv(), window=3)
    xs = _batches(3, seed=11)
    pair(xs[0])
    state = {k: v.clone() for k, v in pair.state_dict().items()}
    bad = xs[1].clone()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        pair(bad)
    for k, v in pair.state_dict().items():
        assert torch.equal(v, state[k]), k
    # plain-BN path (window 1) propagates NaN exactly like nn.BatchNorm2d (documented)
    plain = ConvCBN(_conv(), window=1)
    assert torch.isnan(plain(bad)).any()


# --- looking inside (workbench.inspect), burn-in counter, emulated devices, ablation switch --------------
def test_captured_statistics_match_a_recomputation():
    """``inspect.capture(layer, "stats", keep="all")`` records one entry per training step. Oracles, recomputed
    here from the inputs and the conv weights of every step: the current-batch statistics; the *true* window
    statistics (current + past batches re-run through the current weights); the naive window (past batches
    through the weights of their own step). The compensated mean equals the true one (the mean is linear in W)."""
    pair = ConvCBN(_conv(bias=False), window=3)
    opt = torch.optim.SGD(pair.parameters(), lr=0.5)
    xs = _batches(5, seed=12)
    weights = []
    with inspect.capture(pair, "stats", keep="all") as cap:
        for x in xs:
            weights.append(pair.conv.weight.detach().clone())
            out = pair(x)
            opt.zero_grad()
            (out.square() * torch.linspace(0.2, 3, 5)[None, :, None, None]).mean().backward()
            opt.step()
    recs = cap.all("stats")
    assert [r["n_past"] for r in recs] == [0, 1, 2, 2, 2] and [r["step"] for r in recs] == [0, 1, 2, 3, 4]

    def stats(x, w):
        return batch_stats(F.conv2d(x, w, None, padding=1))

    def pooled(pairs):
        mu = torch.stack([p[0] for p in pairs]).mean(0)
        nu = torch.stack([p[1] for p in pairs]).mean(0)
        return mu, (nu - mu * mu).clamp_min(0)

    for t, r in enumerate(recs):
        past = range(max(0, t - 2), t)
        mu_t, nu_t = stats(xs[t], weights[t])
        torch.testing.assert_close(r["mu_cur"], mu_t, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["var_cur"], (nu_t - mu_t ** 2).clamp_min(0), rtol=1e-5, atol=1e-6)
        mu_true, var_true = pooled([(mu_t, nu_t)] + [stats(xs[s], weights[t]) for s in past])
        torch.testing.assert_close(r["mu_true"], mu_true, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["var_true"], var_true, rtol=1e-5, atol=1e-5)
        mu_naive, var_naive = pooled([(mu_t, nu_t)] + [stats(xs[s], weights[s]) for s in past])
        torch.testing.assert_close(r["mu_naive"], mu_naive, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(r["var_naive"], var_naive, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(r["mu_comp"], mu_true, rtol=0, atol=1e-5)
    last = recs[-1]
    assert last["err_mu_comp"] < 1e-5 < last["err_mu_naive"]
    assert last["err_nu_comp"] < 0.5 * last["err_nu_naive"]
    torch.testing.assert_close(last["mu_cbn"], last["mu_comp"], rtol=0, atol=1e-5)  # what CBN normalised with


def test_capture_changes_nothing_and_leaves_nothing_on_the_layer():
    """The same training with and without a capture: identical outputs, weights and state-dict keys; outside a
    capture nothing is recorded."""
    a, b = ConvCBN(_conv(), window=3), ConvCBN(_conv(), window=3)
    keys = set(a.state_dict())
    with inspect.capture(b, "stats", keep="all") as cap:
        for ya, yb in _sgd_steps(a, b, _batches(4, seed=5)):
            assert torch.equal(ya, yb)
    b(_batches(1, seed=6)[0])                       # after the block: not recorded
    a(_batches(1, seed=6)[0])
    assert len(cap.all("stats")) == 4
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb), ka
    assert set(b.state_dict()) == keys and inspect.states(b) == []


def test_stats_capture_on_a_network_by_layer_name():
    model = make_model("cbn", window=3, in_chans=3, seed=0)
    model.train()
    xs = _batches(3, seed=7)
    with inspect.capture(model, "blocks.1.conv1.stats", keep="all") as cap:
        for x in xs:
            model(x).sum().backward()
    assert cap.keys() == ["blocks.1.conv1.stats"]
    recs = cap.all("blocks.1.conv1.stats")
    assert [r["n_past"] for r in recs] == [0, 1, 2] and recs[0]["mu_cur"].shape == (32,)


def test_burnin_counter_starts_at_zero_for_a_converted_bn():
    """Burn-in counts the layer's own iterations (``iteration``), not the BN's ``num_batches_tracked``: a BN that
    has tracked 10,000 batches still gets ``burnin`` plain-BN steps after conversion (the official layer's
    counter also starts at 0). Running statistics and ``num_batches_tracked`` are taken over."""
    torch.manual_seed(0)
    bn = nn.BatchNorm2d(5)
    with torch.no_grad():
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
        bn.weight.uniform_(0.5, 2)
        bn.num_batches_tracked.fill_(10_000)
    ref = _ConvBN(_conv(), copy.deepcopy(bn))
    pair = ConvCBN(_conv(), window=3, burnin=4, bn=copy.deepcopy(bn))
    assert int(pair.bn.iteration) == 0 and int(pair.bn.num_batches_tracked) == 10_000
    assert torch.equal(pair.bn.running_mean, bn.running_mean) and not pair.bn.window_active()
    outs = list(_sgd_steps(ref, pair, _batches(7, seed=3)))
    for ya, yb in outs[:4]:                          # burn-in: exactly nn.BatchNorm2d
        assert torch.equal(ya, yb)
    torch.testing.assert_close(outs[4][1], outs[4][0], rtol=1e-5, atol=1e-5)   # first windowed step: empty window
    assert (outs[6][1] - outs[6][0]).abs().max() > 1e-3                         # then the window is used
    assert int(pair.bn.iteration) == 7 and int(pair.bn.num_batches_tracked) == 10_007
    # convert_to_cbn does the same for every pair of a trained network
    net = make_model("bn", in_chans=3)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.num_batches_tracked.fill_(500)
    convert_to_cbn(net, window=4, burnin=10)
    assert all(int(m.bn.iteration) == 0 and int(m.bn.num_batches_tracked) == 500 for _, m in cbn.cbn_layers(net))


def test_state_dicts_from_before_the_burnin_counter_still_load():
    """Checkpoints written before ``iteration`` existed counted burn-in in ``num_batches_tracked``: loading one
    takes the counter from there, so a half-finished burn-in continues where it stopped."""
    pair = ConvCBN(_conv(), window=3, burnin=5)
    for x in _batches(3, seed=4):
        pair(x)
    sd = {k: v for k, v in pair.state_dict().items() if not k.endswith("iteration")}
    fresh = ConvCBN(_conv(), window=3, burnin=5)
    fresh.load_state_dict(sd)
    assert int(fresh.bn.iteration) == 3 and not fresh.bn.window_active()


def test_a_plain_batchnorm_state_dict_leaves_the_burnin_counter_at_zero():
    """Only a CBN checkpoint (window buffers present) without ``iteration`` is read as a legacy one; a BatchNorm
    state dict loaded into the drop-in layer (non-strict) keeps the counter at 0, like the official layer."""
    bn = nn.BatchNorm2d(5)
    bn.num_batches_tracked.fill_(10_000)
    layer = CrossIterationBatchNorm2d(5, window=3, burnin=4)
    res = layer.load_state_dict(bn.state_dict(), strict=False)
    assert "iteration" in res.missing_keys
    assert int(layer.iteration) == 0 and int(layer.num_batches_tracked) == 10_000 and not layer.window_active()


def test_differences_from_the_official_normalisation_are_as_documented():
    """The official CBatchNorm2d divides by ``sqrt(var) + eps`` and uses the unbiased batch variance in burn-in;
    ours is ``nn.BatchNorm2d``'s ``1 / sqrt(var + eps)`` with the biased variance. Reference formulas written
    out here; the size of the first difference is the one the module docstring states."""
    eps = 1e-5
    g = torch.Generator().manual_seed(0)
    w = torch.zeros(5, 3, 3, 3, dtype=torch.float64)
    for sigma in (0.1, 0.2, 0.5, 2.0):
        z = torch.randn(4, 5, 6, 6, generator=g, dtype=torch.float64)
        z = (z - z.mean((0, 2, 3), keepdim=True)) / z.std((0, 2, 3), unbiased=False, keepdim=True)
        x = 0.3 + sigma * z                                   # every channel: biased std exactly sigma
        layer = CrossIterationBatchNorm2d(5, window=1, eps=eps).double()   # window 1: burn-in forever
        y = layer(x, w)
        mu = x.mean((0, 2, 3), keepdim=True)
        var_b = x.var((0, 2, 3), unbiased=False, keepdim=True)
        var_u = x.var((0, 2, 3), unbiased=True, keepdim=True)
        torch.testing.assert_close(y, (x - mu) / torch.sqrt(var_b + eps), rtol=1e-12, atol=1e-12)
        official = (x - mu) / (torch.sqrt(var_b) + eps)                   # the official window normalisation
        rel = (y[z.abs() > 0.5] / official[z.abs() > 0.5] - 1).abs().max().item()
        assert rel == pytest.approx(abs((sigma + eps) / (sigma ** 2 + eps) ** 0.5 - 1), rel=1e-6, abs=1e-12)
        assert abs(rel - abs(eps / sigma - eps / (2 * sigma ** 2))) < 1e-6    # the docstring's first-order form
        assert (rel > 3e-4) if sigma == 0.1 else (rel < 1e-4)
        official_burnin = (x - mu) / (torch.sqrt(var_u) + eps)            # the official burn-in normalisation
        m = x.numel() // 5
        assert (y / official_burnin).mean().item() == pytest.approx(((m / (m - 1)) ** 0.5), rel=1e-3)


def test_emulated_devices_normalise_each_group_on_its_own():
    """``devices=G``: each of the G groups of the batch is normalised with its own statistics and window, exactly
    like G separate layers (one per GPU) sharing the conv weights; ``window=1`` is ghost BatchNorm."""
    xs = _batches(4, shape=(6, 3, 5, 5), seed=9)
    ghost = ConvCBN(_conv(), window=1, devices=3)
    for x in xs[:2]:
        y = ghost(x)
        z = F.conv2d(x, ghost.conv.weight, ghost.conv.bias, padding=1)
        ref = torch.cat([F.batch_norm(z[2 * g:2 * g + 2], None, None, None, None, True, 0.0, 1e-5) for g in range(3)])
        torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    pair = ConvCBN(_conv(), window=3, devices=2)
    singles = [ConvCBN(_conv(), window=3) for _ in range(2)]
    g = torch.Generator().manual_seed(1)
    for x in xs:
        y = pair(x)
        ref = torch.cat([singles[i](x[3 * i:3 * i + 3]) for i in range(2)])
        torch.testing.assert_close(y, ref, rtol=1e-4, atol=1e-4)
        with torch.no_grad():                        # the same weight change for every copy
            step = 0.05 * torch.randn(pair.conv.weight.shape, generator=g)
            for m in (pair, *singles):
                m.conv.weight.add_(step)
    with pytest.raises(ValueError, match="emulated devices"):
        pair(torch.randn(5, 3, 5, 5))
    pair.eval()                                       # inference: the device copies' running statistics, averaged
    rm = torch.stack([m.bn.running_mean for m in singles]).mean(0)
    rv = torch.stack([m.bn.running_var for m in singles]).mean(0)
    z = F.conv2d(xs[0], pair.conv.weight, pair.conv.bias, padding=1)
    torch.testing.assert_close(pair(xs[0]), F.batch_norm(z, rm, rv, None, None, False, 0.0, 1e-5), rtol=1e-4, atol=1e-4)


def test_emulated_devices_record_the_first_group_like_one_gpu():
    """A capture on a layer with ``devices=G`` records the first group's statistics: the same records (current,
    naive / compensated / true window, errors) as a one-device layer fed only that group's images, with the same
    weight changes between steps."""
    xs = _batches(5, shape=(6, 3, 5, 5), seed=21)
    pair, single = ConvCBN(_conv(), window=3, devices=3), ConvCBN(_conv(), window=3)
    g = torch.Generator().manual_seed(2)
    with inspect.capture(pair, "stats", keep="all") as cap_g, inspect.capture(single, "stats", keep="all") as cap_1:
        for x in xs:
            pair(x)
            single(x[:2])
            with torch.no_grad():
                step = 0.05 * torch.randn(pair.conv.weight.shape, generator=g)
                pair.conv.weight.add_(step)
                single.conv.weight.add_(step)
    rg, r1 = cap_g.all("stats"), cap_1.all("stats")
    assert len(rg) == len(r1) == 5 and [r["n_past"] for r in rg] == [0, 1, 2, 2, 2]
    for a, b in zip(rg, r1):
        assert a.keys() == b.keys()
        for k in a:
            if torch.is_tensor(a[k]):
                assert a[k].shape == (5,), k
                torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5)
            elif k.startswith("err_"):
                assert a[k] == pytest.approx(b[k], rel=1e-3, abs=1e-7), k
            else:
                assert a[k] == b[k], k
    assert rg[-1]["err_mu_comp"] < 1e-5 < rg[-1]["err_mu_naive"]


def test_stat_grad_scale_isolates_the_backward():
    """The gradient ablation switch: with ``stat_grad_scale=s`` (window 1) the forward is BN exactly; the input
    gradient is (1 − s)·(gradient with constant statistics) + s·(BN's gradient), computed here with autograd in
    float64. ``s = 1/k`` is what the current batch gets inside a full window of k (the paper)."""
    g = torch.Generator().manual_seed(16)
    x = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    gy = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    layer = CrossIterationBatchNorm2d(4, window=1, stat_grad_scale=0.25).double()
    with torch.no_grad():
        layer.weight.uniform_(0.5, 2.0)
    dummy_weight = torch.zeros(4, 1, dtype=torch.float64)
    xa = x.clone().requires_grad_(True)
    out = layer(xa, dummy_weight)
    (gx,) = torch.autograd.grad(out, xa, gy)
    xb = x.clone().requires_grad_(True)
    ref = F.batch_norm(xb, None, None, layer.weight, layer.bias, True, 0.0, layer.eps)
    (g_bn,) = torch.autograd.grad(ref, xb, gy)
    var, _ = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    g_const = gy * (layer.weight / torch.sqrt(var + layer.eps))[None, :, None, None]
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, 0.75 * g_const + 0.25 * g_bn.detach(), rtol=1e-8, atol=1e-10)
    # stat_grad_scale=1 gives BN's gradient; None (the default) leaves BN alone in the plain path
    full = CrossIterationBatchNorm2d(4, window=1, stat_grad_scale=1.0).double()
    full.load_state_dict(layer.state_dict())
    xc = x.clone().requires_grad_(True)
    (gc,) = torch.autograd.grad(full(xc, dummy_weight), xc, gy)
    torch.testing.assert_close(gc, g_bn, rtol=1e-8, atol=1e-10)
    with pytest.raises(ValueError, match="stat_grad_scale"):
        CrossIterationBatchNorm2d(4, stat_grad_scale=1.5)


def test_bfloat16_autocast_close_to_float32():
    xs = _batches(3, seed=13)
    a = ConvCBN(_conv(), window=3)
    b = ConvCBN(_conv(), window=3)
    for x in xs:
        ya = a(x)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            yb = b(x)
    assert yb.dtype == torch.bfloat16 and a.bn.past_stats.dtype == torch.float32
    torch.testing.assert_close(yb.float(), ya, rtol=0.05, atol=0.05)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu():
    xs = _batches(4, seed=14)
    a = ConvCBN(_conv(), window=3)
    b = ConvCBN(_conv(), window=3).cuda()
    for x in xs:
        ya = a(x)
        with torch.autocast("cuda", dtype=torch.float16):
            yb = b(x.cuda())
    torch.testing.assert_close(yb.float().cpu(), ya, rtol=0.02, atol=0.02)
    assert b.bn.past_weight.device.type == "cuda"


@pytest.mark.parametrize("with_past,affine", [(False, True), (True, True), (True, False)])
def test_window_norm_backward_gradcheck(with_past, affine):
    """The hand-written backward of the normalisation equals finite differences (float64)."""
    g = torch.Generator().manual_seed(15)
    x = torch.randn(3, 4, 3, 2, generator=g, dtype=torch.float64, requires_grad=True)
    sums = cnt = None
    if with_past:
        mu_p = torch.randn(2, 4, generator=g, dtype=torch.float64)
        sums = torch.stack([mu_p.sum(0), (mu_p ** 2 + 1.5).sum(0)])
        cnt = torch.full((4,), 3.0, dtype=torch.float64)
    gamma = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
    beta = torch.randn(4, generator=g, dtype=torch.float64, requires_grad=True) if affine else None
    inputs = (x, sums, cnt, gamma, beta, 1e-5)
    assert torch.autograd.gradcheck(lambda *a: cbn._WindowNorm.apply(*a)[0], inputs)


# --- the demo (workbench.demos.cbn), figures and the app tab -----------------------------------------------
def _tiny_diag(steps=12, **kw):
    from workbench.demos import cbn as demo

    cfg = demo.DiagnosticConfig(batch_size=2, window=3, steps=steps, every=4, layer="stem", **kw)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g))
    results = list(demo.diagnostic_run(cfg, data))
    return results, demo.diagnostic_series(results[-1], cfg)


def test_diagnostic_run_streams_and_matches_recomputation():
    results, diag = _tiny_diag()
    assert [r["step"] for r in results] == [4, 8, 12]  # streamed updates
    assert diag["step"] == list(range(12)) and len(diag["loss"]) == 12
    assert diag["n_past"][:4] == [0, 1, 2, 2]
    assert len(results[0]["records"]) == 4 and len(results[-1]["records"]) == 12   # cumulative
    # μ compensation is exact for the conv: compensated window mean == true window mean
    for a, b in zip(diag["mu_comp"][3:], diag["mu_true"][3:]):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    errs = [(n, c) for n, c in zip(diag["err_nu_naive"], diag["err_nu_comp"]) if n is not None]
    assert sum(c for _, c in errs) < 0.5 * sum(n for n, _ in errs)
    assert diag["err_mu_naive"][0] is None          # no past entry at the first step
    import json

    assert json.loads(json.dumps(diag)) == diag     # the compact form is plain JSON


def test_diagnostic_run_streams_when_each_step_is_resumed_in_another_thread():
    """Gradio resumes a streaming handler in worker threads (other contexts) after each yield: the capture must
    keep recording across yields and close cleanly (regression: "Token ... was created in a different Context"
    on the CBN tab's live run, and records that stopped after the first update)."""
    import threading

    from workbench.demos import cbn as demo

    cfg = demo.DiagnosticConfig(batch_size=2, window=3, steps=12, every=4, layer="stem")
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(40, 3, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g))
    alone = list(demo.diagnostic_run(cfg, data))
    gen = demo.diagnostic_run(cfg, data)
    outs, errors = [], []

    def step():
        try:
            outs.append(next(gen, None))
        except BaseException as e:  # pragma: no cover
            errors.append(e)

    for _ in range(len(alone) + 1):          # one thread per resume; the last one ends the generator
        t = threading.Thread(target=step)
        t.start()
        t.join(120)
    assert not errors, errors
    assert outs[-1] is None and len(outs) == len(alone) + 1
    a, b = demo.diagnostic_series(alone[-1], cfg), demo.diagnostic_series(outs[-2], cfg)
    assert b["n_past"] == a["n_past"] == [0, 1] + [2] * 10
    assert b["mu_true"] == a["mu_true"] and b["loss"] == a["loss"]
    assert not inspect.active()


def test_diagnostic_run_with_burnin_and_rho_zero():
    """During burn-in the layer is plain BN (no past entries); with ρ = 0 the compensated window is the naive one."""
    _, diag = _tiny_diag(steps=12, burnin=5)
    assert diag["n_past"][:6] == [0, 0, 0, 0, 0, 0] and diag["n_past"][6:8] == [1, 2]
    _, naive = _tiny_diag(steps=10, rho=0.0)
    for a, b in zip(naive["mu_comp"], naive["mu_naive"]):
        assert a == b


def test_live_diagnostic_on_shapes_shows_the_compensation_working():
    """A short live run of the app's default layer on the real 32 px shapes data: the compensated window's μ
    error is orders of magnitude below the naive one and its ν error is smaller too (the paper's Fig. 3 point)."""
    from workbench.demos import cbn as demo

    panels = list(demo.live(batch_size=4, window=4, rho=1.0, burnin=0, steps=40, layer="blocks.1.conv1", channel=3))
    assert len(panels) == 40 // max(5, 40 // 8)
    diag = panels[-1].values["diag"]
    assert diag["step"] == list(range(40)) and diag["config"]["lr"] == pytest.approx(0.1 * 4 / 32)

    def mean(k):
        vals = [v for v in diag[k] if v is not None]
        return sum(vals) / len(vals)

    assert mean("err_mu_comp") < 1e-2 * mean("err_mu_naive")
    assert mean("err_nu_comp") < mean("err_nu_naive")
    assert list(panels[-1].figures) == ["trajectories", "errors", "loss"]


def test_live_diagnostic_with_one_image_per_statistics_group():
    """The committed run's setting, shortened: a batch of 8 split into 8 statistics groups of one image (emulated
    GPUs). The record follows the first group (one image: its statistics are its own spatial statistics), the lr
    follows the optimiser batch, and the compensation still makes the window mean exact."""
    from workbench.demos import cbn as demo

    panels = list(demo.live(batch_size=8, window=4, rho=1.0, burnin=0, steps=20, layer="blocks.0.conv1",
                            channel=0, stat_batch=1))
    diag = panels[-1].values["diag"]
    assert diag["config"]["stat_batch"] == 1 and diag["config"]["lr"] == pytest.approx(0.1 * 8 / 32)
    assert diag["n_past"][:5] == [0, 1, 2, 3, 3]
    comp = [v for v in diag["err_mu_comp"] if v is not None]
    naive = [v for v in diag["err_mu_naive"] if v is not None]
    assert sum(comp) < 1e-2 * sum(naive)
    for bad, msg in ((dict(stat_batch=3), "must divide"), (dict(stat_batch=0), "statistics group"),
                     (dict(stat_batch=16), "statistics group")):
        with pytest.raises(ValueError, match=msg):
            next(demo.live(**(dict(batch_size=8, steps=10) | bad)))
    assert demo.stat_batches(24) == [1, 2, 3, 4, 6, 8, 12, 24] and demo.stat_batches(2) == [1, 2]


def test_figures_from_diagnostic():
    from workbench.viz import cbn as vz

    _, diag = _tiny_diag()
    fig = vz.trajectories_figure(diag, channel=1)
    names = [t.name for t in fig.data if t.showlegend is not False]
    assert names == [lab for _, lab in vz.KINDS]
    cur = [t for t in fig.data if t.name == "current batch"][0]
    assert list(cur.y) == pytest.approx([row[1] for row in diag["mu_cur"]])
    with pytest.raises(ValueError, match="channel"):
        vz.trajectories_figure(diag, channel=99)
    assert len(vz.error_figure(diag).data) == 4
    assert len(vz.loss_figure(diag["loss"], smooth=5).data) == 2
    text = vz.diagnostic_summary(diag)
    naive = sum(v for v in diag["err_mu_naive"] if v is not None) / sum(v is not None for v in diag["err_mu_naive"])
    assert f"{naive:.2e}" in text


def test_app_functions(monkeypatch):
    import gradio  # noqa: F401

    from workbench.apps import cbn as app
    from workbench.apps.common import guard
    from workbench.demos import cbn as demo

    results, tiny = _tiny_diag()
    traj, err, loss, text = app.render(tiny, 2)
    cur = [t for t in traj.data if t.name == "current batch"][0]
    assert list(cur.y) == pytest.approx([row[2] for row in tiny["mu_cur"]])
    assert text == demo.panel(tiny, 2).text
    calls = []
    monkeypatch.setattr(demo, "diagnostic_run", lambda cfg, dataset=None: calls.append(cfg) or iter(results))
    outs = list(app.live(2, 3, 1.0, 0, 10, "stem", 1))
    assert len(outs) == 3 and outs[-1][3]["step"] == tiny["step"] and len(outs[-1]) == 5
    assert calls[0].batch_size == 2 and calls[0].window == 3 and calls[0].layer == "stem"
    assert calls[0].stat_batch is None                    # the whole batch unless a group size is chosen
    list(app.live(8, 3, 1.0, 0, 10, "stem", 1, "2"))
    assert calls[1].batch_size == 8 and calls[1].stat_batch == 2
    # user errors: every output cleared, the message on the status line (last output)
    live = guard(app.live, 5)
    for bad, msg in ((dict(batch_size=1), "batch size"), (dict(window=0), "window"), (dict(rho=float("nan")), "rho"),
                     (dict(steps=10 ** 6), "steps"), (dict(layer="fc"), "layer"), (dict(batch_size="x"), "batch size"),
                     (dict(batch_size=8, stat_batch="3"), "divide"), (dict(stat_batch="many"), "statistics group")):
        kw = dict(batch_size=2, window=3, rho=1.0, burnin=0, steps=10, layer="stem", channel=0, stat_batch="1") | bad
        out = list(live(**kw))
        assert out == [(None, None, None, None, out[0][4])] and out[0][4].startswith("⚠️ ") and msg in out[0][4], out
    out = guard(app.render, 4)(tiny, 999)
    assert out[:3] == (None, None, None) and "channel" in out[3]
    assert guard(app.render, 4)({}, 0)[3].startswith("⚠️ Nothing to show")


def test_app_channel_slider_follows_the_layer():
    import gradio  # noqa: F401

    from workbench.apps import cbn as app
    from workbench.demos import cbn as demo

    for layer in demo.LAYERS:
        upd = app.channel_range(layer, 100)
        assert upd["maximum"] == demo.channels(layer) - 1 and upd["value"] == min(100, demo.channels(layer) - 1)


def test_app_statistics_batch_choices_follow_the_batch():
    """Only group sizes that divide the batch are offered (issue: controls never offer values that always fail);
    a still-valid choice is kept, an invalid one falls back to one image per group."""
    import gradio  # noqa: F401

    from workbench.apps import cbn as app

    for b in range(2, 65):
        upd = app.stat_batch_choices(b, "4")
        sizes = [int(c) for c in upd["choices"] if c != app.WHOLE]
        assert upd["choices"][-1] == app.WHOLE and sizes and all(b % s == 0 and s < b for s in sizes)
        assert upd["value"] == ("4" if b % 4 == 0 and b > 4 else "1")


def test_conv_bn_pairs_traces_each_architecture_once(monkeypatch):
    """torch.fx tracing patches nn.Module.__call__ process-wide; the web app serves several users in threads, so
    the conv -> BN analysis runs once per architecture (the live CBN tab warms it at build) and is then cached."""
    import torch.fx as fx

    calls = []
    real = fx.symbolic_trace
    monkeypatch.setattr(fx, "symbolic_trace", lambda m, *a, **k: calls.append(type(m).__name__) or real(m, *a, **k))
    cbn._PAIRS_CACHE.clear()
    a = cbn.make_model("bn", widths=(8, 16))
    first = cbn.conv_bn_pairs(a)
    for _ in range(3):
        assert cbn.conv_bn_pairs(cbn.make_model("bn", widths=(8, 16))) == first
    assert len(calls) == 1
    assert first[0] and not first[1]
    cbn.conv_bn_pairs(cbn.make_model("bn", widths=(8, 16, 32)))   # another module tree: traced again
    assert len(calls) == 2


# --- Batch Renormalization (the small-batch baseline) ----------------------------------------------
def test_batch_renorm_schedule():
    from workbench.cbn import BatchRenorm2d

    m = BatchRenorm2d(3, rmax=3.0, dmax=5.0, burnin=10, ramp=20)
    got = []
    for t in (0, 9, 10, 20, 30, 100):
        m.num_batches_tracked.fill_(t)
        got.append(m.limits())
    assert got == [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (2.0, 2.5), (3.0, 5.0), (3.0, 5.0)]


def test_batch_renorm_in_burnin_is_ghost_batchnorm():
    """r_max = 1, d_max = 0 (burn-in): each group normalised with its own batch statistics, exactly BN's output."""
    from workbench.cbn import BatchRenorm2d

    g = torch.Generator().manual_seed(3)
    x = torch.randn(6, 4, 5, 5, generator=g, dtype=torch.float64) * 2 + 1
    m = BatchRenorm2d(4, burnin=100, devices=3).double()
    with torch.no_grad():
        m.weight.copy_(torch.tensor([0.5, 1.0, 2.0, -1.0]))
        m.bias.copy_(torch.tensor([0.1, 0.0, -0.3, 1.0]))
    ref = torch.cat([F.batch_norm(x[2 * i:2 * i + 2], None, None, m.weight, m.bias, True, 0.0, m.eps) for i in range(3)])
    torch.testing.assert_close(m(x), ref)


def test_batch_renorm_unclipped_matches_running_statistics_and_scales_the_bn_gradient():
    """Unclipped, the training output is the inference normalisation with the (pre-update) running statistics, and
    the input gradient is r × BN's gradient (r, d carry no gradient) — float64 oracles from F.batch_norm. The
    running statistics then move by α towards the batch's."""
    from workbench.cbn import BatchRenorm2d

    g = torch.Generator().manual_seed(4)
    x = (torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64) * 1.7 + 0.4).requires_grad_()
    up = torch.randn(8, 3, 4, 4, generator=g, dtype=torch.float64)
    m = BatchRenorm2d(3, rmax=1e6, dmax=1e6, momentum=0.01).double()
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor([0.2, -0.1, 0.5]))
        m.running_std.copy_(torch.tensor([1.5, 0.8, 2.0]))
        m.weight.copy_(torch.tensor([0.7, 1.3, -0.4]))
    rm, rs = m.running_mean.clone(), m.running_std.clone()
    y = m(x)
    inference = F.batch_norm(x.detach(), rm, rs ** 2, m.weight.detach(), m.bias.detach(), False, 0.0, 0.0)
    torch.testing.assert_close(y.detach(), inference)
    (gx,) = torch.autograd.grad((y * up).sum(), x)
    xb = x.detach().clone().requires_grad_()
    bn = F.batch_norm(xb, None, None, m.weight.detach(), None, True, 0.0, m.eps)
    (gbn,) = torch.autograd.grad((bn * up).sum(), xb)
    sigma_b = (x.detach().var(dim=(0, 2, 3), unbiased=False) + m.eps).sqrt()
    r = (sigma_b / rs).view(1, 3, 1, 1)
    torch.testing.assert_close(gx, r * gbn)
    mu_b = x.detach().mean(dim=(0, 2, 3))
    torch.testing.assert_close(m.running_mean, rm + 0.01 * (mu_b - rm))
    torch.testing.assert_close(m.running_std, rs + 0.01 * (sigma_b - rs))


def test_batch_renorm_clips_and_infers_with_running_statistics():
    from workbench.cbn import BatchRenorm2d

    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64)
    m = BatchRenorm2d(2, rmax=3.0, dmax=5.0).double()
    with torch.no_grad():
        m.running_std.fill_(100.0)           # σ_B / σ ≈ 0.01 → r = 1/3;  (μ_B − μ)/σ tiny → d unclipped
        m.running_mean.fill_(-600.0)         # (μ_B + 600) / 100 ≈ 6 → d = 5
    xhat = F.batch_norm(x, None, None, None, None, True, 0.0, m.eps)
    torch.testing.assert_close(m(x), xhat / 3 + 5)
    m.eval()
    torch.testing.assert_close(m(x), (x - m.running_mean.view(1, 2, 1, 1)) / m.running_std.view(1, 2, 1, 1))
    with pytest.raises(ValueError, match="rmax"):
        BatchRenorm2d(2, rmax=0.5)


def test_brn_model_has_no_batchnorm_left_and_learns():
    from workbench.cbn import BatchRenorm2d

    model = make_model("brn", in_chans=3, widths=(8, 16), burnin=2, devices=4, seed=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert sum(isinstance(m, BatchRenorm2d) and m.devices == 4 for m in model.modules()) == 6
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(8, 3, 8, 8, generator=g), torch.randint(0, 10, (8,), generator=g)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    losses = []
    for _ in range(40):                       # fits one fixed batch, as BN does (0.02 here) — a broken r/d does not
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.1 * losses[0]
