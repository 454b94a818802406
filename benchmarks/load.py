"""Speed when the machine is shared: each stage quiet, then beside a neighbour job.

    python -m benchmarks.run --load            # writes benchmarks/LOAD.md

Stages (each in its own process, 2 torch threads unless said, timed for a fixed wall
time after a warm-up): EfficientNet-Lite0 at micro-batch 1, poster OCR (gmatch's
engine, 1 thread), mpnet on intros (batches of 32), training steps of the default-width
dual encoder (512 pairs). Neighbours: a torch job (EfficientNet, 2 threads, default
OpenMP policy), an onnxruntime job (RapidOCR's stock pipeline, default threads) and a
second gmatch job (the same stage, the same policy). Policies: **before** = torch loaded
with OpenMP's default wait policy (what gmatch did before issue 30; the naive reference),
**gmatch** = ``import gmatch`` first (OMP_WAIT_POLICY=PASSIVE, ONNX Runtime sessions
without spinning; gmatch.threads). Each cell: items/s, and its ratio to the same stage
quiet under the same policy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from benchmarks.common import ROOT
from benchmarks.load_stages import STAGES

NEIGHBOURS = ("none", "torch", "onnxruntime", "gmatch")


def _neighbour(kind: str, policy: str, stage: str) -> subprocess.Popen | None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if kind == "none":
        return None
    if kind == "torch":  # a foreign torch job: default policy
        cmd = [sys.executable, "-m", "benchmarks.load_child", "before", "efficientnet", "0"]
    elif kind == "onnxruntime":  # a foreign ORT job: RapidOCR's stock pipeline, its threads
        cmd = [sys.executable, "-c", _STOCK_OCR]
    else:  # a second gmatch job doing the same work under the same policy
        cmd = [sys.executable, "-m", "benchmarks.load_child", policy, stage, "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    time.sleep(5.0)  # let it load its models and start working
    return proc


_STOCK_OCR = """
import sys, numpy as np
sys.path.insert(0, '.')
from rapidocr_onnxruntime import RapidOCR
from benchmarks.load_stages import posters
engine = RapidOCR()
arrays = [np.ascontiguousarray(np.asarray(im)[:, :, ::-1]) for im in posters(8)]
while True:
    for a in arrays:
        engine(a)
"""


def _measure(policy: str, stage: str, seconds: float) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.load_child", policy, stage, str(seconds)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["rate"]


def bench_load(seconds: float = 5.0, stages=STAGES, neighbours=NEIGHBOURS) -> str:
    rates: dict = {}
    for kind in neighbours:
        for stage in stages:
            for policy in ("before", "gmatch"):
                proc = _neighbour(kind, policy, stage)
                try:
                    rates[(stage, kind, policy)] = _measure(policy, stage, seconds)
                finally:
                    if proc is not None:
                        proc.kill()
                        proc.wait()
    unit = {
        "efficientnet": "posters/s",
        "ocr": "posters/s",
        "mpnet": "intros/s",
        "train": "steps/s",
    }
    lines = [
        "| stage | beside | before: items/s (× quiet) | **gmatch: items/s (× quiet)** | gmatch / before |",
        "|---|---|---|---|---|",
    ]
    for stage in stages:
        for kind in neighbours:
            b, g = rates[(stage, kind, "before")], rates[(stage, kind, "gmatch")]
            qb, qg = rates[(stage, "none", "before")], rates[(stage, "none", "gmatch")]
            lines.append(
                f"| {stage} ({unit[stage]}) | {kind} | {b:.2f} ({b / qb:.2f}×) | "
                f"**{g:.2f} ({g / qg:.2f}×)** | {g / b:.2f} |"
            )
    worst = min(
        rates[(s, k, "gmatch")] / rates[(s, "none", "gmatch")]
        for s in stages
        for k in neighbours
        if k in ("torch", "onnxruntime")
    )
    return (
        f"Each cell: {seconds:g} s of wall time after a warm-up, one process per measurement; "
        "the neighbour starts 5 s before and is killed after. Worst gmatch stage beside a "
        f"torch or onnxruntime neighbour: **{worst:.2f}× quiet** (target ≥ 0.4×).\n\n"
        + "\n".join(lines)
        + "\n"
    )
