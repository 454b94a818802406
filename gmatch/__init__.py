"""gmatch: graph matching for cross-modal alignment (movie posters <-> plot intros)."""

from gmatch import threads

threads.configure()  # before any gmatch module loads torch: the OpenMP wait policy is read once

# The Python API (gmatch.api): load data and checkpoints, D, the metric, top-k, training.
from gmatch.api import Model, TrainedRun, fit, load_checkpoint, topk  # noqa: E402 - after configure()
from gmatch.data import DataError, MovieSet, load_movielens  # noqa: E402
from gmatch.metrics import evaluate_distance, get_acc  # noqa: E402
from gmatch.models.matcher import Matcher  # noqa: E402

__version__ = "0.1.0"
__all__ = [
    "load_movielens",
    "load_checkpoint",
    "fit",
    "get_acc",
    "topk",
    "evaluate_distance",
    "Model",
    "TrainedRun",
    "MovieSet",
    "DataError",
    "Matcher",
]
