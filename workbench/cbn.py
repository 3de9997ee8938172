"""Cross-Iteration Batch Normalization (Yao, Cao, Zheng, Huang, Lin — "Cross-Iteration Batch
Normalization", CVPR 2021).

Batch normalization estimates per-channel statistics from the current mini-batch only; with a few
images per iteration the estimates are noisy and the network degrades. CBN pools the statistics of the
last ``k`` iterations. The past statistics were produced by older weights, so each is first moved to
the current weights with a first-order Taylor step. For a BN input ``x = conv(u, W) (+ b)`` of
channel ``c``:

    μ_t      = E[x],  ν_t = E[x²]                              (over N, H, W of iteration t)
    μ_{t-τ}(W_t) ≈ μ_{t-τ} + ρ ⟨∂μ_{t-τ}/∂W_{t-τ}, W_t − W_{t-τ}⟩                    (compensation)
    ν_{t-τ}(W_t) ≈ ν_{t-τ} + ρ ⟨∂ν_{t-τ}/∂W_{t-τ}, W_t − W_{t-τ}⟩
    μ̄_t = (1/n_t) Σ_τ μ_{t-τ}(W_t),   ν̄_t = (1/n_t) Σ_τ ν_{t-τ}(W_t),   σ̄²_t = ν̄_t − μ̄_t²
    y = γ (x − μ̄_t) / sqrt(σ̄²_t + ε) + β

where τ runs over the current iteration and the ``window − 1`` stored ones, and a past entry whose
compensated ν is below its compensated μ² (an impossible pair) is left out; ``n_t`` counts the entries
kept. The current iteration's statistics keep their gradient; past ones (and the weights used in the
compensation) are detached, as in the official code — so the current batch's statistics receive only
``1/n_t`` of the gradient BN would give them. ``ρ = 0`` is the paper's *naive CBN*: the window without
compensation (YOLOv4 later called a similar accumulation "CmBN").

Burn-in: for the first ``burnin`` training iterations the layer is plain BN. Its iteration counter
(``iteration``) starts at 0 in every new layer, also when ``ConvCBN(bn=...)`` / ``convert_to_cbn`` take over a
pretrained BN whose ``num_batches_tracked`` (copied, for the running statistics) is large — as the official
layer, whose counter always starts at 0.

Emulating several GPUs (``ConvCBN(devices=G)``): the paper's small batch is the *per-GPU* statistics batch. With
``devices=G`` each training batch of ``N`` images is split into ``G`` groups of ``N/G`` (one per emulated GPU,
no SyncBN); every group is normalised with its own statistics and keeps its own window, while the optimizer
sees the whole batch. ``devices=G`` with ``window=1`` is "ghost" BatchNorm.

The statistics gradients are channel-diagonal (channel ``c`` depends only on filter ``W_c``), so they
have closed forms, with ``p`` the input patch a conv output position sees (``F.unfold``):

    ∂μ_c/∂W_c = E[p],        ∂ν_c/∂W_c = 2 E[x_c p]

:class:`ConvCBN` evaluates them without an autograd graph (``E[x_c p]`` is the conv weight-gradient
kernel with ``2x/n`` as the output gradient; ``E[p]`` is separable over rows and columns of the
batch-summed input: two small matrix products; ``stat_grads_unfold`` writes both literally with
``F.unfold`` as a reference).
:class:`CrossIterationBatchNorm2d` keeps the official call ``forward(x, weight)`` and obtains them by
autograd, like the official layer.

Differences from the official layer (``CBatchNorm2d`` of Howal/Cross-iterationBatchNorm):

* normalisation by ``1 / sqrt(σ̄² + ε)`` (as ``nn.BatchNorm2d``); the official layer divides by
  ``sqrt(σ̄²) + ε``. Ours is the official output times ``(σ + ε) / sqrt(σ² + ε) ≈ 1 + ε/σ − ε/(2σ²)``:
  with ε = 1e-5 about −4e-4 relative at σ = 0.1, below 1e-4 in magnitude for σ ≥ 0.2;
* during burn-in the official layer normalises with the unbiased variance of the batch; ours is exactly
  ``nn.BatchNorm2d`` (biased variance for normalising, unbiased for the running estimate);
* the window lives in fixed-size registered buffers (saved in ``state_dict``, moved by ``.to()``, restored on
  resume) instead of Python lists; statistics are accumulated in float32 (AMP safe); any device works;
* ``convert_to_cbn`` rewrites the conv→BN pairs of an existing network; ``devices`` emulates per-GPU
  statistics; ``stat_grad_scale`` is an ablation switch of ours (see :class:`CBNConfig`).

Baseline from another paper: :class:`BatchRenorm2d` (Ioffe, "Batch Renormalization", NeurIPS 2017), the other
remedy for small batches the CBN paper compares with — the batch statistics corrected towards the running ones by
``r = clip(σ_B/σ, 1/r_max, r_max)`` and ``d = clip((μ_B − μ)/σ, −d_max, d_max)``, both without gradient;
``make_model("brn")`` builds the study's network with it.

Distributed training: statistics stay per-process (no all-reduce), as in the paper's per-GPU setting;
each process keeps its own window.

Non-finite input: the plain BatchNorm path (window 1 or burn-in not reached) propagates NaN/Inf
exactly like ``nn.BatchNorm2d``; the windowed path raises ``ValueError`` before touching the window,
because a stored NaN would poison the next ``window − 1`` iterations.
"""
from __future__ import annotations

import functools
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import inspect

__all__ = [
    "CBNConfig",
    "ConvGeometry",
    "CrossIterationBatchNorm2d",
    "ConvCBN",
    "convert_to_cbn",
    "cbn_layers",
    "batch_stats",
    "stat_grads",
    "stat_grads_unfold",
    "stat_grads_autograd",
    "compensate",
    "SmallResNet",
    "make_model",
    "NORMS",
]

_WINDOW_MAX = 64


