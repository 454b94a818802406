"""The lexical prior: character n-gram TF-IDF of poster OCR text vs intros."""

import numpy as np
import pytest
import torch
from conftest import DATA

from gmatch.config import load_config
from gmatch.data import load_movielens
from gmatch.evaluate import predict_dist
from gmatch.features import extract, extract_features, load_features
from gmatch.metrics import evaluate_distance
from gmatch.priors import LexicalScorer, lexical_cosine, parse_prior
from gmatch.text import TrainOnlyTfidf
from gmatch.training import new_model

INTROS = [
    "Batman fights the Joker in Gotham City.",
    "A young wizard goes to Hogwarts school.",
    "Sharks terrorise a small island town.",
]


def test_char_ngrams_survive_ocr_misreadings_and_see_training_intros_only():
    tf = TrainOnlyTfidf(dim=0, min_df=1, max_features=0, analyzer="char_wb").fit(INTROS)
    ocr = tf.transform_sparse(["8ATMAN G0THAM", "H0GWARTS", ""])
    B = tf.transform_sparse(INTROS)
    S = lexical_cosine(ocr, B).numpy()
    assert S[0].argmax() == 0 and S[1].argmax() == 1  # misread words still match
    assert np.all(S[2] == 0)  # no text: no evidence
    # Vocabulary from the training texts only: a word seen nowhere else adds nothing.
    assert lexical_cosine(tf.transform_sparse(["zyxwvu"]), B).abs().max() == 0
    again = TrainOnlyTfidf.from_state(tf.state_dict())
    assert (abs(again.transform_sparse(INTROS) - B)).max() < 1e-6


def test_lexical_cosine_chunks_and_indexing():
    rng = np.random.default_rng(0)
    from scipy import sparse

    A = sparse.random(23, 50, density=0.2, format="csr", random_state=1, dtype=np.float32)
    B = sparse.random(17, 50, density=0.2, format="csr", random_state=2, dtype=np.float32)
    i, j = rng.permutation(23)[:9], rng.permutation(17)[:11]
    got = lexical_cosine(A, B, i, j, chunk=4).numpy()
    np.testing.assert_allclose(got, (A.toarray()[i] @ B.toarray()[j].T), rtol=1e-5, atol=1e-6)
    # The common/rare vocabulary split is exact, for row slices and column index arrays.
    scorer = LexicalScorer(A, B, n_common=5)
    assert len(scorer.common) == 5 and len(scorer.rare) == 45
    want = A.toarray()[3:19] @ B.toarray()[j].T
    np.testing.assert_allclose(scorer.scores(slice(3, 19), j).numpy(), want, rtol=1e-5, atol=1e-6)
    # Its two shares (the streamed path folds the common one into its fused product).
    a, b = scorer.common_factors()
    parts = a[3:19] @ b[j].T + scorer.rare_scores(slice(3, 19), j)
    np.testing.assert_allclose(parts.numpy(), want, rtol=1e-5, atol=1e-6)
    assert not np.allclose((a[3:19] @ b[j].T).numpy(), want, atol=1e-3)  # the rare share counts
    assert LexicalScorer(A, B, n_common=50).rare_scores(slice(0, 3)) is None  # all common
    # Written in row chunks into preallocated columns (the streamed path's factors): the
    # same values bitwise, the poster side scaled; with the intro block cached or not.
    for cached in (False, True):
        if cached:
            scorer.Bc  # noqa: B018 -- builds the cached intro block
        out0, out1 = torch.full((23, 5), float("nan")), torch.full((17, 5), float("nan"))
        scorer.write_common(out0, out1, scale=3.0, rows=4)
        assert torch.equal(out0, a * 3.0) and torch.equal(out1, b)
    scorer.write_common(out0, out1, rows=4)
    assert torch.equal(out0, a) and not torch.equal(out0, a * 3.0)


def test_prior_entries_parse_and_reject_bad_ones():
    assert parse_prior("ocr:chars=text:chars@6") == ("ocr:chars", "text:chars", 6.0)
    assert parse_prior("ocr:minilm=text:minilm") == ("ocr:minilm", "text:minilm", None)
    for bad in ["ocr:minilm", "ocr:chars=text:chars@x", "ocr:chars=text:chars@0"]:
        with pytest.raises(ValueError, match="prior entry"):
            parse_prior(bad)


