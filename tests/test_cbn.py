"""Cross-Iteration BN: oracles are nn.BatchNorm2d, autograd, float64 recomputation and a slow
list-based re-implementation of the official algorithm."""
from __future__ import annotations

import copy
import io

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import cbn
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


# --- diagnostics and precision ---------------------------------------------------------------------
def test_diagnostics_record_true_statistics():
    pair = ConvCBN(_conv(bias=False), window=3, diagnostics=True)
    opt = torch.optim.SGD(pair.parameters(), lr=0.5)
    xs = _batches(5, seed=12)
    for x in xs:
        out = pair(x)
        opt.zero_grad()
        (out.square() * torch.linspace(0.2, 3, 5)[None, :, None, None]).mean().backward()
        opt.step()
    recs = pair.records
    assert [r["n_past"] for r in recs] == [0, 1, 2, 2, 2]
    last = recs[-1]
    # oracle: the true window statistics = stats of the last 3 batches through the conv as it was at that step
    assert last["err_mu_comp"] < 1e-5 < last["err_mu_naive"]
    assert last["err_nu_comp"] < 0.5 * last["err_nu_naive"]
    torch.testing.assert_close(last["mu_comp"], last["mu_true"], rtol=0, atol=1e-5)
    summ = cbn.record_summary(recs, channel=1)
    assert summ["step"] == [0, 1, 2, 3, 4] and len(summ["mu_true"]) == 5


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


# --- figures and the app tab -------------------------------------------------------------------------
def _tiny_diag(steps=12, **kw):
    cfg = cbn.DiagnosticConfig(batch_size=2, window=3, steps=steps, every=4, layer="stem", **kw)
    g = torch.Generator().manual_seed(0)
    data = (torch.rand(40, 1, 8, 8, generator=g), torch.randint(0, 10, (40,), generator=g))
    results = list(cbn.diagnostic_run(cfg, data=data))
    return results, cbn.diagnostic_series(results[-1], cfg)


def test_diagnostic_run_streams_and_matches_recomputation():
    results, diag = _tiny_diag()
    assert [r["step"] for r in results] == [4, 8, 12]  # streamed updates
    assert diag["step"] == list(range(12)) and len(diag["loss"]) == 12
    assert diag["n_past"][:3] == [0, 1, 2]
    # μ compensation is exact for the conv: compensated window mean == true window mean
    for a, b in zip(diag["mu_comp"][3:], diag["mu_true"][3:]):
        assert max(abs(x - y) for x, y in zip(a, b)) < 1e-4
    errs = [(n, c) for n, c in zip(diag["err_nu_naive"], diag["err_nu_comp"]) if n is not None]
    assert sum(c for _, c in errs) < 0.5 * sum(n for n, _ in errs)


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


def test_study_tables_from_records():
    from workbench.studies import cbn as st

    recs = []
    for norm, accs in (("bn", (0.9, 0.8, 0.95)), ("cbn", (0.93, 0.9, 0.95)), ("naive", (0.91, 0.85, 0.94)),
                       ("gn", (0.92, 0.91, 0.92))):
        for b, acc in zip((2, 4, 32), accs):
            for seed, d in ((0, 0.01), (1, -0.01)):
                recs.append(dict(part="main", norm=norm, batch_size=b, seed=seed, test_acc=acc + d, window=4,
                                 burnin_epochs=0.0))
    recs.append(dict(part="window", norm="cbn", batch_size=4, seed=0, test_acc=0.97, window=8, burnin_epochs=0.0))
    recs.append(dict(part="burnin", norm="cbn", batch_size=4, seed=0, test_acc=0.96, window=4, burnin_epochs=1.0))
    s = st.summarize(recs)
    assert s["main"]["bn"][2] == pytest.approx([0.91, 0.89])
    assert s["window"][("cbn", 1)] == s["main"]["bn"][4] and s["window"][("cbn", 8)] == [0.97]
    assert s["burnin"][1.0] == [0.96] and s["burnin"][0.0] == s["main"]["cbn"][4]
    md = "\n".join(body for _, body in st.tables(recs))
    assert "90.0 ± 1.4" in md  # BN at B=2: mean of 0.91, 0.89 ± their std
    assert "-4.0" in md  # gap of BN B=2 to BN B=32 (0.90 vs 0.95)
    from workbench.viz import cbn as vz

    fig = vz.batch_size_figure(recs)
    bn_line = [t for t in fig.data if t.name == "BN"][0]
    assert list(bn_line.y) == pytest.approx([90.0, 80.0, 95.0])


