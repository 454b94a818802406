"""Character n-gram cosines of the sparse lexical views (``ocr:chars=text:chars``).

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

__all__ = ["LexicalScorer", "lexical_cosine"]


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
