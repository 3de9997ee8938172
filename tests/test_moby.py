"""Tests of workbench.moby (MoBY): closed forms, float64 references, slow loops and scikit-learn oracles."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from workbench import moby
from workbench.moby import MoBY, MoBYConfig

torch.set_num_threads(1)


class TinyEncoder(nn.Module):
    """A stand-in backbone: conv + BN + global pool, with a drop-path-like stochastic residual."""

    def __init__(self, drop_path_rate: float = 0.0, dim: int = 12):
        super().__init__()
        self.num_features = dim
        self.drop_path_rate = drop_path_rate
        self.conv = nn.Conv2d(3, dim, 3, stride=2, padding=1)
        self.bn = nn.BatchNorm2d(dim)
        self.fc = nn.Linear(dim, dim)

    def forward(self, x):
        f = torch.relu(self.bn(self.conv(x))).mean((2, 3))
        r = self.fc(f)
        if self.training and self.drop_path_rate > 0:
            keep = (torch.rand(f.shape[0], 1) >= self.drop_path_rate).float() / (1 - self.drop_path_rate)
            r = r * keep
        return f + r


def tiny_cfg(**kw):
    base = dict(proj_hidden=32, pred_hidden=32, out_dim=8, queue_size=16, temperature=0.2,
                drop_path_online=0.2, drop_path_target=0.0)
    base.update(kw)
    return MoBYConfig(**base)


def tiny_moby(seed=0, **kw):
    torch.manual_seed(seed)
    return MoBY(lambda dp: TinyEncoder(dp), tiny_cfg(**kw))


# ---------------------------------------------------------------------------------------------- config
def test_official_defaults_match_the_paper():
    c = moby.OFFICIAL
    assert (c.proj_hidden, c.pred_hidden, c.out_dim, c.queue_size) == (4096, 4096, 256, 4096)
    assert c.temperature == 0.2 and c.momentum == 0.99
    assert (c.drop_path_online, c.drop_path_target) == (0.2, 0.0)


def test_moby_without_a_config_is_the_official_one():
    """``MoBY`` / ``build_moby`` without ``cfg`` use :data:`OFFICIAL` (4096-wide MLPs, 256-d keys, two queues of
    4096, asymmetric drop path 0.2 / 0), not the laptop preset."""
    import inspect as pyinspect
    assert pyinspect.signature(moby.build_moby).parameters["cfg"].default is None
    torch.manual_seed(0)
    model = MoBY(lambda dp: TinyEncoder(dp))
    assert model.cfg == moby.OFFICIAL and model.cfg != moby.LAPTOP
    assert model.queue1.shape == model.queue2.shape == (256, 4096)
    assert model.projector.net[0].out_features == 4096 and model.predictor.net[-1].out_features == 256
    assert (model.encoder.drop_path_rate, model.encoder_k.drop_path_rate) == (0.2, 0.0)


@pytest.mark.parametrize("kw", [dict(queue_size=0), dict(temperature=0.0), dict(temperature=float("nan")),
                                dict(momentum=1.5), dict(drop_path_online=1.0), dict(out_dim=-3)])
def test_config_rejects_absurd_values(kw):
    with pytest.raises(ValueError):
        MoBYConfig(**kw)


# ---------------------------------------------------------------------------------------------- momentum
def test_schedule_first_last_and_closed_form():
    K = 37
    assert moby.momentum_at(0, K) == pytest.approx(0.99, abs=1e-15)
    assert moby.momentum_at(K, K) == pytest.approx(1.0, abs=1e-15)
    for k in (1, 10, 18, 30):
        expected = 1 - (1 - 0.99) * (math.cos(math.pi * k / K) + 1) / 2
        assert moby.momentum_at(k, K) == pytest.approx(expected, abs=1e-15)
    vals = [moby.momentum_at(k, K) for k in range(K + 1)]
    assert all(b >= a for a, b in zip(vals, vals[1:]))  # monotone rise
    assert moby.momentum_at(K // 2, 2 * (K // 2)) == pytest.approx(0.995, abs=1e-12)


def test_momentum_update_equals_closed_form():
    torch.manual_seed(1)
    online, target = nn.Linear(5, 4), nn.Linear(5, 4)
    before_t = {k: v.double().clone() for k, v in target.state_dict().items()}
    before_o = {k: v.double().clone() for k, v in online.state_dict().items()}
    m = 0.9731
    moby.momentum_update_(target, online, m)
    for k, v in target.state_dict().items():
        torch.testing.assert_close(v.double(), m * before_t[k] + (1 - m) * before_o[k], rtol=0, atol=1e-6)
    # the online module is untouched
    for k, v in online.state_dict().items():
        torch.testing.assert_close(v.double(), before_o[k], rtol=0, atol=0)


def test_model_momentum_update_after_an_optimizer_step():
    model = tiny_moby()
    # the target starts as an exact copy of the online branch
    for (n1, a), (n2, b) in zip(model.encoder.state_dict().items(), model.encoder_k.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    x1, x2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    model(x1, x2).backward()
    opt.step()
    tk = {n: p.detach().double().clone() for n, p in model.encoder_k.named_parameters()}
    tq = {n: p.detach().double().clone() for n, p in model.encoder.named_parameters()}
    assert any(not torch.allclose(tk[n], tq[n]) for n in tk)  # the online branch moved
    m = model.momentum_update(3, 20)
    assert m == pytest.approx(moby.momentum_at(3, 20))
    for n, p in model.encoder_k.named_parameters():
        torch.testing.assert_close(p.double(), m * tk[n] + (1 - m) * tq[n], rtol=0, atol=1e-6)


def test_asymmetric_drop_path():
    rates = []

    def factory(dp):
        rates.append(dp)
        return TinyEncoder(dp)

    model = MoBY(factory, tiny_cfg(drop_path_online=0.3, drop_path_target=0.0))
    assert rates == [0.3, 0.0]
    assert model.encoder.drop_path_rate == 0.3 and model.encoder_k.drop_path_rate == 0.0


# ---------------------------------------------------------------------------------------------- gradients
def test_no_gradient_reaches_the_target_branch():
    model = tiny_moby()
    model.train()
    x1, x2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    z = model.target(x1)
    assert not z.requires_grad and z.grad_fn is None
    loss = model(x1, x2)
    loss.backward()
    for mod in model.target_modules():
        for n, p in mod.named_parameters():
            assert not p.requires_grad and p.grad is None, n
    assert model.queue1.grad_fn is None and not model.queue1.requires_grad
    for name, mod in (("encoder", model.encoder), ("projector", model.projector), ("predictor", model.predictor)):
        grads = [p.grad for p in mod.parameters()]
        assert all(g is not None for g in grads), name
        assert sum(float(g.abs().sum()) for g in grads) > 0, name


# ---------------------------------------------------------------------------------------------- queues
def test_queue_fifo_order_and_pointer_wrap():
    model = tiny_moby(queue_size=8)
    D, K, B = 8, 8, 2
    batches = [(F.normalize(torch.randn(B, D), dim=1), F.normalize(torch.randn(B, D), dim=1)) for _ in range(6)]
    for i, (k1, k2) in enumerate(batches):
        model.enqueue(k1, k2)
        assert int(model.queue_ptr) == ((i + 1) * B) % K
    # slow reference: a list of columns written FIFO at a wrapping pointer
    ref1 = [None] * K
    ref2 = [None] * K
    ptr = 0
    for k1, k2 in batches:
        for j in range(B):
            ref1[ptr + j], ref2[ptr + j] = k1[j], k2[j]
        ptr = (ptr + B) % K
    torch.testing.assert_close(model.queue1, torch.stack(ref1, dim=1))
    torch.testing.assert_close(model.queue2, torch.stack(ref2, dim=1))
    # after wrapping, the oldest keys (batches 0 and 1) were overwritten by batches 4 and 5
    torch.testing.assert_close(model.queue1[:, 0:2], batches[4][0].T)
    torch.testing.assert_close(model.queue1[:, 2:4], batches[5][0].T)
    torch.testing.assert_close(model.queue1[:, 4:6], batches[2][0].T)


def test_queue_initialised_unit_columns():
    model = tiny_moby(queue_size=16)
    torch.testing.assert_close(model.queue1.norm(dim=0), torch.ones(16))
    torch.testing.assert_close(model.queue2.norm(dim=0), torch.ones(16))
    assert int(model.queue_ptr) == 0


def test_queue_length_must_be_a_multiple_of_the_global_batch():
    model = tiny_moby(queue_size=16)
    with pytest.raises(ValueError, match="multiple of the global batch"):
        model.enqueue(torch.randn(3, 8), torch.randn(3, 8))


def test_forward_enqueues_target_keys_after_the_loss():
    model = tiny_moby(queue_size=16)
    model.train()
    x1, x2 = torch.rand(4, 3, 16, 16), torch.rand(4, 3, 16, 16)
    q1_before, q2_before = model.queue1.clone(), model.queue2.clone()
    torch.manual_seed(5)
    model(x1, x2)
    # recompute the keys with the same target state (BN in train mode uses batch statistics; no randomness)
    with torch.no_grad():
        z1, z2 = model.target(x1), model.target(x2)
    torch.testing.assert_close(model.queue1[:, :4], z1.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.queue2[:, :4], z2.T, rtol=0, atol=1e-6)
    torch.testing.assert_close(model.queue1[:, 4:], q1_before[:, 4:], rtol=0, atol=0)
    torch.testing.assert_close(model.queue2[:, 4:], q2_before[:, 4:], rtol=0, atol=0)
    assert int(model.queue_ptr) == 4


# ---------------------------------------------------------------------------------------------- loss
def reference_loss(p1, p2, z1, z2, Q1, Q2, tau):
    """float64 slow loop of the symmetric MoBY loss."""
    def ce(p, z, Q):
        total = 0.0
        for b in range(p.shape[0]):
            pos = math.exp(sum(float(p[b, d]) * float(z[b, d]) for d in range(p.shape[1])) / tau)
            neg = 0.0
            for j in range(Q.shape[1]):
                neg += math.exp(sum(float(p[b, d]) * float(Q[d, j]) for d in range(p.shape[1])) / tau)
            total += -math.log(pos / (pos + neg))
        return total / p.shape[0]
    return ce(p1, z2, Q2) + ce(p2, z1, Q1)


def test_loss_equals_float64_reference():
    g = torch.Generator().manual_seed(3)
    B, D, K, tau = 5, 6, 7, 0.2
    p1, p2, z1, z2 = (F.normalize(torch.randn(B, D, generator=g), dim=1) for _ in range(4))
    Q1, Q2 = (F.normalize(torch.randn(D, K, generator=g), dim=0) for _ in range(2))
    got = moby.moby_loss(p1, p2, z1, z2, Q1, Q2, tau)
    want = reference_loss(p1.double(), p2.double(), z1.double(), z2.double(), Q1.double(), Q2.double(), tau)
    assert float(got) == pytest.approx(want, rel=1e-5)
    # the float64 computation of our function agrees to near machine precision
    got64 = moby.moby_loss(p1.double(), p2.double(), z1.double(), z2.double(), Q1.double(), Q2.double(), tau)
    assert float(got64) == pytest.approx(want, rel=1e-12)


def test_model_loss_equals_reference_from_its_branches():
    model = tiny_moby(queue_size=16).double()
    model.eval()  # deterministic branches
    x1, x2 = torch.rand(4, 3, 16, 16, dtype=torch.float64), torch.rand(4, 3, 16, 16, dtype=torch.float64)
    q1, q2 = model.queue1.clone(), model.queue2.clone()
    loss = model(x1, x2)
    with torch.no_grad():
        p1 = F.normalize(model.predictor(model.projector(model.encoder(x1))), dim=1)
        p2 = F.normalize(model.predictor(model.projector(model.encoder(x2))), dim=1)
        z1 = F.normalize(model.projector_k(model.encoder_k(x1)), dim=1)
        z2 = F.normalize(model.projector_k(model.encoder_k(x2)), dim=1)
    want = reference_loss(p1, p2, z1, z2, q1, q2, 0.2)      # the queues as they were before the call
    assert float(loss.detach()) == pytest.approx(want, rel=1e-10)
    # official: the keys are enqueued in eval mode too (only enqueue=False leaves the queues alone)
    assert int(model.queue_ptr) == 4
    torch.testing.assert_close(model.queue1[:, :4], z1.T, rtol=0, atol=1e-12)
    torch.testing.assert_close(model.queue2[:, :4], z2.T, rtol=0, atol=1e-12)
    before = model.queue1.clone()
    again = model(x1, x2, enqueue=False)
    assert int(model.queue_ptr) == 4 and torch.equal(model.queue1, before)
    assert float(again) == pytest.approx(reference_loss(p1, p2, z1, z2, model.queue1, model.queue2, 0.2), rel=1e-10)


def test_loss_shape_errors():
    with pytest.raises(ValueError):
        moby.contrastive_loss(torch.randn(4, 8), torch.randn(4, 8), torch.randn(7, 10), 0.2)
    with pytest.raises(ValueError):
        moby.contrastive_loss(torch.randn(4, 8), torch.randn(3, 8), torch.randn(8, 10), 0.2)


# ---------------------------------------------------------------------------------------------- kNN
def slow_knn(train, train_y, test, k, T, n_cls):
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    test = test / np.linalg.norm(test, axis=1, keepdims=True)
    preds = []
    for q in test:
        sims = [(float(q @ t), int(y)) for t, y in zip(train, train_y)]
        sims.sort(key=lambda s: -s[0])
        scores = [0.0] * n_cls
        for s, y in sims[:k]:
            scores[y] += math.exp(s / T)
        preds.append(int(np.argmax(scores)))
    return np.array(preds)


def test_knn_equals_slow_loop():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(60, 5))
    train_y = rng.integers(0, 4, size=60)
    test = rng.normal(size=(25, 5))
    for k, T in ((1, 0.07), (5, 0.07), (20, 0.5)):
        pred, scores = moby.knn_predict(torch.tensor(train), torch.tensor(train_y), torch.tensor(test), k, T, 4)
        np.testing.assert_array_equal(pred.numpy(), slow_knn(train, train_y, test, k, T, 4))
        assert scores.shape == (25, 4)


def test_knn_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.eye(3, 8) * 5
    y = torch.arange(90) % 3
    x = centers[y] + 0.3 * torch.randn(90, 8, generator=g)
    yt = torch.arange(30) % 3
    xt = centers[yt] + 0.3 * torch.randn(30, 8, generator=g)
    assert moby.knn_accuracy(x, y, xt, yt, k=10) == 100.0


def test_knn_rejects_bad_input():
    with pytest.raises(ValueError):
        moby.knn_predict(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 4))
    with pytest.raises(ValueError):
        moby.knn_predict(torch.randn(5, 3), torch.zeros(5, dtype=torch.long), torch.randn(2, 3), k=0)


# ---------------------------------------------------------------------------------------------- linear probe
def test_linear_probe_reaches_the_convex_optimum_of_sklearn():
    from sklearn.linear_model import LogisticRegression
    rng = np.random.default_rng(1)
    n, d, c = 240, 6, 3
    w_true = rng.normal(size=(d, c))
    x = rng.normal(size=(n, d))
    y = (x @ w_true + rng.gumbel(size=(n, c))).argmax(1)
    xt = rng.normal(size=(80, d))
    yt = (xt @ w_true).argmax(1)
    wd = 1e-2
    res = moby.linear_probe(torch.tensor(x, dtype=torch.float32), torch.tensor(y), torch.tensor(xt, dtype=torch.float32),
                            torch.tensor(yt), epochs=300, lr=0.5, weight_decay=wd, batch_size=n, standardize=False)
    # sklearn minimises 0.5 ||W||^2 + C sum CE  ==  n C (mean CE + 1 / (2 n C) ||W||^2)
    clf = LogisticRegression(C=1.0 / (n * wd), tol=1e-10, max_iter=10000).fit(x, y)
    p = clf.predict_proba(x)
    opt = -np.log(p[np.arange(n), y]).mean() + 0.5 * wd * (clf.coef_ ** 2).sum()
    assert res["loss"] == pytest.approx(opt, abs=2e-4)
    assert res["loss"] >= opt - 1e-6  # cannot beat the optimum
    sk_acc = 100.0 * (clf.predict(xt) == yt).mean()
    assert abs(res["acc"] - sk_acc) <= 100.0 / 80 * 2  # at most two test points differ


def test_linear_probe_trains_on_raw_features_by_default_and_standardises_on_request():
    """Official linear evaluation: the classifier sees the raw pooled features. ``standardize=True`` is the
    same probe on features standardised with the training mean and (unbiased) std, done by hand here."""
    rng = np.random.default_rng(3)
    scale = torch.tensor([1.0, 30.0, 0.05, 4.0])
    x = torch.tensor(rng.normal(size=(120, 4)), dtype=torch.float32) * scale + 2.0
    y = torch.tensor((x / scale).sum(1).numpy() > 8.0).long()
    xt = torch.tensor(rng.normal(size=(40, 4)), dtype=torch.float32) * scale + 2.0
    yt = torch.tensor((xt / scale).sum(1).numpy() > 8.0).long()
    kw = dict(epochs=20, lr=0.05, batch_size=32)
    raw = moby.linear_probe(x, y, xt, yt, **kw)
    explicit = moby.linear_probe(x, y, xt, yt, standardize=False, **kw)
    assert torch.equal(raw["weight"], explicit["weight"]) and torch.equal(raw["bias"], explicit["bias"])
    assert torch.equal(raw["mean"], torch.zeros(4)) and torch.equal(raw["std"], torch.ones(4))
    std = moby.linear_probe(x, y, xt, yt, standardize=True, **kw)
    mu, sd = x.double().mean(0), x.double().std(0)
    by_hand = moby.linear_probe(((x - mu) / sd).float(), y, ((xt - mu) / sd).float(), yt, **kw)
    torch.testing.assert_close(std["mean"], mu.float())
    torch.testing.assert_close(std["std"], sd.float())
    torch.testing.assert_close(std["weight"], by_hand["weight"], rtol=1e-5, atol=1e-6)
    assert std["acc"] == by_hand["acc"]
    assert not torch.allclose(raw["weight"], std["weight"], atol=1e-3)     # the two options are different probes


def test_linear_probe_rejects_nan():
    x = torch.randn(10, 3)
    x[0, 0] = float("nan")
    with pytest.raises(ValueError):
        moby.linear_probe(x, torch.zeros(10, dtype=torch.long), torch.randn(4, 3), torch.zeros(4, dtype=torch.long))


# ---------------------------------------------------------------------------------------------- embeddings
def test_nearest_neighbours_match_brute_force():
    g = torch.Generator().manual_seed(2)
    e = torch.randn(40, 6, generator=g)
    q = e[7]
    from workbench.demos import moby as demo

    idx, sims = demo.nearest_neighbours(e, q, k=5, exclude=7)
    cos = [(float(F.cosine_similarity(e[i], q, dim=0)), i) for i in range(40) if i != 7]
    cos.sort(reverse=True)
    assert idx == [i for _, i in cos[:5]]
    np.testing.assert_allclose(sims, [s for s, _ in cos[:5]], atol=1e-6)
    with pytest.raises(ValueError):
        demo.nearest_neighbours(e, q, k=0)


def test_pca_projection_matches_numpy_svd():
    g = torch.Generator().manual_seed(4)
    e = torch.randn(50, 7, generator=g) * torch.tensor([5.0, 3, 1, 1, 1, 1, 1])
    from workbench.demos import moby as demo

    xy = demo.project_2d(e, "pca")
    x = e.double().numpy()
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    ref = x @ vt[:2].T
    for j in range(2):  # equal up to the sign of each component
        s = np.sign(ref[:, j] @ xy[:, j])
        np.testing.assert_allclose(xy[:, j], s * ref[:, j], atol=1e-9)
    # variance of the first axis is the largest singular value squared / n
    np.testing.assert_allclose(xy[:, 0].var(), (np.linalg.svd(x, compute_uv=False)[0] ** 2) / 50, rtol=1e-9)
    with pytest.raises(ValueError):
        demo.project_2d(e, "umap-ish")


# ---------------------------------------------------------------------------------------------- two views
def _test_image(size=32):
    """A colourful, asymmetric image with bright and dark pixels (every op leaves a visible change)."""
    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    img = torch.stack([xx, yy * 0.8, (1 - xx) * yy]) + 0.1 * torch.rand(3, size, size, generator=g)
    return img.clamp(0, 1)


def test_two_views_differ_and_follow_their_per_view_probabilities(monkeypatch):
    """Instrument each op of both views and count how often it acted, over many seeded draws.

    Solarise, grayscale and colour jitter are seen as a change of the image; blur is counted at the
    blurring function itself (a sub-pixel sigma at 32 px can leave the image bit-identical).
    """
    from workbench.data import transforms as T
    blurred = []
    real_blur = T.gaussian_blur
    monkeypatch.setattr(T, "gaussian_blur", lambda x, s: (blurred.append(1), real_blur(x, s))[1])
    tv = moby.two_view_transform(32, normalize=False, scale=(0.5, 1.0))
    n = 1000
    names = {T.GaussianBlur: "blur", T.Solarize: "solarize", T.RandomGrayscale: "gray", T.RandomApply: "jitter"}
    counts = [dict.fromkeys(names.values(), 0), dict.fromkeys(names.values(), 0)]
    x0 = _test_image()
    g = torch.Generator().manual_seed(123)
    differ = 0
    for _ in range(n):
        outs = []
        for v, view in enumerate((tv.view1, tv.view2)):
            x = x0
            for t in view.transforms:
                nb = len(blurred)
                y = t(x, g)
                key = names.get(type(t))
                if key == "blur":
                    counts[v][key] += len(blurred) - nb
                elif key is not None and not torch.equal(y, x):
                    counts[v][key] += 1
                x = y
            outs.append(x)
        differ += int(not torch.allclose(outs[0], outs[1]))
    assert differ == n  # the two views of an image always differ

    def close(count, p):  # within 4.5 binomial standard deviations
        sd = math.sqrt(n * p * (1 - p)) if 0 < p < 1 else 0.0
        return abs(count - n * p) <= 4.5 * sd + 0.5

    # official recipe: view 1 blur 1.0 / solarize 0.0; view 2 blur 0.1 / solarize 0.2; both jitter 0.8, gray 0.2
    expected = [dict(blur=1.0, solarize=0.0, gray=0.2, jitter=0.8), dict(blur=0.1, solarize=0.2, gray=0.2, jitter=0.8)]
    for v in range(2):
        for key, p in expected[v].items():
            assert close(counts[v][key], p), (v, key, counts[v][key], p)


def test_two_views_are_reproducible_from_the_seed_and_reject_bad_input():
    img = (_test_image(40).permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    a1, a2 = moby.two_views(img, size=32, seed=7)
    b1, b2 = moby.two_views(img, size=32, seed=7)
    c1, _ = moby.two_views(img, size=32, seed=8)
    assert a1.shape == (3, 32, 32) and torch.equal(a1, b1) and torch.equal(a2, b2)
    assert not torch.equal(a1, c1)
    assert float(a1.min()) >= 0 and float(a1.max()) <= 1
    with pytest.raises(ValueError):
        moby.two_views(np.zeros((10, 10)), size=32)
    with pytest.raises(ValueError):
        moby.two_views(img, size=4)


# ---------------------------------------------------------------------------------------------- figures
def test_momentum_figure_endpoints_and_curves_from_records():
    from workbench.viz import moby as vm
    fig = vm.momentum_figure(50)
    y = np.asarray(fig.data[0].y)
    assert y[0] == pytest.approx(0.99) and y[-1] == pytest.approx(1.0) and len(y) == 51
    recs = [{"run": "a", "epoch": 1, "knn_shapes": 10.0}, {"run": "a", "epoch": 2, "knn_shapes": 20.0},
            {"run": "b", "epoch": 1, "knn_shapes": 5.0}]
    fig = vm.training_curves(recs)
    assert [t.name for t in fig.data] == ["a", "b"]
    np.testing.assert_allclose(fig.data[0].y, [10.0, 20.0])
    with pytest.raises(ValueError):
        vm.training_curves(recs, metric="nope")


def test_embedding_map_highlights_and_hover():
    from workbench.viz import moby as vm
    xy = np.random.default_rng(0).normal(size=(12, 2))
    labels = np.arange(12) % 3
    fig = vm.embedding_map(xy, labels, ["a", "b", "c"], highlight=[4, 7])
    assert len(fig.data) == 4  # three classes + the ring trace
    ring = fig.data[-1]
    np.testing.assert_allclose(ring.x, xy[[4, 7], 0])
    assert list(fig.data[1].text)[0] == "#1 · b"


# ---------------------------------------------------------------------------------------------- demo + app
# A random-initialised encoder of the demo's architecture stands in for the committed one in the logic tests; the
# checkpoint tests (moby_swinv2_shapes.pt) come last in this section.
def _drop_demo_cache():
    from workbench.demos import common

    common.clear_cache("workbench.demos.moby")


@pytest.fixture
def standin(monkeypatch):
    from workbench.demos import moby as demo

    _drop_demo_cache()
    torch.manual_seed(0)
    enc = moby.create_encoder("swinv2_micro_window4_64", 0.0).eval()
    monkeypatch.setattr(demo, "encoder", lambda: (enc, {"knn": None}))
    monkeypatch.setattr(demo, "N", 80)
    yield enc
    _drop_demo_cache()


def test_embeddings_are_the_encoders_normalised_features(standin):
    from workbench.demos import moby as demo

    idx = demo.index("shapes")
    x = torch.from_numpy(idx["images"]).permute(0, 3, 1, 2).float() / 255
    with torch.no_grad():
        ref = F.normalize(standin(moby.normalize_batch(x)), dim=1)
    torch.testing.assert_close(idx["emb"], ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(idx["emb"].norm(dim=1), torch.ones(len(idx["labels"])))
    assert len(idx["labels"]) == demo.N and idx["names"][0] == "circle"


def test_map_panel_neighbours_match_brute_force(standin):
    from workbench.apps import moby as app
    from workbench.demos import moby as demo

    fig_map, fig_nn, text = app.show("shapes", "pca", 5, 6)
    e = demo.index("shapes")["emb"].double()
    sims = e @ e[5]
    sims[5] = -2
    order = torch.argsort(sims, descending=True)[:6].tolist()
    shown = [int(part.split()[0][1:]) for part in text.split(". ")[0].removeprefix("nearest: ").split(", ")]
    assert shown == order
    assert sum(t.type == "image" for t in fig_nn.data) == 7  # the query and six neighbours
    ring = fig_map.data[-1]
    assert list(ring.customdata) == [5, *order]
    xy = demo.project_2d(demo.index("shapes")["emb"], "pca")
    np.testing.assert_allclose(ring.x, xy[[5, *order], 0])


def test_upload_of_a_gallery_image_finds_itself(standin):
    from workbench.apps import moby as app
    from workbench.demos import moby as demo

    img = demo.index("shapes")["images"][11]
    fig, text = app.upload_neighbours("shapes", np.array(img), 3)
    first = text.removeprefix("nearest: ").split(", ")[0]
    assert first.startswith("#11 ") and first.endswith("(1.00)")


def test_app_reroll_advances_the_seed_and_matches_two_views():
    from workbench.apps import moby as app
    from workbench.data import natural
    from workbench.viz import moby as vm
    from workbench.viz.core import to_uint8_image

    name = natural.photo_names()[0]
    seed, fig, text = app.reroll(name, 4)
    assert seed == 5 and "BYOL" in text
    v1, v2 = moby.two_views(natural.load_photo(name), size=96, seed=5)
    assert len(fig.data) == 3
    _, again, _ = app.reroll(name, 4)
    assert again.to_json() == fig.to_json()  # same seed -> same figure (deterministic)
    _, other, _ = app.reroll(name, 5)
    assert other.data[1].source != fig.data[1].source and other.data[0].source == fig.data[0].source
    # the figure shows exactly moby.two_views(seed) (PNG-encoded uint8 images)
    assert vm.two_views_figure(np.array(natural.load_photo(name)), v1, v2, seed=5).to_json() == fig.to_json()
    assert to_uint8_image(v1).shape == (96, 96, 3)


def test_shapes_views_are_the_demo_training_views(standin):
    """The "shapes #i" views are TwoViewShapes.sample(i) of the study's demo recipe, drawn with the seed."""
    from workbench.data.transforms import denormalize
    from workbench.demos import moby as demo
    from workbench.studies.moby import PretrainConfig, TwoViewShapes

    p = demo.views_panel("shapes #2", 7)
    ds = TwoViewShapes(PretrainConfig(n_images=16, img_size=64))
    v1, v2 = (denormalize(v).clamp(0, 1) for v in ds.sample(2, torch.Generator().manual_seed(7)))
    from workbench.viz import moby as vm

    ref = vm.two_views_figure(ds.images[2].permute(1, 2, 0).numpy(), v1, v2, seed=7)
    assert p.figures["views"].to_json() == ref.to_json() and "new background" in p.text


