"""New posters end to end: a cold ``gmatch features`` of movies the caches have never
seen (every default view: EfficientNet-Lite0, the OCR reader, mpnet on the OCR string,
the OCR lines and the intros, TF-IDF), in a fresh process each, so model loading and the
OCR pool start are paid as a user pays them.

    python -m benchmarks.run --new-posters      # writes benchmarks/NEW_POSTERS.md

Four runs, measured in the same benchmark run: the default (the text encoders in ONNX
Runtime, each poster read at detector sides 480, 736 and 320); the previous default (sides
480 and 736); one reading at 480 (``data.ocr_extra_sides=[]``, the default before that);
and the naive reference, one reading with the text encoders in torch (the default before
that one). Per stage: wall seconds inside
the stage and its posters/s (the stages run one after the other; OCR uses every core
through its worker processes).
"""

from __future__ import annotations

import collections
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import gmatch.encoders.registry as registry
import gmatch.encoders.text as text
import gmatch.features.reading as reading
import gmatch.features.views as views
from benchmarks.common import ROOT
from gmatch.cli import main

sys.path.insert(0, str(ROOT / "tests"))
from conftest import make_folder  # noqa: E402 - the tests' copier of real course movies

__all__ = ["bench_new_posters"]

N, START = 400, 1000  # course posters 1000..1399 (by id order), copied to a fresh folder


def _child(backend: str, n: int, start: int, overrides: list[str]) -> dict:
    """One cold ``gmatch features`` of ``n`` posters; seconds per stage and in all."""
    seconds = collections.Counter()

    def timed(label, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] += time.perf_counter() - t

        return wrapper

    reading.read_posters = timed("OCR (read posters)", reading.read_posters)
    views.EXTRACTORS["image"] = timed("EfficientNet-Lite0", views.EXTRACTORS["image"])
    text.SentenceTransformerEncoder.encode = timed(
        "mpnet (OCR strings, lines, intros)", text.SentenceTransformerEncoder.encode
    )
    for name in ("mpnet", "minilm"):  # the registry is the extension point: swap the backend
        loader, kind = registry.ENCODERS[name]
        registry.ENCODERS[name] = (functools.partial(loader, backend=backend), kind)
    tmp = Path(tempfile.mkdtemp())
    data = make_folder(tmp / "new", n=n, n_train=n // 2, start=start)
    t = time.perf_counter()
    args = ["features", "--quiet", "--data", str(data), f"data.cache_dir={tmp / 'cache'}"]
    main(args + overrides)
    return {"total": time.perf_counter() - t, **seconds}


def _run(backend: str, n: int, start: int, overrides: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.new_posters", backend, str(n), str(start), *overrides],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


RUNS = {  # label: (text encoder backend, config overrides)
    "gmatch (default: sides 480 + 736 + 320)": ("onnx", []),
    "previous default (sides 480 + 736)": ("onnx", ["data.ocr_extra_sides=[736]"]),
    "one reading (data.ocr_extra_sides=[])": ("onnx", ["data.ocr_extra_sides=[]"]),
    "naive: one reading, torch text encoders": ("torch", ["data.ocr_extra_sides=[]"]),
}


def bench_new_posters(n: int = N, start: int = START) -> str:
    """The default, one reading, and one reading with the torch text encoders; one fresh
    process each, the same posters."""
    runs = {label: _run(backend, n, start, over) for label, (backend, over) in RUNS.items()}
    first, *_, naive = runs
    stages = [k for k in runs[first] if k != "total"] + ["total"]
    head = " | ".join(f"{label} (s) | posters/s" for label in runs)
    lines = [
        f"{n} course movies copied to a fresh folder with an empty cache and no shipped "
        f"caches beside it (ids in order from position {start}); default config unless named.",
        "",
        f"| stage | {head} | naive / default |",
        "|---" * (2 + 2 * len(runs)) + "|",
    ]
    for stage in stages:
        name = "end to end" if stage == "total" else stage
        cells = []
        for r in runs.values():
            sec = r.get(stage, float("nan"))
            cells.append(f"{sec:.1f} | {n / sec:.2f}")
        ratio = runs[naive].get(stage, float("nan")) / runs[first].get(stage, float("nan"))
        lines.append(f"| {name} | {' | '.join(cells)} | {ratio:.2f} |")
    return "\n".join(lines) + "\n"


if (
    __name__ == "__main__"
):  # one measured process: `python -m benchmarks.new_posters BACKEND N START [OVERRIDES]`
    print(json.dumps(_child(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:])))
