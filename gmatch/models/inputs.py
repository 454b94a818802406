"""The matcher's input contract: what :class:`gmatch.models.Matcher` reads for N posters
x M intros, one declared field per input (LightGlue's ``required_data_keys`` idea).

:meth:`gmatch.features.Features.inputs` builds it: a typed dict, so ``model(**inputs)``
calls the model; its keys are exactly the model's input parameters (tested).
"""

from dataclasses import dataclass
from typing import NotRequired, TypedDict

import torch

__all__ = ["MatchInput", "FeatureLayout", "TUNED", "set_tuned", "prior_args"]


@dataclass(frozen=True)
class FeatureLayout:
    """The views a matcher is built for: per side, the node views' specs and widths, and
    the set views (local nodes) with theirs. ``Features.layout`` gives it; a checkpoint
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
    def from_checkpoint(cls, ckpt: dict) -> "FeatureLayout":
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


class MatchInput(TypedDict):
    """Per side (0 posters, 1 intros):

    - ``views*`` / ``valid*``: per node view, features [N x D_v] and bool [N] (False =
      empty view: the node encoder uses a learned vector);
    - ``tuned*`` (only where a tower is fine-tuned): ``{view index: features}`` read by
      the node encoders instead of the frozen view (the priors keep the frozen one);
    - ``sets*`` (only with local nodes): per set view, ``(values [T x D], batch [T])``,
      the local nodes of each movie's graph (``batch[t]``: the position of t's movie).

    ``lexical``: per precomputed prior pair (lexical or pooled), its scores [N x M].
    """

    views0: list[torch.Tensor]
    valid0: list[torch.Tensor]
    views1: list[torch.Tensor]
    valid1: list[torch.Tensor]
    lexical: list[torch.Tensor]
    sets0: NotRequired[list]
    sets1: NotRequired[list]
    tuned0: NotRequired[dict[int, torch.Tensor]]
    tuned1: NotRequired[dict[int, torch.Tensor]]


TUNED = ("tuned0", "tuned1")  # the fine-tuned views' key of side 0 / 1


def set_tuned(inputs: MatchInput, side: int, index: int, x: torch.Tensor) -> None:
    """Node view ``index`` of ``side`` read through a fine-tuned tower: ``x``."""
    inputs.setdefault(TUNED[side], {})[index] = x


def prior_args(inputs: MatchInput) -> tuple:
    """The arguments of ``model.prior_logits``: the zero-shot priors of these pairs."""
    return inputs["views0"], inputs["valid0"], inputs["views1"], inputs["valid1"], inputs["lexical"]
