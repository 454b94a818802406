"""Evaluation: D for a data folder, official / held-out / train metrics, run folders."""

from __future__ import annotations

import fcntl
import functools
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gmatch.assignment import assignment_accuracy, hungarian, sinkhorn
from gmatch.config import Config, ConfigError, merge
from gmatch.data import MovieSet
from gmatch.io import atomic_save_npy, atomic_write_json, atomic_write_text
from gmatch.metrics import evaluate_distance
from gmatch.models import Matcher

__all__ = [
    "load_checkpoint",
    "split_metrics",
    "assignment_analysis",
    "RunDir",
    "RunLockedError",
    "ResumeError",
    "write_run",
    "train_and_record",
    "summary_line",
    "test_set_sinkhorn",
    "git_state",
    "checkpoints_dist",
]


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


def load_checkpoint(path: str | Path) -> tuple[Matcher, Config, dict]:
    """Load a checkpoint written by :func:`gmatch.train.save_checkpoint` (weights_only)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated / not a torch file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(f"{path}: cannot read checkpoint ({reason}); it is truncated or not a gmatch checkpoint") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != "gmatch-matcher-1":
        raise CheckpointError(f"{path}: not a gmatch matcher checkpoint (format key missing)")
    try:
        conf = merge(Config(), ckpt["config"])
    except ConfigError as e:
        raise CheckpointError(f"{path}: its config is not valid for this version of gmatch ({e})") from None
    from gmatch.models.matcher import build_matcher

    try:
        from gmatch.features import parse_spec

        for spec in ckpt["poster_views"] + ckpt["intro_views"]:
            parse_spec(spec)  # names an encoder this installation has
        model = build_matcher(conf.model, ckpt["poster_views"], ckpt["intro_views"],
                              ckpt["poster_dims"], ckpt["intro_dims"], len(ckpt.get("genre_names", [])))  # fmt: skip
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        first = next((line.strip() for line in str(e).splitlines()[1:] if line.strip()), str(e).splitlines()[0])
        raise CheckpointError(f"{path}: weights do not fit the model its config describes ({first})") from None
    return model.eval(), conf, ckpt


def checkpoints_dist(paths, ms: MovieSet, cache_dir=None, progress: bool = True, loaded=None) -> torch.Tensor:
    """D [N x N] of one checkpoint, or of several whose scores are averaged (an
    ensemble of separately trained models, each on its own features). ``loaded``:
    the checkpoints' ``load_checkpoint`` results, if the caller has them already."""
    from gmatch.train import Features, predict_dist

    loaded = loaded or [load_checkpoint(path) for path in paths]
    S = 0
    for path, (model, conf, ckpt) in zip(paths, loaded):
        feats = Features.extract(ms, ckpt["poster_views"], ckpt["intro_views"], cache_dir or conf.data.cache_dir,
                                 progress, ckpt.get("encoder_states"), conf.model.prior)  # fmt: skip
        if feats.dims() != (ckpt["poster_dims"], ckpt["intro_dims"]):
            raise CheckpointError(
                f"{path}: built for feature dims {ckpt['poster_dims']}/{ckpt['intro_dims']} "
                f"but the encoders give {feats.dims()}; re-train or use the same encoders"
            )
        S = S - predict_dist(model, feats).double() / len(loaded)
    return (-S).float()


def split_metrics(D, ms: MovieSet, ratio: float = 0.05) -> dict:
    """``official`` (all movies), ``heldout`` (not in train.txt) and ``train`` blocks.

    Each subset is scored on its own sub-matrix: candidates are the subset's
    movies and k = int(ratio * n_subset).
    """
    out = {"official": evaluate_distance(D, None, ratio)}
    if len(ms.train_idx) and len(ms.heldout_idx):  # no block for an empty subset
        out["heldout"] = evaluate_distance(D, ms.heldout_idx, ratio)
    if len(ms.train_idx):
        out["train"] = evaluate_distance(D, ms.train_idx, ratio)
    return out


def assignment_analysis(D, ms: MovieSet, taus=(0.01, 0.03, 0.1)) -> dict:
    """One-to-one matching on D (analysis only; get_acc always uses the raw D)."""
    D = torch.as_tensor(D)
    perm = hungarian(D)
    out = {"hungarian/all": assignment_accuracy(perm)}
    top1 = D.argmin(dim=1).numpy()
    out["raw_top1/all"] = assignment_accuracy(top1)
    if len(ms.train_idx):
        out["hungarian/heldout"] = assignment_accuracy(perm, ms.heldout_idx)
        out["raw_top1/heldout"] = assignment_accuracy(top1, ms.heldout_idx)
    scale = float(D.std())
    for tau in taus:
        P = sinkhorn(-D / scale, n_iters=50, tau=tau)
        out[f"sinkhorn_top1/tau={tau}"] = assignment_accuracy(P.argmax(dim=1).numpy())
    return out


