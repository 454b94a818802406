"""Training from cached features: episodes of training movies, early stopping, refit."""

from __future__ import annotations

import copy
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gmatch.config import Config, ConfigError
from gmatch.data import MovieSet, load_movielens, training_positions
from gmatch.evaluate import predict_dist
from gmatch.features import Features, load_features
from gmatch.finetune import build_towers, device_of, tail_features, tower_entries, tuned_features
from gmatch.io import atomic_torch_save
from gmatch.losses import total_loss
from gmatch.metrics import evaluate_distance
from gmatch.models import Ensemble, Matcher, build_matcher
from gmatch.threads import available_cores

__all__ = ["train", "TrainResult", "TrainStateError", "new_model", "seed_everything", "lr_factor"]

log = logging.getLogger(__name__)


class TrainStateError(ValueError):
    """A training state file that cannot be resumed; the message says what to do."""


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def new_model(conf: Config, feats: Features) -> Matcher | Ensemble:
    """A fresh matcher for these features' views (prior pairs resolved by spec name)."""
    n_genres = len(feats.genre_names) if conf.train.genre_weight > 0 else 0
    return build_matcher(
        conf.model, *feats.specs(), *feats.dims(), n_genres, conf.runtime, feats.dims(sets=True)
    )


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
        S = model.prior_logits(
            inputs["views0"],
            inputs["valid0"],
            inputs["views1"],
            inputs["valid1"],
            inputs["lexical"],
        )
    sym = torch.maximum(S, S.T)
    sym.fill_diagonal_(-math.inf)  # a movie is not its own negative
    k_eff = min(k, len(positions) - 1)
    idx = torch.topk(sym, k_eff, dim=1).indices.numpy()
    out = np.full((len(positions), k), -1, dtype=np.int64)
    out[:, :k_eff] = positions[idx]
    return out


@dataclass
class TrainResult:
    model: Matcher
    history: list[dict] = field(default_factory=list)
    best_step: int = 0
    best_val: float = float("nan")  # validation get_acc (mean of dims) at best_step
    val_idx: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    seconds: float = 0.0
    feats: Features | None = None  # with train.finetune: the features the model reads
    cv: dict | None = None  # with train.folds >= 2: fold_acc, fold_steps, cv_acc, cv_se


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


def _new_state(conf: Config, feats: Features, phase: Phase, towers=()) -> TrainState:
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


def _train_step(conf: Config, feats: Features, state: TrainState) -> float:
    """One optimiser step on the next episode; returns its loss."""
    train_conf = conf.train
    state.model.train()
    episode = next(state.stream)
    deep = train_conf.deep_supervision > 0 and conf.model.n_layers > 0
    inputs = feats.inputs(episode)
    rt = conf.runtime
    for t in state.towers:  # the tuned views of this episode, one augmented view per poster
        x = t(episode, True, device_of(conf), rt.tower_chunk, rt.grad_checkpoint)
        inputs.setdefault(f"tuned{t.side}", {})[t.index] = x
    pred = state.model(**inputs, all_layers=deep)
    loss = total_loss(pred, train_conf.loss, train_conf.deep_supervision, train_conf.sinkhorn_iters)
    if train_conf.genre_weight > 0:  # the episode holds training positions only
        y = torch.from_numpy(feats.genres[episode])
        bce = torch.nn.functional.binary_cross_entropy_with_logits
        loss["genre"] = (bce(pred["genre0"], y) + bce(pred["genre1"], y)) / 2
        loss["total"] = loss["total"] + train_conf.genre_weight * loss["genre"]
    state.opt.zero_grad(set_to_none=True)
    loss["total"].backward()
    params = [p for group in state.opt.param_groups for p in group["params"]]
    torch.nn.utils.clip_grad_norm_(params, train_conf.grad_clip)
    state.opt.step()
    state.sched.step()
    return loss["total"].item()


def _validate(conf: Config, feats: Features, state: TrainState, phase: Phase, row: dict) -> None:
    """Score the validation pairs (every movie an unlabeled node, as at test time)
    into ``row``; keep the best weights."""
    if state.towers:  # the tails on the plain (unaugmented) views
        feats = tail_features(
            feats, state.towers, phase.all_idx, device_of(conf), conf.runtime.tower_chunk
        )
    D = predict_dist(state.model, feats, phase.all_idx)
    m = evaluate_distance(D, subset=np.searchsorted(phase.all_idx, phase.val_pos))
    row.update(val_acc=m["acc_mean"], val_r1=m["poster_to_intro/R@1"])
    if row["val_acc"] > state.best:
        state.best, state.best_step, state.stale = row["val_acc"], row["step"], 0
        state.best_state = copy.deepcopy(state.model.state_dict())
        state.best_towers = state.tower_states()
    else:
        state.stale += 1


