"""Local-node graphs: each movie is a small graph (one node per OCR line of its poster,
one per sentence of its intro, plus the movie's global node), matched SuperGlue-style.

Stages (the graphs are batched PyTorch Geometric style: all nodes of a call in one
tensor, ``batch[t]`` = the movie a node belongs to):
  1. a projection per side maps element embeddings (and the global node) to width d;
  2. ``local_layers`` self-attention blocks inside each movie's graph
     (``torch_geometric.nn.TransformerConv`` on the graph's complete edge set, residual,
     last layer zero-initialised so a fresh block is the identity);
  3. an edge scorer on every (poster node, intro node) pair (cosine or MLP, bounded in
     [-1, 1]) and a learned pooling of a movie pair's node pairs into one score
     (smooth-max with a learned sharpness, hard max, mean, or attention pooling).

The pair score of posters i and intros j needs only node embeddings, so all N x M
scores are computed chunk by chunk over poster nodes (never a node x node matrix of
all pairs at once). No score depends on node or movie order: the stage is
permutation-equivariant (tested with an index-dependent negative control).

Re-ranking (``model.rerank.share`` > 0, SuperGlue's cross step): cross-attention between a
poster graph and an intro graph depends on the pair, so it runs only on candidate
pairs: each poster's top ``ceil(rerank * M)`` intros and each intro's top
``ceil(rerank * N)`` posters under the scores so far (global head + priors + local
stage). Per candidate pair the two graphs' nodes are copied, one cross-attention step
(:class:`PairCrossAttention`) lets every poster node attend to the intro's nodes and
back, and the pair's node-pair cosines are smooth-max pooled again; the pair's score
moves by ``scale * (pooled after - pooled before)``. The step starts as the identity,
so a fresh re-ranker changes nothing; other pairs keep their score.
"""

from __future__ import annotations

import functools
import math
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from gmatch.config import ModelConf
from gmatch.models.attention import ffn
from gmatch.models.dropout import FeatureDropout
from gmatch.priors import offsets_within

__all__ = ["LocalStage", "PairCrossAttention", "complete_edges", "candidate_pairs", "pair_edges"]

SHARPNESS_MAX = 50.0  # smooth-max sharpness clamp (exp(-2 * 50) still > float32 tiny)


@functools.cache
def _pyg():
    """PyTorch Geometric's pieces, imported on first use (the import takes seconds, and
    only models with local nodes need it)."""
    with warnings.catch_warnings():  # its import-time torch.jit.script notice
        warnings.simplefilter("ignore", FutureWarning)
        from torch_geometric.nn import TransformerConv
        from torch_geometric.utils import scatter, softmax
    return TransformerConv, scatter, softmax


def within_groups(counts: torch.Tensor) -> torch.Tensor:
    """Each element's position within its group, for consecutive groups of ``counts``
    (:func:`gmatch.priors.offsets_within`, the one implementation)."""
    return torch.from_numpy(offsets_within(counts.numpy()))


def complete_edges(batch: torch.Tensor) -> torch.Tensor:
    """``edge_index`` [2 x E] joining every pair of nodes of the same graph (self loops
    included): each node attends to its whole movie."""
    order = torch.argsort(batch, stable=True)
    counts = torch.bincount(batch)
    starts = torch.cumsum(counts, 0) - counts
    sizes = counts[batch[order]]  # size of each (sorted) node's graph
    src = torch.repeat_interleave(order, sizes)
    # for node k (sorted) of graph g: targets are order[starts[g] : starts[g] + counts[g]]
    offs = within_groups(sizes)
    dst = order[torch.repeat_interleave(starts[batch[order]], sizes) + offs]
    return torch.stack([src, dst])


