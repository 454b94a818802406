"""Training from cached features: episodes of training movies, early stopping, refit."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from gmatch.config import Config, to_dict
from gmatch.data import MovieSet, load_movielens
from gmatch.features import FeatureBlock, extract, is_prior_only_spec
from gmatch.lexical import pair_scores
from gmatch.io import atomic_torch_save
from gmatch.losses import total_loss
from gmatch.metrics import evaluate_distance
from gmatch.models import Matcher

__all__ = ["Features", "load_features", "seed_everything", "train", "TrainResult", "training_positions"]

log = logging.getLogger(__name__)


class TrainStateError(ValueError):
    """A training state file that cannot be resumed; the message says what to do."""
_SAME = object()  # Features.inputs: intros default to the posters' movies
LEXICAL_CACHE_MAX = 8000  # movies up to which Features keeps the full lexical matrix (256 MB)


@dataclass
class Features:
    """Tensors of all views of both sides for one MovieSet.

    ``poster`` / ``intro``: the dense views the node encoders read.
    ``lexical``: (poster block, intro block) pairs of sparse lexical views
    (``ocr:chars=text:chars``) that enter the model only as a prior score.
    """

    poster: list[FeatureBlock]
    intro: list[FeatureBlock]
    lexical: list[tuple[FeatureBlock, FeatureBlock]] = field(default_factory=list)
    genres: np.ndarray | None = None  # [N x G] multi-hot; G = genres of the training movies
    genre_names: list[str] = field(default_factory=list)

    @classmethod
    def extract(cls, ms: MovieSet, poster_specs, intro_specs, cache_dir, progress=True,
                states: dict | None = None, prior: list[str] = (), memo: dict | None = None) -> Features:  # fmt: skip
        """Extract (or read from the cache) every view of both sides; ``states``
        maps a spec to a fitted encoder state (a checkpoint's TF-IDF); the
        lexical pairs named in ``prior`` are extracted too. ``memo`` (a dict the
        caller keeps, e.g. over a sweep on one data set) reuses blocks by spec."""
        from gmatch.models.matcher import lexical_prior

        states = states or {}
        for spec in list(poster_specs) + list(intro_specs):
            if is_prior_only_spec(spec):
                a, b = ("", spec) if spec in intro_specs else (spec, "")
                raise ValueError(
                    f"{spec} is a sparse lexical or set view: it cannot be a node feature; "
                    f"name it as a prior pair instead, e.g. model.prior=[...,{a or 'ocr:chars'}="
                    f"{b or 'text:chars'}]"
                )

        def get(s):
            if memo is None or states.get(s) is not None:
                return extract(ms, s, cache_dir, progress, tfidf_state=states.get(s))
            key = (str(ms.root), len(ms), s)
            if key not in memo:
                memo[key] = extract(ms, s, cache_dir, progress)
            return memo[key]

        lexical = [(get(a), get(b)) for a, b, _ in lexical_prior(prior)]
        # Genre targets for the auxiliary loss: the vocabulary comes from training
        # movies; only training movies' rows are ever used as targets.
        names = sorted({g for i in ms.train_idx for g in ms.genres[i]})
        col = {g: k for k, g in enumerate(names)}
        genres = np.zeros((len(ms), len(names)), dtype=np.float32)
        for i, gs in enumerate(ms.genres):
            for g in gs:
                if g in col:
                    genres[i, col[g]] = 1
        return cls([get(s) for s in poster_specs], [get(s) for s in intro_specs], lexical, genres, names)

    def states(self) -> dict:
        """Fitted encoder states by spec (saved with checkpoints)."""
        blocks = self.poster + self.intro + [b for pair in self.lexical for b in pair]
        return {b.spec: b.state for b in blocks if b.state is not None}

    def tensors(self, idx=None, side: str = "poster"):
        blocks = self.poster if side == "poster" else self.intro
        sel = slice(None) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
        views = [torch.from_numpy(b.values)[sel] for b in blocks]
        valid = [torch.from_numpy(b.valid)[sel] for b in blocks]
        return views, valid

    def lexical_scores(self, idx0=None, idx1=None) -> list[torch.Tensor]:
        """Per precomputed prior pair (lexical or pooled), scores of posters ``idx0``
        vs intros ``idx1`` [N x M].

        Up to ``LEXICAL_CACHE_MAX`` movies the full matrix is computed once and
        indexed (training episodes and validation passes reuse it)."""
        n = max(len(self.lexical[0][0].valid), len(self.lexical[0][1].valid)) if self.lexical else 0
        if self.lexical and n <= LEXICAL_CACHE_MAX:
            if getattr(self, "_lexical_full", None) is None:
                self._lexical_full = [pair_scores(a, b) for a, b in self.lexical]
            i0 = slice(None) if idx0 is None else torch.as_tensor(np.asarray(idx0), dtype=torch.long)
            i1 = slice(None) if idx1 is None else torch.as_tensor(np.asarray(idx1), dtype=torch.long)
            return [full[i0][:, i1] for full in self._lexical_full]
        return [pair_scores(a, b, idx0, idx1) for a, b in self.lexical]

    def inputs(self, idx0=None, idx1=_SAME) -> dict:
        """Model inputs for posters ``idx0`` and intros ``idx1`` (default: the same
        movies; None = all): ``model(**feats.inputs(idx))``."""
        idx1 = idx0 if idx1 is _SAME else idx1
        v0, m0 = self.tensors(idx0, "poster")
        v1, m1 = self.tensors(idx1, "intro")
        return {"views0": v0, "valid0": m0, "views1": v1, "valid1": m1,
                "lexical": self.lexical_scores(idx0, idx1)}  # fmt: skip

    def build_model(self, conf) -> Matcher:
        """A fresh Matcher for these views (prior pairs resolved by spec name)."""
        from gmatch.models.matcher import build_matcher

        specs0, specs1 = [b.spec for b in self.poster], [b.spec for b in self.intro]
        n_genres = len(self.genre_names) if conf.train.genre_weight > 0 else 0
        return build_matcher(conf.model, specs0, specs1, *self.dims(), n_genres=n_genres)

    def dims(self) -> tuple[list[int], list[int]]:
        return [b.values.shape[1] for b in self.poster], [b.values.shape[1] for b in self.intro]

    def subset(self, idx) -> Features:
        def sub(b: FeatureBlock) -> FeatureBlock:
            return b.subset(idx)

        return Features([sub(b) for b in self.poster], [sub(b) for b in self.intro],
                        [(sub(a), sub(b)) for a, b in self.lexical],
                        None if self.genres is None else self.genres[idx], self.genre_names)  # fmt: skip


def training_positions(ms: MovieSet, conf: Config) -> tuple[np.ndarray, np.random.Generator]:
    """The train.txt positions a run trains on: all of them, or a seeded
    ``data.train_fraction`` share (learning curves). Returns them with the run's
    generator, which then draws the validation slice."""
    rng = np.random.default_rng(conf.seed)
    pos = np.sort(ms.train_idx)
    if conf.data.train_fraction < 1:
        keep = max(16, int(round(conf.data.train_fraction * len(pos))))
        pos = np.sort(rng.choice(pos, keep, replace=False))
    return pos, rng


def load_features(ms: MovieSet, conf: Config, progress: bool = True, memo: dict | None = None) -> Features:
    """Features of ``ms`` for ``conf``; text statistics (TF-IDF, character n-grams)
    and the genre vocabulary are fitted on the intros the run trains on only."""
    d = conf.data
    if d.train_fraction < 1:
        ms = dataclasses.replace(ms, train_idx=training_positions(ms, conf)[0])
        memo = None  # blocks fitted on another subset must not be shared
    return Features.extract(ms, d.poster_views, d.intro_views, d.cache_dir, progress,
                            prior=conf.model.prior, memo=memo)  # fmt: skip


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def predict_dist(model: Matcher, feats: Features, idx=None) -> torch.Tensor:
    """D [N x N] for the movies ``idx`` (default all): all posters vs all intros at once."""
    model.eval()
    with torch.inference_mode():
        return model(**feats.inputs(idx))["dist"].float()


@dataclass
class TrainResult:
    model: Matcher
    history: list[dict] = field(default_factory=list)
    best_step: int = 0
    best_val: float = float("nan")  # validation get_acc (mean of dims) at best_step
    val_idx: np.ndarray | None = None
    train_idx: np.ndarray | None = None
    seconds: float = 0.0


class EpisodeStream:
    """Endless episodes: shuffle the training positions, cut them into episodes
    whose sizes are drawn from ``sizes``, reshuffle when they run out.
    Its whole state is saved with a training checkpoint, so a resumed run
    sees exactly the episodes an uninterrupted one would."""

    def __init__(self, seed: int, positions: np.ndarray, sizes: list[int]):
        self.rng = np.random.default_rng(seed)
        self.positions, self.sizes = positions, sizes
        self.order, self.start = self.rng.permutation(positions), 0

    def __next__(self) -> np.ndarray:
        if self.start + 8 > len(self.order):  # a tiny tail would give a trivial loss
            self.order, self.start = self.rng.permutation(self.positions), 0
        b = int(self.rng.choice(self.sizes))
        out = self.order[self.start : self.start + b]
        self.start += b
        return out

    def state_dict(self) -> dict:
        return {"rng": json.dumps(self.rng.bit_generator.state), "order": torch.from_numpy(self.order),
                "start": self.start}  # fmt: skip

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = json.loads(state["rng"])
        self.order, self.start = state["order"].numpy(), int(state["start"])


def lr_factor(step: int, warmup: int, horizon: int) -> float:
    """Linear warm-up over ``warmup`` steps, then a cosine that reaches 0 at ``horizon``."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, horizon - warmup))))


def _fit(conf: Config, feats: Features, train_pos, val_pos, steps, progress, all_idx,
         state_path: Path | None = None, phase: str = "fit", horizon: int | None = None):  # fmt: skip
    """Train one model for up to ``steps`` steps; with ``state_path`` the full
    training state is saved atomically at every validation pass and, if the
    file exists for this phase, training resumes from it. The learning rate
    warms up, then decays along a cosine that reaches zero at ``horizon``
    (default ``train.steps``)."""
    tc = conf.train
    horizon = tc.steps if horizon is None else horizon
    warmup = min(tc.warmup, max(1, horizon // 3))
    seed_everything(conf.seed)
    model = feats.build_model(conf)
    opt = torch.optim.AdamW(model.parameters(), lr=tc.lr, weight_decay=tc.weight_decay)
    sizes = [min(s, len(train_pos)) for s in tc.episode_sizes]

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: lr_factor(step, warmup, horizon))
    heads = "all" if tc.deep_supervision > 0 and conf.model.n_layers > 0 else "final"
    history, best, best_state, best_step, bad = [], -1.0, None, steps, 0
    stream = EpisodeStream(conf.seed, train_pos, sizes)
    first = 1
    if state_path is not None:
        state_path = Path(state_path).with_suffix(f".{phase}.pt")
    if state_path is not None and state_path.exists():
        try:
            st = torch.load(state_path, map_location="cpu", weights_only=True)
            if st["phase"] == phase:
                model.load_state_dict(st["model"])
        except Exception as e:  # noqa: BLE001 - truncated, not a torch file, or another model
            raise TrainStateError(
                f"{state_path}: training state is damaged or from another model ({type(e).__name__}); "
                "delete it or pass --overwrite to start the run again"
            ) from e
        if st["phase"] == phase:
            opt.load_state_dict(st["opt"])
            sched.load_state_dict(st["sched"])
            stream.load_state_dict(st["stream"])
            torch.set_rng_state(st["torch_rng"])
            history, best, best_step, bad = st["history"], st["best"], st["best_step"], st["bad"]
            best_state = st["best_state"]
            first = st["step"] + 1
            log.info("resumed %s from step %d (%s)", phase, st["step"], state_path)
    from tqdm.auto import tqdm

    bar = tqdm(total=steps, initial=first - 1, desc=phase, disable=not progress)
    losses = []
    for step in range(first, steps + 1):
        if len(val_pos) and bad >= tc.patience:  # a resumed run that had already stopped
            break
        model.train()
        ep = next(stream)
        pred = model(**feats.inputs(ep), heads=heads)
        loss = total_loss(pred, tc.loss, tc.deep_supervision, tc.sinkhorn_iters)
        if tc.genre_weight > 0:  # ep holds training positions only
            y = torch.from_numpy(feats.genres[ep])
            bce = torch.nn.functional.binary_cross_entropy_with_logits
            loss["genre"] = (bce(pred["genre0"], y) + bce(pred["genre1"], y)) / 2
            loss["total"] = loss["total"] + tc.genre_weight * loss["genre"]
        opt.zero_grad(set_to_none=True)
        loss["total"].backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc.grad_clip)
        opt.step()
        sched.step()
        losses.append(loss["total"].item())
        bar.update()
        if step % tc.eval_every and step != steps:
            continue
        row = {"step": step, "loss": float(np.mean(losses)), "lr": sched.get_last_lr()[0]}
        losses = []
        if len(val_pos):
            # Validation sees every movie as an unlabeled node, as at test time,
            # and scores only the validation pairs.
            D = predict_dist(model, feats, all_idx)
            m = evaluate_distance(D, subset=np.searchsorted(all_idx, val_pos))
            row.update(val_acc=m["acc_mean"], val_r1=m["poster_to_intro/R@1"])
            if row["val_acc"] > best:
                best, best_step, bad = row["val_acc"], step, 0
                best_state = copy.deepcopy(model.state_dict())
            else:
                bad += 1
        history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k != "step"})
        if state_path is not None:
            atomic_torch_save(state_path, {
                "phase": phase, "step": step, "model": model.state_dict(), "opt": opt.state_dict(),
                "sched": sched.state_dict(), "stream": stream.state_dict(),
                "torch_rng": torch.get_rng_state(), "history": history, "best": best,
                "best_step": best_step, "bad": bad, "best_state": best_state,
            })  # fmt: skip
        if len(val_pos) and bad >= tc.patience:
            break
    bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    return model, history, best_step, (best if len(val_pos) else float("nan"))


