"""The local-node stage (gmatch.models.local): graph batching, pooling against brute
force, permutation equivariance with a negative control, and the pipeline end to end."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import scramble_

from gmatch.config import LocalConf, ModelConf, RerankConf
from gmatch.models import Matcher
from gmatch.models.local import LocalStage, candidate_pairs, complete_edges


def random_sets(n, dim, g, max_elems=4, empty=0.2):
    """Per movie 0..max_elems elements (some movies none), in a shuffled order."""
    counts = torch.randint(1, max_elems + 1, (n,), generator=g)
    counts[torch.rand(n, generator=g) < empty] = 0
    batch = torch.repeat_interleave(torch.arange(n), counts)
    batch = batch[torch.randperm(len(batch), generator=g)]
    return torch.randn(len(batch), dim, generator=g), batch


def local_conf(rerank=0.0, rerank_dim=32, **kw):
    """A small ModelConf; ``local_<field>=`` keys set its LocalConf."""
    local = {"dim": 16, "heads": 2}
    for key in [k for k in kw if k.startswith("local_")]:
        name = key.removeprefix("local_")
        local["global_node" if name == "global" else name] = kw.pop(key)
    base = dict(dim=16, dropout=0.0, feat_dropout=0.0, edge_hidden=8)
    return ModelConf(
        **{**base, **kw},
        local=LocalConf(**local),
        rerank=RerankConf(share=rerank, dim=rerank_dim),
    )


def test_complete_edges_join_exactly_the_nodes_of_one_graph():
    batch = torch.tensor([2, 0, 2, 1, 0, 2])
    got = {tuple(e) for e in complete_edges(batch).T.tolist()}
    want = {(i, j) for i in range(6) for j in range(6) if batch[i] == batch[j]}
    assert got == want and complete_edges(batch).shape[1] == len(want)


@pytest.mark.parametrize("pool", ["smoothmax", "max", "mean"])
def test_pooling_equals_a_loop_over_node_pairs(pool):
    """Chunked scatter pooling == the formula, one movie pair at a time (no global node)."""
    g = torch.Generator().manual_seed(1)
    stage = LocalStage(local_conf(local_pool=pool, local_global=False), [12], [12], chunk=3).eval()
    (e0, b0), (e1, b1) = random_sets(7, 12, g), random_sets(5, 12, g)
    with torch.no_grad():
        got = stage([(e0, b0)], [(e1, b1)], torch.zeros(7, 16), torch.zeros(5, 16))
        h0, h1 = stage.proj0[0](F.normalize(e0, dim=-1)), stage.proj1[0](F.normalize(e1, dim=-1))
        beta = stage.log_sharpness.exp().item()
        scale = stage.log_scale.exp().item()
    for i in range(7):
        for j in range(5):
            a, b = h0[b0 == i], h1[b1 == j]
            if not len(a) or not len(b):
                want = 0.0
            else:
                sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
                if pool == "smoothmax":
                    want = math.log(torch.exp(beta * sim).mean().item()) / beta
                else:
                    want = (sim.max() if pool == "max" else sim.mean()).item()
            assert abs(got[i, j].item() - scale * want) < 1e-3, (i, j)


def equivariance_error(model, sets0, sets1, x0, x1, g):
    """Shuffle posters, intros and the element order of every set: scores must permute."""
    n, m = len(x0), len(x1)
    p, q = torch.randperm(n, generator=g), torch.randperm(m, generator=g)
    inv_p, inv_q = torch.argsort(p), torch.argsort(q)

    def shuffle(sets, inv):
        out = []
        for values, batch in sets:
            order = torch.randperm(len(batch), generator=g)
            out.append((values[order], inv[batch[order]]))
        return out

    with torch.no_grad():
        S = model(sets0, sets1, x0, x1)
        Sp = model(shuffle(sets0, inv_p), shuffle(sets1, inv_q), x0[p], x1[q])
    return (Sp - S[p][:, q]).abs().max().item()


@pytest.mark.parametrize(
    "edge,pool,layers", [("cosine", "smoothmax", 2), ("mlp", "attn", 1), ("cosine", "max", 0)]
)
def test_local_stage_is_permutation_equivariant(edge, pool, layers):
    g = torch.Generator().manual_seed(2)
    conf = local_conf(local_edge=edge, local_pool=pool, local_layers=layers)
    stage = scramble_(
        LocalStage(conf, [12], [12], chunk=5), std=0.3
    ).eval()  # fresh blocks are the identity
    sets0, sets1 = [random_sets(9, 12, g)], [random_sets(8, 12, g)]
    x0, x1 = torch.randn(9, 16, generator=g), torch.randn(8, 16, generator=g)
    assert equivariance_error(stage, sets0, sets1, x0, x1, g) < 1e-4
    # Negative control: a node-index bias inside the node-pair edge must break the check.
    plain = stage._edge
    stage._edge = lambda h0, h1: plain(h0, h1) + torch.arange(len(h1)) / len(h1)
    assert equivariance_error(stage, sets0, sets1, x0, x1, g) > 1e-3


def test_local_blocks_see_their_own_graph_only():
    """Self-attention inside a graph: changing one movie's elements moves only its row."""
    g = torch.Generator().manual_seed(3)
    stage = scramble_(LocalStage(local_conf(local_layers=2), [12], [12]), std=0.3).eval()
    (e0, b0), sets1 = random_sets(6, 12, g, empty=0), [random_sets(5, 12, g)]
    x0, x1 = torch.randn(6, 16, generator=g), torch.randn(5, 16, generator=g)
    with torch.no_grad():
        S = stage([(e0, b0)], sets1, x0, x1)
        e0b = e0.clone()
        e0b[b0 == 2] += 1.0
        S2 = stage([(e0b, b0)], sets1, x0, x1)
    moved = (S2 - S).abs().amax(1)
    assert moved[2] > 1e-3 and torch.all(moved[torch.arange(6) != 2] < 1e-6)


