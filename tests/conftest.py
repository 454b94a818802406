"""Shared fixtures: the shipped course data and small real copies of it."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pytest

# isort: off
import gmatch  # noqa: F401 - first: its thread policy is set before torch loads
import torch

# isort: on

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "movielens"


# The tiny training config the tests share: MiniLM and EfficientNet views, two priors,
# a 32-wide dual encoder, 20 steps, one model (no folds). tiny() changes keys of it.
TINY = {
    "data.poster_views": "[image:efficientnet_lite0,ocr:minilm]",
    "data.intro_views": "[text:minilm,text:tfidf]",
    "model.prior": "[ocr:minilm=text:minilm@2,ocr:chars=text:chars@4]",
    "model.dim": "32",
    "train.steps": "20",
    "train.folds": "1",
    "train.eval_every": "10",
    "train.episode_sizes": "[16,32]",
    "train.warmup": "5",
}


def tiny(changes: dict | None = None, drop: tuple = ()) -> list[str]:
    """``key=value`` overrides of the tiny config, with ``changes`` (a value of None
    drops that key) and the keys in ``drop`` left out."""
    merged = {**TINY, **(changes or {})}
    return [f"{k}={v}" for k, v in merged.items() if v is not None and k not in drop]


def make_folder(
    dst: Path,
    n: int = 48,
    n_train: int = 32,
    train: bool = True,
    start: int = 0,
    ocr_seeds: bool = False,
) -> Path:
    """A real course-format folder with the first ``n`` movies that have posters.

    ``ocr_seeds``: beside it, the OCR caches shipped with the course data, named for it
    (``<parent>/ocr/<name>_rapidocr*.json``: what gmatch's reader wrote for these very
    posters), so features read no poster again. For the tests about something else
    than reading posters; the OCR tests and the cluster's OCR test read them."""
    dst.mkdir(parents=True, exist_ok=True)
    if ocr_seeds:
        (dst.parent / "ocr").mkdir(exist_ok=True)
        for seed in sorted((DATA.parent / "ocr").glob(f"{DATA.name}_rapidocr*.json")):
            name = dst.name + seed.name.removeprefix(DATA.name)
            shutil.copyfile(seed, dst.parent / "ocr" / name)
    (dst / "poster").mkdir(exist_ok=True)
    ids = sorted(int(p.stem) for p in (DATA / "poster").glob("*.jpg"))[start : start + n]
    keep = set(ids)
    with (
        open(DATA / "info.csv", newline="", encoding="utf-8") as f,
        open(dst / "info.csv", "w", newline="", encoding="utf-8") as g,
    ):
        reader = csv.DictReader(f)
        writer = csv.DictWriter(g, reader.fieldnames)
        writer.writeheader()
        for row in reader:
            if int(row["id"]) in keep:
                writer.writerow(row)
    for i in ids:
        shutil.copyfile(DATA / "poster" / f"{i}.jpg", dst / "poster" / f"{i}.jpg")
    if train:
        # Every third position stays held out.
        pos = [p for p in range(n) if p % 3 != 2][:n_train]
        (dst / "train.txt").write_text("\n".join(map(str, pos)) + "\n")
    return dst


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory) -> Path:
    return make_folder(tmp_path_factory.mktemp("data") / "tiny", n=48, n_train=32, ocr_seeds=True)


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def scramble_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Re-initialise every parameter to random values. A fresh unit's last ffn layer
    is zero (the unit is the identity), so a property test on a fresh model would
    never exercise attention."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model