def _fit(
    conf: Config,
    feats: Features,
    phase: Phase,
    progress: bool,
    state_path: Path | None = None,
    towers=(),
):
    """Train one model (and the tails of ``towers``) for up to ``phase.steps`` steps;
    with ``state_path`` the full training state is saved atomically at every
    validation pass and, if the file exists for this phase, training resumes from it.
    Returns the state, at its best validation step when there is a validation slice."""
    train_conf = conf.train
    state = _new_state(conf, feats, phase, towers)
    if state_path is not None:
        state_path = Path(state_path).with_suffix(f".{phase.name}.pt")
        if state_path.exists():
            state.load(state_path, phase.name)
    validating = len(phase.val_pos) > 0
    bar = tqdm(total=phase.steps, initial=state.step, desc=phase.name, disable=not progress)
    losses = []
    for step in range(state.step + 1, phase.steps + 1):
        if (
            validating and state.stale >= train_conf.patience
        ):  # a resumed run that had already stopped
            break
        losses.append(_train_step(conf, feats, state))
        bar.update()
        state.step = step
        if step % train_conf.eval_every and step != phase.steps:
            continue
        row = {"step": step, "loss": float(np.mean(losses)), "lr": state.sched.get_last_lr()[0]}
        losses = []
        if validating:
            _validate(conf, feats, state, phase, row)
        state.history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "step"})
        if state_path is not None:
            state.save(state_path, phase.name)
        if validating and state.stale >= train_conf.patience:
            break
    bar.close()
    if state.best_state is not None:
        state.model.load_state_dict(state.best_state)
        state.load_towers(state.best_towers or [])
    if not validating:
        state.best = float("nan")
    return state


def train(
    conf: Config,
    ms: MovieSet | None = None,
    feats: Features | None = None,
    progress: bool = True,
    state_path: Path | None = None,
) -> TrainResult:
    """Train a matcher on the training pairs of ``ms`` (never on held-out pairs).

    A validation slice (``train.val_fraction`` of train.txt) picks the step;
    with ``train.refit`` the model is retrained on all training pairs for that
    many steps. With ``state_path`` training state is checkpointed at every
    validation pass and an existing state file is resumed from.
    """
    torch.set_num_threads(min(conf.runtime.threads, available_cores()))
    t0 = time.time()
    ms = ms if ms is not None else load_movielens(conf.data.root)
    feats = feats if feats is not None else load_features(ms, conf, progress)
    if conf.train.folds > 1:
        return _train_folds(conf, ms, feats, progress, state_path, t0)
    if conf.model.members > 1:
        if conf.train.finetune:
            raise ConfigError("train.finetune: an ensemble (model.members > 1) cannot tune towers")
        return _train_ensemble(conf, ms, feats, progress, state_path, t0)
    if len(ms.train_idx) < 16:
        raise ValueError(f"{ms.root}: need at least 16 training pairs in train.txt to train")
    train_pos, rng = training_positions(ms, conf.seed, conf.data.train_fraction)
    n_val = int(round(conf.train.val_fraction * len(train_pos)))
    val_pos = (
        np.sort(rng.choice(train_pos, n_val, replace=False)) if n_val >= 20 else np.array([], int)
    )
    fit_pos = np.setdiff1d(train_pos, val_pos)
    all_idx = np.arange(len(ms))
    towers = build_towers(conf, ms, feats, progress) if conf.train.finetune else []
    fit = Phase("fit", fit_pos, val_pos, conf.train.steps, conf.train.steps, all_idx)
    state = _fit(conf, feats, fit, progress, state_path, towers)
    history, best_step, best_val = state.history, state.best_step, state.best
    if conf.train.refit and len(val_pos):
        state = _refit(conf, feats, train_pos, best_step, all_idx, progress, state_path, towers)
        history += [{**r, "refit": True} for r in state.history]
    tuned = None
    if state.towers:  # the full tuned encoders give the features the checkpoint will read
        for t in state.towers:
            t.tail.cpu()
        entries = tower_entries(state.towers)
        tuned = tuned_features(feats, ms, entries, conf.data.cache_dir, progress)
    return TrainResult(
        state.model, history, best_step, best_val, val_pos, train_pos, time.time() - t0, tuned
    )


