"""Check a checkpoint on a data folder against the SPEC's rules; PASS/FAIL per check.

Each check is a function of a scoring callable ``score(idx0, idx1) -> D`` (posters
``idx0`` against intros ``idx1``; None = all), so the tests can hand it a model
that breaks the rule and show that the check fails (a negative control).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from gmatch.checkpoint import checkpoint_features, load_checkpoint
from gmatch.data import MovieSet, load_movielens
from gmatch.features import extract
from gmatch.metrics import DegenerateDistanceError, check_distance, evaluate_distance, true_ranks
from gmatch.text import TrainOnlyTfidf

__all__ = [
    "audit",
    "check_equivariance",
    "check_diagonal",
    "check_text_statistics",
    "check_degenerate",
]

Check = tuple[str, bool, str]
Score = Callable[[np.ndarray | None, np.ndarray | None], torch.Tensor]


def check_equivariance(
    score: Score,
    n: int,
    rng: np.random.Generator,
    atol: float = 1e-4,
    D: torch.Tensor | None = None,
) -> list[Check]:
    """Shuffle posters by q and intros by p independently: D must permute with them,
    and a shared shuffle must leave every get_acc unchanged. ``D``: ``score(None,
    None)`` if the caller has it already."""
    D = score(None, None) if D is None else D
    q, p = rng.permutation(n), rng.permutation(n)
    err = (score(q, p) - D[q][:, p]).abs().max().item()
    out = [("equivariance: D(P0 x, P1 y) == P0 D P1^T", err <= atol, f"max |diff| = {err:.2e}")]
    s = rng.permutation(n)
    a, b = evaluate_distance(D), evaluate_distance(score(s, s))
    same = all(a[k] == b[k] for k in a if k.startswith("acc"))
    out.append(
        (
            "metrics invariant to a shared shuffle",
            same,
            f"acc_mean {a['acc_mean']:.4f} vs {b['acc_mean']:.4f}",
        )
    )
    return out


def check_diagonal(
    score: Score, n: int, atol: float = 1e-4, D: torch.Tensor | None = None
) -> Check:
    """The true pairs score the same when they are *not* on the diagonal: intros
    shifted by one place (a derangement) move every true pair off it."""
    D = score(None, None) if D is None else D
    shift = np.roll(np.arange(n), 1)  # column j holds intro shift[j]
    Ds = score(np.arange(n), shift)
    where = np.argsort(shift)  # intro i sits in column where[i]
    off = Ds[torch.arange(n), torch.as_tensor(where)]
    err = (off - D.diagonal()).abs().max().item()
    ranks = true_ranks(D, dim=1)
    return (
        "diagonal computed like the rest",
        err <= atol,
        f"max |D_ii on vs off the diagonal| = {err:.2e}; mean rank of the true pair "
        f"{ranks.mean() + 1:.1f} of {n}",
    )


def check_degenerate(D: torch.Tensor) -> Check:
    try:
        check_distance(D)
        return ("D not degenerate", True, "no constant rows/columns, all finite")
    except DegenerateDistanceError as e:
        return ("D not degenerate", False, str(e))


def check_text_statistics(ms: MovieSet, states: dict, cache_dir, specs: list[str]) -> Check:
    """Fitted text statistics see training intros only: editing every held-out intro
    leaves the training rows unchanged, and each stored state (vocabulary, IDF and
    SVD basis) equals a refit on the training intros alone."""
    name = "text statistics fitted on training intros only"
    fitted = sorted(
        {s.split(":")[1] for s in list(states) + specs if s.split(":")[1] in ("tfidf", "chars")}
    )
    if not fitted:
        return (name, True, "no fitted text view")
    changed = ms.subset(np.arange(len(ms)))
    for i in changed.heldout_idx:
        changed.intros[i] = "zebra quantum " + " ".join(reversed(changed.intros[i].split()))
    ok, details = True, []
    for enc in fitted:
        spec = f"text:{enc}"
        stored = next((v for k, v in states.items() if k.endswith(f":{enc}")), None)
        x = extract(ms, spec, cache_dir, False, tfidf_state=None).values[ms.train_idx]
        y = extract(changed, spec, cache_dir, False, tfidf_state=None).values[ms.train_idx]
        # a fit that read held-out intros can change the width too: that is a move
        diff = float(abs(x - y).max()) if x.shape == y.shape else float("inf")
        ok = ok and diff < 1e-5
        details.append(f"{spec}: train rows move by {diff:.1e} when held-out intros change")
        if stored is not None:
            refit = (
                TrainOnlyTfidf(*stored["params"])
                .fit([ms.intros[i] for i in ms.train_idx])
                .state_dict()
            )
            same = {
                "vocabulary": stored["vocab"] == refit["vocab"],
                "IDF": len(stored["idf"]) == len(refit["idf"])
                and torch.allclose(stored["idf"], refit["idf"]),
                "SVD": (stored["components"] is None and refit["components"] is None)
                or (
                    stored["components"] is not None
                    and refit["components"] is not None
                    and stored["components"].shape == refit["components"].shape
                    and same_subspace(stored["components"], refit["components"])
                ),
                "n texts": stored["n_fit_texts"] == len(ms.train_idx),
            }
            ok = ok and all(same.values())
            details.append(
                f"{spec} checkpoint state == training-intro refit: "
                + ", ".join(f"{k} {'yes' if v else 'NO'}" for k, v in same.items())
            )
    return (name, ok, "; ".join(details))


def same_subspace(a: torch.Tensor, b: torch.Tensor, tol: float = 1e-3) -> bool:
    """Do two [dim x vocab] SVD bases span the same subspace? The mean squared cosine of
    their principal angles is >= 1 - tol. Compares what the basis does to any row, not
    its components one by one (a refit on another BLAS may rotate components of nearly
    equal singular values, or flip their signs, and project every row the same)."""
    qa = torch.linalg.qr(a.double().T).Q  # orthonormal bases of the row spaces
    qb = torch.linalg.qr(b.double().T).Q
    cos = torch.linalg.svdvals(qa.T @ qb)
    return bool((cos**2).mean() >= 1 - tol)


def audit(checkpoint, data=None, cache_dir=None, seed: int = 0, atol: float = 1e-4) -> list[Check]:
    """Returns ``[(check name, passed, detail), ...]``."""
    model, conf, ckpt = load_checkpoint(checkpoint)
    ms = load_movielens(data or conf.data.root)
    cache = cache_dir or conf.data.cache_dir
    feats = checkpoint_features(checkpoint, ckpt, conf, ms, cache, progress=False)
    rng = np.random.default_rng(seed)
    n = len(ms)

    def score(idx0, idx1):
        with torch.inference_mode():
            return model(**feats.inputs(idx0, idx1))["dist"].float()

    states = ckpt.get("encoder_states") or {}
    specs = ckpt["poster_views"] + ckpt["intro_views"]
    D = score(None, None)  # once, for every check
    return [
        *check_equivariance(score, n, rng, atol, D),
        check_text_statistics(ms, states, cache, specs),
        check_degenerate(D),
        check_diagonal(score, n, atol, D),
    ]
