"""The cost of D per matcher variant (the default and the local-node variants)."""

from __future__ import annotations

import time

import numpy as np

from benchmarks.common import DATA, ROOT
from gmatch.config import load_config
from gmatch.data import load_movielens
from gmatch.evaluate import predict_dist
from gmatch.features import load_features
from gmatch.training import new_model


def bench_matcher(repeat: int = 3) -> list[dict]:
    """The cost of D for the course data (N = 2938) with the default matcher and
    with the local-node variants of study `transfer` (fresh weights: the cost does not
    depend on them), median of ``repeat``, interleaved; the default is the reference."""

    ms = load_movielens(DATA)
    local = ["data.poster_sets=[ocrlines:mpnet]", "data.intro_sets=[sents:mpnet]"]
    variants = {
        "default (global head + priors, L = 0)": [],
        "+ local graphs, L = 1": [*local, "model.local.layers=1"],
        "+ local graphs with image regions, L = 1": [
            "data.poster_sets=[ocrlines:mpnet,regions:efficientnet_lite0]",
            "data.intro_sets=[sents:mpnet]",
            "model.local.layers=1",
        ],
        "+ local graphs, L = 1, re-ranking top 10 %": [
            *local,
            "model.local.layers=1",
            "model.rerank.share=0.1",
        ],
    }
    models = {}
    for name, overrides in variants.items():
        conf = load_config(
            None, [f"data.root={DATA}", f"data.cache_dir={ROOT / 'cache'}", *overrides]
        )
        feats = load_features(ms, conf, progress=False)
        models[name] = (new_model(conf, feats).eval(), feats)
    times: dict = {k: [] for k in variants}
    for _ in range(repeat):
        for name, (model, feats) in models.items():
            t = time.perf_counter()
            predict_dist(model, feats)
            times[name].append(time.perf_counter() - t)
    ref = float(np.median(times["default (global head + priors, L = 0)"]))
    return [
        {
            "what": f"D for N = {len(ms)}: {name} (s)",
            "value": float(np.median(times[name])),
            "reference": ref,
            "note": f"median of {repeat}, interleaved; reference: the default",
        }
        for name in variants
    ]
