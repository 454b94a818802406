"""The local-node stage (gmatch.models.local): graph batching, pooling against brute
force, permutation equivariance with a negative control, and the pipeline end to end."""

import math

import pytest
import torch
import torch.nn.functional as F
from conftest import scramble_

from gmatch.config import ModelConf
from gmatch.models import Matcher
from gmatch.models.local import LocalStage, complete_edges


def random_sets(n, dim, g, max_elems=4, empty=0.2):
    """Per movie 0..max_elems elements (some movies none), in a shuffled order."""
    counts = torch.randint(1, max_elems + 1, (n,), generator=g)
    counts[torch.rand(n, generator=g) < empty] = 0
    batch = torch.repeat_interleave(torch.arange(n), counts)
    batch = batch[torch.randperm(len(batch), generator=g)]
    return torch.randn(len(batch), dim, generator=g), batch


def local_conf(**kw):
    base = dict(dim=16, local_dim=16, local_heads=2, dropout=0.0, feat_dropout=0.0, edge_hidden=8)
    return ModelConf(**{**base, **kw})


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


def test_matcher_with_local_stage_trains_and_roundtrips(tiny_dir, cache_dir, tmp_path):
    """The pipeline: set views become local nodes, the loss falls, the checkpoint reproduces D,
    and large-N mode refuses the local stage with a clear message."""
    from gmatch.checkpoint import load_checkpoint, save_checkpoint
    from gmatch.config import load_config
    from gmatch.data import load_movielens
    from gmatch.evaluate import predict_dist
    from gmatch.features import load_features
    from gmatch.stream import streamed_ranks
    from gmatch.train import train

    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            "data.poster_sets=[ocrlines:minilm]",
            "data.intro_sets=[sents:minilm]",
            "model.prior=[]",
            "model.dim=16",
            "model.local_dim=16",
            "model.local_layers=1",
            "train.steps=40",
            "train.eval_every=20",
            "train.episode_sizes=[16]",
            "train.warmup=5",
            "train.refit=false",
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    assert [b.spec for b in feats.poster_sets] == ["ocrlines:minilm"]
    result = train(conf, ms, feats, progress=False)
    assert isinstance(result.model, Matcher) and result.model.local is not None
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < losses[0]
    D = predict_dist(result.model, feats)
    save_checkpoint(tmp_path / "m.pt", result.model, conf, feats)
    model, _, ckpt = load_checkpoint(tmp_path / "m.pt")
    assert ckpt["poster_sets"] == ["ocrlines:minilm"] and torch.equal(predict_dist(model, feats), D)
    inputs = feats.inputs()
    with pytest.raises(ValueError, match="local-node stage"):
        streamed_ranks(
            model, inputs["views0"], inputs["valid0"], inputs["views1"], inputs["valid1"]
        )
