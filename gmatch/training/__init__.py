"""Training from cached features (:func:`train`).

- :mod:`.episodes`: random episodes of training movies, hard negatives, the k-fold split;
- :mod:`.state`: the model, optimiser and schedule of one phase, saved for resuming;
- :mod:`.loop`: phases with early stopping, the refit, fold bags and seed ensembles.

Fine-tuning the towers (:mod:`gmatch.finetune`) enters as the towers a phase trains.
"""

from gmatch.training.episodes import EpisodeStream, confusable, fold_split
from gmatch.training.loop import TrainResult, refit, train
from gmatch.training.state import (
    Phase,
    TrainState,
    TrainStateError,
    lr_factor,
    new_model,
    seed_everything,
)

__all__ = [
    "train",
    "refit",
    "TrainResult",
    "TrainStateError",
    "TrainState",
    "Phase",
    "EpisodeStream",
    "confusable",
    "fold_split",
    "lr_factor",
    "new_model",
    "seed_everything",
]
