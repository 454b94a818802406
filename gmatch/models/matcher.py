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

from gmatch.config import ConfigError, ModelConf

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
    "sparse_attend",
    "topm_candidates",
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

    def prepare(self, x0, x1):
        """Per-node parts for :meth:`combine` ([N x H x D/H] unit vectors)."""
        h = len(self.log_scale)
        return F.normalize(x0.unflatten(-1, (h, -1)), dim=-1), F.normalize(x1.unflatten(-1, (h, -1)), dim=-1)

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


def make_edge(conf: ModelConf, out: int = 1) -> nn.Module:
    if conf.edge == "cosine":
        return CosineEdge(conf.tau_init, out)
    if conf.edge == "dot":
        return DotEdge(out)
    if conf.edge == "mlp":
        return MLPEdge(conf.dim, conf.edge_hidden, out, conf.chunk)
    raise ConfigError(f"model.edge must be cosine, dot or mlp, got {conf.edge!r}")


def topm_candidates(a: torch.Tensor, b: torch.Tensor, m: int, chunk: int = 1024) -> torch.Tensor:
    """For each row of ``a``, the indices [N x min(m, M)] of its top-m rows of
    ``b`` by cosine, found chunk by chunk (never an N x M matrix in memory)."""
    a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
    m = min(m, len(b))
    return torch.cat([(a[s : s + chunk] @ b.T).topk(m, dim=-1).indices for s in range(0, len(a), chunk)])


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

    def forward(self, x: torch.Tensor, cand: torch.Tensor | None = None, chunk: int = 1024) -> torch.Tensor:
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

    def __init__(self, conf: ModelConf):
        super().__init__()
        dim, self.heads = conf.dim, conf.num_heads
        self.edge = make_edge(conf, out=self.heads)
        # Dot/cosine logits compare projected keys; the MLP edge projects itself.
        self.to_qk = nn.Identity() if conf.edge == "mlp" else nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.merge = nn.Linear(dim, dim)
        self.ffn = ffn(dim, conf.dropout)
        # Prior-guided attention: a learned per-head gain on the zero-shot prior
        # logits, added to the attention logits (a poster looks at the intros the
        # priors favour, and back). Off (None) when model.attn_prior = 0.
        self.prior_gain = (
            nn.Parameter(torch.full((self.heads,), float(conf.attn_prior))) if conf.attn_prior else None
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
                raise ValueError("this cross-attention block is prior-guided (model.attn_prior) but got no prior")
            logits = logits + self.prior_gain[:, None, None] * prior
        v0 = self.value(x0).unflatten(-1, (self.heads, -1)).transpose(0, 1)  # [H x N x D/H]
        v1 = self.value(x1).unflatten(-1, (self.heads, -1)).transpose(0, 1)
        m0 = torch.softmax(logits, dim=-1) @ v1
        m1 = torch.softmax(logits, dim=-2).transpose(-1, -2) @ v0
        m0 = self.merge(m0.transpose(0, 1).flatten(1))
        m1 = self.merge(m1.transpose(0, 1).flatten(1))
        x0 = x0 + self.ffn(torch.cat([x0, m0], dim=-1))
        x1 = x1 + self.ffn(torch.cat([x1, m1], dim=-1))
        return x0, x1, logits.mean(0)

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
        return x0, x1, None


class MatchLayer(nn.Module):
    """One unit: the blocks named in ``conf.layer_types`` (``self``, ``cross``)."""

    def __init__(self, conf: ModelConf):
        super().__init__()
        for t in conf.layer_types:
            if t not in ("self", "cross"):
                raise ConfigError(f"model.layer_types entries must be self or cross, got {t!r}")
        self.types = list(conf.layer_types)
        if "self" in self.types:
            self.self0 = SelfBlock(conf.dim, conf.num_heads, conf.dropout)
            self.self1 = (
                self.self0 if conf.share_self else SelfBlock(conf.dim, conf.num_heads, conf.dropout)
            )
        if "cross" in self.types:
            self.cross = CrossBlock(conf)

    def forward(self, x0, x1, cand: dict | None = None, chunk: int = 1024, prior=None):
        """``cand``: candidate edges ``{"00", "11", "01", "10"}`` for sparse
        attention (see :meth:`Matcher.candidates`); None = dense. ``prior``: the
        prior logits [N x M] for prior-guided cross-attention."""
        logits = None
        c = cand or {}
        for t in self.types:
            if t == "self":
                x0, x1 = self.self0(x0, c.get("00"), chunk), self.self1(x1, c.get("11"), chunk)
            else:
                x0, x1, logits = self.cross(x0, x1, c.get("01"), c.get("10"), chunk, prior)
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
        prior_weights: list[float] | None = None,
        lexical_weights: list[float] = (),
        n_genres: int = 0,
    ):
        super().__init__()
        # Auxiliary head (study 7): genres of training movies from the final nodes.
        self.genre_head = nn.Linear(conf.dim, n_genres) if n_genres else None
        self.conf = conf
        # Zero-shot skip: views of the two sides that share one embedding space
        # (OCR text and intro through the same text encoder) add their cosine to S;
        # lexical pairs (sparse views) arrive as precomputed cosines in forward().
        self.prior_pairs = list(prior_pairs)
        if prior_weights is None:
            prior_weights = [conf.prior_weight] * len(self.prior_pairs)

        def log_w(ws):
            return torch.tensor([math.log(w / conf.tau_init) for w in ws], dtype=torch.float32)

        for name, ws in (("prior_log_weight", prior_weights), ("lexical_log_weight", lexical_weights)):
            if conf.learn_prior_weight:
                setattr(self, name, nn.Parameter(log_w(ws)))
            else:
                self.register_buffer(name, log_w(ws))
        self.encode0 = NodeEncoder(poster_dims, conf)
        self.encode1 = NodeEncoder(intro_dims, conf)
        self.layers = nn.ModuleList([MatchLayer(conf) for _ in range(conf.n_layers)])
        self.head = make_edge(conf, out=1)

    def forward(self, views0, valid0, views1, valid1, heads: str = "final", lexical=None) -> dict:
        """Match N posters against M intros.

        Args:
            views0 / views1: per view, features [N x D_v] / [M x D_v].
            valid0 / valid1: per view, bool [N] / [M] (False = empty view).
            heads: ``"all"`` also scores the head after every layer (deep supervision).
            lexical: per lexical prior pair, the cosines [N x M] of its sparse views
                (``Features.inputs`` supplies them).
        Returns:
            ``logits`` [N x M] (larger = closer), ``dist`` = -logits,
            ``layer_logits``: head logits after the encoder and each unit when heads="all".
        """
        prior = self.prior_logits(views0, valid0, views1, valid1, lexical)
        layer_logits = []
        on_layer = (lambda a, b: layer_logits.append(self.head(a, b) + prior)) if heads == "all" else None
        x0, x1 = self.embed(views0, valid0, views1, valid1, on_layer=on_layer,
                            prior=prior if self.conf.attn_prior else None)  # fmt: skip
        logits = layer_logits[-1] if heads == "all" else self.head(x0, x1) + prior
        out = {"logits": logits, "dist": logits_to_dist(logits), "layer_logits": layer_logits}
        if self.genre_head is not None:  # auxiliary multi-label genre logits per node
            out["genre0"], out["genre1"] = self.genre_head(x0), self.genre_head(x1)
        return out

    def embed(self, views0, valid0, views1, valid1, topm: int | None = None, on_layer=None, prior=None):
        """Node embeddings after the encoders and all units: ([N x d], [M x d]).

        ``topm`` (default ``conf.attn_topm``; 0 = dense): each node attends only
        to its top-m candidates, found once by cosine of the encoded nodes, in
        row chunks, so memory stays O(N m d) for any N. ``on_layer(x0, x1)`` is
        called after the encoders and after every unit. ``prior`` [N x M]: the
        prior logits, needed by prior-guided cross-attention (``conf.attn_prior``).
        """
        x0, x1 = self.encode0(views0, valid0), self.encode1(views1, valid1)
        if on_layer is not None:
            on_layer(x0, x1)
        m = self.conf.attn_topm if topm is None else topm
        cand = None
        if len(self.layers) and m and m < max(len(x0), len(x1)):
            cand = self.candidates(x0, x1, m)
        for layer in self.layers:
            x0, x1, _ = layer(x0, x1, cand, self.conf.attn_chunk, prior)
            if on_layer is not None:
                on_layer(x0, x1)
        return x0, x1

    def candidates(self, x0, x1, m: int) -> dict:
        """Top-m candidate edges by cosine of the encoded nodes (fixed for all units)."""
        with torch.no_grad():
            ch = self.conf.attn_chunk
            return {"00": topm_candidates(x0, x0, m, ch), "11": topm_candidates(x1, x1, m, ch),
                    "01": topm_candidates(x0, x1, m, ch), "10": topm_candidates(x1, x0, m, ch)}  # fmt: skip

    def check_lexical(self, lexical, what: str) -> list:
        """``lexical`` as a list, one entry per lexical prior pair of this model, or a ValueError."""
        lexical = list(lexical or [])
        if len(lexical) != len(self.lexical_log_weight):
            raise ValueError(f"this model has {len(self.lexical_log_weight)} lexical prior pair(s) but got "
                             f"{len(lexical)} {what}")  # fmt: skip
        return lexical

    def prior_logits(self, views0, valid0, views1, valid1, lexical=None):
        """Sum of weighted cosines of the prior view pairs (0 where a view is empty)."""
        out = torch.zeros(len(views0[0]), len(views1[0]))
        for (i, j), log_w in zip(self.prior_pairs, self.prior_log_weight):
            a = F.normalize(views0[i], dim=-1) * valid0[i][:, None]
            b = F.normalize(views1[j], dim=-1) * valid1[j][:, None]
            out = out + log_w.exp() * (a @ b.T)
        lexical = self.check_lexical(lexical, "lexical score matrices; call model(**features.inputs(idx))")
        for sim, log_w in zip(lexical, self.lexical_log_weight):
            if sim.shape != out.shape:
                raise ValueError(f"lexical scores have shape {tuple(sim.shape)}, expected {tuple(out.shape)}")
            out = out + log_w.exp() * sim
        return out