def test_app_bad_inputs_become_status_messages(standin):
    from workbench.apps import moby as app
    from workbench.apps.common import guard

    show = guard(app.show, 3)
    for args, msg in ((("shapes", "pca", 10_000, 8), "point number"), (("shapes", "pca", -1, 8), "point number"),
                      (("shapes", "pca", None, 8), "point number"), (("mnist", "pca", 0, 8), "gallery"),
                      (("shapes", "pca", 0, 99), "neighbours")):
        out = show(*args)
        assert out[:2] == (None, None) and out[2].startswith("⚠️ ") and msg in out[2], out
    up = guard(app.upload_neighbours, 2)
    assert up("shapes", None, 3) == (None, "⚠️ Please choose or upload an image first.")
    out = up("shapes", b"not an image", 3)
    assert out[0] is None and out[1].startswith("⚠️ could not read the image")
    out = guard(app.views, 2)("no-such-photo", 0)
    assert out[0] is None and "unknown image source" in out[1]
    out = guard(app.reroll, 3)("no-such-photo", 0)
    assert out[:2] == (None, None) and "unknown image source" in out[2]


def test_app_point_slider_follows_the_gallery(standin):
    from workbench.apps import moby as app
    from workbench.demos import moby as demo

    upd = app.point_range("shapes", 10_000)
    n = len(demo.index("shapes")["labels"])
    assert upd["maximum"] == n - 1 and upd["value"] == n - 1
    assert app.point_range("shapes", 3)["value"] == 3


