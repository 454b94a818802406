import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import scramble_

from gmatch.config import ModelConf, RuntimeConf, load_config
from gmatch.data import load_movielens
from gmatch.evaluate import predict_dist
from gmatch.features import load_features
from gmatch.models import Matcher
from gmatch.models.attention import candidate_edges
from gmatch.models.edges import MLPEdge
from gmatch.training import new_model, train


def rand_views(n, dims, g, empty=0.3):
    views = [torch.randn(n, d, generator=g) for d in dims]
    valid = [torch.rand(n, generator=g) > empty for _ in dims]
    return views, valid


def lexical_case(n, g, seed):
    """``n`` posters (one 20-d view) and intros (one 16-d view), none empty, and a random
    sparse lexical pair (A, B) seeded ``seed`` / ``seed + 1``."""
    from scipy import sparse

    v0, m0 = rand_views(n, [20], g, empty=0)
    v1, m1 = rand_views(n, [16], g, empty=0)
    A, B = (
        sparse.random(n, 300, density=0.05, format="csr", random_state=s, dtype=np.float32)
        for s in (seed, seed + 1)
    )
    return v0, m0, v1, m1, (A, B)


@contextlib.contextmanager
def index_bias(module: torch.nn.Module, dim: int = -1, scale: float = 5.0):
    """Negative control: add a bias that depends on the node *index* along ``dim``
    to ``module``'s output, i.e. break permutation equivariance inside the model."""

    def hook(_, __, out):
        n = out.shape[dim]
        shape = [1] * out.ndim
        shape[dim] = n
        return out + scale * torch.arange(n, dtype=out.dtype).reshape(shape) / n

    handle = module.register_forward_hook(hook)
    try:
        yield
    finally:
        handle.remove()


def equivariance_error(model, v0, m0, v1, m1, g) -> float:
    """max |D(P0 x, P1 y) - P0 D(x, y) P1^T| for random permutations P0, P1."""
    p, q = torch.randperm(len(v0[0]), generator=g), torch.randperm(len(v1[0]), generator=g)
    with torch.no_grad():
        D = model(v0, m0, v1, m1)["dist"]
        Dp = model([x[p] for x in v0], [x[p] for x in m0], [x[q] for x in v1], [x[q] for x in m1])[
            "dist"
        ]
    return (Dp - D[p][:, q]).abs().max().item()


@pytest.mark.parametrize("edge", ["cosine", "dot", "mlp"])
@pytest.mark.parametrize("n_layers", [0, 2])
def test_permutation_equivariance(edge, n_layers):
    g = torch.Generator().manual_seed(0)
    conf = ModelConf(dim=32, n_layers=n_layers, num_heads=4, edge=edge, edge_hidden=16)
    model = scramble_(Matcher([20, 12], [16], conf, runtime=RuntimeConf(chunk=7))).eval()
    v0, m0 = rand_views(30, [20, 12], g)
    v1, m1 = rand_views(25, [16], g)
    assert equivariance_error(model, v0, m0, v1, m1, g) < 1e-4
    # Negative control: a column-index bias inside the cross-attention logits
    # (or, with no attention units, in the head) must make the same check fail.
    target = model.layers[-1].cross.edge if n_layers else model.head
    with index_bias(target):
        assert equivariance_error(model, v0, m0, v1, m1, g) > 1e-3


def test_zero_layers_cosine_is_the_dual_encoder():
    g = torch.Generator().manual_seed(1)
    conf = ModelConf(dim=16, n_layers=0, edge="cosine", tau_init=0.05)
    model = Matcher([10], [8], conf).eval()
    v0, m0 = rand_views(12, [10], g, empty=0)
    v1, m1 = rand_views(9, [8], g, empty=0)
    with torch.no_grad():
        logits = model(v0, m0, v1, m1)["logits"]
        a = F.normalize(model.encode0(v0, m0), dim=-1)
        b = F.normalize(model.encode1(v1, m1), dim=-1)
    assert torch.allclose(logits, a @ b.T / 0.05, atol=1e-4)


