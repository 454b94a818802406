"""Rebuild experiments/README.md from experiments/results/*/results.md.

    python -m experiments.summarize
"""

from __future__ import annotations

from pathlib import Path

from gmatch.io import atomic_write_text

HERE = Path(__file__).resolve().parent


def main() -> int:
    template = (HERE / "README.template.md").read_text()
    tables = {}
    for d in sorted((HERE / "results").iterdir()):
        md = d / "results.md"
        tables[d.name] = md.read_text().strip() if md.exists() else "_not run yet_"
    for name in ("depth_ablation", "layer_types", "edge_distance", "edge_width", "encoders", "losses",
                 "train_size", "prior", "prior_off", "fit_vs_transfer", "assignment", "grouped",
                 "zero_shot"):  # fmt: skip
        tables.setdefault(name, "_not run yet_")
    atomic_write_text(HERE / "README.md", template.format(**tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
