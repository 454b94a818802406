"""Large-N mode: metrics from streamed row chunks, never building the N x N matrix.

The final scores are ``head(x0, x1) + prior`` on node embeddings, so the
ranks of the true partners and each query's top-k list are computed chunk by
chunk: memory O(chunk x N), time O(N^2 d). With attention units, the node
embeddings come from sparse attention (each node attends to its top-m
candidates, ``topm``), which is also chunked: memory O(N m d).

Where the time goes at N = 100k with the default's priors (benchmarks/LARGE_N.md): the
max-pooled line prior (~7 OCR lines per poster x 768 x N per row) and the linear parts
(five cosine heads, the dense mpnet prior, the common n-grams), all matrix products. So
the linear parts are one fused product (:func:`fused_factors`), and the products run in
oneDNN's fast float32 mode where a probe shows it keeps float32 accuracy
(:func:`fast_matmul`): the scores are the dense path's up to float rounding.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from gmatch.fused import RowFactors, chunked, fused_factors, fused_scorer_parts
from gmatch.metrics import DegenerateDistanceError, check_distance, rank_metrics
from gmatch.models import Ensemble
from gmatch.models.matcher import replace_views
from gmatch.priors import (
    LexicalScorer,
    PooledScorer,
    dense_prior_factors,
    make_scorer,
)

__all__ = [
    "StreamError",
    "node_embeddings",
    "BlockScorer",
    "fused_factors",
    "RowFactors",
    "fast_matmul",
    "fast_matmul_is_exact",
    "keeps_float32",
    "matmul_error",
    "auto_chunk",
    "count_at_least",
    "local_map",
    "streamed_ranks",
    "streamed_metrics",
]


class StreamError(ValueError):
    """A model that large-N mode cannot score; the message says what to do instead."""


# Columns per tile of BlockScorer.logits (aligned to absolute positions).
TILE = 4096

# Rows of a block compared and counted at a time in BlockScorer.ranks (the bool mask stays
# in cache: 32 x 100k bytes).
RANK_ROWS = 32

# Above this many nodes, attention units must be sparse (an N x N logit matrix per head).
DENSE_ATTENTION_MAX = 20000


@torch.inference_mode()
def node_embeddings(
    model,
    views0,
    valid0,
    views1,
    valid1,
    topm: int | None = None,
    tuned0=None,
    tuned1=None,
    posters: bool = True,
):
    """Inputs of the final head; attention units run sparse with ``topm`` candidates
    (default the model's ``attn_topm``); ``tuned0/1``: fine-tuned node views by index.
    ``posters=False`` (per-node encoders only): the poster side has no rows (large-N
    mode builds it on demand, :class:`gmatch.fused.RowFactors`), so its encoders never
    run over all N posters."""
    if getattr(model, "local", None) is not None:
        raise StreamError(
            "large-N mode does not score the local-node stage (data.poster_sets / intro_sets) yet; "
            "score such a model densely (gmatch evaluate)"
        )
    model.eval()
    views0, views1 = replace_views(views0, tuned0), replace_views(views1, tuned1)
    m = model.conf.attn_topm if topm is None else topm
    n = max(len(views0[0]), len(views1[0]))
    if len(model.layers) and model.conf.attn_prior:
        raise StreamError(
            "large-N mode does not run prior-guided attention (model.attn_prior > 0); "
            "score such a model densely"
        )
    if len(model.layers) and not m and n > DENSE_ATTENTION_MAX:
        raise StreamError(
            f"{n} nodes: dense attention would build {n}x{n} logits per head; "
            "pass topm (e.g. 64) for sparse top-m attention"
        )
    if not len(model.layers):  # per-node encoders: in row chunks, a small peak at any N
        if not posters:
            views0, valid0 = [v[:0] for v in views0], [x[:0] for x in valid0]
        return chunked(model.encode0, views0, valid0), chunked(model.encode1, views1, valid1)
    if not posters:
        raise ValueError("node_embeddings(posters=False) needs per-node encoders (no attention)")
    *_, last = model.states(views0, valid0, views1, valid1, topm=m)
    return last


def matmul_error(matmul, n: int = 1024, d: int = 768, seed: int = 0) -> float:
    """Largest absolute error of ``matmul(a, b)`` (= ``a @ b.T``) against float64 on unit
    rows like the streamed path's (cosines of ``d``-dim embeddings), one entry of which
    bfloat16 cannot hold (1 + 2^-10): a matmul that rounds its inputs to bfloat16 fails."""
    g = torch.Generator().manual_seed(seed)
    a = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1)
    a[0], b[0] = 1 + 2**-10, 1 / d
    return float((matmul(a, b).double() - a.double() @ b.double().T).abs().max())


_FAST_MATMUL: bool | None = None  # whether oneDNN's "bf16" fp32 mode keeps float32 accuracy


def fast_matmul_is_exact(tolerance: float = 4.0) -> bool:
    """Whether float32 matmuls in oneDNN's ``fp32_precision="bf16"`` mode are as accurate
    as plain float32 here (:func:`keeps_float32`, measured once). On this project's CPUs
    (AVX512-BF16) the mode runs about 2x faster with float32-level errors: it does not
    round the inputs to bfloat16. On hardware where it would, the mode stays off."""
    global _FAST_MATMUL
    if _FAST_MATMUL is None:

        def fast(a, b):
            with _fp32_precision("bf16"):
                return a @ b.T

        _FAST_MATMUL = keeps_float32(fast, tolerance)
    return _FAST_MATMUL


def keeps_float32(matmul, tolerance: float = 4.0) -> bool:
    """Whether ``matmul(a, b)`` (= ``a @ b.T``) errs at most ``tolerance`` x as much as
    plain float32 on :func:`matmul_error`'s probe."""
    ieee = matmul_error(lambda a, b: a @ b.T)
    return matmul_error(matmul) <= tolerance * max(ieee, 1e-7)


@contextmanager
def _fp32_precision(mode: str):
    conf = getattr(getattr(torch.backends, "mkldnn", None), "matmul", None)
    old = getattr(conf, "fp32_precision", None)
    if old is None or not torch.backends.mkldnn.is_available():
        yield
        return
    conf.fp32_precision = mode
    try:
        yield
    finally:
        conf.fp32_precision = old


@contextmanager
def fast_matmul(enabled: bool = True):
    """Float32 matmuls in oneDNN's bf16 mode inside the block, where that is exact
    (:func:`fast_matmul_is_exact`); otherwise (or ``enabled=False``) unchanged."""
    if enabled and fast_matmul_is_exact():
        with _fp32_precision("bf16"):
            yield
    else:
        yield


class BlockScorer:
    """The final scores ``head(x0, x1) + prior`` of a model as row blocks, from node
    embeddings and prior factors computed once: a small, picklable object, so the
    blocks can be scored anywhere (this process, or Ray workers: ``gmatch.distributed``).

    An :class:`gmatch.models.Ensemble` (``model.members``, a K-fold bag) is scored as it
    forwards: each member's ``head + prior``, averaged. When every head is linear (cosine
    or dot: ``head.factors``), the mean of the heads, the dense priors and the common
    n-grams of the lexical priors are one product ``f0[rows] @ f1[cols].T`` (the same sum
    up to rounding: :func:`fused_factors`); the rare n-grams and max-pooled set priors are
    added to it. ``fuse=False``: each member's head and priors apart (the reference of
    ``benchmarks/LARGE_N.md``). ``fast``: :func:`fast_matmul`."""

    def __init__(
        self,
        model,
        views0,
        valid0,
        views1,
        valid1,
        lexical=(),
        topm=None,
        tuned0=None,
        tuned1=None,
        fast: bool = True,
        fuse: bool = True,
    ):
        members = list(model.members) if isinstance(model, Ensemble) else [model]
        first = members[0]
        lexical = first.check_lexical(
            lexical, "(poster, intro) matrix pairs; pass lexical=[(A, B), ...]"
        )
        self.lex_w = [w.exp().item() for w in first.lexical_log_weight]
        self.scorers = [make_scorer(A, B) for A, B in lexical]
        for scorer in self.scorers:
            if isinstance(scorer, PooledScorer):
                scorer.pad_rows = 256  # few product shapes: see PooledScorer.pad_rows
        self.fast, self.tile = fast, TILE
        self.fused = fuse and all(hasattr(m.head, "factors") for m in members)

        def states(m, posters=True):
            return node_embeddings(m, views0, valid0, views1, valid1, topm, tuned0, tuned1, posters)

        pairs, log_w, self.rows = first.prior_pairs, first.prior_log_weight, None
        if self.fused:
            self.f0, self.f1, self.rows = fused_scorer_parts(
                members, states, (views0, valid0, views1, valid1), (pairs, log_w),
                self.scorers, self.lex_w, lazy=tuned0 is None,
            )  # fmt: skip
        else:
            self.states, self.heads = [states(m) for m in members], [m.head for m in members]
            self.p0, self.p1 = dense_prior_factors(pairs, log_w, views0, valid0, views1, valid1)
        self.n = len(self.f1 if self.fused else self.states[0][0])

    @torch.inference_mode()
    def logits(self, s: int, e: int, cols: slice = slice(None)) -> torch.Tensor:
        """Scores of rows ``s..e`` x columns ``cols`` (a slice), in column tiles of
        ``self.tile`` aligned to absolute positions: an entry's value does not depend on the
        columns asked for, so the diagonal pass's true-pair scores are bitwise the full
        rows' (a matmul's rounding depends on its shape)."""
        a, b, step = cols.indices(self.n)
        if step != 1:
            raise ValueError("BlockScorer.logits: columns must be a contiguous slice")
        out = torch.empty(e - s, max(b - a, 0))
        if self.fused:
            f0 = self.f0[s:e] if self.rows is None else self.rows(s, e)
        with fast_matmul(self.fast):
            for t in range(a // self.tile * self.tile, b, self.tile):
                tile = slice(t, min(t + self.tile, self.n))
                part = self._fused(f0, s, e, tile) if self.fused else self._per_member(s, e, tile)
                lo, hi = max(a, t), min(b, tile.stop)
                out[:, lo - a : hi - a] = part[:, lo - t : hi - t]
        return out

    def _fused(self, f0, s, e, cols):
        out = f0 @ self.f1[cols].T
        for scorer, w in zip(self.scorers, self.lex_w):  # lexical: its rare n-grams only
            part = scorer.rare_scores if isinstance(scorer, LexicalScorer) else scorer.scores
            if (rest := part(slice(s, e), cols)) is not None:
                out.add_(rest, alpha=w)
        return out

    def _per_member(self, s, e, cols):
        dense = self.p0[s:e] @ self.p1[cols].T if self.p0 is not None else None
        lexical = [
            w * scorer.scores(slice(s, e), cols) for scorer, w in zip(self.scorers, self.lex_w)
        ]
        per_member = torch.empty(len(self.heads), e - s, len(range(self.n)[cols]))
        for i, (head, (x0, x1)) in enumerate(zip(self.heads, self.states)):
            out = head(x0[s:e], x1[cols])  # the member's head, then its priors, in that order
            torch.add(out, 0 if dense is None else dense, out=per_member[i])
            for part in lexical:
                per_member[i] += part
        return per_member[0] if len(per_member) == 1 else per_member.mean(0)

    def diagonal(self, block: tuple[int, int]) -> torch.Tensor:
        """The true pairs' logits of rows ``s..e`` (their diagonal block only)."""
        s, e = block
        return self.logits(s, e, slice(s, e)).diagonal()

    def ranks(self, block: tuple[int, int], diag: torch.Tensor, topk: int) -> dict:
        """Rows ``s..e``: their ranks (other candidates at least as close, ties against
        the query), top-k lists, and this block's share of the column ranks and extrema."""
        s, e = block
        L = self.logits(s, e)
        check_distance(L, row_offset=s, columns=False)
        rank_p2i, rank_i2p = count_at_least(L, diag, s)
        return {
            "rank_p2i": rank_p2i,
            "rank_i2p": rank_i2p,
            "col_min": L.amin(0),
            "col_max": L.amax(0),
            "top": L.topk(topk, dim=1).indices,
        }


def count_at_least(L: torch.Tensor, diag: torch.Tensor, s: int):
    """Rows ``s..`` of the scores ``L`` [rows x N] and every true pair's score ``diag``:
    per row, the other candidates scoring at least its true pair's; per column, this
    block's share of the same count (int64). Counted :data:`RANK_ROWS` rows at a time
    into one small mask, as int32: a bool sum casts its whole input to int64 (8x the
    block: +0.5 GB at N = 100k) and runs ~8x slower."""
    rank_p2i = torch.empty(len(L), dtype=torch.int32)
    rank_i2p = torch.zeros(L.shape[1], dtype=torch.int32)
    mask = torch.empty(min(RANK_ROWS, len(L)), L.shape[1], dtype=torch.bool)
    for r in range(0, len(L), RANK_ROWS):
        part = L[r : r + RANK_ROWS]
        rows, at_least = torch.arange(len(part)), mask[: len(part)]
        torch.ge(part, diag[s + r : s + r + len(part), None], out=at_least)
        at_least[rows, rows + s + r] = False  # the true pair itself
        rank_p2i[r : r + len(part)] = at_least.sum(1, dtype=torch.int32)
        torch.ge(part, diag[None, :], out=at_least)
        at_least[rows, rows + s + r] = False
        rank_i2p += at_least.sum(0, dtype=torch.int32)
    return rank_p2i.long(), rank_i2p.long()


def local_map(fn, shared, items: list) -> list:
    """``[fn(shared, item) for item in items]``: the single-process block mapper."""
    return [fn(shared, item) for item in items]


def _diagonal(scorer: BlockScorer, block):
    return scorer.diagonal(block)


def _ranks(args, block):
    scorer, diag, topk = args
    return scorer.ranks(block, diag, topk)


def auto_chunk(n: int, budget: int = 2**26) -> int:
    """Rows per block of :func:`streamed_ranks`: 1024, fewer when a block of ``n`` columns
    would exceed ``budget`` floats (256 MB; 671 rows at N = 100k), at least 64."""
    return max(64, min(1024, budget // max(n, 1)))


@torch.inference_mode()
def streamed_ranks(
    model,
    views0,
    valid0,
    views1,
    valid1,
    chunk: int | None = None,
    topk: int = 5,
    lexical=(),
    topm: int | None = None,
    map_blocks=local_map,
    tuned0=None,
    tuned1=None,
    fast: bool = True,
    fuse: bool = True,
):
    """0-based ranks of the true partner in both directions plus top-k lists.

    ``lexical``: per precomputed prior pair of the model, its (poster, intro)
    feature blocks (``Features.prior_blocks``) or sparse CSR matrices; scored chunk by
    chunk too. ``map_blocks(fn, shared, blocks)``: how the row blocks are scored
    (:func:`local_map`, or :meth:`gmatch.distributed.RayRunner.map_blocks` to shard
    them over a Ray cluster); the merge is exact, so every mapper gives the same ranks.
    ``tuned0`` / ``tuned1``: fine-tuned node views (``Features.tuned_views``). ``fast``:
    matmuls in oneDNN's bf16 mode where that keeps float32 accuracy, ``fuse``: the linear
    parts in one product (:class:`BlockScorer`). ``chunk``: rows per block (default
    :func:`auto_chunk`).

    Returns:
        ``rank_p2i`` [N], ``rank_i2p`` [N] (other candidates at least as close,
        as :func:`gmatch.metrics.true_ranks`), ``top_p2i`` [N x topk] intro indices.
    Raises:
        DegenerateDistanceError: non-finite scores or a constant row or column.
    """
    scorer = BlockScorer(
        model, views0, valid0, views1, valid1, lexical, topm, tuned0, tuned1, fast, fuse
    )
    n = scorer.n
    chunk = chunk or auto_chunk(n)
    blocks = [(s, min(s + chunk, n)) for s in range(0, n, chunk)]
    # Pass 1: the true pairs' logits. Pass 2: per row and per column, count the *other*
    # candidates scoring at least as high (ties against the query, as gmatch.metrics) and
    # refuse degenerate scores as gmatch.metrics.check_distance does.
    diag = torch.cat(map_blocks(_diagonal, scorer, blocks))
    parts = map_blocks(_ranks, (scorer, diag, topk), blocks)
    rank_i2p = torch.zeros(n, dtype=torch.long)
    col_min = torch.full((n,), float("inf"))
    col_max = torch.full((n,), float("-inf"))
    for part in parts:
        rank_i2p += part["rank_i2p"]
        col_min, col_max = (
            torch.minimum(col_min, part["col_min"]),
            torch.maximum(col_max, part["col_max"]),
        )
    if n > 1 and (col_max == col_min).any():
        j = int(torch.nonzero(col_max == col_min)[0])
        raise DegenerateDistanceError(
            f"D has a constant column (index {j}); its top-k is undefined"
        )
    return {
        "rank_p2i": torch.cat([p["rank_p2i"] for p in parts]).numpy(),
        "rank_i2p": rank_i2p.numpy(),
        "top_p2i": torch.cat([p["top"] for p in parts]).numpy(),
    }


def streamed_metrics(ranks: dict, ratio: float = 0.05) -> dict:
    """get_acc from ranks (a hit is rank < k) and R@K, in evaluate_distance's keys
    (a subset too small for k >= 1 has no get_acc: NaN, as there)."""
    n = len(ranks["rank_p2i"])
    k = int(ratio * n)
    out = {
        "n": n,
        "k": k,
        "acc_dim0": int((ranks["rank_i2p"] < k).sum()) / n if k >= 1 else float("nan"),
        "acc_dim1": int((ranks["rank_p2i"] < k).sum()) / n if k >= 1 else float("nan"),
    }
    out["acc_mean"] = (out["acc_dim0"] + out["acc_dim1"]) / 2
    for key, name in (("rank_p2i", "poster_to_intro"), ("rank_i2p", "intro_to_poster")):
        for m, v in rank_metrics(ranks[key]).items():
            out[f"{name}/{m}"] = v
    return out
