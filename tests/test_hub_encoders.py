"""Hub / local-path encoders, exercised on local folders: a tiny randomly initialised
CLIP written with transformers' own save_pretrained, and MiniLM by path."""

import json
import string

import numpy as np
import pytest

from gmatch.data import load_movielens
from gmatch.features import extract


@pytest.fixture(scope="module")
def tiny_clip(tmp_path_factory):
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    d = tmp_path_factory.mktemp("tinyclip")
    chars = list(string.ascii_lowercase + string.digits + ".,'!?-")
    vocab = {c: i for i, c in enumerate(chars)}
    vocab.update({c + "</w>": len(chars) + i for i, c in enumerate(chars)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (d / "vocab.json").write_text(json.dumps(vocab))
    (d / "merges.txt").write_text("#version: 0.2\n")
    tok = CLIPTokenizer(str(d / "vocab.json"), str(d / "merges.txt"))
    eos = vocab["<|endoftext|>"]
    cfg = CLIPConfig(
        text_config=dict(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            max_position_embeddings=77,
            bos_token_id=vocab["<|startoftext|>"],
            eos_token_id=eos,
            pad_token_id=eos,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        ),
        projection_dim=16,
    )
    CLIPModel(cfg).save_pretrained(d)
    tok.save_pretrained(d)
    CLIPImageProcessor(
        size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}
    ).save_pretrained(d)
    return d


def test_hf_clip_towers_from_a_local_path(tiny_clip, tiny_dir, tmp_path):
    ms = load_movielens(tiny_dir).subset(np.arange(5))
    img = extract(ms, f"image:hf-clip:{tiny_clip}", tmp_path, progress=False)
    txt = extract(ms, f"text:hf-clip:{tiny_clip}", tmp_path, progress=False)
    assert img.values.shape == (5, 16) and txt.values.shape == (5, 16)
    assert np.isfinite(img.values).all() and img.values.std(0).min() > 0  # posters differ


def test_sentence_transformers_by_path_equals_shipped_minilm(tiny_dir, cache_dir):
    from gmatch.encoders.text import minilm_path

    ms = load_movielens(tiny_dir).subset(np.arange(4))
    a = extract(ms, "text:minilm", cache_dir, progress=False).values
    b = extract(ms, f"text:st:{minilm_path()}", cache_dir, progress=False).values
    assert np.allclose(a, b, atol=1e-5)


def test_bad_specs():
    with pytest.raises(ValueError, match="unknown encoder"):
        extract(None, "image:resnet9000")
    with pytest.raises(ValueError, match="is a text encoder, not for view image"):
        extract(None, "image:minilm")
