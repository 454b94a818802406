"""The README's wall-clock claims as an artifact: a cold ``make run`` and the CI command
on a fresh clone of the committed HEAD (no venv, no feature cache), timed.

    python -m benchmarks.run --fresh-clone          # both; writes benchmarks/FRESH_CLONE.md
    python -m benchmarks.run --fresh-clone run      # only the cold `make run`

The clone gets ``../shared`` beside it when this checkout has one (as CI does). The
table records the commit, the exit code, what each command printed last (the run's
official / held-out lines, pytest's summary) and the seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
import time
from pathlib import Path

from benchmarks.common import ROOT

COMMANDS = {
    "run": ["make", "run"],
    "test": ["bash", ".ci/run"],
}


def _clone(dest: Path) -> str:
    subprocess.run(["git", "clone", "-q", str(ROOT), str(dest / "main")], check=True)
    shared = ROOT.parent / "shared"
    if shared.is_dir():
        os.symlink(shared, dest / "shared")
    sha = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],
        cwd=dest / "main",
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    return sha


def _tail(text: str) -> str:
    lines = [x for x in text.splitlines() if x.strip()]
    keep = [x for x in lines if re.match(r"(official|heldout)\s", x) or re.search(r"\d+ passed", x)]
    return " / ".join(" ".join(x.split()) for x in (keep or lines[-1:]))[:300]


def bench_fresh_clone(which=("run", "test")) -> str:
    rows = []
    for name in which:
        with tempfile.TemporaryDirectory(prefix="gmatch-fresh-") as tmp:
            sha = _clone(Path(tmp))
            env = {k: v for k, v in os.environ.items() if not k.startswith("VIRTUAL_ENV")}
            env["CI"] = "true"
            t = time.perf_counter()
            done = subprocess.run(
                COMMANDS[name], cwd=Path(tmp) / "main", env=env, capture_output=True, text=True
            )
            seconds = time.perf_counter() - t
            rows.append((name, sha, done.returncode, seconds, _tail(done.stdout + done.stderr)))
    lines = [
        "| command on a fresh clone | commit | exit | wall time | last lines |",
        "|---|---|---|---|---|",
    ]
    for name, sha, rc, seconds, tail in rows:
        cmd = " ".join(COMMANDS[name])
        lines.append(
            f"| `{cmd}` | {sha} | {rc} | {seconds / 60:.0f} min {seconds % 60:.0f} s | {tail} |"
        )
    return (
        "Each command on its own fresh `git clone` of HEAD (no `.venv`, no `cache/`), "
        "`CI=true`, 2 cores, nothing else running.\n\n" + "\n".join(lines) + "\n"
    )
