"""The features of one MovieSet as the model reads them (:class:`Features`), and how
a config's views are extracted into it (:func:`load_features`)."""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch

from gmatch.config import Config, ConfigError
from gmatch.data import MovieSet, training_positions
from gmatch.encoders.ocr import OCRConfig
from gmatch.encoders.registry import View
from gmatch.features.blocks import FeatureBlock
from gmatch.features.reading import ocr_config
from gmatch.features.views import extract
from gmatch.models.inputs import TUNED, FeatureLayout, MatchInput
from gmatch.priors import PriorScorer, as_index, precomputed_pairs

__all__ = ["Features", "load_features", "extract_features", "genre_targets"]

_SAME = object()  # Features.inputs: intros default to the posters' movies


@dataclass
class Features:
    """Tensors of all views of both sides for one MovieSet. A side is 0 (posters) or
    1 (intros) wherever a method takes one.

    ``poster`` / ``intro``: the dense views the node encoders read.
    ``prior_blocks``: (poster block, intro block) of each precomputed prior pair: sparse
    lexical views (``ocr:chars=text:chars``) and set views (``ocrlines:mpnet=text:mpnet``),
    which enter the model only as prior scores (:mod:`gmatch.priors`, served by ``priors``).
    ``poster_sets`` / ``intro_sets``: set views whose elements are the local nodes of
    each movie's graph (:mod:`gmatch.models.local`).
    ``tuned``: ``(side, view index) -> block`` of node views read through fine-tuned
    towers (the priors keep the frozen blocks); ``finetune``: their checkpoint entries.
    """

    poster: list[FeatureBlock]
    intro: list[FeatureBlock]
    prior_blocks: list[tuple[FeatureBlock, FeatureBlock]] = field(default_factory=list)
    genres: np.ndarray | None = None  # [N x G] multi-hot; G = genres of the training movies
    genre_names: list[str] = field(default_factory=list)
    poster_sets: list[FeatureBlock] = field(default_factory=list)
    intro_sets: list[FeatureBlock] = field(default_factory=list)
    tuned: dict = field(default_factory=dict)
    finetune: list = field(default_factory=list)
    priors: PriorScorer = field(init=False, repr=False, compare=False)
    layout: FeatureLayout = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        """The prior scorer and the layout (specs and widths a matcher is built for)."""
        self.priors = PriorScorer(self.prior_blocks)
        nodes, sets = (self.poster, self.intro), (self.poster_sets, self.intro_sets)
        specs = [_specs(b) for b in nodes + sets]
        self.layout = FeatureLayout(
            *specs[:2], *map(_dims, nodes), *specs[2:], tuple(map(_dims, sets))
        )

    def __len__(self) -> int:
        """The number of movies (every block has a ``valid`` flag per movie)."""
        return len(self.poster[0].valid)

    def nodes(self, side: int) -> list[FeatureBlock]:
        return self.intro if side else self.poster

    def sets(self, side: int) -> list[FeatureBlock]:
        return self.intro_sets if side else self.poster_sets

    def checkpoint_entries(self) -> dict:
        """What a checkpoint stores of them: layout, fitted encoder states, fine-tuning."""
        return {
            **self.layout.to_checkpoint(),
            "encoder_states": self.states(),
            "finetune": self.finetune,
        }

    def states(self) -> dict:
        """Fitted encoder states by spec (saved with checkpoints)."""
        blocks = self.poster + self.intro + [b for pair in self.prior_blocks for b in pair]
        return {b.spec: b.state for b in blocks if b.state is not None}

    def tensors(self, idx=None, side: int = 0):
        """Per node view of ``side``: features and validity of movies ``idx`` (None = all)."""
        sel = as_index(idx)
        blocks = self.nodes(side)
        views = [torch.from_numpy(b.values)[sel] for b in blocks]
        valid = [torch.from_numpy(b.valid)[sel] for b in blocks]
        return views, valid

    def tuned_views(self, idx=None, side: int = 0) -> dict[int, torch.Tensor]:
        """``{view index: features}`` of the fine-tuned node views of one side."""
        sel = as_index(idx)
        return {j: torch.from_numpy(b.values)[sel] for (s, j), b in self.tuned.items() if s == side}

    def local_sets(self, idx=None, side: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The local-node elements of movies ``idx`` (None = all): per set view,
        ``(values [T x D], batch [T])`` with ``batch`` the position in ``idx`` of each
        element's movie (the layout of a PyTorch Geometric batch)."""
        out = []
        for b in self.sets(side):
            b = b if idx is None else b.subset(idx)
            values = torch.from_numpy(np.ascontiguousarray(b.values, dtype=np.float32))
            out.append((values, torch.from_numpy(b.owner).long()))
        return out

    def inputs(self, idx0=None, idx1=_SAME) -> MatchInput:
        """Model inputs for posters ``idx0`` and intros ``idx1`` (default: the same
        movies; None = all): ``model(**feats.inputs(idx))``."""
        idx1 = idx0 if idx1 is _SAME else idx1
        (v0, m0), (v1, m1) = self.tensors(idx0, 0), self.tensors(idx1, 1)
        lexical = self.priors.full(idx0, idx1)
        out = MatchInput(views0=v0, valid0=m0, views1=v1, valid1=m1, lexical=lexical)
        for side, idx in ((0, idx0), (1, idx1)):
            tuned = self.tuned_views(idx, side)
            if tuned:
                out[TUNED[side]] = tuned
        if self.poster_sets or self.intro_sets:
            out["sets0"], out["sets1"] = self.local_sets(idx0, 0), self.local_sets(idx1, 1)
        return out

    def with_tuned(self, blocks: dict, finetune: list | None = None) -> Features:
        """These features with node views ``blocks`` (``(side, index) -> block``) read
        through fine-tuned towers; frozen views and kept prior scores are shared."""
        out = copy.copy(self)
        out.tuned = {**self.tuned, **blocks}
        out.finetune = self.finetune if finetune is None else finetune
        return out

    def subset(self, idx) -> Features:
        def sub(blocks):
            return [b.subset(idx) for b in blocks]

        return Features(
            sub(self.poster),
            sub(self.intro),
            [(a.subset(idx), b.subset(idx)) for a, b in self.prior_blocks],
            None if self.genres is None else self.genres[idx],
            self.genre_names,
            sub(self.poster_sets),
            sub(self.intro_sets),
            {k: b.subset(idx) for k, b in self.tuned.items()},
            self.finetune,
        )


def _specs(blocks) -> tuple[str, ...]:
    return tuple(b.spec for b in blocks)


def _dims(blocks) -> tuple[int, ...]:
    return tuple(b.dim for b in blocks)


def check_views(poster_specs, intro_specs, poster_sets=(), intro_sets=()) -> None:
    """A ConfigError / ValueError naming the fix for a view in the wrong place."""
    for spec in list(poster_specs) + list(intro_specs):
        if View.parse(spec).prior_only:
            a, b = ("", spec) if spec in intro_specs else (spec, "")
            raise ValueError(
                f"{spec} is a sparse lexical or set view: it cannot be a node feature; "
                f"name it as a prior pair instead, e.g. model.prior=[...,{a or 'ocr:chars'}="
                f"{b or 'text:chars'}]"
            )
    for spec, key in [(s, "data.poster_sets") for s in poster_sets] + [
        (s, "data.intro_sets") for s in intro_sets
    ]:
        if not View.parse(spec).is_set:
            raise ConfigError(
                f"{key}: {spec} is not a set view (ocrlines:<encoder>, sents:<encoder>, "
                "regions:efficientnet_lite0)"
            )


def genre_targets(ms: MovieSet) -> tuple[np.ndarray, list[str]]:
    """Multi-hot genre targets [N x G] of the auxiliary loss and their names: the
    vocabulary comes from training movies (only their rows are ever used as targets)."""
    names = sorted({g for i in ms.train_idx for g in ms.genres[i]})
    col = {g: k for k, g in enumerate(names)}
    genres = np.zeros((len(ms), len(names)), dtype=np.float32)
    for i, gs in enumerate(ms.genres):
        for g in gs:
            if g in col:
                genres[i, col[g]] = 1
    return genres, names


def extract_features(
    ms: MovieSet,
    poster_specs,
    intro_specs,
    cache_dir,
    progress=True,
    states: dict | None = None,
    prior: list[str] = (),
    memo: dict | None = None,
    poster_sets: list[str] = (),
    intro_sets: list[str] = (),
    ocr: OCRConfig | None = None,
) -> Features:
    """Extract (or read from the cache) every view of both sides; ``states``
    maps a spec to a fitted encoder state (a checkpoint's TF-IDF); the
    precomputed prior pairs named in ``prior`` are extracted too. ``memo`` (a dict the
    caller keeps, e.g. over a sweep on one data set) reuses blocks by spec (and
    OCR settings); ``ocr``: the OCR settings of poster-text views."""
    states = states or {}
    check_views(poster_specs, intro_specs, poster_sets, intro_sets)

    def get(s):
        if memo is None or states.get(s) is not None:
            return extract(ms, s, cache_dir, progress, tfidf_state=states.get(s), ocr=ocr)
        key = (str(ms.root), len(ms), s, (ocr or OCRConfig()).key())
        if key not in memo:
            memo[key] = extract(ms, s, cache_dir, progress, ocr=ocr)
        return memo[key]

    prior_blocks = [(get(a), get(b)) for a, b, _ in precomputed_pairs(prior)]
    genres, names = genre_targets(ms)
    return Features(
        [get(s) for s in poster_specs],
        [get(s) for s in intro_specs],
        prior_blocks,
        genres,
        names,
        [get(s) for s in poster_sets],
        [get(s) for s in intro_sets],
    )


def load_features(
    ms: MovieSet, conf: Config, progress: bool = True, memo: dict | None = None
) -> Features:
    """Features of ``ms`` for ``conf``; text statistics (TF-IDF, character n-grams)
    and the genre vocabulary are fitted on the intros the run trains on only."""
    d = conf.data
    if d.train_fraction < 1:
        ms = dataclasses.replace(
            ms, train_idx=training_positions(ms, conf.seed, d.train_fraction)[0]
        )
        memo = None  # blocks fitted on another subset must not be shared
    return extract_features(
        ms,
        d.poster_views,
        d.intro_views,
        d.cache_dir,
        progress,
        prior=conf.model.prior,
        memo=memo,
        poster_sets=d.poster_sets,
        intro_sets=d.intro_sets,
        ocr=ocr_config(d),
    )
