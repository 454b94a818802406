"""What the experiment scripts share: the list of studies and the way results are written."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from gmatch.io import atomic_write_text

HERE = Path(__file__).resolve().parent

# Sweeps: one YAML each in experiments/configs (python -m gmatch sweep ...), in the order
# experiments/run_all.sh runs them. Analyses: scripts over finished runs (python -m experiments.<name>).
SWEEPS = tuple(sorted(p.stem for p in (HERE / "configs").glob("*.yaml")))
ANALYSES = (
    "ocr_gating",
    "matcher_retest_paired",
    "assignment",
    "grouped",
    "zero_shot",
    "prior_weights",
    "zero_shot_736",
    "sides_paired",
    "zero_shot_736_320",
    "third_side_paired",
    "protocol",
    "zero_shot_ocr320",
    "transfer_paired",
    "local_nodes_paired",
    "memory",
    "transductive",
    "ensemble",
    "ensemble_default",
)
STUDIES = SWEEPS + ANALYSES


def write_results(
    out: str | Path,
    text: str,
    rows: list | None = None,
    columns: list[str] | None = None,
    as_json: bool = False,
) -> None:
    """``out/results.md`` (the table a reading quotes), the rows as ``results.csv``
    (``columns`` of each dict row, or a header + value lists) or ``results.json``,
    all written atomically; the table is printed too."""
    out = Path(out)
    atomic_write_text(out / "results.md", text)
    if rows is not None and as_json:
        atomic_write_text(out / "results.json", json.dumps(rows, indent=1))
    elif rows is not None:
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[r[c] for c in columns] if isinstance(r, dict) else r for r in rows])
        atomic_write_text(out / "results.csv", buf.getvalue())
    print(text)
