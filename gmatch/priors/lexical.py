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
        self.BrT = self.B[:, rare].T.tocsc() if len(rare) else None
        self._Bc = None

    @property
    def Bc(self) -> torch.Tensor:
        """The intros' common n-grams, dense [n1 x n_common] (built on first use)."""
        if self._Bc is None:
            self._Bc = self._common(self.B)
        return self._Bc

    def _common(self, M) -> torch.Tensor:
        return torch.from_numpy(M[:, self.common].toarray().astype(np.float32, copy=False))

    def common_factors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(a, b)``: dense [n0 x n_common] and [n1 x n_common] with ``a[rows] @ b[cols].T``
        the common n-grams' share of :meth:`scores` (:meth:`rare_scores` is the rest).
        Built afresh by :meth:`write_common`, not kept: a caller that only needs these never
        holds two copies (the streamed path writes them into its fused product instead)."""
        a = torch.empty(self.A.shape[0], len(self.common))
        b = torch.empty(self.B.shape[0], len(self.common))
        self.write_common(a, b)
        return a, b

    def write_common(self, out0, out1, scale=None, rows: int = 8192) -> None:
        """:meth:`common_factors` written into ``out0`` [n0 x n_common] (times ``scale``)
        and ``out1`` [n1 x n_common], ``rows`` rows at a time: bitwise the same values,
        without a dense n x n_common transient per side; a side whose ``out`` is None is
        skipped (:meth:`common_rows` gives poster rows on demand)."""
        for M, out, w in ((self.A, out0, scale), (self.B, out1, None)):
            if out is None:
                continue
            if M is self.B and self._Bc is not None:
                out.copy_(self._Bc)
                continue
            for s in range(0, M.shape[0], rows):
                part = out[s : s + rows]
                part.copy_(self._common(M[s : s + rows]))
                if w is not None:
                    part.mul_(w)

    def common_rows(self, s: int, e: int) -> torch.Tensor:
        """Rows ``s..e`` of :meth:`common_factors`'s poster side (bitwise :meth:`write_common`'s
        for a chunk of ``rows`` starting at ``s``)."""
        return self._common(self.A[s:e])

    def rare_scores(self, rows=slice(None), cols=slice(None)) -> torch.Tensor | None:
        """The rare n-grams' share of :meth:`scores` (None when every n-gram is common)."""
        return self._rare(self.A[rows], cols)

    def _rare(self, a, cols) -> torch.Tensor | None:
        if self.BrT is None:
            return None
        part = a[:, self.rare] @ self.BrT[:, cols]
        return torch.from_numpy(part.toarray().astype(np.float32, copy=False))

    def scores(self, rows=slice(None), cols=slice(None)) -> torch.Tensor:
        """Dense float32 [len(rows) x len(cols)]; rows/cols: slices or index arrays."""
        a = self.A[rows]
        bc = self.Bc[torch.as_tensor(cols) if not isinstance(cols, slice) else cols]
        out = torch.from_numpy(a[:, self.common].toarray().astype(np.float32, copy=False)) @ bc.T
        rare = self._rare(a, cols)
        if rare is not None:
            out += rare
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
