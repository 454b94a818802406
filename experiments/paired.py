"""Paired differences of a sweep's cases against a reference case, seed by seed.

Each case minus the reference on the same seed (so the same validation slice and the
same episodes' random stream), then mean ± standard error over the seeds both have:
validation accuracy (what chooses) and held-out accuracy (an analysis). For k-fold runs
(``train.folds`` >= 2) the choosing column is **Δcv**: case minus reference on the same
(seed, fold) — the same fold movies, the same training folds — mean ± standard error over
those pairs; the rule (experiments/README.md) adopts a change only when Δcv > 2 se.

    python -m experiments.paired experiments/results/transfer --ref default \\
        --out experiments/results/transfer_paired
"""

from __future__ import annotations

import argparse
import json
import math
from collections import defaultdict
from pathlib import Path

from experiments.common import write_results


def load(folder: Path) -> dict:
    """``{case: {seed: (val_acc, heldout_mean, fold accuracies or None)}}`` of a sweep
    folder's finished runs."""
    out: dict = defaultdict(dict)
    for path in sorted(folder.glob("*/metrics.json")):
        rec = json.loads(path.read_text())
        labels = dict(x.split("=", 1) for x in rec.get("overrides", []))
        if "case" not in labels or "seed" not in labels:
            continue
        held = rec["metrics"]["heldout"]
        out[labels["case"]][int(labels["seed"])] = (
            rec["val_acc"],
            (held["acc_dim0"] + held["acc_dim1"]) / 2,
            rec["cv"]["fold_acc"] if rec.get("cv") else None,
        )
    return out


def fold_differences(case: dict, ref: dict, seeds) -> list[float]:
    """Case minus reference per (seed, fold) where both ran the same folds."""
    out = []
    for s in seeds:
        a, b = case[s][2], ref[s][2]
        if a is not None and b is not None and len(a) == len(b):
            out += [x - y for x, y in zip(a, b)]
    return out


def mean_se(xs: list[float]) -> str:
    """``"+0.0025 ± 0.0023"``: the mean and its standard error (sd with ddof = 1 / sqrt n)."""
    m = sum(xs) / len(xs)
    mean = f"{m:+.4f}".replace("-0.0000", "+0.0000")
    if len(xs) < 2:
        return mean
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    return f"{mean} ± {sd / math.sqrt(len(xs)):.4f}"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", help="a sweep folder (run folders labelled case=..., seed=...)")
    p.add_argument("--ref", required=True, help="the reference case")
    p.add_argument("--against", nargs="*", default=(), help="CASE=REF: another reference pair")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    runs = load(Path(args.runs))
    if args.ref not in runs:
        print(f"{args.runs}: no finished runs of case {args.ref!r} (cases: {sorted(runs)})")
        return 2
    pairs = [(c, args.ref) for c in sorted(runs) if c != args.ref]
    for item in args.against:
        case, _, ref = item.partition("=")
        if case not in runs or ref not in runs:
            print(f"--against {item}: both cases need finished runs (cases: {sorted(runs)})")
            return 2
        pairs.append((case, ref))
    lines = [
        "| case | reference | seeds | **Δcv** (seed × fold pairs) | Δ val_acc | Δ heldout_mean |",
        "|---|---|---|---|---|---|",
    ]
    for case, ref in pairs:
        seeds = sorted(set(runs[case]) & set(runs[ref]))
        if not seeds:
            continue
        dv = [runs[case][s][0] - runs[ref][s][0] for s in seeds]
        dh = [runs[case][s][1] - runs[ref][s][1] for s in seeds]
        dcv = fold_differences(runs[case], runs[ref], seeds)
        cv = f"{mean_se(dcv)} (n = {len(dcv)})" if dcv else "—"
        lines.append(f"| {case} | {ref} | {len(seeds)} | {cv} | {mean_se(dv)} | {mean_se(dh)} |")
    cmd = f"python -m experiments.paired {args.runs} --ref {args.ref}"
    if args.against:
        cmd += " --against " + " ".join(args.against)
    text = (
        f"Command: `{cmd} --out {args.out}`. Case minus reference on the same seed; mean ± "
        "standard error over the seeds (held-out is an analysis, never used to choose).\n\n"
        + "\n".join(lines)
        + "\n"
    )
    write_results(args.out, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
