import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from gmatch.metrics import (
    DegenerateDistanceError,
    evaluate_distance,
    get_acc,
    rank_metrics,
    true_ranks,
)


def get_acc_loop(D, ratio=0.05, dim=1):
    """The SPEC's definition, literally."""
    N = len(D)
    k = int(ratio * N)
    _, topk = D.topk(k, dim=dim, largest=False)
    if dim == 0:
        topk = topk.T
    return float(np.mean([i in topk[i] for i in range(N)]))


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("dim", [0, 1])
@pytest.mark.parametrize("ratio", [0.05, 0.1, 0.5])
def test_get_acc_matches_loop(seed, dim, ratio):
    g = torch.Generator().manual_seed(seed)
    N = 200
    D = torch.rand(N, N, generator=g)
    D -= 0.5 * torch.eye(N) * (seed / 4)  # planted signal of varying strength
    assert get_acc(D, ratio, dim) == pytest.approx(get_acc_loop(D, ratio, dim))


@pytest.mark.parametrize("dim", [0, 1])
def test_ties_count_against_the_query(dim):
    """With ties the SPEC loop depends on topk's tie order; get_acc gives the loop's
    answer for the order least favourable to the model: the literal loop on D with
    the diagonal nudged up by less than any gap between distinct values."""
    g = torch.Generator().manual_seed(1)
    D = torch.randint(0, 4, (120, 120), generator=g).double()  # many ties
    pessimistic = D + 1e-6 * torch.eye(120, dtype=torch.float64)
    assert get_acc(D, 0.05, dim) == get_acc_loop(pessimistic, 0.05, dim)
    optimistic = D - 1e-6 * torch.eye(120, dtype=torch.float64)
    assert get_acc_loop(optimistic, 0.05, dim) > get_acc(D, 0.05, dim)  # the tie rule matters here
    ranks = true_ranks(D, 1 if dim == 1 else 0)
    loop_ranks = true_ranks(pessimistic, 1 if dim == 1 else 0)
    assert np.array_equal(ranks, loop_ranks)


def test_get_acc_is_the_exact_fraction():
    D = torch.rand(97, 97, generator=torch.Generator().manual_seed(3))
    hits = sum(i in D[i].topk(4, largest=False).indices for i in range(97))
    assert get_acc(D, 0.05, 1) == hits / 97  # exactly, not a float32 mean


def test_dim_direction():
    # Poster 0's nearest intro is intro 0, but intro 0's nearest poster is poster 1.
    D = torch.tensor([[0.1, 0.5, 0.9], [0.0, 0.8, 0.7], [0.9, 0.3, 0.2]])
    assert get_acc(D, 0.34, dim=1) == pytest.approx(2 / 3)  # rows: posters 0 and 2 hit
    assert get_acc(D, 0.34, dim=0) == pytest.approx(1 / 3)  # columns: only intro 2 hits


def test_degenerate_distance_rejected():
    D = torch.rand(50, 50)
    D[3] = 1.0
    with pytest.raises(DegenerateDistanceError, match="constant row"):
        evaluate_distance(D)
    with pytest.raises(DegenerateDistanceError, match="constant column"):
        evaluate_distance(torch.rand(50, 50).index_fill_(1, torch.tensor([7]), 0.0))
    with pytest.raises(DegenerateDistanceError):
        evaluate_distance(torch.zeros(50, 50))


def test_one_non_finite_entry_anywhere_is_refused():
    """check_distance finds NaN and +-inf from the rows' extrema (no N x N mask): one such
    entry at any position is refused, in a square D and in a streamed row chunk."""
    from gmatch.metrics import check_distance

    rng = np.random.default_rng(0)
    for bad in (float("nan"), float("inf"), float("-inf")):
        for _ in range(5):
            D = torch.tensor(rng.random((12, 12)))
            D[tuple(rng.integers(0, 12, 2))] = bad
            with pytest.raises(DegenerateDistanceError, match="NaN or inf"):
                check_distance(D)
            with pytest.raises(DegenerateDistanceError, match="NaN or inf"):
                check_distance(D[:5] if torch.isfinite(D[5:]).all() else D[5:], columns=False)
            with pytest.raises(DegenerateDistanceError, match="NaN or inf"):
                check_distance(D, allow_constant=True)
    check_distance(torch.tensor(rng.random((12, 12))))  # control: finite scores pass
    check_distance(torch.empty(0, 7), columns=False)  # an empty chunk has nothing to refuse


