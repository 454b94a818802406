"""Study 6, training-pair memory: a poster reaches an intro *through* the training pairs.

    m_p2i(p, t) = sum_j softmax_j(cos(poster_p, poster_j) / tau) * cos(intro_j, t)
    m_i2p(p, t) = sum_j softmax_j(cos(intro_t, intro_j) / tau) * cos(poster_j, poster_p)

over the training pairs j (frozen features: EfficientNet-Lite0 + OCR-MiniLM for posters,
MiniLM for intros). The score term w * (m_p2i + m_i2p) / 2 is added to a trained run's
logits (-D); w = 0 is the run itself. A training poster finds itself in memory, so the
term mostly fits training pairs (the official number); held-out posters find only other
movies. Test movies never enter the memory.

    python -m experiments.memory --run experiments/results/lexical/<run>
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.common import write_results
from gmatch.data import load_movielens
from gmatch.features import extract
from gmatch.metrics import evaluate_distance

TAUS = (0.02, 0.05, 0.1)
WEIGHTS = (0.0, 5.0, 20.0, 50.0)


def _views(ms, specs, cache):
    parts = [
        F.normalize(torch.from_numpy(extract(ms, s, cache, False).values), dim=-1) for s in specs
    ]
    return F.normalize(torch.cat(parts, dim=-1), dim=-1)


def memory_scores(
    P: torch.Tensor, T: torch.Tensor, train_idx: np.ndarray, tau: float
) -> torch.Tensor:
    """(m_p2i + m_i2p) / 2 [N x N] from unit-norm poster and intro features."""
    j = torch.as_tensor(train_idx)
    Pm, Tm = P[j], T[j]
    a = torch.softmax(P @ Pm.T / tau, dim=1)  # poster -> training posters  [N x J]
    p2i = (a @ Tm) @ T.T  # their intros vs every candidate intro
    b = torch.softmax(T @ Tm.T / tau, dim=1)  # intro -> training intros
    i2p = ((b @ Pm) @ P.T).T  # their posters vs every poster
    return (p2i + i2p) / 2


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--run", required=True, help="run folder with D.npy and metrics.json")
    p.add_argument("--cache-dir", default="cache")
    p.add_argument("--out", default="experiments/results/memory")
    args = p.parse_args(argv)
    rec = json.loads((Path(args.run) / "metrics.json").read_text())
    ms = load_movielens(rec["data"])
    logits = -torch.from_numpy(np.load(Path(args.run) / "D.npy")).double()
    P = _views(ms, ["image:efficientnet_lite0", "ocr:minilm"], args.cache_dir).double()
    T = _views(ms, ["text:minilm"], args.cache_dir).double()
    lines = [
        "| tau | w | official mean | held-out mean | held-out R@1 | train mean |",
        "|---|---|---|---|---|---|",
    ]
    rows = []
    for tau in TAUS:
        M = memory_scores(P, T, ms.train_idx, tau)
        alone = evaluate_distance(-M, ms.heldout_idx)["acc_mean"]
        for w in WEIGHTS:
            if w == 0 and tau != TAUS[0]:
                continue
            D = -(logits + w * M)
            o, h, t = (
                evaluate_distance(D),
                evaluate_distance(D, ms.heldout_idx),
                evaluate_distance(D, ms.train_idx),
            )
            rows.append(
                {
                    "tau": tau,
                    "w": w,
                    "official": o["acc_mean"],
                    "heldout": h["acc_mean"],
                    "heldout_r1": h["poster_to_intro/R@1"],
                    "train": t["acc_mean"],
                    "memory_alone_heldout": alone,
                }
            )
            lines.append(
                f"| {tau} | {w:g} | {o['acc_mean']:.4f} | {h['acc_mean']:.4f} | "
                f"{h['poster_to_intro/R@1']:.4f} | {t['acc_mean']:.4f} |"
            )
        lines.append(f"| {tau} | memory alone | — | {alone:.4f} | — | — |")
    text = (
        f"Command: `python -m experiments.memory --run {args.run}`\n\nBase run: `{args.run}` "
        f"({rec.get('command', '')}). w in logit units (the run's cosine head has scale ~1/tau_init).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    out = Path(args.out)
    write_results(out, text, rows, as_json=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
