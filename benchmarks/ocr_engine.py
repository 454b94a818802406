"""The OCR engine's levers (detector side, recognizer batch widths, the memory arena,
worker processes) against RapidOCR's stock pipeline, measured in the same run."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.common import DATA
from gmatch.data import load_movielens
from gmatch.encoders import ocr
from gmatch.encoders.ocr import OCRConfig, ocr_lines, read_posters


def bench_ocr_recognizer(repeat: int = 5) -> list[dict]:
    """Why gmatch's engine runs one line per recognizer forward: the cost of a forward
    per padded column (a line is 48 px high) at batch 1, 6 (RapidOCR's batch) and 12
    (batching across posters), at widths a poster's lines are padded to; median of
    ``repeat``, 1 thread. Reference: batch 1 at the same width."""

    session = ocr.ocr_engine(OCRConfig(model="v4")).text_rec.rec.session
    rng = np.random.default_rng(0)
    rows = []
    for width in (320, 640, 1024):
        cost = {}
        for batch in (1, 6, 12):
            x = rng.random((batch, 3, 48, width), dtype=np.float32)
            session(x)  # warm-up
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                session(x)
                times.append(time.perf_counter() - t)
            cost[batch] = float(np.median(times)) / (batch * width) * 1e6
        for batch, us in cost.items():
            rows.append(
                {
                    "what": f"recognizer forward, width {width}, batch {batch}: us per column",
                    "value": us,
                    "reference": cost[1],
                    "note": f"median of {repeat}, 1 thread; reference: batch 1 at this width",
                }
            )
    return rows


def bench_ocr_levers(
    n: int = 96, repeat: int = 3, n_e2e: int = 480, full: bool = True
) -> list[dict]:
    """OCR levers: seconds per poster in one process (1 thread) of RapidOCR
    stock, gmatch's default, the default's settings on RapidOCR's own engine (the
    previous default: same lines, ``OCRConfig(model="v4", engine="rapidocr")``) and variants
    (detector side, recognition padding width), interleaved, median of ``repeat``;
    each variant's confident lines compared with the default's (share of posters read
    identically). Then the end-to-end rate of ``read_posters`` (2 worker processes,
    empty cache, ``n_e2e`` posters) for stock, the previous default, the default and the
    fast setting (``data.ocr_det_side=320 data.ocr_rec_width=96``); with ``full``, the
    previous default and the default end to end on all 2938 course posters too (their
    posters carry more text than the 480-poster slice; ~8 minutes)."""

    ms = load_movielens(DATA).subset(np.arange(200, 200 + n))
    stock = "RapidOCR stock (det 736, angle classifier)"
    previous = "det 480, no classifier, RapidOCR's engine (previous default)"
    default = "default (det 480, no classifier, gmatch engine)"
    fast = "det 320, recognition width 96"
    variants = {
        stock: OCRConfig(model="v4", det_limit_side_len=736, use_cls=True, engine="rapidocr"),
        previous: OCRConfig(model="v4", engine="rapidocr"),
        default: OCRConfig(model="v4"),
        "det 480, recognition width 96": OCRConfig(model="v4", rec_width=96),
        "det 384, recognition width 96": OCRConfig(
            model="v4", det_limit_side_len=384, rec_width=96
        ),
        fast: OCRConfig(model="v4", det_limit_side_len=320, rec_width=96),
    }
    times = {k: [] for k in variants}
    out = {}
    for conf in variants.values():
        ocr.read_one((ms.poster_paths[0], conf))  # warm-up (loads the models)
    for _ in range(repeat):
        for name, conf in variants.items():
            t = time.perf_counter()
            out[name] = [ocr.read_one((p, conf)) for p in ms.poster_paths]
            times[name].append((time.perf_counter() - t) / n)
    base = [ocr_lines(x) for x in out[default]]
    rows = []
    for name in variants:
        lines = [ocr_lines(x) for x in out[name]]
        same = np.mean([a == b for a, b in zip(lines, base)])
        raw_same = np.mean([a == b for a, b in zip(out[name], out[default])])
        rows.append(
            {
                "what": f"OCR s/poster, 1 process: {name}",
                "value": float(np.median(times[name])),
                "reference": float(np.median(times[stock])),
                "note": f"{np.mean([len(x) for x in lines]):.2f} confident lines/poster; "
                f"{same:.0%} of posters read as the default does ({raw_same:.0%} with "
                "every raw line and confidence equal); reference: stock",
            }
        )

    def end_to_end(movies, hashes, names):
        """Seconds and raw lines per variant, each from an empty cache."""
        sec, read = {}, {}
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                read[name] = read_posters(
                    movies.poster_paths,
                    hashes,
                    Path(tmp) / "c.json",
                    variants[name],
                    workers=2,
                    progress=False,
                )
                sec[name] = time.perf_counter() - t
        return sec, read

    sets = [
        (
            load_movielens(DATA).subset(np.arange(200, 200 + n_e2e)),
            (stock, previous, default, fast),
            stock,
            "stock",
        )
    ]
    if full:
        sets.append((load_movielens(DATA), (previous, default), previous, "previous default"))
    shipped = json.loads((DATA.parent / "ocr" / f"{DATA.name}_rapidocr.json").read_text())
    for movies, names, ref, ref_name in sets:
        hashes = movies.poster_hashes()  # once per set, outside the timed reads
        sec, read = end_to_end(movies, hashes, names)
        count = len(movies)
        for name, s in sec.items():
            note = (
                f"{count / s:.1f} posters/s end to end (pool start and model loading "
                f"included); reference: {ref_name}"
            )
            if name == default:  # the same lines? (raw text and confidence)
                same = sum(a == b for a, b in zip(read[name], read[previous]))
                cached = sum(shipped["items"].get(h) == x for h, x in zip(hashes, read[name]))
                note += (
                    f"; {same}/{count} posters read exactly as the previous default reads them, "
                    f"{cached}/{count} exactly as the shipped cache (data/ocr)"
                )
            rows.append(
                {
                    "what": f"read_posters, {count} new posters, 2 processes: {name} (s)",
                    "value": s,
                    "reference": sec[ref],
                    "note": note,
                }
            )
    return rows


def bench_ocr() -> list[dict]:
    """The suite: the engine's levers, then the recognizer's batch widths."""
    return bench_ocr_levers() + bench_ocr_recognizer()
