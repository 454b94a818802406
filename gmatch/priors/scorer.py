"""Scores of the precomputed prior pairs (lexical and pooled): one scorer per pair,
and :class:`PriorScorer`, which holds the pairs of one data set and serves their
score matrices to training episodes, evaluation and the streamed path."""

from __future__ import annotations

import numpy as np
import torch

from gmatch.priors.lexical import LexicalScorer
from gmatch.priors.pooled import PooledScorer

__all__ = ["make_scorer", "pair_scores", "PriorScorer", "FULL_MATRIX_MAX", "as_index"]

# Movies up to which PriorScorer keeps the full score matrix of each pair (8000^2 float32
# = 256 MB per pair): training episodes and validation passes index it.
FULL_MATRIX_MAX = 8000


def as_index(idx):
    """Rows ``idx`` as a torch index (None = all rows: a full slice)."""
    return slice(None) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)


def make_scorer(a, b):
    """A scorer with ``scores(rows, cols)`` for one precomputed prior pair: feature
    blocks (sparse -> :class:`LexicalScorer`, set views -> :class:`PooledScorer`)
    or a pair of sparse matrices."""
    if not hasattr(a, "values"):
        return LexicalScorer(a, b)
    if not isinstance(a.values, np.ndarray):
        return LexicalScorer(a.values, b.values)
    return PooledScorer(a, b)


def pair_scores(a, b, idx0=None, idx1=None, chunk: int = 1024) -> torch.Tensor:
    """Scores of a precomputed prior pair, posters ``idx0`` x intros ``idx1`` [N x M]."""
    scorer = make_scorer(a, b)
    rows = np.arange(scorer.n0 if isinstance(scorer, PooledScorer) else scorer.A.shape[0])
    rows = rows if idx0 is None else rows[np.asarray(idx0)]
    cols = slice(None) if idx1 is None else np.asarray(idx1)
    parts = [scorer.scores(rows[s : s + chunk], cols) for s in range(0, len(rows), chunk)]
    return torch.cat(parts) if parts else torch.zeros(0, 0)


class PriorScorer:
    """The precomputed prior pairs of one data set: ``pairs`` = (poster block, intro
    block) per pair, in ``model.prior`` order.

    :meth:`full` gives the score matrices of posters ``idx0`` x intros ``idx1``; up to
    ``FULL_MATRIX_MAX`` movies each pair's full matrix is computed once and indexed.
    (The streamed path scores row blocks with :func:`make_scorer` directly.)"""

    def __init__(self, pairs: list[tuple], full_max: int = FULL_MATRIX_MAX):
        self.pairs = list(pairs)
        self.full_max = full_max
        self._full: list[torch.Tensor] | None = None

    def n_movies(self) -> int:
        return max(len(self.pairs[0][0].valid), len(self.pairs[0][1].valid)) if self.pairs else 0

    def clear(self) -> None:
        """Drop the kept full matrices (the next call recomputes them)."""
        self._full = None

    def full(self, idx0=None, idx1=None) -> list[torch.Tensor]:
        """Per pair, the scores of posters ``idx0`` vs intros ``idx1`` [N x M] (None = all)."""
        if self.pairs and self.n_movies() <= self.full_max:
            if self._full is None:
                self._full = [pair_scores(a, b) for a, b in self.pairs]
            i0, i1 = as_index(idx0), as_index(idx1)
            return [full[i0][:, i1] for full in self._full]
        return [pair_scores(a, b, idx0, idx1) for a, b in self.pairs]