def test_mlp_edge_chunked_equals_full_concat_oracle():
    g = torch.Generator().manual_seed(2)
    edge = MLPEdge(dim=8, hidden=6, out=1, chunk=3)
    x0, x1 = torch.randn(10, 8, generator=g), torch.randn(7, 8, generator=g)
    # Oracle: the literal MLP on the concatenation [x_i, y_j].
    W = torch.cat([edge.proj0.weight, edge.proj1.weight], dim=1)
    a, b = edge.norm(x0), edge.norm(x1)
    pairs = torch.cat([a[:, None].expand(-1, 7, -1), b[None].expand(10, -1, -1)], dim=-1)
    oracle = edge.out(F.relu(pairs @ W.T + edge.proj0.bias))[..., 0]
    assert torch.allclose(edge(x0, x1), oracle, atol=1e-5)


def test_feature_dropout_keeps_1_minus_p_scales_and_is_seeded():
    """FeatureDropout is inverted dropout: in training each entry is kept with
    probability 1 - p (binomial bounds on 200k entries) and scaled by 1 / (1 - p), the
    gradient is the mask, the same seed draws the same mask; eval mode is the identity.
    Control: p = 0.1 keeps another share, so the share check tells p apart."""
    from gmatch.config import ConfigError
    from gmatch.models.dropout import FeatureDropout

    x = torch.ones(400, 500, requires_grad=True)
    for p in (0.5, 0.1):
        drop = FeatureDropout(p).train()
        torch.manual_seed(0)
        y = drop(x)
        kept = (y != 0).float().mean().item()
        assert abs(kept - (1 - p)) < 5 * (p * (1 - p) / x.numel()) ** 0.5, (p, kept)
        assert torch.allclose(y[y != 0], torch.full_like(y[y != 0], 1 / (1 - p)))
        (g,) = torch.autograd.grad(y.sum(), x)
        assert torch.equal(g, y.detach())  # d(x * mask)/dx = mask
        torch.manual_seed(0)
        assert torch.equal(drop(x), y)  # seeded: the same mask
        assert not torch.equal(drop(x), y)  # the next draw is another mask
        assert drop.eval()(x) is x
    assert abs(kept - 0.5) > 0.3  # control: p = 0.1's share is not p = 0.5's
    assert torch.equal(FeatureDropout(1.0).train()(x), torch.zeros_like(x))
    with pytest.raises(ConfigError, match="feat_dropout"):
        FeatureDropout(1.5)


def test_missing_view_uses_learned_vector():
    conf = ModelConf(dim=8, n_layers=0, feat_dropout=0.0)
    model = Matcher([4, 4], [4], conf).eval()
    with torch.no_grad():
        model.encode0.missing[1].fill_(0.5)  # a unit vector, so it survives normalisation
    image = torch.randn(2, 4).expand(2, 4).clone()
    image[1] = image[0]
    empty = [torch.tensor([True, True]), torch.tensor([False, False])]
    with torch.no_grad():
        a = model.encode0([image, torch.randn(2, 4)], empty)  # text view missing
        b = model.encode0([image, torch.full((2, 4), 7.0)], [empty[0], ~empty[1]])
    assert torch.allclose(a[0], a[1])  # the random features of missing rows are ignored
    assert torch.allclose(a, b, atol=1e-6)  # and replaced by the learned vector


@pytest.mark.parametrize(
    "overrides",
    [
        ["model.n_layers=0"],
        ["model.n_layers=1", "model.edge=mlp", "train.loss=sinkhorn"],
    ],
)
def test_training_lowers_the_loss(tiny_dir, cache_dir, overrides):
    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            "model.prior=[]",
            "model.dim=32",
            "model.feat_dropout=0",
            "model.view_dropout=0",
            "train.steps=60",
            "train.folds=1",
            "train.eval_every=20",
            "train.episode_sizes=[32]",
            "train.val_fraction=0",
            "train.warmup=5",
            "train.lr=1e-3",
            *overrides,
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    result = train(conf, ms, feats, progress=False)
    losses = [r["loss"] for r in result.history]
    assert losses[-1] < 0.75 * losses[0], losses
    # Trained pairs are now matched better than chance.
    D = predict_dist(result.model, feats)
    idx = torch.as_tensor(ms.train_idx)
    assert (D[idx][:, idx].argmin(1) == torch.arange(len(idx))).float().mean() > 0.3


