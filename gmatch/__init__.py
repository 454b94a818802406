"""gmatch: graph matching for cross-modal alignment (movie posters <-> plot intros)."""

from gmatch import threads

threads.configure()  # before any gmatch module loads torch: the OpenMP wait policy is read once

from gmatch.data import DataError, MovieSet, load_movielens  # noqa: E402 - after configure()
from gmatch.metrics import evaluate_distance, get_acc  # noqa: E402
from gmatch.models.matcher import Matcher  # noqa: E402

__version__ = "0.1.0"
__all__ = ["DataError", "MovieSet", "load_movielens", "evaluate_distance", "get_acc", "Matcher"]
