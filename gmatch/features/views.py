"""Extraction per view: a feature spec (``<view>:<encoder>``) is parsed once into a
:class:`gmatch.encoders.registry.View`; its kind picks how it is extracted
(:data:`EXTRACTORS`), its encoder and settings name its cache file."""

from __future__ import annotations

import functools
import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gmatch.config import ConfigError
from gmatch.data import DataError, MovieSet, load_image
from gmatch.encoders.image import REGION_GRID, EfficientNetLite0Encoder
from gmatch.encoders.ocr import OCRConfig
from gmatch.encoders.registry import SET_VIEWS, View, build_encoder
from gmatch.features.blocks import FeatureBlock
from gmatch.features.cache import cached_encode, settings_hash
from gmatch.features.reading import poster_lines, poster_texts
from gmatch.text import TrainOnlyTfidf, split_sentences, strip_boilerplate

__all__ = ["EXTRACTORS", "extract", "encoder_cache_key", "text_cache_key", "feature_seeds"]


def encoder_cache_key(spec: str, enc) -> str:
    """Cache file name of a spec's encoder: encoder name + hash of its settings (and of
    its fine-tuned weights, if any: :mod:`gmatch.finetune`)."""
    settings = enc.settings()
    if getattr(enc, "tuned", None):
        settings = {**settings, "tuned": enc.tuned}
    return f"{View.parse(spec).encoder}-{settings_hash(settings)}"


@functools.lru_cache(maxsize=8)
def shared_encoder(spec: str):
    """One encoder per ``text:`` spec and process: the views of one encoder share its
    (lazily loaded) weights."""
    return build_encoder(spec)


def text_cache_key(spec: str) -> str:
    """Cache file name of a text spec's encoder (shared by every view of that encoder)."""
    return encoder_cache_key(spec, shared_encoder(View.parse(spec).text_spec))


def feature_seeds(ms: MovieSet) -> tuple[Path, ...]:
    """Shipped read-only feature caches of a data set: ``<root>/../features/``."""
    folder = Path(ms.root).parent / "features"
    return (folder,) if folder.is_dir() else ()


def text_encode(view: View, texts, cache_dir, batch_size, progress, seeds=(), enc=None):
    """[len(texts) x D] embeddings of non-empty texts through the view's text encoder
    (or ``enc``; cached per text hash; shipped ``seeds`` first)."""
    tuned = enc is not None
    enc = enc or shared_encoder(view.text_spec)
    values = np.zeros((len(texts), enc.dim), dtype=np.float32)
    idx = [i for i, t in enumerate(texts) if t]
    if idx:
        values[idx] = cached_encode(
            cache_dir,
            encoder_cache_key(view.spec, enc),
            [hashlib.sha1(texts[i].encode()).hexdigest() for i in idx],
            [texts[i] for i in idx],
            enc.encode,
            batch_size,
            f"{view.spec} texts",
            progress,
            seeds,
            remote=None if tuned else (view.text_spec, str),
        )
    return values


@dataclass
class Request:
    """What one extraction is asked for, beyond the view and the movies."""

    cache_dir: Path
    progress: bool = True
    batch_size: int = 32
    tfidf_state: dict | None = None
    enc: object = None
    ocr: OCRConfig | None = None


def _image(view: View, ms: MovieSet, r: Request) -> FeatureBlock:
    enc = r.enc or build_encoder(view.spec)
    values = cached_encode(
        r.cache_dir,
        encoder_cache_key(view.spec, enc),
        ms.poster_hashes(),
        ms.poster_paths,
        lambda paths: enc.encode([load_image(p) for p in paths]),
        r.batch_size,
        f"{view.spec} posters",
        r.progress,
        seeds=() if r.enc is not None else feature_seeds(ms),  # shipped rows first
        remote=None if r.enc is not None else (view.spec, lambda path: Path(path).read_bytes()),
    )
    return FeatureBlock(view.spec, values, np.ones(len(ms), dtype=bool))


def _regions(view: View, ms: MovieSet, r: Request) -> FeatureBlock:
    """``regions:efficientnet_lite0``: grid cells of each poster's feature map as a set
    (cached per poster hash like the pooled image view, under their own key)."""
    enc = build_encoder(view.spec)
    if not isinstance(enc, EfficientNetLite0Encoder):
        raise ConfigError(f"feature spec {view.spec!r}: regions need image:efficientnet_lite0")
    cells = REGION_GRID[0] * REGION_GRID[1]
    settings = {**enc.settings(), "grid": list(REGION_GRID)}
    flat = cached_encode(
        r.cache_dir,
        f"{view.encoder}-regions-{settings_hash(settings)}",
        ms.poster_hashes(),
        ms.poster_paths,
        lambda paths: enc.encode_regions([load_image(p) for p in paths]).reshape(len(paths), -1),
        r.batch_size,
        f"{view.spec} posters",
        r.progress,
    )
    owner = np.repeat(np.arange(len(ms)), cells)
    valid = np.ones(len(ms), dtype=bool)
    return FeatureBlock(view.spec, flat.reshape(len(ms) * cells, -1), valid, None, owner)