@pytest.mark.parametrize("attn_prior", [0.0, 1.0])
def test_pipeline_equivariance_on_real_features(tiny_dir, cache_dir, attn_prior):
    """Shuffle the movie order of the data itself: D permutes, metrics stay."""
    from gmatch.metrics import evaluate_distance

    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm,text:tfidf]",
            "model.prior=[ocr:chars=text:chars@4]",
            "model.n_layers=2",
            "model.edge=mlp",
            "model.dim=32",
            f"model.attn_prior={attn_prior}",
        ],
    )
    ms = load_movielens(tiny_dir)
    model = scramble_(
        new_model(conf, load_features(ms, conf, False)), std=0.2
    ).eval()  # incl. the lexical prior
    p = np.random.default_rng(0).permutation(len(ms))
    feats, feats_p = load_features(ms, conf, False), load_features(ms.subset(p), conf, False)

    def error():
        D, Dp = predict_dist(model, feats), predict_dist(model, feats_p)
        return (Dp - D[p][:, p]).abs().max().item(), D, Dp

    err, D, Dp = error()
    assert err < 1e-4
    a, b = evaluate_distance(D), evaluate_distance(Dp)
    assert a["acc_dim0"] == b["acc_dim0"] and a["acc_dim1"] == b["acc_dim1"]
    with index_bias(model.layers[0].cross.edge):  # negative control inside the attention
        assert error()[0] > 1e-3


@pytest.mark.parametrize("edge", ["cosine", "dot", "mlp"])
def test_sparse_attention_equals_dense_when_m_is_n(edge):
    """Top-m attention over candidate edges, in row chunks, is the dense attention
    when every node is a candidate, and differs when m < N."""
    g = torch.Generator().manual_seed(3)
    conf = ModelConf(
        dim=32,
        n_layers=2,
        num_heads=4,
        edge=edge,
        edge_hidden=16,
        dropout=0,
        feat_dropout=0,
        view_dropout=0,
    )
    model = Matcher([20, 12], [16], conf, runtime=RuntimeConf(attn_chunk=7)).eval()
    for p in model.parameters():  # the residual ffns start at zero: make the units do something
        torch.nn.init.normal_(p, std=0.2, generator=g)
    v0, m0 = rand_views(30, [20, 12], g)
    v1, m1 = rand_views(25, [16], g)
    with torch.no_grad():
        dense = list(model.states(v0, m0, v1, m1, topm=0))[-1]
        x0, x1 = model.encode0(v0, m0), model.encode1(v1, m1)
        cand = candidate_edges(
            x0, x1, 30, model.attn_chunk
        )  # every node (m is clipped to each set's size)
        assert cand["01"].shape == (30, 25) and cand["10"].shape == (25, 30)
        for layer in model.layers:
            x0, x1 = layer(x0, x1, cand, 7)
        few = list(model.states(v0, m0, v1, m1, topm=5))[-1]
    assert torch.allclose(x0, dense[0], atol=1e-4) and torch.allclose(x1, dense[1], atol=1e-4)
    assert (few[0] - dense[0]).abs().max() > 1e-2  # m < N really restricts the attention


def test_topm_candidates_are_the_exact_top_m():
    g = torch.Generator().manual_seed(4)
    from gmatch.models.attention import topm_candidates

    a, b = torch.randn(40, 8, generator=g), torch.randn(33, 8, generator=g)
    got = topm_candidates(a, b, 6, chunk=9)
    cos = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T
    want = cos.topk(6, dim=1).indices
    assert torch.equal(got.sort(1).values, want.sort(1).values)


def test_sparse_model_is_permutation_equivariant():
    g = torch.Generator().manual_seed(5)
    conf = ModelConf(dim=32, n_layers=1, edge="mlp", attn_topm=6)
    model = scramble_(
        Matcher([20], [16], conf, runtime=RuntimeConf(attn_chunk=5)), seed=5, std=0.2
    ).eval()
    v0, m0 = rand_views(30, [20], g, empty=0)
    v1, m1 = rand_views(25, [16], g, empty=0)
    assert equivariance_error(model, v0, m0, v1, m1, g) < 1e-4
    with index_bias(
        model.layers[0].self1.qkv, dim=0
    ):  # control: a row-index bias in sparse attention
        assert equivariance_error(model, v0, m0, v1, m1, g) > 1e-3


