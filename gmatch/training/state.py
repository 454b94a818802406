"""Training state: the optimiser, schedule and best-so-far of one phase, saved each
validation so a killed run resumes where it stopped.
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gmatch.config import Config
from gmatch.features import Features
from gmatch.finetune import device_of
from gmatch.io import atomic_torch_save
from gmatch.models import Ensemble, Matcher, build_matcher
from gmatch.training.episodes import EpisodeStream, confusable

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_model(conf: Config, feats: Features) -> Matcher | Ensemble:
    """A fresh matcher for these features' views (prior pairs resolved by spec name)."""
    n_genres = len(feats.genre_names) if conf.train.genre_weight > 0 else 0
    return build_matcher(conf.model, feats.layout, n_genres, conf.runtime)


class TrainStateError(ValueError):
    """A training state file that cannot be resumed; the message says what to do."""


def lr_factor(step: int, warmup: int, horizon: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine that reaches 0 at ``horizon``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, horizon - warmup))))


@dataclass
class Phase:
    """One training phase: ``fit`` (with a validation slice, early stopping) or
    ``refit`` (all training pairs, a fixed number of steps)."""

    name: str
    train_pos: np.ndarray
    val_pos: np.ndarray  # empty: no validation, no early stopping
    steps: int
    horizon: int  # the cosine learning rate reaches zero here
    all_idx: np.ndarray  # validation scores every movie as an unlabeled node


@dataclass
class TrainState:
    """Everything a phase needs to continue exactly where it stopped."""

    model: torch.nn.Module
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LambdaLR
    stream: EpisodeStream
    step: int = 0  # last finished step
    history: list = field(default_factory=list)
    best: float = -1.0  # best validation get_acc so far
    best_step: int = 0
    best_state: dict | None = None  # weights at best_step
    stale: int = 0  # validation passes since the last gain
    towers: list = field(default_factory=list)  # fine-tuned towers (gmatch.finetune.Tower)
    best_towers: list | None = None  # their tuned weights at best_step

    def tower_states(self) -> list[dict]:
        return [t.tail.tuned_state() for t in self.towers]

    def load_towers(self, states: list[dict]) -> None:
        for t, state in zip(self.towers, states):
            t.tail.net.load_state_dict(state, strict=False)

    def save(self, path: Path, phase: str) -> None:
        atomic_torch_save(
            path,
            {
                "phase": phase,
                "step": self.step,
                "model": self.model.state_dict(),
                "opt": self.opt.state_dict(),
                "sched": self.sched.state_dict(),
                "stream": self.stream.state_dict(),
                "torch_rng": torch.get_rng_state(),
                "history": self.history,
                "best": self.best,
                "best_step": self.best_step,
                "bad": self.stale,
                "best_state": self.best_state,
                "towers": self.tower_states(),
                "best_towers": self.best_towers,
            },
        )

    def load(self, path: Path, phase: str) -> None:
        """Resume from ``path`` if it holds this phase (a state of another phase is left alone)."""
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved["phase"] == phase:
                self.model.load_state_dict(saved["model"])
                if len(saved.get("towers", [])) != len(self.towers):
                    raise ValueError("fine-tuned towers differ")
                self.load_towers(saved.get("towers", []))
        except Exception as e:  # noqa: BLE001 - truncated, not a torch file, or another model
            raise TrainStateError(
                f"{path}: training state is damaged or from another model ({type(e).__name__}); "
                "delete it or pass --overwrite to start the run again"
            ) from e
        if saved["phase"] != phase:
            return
        self.opt.load_state_dict(saved["opt"])
        self.sched.load_state_dict(saved["sched"])
        self.stream.load_state_dict(saved["stream"])
        torch.set_rng_state(saved["torch_rng"])
        self.step, self.history, self.best = saved["step"], saved["history"], saved["best"]
        self.best_step, self.stale, self.best_state = (
            saved["best_step"],
            saved["bad"],
            saved["best_state"],
        )
        self.best_towers = saved.get("best_towers")
        log.info("resumed %s from step %d (%s)", phase, self.step, path)


def new_state(conf: Config, feats: Features, phase: Phase, towers=()) -> TrainState:
    train_conf = conf.train
    warmup = min(train_conf.warmup, max(1, phase.horizon // 3))
    seed_everything(conf.seed)
    model = new_model(conf, feats)
    towers = [t.fresh() for t in towers]  # every phase starts from the pretrained tails
    device = device_of(conf) if towers else None
    groups = [{"params": list(model.parameters())}]
    for t in towers:
        t.tail.to(device)
        tuned = [p for p in t.tail.parameters() if p.requires_grad]
        groups.append({"params": tuned, "lr": train_conf.finetune_lr})
    opt = torch.optim.AdamW(groups, lr=train_conf.lr, weight_decay=train_conf.weight_decay)
    sizes = [min(s, len(phase.train_pos)) for s in train_conf.episode_sizes]
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda step: lr_factor(step, warmup, phase.horizon)
    )
    neighbours = None
    if train_conf.hard_negatives > 0:  # from the phase's training movies only
        neighbours = confusable(model, feats, phase.train_pos, train_conf.hard_pool)
    return TrainState(
        model,
        opt,
        sched,
        EpisodeStream(conf.seed, phase.train_pos, sizes, neighbours, train_conf.hard_negatives),
        best_step=phase.steps,
        towers=towers,
    )
