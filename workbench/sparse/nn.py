"""Sparse inference modules for Balanced Sparsity (Yao et al., AAAI 2019): the place where pruning masks
(prune.py), the packed format (formats.py), the kernels and the dense/sparse dispatcher (dispatch.py) meet.

* ``BalancedSparseLinear``: y = W_s x + b with W_s = W * balanced_mask(W) stored packed (eq. 3); forward on CPU
  (C++ kernels, numba fallback) or CUDA (CuPy) tensors; inference only (no autograd through the kernels). Before a
  product it asks the dispatcher whether the sparse kernel beats ``F.linear`` for this size, sparsity and batch
  (``dispatch="auto"``, the default) and otherwise runs the dense product of the same masked weight, so replacing a
  layer never makes it slower than measured; ``path_info`` says which path ran and why. On CPU, once a batch of
  up to ``cpu.TILES_MAX_N`` rows ran the sparse kernel, later forwards at that batch are one C++ call (the layer's
  Runner, ``kernels/balanced_call.cpp``: check x, allocate y, the same kernel with the bias fused); measured
  2026-11-30, caches flushed, batch 1: 354 -> 219 us per forward at 4096^2, 172 -> 83 us at 1500^2.
* ``BalancedSparseLSTM``: an ``nn.LSTM`` (unidirectional, any depth) whose gate matrices W_ih, W_hh are packed;
  the input projection of all time steps is one sparse matrix product, the recurrent one a product per step:
      [i f g o] = W_ih x_t + b_ih + W_hh h_{t-1} + b_hh,  c_t = σ(f) c_{t-1} + σ(i) tanh(g),  h_t = σ(o) tanh(c_t).
* ``sparsify_(model, SparsifyConfig)``: replaces the chosen Linear / LSTM layers of a trained model in place;
  the outputs equal those of the dense model with the same balanced masks applied.

Differences from the paper: the paper times its GPU kernels alone; here every layer also carries the dispatcher
(dense fallback), and a layer keeps a kernel-specific copy of its weights for each AVX-512 kernel that runs (see
``BalancedMatrix.cpu_tiles`` / ``cpu_groups``) and a dense copy only if the dense path is ever taken.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from workbench.sparse import dispatch as dp
from workbench.sparse.formats import BalancedMatrix, validate_parts
from workbench.sparse.kernels import cpp as _cpp
from workbench.sparse.kernels import cpu, gpu
from workbench.sparse.prune import balanced_mask

DISPATCH_MODES = ("auto", "sparse", "dense")


def _pack(W: torch.Tensor, sparsity: float, bank_size: int, pad: bool, mask: torch.Tensor | None) -> BalancedMatrix:
    W = W.detach()
    if mask is None:
        mask = balanced_mask(W, sparsity, bank_size, pad=pad)
    return BalancedMatrix.from_mask(W, mask, bank_size, pad=pad)


def _check_mode(mode: str) -> str:
    if mode not in DISPATCH_MODES:
        raise ValueError(f"dispatch must be one of {DISPATCH_MODES}, got {mode!r}")
    return mode


class BalancedSparseLinear(nn.Module):
    """A Linear layer whose weight is stored in the packed balanced format (buffers: values, offsets, bias)."""

    def __init__(self, bm: BalancedMatrix, bias: torch.Tensor | None = None, *, dispatch: str = "auto"):
        super().__init__()
        self.out_features, self.in_features = bm.shape
        self.bank_size = bm.bank_size
        self._run = None        # the C++ Runner of the small-batch CPU kernels (see forward), once one ran
        self.dispatch = dispatch
        self.register_buffer("values", bm.values)
        self.register_buffer("offsets", bm.offsets)
        self.register_buffer("bias", None if bias is None else bias.detach().clone())
        self._decisions: dict = {}
        self._derived: dict = {}
        self._last = None

    @property
    def dispatch(self) -> str:
        """"auto" (the dispatcher decides per batch), "sparse" or "dense"; settable."""
        return self._dispatch

    @dispatch.setter
    def dispatch(self, mode: str) -> None:
        self._dispatch = _check_mode(mode)
        self._run = None

    def __getstate__(self) -> dict:
        """Pickled and deep-copied without the compiled Runner (a copy makes its own at its first product)."""
        return {**self.__dict__, "_run": None}

    @classmethod
    def from_linear(cls, linear: nn.Linear, sparsity: float = 0.9, bank_size: int = 64, *, pad: bool = True,
                    mask: torch.Tensor | None = None, dispatch: str = "auto") -> BalancedSparseLinear:
        if not isinstance(linear, nn.Linear):
            raise ValueError(f"expected nn.Linear, got {type(linear).__name__}")
        return cls(_pack(linear.weight, sparsity, bank_size, pad, mask), linear.bias, dispatch=dispatch)

    # ---------------------------------------------------------------- weights
    @property
    def matrix(self) -> BalancedMatrix:
        return BalancedMatrix(self.values, self.offsets, (self.out_features, self.in_features), self.bank_size)

    @property
    def sparsity(self) -> float:
        banks, k = self.values.shape[1:]
        return 1.0 - banks * k / self.in_features

    def dense_weight(self) -> torch.Tensor:
        return self.matrix.to_dense()

    def _key(self) -> tuple:
        v, o = self._buffers["values"], self._buffers["offsets"]
        return (v.data_ptr(), v._version, o.data_ptr(), o._version)

    def _derive(self, name: str, make):
        key = self._key()
        hit = self._derived.get(name)
        if hit is None or hit[0] != key:
            hit = (key, make())
            self._derived[name] = hit
        return hit[1]

    def _apply(self, fn, *args, **kwargs):
        """``.to()`` / ``.double()`` / ``.cuda()``: new buffers, so the memoised plans (their kernel depends on the
        dtype and device: the tile kernel reads float32 only), derived layouts and the Runner start afresh."""
        out = super()._apply(fn, *args, **kwargs)
        self._decisions.clear()
        self._derived.clear()
        self._run = None
        return out

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        validate_parts(self.values, self.offsets, (self.out_features, self.in_features), self.bank_size)
        self._decisions.clear()
        self._run = None

    # ---------------------------------------------------------------- dispatch
    def decide(self, batch: int, device: torch.device | str = "cpu"):
        """The dispatcher's :class:`~workbench.sparse.dispatch.Decision` for a product with ``batch`` rows."""
        return self._plan(int(batch), torch.device(device).type)[0]

    def _plan(self, n: int, dev: str):
        """(decision, kernel name) for n rows on device type ``dev`` (memoised per mode)."""
        key = (dev, n, self.dispatch)
        plan = self._decisions.get(key)
        if plan is None:
            if self.dispatch != "auto":
                d = dp.Decision(self.dispatch, f"{self.dispatch}: forced (dispatch={self.dispatch!r})", None, None)
            else:
                d = dp.decide(self.out_features, self.in_features, self.sparsity, n, device=dev,
                              bank_size=self.bank_size)
            if d.path == "dense":
                kernel = "dense"
            elif dev == "cuda":
                kernel = "cuda"
            else:
                kernel = cpu.kernel_for(n, self.values.dtype, self.bank_size)
            plan = (d, kernel)
            self._decisions[key] = plan
        return plan

    @property
    def path_info(self) -> dict | None:
        """Which path the last forward ran and why: ``{path, kernel, batch, reason, predicted_speedup}``."""
        if self._last is None:
            return None
        (d, kernel), batch, calls = self._last
        run = self._run
        if run is not None and run.calls > calls:   # the last forward was the Runner's
            plan = self._decisions.get(("cpu", run.last_n, self.dispatch))
            if plan is not None:
                (d, kernel), batch = plan, run.last_n
        return dict(path=d.path, kernel=kernel, batch=batch, reason=d.reason, predicted_speedup=d.predicted_speedup)

    # ---------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        run = self._run
        if run is not None and type(x) is torch.Tensor:
            bufs = self._buffers   # one C++ call at the batches whose plan it holds (balanced_call.cpp)
            y = run.linear(x, bufs["values"], bufs["offsets"], bufs["bias"])
            if y is not None:
                return y
        if x.shape[-1] != self.in_features:
            raise ValueError(f"expected last dimension {self.in_features}, got {tuple(x.shape)}")
        x2 = x.reshape(-1, self.in_features)
        n = x2.shape[0]
        if n == 0:
            return x.new_zeros(*x.shape[:-1], self.out_features)
        plan = self._decisions.get((x.device.type, n, self.dispatch)) or self._plan(n, x.device.type)
        kernel = plan[1]
        bufs = self._buffers  # direct access: nn.Module.__getattr__ is slow on the hot path
        values, offsets, bias = bufs["values"], bufs["offsets"], bufs["bias"]
        vdt = values.dtype
        if kernel == "dense":
            W = self._derive("dense", self.dense_weight)
            y = F.linear(x2 if x2.dtype == W.dtype else x2.to(W.dtype), W,
                         None if bias is None else bias.to(W.dtype))
        elif kernel == "cuda":
            xv = x2.to(vdt)
            y = gpu.balanced_matmul(values, offsets, xv[0].contiguous() if n == 1 else xv.t().contiguous(),
                                    self.bank_size, self.in_features)
            y = y[None] if n == 1 else y.t()
            if bias is not None:
                y = y + bias.to(y.dtype)
        else:
            if x2.dtype != vdt:
                x2 = x2.to(vdt)
            if not x2.is_contiguous():
                x2 = x2.contiguous()
            which = cpu.layout_for(kernel)
            tiles = self._derive(which, lambda: self.matrix.cpu_layout(kernel)) if which else None
            if bias is not None and bias.dtype != vdt:
                bias = bias.to(vdt)
            y = cpu.run_linear(cpu.library(), kernel, values, offsets, x2, self.bank_size, self.in_features, bias,
                               tiles)
            if n <= cpu.TILES_MAX_N and (kernel == "tiles" or (n == 1 and kernel in ("gather", "spmm", "scalar"))):
                self._hand_to_runner(kernel, n, values, offsets, tiles)
        run = self._run
        self._last = (plan, n, 0 if run is None else run.calls)
        if x.dim() != 2:
            y = y.reshape(*x.shape[:-1], self.out_features)
        return y if y.dtype == x.dtype else y.to(x.dtype)

    def _hand_to_runner(self, kernel: str, n: int, values: torch.Tensor, offsets: torch.Tensor, tiles) -> None:
        """Register the kernel that just ran for batch n with the layer's C++ Runner (made here, or remade when the
        weights changed), so that the next forwards at this batch are one call: the tile kernel reads x (n, in) and
        writes y (n, out) as a Linear layer has them (batches up to ``cpu.TILES_MAX_N``); the others only at batch
        1. Nothing where the call binding cannot be built."""
        mod = _cpp.call_binding()
        if mod is None:
            return
        run = self._run
        if run is None or not run.valid_for(values, offsets):
            run = mod.Runner(values, offsets, self.in_features, self.bank_size, cpu.TILES_MAX_N)
            self._run = run
        lib = cpu.library()
        tcode = _cpp.INDEX_CODES[offsets.dtype]
        if kernel == "tiles":
            vt, ot = tiles
            run.set(n, mod.TILES, _cpp.entry_address(lib.bs_matmul_tiles), tcode, tcode, vt, ot, 0, 0, linear=True)
        else:
            run.set(n, mod.MATMUL, _cpp.entry_address(lib.bs_matmul), _cpp.VALUE_CODES[values.dtype], tcode, values,
                    offsets, 1 if kernel == "scalar" else 0, 0, linear=True)

    def extra_repr(self) -> str:
        banks, k = self.values.shape[1:]
        return (f"in_features={self.in_features}, out_features={self.out_features}, bank_size={self.bank_size}, "
                f"k={k}, sparsity={self.sparsity:.3f}, dispatch={self.dispatch}")