def test_lexical_prior_in_the_pipeline(tiny_dir, cache_dir):
    """The lexical pair reaches the model, the model refuses to run without it,
    a sparse view cannot be a node feature, and the pipeline stays equivariant."""
    conf = load_config(
        None,
        [
            f"data.root={tiny_dir}",
            f"data.cache_dir={cache_dir}",
            "data.poster_views=[image:efficientnet_lite0]",
            "data.intro_views=[text:minilm]",
            "model.prior=[ocr:chars=text:chars@5]",
            "model.n_layers=1",
            "model.dim=32",
        ],
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    assert [(a.spec, b.spec) for a, b in feats.prior_blocks] == [("ocr:chars", "text:chars")]
    assert set(feats.states()) == {"ocr:chars", "text:chars"}
    torch.manual_seed(0)
    model = new_model(conf, feats).eval()
    with pytest.raises(ValueError, match="lexical"):
        model(*[feats.inputs()[k] for k in ("views0", "valid0", "views1", "valid1")])
    D = predict_dist(model, feats)
    # The prior moves D by exactly weight/tau * cosine.
    with torch.no_grad():
        model.lexical_log_weight.fill_(-30.0)
    D0 = predict_dist(model, feats)
    lex = feats.priors.full()[0]
    assert lex.abs().max() > 0.1
    assert torch.allclose(D0 - D, 5 / conf.model.tau_init * lex, atol=1e-3)
    with torch.no_grad():
        model.lexical_log_weight.fill_(float(np.log(5 / conf.model.tau_init)))
    p = np.random.default_rng(1).permutation(len(ms))
    Dp = predict_dist(model, load_features(ms.subset(p), conf, False))
    assert torch.allclose(Dp, D[p][:, p], atol=1e-4)
    assert evaluate_distance(Dp)["acc_dim0"] == evaluate_distance(D)["acc_dim0"]
    with pytest.raises(ValueError, match="sparse lexical or set view"):
        extract_features(ms, ["ocr:chars"], ["text:minilm"], cache_dir, False)


def test_lexical_view_fits_on_training_intros_only(tiny_dir, cache_dir):
    ms = load_movielens(tiny_dir)
    changed = ms.subset(np.arange(len(ms)))
    for i in changed.heldout_idx:
        changed.intros[i] = "zebra quantum " + changed.intros[i][::-1]
    a = extract(ms, "text:chars", cache_dir, False).values[ms.train_idx]
    b = extract(changed, "text:chars", cache_dir, False).values[ms.train_idx]
    assert abs(a - b).max() == 0


def test_tfidf_svd_fit_is_order_invariant_on_real_intros():
    """On the course's 1762 training intros (a vocabulary far above 256 terms, so the
    SVD runs), fitting on a shuffled list gives exactly the same basis. Control: without
    the canonical order the randomized SVD's components move."""
    ms = load_movielens(DATA)
    intros = [ms.intros[i] for i in ms.train_idx]
    shuffled = [intros[i] for i in np.random.default_rng(0).permutation(len(intros))]
    a, b = TrainOnlyTfidf().fit(intros), TrainOnlyTfidf().fit(shuffled)
    assert a.components is not None and a.components.shape[0] == 256
    assert np.array_equal(a.components, b.components)
    assert np.array_equal(a.transform(intros[:50]), b.transform(intros[:50]))

    class FileOrder(TrainOnlyTfidf):  # the fit before the fix: documents as given
        @staticmethod
        def _canonical(docs):
            return list(docs)

    c, d = FileOrder().fit(intros), FileOrder().fit(shuffled)
    assert not np.allclose(np.abs(c.components), np.abs(d.components), atol=1e-3)


def test_audit_compares_svd_subspaces_not_components():
    """A basis with rotated components of one subspace (and flipped signs) is the same
    subspace; another subspace is not (control)."""
    import torch

    from gmatch.audit import same_subspace

    g = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(300, 8, generator=g, dtype=torch.float64)).Q.T
    rot = torch.linalg.qr(torch.randn(8, 8, generator=g, dtype=torch.float64)).Q
    assert same_subspace(basis.float(), (rot @ basis).float())
    assert same_subspace(basis, -basis)
    other = torch.linalg.qr(torch.randn(300, 8, generator=g, dtype=torch.float64)).Q.T
    assert not same_subspace(basis, other)