def test_auxiliary_genre_head_learns_training_genres(tiny_dir, cache_dir):
    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            "model.prior=[]",
            "model.dim=32",
            "model.feat_dropout=0",
            "model.view_dropout=0",
            "train.steps=60",
            "train.folds=1",
            "train.episode_sizes=[32]",
            "train.val_fraction=0",
            "train.warmup=5",
            "train.genre_weight=1.0",
            "train.lr=0.01",
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    assert feats.genres.shape == (len(ms), len(feats.genre_names)) and "Comedy" in feats.genre_names
    result = train(conf, ms, feats, progress=False)
    assert result.model.genre_head is not None
    with torch.no_grad():
        out = result.model.eval()(**feats.inputs(ms.train_idx))
    y = torch.from_numpy(feats.genres[ms.train_idx]).bool()
    for key in ("genre0", "genre1"):  # positives score above negatives on the training movies
        assert out[key][y].mean() > out[key][~y].mean() + 1.0, key


def test_streamed_ranks_with_attention_and_lexical_prior_equal_dense():
    """Large-N mode on a model with an attention unit and a lexical prior: the
    streamed ranks equal those of the dense D (attention dense here: topm=0)."""

    from gmatch.metrics import evaluate_distance
    from gmatch.models import Matcher
    from gmatch.priors import lexical_cosine
    from gmatch.stream import streamed_metrics, streamed_ranks

    g = torch.Generator().manual_seed(6)
    conf = ModelConf(dim=32, n_layers=1, edge="mlp")
    model = Matcher([20], [16], conf, lexical_weights=[4.0]).eval()
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2, generator=g)
    n = 200
    v0, m0, v1, m1, (A, B) = lexical_case(n, g, seed=1)
    with torch.no_grad():
        D = model(v0, m0, v1, m1, lexical=[lexical_cosine(A, B)])["dist"]
    dense = evaluate_distance(D)
    stream = streamed_metrics(
        streamed_ranks(model, v0, m0, v1, m1, chunk=37, lexical=[(A, B)], topm=0)
    )
    for key, value in dense.items():
        assert stream[key] == pytest.approx(value, abs=1e-6), key
    with pytest.raises(ValueError, match="lexical"):
        streamed_ranks(model, v0, m0, v1, m1)


def test_prior_guided_cross_attention_follows_the_prior():
    """With a large gain, each poster's cross-attention message is the value of
    the intro its prior favours (and each intro's that of its prior's poster)."""
    from gmatch.models.attention import CrossBlock

    g = torch.Generator().manual_seed(3)
    block = CrossBlock(ModelConf(dim=8, num_heads=2, attn_prior=1.0, dropout=0.0)).eval()
    x0, x1 = torch.randn(6, 8, generator=g), torch.randn(5, 8, generator=g)
    prior = torch.randn(6, 5, generator=g)
    with torch.no_grad():
        block.prior_gain.fill_(1e4)
        y0, y1 = block(x0, x1, prior=prior)
        v0, v1 = block.value(x0), block.value(x1)
        m0 = block.merge(v1[prior.argmax(1)])
        m1 = block.merge(v0[prior.argmax(0)])
        assert torch.allclose(y0, x0 + block.ffn(torch.cat([x0, m0], -1)), atol=1e-5)
        assert torch.allclose(y1, x1 + block.ffn(torch.cat([x1, m1], -1)), atol=1e-5)
        block.prior_gain.zero_()  # gain 0 = plain cross-attention
        plain = CrossBlock(ModelConf(dim=8, num_heads=2, dropout=0.0)).eval()
        plain.load_state_dict({k: v for k, v in block.state_dict().items() if k != "prior_gain"})
        assert all(
            torch.allclose(a, b, atol=1e-6)
            for a, b in zip(block(x0, x1, prior=prior)[:2], plain(x0, x1)[:2])
        )
    with pytest.raises(ValueError, match="prior"):
        block(x0, x1)  # a prior-guided block refuses to run without the prior


