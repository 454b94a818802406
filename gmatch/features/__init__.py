"""Features: extraction per view, the on-disk cache, and the container the model reads.

- :mod:`.views`: a feature spec (``<view>:<encoder>``, see :mod:`gmatch.encoders.registry`)
  parsed once into a :class:`View` (gmatch.encoders.registry); :func:`extract` gives
  its :class:`FeatureBlock`.
- :mod:`.reading`: the poster text of the OCR views (the configured reader, cached).
- :mod:`.cache`: the one cache API (rows keyed by content hash, checksummed, shipped
  seeds first), used by every writer, fine-tuning included.
- :mod:`.container`: :class:`Features`, the blocks of both sides of a MovieSet, which
  builds model inputs; :func:`load_features` extracts a config's views into it.

Set views hold ``values`` [T x D] for all elements and ``owner`` [T] (the item of
each element); like the sparse views they enter the model only as prior pairs,
scored by max-pooled cosine (``ocrlines:mpnet=sents:mpnet``, see :mod:`gmatch.priors`),
or as local nodes.
"""

from gmatch.encoders.registry import View
from gmatch.features.blocks import FeatureBlock
from gmatch.features.cache import FeatureCache, distributed, write_seed
from gmatch.features.container import Features, extract_features, load_features
from gmatch.features.reading import (
    OCR_THRESHOLDS,
    ocr_config,
    ocr_seeds,
    poster_lines,
    poster_ocr,
    poster_texts,
)
from gmatch.features.views import encoder_cache_key, extract, feature_seeds, text_cache_key

__all__ = [
    "FeatureBlock",
    "Features",
    "FeatureCache",
    "View",
    "load_features",
    "extract_features",
    "extract",
    "feature_seeds",
    "encoder_cache_key",
    "poster_texts",
    "ocr_config",
    "ocr_seeds",
    "poster_ocr",
    "OCR_THRESHOLDS",
    "poster_lines",
    "text_cache_key",
    "write_seed",
    "distributed",
]
