"""``gmatch report RUN --pdf``: the HTML report printed to ``report.pdf`` by headless
Chromium (``--print-to-pdf``), with the report's print style sheet (``@media print`` in
gmatch.report.STYLE: no search box, a page per section, the headline table on page 1)."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from gmatch.io import clean_stale_temp_files

__all__ = ["PDFError", "chromium", "render_pdf"]


class PDFError(RuntimeError):
    """The PDF cannot be rendered here; the message says what to install."""


def chromium() -> str:
    """The Chromium executable, or a PDFError naming the package to install."""
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        raise PDFError(
            "--pdf needs headless Chromium: install it (Debian/Ubuntu: `apt-get install "
            "chromium`), or open report.html in a browser and print it"
        )
    return exe


def render_pdf(
    html_path: str | Path, pdf_path: str | Path | None = None, timeout: float = 180
) -> Path:
    """Print ``html_path`` to ``pdf_path`` (default: beside it, ``report.pdf``); the file
    appears only once Chromium has written it completely."""
    html_path = Path(html_path).resolve()
    out = Path(pdf_path) if pdf_path else html_path.with_suffix(".pdf")
    clean_stale_temp_files(out)
    with tempfile.TemporaryDirectory() as profile:
        tmp = out.with_name(f".{out.name}.tmp.pdf")
        cmd = [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--no-pdf-header-footer",
            f"--user-data-dir={profile}",
            f"--print-to-pdf={tmp}",
            html_path.as_uri(),
        ]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            tmp.unlink(missing_ok=True)
            raise PDFError(
                f"{html_path}: Chromium did not print it within {timeout:.0f} s"
            ) from None
        if done.returncode != 0 or not tmp.exists() or tmp.stat().st_size == 0:
            tmp.unlink(missing_ok=True)
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise PDFError(f"{html_path}: Chromium could not print it ({last})")
        tmp.replace(out)
    return out
