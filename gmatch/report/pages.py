"""Analysis report of a finished run: a self-contained ``report.html`` plus PNGs and CSVs,
and a comparison page of two runs.

``python -m gmatch report RUN_DIR`` reads ``D.npy`` and ``metrics.json`` (and
``history.json`` when present) and the run's data folder.
"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from gmatch.checkpoint import checkpoint_features, load_checkpoint
from gmatch.config import Config, ConfigError, DataConf, merge, saved_config
from gmatch.data import MovieSet, load_movielens
from gmatch.encoders.ocr import OCRConfig, cached_readings, clean_ocr
from gmatch.features import ocr_config, ocr_seeds
from gmatch.io import atomic_write_text
from gmatch.metrics import bootstrap_acc, evaluate_distance, true_ranks
from gmatch.models.inputs import prior_args
from gmatch.report.figures import curves, heatmap, ratio_curve, recall_curve
from gmatch.report.markup import (
    STYLE,
    breakdowns,
    franchise_confusions,
    query_grids,
    search_box,
    summary,
)
from gmatch.report.stats import ReportError, export_topk, paired_ci


def load_run(run_dir: Path, data):
    """metrics.json, the data set and D of a finished run, or a ReportError."""
    for name in ("metrics.json", "D.npy"):
        if not (run_dir / name).is_file():
            raise ReportError(
                f"{run_dir / name}: missing; pass a finished run folder (gmatch train/evaluate --out)"
            )
    try:
        rec = json.loads((run_dir / "metrics.json").read_text())
        metrics = rec["metrics"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ReportError(
            f"{run_dir / 'metrics.json'}: not a gmatch metrics file ({type(e).__name__}); "
            "re-run the evaluation"
        ) from None
    ms = load_movielens(data or rec.get("data", ""))
    try:
        D = torch.from_numpy(np.load(run_dir / "D.npy", allow_pickle=False))
    except (ValueError, OSError, EOFError) as e:
        raise ReportError(
            f"{run_dir / 'D.npy'}: unreadable ({type(e).__name__}); re-run the evaluation"
        ) from None
    if D.shape != (len(ms), len(ms)):
        raise ReportError(
            f"{run_dir / 'D.npy'}: shape {tuple(D.shape)} does not fit the {len(ms)} movies of "
            f"{ms.root}; pass --data with the folder the run scored"
        )
    return rec, metrics, ms, D


def cached_ocr_texts(ms: MovieSet, cache_dir, conf: OCRConfig | None = None) -> list[str] | None:
    """Cleaned OCR text per poster from the OCR caches (local or shipped) of the OCR
    settings ``conf`` without reading any poster; None when some poster has no cached OCR."""
    conf = conf or OCRConfig()
    lines = cached_readings(ms.poster_hashes(), Path(cache_dir), conf, ocr_seeds(ms))
    return None if lines is None else [clean_ocr(x, conf.min_confidence) for x in lines]


def prior_only_dist(run_dir: Path, ms: MovieSet) -> torch.Tensor | None:
    """D of the run's zero-shot priors alone (no learned part), if the run folder
    has its model; a tiny seeded jitter orders posters without text (whose prior
    rows are constant), as in ``experiments.zero_shot``."""
    if not (run_dir / "model.pt").is_file():
        return None
    model, conf, ckpt = load_checkpoint(run_dir / "model.pt")
    members = getattr(model, "members", None)
    model = members[0] if members is not None else model
    feats = checkpoint_features(run_dir / "model.pt", ckpt, conf, ms, progress=False)
    with torch.inference_mode():
        S = model.prior_logits(*prior_args(feats.inputs()))
    g = torch.Generator().manual_seed(0)
    return -S + 1e-6 * torch.rand(S.shape, generator=g)


def headline(run_dir: Path, metrics: dict, ms: MovieSet, D: torch.Tensor) -> str:
    """The metrics block: held-out (transfer) first, official labelled as including the
    training pairs, chance and the untrained priors as rows, bootstrap 95 % intervals."""

    def fmt(x, digits=3):
        return "—" if x is None or x != x else f"{x:.{digits}f}"

    subsets = []
    if "heldout" in metrics:
        subsets.append(
            (
                "held-out: the movies not in train.txt, ranked among themselves (transfer)",
                "heldout",
                ms.heldout_idx,
            )
        )
    subsets.append(
        (
            "official: all movies, including the training pairs"
            if len(ms.train_idx)
            else "all movies (no train.txt)",
            "official",
            None,
        )
    )
    if "train" in metrics:
        subsets.append(
            ("train: the training pairs, ranked among themselves (fit)", "train", ms.train_idx)
        )
    prior = prior_only_dist(run_dir, ms)
    head = (
        "<tr><th>rows</th><th>n</th><th>k</th><th>acc dim0 (intro → poster)</th>"
        "<th>acc dim1 (poster → intro)</th><th>mean [95 % CI]</th><th>poster → intro R@1</th>"
        "<th>R@10</th><th>median rank</th></tr>"
    )
    rows = []
    names = {"heldout": "held-out", "official": "official"}
    for label, block, idx in subsets:
        m = metrics[block]
        sub = D if idx is None else D[idx][:, idx]
        ci = bootstrap_acc(sub)["acc_mean"] if m["k"] >= 1 else (float("nan"), float("nan"))
        rows.append(
            f"<tr><th>{html.escape(label)}</th><td>{m['n']}</td><td>{m['k']}</td>"
            f"<td>{fmt(m['acc_dim0'])}</td><td>{fmt(m['acc_dim1'])}</td>"
            f"<td><b>{fmt(m['acc_mean'])}</b> [{fmt(ci[0])}, {fmt(ci[1])}]</td>"
            f"<td>{fmt(m['poster_to_intro/R@1'])}</td><td>{fmt(m['poster_to_intro/R@10'])}</td>"
            f"<td>{m['poster_to_intro/median_rank']:.0f}</td></tr>"
        )
        if block in ("heldout", "official") and prior is not None:
            p = evaluate_distance(prior if idx is None else prior[idx][:, idx])
            rows.append(
                f"<tr class='baseline'><th>{names[block]}: the model's zero-shot priors alone, untrained</th>"
                f"<td>{p['n']}</td><td>{p['k']}</td><td>{fmt(p['acc_dim0'])}</td><td>{fmt(p['acc_dim1'])}</td>"
                f"<td>{fmt(p['acc_mean'])}</td><td>{fmt(p['poster_to_intro/R@1'])}</td>"
                f"<td>{fmt(p['poster_to_intro/R@10'])}</td><td>{p['poster_to_intro/median_rank']:.0f}</td></tr>"
            )
        if block in ("heldout", "official"):
            n = m["n"]
            rows.append(
                f"<tr class='baseline'><th>{names[block]}: chance (random D)</th><td>{n}</td><td>{m['k']}</td>"
                f"<td>{fmt(m['k'] / n)}</td><td>{fmt(m['k'] / n)}</td><td>{fmt(m['k'] / n)}</td>"
                f"<td>{fmt(1 / n)}</td><td>{fmt(min(10, n) / n)}</td><td>{(n + 1) / 2:.0f}</td></tr>"
            )
    sk = metrics.get("analysis", {}).get("test_set_sinkhorn")
    note = (
        "<p>get_acc: a query is a hit when its true partner is among the k = int(0.05 · n) nearest "
        "candidates <em>of the same subset</em>; every rank in this table is among the row's n movies "
        "(1 = nearest; ties count against the query). The interval resamples the queries "
        "(1000 bootstrap draws). Official includes the training pairs, so it mostly measures fit; "
        "held-out measures transfer.</p>"
    )
    if sk:
        note += (
            f"<p>Analysis, not official: the Sinkhorn normalisation over all test movies at once "
            f"(τ = {sk['tau']:g}) gives held-out {fmt(sk.get('heldout', {}).get('acc_mean'))}, "
            f"all {fmt(sk['official']['acc_mean'])}.</p>"
        )
    return f"<h2>Headline</h2><table id='metrics'>{head}{''.join(rows)}</table>{note}"


def make_report(
    run_dir: str | Path,
    data: str | Path | None = None,
    queries: list[str] = (),
    n_random: int = 4,
    k: int = 5,
    seed: int = 0,
) -> Path:
    """Write ``report.html`` (self-contained), PNGs and top-k CSV into ``run_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    run_dir = Path(run_dir)
    rec, metrics, ms, D = load_run(run_dir, data)
    rng = np.random.default_rng(seed)
    pool = ms.heldout_idx if len(ms.heldout_idx) else np.arange(len(ms))
    scope = "held-out movies" if len(ms.heldout_idx) else "all movies"
    sub = D[pool][:, pool]
    ranks_p2i, ranks_i2p = true_ranks(sub, 1), true_ranks(sub, 0)  # among the pool
    try:
        data_conf = merge(Config(), saved_config(rec.get("config") or {})).data  # its OCR
    except ConfigError:  # a run of a gmatch version whose options are gone
        data_conf = DataConf()
    ocr = cached_ocr_texts(ms, data_conf.cache_dir, ocr_config(data_conf))
    parts = [
        f"<h1>gmatch report: {html.escape(run_dir.name)}</h1>",
        f"<p>data: {html.escape(str(ms.root))} &middot; {len(ms)} movies, {len(ms.train_idx)} training pairs "
        f"&middot; command: <code>{html.escape(rec.get('command', ''))}</code></p>",
        search_box(D, ms),
        headline(run_dir, metrics, ms, D),  # held-out first, one rank convention, intervals
        ratio_curve(D, ms, run_dir),
        *query_grids(D, ms, pool, ranks_p2i, queries, n_random, rng, ocr, k),
        franchise_confusions(ms, pool, sub, ranks_p2i),
        heatmap(D, ms, np.sort(rng.choice(pool, min(12, len(pool)), replace=False)), run_dir),
        recall_curve(ranks_p2i, ranks_i2p, len(pool), scope, run_dir),
        breakdowns(D, ms, pool, ranks_p2i, ocr) if len(pool) > 20 else "",  # genre, poster text
        curves(run_dir, rec),
        summary(rec, run_dir),
        "<p>Top-5 lists per query, both directions: <a href='top5.csv'>top5.csv</a></p>",
    ]
    export_topk(D, ms, run_dir / "top5.csv", k=5)
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>gmatch report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = run_dir / "report.html"
    atomic_write_text(out, page)
    return out


