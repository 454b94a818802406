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

__all__ = ["MatchInput", "FeatureLayout"]


@dataclass(frozen=True)
class FeatureLayout:
    """The views a matcher is built for: per side, the node views' specs and widths, and
    the set views (local nodes) with theirs. ``Features.layout()`` gives it; a checkpoint
    stores it under the same keys (:meth:`to_checkpoint` / :meth:`from_checkpoint`)."""

    poster_views: tuple[str, ...]
    intro_views: tuple[str, ...]
    poster_dims: tuple[int, ...]
    intro_dims: tuple[int, ...]
    poster_sets: tuple[str, ...] = ()
    intro_sets: tuple[str, ...] = ()
    set_dims: tuple[tuple[int, ...], tuple[int, ...]] = ((), ())

    def to_checkpoint(self) -> dict:
        return {
            "poster_views": list(self.poster_views),
            "intro_views": list(self.intro_views),
            "poster_dims": list(self.poster_dims),
            "intro_dims": list(self.intro_dims),
            "poster_sets": list(self.poster_sets),
            "intro_sets": list(self.intro_sets),
            "set_dims": [list(d) for d in self.set_dims],
        }

    @classmethod
    def from_checkpoint(cls, ckpt: dict) -> FeatureLayout:
        """The layout a checkpoint was trained on (the set views only where it has any)."""
        set_dims = ckpt.get("set_dims", ([], []))
        return cls(
            tuple(ckpt["poster_views"]),
            tuple(ckpt["intro_views"]),
            tuple(ckpt["poster_dims"]),
            tuple(ckpt["intro_dims"]),
            tuple(ckpt.get("poster_sets", ())),
            tuple(ckpt.get("intro_sets", ())),
            (tuple(set_dims[0]), tuple(set_dims[1])),
        )


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
