"""SuperGlue-style attentional matcher between two sets of nodes (posters, intros).

Stages (SuperGlue, Sarlin et al. CVPR 2020; LightGlue, Lindenberger et al. ICCV 2023):
  1. a node encoder per side projects the frozen features of every view to width d;
  2. ``n_layers`` units of self-attention inside each set, then cross-attention
     between the sets, each a residual update ``x <- x + ffn([x, message])``;
  3. an edge scorer gives the final pair logits S; the distance is D = -S.

No feature depends on node order, so the model is permutation-equivariant:
permuting the intros permutes the columns of S and nothing else.
With ``n_layers=0`` and ``edge="cosine"`` it is the dual-encoder baseline.

Modules: :mod:`gmatch.models.edges` (scorers), :mod:`gmatch.models.attention`
(units), this file (encoders -> units -> head).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from gmatch.config import ConfigError, ModelConf, RuntimeConf
from gmatch.models.attention import MatchLayer, candidate_edges
from gmatch.models.dropout import FeatureDropout
from gmatch.models.edges import make_edge
from gmatch.models.inputs import FeatureLayout
from gmatch.models.local import LocalStage
from gmatch.priors import (
    check_prior_scores,
    prior_logits,
    prior_plan,
)

__all__ = [
    "NodeEncoder",
    "Matcher",
    "Ensemble",
    "build_matcher",
    "logits_to_dist",
    "replace_views",
]


def log_weights(weights: list[float], tau_init: float) -> torch.Tensor:
    """Prior weights in units of ``1 / tau_init``, as the log-scales the model stores."""
    return torch.tensor([math.log(w / tau_init) for w in weights], dtype=torch.float32)


def logits_to_dist(logits: torch.Tensor) -> torch.Tensor:
    """The one place where similarity (larger = closer) becomes distance."""
    return -logits


class NodeEncoder(nn.Module):
    """Project the views of one side to width d.

    Each view is L2-normalised; an empty view (a poster with no text) is
    replaced by a learned "missing" vector, not zeros.
    """

    def __init__(self, view_dims: list[int], conf: ModelConf):
        super().__init__()
        self.view_dims = list(view_dims)
        self.missing = nn.ParameterList([nn.Parameter(torch.zeros(d)) for d in view_dims])
        self.feat_dropout = FeatureDropout(conf.feat_dropout)
        self.view_dropout = conf.view_dropout
        self.proj = nn.Linear(sum(view_dims), conf.dim)

    def forward(self, views: list[torch.Tensor], valid: list[torch.Tensor]) -> torch.Tensor:
        """views: V tensors [N x D_v]; valid: V bool [N] -> nodes [N x d]."""
        parts = []
        for x, ok, missing in zip(views, valid, self.missing):
            if self.training and self.view_dropout > 0 and len(views) > 1:
                ok = ok & (torch.rand(len(ok), device=ok.device) >= self.view_dropout)
            x = torch.where(ok[:, None], F.normalize(x, dim=-1), missing)
            parts.append(x)
        return self.proj(self.feat_dropout(torch.cat(parts, dim=-1)))


class Matcher(nn.Module):
    """Node encoders -> ``n_layers`` attention units -> edge-scorer head, plus the
    zero-shot prior skips (:mod:`gmatch.priors`).

    Args:
        poster_dims / intro_dims: feature width of each view of each side.
        conf: :class:`gmatch.config.ModelConf`; ``runtime``: chunk sizes (execution only).
        prior_pairs / prior_weights: dense prior pairs (view indices) and their weights.
        lexical_weights: weights of the precomputed prior pairs, in order.
        n_genres: > 0 adds the auxiliary genre head (study 7).
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
        runtime: RuntimeConf | None = None,
        set_dims: tuple[list[int], list[int]] = ((), ()),
    ):
        super().__init__()
        runtime = runtime or RuntimeConf()
        self.conf, self.attn_chunk = conf, runtime.attn_chunk
        self.genre_head = nn.Linear(conf.dim, n_genres) if n_genres else None
        self.prior_pairs = list(prior_pairs)
        if prior_weights is None:
            prior_weights = [conf.prior_weight] * len(self.prior_pairs)
        self.register_buffer("prior_log_weight", log_weights(prior_weights, conf.tau_init))
        self.register_buffer("lexical_log_weight", log_weights(lexical_weights, conf.tau_init))
        self.encode0 = NodeEncoder(poster_dims, conf)
        self.encode1 = NodeEncoder(intro_dims, conf)
        self.layers = nn.ModuleList([MatchLayer(conf, runtime.chunk) for _ in range(conf.n_layers)])
        self.head = make_edge(conf, out=1, chunk=runtime.chunk)
        # Local-node graphs (OCR lines, intro sentences): a second score added to S.
        has_sets = bool(len(set_dims[0]) or len(set_dims[1]))
        self.local = LocalStage(conf, list(set_dims[0]), list(set_dims[1])) if has_sets else None
        if conf.rerank.share > 0 and not has_sets:
            raise ConfigError(
                "model.rerank: re-ranking cross-attends local nodes; set data.poster_sets / "
                "data.intro_sets (e.g. [ocrlines:mpnet] / [sents:mpnet]) or model.rerank.share=0"
            )

    def forward(
        self,
        views0,
        valid0,
        views1,
        valid1,
        lexical=None,
        all_layers: bool = False,
        sets0=(),
        sets1=(),
        tuned0=None,
        tuned1=None,
    ) -> dict:
        """Match N posters against M intros: the inputs are the fields of
        :class:`gmatch.models.inputs.MatchInput` (``model(**features.inputs(idx))``);
        ``all_layers`` also scores the head after the encoders and every unit (deep
        supervision).

        Returns ``logits`` [N x M] (larger = closer), ``dist`` = -logits, ``layer_logits``
        (with ``all_layers``: one [N x M] per state, the last equal to ``logits``) and,
        with a genre head, ``genre0`` / ``genre1``.
        """
        prior = self.prior_logits(views0, valid0, views1, valid1, lexical)
        guide = prior if self.conf.attn_prior else None
        layer_logits = []
        views0, views1 = replace_views(views0, tuned0), replace_views(views1, tuned1)
        for x0, x1 in self.states(views0, valid0, views1, valid1, prior=guide):
            if all_layers:  # scored as each state appears (the order autograd accumulates in)
                layer_logits.append(self.head(x0, x1) + prior)
        logits = layer_logits[-1] if all_layers else self.head(x0, x1) + prior
        if self.local is not None:
            logits = logits + self.local(sets0, sets1, x0, x1, base=logits)
            if all_layers:
                layer_logits[-1] = logits
        out = {"logits": logits, "dist": logits_to_dist(logits), "layer_logits": layer_logits}
        if self.genre_head is not None:  # auxiliary multi-label genre logits per node
            out["genre0"], out["genre1"] = self.genre_head(x0), self.genre_head(x1)
        return out

    def states(self, views0, valid0, views1, valid1, topm: int | None = None, prior=None):
        """Yield ``(x0, x1)`` after the encoders, then after each unit.

        ``topm`` (default ``conf.attn_topm``; 0 = dense): each node attends only
        to its top-m candidates, found once by cosine of the encoded nodes, in
        row chunks, so memory stays O(N m d) for any N. ``prior`` [N x M]: the
        prior logits, needed by prior-guided cross-attention (``conf.attn_prior``).
        """
        x0, x1 = self.encode0(views0, valid0), self.encode1(views1, valid1)
        yield x0, x1
        topm = self.conf.attn_topm if topm is None else topm
        cand = None
        if len(self.layers) and topm and topm < max(len(x0), len(x1)):
            cand = candidate_edges(x0, x1, topm, self.attn_chunk)
        for layer in self.layers:
            x0, x1 = layer(x0, x1, cand, self.attn_chunk, prior)
            yield x0, x1

    def check_lexical(self, lexical, what: str) -> list:
        """``lexical`` as a list, one entry per precomputed prior pair of this model, or a ValueError."""
        return check_prior_scores(lexical, len(self.lexical_log_weight), what)

    def prior_logits(self, views0, valid0, views1, valid1, lexical=None):
        """Weighted prior scores [N x M]: dense pairs, then the precomputed ones."""
        return prior_logits(
            self.prior_pairs,
            self.prior_log_weight,
            self.lexical_log_weight,
            (views0, valid0, views1, valid1),
            lexical,
            "lexical score matrices; call model(**features.inputs(idx))",
        )


