"""Zero-shot prior pairs (``model.prior``): parsing (:mod:`.pairs`), the dense cosine
priors computed inside the model, and the precomputed ones scored outside it:
character n-gram cosines (:mod:`.lexical`) and max-pooled cosines of set views
(:mod:`.pooled`), served per data set by :class:`PriorScorer` (:mod:`.scorer`)."""

from gmatch.priors.lexical import LexicalScorer, lexical_cosine
from gmatch.priors.pairs import (
    check_prior_scores,
    dense_pairs,
    dense_prior,
    dense_prior_factors,
    dense_prior_width,
    parse_prior,
    precomputed_pairs,
    prior_logits,
    prior_plan,
    write_dense_prior_factors,
)
from gmatch.priors.pooled import PooledScorer, offsets_within, set_elements, set_starts
from gmatch.priors.scorer import FULL_MATRIX_MAX, PriorScorer, as_index, make_scorer, pair_scores

__all__ = [
    "check_prior_scores",
    "prior_logits",
    "prior_plan",
    "as_index",
    "dense_pairs",
    "dense_prior",
    "dense_prior_factors",
    "dense_prior_width",
    "write_dense_prior_factors",
    "FULL_MATRIX_MAX",
    "lexical_cosine",
    "LexicalScorer",
    "make_scorer",
    "offsets_within",
    "pair_scores",
    "parse_prior",
    "PooledScorer",
    "precomputed_pairs",
    "PriorScorer",
    "set_elements",
    "set_starts",
]
