"""Training the default from cached features: the fold models and refits one after
another in one process (the naive reference: torch at ``runtime.threads``, gmatch's
default) vs side by side in one worker process per core (``runtime.train_workers=0``);
and the feature dropout's mask (:class:`gmatch.models.dropout.FeatureDropout`) against
torch's ``nn.Dropout``, which gmatch used before.

    python -m benchmarks.run --training      # writes benchmarks/TRAINING.md

Three runs of the shipped config (seed 0) on the course data, in this process, in the
same benchmark run, after the features are loaded (not timed): one process at 2 torch
threads; one process at 1 thread; one worker per core at 1 thread each. Each row says
whether its D equals the reference's and the 1-thread run's, bitwise, and gives its
official / held-out numbers: the workers' models are the 1-thread models (a phase's
process does not matter), and the thread count changes the last float bits. The
``nn.Dropout`` row draws another random mask, so its numbers differ by seed noise.
"""

from __future__ import annotations

import time

import torch

import gmatch.models.matcher as matcher
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
    base = [f"data.root={DATA}", f"data.cache_dir={cache_dir}"]
    default = load_config(None, base)
    feats = load_features(ms, default, progress=False)
    workers = min(available_cores(), default.train.folds)
    runs = {}
    cases = {
        "one process, 2 torch threads (the reference; the default)": (2, 1, None),
        "one process, 1 torch thread": (1, 1, None),
        f"{workers} worker processes (`runtime.train_workers=0`), 1 torch thread each": (
            2,
            0,
            None,
        ),
        "one process, 2 torch threads, torch's `nn.Dropout` on the features (before)": (
            2,
            1,
            torch.nn.Dropout,
        ),
    }
    for label, (threads, w, dropout) in cases.items():
        conf = load_config(
            None, [*base, f"runtime.threads={threads}", f"runtime.train_workers={w}"]
        )
        fast = matcher.FeatureDropout
        matcher.FeatureDropout = dropout or fast  # the node encoders build theirs from it
        t = time.perf_counter()
        try:
            res = train(conf, ms, feats, progress=False)
        finally:
            matcher.FeatureDropout = fast
        seconds = time.perf_counter() - t
        D = predict_dist(res.model, feats)
        runs[label] = (seconds, D, split_metrics(D, ms))
    (ref_s, ref_D, _), (_, one_D, _) = list(runs.values())[:2]
    rows = []
    for label, (seconds, D, m) in runs.items():
        rows.append(
            {
                "what": f"train the default (5 fold models + 5 refits), s: {label}",
                "value": seconds,
                "reference": ref_s,
                "note": f"D bitwise equal to the reference's: {torch.equal(D, ref_D)}, to the "
                f"1-thread run's: {torch.equal(D, one_D)}; official {m['official']['acc_mean']:.4f}, "
                f"held-out {m['heldout']['acc_mean']:.4f}",
            }
        )
    return rows