def replace_views(views: list, tuned: dict | None) -> list:
    """``views`` with the fine-tuned ones swapped in (by view index)."""
    return [tuned[j] if tuned and j in tuned else x for j, x in enumerate(views)]


class Ensemble(nn.Module):
    """Matchers that differ only in their seed (``model.members``): their logits are
    averaged. Called like :class:`Matcher` (without deep supervision: it is trained
    member by member, see :func:`gmatch.training.train`)."""

    def __init__(self, members: list[Matcher], conf: ModelConf):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.conf = conf

    @property
    def genre_head(self):
        return self.members[0].genre_head

    @property
    def prior_pairs(self):
        return self.members[0].prior_pairs

    @property
    def lexical_log_weight(self):
        return self.members[0].lexical_log_weight

    def prior_logits(self, views0, valid0, views1, valid1, lexical=None):
        """The zero-shot priors: buffers built from the config, the same in every member."""
        return self.members[0].prior_logits(views0, valid0, views1, valid1, lexical)

    def forward(self, views0, valid0, views1, valid1, lexical=None, **inputs) -> dict:
        logits = torch.stack(
            [m(views0, valid0, views1, valid1, lexical, **inputs)["logits"] for m in self.members]
        ).mean(0)
        return {"logits": logits, "dist": logits_to_dist(logits), "layer_logits": []}


def independent_pairs(model) -> bool:
    """Whether a model's pair scores depend on their two movies alone (every member: no
    attention units, no local stage, whose re-ranking reads the other candidates). Then a
    subset's scores among itself are the full forward's slice: it can be scored alone."""
    members = model.members if isinstance(model, Ensemble) else [model]
    return all(m.conf.n_layers == 0 and m.local is None for m in members)


def build_matcher(
    conf: ModelConf,
    layout: FeatureLayout,
    n_genres: int = 0,
    runtime: RuntimeConf | None = None,
) -> Matcher | Ensemble:
    """A Matcher for the views of ``layout`` (prior pairs resolved by spec name); an
    :class:`Ensemble` of ``conf.members`` of them when that is > 1."""
    poster_dims, intro_dims = list(layout.poster_dims), list(layout.intro_dims)
    set_dims = tuple(list(d) for d in layout.set_dims)
    if (
        (len(set_dims[0]) or len(set_dims[1]))
        and not conf.local.global_node
        and not (len(set_dims[0]) and len(set_dims[1]))
    ):
        raise ConfigError(
            "model.local.global_node=false needs local nodes on both sides (data.poster_sets and data.intro_sets)"
        )
    plan = prior_plan(conf.prior, conf.prior_weight, layout.poster_views, layout.intro_views)

    def one():
        return Matcher(
            poster_dims,
            intro_dims,
            conf,
            *plan,
            n_genres,
            runtime,
            set_dims,
        )

    return one() if conf.members == 1 else Ensemble([one() for _ in range(conf.members)], conf)
