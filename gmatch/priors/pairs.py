"""Zero-shot prior pairs (``model.prior``): parsing and scoring, shared by the dense
model (:class:`gmatch.models.Matcher`) and the streamed path (:mod:`gmatch.stream`).

An entry ``<poster view>=<intro view>[@weight]`` adds ``weight / tau_init * sim`` to
the pair logits S, with ``sim``:

- *dense* pairs (two node views of one text encoder, ``ocrseg:mpnet=text:mpnet``):
  the cosine of the two views, 0 where a view is empty; computed inside the model;
- *precomputed* pairs, scored outside the model by :mod:`gmatch.priors.scorer` and passed
  in per call: sparse lexical views (``ocr:chars=text:chars``, cosine) and set views
  (``ocrlines:mpnet=text:mpnet``, max-pooled cosine over the elements).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from gmatch.config import ConfigError
from gmatch.encoders.registry import View

__all__ = [
    "parse_prior",
    "dense_pairs",
    "precomputed_pairs",
    "dense_prior",
    "dense_prior_factors",
    "dense_prior_width",
    "write_dense_prior_factors",
    "check_prior_scores",
    "prior_logits",
    "prior_plan",
]


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
        raise ConfigError(
            f"prior entry {item!r}: weight must be > 0 (drop the entry to turn it off)"
        )
    return a, b, weight


def dense_pairs(prior: list[str], poster_views: list[str], intro_views: list[str]):
    """Dense prior pairs -> ``[(poster view index, intro view index, weight)]``.

    A dense pair must name node views of the model (a prior on views the model
    does not read would be dropped without a word, so it is an error)."""
    pairs = []
    for item in prior:
        a, b, w = parse_prior(item)
        if View.parse(a).prior_only or View.parse(b).prior_only:
            continue  # precomputed outside the model, see precomputed_pairs
        for spec, views, key in (
            (a, poster_views, "data.poster_views"),
            (b, intro_views, "data.intro_views"),
        ):
            if spec not in views:
                raise ConfigError(
                    f"prior entry {item!r}: {spec} is not in {key} {list(views)}; "
                    "add it there or drop the entry from model.prior"
                )
        pairs.append((poster_views.index(a), intro_views.index(b), w))
    return pairs


def precomputed_pairs(prior: list[str]) -> list[tuple[str, str, float | None]]:
    """Prior pairs whose scores are precomputed outside the model, in order:
    sparse lexical views (``ocr:chars=text:chars``, cosine) and set views
    (``ocrlines:mpnet=sents:mpnet``, max-pooled cosine; the other side may be a
    dense view of the same encoder, a set of one)."""
    out = []
    for item in prior:
        a, b, w = parse_prior(item)
        va, vb = View.parse(a), View.parse(b)
        if va.sparse != vb.sparse:
            raise ConfigError(f"prior entry {item!r}: both views must be sparse (chars) or neither")
        if va.sparse or va.is_set or vb.is_set:
            out.append((a, b, w))
    return out


def _dense_blocks(pairs, log_w, views0, valid0, views1, valid1) -> Iterator:
    """Per dense pair: its weight and the unit-norm view rows (zero rows where empty)."""
    for (i, j), lw in zip(pairs, log_w):
        a = F.normalize(views0[i], dim=-1) * valid0[i][:, None]
        b = F.normalize(views1[j], dim=-1) * valid1[j][:, None]
        yield lw.exp(), a, b


def dense_prior(pairs, log_w, views0, valid0, views1, valid1) -> torch.Tensor:
    """Sum over dense pairs of ``weight * cos(view_i, view_j)``: [N x M]."""
    out = torch.zeros(len(views0[0]), len(views1[0]))
    for w, a, b in _dense_blocks(pairs, log_w, views0, valid0, views1, valid1):
        out = out + w * (a @ b.T)
    return out


def dense_prior_factors(pairs, log_w, views0, valid0, views1, valid1):
    """``(A, B)`` with ``A @ B.T`` = :func:`dense_prior` up to rounding, so the
    streamed path scores any row block without the N x M matrix; (None, None)
    without dense pairs."""
    blocks = list(_dense_blocks(pairs, log_w, views0, valid0, views1, valid1))
    if not blocks:
        return None, None
    return torch.cat([a * w for w, a, _ in blocks], dim=-1), torch.cat(
        [b for *_, b in blocks], dim=-1
    )


def dense_prior_width(pairs, views0) -> int:
    """Columns of :func:`dense_prior_factors`'s factors (0 without dense pairs)."""
    return sum(views0[i].shape[1] for i, _ in pairs)


def write_dense_prior_factors(
    pairs, log_w, views0, valid0, views1, valid1, out0, out1, rows: int = 8192
) -> None:
    """:func:`dense_prior_factors`'s ``(A, B)`` written into ``out0`` [N x W] and ``out1``
    [M x W] (W = :func:`dense_prior_width`), ``rows`` rows at a time: bitwise the same
    values (row-wise operations in the same order), without an N x W transient. A side
    whose ``out`` is None is skipped (large-N mode builds poster rows on demand; then its
    views may be None too)."""
    col = 0
    for (i, j), lw in zip(pairs, log_w):
        w, d = lw.exp(), views0[i].shape[1]
        if views1 is not None and views1[j].shape[1] != d:
            raise ValueError(f"dense prior pair ({i}, {j}): widths {d} != {views1[j].shape[1]}")
        for views, valid, k, out, scale in (
            (views0, valid0, i, out0, w),
            (views1, valid1, j, out1, None),
        ):
            for s in range(0, len(views[k]) if out is not None else 0, rows):
                part = F.normalize(views[k][s : s + rows], dim=-1) * valid[k][s : s + rows, None]
                out[s : s + rows, col : col + d] = part if scale is None else part * scale
        col += d


def check_prior_scores(scores, expected: int, what: str) -> list:
    """``scores`` as a list of ``expected`` entries (one per precomputed prior pair of a
    model), or a ValueError naming what was passed."""
    scores = list(scores or [])
    if len(scores) != expected:
        raise ValueError(
            f"this model has {expected} lexical prior pair(s) but got {len(scores)} {what}"
        )
    return scores


def prior_plan(prior: list[str], default_weight: float, poster_views, intro_views):
    """What a model built for these node views needs of ``model.prior``: the dense pairs
    as (poster view index, intro view index), their weights, and the weights of the
    precomputed pairs (in order); an entry without ``@w`` weighs ``default_weight``."""
    dense = dense_pairs(prior, list(poster_views), list(intro_views))
    return (
        [(i, j) for i, j, _ in dense],
        [w or default_weight for *_, w in dense],
        [w or default_weight for *_, w in precomputed_pairs(prior)],
    )


def prior_logits(pairs, dense_log_w, lexical_log_w, views, lexical, what: str) -> torch.Tensor:
    """The weighted zero-shot priors [N x M] of a model: its dense pairs on ``views`` =
    (views0, valid0, views1, valid1), then its precomputed pairs' scores ``lexical``
    (checked against the model's pairs; ``what`` names what was passed)."""
    lexical = check_prior_scores(lexical, len(lexical_log_w), what)
    out = dense_prior(pairs, dense_log_w, *views)
    for sim, log_w in zip(lexical, lexical_log_w):
        if sim.shape != out.shape:
            raise ValueError(
                f"lexical scores have shape {tuple(sim.shape)}, expected {tuple(out.shape)}"
            )
        out = out + log_w.exp() * sim
    return out
