"""Attention units of the matcher: self-attention inside a set, cross-attention
between the sets, dense or restricted to top-m candidate edges (sparse, chunked)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from gmatch.config import ModelConf
from gmatch.models.edges import make_edge

__all__ = ["topm_candidates", "sparse_attend", "ffn", "SelfBlock", "CrossBlock", "MatchLayer"]


def topm_candidates(a: torch.Tensor, b: torch.Tensor, m: int, chunk: int = 1024) -> torch.Tensor:
    """For each row of ``a``, the indices [N x min(m, M)] of its top-m rows of
    ``b`` by cosine, found chunk by chunk (never an N x M matrix in memory)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    m = min(m, len(b))
    return torch.cat(
        [(a[s : s + chunk] @ b.T).topk(m, dim=-1).indices for s in range(0, len(a), chunk)]
    )


def candidate_edges(x0: torch.Tensor, x1: torch.Tensor, m: int, chunk: int = 1024) -> dict:
    """Top-m candidate edges by cosine of the encoded nodes, for every attention kind
    (``00`` posters to posters, ``01`` posters to intros, ...), fixed for all units."""
    with torch.no_grad():
        return {
            "00": topm_candidates(x0, x0, m, chunk),
            "11": topm_candidates(x1, x1, m, chunk),
            "01": topm_candidates(x0, x1, m, chunk),
            "10": topm_candidates(x1, x0, m, chunk),
        }


def sparse_attend(logits_fn, values: torch.Tensor, cand: torch.Tensor, chunk: int) -> torch.Tensor:
    """Softmax attention restricted to candidate edges, in row chunks.

    Args:
        logits_fn: ``(rows, idx) -> [c x m x H]`` logits of rows ``rows`` to
            their candidates ``idx`` [c x m].
        values: [M x H x D/H] per-node values; cand: [N x m] candidate indices.
    Returns: messages [N x H x D/H]; equal to dense attention when m = M.
    """
    out = []
    for s in range(0, len(cand), chunk):
        idx = cand[s : s + chunk]
        w = torch.softmax(logits_fn(slice(s, s + chunk), idx), dim=1)  # over the m candidates
        out.append(torch.einsum("cmh,cmhd->chd", w, values[idx]))
    return torch.cat(out)


def ffn(dim: int, dropout: float) -> nn.Sequential:
    """Residual update MLP on ``[x, message]``; the last layer starts at zero so a
    new unit is the identity at init (SuperGlue), keeping the depth ablation fair."""
    mlp = nn.Sequential(
        nn.Linear(2 * dim, 2 * dim),
        nn.LayerNorm(2 * dim),
        nn.GELU(),
        nn.Dropout(dropout),
        nn.Linear(2 * dim, dim),
    )
    nn.init.zeros_(mlp[-1].weight)
    nn.init.zeros_(mlp[-1].bias)
    return mlp


