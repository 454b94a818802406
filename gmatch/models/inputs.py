"""The matcher's input contract: what :class:`gmatch.models.Matcher` reads for N posters
x M intros, one declared field per input (LightGlue's ``required_data_keys`` idea).

:meth:`gmatch.features.Features.inputs` builds it. It is a mapping too, so
``model(**inputs)`` calls the model and ``inputs["views0"]`` reads a field; its keys are
exactly the model's input parameters (tested).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields

import torch

__all__ = ["MatchInput"]


@dataclass
class MatchInput(Mapping):
    """Per side (0 posters, 1 intros):

    - ``views*`` / ``valid*``: per node view, features [N x D_v] and bool [N] (False =
      empty view: the node encoder uses a learned vector);
    - ``tuned*``: ``{view index: features}`` from fine-tuned towers, read by the node
      encoders instead of the frozen view (the priors keep the frozen one); None = none;
    - ``sets*``: per set view, ``(values [T x D], batch [T])``, the local nodes of each
      movie's graph (``batch[t]``: the position of element t's movie).

    ``lexical``: per precomputed prior pair (lexical or pooled), its scores [N x M].
    """

    views0: list[torch.Tensor]
    valid0: list[torch.Tensor]
    views1: list[torch.Tensor]
    valid1: list[torch.Tensor]
    lexical: list[torch.Tensor] = field(default_factory=list)
    sets0: list = field(default_factory=list)
    sets1: list = field(default_factory=list)
    tuned0: dict[int, torch.Tensor] | None = None
    tuned1: dict[int, torch.Tensor] | None = None

    def set_tuned(self, side: int, index: int, x: torch.Tensor) -> None:
        """Node view ``index`` of ``side`` read through a fine-tuned tower: ``x``."""
        name = ("tuned0", "tuned1")[side]
        setattr(self, name, {**(getattr(self, name) or {}), index: x})

    def prior_args(self) -> tuple:
        """The arguments of ``model.prior_logits``: the zero-shot priors of these pairs."""
        return self.views0, self.valid0, self.views1, self.valid1, self.lexical

    def _present(self) -> list[str]:
        """The fields a call passes: views, validity and prior scores always; fine-tuned
        views and local nodes where there are any."""
        always = ("views0", "valid0", "views1", "valid1", "lexical")
        return [f.name for f in fields(self) if f.name in always or getattr(self, f.name)]

    def __getitem__(self, key: str):
        if key not in self._present():
            raise KeyError(key)
        return getattr(self, key)

    def __iter__(self):
        return iter(self._present())

    def __len__(self) -> int:
        return len(self._present())