def make_comparison(
    run_a: str | Path, run_b: str | Path, out: str | Path | None = None, data=None
) -> Path:
    """``compare.html``: two runs on the same data side by side — metrics with 95 %
    intervals, the paired difference, and per-query wins and losses (held-out ranks)."""
    run_a, run_b = Path(run_a), Path(run_b)
    rec_a, m_a, ms, D_a = load_run(run_a, data)
    rec_b, m_b, ms_b, D_b = load_run(run_b, data or rec_a.get("data"))
    if len(ms) != len(ms_b) or not np.array_equal(ms.ids, ms_b.ids):
        raise ReportError(
            f"{run_b}: scored another data set than {run_a}; compare runs on the same movies"
        )
    out = Path(out or run_a.parent / f"compare-{run_a.name}-vs-{run_b.name}")
    pool = ms.heldout_idx if len(ms.heldout_idx) and len(ms.train_idx) else np.arange(len(ms))
    name = "held-out" if len(pool) < len(ms) else "all"
    rows = []
    hits = {}
    for label, idx in ((name, pool), ("official (all, incl. training pairs)", None)):
        cells = []
        for run, D in ((run_a, D_a), (run_b, D_b)):
            sub = D if idx is None else D[idx][:, idx]
            k = int(0.05 * len(sub))
            h = np.concatenate([true_ranks(sub, 0) < k, true_ranks(sub, 1) < k]).astype(float)
            hits[(label, run)] = h
            ci = bootstrap_acc(sub)["acc_mean"]
            cells.append(f"<td><b>{h.mean():.3f}</b> [{ci[0]:.3f}, {ci[1]:.3f}]</td>")
        lo, hi = paired_ci(hits[(label, run_a)], hits[(label, run_b)])
        diff = hits[(label, run_b)].mean() - hits[(label, run_a)].mean()
        rows.append(
            f"<tr><th>{html.escape(label)}</th>{''.join(cells)}<td>{diff:+.3f} [{lo:+.3f}, {hi:+.3f}]</td></tr>"
        )
    r_a = true_ranks(D_a[pool][:, pool], 1)
    r_b = true_ranks(D_b[pool][:, pool], 1)
    better, worse = int((r_b < r_a).sum()), int((r_b > r_a).sum())
    change = r_b.astype(int) - r_a.astype(int)

    def moved(order):
        return "".join(
            f"<tr><td>{html.escape(ms.titles[pool[j]])}</td><td>{r_a[j] + 1}</td><td>{r_b[j] + 1}</td></tr>"
            for j in order[:8]
        )

    table = "<tr><th>movie</th><th>rank in A</th><th>rank in B</th></tr>"
    parts = [
        f"<h1>gmatch: {html.escape(run_a.name)} (A) vs {html.escape(run_b.name)} (B)</h1>",
        f"<p>A: <code>{html.escape(str(run_a))}</code> ({html.escape(str(rec_a.get('git_sha', '?')))}); "
        f"B: <code>{html.escape(str(run_b))}</code> ({html.escape(str(rec_b.get('git_sha', '?')))}); "
        f"{len(ms)} movies.</p>",
        "<h2>Metrics</h2><table id='compare'><tr><th>get_acc, mean of both dims</th><th>A [95 % CI]</th>"
        "<th>B [95 % CI]</th><th>B − A [paired 95 % CI]</th></tr>" + "".join(rows) + "</table>"
        "<p>Intervals resample the queries (1000 bootstrap draws); the paired interval resamples them "
        "jointly for both runs, so it is much narrower than the two separate ones.</p>",
        f"<h2>Per query ({name} posters, ranks among the {len(pool)} {name} intros)</h2>"
        f"<p id='wins'>B ranks the true intro higher for <b>{better}</b> posters, lower for <b>{worse}</b>, "
        f"the same for {len(pool) - better - worse}.</p>"
        f"<h3>Largest gains of B</h3><table>{table}{moved(np.argsort(change, kind='stable'))}</table>"
        f"<h3>Largest losses of B</h3><table>{table}{moved(np.argsort(-change, kind='stable'))}</table>",
    ]
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>gmatch comparison</title><style>{style}</style>"
        f"</head><body>{''.join(parts)}</body></html>"
    )
    atomic_write_text(out / "compare.html", page)
    return out / "compare.html"
