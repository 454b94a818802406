"""Edge scorers: pair logits [N x M] (or [H x N x M] per head) of two node sets.

Each scorer also splits into per-node parts (``prepare``) and a pairwise step
(``combine``), which sparse attention and the streamed path use on gathered pairs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gmatch.config import ModelConf

__all__ = ["CosineEdge", "DotEdge", "MLPEdge", "make_edge"]


class CosineEdge(nn.Module):
    """``logits[i, j] = cos(x0_i, x1_j) / tau`` with a learnable, clamped temperature."""

    def __init__(self, tau_init: float = 0.07, out: int = 1):
        super().__init__()
        self.log_scale = nn.Parameter(torch.full((out,), math.log(1 / tau_init)))

    def forward(self, x0: torch.Tensor, x1: torch.Tensor) -> torch.Tensor:
        """x0 [N x D], x1 [M x D] (D divisible by out) -> logits [out x N x M] or [N x M]."""
        h = len(self.log_scale)
        q = F.normalize(x0.unflatten(-1, (h, -1)), dim=-1).transpose(0, 1)
        k = F.normalize(x1.unflatten(-1, (h, -1)), dim=-1).transpose(0, 1)
        scale = self.log_scale.clamp(max=math.log(100)).exp()
        logits = (q @ k.transpose(-1, -2)) * scale[:, None, None]
        return logits[0] if h == 1 else logits

    def factors(self, x0, x1):
        """``(a, b)`` with ``a @ b.T`` = :meth:`forward` up to rounding (one output only):
        the streamed path folds linear heads and priors into one product."""
        if len(self.log_scale) != 1:
            raise ValueError("factors() needs a single-output scorer")
        scale = self.log_scale.clamp(max=math.log(100)).exp()
        return F.normalize(x0, dim=-1) * scale, F.normalize(x1, dim=-1)

    def prepare(self, x0, x1):
        """Per-node parts for :meth:`combine` ([N x H x D/H] unit vectors)."""
        h = len(self.log_scale)
        return F.normalize(x0.unflatten(-1, (h, -1)), dim=-1), F.normalize(
            x1.unflatten(-1, (h, -1)), dim=-1
        )

    def combine(self, p0, p1):
        """Logits [..., H] of gathered, broadcastable parts [..., H, D/H]."""
        return (p0 * p1).sum(-1) * self.log_scale.clamp(max=math.log(100)).exp()


class DotEdge(nn.Module):
    """Scaled dot product, per head."""

    def __init__(self, out: int = 1):
        super().__init__()
        self.out = out

    def forward(self, x0, x1):
        q = x0.unflatten(-1, (self.out, -1)).transpose(0, 1)
        k = x1.unflatten(-1, (self.out, -1)).transpose(0, 1)
        logits = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
        return logits[0] if self.out == 1 else logits

    def factors(self, x0, x1):
        """``(a, b)`` with ``a @ b.T`` = :meth:`forward` (one output only)."""
        if self.out != 1:
            raise ValueError("factors() needs a single-output scorer")
        return x0 / math.sqrt(x0.shape[-1]), x1

    def prepare(self, x0, x1):
        return x0.unflatten(-1, (self.out, -1)), x1.unflatten(-1, (self.out, -1))

    def combine(self, p0, p1):
        return (p0 * p1).sum(-1) / math.sqrt(p0.shape[-1])


class MLPEdge(nn.Module):
    """Learned edge scorer ``f([x_i, y_j]) = w2 . relu(A LN(x_i) + B LN(y_j) + b) + c``.

    The first layer on the concatenation is split into one projection per
    side, computed once per node; the N x M x hidden activation is only ever
    built for ``chunk`` rows at a time.
    """

    def __init__(self, dim: int, hidden: int = 64, out: int = 1, chunk: int = 512):
        super().__init__()
        self.proj0 = nn.Linear(dim, hidden)
        self.proj1 = nn.Linear(dim, hidden, bias=False)
        self.norm = nn.LayerNorm(dim)
        self.out = nn.Linear(hidden, out)
        self.chunk = chunk

    def forward(self, x0, x1):
        a, b = self.proj0(self.norm(x0)), self.proj1(self.norm(x1))  # [N x h], [M x h]
        rows = [
            self.out(F.relu(a[s : s + self.chunk, None, :] + b[None, :, :]))
            for s in range(0, len(a), self.chunk)
        ]
        logits = torch.cat(rows, dim=0).permute(2, 0, 1)  # [out x N x M]
        return logits[0] if logits.shape[0] == 1 else logits

    def prepare(self, x0, x1):
        return self.proj0(self.norm(x0)), self.proj1(self.norm(x1))

    def combine(self, p0, p1):
        return self.out(F.relu(p0 + p1))


def make_edge(conf: ModelConf, out: int = 1, chunk: int = 512) -> nn.Module:
    """The edge scorer ``conf.edge`` names (a Literal the config has checked)."""
    if conf.edge == "cosine":
        return CosineEdge(conf.tau_init, out)
    if conf.edge == "dot":
        return DotEdge(out)
    return MLPEdge(conf.dim, conf.edge_hidden, out, chunk)
