"""Sparse inference modules for Balanced Sparsity (Yao et al., AAAI 2019): the place where pruning masks
(prune.py), the packed format (formats.py) and the kernels meet.

* ``BalancedSparseLinear``: y = W_s x + b with W_s = W * balanced_mask(W) stored packed (eq. 3); forward on
  CPU (numba) or CUDA (CuPy) tensors; inference only (no autograd through the kernels).
* ``BalancedSparseLSTM``: an ``nn.LSTM`` (unidirectional, any depth) whose gate matrices W_ih, W_hh are packed;
  the input projection of all time steps is one sparse matrix product, the recurrent one a product per step:
      [i f g o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,  c_t = σ(f) c_{t-1} + σ(i) tanh(g),  h_t = σ(o) tanh(c_t).
* ``sparsify_(model, SparsifyConfig)``: replaces the chosen Linear / LSTM layers of a trained model in place;
  the outputs equal those of the dense model with the same balanced masks applied.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
from torch import nn

from workbench.sparse.formats import BalancedMatrix
from workbench.sparse.prune import balanced_mask


def _pack(W: torch.Tensor, sparsity: float, bank_size: int, pad: bool, mask: torch.Tensor | None) -> BalancedMatrix:
    W = W.detach()
    if mask is None:
        mask = balanced_mask(W, sparsity, bank_size, pad=pad)
    return BalancedMatrix.from_mask(W, mask, bank_size, pad=pad)


class BalancedSparseLinear(nn.Module):
    """A Linear layer whose weight is stored in the packed balanced format (buffers: values, offsets)."""

    def __init__(self, bm: BalancedMatrix, bias: torch.Tensor | None = None):
        super().__init__()
        self.out_features, self.in_features = bm.shape
        self.bank_size = bm.bank_size
        self.register_buffer("values", bm.values)
        self.register_buffer("offsets", bm.offsets)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    @classmethod
    def from_linear(cls, linear: nn.Linear, sparsity: float = 0.9, bank_size: int = 64, *, pad: bool = True,
                    mask: torch.Tensor | None = None) -> BalancedSparseLinear:
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"expected nn.Linear, got {type(linear).__name__}")
        return cls(_pack(linear.weight, sparsity, bank_size, pad, mask), linear.bias)

    @property
    def matrix(self) -> BalancedMatrix:
        return BalancedMatrix(self.values, self.offsets, (self.out_features, self.in_features), self.bank_size)

    def dense_weight(self) -> torch.Tensor:
        return self.matrix.to_dense()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected last dimension {self.in_features}, got {tuple(x.shape)}")
        lead = x.shape[:-1]
        x2 = x.reshape(-1, self.in_features).to(self.values.dtype)
        bm = self.matrix
        if x2.shape[0] == 1:
            y = bm.matmul(x2[0].contiguous())[None]
        else:
            y = bm.matmul(x2.t().contiguous()).t()
        if self.bias is not None:
            y = y + self.bias.to(y.dtype)
        return y.reshape(*lead, self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        bm = self.matrix
        return (f"in_features={self.in_features}, out_features={self.out_features}, bank_size={self.bank_size}, "
                f"k={bm.k}, sparsity={bm.sparsity:.3f}")


class BalancedSparseLSTM(nn.Module):
    """Inference twin of a unidirectional ``nn.LSTM`` with packed balanced gate matrices."""

    def __init__(self, lstm: nn.LSTM, sparsity: float = 0.9, bank_size: int = 64, *, pad: bool = True,
                 masks: dict[str, torch.Tensor] | None = None):
        super().__init__()
        if lstm.bidirectional or getattr(lstm, "proj_size", 0):
            raise ValueError("BalancedSparseLSTM supports unidirectional LSTMs without projections")
        self.hidden_size, self.num_layers, self.batch_first = lstm.hidden_size, lstm.num_layers, lstm.batch_first
        self.layers = nn.ModuleList()
        masks = masks or {}
        for layer in range(lstm.num_layers):
            ih, hh = f"weight_ih_l{layer}", f"weight_hh_l{layer}"
            b_ih = getattr(lstm, f"bias_ih_l{layer}", None) if lstm.bias else None
            b_hh = getattr(lstm, f"bias_hh_l{layer}", None) if lstm.bias else None
            bias = None if b_ih is None else (b_ih + b_hh)
            self.layers.append(nn.ModuleDict({
                "ih": BalancedSparseLinear(_pack(getattr(lstm, ih), sparsity, bank_size, pad, masks.get(ih)), bias),
                "hh": BalancedSparseLinear(_pack(getattr(lstm, hh), sparsity, bank_size, pad, masks.get(hh))),
            }))

    def forward(self, x: torch.Tensor, state=None):
        if x.dim() != 3:
            raise ValueError(f"expected (seq, batch, features) input, got {tuple(x.shape)}")
        if self.batch_first:
            x = x.transpose(0, 1)
        T, Bn, _ = x.shape
        hs, cs = [], []
        for li, layer in enumerate(self.layers):
            h = x.new_zeros(Bn, self.hidden_size) if state is None else state[0][li]
            c = x.new_zeros(Bn, self.hidden_size) if state is None else state[1][li]
            pre = layer["ih"](x)  # all time steps at once: (T, B, 4H)
            outs = []
            for t in range(T):
                g = pre[t] + layer["hh"](h)
                i, f, gg, o = g.chunk(4, dim=-1)
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(gg)
                h = torch.sigmoid(o) * torch.tanh(c)
                outs.append(h)
            x = torch.stack(outs)
            hs.append(h)
            cs.append(c)
        out = x.transpose(0, 1) if self.batch_first else x
        return out, (torch.stack(hs), torch.stack(cs))


@dataclass
class SparsifyConfig:
    sparsity: float = 0.9
    bank_size: int = 64
    pad: bool = True                 # rows not a multiple of the bank: shorter last bank
    include: str | None = None       # regex on module names (e.g. r"mlp\.fc"); None = every Linear / LSTM
    exclude: str | None = None       # regex of names to keep dense (e.g. r"head")
    lstm: bool = True                # also replace nn.LSTM modules


def _selected(name: str, cfg: SparsifyConfig) -> bool:
    if cfg.include is not None and not re.search(cfg.include, name):
        return False
    return not (cfg.exclude is not None and re.search(cfg.exclude, name))


@torch.no_grad()
def masked_dense_(model: nn.Module, cfg: SparsifyConfig) -> list[str]:
    """The dense reference of ``sparsify_``: multiply the same layers' weights by their balanced masks."""
    names = []
    for name, mod in model.named_modules():
        if not _selected(name, cfg):
            continue
        if isinstance(mod, nn.Linear):
            mod.weight.mul_(balanced_mask(mod.weight, cfg.sparsity, cfg.bank_size, pad=cfg.pad))
            names.append(name)
        elif isinstance(mod, nn.LSTM) and cfg.lstm:
            for pname, p in mod.named_parameters(recurse=False):
                if pname.startswith("weight_"):
                    p.mul_(balanced_mask(p, cfg.sparsity, cfg.bank_size, pad=cfg.pad))
            names.append(name)
    return names


@torch.no_grad()
def sparsify_(model: nn.Module, cfg: SparsifyConfig | None = None) -> list[str]:
    """Replace the selected ``nn.Linear`` (and ``nn.LSTM``) modules of ``model`` in place by balanced sparse
    ones; returns the replaced module names. A model that is its own Linear cannot be replaced in place."""
    cfg = cfg or SparsifyConfig()
    if isinstance(model, (nn.Linear, nn.LSTM)):
        raise ValueError("sparsify_ replaces submodules; wrap a bare Linear/LSTM in a container first")
    targets = []
    for name, mod in model.named_modules():
        if name and _selected(name, cfg) and (isinstance(mod, nn.Linear) or (cfg.lstm and isinstance(mod, nn.LSTM))):
            targets.append((name, mod))
    if not targets:
        raise ValueError("no Linear/LSTM layer matched the sparsify config")
    for name, mod in targets:
        if isinstance(mod, nn.Linear):
            new = BalancedSparseLinear.from_linear(mod, cfg.sparsity, cfg.bank_size, pad=cfg.pad)
        else:
            new = BalancedSparseLSTM(mod, cfg.sparsity, cfg.bank_size, pad=cfg.pad)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return [n for n, _ in targets]