def test_lr_schedule_and_refit_horizon(tiny_dir, cache_dir):
    from gmatch.training import lr_factor

    assert lr_factor(0, 10, 100) == pytest.approx(0.1) and lr_factor(9, 10, 100) == 1.0
    assert lr_factor(55, 10, 100) == pytest.approx(0.5) and lr_factor(100, 10, 100) == 0.0
    last_lr = {}
    for schedule in ("scaled", "fit"):
        conf = load_config(
            None,
            [
                f"data.root={tiny_dir}",
                f"data.cache_dir={cache_dir}",
                "data.poster_views=[image:efficientnet_lite0]",
                "data.intro_views=[text:minilm]",
                "model.prior=[]",
                "model.dim=16",
                "train.steps=200",
                "train.folds=1",
                "train.eval_every=10",
                "train.patience=2",
                "train.episode_sizes=[8]",
                "train.warmup=5",
                "train.val_fraction=0.7",
                "train.lr=1e-3",
                f"train.refit_schedule={schedule}",
            ],
        )
        result = train(conf, load_movielens(tiny_dir), progress=False)
        refit = [r for r in result.history if r.get("refit")]
        assert refit and refit[-1]["step"] == result.best_step < 200
        last_lr[schedule] = refit[-1]["lr"]
    assert last_lr["scaled"] == pytest.approx(0.0, abs=1e-9)  # decayed at its own last step
    assert last_lr["fit"] > 0.5 * conf.train.lr  # cut off early on the 200-step schedule
    with pytest.raises(ValueError, match="refit_schedule"):
        train(
            load_config(None, [f"data.root={tiny_dir}", "train.refit_schedule=never"]),
            progress=False,
        )


def test_ensemble_is_the_average_of_its_single_seed_runs(tiny_dir, cache_dir, tmp_path):
    from gmatch.checkpoint import load_checkpoint, save_checkpoint
    from gmatch.models import Ensemble

    base = [
        f"data.root={tiny_dir}",
        f"data.cache_dir={cache_dir}",
        "data.poster_views=[image:efficientnet_lite0]",
        "data.intro_views=[text:minilm]",
        "model.prior=[]",
        "model.dim=16",
        "train.steps=20",
        "train.folds=1",
        "train.eval_every=10",
        "train.episode_sizes=[16]",
        "train.warmup=5",
    ]
    ms = load_movielens(tiny_dir)
    conf = load_config(None, [*base, "model.members=2", "seed=3"])
    feats = load_features(ms, conf, progress=False)
    ens = train(conf, ms, feats, progress=False)
    assert isinstance(ens.model, Ensemble) and {r["member"] for r in ens.history} == {0, 1}
    singles = [
        predict_dist(
            train(load_config(None, [*base, f"seed={s}"]), ms, feats, progress=False).model, feats
        )
        for s in (3, 4)
    ]
    assert not torch.allclose(singles[0], singles[1])
    D = predict_dist(ens.model, feats)
    assert torch.allclose(D, (singles[0] + singles[1]) / 2, atol=1e-5)
    save_checkpoint(tmp_path / "ens.pt", ens.model, conf, feats)
    model, _, _ = load_checkpoint(tmp_path / "ens.pt")
    assert isinstance(model, Ensemble) and torch.allclose(predict_dist(model, feats), D, atol=1e-6)


