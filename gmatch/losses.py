"""Matching losses over pair logits; positives are the diagonal of an episode."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from gmatch.assignment import sinkhorn

__all__ = ["match_loss", "total_loss", "genre_loss"]


def match_loss(logits: torch.Tensor, kind: str = "ce", sinkhorn_iters: int = 10) -> torch.Tensor:
    """Loss of one [B x B] logit matrix whose true pairs lie on the diagonal.

    ``ce``: symmetric cross-entropy over rows and columns, i.e. CLIP's InfoNCE
    and, up to a factor 2, the dual-softmax NLL ``-log(softmax_r * softmax_c)_ii``.
    ``sinkhorn``: NLL of the diagonal of the log-Sinkhorn normalised logits
    (SuperGlue's optimal-transport loss, without a dustbin: every movie has a partner).
    """
    target = torch.arange(len(logits), device=logits.device)
    if kind == "ce":
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    if kind == "sinkhorn":
        return -sinkhorn(logits, n_iters=sinkhorn_iters).diagonal().mean()
    raise ValueError(f"train.loss must be ce or sinkhorn, got {kind!r}")


def genre_loss(pred: dict, genres: torch.Tensor) -> torch.Tensor:
    """The auxiliary multi-label genre loss of both sides' nodes (``genre0``, ``genre1``)
    against the movies' genres [B x G] (training movies only)."""
    bce = torch.nn.functional.binary_cross_entropy_with_logits
    return (bce(pred["genre0"], genres) + bce(pred["genre1"], genres)) / 2


def total_loss(
    pred: dict,
    kind: str,
    deep_supervision: float,
    sinkhorn_iters: int = 10,
    genres: torch.Tensor | None = None,
    genre_weight: float = 0.0,
) -> dict:
    """``{"total", "final", "layer_0", ..., "genre"}``: final head plus weighted per-layer
    heads, plus ``genre_weight`` x the genre loss when ``genres`` are given."""
    out = {"final": match_loss(pred["logits"], kind, sinkhorn_iters)}
    total = out["final"]
    earlier = pred.get("layer_logits", [])[:-1]
    for i, logits in enumerate(earlier):
        out[f"layer_{i}"] = match_loss(logits, kind, sinkhorn_iters)
        total = total + deep_supervision * out[f"layer_{i}"] / len(earlier)
    if genres is not None and genre_weight > 0:
        out["genre"] = genre_loss(pred, genres)
        total = total + genre_weight * out["genre"]
    out["total"] = total
    return out
