"""The training loop: phases of episodes with early stopping on a validation slice or a
fold, the refit on all training pairs, fold bags and seed ensembles.
"""

from __future__ import annotations

import copy
import io
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
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
from gmatch.losses import total_loss
from gmatch.metrics import evaluate_distance
from gmatch.models import Ensemble, Matcher, independent_pairs
from gmatch.models.inputs import set_tuned
from gmatch.threads import available_cores, die_with_parent
from gmatch.training.episodes import fold_split
from gmatch.training.state import Phase, TrainState, new_state

log = logging.getLogger(__name__)


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
        set_tuned(inputs, t.side, t.index, x)
    pred = state.model(**inputs, all_layers=deep)
    genres = None  # the episode holds training positions only
    if train_conf.genre_weight > 0:
        genres = torch.from_numpy(feats.genres[episode])
    loss = total_loss(
        pred,
        train_conf.loss,
        train_conf.deep_supervision,
        train_conf.sinkhorn_iters,
        genres,
        train_conf.genre_weight,
    )
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
    if not state.towers and independent_pairs(state.model):
        # each pair's score depends on its two movies alone: the validation movies scored
        # among themselves are the full forward's slice, at a fraction of its cost
        m = evaluate_distance(predict_dist(state.model, feats, phase.val_pos))
    else:
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
    state = new_state(conf, feats, phase, towers)
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
        state = refit(conf, feats, train_pos, best_step, progress, state_path, towers)
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


def refit(
    conf: Config,
    feats: Features,
    train_pos: np.ndarray,
    steps: int,
    progress: bool = False,
    state_path: Path | None = None,
    towers=(),
) -> TrainState:
    """Retrain on the pairs ``train_pos`` for ``steps`` steps (no validation; every movie
    of ``feats`` an unlabeled node); returns the trained state. "scaled": the
    refit's cosine reaches zero at its own last step, so it ends with a decayed learning
    rate; "fit": the fit phase's schedule (train.steps long), cut off at ``steps`` while
    the rate is still high."""
    log.info(
        "refit on all %d training pairs for %d steps (%s schedule)",
        len(train_pos),
        steps,
        conf.train.refit_schedule,
    )
    phase = refit_phase(conf, train_pos, steps, len(feats))
    return _fit(conf, feats, phase, progress, state_path, towers)


def refit_phase(conf: Config, train_pos: np.ndarray, steps: int, n_movies: int) -> Phase:
    """The refit's phase: ``steps`` steps on ``train_pos``, no validation, every one of
    the ``n_movies`` movies an unlabeled node (the schedule: :func:`refit`)."""
    horizon = steps if conf.train.refit_schedule == "scaled" else conf.train.steps
    return Phase("refit", train_pos, np.array([], int), steps, horizon, np.arange(n_movies))


@dataclass
class PhaseJob:
    """One independent training phase: a fold model or a refit."""

    conf: Config
    phase: Phase
    state_path: Path | None = None
    label: str = ""


@dataclass
class PhaseDone:
    model: torch.nn.Module
    history: list
    best: float
    best_step: int


_WORKER: dict = {}  # what forked training workers inherit instead of a pickled copy


