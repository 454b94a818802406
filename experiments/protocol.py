"""Which model ships: the bag of fold models, one refit, or a seed ensemble of refits,
decided by nested k-fold CV on the training pairs.

    python -m experiments.protocol                 # writes experiments/results/protocol/
    python -m experiments.protocol --seeds 0 1     # more outer splits (resumes)

The shipped default trains ``train.folds`` fold models and averages them (``bag``). CV
cannot score that bag: every training pair is in some member's training folds. So the
training pairs are split again (outer folds: gmatch's ``fold_split``, seeded), and for
each outer fold the whole protocol runs on the other outer folds' pairs only (the outer
fold's movies stay unlabeled nodes, as held-out movies are; text statistics are fitted
on the inner pairs' intros):

- ``bag``: the previous default (``train.folds`` fold models, each early-stopped on its fold,
  averaged on raw scores);
- ``refit``: ``train.fold_model=refit``, one model on all inner pairs for the fold
  models' mean best step (the fold models are the bag's);
- ``ens5``: five such refits with seeds ``seed .. seed + 4``, averaged (the refit's
  step count; cost: the fold models plus five refits).

Each model is scored among the outer fold's movies with get_acc, k = int(0.05 * fold
size), and the protocols are paired by (seed, outer fold). Held-out is not used.
Results are kept per (seed, outer fold) in ``results.json`` as they finish, so an
interrupted run resumes where it stopped.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from experiments.common import write_results
from gmatch.config import load_config
from gmatch.data import load_movielens
from gmatch.evaluate import predict_dist
from gmatch.features import load_features
from gmatch.io import atomic_write_text
from gmatch.metrics import evaluate_distance
from gmatch.models import Ensemble
from gmatch.runs import git_state
from gmatch.sweep import commit_label
from gmatch.training import fold_split, refit, train

PROTOCOLS = ("bag", "refit", "ens5")


def protocol_models(conf, inner, feats, members: int = 5) -> dict:
    """The protocols' models trained on the training pairs of ``inner``:
    ``{protocol: (model, train_seconds)}``; the refits reuse the bag's fold models'
    step (their training time is counted in every protocol)."""
    t = time.time()
    bagging = copy.deepcopy(conf)
    bagging.train.fold_model = "bag"
    bag = train(bagging, inner, feats, progress=False)
    fold_seconds = time.time() - t
    refits, seconds = [], []
    for i in range(members):  # train.fold_model=refit with seeds seed .. seed + members - 1
        one = copy.deepcopy(conf)
        one.seed = conf.seed + i
        t = time.time()
        refits.append(refit(one, feats, bag.train_idx, bag.best_step).model)
        seconds.append(time.time() - t)
    return {
        "bag": (bag.model, fold_seconds),
        "refit": (refits[0], fold_seconds + seconds[0]),
        "ens5": (Ensemble(refits, conf.model), fold_seconds + sum(seconds)),
    }


def run_outer_fold(conf, ms, outer_pos: np.ndarray, members: int = 5) -> dict:
    """The protocols trained on the training pairs outside ``outer_pos`` and scored
    among ``outer_pos``: ``{protocol: (acc, train_seconds)}``."""
    inner = dataclasses.replace(ms, train_idx=np.setdiff1d(ms.train_idx, outer_pos))
    feats = load_features(inner, conf, progress=False)  # statistics of the inner intros
    all_idx = np.arange(len(ms))
    out = {}
    for name, (model, seconds) in protocol_models(conf, inner, feats, members).items():
        D = predict_dist(model, feats, all_idx)
        out[name] = (float(evaluate_distance(D, subset=outer_pos)["acc_mean"]), seconds)
    return out


def table(results: dict) -> str:
    rows = sorted(results.values(), key=lambda r: (r["seed"], r["fold"]))
    acc = {p: np.array([r[p][0] for r in rows]) for p in PROTOCOLS}
    secs = {p: np.mean([r[p][1] for r in rows]) for p in PROTOCOLS}
    n = len(rows)

    def se(x):
        return float(np.std(x, ddof=1) / np.sqrt(len(x))) if len(x) > 1 else float("nan")

    lines = [
        "| protocol | nested cv_acc ± se | Δcv vs bag ± se (paired) | train s per outer fold |",
        "|---|---|---|---|",
    ]
    for p in PROTOCOLS:
        d = acc[p] - acc["bag"]
        delta = "—" if p == "bag" else f"{d.mean():+.4f} ± {se(d):.4f}"
        lines.append(f"| {p} | {acc[p].mean():.4f} ± {se(acc[p]):.4f} | {delta} | {secs[p]:.0f} |")
    seeds = sorted({r["seed"] for r in rows})
    return (
        f"{n} outer folds (seeds {', '.join(map(str, seeds))}); ± is the standard error over "
        "outer folds (sample sd, ddof = 1, / sqrt(n)); adopt a protocol over the bag only "
        "when Δcv > 2 se.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/movielens")
    p.add_argument("--out", default="experiments/results/protocol")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--outer-folds", type=int, default=5)
    p.add_argument("overrides", nargs="*", help="config overrides (key=value)")
    args = p.parse_args(argv)
    conf = load_config(None, [f"data.root={args.data}", *args.overrides])
    ms = load_movielens(conf.data.root)
    out = Path(args.out)
    store = out / "results.json"
    results = json.loads(store.read_text()) if store.exists() else {}
    commit = commit_label(git_state())
    for seed in args.seeds:
        for f, outer_pos in enumerate(fold_split(np.sort(ms.train_idx), args.outer_folds, seed)):
            key = f"{seed}/{f}"
            if key in results:
                continue
            run = copy.deepcopy(conf)
            run.seed = seed
            got = run_outer_fold(run, ms, outer_pos)
            results[key] = {"seed": seed, "fold": f, "commit": commit, **got}
            atomic_write_text(store, json.dumps(results, indent=1))
            print(key, {k: round(v[0], 4) for k, v in got.items()}, flush=True)
    commits = sorted({r["commit"] for r in results.values()})
    flags = "" if args.seeds == [0] else " --seeds " + " ".join(map(str, args.seeds))
    text = (
        f"Command: `python -m experiments.protocol{flags}` (commit {', '.join(commits)}; "
        f"{args.outer_folds} outer folds of the training pairs, the default config"
        f"{' + ' + ' '.join(args.overrides) if args.overrides else ''}).\n\n" + table(results)
    )
    write_results(out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
