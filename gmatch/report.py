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

from gmatch.checkpoint import checkpoint_features, load_checkpoint
from gmatch.config import Config, ConfigError, DataConf, merge, saved_config
from gmatch.data import MovieSet, load_movielens
from gmatch.encoders.ocr import OCRConfig, clean_ocr
from gmatch.features import ocr_config
from gmatch.io import atomic_write_text
from gmatch.metrics import bootstrap_acc, evaluate_distance, get_acc, true_ranks

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


def genre_overlap(
    D: torch.Tensor, ms: MovieSet, idx: np.ndarray, k: int = 10, seed: int = 0
) -> dict:
    """Mean genre Jaccard between each query poster's movie and the movies of its
    top-k intros (excluding itself), against random pairs."""
    rng = np.random.default_rng(seed)
    sub = D[idx][:, idx]
    top = sub.topk(k + 1, dim=1, largest=False).indices.numpy()
    nn, rand = [], []
    for a, row in enumerate(top):
        others = [b for b in row if b != a][:k]
        nn += [_jaccard(ms.genres[idx[a]], ms.genres[idx[b]]) for b in others]
        rand += [
            _jaccard(ms.genres[idx[a]], ms.genres[idx[b]]) for b in rng.integers(0, len(idx), k)
        ]
    return {"topk_jaccard": float(np.mean(nn)), "random_jaccard": float(np.mean(rand)), "k": k}


def export_topk(D: torch.Tensor, ms: MovieSet, path: Path, k: int = 5) -> None:
    """Top-k lists per query in both directions: query id/title, rank, candidate, distance."""
    rows = [
        [
            "direction",
            "query_id",
            "query_title",
            "rank",
            "candidate_id",
            "candidate_title",
            "distance",
            "is_true",
        ]
    ]
    for direction, M in (("poster_to_intro", D), ("intro_to_poster", D.T)):
        vals, top = M.topk(k, dim=1, largest=False)
        for q in range(len(M)):
            for r in range(k):
                c = int(top[q, r])
                rows.append(
                    [
                        direction,
                        int(ms.ids[q]),
                        ms.titles[q],
                        r + 1,
                        int(ms.ids[c]),
                        ms.titles[c],
                        f"{float(vals[q, r]):.5f}",
                        int(c == q),
                    ]
                )
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
    fig.savefig(buf, format="png", dpi=160)  # sharp in print (the PDF) as on screen
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


class ReportError(ValueError):
    """A run folder the report cannot be made from; the message names the file."""


def _load_run(run_dir: Path, data):
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


def _find(ms: MovieSet, query: str) -> int:
    """A movie by id or title; an ambiguous title lists its matches instead of picking one."""
    if query.isdigit() and int(query) in set(ms.ids.tolist()):
        return int(np.nonzero(ms.ids == int(query))[0][0])
    q = query.lower().strip()
    exact = [
        i for i, t in enumerate(ms.titles) if t.lower() == q or t.lower().rsplit(" (", 1)[0] == q
    ]
    if len(exact) == 1:
        return exact[0]
    hits = exact or [i for i, t in enumerate(ms.titles) if q in t.lower()]
    if len(hits) == 1:
        return hits[0]
    if not hits:
        raise ReportError(f"no movie with id or title {query!r} in {ms.root}")
    listed = "; ".join(f"{ms.titles[i]} (id {ms.ids[i]})" for i in hits[:8])
    raise ReportError(
        f"--query {query!r} matches {len(hits)} movies: {listed}{' …' if len(hits) > 8 else ''}; "
        "pass the id or the full title"
    )