class Ensemble(nn.Module):
    """Matchers that differ only in their seed (``model.members``): their logits
    are averaged. Same call as
    :class:`Matcher`; trained member by member (:func:`gmatch.train.train`)."""

    def __init__(self, members: list[Matcher], conf: ModelConf):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.conf = conf

    @property
    def genre_head(self):
        return self.members[0].genre_head

    def forward(self, views0, valid0, views1, valid1, heads: str = "final", lexical=None) -> dict:
        logits = torch.stack([
            m(views0, valid0, views1, valid1, lexical=lexical)["logits"] for m in self.members
        ]).mean(0)  # fmt: skip
        return {"logits": logits, "dist": logits_to_dist(logits), "layer_logits": []}


def build_matcher(conf: ModelConf, poster_views: list[str], intro_views: list[str],
                  poster_dims: list[int], intro_dims: list[int], n_genres: int = 0) -> Matcher | Ensemble:  # fmt: skip
    """A Matcher for views named by feature spec (prior pairs resolved by name);
    an :class:`Ensemble` of ``conf.members`` of them when that is > 1."""
    if conf.members < 1:
        raise ConfigError(f"model.members must be >= 1, got {conf.members}")
    dense = resolve_prior(conf.prior, poster_views, intro_views)
    lexical = lexical_prior(conf.prior)

    def one():
        return Matcher(poster_dims, intro_dims, conf, [(i, j) for i, j, _ in dense],
                       [w or conf.prior_weight for *_, w in dense],
                       [w or conf.prior_weight for *_, w in lexical], n_genres)  # fmt: skip

    return one() if conf.members == 1 else Ensemble([one() for _ in range(conf.members)], conf)