def run_phases(
    jobs: list[PhaseJob], feats: Features, progress: bool = False, workers: int = 0
) -> list[PhaseDone]:
    """Train independent phases, in ``jobs``' order; ``workers`` processes side by side
    (0: one per available core, at most one per job), each with its share of this
    process's torch threads (at least one).

    Every phase seeds itself (``new_state``), so the order and the process it runs in do
    not matter (tests/test_cv.py). Its thread count can: on the course data the default
    trained at 1 thread differs from 2 threads in the last float bits (official and
    held-out equal to 4 decimals, benchmarks/TRAINING.md), so ``runtime.train_workers``
    (default 1) is opt-in.
    Workers are forked: they inherit ``feats`` and send back each trained model as
    bytes. One worker (or one job, or no ``fork`` on this platform, or a daemonic
    process) trains in this process, with the progress bars."""
    workers = min(workers or available_cores(), len(jobs))
    if (
        workers <= 1
        or "fork" not in multiprocessing.get_all_start_methods()
        or multiprocessing.current_process().daemon  # a pool worker may have no children
    ):
        return [_train_job(job, feats, progress) for job in jobs]
    threads = max(1, torch.get_num_threads() // workers)
    log.info(
        "%d phases on %d worker processes, %d torch thread(s) each", len(jobs), workers, threads
    )
    _WORKER["feats"] = feats
    try:
        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(
            workers, mp_context=ctx, initializer=_worker_init, initargs=(threads,)
        ) as pool:
            futures = [pool.submit(_worker_fit, job) for job in jobs]
            bar = tqdm(total=len(jobs), desc=jobs[0].phase.name, disable=not progress)
            for _ in as_completed(futures):
                bar.update()
            bar.close()
            results = [f.result() for f in futures]
    finally:
        _WORKER.clear()
    return [
        PhaseDone(torch.load(io.BytesIO(blob), weights_only=False), history, best, step)
        for blob, history, best, step in results
    ]


def _worker_init(threads: int) -> None:
    die_with_parent()
    torch.set_num_threads(threads)


def _train_job(job: PhaseJob, feats: Features, progress: bool) -> PhaseDone:
    log.info("%s: %d pairs", job.label or job.phase.name, len(job.phase.train_pos))
    state = _fit(job.conf, feats, job.phase, progress, job.state_path)
    return PhaseDone(state.model, state.history, state.best, state.best_step)


def _worker_fit(job: PhaseJob):
    done = _train_job(job, _WORKER["feats"], False)
    buf = io.BytesIO()
    torch.save(done.model, buf)
    return buf.getvalue(), done.history, float(done.best), int(done.best_step)


def _train_folds(
    conf: Config, ms: MovieSet, feats: Features, progress: bool, state_path: Path | None, t0: float
) -> TrainResult:
    """K-fold selection (``train.folds``): fold model f trains on the other folds and
    early-stops on fold f (every movie an unlabeled node, as in any validation pass);
    its best fold score is its CV score. Returns the fold models averaged (``bag``) or
    ``train.refits`` refits on all training pairs for the folds' mean best step
    (``refit``; seeds ``seed + i``, averaged), with ``cv`` filled in."""
    if conf.model.members > 1 or conf.train.finetune:
        raise ConfigError(
            f"train.folds={conf.train.folds} (k-fold selection, default 5) trains its own fold "
            "members (a seed ensemble of refits: train.fold_model=refit train.refits=5); "
            "model.members > 1 and train.finetune train with the validation slice: "
            "add train.folds=1"
        )
    train_pos, _ = training_positions(ms, conf.seed, conf.data.train_fraction)
    folds = fold_split(train_pos, conf.train.folds, conf.seed)
    all_idx = np.arange(len(ms))
    jobs = []
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
        jobs.append(PhaseJob(conf, fit, path, f"fold {f + 1}/{len(folds)}"))
    models, history, accs, steps = [], [], [], []
    for f, done in enumerate(run_phases(jobs, feats, progress, conf.runtime.train_workers)):
        models.append(done.model)
        accs.append(float(done.best))
        steps.append(int(done.best_step))
        history += [{**row, "fold": f} for row in done.history]
    cv = {
        "folds": len(folds),
        "fold_acc": accs,
        "fold_steps": steps,
        "cv_acc": float(np.mean(accs)),
        "cv_se": float(np.std(accs, ddof=1) / np.sqrt(len(accs))),
    }
    best_step = int(round(np.mean(steps)))
    if conf.train.fold_model == "refit":  # train.refits of them, seeds seed, seed + 1, ...
        jobs = []
        for i in range(conf.train.refits):
            one = copy.deepcopy(conf)
            one.seed = conf.seed + i
            path = state_path
            if i and state_path is not None:
                path = Path(state_path).with_name(f"{Path(state_path).name}-m{i}")
            phase = refit_phase(one, train_pos, best_step, len(ms))
            jobs.append(PhaseJob(one, phase, path, f"refit {i + 1}/{conf.train.refits}"))
        refits = []
        for i, done in enumerate(run_phases(jobs, feats, progress, conf.runtime.train_workers)):
            tag = {"refit": True, **({"member": i} if conf.train.refits > 1 else {})}
            history += [{**r, **tag} for r in done.history]
            refits.append(done.model)
        model = refits[0] if len(refits) == 1 else Ensemble(refits, conf.model)
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
