"""Pruning masks for Balanced Sparsity (Yao et al., "Balanced Sparsity for Efficient DNN Inference on GPU",
AAAI 2019, arXiv 1811.00206) and the patterns it is compared with.

Balanced sparsity (the paper's definition): a weight matrix W (rows x cols) is split row by row into banks of
``bank_size`` consecutive weights; inside every bank the same number of weights is kept, the

    k = max(1, round((1 - s) * bank_size))                                          (1)

largest by magnitude (ties: the lower column index wins, so masks are deterministic). Every row therefore
holds exactly ``banks * k`` nonzeros, which is what removes the load imbalance of unstructured sparsity.

Also here: unstructured (per layer and global) magnitude masks, block masks (bh x bw tiles ranked by their
mean magnitude), vector masks (v x 1 column segments — the paper's "vector sparsity"), N:M masks (N kept in
every group of M along a row: balanced sparsity with bank M), and the gradual cubic schedule of Zhu & Gupta

    s_t = s_f + (s_i - s_f) * (1 - (t - t_0) / (n * dt))^3,   t in [t_0, t_0 + n * dt].   (2)

Masks apply to ``nn.Linear`` and ``nn.LSTM`` weights (already 2-D) and to ``nn.Conv2d`` weights through their
im2col matrix (out, in * kh * kw). This module knows nothing of storage formats or kernels.
"""
from __future__ import annotations

import warnings
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

METHODS = ("balanced", "unstructured", "block", "vector", "nm")


def _check_sparsity(sparsity: float) -> float:
    try:
        s = float(sparsity)
    except (TypeError, ValueError):
        raise ValueError(f"sparsity must be a number in [0, 1), got {sparsity!r}") from None
    if not (0.0 <= s < 1.0):  # also rejects NaN
        raise ValueError(f"sparsity must be in [0, 1), got {sparsity!r}")
    return s


def _as_matrix(W: torch.Tensor, *, allow_bool: bool = False) -> torch.Tensor:
    """The 2-D matrix a mask is computed on: W itself, or a 4-D conv weight's im2col matrix (out, in*kh*kw) —
    validated alike (floating point, finite, not empty)."""
    if not isinstance(W, torch.Tensor):
        raise ValueError(f"expected a torch tensor, got {type(W).__name__}")
    if W.dim() not in (2, 4):
        raise ValueError(f"expected a 2-D weight (or a 4-D conv weight), got shape {tuple(W.shape)}")
    if W.numel() == 0:
        raise ValueError(f"the weight is empty, shape {tuple(W.shape)}")
    if allow_bool and W.dtype == torch.bool:
        return W.reshape(W.shape[0], -1)
    if not W.is_floating_point():
        raise ValueError(f"expected a floating-point weight, got {W.dtype}")
    if not torch.isfinite(W).all():
        raise ValueError("the weight contains NaN or infinite values")
    return W.reshape(W.shape[0], -1)  # Conv2d weight -> its im2col matrix; a 2-D weight is unchanged


SPARSITY_TOLERANCE = 0.01  # a realized sparsity further than this from the request warns


def _warn_realized(requested: float, mask: torch.Tensor, what: str) -> None:
    realized = 1.0 - float(mask.sum()) / mask.numel()
    if abs(realized - requested) > SPARSITY_TOLERANCE:
        warnings.warn(f"{what}: requested sparsity {requested:.4g} but the mask realizes {realized:.4g} "
                      f"(more than {100 * SPARSITY_TOLERANCE:.0f} point away)", UserWarning, stacklevel=3)


def kept_per_bank(sparsity: float, bank_size: int) -> int:
    """Equation (1): weights kept in every bank."""
    s = _check_sparsity(sparsity)
    bank_size = int(bank_size)
    if bank_size < 1:
        raise ValueError(f"bank_size must be >= 1, got {bank_size}")
    return max(1, min(bank_size, int(round((1.0 - s) * bank_size))))