# --------------------------------------------------------------------------------------------------
# statistics and their gradients
# --------------------------------------------------------------------------------------------------
def batch_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-channel ``(μ, ν) = (E[x], E[x²])`` over (N, H, W), in float32 (float64 for float64 input),
    differentiable. Sums over the contiguous (H, W) first: on CPU this is ~10× faster than a reduction
    over (0, 2, 3) at once."""
    xf = x.to(torch.promote_types(x.dtype, torch.float32))
    m = x.shape[0] * x.shape[2] * x.shape[3]
    mu = xf.sum(dim=(2, 3)).sum(0) / m
    nu = (xf * xf).sum(dim=(2, 3)).sum(0) / m
    return mu, nu


@dataclass(frozen=True)
class ConvGeometry:
    """What the closed-form gradients need to know about a ``Conv2d``."""

    weight_shape: tuple[int, int, int, int]
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    dilation: tuple[int, int] = (1, 1)
    groups: int = 1

    @classmethod
    def of(cls, conv: nn.Conv2d) -> ConvGeometry:
        if not isinstance(conv, nn.Conv2d):
            raise ValueError(f"expected an nn.Conv2d, got {type(conv).__name__}")
        if conv.padding_mode != "zeros":
            raise ValueError(f"CBN's closed-form gradients need padding_mode='zeros', got {conv.padding_mode!r}")
        if isinstance(conv.padding, str):
            if conv.padding != "valid":
                raise ValueError("CBN's closed-form gradients need numeric conv padding (not 'same')")
            padding = (0, 0)
        else:
            padding = tuple(conv.padding)
        return cls(tuple(conv.weight.shape), tuple(conv.stride), padding, tuple(conv.dilation), conv.groups)


@functools.lru_cache(maxsize=64)
def _tap_matrix(k: int, dil: int, stride: int, pad: int, n_out: int, n_in: int, device: torch.device,
                dtype: torch.dtype) -> torch.Tensor:
    """``A[i, h] = 1`` when input row ``h`` is seen by filter tap ``i`` at some output row (1-D)."""
    a = torch.zeros(k, n_in + 2 * pad, dtype=dtype)
    for i in range(k):
        a[i, i * dil: i * dil + stride * (n_out - 1) + 1: stride] = 1.0
    return a[:, pad: pad + n_in].contiguous().to(device)


def stat_grads(inp: torch.Tensor, out: torch.Tensor, geom: ConvGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """Closed-form ``(∂μ/∂W, ∂ν/∂W)`` for ``out = conv(inp, W) (+ b)``, each ``(C_out, C_in/g·kh·kw)``.

    Row ``c`` holds ``∂μ_c/∂W_c = E[p]`` and ``∂ν_c/∂W_c = 2 E[x_c p]`` (the other rows of the full
    Jacobian are zero). No autograd graph is built; the result is float32 (float64 for float64 input).
    """
    cout, cpg, kh, kw = geom.weight_shape
    gr = geom.groups
    dt = torch.promote_types(torch.promote_types(inp.dtype, out.dtype), torch.float32)
    with torch.no_grad(), torch.autocast(inp.device.type, enabled=False):
        u = inp.detach().to(dt)
        y = out.detach().to(dt)
        n = y.shape[0] * y.shape[2] * y.shape[3]
        dnu = torch.nn.grad.conv2d_weight(u, geom.weight_shape, y, geom.stride, geom.padding, geom.dilation, gr)
        dnu = dnu.reshape(cout, -1).mul_(2.0 / n)
        # E[p] is separable: tap (i, j) sums the batch-summed input over rows i·d + s·h' and columns
        # j·d + s·w' (zero padding contributes nothing): two small 0/1 matrices instead of any unfold.
        a_h = _tap_matrix(kh, geom.dilation[0], geom.stride[0], geom.padding[0], y.shape[2], u.shape[2], u.device, dt)
        a_w = _tap_matrix(kw, geom.dilation[1], geom.stride[1], geom.padding[1], y.shape[3], u.shape[3], u.device, dt)
        cin, hh, ww = u.shape[1:]
        t = torch.mm(u.sum(0).reshape(cin * hh, ww), a_w.t())  # (Cin·H, kw): plain 2-D products, no copies
        t = torch.mm(t.reshape(cin, hh, kw).transpose(1, 2).reshape(cin * kw, hh), a_h.t())  # (Cin·kw, kh)
        taps = t.reshape(cin, kw, kh).transpose(1, 2)  # (Cin, kh, kw)
        dmu = (taps.reshape(gr, -1) * (1.0 / n)).repeat_interleave(cout // gr, dim=0)
    return dmu, dnu


def stat_grads_unfold(inp: torch.Tensor, out: torch.Tensor, geom: ConvGeometry) -> tuple[torch.Tensor, torch.Tensor]:
    """The same closed form written literally with ``F.unfold`` patches (reference, memory hungry)."""
    cout, cpg, kh, kw = geom.weight_shape
    gr = geom.groups
    with torch.no_grad():
        dt = torch.promote_types(inp.dtype, torch.float32)
        p = F.unfold(inp.detach().to(dt), (kh, kw), geom.dilation, geom.padding, geom.stride)  # (N, Cin·k, L)
        nb, _, L = p.shape
        p = p.reshape(nb, gr, cpg * kh * kw, L)
        y = out.detach().to(dt).reshape(nb, gr, cout // gr, L)
        n = nb * L
        dmu = p.mean(dim=(0, 3)).repeat_interleave(cout // gr, dim=0)
        dnu = 2.0 * torch.einsum("ngol,ngkl->gok", y, p).reshape(cout, -1) / n
    return dmu, dnu


def stat_grads_autograd(mu: torch.Tensor, nu: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(∂μ/∂W, ∂ν/∂W)`` by autograd, as the official layer does (channel-diagonal, so the gradient of
    ``Σ_c μ_c`` gives every row at once)."""
    if not (torch.is_grad_enabled() and mu.requires_grad and weight.requires_grad):
        raise ValueError("CrossIterationBatchNorm2d.forward(x, weight) in training mode needs x computed from "
                         "weight with autograd enabled (or use ConvCBN, whose gradients are closed-form)")
    try:
        (dmu,) = torch.autograd.grad(mu.sum(), weight, retain_graph=True)
        (dnu,) = torch.autograd.grad(nu.sum(), weight, retain_graph=True)
    except RuntimeError as e:  # weight not in x's graph
        raise ValueError(f"the weight passed to CrossIterationBatchNorm2d is not the one that produced x: {e}") from e
    c = weight.shape[0]
    dt = torch.promote_types(dmu.dtype, torch.float32)
    return dmu.detach().to(dt).reshape(c, -1), dnu.detach().to(dt).reshape(c, -1)