def _cut(text: str, n: int) -> str:
    """At most n characters, cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0].rstrip(",.;:") + " …"


def cached_ocr_texts(ms: MovieSet, cache_dir, conf: OCRConfig | None = None) -> list[str] | None:
    """Cleaned OCR text per poster from the OCR caches (local or shipped) of the OCR
    settings ``conf`` without reading any poster; None when some poster has no cached OCR."""
    conf = conf or OCRConfig()
    items: dict = {}
    for path in (
        Path(ms.root).parent / "ocr" / f"{Path(ms.root).name}_rapidocr.json",
        Path(cache_dir) / f"ocr_rapidocr_{conf.key()}.json",
    ):
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if (
            isinstance(data, dict)
            and data.get("settings") == conf.key()
            and isinstance(data.get("items"), dict)
        ):
            items.update(data["items"])
    hashes = ms.poster_hashes()
    if not all(h in items for h in hashes):
        return None
    return [clean_ocr(items[h], conf.min_confidence) for h in hashes]


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))


def _prior_only_dist(run_dir: Path, ms: MovieSet) -> torch.Tensor | None:
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
        inputs = feats.inputs()
        S = model.prior_logits(
            *(inputs[k] for k in ("views0", "valid0", "views1", "valid1", "lexical"))
        )
    g = torch.Generator().manual_seed(0)
    return -S + 1e-6 * torch.rand(S.shape, generator=g)


def _headline(run_dir: Path, metrics: dict, ms: MovieSet, D: torch.Tensor) -> str:
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
    prior = _prior_only_dist(run_dir, ms)
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


def _flag(is_train: bool) -> str:
    return " <span class='tr'>train</span>" if is_train else ""


def _poster_query(label, q, D, ms, pool, where, ranks, ocr, is_train, k) -> str:
    """One poster with its OCR text and its top-k intros among the pool (true one shown on a miss)."""
    cand = torch.as_tensor(pool)
    d = D[q][cand]
    top = d.topk(min(k, len(pool)), largest=False).indices.tolist()
    items = [
        f"<li class='{'hit' if pool[j] == q else ''}'>d={float(d[j]):.2f} <b>{html.escape(ms.titles[pool[j]])}</b>"
        f"{_flag(is_train[pool[j]])}: {html.escape(_cut(ms.intros[pool[j]], 220))}</li>"
        for j in top
    ]
    rank = ranks[where[q]] + 1 if q in where else None
    miss = ""
    if q in where and pool[top[-1]] != q and q not in [pool[j] for j in top]:
        miss = (
            f"<p class='miss'>True intro (rank {rank}, d={float(D[q, q]):.2f}): "
            f"{html.escape(_cut(ms.intros[q], 220))}</p>"
        )
    text = (
        ""
        if ocr is None
        else f"<p class='ocr'>OCR: {html.escape(_cut(ocr[q], 160)) or '<i>no text found</i>'}</p>"
    )
    return (
        f"<div class='query grid'><img src='{_img_b64(ms.poster_paths[q])}'><div><p class='label'>{label}</p>"
        f"<b>{html.escape(ms.titles[q])}</b>{_flag(is_train[q])} (true intro at rank {rank}){text}"
        f"<ol>{''.join(items)}</ol>{miss}</div></div>"
    )


def _intro_query(label, q, D, ms, pool, where, ranks, is_train, k) -> str:
    """One intro with its top-k posters among the pool (the true poster appended on a miss)."""
    cand = torch.as_tensor(pool)
    d = D[:, q][cand]
    top = [int(pool[j]) for j in d.topk(min(k, len(pool)), largest=False).indices.tolist()]
    shown = top + ([q] if q not in top and q in where else [])
    figs = "".join(
        f"<figure class='{'hit' if c == q else ''}'><img src='{_img_b64(ms.poster_paths[c], 90)}'>"
        f"<figcaption>{'true poster: ' if c == q and c not in top else ''}{html.escape(_cut(ms.titles[c], 40))}"
        f"{_flag(is_train[c])} d={float(D[c, q]):.2f}</figcaption></figure>"
        for c in shown
    )
    rank = ranks[where[q]] + 1 if q in where else None
    return (
        f"<div class='query'><p class='label'>{label}</p><p><b>{html.escape(ms.titles[q])}</b> (true poster at rank "
        f"{rank}): {html.escape(_cut(ms.intros[q], 240))}</p><div class='grid'>{figs}</div></div>"
    )


def _heatmap(D, ms, few, run_dir) -> str:
    import matplotlib.pyplot as plt

    block = D[few][:, few].numpy()
    lo, hi = np.percentile(
        block, [2, 98]
    )  # robust colour scale: one outlier does not flatten the rest
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(block, cmap="viridis_r", vmin=lo, vmax=hi)
    names = [_cut(ms.titles[i], 24) for i in few]
    ax.set_yticks(range(len(few)), names, fontsize=6)
    ax.set_xticks(range(len(few)), names, fontsize=6, rotation=90)
    for i in range(len(few)):
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
    ax.set_ylabel("poster")
    ax.set_xlabel("intro")
    ax.set_title("D for 12 held-out movies (red: the true pairs)", fontsize=9)
    fig.colorbar(im, ax=ax, label="distance = −score (smaller is closer; 2–98 % range)")
    return f"<h2>D for 12 held-out movies</h2><img src='{_fig_b64(fig, run_dir / 'heatmap.png')}'>"


def _recall_curve(ranks_p2i, ranks_i2p, n, scope, run_dir) -> str:
    import matplotlib.pyplot as plt

    ks = np.unique(np.geomspace(1, n, 40).astype(int))
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    for ranks, name in ((ranks_p2i, "poster → intro"), (ranks_i2p, "intro → poster")):
        ax.plot(
            ks,
            [np.mean(ranks < k) for k in ks],
            label=f"{name} (median rank {np.median(ranks) + 1:.0f})",
        )
    ax.plot(ks, ks / n, color="black", ls=":", lw=1, label="chance (k / n)")
    k05 = int(0.05 * n)
    if k05 >= 1:
        ax.axvline(k05, color="grey", ls="--", lw=1, label=f"k = int(0.05 · n) = {k05}")
    ax.set_xscale("log")
    ax.set_xlabel(f"k (candidates among the {n} {scope})")
    ax.set_ylabel("recall@k (share of queries)")
    ax.set_title("Recall@k in both directions", fontsize=9)
    ax.legend(fontsize=7)
    return f"<h2>Recall@k</h2><img src='{_fig_b64(fig, run_dir / 'recall_at_k.png')}'>"


def _breakdowns(D, ms, pool, ranks, ocr) -> str:
    k = int(0.05 * len(pool))
    hits = ranks < k
    g = genre_overlap(D, ms, pool)
    rows = []
    by_genre: dict = {}
    for h, i in zip(hits, pool):
        for genre in ms.genres[i]:
            by_genre.setdefault(genre, []).append(h)
    for genre, v in sorted(by_genre.items(), key=lambda x: -np.mean(x[1])):
        if len(v) >= 10:
            lo, hi = wilson(int(np.sum(v)), len(v))
            rows.append(
                f"<tr><td>{html.escape(genre)}</td><td>{len(v)}</td><td>{np.mean(v):.3f} [{lo:.3f}, {hi:.3f}]</td></tr>"
            )
    out = (
        "<h2>Do neighbours share semantics?</h2>"
        f"<p>Mean genre Jaccard of a held-out poster's movie with the movies of its top-{g['k']} intros: "
        f"<b>{g['topk_jaccard']:.3f}</b>; with random movies: <b>{g['random_jaccard']:.3f}</b>. Per genre, the "
        f"poster → intro hit rate (true intro in the top k = {k} of {len(pool)}) with a 95 % Wilson interval; "
        f"chance is {k / len(pool):.3f}:</p><table id='genres'><tr><th>genre</th><th>n</th><th>hit rate [95 % CI]</th>"
        "</tr>" + "".join(rows) + "</table>"
    )
    if ocr is not None:
        words = np.array([len(ocr[i].split()) for i in pool])
        rows = []
        for name, mask in (
            ("no text", words == 0),
            ("little (1–3 words)", (words >= 1) & (words <= 3)),
            ("some (4+ words)", words >= 4),
        ):
            n = int(mask.sum())
            lo, hi = wilson(int(hits[mask].sum()), n)
            rate = f"{hits[mask].mean():.3f} [{lo:.3f}, {hi:.3f}]" if n else "—"
            rows.append(f"<tr><td>{name}</td><td>{n}</td><td>{rate}</td></tr>")
        out += (
            "<p>The obvious confounder: does the poster carry text (confident OCR words)?</p>"
            "<table id='text'><tr><th>poster text</th><th>n</th><th>hit rate [95 % CI]</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    return out


def _curves(run_dir: Path, rec: dict) -> str:
    import matplotlib.pyplot as plt

    path = run_dir / "history.json"
    if not path.exists():
        return ""
    hist = json.loads(path.read_text())
    fit = [h for h in hist if not h.get("refit") and "member" not in h]
    refit = [h for h in hist if h.get("refit") and "member" not in h]
    if not fit:
        return ""
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    ax.plot(
        [h["step"] for h in fit], [h["loss"] for h in fit], color="C0", label="train loss (fit)"
    )
    if refit:
        ax.plot(
            [h["step"] for h in refit],
            [h["loss"] for h in refit],
            color="C0",
            ls="--",
            label="train loss (refit)",
        )
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    lines, labels = ax.get_legend_handles_labels()
    if "val_acc" in fit[0]:
        ax2 = ax.twinx()
        steps = np.array([h["step"] for h in fit])
        acc = np.array([h["val_acc"] for h in fit])
        n_val = int(
            round(
                (rec.get("n_train") or 0)
                * ((rec.get("config") or {}).get("train", {}).get("val_fraction", 0))
            )
        )
        ax2.plot(steps, acc, color="C1", label="validation get_acc")
        if n_val:
            se = 1.96 * np.sqrt(acc * (1 - acc) / n_val)
            ax2.fill_between(
                steps,
                acc - se,
                acc + se,
                color="C1",
                alpha=0.2,
                label=f"± 95 % noise ({n_val} movies)",
            )
        if "val_r1" in fit[0]:
            ax2.plot(steps, [h["val_r1"] for h in fit], color="C2", label="validation R@1")
        best = rec.get("best_step")
        if best:
            ax2.axvline(best, color="grey", ls=":", label=f"chosen step {best}")
        ax2.set_ylabel("validation")
        l2, lab2 = ax2.get_legend_handles_labels()
        lines, labels = lines + l2, labels + lab2
    ax.legend(lines, labels, fontsize=7, loc="center right")
    ax.set_title(
        "Training: fit phase on the fit slice, then the refit on all training pairs", fontsize=9
    )
    return f"<h2>Training curves</h2><img src='{_fig_b64(fig, run_dir / 'curves.png')}'>"


def _summary(rec: dict, run_dir: Path) -> str:
    conf = rec.get("config") or {}
    model, data = conf.get("model", {}), conf.get("data", {})
    n_params = None
    if (run_dir / "model.pt").is_file():
        state = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)[
            "state_dict"
        ]
        n_params = sum(v.numel() for k, v in state.items() if "log_weight" not in k)
    rows = [
        ("poster views", ", ".join(data.get("poster_views", []))),
        ("intro views", ", ".join(data.get("intro_views", []))),
        ("priors (weights in 1/tau_init)", ", ".join(model.get("prior", []))),
        ("tau_init", model.get("tau_init")),
        ("attention units (n_layers)", model.get("n_layers")),
        ("edge scorer", model.get("edge")),
        ("parameters", n_params),
        ("seed", conf.get("seed")),
        (
            "git",
            f"{rec.get('git_sha', 'unknown')}{' + uncommitted changes' if rec.get('git_dirty') else ''}",
        ),
        (
            "finished",
            (run_dir / "COMPLETE").read_text().strip() if (run_dir / "COMPLETE").exists() else None,
        ),
        (
            "training seconds",
            None if rec.get("train_seconds") is None else f"{rec['train_seconds']:.1f}",
        ),
        ("best step (validation)", rec.get("best_step")),
        ("command", rec.get("command")),
    ]
    body = "".join(
        f"<tr><th>{html.escape(a)}</th><td>{html.escape(str(b))}</td></tr>"
        for a, b in rows
        if b is not None
    )
    return f"<h2>Run summary</h2><table id='summary'>{body}</table>"


SEARCH_JS = """
const S = JSON.parse(document.getElementById('search-data').textContent);
const box = document.getElementById('search'), out = document.getElementById('search-out');
function esc(t) { const d = document.createElement('div'); d.textContent = t; return d.innerHTML; }
function show(i) {
  const list = (ids, ds, truth) => ids.map((c, r) => `<li class="${c === truth ? 'hit' : ''}">d=${ds[r]} ` +
    `${esc(S.titles[c])}${S.train[c] ? ' <span class="tr">train</span>' : ''}</li>`).join('');
  const flag = S.train[i] ? ' <span class="tr">train</span>' : '';
  out.innerHTML = `<div class="result"><b>${esc(S.titles[i])}</b>${flag}` +
    `<p>Poster → intros (true intro at rank ${S.rank1[i]} of ${S.titles.length}):</p>` +
    `<ol>${list(S.p2i[i], S.d_p2i[i], i)}</ol>` +
    `<p>Intro → posters (true poster at rank ${S.rank0[i]}):</p><ol>${list(S.i2p[i], S.d_i2p[i], i)}</ol></div>`;
}
function search(q) {
  q = q.trim().toLowerCase();
  if (!q) { out.innerHTML = ''; return; }
  const hits = [];
  S.titles.forEach((t, i) => { if (t.toLowerCase().includes(q) || String(S.ids[i]) === q) hits.push(i); });
  const exact = hits.filter(i => S.titles[i].toLowerCase() === q || String(S.ids[i]) === q);
  if (exact.length === 1 || hits.length === 1) { show(exact.length === 1 ? exact[0] : hits[0]); return; }
  out.innerHTML = hits.length ? '<p>' + hits.length + ' matches, pick one:</p><ul>' + hits.slice(0, 30).map(i =>
    `<li><a href="#" data-i="${i}">${esc(S.titles[i])}</a></li>`).join('') + '</ul>' : '<p>no match</p>';
  out.querySelectorAll('a[data-i]').forEach(a => a.addEventListener('click', e => {
    e.preventDefault(); show(Number(a.dataset.i)); }));
}
box.addEventListener('input', () => search(box.value));
const h = decodeURIComponent(location.hash.replace(/^#q=/, ''));
if (location.hash.startsWith('#q=')) { box.value = h; search(h); }
"""


def _search_box(D: torch.Tensor, ms: MovieSet, k: int = 5) -> str:
    """An offline search box: every movie's top-k lists in both directions, embedded as
    JSON, searched by title in the page (no server). ``report.html#q=<title>`` opens a
    search."""
    v1, t1 = D.topk(k, dim=1, largest=False)
    v0, t0 = D.T.topk(k, dim=1, largest=False)
    data = {
        "titles": ms.titles,
        "ids": ms.ids.tolist(),
        "train": ms.is_train.astype(int).tolist(),
        "p2i": t1.tolist(),
        "d_p2i": [[round(float(x), 2) for x in r] for r in v1],
        "i2p": t0.tolist(),
        "d_i2p": [[round(float(x), 2) for x in r] for r in v0],
        "rank1": (true_ranks(D, 1) + 1).tolist(),
        "rank0": (true_ranks(D, 0) + 1).tolist(),
    }
    payload = json.dumps(data).replace("</", "<\\/")
    return (
        "<div class='search'><h2>Search</h2><p>Type a title (or an id) to see its top-5 intros and "
        f"posters among all {len(ms)} movies (works offline).</p><input id='search' "
        "placeholder='e.g. Toy Story' size='40'><div id='search-out'></div>"
        f"<script type='application/json' id='search-data'>{payload}</script>"
        f"<script>{SEARCH_JS}</script></div>"
    )


def _ratio_curve(D: torch.Tensor, ms: MovieSet, run_dir: Path) -> str:
    """get_acc against the ratio, all movies and held-out, both directions."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, sub in (("all", None), ("held-out", ms.heldout_idx if len(ms.train_idx) else None)):
        if name == "held-out" and sub is None:
            continue
        curve = acc_curve(D if sub is None else D[sub][:, sub])
        for d, ls in (("dim0", "-"), ("dim1", "--")):
            ax.plot(RATIOS, curve[d], ls, marker="o", ms=3, label=f"{name} {d}")
    ax.plot(RATIOS, RATIOS, color="black", ls=":", lw=1, label="chance (= ratio)")
    ax.axvline(0.05, color="grey", ls=":", label="ratio 0.05 (the course metric)")
    ax.set_xlabel("ratio (k = int(ratio · n) candidates count as a hit)")
    ax.set_ylabel("share of queries whose partner is in the top k")
    ax.set_title("get_acc vs ratio; dim0 = intro → poster, dim1 = poster → intro", fontsize=9)
    ax.legend(fontsize=7)
    return f"<h2>Accuracy vs ratio</h2><img src='{_fig_b64(fig, run_dir / 'acc_vs_ratio.png')}'>"


def _query_grids(
    D, ms: MovieSet, pool, ranks_p2i, queries, n_random, rng, ocr, k: int
) -> list[str]:
    """The user's queries, then the best, median and worst held-out posters and a few
    random ones, each as poster -> top-k intros and intro -> top-k posters. The grids
    rank among *all* movies (the official convention), so training intros show up as
    the distractors they are; the choice is by held-out rank."""
    order = np.argsort(ranks_p2i, kind="stable")
    curated = [("asked", _find(ms, q)) for q in queries]
    for label, j in (("best", order[0]), ("median", order[len(order) // 2]), ("worst", order[-1])):
        curated.append(
            (
                f"{label} held-out poster (held-out rank {ranks_p2i[j] + 1} of {len(pool)})",
                int(pool[j]),
            )
        )
    curated += [
        ("random held-out poster", int(q)) for q in rng.choice(pool, n_random, replace=False)
    ]
    everyone = np.arange(len(ms))
    where = {int(m): int(m) for m in everyone}
    all1, all0 = true_ranks(D, 1), true_ranks(D, 0)
    parts = [
        f"<h2>Poster → top-{k} intros</h2><p>Candidates and ranks in these grids are among all {len(ms)} "
        "movies (the official convention); the true intro is green, a training movie is marked "
        "<span class='tr'>train</span>; d = distance (−score, smaller is closer).</p>"
    ]
    parts += [
        _poster_query(label, q, D, ms, everyone, where, all1, ocr, ms.is_train, k)
        for label, q in curated
    ]
    parts.append(f"<h2>Intro → top-{k} posters</h2><p>Among all {len(ms)} posters, as above.</p>")
    parts += [
        _intro_query(label, q, D, ms, everyone, where, all0, ms.is_train, k) for label, q in curated
    ]
    return parts


def _franchise_confusions(ms: MovieSet, pool, sub, ranks_p2i) -> str:
    """Held-out posters whose nearest held-out intro shares the first title word."""
    rows = []
    for j in np.argsort(ranks_p2i, kind="stable")[::-1]:
        q = int(pool[j])
        c = int(pool[int(sub[j].argmin())])
        first = ms.titles[q].split()[0].lower().strip(":,")
        if c != q and len(first) >= 4 and ms.titles[c].lower().startswith(first):
            rows.append(
                f"<tr><td>{html.escape(ms.titles[q])}</td><td>{html.escape(ms.titles[c])}</td>"
                f"<td>{ranks_p2i[j] + 1}</td></tr>"
            )
        if len(rows) == 8:
            break
    if not rows:
        return ""
    return (
        "<h2>Franchise and sequel confusions</h2><p>Held-out posters whose nearest intro belongs to a "
        "movie whose title starts with the same word.</p><table><tr><th>poster</th>"
        "<th>nearest intro</th><th>rank of the true intro</th></tr>" + "".join(rows) + "</table>"
    )


STYLE = (
    "body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}"
    "td,th{border:1px solid #ccc;padding:3px 6px;font-size:12px}.grid{display:flex;gap:10px}"
    ".hit{background:#d8f5d0}figure{margin:0;width:95px;font-size:10px}.query{margin:12px 0}"
    ".tr{background:#ffe9a8;font-size:10px;padding:0 3px}.label{color:#777;font-size:11px;margin:0}"
    ".ocr{font-family:monospace;font-size:11px;color:#444}.miss{background:#fde2e2;font-size:12px}"
    ".baseline th,.baseline td{color:#666}"
    # print (gmatch report --pdf): no search box, one section a page with the headline
    # on page 1 (it follows the search box), figures within the page
    "@media print{.search{display:none}h2{break-before:page}.search+h2{break-before:auto}"
    "img{max-width:100%}body{max-width:none}table,figure,.query{break-inside:avoid}}"
)


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
    rec, metrics, ms, D = _load_run(run_dir, data)
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
        _search_box(D, ms),
        _headline(run_dir, metrics, ms, D),  # held-out first, one rank convention, intervals
        _ratio_curve(D, ms, run_dir),
        *_query_grids(D, ms, pool, ranks_p2i, queries, n_random, rng, ocr, k),
        _franchise_confusions(ms, pool, sub, ranks_p2i),
        _heatmap(D, ms, np.sort(rng.choice(pool, min(12, len(pool)), replace=False)), run_dir),
        _recall_curve(ranks_p2i, ranks_i2p, len(pool), scope, run_dir),
        _breakdowns(D, ms, pool, ranks_p2i, ocr) if len(pool) > 20 else "",  # genre, poster text
        _curves(run_dir, rec),
        _summary(rec, run_dir),
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


def _paired_ci(
    h_a: np.ndarray, h_b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of mean(h_b) - mean(h_a) when the queries are resampled jointly."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(h_a), (n_boot, len(h_a)))
    diff = h_b[idx].mean(1) - h_a[idx].mean(1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(lo), float(hi)


def make_comparison(
    run_a: str | Path, run_b: str | Path, out: str | Path | None = None, data=None
) -> Path:
    """``compare.html``: two runs on the same data side by side — metrics with 95 %
    intervals, the paired difference, and per-query wins and losses (held-out ranks)."""
    run_a, run_b = Path(run_a), Path(run_b)
    rec_a, m_a, ms, D_a = _load_run(run_a, data)
    rec_b, m_b, ms_b, D_b = _load_run(run_b, data or rec_a.get("data"))
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
        lo, hi = _paired_ci(hits[(label, run_a)], hits[(label, run_b)])
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