def _topk_mask_rows(scores: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask keeping the k largest entries of every row; ties -> lower index (stable sort)."""
    order = torch.sort(scores, dim=-1, descending=True, stable=True).indices[..., :k]
    mask = torch.zeros_like(scores, dtype=torch.bool)
    mask.scatter_(-1, order, True)
    return mask


def balanced_mask(W: torch.Tensor, sparsity: float, bank_size: int = 64, *, pad: bool = False) -> torch.Tensor:
    """Balanced mask of W (same shape, bool): k of every ``bank_size`` weights of a row kept, eq. (1).

    A row length that is not a multiple of ``bank_size`` is rejected unless ``pad=True``; then the last,
    shorter bank keeps ``min(k, its length)`` weights. Because k is an integer (eq. 1) the realized sparsity can
    differ from the request (s = 0.999 at bank 64 keeps 1 of 64: 0.984; a bank longer than the row keeps
    min(k, row) weights); more than one point of difference emits a ``UserWarning``.
    """
    shape = W.shape
    M = _as_matrix(W)
    s = _check_sparsity(sparsity)
    k = kept_per_bank(s, bank_size)
    rows, cols = M.shape
    rem = cols % bank_size
    if rem and not pad:
        raise ValueError(f"row length {cols} is not a multiple of bank_size {bank_size}; "
                         f"choose a bank size that divides it or pass pad=True")
    mag = M.detach().abs().to(torch.float64)
    if rem:
        # padded slots get a score below every real magnitude so they are never preferred
        mag = torch.cat([mag, torch.full((rows, bank_size - rem), -1.0, dtype=mag.dtype, device=mag.device)], 1)
    banks = mag.shape[1] // bank_size
    mask = _topk_mask_rows(mag.reshape(rows, banks, bank_size), k).reshape(rows, -1)
    if rem:
        mask = mask[:, :cols]
    _warn_realized(s, mask, f"balanced mask (bank {bank_size}, k={k})")
    return mask.reshape(shape)


def nm_mask(W: torch.Tensor, n: int = 2, m: int = 4) -> torch.Tensor:
    """N:M mask: n largest of every m consecutive weights of a row (2:4 = balanced with bank 4, k 2)."""
    n, m = int(n), int(m)
    if not (1 <= n <= m):
        raise ValueError(f"N:M needs 1 <= N <= M, got {n}:{m}")
    M = _as_matrix(W)
    if M.shape[1] % m:
        raise ValueError(f"row length {M.shape[1]} is not a multiple of M={m}")
    mag = M.detach().abs().to(torch.float64).reshape(M.shape[0], -1, m)
    return _topk_mask_rows(mag, n).reshape(W.shape)


def unstructured_mask(W: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per-layer magnitude mask: the round((1-s)*numel) largest |w| kept (ties -> lower flat index)."""
    s = _check_sparsity(sparsity)
    M = _as_matrix(W)
    keep = max(1, int(round((1.0 - s) * M.numel())))
    return _topk_mask_rows(M.detach().abs().to(torch.float64).reshape(1, -1), keep).reshape(W.shape)


def global_masks(weights: dict[str, torch.Tensor], sparsity: float) -> dict[str, torch.Tensor]:
    """Global magnitude pruning: one threshold over all the given weights (ties -> earlier entries)."""
    s = _check_sparsity(sparsity)
    if not weights:
        raise ValueError("global_masks needs at least one weight")
    flat = torch.cat([_as_matrix(w).detach().abs().to(torch.float64).reshape(-1).cpu() for w in weights.values()])
    keep = max(1, int(round((1.0 - s) * flat.numel())))
    m = _topk_mask_rows(flat.reshape(1, -1), keep).reshape(-1)
    out, i = {}, 0
    for name, w in weights.items():
        out[name] = m[i:i + w.numel()].reshape(w.shape).to(w.device)
        i += w.numel()
    return out


def block_mask(W: torch.Tensor, sparsity: float, block: tuple[int, int] = (4, 4)) -> torch.Tensor:
    """Block mask: (bh, bw) tiles ranked by mean |w|; the round((1-s)*tiles) best tiles kept whole.

    Shapes that are not multiples of the block are padded (edge tiles score by their real entries).
    """
    s = _check_sparsity(sparsity)
    M = _as_matrix(W)
    bh, bw = (int(block[0]), int(block[1]))
    if bh < 1 or bw < 1:
        raise ValueError(f"block sizes must be >= 1, got {block}")
    rows, cols = M.shape
    R, C = -(-rows // bh), -(-cols // bw)
    mag = torch.zeros(R * bh, C * bw, dtype=torch.float64, device=M.device)
    cnt = torch.zeros_like(mag)
    mag[:rows, :cols] = M.detach().abs().to(torch.float64)
    cnt[:rows, :cols] = 1
    tile = mag.reshape(R, bh, C, bw).sum((1, 3)) / cnt.reshape(R, bh, C, bw).sum((1, 3))
    keep = max(1, int(round((1.0 - s) * R * C)))
    tmask = _topk_mask_rows(tile.reshape(1, -1), keep).reshape(R, C)
    full = tmask[:, None, :, None].expand(R, bh, C, bw).reshape(R * bh, C * bw)
    return full[:rows, :cols].reshape(W.shape).clone()


def vector_mask(W: torch.Tensor, sparsity: float, length: int = 4) -> torch.Tensor:
    """Vector mask: column segments of ``length`` weights (length x 1 blocks) kept or pruned whole."""
    return block_mask(W, sparsity, (int(length), 1))


def make_mask(W: torch.Tensor, method: str, sparsity: float, *, bank_size: int = 64,
              block: tuple[int, int] = (4, 4), pad: bool = False) -> torch.Tensor:
    """One entry point for every pattern. ``nm`` uses bank ``bank_size`` with k from eq. (1)."""
    if method == "balanced":
        return balanced_mask(W, sparsity, bank_size, pad=pad)
    if method == "nm":
        return nm_mask(W, kept_per_bank(sparsity, bank_size), bank_size)
    if method == "unstructured":
        return unstructured_mask(W, sparsity)
    if method == "block":
        return block_mask(W, sparsity, block)
    if method == "vector":
        return vector_mask(W, sparsity, block[0])
    raise ValueError(f"unknown pruning method {method!r}; choose one of {METHODS}")


def bank_counts(mask: torch.Tensor, bank_size: int) -> torch.Tensor:
    """Nonzeros per bank, shape (rows, banks) — flat for balanced masks (the load-balance picture)."""
    M = _as_matrix(mask, allow_bool=True)
    if M.shape[1] % bank_size:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not split into banks of {bank_size}")
    return M.reshape(M.shape[0], -1, bank_size).sum(-1).to(torch.int64)


def cubic_sparsity(step: int, total: int, final: float, initial: float = 0.0, begin: int = 0) -> float:
    """Equation (2), the gradual schedule of Zhu & Gupta: sparsity at ``step`` of ``total`` pruning steps."""
    final, initial = _check_sparsity(final), _check_sparsity(initial)
    if total <= 0:
        raise ValueError(f"total must be positive, got {total}")
    t = min(max((step - begin) / total, 0.0), 1.0)
    return final + (initial - final) * (1.0 - t) ** 3


# --------------------------------------------------------------------------------------------------------------
# models
def prunable_weights(model: nn.Module, *, skip: Iterable[str] = ()) -> dict[str, nn.Parameter]:
    """``{qualified name: weight}`` of every Linear / Conv2d / LSTM weight (not biases) of a model."""
    skip = tuple(skip)
    out: dict[str, nn.Parameter] = {}
    for mname, mod in model.named_modules():
        if any(mname == s or mname.startswith(s + ".") for s in skip):
            continue
        if isinstance(mod, (nn.Linear, nn.Conv2d)):
            out[f"{mname}.weight" if mname else "weight"] = mod.weight
        elif isinstance(mod, nn.LSTM):
            for pname, p in mod.named_parameters(recurse=False):
                if pname.startswith("weight_"):
                    out[f"{mname}.{pname}" if mname else pname] = p
    return out


@dataclass
class PruneConfig:
    method: str = "balanced"   # one of METHODS
    sparsity: float = 0.9      # final sparsity
    bank_size: int = 16
    block: tuple[int, int] = (4, 4)
    scope: str = "layer"       # "layer" | "global" (global only for unstructured)
    pad: bool = True           # rows not a multiple of the bank: last bank shorter


class Pruner:
    """Holds masks for a model's weights: ``update(s)`` recomputes them at sparsity s, ``apply()`` zeroes the
    pruned weights (call it after every optimizer step so fine-tuning keeps the pattern)."""

    def __init__(self, model: nn.Module, cfg: PruneConfig, *, skip: Iterable[str] = ()):
        if cfg.method not in METHODS:
            raise ValueError(f"unknown pruning method {cfg.method!r}; choose one of {METHODS}")
        self.cfg = cfg
        self.weights = prunable_weights(model, skip=skip)
        if not self.weights:
            raise ValueError("the model has no Linear / Conv2d / LSTM weights to prune")
        self.masks: dict[str, torch.Tensor] = {n: torch.ones_like(w, dtype=torch.bool) for n, w in self.weights.items()}

    @torch.no_grad()
    def update(self, sparsity: float) -> None:
        """Masks at ``sparsity``; the realized-sparsity warning is only raised at the final sparsity (the
        intermediate steps of a gradual schedule round k freely)."""
        c = self.cfg
        with warnings.catch_warnings():
            if float(sparsity) != float(c.sparsity):
                warnings.filterwarnings("ignore", message=".*requested sparsity", category=UserWarning)
            if c.scope == "global" and c.method == "unstructured":
                self.masks = global_masks(dict(self.weights), sparsity)
            else:
                for n, w in self.weights.items():
                    self.masks[n] = make_mask(w, c.method, sparsity, bank_size=c.bank_size, block=c.block, pad=c.pad)
        self.apply()

    @torch.no_grad()
    def apply(self) -> None:
        for n, w in self.weights.items():
            w.mul_(self.masks[n].to(w.dtype))

    def sparsity(self) -> float:
        total = sum(m.numel() for m in self.masks.values())
        return 1.0 - sum(int(m.sum()) for m in self.masks.values()) / total