def compensate(stat: torch.Tensor, dstat: torch.Tensor, w_now: torch.Tensor, w_then: torch.Tensor,
               rho: float = 1.0) -> torch.Tensor:
    """First-order Taylor move of past statistics to today's weights:
    ``stat + ρ ⟨dstat, W_now − W_then⟩`` per channel. Shapes ``(..., C)``, ``(..., C, K)``, ``(C, K)``,
    ``(..., C, K)``."""
    return stat + rho * ((w_now - w_then) * dstat).sum(-1)


# --------------------------------------------------------------------------------------------------
# the layer
# --------------------------------------------------------------------------------------------------
@dataclass
class CBNConfig:
    """The hyper-parameters of a CBN layer (``window`` counts the current iteration)."""

    window: int = 4
    rho: float = 1.0
    burnin: int = 0
    eps: float = 1e-5
    momentum: float | None = 0.1
    affine: bool = True
    # ablation (ours, not the paper's): the share of the gradient the *current* batch statistics receive.
    # None = 1/n_t (the paper: past entries are constants); 1.0 = as much as BN gives them.
    stat_grad_scale: float | None = None

    def validate(self) -> CBNConfig:
        if isinstance(self.window, bool) or not isinstance(self.window, int) or not 1 <= self.window <= _WINDOW_MAX:
            raise ValueError(f"window must be an integer in [1, {_WINDOW_MAX}] (current iteration included), got {self.window!r}")
        if not isinstance(self.rho, (int, float)) or not math.isfinite(self.rho) or not 0.0 <= self.rho <= 4.0:
            raise ValueError(f"rho must be a finite number in [0, 4] (1 = full compensation, 0 = naive window), got {self.rho!r}")
        if isinstance(self.burnin, bool) or not isinstance(self.burnin, int) or self.burnin < 0:
            raise ValueError(f"burnin must be a non-negative integer (iterations of plain BN), got {self.burnin!r}")
        if not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise ValueError(f"eps must be positive, got {self.eps!r}")
        if self.momentum is not None and not (isinstance(self.momentum, (int, float)) and 0.0 < self.momentum <= 1.0):
            raise ValueError(f"momentum must be in (0, 1] or None, got {self.momentum!r}")
        g = self.stat_grad_scale
        if g is not None and not (isinstance(g, (int, float)) and math.isfinite(g) and 0.0 <= g <= 1.0):
            raise ValueError(f"stat_grad_scale must be None or a number in [0, 1], got {g!r}")
        return self


_WINDOW_KEYS = ("past_grads", "past_weight")


class _WindowNorm(torch.autograd.Function):
    """``y = γ (x − μ̄) / sqrt(σ̄² + ε) + β`` with ``μ̄ = (μ_t + A)/n``, ``σ̄² = (ν_t + B)/n − μ̄²`` where
    ``(A, B)`` are the detached sums of the kept past entries and ``n`` their count + 1. The backward
    pass is written out (BN's fused eval-mode backward kernel plus one pass over ``x``) instead of autograd's chain of
    small ops; it is checked against autograd in the tests. Also returns the current ``μ_t``, ``σ²_t``
    and ``ν_t`` (non-differentiable) for the window and the running statistics."""

    @staticmethod
    def forward(ctx, x, sums, cnt, gamma, beta, eps, grad_scale=None):
        xf = x.to(torch.promote_types(x.dtype, torch.float32))
        mu_t, nu_t = batch_stats(xf)
        var_t = (nu_t - mu_t * mu_t).clamp_min(0.0)
        if sums is None:
            mu, var = mu_t, var_t
        else:
            mu = (mu_t + sums[0]) / cnt
            var = ((nu_t + sums[1]) / cnt - mu * mu).clamp_min(0.0)
        r = torch.rsqrt(var + eps)
        scale = r if gamma is None else r * gamma.to(r.dtype)
        shift = -mu * scale if beta is None else beta.to(r.dtype) - mu * scale
        y = torch.addcmul(shift[:, None, None], xf, scale[:, None, None]).to(x.dtype)
        ctx.save_for_backward(x, mu, var, r, cnt, gamma)
        ctx.has_beta, ctx.eps, ctx.grad_scale = beta is not None, eps, grad_scale
        ctx.mark_non_differentiable(mu_t, var_t, nu_t)
        return y, mu_t, var_t, nu_t

    @staticmethod
    def backward(ctx, gy, _gm, _gv, _gn):
        x, mu, var, r, cnt, gamma = ctx.saved_tensors
        xf = x.to(mu.dtype)
        g = gy.to(mu.dtype).contiguous()
        m = x.shape[0] * x.shape[2] * x.shape[3]
        gam = torch.ones_like(mu) if gamma is None else gamma.to(mu.dtype)
        # BN's fused eval-mode backward with (μ̄, σ̄²) as "running" statistics gives g·γr, Σ g (x − μ̄) r and Σ g
        dx, s_gxc_r, sg = torch.ops.aten.native_batch_norm_backward(g, xf, gam, mu, var, None, None, False, ctx.eps,
                                                                     [True, True, True])
        d_var = -0.5 * gam * r * r * s_gxc_r  # ∂L/∂σ̄² = ∂L/∂ν̄
        d_mu = -gam * r * sg - 2.0 * mu * d_var  # ∂L/∂μ̄ (σ̄² = ν̄ − μ̄²)
        if ctx.grad_scale is not None:  # ablation: the current statistics get this share of the gradient
            d_mu, d_var = d_mu * ctx.grad_scale, d_var * ctx.grad_scale
        elif cnt is not None:
            d_mu, d_var = d_mu / cnt, d_var / cnt  # ∂L/∂μ_t, ∂L/∂ν_t (the paper: past entries are constants)
        coef_x = (2.0 / m) * d_var  # ν_t = E[x²]
        dx = dx.addcmul_(xf, coef_x[:, None, None]).add_((d_mu / m)[:, None, None])
        dgamma = s_gxc_r.to(gamma.dtype) if gamma is not None and ctx.needs_input_grad[3] else None
        dbeta = sg.to(gamma.dtype if gamma is not None else sg.dtype) if ctx.has_beta and ctx.needs_input_grad[4] else None
        return dx.to(x.dtype), None, None, dgamma, dbeta, None, None