def test_widgets_render_the_same_figures_as_the_app(standin):
    from workbench.apps import moby as app
    from workbench.widgets import moby as wm

    fig_w, text_w = wm.render_map("shapes", "pca", 2, 8)
    fig_a, _, text_a = app.show("shapes", "pca", 2, 8)
    assert fig_w.to_json() == fig_a.to_json() and text_w.startswith("nearest: ")
    nn_w, _ = wm.render_neighbours("shapes", 2, 8)
    assert nn_w.to_json() == app.show("shapes", "pca", 2, 8)[1].to_json()
    ex = wm.views_explorer()
    assert len(ex.figure.data) == 3 and ex.calls == 1
    ex.controls["seed"].value = 3
    assert ex.calls == 2


def test_missing_demo_checkpoint_names_the_command(monkeypatch, tmp_path):
    from workbench import checkpoints
    from workbench.demos import moby as demo

    _drop_demo_cache()
    monkeypatch.setattr(checkpoints, "DEMO_DIR", tmp_path)
    try:
        with pytest.raises(checkpoints.CheckpointError, match="workbench train moby-demo"):
            demo.index("shapes")
    finally:
        _drop_demo_cache()


def test_demo_checkpoint_is_small_loads_strictly_and_reproduces_its_knn():
    """The committed encoder (moby_swinv2_shapes.pt) loads strictly, embeds the gallery on the unit sphere, and its
    kNN top-1 on unseen shapes — recomputed here — is the number the tab quotes and beats a random encoder."""
    from workbench.checkpoints import demo_path, load_checkpoint
    from workbench.demos import moby as demo
    from workbench.studies import moby as study

    path = demo_path(demo.CHECKPOINT)
    assert path.exists(), f"demo checkpoint missing: run `{demo.COMMAND}`"
    assert path.stat().st_size < 8e6
    assert load_checkpoint(path).meta["command"].startswith("workbench train moby-demo")
    enc, info = demo.encoder()
    idx = demo.index("shapes")
    assert not enc.training and enc.num_features == idx["emb"].shape[1]
    torch.testing.assert_close(idx["emb"].norm(dim=1), torch.ones(len(idx["labels"])))
    knn = study.knn_top1(enc, study.knn_sets(demo.image_size()))
    assert knn == pytest.approx(info["knn"], abs=1.0)
    assert info["knn"] > info["knn_random_init"] + 10          # percent points: the training did something
    assert f"{info['knn']:.1f}%" in demo.summary()


