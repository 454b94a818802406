"""The Python API (gmatch.api) on a tiny real folder: the same D and numbers as the CLI."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny

import gmatch

FAST = tiny()


@pytest.fixture(scope="module")
def run(tiny_dir, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("api") / "run"
    return gmatch.fit([*FAST, f"data.cache_dir={cache_dir}"], data=tiny_dir, out=out)


def test_fit_writes_the_run_the_cli_writes_and_its_model_gives_D(run, tiny_dir, cache_dir):
    movies = gmatch.load_movielens(tiny_dir)
    assert len(movies) == 48 and (run.run_dir / "COMPLETE").exists()
    D = run.model.distance(movies, cache_dir)
    assert isinstance(D, torch.Tensor) and D.shape == (48, 48)
    assert np.allclose(D.numpy(), np.load(run.run_dir / "D.npy"), atol=1e-5)
    # the metric, re-exported, on that D = the run's official numbers
    for dim in (0, 1):
        assert gmatch.get_acc(D, 0.05, dim) == run.metrics["official"][f"acc_dim{dim}"]
    loaded = gmatch.load_checkpoint(run.run_dir / "model.pt")
    assert torch.equal(loaded.distance(movies, cache_dir), D)


def test_fit_in_memory_equals_the_saved_run(run, tiny_dir, cache_dir):
    again = gmatch.fit([*FAST, f"data.cache_dir={cache_dir}"], data=tiny_dir)
    assert again.run_dir is None
    movies = again.movies
    D = again.model.distance(movies, cache_dir)
    assert np.allclose(D.numpy(), np.load(run.run_dir / "D.npy"), atol=1e-5)  # same seed
    assert again.metrics["official"] == pytest.approx(run.metrics["official"])
    other = gmatch.fit([*FAST, f"data.cache_dir={cache_dir}", "seed=1"], data=tiny_dir)
    assert not torch.equal(other.model.distance(movies, cache_dir), D)  # control: the seed


def test_topk_lists_the_nearest_candidates_of_a_query(run, tiny_dir, cache_dir):
    movies = gmatch.load_movielens(tiny_dir)
    D = run.model.distance(movies, cache_dir)
    rows = gmatch.topk(D, movies, query=3, k=5)
    assert [r["index"] for r in rows] == torch.argsort(D[3])[:5].tolist()
    assert [r["rank"] for r in rows] == [1, 2, 3, 4, 5]
    assert all(a["distance"] <= b["distance"] for a, b in zip(rows, rows[1:]))
    assert rows[0]["title"] == movies.titles[rows[0]["index"]]
    assert any(r["correct"] for r in rows) == (3 in [r["index"] for r in rows])
    cols = gmatch.topk(D, movies, query=3, k=5, side="intro")  # an intro's nearest posters
    assert [r["index"] for r in cols] == torch.argsort(D[:, 3])[:5].tolist()
    assert run.model.rank(movies, 3, k=5, D=D) == rows
    with pytest.raises(IndexError, match="query 48"):
        gmatch.topk(D, movies, query=48)
    with pytest.raises(ValueError, match="side"):
        gmatch.topk(D, movies, query=0, side="both")