@pytest.mark.parametrize(
    "poster_sets,rerank",
    [
        (["ocrlines:minilm"], 0.0),
        (["ocrlines:minilm"], 0.25),
        (["ocrlines:minilm", "regions:efficientnet_lite0"], 0.0),
    ],
)
def test_matcher_with_local_stage_trains_and_roundtrips(
    tiny_dir, cache_dir, tmp_path, poster_sets, rerank
):
    """The pipeline: set views become local nodes, the loss falls, the checkpoint reproduces D,
    and large-N mode refuses the local stage with a clear message."""
    from gmatch.checkpoint import load_checkpoint, save_checkpoint
    from gmatch.config import load_config
    from gmatch.data import load_movielens
    from gmatch.evaluate import predict_dist
    from gmatch.features import load_features
    from gmatch.stream import streamed_ranks
    from gmatch.training import train

    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            f"data.poster_sets=[{','.join(poster_sets)}]",
            "data.intro_sets=[sents:minilm]",
            "model.prior=[]",
            "model.dim=16",
            "model.local.dim=16",
            "model.local.layers=1",
            f"model.rerank={rerank}",
            "train.steps=40",
            "train.folds=1",
            "train.eval_every=20",
            "train.episode_sizes=[16]",
            "train.warmup=5",
            "train.refit=false",
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    assert [b.spec for b in feats.poster_sets] == poster_sets
    result = train(conf, ms, feats, progress=False)
    assert isinstance(result.model, Matcher) and result.model.local is not None
    assert (result.model.local.cross is not None) == bool(rerank)
    if rerank:  # the cross step was trained (it starts as the identity)
        assert result.model.local.cross.out0.weight.abs().sum() > 0
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    D = predict_dist(result.model, feats)
    save_checkpoint(tmp_path / "m.pt", result.model, conf, feats)
    model, _, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["poster_sets"] == poster_sets and torch.equal(predict_dist(model, feats), D)
    inputs = feats.inputs()
    with pytest.raises(ValueError, match="local-node stage"):
        streamed_ranks(
            model, inputs["views0"], inputs["valid0"], inputs["views1"], inputs["valid1"]
        )


