"""Training the default from cached features: the fold models and refits one after
another in one process (torch at ``runtime.threads``; the naive reference, gmatch before
``runtime.train_workers``) vs side by side in one worker process per core.

    python -m benchmarks.run --training      # writes benchmarks/TRAINING.md

Both runs train the shipped config (seed 0) on the course data, in this process, in the
same benchmark run, after the features are loaded (not timed). The rows say whether the
two give the same D, bitwise, and its official / held-out numbers.
"""

from __future__ import annotations

import time

import torch

from benchmarks.common import DATA
from gmatch.config import load_config
from gmatch.data import load_movielens
from gmatch.evaluate import predict_dist, split_metrics
from gmatch.features import load_features
from gmatch.threads import available_cores
from gmatch.training import train

__all__ = ["bench_training"]


def bench_training(cache_dir: str = "cache") -> list[dict]:
    ms = load_movielens(DATA)
    base = load_config(None, [f"data.root={DATA}", f"data.cache_dir={cache_dir}"])
    feats = load_features(ms, base, progress=False)
    runs = {}
    for workers in (1, 0):
        conf = load_config(
            None,
            [
                f"data.root={DATA}",
                f"data.cache_dir={cache_dir}",
                f"runtime.train_workers={workers}",
            ],
        )
        t = time.perf_counter()
        res = train(conf, ms, feats, progress=False)
        seconds = time.perf_counter() - t
        D = predict_dist(res.model, feats)
        runs[workers] = (seconds, D, split_metrics(D, ms))
    ref_s, ref_D, _ = runs[1]
    threads = min(base.runtime.threads, available_cores())
    workers = min(available_cores(), base.train.folds)
    rows = []
    for w, label in (
        (1, f"one process, {threads} torch threads (the reference)"),
        (0, f"{workers} worker processes, {max(1, threads // workers)} torch thread(s) each"),
    ):
        seconds, D, m = runs[w]
        rows.append(
            {
                "what": f"train the default (5 fold models + 5 refits), s: {label}",
                "value": seconds,
                "reference": ref_s,
                "note": f"D bitwise equal to the reference: {torch.equal(D, ref_D)}; "
                f"official {_mean(m['official']):.4f}, held-out {_mean(m['heldout']):.4f}",
            }
        )
    return rows


def _mean(block: dict) -> float:
    return (block["acc_dim0"] + block["acc_dim1"]) / 2
