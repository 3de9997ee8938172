"""Disentangled Non-Local blocks (Yin et al., "Disentangled Non-Local Neural Networks", ECCV 2020).

The non-local (NL) block of Wang et al. (embedded Gaussian form) aggregates values with the attention

    w(i, j) = softmax_j( q_i . k_j / s ),          s = sqrt(d)                                     (NL)

over all key positions j of a (B, C, H, W) feature map, with q = W_q x, k = W_k x, v = W_v x (1x1 convs
to d = C / reduction channels) and returns x + W_out sum_j w(i, j) v_j.  Writing mu_q, mu_k for the means
of the queries and keys over positions,

    q_i . k_j = (q_i - mu_q) . (k_j - mu_k)  +  mu_q . k_j  +  [ q_i . mu_k - mu_q . mu_k ]

and the bracket does not depend on j, so it cancels in the softmax over keys:

    softmax_j(q_i . k_j / s) = softmax_j( (q_i - mu_q).(k_j - mu_k) / s  +  mu_q . k_j / s )     (identity)

The first logit is the *whitened pairwise* term (how pixel i relates to pixel j), the second a *unary*
term that depends on the key alone (how salient pixel j is for every query).  Inside NL the two are
coupled in one softmax.  The disentangled block (DNL) gives each its own softmax:

    w_p(i, j) = softmax_j( (q_i - mu_q).(k_j - mu_k) / (s * T) )    whitened pairwise, temperature T
    w_u(j)    = softmax_j( W_m x_j )                                 unary, its own 1x1 conv C -> 1
    DNL(x)_i  = x_i + W_out( gamma * sum_j w_p(i, j) v_j  +  sum_j w_u(j) v_j )                  (DNL)

with gamma (the pairwise scale) starting at 0, as in the official block (``NonLocal2d_bn`` of
yinmh17/DNL-Semantic-Segmentation): the unary term is not scaled by gamma, so at the first step the value and
mask convolutions and gamma receive gradients, and queries / keys do once gamma has moved. The official
shipped configuration has no ``W_out`` (``use_out=False``: the value conv maps C -> C without bias) and q / k
of width C / 2 (``reduction=2``); ``use_out=True`` gives the value conv C -> C / reduction and a ``W_out``
back to C (bias-free, as the official one). Convolutions start from N(0, 0.01) with zero biases (official
``reset_parameters``). For comparison the module also has the plain non-local block (``NonLocal2d``: W_out
zero-initialised so the block starts as the identity, mmsegmentation's NL head convention), the
global-context block (GC, Cao et al. 2019: one query-independent map, i.e. a unary term, followed by a
bottleneck transform) and the two DNL halves alone (``DNL2d(pairwise=False)`` / ``DNL2d(unary=False)``).

Differences from the official block: no optional max-pool downsampling of keys/values, BN-whitening
variants or ``out_bn``; whitening is the paper's (``whiten_type=['channel']``: subtract the mean over
positions).

Looking inside (:mod:`workbench.inspect`): every block emits ``maps`` — a dict with ``"pairwise"`` (B, Q, HW)
rows (Q = HW, or the capture option ``queries``), ``"unary"`` (B, HW), NL's decomposition ``"whitened"``, the
grid ``"hw"`` and the ``"queries"`` — computed only inside a capture; outside one the blocks run
``F.scaled_dot_product_attention`` and keep nothing. :func:`attention_maps` wraps it. The segmentation network
``SegNet`` (a stride-8 conv backbone + a head with one of these blocks) and the statistics of the study (mIoU,
within-region attention share, unary mass near boundaries) live here too.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from workbench import inspect

__all__ = [
    "BLOCK_KINDS", "NonLocal2d", "DNL2d", "GlobalContext2d", "make_block", "attention_maps", "decompose_logits",
    "SegNetConfig", "SegNet", "confusion_matrix", "miou",
    "label_fractions", "boundary_map", "within_region_share", "boundary_concentration", "query_index",
    "object_concentration",
]

#: the heads the segmentation network can hold; "pairwise" and "unary" are the DNL halves alone
BLOCK_KINDS = ("none", "nl", "dnl", "gc", "pairwise", "unary")


# --------------------------------------------------------------------------------------------------
# input checks and the capture plumbing shared by the blocks
# --------------------------------------------------------------------------------------------------
def _check_map(x: torch.Tensor, channels: int) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"expected a torch.Tensor feature map, got {type(x).__name__}")
    if x.ndim != 4:
        raise ValueError(f"expected a (B, C, H, W) feature map, got shape {tuple(x.shape)}")
    if x.shape[1] != channels:
        raise ValueError(f"expected {channels} channels, got {x.shape[1]} (shape {tuple(x.shape)})")
    if not x.is_floating_point():
        raise ValueError(f"expected a floating-point feature map, got {x.dtype}")


def _resolve_queries(queries, h: int, w: int, device) -> torch.Tensor | None:
    """None -> None; ints / 1-D tensor -> flat indices; (Q, 2) of (row, col) -> flat indices."""
    if queries is None:
        return None
    q = torch.as_tensor(queries, dtype=torch.long, device=device)
    if q.ndim == 0:
        q = q.reshape(1)
    if q.ndim == 2:
        if q.shape[1] != 2:
            raise ValueError(f"queries as a 2-D array must be (Q, 2) (row, col) pairs, got {tuple(q.shape)}")
        rows, cols = q[:, 0], q[:, 1]
        if (rows < 0).any() or (rows >= h).any() or (cols < 0).any() or (cols >= w).any():
            raise ValueError(f"query (row, col) outside the {h}x{w} feature map: {q.tolist()}")
        q = rows * w + cols
    elif q.ndim != 1:
        raise ValueError(f"queries must be flat indices or (row, col) pairs, got shape {tuple(q.shape)}")
    if q.numel() == 0:
        raise ValueError("queries is empty")
    if (q < 0).any() or (q >= h * w).any():
        raise ValueError(f"query index outside 0..{h * w - 1} for a {h}x{w} feature map: {q.tolist()}")
    return q


class _Capturable(nn.Module):
    """Mixin: a block that emits its attention maps (``maps``) to an open :func:`workbench.inspect.capture`.

    ``attention = "sdpa"`` (default) runs ``F.scaled_dot_product_attention``; ``"explicit"`` materialises the
    (B, HW, HW) softmax (the benchmark compares the two)."""

    attention: str = "sdpa"

    def _explicit(self) -> bool:
        if self.attention not in ("sdpa", "explicit"):
            raise ValueError(f"attention must be 'sdpa' or 'explicit', got {self.attention!r}")
        return self.attention == "explicit"

    def _capturing(self) -> bool:
        return inspect.wants(self, "maps")

    def _queries(self, h: int, w: int, device) -> torch.Tensor | None:
        return _resolve_queries(inspect.option(self, "queries"), h, w, device)

    def _store(self, h: int, w: int, queries: torch.Tensor | None, **maps: torch.Tensor) -> None:
        entry = {k: v.detach() for k, v in maps.items()}
        entry["hw"] = (h, w)
        entry["queries"] = queries
        inspect.emit(self, "maps", entry)


def _softmax_rows(logits: torch.Tensor) -> torch.Tensor:
    return torch.softmax(logits, dim=-1)


def _attend(q, k, v, scale: float, queries, capture: bool, explicit: bool = False):
    """Attention output sum_j softmax_j(q_i.k_j * scale) v_j (B, N, d) and, when capturing, its rows.

    Fast path: ``F.scaled_dot_product_attention``.  Capture with all queries (or ``explicit``): the explicit
    softmax, whose matrix is both used and returned.  Capture with chosen queries: fast path for the output,
    explicit softmax only for those rows (memory O(Q * N)).
    """
    if explicit and not capture:
        return torch.bmm(_softmax_rows(torch.bmm(q, k.transpose(1, 2)) * scale), v), None
    if capture and queries is None:
        attn = _softmax_rows(torch.bmm(q, k.transpose(1, 2)) * scale)
        return torch.bmm(attn, v), attn
    dq, dv = q.shape[-1], v.shape[-1]
    if dq != dv:  # the fused CPU kernel needs one width: zero columns change neither q.k nor the output
        w = max(dq, dv)
        qf, kf, vf = (F.pad(t, (0, w - t.shape[-1])) for t in (q, k, v))
        out = F.scaled_dot_product_attention(qf.unsqueeze(1), kf.unsqueeze(1), vf.unsqueeze(1), scale=scale)
        out = out.squeeze(1)[..., :dv]
    else:
        out = F.scaled_dot_product_attention(q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), scale=scale).squeeze(1)
    if not capture:
        return out, None
    rows = _softmax_rows(torch.bmm(q[:, queries], k.transpose(1, 2)) * scale)
    return out, rows


def _flat(t: torch.Tensor) -> torch.Tensor:
    """(B, d, H, W) -> (B, HW, d), contiguous: SDPA's fused CPU kernel needs unit stride in the last dim
    (a transposed view silently falls back to the math path, which materialises the HW x HW matrix)."""
    return t.flatten(2).transpose(1, 2).contiguous()


def _check_temperature(t) -> float:
    try:
        t = float(t)
    except (TypeError, ValueError):
        raise ValueError(f"temperature must be a number, got {t!r}") from None
    if not math.isfinite(t) or t <= 0 or t > 1e3:
        raise ValueError(f"temperature must be a finite number in (0, 1000], got {t}")
    return t


def decompose_logits(q: torch.Tensor, k: torch.Tensor, scale: float = 1.0):
    """Split NL logits into the whitened pairwise and the unary term (the identity of the paper).

    q, k: (B, N, d) queries and keys.  Returns ``(pairwise (B, N, N), unary (B, N))`` with
    pairwise[i, j] = (q_i - mu_q).(k_j - mu_k) * scale and unary[j] = mu_q.k_j * scale, so that
    softmax_j(q_i.k_j * scale) == softmax_j(pairwise[i, j] + unary[j]).
    """
    mu_q = q.mean(dim=1, keepdim=True)
    mu_k = k.mean(dim=1, keepdim=True)
    pairwise = torch.bmm(q - mu_q, (k - mu_k).transpose(1, 2)) * scale
    unary = torch.bmm(mu_q, k.transpose(1, 2)).squeeze(1) * scale
    return pairwise, unary


# --------------------------------------------------------------------------------------------------
# the blocks
# --------------------------------------------------------------------------------------------------
class NonLocal2d(_Capturable):
    """Non-local block, embedded Gaussian: x + W_out softmax_j(q_i.k_j / sqrt(d)) v_j.

    Capture records ``"pairwise"`` (the NL attention itself), and the two terms of its decomposition,
    each through its own softmax: ``"whitened"`` softmax_j((q_i-mu_q).(k_j-mu_k)/s) and ``"unary"``
    softmax_j(mu_q.k_j/s) — the unary term NL carries implicitly.
    """

    def __init__(self, in_channels: int, reduction: int = 2, use_scale: bool = True, zero_init: bool = True):
        super().__init__()
        if in_channels < 1 or reduction < 1:
            raise ValueError(f"in_channels and reduction must be >= 1, got {in_channels}, {reduction}")
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)
        self.use_scale = use_scale
        d = self.inter_channels
        self.conv_query = nn.Conv2d(in_channels, d, 1)
        self.conv_key = nn.Conv2d(in_channels, d, 1)
        self.conv_value = nn.Conv2d(in_channels, d, 1)
        self.conv_out = nn.Conv2d(d, in_channels, 1)
        if zero_init:
            nn.init.zeros_(self.conv_out.weight)
            nn.init.zeros_(self.conv_out.bias)

    @property
    def scale(self) -> float:
        return 1.0 / math.sqrt(self.inter_channels) if self.use_scale else 1.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_map(x, self.in_channels)
        b, _, h, w = x.shape
        q, k, v = _flat(self.conv_query(x)), _flat(self.conv_key(x)), _flat(self.conv_value(x))
        capture = self._capturing()
        queries = self._queries(h, w, x.device) if capture else None
        y, attn = _attend(q, k, v, self.scale, queries, capture, self._explicit())
        if capture:
            qq = q if queries is None else q[:, queries]
            mu_q, mu_k = q.mean(1, keepdim=True), k.mean(1, keepdim=True)
            whitened = _softmax_rows(torch.bmm(qq - mu_q, (k - mu_k).transpose(1, 2)) * self.scale)
            unary = _softmax_rows(torch.bmm(mu_q, k.transpose(1, 2)).squeeze(1) * self.scale)
            self._store(h, w, queries, pairwise=attn, whitened=whitened, unary=unary)
        y = y.transpose(1, 2).reshape(b, self.inter_channels, h, w)
        return x + self.conv_out(y)


class DNL2d(_Capturable):
    """Disentangled non-local block: whitened pairwise softmax (temperature T) scaled by gamma + unary softmax.

    ``reduction``: q / k width C / reduction (official: 2). ``use_out=False`` (official shipped configuration):
    the value conv maps C -> C and there is no W_out; ``use_out=True``: value C -> C / reduction and W_out back
    to C. ``pairwise=False`` / ``unary=False`` give the two halves alone. ``pairwise_scale_init`` is the initial
    gamma (official 0). ``temperature`` may be changed after construction (``block.temperature = t``).
    """

    def __init__(self, in_channels: int, reduction: int = 2, temperature: float = 0.05, use_scale: bool = True,
                 pairwise: bool = True, unary: bool = True, pairwise_scale_init: float = 0.0, use_out: bool = False):
        super().__init__()
        if in_channels < 1 or reduction < 1:
            raise ValueError(f"in_channels and reduction must be >= 1, got {in_channels}, {reduction}")
        if not (pairwise or unary):
            raise ValueError("a DNL block needs the pairwise term, the unary term or both")
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)        # q / k width
        self.value_channels = self.inter_channels if use_out else in_channels
        self.use_scale, self.use_out = use_scale, use_out
        self.temperature = temperature
        self.with_pairwise, self.with_unary = pairwise, unary
        self.conv_value = nn.Conv2d(in_channels, self.value_channels, 1, bias=use_out)
        if pairwise:
            self.conv_query = nn.Conv2d(in_channels, self.inter_channels, 1)
            self.conv_key = nn.Conv2d(in_channels, self.inter_channels, 1)
            self.gamma = nn.Parameter(torch.full((1,), float(pairwise_scale_init)))
        if unary:
            self.conv_mask = nn.Conv2d(in_channels, 1, 1)
        self.conv_out = nn.Conv2d(self.value_channels, in_channels, 1, bias=False) if use_out else None
        for m in self.modules():   # official reset_parameters
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.01)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    @property
    def temperature(self) -> float:
        return self._temperature

    @temperature.setter
    def temperature(self, t) -> None:
        self._temperature = _check_temperature(t)

    @property
    def scale(self) -> float:
        """The factor on whitened logits: 1 / (sqrt(d) * T)."""
        return (1.0 / math.sqrt(self.inter_channels) if self.use_scale else 1.0) / self.temperature

    def extra_repr(self) -> str:
        return (f"in_channels={self.in_channels}, inter_channels={self.inter_channels}, use_out={self.use_out}, "
                f"temperature={self.temperature}, pairwise={self.with_pairwise}, unary={self.with_unary}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_map(x, self.in_channels)
        b, _, h, w = x.shape
        v = _flat(self.conv_value(x))
        capture = self._capturing()
        queries = self._queries(h, w, x.device) if capture else None
        maps = {}
        y = torch.zeros_like(v[:, :1])
        if self.with_pairwise:
            q, k = _flat(self.conv_query(x)), _flat(self.conv_key(x))
            q = q - q.mean(dim=1, keepdim=True)
            k = k - k.mean(dim=1, keepdim=True)
            yp, attn = _attend(q, k, v, self.scale, queries, capture, self._explicit())
            y = y + self.gamma * yp
            maps["pairwise"] = attn
        if self.with_unary:
            u = torch.softmax(self.conv_mask(x).flatten(1), dim=1)  # (B, N)
            y = y + torch.bmm(u.unsqueeze(1), v)  # (B, 1, d), the same for every query
            maps["unary"] = u
        if capture:
            self._store(h, w, queries, **maps)
        y = y.expand(b, h * w, self.value_channels).transpose(1, 2).reshape(b, self.value_channels, h, w)
        return x + (self.conv_out(y) if self.conv_out is not None else y)


class GlobalContext2d(_Capturable):
    """Global-context block (GCNet): one query-independent softmax map pools a context vector, which a
    bottleneck (1x1 conv, LayerNorm, ReLU, 1x1 conv, last one zero-initialised) adds to every position.
    Capture records the context map as ``"unary"`` (it is a unary term in the paper's terms)."""

    def __init__(self, in_channels: int, reduction: int = 4, zero_init: bool = True):
        super().__init__()
        if in_channels < 1 or reduction < 1:
            raise ValueError(f"in_channels and reduction must be >= 1, got {in_channels}, {reduction}")
        self.in_channels = in_channels
        self.inter_channels = max(in_channels // reduction, 1)
        d = self.inter_channels
        self.conv_mask = nn.Conv2d(in_channels, 1, 1)
        self.transform = nn.Sequential(nn.Conv2d(in_channels, d, 1), nn.LayerNorm([d, 1, 1]), nn.ReLU(inplace=True),
                                       nn.Conv2d(d, in_channels, 1))
        if zero_init:
            nn.init.zeros_(self.transform[-1].weight)
            nn.init.zeros_(self.transform[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _check_map(x, self.in_channels)
        b, c, h, w = x.shape
        u = torch.softmax(self.conv_mask(x).flatten(1), dim=1)  # (B, N)
        context = torch.bmm(x.flatten(2), u.unsqueeze(2)).reshape(b, c, 1, 1)
        if self._capturing():
            self._store(h, w, self._queries(h, w, x.device), unary=u)
        return x + self.transform(context)


def make_block(kind: str, channels: int, *, reduction: int = 2, temperature: float = 0.05) -> nn.Module:
    """One of ``BLOCK_KINDS`` on ``channels`` channels ("none" is the identity)."""
    if kind == "none":
        return nn.Identity()
    if kind == "nl":
        return NonLocal2d(channels, reduction)
    if kind == "dnl":
        return DNL2d(channels, reduction, temperature)
    if kind == "pairwise":
        return DNL2d(channels, reduction, temperature, unary=False)
    if kind == "unary":
        return DNL2d(channels, reduction, temperature, pairwise=False)
    if kind == "gc":
        return GlobalContext2d(channels, reduction=max(reduction * 2, 1))
    raise ValueError(f"unknown block kind {kind!r}; choose one of {BLOCK_KINDS}")


# --------------------------------------------------------------------------------------------------
# looking at the attention
# --------------------------------------------------------------------------------------------------
def attention_maps(model: nn.Module, x: torch.Tensor, queries=None) -> tuple[torch.Tensor, dict[str, dict]]:
    """Run ``model`` on ``x`` and return ``(output, {block name: maps})`` for every NL / DNL / GC block.

    ``maps`` holds ``"pairwise"`` (B, Q, HW) (Q = HW when ``queries`` is None), ``"unary"`` (B, HW), NL's
    ``"whitened"``, ``"hw"`` and ``"queries"``. ``queries`` are flat indices or (row, col) pairs on each block's
    feature map. Outputs are unchanged by the capture (to float tolerance). Thread-safe: nothing is stored
    on the model (:mod:`workbench.inspect`)."""
    blocks = [n for n, m in model.named_modules() if isinstance(m, _Capturable)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} contains no NonLocal2d / DNL2d / GlobalContext2d block")
    if queries is not None:
        queries = torch.as_tensor(queries, dtype=torch.long)
    with inspect.capture(model, "*maps", queries=queries) as cap:
        out = model(x)
    return out, {(k[:-len(".maps")] if k.endswith(".maps") else ""): v for k, v in cap.items("*maps")}


def query_index(row: float, col: float, image_hw: tuple[int, int], feature_hw: tuple[int, int]) -> int:
    """Flat feature-map index of the cell holding image pixel (row, col)."""
    (ih, iw), (fh, fw) = image_hw, feature_hw
    if not (0 <= row < ih and 0 <= col < iw):
        raise ValueError(f"query pixel ({row}, {col}) outside the {ih}x{iw} image")
    r = min(int(row * fh / ih), fh - 1)
    c = min(int(col * fw / iw), fw - 1)
    return r * fw + c


# --------------------------------------------------------------------------------------------------
# the segmentation network
# --------------------------------------------------------------------------------------------------
@dataclass
class SegNetConfig:
    head: str = "dnl"          # one of BLOCK_KINDS
    num_classes: int = 11      # shapes: background + 10 classes
    width: int = 16            # channels of the first stage; doubled at each stride-2 stage
    stride: int = 8            # output stride of the backbone: 4, 8 or 16
    depth: int = 2             # 3x3 convs per backbone stage (the first has stride 2)
    head_channels: int = 64
    reduction: int = 2
    temperature: float = 0.05

    def __post_init__(self):
        if self.head not in BLOCK_KINDS:
            raise ValueError(f"unknown head {self.head!r}; choose one of {BLOCK_KINDS}")
        if self.stride not in (4, 8, 16):
            raise ValueError(f"stride must be 4, 8 or 16, got {self.stride}")
        if self.num_classes < 2 or self.width < 1 or self.head_channels < 2 or not 1 <= self.depth <= 4:
            raise ValueError(f"bad SegNetConfig sizes: {self}")
        _check_temperature(self.temperature)


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SegNet(nn.Module):
    """Compact conv backbone (log2(stride) stages of ``depth`` 3x3 convs, the first with stride 2) and a head
    in the style of mmsegmentation's NL/DNL heads: conv -> context block -> conv, concatenated with the
    backbone features, conv, 1x1 classifier, bilinear upsampling to the input size."""

    def __init__(self, cfg: SegNetConfig | None = None, **overrides):
        super().__init__()
        cfg = SegNetConfig(**{**(asdict(cfg) if cfg else {}), **overrides})
        self.cfg = cfg
        stages, cin = [], 3
        for i in range(int(math.log2(cfg.stride))):
            cout = cfg.width * 2 ** i
            stages += [_conv_bn(cin, cout, 2)] + [_conv_bn(cout, cout) for _ in range(cfg.depth - 1)]
            cin = cout
        self.backbone = nn.Sequential(*stages)
        hc = cfg.head_channels
        self.conv_in = _conv_bn(cin, hc)
        self.block = make_block(cfg.head, hc, reduction=cfg.reduction, temperature=cfg.temperature)
        self.conv_after = _conv_bn(hc, hc)
        self.fuse = _conv_bn(cin + hc, hc)
        self.classifier = nn.Conv2d(hc, cfg.num_classes, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.backbone(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"SegNet expects (B, 3, H, W) images, got shape {tuple(x.shape)}")
        if x.shape[-1] < self.cfg.stride or x.shape[-2] < self.cfg.stride:
            raise ValueError(f"image {tuple(x.shape[-2:])} smaller than the stride {self.cfg.stride}")
        f = self.backbone(x)
        y = self.conv_after(self.block(self.conv_in(f)))
        y = self.classifier(self.fuse(torch.cat([f, y], dim=1)))
        return F.interpolate(y, size=x.shape[-2:], mode="bilinear", align_corners=False)


# --------------------------------------------------------------------------------------------------
# metrics and attention statistics
# --------------------------------------------------------------------------------------------------
def confusion_matrix(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(num_classes, num_classes) int64 counts, rows = target, columns = prediction."""
    pred, target = torch.as_tensor(pred).reshape(-1).long(), torch.as_tensor(target).reshape(-1).long()
    if pred.shape != target.shape:
        raise ValueError(f"pred and target differ in size: {pred.numel()} vs {target.numel()}")
    if pred.numel() and (min(pred.min(), target.min()) < 0 or max(pred.max(), target.max()) >= num_classes):
        raise ValueError(f"labels outside 0..{num_classes - 1}")
    return torch.bincount(target * num_classes + pred, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def miou(conf: torch.Tensor) -> tuple[float, torch.Tensor]:
    """Mean IoU over the classes that occur (in target or prediction) and the per-class IoU (NaN if absent)."""
    conf = conf.double()
    tp = conf.diag()
    union = conf.sum(0) + conf.sum(1) - tp
    iou = torch.where(union > 0, tp / union.clamp(min=1), torch.full_like(tp, float("nan")))
    present = union > 0
    return (float(iou[present].mean()) if present.any() else float("nan")), iou


def label_fractions(masks: torch.Tensor, hw: tuple[int, int], num_labels: int) -> torch.Tensor:
    """Per feature cell, the fraction of its pixels carrying each label: (B, num_labels, H*W).

    masks: (B, S, S') integer labels at image resolution; cells are the adaptive-average-pool bins."""
    masks = torch.as_tensor(masks).long()
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got shape {tuple(masks.shape)}")
    onehot = F.one_hot(masks, num_labels).permute(0, 3, 1, 2).double()
    return F.adaptive_avg_pool2d(onehot, hw).flatten(2)


def boundary_map(masks: torch.Tensor, radius: int = 2) -> torch.Tensor:
    """1.0 where a pixel lies within ``radius`` pixels (Chebyshev) of a different label, else 0: (B, H, W)."""
    masks = torch.as_tensor(masks).long()
    if masks.ndim != 3:
        raise ValueError(f"masks must be (B, H, W), got shape {tuple(masks.shape)}")
    if radius < 1:
        raise ValueError(f"radius must be >= 1, got {radius}")
    m = masks.unsqueeze(1).double()
    k = 2 * radius + 1
    hi = F.max_pool2d(F.pad(m, (radius,) * 4, mode="replicate"), k, 1)
    lo = -F.max_pool2d(F.pad(-m, (radius,) * 4, mode="replicate"), k, 1)
    return (hi != lo).squeeze(1).double()


def within_region_share(pairwise: torch.Tensor, masks: torch.Tensor, hw: tuple[int, int],
                        queries: torch.Tensor | None = None, num_labels: int | None = None) -> dict:
    """How much of each object query's attention falls on pixels of its own label.

    pairwise: (B, Q, HW) attention rows (Q = HW when ``queries`` is None); masks: (B, S, S) labels with 0 =
    background.  A query's label is the majority label of its cell; only object (label > 0) queries count.
    share_i = sum_j a_ij * frac_j(label_i); uniform_i = mean_j frac_j(label_i) (what uniform attention
    would give).  Returns mean ``share``, mean ``uniform``, their ratio ``lift`` and the query count ``n``.
    """
    n_lab = int(masks.max()) + 1 if num_labels is None else num_labels
    frac = label_fractions(masks, hw, n_lab)  # (B, L, N)
    n = hw[0] * hw[1]
    idx = torch.arange(n) if queries is None else torch.as_tensor(queries).long()
    if pairwise.shape[-1] != n or pairwise.shape[1] != idx.numel() or pairwise.shape[0] != frac.shape[0]:
        raise ValueError(f"pairwise {tuple(pairwise.shape)} does not match {frac.shape[0]} masks, "
                         f"{idx.numel()} queries and a {hw[0]}x{hw[1]} map")
    lab = frac[:, :, idx].argmax(dim=1)  # (B, Q)
    own = torch.gather(frac, 1, lab.unsqueeze(-1).expand(-1, -1, n))  # (B, Q, N): frac_j(label_i)
    share = (pairwise.double() * own).sum(-1)
    uniform = own.mean(-1)
    keep = lab > 0
    if not keep.any():
        return {"share": float("nan"), "uniform": float("nan"), "lift": float("nan"), "n": 0}
    s, u = float(share[keep].mean()), float(uniform[keep].mean())
    return {"share": s, "uniform": u, "lift": s / u, "n": int(keep.sum())}


def boundary_concentration(unary: torch.Tensor, masks: torch.Tensor, hw: tuple[int, int], radius: int = 2) -> dict:
    """How strongly a unary map (B, HW) concentrates near object boundaries.

    b_j = fraction of cell j's pixels within ``radius`` px of a label change.  Returns ``mass`` =
    mean_b sum_j u_j b_j (the map's expected boundary fraction), ``uniform`` = mean_b mean_j b_j,
    ``lift`` = mass / uniform and ``corr`` = mean over images of the Pearson correlation of u and b.
    """
    b = F.adaptive_avg_pool2d(boundary_map(masks, radius).unsqueeze(1), hw).flatten(1)  # (B, N)
    u = unary.double()
    if u.shape != b.shape:
        raise ValueError(f"unary {tuple(u.shape)} does not match masks on a {hw[0]}x{hw[1]} map {tuple(b.shape)}")
    mass = (u * b).sum(-1)
    uniform = b.mean(-1)
    uc, bc = u - u.mean(-1, keepdim=True), b - b.mean(-1, keepdim=True)
    denom = (uc.norm(dim=-1) * bc.norm(dim=-1))
    corr = torch.where(denom > 0, (uc * bc).sum(-1) / denom.clamp(min=1e-300), torch.zeros_like(denom))
    m, un = float(mass.mean()), float(uniform.mean())
    return {"mass": m, "uniform": un, "lift": m / un if un > 0 else float("nan"), "corr": float(corr.mean())}


def object_concentration(unary: torch.Tensor, masks: torch.Tensor, hw: tuple[int, int]) -> dict:
    """How much of a unary map (B, HW) lies on objects (label > 0): ``mass`` = mean_b sum_j u_j o_j with
    o_j the object fraction of cell j, ``uniform`` = mean_b mean_j o_j and ``lift`` = mass / uniform."""
    masks = torch.as_tensor(masks).long()
    o = F.adaptive_avg_pool2d((masks > 0).double().unsqueeze(1), hw).flatten(1)
    u = unary.double()
    if u.shape != o.shape:
        raise ValueError(f"unary {tuple(u.shape)} does not match masks on a {hw[0]}x{hw[1]} map {tuple(o.shape)}")
    m, un = float((u * o).sum(-1).mean()), float(o.mean(-1).mean())
    return {"mass": m, "uniform": un, "lift": m / un if un > 0 else float("nan")}