def test_candidate_pairs_are_the_row_and_column_top_k_once():
    g = torch.Generator().manual_seed(5)
    S = torch.randn(7, 9, generator=g)
    pi, pj = candidate_pairs(S, 0.3)  # top 3 intros per poster, top 3 posters per intro
    got = set(zip(pi.tolist(), pj.tolist()))
    want = {(i, j) for i in range(7) for j in torch.topk(S[i], 3).indices.tolist()}
    want |= {(i, j) for j in range(9) for i in torch.topk(S[:, j], 3).indices.tolist()}
    assert got == want and len(pi) == len(want)


def rerank_stage(**kw):
    conf = local_conf(
        rerank=0.4, rerank_dim=8, local_layers=1, **kw
    )  # a fresh cross step is the identity
    return scramble_(LocalStage(conf, [12], [12], chunk=5), std=0.3).eval()


def test_rerank_moves_candidate_pairs_as_a_per_pair_loop_says():
    """Chunked, batched re-ranking equals cross-attending each candidate pair on its own;
    other pairs keep their first-stage score; a fresh re-ranker changes nothing."""
    g = torch.Generator().manual_seed(6)
    stage = rerank_stage()
    sets0, sets1 = [random_sets(8, 12, g)], [random_sets(7, 12, g)]
    x0, x1 = torch.randn(8, 16, generator=g), torch.randn(7, 16, generator=g)
    base = torch.randn(8, 7, generator=g)
    with torch.no_grad():
        h0, b0 = stage.nodes(sets0, x0, 0)
        h1, b1 = stage.nodes(sets1, x1, 1)
        first = stage._pooled(h0, b0, h1, b1, 8, 7)
        got = stage(sets0, sets1, x0, x1, base=base) - first
        pi, pj = candidate_pairs(base + first, 0.4)
        beta = stage.log_sharpness_r.exp()
        scale = stage.log_scale_r.exp()
        want = torch.zeros(8, 7)
        c = stage.cross
        for i, j in zip(pi.tolist(), pj.tolist()):
            y0, y1 = c.proj(h0[b0 == i]), c.proj(h1[b1 == j])

            def pooled(a, b):
                sim = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
                return math.log(torch.exp(beta * sim).mean().item()) / beta

            def attend(x, q, k, v, out, y):  # nodes x attend to the other graph's nodes y
                w = torch.softmax(q(x) @ k(y).T / math.sqrt(x.shape[1]), dim=1)
                return x + w @ out(v(y))

            before = pooled(y0, y1)
            z0 = attend(y0, c.q0, c.k1, c.v1, c.out0, y1)
            z1 = attend(y1, c.q1, c.k0, c.v0, c.out1, y0)
            want[i, j] = scale * (pooled(z0, z1) - before)
        chunked = stage.rerank(base + first, h0, b0, h1, b1, chunk=7)
    assert torch.allclose(got, want, atol=1e-4)
    assert torch.allclose(chunked, want, atol=1e-4)
    mask = torch.zeros(8, 7, dtype=torch.bool)
    mask[pi, pj] = True
    assert (got[mask] != 0).any() and torch.all(got[~mask] == 0) and not mask.all()
    fresh = LocalStage(local_conf(rerank=0.4), [12], [12]).eval()
    with torch.no_grad():
        h0, b0 = fresh.nodes(sets0, x0, 0)
        h1, b1 = fresh.nodes(sets1, x1, 1)
        assert torch.equal(fresh.rerank(base, h0, b0, h1, b1), torch.zeros(8, 7))


def test_rerank_is_permutation_equivariant():
    g = torch.Generator().manual_seed(7)
    stage = rerank_stage()
    sets0, sets1 = [random_sets(9, 12, g)], [random_sets(8, 12, g)]
    x0, x1 = torch.randn(9, 16, generator=g), torch.randn(8, 16, generator=g)
    assert equivariance_error(stage, sets0, sets1, x0, x1, g) < 1e-4
    # Negative control: a copy-index bias inside the cross step must break the check.
    plain = stage.cross.forward

    def biased(h0, h1, idx0, idx1, src, dst, projected=None):
        y0, y1 = plain(h0, h1, idx0, idx1, src, dst, projected)
        return y0 + torch.arange(len(y0))[:, None] / len(y0), y1

    stage.cross.forward = biased
    assert equivariance_error(stage, sets0, sets1, x0, x1, g) > 1e-3