def test_true_ranks_match_argsort_oracle():
    g = torch.Generator().manual_seed(0)
    D = torch.rand(80, 80, generator=g)
    ranking = torch.argsort(D, dim=1)
    oracle = torch.where(ranking == torch.arange(80)[:, None])[1].numpy()
    assert np.array_equal(true_ranks(D, 1), oracle)
    ranking0 = torch.argsort(D.T, dim=1)
    oracle0 = torch.where(ranking0 == torch.arange(80)[:, None])[1].numpy()
    assert np.array_equal(true_ranks(D, 0), oracle0)
    m = rank_metrics(oracle)
    assert m["R@1"] == pytest.approx(np.mean(oracle == 0))
    assert m["median_rank"] == pytest.approx(np.median(oracle) + 1)


def test_subset_uses_subset_candidates():
    g = torch.Generator().manual_seed(0)
    D = torch.rand(100, 100, generator=g)
    idx = np.arange(0, 100, 2)
    out = evaluate_distance(D, subset=idx)
    assert out["n"] == 50 and out["k"] == 2
    assert out["acc_dim1"] == pytest.approx(get_acc_loop(D[idx][:, idx], 0.05, 1))


@settings(max_examples=40, deadline=None)
@given(n=st.integers(20, 80), seed=st.integers(0, 10_000), ratio=st.sampled_from([0.05, 0.1, 0.3]))
def test_property_range_and_shared_permutation(n, seed, ratio):
    g = torch.Generator().manual_seed(seed)
    D = torch.rand(n, n, generator=g, dtype=torch.float64)  # continuous: no ties
    p = torch.randperm(n, generator=g)
    for dim in (0, 1):
        a = get_acc(D, ratio, dim)
        assert a == get_acc_loop(D, ratio, dim)  # the SPEC's value (no ties here)
        assert get_acc(D[p][:, p], ratio, dim) == pytest.approx(a)
        # control: permuting only the columns breaks the pairing, so the hits change
        # unless they happen to coincide; the shared permutation must not
        q = torch.roll(p, 1)
        moved = get_acc(D[p][:, q], ratio, dim)
        assert moved == get_acc_loop(D[p][:, q], ratio, dim)


def test_constant_rows_are_refused_or_scored_as_misses():
    """A model's D with a constant row is refused (its top-k is undefined); an untrained
    analysis may score it with allow_constant, and the tie rule makes that row a miss.
    Control: the same poster's row with its partner strictly nearest is a hit."""
    rng = np.random.default_rng(0)
    D = torch.tensor(rng.random((40, 40)))
    D.fill_diagonal_(-1.0)  # every partner strictly nearest
    D[3] = 0.5  # poster 3 has no information
    with pytest.raises(DegenerateDistanceError, match="row"):
        evaluate_distance(D)
    m = evaluate_distance(D, allow_constant=True)
    assert m["acc_dim1"] == pytest.approx(39 / 40)  # every poster but 3
    assert true_ranks(D, 1)[3] == 39  # all 39 others tie with the partner: ranked last
    D[3, 3] = -1.0  # control
    assert evaluate_distance(D)["acc_dim1"] == 1.0


def test_check_distance_names_the_shape_it_wants():
    from gmatch.metrics import check_distance

    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="square"):
        check_distance(rng.random((3, 4)))
    check_distance(rng.random((3, 4)), row_offset=6, columns=False)  # a streamed row chunk
    with pytest.raises(ValueError, match="2-D"):
        check_distance(rng.random(4), columns=False)
    with pytest.raises(DegenerateDistanceError, match=r"row \(index 7\)"):
        check_distance(np.vstack([rng.random(4), np.ones(4)]), row_offset=6, columns=False)
