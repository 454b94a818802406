"""mpnet with int8 weights (``text:mpnet:int8``) vs the float model in ONNX Runtime (the
default): texts/s on the course's intros, OCR strings and OCR lines (interleaved, median
of 3), and how far the int8 embeddings move (cosine to the float ones, and whether each
text's nearest float embedding is still its own, or an identical text's).

    python -m benchmarks.run --text-int8      # writes benchmarks/TEXT_INT8.md

Whether the int8 features cost accuracy is a CV question (experiments/configs/
third_side.yaml, case ``v6s-736-int8``), not this table's.
"""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import DATA, ROOT
from gmatch.data import load_movielens
from gmatch.encoders.registry import build_encoder
from gmatch.features import poster_lines, poster_texts
from gmatch.text import strip_boilerplate


def bench_text_int8(repeat: int = 3) -> list[dict]:
    ms = load_movielens(DATA)
    texts = {
        "intros": [strip_boilerplate(t) for t in ms.intros[:256]],
        "segmented OCR strings": [
            t for t in poster_texts(ms, ROOT / "cache", False, segment=True) if t
        ][:256],
        "OCR lines": [x for ls in poster_lines(ms, ROOT / "cache", False) for x in ls][:1024],
    }
    encoders = {"float": build_encoder("text:mpnet"), "int8": build_encoder("text:mpnet:int8")}
    setup = {}
    for name, enc in encoders.items():
        t = time.perf_counter()
        enc.encode(texts["intros"][:8])  # load, export (and quantise), warm up
        setup[name] = time.perf_counter() - t
    rates: dict = {}
    out: dict = {}
    for _ in range(repeat):  # interleaved, so order does not pick the winner
        for what, items in texts.items():
            for name, enc in encoders.items():
                t = time.perf_counter()
                out[(what, name)] = enc.encode(items)
                rates.setdefault((what, name), []).append(len(items) / (time.perf_counter() - t))
    rows = []
    for what, items in texts.items():
        ref, got = out[(what, "float")], out[(what, "int8")]
        cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
        nearest = (got @ ref.T).argmax(1)  # a repeated line's twins count as its own
        own = float(np.mean([items[j] == items[i] for i, j in enumerate(nearest)]))
        rows.append(
            {
                "what": f"mpnet int8 {what}/s",
                "value": float(np.median(rates[(what, "int8")])),
                "reference": float(np.median(rates[(what, "float")])),
                "note": f"{len(items)} course texts, median of {repeat}, interleaved; reference: "
                f"float mpnet (the default); cosine to float min {cos.min():.4f} / mean "
                f"{cos.mean():.4f}; nearest float embedding its own: {own:.3f}",
            }
        )
    rows.append(
        {
            "what": "load + export (+ quantise) + warm-up (s)",
            "value": setup["int8"],
            "reference": setup["float"],
            "note": "once per process",
        }
    )
    return rows
