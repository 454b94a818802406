"""Does the test set itself carry signal the matcher could use? Label-free score
normalisations that look at all N nodes at once — what cross-attention over the test
set can learn to do — applied to a run's D, scored by get_acc like any model's D.

* dual-softmax: ``log softmax_rows(S/t) + log softmax_cols(S/t)`` (LoFTR, LightGlue);
* Sinkhorn: 20 log-domain iterations of ``exp(S/t)`` (SuperGlue's assignment layer);
* CSLS: ``2 S - r_rows(k) - r_cols(k)``, mean of each node's k best scores (the hubness
  correction of cross-lingual word retrieval, Conneau et al. 2018).

Each is a permutation-equivariant function of the whole score matrix that never looks at
labels or the diagonal, so it would be a legal head; it is computed once on the full
N x N matrix (official and held-out read from it, as for any model) and once on the
held-out block alone (the held-out movies as the only test set). ``t`` is in units of
std(D). Analysis only: the run's official numbers stay those of its raw D.

    python -m experiments.transductive --runs experiments/results/depth_ablation/seed=*-n_layers=0

Several runs (seeds) give mean ± sample std (ddof = 1) per cell.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from experiments.common import write_results
from gmatch.assignment import sinkhorn
from gmatch.data import load_movielens
from gmatch.evaluate import split_metrics
from gmatch.metrics import evaluate_distance
from gmatch.sweep import mean_sd

TEMPS = (0.3, 1.0, 3.0)
KS = (10, 50)


def dual_softmax(S: torch.Tensor, t: float) -> torch.Tensor:
    L = S / t
    return torch.log_softmax(L, 1) + torch.log_softmax(L, 0)


def csls(S: torch.Tensor, k: int) -> torch.Tensor:
    k = min(k, *S.shape)
    return (
        2 * S
        - S.topk(k, 1).values.mean(1, keepdim=True)
        - S.topk(k, 0).values.mean(0, keepdim=True)
    )


def transforms(scale: float) -> dict:
    """name -> function of the score matrix S = -D (larger = closer)."""
    out = {"raw": lambda S: S}
    for t in TEMPS:
        out[f"dual-softmax t={t}"] = lambda S, t=t: dual_softmax(S, t * scale)
        out[f"Sinkhorn t={t}"] = lambda S, t=t: sinkhorn(S, 20, t * scale)
    for k in KS:
        out[f"CSLS k={k}"] = lambda S, k=k: csls(S, k)
    return out


def score_run(run: Path) -> list[dict]:
    rec = json.loads((run / "metrics.json").read_text())
    ms = load_movielens(rec["data"])
    S = -torch.from_numpy(np.load(run / "D.npy")).double()
    held = torch.as_tensor(ms.heldout_idx)
    rows = []
    for name, f in transforms(float(S.std())).items():
        full = split_metrics(-f(S).float(), ms)
        alone = evaluate_distance(-f(S[held][:, held]).float())
        rows.append(
            {
                "transform": name,
                "official": full["official"]["acc_mean"],
                "heldout": full["heldout"]["acc_mean"],
                "heldout_R@1": full["heldout"]["poster_to_intro/R@1"],
                "heldout_alone": alone["acc_mean"],
            }
        )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--runs", nargs="+", default=["runs/default"], help="run folders with D.npy (e.g. seeds)"
    )
    p.add_argument("--out", default="experiments/results/transductive")
    args = p.parse_args(argv)
    runs = sorted(Path(r) for r in args.runs)
    per_run = [score_run(r) for r in runs]
    cols = ["official", "heldout", "heldout_R@1", "heldout_alone"]

    def cell(i, c):
        return mean_sd([rows[i][c] for rows in per_run], digits=4)

    def gain(i):  # held-out change vs raw, per run, then mean ± std
        v = np.array([rows[i]["heldout"] - rows[0]["heldout"] for rows in per_run])
        return f"{v.mean():+.4f}" + (f" ± {v.std(ddof=1):.4f}" if len(v) > 1 else "")

    names = [r["transform"] for r in per_run[0]]
    md = [
        "| transform | all 2938 movies | held-out | Δ held-out vs raw | held-out R@1 "
        "| held-out, normalised on the held-out block |",
        "|---|---|---|---|---|---|",
    ]
    md += [
        f"| {n} | {cell(i, 'official')} | {cell(i, 'heldout')} | {gain(i)} | {cell(i, 'heldout_R@1')} | "
        f"{cell(i, 'heldout_alone')} |"
        for i, n in enumerate(names)
    ]
    text = (
        f"Runs ({len(runs)}): "
        + ", ".join(f"`{r}`" for r in runs)
        + "; t in units of std(D); ± = sample std (ddof = 1) over runs.\n\n"
        + "\n".join(md)
        + "\n"
    )
    out = Path(args.out)
    rows = [
        [run, r["transform"], *(r[c] for c in cols)] for run, rs in zip(runs, per_run) for r in rs
    ]
    write_results(out, text, rows, ["run", "transform", *cols])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