def parse_prior(item: str) -> tuple[str, str, float | None]:
    """``"ocr:minilm=text:minilm@3"`` -> ``("ocr:minilm", "text:minilm", 3.0)``
    (no ``@w``: weight None, i.e. ``model.prior_weight``)."""
    pair, _, w = item.partition("@")
    a, eq, b = pair.partition("=")
    if not eq or not a or not b:
        raise ConfigError(f"prior entry {item!r}: expected '<poster view>=<intro view>[@weight]'")
    try:
        weight = float(w) if w else None
    except ValueError:
        raise ConfigError(f"prior entry {item!r}: weight {w!r} is not a number") from None
    if weight is not None and weight <= 0:
        raise ConfigError(f"prior entry {item!r}: weight must be > 0 (drop the entry to turn it off)")
    return a, b, weight


def resolve_prior(prior: list[str], poster_views: list[str], intro_views: list[str]):
    """Dense prior pairs -> ``[(poster view index, intro view index, weight)]``.

    A dense pair must name node views of the model (a prior on views the model
    does not read would be dropped without a word, so it is an error)."""
    from gmatch.features import is_prior_only_spec

    pairs = []
    for item in prior:
        a, b, w = parse_prior(item)
        if is_prior_only_spec(a) or is_prior_only_spec(b):
            continue  # precomputed outside the model, see lexical_prior
        for spec, views, key in ((a, poster_views, "data.poster_views"), (b, intro_views, "data.intro_views")):
            if spec not in views:
                raise ConfigError(f"prior entry {item!r}: {spec} is not in {key} {list(views)}; add it there "
                                  "or drop the entry from model.prior")  # fmt: skip
        pairs.append((poster_views.index(a), intro_views.index(b), w))
    return pairs


def lexical_prior(prior: list[str]) -> list[tuple[str, str, float | None]]:
    """Prior pairs whose scores are precomputed outside the model, in order:
    sparse lexical views (``ocr:chars=text:chars``, cosine) and set views
    (``ocrlines:mpnet=sents:mpnet``, max-pooled cosine; the other side may be a
    dense view of the same encoder, a set of one)."""
    from gmatch.features import is_set_spec, is_sparse_spec

    out = []
    for item in prior:
        a, b, w = parse_prior(item)
        if is_sparse_spec(a) != is_sparse_spec(b):
            raise ConfigError(f"prior entry {item!r}: both views must be sparse (chars) or neither")
        if is_sparse_spec(a) or is_set_spec(a) or is_set_spec(b):
            out.append((a, b, w))
    return out
