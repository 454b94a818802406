"""One-to-one assignment on D, for analysis only (never the official metric).

Signs: :func:`hungarian` takes a *distance* (scipy minimises cost);
:func:`sinkhorn` takes *logits* (larger = closer), like pygmtools' ``s``.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["hungarian", "sinkhorn", "assignment_accuracy"]


def hungarian(D) -> np.ndarray:
    """perm[i] = column assigned to row i, minimising the total distance.

    Args:
        D: [N x M] or [B x N x M] distances (numpy or torch).
    Returns:
        perm [N] (or [B x N]) int64; -1 for rows left unmatched when N > M.
    """
    from scipy.optimize import linear_sum_assignment

    D = D.detach().cpu().numpy() if isinstance(D, torch.Tensor) else np.asarray(D)
    if D.ndim == 3:
        return np.stack([hungarian(d) for d in D])
    rows, cols = linear_sum_assignment(D)
    perm = np.full(D.shape[0], -1, dtype=np.int64)
    perm[rows] = cols
    return perm


def sinkhorn(logits: torch.Tensor, n_iters: int = 20, tau: float = 1.0) -> torch.Tensor:
    """Log-domain Sinkhorn normalisation (SuperGlue) of ``exp(logits / tau)``.

    Alternates ``log P -= logsumexp(log P, rows)`` and columns so that for a
    square input P is (approximately) doubly stochastic.

    Args:
        logits: [N x M] or [B x N x M] scores, larger = closer (pass ``-D``).
    Returns:
        log P of the same shape.
    """
    Z = logits / tau
    squeeze = Z.ndim == 2
    if squeeze:
        Z = Z[None]
    n, m = Z.shape[-2:]
    # Uniform marginals; for N != M rows sum to 1 and columns to N / M.
    log_mu = torch.zeros(Z.shape[:-1], dtype=Z.dtype, device=Z.device)
    log_nu = torch.full(Z.shape[:-2] + (m,), float(np.log(n / m)), dtype=Z.dtype, device=Z.device)
    u, v = torch.zeros_like(log_mu), torch.zeros_like(log_nu)
    for _ in range(n_iters):
        u = log_mu - torch.logsumexp(Z + v.unsqueeze(-2), dim=-1)
        v = log_nu - torch.logsumexp(Z + u.unsqueeze(-1), dim=-2)
    out = Z + u.unsqueeze(-1) + v.unsqueeze(-2)
    return out[0] if squeeze else out


def assignment_accuracy(perm: np.ndarray, subset: np.ndarray | None = None) -> float:
    """Share of rows (optionally in ``subset``) assigned to their true partner (column i)."""
    perm = np.asarray(perm)
    idx = np.arange(len(perm)) if subset is None else np.asarray(subset)
    return float(np.mean(perm[idx] == idx))
