"""SuperGlue-style attentional matcher between two sets of nodes (posters, intros).

Stages (SuperGlue, Sarlin et al. CVPR 2020; LightGlue, Lindenberger et al. ICCV 2023):
  1. a node encoder per side projects the frozen features of every view to width d;
  2. ``n_layers`` units of self-attention inside each set, then cross-attention
     between the sets, each a residual update ``x <- x + ffn([x, message])``;
  3. an edge scorer gives the final pair logits S; the distance is D = -S.

No feature depends on node order, so the model is permutation-equivariant:
permuting the intros permutes the columns of S and nothing else.
With ``n_layers=0`` and ``edge="cosine"`` it is the dual-encoder baseline.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gmatch.config import ModelConf

__all__ = [
    "CosineEdge",
    "DotEdge",
    "MLPEdge",
    "make_edge",
    "NodeEncoder",
    "SelfBlock",
    "CrossBlock",
    "Matcher",
    "build_matcher",
    "logits_to_dist",
]


def logits_to_dist(logits: torch.Tensor) -> torch.Tensor:
    """The one place where similarity (larger = closer) becomes distance."""
    return -logits


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


def make_edge(conf: ModelConf, out: int = 1) -> nn.Module:
    if conf.edge == "cosine":
        return CosineEdge(conf.tau_init, out)
    if conf.edge == "dot":
        return DotEdge(out)
    if conf.edge == "mlp":
        return MLPEdge(conf.dim, conf.edge_hidden, out, conf.chunk)
    raise ValueError(f"model.edge must be cosine, dot or mlp, got {conf.edge!r}")


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


class NodeEncoder(nn.Module):
    """Project the views of one side to width d.

    Each view is L2-normalised; an empty view (a poster with no text) is
    replaced by a learned "missing" vector, not zeros.
    """

    def __init__(self, view_dims: list[int], conf: ModelConf):
        super().__init__()
        self.view_dims = list(view_dims)
        self.missing = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in view_dims])
        self.feat_dropout = nn.Dropout(conf.feat_dropout)
        self.view_dropout = conf.view_dropout
        din = sum(view_dims)
        if conf.proj_layers == 1:
            self.proj = nn.Linear(din, conf.dim)
        else:
            self.proj = nn.Sequential(
                nn.Linear(din, conf.hidden),
                nn.LayerNorm(conf.hidden),
                nn.GELU(),
                nn.Dropout(conf.dropout),
                nn.Linear(conf.hidden, conf.dim),
            )

    def forward(self, views: list[torch.Tensor], valid: list[torch.Tensor]) -> torch.Tensor:
        """views: V tensors [N x D_v]; valid: V bool [N] -> nodes [N x d]."""
        parts = []
        for x, ok, missing in zip(views, valid, self.missing):
            if self.training and self.view_dropout > 0 and len(views) > 1:
                ok = ok & (torch.rand(len(ok), device=ok.device) >= self.view_dropout)
            x = torch.where(ok[:, None], F.normalize(x, dim=-1), missing)
            parts.append(x)
        return self.proj(self.feat_dropout(torch.cat(parts, dim=-1)))


class SelfBlock(nn.Module):
    """``x <- x + ffn([x, MHA(x, x, x)])`` inside one set (dot-product attention via SDPA)."""

    def __init__(self, dim: int, num_heads: int, dropout: float):
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.merge = nn.Linear(dim, dim)
        self.ffn = ffn(dim, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.qkv(x).unflatten(-1, (3, self.num_heads, -1)).permute(1, 2, 0, 3)
        message = F.scaled_dot_product_attention(q, k, v)  # [H x N x D/H]
        message = self.merge(message.transpose(0, 1).flatten(1))
        return x + self.ffn(torch.cat([x, message], dim=-1))


class CrossBlock(nn.Module):
    """Bidirectional cross-attention with logits from an edge scorer.

    One logit tensor is computed and soft-maxed each way (LightGlue):
    ``m0 = softmax(logits, -1) @ v1`` and ``m1 = softmax(logits, -2)^T @ v0``.
    """

    def __init__(self, conf: ModelConf):
        super().__init__()
        dim, self.heads = conf.dim, conf.num_heads
        self.edge = make_edge(conf, out=self.heads)
        # Dot/cosine logits compare projected keys; the MLP edge projects itself.
        self.to_qk = nn.Identity() if conf.edge == "mlp" else nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.merge = nn.Linear(dim, dim)
        self.ffn = ffn(dim, conf.dropout)

    def forward(self, x0, x1):
        logits = self.edge(self.to_qk(x0), self.to_qk(x1))  # [H x N x M]
        if logits.ndim == 2:
            logits = logits[None]
        v0 = self.value(x0).unflatten(-1, (self.heads, -1)).transpose(0, 1)  # [H x N x D/H]
        v1 = self.value(x1).unflatten(-1, (self.heads, -1)).transpose(0, 1)
        m0 = torch.softmax(logits, dim=-1) @ v1
        m1 = torch.softmax(logits, dim=-2).transpose(-1, -2) @ v0
        m0 = self.merge(m0.transpose(0, 1).flatten(1))
        m1 = self.merge(m1.transpose(0, 1).flatten(1))
        x0 = x0 + self.ffn(torch.cat([x0, m0], dim=-1))
        x1 = x1 + self.ffn(torch.cat([x1, m1], dim=-1))
        return x0, x1, logits.mean(0)


class MatchLayer(nn.Module):
    """One unit: the blocks named in ``conf.layer_types`` (``self``, ``cross``)."""

    def __init__(self, conf: ModelConf):
        super().__init__()
        for t in conf.layer_types:
            if t not in ("self", "cross"):
                raise ValueError(f"model.layer_types entries must be self or cross, got {t!r}")
        self.types = list(conf.layer_types)
        if "self" in self.types:
            self.self0 = SelfBlock(conf.dim, conf.num_heads, conf.dropout)
            self.self1 = (
                self.self0 if conf.share_self else SelfBlock(conf.dim, conf.num_heads, conf.dropout)
            )
        if "cross" in self.types:
            self.cross = CrossBlock(conf)

    def forward(self, x0, x1):
        logits = None
        for t in self.types:
            if t == "self":
                x0, x1 = self.self0(x0), self.self1(x1)
            else:
                x0, x1, logits = self.cross(x0, x1)
        return x0, x1, logits


class Matcher(nn.Module):
    """Node encoders -> ``n_layers`` x (self + cross) -> edge-scorer head.

    Args:
        poster_dims / intro_dims: feature width of each view of each side.
        conf: :class:`gmatch.config.ModelConf`.
    """

    def __init__(
        self,
        poster_dims: list[int],
        intro_dims: list[int],
        conf: ModelConf,
        prior_pairs: list[tuple[int, int]] = (),
    ):
        super().__init__()
        self.conf = conf
        # Zero-shot skip: views of the two sides that share one embedding space
        # (OCR text and intro through the same text encoder) add their cosine to S.
        self.prior_pairs = list(prior_pairs)
        w = torch.full((len(self.prior_pairs),), math.log(conf.prior_weight / conf.tau_init))
        if conf.learn_prior_weight:
            self.prior_log_weight = nn.Parameter(w)
        else:
            self.register_buffer("prior_log_weight", w)
        self.encode0 = NodeEncoder(poster_dims, conf)
        self.encode1 = NodeEncoder(intro_dims, conf)
        self.layers = nn.ModuleList([MatchLayer(conf) for _ in range(conf.n_layers)])
        self.head = make_edge(conf, out=1)

    def forward(self, views0, valid0, views1, valid1, heads: str = "final") -> dict:
        """Match N posters against M intros.

        Args:
            views0 / views1: per view, features [N x D_v] / [M x D_v].
            valid0 / valid1: per view, bool [N] / [M] (False = empty view).
            heads: ``"all"`` also scores the head after every layer (deep supervision).
        Returns:
            ``logits`` [N x M] (larger = closer), ``dist`` = -logits,
            ``layer_logits``: head logits after the encoder and each unit when heads="all".
        """
        prior = self.prior_logits(views0, valid0, views1, valid1)
        # Project frozen features to nodes.
        x0, x1 = self.encode0(views0, valid0), self.encode1(views1, valid1)
        layer_logits = [self.head(x0, x1) + prior] if heads == "all" else []
        # Self- and cross-attention units.
        for layer in self.layers:
            x0, x1, _ = layer(x0, x1)
            if heads == "all":
                layer_logits.append(self.head(x0, x1) + prior)
        logits = layer_logits[-1] if heads == "all" else self.head(x0, x1) + prior
        return {"logits": logits, "dist": logits_to_dist(logits), "layer_logits": layer_logits}

    def prior_logits(self, views0, valid0, views1, valid1):
        """Sum of weighted cosines of the prior view pairs (0 where a view is empty)."""
        out = torch.zeros(len(views0[0]), len(views1[0]))
        for (i, j), log_w in zip(self.prior_pairs, self.prior_log_weight):
            a = F.normalize(views0[i], dim=-1) * valid0[i][:, None]
            b = F.normalize(views1[j], dim=-1) * valid1[j][:, None]
            out = out + log_w.exp() * (a @ b.T)
        return out


def build_matcher(conf: ModelConf, poster_views: list[str], intro_views: list[str],
                  poster_dims: list[int], intro_dims: list[int]) -> Matcher:  # fmt: skip
    """A Matcher for views named by feature spec (prior pairs resolved by name)."""
    pairs = resolve_prior(conf.prior, poster_views, intro_views)
    return Matcher(poster_dims, intro_dims, conf, pairs)


def resolve_prior(prior: list[str], poster_views: list[str], intro_views: list[str]):
    """``["ocr:minilm=text:minilm"]`` -> ``[(poster view index, intro view index)]``;
    pairs whose views are not both used are skipped."""
    pairs = []
    for item in prior:
        a, _, b = item.partition("=")
        if a in poster_views and b in intro_views:
            pairs.append((poster_views.index(a), intro_views.index(b)))
    return pairs
