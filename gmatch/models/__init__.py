"""The matcher: node encoders -> attention units -> edge-scorer head."""

from gmatch.models.matcher import (
    Ensemble,
    Matcher,
    build_matcher,
    independent_pairs,
    logits_to_dist,
)

__all__ = ["Matcher", "Ensemble", "build_matcher", "independent_pairs", "logits_to_dist"]