def test_set_sinkhorn(D, ms: MovieSet, tau: float, iters: int = 20) -> dict:
    """SuperGlue's output layer applied to the raw scores S = -D of *all* test
    movies at once: D' = -log Sinkhorn(exp(S / tau)). It normalises over the whole
    unlabeled test set, so it is an analysis, never an official number."""
    S = -torch.as_tensor(D, dtype=torch.float64)
    D_sk = -sinkhorn(S, n_iters=iters, tau=tau)
    return {"tau": tau, "iters": iters, "note": "uses all test movies at once; not official",
            **split_metrics(D_sk.float(), ms)}


def _command() -> str:
    prog = Path(sys.argv[0]).name
    head = "python -m gmatch" if prog in ("__main__.py", "gmatch") else prog
    return " ".join([head, *sys.argv[1:]])


def _git(*args: str) -> str | None:
    root = Path(__file__).resolve().parents[1]
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=root)
    except Exception:  # noqa: BLE001 - no git: the run records "unknown"
        return None
    return out.stdout.strip() if out.returncode == 0 else None


CODE_PATHS = ("gmatch", "experiments/*.py", "experiments/configs", "benchmarks/*.py", "pyproject.toml", "data")


@functools.lru_cache(maxsize=1)
def git_state() -> dict:
    """``{"git_sha": short sha, "git_dirty": code or configs differ from it}`` of the
    code that runs (``unknown`` / None outside a git checkout). Read once per
    process (the CLI reads it at start), so edits made while a long sweep runs do
    not change what its runs record."""
    sha = _git("rev-parse", "--short", "HEAD")
    # Dirty = uncommitted changes to what computes a number (code, configs, the shipped
    # data and features); docs, result tables and the checkpoint a run writes are not.
    status = _git("status", "--porcelain", "--untracked-files=no", "--", *CODE_PATHS)
    return {"git_sha": sha or "unknown", "git_dirty": None if status is None else bool(status)}


class ResumeError(ValueError):
    """``--resume`` of a run that cannot be continued; the message says why."""


class RunLockedError(FileExistsError):
    """Another process holds the run folder; the message names it."""