def train(conf: Config, ms: MovieSet | None = None, feats: Features | None = None,
          progress: bool = True, state_path: Path | None = None) -> TrainResult:  # fmt: skip
    """Train a matcher on the training pairs of ``ms`` (never on held-out pairs).

    A validation slice (``train.val_fraction`` of train.txt) picks the step;
    with ``train.refit`` the model is retrained on all training pairs for that
    many steps. With ``state_path`` training state is checkpointed at every
    validation pass and an existing state file is resumed from.
    """
    if conf.train.refit_schedule not in ("scaled", "fit"):
        raise ValueError(f"train.refit_schedule must be scaled or fit, got {conf.train.refit_schedule!r}")
    torch.set_num_threads(conf.threads)
    t0 = time.time()
    ms = ms if ms is not None else load_movielens(conf.data.root)
    feats = feats if feats is not None else load_features(ms, conf, progress)
    if conf.model.members > 1:
        return _train_ensemble(conf, ms, feats, progress, state_path, t0)
    if len(ms.train_idx) < 16:
        raise ValueError(f"{ms.root}: need at least 16 training pairs in train.txt to train")
    train_pos, rng = training_positions(ms, conf)
    n_val = int(round(conf.train.val_fraction * len(train_pos)))
    val_pos = np.sort(rng.choice(train_pos, n_val, replace=False)) if n_val >= 20 else np.array([], int)
    fit_pos = np.setdiff1d(train_pos, val_pos)
    all_idx = np.arange(len(ms))
    model, history, best_step, best_val = _fit(
        conf, feats, fit_pos, val_pos, conf.train.steps, progress, all_idx, state_path, "fit"
    )
    if conf.train.refit and len(val_pos):
        # "scaled": the refit's cosine reaches zero at its own last step, so it
        # ends with a decayed learning rate; "fit": the fit phase's schedule
        # (train.steps long), cut off at best_step while the rate is still high.
        horizon = best_step if conf.train.refit_schedule == "scaled" else conf.train.steps
        log.info("refit on all %d training pairs for %d steps (%s schedule)", len(train_pos),
                 best_step, conf.train.refit_schedule)  # fmt: skip
        model, refit_hist, _, _ = _fit(
            conf, feats, train_pos, np.array([], int), best_step, progress, all_idx,
            state_path, "refit", horizon,
        )
        history += [{**r, "refit": True} for r in refit_hist]
    return TrainResult(model, history, best_step, best_val, val_pos, train_pos, time.time() - t0)


