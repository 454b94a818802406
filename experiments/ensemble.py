"""Seed ensembles from finished runs: average the scores S = -D of k runs that differ
only in their seed (every subset of size k of the given runs), optionally followed by
the Sinkhorn output layer at an absolute temperature. This is exactly what a
``model.members=k`` model computes (its members are the single runs with seeds s..s+k-1,
tested), without training anything again. Nothing is chosen on held-out: tau = 8 is the
validation choice of the `out_sinkhorn` study.

    python -m experiments.ensemble --runs experiments/results/out_sinkhorn/out_sinkhorn_tau=0.0-seed=*
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path

import numpy as np
import torch

from gmatch.config import ModelConf
from gmatch.data import load_movielens
from gmatch.evaluate import split_metrics
from gmatch.io import atomic_write_text
from gmatch.models.matcher import output_layer


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", nargs="+", required=True, help="run folders with D.npy, same data, other seeds")
    p.add_argument("--sinkhorn-tau", type=float, default=8.0, help="temperature of the Sinkhorn output layer")
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
                    s = output_layer(s, ModelConf(out_sinkhorn_tau=args.sinkhorn_tau), training=False)
                m = split_metrics(-s.float(), ms)
                vals.append((m["official"]["acc_mean"], m["heldout"]["acc_mean"], m["heldout"]["poster_to_intro/R@1"]))
            v = np.array(vals)
            rows.append((k, sk, len(vals), v.mean(0), v.std(0, ddof=1) if len(v) > 1 else None))

    def cell(r, j):
        return f"{r[3][j]:.4f}" + (f" ± {r[4][j]:.4f}" if r[4] is not None else "")

    md = ["| seeds averaged (k) | Sinkhorn output | subsets | official | held-out | held-out R@1 |", "|---|---|---|---|---|---|"]
    md += [f"| {r[0]} | {'tau=%g' % args.sinkhorn_tau if r[1] else 'no'} | {r[2]} | {cell(r, 0)} | {cell(r, 1)} | {cell(r, 2)} |"
           for r in rows]  # fmt: skip
    text = (f"Runs ({len(runs)}): " + ", ".join(f"`{r}`" for r in runs)
            + "; mean ± std over the subsets of size k.\n\n" + "\n".join(md) + "\n")  # fmt: skip
    out = Path(args.out)
    atomic_write_text(out / "results.md", text)
    atomic_write_text(out / "results.csv", "k,sinkhorn,subsets,official,heldout,heldout_R@1\n" + "".join(
        f"{r[0]},{args.sinkhorn_tau if r[1] else 0},{r[2]},{r[3][0]},{r[3][1]},{r[3][2]}\n" for r in rows))  # fmt: skip
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
