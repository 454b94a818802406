"""Reading posters better: word segmentation, mpnet weights, set views and pooled priors."""

import shutil

import numpy as np
import pytest
import torch

from gmatch.encoders.ocr import clean_ocr, ocr_lines, segment_words
from gmatch.encoders.registry import is_set_spec
from gmatch.features import FeatureBlock, extract
from gmatch.priors import PooledScorer, pair_scores
from gmatch.text import split_sentences
from gmatch.training import new_model


def test_segmentation_splits_runs_read_without_spaces():
    assert segment_words("grumpieroldmen") == "grumpier old men"
    assert segment_words("expecttheunexpected seektofind") == "expect the unexpected seek to find"
    assert (
        segment_words("walter matthau 1995") == "walter matthau 1995"
    )  # short words and numbers stay
    lines = [["GRUMPIEROLDMEN", 0.95], ["Walter Matthau", 0.9], ["xx", 0.2], ["1995", 0.99]]
    assert clean_ocr(lines) == "grumpieroldmen walter matthau"  # unsegmented: today's lexical input
    assert clean_ocr(lines, segment=True) == "grumpier old men walter matthau"
    assert ocr_lines(lines, segment=True) == ["grumpier old men", "walter matthau"]


def test_sentences_of_an_intro():
    text = 'A man (John) fights. He wins! "Why?" she asks. Mr. Smith goes to Washington... See full summary »'
    assert split_sentences(text) == [
        "A man (John) fights.",
        "He wins!",
        '"Why?" she asks.',
        "Mr. Smith goes to Washington",
    ]
    assert split_sentences("") == []


def _set_block(rng, n, dim, max_elems, spec="ocrlines:x"):
    counts = rng.integers(0, max_elems + 1, n)
    counts[0] = 0  # an item without elements
    owner = np.repeat(np.arange(n), counts)
    values = rng.normal(size=(len(owner), dim)).astype(np.float32)
    return FeatureBlock(spec, values, counts > 0, None, owner)


def _loop(a, b, n0, n1):
    """The pooled prior, literally: max over element pairs of their cosine (0 if a side is empty)."""
    out = np.zeros((n0, n1), dtype=np.float32)
    own0 = np.arange(n0) if a.owner is None else a.owner
    own1 = np.arange(n1) if b.owner is None else b.owner
    for i in range(n0):
        for j in range(n1):
            best = None
            for x in a.values[own0 == i]:
                for y in b.values[own1 == j]:
                    c = float(x @ y / np.linalg.norm(x) / np.linalg.norm(y))
                    best = c if best is None else max(best, c)
            out[i, j] = 0.0 if best is None else best
    return out


@pytest.mark.parametrize("dense_intro", [False, True])
def test_pooled_prior_equals_a_literal_loop(dense_intro):
    rng = np.random.default_rng(0)
    a = _set_block(rng, 9, 6, 4)
    if dense_intro:  # a dense view is a set of one element per item
        b = FeatureBlock("text:x", rng.normal(size=(7, 6)).astype(np.float32), np.ones(7, bool))
    else:
        b = _set_block(rng, 7, 6, 3, "sents:x")
    want = _loop(a, b, 9, 7)
    got = PooledScorer(a, b, chunk=2).scores().numpy()
    assert np.allclose(got, want, atol=1e-5)
    rows, cols = np.array([4, 0, 8]), np.array([6, 1])
    assert np.allclose(
        pair_scores(a, b, rows, cols, chunk=2).numpy(), want[rows][:, cols], atol=1e-5
    )
    # A subset of a set block keeps each item's elements.
    sub = a.subset(rows)
    assert np.allclose(PooledScorer(sub, b).scores().numpy(), want[rows], atol=1e-5)


def test_mpnet_weights_are_joined_and_hash_checked(tmp_path):
    pytest.importorskip("sentence_transformers")
    from importlib import metadata

    from gmatch.encoders.text import MPNET_PARTS, WeightsError, mpnet_path

    try:
        for name in MPNET_PARTS:
            metadata.distribution(name)
    except metadata.PackageNotFoundError:
        pytest.skip("all-mpnet-base-v2 parts not installed (make install installs them)")
    folder = mpnet_path(tmp_path)  # joins the five installed parts
    assert (folder / "model.safetensors").stat().st_size > 400e6
    with open(folder / "model.safetensors", "r+b") as f:  # tamper with one byte
        f.seek(1000)
        byte = f.read(1)
        f.seek(1000)
        f.write(bytes([byte[0] ^ 1]))
    with pytest.raises(WeightsError, match="not the official all-mpnet-base-v2 weights"):
        mpnet_path(tmp_path)
    shutil.rmtree(folder)
    with pytest.raises(WeightsError, match="sha256"):
        mpnet_path(tmp_path, expected_sha256="0" * 64)  # rebuilt, but not the expected file