class GraphSelfBlock(nn.Module):
    """``x <- x + ffn([x, TransformerConv(x)])`` inside each graph (the PyG layer does
    the per-target softmax over the graph's edges)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.conv = _pyg()[0](dim, dim // heads, heads=heads, root_weight=False)
        self.ffn = ffn(dim, dropout)  # the matcher units' residual MLP, zero-initialised

    def forward(self, x: torch.Tensor, edge_index: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(torch.cat([x, self.conv(x, edge_index)], dim=-1))


def candidate_pairs(S: torch.Tensor, share: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Pairs (i, j) with j among poster i's top ``ceil(share * M)`` intros or i among
    intro j's top ``ceil(share * N)`` posters under ``S`` [N x M], each once."""
    n, m = S.shape
    k1, k0 = min(m, math.ceil(share * m)), min(n, math.ceil(share * n))
    rows = torch.topk(S, k1, dim=1).indices  # [N x k1]
    cols = torch.topk(S, k0, dim=0).indices  # [k0 x M]
    flat = torch.cat(
        [
            (torch.arange(n)[:, None] * m + rows).reshape(-1),
            (cols * m + torch.arange(m)[None, :]).reshape(-1),
        ]
    )
    flat = torch.unique(flat)
    return flat // m, flat % m


def pair_edges(pi, pj, b0: torch.Tensor, b1: torch.Tensor, n: int, m: int):
    """Per candidate pair (pi[p], pj[p]) a copy of poster pi's nodes and of intro pj's
    nodes, and every (poster copy, intro copy) edge of the pair.

    Returns ``idx0`` / ``idx1`` (the node each copy is of), ``src`` / ``dst`` (edges:
    poster copy -> intro copy) and ``pair_e`` (each edge's pair).
    """

    def copies(batch, owners, size):
        order = torch.argsort(batch, stable=True)
        counts = torch.bincount(batch, minlength=size)
        starts = torch.cumsum(counts, 0) - counts
        c = counts[owners]
        pair = torch.repeat_interleave(torch.arange(len(owners)), c)
        within = within_groups(c)
        return order[starts[owners][pair] + within], c

    idx0, c0 = copies(b0, pi, n)
    idx1, c1 = copies(b1, pj, m)
    ce = c0 * c1
    pair_e = torch.repeat_interleave(torch.arange(len(pi)), ce)
    within = within_groups(ce)
    off0, off1 = torch.cumsum(c0, 0) - c0, torch.cumsum(c1, 0) - c1
    src = off0[pair_e] + torch.div(within, c1[pair_e], rounding_mode="floor")
    dst = off1[pair_e] + within % c1[pair_e]
    return idx0, idx1, src, dst, pair_e


class PairCrossAttention(nn.Module):
    """One cross step inside every candidate pair (SuperGlue's cross attention with a
    linear message update): each poster-node copy attends to the pair's intro nodes
    and each intro-node copy to the pair's poster nodes,
    ``y = h + W_o sum_e softmax_e(q . k / sqrt(d)) v``. Queries, keys and ``W_o v`` are
    linear in the node, so they are computed once per node and gathered per edge: the
    per-pair work is O(edges x width), no matrix product per copy; nodes are first
    projected to the re-ranker's ``width`` (``model.rerank.dim``), which sets that cost.
    ``W_o`` starts at zero (a fresh step is the identity)."""

    def __init__(self, dim: int, width: int):
        super().__init__()
        self.proj = nn.Linear(dim, width, bias=False)  # both sides: the re-ranker's space
        self.q0, self.k0, self.v0 = (nn.Linear(width, width) for _ in range(3))
        self.q1, self.k1, self.v1 = (nn.Linear(width, width) for _ in range(3))
        self.out0, self.out1 = nn.Linear(width, width), nn.Linear(width, width)
        for out in (self.out0, self.out1):
            nn.init.zeros_(out.weight)
            nn.init.zeros_(out.bias)

    def project(self, h0, h1) -> tuple:
        """Per-node queries, keys and messages ``(q0, k0, u0, q1, k1, u1)``; compute them
        once per call of the re-ranker and pass them to every chunk of pairs."""
        q0, k0, u0 = self.q0(h0), self.k0(h0), self.out1(self.v0(h0))  # u0: poster -> intro
        q1, k1, u1 = self.q1(h1), self.k1(h1), self.out0(self.v1(h1))  # u1: intro -> poster
        return q0, k0, u0, q1, k1, u1

    def forward(self, h0, h1, idx0, idx1, src, dst, projected: tuple | None = None):
        """Updated copies ``(y0 [C0 x d], y1 [C1 x d])`` of nodes ``h0[idx0]`` /
        ``h1[idx1]``; edges join poster copy ``src[e]`` and intro copy ``dst[e]``;
        ``projected``: :meth:`project` of ``(h0, h1)`` if already computed."""
        _, scatter, softmax = _pyg()
        d = h0.shape[1]
        a, b = idx0[src], idx1[dst]  # the original nodes at the two ends of each edge
        q0, k0, u0, q1, k1, u1 = projected if projected is not None else self.project(h0, h1)
        w0 = softmax((q0[a] * k1[b]).sum(-1) / math.sqrt(d), src, num_nodes=len(idx0))
        w1 = softmax((q1[b] * k0[a]).sum(-1) / math.sqrt(d), dst, num_nodes=len(idx1))
        y0 = h0[idx0] + scatter(w0[:, None] * u1[b], src, dim=0, dim_size=len(idx0))
        y1 = h1[idx1] + scatter(w1[:, None] * u0[a], dst, dim=0, dim_size=len(idx1))
        return y0, y1


