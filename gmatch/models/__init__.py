from gmatch.models.matcher import Matcher, logits_to_dist

__all__ = ["Matcher", "logits_to_dist"]
