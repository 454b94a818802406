"""Large-N mode's block scorer: the fused product of the linear parts, column tiles that
make an entry's value independent of the columns asked for, and the fast-matmul probe."""

import numpy as np
import pytest
import torch
from conftest import scramble_
from scipy import sparse

from gmatch.config import ModelConf
from gmatch.metrics import evaluate_distance
from gmatch.models import Ensemble, Matcher
from gmatch.priors import (
    dense_prior_factors,
    dense_prior_width,
    lexical_cosine,
    write_dense_prior_factors,
)
from gmatch.stream import (
    BlockScorer,
    auto_chunk,
    count_at_least,
    fast_matmul,
    fast_matmul_is_exact,
    keeps_float32,
    matmul_error,
    node_embeddings,
    streamed_metrics,
    streamed_ranks,
)


def bag_case(n=90, vocab=3000, seed=0):
    """A 2-member cosine bag with a dense prior (poster view 1 = intro view 0) and a lexical
    prior whose vocabulary is large enough to have rare n-grams (the sparse remainder)."""
    g = torch.Generator().manual_seed(seed)
    conf = ModelConf(dim=16, n_layers=0, edge="cosine", members=2)
    members = [
        scramble_(Matcher([20, 16], [16], conf, [(1, 0)], lexical_weights=[4.0]), seed=seed + i)
        for i in range(2)
    ]
    model = Ensemble(members, conf).eval()
    views0 = [torch.randn(n, d, generator=g) for d in (20, 16)]
    views1 = [torch.randn(n, 16, generator=g)]
    valid0 = [torch.rand(n, generator=g) > 0.2 for _ in views0]
    valid1 = [torch.ones(n, dtype=torch.bool)]
    A, B = (
        sparse.random(n, vocab, density=0.02, format="csr", random_state=s, dtype=np.float32)
        for s in (seed, seed + 1)
    )
    return model, (views0, valid0, views1, valid1), (A, B)


def test_fused_block_scores_equal_the_dense_forward():
    """Heads, dense prior and common n-grams in one product, plus the rare n-grams: the
    dense forward's scores up to rounding, and the same metrics when streamed."""
    model, views, (A, B) = bag_case()
    with torch.no_grad():
        D = model(*views, lexical=[lexical_cosine(A, B)])["dist"]
    scorer = BlockScorer(model, *views, lexical=[(A, B)])
    assert scorer.fused and scorer.scorers[0].BrT is not None  # the rare part is exercised
    L = torch.cat([scorer.logits(s, min(s + 32, 90)) for s in range(0, 90, 32)])
    assert torch.allclose(L, -D, atol=1e-4, rtol=1e-5)
    # Control: the same model without its lexical prior is far from D.
    no_lex = BlockScorer(model, *views, lexical=[(A, B)])
    no_lex.lex_w = [0.0]
    no_lex.f0 = no_lex.f0.clone()
    no_lex.f0[:, -len(no_lex.scorers[0].common) :] = 0
    assert not torch.allclose(no_lex.logits(0, 90), -D, atol=1e-2, rtol=0)
    stream = streamed_metrics(streamed_ranks(model, *views, chunk=32, lexical=[(A, B)]))
    for key, value in evaluate_distance(D).items():
        assert stream[key] == pytest.approx(
            value, abs=2 / 90 if "R@" in key or "acc" in key else 0.1
        )


def test_dense_prior_factors_written_in_row_chunks_are_bitwise_the_same():
    """The fused path writes the dense priors' factors into its matrices a few rows at a
    time (no N x width transient): the same values, bit for bit, valid masks applied."""
    model, (views0, valid0, views1, valid1), _ = bag_case()
    m = model.members[0]
    pairs, log_w = m.prior_pairs, m.prior_log_weight
    a, b = dense_prior_factors(pairs, log_w, views0, valid0, views1, valid1)
    width = dense_prior_width(pairs, views0)
    assert a.shape == (90, width) and b.shape == (90, width)
    out0, out1 = torch.full((90, width), float("nan")), torch.full((90, width), float("nan"))
    write_dense_prior_factors(pairs, log_w, views0, valid0, views1, valid1, out0, out1, rows=32)
    assert torch.equal(out0, a) and torch.equal(out1, b)
    assert (out0[~valid0[1]] == 0).all()  # empty rows score 0
    # Control: a mask that is not applied is seen.
    ones = [torch.ones_like(v) for v in valid0]
    write_dense_prior_factors(pairs, log_w, views0, ones, views1, valid1, out0, out1, rows=32)
    assert not torch.equal(out0, a)


