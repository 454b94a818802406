"""Training episodes: random subsets of training movies (with hard negatives: the
movies the model confuses), and the k-fold split of the training positions.
"""

from __future__ import annotations

import json
import math

import numpy as np
import torch

from gmatch.config import ConfigError
from gmatch.features import Features
from gmatch.models.inputs import prior_args


def confusable(model, feats: Features, positions: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` training movies each of ``positions`` is most easily confused with
    under the model's zero-shot priors (a fixed part of the first stage: no training,
    training movies only): ``[P x k]`` positions, ranked by the larger of the two
    cross scores (poster i vs intro j, poster j vs intro i); -1 pads short rows."""
    if not len(model.prior_pairs) and not len(model.lexical_log_weight):
        raise ConfigError(
            "train.hard_negatives: neighbours come from the zero-shot priors, and "
            "model.prior is empty; set model.prior or train.hard_negatives=0"
        )
    inputs = feats.inputs(positions)
    with torch.no_grad():
        S = model.prior_logits(*prior_args(inputs))
    sym = torch.maximum(S, S.T)
    sym.fill_diagonal_(-math.inf)  # a movie is not its own negative
    k_eff = min(k, len(positions) - 1)
    idx = torch.topk(sym, k_eff, dim=1).indices.numpy()
    out = np.full((len(positions), k), -1, dtype=np.int64)
    out[:, :k_eff] = positions[idx]
    return out


def fold_split(positions: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """``folds`` disjoint sorted folds covering ``positions``, sizes within one of each
    other: a permutation seeded by ``seed`` (and a constant, so the folds are not the
    validation slice's draw), dealt round-robin. The same positions and seed give the
    same folds whatever their order."""
    if folds < 2 or folds > len(positions):
        raise ConfigError(f"train.folds={folds}: need 2 <= folds <= {len(positions)} positions")
    perm = np.random.default_rng([seed, 104729]).permutation(np.sort(positions))
    return [np.sort(perm[f::folds]) for f in range(folds)]


class EpisodeStream:
    """Endless episodes: shuffle the training positions, cut them into episodes
    whose sizes are drawn from ``sizes``, reshuffle when they run out.
    Its whole state is saved with a training checkpoint, so a resumed run
    sees exactly the episodes an uninterrupted one would.

    ``neighbours`` [P x g] (positions, ``-1`` = none; row k belongs to
    ``positions[k]``) and ``hard`` > 0: only ``(1 - hard) * size`` episode movies come
    from the shuffled order (the anchors); the rest are the anchors' neighbours (the
    training movies they are most easily confused with), taken round-robin, each
    once — the episode then holds the confusable movies a test set of thousands has."""

    def __init__(
        self,
        seed: int,
        positions: np.ndarray,
        sizes: list[int],
        neighbours: np.ndarray | None = None,
        hard: float = 0.0,
    ):
        self.rng = np.random.default_rng(seed)
        self.positions, self.sizes = positions, sizes
        self.order, self.start = self.rng.permutation(positions), 0
        self.hard = hard if neighbours is not None else 0.0
        if self.hard:
            row = {int(p): k for k, p in enumerate(positions)}
            self.neighbours = {int(p): neighbours[row[int(p)]] for p in positions}

    def __next__(self) -> np.ndarray:
        if self.start + 8 > len(self.order):  # a tiny tail would give a trivial loss
            self.order, self.start = self.rng.permutation(self.positions), 0
        b = int(self.rng.choice(self.sizes))
        n_anchor = b - int(self.hard * b)
        out = self.order[self.start : self.start + n_anchor]
        self.start += n_anchor
        return self._fill(out, b) if self.hard else out

    def _fill(self, anchors: np.ndarray, size: int) -> np.ndarray:
        """Anchors, then their nearest neighbours round-robin until ``size`` movies."""
        chosen, seen = list(anchors), set(int(a) for a in anchors)
        table = np.stack([self.neighbours[int(a)] for a in anchors])  # [A x g]
        for rank in range(table.shape[1]):
            for p in table[:, rank]:
                if len(chosen) >= size:
                    return np.array(chosen, dtype=anchors.dtype)
                if p >= 0 and int(p) not in seen:
                    seen.add(int(p))
                    chosen.append(int(p))
        return np.array(chosen, dtype=anchors.dtype)

    def state_dict(self) -> dict:
        return {
            "rng": json.dumps(self.rng.bit_generator.state),
            "order": torch.from_numpy(self.order),
            "start": self.start,
        }

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.order, self.start = state["order"].numpy(), int(state["start"])
