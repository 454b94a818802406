"""Rebuild experiments/README.md from experiments/results/*/results.md.

    python -m experiments.summarize
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gmatch.config import Config
from gmatch.io import atomic_write_text

HERE = Path(__file__).resolve().parent


def stale_note(study: Path) -> str:
    """A note when a study's runs used other priors than today's default and its
    config does not set the priors itself (results from an earlier default)."""
    config = HERE / "configs" / f"{study.name}.yaml"
    if not config.exists() or "prior" in config.read_text():
        return ""
    runs = sorted(study.glob("*/config.yaml"))
    if not runs:
        return ""
    used = (yaml.safe_load(runs[0].read_text()).get("model") or {}).get("prior")
    if used is None or used == Config().model.prior:
        return ""
    return (f"\n\n_Run with the previous default priors `model.prior={used}` (no lexical prior); "
            f"rerun with `python -m gmatch sweep experiments/configs/{study.name}.yaml --out "
            f"experiments/results/{study.name}` to update._")


def main() -> int:
    template = (HERE / "README.template.md").read_text()
    tables = {}
    for d in sorted((HERE / "results").iterdir()):
        md = d / "results.md"
        tables[d.name] = (md.read_text().strip() + stale_note(d)) if md.exists() else "_not run yet_"
    for name in ("depth_ablation", "layer_types", "edge_distance", "edge_width", "encoders", "losses",
                 "train_size", "prior", "prior_off", "fit_vs_transfer", "assignment", "grouped",
                 "zero_shot", "lexical", "memory", "genre_aux"):  # fmt: skip
        tables.setdefault(name, "_not run yet_")
    atomic_write_text(HERE / "README.md", template.format(**tables))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
