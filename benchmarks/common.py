"""What every benchmark suite shares: paths, timing, peak memory, and the table writer.

A suite returns either rows ``{"what", "value", "reference", "note"}`` (a measurement and
its naive reference, measured in the same run: :func:`rows_table` adds the ratio) or a
markdown body of its own; :func:`write_report` heads it with the command, date, wall
time, commit and machine, prints it and writes it atomically.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from gmatch.io import atomic_write_text
from gmatch.runs import git_state
from gmatch.sweep import commit_label

__all__ = ["ROOT", "DATA", "CKPT", "timeit", "rss_mb", "PeakRSS", "rows_table", "write_report"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "movielens"
CKPT = ROOT / "checkpoints" / "default.pt"


def timeit(fn, repeat: int = 1) -> float:
    """Best wall time of ``repeat`` calls of ``fn``, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread; ``peak - base`` is what
    the measured block added on top of what was already resident."""

    def __enter__(self):
        self.base = self.peak = rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, rss_mb())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_mb())


def rows_table(rows: list[dict], digits: int = 3) -> str:
    """Rows as a markdown table: value, its naive reference and their ratio."""
    lines = [
        "| measurement | gmatch | naive reference | ratio | note |",
        "|---|---|---|---|---|",
    ]
    for r in rows:
        ratio = r["value"] / r["reference"] if r["reference"] == r["reference"] else float("nan")
        lines.append(
            f"| {r['what']} | {r['value']:.{digits}f} | {r['reference']:.{digits}f} | "
            f"{ratio:.2f} | {r['note']} |"
        )
    return "\n".join(lines) + "\n"


def write_report(
    path: Path, title: str, command: str, body: str, seconds: float, note: str = ""
) -> str:
    """Head ``body`` with what produced it, print it, write it to ``path`` (atomically)."""
    text = (
        f"# gmatch benchmarks: {title}\n\nCommand: `{command}` "
        f"({time.strftime('%Y-%m-%d')}, {seconds:.0f} s; commit {commit_label(git_state())}; "
        f"{os.cpu_count()} cores{note}).\n\n{body}"
    )
    print(text)
    atomic_write_text(path, text)
    return text
