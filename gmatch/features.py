"""Encoder registry and the on-disk feature cache.

A feature spec names a view and an encoder, ``<view>:<encoder>``:

=====================  =====================================================
``image:efficientnet_lite0``  poster pixels, ImageNet EfficientNet-Lite0 (shipped)
``image:hf-clip:<p>``  poster pixels, CLIP image tower (hub name or local path)
``text:minilm``        intro text, all-MiniLM-L6-v2 (shipped)
``text:tfidf``         intro text, TF-IDF + SVD fitted on *training intros only*
``text:chars``         intro text, sparse character 3-5-gram TF-IDF (training intros
                       only); a *lexical* view: too wide for node features, it
                       enters the model only as a prior pair (``ocr:chars=text:chars``)
``text:st:<p>``        intro text, any sentence-transformers model
``text:hf-clip:<p>``   intro text, CLIP text tower
``text:mpnet``         intro text, all-mpnet-base-v2 (PyPI split zip, hash-checked)
``ocr:<text encoder>`` poster text read by RapidOCR (lines joined), then a text encoder above
``ocrseg:<encoder>``   the same with runs like "grumpieroldmen" split into words
``ocrlines:<encoder>`` a *set* view: each segmented OCR line of a poster on its own
``sents:<encoder>``    a *set* view: each sentence of an intro on its own
=====================  =====================================================

Set views hold ``values`` [T x D] for all elements and ``owner`` [T] (the item of
each element); like the sparse views they enter the model only as prior pairs,
scored by max-pooled cosine (``ocrlines:mpnet=sents:mpnet``, see gmatch.lexical).

Features are cached per item under ``cache_dir``: one ``.npz`` per encoder
(name + settings), rows keyed by the item's content hash (poster bytes or
text), so a second run, a subset or a shuffled copy of the data extracts
nothing. A cache file that fails to load or whose checksum does not match is
rebuilt, never trusted.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gmatch.config import ConfigError
from gmatch.data import DataError, MovieSet

__all__ = ["FeatureBlock", "ENCODERS", "SPARSE_ENCODERS", "SET_VIEWS", "build_encoder", "extract",
           "is_sparse_spec", "is_set_spec", "is_prior_only_spec", "poster_texts", "poster_lines"]

log = logging.getLogger(__name__)


@dataclass
class FeatureBlock:
    """One view's features for N items; ``valid[i]`` is False where the view is
    empty (a poster with no text), so the model can use a learned vector."""

    spec: str
    values: np.ndarray  # [N x D] float32 (scipy CSR for the sparse lexical views; [T x D] for set views)
    valid: np.ndarray  # [N] bool
    state: dict | None = None  # fitted encoder state (TF-IDF), saved with checkpoints
    owner: np.ndarray | None = None  # set views: [T] item of each element (sorted); None otherwise

    @property
    def sparse(self) -> bool:
        return not isinstance(self.values, np.ndarray)

    def subset(self, idx) -> FeatureBlock:
        """The block of items ``idx`` (in that order)."""
        idx = np.asarray(idx, dtype=np.int64)
        if self.owner is None:
            return FeatureBlock(self.spec, self.values[idx], self.valid[idx], self.state)
        from gmatch.lexical import set_elements, set_starts

        elems, owner = set_elements(set_starts(self.owner, len(self.valid)), idx)
        return FeatureBlock(self.spec, self.values[elems], self.valid[idx], self.state, owner)


def _efficientnet(arg: str | None, **kw):
    from gmatch.encoders.image import EfficientNetLite0Encoder

    return EfficientNetLite0Encoder(**kw)


def _mpnet(arg: str | None, **kw):
    from gmatch.encoders.text import SentenceTransformerEncoder, mpnet_path

    return SentenceTransformerEncoder(mpnet_path, name="mpnet", batch_size=32,
                                      known={"max_seq_length": 384, "dim": 768}, **kw)  # fmt: skip


def _minilm(arg: str | None, **kw):
    from gmatch.encoders.text import SentenceTransformerEncoder, minilm_path

    return SentenceTransformerEncoder(minilm_path, name="minilm", known={"max_seq_length": 256, "dim": 384}, **kw)


def _st(arg: str | None, **kw):
    from gmatch.encoders.text import SentenceTransformerEncoder

    return SentenceTransformerEncoder(arg, **kw)


def _hf_clip(arg: str | None, view: str = "text", **kw):
    from gmatch.encoders.image import HFClipImageEncoder
    from gmatch.encoders.text import HFClipTextEncoder

    return HFClipImageEncoder(arg) if view == "image" else HFClipTextEncoder(arg)


# Registry: encoder name -> (loader, kind). Contract: loader(arg) returns an
# object with ``name``, ``settings()`` and ``encode(list) -> [B x D]``.
ENCODERS: dict[str, tuple[Callable, str]] = {
    "efficientnet_lite0": (_efficientnet, "image"),
    "minilm": (_minilm, "text"),
    "mpnet": (_mpnet, "text"),
    "st": (_st, "text"),
    "hf-clip": (_hf_clip, "both"),
    "tfidf": (None, "text"),  # fitted per data set, see extract()
    "chars": (None, "text"),  # fitted per data set, sparse (lexical prior only)
}


# Encoders whose features are sparse lexical vectors: usable in prior pairs only.
SPARSE_ENCODERS = ("chars",)


# Views whose items are sets of elements (prior pairs only, max-pooled).
SET_VIEWS = ("ocrlines", "sents")
VIEWS = ("image", "text", "ocr", "ocrseg", *SET_VIEWS)


def is_sparse_spec(spec: str) -> bool:
    return parse_spec(spec)[1] in SPARSE_ENCODERS


def is_set_spec(spec: str) -> bool:
    return parse_spec(spec)[0] in SET_VIEWS


def is_prior_only_spec(spec: str) -> bool:
    """Sparse lexical and set views: usable in prior pairs, never as node features."""
    return is_sparse_spec(spec) or is_set_spec(spec)


def parse_spec(spec: str) -> tuple[str, str, str | None]:
    view, _, rest = spec.partition(":")
    name, _, arg = rest.partition(":")
    if view not in VIEWS:
        raise ConfigError(f"feature spec {spec!r}: view must be one of {', '.join(VIEWS)}")
    if name not in ENCODERS:
        raise ConfigError(f"feature spec {spec!r}: unknown encoder {name!r}; known: {sorted(ENCODERS)}")
    kind = ENCODERS[name][1]
    want = "image" if view == "image" else "text"
    if kind not in (want, "both"):
        raise ConfigError(f"feature spec {spec!r}: {name} is a {kind} encoder, not for view {view}")
    return view, name, arg or None


def build_encoder(spec: str):
    view, name, arg = parse_spec(spec)
    loader = ENCODERS[name][0]
    return loader(arg, view=view) if name == "hf-clip" else loader(arg)


def _sha(obj) -> str:
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


class _Cache:
    """Rows keyed by item hash in ``<dir>/<key>.npz`` plus a checksum.

    ``seeds``: folders of read-only caches shipped with a data set (e.g.
    ``data/features/`` beside the course data, float16 to halve their size); a row
    found there is used *instead of* a locally computed one, so every machine
    scores the course data on the same numbers.
    """

    def __init__(self, cache_dir: Path, key: str, seeds: tuple[Path, ...] = ()):
        self.path = Path(cache_dir) / f"{key}.npz"
        self.rows = self._read(self.path)
        self.seed_rows: dict[str, np.ndarray] = {}
        for folder in seeds:
            self.seed_rows.update(self._read(Path(folder) / f"{key}.npz"))

    @staticmethod
    def _read(path: Path) -> dict[str, np.ndarray]:
        if not path.exists():
            return {}
        try:
            with np.load(path, allow_pickle=False) as z:
                keys, values, checksum = z["keys"], z["values"], str(z["checksum"])
            if _checksum(keys, values) != checksum:
                raise ValueError("checksum mismatch")
            return dict(zip(keys.tolist(), values))
        except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt
            log.warning("feature cache %s is corrupt or stale (%s); rebuilding", path, e)
            return {}

    def get(self, key: str) -> np.ndarray | None:
        row = self.seed_rows.get(key)
        return self.rows.get(key) if row is None else row

    def save(self) -> None:
        _write_cache(self.path, list(self.rows), list(self.rows.values()), np.float32)


def _write_cache(path: Path, keys, rows, dtype) -> None:
    """``<path>`` = item keys, their rows as ``dtype`` and a checksum, written atomically."""
    keys = np.array(keys, dtype="U64")
    values = np.stack(rows).astype(dtype)
    tmp = path.with_suffix(".tmp.npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(tmp, keys=keys, values=values, checksum=np.array(_checksum(keys, values)))
    tmp.replace(path)


def _checksum(keys: np.ndarray, values: np.ndarray) -> str:
    h = hashlib.sha1(keys.astype("U64").tobytes())
    h.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return h.hexdigest()


def _cached_encode(cache_dir, key, item_keys, items, encode_fn, batch_size, desc, progress, seeds=()):
    cache = _Cache(cache_dir, key, seeds)
    todo = {}
    for k, item in zip(item_keys, items):
        if cache.get(k) is None:
            todo.setdefault(k, item)
    if todo:
        keys, values = list(todo), list(todo.values())
        for s in tqdm(range(0, len(keys), batch_size), desc=desc, disable=not progress):
            out = encode_fn(values[s : s + batch_size])
            cache.rows.update(zip(keys[s : s + batch_size], out))
        cache.save()
    return np.stack([cache.get(k) for k in item_keys]).astype(np.float32)


def write_seed(cache_dir, key: str, item_keys: list[str], out_dir: Path, dtype=np.float16) -> Path:
    """Write the cached rows ``item_keys`` of encoder ``key`` as a read-only seed cache
    (``<out_dir>/<key>.npz``, ``dtype``) to ship beside a data set."""
    rows = _Cache(cache_dir, key).rows
    keys = sorted(set(item_keys))
    out = Path(out_dir) / f"{key}.npz"
    _write_cache(out, keys, [rows[k] for k in keys], dtype)
    return out


def _poster_ocr(ms: MovieSet, cache_dir: Path, progress: bool = True):
    from gmatch.encoders.ocr import OCRConfig, read_posters

    conf = OCRConfig()
    cache_file = Path(cache_dir) / f"ocr_rapidocr_{conf.key()}.json"
    # The OCR cache shipped beside the course data (data/ocr/movielens_rapidocr.json).
    seed = Path(ms.root).parent / "ocr" / f"{Path(ms.root).name}_rapidocr.json"
    lines = read_posters(ms.poster_paths, ms.poster_hashes(), cache_file, conf,
                         progress=progress, seeds=(seed,) if seed.exists() else ())  # fmt: skip
    return lines, conf


def poster_texts(ms: MovieSet, cache_dir: Path, progress: bool = True, segment: bool = False) -> list[str]:
    """Cleaned OCR text of every poster (empty string: no text found); ``segment``
    splits runs read without spaces into words."""
    from gmatch.encoders.ocr import clean_ocr

    lines, conf = _poster_ocr(ms, cache_dir, progress)
    return [clean_ocr(x, conf.min_confidence, segment) for x in lines]


def poster_lines(ms: MovieSet, cache_dir: Path, progress: bool = True) -> list[list[str]]:
    """Confident, segmented OCR lines of every poster (an empty list: no text)."""
    from gmatch.encoders.ocr import ocr_lines

    lines, conf = _poster_ocr(ms, cache_dir, progress)
    return [ocr_lines(x, conf.min_confidence, segment=True) for x in lines]


def _cache_key(spec: str, enc) -> str:
    """Cache file name of a spec's encoder: encoder name + hash of its settings."""
    return f"{parse_spec(spec)[1]}-{_sha(enc.settings())}"


