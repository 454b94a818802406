"""Evaluation: D of a model on its features and the metrics of a D (official /
held-out / train blocks, and analyses that are never official)."""

from __future__ import annotations

import torch

from gmatch.assignment import assignment_accuracy, hungarian, sinkhorn
from gmatch.data import MovieSet
from gmatch.features import Features
from gmatch.metrics import evaluate_distance

__all__ = [
    "predict_dist",
    "metric_subsets",
    "split_metrics",
    "assignment_analysis",
    "test_set_sinkhorn",
]


def predict_dist(model: torch.nn.Module, feats: Features, idx=None) -> torch.Tensor:
    """D [N x N] for the movies ``idx`` (default all): all posters vs all intros at once."""
    model.eval()
    with torch.inference_mode():
        return model(**feats.inputs(idx))["dist"].float()


def metric_subsets(ms: MovieSet) -> dict:
    """The metric blocks and their movies: ``official`` (all, None), ``heldout`` (not in
    train.txt) and ``train``; no block for an empty subset."""
    out = {"official": None}
    if len(ms.train_idx) and len(ms.heldout_idx):
        out["heldout"] = ms.heldout_idx
    if len(ms.train_idx):
        out["train"] = ms.train_idx
    return out


def split_metrics(D, ms: MovieSet, ratio: float = 0.05) -> dict:
    """``official`` (all movies), ``heldout`` (not in train.txt) and ``train`` blocks.

    Each subset is scored on its own sub-matrix: candidates are the subset's
    movies and k = int(ratio * n_subset).
    """
    return {name: evaluate_distance(D, idx, ratio) for name, idx in metric_subsets(ms).items()}


def assignment_analysis(D, ms: MovieSet, taus=(0.01, 0.03, 0.1)) -> dict:
    """One-to-one matching on D (analysis only; get_acc always uses the raw D)."""
    D = torch.as_tensor(D)
    perm = hungarian(D)
    out = {"hungarian/all": assignment_accuracy(perm)}
    top1 = D.argmin(dim=1).numpy()
    out["raw_top1/all"] = assignment_accuracy(top1)
    if len(ms.train_idx):
        out["hungarian/heldout"] = assignment_accuracy(perm, ms.heldout_idx)
        out["raw_top1/heldout"] = assignment_accuracy(top1, ms.heldout_idx)
    scale = float(D.std())
    for tau in taus:
        P = sinkhorn(-D / scale, n_iters=50, tau=tau)
        out[f"sinkhorn_top1/tau={tau}"] = assignment_accuracy(P.argmax(dim=1).numpy())
    return out


def test_set_sinkhorn(D, ms: MovieSet, tau: float, iters: int = 20) -> dict:
    """SuperGlue's output layer applied to the raw scores S = -D of *all* test
    movies at once: D' = -log Sinkhorn(exp(S / tau)). It normalises over the whole
    unlabeled test set, so it is an analysis, never an official number."""
    S = -torch.as_tensor(D, dtype=torch.float64)
    D_sk = -sinkhorn(S, n_iters=iters, tau=tau)
    return {
        "tau": tau,
        "iters": iters,
        "note": "uses all test movies at once; not official",
        **split_metrics(D_sk.float(), ms),
    }
