"""Shipped feature seeds (data/features): written from the cache, read instead of local
rows, and extended for a second reader without losing the first one's rows."""

from __future__ import annotations

import numpy as np

from gmatch.features.cache import FeatureCache, write_rows, write_seed


def test_seed_keeps_earlier_rows_when_asked(tmp_path):
    cache, seeds = tmp_path / "cache", tmp_path / "seeds"
    rows = {"a": np.ones(4), "b": np.full(4, 2.0)}
    write_rows(cache / "enc.npz", list(rows), list(rows.values()), np.float32)
    write_seed(cache, "enc", ["a", "b"], seeds)
    write_rows(cache / "enc.npz", ["c"], [np.full(4, 3.0)], np.float32)  # another reader
    write_seed(cache, "enc", ["c"], seeds, keep=True)
    got = FeatureCache(tmp_path / "empty", "enc", seeds=(seeds,)).seed_rows
    assert sorted(got) == ["a", "b", "c"] and got["b"].dtype == np.float16
    assert np.array_equal(got["c"], np.full(4, 3.0, dtype=np.float16))
    write_seed(cache, "enc", ["c"], seeds)  # control: without keep the seed holds only c
    assert sorted(FeatureCache(tmp_path / "empty", "enc", seeds=(seeds,)).seed_rows) == ["c"]


def test_ragged_rows_read_back_and_a_changed_file_is_refused(tmp_path):
    """The text trunk cache (rows of different lengths) goes through the one reader;
    a file whose rows were changed after writing is rebuilt, not trusted."""
    from gmatch.features.cache import read_rows, write_ragged

    rows = {"a": np.ones((3, 2), np.float16), "b": np.full((1, 2), 2.0, np.float16)}
    path = tmp_path / "trunk.npz"
    write_ragged(path, rows)
    got = read_rows(path)
    assert sorted(got) == ["a", "b"] and all(np.array_equal(got[k], rows[k]) for k in rows)
    with np.load(path) as z:
        parts = dict(z)
    parts["lengths"] = np.array([2, 2])  # the same bytes, split differently
    np.savez(path, **parts)
    assert read_rows(path) == {}


def test_the_image_view_reads_shipped_rows_first(tmp_path, monkeypatch):
    """EfficientNet rows shipped beside a data set (data/features, float32: the rows the
    shipped checkpoint was trained on) are used as they are, without running the
    network. Control: without the seed the view is computed (other rows)."""
    from conftest import make_folder

    from gmatch.data import load_movielens
    from gmatch.encoders.image import EfficientNetLite0Encoder
    from gmatch.encoders.registry import build_encoder
    from gmatch.features import encoder_cache_key, extract

    spec = "image:efficientnet_lite0"
    ms = load_movielens(make_folder(tmp_path / "d" / "mini", n=12, n_train=8))
    computed = extract(ms, spec, tmp_path / "cache", False).values  # the control
    shipped = np.arange(12 * computed.shape[1], dtype=np.float32).reshape(12, -1) / 7
    key = encoder_cache_key(spec, build_encoder(spec))
    write_rows(tmp_path / "d" / "features" / f"{key}.npz", ms.poster_hashes(), shipped, np.float32)

    def refuse(*args):
        raise AssertionError("EfficientNet ran")

    monkeypatch.setattr(EfficientNetLite0Encoder, "encode", refuse)
    got = extract(ms, spec, tmp_path / "empty", False).values
    assert np.array_equal(got, shipped) and not np.allclose(computed, shipped)