def test_app_functions(monkeypatch):
    from workbench.apps import cbn as app
    from workbench.studies import cbn as st

    diag = st.load_diagnostic()
    traj, err, loss, text, state = app.replay(2)
    assert state == diag and "compensated" in text
    cur = [t for t in traj.data if t.name == "current batch"][0]
    assert list(cur.y) == pytest.approx([row[2] for row in diag["mu_cur"]])
    results, tiny = _tiny_diag()
    monkeypatch.setattr(cbn, "diagnostic_run", lambda cfg, data=None: iter(results))
    outs = list(app.live(2, 3, 1.0, 0, 10, "stem", 1))
    assert len(outs) == 3 and outs[-1][4]["step"] == tiny["step"]
    for bad, msg in ((dict(batch_size=1), "batch size"), (dict(window=0), "window"), (dict(rho=float("nan")), "rho"),
                     (dict(steps=10 ** 6), "steps"), (dict(layer="fc"), "layer"), (dict(batch_size="x"), "number")):
        kw = dict(batch_size=2, window=3, rho=1.0, burnin=0, steps=10, layer="stem", channel=0) | bad
        with pytest.raises(ValueError, match=msg):
            list(app.live(**kw))
    with pytest.raises(ValueError, match="channel"):
        app.render(diag, 999)
    with pytest.raises(ValueError, match="Nothing to show"):
        app.render({}, 0)


def test_demo_checkpoint_reproduces_its_accuracy():
    """The committed fp16 demo checkpoint loads (weights_only) into a fresh CBN model, window included,
    and reproduces the test accuracy recorded when it was saved (within fp16 rounding)."""
    from workbench.checkpoints import load_demo, load_into
    from workbench.data.natural import digits
    from workbench.studies import cbn as st
    from workbench.train import evaluate_accuracy

    ck = load_demo("cbn_digits", st.DEMO_COMMAND)
    model = make_model("cbn", window=4, seed=1)
    load_into(model, ck)
    assert all(int(m.bn.past_filled) == 3 for _, m in cbn.cbn_layers(model))
    x, y = digits("test")
    assert evaluate_accuracy(model, x, y) == pytest.approx(ck.extra["test_acc"], abs=0.01)
    assert ck.meta["command"] == st.DEMO_COMMAND


def test_stat_grad_scaled_bn_isolates_the_backward():
    """The study's gradient ablation: forward = BN exactly; input gradient = (1 − 1/k)·(gradient with
    constant statistics) + (1/k)·(BN's gradient), computed here with autograd in float64."""
    from workbench.studies.cbn import StatGradScaledBN

    g = torch.Generator().manual_seed(16)
    x = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    gy = torch.randn(3, 4, 5, 5, generator=g, dtype=torch.float64)
    bn = nn.BatchNorm2d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2.0)
    layer = StatGradScaledBN(bn, 4).double()
    xa = x.clone().requires_grad_(True)
    out = layer(xa)
    (gx,) = torch.autograd.grad(out, xa, gy)
    xb = x.clone().requires_grad_(True)
    ref = F.batch_norm(xb, None, None, layer.weight, layer.bias, True, 0.0, bn.eps)
    (g_bn,) = torch.autograd.grad(ref, xb, gy)
    var, mu = torch.var_mean(x, dim=(0, 2, 3), unbiased=False)
    g_const = gy * (layer.weight / torch.sqrt(var + bn.eps))[None, :, None, None]
    torch.testing.assert_close(out, ref.detach(), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gx, 0.75 * g_const + 0.25 * g_bn, rtol=1e-8, atol=1e-10)