def test_poster_rows_built_on_demand_are_bitwise_the_whole_factors(monkeypatch):
    """At large N the poster side of the fused product is built in aligned chunks when a
    block asks (RowFactors): the same rows bit for bit as the whole f0, for blocks that
    straddle chunks, after pickling (Ray workers), and the same scores."""
    import pickle

    import gmatch.fused

    model, views, (A, B) = bag_case()
    whole = BlockScorer(model, *views, lexical=[(A, B)])
    monkeypatch.setattr(gmatch.fused, "ENCODE_ROWS", 32)  # 90 posters: three chunks
    lazy = BlockScorer(model, *views, lexical=[(A, B)])
    assert lazy.f0 is None and lazy.rows is not None and whole.rows is None
    members = list(model.members)
    f0, f1, rows = gmatch.fused.fused_scorer_parts(
        members,
        lambda m, posters: node_embeddings(m, *views, posters=posters),
        views,
        (members[0].prior_pairs, members[0].prior_log_weight),
        lazy.scorers,
        lazy.lex_w,
        lazy=False,
    )
    assert rows is None and torch.equal(f1, lazy.f1)
    for s, e in [(0, 90), (20, 50), (31, 33), (64, 90)]:
        assert torch.equal(lazy.rows(s, e), f0[s:e])
    again = pickle.loads(pickle.dumps(lazy))
    assert again.rows._kept == (-1, None) and torch.equal(again.rows(10, 70), f0[10:70])
    assert torch.allclose(lazy.logits(0, 90), whole.logits(0, 90), atol=1e-5, rtol=1e-6)
    # Control: rows built from shifted chunks are not the whole factors.
    assert not torch.equal(lazy.rows.build(1, 33), f0[0:32])


def test_lazy_poster_rows_run_the_poster_encoders_once(monkeypatch):
    """With rows built on demand, the build encodes no poster (the intros only), so a
    pass over the blocks runs each member's poster encoder over the N posters once; the
    whole-f0 build (the control) encodes them up front, and then no more."""
    import gmatch.fused

    model, views, (A, B) = bag_case()
    seen = []
    for m in model.members:  # rows each poster encoder sees
        m.encode0.register_forward_pre_hook(lambda module, args: seen.append(len(args[0][0])))
    n, members = len(views[0][0]), len(model.members)
    whole = BlockScorer(model, *views, lexical=[(A, B)])
    assert sum(seen) == n * members  # control: the whole f0 is built at once
    seen.clear()
    monkeypatch.setattr(gmatch.fused, "ENCODE_ROWS", 32)
    lazy = BlockScorer(model, *views, lexical=[(A, B)])
    assert sum(seen) == 0 and lazy.rows is not None
    for s in range(0, n, 16):
        lazy.logits(s, min(s + 16, n))
    assert sum(seen) == n * members
    assert torch.allclose(lazy.logits(0, n), whole.logits(0, n), atol=1e-5, rtol=1e-6)
    attention = Matcher([20, 16], [16], ModelConf(dim=16, n_layers=1), [(1, 0)], [4.0])
    with pytest.raises(ValueError, match="per-node encoders"):
        node_embeddings(attention.eval(), *views, posters=False)


def test_linear_heads_factor_into_one_product():
    """``head.factors`` of both linear edge scorers: ``a @ b.T`` is the head's forward;
    a multi-head scorer (one logit matrix per head) has no single product and says so."""
    from gmatch.models.edges import CosineEdge, DotEdge

    g = torch.Generator().manual_seed(5)
    x0, x1 = torch.randn(9, 12, generator=g), torch.randn(7, 12, generator=g)
    for head in (CosineEdge(0.05), DotEdge()):
        a, b = head.factors(x0, x1)
        assert torch.allclose(a @ b.T, head(x0, x1), atol=1e-5)
    for head in (CosineEdge(0.05, out=3), DotEdge(out=3)):
        with pytest.raises(ValueError, match="single-output"):
            head.factors(x0, x1)