def test_demo_neighbours_share_the_class_far_more_often_than_a_random_encoders():
    """The app's neighbours come from a trained encoder: over 100 gallery points, the 5 nearest neighbours share
    the point's class at least 8 points more often than under a randomly initialised encoder of the same
    architecture (kNN at training time: 49% against 18%; chance 10%; measured here 34% against 10%)."""
    from workbench import moby as mb
    from workbench.demos import moby as demo

    idx = demo.index("shapes")
    same = 0
    for p in range(0, 100):
        res = demo.neighbours("shapes", point=p, k=5)
        same += sum(int(lab == idx["labels"][p]) for lab in res["labels"])
    enc, _ = demo.encoder()
    torch.manual_seed(0)
    rand = mb.create_encoder("swinv2_micro_window4_64", 0.0, img_size=demo.image_size()).eval()
    with torch.no_grad():
        emb = demo.embed_images(rand, demo.gallery("shapes")[0])
    same_rand = 0
    for p in range(0, 100):
        nn_idx, _ = demo.nearest_neighbours(emb, emb[p], k=5, exclude=p)
        same_rand += sum(int(idx["labels"][j] == idx["labels"][p]) for j in nn_idx)
    assert same / 500 > same_rand / 500 + 0.08, (same, same_rand)
    assert same / 500 > 0.25