def test_set_views_through_extract(tiny_dir, cache_dir):
    from gmatch.data import load_movielens

    ms = load_movielens(tiny_dir)
    lines = extract(ms, "ocrlines:minilm", cache_dir, progress=False)
    sents = extract(ms, "sents:minilm", cache_dir, progress=False)
    assert is_set_spec("ocrlines:minilm") and not is_set_spec("ocrseg:minilm")
    assert (
        lines.owner is not None
        and len(lines.owner) == len(lines.values)
        and lines.valid.shape == (len(ms),)
    )
    assert np.all(np.diff(lines.owner) >= 0) and sents.valid.all()
    assert len(sents.values) > len(ms)  # most intros have several sentences
    S = pair_scores(lines, sents)
    assert S.shape == (len(ms), len(ms)) and (S[~torch.from_numpy(lines.valid)] == 0).all()
    seg = extract(ms, "ocrseg:minilm", cache_dir, progress=False)
    raw = extract(ms, "ocr:minilm", cache_dir, progress=False)
    assert np.array_equal(seg.valid, raw.valid) and not np.allclose(seg.values, raw.values)
    with pytest.raises(ValueError, match="set view"):
        from gmatch.config import load_config
        from gmatch.features import load_features

        load_features(
            ms,
            load_config(
                None,
                [
                    f"data.root={tiny_dir}",
                    f"data.cache_dir={cache_dir}",
                    "data.intro_views=[sents:minilm]",
                ],
            ),
            progress=False,
        )


def test_line_level_prior_reaches_the_model(tiny_dir, cache_dir):
    """A set-view prior pair is a precomputed skip term: S moves by exactly w / tau * score."""
    from gmatch.config import load_config
    from gmatch.data import load_movielens
    from gmatch.features import load_features

    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            "model.prior=[ocr:chars=text:chars@4,ocrlines:minilm=sents:minilm@2]",
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    assert [(a.spec, b.spec) for a, b in feats.prior_blocks] == [
        ("ocr:chars", "text:chars"),
        ("ocrlines:minilm", "sents:minilm"),
    ]
    model = new_model(conf, feats).eval()
    inputs = feats.inputs()
    pooled = inputs["lexical"][1]
    assert pooled.abs().max() > 0.3
    with torch.no_grad():
        full = model(**inputs)["logits"]
        without = model(**{**inputs, "lexical": [inputs["lexical"][0], torch.zeros_like(pooled)]})[
            "logits"
        ]
    assert torch.allclose(full - without, 2 / conf.model.tau_init * pooled, atol=1e-4)


def test_streamed_ranks_with_a_line_prior_equal_dense():
    """Large-N mode scores a set-view prior chunk by chunk: same ranks as the dense D."""
    from gmatch.config import ModelConf
    from gmatch.metrics import evaluate_distance
    from gmatch.models import Matcher
    from gmatch.stream import streamed_metrics, streamed_ranks

    rng = np.random.default_rng(3)
    n = 150
    lines = _set_block(rng, n, 12, 4)
    intros = FeatureBlock("text:x", rng.normal(size=(n, 12)).astype(np.float32), np.ones(n, bool))
    model = Matcher([12], [12], ModelConf(dim=16, n_layers=0), lexical_weights=[3.0]).eval()
    v0 = [torch.from_numpy(rng.normal(size=(n, 12)).astype(np.float32))]
    v1 = [torch.from_numpy(intros.values)]
    m0, m1 = [torch.ones(n, dtype=torch.bool)], [torch.ones(n, dtype=torch.bool)]
    with torch.no_grad():
        D = model(v0, m0, v1, m1, lexical=[pair_scores(lines, intros)])["dist"]
    dense = evaluate_distance(D)
    stream = streamed_metrics(
        streamed_ranks(model, v0, m0, v1, m1, chunk=23, lexical=[(lines, intros)])
    )
    for key, value in dense.items():
        assert stream[key] == pytest.approx(value, abs=1e-9), key
    # The prior matters here: without it the ranks differ.
    with torch.no_grad():
        D0 = model(v0, m0, v1, m1, lexical=[torch.zeros(n, n)])["dist"]
    assert evaluate_distance(D0)["poster_to_intro/mean_rank"] != dense["poster_to_intro/mean_rank"]
