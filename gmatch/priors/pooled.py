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
        one_each = len(l1) == m and bool((l1 == torch.arange(m)).all())
        out = torch.zeros(len(rows_idx), m)
        for c in range(0, len(rows_idx), self.chunk):
            x0, l0, n = self._elements(self.x0, self.s0, self.n0, rows_idx[c : c + self.chunk])
            if not len(x0) or not len(x1):
                continue
            sim = x0 @ x1.T  # [elements of these rows x elements of the columns]
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
