"""Checkpoints: a trained matcher with its config, feature specs and fitted text
statistics in one ``weights_only`` file; saving, loading and scoring with them."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from gmatch.config import Config, ConfigError, merge, saved_config, to_dict
from gmatch.data import MovieSet
from gmatch.encoders.registry import parse_spec
from gmatch.evaluate import predict_dist
from gmatch.features import Features, extract_features, ocr_config
from gmatch.finetune import tuned_features
from gmatch.io import atomic_torch_save
from gmatch.models import Ensemble, Matcher, build_matcher
from gmatch.models.inputs import FeatureLayout

__all__ = [
    "CheckpointError",
    "checkpoint_dict",
    "save_checkpoint",
    "load_checkpoint",
    "checkpoint_features",
    "checkpoints_dist",
]

FORMAT = "gmatch-matcher-1"


def checkpoint_dict(
    model: torch.nn.Module,
    conf: Config,
    feats: Features,
    best_step: int = 0,
    history: list | None = None,
) -> dict:
    """Config + weights + encoder specs, dims and fitted states: what a checkpoint holds
    (:func:`save_checkpoint` writes it; :func:`gmatch.api.fit` keeps it in memory)."""
    return {
        "format": FORMAT,
        "config": to_dict(conf),
        "state_dict": model.state_dict(),
        **feats.checkpoint_entries(),
        "genre_names": feats.genre_names if model.genre_head is not None else [],
        "best_step": best_step,
        "history": history or [],
        # models averaged (model.members, or a K-fold run's bag of fold models)
        "members": len(model.members) if isinstance(model, Ensemble) else 1,
    }


def save_checkpoint(
    path: Path,
    model: torch.nn.Module,
    conf: Config,
    feats: Features,
    best_step: int = 0,
    history: list | None = None,
) -> None:
    """:func:`checkpoint_dict`, written atomically."""
    atomic_torch_save(Path(path), checkpoint_dict(model, conf, feats, best_step, history))


class CheckpointError(ValueError):
    """A checkpoint that cannot be used; the message says why."""


def load_checkpoint(path: str | Path) -> tuple[Matcher | Ensemble, Config, dict]:
    """Load a checkpoint written by :func:`save_checkpoint` (``weights_only``): the
    model in eval mode, its config (keys of earlier versions upgraded) and the raw dict."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - truncated / not a torch file
        reason = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise CheckpointError(
            f"{path}: cannot read checkpoint ({reason}); it is truncated or not a gmatch checkpoint"
        ) from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a gmatch matcher checkpoint (format key missing)")
    try:
        conf = merge(Config(), saved_config(ckpt["config"]))
    except ConfigError as e:
        raise CheckpointError(
            f"{path}: its config is not valid for this version of gmatch ({e})"
        ) from None
    try:
        for spec in ckpt["poster_views"] + ckpt["intro_views"]:
            parse_spec(spec)  # names an encoder this installation has
        model_conf = conf.model
        if ckpt.get("members", conf.model.members) != conf.model.members:  # a bag of folds
            model_conf = dataclasses.replace(conf.model, members=ckpt["members"])
        model = build_matcher(
            model_conf,
            FeatureLayout.from_checkpoint(ckpt),
            len(ckpt.get("genre_names", [])),
            conf.runtime,
        )
    except ConfigError as e:
        raise CheckpointError(f"{path}: {e}") from None
    try:
        model.load_state_dict(ckpt["state_dict"], strict=True)
    except RuntimeError as e:
        first = next(
            (line.strip() for line in str(e).splitlines()[1:] if line.strip()),
            str(e).splitlines()[0],
        )
        raise CheckpointError(
            f"{path}: weights do not fit the model its config describes ({first})"
        ) from None
    return model.eval(), conf, ckpt


def checkpoint_features(
    path, ckpt: dict, conf: Config, ms: MovieSet, cache_dir=None, progress: bool = True
) -> Features:
    """The features a checkpoint reads, on ``ms`` (its fitted text statistics reused);
    a CheckpointError if the encoders give other widths than it was trained on."""
    feats = extract_features(
        ms,
        ckpt["poster_views"],
        ckpt["intro_views"],
        cache_dir or conf.data.cache_dir,
        progress,
        ckpt.get("encoder_states"),
        conf.model.prior,
        poster_sets=ckpt.get("poster_sets", []),
        intro_sets=ckpt.get("intro_sets", []),
        ocr=ocr_config(conf.data),  # the OCR settings it was trained with
    )
    if ckpt.get("finetune"):  # the node views read through the checkpoint's tuned towers
        feats = tuned_features(
            feats, ms, ckpt["finetune"], cache_dir or conf.data.cache_dir, progress
        )
    layout = feats.layout
    got = (list(layout.poster_dims), list(layout.intro_dims))
    if got != (ckpt["poster_dims"], ckpt["intro_dims"]):
        raise CheckpointError(
            f"{path}: built for feature dims {ckpt['poster_dims']}/{ckpt['intro_dims']} "
            f"but the encoders give {got}; re-train or use the same encoders"
        )
    return feats


def checkpoints_dist(
    paths, ms: MovieSet, cache_dir=None, progress: bool = True, loaded=None
) -> torch.Tensor:
    """D [N x N] of one checkpoint, or of several whose scores are averaged (an
    ensemble of separately trained models, each on its own features). ``loaded``:
    the checkpoints' ``load_checkpoint`` results, if the caller has them already."""
    loaded = loaded or [load_checkpoint(path) for path in paths]
    S = 0
    for path, (model, conf, ckpt) in zip(paths, loaded):
        feats = checkpoint_features(path, ckpt, conf, ms, cache_dir, progress)
        S = S - predict_dist(model, feats).double() / len(loaded)
    return (-S).float()
