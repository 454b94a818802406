"""Analysis report of a finished run: a self-contained ``report.html`` plus PNGs and CSVs.

``python -m gmatch report RUN_DIR`` reads ``D.npy`` and ``metrics.json`` (and
``history.json`` when present) and the run's data folder.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
from pathlib import Path

import numpy as np
import torch

from gmatch.data import MovieSet, load_movielens
from gmatch.io import atomic_write_text
from gmatch.metrics import get_acc, true_ranks

__all__ = ["make_report", "acc_curve", "genre_overlap", "export_topk"]

RATIOS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)


def acc_curve(D: torch.Tensor, ratios=RATIOS) -> dict[str, list[float]]:
    """get_acc as a function of ratio, both dims (NaN where k = int(ratio * N) is 0)."""
    return {
        f"dim{d}": [get_acc(D, r, d) if int(r * len(D)) >= 1 else float("nan") for r in ratios]
        for d in (0, 1)
    }


def _jaccard(a: list[str], b: list[str]) -> float:
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else 0.0


def genre_overlap(D: torch.Tensor, ms: MovieSet, idx: np.ndarray, k: int = 10, seed: int = 0) -> dict:
    """Mean genre Jaccard between each query poster's movie and the movies of its
    top-k intros (excluding itself), against random pairs."""
    rng = np.random.default_rng(seed)
    sub = D[idx][:, idx]
    top = sub.topk(k + 1, dim=1, largest=False).indices.numpy()
    nn, rand = [], []
    for a, row in enumerate(top):
        others = [b for b in row if b != a][:k]
        nn += [_jaccard(ms.genres[idx[a]], ms.genres[idx[b]]) for b in others]
        rand += [_jaccard(ms.genres[idx[a]], ms.genres[idx[b]]) for b in rng.integers(0, len(idx), k)]
    return {"topk_jaccard": float(np.mean(nn)), "random_jaccard": float(np.mean(rand)), "k": k}


def per_genre_accuracy(D: torch.Tensor, ms: MovieSet, idx: np.ndarray, ratio: float = 0.05) -> list:
    """Held-out hit rate (poster -> intro, among the subset) per genre."""
    ranks = true_ranks(D[idx][:, idx], dim=1)
    k = int(ratio * len(idx))
    rows = {}
    for r, i in zip(ranks, idx):
        for g in ms.genres[i]:
            rows.setdefault(g, []).append(r < k)
    return sorted(((g, len(v), float(np.mean(v))) for g, v in rows.items() if len(v) >= 10),
                  key=lambda x: -x[2])  # fmt: skip


def export_topk(D: torch.Tensor, ms: MovieSet, path: Path, k: int = 5) -> None:
    """Top-k lists per query in both directions: query id/title, rank, candidate, distance."""
    rows = [["direction", "query_id", "query_title", "rank", "candidate_id", "candidate_title",
             "distance", "is_true"]]  # fmt: skip
    for direction, M in (("poster_to_intro", D), ("intro_to_poster", D.T)):
        vals, top = M.topk(k, dim=1, largest=False)
        for q in range(len(M)):
            for r in range(k):
                c = int(top[q, r])
                rows.append([direction, int(ms.ids[q]), ms.titles[q], r + 1, int(ms.ids[c]),
                             ms.titles[c], f"{float(vals[q, r]):.5f}", int(c == q)])  # fmt: skip
    buf = io.StringIO()
    csv.writer(buf).writerows(rows)
    atomic_write_text(path, buf.getvalue())


def _img_b64(path: Path, width: int = 110) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((width, int(width * 1.5)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def _fig_b64(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class ReportError(ValueError):
    """A run folder the report cannot be made from; the message names the file."""


def _load_run(run_dir: Path, data):
    """metrics.json, the data set and D of a finished run, or a ReportError."""
    for name in ("metrics.json", "D.npy"):
        if not (run_dir / name).is_file():
            raise ReportError(f"{run_dir / name}: missing; pass a finished run folder (gmatch train/evaluate --out)")
    try:
        rec = json.loads((run_dir / "metrics.json").read_text())
        metrics = rec["metrics"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ReportError(f"{run_dir / 'metrics.json'}: not a gmatch metrics file ({type(e).__name__}); "
                          "re-run the evaluation") from None  # fmt: skip
    ms = load_movielens(data or rec.get("data", ""))
    try:
        D = torch.from_numpy(np.load(run_dir / "D.npy", allow_pickle=False))
    except (ValueError, OSError, EOFError) as e:
        raise ReportError(f"{run_dir / 'D.npy'}: unreadable ({type(e).__name__}); re-run the evaluation") from None
    if D.shape != (len(ms), len(ms)):
        raise ReportError(f"{run_dir / 'D.npy'}: shape {tuple(D.shape)} does not fit the {len(ms)} movies of "
                          f"{ms.root}; pass --data with the folder the run scored")  # fmt: skip
    return rec, metrics, ms, D


def _find(ms: MovieSet, query: str) -> int:
    if query.isdigit() and int(query) in set(ms.ids.tolist()):
        return int(np.nonzero(ms.ids == int(query))[0][0])
    for i, t in enumerate(ms.titles):
        if query.lower() in t.lower():
            return i
    raise ReportError(f"no movie with id or title {query!r} in {ms.root}")


def _prior_only_dist(run_dir: Path, ms: MovieSet) -> torch.Tensor | None:
    """D of the run's zero-shot priors alone (no learned part), if the run folder
    has its model; a tiny seeded jitter orders posters without text (whose prior
    rows are constant), as in ``experiments.zero_shot``."""
    if not (run_dir / "model.pt").is_file():
        return None
    from gmatch.evaluate import load_checkpoint
    from gmatch.train import Features

    model, conf, ckpt = load_checkpoint(run_dir / "model.pt")
    members = getattr(model, "members", None)
    model = members[0] if members is not None else model
    feats = Features.extract(ms, ckpt["poster_views"], ckpt["intro_views"], conf.data.cache_dir, False,
                             ckpt.get("encoder_states"), conf.model.prior)  # fmt: skip
    with torch.inference_mode():
        S = model.prior_logits(**{k: v for k, v in feats.inputs().items()})
    g = torch.Generator().manual_seed(0)
    return -S + 1e-6 * torch.rand(S.shape, generator=g)


def _headline(run_dir: Path, metrics: dict, ms: MovieSet, D: torch.Tensor) -> str:
    """The metrics block: held-out (transfer) first, official labelled as including the
    training pairs, chance and the untrained priors as rows, bootstrap 95 % intervals."""
    from gmatch.metrics import bootstrap_acc, evaluate_distance

    def fmt(x, digits=3):
        return "—" if x is None or x != x else f"{x:.{digits}f}"

    subsets = []
    if "heldout" in metrics:
        subsets.append(("held-out: the movies not in train.txt, ranked among themselves (transfer)", "heldout",
                        ms.heldout_idx))  # fmt: skip
    subsets.append(("official: all movies, including the training pairs" if len(ms.train_idx)
                    else "all movies (no train.txt)", "official", None))  # fmt: skip
    if "train" in metrics:
        subsets.append(("train: the training pairs, ranked among themselves (fit)", "train", ms.train_idx))
    prior = _prior_only_dist(run_dir, ms)
    head = ("<tr><th>rows</th><th>n</th><th>k</th><th>acc dim0 (intro → poster)</th>"
            "<th>acc dim1 (poster → intro)</th><th>mean [95 % CI]</th><th>poster → intro R@1</th>"
            "<th>R@10</th><th>median rank</th></tr>")  # fmt: skip
    rows = []
    names = {"heldout": "held-out", "official": "official"}
    for label, block, idx in subsets:
        m = metrics[block]
        sub = D if idx is None else D[idx][:, idx]
        ci = bootstrap_acc(sub)["acc_mean"] if m["k"] >= 1 else (float("nan"), float("nan"))
        rows.append(f"<tr><th>{html.escape(label)}</th><td>{m['n']}</td><td>{m['k']}</td>"
                    f"<td>{fmt(m['acc_dim0'])}</td><td>{fmt(m['acc_dim1'])}</td>"
                    f"<td><b>{fmt(m['acc_mean'])}</b> [{fmt(ci[0])}, {fmt(ci[1])}]</td>"
                    f"<td>{fmt(m['poster_to_intro/R@1'])}</td><td>{fmt(m['poster_to_intro/R@10'])}</td>"
                    f"<td>{m['poster_to_intro/median_rank']:.0f}</td></tr>")  # fmt: skip
        if block in ("heldout", "official") and prior is not None:
            p = evaluate_distance(prior if idx is None else prior[idx][:, idx])
            rows.append(f"<tr class='baseline'><th>{names[block]}: the model's zero-shot priors alone, untrained</th>"
                        f"<td>{p['n']}</td><td>{p['k']}</td><td>{fmt(p['acc_dim0'])}</td><td>{fmt(p['acc_dim1'])}</td>"
                        f"<td>{fmt(p['acc_mean'])}</td><td>{fmt(p['poster_to_intro/R@1'])}</td>"
                        f"<td>{fmt(p['poster_to_intro/R@10'])}</td><td>{p['poster_to_intro/median_rank']:.0f}</td></tr>")  # fmt: skip
        if block in ("heldout", "official"):
            n = m["n"]
            rows.append(f"<tr class='baseline'><th>{names[block]}: chance (random D)</th><td>{n}</td><td>{m['k']}</td>"
                        f"<td>{fmt(m['k'] / n)}</td><td>{fmt(m['k'] / n)}</td><td>{fmt(m['k'] / n)}</td>"
                        f"<td>{fmt(1 / n)}</td><td>{fmt(min(10, n) / n)}</td><td>{(n + 1) / 2:.0f}</td></tr>")  # fmt: skip
    sk = metrics.get("analysis", {}).get("test_set_sinkhorn")
    note = ("<p>get_acc: a query is a hit when its true partner is among the k = int(0.05 · n) nearest "
            "candidates <em>of the same subset</em>; every rank in this table is among the row's n movies "
            "(1 = nearest; ties count against the query). The interval resamples the queries "
            "(1000 bootstrap draws). Official includes the training pairs, so it mostly measures fit; "
            "held-out measures transfer.</p>")  # fmt: skip
    if sk:
        note += (f"<p>Analysis, not official: the Sinkhorn normalisation over all test movies at once "
                 f"(τ = {sk['tau']:g}) gives held-out {fmt(sk.get('heldout', {}).get('acc_mean'))}, "
                 f"all {fmt(sk['official']['acc_mean'])}.</p>")  # fmt: skip
    return f"<h2>Headline</h2><table id='metrics'>{head}{''.join(rows)}</table>{note}"


def make_report(run_dir: str | Path, data: str | Path | None = None, queries: list[str] = (),
                n_random: int = 4, k: int = 5, seed: int = 0) -> Path:  # fmt: skip
    """Write ``report.html`` (self-contained), PNGs and top-k CSV into ``run_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    run_dir = Path(run_dir)
    rec, metrics, ms, D = _load_run(run_dir, data)
    held = ms.heldout_idx
    rng = np.random.default_rng(seed)
    parts = [f"<h1>gmatch report: {html.escape(run_dir.name)}</h1>",
             f"<p>data: {html.escape(str(ms.root))} &middot; {len(ms)} movies, "
             f"{len(ms.train_idx)} training pairs &middot; command: <code>{html.escape(rec.get('command', ''))}</code></p>"]  # fmt: skip

    # Headline: held-out first, every row on one rank convention, with intervals.
    parts.append(_headline(run_dir, metrics, ms, D))

    # Accuracy vs ratio.
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, sub in (("all", None), ("held-out", held if len(ms.train_idx) else None)):
        if name == "held-out" and sub is None:
            continue
        Ds = D if sub is None else D[sub][:, sub]
        curve = acc_curve(Ds)
        for d, ls in (("dim0", "-"), ("dim1", "--")):
            ax.plot(RATIOS, curve[d], ls, marker="o", ms=3, label=f"{name} {d}")
    ax.plot(RATIOS, RATIOS, color="black", ls=":", lw=1, label="chance (= ratio)")
    ax.axvline(0.05, color="grey", ls=":", label="ratio 0.05 (the course metric)")
    ax.set_xlabel("ratio (k = int(ratio · n) candidates count as a hit)")
    ax.set_ylabel("share of queries whose partner is in the top k")
    ax.set_title("get_acc vs ratio; dim0 = intro → poster, dim1 = poster → intro", fontsize=9)
    ax.legend(fontsize=7)
    parts.append(f"<h2>Accuracy vs ratio</h2><img src='{_fig_b64(fig, run_dir / 'acc_vs_ratio.png')}'>")

    # Retrieval examples: posters -> top-k intros (held-out by default).
    pool = held if len(held) else np.arange(len(ms))
    chosen = [_find(ms, q) for q in queries] + list(rng.choice(pool, n_random, replace=False))
    parts.append(f"<h2>Poster → top-{k} intros</h2><p>True intro highlighted; rank of the true intro among all {len(ms)}.</p>")
    ranks1 = true_ranks(D, 1)
    for q in chosen:
        top = D[q].topk(k, largest=False).indices.tolist()
        items = "".join(
            f"<li class='{'hit' if c == q else ''}'><b>{html.escape(ms.titles[c])}</b>: "
            f"{html.escape(ms.intros[c][:220])}</li>" for c in top
        )  # fmt: skip
        parts.append(
            f"<div class='query grid'><img src='{_img_b64(ms.poster_paths[q])}'><div>"
            f"<b>{html.escape(ms.titles[q])}</b> ({'train' if ms.is_train[q] else 'held-out'}, "
            f"true rank {ranks1[q] + 1})<ol>{items}</ol></div></div>"
        )
    # Intros -> top-k posters.
    parts.append(f"<h2>Intro → top-{k} posters</h2>")
    ranks0 = true_ranks(D, 0)
    for q in chosen[:3]:
        top = D[:, q].topk(k, largest=False).indices.tolist()
        imgs = "".join(
            f"<figure class='{'hit' if c == q else ''}'><img src='{_img_b64(ms.poster_paths[c], 90)}'>"
            f"<figcaption>{html.escape(ms.titles[c][:30])}</figcaption></figure>" for c in top
        )  # fmt: skip
        parts.append(f"<div class='query'><p><b>{html.escape(ms.titles[q])}</b> (true rank {ranks0[q] + 1}): "
                     f"{html.escape(ms.intros[q][:200])}</p><div class='grid'>{imgs}</div></div>")  # fmt: skip

    # Heatmap and rank histogram.
    few = np.sort(rng.choice(pool, 12, replace=False))
    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    im = ax.imshow(D[few][:, few].numpy(), cmap="viridis_r")
    ax.set_yticks(range(12), [ms.titles[i][:22] for i in few], fontsize=6)
    ax.set_xticks(range(12), [str(ms.ids[i]) for i in few], fontsize=6, rotation=90)
    ax.set_xlabel("intro (movie id)")
    fig.colorbar(im, ax=ax, label="distance")
    parts.append(f"<h2>D for 12 held-out movies</h2><img src='{_fig_b64(fig, run_dir / 'heatmap.png')}'>")
    fig, ax = plt.subplots(figsize=(6, 3))
    ax.hist(ranks1[pool] + 1, bins=50, log=True)
    ax.set_xlabel("rank of the true intro (held-out posters, among all)")
    parts.append(f"<h2>Rank histogram</h2><img src='{_fig_b64(fig, run_dir / 'rank_hist.png')}'>")

    # Correlation study.
    if len(pool) > 20:
        g = genre_overlap(D, ms, pool)
        pg = per_genre_accuracy(D, ms, pool)
        ranks_sub = true_ranks(D[pool][:, pool], 1)
        ks = int(0.05 * len(pool))
        summ = np.array(["see full summary" in ms.intros[i].lower() for i in pool])
        parts.append(
            "<h2>Do neighbours share semantics?</h2>"
            f"<p>Mean genre Jaccard of a held-out poster's movie with the movies of its top-{g['k']} "
            f"intros: <b>{g['topk_jaccard']:.3f}</b>, with random movies: <b>{g['random_jaccard']:.3f}</b>.</p>"
            "<table><tr><th>genre</th><th>n held-out</th><th>poster→intro hit rate @0.05</th></tr>"
            + "".join(f"<tr><td>{html.escape(a)}</td><td>{b}</td><td>{c:.3f}</td></tr>" for a, b, c in pg)
            + "</table>"
            f"<p>Intros cut with “See full summary”: hit rate {np.mean(ranks_sub[summ] < ks):.3f} "
            f"(n={summ.sum()}) vs {np.mean(ranks_sub[~summ] < ks):.3f} for the rest.</p>"
        )  # fmt: skip

    # Training curves.
    hist_path = run_dir / "history.json"
    if hist_path.exists():
        hist = [h for h in json.loads(hist_path.read_text()) if not h.get("refit")]
        if hist:
            fig, ax = plt.subplots(figsize=(6, 3))
            steps = [h["step"] for h in hist]
            ax.plot(steps, [h["loss"] for h in hist], label="train loss")
            ax.set_xlabel("step")
            ax.set_ylabel("loss")
            if "val_acc" in hist[0]:
                ax2 = ax.twinx()
                ax2.plot(steps, [h["val_acc"] for h in hist], color="C1", label="val get_acc")
                ax2.set_ylabel("val get_acc")
            parts.append(f"<h2>Training curves</h2><img src='{_fig_b64(fig, run_dir / 'curves.png')}'>")

    export_topk(D, ms, run_dir / "top5.csv", k=5)
    parts.append("<p>Top-5 lists per query, both directions: <a href='top5.csv'>top5.csv</a></p>")
    style = ("body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}.grid{display:flex;gap:10px}"
             ".hit{background:#d8f5d0}figure{margin:0;width:95px;font-size:10px}.query{margin:12px 0}")  # fmt: skip
    page = f"<!doctype html><html><head><meta charset='utf-8'><title>gmatch report</title><style>{style}</style></head><body>{''.join(parts)}</body></html>"
    out = run_dir / "report.html"
    atomic_write_text(out, page)
    return out
