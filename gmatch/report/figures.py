"""Figures of the report (matplotlib, embedded as base64 PNGs and saved beside the page):
the score heatmap, recall@K and get_acc-ratio curves, training curves, poster thumbnails.
"""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import torch

from gmatch.data import MovieSet
from gmatch.report.stats import RATIOS, acc_curve, cut


def img_b64(path: Path, width: int = 110) -> str:
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((width, int(width * 1.5)))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buf.getvalue()).decode()


def fig_b64(fig, path: Path) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=160)  # sharp in print (the PDF) as on screen
    import matplotlib.pyplot as plt

    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def heatmap(D, ms, few, run_dir) -> str:
    import matplotlib.pyplot as plt

    block = D[few][:, few].numpy()
    lo, hi = np.percentile(
        block, [2, 98]
    )  # robust colour scale: one outlier does not flatten the rest
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    im = ax.imshow(block, cmap="viridis_r", vmin=lo, vmax=hi)
    names = [cut(ms.titles[i], 24) for i in few]
    ax.set_yticks(range(len(few)), names, fontsize=6)
    ax.set_xticks(range(len(few)), names, fontsize=6, rotation=90)
    for i in range(len(few)):
        ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, fill=False, ec="red", lw=1.2))
    ax.set_ylabel("poster")
    ax.set_xlabel("intro")
    ax.set_title("D for 12 held-out movies (red: the true pairs)", fontsize=9)
    fig.colorbar(im, ax=ax, label="distance = −score (smaller is closer; 2–98 % range)")
    return f"<h2>D for 12 held-out movies</h2><img src='{fig_b64(fig, run_dir / 'heatmap.png')}'>"


def recall_curve(ranks_p2i, ranks_i2p, n, scope, run_dir) -> str:
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
    return f"<h2>Recall@k</h2><img src='{fig_b64(fig, run_dir / 'recall_at_k.png')}'>"


def curves(run_dir: Path, rec: dict) -> str:
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
    return f"<h2>Training curves</h2><img src='{fig_b64(fig, run_dir / 'curves.png')}'>"


def ratio_curve(D: torch.Tensor, ms: MovieSet, run_dir: Path) -> str:
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
    return f"<h2>Accuracy vs ratio</h2><img src='{fig_b64(fig, run_dir / 'acc_vs_ratio.png')}'>"