class CrossIterationBatchNorm2d(nn.Module):
    """Batch normalization over the current and ``window − 1`` past iterations (see module docstring).

    ``forward(x, weight)``: ``x`` (N, C, H, W) is the BN input and ``weight`` the weight of the conv
    that produced it (the official call). In training mode the statistics gradients come from autograd,
    so ``x`` must be computed from ``weight`` with autograd on. In eval mode ``weight`` is ignored and
    the running statistics are used, exactly like ``nn.BatchNorm2d``.

    State: ``weight``, ``bias``, ``running_mean``, ``running_var``, ``num_batches_tracked`` (the same
    keys as ``nn.BatchNorm2d``) plus the window: ``past_stats`` (window−1, 2, C) holding (μ, ν),
    ``past_grads`` (window−1, 2, C, K) holding (∂μ/∂W, ∂ν/∂W), ``past_weight`` (window−1, C, K) and the
    ring-buffer counters ``past_filled``/``past_head``.
    ``K`` (the conv's fan-in) is learnt at the first windowed step unless ``weight_shape`` is given.
    """

    def __init__(self, num_features: int, window: int = 4, rho: float = 1.0, burnin: int = 0, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, *, weight_shape: tuple[int, ...] | None = None,
                 stat_grad_scale: float | None = None):
        super().__init__()
        if isinstance(num_features, bool) or not isinstance(num_features, int) or num_features < 1:
            raise ValueError(f"num_features must be a positive integer, got {num_features!r}")
        self.cfg = CBNConfig(window, rho, burnin, eps, momentum, affine, stat_grad_scale).validate()
        self.stat_grad_scale = stat_grad_scale
        self.num_features = num_features
        self.window, self.rho, self.burnin = window, float(rho), burnin
        self.eps, self.momentum, self.affine = float(eps), momentum, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        self.register_buffer("iteration", torch.tensor(0, dtype=torch.long))  # burn-in counter, starts at 0
        m = window - 1
        k = 0
        if weight_shape is not None:
            if weight_shape[0] != num_features:
                raise ValueError(f"weight_shape {tuple(weight_shape)} does not match num_features={num_features}")
            k = int(math.prod(weight_shape[1:]))
        self.register_buffer("past_stats", torch.zeros(m, 2, num_features))
        self.register_buffer("past_grads", torch.zeros(m, 2, num_features, k))
        self.register_buffer("past_weight", torch.zeros(m, num_features, k))
        self.register_buffer("past_filled", torch.tensor(0, dtype=torch.long))
        self.register_buffer("past_head", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, window={self.window}, rho={self.rho}, burnin={self.burnin}, eps={self.eps}, "
                f"momentum={self.momentum}, affine={self.affine}")

    # -- state -------------------------------------------------------------------------------------
    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        if (prefix + "iteration" not in state_dict and prefix + "num_batches_tracked" in state_dict
                and prefix + "past_filled" in state_dict):
            # CBN checkpoints written before the burn-in counter existed counted burn-in in num_batches_tracked;
            # a plain BatchNorm state dict (no window buffers) leaves the counter at 0, as the official layer
            state_dict[prefix + "iteration"] = state_dict[prefix + "num_batches_tracked"].clone()
        # the fan-in K of the window buffers may be unknown (0) until the first step: adopt the saved one
        for key in _WINDOW_KEYS:
            src = state_dict.get(prefix + key)
            mine = getattr(self, key)
            if src is not None and src.dim() == mine.dim() and src.shape[:-1] == mine.shape[:-1] and src.shape != mine.shape:
                setattr(self, key, torch.zeros(src.shape, dtype=mine.dtype, device=mine.device))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def reset_window(self) -> None:
        """Forget the stored iterations (e.g. after loading weights trained elsewhere)."""
        self.past_filled.zero_()
        self.past_head.zero_()

    def _ensure_window(self, k: int, device: torch.device) -> None:
        for key in _WINDOW_KEYS:
            buf = getattr(self, key)
            if buf.shape[-1] != k:
                if buf.shape[-1] != 0:
                    raise ValueError(f"the conv weight's fan-in changed from {buf.shape[-1]} to {k}")
                setattr(self, key, torch.zeros(*buf.shape[:-1], k, device=device, dtype=buf.dtype))

    def window_active(self) -> bool:
        """Whether the next training step uses the window (window > 1 and burn-in over)."""
        return self.window > 1 and int(self.iteration) >= self.burnin

    # -- forward -----------------------------------------------------------------------------------
    def _check(self, x: torch.Tensor, weight: torch.Tensor | None) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ValueError(f"CBN expects a 4-D input (N, C, H, W), got {tuple(getattr(x, 'shape', ()))}")
        if x.shape[1] != self.num_features:
            raise ValueError(f"CBN has {self.num_features} channels but the input has {x.shape[1]}")
        if weight is not None and (weight.dim() < 2 or weight.shape[0] != self.num_features):
            raise ValueError(f"the conv weight {tuple(weight.shape)} must have {self.num_features} output channels "
                             f"(its first dimension) to match this CBN layer")

    def forward(self, x: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
        self._check(x, weight)
        if not self.training:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)
        if weight is None:
            raise ValueError("in training mode CrossIterationBatchNorm2d needs the preceding conv's weight: "
                             "call cbn(x, conv.weight)")
        return self._train_forward(x, weight, lambda: stat_grads_autograd(*batch_stats(x), weight))

    @torch.no_grad()
    def _update_running(self, mu_t: torch.Tensor, var_t: torch.Tensor, n: int) -> None:
        self.num_batches_tracked.add_(1)
        a = self._factor()
        self.running_mean.mul_(1.0 - a).add_(mu_t, alpha=a)
        self.running_var.mul_(1.0 - a).add_(var_t, alpha=a * n / max(n - 1, 1))

    def _factor(self) -> float:
        if self.momentum is None:
            return 1.0 / float(self.num_batches_tracked)
        return self.momentum

    def _train_forward(self, x: torch.Tensor, weight: torch.Tensor,
                       grads_fn: Callable[[], tuple[torch.Tensor, torch.Tensor]], info: dict | None = None) -> torch.Tensor:
        """One training step. ``info``, when given, is filled with what this step pooled (the raw and compensated
        past entries, which were kept, the current and pooled statistics, the slot written); the layer also emits
        it as ``window`` to an open :func:`workbench.inspect.capture`."""
        if info is None and inspect.wants(self, "window"):
            info = {}
        if not self.window_active():
            self.iteration.add_(1)
            if self.stat_grad_scale is None:  # plain BatchNorm: bit-identical to nn.BatchNorm2d
                self.num_batches_tracked.add_(1)
                return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, True,
                                    self._factor(), self.eps)
            out, mu_t, var_t, _ = _WindowNorm.apply(x, None, None, self.weight, self.bias, self.eps,
                                                    self.stat_grad_scale)
            self._update_running(mu_t, var_t, x.shape[0] * x.shape[2] * x.shape[3])
            return out
        n = x.shape[0] * x.shape[2] * x.shape[3]
        if n < 2:
            raise ValueError("CBN needs more than one value per channel in training mode (N·H·W ≥ 2)")
        w_now = weight.detach().reshape(self.num_features, -1).to(self.past_weight.dtype)
        self._ensure_window(w_now.shape[1], x.device)
        f = int(self.past_filled)
        sums = cnt = comp = valid = None
        if f > 0:
            raw = self.past_stats[:f]  # (f, 2, C)
            comp = raw
            if self.rho != 0.0:
                dw = (w_now - self.past_weight[:f]).unsqueeze(1)  # (f, 1, C, K)
                comp = raw + self.rho * (self.past_grads[:f] * dw).sum(-1)
            valid = comp[:, 1] >= comp[:, 0] * comp[:, 0]  # (f, C)
            sums = (comp * valid.unsqueeze(1)).sum(0)  # (2, C)
            cnt = valid.sum(0).to(sums.dtype) + 1.0
        out, mu_t, var_t, nu_t = _WindowNorm.apply(x, sums, cnt, self.weight, self.bias, self.eps,
                                                   self.stat_grad_scale)
        if not bool(torch.isfinite(nu_t).all()):
            raise ValueError("non-finite values (NaN/Inf) in the CBN input; refusing to store them in the window")
        dmu, dnu = grads_fn()
        if info is not None:
            if f > 0:
                mu = (mu_t + sums[0]) / cnt
                var = ((nu_t + sums[1]) / cnt - mu * mu).clamp_min(0.0)
                info.update(mu_raw=raw[:, 0].clone(), nu_raw=raw[:, 1].clone(), mu_comp=comp[:, 0].clone(),
                            nu_comp=comp[:, 1].clone(), valid=valid, slots=list(range(f)))
            else:
                mu, var = mu_t, var_t
                info.update(slots=[])
            info.update(mu_cur=mu_t.detach(), nu_cur=nu_t.detach(), mu=mu.detach(), var=var.detach())
        self.iteration.add_(1)
        self._update_running(mu_t, var_t, n)
        with torch.no_grad():
            h = int(self.past_head)
            self.past_stats[h, 0] = mu_t
            self.past_stats[h, 1] = nu_t
            self.past_grads[h, 0] = dmu
            self.past_grads[h, 1] = dnu
            self.past_weight[h] = w_now
            if info is not None:
                info["stored_slot"] = h
            self.past_head.fill_((h + 1) % (self.window - 1))
            self.past_filled.fill_(min(f + 1, self.window - 1))
        if info is not None:
            inspect.emit(self, "window", info)
        return out


