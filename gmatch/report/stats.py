"""Numbers of the report: get_acc over ratios, genre overlap, Wilson and paired bootstrap
intervals, the top-5 export; movie lookup by id or title, and the report's error.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import torch

from gmatch.data import MovieSet
from gmatch.io import atomic_write_text
from gmatch.metrics import get_acc

__all__ = [
    "RATIOS",
    "acc_curve",
    "genre_overlap",
    "wilson",
    "paired_ci",
    "export_topk",
    "ReportError",
    "find",
    "cut",
]

RATIOS = (0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2)


def acc_curve(D: torch.Tensor, ratios=RATIOS) -> dict[str, list[float]]:
    """get_acc as a function of ratio, both dims (NaN where k = int(ratio * N) is 0)."""
    return {
        f"dim{d}": [get_acc(D, r, d) if int(r * len(D)) >= 1 else float("nan") for r in ratios]
        for d in (0, 1)
    }


def jaccard(a: list[str], b: list[str]) -> float:
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
        nn += [jaccard(ms.genres[idx[a]], ms.genres[idx[b]]) for b in others]
        rand += [
            jaccard(ms.genres[idx[a]], ms.genres[idx[b]]) for b in rng.integers(0, len(idx), k)
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


def wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """95 % Wilson interval of a proportion."""
    if n == 0:
        return (float("nan"), float("nan"))
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (float(centre - half), float(centre + half))


def paired_ci(
    h_a: np.ndarray, h_b: np.ndarray, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """95 % interval of mean(h_b) - mean(h_a) when the queries are resampled jointly."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(h_a), (n_boot, len(h_a)))
    diff = h_b[idx].mean(1) - h_a[idx].mean(1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    return float(lo), float(hi)


class ReportError(ValueError):
    """A run folder the report cannot be made from; the message names the file."""


def find(ms: MovieSet, query: str) -> int:
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


def cut(text: str, n: int) -> str:
    """At most n characters, cut at a word boundary with an ellipsis."""
    text = " ".join(text.split())
    if len(text) <= n:
        return text
    return text[:n].rsplit(" ", 1)[0].rstrip(",.;:") + " …"
