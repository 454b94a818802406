"""Rebuild experiments/README.md from experiments/results/*/results.md.

python -m experiments.summarize
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import yaml

from experiments.common import STUDIES
from gmatch.config import EXECUTION_KEYS, flatten, load_config, to_dict, upgrade
from gmatch.io import atomic_write_text
from gmatch.sweep import grid_points

HERE = Path(__file__).resolve().parent


def stale_settings(study: Path) -> dict:
    """``{key: (used, now)}`` for every setting in which a study's recorded runs
    differ from what its config file gives today (defaults included). Keys a
    run does not record predate the option, whose default is the old behaviour."""
    config = HERE / "configs" / f"{study.name}.yaml"
    if not config.exists():
        return {}
    points = {
        tuple(labels): overrides
        for labels, overrides in grid_points(yaml.safe_load(config.read_text()))
    }
    diffs = {}
    for metrics in sorted(study.glob("*/metrics.json")):
        labels = tuple(json.loads(metrics.read_text()).get("overrides", []))
        if labels not in points or not (metrics.parent / "config.yaml").exists():
            continue
        used = flatten(upgrade(yaml.safe_load((metrics.parent / "config.yaml").read_text())))
        now = flatten(to_dict(load_config(config, points[labels])))
        for key, value in used.items():
            if key not in EXECUTION_KEYS and key in now and now[key] != value:
                diffs.setdefault(key, (value, now[key]))
    return diffs


def stale_note(study: Path) -> str:
    """A note under a table whose runs used other settings than its config gives today."""
    diffs = stale_settings(study)
    if not diffs:
        return ""
    what = "; ".join(f"`{k}` was `{u}`, now `{n}`" for k, (u, n) in sorted(diffs.items()))
    return (
        f"\n\n_Run with an earlier default ({what}); rerun with `python -m gmatch sweep "
        f"experiments/configs/{study.name}.yaml --out experiments/results/{study.name}` to update._"
    )


_PM = re.compile(r"(-?\d+\.\d+) ± (\d+\.\d+)")
_NUM = re.compile(r"(?<![\d.])(-?0\.\d{2,4})(?![\d])")


# Constants a reading may name without a table: the metric's ratio and the course's target.
EXEMPT = {"0.05", "0.80"}


def _variants(x: str) -> set[str]:
    """A table number and its roundings to 3 and 2 decimals."""
    out = {x}
    decimals = len(x.split(".")[1])
    for d in (3, 2):
        if decimals > d:
            out.add(f"{float(x):.{d}f}")
    return out


def _sections(page: str) -> list[str]:
    """The page cut at its ``## `` headings."""
    return re.split(r"(?m)^(?=## )", page)


def unquoted_numbers(page: str) -> list[str]:
    """Numbers of the form 0.xx(x) and "mean ± sd" that the prose of a section quotes
    but no table of that section contains: a reading must quote its own tables
    (at their precision or rounded), not a number from memory."""
    missing = []
    for section in _sections(page):
        table_nums, table_pms, prose = set(), set(), []
        for line in section.splitlines():
            if line.startswith("|"):
                for m, sd in _PM.findall(line):
                    table_pms |= {f"{a} ± {b}" for a in _variants(m) for b in _variants(sd)}
                table_nums |= {v for x in _NUM.findall(line) for v in _variants(x)}
            else:
                prose.append(line)
        text = "\n".join(prose)
        missing += [f"{m} ± {sd}" for m, sd in _PM.findall(text) if f"{m} ± {sd}" not in table_pms]
        missing += [x for x in _NUM.findall(_PM.sub("", text)) if x not in table_nums | EXEMPT]
    return missing


def main() -> int:
    template = (HERE / "README.template.md").read_text()
    tables = {}
    for d in sorted((HERE / "results").iterdir()):
        md = d / "results.md"
        tables[d.name] = (
            (md.read_text().strip() + stale_note(d)) if md.exists() else "_not run yet_"
        )
    for name in STUDIES:
        tables.setdefault(name, "_not run yet_")
    page = template.format(**tables)
    atomic_write_text(HERE / "README.md", page)
    missing = unquoted_numbers(page)
    if missing:
        print(
            f"experiments/README.md: {len(missing)} number(s) in readings are in no table: {', '.join(missing)}"
        )
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
