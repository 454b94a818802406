"""The full course data (2938 movies) with the shipped checkpoint: the README numbers
reproduce, the audit passes, and large-N streaming equals the dense metrics."""

import json

import pytest
import torch
from conftest import DATA, ROOT

from gmatch.checkpoint import load_checkpoint
from gmatch.cli import main
from gmatch.config import load_config
from gmatch.data import load_movielens
from gmatch.evaluate import predict_dist, split_metrics
from gmatch.features import load_features
from gmatch.metrics import evaluate_distance
from gmatch.stream import streamed_metrics, streamed_ranks
from gmatch.training import new_model

CKPT = ROOT / "checkpoints" / "default.pt"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def course(cache_dir):
    ms = load_movielens(DATA)
    model, conf, ckpt = load_checkpoint(CKPT)
    conf.data.cache_dir = str(cache_dir)
    feats = load_features(
        ms, conf, progress=False
    )  # ~1-2 min cold: EfficientNet (mpnet rows ship as seeds)
    return ms, model, conf, ckpt, feats


def test_checkpoint_reproduces_its_recorded_metrics(course):
    ms, model, conf, ckpt, feats = course
    recorded = json.loads((ROOT / "checkpoints" / "default.metrics.json").read_text())
    got = split_metrics(predict_dist(model, feats), ms)
    for block in ("official", "heldout"):
        for key in ("acc_dim0", "acc_dim1", "poster_to_intro/R@1"):
            assert got[block][key] == pytest.approx(recorded[block][key], abs=2e-3), (block, key)


def test_audit_on_full_data(course, cache_dir, capsys):
    rc = main(
        ["audit", "--checkpoint", str(CKPT), "--data", str(DATA), "--cache-dir", str(cache_dir)]
    )
    out = capsys.readouterr().out
    assert rc == 0, out


def test_streamed_metrics_equal_dense(course):
    ms, _, conf, ckpt, feats = course
    conf = load_config(None, ["model.n_layers=0"])
    torch.manual_seed(0)
    model = new_model(conf, feats).eval()
    v0, m0 = feats.tensors(None, 0)
    v1, m1 = feats.tensors(None, 1)
    dense = evaluate_distance(predict_dist(model, feats))
    lexical = feats.prior_blocks  # feature-block pairs: sparse (lexical) and set (pooled) priors
    stream = streamed_metrics(streamed_ranks(model, v0, m0, v1, m1, chunk=500, lexical=lexical))
    n = len(ms)
    for key, value in dense.items():
        # Chunked matmuls may round differently from the full one: allow 2 flips.
        tol = 2 / n if "acc" in key or "R@" in key else 2.0
        assert stream[key] == pytest.approx(value, abs=tol), key


def test_report_and_comparison_on_the_course_data(course, cache_dir, tmp_path):
    """The shipped checkpoint's run folder and a comparison with a seed-1 retrain, in Chromium."""
    from test_report import _chromium

    ev = tmp_path / "shipped"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(CKPT),
                "--data",
                str(DATA),
                "--cache-dir",
                str(cache_dir),
                "--out",
                str(ev),
                "--quiet",
            ]
        )
        == 0
    )
    assert main(["report", str(ev), "--query", "Toy Story (1995)"]) == 0
    dom = _chromium(
        tmp_path, (ev / "report.html").resolve().as_uri() + "#q=Jumanji", tmp_path / "r.png"
    )
    assert 'id="metrics"' in dom and "best held-out poster" in dom and 'class="query grid"' in dom
    assert '<div class="result"><b>Jumanji (1995)</b>' in dom
    seed1 = tmp_path / "seed1"
    assert (
        main(
            [
                "train",
                "--data",
                str(DATA),
                "--out",
                str(seed1),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                "seed=1",
                "train.folds=1",  # one model + refit: the comparison page, not the recipe, is tested
            ]
        )
        == 0
    )
    assert main(["report", str(ev), str(seed1), "--out", str(tmp_path / "cmp")]) == 0
    dom = _chromium(
        tmp_path, (tmp_path / "cmp" / "compare.html").resolve().as_uri(), tmp_path / "c.png"
    )
    assert 'id="compare"' in dom and "Largest gains of B" in dom