# ---------------------------------------------------------------------------------------------- DDP queue
def _ddp_worker(rank, world, port, batch, results):
    import os

    import torch.distributed as dist
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.manual_seed(0)  # the same initial queues on every rank
        model = tiny_moby(queue_size=8)
        keys = F.normalize(torch.arange(batch * 8, dtype=torch.float32).view(batch, 8) + 100 * rank + 1, dim=1)
        try:
            model.enqueue(keys, -keys)
            results.put((rank, model.queue1.numpy().tolist(), model.queue2.numpy().tolist(), int(model.queue_ptr), None))
        except ValueError as e:
            results.put((rank, None, None, None, str(e)))
    finally:
        dist.destroy_process_group()


def _run_ddp(batch, world=2):
    import multiprocessing as mp

    from workbench.apps.common import free_port
    ctx = mp.get_context("fork")
    results = ctx.Queue()
    port = free_port()
    procs = [ctx.Process(target=_ddp_worker, args=(r, world, port, batch, results)) for r in range(world)]
    for p in procs:
        p.start()
    out = sorted([results.get(timeout=120) for _ in range(world)], key=lambda r: r[0])
    for p in procs:
        p.join(timeout=60)
    return out


def test_queue_under_ddp_gathers_keys_of_all_ranks_in_rank_order():
    out = _run_ddp(batch=2)
    expected = torch.cat([F.normalize(torch.arange(16, dtype=torch.float32).view(2, 8) + 100 * r + 1, dim=1)
                          for r in range(2)])  # (global batch 4, D)
    for _rank, q1, q2, ptr, err in out:
        assert err is None
        q1, q2 = torch.tensor(q1), torch.tensor(q2)
        assert ptr == 4  # advanced by the global batch
        torch.testing.assert_close(q1[:, :4], expected.T)
        torch.testing.assert_close(q2[:, :4], -expected.T)
    assert out[0][1] == out[1][1] and out[0][2] == out[1][2]  # identical queues on every rank


