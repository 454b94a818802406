"""Run folders: a locked, atomic record of one training or evaluation run
(D.npy, metrics.json, config.yaml, model.pt, COMPLETE), with the code's git state."""

from __future__ import annotations

import dataclasses
import fcntl
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from gmatch.checkpoint import (
    checkpoint_features,
    checkpoints_dist,
    load_checkpoint,
    save_checkpoint,
)
from gmatch.config import AnalysisConf, Config, config_diff, to_dict, upgrade
from gmatch.data import MovieSet, load_movielens
from gmatch.distributed import cluster
from gmatch.evaluate import (
    assignment_analysis,
    metric_subsets,
    predict_dist,
    split_metrics,
    test_set_sinkhorn,
)
from gmatch.features import Features
from gmatch.io import atomic_save_npy, atomic_write_json, atomic_write_text
from gmatch.models import independent_pairs
from gmatch.stream import local_map, streamed_metrics, streamed_ranks
from gmatch.training import train

__all__ = [
    "RunDir",
    "RunLockedError",
    "ResumeError",
    "write_run",
    "train_and_record",
    "evaluate_checkpoints",
    "summary_line",
    "evaluate_streamed",
    "streamed_split_metrics",
    "git_state",
]


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


CODE_PATHS = (
    "gmatch",
    "experiments/*.py",
    "experiments/configs",
    "benchmarks/*.py",
    "pyproject.toml",
    "data",
)


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


def write_run(
    run: RunDir,
    D: torch.Tensor,
    ms: MovieSet,
    conf: Config | None,
    extra: dict,
    analysis: AnalysisConf | None = None,
) -> dict:
    """Write D.npy (the raw D), metrics.json and config.yaml, then mark the run complete.

    ``official``, ``heldout`` and ``train`` are always get_acc of the raw D; the
    ``analysis`` block holds one-to-one assignment and, when ``analysis.sinkhorn_tau``
    > 0 (``analysis``, default the config's), :func:`test_set_sinkhorn`.
    """
    analysis = analysis or (conf.analysis if conf is not None else AnalysisConf())
    metrics = split_metrics(D, ms)
    metrics["analysis"] = assignment_analysis(D, ms)
    if analysis.sinkhorn_tau > 0:
        metrics["analysis"]["test_set_sinkhorn"] = test_set_sinkhorn(
            D, ms, analysis.sinkhorn_tau, analysis.sinkhorn_iters
        )
    atomic_save_npy(run.path / "D.npy", np.asarray(D, dtype=np.float32))
    # the analysis settings this run used (e.g. evaluate --sinkhorn-tau), not the config's
    used = {"analysis_settings": dataclasses.asdict(analysis)}
    return _finish(run, metrics, ms, conf, {**(extra or {}), **used})


def _finish(run: RunDir, metrics: dict, ms: MovieSet, conf: Config | None, extra: dict) -> dict:
    """metrics.json (+ config.yaml), then COMPLETE."""
    record = {
        "metrics": metrics,
        "data": str(ms.root),
        "n_movies": len(ms),
        "n_train": int(len(ms.train_idx)),
        "command": _command(),
        **dict(git_state()),
        **extra,
    }
    if conf is not None:
        record["config"] = to_dict(conf)
        if "analysis_settings" in extra:
            record["config"]["analysis"] = extra["analysis_settings"]
        atomic_write_text(run.path / "config.yaml", yaml.safe_dump(to_dict(conf), sort_keys=False))
    atomic_write_json(run.path / "metrics.json", record)
    run.complete()
    return record


def train_and_record(
    run: RunDir,
    conf: Config,
    ms: MovieSet,
    feats: Features,
    progress: bool = True,
    extra: dict | None = None,
    resume: bool = False,
) -> tuple:
    """Train on ``ms``'s training pairs and write the whole run folder:
    model.pt, history.json, D.npy, metrics.json, config.yaml, COMPLETE.

    Training state is checkpointed in the run folder while it trains; an
    existing state is resumed only with ``resume`` (otherwise it is an error),
    and the state files are removed once the run is complete.
    Returns ``(TrainResult, metrics record)``.
    """
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
        diff = config_diff(upgrade(yaml.safe_load(saved.read_text()) or {}), to_dict(conf))
        if diff:
            what = ", ".join(
                f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in diff.items())
            )
            raise ResumeError(
                f"{run.path}: --resume with another config than the interrupted run ({what}); "
                "resume with the same settings or pass --overwrite to start again"
            )
    atomic_write_text(saved, yaml.safe_dump(to_dict(conf), sort_keys=False))
    result = train(conf, ms, feats, progress=progress, state_path=run.path / "train_state")
    feats = result.feats or feats  # fine-tuned towers: the tuned features
    save_checkpoint(
        run.path / "model.pt", result.model, conf, feats, result.best_step, result.history
    )
    atomic_write_json(run.path / "history.json", result.history)
    D = predict_dist(result.model, feats)
    record = write_run(
        run,
        D,
        ms,
        conf,
        {
            "train_seconds": result.seconds,
            "best_step": result.best_step,
            "val_acc": result.best_val,
            **({"cv": result.cv} if result.cv else {}),
            **(extra or {}),
        },
    )
    for f in run.path.glob("train_state*.pt"):  # the run is complete: model.pt suffices
        f.unlink()
    return result, record


