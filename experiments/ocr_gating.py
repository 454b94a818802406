"""Read the extra detector sides only where the first reading looks poor? (issue 30: a
speed lever for new posters, measured before building it into the reader.)

    python -m experiments.ocr_gating          # experiments/results/ocr_gating

The default reads every poster at sides 480, 736 and 320 (``data.ocr_extra_sides``) and
merges the lines (:func:`gmatch.encoders.ocr.merge_readings`); the extra sides are about
two thirds of a new poster's OCR time (benchmarks/NEW_POSTERS.md). A gate reads them
only for posters whose first reading (side 480) is poor by a label-free signal, so its
OCR cost is the first reading plus the gated share of the extra sides. Each gate is
scored by title-word recall (:mod:`gmatch.encoders.reading_quality`) on the 1762 training
movies (titles are labels: train decides) with held-out beside it, from the cached
single-side readings (no poster is read again). A gate earns its place only if it keeps
most of the merge's gain for a much smaller share than the ungated default.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import numpy as np

from experiments.common import write_results
from gmatch.config import DataConf
from gmatch.data import load_movielens
from gmatch.encoders.ocr import merge_readings, side_configs
from gmatch.encoders.reading_quality import title_recall
from gmatch.features import ocr_config
from gmatch.features.reading import poster_ocr
from gmatch.runs import git_state
from gmatch.sweep import commit_label


def confident_letters(reading, min_confidence: float) -> int:
    """Letters and digits in a reading's confident lines."""
    return sum(len(re.sub(r"[^0-9a-z]", "", t.lower())) for t, s in reading if s >= min_confidence)


def gates(first, min_confidence: float) -> dict[str, np.ndarray]:
    """Label-free gates on the first reading: which posters read the extra sides."""
    letters = np.array([confident_letters(r, min_confidence) for r in first])
    out = {"never (one reading)": np.zeros(len(first), bool)}
    for t in (20, 40, 60, 80, 120):
        out[f"fewer than {t} confident letters"] = letters < t
    for thr in (0.6, 0.8, 0.9):
        out[f"a line below confidence {thr} (or no line)"] = np.array(
            [not r or any(s < thr for _, s in r) for r in first]
        )
    out["always (the default)"] = np.ones(len(first), bool)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="data/movielens")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--out", default="experiments/results/ocr_gating")
    args = p.parse_args(argv)
    conf = ocr_config(DataConf())
    if not conf.extra_sides:
        raise SystemExit("ocr_gating: the default reads one side; nothing to gate")
    ms = load_movielens(args.data)
    cache = Path(args.cache_dir)
    sides = [poster_ocr(ms, cache, progress=False, conf=c)[0] for c in side_configs(conf)]
    merged = [merge_readings(list(r), conf.min_confidence) for r in zip(*sides)]
    first = sides[0]

    def recall(lines, idx):
        return title_recall([lines[i] for i in idx], [ms.titles[i] for i in idx])["recall"]

    base = {k: recall(first, idx) for k, idx in (("train", ms.train_idx), ("ho", ms.heldout_idx))}
    full = {k: recall(merged, idx) for k, idx in (("train", ms.train_idx), ("ho", ms.heldout_idx))}
    rows = []
    lines = [
        "| gate: read the extra sides when the first reading has ... | posters read at the "
        "extra sides | **title-word recall, train** | share of the merge's gain kept (train) "
        "| recall, held-out |",
        "|---|---|---|---|---|",
    ]
    for name, on in gates(first, conf.min_confidence).items():
        read = [m if g else f for m, f, g in zip(merged, first, on)]
        tr, ho = recall(read, ms.train_idx), recall(read, ms.heldout_idx)
        kept = (tr - base["train"]) / (full["train"] - base["train"])
        rows.append({"gate": name, "share": on.mean(), "train": tr, "kept": kept, "heldout": ho})
        lines.append(f"| {name} | {on.mean():.3f} | **{tr:.4f}** | {kept:.2f} | {ho:.4f} |")
    sides_txt = " + ".join(str(c.det_limit_side_len) for c in side_configs(conf))
    text = (
        f"Command: `python -m experiments.ocr_gating` (the default reader, sides {sides_txt}, "
        f"from the cached readings; recall on the {len(ms.train_idx)} training movies decides, "
        f"held-out is reported; commit {commit_label(git_state())}).\n\n" + "\n".join(lines) + "\n"
    )
    write_results(args.out, text, rows, ["gate", "share", "train", "kept", "heldout"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
