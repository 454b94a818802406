"""One-to-one assignment on a run's D (analysis only; get_acc always uses the raw D):
share of movies whose assigned partner is correct, raw top-1 vs Hungarian vs Sinkhorn
at several temperatures, overall and held-out.

    python -m experiments.assignment --run runs/default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from experiments.common import write_results
from gmatch.assignment import assignment_accuracy, hungarian, sinkhorn
from gmatch.data import load_movielens

TAUS = (0.003, 0.01, 0.03, 0.1, 0.3, 1.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", default="runs/default")
    p.add_argument("--out", default="experiments/results/assignment")
    args = p.parse_args(argv)
    rec = json.loads((Path(args.run) / "metrics.json").read_text())
    ms = load_movielens(rec["data"])
    D = torch.from_numpy(np.load(Path(args.run) / "D.npy")).double()
    held = ms.heldout_idx
    rows = []

    def add(name, perm_all, perm_held):
        rows.append(
            {
                "method": name,
                "all": assignment_accuracy(perm_all),
                "heldout": assignment_accuracy(perm_held),
            }
        )

    Dh = D[held][:, held]
    add("raw top-1 (argmin)", D.argmin(1).numpy(), Dh.argmin(1).numpy())
    add("Hungarian", hungarian(D), hungarian(Dh))
    scale = float(D.std())  # temperatures are in units of D's spread
    for tau in TAUS:
        add(
            f"Sinkhorn tau={tau}",
            sinkhorn(-D / scale, 100, tau).argmax(1).numpy(),
            sinkhorn(-Dh / scale, 100, tau).argmax(1).numpy(),
        )
    md = [
        f"| method | all (N={len(ms)}) | held-out among held-out (N={len(held)}) |",
        "|---|---|---|",
    ]
    md += [f"| {r['method']} | {r['all']:.4f} | {r['heldout']:.4f} |" for r in rows]
    text = (
        f"Run: `{args.run}`. Share of posters whose assigned intro is their own.\n\n"
        + "\n".join(md)
        + "\n"
    )
    out = Path(args.out)
    write_results(out, text, rows, ["method", "all", "heldout"])
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.5))
    sk = [r for r in rows if r["method"].startswith("Sinkhorn")]
    for key, c in (("all", "C0"), ("heldout", "C1")):
        ax.plot(TAUS, [r[key] for r in sk], marker="o", color=c, label=f"Sinkhorn ({key})")
        ax.axhline(rows[1][key], color=c, ls="--", label=f"Hungarian ({key})")
        ax.axhline(rows[0][key], color=c, ls=":", label=f"raw top-1 ({key})")
    ax.set_xscale("log")
    ax.set_xlabel("Sinkhorn temperature (units of std(D))")
    ax.set_ylabel("share correctly assigned")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(out / "results.png", dpi=120)
    plt.close(fig)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