def _train_ensemble(conf: Config, ms: MovieSet, feats: Features, progress: bool,
                    state_path: Path | None, t0: float) -> TrainResult:  # fmt: skip
    """``model.members`` matchers trained one after another, each exactly as a
    single run with seed ``seed + i`` (its own validation slice and refit)."""
    from gmatch.models.matcher import Ensemble

    results = []
    for i in range(conf.model.members):
        member = copy.deepcopy(conf)
        member.model.members, member.seed = 1, conf.seed + i
        path = None if state_path is None else Path(state_path).with_name(f"{Path(state_path).name}-m{i}")
        log.info("ensemble member %d/%d (seed %d)", i + 1, conf.model.members, member.seed)
        results.append(train(member, ms, feats, progress, path))
    model = Ensemble([r.model for r in results], conf.model)
    history = [{**row, "member": i} for i, r in enumerate(results) for row in r.history]
    return TrainResult(model, history, int(round(np.mean([r.best_step for r in results]))),
                       float(np.mean([r.best_val for r in results])), results[0].val_idx,
                       results[0].train_idx, time.time() - t0)  # fmt: skip


def save_checkpoint(path: Path, result: TrainResult, conf: Config, feats: Features) -> None:
    """Config + weights + encoder specs and dims, written atomically."""
    poster_dims, intro_dims = feats.dims()
    atomic_torch_save(
        Path(path),
        {
            "format": "gmatch-matcher-1",
            "config": to_dict(conf),
            "state_dict": result.model.state_dict(),
            "poster_views": [b.spec for b in feats.poster],
            "intro_views": [b.spec for b in feats.intro],
            "poster_dims": poster_dims,
            "encoder_states": feats.states(),
            "intro_dims": intro_dims,
            "genre_names": feats.genre_names if result.model.genre_head is not None else [],
            "best_step": result.best_step,
            "history": result.history,
        },
    )
