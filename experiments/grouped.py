"""Grouped matching on held-out movies: per-item and whole-group accuracy inside groups
of size g (random, seeded; or movies sharing their first genre), nearest vs Hungarian.

    python -m experiments.grouped --run runs/default
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from experiments.common import write_results
from gmatch.data import load_movielens
from gmatch.groups import grouped_metrics, groups_by_label, random_groups


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", default="runs/default", help="run folder with D.npy")
    p.add_argument("--out", default="experiments/results/grouped")
    p.add_argument("--seeds", type=int, default=3)
    args = p.parse_args(argv)
    rec = json.loads((Path(args.run) / "metrics.json").read_text())
    ms = load_movielens(rec["data"])
    D = np.load(Path(args.run) / "D.npy")
    held = ms.heldout_idx
    first_genre = np.array([g[0] if g else "none" for g in ms.genres])
    rows = []
    for size in (2, 5, 10, 20):
        for kind in ("random", "same genre"):
            ms_ = []
            for seed in range(args.seeds):
                groups = (
                    random_groups(held, size, seed)
                    if kind == "random"
                    else groups_by_label(held, first_genre, size, seed)
                )
                ms_.append(grouped_metrics(D, groups))
            row = {"g": size, "groups": kind, "n_groups": ms_[0]["groups"]}
            for key in (
                "item_acc/nearest",
                "item_acc/hungarian",
                "group_exact/nearest",
                "group_exact/hungarian",
            ):
                v = np.array([m[key] for m in ms_])
                row[key] = f"{v.mean():.3f} ± {v.std(ddof=1):.3f}"
            rows.append(row)
    out = Path(args.out)
    keys = list(rows[0])
    md = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    md += ["| " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    text = (
        f"Run: `{args.run}` ({rec.get('command', '')}); held-out movies only; "
        f"mean ± sample std (ddof = 1) over {args.seeds} seeds; chance item accuracy = 1/g.\n\n"
        + "\n".join(md)
        + "\n"
    )
    write_results(out, text, rows, keys)
    _plot(rows, out / "results.png")
    return 0


def _plot(rows, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for kind, ls in (("random", "-"), ("same genre", "--")):
        rs = [r for r in rows if r["groups"] == kind]
        g = [r["g"] for r in rs]
        for key, c in (
            ("item_acc/nearest", "C0"),
            ("item_acc/hungarian", "C1"),
            ("group_exact/hungarian", "C2"),
        ):
            ax.plot(
                g,
                [float(r[key].split()[0]) for r in rs],
                ls,
                color=c,
                marker="o",
                label=f"{key} ({kind})",
            )
    ax.plot(
        [2, 5, 10, 20], [1 / 2, 1 / 5, 1 / 10, 1 / 20], ":", color="grey", label="chance (item)"
    )
    ax.set_xscale("log")
    ax.set_xticks([2, 5, 10, 20], ["2", "5", "10", "20"])
    ax.set_xlabel("group size g")
    ax.set_ylabel("accuracy")
    ax.legend(fontsize=6)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
