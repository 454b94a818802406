"""One view's features for N items (:class:`FeatureBlock`)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from gmatch.priors.pooled import set_elements, set_starts

__all__ = ["FeatureBlock"]


@dataclass
class FeatureBlock:
    """One view's features for N items; ``valid[i]`` is False where the view is
    empty (a poster with no text), so the model can use a learned vector.

    ``values``: [N x D] float32; a scipy CSR matrix for the sparse lexical views; for
    set views [T x D] for all elements, with ``owner`` [T] the item of each element
    (sorted). ``state``: the fitted encoder state (TF-IDF), saved with checkpoints.
    """

    spec: str
    values: np.ndarray
    valid: np.ndarray
    state: dict | None = None
    owner: np.ndarray | None = None

    @property
    def sparse(self) -> bool:
        return not isinstance(self.values, np.ndarray)

    @property
    def dim(self) -> int:
        return self.values.shape[1]

    def subset(self, idx) -> FeatureBlock:
        """The block of items ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.owner is None:
            return FeatureBlock(self.spec, self.values[idx], self.valid[idx], self.state)
        elems, owner = set_elements(set_starts(self.owner, len(self.valid)), idx)
        return FeatureBlock(self.spec, self.values[elems], self.valid[idx], self.state, owner)
