"""Layers the backbones share (Swin V2 and ViT), kept with their state-dict names (``fc1``, ``fc2``)."""
from __future__ import annotations

from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample with probability p."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = float(p)

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        m = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * m / keep

    def extra_repr(self):
        return f"p={self.p}"


class Mlp(nn.Module):
    """Linear -> GELU -> [dropout] -> Linear -> dropout (the transformer feed-forward block).

    Swin's official Mlp drops out after GELU too; the SimMIM/BEiT ViT does not (``drop_after_act=False``).
    """

    def __init__(self, dim, hidden, drop=0.0, drop_after_act: bool = True):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)
        self.drop_after_act = drop_after_act

    def forward(self, x):
        x = self.act(self.fc1(x))
        if self.drop_after_act:
            x = self.drop(x)
        return self.drop(self.fc2(x))
