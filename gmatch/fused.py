"""The linear parts of large-N mode's scores as one product ``f0[rows] @ f1[cols].T``
(:func:`fused_factors`): the mean of the members' linear heads, the dense priors and the
common n-grams of the lexical priors; the poster side built on demand at large N
(:class:`RowFactors`). Used by :class:`gmatch.stream.BlockScorer`."""

from __future__ import annotations

import torch

from gmatch.priors import LexicalScorer, dense_prior_width, write_dense_prior_factors

__all__ = ["ENCODE_ROWS", "fused_factors", "fused_scorer_parts", "RowFactors", "chunked"]

# Rows per chunk of the per-node encoders and the priors' factors; large-N mode builds the
# poster side of its fused product in these aligned chunks on demand (:class:`RowFactors`).
ENCODE_ROWS = 8192


def chunked(encode, views, valid, rows: int | None = None) -> torch.Tensor:
    """``encode(views, valid)`` of a per-node encoder, ``rows`` (:data:`ENCODE_ROWS`)
    nodes at a time."""
    n, rows = len(views[0]), rows or ENCODE_ROWS
    if n <= rows:
        return encode(views, valid)
    return torch.cat(
        [
            encode([v[s : s + rows] for v in views], [m[s : s + rows] for m in valid])
            for s in range(0, n, rows)
        ]
    )


@torch.inference_mode()
def fused_factors(members, states, prior, scorers, lex_w, posters: bool = True):
    """``(f0, f1)`` with ``f0[rows] @ f1[cols].T`` = the mean of the members' linear heads
    (``states(member, posters)``: its node embeddings) + the dense priors (``prior = (width,
    write)``: ``write(out0, out1)`` fills their factors' ``width`` columns) + the common
    n-grams of the lexical ``scorers`` (weights ``lex_w``), up to rounding. Each part is
    written into preallocated [N x width] matrices, the priors row chunks at a time: the
    peak is the factors plus one member's embeddings, not every part twice.
    ``posters=False``: ``f0`` is None (:class:`RowFactors` builds its rows on demand)."""
    a, b = members[0].head.factors(*states(members[0], posters))
    lexical = [(c, w) for c, w in zip(scorers, lex_w) if isinstance(c, LexicalScorer)]
    prior_width, write_prior = prior
    width = prior_width + a.shape[1] * len(members) + sum(len(c.common) for c, _ in lexical)
    f0 = torch.empty(len(a), width) if posters else None
    f1 = torch.empty(len(b), width)
    col = 0

    def cols(k):  # the next k columns of f0 (None: not built) and f1
        nonlocal col
        col += k
        return None if f0 is None else f0[:, col - k : col], f1[:, col - k : col]

    if prior_width:
        write_prior(*cols(prior_width))
    for k, m in enumerate(members):
        if k:
            a, b = m.head.factors(*states(m, posters))
        part0, part1 = cols(a.shape[1])
        if part0 is not None:
            part0.copy_(a).div_(len(members))
        part1.copy_(b)
        del a, b
    for scorer, w in lexical:
        scorer.write_common(*cols(len(scorer.common)), scale=w, rows=ENCODE_ROWS)
    assert col == width, (col, width)
    return f0, f1


class RowFactors:
    """The poster side ``f0`` of :func:`fused_factors` for models of per-node encoders,
    built :data:`ENCODE_ROWS` aligned rows at a time when a block asks for them, the last
    chunk kept: bitwise the rows of the whole ``f0`` (the same chunks through the same
    encoders and priors, tested), without holding N x width floats (1.1 GiB at N = 100k,
    3072 columns). Blocks visit rows in order, so each chunk is built about once a pass."""

    def __init__(self, members, views0, valid0, prior, scorers, lex_w, width: int):
        self.members, self.views0, self.valid0 = members, views0, valid0
        self.pairs, self.log_w, self.prior_width = prior
        self.lexical = [(c, w) for c, w in zip(scorers, lex_w) if isinstance(c, LexicalScorer)]
        self.width, self.n = width, len(views0[0])
        self._kept = (-1, None)

    def __getstate__(self):  # a pickled copy (Ray workers) starts without the kept chunk
        return {**self.__dict__, "_kept": (-1, None)}

    @torch.inference_mode()
    def build(self, a: int, b: int) -> torch.Tensor:
        """Rows ``a..b`` (one aligned chunk) of ``f0``."""
        v0, m0 = [v[a:b] for v in self.views0], [m[a:b] for m in self.valid0]
        out, col = torch.empty(b - a, self.width), self.prior_width
        if col:
            write_dense_prior_factors(
                self.pairs, self.log_w, v0, m0, None, None, out[:, :col], None, ENCODE_ROWS
            )
        for m in self.members:
            x0 = chunked(m.eval().encode0, v0, m0)
            x0 = m.head.factors(x0, x0[:0])[0]
            out[:, col : col + x0.shape[1]].copy_(x0).div_(len(self.members))
            col += x0.shape[1]
        for scorer, w in self.lexical:
            part = out[:, col : col + len(scorer.common)]
            part.copy_(scorer.common_rows(a, b)).mul_(w)
            col += len(scorer.common)
        return out

    def __call__(self, s: int, e: int) -> torch.Tensor:
        """Rows ``s..e`` of ``f0``."""
        parts, r = [], ENCODE_ROWS
        for k in range(s // r, (e - 1) // r + 1):
            if self._kept[0] != k:
                self._kept = (k, self.build(k * r, min((k + 1) * r, self.n)))
            parts.append(self._kept[1][max(s - k * r, 0) : e - k * r])
        return parts[0] if len(parts) == 1 else torch.cat(parts)


def fused_scorer_parts(members, states, views, prior, scorers, lex_w, lazy: bool = True):
    """``(f0, f1, rows)`` of a fused :class:`gmatch.stream.BlockScorer`: ``views`` =
    (views0, valid0, views1, valid1), ``prior`` = the first member's (pairs, log weights),
    ``states(member, posters)`` its node embeddings (``posters=False``: no poster rows).
    With ``lazy`` (and per-node encoders, more than :data:`ENCODE_ROWS` posters) ``f0`` is
    None and ``rows`` (a :class:`RowFactors`) builds its rows on demand, the only pass of
    the poster encoders; else ``rows`` is None."""
    views0, valid0, views1, valid1 = views
    pairs, log_w = prior
    lazy = lazy and len(views0[0]) > ENCODE_ROWS and not any(len(m.layers) for m in members)
    width = dense_prior_width(pairs, views0)
    write = (
        width,
        lambda out0, out1: write_dense_prior_factors(
            pairs, log_w, views0, valid0, views1, valid1, out0, out1, ENCODE_ROWS
        ),
    )
    f0, f1 = fused_factors(members, states, write, scorers, lex_w, posters=not lazy)
    if not lazy:
        return f0, f1, None
    rows = RowFactors(members, views0, valid0, (pairs, log_w, width), scorers, lex_w, f1.shape[1])
    return None, f1, rows
