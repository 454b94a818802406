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
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "movielens"
STAGES = ("efficientnet", "ocr", "mpnet", "train")
NEIGHBOURS = ("none", "torch", "onnxruntime", "gmatch")


def _posters(n: int):
    from gmatch.data import load_image

    paths = sorted((DATA / "poster").glob("*.jpg"), key=lambda p: int(p.stem))[::13][:n]
    return [load_image(p) for p in paths]


def _stage_fn(stage: str):
    """A callable doing one unit of the stage's work, and the items it handles."""
    import numpy as np
    import torch

    if stage == "efficientnet":
        from gmatch.encoders.registry import build_encoder

        enc, images = build_encoder("image:efficientnet_lite0"), _posters(8)
        return lambda: enc.encode(images), len(images)
    if stage == "ocr":
        from gmatch.encoders.ocr import OCRConfig, ocr_engine

        engine = ocr_engine(OCRConfig())
        arrays = [np.ascontiguousarray(np.asarray(im)[:, :, ::-1]) for im in _posters(4)]
        return lambda: [engine(a) for a in arrays], len(arrays)
    if stage == "mpnet":
        from gmatch.data import load_movielens
        from gmatch.encoders.registry import build_encoder

        enc, texts = build_encoder("text:mpnet"), load_movielens(DATA).intros[:32]
        return lambda: enc.encode(texts), len(texts)
    if stage == "train":
        from gmatch.config import ModelConf
        from gmatch.losses import total_loss
        from gmatch.models import Matcher

        g = torch.Generator().manual_seed(0)
        model = Matcher([1280, 768, 256], [768, 256], ModelConf(), [(1, 0)])
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        v0 = [torch.randn(512, d, generator=g) for d in (1280, 768, 256)]
        v1 = [torch.randn(512, d, generator=g) for d in (768, 256)]
        m0, m1 = [torch.ones(512, dtype=torch.bool)] * 3, [torch.ones(512, dtype=torch.bool)] * 2

        def step():
            loss = total_loss(model(v0, m0, v1, m1, all_layers=True), "ce", 0.5)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        return step, 1
    raise ValueError(f"unknown stage {stage!r} (one of {STAGES})")


def run_stage(stage: str, seconds: float, threads: int = 2) -> float:
    """Items/s of ``stage`` over ``seconds`` of wall time after one warm-up unit."""
    import torch

    torch.set_num_threads(threads)
    fn, items = _stage_fn(stage)
    fn()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += items
    return done / (time.perf_counter() - t0)


def _child(argv: list[str]) -> int:
    """``python -m benchmarks.load POLICY STAGE SECONDS`` (SECONDS 0: run until killed)."""
    policy, stage, seconds = argv[0], argv[1], float(argv[2])
    if policy == "before":
        os.environ.pop("OMP_WAIT_POLICY", None)
        import torch  # noqa: F401 - OpenMP starts with its default wait policy

        import gmatch.threads as threads

        threads.ort_no_spin = lambda opts: None  # nor ONNX Runtime's no-spin options
        import gmatch.encoders.image as image
        import gmatch.encoders.ocr as ocr

        image.ort_no_spin = ocr.ort_no_spin = threads.ort_no_spin
    else:
        import gmatch  # noqa: F401 - gmatch.threads.configure() before torch loads
    if seconds <= 0:
        while True:
            run_stage(stage, 60.0)
    print(json.dumps({"rate": run_stage(stage, seconds)}))
    return 0


def _neighbour(kind: str, policy: str, stage: str) -> subprocess.Popen | None:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if kind == "none":
        return None
    if kind == "torch":  # a foreign torch job: default policy
        cmd = [sys.executable, "-m", "benchmarks.load", "before", "efficientnet", "0"]
    elif kind == "onnxruntime":  # a foreign ORT job: RapidOCR's stock pipeline, its threads
        cmd = [sys.executable, "-c", _STOCK_OCR]
    else:  # a second gmatch job doing the same work under the same policy
        cmd = [sys.executable, "-m", "benchmarks.load", policy, stage, "0"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
    time.sleep(5.0)  # let it load its models and start working
    return proc


_STOCK_OCR = """
import sys, numpy as np
sys.path.insert(0, '.')
from rapidocr_onnxruntime import RapidOCR
from benchmarks.load import _posters
engine = RapidOCR()
arrays = [np.ascontiguousarray(np.asarray(im)[:, :, ::-1]) for im in _posters(8)]
while True:
    for a in arrays:
        engine(a)
"""


def _measure(policy: str, stage: str, seconds: float) -> float:
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.load", policy, stage, str(seconds)],
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


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
