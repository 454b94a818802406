"""Check a checkpoint on a data folder against the SPEC's rules; PASS/FAIL per check."""

from __future__ import annotations

import numpy as np
import torch

from gmatch.data import load_movielens
from gmatch.evaluate import load_checkpoint
from gmatch.features import extract
from gmatch.metrics import DegenerateDistanceError, check_distance, evaluate_distance, true_ranks
from gmatch.train import Features, predict_dist

__all__ = ["audit"]


def audit(checkpoint, data=None, cache_dir=None, seed: int = 0, atol: float = 1e-4):
    """Returns ``[(check name, passed, detail), ...]``."""
    model, conf, ckpt = load_checkpoint(checkpoint)
    ms = load_movielens(data or conf.data.root)
    cache = cache_dir or conf.data.cache_dir
    feats = Features.extract(ms, ckpt["poster_views"], ckpt["intro_views"], cache, False,
                             ckpt.get("encoder_states"), conf.model.prior)
    results = []
    D = predict_dist(model, feats)
    rng = np.random.default_rng(seed)
    n = len(ms)

    # 1. Permutation equivariance: shuffle posters by q and intros by p independently.
    q, p = rng.permutation(n), rng.permutation(n)
    with torch.inference_mode():
        Dp = model(**feats.inputs(q, p))["dist"]
    err = (Dp - D[q][:, p]).abs().max().item()
    results.append(("equivariance: D(P0 x, P1 y) == P0 D P1^T", err <= atol, f"max |diff| = {err:.2e}"))
    # A simultaneous permutation must leave every metric unchanged.
    s = rng.permutation(n)
    Ds = predict_dist(model, feats.subset(s))
    a, b = evaluate_distance(D), evaluate_distance(Ds)
    same = all(abs(a[k] - b[k]) < 1e-9 for k in a if k.startswith("acc"))
    results.append(("metrics invariant to a shared shuffle", same,
                    f"acc_mean {a['acc_mean']:.4f} vs {b['acc_mean']:.4f}"))  # fmt: skip

    # 2. Text statistics see training intros only: change every held-out intro and
    #    the TF-IDF features of the training intros must not move.
    states = ckpt.get("encoder_states") or {}
    fitted = sorted({spec.split(":")[1] for spec in states} | {
        s.split(":")[1] for s in ckpt["poster_views"] + ckpt["intro_views"] if s.endswith(":tfidf")})
    if fitted:
        changed = ms.subset(np.arange(n))
        for i in changed.heldout_idx:
            changed.intros[i] = "zebra quantum " + " ".join(reversed(changed.intros[i].split()))
        ok, details = True, []
        for name in fitted:
            spec = f"text:{name}"
            x = extract(ms, spec, cache, False).values[ms.train_idx]
            y = extract(changed, spec, cache, False).values[ms.train_idx]
            diff = float(abs(x - y).max())
            ok = ok and diff < 1e-5
            details.append(f"{spec}: train-row change after editing held-out intros {diff:.2e}")
            stored = next((v for k, v in states.items() if k.endswith(f":{name}")), None)
            if stored is not None:
                # The checkpoint's own vocabulary must be what the training intros alone give.
                from gmatch.text import TrainOnlyTfidf

                # Only the vocabulary is compared, so the refit skips the SVD (dim=0).
                refit = TrainOnlyTfidf(0, *stored["params"][1:]).fit([ms.intros[i] for i in ms.train_idx])
                same = stored["vocab"] == refit.state_dict()["vocab"] and stored["n_fit_texts"] == len(ms.train_idx)
                ok = ok and same
                details.append(f"checkpoint vocabulary ({len(stored['vocab'])} terms) == training-intro refit: {same}")
        results.append(("text statistics fitted on training intros only", ok, "; ".join(details)))
    else:
        results.append(("text statistics fitted on training intros only", True, "no TF-IDF view"))

    # 3. D is not degenerate and the diagonal is not special.
    try:
        check_distance(D)
        ok, detail = True, "no constant rows/columns, all finite"
    except DegenerateDistanceError as e:
        ok, detail = False, str(e)
    results.append(("D not degenerate", ok, detail))
    ranks = true_ranks(D, dim=1)
    i, j = rng.integers(0, n, 2000), rng.integers(0, n, 2000)
    off = [(D[a] < D[a, b]).sum().item() for a, b in zip(i, j) if a != b]
    results.append((
        "diagonal computed like the rest",
        err <= atol,  # shown by check 1: permuted diagonals land off the diagonal unchanged
        f"mean rank of true pair {ranks.mean() + 1:.1f}, of a random pair {np.mean(off) + 1:.1f} (N={n})",
    ))  # fmt: skip
    return results