def _text_encoder(spec: str):
    """The text encoder of any text-like spec (``ocr:mpnet`` -> ``text:mpnet``'s),
    one per process: the views of one encoder share its (lazily loaded) weights."""
    return _shared_encoder("text:" + spec.split(":", 1)[1])


@functools.lru_cache(maxsize=8)
def _shared_encoder(spec: str):
    return build_encoder(spec)


def text_cache_key(spec: str) -> str:
    """Cache file name of a text spec's encoder (shared by every view of that encoder)."""
    return _cache_key(spec, _text_encoder(spec))


def _text_encode(spec: str, texts: list[str], cache_dir: Path, batch_size: int, progress: bool, seeds=()):
    """[len(texts) x D] embeddings of non-empty texts through the spec's text encoder
    (cached per text hash; shipped ``seeds`` first)."""
    enc = _text_encoder(spec)
    key = _cache_key(spec, enc)
    values = np.zeros((len(texts), enc.dim), dtype=np.float32)
    idx = [i for i, t in enumerate(texts) if t]
    if idx:
        keys = [hashlib.sha1(texts[i].encode()).hexdigest() for i in idx]
        values[idx] = _cached_encode(cache_dir, key, keys, [texts[i] for i in idx], enc.encode,
                                     batch_size, f"{spec} texts", progress, seeds)  # fmt: skip
    return values


