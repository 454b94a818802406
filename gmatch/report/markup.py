"""DOC_html"""

from __future__ import annotations

import html
import json
from pathlib import Path

import numpy as np
import torch

from gmatch.data import MovieSet
from gmatch.metrics import true_ranks
from gmatch.report.figures import img_b64
from gmatch.report.stats import cut, find, genre_overlap, wilson


def flag(is_train: bool) -> str:
    return " <span class='tr'>train</span>" if is_train else ""


def poster_query(label, q, D, ms, pool, where, ranks, ocr, is_train, k) -> str:
    """One poster with its OCR text and its top-k intros among the pool (true one shown on a miss)."""
    cand = torch.as_tensor(pool)
    d = D[q][cand]
    top = d.topk(min(k, len(pool)), largest=False).indices.tolist()
    items = [
        f"<li class='{'hit' if pool[j] == q else ''}'>d={float(d[j]):.2f} <b>{html.escape(ms.titles[pool[j]])}</b>"
        f"{flag(is_train[pool[j]])}: {html.escape(cut(ms.intros[pool[j]], 220))}</li>"
        for j in top
    ]
    rank = ranks[where[q]] + 1 if q in where else None
    miss = ""
    if q in where and pool[top[-1]] != q and q not in [pool[j] for j in top]:
        miss = (
            f"<p class='miss'>True intro (rank {rank}, d={float(D[q, q]):.2f}): "
            f"{html.escape(cut(ms.intros[q], 220))}</p>"
        )
    text = (
        ""
        if ocr is None
        else f"<p class='ocr'>OCR: {html.escape(cut(ocr[q], 160)) or '<i>no text found</i>'}</p>"
    )
    return (
        f"<div class='query grid'><img src='{img_b64(ms.poster_paths[q])}'><div><p class='label'>{label}</p>"
        f"<b>{html.escape(ms.titles[q])}</b>{flag(is_train[q])} (true intro at rank {rank}){text}"
        f"<ol>{''.join(items)}</ol>{miss}</div></div>"
    )


def intro_query(label, q, D, ms, pool, where, ranks, is_train, k) -> str:
    """One intro with its top-k posters among the pool (the true poster appended on a miss)."""
    cand = torch.as_tensor(pool)
    d = D[:, q][cand]
    top = [int(pool[j]) for j in d.topk(min(k, len(pool)), largest=False).indices.tolist()]
    shown = top + ([q] if q not in top and q in where else [])
    figs = "".join(
        f"<figure class='{'hit' if c == q else ''}'><img src='{img_b64(ms.poster_paths[c], 90)}'>"
        f"<figcaption>{'true poster: ' if c == q and c not in top else ''}{html.escape(cut(ms.titles[c], 40))}"
        f"{flag(is_train[c])} d={float(D[c, q]):.2f}</figcaption></figure>"
        for c in shown
    )
    rank = ranks[where[q]] + 1 if q in where else None
    return (
        f"<div class='query'><p class='label'>{label}</p><p><b>{html.escape(ms.titles[q])}</b> (true poster at rank "
        f"{rank}): {html.escape(cut(ms.intros[q], 240))}</p><div class='grid'>{figs}</div></div>"
    )


def breakdowns(D, ms, pool, ranks, ocr) -> str:
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


def summary(rec: dict, run_dir: Path) -> str:
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


def search_box(D: torch.Tensor, ms: MovieSet, k: int = 5) -> str:
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


def query_grids(D, ms: MovieSet, pool, ranks_p2i, queries, n_random, rng, ocr, k: int) -> list[str]:
    """The user's queries, then the best, median and worst held-out posters and a few
    random ones, each as poster -> top-k intros and intro -> top-k posters. The grids
    rank among *all* movies (the official convention), so training intros show up as
    the distractors they are; the choice is by held-out rank."""
    order = np.argsort(ranks_p2i, kind="stable")
    curated = [("asked", find(ms, q)) for q in queries]
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
        poster_query(label, q, D, ms, everyone, where, all1, ocr, ms.is_train, k)
        for label, q in curated
    ]
    parts.append(f"<h2>Intro → top-{k} posters</h2><p>Among all {len(ms)} posters, as above.</p>")
    parts += [
        intro_query(label, q, D, ms, everyone, where, all0, ms.is_train, k) for label, q in curated
    ]
    return parts


def franchise_confusions(ms: MovieSet, pool, sub, ranks_p2i) -> str:
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
