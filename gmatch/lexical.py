"""Precomputed prior scores: cosines of sparse lexical rows (the ``chars`` views)
and max-pooled cosines of sets of local embeddings (OCR lines, intro sentences).

The output of ``A @ B.T`` is nearly dense (common character n-grams occur in
almost every intro), which is where a sparse x sparse product spends its time.
:class:`LexicalScorer` splits the vocabulary: the ``n_common`` n-grams that most
intros contain go through a dense matrix product (BLAS), the rest through a
sparse one with a much sparser result. The sum is exact (same numbers up to
float rounding); both parts are computed in row chunks.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = [
    "LexicalScorer",
    "PooledScorer",
    "set_starts",
    "set_elements",
    "lexical_cosine",
    "make_scorer",
    "pair_scores",
]


class LexicalScorer:
    """Scores ``A[rows] @ B[cols].T`` for L2-normalised CSR rows A (posters) and B (intros)."""

    def __init__(self, A, B, n_common: int = 1024):
        self.A, self.B = A.tocsr(), B.tocsr()
        V = self.B.shape[1]
        if V > 2 * n_common:
            df = np.diff(self.B.tocsc().indptr)  # intros containing each n-gram
            common = np.sort(np.argsort(-df, kind="stable")[:n_common])
        else:
            common = np.arange(V)
        rare = np.setdiff1d(np.arange(V), common)
        self.common, self.rare = common, rare
        self.Bc = torch.from_numpy(self.B[:, common].toarray().astype(np.float32, copy=False))
        self.BrT = self.B[:, rare].T.tocsc() if len(rare) else None

    def scores(self, rows=slice(None), cols=slice(None)) -> torch.Tensor:
        """Dense float32 [len(rows) x len(cols)]; rows/cols: slices or index arrays."""
        a = self.A[rows]
        bc = self.Bc[torch.as_tensor(cols) if not isinstance(cols, slice) else cols]
        out = torch.from_numpy(a[:, self.common].toarray().astype(np.float32, copy=False)) @ bc.T
        if self.BrT is not None:
            rare = (a[:, self.rare] @ self.BrT[:, cols]).toarray().astype(np.float32, copy=False)
            out += torch.from_numpy(rare)
        return out


def lexical_cosine(A, B, idx0=None, idx1=None, chunk: int = 1024) -> torch.Tensor:
    """``A[idx0] @ B[idx1].T`` for L2-normalised sparse rows, as a dense float32
    tensor, in row chunks."""
    A = A if idx0 is None else A[np.asarray(idx0)]
    B = B if idx1 is None else B[np.asarray(idx1)]
    scorer = LexicalScorer(A, B)
    out = torch.empty(A.shape[0], B.shape[0])
    for s in range(0, A.shape[0], chunk):
        out[s : s + chunk] = scorer.scores(slice(s, s + chunk))
    return out


def set_starts(owner: np.ndarray, n: int) -> np.ndarray:
    """[n + 1] first element of each of n items (``owner`` is sorted, so an item's
    elements are contiguous)."""
    return np.searchsorted(owner, np.arange(n + 1))


def set_elements(starts: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For a set view whose item i owns elements ``starts[i]:starts[i+1]``: the
    elements of items ``idx`` (in that order) and, per element, its item's position
    in ``idx``."""
    idx = np.asarray(idx, dtype=np.int64)
    counts = starts[idx + 1] - starts[idx]
    local = np.repeat(np.arange(len(idx)), counts)
    # element j of the k-th item: starts[idx[k]] + (j - first element of item k)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return starts[idx][local] + offsets, local


class PooledScorer:
    """``score[i, j] = max over elements e of item i and f of item j of cos(e, f)``.

    Each side is a feature block: a *set* view (``values`` [T x D] with ``owner``
    [T], the item of each element: OCR lines of a poster, sentences of an intro)
    or a dense view (one element per item). An item without elements scores 0.
    The T0 x T1 element similarities are built for ``chunk`` items of rows at a
    time and max-reduced onto items with ``scatter_reduce``.
    """

    def __init__(self, a, b, chunk: int = 256):
        def side(block):
            x = torch.nn.functional.normalize(
                torch.as_tensor(np.asarray(block.values, dtype=np.float32)), dim=-1
            )
            n = len(block.valid)
            owner = (
                np.arange(n) if getattr(block, "owner", None) is None else np.asarray(block.owner)
            )
            return x, set_starts(owner, n), n

        self.x0, self.s0, self.n0 = side(a)
        self.x1, self.s1, self.n1 = side(b)
        self.chunk = chunk

    def _elements(self, x, starts, n, items):
        """Elements of ``items`` (slice or index array) and their position in ``items``."""
        idx = np.arange(n)[items]
        elems, local = set_elements(starts, idx)
        return x[elems], torch.as_tensor(local, dtype=torch.long), len(idx)

    def scores(self, rows=slice(None), cols=slice(None)) -> torch.Tensor:
        """Dense float32 [len(rows) x len(cols)]; rows/cols: slices or index arrays."""
        rows_idx = np.arange(self.n0)[rows]
        x1, l1, m = self._elements(self.x1, self.s1, self.n1, cols)
        out = torch.zeros(len(rows_idx), m)
        for c in range(0, len(rows_idx), self.chunk):
            x0, l0, n = self._elements(self.x0, self.s0, self.n0, rows_idx[c : c + self.chunk])
            if not len(x0) or not len(x1):
                continue
            sim = x0 @ x1.T  # [elements of these rows x elements of the columns]
            per_col = torch.full((len(x0), m), float("-inf")).scatter_reduce_(
                1, l1.expand(len(x0), -1), sim, "amax"
            )
            pooled = torch.full((n, m), float("-inf")).scatter_reduce_(
                0, l0[:, None].expand(-1, m), per_col, "amax"
            )
            out[c : c + n] = pooled.nan_to_num(neginf=0.0)  # an item without elements scores 0
        return out


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
