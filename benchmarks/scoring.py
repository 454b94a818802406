"""Training steps and scoring N posters x N intros: dense D, the SPEC's metric loop,
streamed large-N mode (each measurement in its own subprocess, so its peak RSS is its own)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time

import numpy as np
import torch

from benchmarks.common import CKPT, DATA, ROOT, PeakRSS, rows_table, timeit
from benchmarks.extraction import bench_extraction, bench_ocr
from gmatch.checkpoint import load_checkpoint
from gmatch.config import ModelConf, load_config, merge
from gmatch.data import load_movielens
from gmatch.encoders.registry import is_sparse_spec
from gmatch.features import load_features
from gmatch.losses import total_loss
from gmatch.metrics import evaluate_distance
from gmatch.models import Ensemble, Matcher, build_matcher
from gmatch.models.inputs import FeatureLayout
from gmatch.priors import pair_scores, parse_prior
from gmatch.stream import streamed_metrics, streamed_ranks


def bench_train(steps: int = 20) -> list[dict]:

    rows = []
    g = torch.Generator().manual_seed(0)
    for label, conf in (
        ("dual encoder (n_layers=0)", ModelConf(n_layers=0)),
        ("matcher (n_layers=1, cosine)", ModelConf(n_layers=1)),
        ("matcher (n_layers=1, mlp edge)", ModelConf(n_layers=1, edge="mlp")),
    ):
        model = Matcher([1280, 384, 256], [384, 256], conf, [(1, 0)])
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        v0 = [torch.randn(512, d, generator=g) for d in (1280, 384, 256)]
        v1 = [torch.randn(512, d, generator=g) for d in (384, 256)]
        m0, m1 = [torch.ones(512, dtype=torch.bool)] * 3, [torch.ones(512, dtype=torch.bool)] * 2

        def step(model=model, opt=opt, v0=v0, m0=m0, v1=v1, m1=m1):
            loss = total_loss(model(v0, m0, v1, m1, all_layers=True), "ce", 0.5)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        dt = timeit(lambda: [step() for _ in range(steps)]) / steps
        rows.append(
            {
                "what": f"train step, 512 pairs, {label} (s)",
                "value": dt,
                "reference": float("nan"),
                "note": "",
            }
        )
    return rows


def synthetic_views(n: int, seed: int = 0, with_lexical: bool = True):
    """Real course features replicated with noise up to n nodes."""

    conf = load_config(None, [f"data.cache_dir={ROOT / 'cache'}"])
    ms = load_movielens(DATA)
    feats = load_features(ms, conf, progress=False)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ms), n) if n > len(ms) else np.arange(n)

    def grow(blocks):
        views = []
        for b in blocks:
            x = b.values[idx]
            if n > len(ms):
                x = x + 0.3 * x.std() * rng.standard_normal(x.shape).astype(np.float32)
            views.append(torch.from_numpy(x))
        return views, [torch.from_numpy(b.valid[idx]) for b in blocks]

    # Precomputed prior pairs (sparse lexical, pooled sets): rows replicated as they are;
    # without ``with_lexical`` the sparse (character n-gram) pairs are left out.
    lexical = [
        (a.subset(idx), b.subset(idx))
        for a, b in feats.prior_blocks
        if with_lexical or not a.sparse
    ]
    return feats, grow(feats.poster), grow(feats.intro), lexical


def one_inference(n: int, mode: str) -> dict:
    """Run in a subprocess: time and peak RSS of one way of scoring n movies."""

    torch.set_num_threads(2)

    label = mode
    trained, conf, ckpt = load_checkpoint(CKPT)
    model, topm, use_lex = trained, None, True
    # Variants built from the checkpoint (its encoders and head; state loaded non-strictly):
    # dense0/stream: attention units dropped; *_nolex: without the lexical prior;
    # stream_sparse1: one seeded (self + cross) unit with top-64 sparse attention.
    changes = {}
    if mode in ("dense0", "stream", "stream_nolex") and conf.model.n_layers != 0:
        changes["n_layers"] = 0
    if mode in ("stream_nolex", "stream_sparse1"):
        changes["prior"] = [p for p in conf.model.prior if not is_sparse_spec(parse_prior(p)[0])]
        use_lex = False
    if mode == "stream_sparse1":
        changes["n_layers"], topm = 1, 64
    if changes:
        conf = merge(conf, {"model": changes})
        torch.manual_seed(0)
        model = build_matcher(conf.model, FeatureLayout.from_checkpoint(ckpt)).eval()
        state = trained.state_dict()
        if isinstance(trained, Ensemble):  # a variant of an ensemble: its first member's weights
            state = {
                k[len("members.0.") :]: v for k, v in state.items() if k.startswith("members.0.")
            }
        missing = model.load_state_dict(
            {k: v for k, v in state.items() if k != "lexical_log_weight"}, strict=False
        ).missing_keys
        if missing and mode != "stream_sparse1":  # only the seeded unit may be fresh
            raise RuntimeError(f"{mode}: the checkpoint's weights did not load: {missing[:3]}")
    # stream_ref: each member's head and priors apart, plain float32 (large-N mode before
    # the fused product and the fast matmul); stream_ieee: fused, plain float32.
    fuse, fast = mode != "stream_ref", mode not in ("stream_ref", "stream_ieee")
    if mode.startswith("stream"):
        mode = "stream"
    _, (v0, m0), (v1, m1), lexical = synthetic_views(n, with_lexical=use_lex)
    rss = PeakRSS().__enter__()
    t = time.perf_counter()
    if mode == "stream":
        out = streamed_metrics(
            streamed_ranks(model, v0, m0, v1, m1, lexical=lexical, topm=topm, fast=fast, fuse=fuse)
        )
    elif mode == "naive_metric":
        with torch.inference_mode():
            D = model(v0, m0, v1, m1, lexical=[pair_scores(A, B) for A, B in lexical])["dist"]
        k = int(0.05 * n)
        _, top = D.topk(k, dim=1, largest=False)
        out = {"acc_dim1": float(np.mean([i in top[i] for i in range(n)]))}  # the SPEC's loop
    else:
        with torch.inference_mode():
            D = model(v0, m0, v1, m1, lexical=[pair_scores(A, B) for A, B in lexical])["dist"]
        out = evaluate_distance(D)
    dt = time.perf_counter() - t
    rss.__exit__()
    return {
        "n": n,
        "mode": label,
        "seconds": dt,
        "peak_rss_mb": rss.peak - rss.base,
        "base_rss_mb": rss.base,
        "acc_dim1": out["acc_dim1"],
    }


def bench_inference(ns: list[int], stream_ns: list[int]) -> list[dict]:
    plan = [(n, "dense") for n in ns] + [(n, "naive_metric") for n in ns if n <= 2938]
    plan += [(n, "dense0") for n in ns if n <= 10000] + [(n, "stream") for n in stream_ns]
    plan += [(n, "stream_nolex") for n in stream_ns] + [(n, "stream_sparse1") for n in stream_ns]
    return measure(plan)


def measure(plan: list[tuple[int, str]]) -> list[dict]:
    """Each (N, mode) of ``plan`` in its own subprocess (its peak RSS is its own)."""
    rows = []
    for n, mode in plan:
        res = subprocess.run(
            [sys.executable, "-m", "benchmarks.scoring", mode, str(n)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=1800,
        )
        if res.returncode != 0:
            rows.append({"n": n, "mode": mode, "error": res.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def bench_large_n(ref_n: int = 30000, ns: tuple = (30000, 100000)) -> str:
    """Large-N mode with the default's three priors and the shipped 5-refit ensemble
    (benchmarks/LARGE_N.md): the reference (each member's head and priors apart, plain
    float32) and the fused product in plain float32 at ``ref_n``; the default at ``ns``."""
    plan = [(ref_n, "stream_ref"), (ref_n, "stream_ieee")] + [(n, "stream") for n in ns]
    rows = measure(plan)
    ref = {r["n"]: r for r in rows if r.get("mode") == "stream_ref" and "seconds" in r}
    labels = {
        "stream_ref": "reference: each member's head and priors apart, float32",
        "stream_ieee": "fused product, plain float32 (`fast=False`)",
        "stream": "the default: fused product, oneDNN's fast fp32 mode",
    }
    lines = [
        "Real course features replicated with noise up to N (the lexical and line rows "
        "copied as they are); the shipped checkpoint (5 refits) with its three priors "
        "(`ocrseg:mpnet=text:mpnet@2`, `ocr:chars=text:chars@4`, "
        "`ocrlines:mpnet=text:mpnet@1`); row blocks of `gmatch.stream.auto_chunk(N)`; "
        "each row in its own process, one after another. Seconds exclude loading the "
        "features; base RSS is what was resident before (the features, torch), extra the "
        "peak the streamed scoring added (sampled every 2 ms); GiB = 2^30 bytes.",
        "",
        "| N | mode | seconds | × reference | base RSS (GiB) | extra peak RSS (GiB) | "
        "total (GiB) | acc_dim1 |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['mode']} | failed: {r['error']} | | | | | |")
            continue
        base = ref.get(r["n"])
        ratio = f"{r['seconds'] / base['seconds']:.2f}" if base else "—"
        lines.append(
            f"| {r['n']} | {labels[r['mode']]} | {r['seconds']:.1f} | {ratio} | "
            f"{r['base_rss_mb'] / 2**10:.2f} | {r['peak_rss_mb'] / 2**10:.2f} | "
            f"{(r['base_rss_mb'] + r['peak_rss_mb']) / 2**10:.2f} | {r['acc_dim1']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def fit_exponent(rows, mode):
    pts = [(r["n"], r["seconds"]) for r in rows if r.get("mode") == mode and "seconds" in r]
    if len(pts) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def results(quick: bool = False) -> str:
    """The default suite (benchmarks/RESULTS.md): extraction and training throughput, then
    scoring N x N densely and streamed (``quick``: smaller N, fewer items)."""
    n_items = 64 if quick else 256
    ns = [1000, 2938] if quick else [1000, 2938, 10000, 30000]
    stream_ns = [2938, 10000] if quick else [2938, 10000, 30000, 100000]
    simple = bench_extraction(n_items) + bench_ocr(8 if quick else 24) + bench_train()
    inf = bench_inference(ns, stream_ns)
    lines = [
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "## Throughput (higher is better unless marked s)",
        "",
        rows_table(simple),
        "## Scoring N posters x N intros (default checkpoint; N > 2938: real features replicated with noise)",
        "",
        "`dense`: the default checkpoint, full D + every metric of `evaluate_distance` (both dims, "
        "R@K, ranks). `naive_metric`: the same D, then only the SPEC's Python loop for dim 1. "
        "`dense0`: the checkpoint without attention layers (identical when n_layers=0). "
        "`stream`: large-N mode, row chunks of 2048, never an N x N matrix. "
        "`stream_nolex`: the same without the lexical prior (its sparse products grow as N^2 "
        "with a larger constant than the head). "
        "`stream_sparse1`: large-N mode for a model with one attention unit (self + cross; "
        "the checkpoint's encoders, a seeded unit), no lexical prior: each node attends to its "
        "top-64 candidates (found by chunked cosine), then the streamed head (a fresh unit is the "
        "identity at init — its ffn's last layer starts at zero — so its accuracy equals "
        "`stream_nolex`; the row measures cost). "
        "Seconds exclude loading features; extra peak RSS is the resident memory the step adds "
        "(sampled every 2 ms) over the features already loaded.",
        "",
        "| N | mode | seconds | extra peak RSS (MB) | acc_dim1 |",
        "|---|---|---|---|---|",
    ]
    for r in inf:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['mode']} | failed: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['n']} | {r['mode']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['acc_dim1']:.4f} |"
            )
    modes = ("dense", "dense0", "stream", "stream_nolex", "stream_sparse1")
    lines += [
        "",
        "Fitted exponent of time vs N: "
        + ", ".join(f"{m} {fit_exponent(inf, m):.2f}" for m in modes),
    ]
    return "\n".join(lines) + "\n"


if (
    __name__ == "__main__"
):  # one measurement in its own process: `python -m benchmarks.scoring MODE N`
    print(json.dumps(one_inference(int(sys.argv[2]), sys.argv[1])))