def _set(view: View, ms: MovieSet, r: Request) -> FeatureBlock:
    """A set view: every OCR line / intro sentence embedded on its own, ``owner`` per row."""
    if view.fitted:
        raise ConfigError(
            f"feature spec {view.spec!r}: set views ({', '.join(SET_VIEWS)}) take a sentence encoder"
        )
    if view.kind == "ocrlines":
        lists = poster_lines(ms, r.cache_dir, r.progress, r.ocr)
    else:
        lists = [split_sentences(t) for t in ms.intros]
    owner = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
    flat = [x for items in lists for x in items]
    values = text_encode(view, flat, r.cache_dir, 4 * r.batch_size, r.progress, feature_seeds(ms))
    return FeatureBlock(view.spec, values, np.array([len(x) > 0 for x in lists]), None, owner)


def _text(view: View, ms: MovieSet, r: Request) -> FeatureBlock:
    """Intro text (``text:``) or poster text (``ocr:``, ``ocrseg:``) through a text encoder."""
    if view.kind == "text":
        texts = [strip_boilerplate(t) for t in ms.intros]
    else:
        texts = poster_texts(ms, r.cache_dir, r.progress, segment=view.kind == "ocrseg", ocr=r.ocr)
    valid = np.array([bool(t) for t in texts])
    if view.fitted:
        return fitted_block(view, ms, texts, valid, r.tfidf_state)
    seeds = feature_seeds(ms)
    values = text_encode(view, texts, r.cache_dir, 4 * r.batch_size, r.progress, seeds, r.enc)
    values[~valid] = 0
    return FeatureBlock(view.spec, values, valid)


def fitted_block(view: View, ms: MovieSet, texts, valid, tfidf_state) -> FeatureBlock:
    """TF-IDF views, fitted on the training intros (or a checkpoint's fitted state)."""
    if tfidf_state is not None:
        tfidf = TrainOnlyTfidf.from_state(tfidf_state)
    elif len(ms.train_idx) == 0:
        raise DataError(
            f"{view.spec}: TF-IDF needs training intros (train.txt in {ms.root}) to fit on, "
            "or a checkpoint that carries a fitted TF-IDF"
        )
    else:
        kind = "char_wb" if view.encoder == "chars" else "word"
        tfidf = fit_tfidf(tuple(ms.intros[i] for i in ms.train_idx), kind)
    values = tfidf.transform(texts, sparse=view.sparse)
    if not view.sparse:
        values[~valid] = 0
    return FeatureBlock(view.spec, values, valid, tfidf.state_dict())


@functools.lru_cache(maxsize=4)
def fit_tfidf(train_intros: tuple[str, ...], analyzer: str = "word"):
    """One fit per set of training intros (text:tfidf and ocr:tfidf share it)."""
    try:
        if analyzer == "word":
            return TrainOnlyTfidf().fit(list(train_intros))
        return TrainOnlyTfidf(dim=0, min_df=2, max_features=0, analyzer=analyzer).fit(
            list(train_intros)
        )
    except ValueError as e:  # sklearn: no term left after min_df / max_df
        raise DataError(
            f"train.txt: {len(train_intros)} training intros are too few to fit the TF-IDF views "
            f"({e}); add training pairs or drop the tfidf/chars views and priors"
        ) from None


# View kind -> how it is extracted.
EXTRACTORS = {
    "image": _image,
    "regions": _regions,
    "ocrlines": _set,
    "sents": _set,
    "text": _text,
    "ocr": _text,
    "ocrseg": _text,
}


def extract(
    ms: MovieSet,
    spec: str,
    cache_dir: str | Path = "cache",
    progress: bool = True,
    batch_size: int = 32,
    tfidf_state: dict | None = None,
    enc=None,
    ocr: OCRConfig | None = None,
) -> FeatureBlock:
    """Features of every movie in ``ms`` for one spec (see :mod:`gmatch.encoders.registry`).

    ``text:tfidf`` / ``ocr:tfidf`` fit their vocabulary and IDF on
    ``ms.intros[ms.train_idx]`` only, or reuse a fitted ``tfidf_state``
    (from a checkpoint), which lets a folder without train.txt be scored.
    ``enc``: an encoder object to use instead of the spec's (a fine-tuned one,
    :mod:`gmatch.finetune`; ``image:`` and ``text:`` views), cached under its own key.
    ``ocr``: the OCR settings of poster-text views (default :class:`OCRConfig`,
    i.e. ``data.ocr_*`` at their defaults; :func:`gmatch.features.ocr_config`).
    """
    view = View.parse(spec)
    if enc is not None and view.kind not in ("image", "text"):
        raise ConfigError(f"{spec}: only image: and text: views take a given encoder")
    request = Request(Path(cache_dir), progress, batch_size, tfidf_state, enc, ocr)
    return EXTRACTORS[view.kind](view, ms, request)