def test_queue_under_ddp_rejects_a_global_batch_that_does_not_divide_it():
    out = _run_ddp(batch=3)  # global batch 6 does not divide 8
    for *_, err in out:
        assert err is not None and "multiple of the global batch size (6" in err


# ---------------------------------------------------------------------------------------------- real backbones
@pytest.mark.parametrize("backbone", ["swinv2_lite_window4_64", "swin_lite_window4_64", "vit_lite_patch8_64"])
def test_real_backbones_get_asymmetric_drop_path_and_an_identical_target(backbone):
    """Swin V2, Swin V1 (the names SimMIM accepts too, from the one registry) and ViT backbones."""
    torch.manual_seed(0)
    cfg = MoBYConfig(proj_hidden=32, pred_hidden=32, out_dim=16, queue_size=8, drop_path_online=0.2)
    model = moby.build_moby(backbone, cfg, img_size=32)

    def rates(m):
        return [mod.p for mod in m.modules() if type(mod).__name__.endswith("DropPath")]

    online, target = rates(model.encoder), rates(model.encoder_k)
    assert online and max(online) == pytest.approx(0.2) and all(p == 0.0 for p in target)
    for (n1, a), (n2, b) in zip(model.encoder.state_dict().items(), model.encoder_k.state_dict().items()):
        assert n1 == n2 and torch.equal(a, b)
    # in eval mode (no drop path) both encoders compute the same features
    model.eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model.encoder(x), model.encoder_k(x))
    assert model.encoder(x).shape == (2, model.encoder.num_features)
