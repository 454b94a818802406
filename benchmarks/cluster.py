"""More than one machine: extraction of new posters in this process vs a local Ray
cluster of 1 and 2 node processes."""

from __future__ import annotations

import contextlib
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT
from gmatch.cli import main as gmatch
from gmatch.distributed import local_cluster


def bench_ray(n: int = 96) -> list[dict]:
    """Extraction of ``n`` new posters (EfficientNet-Lite0 + OCR) and MiniLM on their intros:
    this process (torch on 2 threads, OCR in 2 processes) vs a Ray cluster of 1 and of 2
    node processes (one CPU each; Ray Data actor pools), each from an empty cache. Wall
    time includes starting the actors and loading the models, as a user pays it."""

    folder = Path(tempfile.mkdtemp()) / "posters"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_folder

    make_folder(folder, n=n, n_train=n // 2)
    views = [
        "data.poster_views=[image:efficientnet_lite0,ocr:minilm]",
        "data.intro_views=[text:minilm]",
        "model.prior=[]",
    ]
    times = {}
    for label, nodes in (
        ("this process", 0),
        ("Ray, 1 node process", 1),
        ("Ray, 2 node processes", 2),
    ):
        cache = Path(tempfile.mkdtemp())
        # The cluster starts before the clock and stops after it.
        with local_cluster(nodes, port=6393) if nodes else contextlib.nullcontext() as address:
            extra = ["--ray", address] if nodes else []  # options before the key=value overrides
            t = time.perf_counter()
            gmatch(
                [
                    "features",
                    "--quiet",
                    *extra,
                    "--data",
                    str(folder),
                    f"data.cache_dir={cache}",
                    *views,
                ]
            )
            times[label] = time.perf_counter() - t
        shutil.rmtree(cache)
    base = times["Ray, 1 node process"]
    return [
        {
            "what": f"{label}: {n} new posters, seconds",
            "value": sec,
            "reference": base,
            "note": f"{n / sec:.2f} posters/s end to end; reference: Ray with 1 node process",
        }
        for label, sec in times.items()
    ]


def bench_cluster() -> list[dict]:
    """The suite: 96 and 384 new posters."""
    return bench_ray(96) + bench_ray(384)
