"""A fitted prior mix vs the hand-set weights, decided by k-fold CV on the training pairs.

    python -m experiments.prior_weights        # writes experiments/results/prior_weights/

The default's three priors (``model.prior``: the sentence prior ``ocrseg:mpnet=text:mpnet``
@2, the lexical prior ``ocr:chars=text:chars`` @4, the line prior
``ocrlines:mpnet=text:mpnet`` @1) are untrained, so their mix may be fitted on the
training pairs. Per fold of ``train.folds`` (gmatch's ``fold_split``, seed 0), the
weights are fitted on the other folds' pairs (symmetric InfoNCE over those movies, a
learned temperature; weights kept positive) and the fold's own movies are scored with
get_acc, k = int(0.05 * fold size): the fitted mix beside the hand-set 2/4/1, paired by
fold. Only the weights' ratios change a ranking. Held-out is reported (weights fitted on
all training pairs), never used to choose.
"""

from __future__ import annotations

import argparse
import math

import numpy as np
import torch

from experiments.common import write_results
from gmatch.config import Config
from gmatch.data import load_movielens
from gmatch.features import extract, ocr_config
from gmatch.metrics import evaluate_distance
from gmatch.priors import pair_scores, parse_prior
from gmatch.runs import git_state
from gmatch.sweep import commit_label
from gmatch.training import fold_split


def prior_scores(ms, conf: Config, cache_dir) -> tuple[list[str], torch.Tensor, list[float]]:
    """The default's prior entries, their score matrices [P x N x N], their hand weights."""
    ocr = ocr_config(conf.data)
    names, mats, weights = [], [], []
    for item in conf.model.prior:
        a, b, w = parse_prior(item)
        x, y = (extract(ms, s, cache_dir, False, ocr=ocr) for s in (a, b))
        names.append(f"{a}={b}")
        mats.append(pair_scores(x, y))
        weights.append(w or conf.model.prior_weight)
    return names, torch.stack(mats), weights


def fit_weights(S: torch.Tensor, steps: int = 300) -> torch.Tensor:
    """Positive weights [P] of ``sum_p w_p S_p`` minimising the symmetric InfoNCE of the
    diagonal pairs of S [P x n x n] (its movies among themselves)."""
    log_w = torch.zeros(len(S), requires_grad=True)
    opt = torch.optim.LBFGS([log_w], lr=0.5, max_iter=steps, line_search_fn="strong_wolfe")
    target = torch.arange(S.shape[1])

    def closure():
        opt.zero_grad()
        logits = (log_w.exp()[:, None, None] * S).sum(0)
        loss = (
            torch.nn.functional.cross_entropy(logits, target)
            + torch.nn.functional.cross_entropy(logits.T, target)
        ) / 2
        loss.backward()
        return loss

    opt.step(closure)
    return log_w.detach().exp()


def acc(S: torch.Tensor, w, idx=None) -> float:
    mix = (torch.as_tensor(w, dtype=torch.float32)[:, None, None] * S).sum(0)
    return evaluate_distance(-mix, idx, allow_constant=True)["acc_mean"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--data", default="data/movielens")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--out", default="experiments/results/prior_weights")
    args = p.parse_args(argv)
    conf = Config()
    ms = load_movielens(args.data)
    names, S, hand = prior_scores(ms, conf, args.cache_dir)
    train = np.asarray(ms.train_idx)
    rows, deltas = [], []
    for seed in args.seeds:
        for f, fold in enumerate(fold_split(train, args.folds, seed)):
            rest = np.setdiff1d(train, fold)
            w = fit_weights(S[:, rest][:, :, rest])
            sub = S[:, fold][:, :, fold]
            a_hand, a_fit = acc(sub, hand), acc(sub, w)
            deltas.append(a_fit - a_hand)
            ratio = " / ".join(f"{x:.2f}" for x in (w / w[0] * hand[0]).tolist())
            rows.append(f"| {seed} | {f} | {len(fold)} | {a_hand:.4f} | {a_fit:.4f} | {ratio} |")
    d = np.asarray(deltas)
    se = d.std(ddof=1) / math.sqrt(len(d))
    w_all = fit_weights(S[:, train][:, :, train])
    ratio_all = " / ".join(f"{x:.2f}" for x in (w_all / w_all[0] * hand[0]).tolist())
    held = ms.heldout_idx
    verdict = "adopt the fitted mix" if d.mean() > 2 * se else "keep the hand-set weights"
    lines = [
        f"Priors: {', '.join(names)}; hand-set weights {' / '.join(f'{x:g}' for x in hand)}.",
        "",
        "| seed | fold | movies | get_acc, hand-set | get_acc, fitted on the other folds | "
        "fitted weights (scaled: first = hand-set's) |",
        "|---|---|---|---|---|---|",
        *rows,
        "",
        "| mix | weights | get_acc, CV (mean over folds) | Δcv vs hand-set (± se) | "
        "training pairs (in-sample) | held-out (reported) |",
        "|---|---|---|---|---|---|",
        f"| hand-set | {' / '.join(f'{x:g}' for x in hand)} | {np.mean([float(r.split('|')[4]) for r in rows]):.4f} "
        f"| — | {acc(S[:, train][:, :, train], hand):.4f} | {acc(S, hand, held):.4f} |",
        f"| fitted | {ratio_all} (on all training pairs) | "
        f"{np.mean([float(r.split('|')[5]) for r in rows]):.4f} | {d.mean():+.4f} ± {se:.4f} "
        f"| {acc(S[:, train][:, :, train], w_all):.4f} | {acc(S, w_all, held):.4f} |",
        "",
        f"Over {len(d)} folds → {verdict} (the rule: adopt when Δcv > 2 se).",
    ]
    text = (
        f"Command: `python -m experiments.prior_weights` (no neural training; commit "
        f"{commit_label(git_state())}).\n\n" + "\n".join(lines) + "\n"
    )
    write_results(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