def streamed_split_metrics(
    model, feats: Features, ms: MovieSet, chunk: int | None = None, map_blocks=local_map
) -> dict:
    """``official`` / ``heldout`` / ``train`` blocks from streamed ranks (large-N mode:
    never an N x N matrix), each subset ranked among itself as :func:`split_metrics` does.

    A subset block streams the model on the subset's nodes only. When each pair's score
    depends on its two movies alone (:func:`gmatch.models.independent_pairs`: no attention
    units, no local stage) that equals the dense path's slice of the full forward (tested).
    With attention units a node's state depends on every node it attends to, so the two
    would differ: such a model gets the ``official`` block only, and ``subsets`` says why."""
    out = {}
    alone = independent_pairs(model)
    for name, idx in metric_subsets(ms).items():
        if idx is not None and not alone:
            out["subsets"] = (
                "not streamed: with attention units (n_layers > 0) a subset's own forward "
                "differs from the dense path's slice of the full forward; use dense evaluate"
            )
            continue
        f = feats if idx is None else feats.subset(idx)
        (v0, m0), (v1, m1) = f.tensors(None, 0), f.tensors(None, 1)
        ranks = streamed_ranks(
            model,
            v0,
            m0,
            v1,
            m1,
            chunk,
            lexical=f.prior_blocks,
            map_blocks=map_blocks,
            tuned0=f.tuned_views(None, 0),
            tuned1=f.tuned_views(None, 1),
        )
        out[name] = streamed_metrics(ranks)
    return out


def evaluate_streamed(
    path,
    out=None,
    data=None,
    cache_dir=None,
    overwrite: bool = False,
    ray=None,
    workers: int | None = None,
    progress: bool = True,
    chunk: int | None = None,
) -> tuple[Path, dict]:
    """Large-N mode for one checkpoint: streamed metrics (no D.npy), written to a run
    folder (default ``runs/stream-<name>``). ``ray``: a Ray address ("local" starts a
    cluster on this machine): features are extracted and the row blocks scored there."""
    run = RunDir(out or f"runs/stream-{Path(path).stem}", overwrite)
    model, conf, ckpt = load_checkpoint(path)
    ms = load_movielens(data or conf.data.root)
    with cluster(ray, workers) as runner:
        feats = checkpoint_features(path, ckpt, conf, ms, cache_dir, progress)
        blocks = local_map if runner is None else runner.map_blocks
        metrics = streamed_split_metrics(model, feats, ms, chunk, blocks)
    extra = {"checkpoint": str(path), "kind": "evaluate", "mode": "streamed", "ray": ray}
    return run.final, _finish(run, metrics, ms, conf, extra)


def evaluate_checkpoints(
    paths: list,
    out=None,
    data=None,
    cache_dir=None,
    overwrite: bool = False,
    sinkhorn_tau: float | None = None,
    progress: bool = True,
) -> tuple[Path, dict]:
    """Score one checkpoint, or several as an ensemble (their scores S = -D averaged),
    on a data folder (default: the first checkpoint's) and write a run folder
    (default ``runs/eval-<names>``). ``sinkhorn_tau`` (default: the checkpoint's
    ``analysis.sinkhorn_tau``) adds the test-set-wide Sinkhorn analysis; D.npy stays raw.
    Returns (run folder, metrics record)."""
    names = [Path(c).stem for c in paths]
    run = RunDir(out or f"runs/eval-{'+'.join(names)}", overwrite)  # refuse a finished run first
    loaded = [load_checkpoint(path) for path in paths]
    ms = load_movielens(data or loaded[0][1].data.root)
    D = checkpoints_dist(paths, ms, cache_dir, progress, loaded)
    conf = loaded[0][1] if len(loaded) == 1 else None
    analysis = dataclasses.replace(
        loaded[0][1].analysis
    )  # a copy: config.yaml stays the checkpoint's
    if sinkhorn_tau is not None:
        analysis.sinkhorn_tau = sinkhorn_tau
    checkpoint = str(paths[0]) if len(paths) == 1 else [str(c) for c in paths]
    record = write_run(run, D, ms, conf, {"checkpoint": checkpoint, "kind": "evaluate"}, analysis)
    return run.final, record


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
        parts.append(
            f"analysis (Sinkhorn tau={sk['tau']:g} over all test movies at once; not official): "
            f"all mean={sk['official']['acc_mean']:.4f}{held}"
        )
    return "\n".join(parts)