class SelfBlock(nn.Module):
    """``x <- x + ffn([x, MHA(x, x, x)])`` inside one set (dot-product attention via SDPA)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.merge = nn.Linear(dim, dim)
        self.ffn = ffn(dim, dropout)

    def forward(
        self, x: torch.Tensor, cand: torch.Tensor | None = None, chunk: int = 1024
    ) -> torch.Tensor:
        """x [N x d]; ``cand`` [N x m]: attend to these nodes only (None: all)."""
        if cand is None:
            q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(1, 2, 0, 3)
            message = F.scaled_dot_product_attention(q, k, v).transpose(0, 1)  # [N x H x D/H]
        else:
            q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).unbind(1)  # [N x H x D/H]
            scale = q.shape[-1] ** -0.5

            def logits(rows, idx):
                return (q[rows, None] * k[idx]).sum(-1) * scale

            message = sparse_attend(logits, v, cand, chunk)
        message = self.merge(message.flatten(1))
        return x + self.ffn(torch.cat([x, message], dim=-1))


class CrossBlock(nn.Module):
    """Bidirectional cross-attention with logits from an edge scorer.

    One logit tensor is computed and soft-maxed each way (LightGlue):
    ``m0 = softmax(logits, -1) @ v1`` and ``m1 = softmax(logits, -2)^T @ v0``.
    """

    def __init__(self, conf: ModelConf, chunk: int = 512):
        super().__init__()
        dim, self.heads = conf.dim, conf.num_heads
        self.edge = make_edge(conf, out=self.heads, chunk=chunk)
        # Dot/cosine logits compare projected keys; the MLP edge projects itself.
        self.to_qk = nn.Identity() if conf.edge == "mlp" else nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.merge = nn.Linear(dim, dim)
        self.ffn = ffn(dim, conf.dropout)
        # Prior-guided attention: a learned per-head gain on the zero-shot prior
        # logits, added to the attention logits (a poster looks at the intros the
        # priors favour, and back). Off (None) when model.attn_prior = 0.
        self.prior_gain = (
            nn.Parameter(torch.full((self.heads,), float(conf.attn_prior)))
            if conf.attn_prior
            else None
        )

    def forward(self, x0, x1, cand01=None, cand10=None, chunk: int = 1024, prior=None):
        """``cand01`` [N x m] / ``cand10`` [M x m]: candidate intros of each poster and
        candidate posters of each intro (None: dense, all pairs). ``prior`` [N x M]:
        the zero-shot prior logits, used when the block has a prior gain."""
        if cand01 is not None:
            if self.prior_gain is not None:
                raise ValueError("model.attn_prior needs dense attention (model.attn_topm=0)")
            return self._sparse(x0, x1, cand01, cand10, chunk)
        logits = self.edge(self.to_qk(x0), self.to_qk(x1))  # [H x N x M]
        if logits.ndim == 2:
            logits = logits[None]
        if self.prior_gain is not None:
            if prior is None:
                raise ValueError(
                    "this cross-attention block is prior-guided (model.attn_prior) but got no prior"
                )
            logits = logits + self.prior_gain[:, None, None] * prior
        v0 = self.value(x0).unflatten(-1, (self.heads, -1)).transpose(0, 1)  # [H x N x D/H]
        v1 = self.value(x1).unflatten(-1, (self.heads, -1)).transpose(0, 1)
        m0 = torch.softmax(logits, dim=-1) @ v1
        m1 = torch.softmax(logits, dim=-2).transpose(-1, -2) @ v0
        m0 = self.merge(m0.transpose(0, 1).flatten(1))
        m1 = self.merge(m1.transpose(0, 1).flatten(1))
        x0 = x0 + self.ffn(torch.cat([x0, m0], dim=-1))
        x1 = x1 + self.ffn(torch.cat([x1, m1], dim=-1))
        return x0, x1

    def _sparse(self, x0, x1, cand01, cand10, chunk):
        p0, p1 = self.edge.prepare(self.to_qk(x0), self.to_qk(x1))
        v0 = self.value(x0).unflatten(-1, (self.heads, -1))  # [N x H x D/H]
        v1 = self.value(x1).unflatten(-1, (self.heads, -1))

        def logits01(rows, idx):  # posters `rows` -> their candidate intros
            return self.edge.combine(p0[rows, None], p1[idx])

        def logits10(rows, idx):  # intros `rows` -> their candidate posters, same f(x0, x1)
            return self.edge.combine(p0[idx], p1[rows, None])

        m0 = self.merge(sparse_attend(logits01, v1, cand01, chunk).flatten(1))
        m1 = self.merge(sparse_attend(logits10, v0, cand10, chunk).flatten(1))
        x0 = x0 + self.ffn(torch.cat([x0, m0], dim=-1))
        x1 = x1 + self.ffn(torch.cat([x1, m1], dim=-1))
        return x0, x1


class MatchLayer(nn.Module):
    """One unit: the blocks named in ``conf.layer_types`` (``self``, ``cross``), in order."""

    def __init__(self, conf: ModelConf, chunk: int = 512):
        super().__init__()
        self.types = list(conf.layer_types)
        if "self" in self.types:
            self.self0 = SelfBlock(conf.dim, conf.num_heads, conf.dropout)
            self.self1 = SelfBlock(conf.dim, conf.num_heads, conf.dropout)
        if "cross" in self.types:
            self.cross = CrossBlock(conf, chunk)

    def forward(self, x0, x1, cand: dict | None = None, chunk: int = 1024, prior=None):
        """``cand``: candidate edges ``{"00", "11", "01", "10"}`` for sparse
        attention (see :meth:`gmatch.models.Matcher.candidates`); None = dense.
        ``prior``: the prior logits [N x M] for prior-guided cross-attention."""
        c = cand or {}
        for t in self.types:
            if t == "self":
                x0, x1 = self.self0(x0, c.get("00"), chunk), self.self1(x1, c.get("11"), chunk)
            else:
                x0, x1 = self.cross(x0, x1, c.get("01"), c.get("10"), chunk, prior)
        return x0, x1
