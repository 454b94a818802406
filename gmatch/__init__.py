"""gmatch: graph matching for cross-modal alignment (movie posters <-> plot intros)."""

from gmatch.data import DataError, MovieSet, load_movielens
from gmatch.metrics import evaluate_distance, get_acc
from gmatch.models.matcher import Matcher

__version__ = "0.1.0"
__all__ = ["DataError", "MovieSet", "load_movielens", "evaluate_distance", "get_acc", "Matcher"]