class BalancedSparseLSTM(nn.Module):
    """Inference twin of a unidirectional ``nn.LSTM`` with packed balanced gate matrices."""

    def __init__(self, lstm: nn.LSTM, sparsity: float = 0.9, bank_size: int = 64, *, pad: bool = True,
                 masks: dict[str, torch.Tensor] | None = None, dispatch: str = "auto"):
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
                "ih": BalancedSparseLinear(_pack(getattr(lstm, ih), sparsity, bank_size, pad, masks.get(ih)), bias,
                                           dispatch=dispatch),
                "hh": BalancedSparseLinear(_pack(getattr(lstm, hh), sparsity, bank_size, pad, masks.get(hh)),
                                           dispatch=dispatch),
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
    dispatch: str = "auto"           # "auto": dense where the crossover table says sparse loses; "sparse"; "dense"


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
    _check_mode(cfg.dispatch)
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
            new = BalancedSparseLinear.from_linear(mod, cfg.sparsity, cfg.bank_size, pad=cfg.pad, dispatch=cfg.dispatch)
        else:
            new = BalancedSparseLSTM(mod, cfg.sparsity, cfg.bank_size, pad=cfg.pad, dispatch=cfg.dispatch)
        parent_name, _, child = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, child, new)
    return [n for n, _ in targets]


def path_report(model: nn.Module) -> list[dict]:
    """Per balanced layer of ``model``: the path its last forward ran (sparse kernel or dense) and why."""
    out = []
    for name, mod in model.named_modules():
        if isinstance(mod, BalancedSparseLinear):
            info = mod.path_info or dict(path=None, kernel=None, batch=None, reason="not run yet",
                                         predicted_speedup=None)
            out.append(dict(layer=name, shape=(mod.out_features, mod.in_features), sparsity=mod.sparsity, **info))
    return out