class ConvCBN(nn.Module):
    """A conv followed by CBN. ``forward(x)`` takes the conv's input; the statistics gradients are
    evaluated in closed form (``gradients="closed"``) or by autograd like the official layer
    (``gradients="autograd"``). ``bn`` (an ``nn.BatchNorm2d``) optionally supplies affine parameters and
    running statistics.

    Looking inside: in a training step watched by :func:`workbench.inspect.capture` (key ``stats``, e.g.
    ``capture(model, "blocks.1.conv1.stats", keep="all")``) the layer emits the current, naive-window,
    compensated-window and *true* statistics of the step — the true ones re-run the stored past inputs through
    this conv's current weights, so the capture keeps ``window − 1`` past inputs and costs ``window − 1`` extra
    convs per step. Nothing of it is stored on the layer. With ``devices`` > 1 the record is that of the first
    emulated device (its images, its window), as one GPU would see it.
    """

    def __init__(self, conv: nn.Conv2d, window: int = 4, rho: float = 1.0, burnin: int = 0, eps: float = 1e-5,
                 momentum: float | None = 0.1, affine: bool = True, *, bn: nn.BatchNorm2d | None = None,
                 gradients: str = "closed", devices: int = 1, stat_grad_scale: float | None = None):
        super().__init__()
        self.geom = ConvGeometry.of(conv)
        if gradients not in ("closed", "autograd"):
            raise ValueError(f"gradients must be 'closed' or 'autograd', got {gradients!r}")
        if isinstance(devices, bool) or not isinstance(devices, int) or not 1 <= devices <= 256:
            raise ValueError(f"devices must be an integer in [1, 256], got {devices!r}")
        if devices > 1 and gradients != "closed":
            raise ValueError("devices > 1 needs gradients='closed'")
        if bn is not None:
            if not isinstance(bn, nn.BatchNorm2d) or bn.num_features != conv.out_channels:
                raise ValueError("bn must be an nn.BatchNorm2d with the conv's out_channels")
            eps, momentum, affine = bn.eps, bn.momentum, bn.affine
        self.conv = conv
        self.devices = devices
        C = conv.out_channels
        # one device: the layer's own affine parameters; several: per-device statistics (G·C channels) and
        # one shared affine transform, as the copies of a layer on G GPUs share their weights
        self.bn = CrossIterationBatchNorm2d(C * devices, window, rho, burnin, eps, momentum, affine and devices == 1,
                                            weight_shape=(C * devices, *conv.weight.shape[1:]),
                                            stat_grad_scale=stat_grad_scale)
        if devices > 1 and affine:
            self.weight = nn.Parameter(torch.ones(C, device=conv.weight.device))
            self.bias = nn.Parameter(torch.zeros(C, device=conv.weight.device))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if bn is not None:
            with torch.no_grad():
                if affine:
                    (self.bn.weight if devices == 1 else self.weight).copy_(bn.weight)
                    (self.bn.bias if devices == 1 else self.bias).copy_(bn.bias)
                if bn.running_mean is not None:
                    self.bn.running_mean.copy_(bn.running_mean.repeat(devices))
                    self.bn.running_var.copy_(bn.running_var.repeat(devices))
                    self.bn.num_batches_tracked.copy_(bn.num_batches_tracked)
            self.bn.to(conv.weight.device)
        self.gradients = gradients

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv(x)
        if self.devices > 1:
            return self._forward_devices(x, y)
        if not self.training:
            return self.bn(y)
        info = {} if inspect.wants(self, "stats") else None
        if self.gradients == "autograd":
            out = self.bn._train_forward(y, self.conv.weight, lambda: stat_grads_autograd(*batch_stats(y), self.conv.weight),
                                         info)
        else:
            out = self.bn._train_forward(y, self.conv.weight, lambda: stat_grads(x, y, self.geom), info)
        if info is not None:
            for state in inspect.states(self):
                inspect.emit(self, "stats", self._record(x, info, state.setdefault("past_inputs", {})))
        return out

    def _forward_devices(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``devices`` groups of ``N / devices`` images, each normalised with its own statistics and window."""
        G, C = self.devices, self.conv.out_channels
        if not self.training:  # the device copies' running statistics, averaged
            rm = self.bn.running_mean.view(G, C).mean(0)
            rv = self.bn.running_var.view(G, C).mean(0)
            return F.batch_norm(y, rm, rv, self.weight, self.bias, False, 0.0, self.bn.eps)
        N = y.shape[0]
        if N % G:
            raise ValueError(f"a batch of {N} images cannot be split over {G} emulated devices; use a multiple of {G}")
        b = N // G
        yg = y.reshape(G, b, *y.shape[1:]).transpose(0, 1).reshape(b, G * C, *y.shape[2:])
        xs, ys = x.reshape(G, b, *x.shape[1:]), y.reshape(G, b, *y.shape[1:])

        def grads():
            parts = [stat_grads(xs[g], ys[g], self.geom) for g in range(G)]
            return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])

        info = {} if inspect.wants(self, "stats") else None
        out = self.bn._train_forward(yg, self.conv.weight.repeat(G, 1, 1, 1), grads, info)
        if info is not None:  # watched: the statistics of the first emulated device (its C channels)
            first = {k: (v[..., :C] if torch.is_tensor(v) and v.shape[-1] == G * C else v) for k, v in info.items()}
            for state in inspect.states(self):
                inspect.emit(self, "stats", self._record(xs[0], first, state.setdefault("past_inputs", {})))
        out = out.reshape(b, G, *y.shape[1:]).transpose(0, 1).reshape(y.shape)
        if self.weight is not None:
            out = out * self.weight[:, None, None] + self.bias[:, None, None]
        return out

    @torch.no_grad()
    def _record(self, x: torch.Tensor, info: dict, past_inputs: dict) -> dict:
        """The statistics of this step: current, pooled by CBN, naive / compensated / true window estimates."""
        if not info:  # plain BN step (window 1 or burn-in): only the current statistics exist
            mu_t, nu_t = batch_stats(self.conv(x))
            info = dict(mu_cur=mu_t, nu_cur=nu_t, mu=mu_t, var=(nu_t - mu_t ** 2).clamp_min(0), slots=[])
        mu_t, nu_t = info["mu_cur"], info["nu_cur"]
        slots = [s for s in info["slots"] if s in past_inputs]
        rec = {"step": int(self.bn.iteration) - 1, "n_past": len(slots),
               "mu_cur": mu_t.cpu(), "var_cur": (nu_t - mu_t ** 2).clamp_min(0).cpu(),
               "mu_cbn": info["mu"].cpu(), "var_cbn": info["var"].cpu()}
        if slots:
            idx = torch.tensor(slots, device=mu_t.device)
            mu_raw, nu_raw = info["mu_raw"][idx], info["nu_raw"][idx]
            mu_c, nu_c = info["mu_comp"][idx], info["nu_comp"][idx]
            trues = [batch_stats(self.conv(past_inputs[s])) for s in slots]
            mu_true = torch.stack([t[0] for t in trues])
            nu_true = torch.stack([t[1] for t in trues])

            def pooled(m, v):
                mm = (mu_t + m.sum(0)) / (1 + len(slots))
                vv = (nu_t + v.sum(0)) / (1 + len(slots))
                return mm.cpu(), (vv - mm * mm).clamp_min(0).cpu()

            rec["mu_naive"], rec["var_naive"] = pooled(mu_raw, nu_raw)
            rec["mu_comp"], rec["var_comp"] = pooled(mu_c, nu_c)
            rec["mu_true"], rec["var_true"] = pooled(mu_true, nu_true)
            rec["err_mu_naive"] = float((mu_raw - mu_true).abs().mean())
            rec["err_mu_comp"] = float((mu_c - mu_true).abs().mean())
            rec["err_nu_naive"] = float((nu_raw - nu_true).abs().mean())
            rec["err_nu_comp"] = float((nu_c - nu_true).abs().mean())
        else:
            for k in ("naive", "comp", "true"):
                rec[f"mu_{k}"], rec[f"var_{k}"] = rec["mu_cur"], rec["var_cur"]
        h = info.get("stored_slot")
        if h is not None:
            past_inputs[h] = x.detach().clone()
        return rec


# --------------------------------------------------------------------------------------------------
# converting a network
# --------------------------------------------------------------------------------------------------
_PAIRS_CACHE: dict = {}
_TRACE_LOCK = threading.Lock()


def conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    """``(pairs, problems)``: the ``(conv, bn)`` module names where a BatchNorm2d directly follows a Conv2d whose
    output goes nowhere else, read from the data flow with ``torch.fx``, and the reasons the other BNs are not.

    ``torch.fx`` tracing patches ``nn.Module.__call__`` for the whole process while it runs, which would break
    models running in other threads (a web app serving several users). The analysis is therefore done once per
    model class and module tree, under a lock, and cached."""
    key = (type(model), tuple((n, type(m)) for n, m in model.named_modules()))
    with _TRACE_LOCK:
        if key not in _PAIRS_CACHE:
            _PAIRS_CACHE[key] = _trace_conv_bn_pairs(model)
    pairs, problems = _PAIRS_CACHE[key]
    return list(pairs), list(problems)


def _trace_conv_bn_pairs(model: nn.Module) -> tuple[list[tuple[str, str]], list[str]]:
    import torch.fx as fx

    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # data-dependent control flow etc.
        raise ValueError(f"convert_to_cbn could not trace {type(model).__name__} with torch.fx ({e}); "
                         "wrap its conv/BN pairs with ConvCBN by hand") from e
    mods = dict(model.named_modules())
    calls: dict[str, int] = {}
    for node in gm.graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    pairs, problems = [], []
    for node in gm.graph.nodes:
        if node.op != "call_module" or not isinstance(mods.get(node.target), nn.BatchNorm2d):
            continue
        src = node.args[0] if node.args else None
        if not isinstance(src, fx.Node) or src.op != "call_module" or not isinstance(mods.get(src.target), nn.Conv2d):
            what = f"{src.op} {src.target}" if isinstance(src, fx.Node) else repr(src)
            problems.append(f"BatchNorm2d '{node.target}' does not follow a Conv2d (its input is {what})")
        elif len(src.users) != 1:
            problems.append(f"the output of Conv2d '{src.target}' feeds more than BatchNorm2d '{node.target}'")
        elif calls[src.target] != 1 or calls[node.target] != 1:
            problems.append(f"'{src.target}' / '{node.target}' are called more than once")
        else:
            pairs.append((src.target, node.target))
    for name, mod in mods.items():
        if isinstance(mod, nn.BatchNorm2d) and name not in calls:
            problems.append(f"BatchNorm2d '{name}' is never called in forward")
    return pairs, problems


def convert_to_cbn(model: nn.Module, window: int = 4, rho: float = 1.0, burnin: int = 0, *, strict: bool = True,
                   gradients: str = "closed", devices: int = 1,
                   stat_grad_scale: float | None = None) -> nn.Module:
    """Rewrite, in place, every ``Conv2d → BatchNorm2d`` pair of ``model`` into a :class:`ConvCBN`
    (the conv attribute becomes the pair, the BN attribute an ``nn.Identity``). The data flow is read
    with ``torch.fx``: a BN counts as "following a conv" only if its input is a ``Conv2d`` call whose
    output goes nowhere else. Other BNs raise ``ValueError`` (``strict=True``) or are left as
    BatchNorm (``strict=False``). BN affine parameters and running statistics are kept.
    """
    CBNConfig(window, rho, burnin).validate()
    mods = dict(model.named_modules())
    pairs, problems = conv_bn_pairs(model)
    if problems and strict:
        raise ValueError("convert_to_cbn: " + "; ".join(problems))
    for conv_name, bn_name in pairs:
        conv, bn = mods[conv_name], mods[bn_name]
        try:
            pair = ConvCBN(conv, window, rho, burnin, bn=bn, gradients=gradients, devices=devices,
                           stat_grad_scale=stat_grad_scale)
        except ValueError as e:
            if strict:
                raise ValueError(f"convert_to_cbn: '{conv_name}': {e}") from e
            continue
        pair.train(bn.training)
        _set(model, conv_name, pair)
        _set(model, bn_name, nn.Identity())
    return model


def _set(model: nn.Module, name: str, mod: nn.Module) -> None:
    parent, _, attr = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, attr, mod)


def cbn_layers(model: nn.Module) -> list[tuple[str, ConvCBN]]:
    """The (name, ConvCBN) pairs of a model, in module order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, ConvCBN)]


