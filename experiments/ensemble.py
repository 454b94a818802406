"""Seed ensembles from finished runs: average the scores S = -D of k runs that differ
only in their seed (every subset of size k of the given runs). The raw average is
exactly the D of a ``model.members=k`` model (its members are the single runs with
seeds s..s+k-1, tested), so its get_acc is an official number.

Each ensemble is also shown after the test-set-wide Sinkhorn (SuperGlue's output
layer, ``analysis.sinkhorn_tau``) at an absolute temperature: that normalises over
all test movies at once, so those rows are an analysis, never official. tau = 8 is
fixed in advance (logit units), not chosen on held-out.

    python -m experiments.ensemble --runs experiments/results/depth_ablation/seed=*-n_layers=0
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from experiments.common import write_results
from gmatch.assignment import sinkhorn
from gmatch.data import load_movielens
from gmatch.evaluate import split_metrics


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--runs", nargs="+", required=True, help="run folders with D.npy, same data, other seeds"
    )
    p.add_argument(
        "--sinkhorn-tau", type=float, default=8.0, help="temperature of the Sinkhorn output layer"
    )
    p.add_argument("--out", default="experiments/results/ensemble")
    args = p.parse_args(argv)
    runs = sorted(Path(r) for r in args.runs)
    data = {json.loads((r / "metrics.json").read_text())["data"] for r in runs}
    if len(data) != 1:
        raise SystemExit(f"runs were scored on different data folders: {sorted(data)}")
    ms = load_movielens(data.pop())
    S = [-torch.from_numpy(np.load(r / "D.npy")).double() for r in runs]
    rows = []
    for k in range(1, len(runs) + 1):
        for sk in (False, True):
            vals = []
            for subset in itertools.combinations(range(len(runs)), k):
                s = sum(S[i] for i in subset) / k
                if sk:
                    s = sinkhorn(s, 20, args.sinkhorn_tau)  # log P; larger = closer
                m = split_metrics(-s.float(), ms)
                vals.append(
                    (
                        m["official"]["acc_mean"],
                        m["heldout"]["acc_mean"],
                        m["heldout"]["poster_to_intro/R@1"],
                    )
                )
            v = np.array(vals)
            rows.append((k, sk, len(vals), v.mean(0), v.std(0, ddof=1) if len(v) > 1 else None))

    def cell(r, j):
        return f"{r[3][j]:.4f}" + (f" ± {r[4][j]:.4f}" if r[4] is not None else "")

    def label(r):
        return (
            f"Sinkhorn tau={args.sinkhorn_tau:g} over the test set (analysis)"
            if r[1]
            else "raw (official)"
        )

    md = [
        "| seeds averaged (k) | scores | subsets | all 2938 movies | held-out | held-out R@1 |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {r[0]} | {label(r)} | {r[2]} | {cell(r, 0)} | {cell(r, 1)} | {cell(r, 2)} |"
        for r in rows
    ]
    text = (
        f"Runs ({len(runs)}): "
        + ", ".join(f"`{r}`" for r in runs)
        + "; ± = sample std (ddof = 1) over the subsets of size k. Rows marked analysis normalise over "
        "all test movies at once and are never official numbers.\n\n" + "\n".join(md) + "\n"
    )
    out = Path(args.out)
    csv_rows = [[r[0], args.sinkhorn_tau if r[1] else 0, r[2], *r[3][:3]] for r in rows]
    write_results(
        out, text, csv_rows, ["k", "sinkhorn", "subsets", "official", "heldout", "heldout_R@1"]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