class RunDir:
    """A run folder; finished when ``COMPLETE`` exists. Never overwritten silently.

    The folder is locked (``fcntl.flock`` on ``<parent>/.<name>.lock``) from the
    start of a run to its end, so a second run into the same folder refuses at
    once and names the holder. With ``overwrite``, a finished run is replaced
    only when the new one completes: the new run writes into a sibling staging
    folder, which :meth:`complete` swaps into place.
    """

    def __init__(self, path: str | Path, overwrite: bool = False):
        self.final = Path(path)
        self.overwrite = overwrite
        self.final.parent.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire()
        finished = (self.final / "COMPLETE").exists()
        if finished and not overwrite:
            self.release()
            raise FileExistsError(
                f"{self.final}: a finished run is already there; pick another --out or pass --overwrite"
            )
        # Replacing a finished run: work in a staging sibling until the new run completes.
        self.path = self.final.parent / f".{self.final.name}.partial" if finished else self.final
        if finished and self.path.exists():
            shutil.rmtree(self.path)  # an earlier replacement that never completed
        # The folder itself appears with the first file written (atomic writes create
        # it), so a run that fails on its inputs leaves no empty folder behind.

    def _acquire(self):
        lock = self.final.parent / f".{self.final.name}.lock"
        f = open(lock, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            f.close()
            raise RunLockedError(
                f"{self.final}: in use by {holder}; wait for it to finish or pick another --out"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} ({_command()}) since {time.strftime('%Y-%m-%d %H:%M:%S')}")
        f.flush()
        return f

    def release(self) -> None:
        if self._lock is not None:
            fcntl.flock(self._lock, fcntl.LOCK_UN)
            self._lock.close()
            self._lock = None

    def complete(self) -> None:
        atomic_write_text(self.path / "COMPLETE", time.strftime("%Y-%m-%d %H:%M:%S\n"))
        if self.path != self.final:  # swap the finished replacement into place
            old = self.final.parent / f".{self.final.name}.old"
            if old.exists():
                shutil.rmtree(old)
            self.final.replace(old)
            self.path.replace(self.final)
            shutil.rmtree(old)
            self.path = self.final
        self.release()


def write_run(run: RunDir, D: torch.Tensor, ms: MovieSet, conf: Config | None, extra: dict,
              sinkhorn_tau: float | None = None) -> dict:  # fmt: skip
    """Write D.npy (the raw D), metrics.json and config.yaml, then mark the run complete.

    ``official``, ``heldout`` and ``train`` are always get_acc of the raw D; the
    ``analysis`` block holds one-to-one assignment and, when
    ``analysis.sinkhorn_tau`` (or ``sinkhorn_tau``) > 0, :func:`test_set_sinkhorn`.
    """
    metrics = split_metrics(D, ms)
    metrics["analysis"] = assignment_analysis(D, ms)
    tau = sinkhorn_tau if sinkhorn_tau is not None else (conf.analysis.sinkhorn_tau if conf else 0.0)
    if tau > 0:
        iters = conf.analysis.sinkhorn_iters if conf is not None else 20
        metrics["analysis"]["test_set_sinkhorn"] = test_set_sinkhorn(D, ms, tau, iters)
    record = {
        "metrics": metrics,
        "data": str(ms.root),
        "n_movies": len(ms),
        "n_train": int(len(ms.train_idx)),
        "command": _command(),
        **dict(git_state()),
        **extra,
    }
    atomic_save_npy(run.path / "D.npy", np.asarray(D, dtype=np.float32))
    if conf is not None:
        from gmatch.config import to_dict

        record["config"] = to_dict(conf)
        atomic_write_text(run.path / "config.yaml", yaml.safe_dump(to_dict(conf), sort_keys=False))
    atomic_write_json(run.path / "metrics.json", record)
    run.complete()
    return record


def train_and_record(run: RunDir, conf: Config, ms: MovieSet, feats, progress: bool = True,
                     extra: dict | None = None, resume: bool = False) -> tuple:  # fmt: skip
    """Train on ``ms``'s training pairs and write the whole run folder:
    model.pt, history.json, D.npy, metrics.json, config.yaml, COMPLETE.

    Training state is checkpointed in the run folder while it trains; an
    existing state is resumed only with ``resume`` (otherwise it is an error),
    and the state files are removed once the run is complete.
    Returns ``(TrainResult, metrics record)``.
    """
    from gmatch.io import atomic_write_json
    from gmatch.train import predict_dist, save_checkpoint, train

    from gmatch.config import config_diff, to_dict

    leftovers = list(run.path.glob("train_state*.pt"))
    saved = run.path / "config.yaml"
    if leftovers and not resume:
        if not run.overwrite:
            raise FileExistsError(
                f"{run.path}: an interrupted run is there; pass --resume to continue it "
                "or --overwrite to start again"
            )
        for f in leftovers:
            f.unlink()
    if leftovers and resume and saved.exists():
        # A resumed run must be the run that was interrupted.
        diff = config_diff(yaml.safe_load(saved.read_text()) or {}, to_dict(conf))
        if diff:
            what = ", ".join(f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items()))
            raise ResumeError(f"{run.path}: --resume with another config than the interrupted run ({what}); "
                              "resume with the same settings or pass --overwrite to start again")  # fmt: skip
    atomic_write_text(saved, yaml.safe_dump(to_dict(conf), sort_keys=False))
    result = train(conf, ms, feats, progress=progress, state_path=run.path / "train_state")
    save_checkpoint(run.path / "model.pt", result, conf, feats)
    atomic_write_json(run.path / "history.json", result.history)
    D = predict_dist(result.model, feats)
    record = write_run(run, D, ms, conf, {
        "train_seconds": result.seconds, "best_step": result.best_step,
        "val_acc": result.best_val, **(extra or {}),
    })  # fmt: skip
    for f in run.path.glob("train_state*.pt"):  # the run is complete: model.pt suffices
        f.unlink()
    return result, record


def summary_line(metrics: dict) -> str:
    parts = []
    for block in ("official", "heldout", "train"):
        if block in metrics:
            m = metrics[block]
            parts.append(
                f"{block:8s} n={m['n']:4d} k={m['k']:3d}  acc_dim0={m['acc_dim0']:.4f}  "
                f"acc_dim1={m['acc_dim1']:.4f}  mean={m['acc_mean']:.4f}  "
                f"R@1 p2i={m['poster_to_intro/R@1']:.4f} i2p={m['intro_to_poster/R@1']:.4f}  "
                f"R@10 p2i={m['poster_to_intro/R@10']:.4f}"
            )
    sk = metrics.get("analysis", {}).get("test_set_sinkhorn")
    if sk:
        held = f"  heldout mean={sk['heldout']['acc_mean']:.4f}" if "heldout" in sk else ""
        parts.append(f"analysis (Sinkhorn tau={sk['tau']:g} over all test movies at once; not official): "
                     f"all mean={sk['official']['acc_mean']:.4f}{held}")  # fmt: skip
    return "\n".join(parts)


def read_metrics(run_dir: str | Path) -> dict:
    return json.loads((Path(run_dir) / "metrics.json").read_text())
