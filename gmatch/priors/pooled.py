"""Max-pooled cosines of sets of local embeddings (OCR lines, intro sentences, grid
cells): the prior of a set view pair (``ocrlines:mpnet=sents:mpnet``).

A set view holds ``values`` [T x D] for all elements and ``owner`` [T] (sorted: the item
of each element), so an item's elements are contiguous.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["PooledScorer", "set_starts", "set_elements", "offsets_within"]


def offsets_within(counts: np.ndarray) -> np.ndarray:
    """For groups of ``counts[g]`` consecutive elements: each element's position within
    its group (``[0, 1, 0, 1, 2]`` for counts ``[2, 3]``)."""
    counts = np.asarray(counts, dtype=np.int64)
    return np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)


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
    return starts[idx][local] + offsets_within(counts), local


class PooledScorer:
    """``score[i, j] = max over elements e of item i and f of item j of cos(e, f)``.

    Each side is a feature block: a *set* view (``values`` [T x D] with ``owner``
    [T], the item of each element: OCR lines of a poster, sentences of an intro)
    or a dense view (one element per item). An item without elements scores 0.
    The T0 x T1 element similarities are built for at most ``chunk`` items of rows at a
    time, fewer when the block would exceed ``budget`` floats (large N), and max-reduced
    onto items with ``scatter_reduce``.
    """

    def __init__(self, a, b, chunk: int = 256, budget: int = 2**26):
        def side(block):
            x = torch.as_tensor(np.asarray(block.values, dtype=np.float32))  # shared, no copy
            n = len(block.valid)
            owner = (
                np.arange(n) if getattr(block, "owner", None) is None else np.asarray(block.owner)
            )
            return x, set_starts(owner, n), n

        # Both sides: the block's values as they are and their norms; a chunk's elements
        # are divided by them when gathered, bitwise F.normalize's result without a
        # normalised copy of every element (OCR lines: the largest view in large-N mode).
        self.x0, self.s0, self.n0 = side(a)
        self.norm0 = self.x0.norm(2, -1, keepdim=True).clamp_min(1e-12)
        self.x1, self.s1, self.n1 = side(b)
        self.norm1 = self.x1.norm(2, -1, keepdim=True).clamp_min(1e-12)
        self.chunk, self.budget = chunk, budget
        # > 0: each product's element rows padded with zeros to a multiple of this, so a
        # matmul library that keeps one kernel per shape (oneDNN's fast fp32 mode: ~3 MB
        # each) sees a few shapes, not one per chunk; large-N mode sets it.
        self.pad_rows = 0

    def _elements(self, x, starts, n, items, norm=None):
        """Elements of ``items`` (slice or index array), unit-norm, and their position in
        ``items``; ``norm``: the norms of ``x``'s rows when ``x`` is not normalised yet."""
        if isinstance(items, slice) and items == slice(None) and norm is None:
            local = np.repeat(np.arange(n), np.diff(starts))  # all items: no gathered copy
            return x, torch.as_tensor(local, dtype=torch.long), n
        idx = np.arange(n)[items]
        elems, local = set_elements(starts, idx)
        x = x[elems] if norm is None else x[elems] / norm[elems].expand(-1, x.shape[1])
        return x, torch.as_tensor(local, dtype=torch.long), len(idx)

    def scores(self, rows=slice(None), cols=slice(None)) -> torch.Tensor:
        """Dense float32 [len(rows) x len(cols)]; rows/cols: slices or index arrays."""
        rows_idx = np.arange(self.n0)[rows]
        x1, l1, m = self._elements(self.x1, self.s1, self.n1, cols, self.norm1)
        one_each = len(l1) == m and bool((l1 == torch.arange(m)).all())
        out = torch.zeros(len(rows_idx), m)
        per_row = max(1.0, len(self.x0) / max(self.n0, 1))  # elements per row item, on average
        step = max(1, min(self.chunk, int(self.budget / (max(len(x1), 1) * per_row))))
        for c in range(0, len(rows_idx), step):
            x0, l0, n = self._elements(
                self.x0, self.s0, self.n0, rows_idx[c : c + step], self.norm0
            )
            if not len(x0) or not len(x1):
                continue
            sim = _padded(x0, self.pad_rows) @ x1.T  # [elements x elements of the columns]
            sim = sim[: len(x0)]
            per_col = sim  # one element per column item (a dense view): nothing to pool
            if not one_each:
                per_col = torch.full((len(x0), m), float("-inf")).scatter_reduce_(
                    1, l1.expand(len(x0), -1), sim, "amax"
                )
            pooled = torch.full((n, m), float("-inf")).scatter_reduce_(
                0, l0[:, None].expand(-1, m), per_col, "amax"
            )
            out[c : c + n] = pooled.nan_to_num(neginf=0.0)  # an item without elements scores 0
        return out


def _padded(x: torch.Tensor, multiple: int) -> torch.Tensor:
    """``x`` with zero rows appended up to a multiple of ``multiple`` rows (0: as it is)."""
    if not multiple or not len(x) % multiple:
        return x
    return torch.cat([x, x.new_zeros(multiple - len(x) % multiple, x.shape[1])])