def _refit(conf, feats, train_pos, steps, all_idx, progress, state_path, towers=()):
    """Retrain on all training pairs for ``steps`` steps (no validation). "scaled": the
    refit's cosine reaches zero at its own last step, so it ends with a decayed learning
    rate; "fit": the fit phase's schedule (train.steps long), cut off at ``steps`` while
    the rate is still high."""
    horizon = steps if conf.train.refit_schedule == "scaled" else conf.train.steps
    log.info(
        "refit on all %d training pairs for %d steps (%s schedule)",
        len(train_pos),
        steps,
        conf.train.refit_schedule,
    )
    refit = Phase("refit", train_pos, np.array([], int), steps, horizon, all_idx)
    return _fit(conf, feats, refit, progress, state_path, towers)


def _train_folds(
    conf: Config, ms: MovieSet, feats: Features, progress: bool, state_path: Path | None, t0: float
) -> TrainResult:
    """K-fold selection (``train.folds``): fold model f trains on the other folds and
    early-stops on fold f (every movie an unlabeled node, as in any validation pass);
    its best fold score is its CV score. Returns the fold models averaged (``bag``) or
    one refit on all training pairs (``refit``), with ``cv`` filled in."""
    if conf.model.members > 1 or conf.train.finetune:
        raise ConfigError(
            f"train.folds={conf.train.folds} (k-fold selection, default 5) trains its own fold "
            "members; model.members > 1 and train.finetune train with the validation slice: "
            "add train.folds=1"
        )
    train_pos, _ = training_positions(ms, conf.seed, conf.data.train_fraction)
    folds = fold_split(train_pos, conf.train.folds, conf.seed)
    all_idx = np.arange(len(ms))
    models, history, accs, steps = [], [], [], []
    for f, val_pos in enumerate(folds):
        fit = Phase(
            "fit",
            np.setdiff1d(train_pos, val_pos),
            val_pos,
            conf.train.steps,
            conf.train.steps,
            all_idx,
        )
        path = (
            None
            if state_path is None
            else Path(state_path).with_name(f"{Path(state_path).name}-fold{f}")
        )
        log.info(
            "fold %d/%d: %d fit, %d validation pairs",
            f + 1,
            len(folds),
            len(fit.train_pos),
            len(val_pos),
        )
        state = _fit(conf, feats, fit, progress, path)
        models.append(state.model)
        accs.append(float(state.best))
        steps.append(int(state.best_step))
        history += [{**row, "fold": f} for row in state.history]
    cv = {
        "folds": len(folds),
        "fold_acc": accs,
        "fold_steps": steps,
        "cv_acc": float(np.mean(accs)),
        "cv_se": float(np.std(accs, ddof=1) / np.sqrt(len(accs))),
    }
    best_step = int(round(np.mean(steps)))
    if conf.train.fold_model == "refit":
        state = _refit(conf, feats, train_pos, best_step, all_idx, progress, state_path)
        history += [{**r, "refit": True} for r in state.history]
        model = state.model
    else:
        model = Ensemble(models, conf.model)
    return TrainResult(
        model, history, best_step, cv["cv_acc"], None, train_pos, time.time() - t0, None, cv
    )


def _train_ensemble(
    conf: Config, ms: MovieSet, feats: Features, progress: bool, state_path: Path | None, t0: float
) -> TrainResult:
    """``model.members`` matchers trained one after another, each exactly as a
    single run with seed ``seed + i`` (its own validation slice and refit)."""
    results = []
    for i in range(conf.model.members):
        member = copy.deepcopy(conf)
        member.model.members, member.seed = 1, conf.seed + i
        path = (
            None
            if state_path is None
            else Path(state_path).with_name(f"{Path(state_path).name}-m{i}")
        )
        log.info("ensemble member %d/%d (seed %d)", i + 1, conf.model.members, member.seed)
        results.append(train(member, ms, feats, progress, path))
    model = Ensemble([r.model for r in results], conf.model)
    history = [{**row, "member": i} for i, r in enumerate(results) for row in r.history]
    return TrainResult(
        model,
        history,
        int(round(np.mean([r.best_step for r in results]))),
        float(np.mean([r.best_val for r in results])),
        results[0].val_idx,
        results[0].train_idx,
        time.time() - t0,
    )
