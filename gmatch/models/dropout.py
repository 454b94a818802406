"""Dropout on frozen input features, with a mask that is cheap to draw on CPU."""

from __future__ import annotations

import torch
from torch import nn

from gmatch.config import ConfigError

__all__ = ["FeatureDropout"]


class FeatureDropout(nn.Module):
    """Dropout on the frozen input features: while training, each entry is kept with
    probability ``1 - p`` and scaled by ``1 / (1 - p)`` (inverted dropout, as
    ``nn.Dropout``); the identity in eval mode.

    The mask is drawn as ``rand >= p`` from torch's generator (seeded and checkpointed
    as before). ``nn.Dropout`` on CPU draws its Bernoulli mask element by element: with
    its backward ~16 ms for a [512 x 2300] input at p = 0.5 here, against ~4.6 ms for
    this mask, and 36 s of the default's 125 s of training (cProfile of ``make run``).
    Training the default: 108.9 s with ``nn.Dropout``, 90.7 s with this, in one run of
    benchmarks/TRAINING.md. Same distribution, another random stream: a seed's run
    differs from ``nn.Dropout``'s by seed noise (experiments §20)."""

    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p <= 1.0:
            raise ConfigError(f"model.feat_dropout must be in [0, 1], not {p}")
        self.p = float(p)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if self.p == 1.0:
            return x * 0.0
        mask = torch.rand(x.shape, dtype=x.dtype, device=x.device)  # one buffer:
        mask.ge_(self.p).mul_(1.0 / (1.0 - self.p))  # 0 or 1 / (1 - p), in place
        return x * mask

    def extra_repr(self) -> str:
        return f"p={self.p}"
