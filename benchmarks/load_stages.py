"""The stages the load benchmark times (each in its own process: benchmarks.load_child)."""

from __future__ import annotations

import time

import numpy as np
import torch

from benchmarks.common import DATA
from gmatch.config import ModelConf
from gmatch.data import load_image, load_movielens
from gmatch.encoders.ocr import OCRConfig, ocr_engine
from gmatch.encoders.registry import build_encoder
from gmatch.losses import total_loss
from gmatch.models import Matcher

STAGES = ("efficientnet", "ocr", "mpnet", "train")


def posters(n: int):

    paths = sorted((DATA / "poster").glob("*.jpg"), key=lambda p: int(p.stem))[::13][:n]
    return [load_image(p) for p in paths]


def stage_fn(stage: str):
    """A callable doing one unit of the stage's work, and the items it handles."""

    if stage == "efficientnet":
        enc, images = build_encoder("image:efficientnet_lite0"), posters(8)
        return lambda: enc.encode(images), len(images)
    if stage == "ocr":
        engine = ocr_engine(OCRConfig())
        arrays = [np.ascontiguousarray(np.asarray(im)[:, :, ::-1]) for im in posters(4)]
        return lambda: [engine(a) for a in arrays], len(arrays)
    if stage == "mpnet":
        enc, texts = build_encoder("text:mpnet"), load_movielens(DATA).intros[:32]
        return lambda: enc.encode(texts), len(texts)
    if stage == "train":
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

    torch.set_num_threads(threads)
    fn, items = stage_fn(stage)
    fn()
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        fn()
        done += items
    return done / (time.perf_counter() - t0)
