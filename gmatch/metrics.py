"""Retrieval metrics as pure functions of a distance matrix.

Conventions: ``D[i, j]`` is the distance between poster ``i`` and intro ``j``
(smaller is closer); the true partner of poster ``i`` is intro ``i``.
``dim=1`` ranks intros for each poster (poster_to_intro), ``dim=0`` ranks
posters for each intro (intro_to_poster).

Ties: ``topk``'s order among equal distances is undefined, so the SPEC's loop
has no single answer when the true partner ties with other candidates. Every
function here breaks ties *against* the query (a tied candidate counts as
closer than the true partner): the result is the SPEC loop's under the tie
order least favourable to the model, identical to it whenever the true
partner ties with nothing, and the same in the dense and streamed paths.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

__all__ = [
    "bootstrap_acc",
    "DegenerateDistanceError",
    "check_distance",
    "get_acc",
    "true_ranks",
    "rank_metrics",
    "evaluate_distance",
]


class DegenerateDistanceError(ValueError):
    """D cannot be scored: constant rows/columns make ``topk`` order undefined."""


def _as_tensor(D, square: bool = True) -> torch.Tensor:
    if isinstance(D, np.ndarray):
        D = torch.from_numpy(D)
    if not isinstance(D, torch.Tensor):
        raise TypeError(f"D must be a numpy array or torch tensor, got {type(D)}")
    if D.ndim != 2 or (square and D.shape[0] != D.shape[1]):
        want = "square [N x N]" if square else "a 2-D [rows x N] chunk"
        raise ValueError(f"D must be {want}, got shape {tuple(D.shape)}")
    return D


def check_distance(
    D, row_offset: int = 0, columns: bool = True, allow_constant: bool = False
) -> None:
    """Raise :class:`DegenerateDistanceError` if D is non-finite or has a constant
    row or column (the SPEC: a degenerate D must not score). For a row chunk of a
    streamed D: ``row_offset`` = index of its first row, ``columns=False`` (a chunk
    sees only part of each column). ``allow_constant``: only the finiteness check
    (see :func:`evaluate_distance`)."""
    D = _as_tensor(D, square=columns)
    if not D.numel():
        return
    # Each row's extrema: amax/amin propagate NaN and an inf is one of them, so they are
    # finite exactly when the row is (no N x N mask: a large-N block is 268 MB of floats).
    hi, lo = D.amax(dim=1), D.amin(dim=1)
    if not (torch.isfinite(hi).all() and torch.isfinite(lo).all()):
        raise DegenerateDistanceError("D contains NaN or inf values")
    if allow_constant:
        return
    checks = [(1, "row", row_offset)] + ([(0, "column", 0)] if columns else [])
    for dim, name, offset in checks:
        if D.shape[dim] < 2:
            continue
        spread = hi - lo if dim == 1 else D.amax(dim=dim) - D.amin(dim=dim)
        if (spread == 0).any():
            idx = offset + int(torch.nonzero(spread == 0)[0])
            raise DegenerateDistanceError(
                f"D has a constant {name} (index {idx}); its top-k is undefined"
            )


def get_acc(D, ratio: float = 0.05, dim: int = 1) -> float:
    """The course metric: the SPEC's loop, vectorised (ties against the query).

    Args:
        D: [N x N] distances, rows = posters, columns = intros.
        ratio: k = int(ratio * N) nearest candidates count as a hit.
        dim: 1 = for each poster search the intros; 0 = for each intro the posters.
    Returns:
        Share of queries whose true partner is among the k nearest, as the
        exact fraction hits / N.
    """
    D = _as_tensor(D)
    if dim not in (0, 1):
        raise ValueError(f"dim must be 0 or 1, got {dim}")
    N = len(D)
    k = int(ratio * N)
    if k < 1:
        raise ValueError(f"ratio {ratio} gives k = 0 for N = {N}")
    # A hit is the true partner inside topk(k): fewer than k others as close or closer.
    hits = int((true_ranks(D, dim) < k).sum())
    return hits / N


def true_ranks(D, dim: int = 1) -> np.ndarray:
    """0-based rank of the true partner for every query.

    The rank counts the other candidates at least as close as the true partner
    (ties against the query, see the module docstring), so ``rank < k`` is a
    get_acc hit and ``rank == 0`` means the true partner is strictly nearest.
    """
    D = _as_tensor(D)
    if dim == 0:
        D = D.T
    diag = torch.diagonal(D).unsqueeze(1)
    return ((D <= diag).sum(dim=1) - 1).cpu().numpy()


def rank_metrics(ranks: np.ndarray, ks: Sequence[int] = (1, 5, 10)) -> dict:
    """R@K, median and mean rank (1-based ranks, as in CLIP-retrieval papers)."""
    ranks = np.asarray(ranks)
    out = {f"R@{k}": float(np.mean(ranks < k)) for k in ks}
    out["median_rank"] = float(np.median(ranks) + 1)
    out["mean_rank"] = float(np.mean(ranks) + 1)
    return out


def evaluate_distance(
    D, subset: np.ndarray | None = None, ratio: float = 0.05, allow_constant: bool = False
) -> dict[str, float]:
    """All retrieval metrics of D, optionally restricted to a subset of movies.

    With ``subset`` the sub-matrix ``D[subset][:, subset]`` is scored, so the
    candidates are the subset's movies only and k = int(ratio * len(subset)).
    ``allow_constant``: score constant rows/columns instead of refusing them (untrained
    analyses, where a poster without text has no score at all); the tie rule counts every
    tied candidate as closer, so such a row is never a hit (R@K 0, rank N). A model's
    D is always checked.

    Returns flat keys: ``acc_dim0``, ``acc_dim1``, ``acc_mean`` and per direction
    ``poster_to_intro/R@1`` ... ``intro_to_poster/median_rank``.
    """
    D = _as_tensor(D)
    if subset is not None:
        idx = torch.as_tensor(np.asarray(subset), dtype=torch.long)
        D = D[idx][:, idx]
    check_distance(D, allow_constant=allow_constant)
    k = int(ratio * len(D))
    # A subset too small for k >= 1 has no get_acc (NaN), only ranks.
    out = {
        "n": int(len(D)),
        "k": k,
        "acc_dim0": get_acc(D, ratio, dim=0) if k >= 1 else float("nan"),
        "acc_dim1": get_acc(D, ratio, dim=1) if k >= 1 else float("nan"),
    }
    out["acc_mean"] = (out["acc_dim0"] + out["acc_dim1"]) / 2
    for dim, name in ((1, "poster_to_intro"), (0, "intro_to_poster")):
        for key, value in rank_metrics(true_ranks(D, dim)).items():
            out[f"{name}/{key}"] = value
    return out


def bootstrap_acc(
    D, ratio: float = 0.05, n_boot: int = 1000, seed: int = 0
) -> dict[str, tuple[float, float]]:
    """95 % percentile intervals of ``acc_dim0``, ``acc_dim1`` and ``acc_mean`` when
    the queries (movies) are resampled with replacement; the candidates and k stay
    those of D. Seeded, so a report is reproducible."""
    D = _as_tensor(D)
    k = int(ratio * len(D))
    hits = np.stack([true_ranks(D, 0) < k, true_ranks(D, 1) < k]).astype(float)  # [2 x N]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, D.shape[0], (n_boot, D.shape[0]))
    dims = hits[:, idx].mean(-1)  # [2 x n_boot]
    out = {}
    for name, v in (("acc_dim0", dims[0]), ("acc_dim1", dims[1]), ("acc_mean", dims.mean(0))):
        lo, hi = np.percentile(v, [2.5, 97.5])
        out[name] = (float(lo), float(hi))
    return out