def feature_seeds(ms: MovieSet) -> tuple[Path, ...]:
    """Shipped read-only feature caches of a data set: ``<root>/../features/``."""
    folder = Path(ms.root).parent / "features"
    return (folder,) if folder.is_dir() else ()


def extract(
    ms: MovieSet,
    spec: str,
    cache_dir: str | Path = "cache",
    progress: bool = True,
    batch_size: int = 32,
    tfidf_state: dict | None = None,
) -> FeatureBlock:
    """Features of every movie in ``ms`` for one spec (see module docstring).

    ``text:tfidf`` / ``ocr:tfidf`` fit their vocabulary and IDF on
    ``ms.intros[ms.train_idx]`` only, or reuse a fitted ``tfidf_state``
    (from a checkpoint), which lets a folder without train.txt be scored.
    """
    view, name, arg = parse_spec(spec)
    cache_dir = Path(cache_dir)
    if view == "image":
        from gmatch.encoders.image import load_image

        enc = build_encoder(spec)
        key = _cache_key(spec, enc)
        values = _cached_encode(
            cache_dir, key, ms.poster_hashes(), ms.poster_paths,
            lambda paths: enc.encode([load_image(p) for p in paths]),
            batch_size, f"{spec} posters", progress,
        )  # fmt: skip
        return FeatureBlock(spec, values, np.ones(len(ms), dtype=bool))

    if view in SET_VIEWS:
        if name in SPARSE_ENCODERS or name == "tfidf":
            raise ConfigError(f"feature spec {spec!r}: set views ({', '.join(SET_VIEWS)}) take a sentence encoder")
        from gmatch.text import split_sentences

        lists = poster_lines(ms, cache_dir, progress) if view == "ocrlines" else [split_sentences(t) for t in ms.intros]
        owner = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
        flat = [x for items in lists for x in items]
        values = _text_encode(spec, flat, cache_dir, 4 * batch_size, progress, feature_seeds(ms))
        return FeatureBlock(spec, values, np.array([len(x) > 0 for x in lists]), None, owner)

    if view == "text":
        texts = [_strip(t) for t in ms.intros]
    else:
        texts = poster_texts(ms, cache_dir, progress, segment=view == "ocrseg")
    valid = np.array([bool(t) for t in texts])
    state = None
    if name in SPARSE_ENCODERS or name == "tfidf":
        from gmatch.text import TrainOnlyTfidf

        if tfidf_state is not None:
            tfidf = TrainOnlyTfidf.from_state(tfidf_state)
        elif len(ms.train_idx) == 0:
            raise DataError(
                f"{spec}: TF-IDF needs training intros (train.txt in {ms.root}) to fit on, "
                "or a checkpoint that carries a fitted TF-IDF"
            )
        else:
            kind = "char_wb" if name == "chars" else "word"
            tfidf = _fit_tfidf(tuple(ms.intros[i] for i in ms.train_idx), kind)
        state = tfidf.state_dict()
        if name in SPARSE_ENCODERS:
            return FeatureBlock(spec, tfidf.transform_sparse(texts), valid, state)
        values = tfidf.transform(texts)
    else:
        values = _text_encode(spec, texts, cache_dir, 4 * batch_size, progress, feature_seeds(ms))
    values[~valid] = 0
    return FeatureBlock(spec, values, valid, state)


@functools.lru_cache(maxsize=4)
def _fit_tfidf(train_intros: tuple[str, ...], analyzer: str = "word"):
    """One fit per set of training intros (text:tfidf and ocr:tfidf share it)."""
    from gmatch.text import TrainOnlyTfidf

    try:
        if analyzer == "word":
            return TrainOnlyTfidf().fit(list(train_intros))
        return TrainOnlyTfidf(dim=0, min_df=2, max_features=0, analyzer=analyzer).fit(list(train_intros))
    except ValueError as e:  # sklearn: no term left after min_df / max_df
        raise DataError(
            f"train.txt: {len(train_intros)} training intros are too few to fit the TF-IDF views "
            f"({e}); add training pairs or drop the tfidf/chars views and priors"
        ) from None


def _strip(text: str) -> str:
    from gmatch.text import strip_boilerplate

    return strip_boilerplate(text)