def test_streamed_metrics_equal_dense_with_ties_and_refuse_degenerate_scores():
    """Duplicated intros give exactly tied scores: both paths count ties against
    the query and agree; a constant score matrix is refused by both."""
    from gmatch.metrics import DegenerateDistanceError, evaluate_distance
    from gmatch.stream import BlockScorer, streamed_metrics, streamed_ranks

    g = torch.Generator().manual_seed(7)
    model = scramble_(Matcher([12], [10], ModelConf(dim=16, n_layers=0)), seed=7).eval()
    n = 120
    v0, m0 = rand_views(n, [12], g, empty=0)
    v1, m1 = rand_views(n, [10], g, empty=0)
    v1[0][1::2] = v1[0][0::2]  # intro 2i+1 is a copy of intro 2i: tied columns
    v0[0][1::2] = v0[0][0::2]  # and poster 2i+1 of poster 2i: tied rows
    with torch.no_grad():
        D = model(v0, m0, v1, m1)["dist"]
    assert (D[:, 0] == D[:, 1]).all()  # the ties are exact
    dense = evaluate_distance(D)
    scorer = BlockScorer(model, v0, m0, v1, m1)
    # Even chunks keep each duplicated pair in one row block: a matmul may round a row
    # differently at another position of another call, so ties across blocks can be a ulp off.
    for chunk in (18, n):
        # The streamed scores are the dense ones up to float rounding (one fused product)...
        L = torch.cat([scorer.logits(s, min(s + chunk, n)) for s in range(0, n, chunk)])
        assert torch.allclose(L, -D, atol=1e-5, rtol=0)
        assert (L[:, 0::2] == L[:, 1::2]).all() and (L[0::2] == L[1::2]).all()  # ties exact
        # ...and the streamed ranks are exactly the metrics of the scores of its blocks.
        exact = evaluate_distance(-L)
        stream = streamed_metrics(streamed_ranks(model, v0, m0, v1, m1, chunk=chunk))
        for key, value in exact.items():
            assert stream[key] == value, key
        for key, value in dense.items():  # at most one rounding flip from the dense D
            assert stream[key] == pytest.approx(value, abs=2 / n if "R@" in key else 0.1), key
    # Ties count against the query: a duplicated pair can never be rank 0.
    assert dense["poster_to_intro/R@1"] == 0.0
    with torch.no_grad():
        model.encode1.proj.weight.zero_()
        model.encode1.proj.bias.fill_(1.0)  # every intro the same node: constant rows
    with torch.no_grad():
        D = model(v0, m0, v1, m1)["dist"]
    with pytest.raises(DegenerateDistanceError):
        evaluate_distance(D)
    with pytest.raises(DegenerateDistanceError, match="constant row"):
        streamed_ranks(model, v0, m0, v1, m1, chunk=18)


def test_train_fraction_fits_text_statistics_on_the_subset_only(tiny_dir, cache_dir):
    from gmatch.data import training_positions

    base = [
        f"data.root={tiny_dir}",
        f"data.cache_dir={cache_dir}",
        "data.poster_views=[image:efficientnet_lite0]",
        "data.intro_views=[text:tfidf]",
        "model.prior=[ocr:chars=text:chars]",
        "seed=2",
    ]
    ms = load_movielens(tiny_dir)
    half = load_config(None, [*base, "data.train_fraction=0.6"])
    pos, _ = training_positions(ms, half.seed, half.data.train_fraction)
    assert 16 <= len(pos) < len(ms.train_idx) and set(pos) <= set(ms.train_idx)
    feats = load_features(ms, half, progress=False)
    for spec, state in feats.states().items():
        assert state["n_fit_texts"] == len(pos), spec
    full = load_features(ms, load_config(None, base), progress=False)
    assert all(s["n_fit_texts"] == len(ms.train_idx) for s in full.states().values())  # control
    assert feats.intro[0].state["vocab"] != full.intro[0].state["vocab"]
    assert (
        ms.train_idx.tolist() == load_movielens(tiny_dir).train_idx.tolist()
    )  # evaluation keeps train.txt


