"""The Python API: what a notebook needs, with no environment setup beyond ``import gmatch``.

    import gmatch
    movies = gmatch.load_movielens("data/movielens")          # 2938 movies
    model = gmatch.load_checkpoint("checkpoints/default.pt")
    D = model.distance(movies)                                # torch [N x N], D[i, j]: poster i, intro j
    gmatch.get_acc(D, 0.05, dim=0), gmatch.get_acc(D, 0.05, dim=1)
    gmatch.topk(D, movies, query=0, k=5)                      # poster 0's nearest intros
    run = gmatch.fit(["model.n_layers=1"], data="data/movielens")   # train, in Python

The CLI is built on the same functions (gmatch.runs, gmatch.checkpoint); every number
here is the one ``gmatch evaluate`` / ``gmatch train`` prints for the same inputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import numpy as np
import torch

from gmatch.checkpoint import checkpoint_dict, checkpoint_features
from gmatch.checkpoint import load_checkpoint as _load
from gmatch.config import Config, load_config
from gmatch.data import MovieSet, load_movielens
from gmatch.evaluate import predict_dist, split_metrics
from gmatch.features import load_features
from gmatch.runs import RunDir, train_and_record
from gmatch.training import train

__all__ = ["Model", "TrainedRun", "load_checkpoint", "fit", "topk"]


@dataclass
class Model:
    """A trained matcher with the config and fitted text statistics it reads with."""

    matcher: torch.nn.Module
    config: Config
    checkpoint: dict = field(repr=False)
    path: Path | None = None

    def features(self, movies: MovieSet, cache_dir: str | Path | None = None, progress=False):
        """The node features this model reads on ``movies`` (cached on disk by content)."""
        return checkpoint_features(
            self.path, self.checkpoint, self.config, movies, cache_dir, progress
        )

    def distance(
        self, movies: MovieSet, cache_dir: str | Path | None = None, progress: bool = False
    ) -> torch.Tensor:
        """D, a float32 tensor [N x N]: ``D[i, j]`` is the distance of poster ``i`` to
        intro ``j`` (smaller = closer; the true pairs are the diagonal) — the official
        convention, the raw pair scores (no normalisation over the test set)."""
        return predict_dist(self.matcher, self.features(movies, cache_dir, progress))

    def metrics(self, movies: MovieSet, D: torch.Tensor | None = None) -> dict:
        """``official`` / ``heldout`` / ``train`` blocks (get_acc both dims, R@K, ranks)
        of D (computed when not given)."""
        return split_metrics(self.distance(movies) if D is None else D, movies)

    def rank(
        self,
        movies: MovieSet,
        query: int,
        side: Literal["poster", "intro"] = "poster",
        k: int = 5,
        D: torch.Tensor | None = None,
    ) -> list[dict]:
        """The ``k`` nearest intros of poster ``query`` (or posters of intro ``query``);
        see :func:`topk`."""
        return topk(self.distance(movies) if D is None else D, movies, query, k, side)


def load_checkpoint(path: str | Path) -> Model:
    """A checkpoint written by ``gmatch train`` (e.g. ``checkpoints/default.pt``)."""
    matcher, conf, ckpt = _load(path)
    return Model(matcher, conf, ckpt, Path(path))


@dataclass
class TrainedRun:
    """What :func:`fit` returns: the model, its metrics on ``movies`` and its history."""

    model: Model
    metrics: dict
    movies: MovieSet = field(repr=False)
    seconds: float = 0.0
    best_step: int = 0
    cv: dict | None = None  # with train.folds >= 2
    history: list = field(default_factory=list, repr=False)
    run_dir: Path | None = None


def fit(
    overrides: list[str] | tuple[str, ...] = (),
    data: str | Path | None = None,
    out: str | Path | None = None,
    progress: bool = False,
    overwrite: bool = False,
) -> TrainedRun:
    """Train the default config with ``overrides`` (``["model.n_layers=1", "seed=2"]``,
    the CLI's key=value syntax) on the training pairs of ``data`` (default: the
    config's ``data.root``). With ``out`` the whole run folder is written as
    ``gmatch train --out`` writes it (model.pt, D.npy, metrics.json, ...)."""
    conf = load_config(None, [*overrides, *([f"data.root={data}"] if data else [])])
    movies = load_movielens(conf.data.root)
    feats = load_features(movies, conf, progress)
    if out is not None:
        run = RunDir(out, overwrite=overwrite)
        result, record = train_and_record(run, conf, movies, feats, progress, {"kind": "train"})
        metrics, run_dir = record["metrics"], run.path
        matcher, conf, ckpt = _load(run.path / "model.pt")
        model = Model(matcher, conf, ckpt, run.path / "model.pt")
    else:
        result = train(conf, movies, feats, progress)
        feats = result.feats or feats
        metrics, run_dir = split_metrics(predict_dist(result.model, feats), movies), None
        model = Model(
            result.model.eval(), conf, checkpoint_dict(result.model, conf, feats, result.best_step)
        )
    return TrainedRun(
        model, metrics, movies, result.seconds, result.best_step, result.cv, result.history, run_dir
    )


def topk(
    D,
    movies: MovieSet,
    query: int,
    k: int = 5,
    side: Literal["poster", "intro"] = "poster",
) -> list[dict]:
    """The ``k`` nearest candidates of one query under D, nearest first: for a poster
    query its nearest intros (row ``query``), for an intro query its nearest posters
    (column ``query``). Each row: ``rank`` (1-based), ``index``, ``id``, ``title``,
    ``distance``, ``genres``, ``correct`` (the query's own movie)."""
    D = torch.as_tensor(np.asarray(D) if not isinstance(D, torch.Tensor) else D)
    if side not in ("poster", "intro"):
        raise ValueError(f"side must be 'poster' or 'intro', not {side!r}")
    if not 0 <= query < len(D):
        raise IndexError(f"query {query} is not a movie index (0..{len(D) - 1})")
    scores = D[query] if side == "poster" else D[:, query]
    dist, idx = torch.topk(scores, min(k, len(scores)), largest=False)
    return [
        {
            "rank": r + 1,
            "index": int(i),
            "id": int(movies.ids[i]),
            "title": movies.titles[i],
            "distance": float(d),
            "genres": "|".join(movies.genres[i]),
            "correct": int(i) == query,
        }
        for r, (d, i) in enumerate(zip(dist.tolist(), idx.tolist()))
    ]