# --------------------------------------------------------------------------------------------------
# Batch Renormalization (the baseline of the CBN paper's small-batch comparison)
# --------------------------------------------------------------------------------------------------
class BatchRenorm2d(nn.Module):
    """Batch Renormalization (Ioffe, NeurIPS 2017, Algorithm 1), for the small-batch comparison.

    Training, per channel, with the batch mean ``μ_B`` and ``σ_B = sqrt(var_B + ε)`` (biased variance) and the
    running ``μ``, ``σ``::

        r = stop_gradient(clip(σ_B / σ, 1/r_max, r_max)),   d = stop_gradient(clip((μ_B − μ) / σ, −d_max, d_max))
        y = γ ((x − μ_B) / σ_B · r + d) + β,     μ += α (μ_B − μ),   σ += α (σ_B − σ)

    inference: ``y = γ (x − μ) / σ + β``. Unclipped, the training output equals the inference one while the
    gradient flows through the batch statistics (scaled by ``r``). The schedule follows the paper: plain BN
    (``r_max = 1``, ``d_max = 0``) for ``burnin`` training steps, then ``r_max`` and ``d_max`` relaxed linearly to
    ``rmax`` and ``dmax`` over ``ramp`` steps. ``devices = G`` splits the batch into G groups, each normalised with
    its own batch statistics (emulated GPUs, as :class:`ConvCBN`); the running statistics are shared and follow the
    mean of the groups' statistics (under DDP, rank 0's buffers are broadcast — one group's; the mean is the same
    in expectation and less noisy).

    Differences from the paper: the running σ starts at 1 (as BN's running variance); α defaults to 0.1, the rate
    of ``nn.BatchNorm2d`` and of the other arms' running statistics, where the paper used 0.01 over ~10⁵ steps
    (in a run of a few hundred steps, statistics that old lag far behind the weights).
    """

    def __init__(self, num_features: int, *, rmax: float = 3.0, dmax: float = 5.0, burnin: int = 0, ramp: int = 0,
                 momentum: float = 0.1, eps: float = 1e-5, devices: int = 1):
        super().__init__()
        if not (rmax >= 1 and dmax >= 0 and burnin >= 0 and ramp >= 0 and 0 < momentum <= 1 and devices >= 1):
            raise ValueError("BatchRenorm2d needs rmax >= 1, dmax >= 0, burnin >= 0, ramp >= 0, 0 < momentum <= 1 "
                             "and devices >= 1")
        self.num_features, self.rmax, self.dmax, self.burnin, self.ramp = num_features, rmax, dmax, burnin, ramp
        self.momentum, self.eps, self.devices = momentum, eps, devices
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_std", torch.ones(num_features))
        self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))

    def limits(self) -> tuple[float, float]:
        """``(r_max, d_max)`` of the current step under the schedule."""
        t = int(self.num_batches_tracked) - self.burnin
        if t < 0:
            return 1.0, 0.0
        f = 1.0 if self.ramp == 0 else min(1.0, t / self.ramp)
        return 1.0 + (self.rmax - 1.0) * f, self.dmax * f

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1, 1, 1)
        if not self.training:
            return (x - self.running_mean.view(shape)) / self.running_std.view(shape) * self.weight.view(shape) \
                + self.bias.view(shape)
        N, C = x.shape[:2]
        G = self.devices
        if N % G:
            raise ValueError(f"a batch of {N} images cannot be split over {G} emulated devices; use a multiple of {G}")
        xg = x.reshape(G, N // G, *x.shape[1:])
        mu_b = xg.mean(dim=(1, 3, 4), keepdim=True)                                   # (G, 1, C, 1, 1)
        sigma_b = (xg.var(dim=(1, 3, 4), unbiased=False, keepdim=True) + self.eps).sqrt()
        r_max, d_max = self.limits()
        with torch.no_grad():
            mu, sigma = self.running_mean.view(1, 1, C, 1, 1), self.running_std.view(1, 1, C, 1, 1)
            r = (sigma_b / sigma).clamp(1.0 / r_max, r_max)
            d = ((mu_b - mu) / sigma).clamp(-d_max, d_max)
            self.running_mean.add_(self.momentum * (mu_b.mean(0).flatten() - self.running_mean))
            self.running_std.add_(self.momentum * (sigma_b.mean(0).flatten() - self.running_std))
            self.num_batches_tracked.add_(1)
        y = ((xg - mu_b) / sigma_b * r + d).reshape(x.shape)
        return y * self.weight.view(shape) + self.bias.view(shape)


def convert_to_brn(model: nn.Module, **kw) -> nn.Module:
    """Replace, in place, every ``BatchNorm2d`` of ``model`` by a :class:`BatchRenorm2d` (``kw`` passed on)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, nn.BatchNorm2d):
            _set(model, name, BatchRenorm2d(m.num_features, eps=m.eps, **kw).to(m.weight.device))
    return model


# --------------------------------------------------------------------------------------------------
# a small ResNet for the study, the app and the benchmark
# --------------------------------------------------------------------------------------------------
NORMS = ("bn", "naive", "cbn", "gn", "brn")


def _norm(kind: str, c: int) -> nn.Module:
    if kind == "gn":
        return nn.GroupNorm(min(8, c), c)
    return nn.BatchNorm2d(c)


class _Block(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = _norm(norm, cout)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), _norm(norm, cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.shortcut is None else self.shortcut(x)))


class SmallResNet(nn.Module):
    """A ResNet-style classifier for small images: stem conv, ``len(widths)`` stages of one basic
    block (stride 2 from the second stage), global average pooling, linear head."""

    def __init__(self, in_chans: int = 1, num_classes: int = 10, widths: tuple[int, ...] = (16, 32), norm: str = "bn"):
        super().__init__()
        if norm not in ("bn", "gn"):
            raise ValueError(f"SmallResNet builds 'bn' or 'gn' layers (use make_model for CBN), got {norm!r}")
        self.stem = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False)
        self.stem_bn = _norm(norm, widths[0])
        blocks, cin = [], widths[0]
        for i, w in enumerate(widths):
            blocks.append(_Block(cin, w, 1 if i == 0 else 2, norm))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x):
        x = F.relu(self.stem_bn(self.stem(x)))
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))


def make_model(norm: str = "bn", *, window: int = 4, burnin: int = 0, rho: float | None = None,
               widths: tuple[int, ...] = (16, 32), in_chans: int = 1, num_classes: int = 10,
               gradients: str = "closed", seed: int | None = None, devices: int = 1,
               stat_grad_scale: float | None = None) -> nn.Module:
    """``SmallResNet`` with ``norm`` in ``NORMS``: ``bn``, ``gn`` (GroupNorm), ``cbn`` (ρ = 1),
    ``naive`` (window without compensation, ρ = 0) or ``brn`` (:class:`BatchRenorm2d`: plain BN for ``burnin``
    steps, then r_max / d_max relaxed to 3 / 5 over as many steps); ``rho`` overrides ρ for ``cbn``. ``devices`` > 1 splits
    every batch into that many groups with their own statistics (emulated GPUs; BN becomes ghost BN);
    ``stat_grad_scale`` is the ablation switch of :class:`CBNConfig`."""
    if norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    if seed is not None:
        torch.manual_seed(seed)
    model = SmallResNet(in_chans, num_classes, widths, "gn" if norm == "gn" else "bn")
    if norm in ("cbn", "naive"):
        r = 0.0 if norm == "naive" else (1.0 if rho is None else rho)
        convert_to_cbn(model, window, r, burnin, gradients=gradients, devices=devices,
                       stat_grad_scale=stat_grad_scale)
    elif norm == "brn":
        convert_to_brn(model, burnin=burnin, ramp=burnin, devices=devices)
    elif norm == "bn" and (devices > 1 or stat_grad_scale is not None):
        convert_to_cbn(model, 1, 0.0, 0, gradients=gradients, devices=devices, stat_grad_scale=stat_grad_scale)
    return model
