"""Grids of runs from a YAML with a ``sweep:`` block, and tables of their results.

A sweep file holds base overrides plus lists, expanded with itertools.product::

    model: {n_layers: 1}
    sweep:
      model.n_layers: [0, 1, 2]
      seed: [0, 1, 2]

Settings that must change together go in named ``cases`` (each a dict of
dotted overrides), crossed with the ``sweep`` grid; the table groups by case::

    cases:
      pixels: {data.poster_views: [image:efficientnet_lite0], model.prior: []}
      all: {}
    sweep:
      seed: [0, 1, 2]
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import yaml

from gmatch.config import ConfigError, load_config
from gmatch.data import load_movielens
from gmatch.features import load_features, ocr_config
from gmatch.io import atomic_write_text
from gmatch.runs import RunDir, train_and_record

__all__ = [
    "expand",
    "grid_points",
    "run_name",
    "run_sweep",
    "collect",
    "build_table",
    "mean_sd",
    "commit_label",
]

# Columns of every results table: (column, block, metric key).
COLUMNS = [
    ("official_dim0", "official", "acc_dim0"),
    ("official_dim1", "official", "acc_dim1"),
    ("official_mean", "official", "acc_mean"),
    ("heldout_dim0", "heldout", "acc_dim0"),
    ("heldout_dim1", "heldout", "acc_dim1"),
    ("heldout_mean", "heldout", "acc_mean"),
    ("heldout_R@1", "heldout", "poster_to_intro/R@1"),
    ("heldout_R@10", "heldout", "poster_to_intro/R@10"),
    ("train_mean", "train", "acc_mean"),
]


def expand(sweep: dict) -> list[list[str]]:
    """``{"a": [1, 2], "b": [x]}`` -> ``[["a=1", "b=x"], ["a=2", "b=x"]]``."""
    keys = list(sweep)
    values = [v if isinstance(v, list) else [v] for v in sweep.values()]
    out = []
    for combo in itertools.product(*values):
        out.append(
            [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in zip(keys, combo)]
        )
    return out


def grid_points(spec: dict) -> list[tuple[list[str], list[str]]]:
    """Every run of a sweep file as ``(labels, overrides)``: labels name the run
    and form the table's factors (``case=<name>`` and the grid's overrides);
    overrides are what the config receives (the case's settings + the grid's)."""
    cases = spec.get("cases") or {None: {}}
    if not isinstance(cases, dict):
        raise ValueError("sweep file: 'cases' must map a case name to a dict of dotted overrides")
    points = []
    for name, settings in cases.items():
        if not isinstance(settings, dict):
            raise ValueError(f"sweep file: case {name!r} must be a dict of dotted overrides")
        fixed = [f"{k}={json.dumps(v) if isinstance(v, list) else v}" for k, v in settings.items()]
        for overrides in expand(spec.get("sweep", {})):
            labels = ([f"case={name}"] if name is not None else []) + overrides
            points.append((labels, fixed + overrides))
    return points


def run_name(overrides: list[str]) -> str:
    """``["model.n_layers=2", "seed=0"]`` -> ``n_layers=2-seed=0`` (open_clip style)."""
    parts = []
    for o in overrides:
        k, v = o.split("=", 1)
        parts.append(f"{k.split('.')[-1]}={v}".replace("/", "_").replace(" ", "").replace('"', ""))
    return "-".join(parts) or "base"


def run_sweep(
    config: str | Path,
    out: str | Path | None = None,
    extra: list[str] = (),
    skip_existing: bool = False,
    progress: bool = True,
    only: list[str] = (),
) -> Path:
    """Train and evaluate every grid point into ``out/<run name>/``, then build the table.
    ``only``: labels (``case=image``, ``seed=0``) a grid point must all carry to run."""
    config = Path(config)
    spec = yaml.safe_load(config.read_text()) or {}
    out = Path(out or Path("runs") / config.stem)
    grid = grid_points(spec)
    if only:
        grid = [(labels, o) for labels, o in grid if set(only) <= set(labels)]
        if not grid:
            raise ConfigError(f"{config}: no grid point carries all of {', '.join(only)}")
    features_cache: dict = {}
    blocks: dict = {}  # feature blocks by spec, shared by the grid points of one data set
    for i, (labels, overrides) in enumerate(grid, 1):
        name = run_name(labels)
        path = out / name
        if (path / "COMPLETE").exists() and skip_existing:
            print(f"[{i}/{len(grid)}] {name}: finished, skipped")
            continue
        conf = load_config(config, list(extra) + overrides)
        run = RunDir(path)  # raises on a finished run without --skip-existing
        ms = load_movielens(conf.data.root)
        subset = (conf.data.train_fraction, conf.seed) if conf.data.train_fraction < 1 else None
        key = (
            conf.data.root,
            tuple(conf.data.poster_views),
            tuple(conf.data.intro_views),
            tuple(conf.model.prior),
            tuple(conf.data.poster_sets),
            tuple(conf.data.intro_sets),
            ocr_config(conf.data).key(),  # the same key the feature memo and OCR cache use
            subset,
        )
        if key not in features_cache:
            features_cache[key] = load_features(ms, conf, progress, memo=blocks)
        feats = features_cache[key]
        # An interrupted grid point is resumed from its training state.
        result, rec = train_and_record(
            run,
            conf,
            ms,
            feats,
            progress,
            {"overrides": labels, "config_overrides": overrides, "kind": "sweep"},
            resume=True,
        )
        m = rec["metrics"]
        print(
            f"[{i}/{len(grid)}] {name}: official {m['official']['acc_mean']:.4f}  "
            f"heldout {m['heldout']['acc_mean']:.4f}  ({result.seconds:.0f}s)",
            flush=True,
        )
    build_table(out)
    return out


def collect(runs: str | Path) -> list[dict]:
    """One row per finished run: its overrides and the COLUMNS metrics."""
    rows = []
    for mfile in sorted(Path(runs).glob("*/metrics.json")):
        if not (mfile.parent / "COMPLETE").exists():
            continue
        rec = json.loads(mfile.read_text())
        row = {
            "run": mfile.parent.name,
            "commit": commit_label(rec),
            "train_seconds": _num(rec.get("train_seconds")),
            "val_acc": _num(rec.get("val_acc")),
        }
        if rec.get("cv"):  # k-fold runs: the mean over folds (val_acc is the same number)
            row["cv_acc"] = _num(rec["cv"]["cv_acc"])
        for o in rec.get("overrides", []):
            k, v = o.split("=", 1)
            row[k] = v
        for col, block, key in COLUMNS:
            row[col] = _num(rec["metrics"].get(block, {}).get(key))
        rows.append(row)
    return rows


def commit_label(record: dict) -> str:
    """``<sha>``, ``<sha>+dirty`` (uncommitted changes) or ``<sha>?`` (recorded
    before runs noted the dirty flag) of the code that produced a run."""
    sha = record.get("git_sha", "unknown")
    dirty = record.get("git_dirty", "missing")
    return sha + ("?" if dirty == "missing" or dirty is None else "+dirty" if dirty else "")


def mean_sd(values, digits: int = 3) -> str:
    """``mean ± sample std (ddof=1)``, the one ± convention of every table; a
    single value is shown alone."""
    v = np.asarray(values, dtype=float)
    if len(v) == 1:
        return f"{v[0]:.{digits}f}"
    return f"{v.mean():.{digits}f} ± {v.std(ddof=1):.{digits}f}"


SD_NOTE = "± = sample standard deviation (ddof = 1) over seeds."


def build_table(runs: str | Path) -> str:
    """Write ``results.csv`` (one row per run) and ``results.md`` (mean ± sample std over
    seeds, with the commits the rows come from)."""
    runs = Path(runs)
    rows = collect(runs)
    if not rows:
        raise FileNotFoundError(
            f"{runs}: no finished runs (folders with metrics.json and COMPLETE)"
        )
    keys = list(dict.fromkeys(k for r in rows for k in r))
    lines = [",".join(keys)] + [",".join(str(r.get(k, "")) for k in keys) for r in rows]
    atomic_write_text(runs / "results.csv", "\n".join(lines) + "\n")
    # Group over seeds.
    measured = {"run", "commit", "train_seconds", "val_acc", "cv_acc", "seed"} | {
        c for c, _, _ in COLUMNS
    }
    factors = [k for k in keys if k not in measured]
    groups: dict = {}
    for r in rows:
        groups.setdefault(tuple(r.get(f, "") for f in factors), []).append(r)
    cv = any("cv_acc" in r for r in rows)
    show = [
        "cv_acc" if cv else "val_acc",
        "official_mean",
        "train_mean",
        "heldout_dim0",
        "heldout_dim1",
        "heldout_mean",
        "heldout_R@1",
        "heldout_R@10",
    ]
    head = factors + ["seeds"] + show + ["train_s", "commit"]
    md = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]

    def order(item):  # numeric factors sort as numbers
        return [(0, float(v), "") if _is_number(v) else (1, 0.0, str(v)) for v in item[0]]

    for g, rs in sorted(groups.items(), key=order):
        cells = list(g) + [str(len(rs))]
        for c in show:
            v = np.array([r.get(c, float("nan")) for r in rs], dtype=float)
            cells.append("—" if np.isnan(v).all() else mean_sd(v))
        cells.append(f"{np.mean([r['train_seconds'] for r in rs]):.0f}")
        cells.append(", ".join(sorted({r["commit"] for r in rs})))
        md.append("| " + " | ".join(cells) + " |")
    commits = sorted({r["commit"] for r in rows})
    unsure = " (`?`: recorded before runs noted uncommitted changes, so the code may differ from that commit)"
    note = SD_NOTE + (
        f" Rows come from {len(commits)} commits, see column `commit`"
        if len(commits) > 1
        else f" All rows: commit {commits[0]}"
    )
    note += (unsure if any(c.endswith("?") for c in commits) else "") + "."
    table = "\n".join(md) + "\n\n" + note
    atomic_write_text(runs / "results.md", table + "\n")
    _plot(runs, groups, factors)
    return table


def _num(v) -> float:
    """A metric from JSON: null (NaN written as strict JSON) or missing -> NaN."""
    return float("nan") if v is None else float(v)


def _is_number(v) -> bool:
    try:
        float(v)
        return True
    except (TypeError, ValueError):
        return False


def _plot(runs: Path, groups: dict, factors: list[str]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [
        ", ".join(f"{f.split('.')[-1]}={v}" for f, v in zip(factors, g)) or "base" for g in groups
    ]
    fig, ax = plt.subplots(figsize=(max(5, 0.9 * len(groups) + 2), 4))
    x = np.arange(len(groups))
    for off, (col, name) in zip(
        (-0.2, 0.2), (("official_mean", "official"), ("heldout_mean", "held-out"))
    ):
        vals = [np.array([r[col] for r in rs], float) for rs in groups.values()]
        err = [v.std(ddof=1) if len(v) > 1 else 0.0 for v in vals]
        ax.bar(x + off, [v.mean() for v in vals], 0.4, yerr=err, label=name, capsize=3)
    ax.axhline(0.05, color="grey", ls=":", label="chance")
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("get_acc @ 0.05 (mean of dims; bars: sample std over seeds)")
    ax.set_title(runs.name)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(runs / "results.png", dpi=120)
    plt.close(fig)