def test_hard_episodes_hold_prior_confusers_from_training_movies_only(tiny_dir, cache_dir):
    """train.hard_negatives: neighbours come from the zero-shot priors on the phase's
    training movies (never a movie itself, never a validation or test movie); episodes
    fill up with them, so their pairs are more confusable than random episodes'
    (control: hard=0 gives exactly the plain stream)."""
    from gmatch.config import ConfigError
    from gmatch.training import EpisodeStream, confusable

    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            "model.prior=[ocr:chars=text:chars@4]",
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    model = new_model(conf, feats)
    pos = np.sort(ms.train_idx)[:24]  # a phase's training movies
    nb = confusable(model, feats, pos, 4)
    assert nb.shape == (24, 4) and set(nb.ravel()) <= set(pos.tolist())
    assert all(p not in row for p, row in zip(pos, nb))
    # Ranked by the prior: the first neighbour scores at least as high as the last.
    S = feats.priors.full(pos, pos)[0]
    sym = torch.maximum(S, S.T)
    k = {int(p): i for i, p in enumerate(pos)}
    for i, row in enumerate(nb):
        assert sym[i, k[int(row[0])]] >= sym[i, k[int(row[-1])]]
    plain = EpisodeStream(0, pos, [8])
    same = EpisodeStream(0, pos, [8], nb, 0.0)
    hard = EpisodeStream(0, pos, [8], nb, 0.5)
    score = {"plain": [], "hard": []}
    for _ in range(30):
        a, b, h = next(plain), next(same), next(hard)
        assert np.array_equal(a, b)
        assert len(h) == 8 and len(set(h.tolist())) == 8 and set(h.tolist()) <= set(pos.tolist())
        for name, ep in (("plain", a), ("hard", h)):
            rows = [k[int(p)] for p in ep]
            sub = sym[rows][:, rows]
            score[name].append(float(sub[~torch.eye(len(rows), dtype=bool)].mean()))
    assert np.mean(score["hard"]) > np.mean(score["plain"])
    # An ensemble's members share the priors (config buffers): the same neighbours.
    conf.model.members = 2
    ensemble = new_model(conf, feats)
    assert type(ensemble).__name__ == "Ensemble"
    assert np.array_equal(confusable(ensemble, feats, pos, 4), nb)
    conf.model.members = 1
    conf.model.prior = []  # no priors: nothing to mine neighbours from
    bare = new_model(conf, feats)
    with pytest.raises(ConfigError, match="hard_negatives"):
        confusable(bare, feats, pos, 4)


def test_match_input_fields_are_the_models_input_parameters():
    """The contract: MatchInput declares exactly what Matcher.forward reads (all_layers
    is a call option); views, validity and prior scores are required."""
    import inspect
    import typing

    from gmatch.models.inputs import MatchInput, set_tuned

    params = set(inspect.signature(Matcher.forward).parameters) - {"self", "all_layers"}
    assert set(typing.get_type_hints(MatchInput)) == params
    assert MatchInput.__required_keys__ == {"views0", "valid0", "views1", "valid1", "lexical"}
    views, valid = [torch.zeros(3, 4)], [torch.ones(3, dtype=torch.bool)]
    inp = MatchInput(views0=views, valid0=valid, views1=views, valid1=valid, lexical=[])
    set_tuned(inp, 1, 0, torch.ones(3, 4))
    assert "tuned1" in inp and "tuned0" not in inp and inp["tuned1"][0].sum() == 12


def test_streamed_ranks_of_an_ensemble_equal_dense():
    """A bag of members (the shipped default is one) streams as it forwards: the members'
    head + prior averaged. Control: streaming only the first member gives other ranks."""

    from gmatch.metrics import evaluate_distance
    from gmatch.models import Ensemble, Matcher
    from gmatch.priors import lexical_cosine
    from gmatch.stream import streamed_metrics, streamed_ranks

    g = torch.Generator().manual_seed(8)
    conf = ModelConf(dim=16, n_layers=0, edge="cosine", members=3)
    members = [Matcher([20], [16], conf, lexical_weights=[4.0]) for _ in range(3)]
    for m in members:
        for p in m.encode0.parameters():
            torch.nn.init.normal_(p, std=0.3, generator=g)
    model = Ensemble(members, conf).eval()
    n = 150
    v0, m0, v1, m1, (A, B) = lexical_case(n, g, seed=3)
    with torch.no_grad():
        D = model(v0, m0, v1, m1, lexical=[lexical_cosine(A, B)])["dist"]
    dense = evaluate_distance(D)
    stream = streamed_metrics(streamed_ranks(model, v0, m0, v1, m1, chunk=29, lexical=[(A, B)]))
    for key, value in dense.items():
        assert stream[key] == pytest.approx(value, abs=1e-6), key
    first = streamed_metrics(streamed_ranks(members[0], v0, m0, v1, m1, lexical=[(A, B)]))
    assert first["poster_to_intro/mean_rank"] != pytest.approx(dense["poster_to_intro/mean_rank"])