class LocalStage(nn.Module):
    """Scores [N x M] of N poster graphs against M intro graphs (see the module doc)."""

    def __init__(
        self, conf: ModelConf, set_dims0: list[int], set_dims1: list[int], chunk: int = 256
    ):
        super().__init__()
        d = conf.local.dim
        self.conf, self.chunk = conf, chunk
        self.with_global = conf.local.global_node
        # Both sides' elements come from one sentence encoder: with ``local_tied`` one
        # projection serves both (a siamese map, so the node cosine starts as a random
        # projection of the encoder's cosine and stays a metric of one space); otherwise
        # the two start equal and drift apart.
        self.proj0 = nn.ModuleList([nn.Linear(k, d, bias=False) for k in set_dims0])
        self.proj1 = nn.ModuleList([nn.Linear(k, d, bias=False) for k in set_dims1])
        for i, (p0, p1) in enumerate(zip(self.proj0, self.proj1)):
            if p0.weight.shape == p1.weight.shape:
                if conf.local.tied:
                    self.proj1[i] = p0
                else:
                    p1.weight.data.copy_(p0.weight.data)
        self.drop = FeatureDropout(conf.feat_dropout)
        self.global0 = nn.Linear(conf.dim, d) if self.with_global else None
        self.global1 = nn.Linear(conf.dim, d) if self.with_global else None
        self.blocks0 = nn.ModuleList(
            [GraphSelfBlock(d, conf.local.heads, conf.dropout) for _ in range(conf.local.layers)]
        )
        self.blocks1 = nn.ModuleList(
            [GraphSelfBlock(d, conf.local.heads, conf.dropout) for _ in range(conf.local.layers)]
        )
        if conf.local.edge == "mlp":
            self.edge_a, self.edge_b = (
                nn.Linear(d, conf.edge_hidden),
                nn.Linear(d, conf.edge_hidden, bias=False),
            )
            self.edge_out = nn.Linear(conf.edge_hidden, 1)
        if conf.local.pool == "attn":
            self.attn0, self.attn1 = nn.Linear(d, 1), nn.Linear(d, 1)
        # Smooth-max sharpness (learned, log-parametrised) and the stage's logit scale.
        self.log_sharpness = nn.Parameter(torch.tensor(math.log(10.0)))
        self.log_scale = nn.Parameter(torch.tensor(math.log(1 / conf.tau_init)))
        self.cross = PairCrossAttention(d, conf.rerank.dim) if conf.rerank.share > 0 else None
        if self.cross is not None:  # the re-ranker's own pooling sharpness and scale
            self.log_sharpness_r = nn.Parameter(torch.tensor(math.log(10.0)))
            self.log_scale_r = nn.Parameter(torch.tensor(math.log(1 / conf.tau_init)))

    def nodes(self, sets: list, x: torch.Tensor | None, side: int):
        """Node embeddings [T x d] and their movie index [T] of one side's graphs."""
        proj = self.proj0 if side == 0 else self.proj1
        parts = [p(self.drop(F.normalize(values, dim=-1))) for p, (values, _) in zip(proj, sets)]
        batch = [b for _, b in sets]
        if self.with_global:
            parts.append((self.global0 if side == 0 else self.global1)(x))
            batch.append(torch.arange(len(x)))
        h, b = torch.cat(parts), torch.cat(batch)
        if len(h) and len(self.blocks0):
            edges = complete_edges(b)
            for block in self.blocks0 if side == 0 else self.blocks1:
                h = block(h, edges)
        return h, b

    def _edge(self, h0: torch.Tensor, h1: torch.Tensor) -> torch.Tensor:
        """Node-pair scores in [-1, 1]: [t0 x t1]."""
        if self.conf.local.edge == "mlp":
            a, b = self.edge_a(h0), self.edge_b(h1)
            return torch.tanh(self.edge_out(F.relu(a[:, None, :] + b[None, :, :]))[..., 0])
        return F.normalize(h0, dim=-1) @ F.normalize(h1, dim=-1).T

    def forward(
        self, sets0, sets1, x0: torch.Tensor, x1: torch.Tensor, base: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Scores [N x M]; with re-ranking, ``base`` (the scores of the other parts of
        the model) and these pick the candidate pairs whose score the cross step moves."""
        n, m = len(x0), len(x1)
        h0, b0 = self.nodes(sets0, x0, 0)
        h1, b1 = self.nodes(sets1, x1, 1)
        if not len(h0) or not len(h1):
            return torch.zeros(n, m)
        out = self._pooled(h0, b0, h1, b1, n, m)
        if self.cross is not None:
            total = out if base is None else base + out
            out = out + self.rerank(total.detach(), h0, b0, h1, b1)
        return out

    def rerank(self, S, h0, b0, h1, b1, chunk: int = 2**20) -> torch.Tensor:
        """Score changes [N x M] of the candidate pairs of ``S`` (zero elsewhere);
        ``chunk``: about this many node-pair edges at a time."""
        beta = self.log_sharpness_r.exp().clamp(max=SHARPNESS_MAX)
        delta = rerank_pairs(self.cross, S, self.conf.rerank.share, beta, (h0, b0), (h1, b1), chunk)
        return self.log_scale_r.exp().clamp(max=100) * delta

    def _pooled(self, h0, b0, h1, b1, n: int, m: int) -> torch.Tensor:
        """Every movie pair's pooled node-pair score [N x M] (the first stage)."""
        pool = self.conf.local.pool
        _, _, softmax = _pyg()
        weights = None
        if pool == "attn":  # query-independent weights: which line / sentence matters
            weights = (
                softmax(self.attn0(h0)[:, 0], b0, num_nodes=n),
                softmax(self.attn1(h1)[:, 0], b1, num_nodes=m),
            )
        chunk = self.chunk
        if self.conf.local.edge == "mlp":  # the [rows x T1 x hidden] activation stays ~64 MB
            chunk = max(1, min(chunk, 2**24 // max(1, len(h1) * self.conf.edge_hidden)))
        beta = self.log_sharpness.exp().clamp(max=SHARPNESS_MAX)
        out = pool_pairs(self._edge, (h0, b0), (h1, b1), (n, m), pool, beta, chunk, weights)
        return self.log_scale.exp().clamp(max=100) * out


def pool_pairs(edge, side0, side1, shape, pool: str, beta, chunk: int, weights=None):
    """Pool the node-pair scores ``edge(h0 rows, h1)`` of every movie pair into one
    score [N x M]: ``pool`` = smoothmax (sharpness ``beta``), max, mean, or attn
    (``weights`` per node); poster nodes ``chunk`` at a time. A pair of graphs without
    nodes scores 0 (no evidence). ``side*`` = (nodes [T x d], their movie [T])."""
    (h0, b0), (h1, b1), (n, m) = side0, side1, shape
    _, scatter, _ = _pyg()
    c0 = torch.bincount(b0, minlength=n).float()  # nodes per poster graph
    c1 = torch.bincount(b1, minlength=m).float()
    out = torch.full((n, m), -1.0) if pool == "max" else torch.zeros(n, m)
    for s in range(0, len(h0), chunk):  # poster nodes s..e against all intro nodes
        e = min(s + chunk, len(h0))
        sim = edge(h0[s:e], h1)  # [c x T1]
        if pool == "smoothmax":  # (1/beta) log mean exp(beta * sim), stable as sim <= 1
            sim = torch.exp(beta * (sim - 1))
        elif pool == "attn":
            sim = sim * weights[1][None, :] * weights[0][s:e, None]
        reduce = "max" if pool == "max" else "sum"
        per_intro = scatter(sim, b1, dim=1, dim_size=m, reduce=reduce)  # [c x M]
        per_pair = scatter(per_intro, b0[s:e], dim=0, dim_size=n, reduce=reduce)  # [N x M]
        if pool == "max":  # only the posters with nodes in this chunk
            rows = torch.unique(b0[s:e])
            out[rows] = torch.maximum(out[rows], per_pair[rows])
        else:
            out = out + per_pair
    pairs = c0[:, None] * c1[None, :]
    if pool == "smoothmax":
        out = 1 + torch.log(out / pairs.clamp(min=1) + 1e-30) / beta
    elif pool == "mean":
        out = out / pairs.clamp(min=1)
    return torch.where(pairs > 0, out, torch.zeros(()))


def rerank_pairs(cross, S, share: float, beta, side0, side1, chunk: int) -> torch.Tensor:
    """The re-ranking step (see the module doc): for each candidate pair of ``S`` (its
    top ``share``), one cross-attention step ``cross`` between the pair's two graphs, and
    the change of its smooth-max pooled node-pair cosine; [N x M], zero elsewhere."""
    (h0, b0), (h1, b1) = side0, side1
    n, m = S.shape
    pi, pj = candidate_pairs(S, share)
    _, scatter, _ = _pyg()
    h0, h1 = cross.proj(h0), cross.proj(h1)
    c0, c1 = torch.bincount(b0, minlength=n), torch.bincount(b1, minlength=m)
    per_pair = max(1, int((c0[pi] * c1[pj]).float().mean().item())) if len(pi) else 1
    step = max(1, chunk // per_pair)
    g0, g1 = F.normalize(h0, dim=-1), F.normalize(h1, dim=-1)
    projected = cross.project(h0, h1)  # once, not once per chunk
    deltas = []
    for s in range(0, len(pi), step):
        ci, cj = pi[s : s + step], pj[s : s + step]
        idx0, idx1, src, dst, pair_e = pair_edges(ci, cj, b0, b1, n, m)
        before = (g0[idx0[src]] * g1[idx1[dst]]).sum(-1)
        y0, y1 = cross(h0, h1, idx0, idx1, src, dst, projected)
        after = (F.normalize(y0, dim=-1)[src] * F.normalize(y1, dim=-1)[dst]).sum(-1)
        # smooth-max of each pair's node-pair cosines, after minus before
        w = scatter(
            torch.stack([torch.exp(beta * (after - 1)), torch.exp(beta * (before - 1))], 1),
            pair_e,
            dim=0,
            dim_size=len(ci),
        )
        deltas.append((torch.log(w[:, 0] + 1e-30) - torch.log(w[:, 1] + 1e-30)) / beta)
    delta = torch.cat(deltas) if deltas else torch.zeros(0)
    flat = torch.zeros(n * m, dtype=delta.dtype).index_put((pi * m + pj,), delta)
    return flat.view(n, m)
