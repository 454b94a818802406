"""Speed and memory benchmarks: each suite prints a table and writes it to benchmarks/.

    python -m benchmarks.run                 # the default suite -> RESULTS.md (~10 min, 2 cores)
    python -m benchmarks.run --quick         # the same with smaller N, fewer items
    python -m benchmarks.run --extraction    # one suite (see --help for the list)

Every timing has a naive reference measured in the same run. A suite is one module of
this package, named in :data:`SUITES` with its output file and title; the module is
imported only when its suite runs.
"""

from __future__ import annotations

import argparse
import importlib
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from benchmarks.common import ROOT, rows_table, write_report

__all__ = ["Suite", "SUITES", "main"]


@dataclass(frozen=True)
class Suite:
    """``module.function()`` measures; ``output`` is the file under benchmarks/. The
    function returns rows (a table with ratios is built) or a markdown body of its own."""

    module: str
    function: str
    output: str
    title: str
    help: str
    note: str = ""
    digits: int = 3
    args: tuple = ()


SUITES = {
    "extraction": Suite(
        "extraction",
        "bench_extraction",
        "EXTRACTION.md",
        "feature extraction",
        "EfficientNet-Lite0 variants, MiniLM and cache hits",
        "; every variant warmed up, EfficientNet variants timed interleaved, median of 3",
        args=(256,),
    ),
    "ocr": Suite(
        "ocr_engine",
        "bench_ocr",
        "OCR.md",
        "poster OCR: the engine's levers and the recognizer",
        "the OCR engine's levers vs RapidOCR's stock pipeline",
    ),
    "reading": Suite(
        "reading",
        "bench_reading",
        "READING.md",
        "reading posters: mpnet vs MiniLM, the line prior, D",
        "mpnet vs MiniLM encoding, the max-pooled line prior, D of the course data",
        "; torch threads 2",
    ),
    "matcher": Suite(
        "matcher",
        "bench_matcher",
        "MATCHER.md",
        "cost of D per matcher variant",
        "D for the course data per matcher variant",
        "; torch threads 2",
    ),
    "finetune": Suite(
        "towers",
        "bench_finetune",
        "FINETUNE.md",
        "fine-tuning the towers: tuned tails vs whole towers",
        "a forward + backward of the tuned tower tails vs the whole towers",
        "; torch threads 2; median of 3, variants interleaved",
    ),
    "ray": Suite(
        "cluster",
        "bench_cluster",
        "RAY.md",
        "more than one machine (Ray)",
        "extraction here vs on a local Ray cluster of 1 and 2 node processes",
        "; one machine, so the node processes share its cores",
        digits=1,
    ),
    "ocr-quality": Suite(
        "ocr_quality",
        "bench_ocr_quality",
        "OCR_QUALITY.md",
        "reading quality of the OCR readers",
        "the OCR readers' title-word recall and speed",
    ),
    "text-int8": Suite(
        "text_int8",
        "bench_text_int8",
        "TEXT_INT8.md",
        "mpnet with int8 weights vs the float model",
        "mpnet int8 vs float in ONNX Runtime: texts/s and how far the embeddings move",
        "; torch threads 2",
    ),
    "new-posters": Suite(
        "new_posters",
        "bench_new_posters",
        "NEW_POSTERS.md",
        "new posters end to end",
        "a cold `gmatch features` of 400 new movies, per stage: default, one reading, naive",
    ),
    "training": Suite(
        "training",
        "bench_training",
        "TRAINING.md",
        "training the default: one process vs worker processes",
        "the default's fold models and refits in one process vs one worker per core",
        digits=1,
    ),
    "large-n": Suite(
        "scoring",
        "bench_large_n",
        "LARGE_N.md",
        "large-N mode with the default's priors",
        "large-N mode at 30k (reference vs fused) and 100k, the default's three priors",
    ),
    "load": Suite(
        "load",
        "bench_load",
        "LOAD.md",
        "speed when the machine is shared",
        "each stage quiet vs beside a torch, an onnxruntime and a second gmatch job",
    ),
}
DEFAULT = Suite(
    "scoring", "results", "RESULTS.md", "speed and memory", "the default suite", args=(False,)
)


def run_suite(
    suite: Suite, command: str, out: Path | None = None, args: tuple | None = None
) -> str:
    """Measure one suite and write its report."""
    fn = getattr(importlib.import_module(f"benchmarks.{suite.module}"), suite.function)
    t0 = time.time()
    got = fn(*(suite.args if args is None else args))
    body = got if isinstance(got, str) else rows_table(got, suite.digits)
    return write_report(
        out or ROOT / "benchmarks" / suite.output,
        suite.title,
        command,
        body,
        time.time() - t0,
        suite.note,
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="the default suite with smaller N")
    p.add_argument("--out", type=Path, help="output file of the default suite")
    for name, suite in SUITES.items():
        p.add_argument(f"--{name}", action="store_true", help=f"{suite.help} ({suite.output})")
    p.add_argument(
        "--fresh-clone",
        nargs="*",
        choices=["run", "test"],
        help="time a cold `make run` and/or the CI command on a fresh clone (FRESH_CLONE.md)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    torch.set_num_threads(2)
    if args.fresh_clone is not None:
        which = tuple(args.fresh_clone) or ("run", "test")
        suite = Suite(
            "fresh_clone", "bench_fresh_clone", "FRESH_CLONE.md", "fresh-clone wall times", ""
        )
        run_suite(suite, "python -m benchmarks.run --fresh-clone " + " ".join(which), args=(which,))
        return 0
    chosen = [name for name in SUITES if getattr(args, name.replace("-", "_"))]
    for name in chosen:
        run_suite(SUITES[name], f"python -m benchmarks.run --{name}")
    if not chosen:
        command = "python -m benchmarks.run" + (" --quick" if args.quick else "")
        run_suite(DEFAULT, command, args.out, (args.quick,))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