def test_column_tiles_make_an_entry_independent_of_the_columns_asked_for():
    model, views, (A, B) = bag_case(n=50)
    scorer = BlockScorer(model, *views, lexical=[(A, B)])
    whole = scorer.logits(10, 30)
    scorer.tile = 7  # tiles 0-6, 7-13, ...: a request starts and ends mid-tile
    tiled = scorer.logits(10, 30)
    assert torch.allclose(tiled, whole, atol=1e-5, rtol=0)
    for cols in (slice(10, 30), slice(3, 4), slice(13, 50), slice(0, 50)):
        part = scorer.logits(10, 30, cols)
        assert torch.equal(part, tiled[:, cols]), cols  # bitwise: the diagonal pass's values
    with pytest.raises(ValueError, match="contiguous"):
        scorer.logits(0, 5, slice(0, 50, 2))


def test_fast_matmul_is_used_only_where_it_keeps_float32_accuracy():
    """The probe rejects a matmul that rounds its inputs to bfloat16 (the control) and
    accepts float64; inside fast_matmul() the error stays float32's wherever it is on."""
    truncating = lambda a, b: (a.bfloat16() @ b.bfloat16().T).float()  # noqa: E731
    assert not keeps_float32(truncating)
    assert keeps_float32(lambda a, b: (a.double() @ b.double().T).float())
    ieee = matmul_error(lambda a, b: a @ b.T)
    with fast_matmul():
        inside = matmul_error(lambda a, b: a @ b.T)
    assert inside <= 4 * max(ieee, 1e-7)
    conf = torch.backends.mkldnn.matmul
    before = conf.fp32_precision
    with fast_matmul(enabled=False):
        assert conf.fp32_precision == before
    with fast_matmul():
        assert conf.fp32_precision == ("bf16" if fast_matmul_is_exact() else before)
    assert conf.fp32_precision == before  # restored


def test_rank_counts_in_row_pieces_equal_the_whole_block_mask():
    """count_at_least counts RANK_ROWS rows at a time in int32: the same counts as one
    whole-block mask, ties included, for a block that is not a multiple of the pieces."""
    g = torch.Generator().manual_seed(0)
    n, s, e = 150, 40, 110  # 70 rows: two full pieces of 32 and a short one
    L = torch.randint(0, 6, (e - s, n), generator=g).float()  # many ties
    diag = torch.randint(0, 6, (n,), generator=g).float()
    diag[s:e] = L[torch.arange(e - s), torch.arange(s, e)]
    rows = torch.arange(e - s)
    mask = L >= diag[s:e, None]
    mask[rows, rows + s] = False
    cols = L >= diag[None, :]
    cols[rows, rows + s] = False
    p2i, i2p = count_at_least(L, diag, s)
    assert p2i.dtype == i2p.dtype == torch.long
    assert torch.equal(p2i, mask.sum(1)) and torch.equal(i2p, cols.sum(0))
    # Control: had the true pair counted itself, every row would be one higher.
    assert torch.equal((L >= diag[s:e, None]).sum(1), p2i + 1)


def test_row_blocks_stay_within_their_float_budget():
    assert auto_chunk(2938) == 1024  # the course data: the blocks as before
    for n in (30000, 100000, 10**6):
        assert auto_chunk(n) * n <= 2**26  # a [rows x N] float32 block: at most 256 MB
    assert auto_chunk(100000) == 671 and auto_chunk(10**8) == 64  # never fewer than 64 rows


def test_padded_line_products_score_as_unpadded():
    """Large-N mode pads the pooled prior's element rows (few product shapes); the scores
    stay those of the unpadded products, up to rounding, and a poster without lines 0."""
    from types import SimpleNamespace

    from gmatch.priors import PooledScorer

    g = torch.Generator().manual_seed(4)
    owner = np.sort(np.random.default_rng(4).integers(0, 40, 150))
    lines = SimpleNamespace(values=torch.randn(150, 24, generator=g).numpy(), owner=owner)
    intros = SimpleNamespace(values=torch.randn(40, 24, generator=g).numpy(), owner=None)
    lines.valid = intros.valid = np.ones(40, dtype=bool)
    plain, padded = PooledScorer(lines, intros, chunk=7), PooledScorer(lines, intros, chunk=7)
    padded.pad_rows = 16  # 7 posters' ~26 lines -> 32 rows per product
    want = plain.scores()
    assert torch.allclose(padded.scores(), want, atol=1e-6)
    assert torch.allclose(padded.scores(slice(5, 30), slice(3, 9)), want[5:30, 3:9], atol=1e-6)
    assert (want[np.setdiff1d(np.arange(40), owner)] == 0).all()
