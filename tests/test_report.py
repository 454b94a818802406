"""The HTML report, opened in a real headless Chromium."""

import json
import re
import shutil
import subprocess

import numpy as np
import pytest
from PIL import Image

from gmatch.cli import main

FAST = [
    "data.poster_views=[image:efficientnet_lite0]",
    "data.intro_views=[text:minilm]",
    "model.prior=[ocr:chars=text:chars@4]",
    "model.dim=32",
    "train.steps=40",
    "train.folds=1",
    "train.eval_every=20",
    "train.episode_sizes=[32]",
    "train.warmup=5",
    "train.val_fraction=0.3",
]

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def report_run(tmp_path_factory, cache_dir):
    from conftest import make_folder

    folder = make_folder(tmp_path_factory.mktemp("rep") / "d", n=100, n_train=66, ocr_seeds=True)
    out = tmp_path_factory.mktemp("runs") / "r"
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                "--out",
                str(out),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                *FAST,
            ]
        )
        == 0
    )
    assert main(["report", str(out), "--query", "Toy Story"]) == 0
    return out


def test_report_files(report_run):
    html = (report_run / "report.html").read_text()
    assert "<table id='metrics'>" in html and "Toy Story (1995)" in html
    assert "class='hit'" in html or "class='query grid'" in html
    for name in ("acc_vs_ratio.png", "heatmap.png", "recall_at_k.png", "curves.png", "top5.csv"):
        assert (report_run / name).stat().st_size > 0, name
    lines = (report_run / "top5.csv").read_text().splitlines()
    assert len(lines) == 1 + 2 * 100 * 5  # header + 5 per query, both directions
    assert "src='http" not in html  # self-contained: opens offline


def test_report_in_headless_chromium(report_run, tmp_path):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    url = (report_run / "report.html").resolve().as_uri()
    flags = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert 'id="metrics"' in dom.stdout and 'class="query grid"' in dom.stdout
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    shot = tmp_path / "shot.png"
    subprocess.run(
        [*flags, f"--screenshot={shot}", "--window-size=1100,1600", url],
        capture_output=True,
        timeout=120,
        check=True,
    )
    px = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert px.std() > 20  # not blank: text, posters and plots are drawn


def test_headline_puts_heldout_first_with_baselines_and_intervals(report_run):
    import re

    page = (report_run / "report.html").read_text()
    table = page[
        page.index("<table id='metrics'>") : page.index(
            "</table>", page.index("<table id='metrics'>")
        )
    ]
    labels = re.findall(r"<tr(?: class='baseline')?><th>([^<]+)</th><td>", table)
    assert labels[0].startswith("held-out") and any(
        lab.startswith("official: all movies, including") for lab in labels
    )
    assert labels.index("held-out: chance (random D)") < labels.index(
        next(lab for lab in labels if lab.startswith("official"))
    )
    assert "held-out: the model's zero-shot priors alone, untrained" in labels
    # The chance row of the official block: k / n with n = 100, k = 5.
    assert "<th>official: chance (random D)</th><td>100</td><td>5</td><td>0.050</td>" in table
    mean, lo, hi = map(float, re.search(r"<b>([\d.]+)</b> \[([\d.]+), ([\d.]+)\]", table).groups())
    assert lo <= mean <= hi and hi - lo > 0


def test_bootstrap_interval_covers_the_estimate_and_shrinks_with_n():
    import torch

    from gmatch.metrics import bootstrap_acc, get_acc

    widths = []
    for n in (100, 1600):
        g = torch.Generator().manual_seed(n)
        D = torch.rand(n, n, generator=g) - 0.3 * torch.eye(n)
        ci = bootstrap_acc(D)
        for dim in (0, 1):
            lo, hi = ci[f"acc_dim{dim}"]
            assert lo <= get_acc(D, 0.05, dim) <= hi
        widths.append(ci["acc_mean"][1] - ci["acc_mean"][0])
    assert widths[1] < 0.5 * widths[0]  # ~1/sqrt(n)


def _chromium(tmp_path, url, shot=None):
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip("chromium not installed (apt-get install chromium); .ci/run installs it")
    flags = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(
        [*flags, "--enable-logging=stderr", "--v=0", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=120,
    )
    console = [line for line in dom.stderr.splitlines() if "CONSOLE" in line]
    assert not console, console
    if shot is not None:
        subprocess.run(
            [*flags, f"--screenshot={shot}", "--window-size=1100,1200", url],
            capture_output=True,
            timeout=120,
            check=True,
        )
        assert np.asarray(Image.open(shot).convert("L"), dtype=float).std() > 20  # not blank
    return dom.stdout


def test_curated_grids_and_the_search_box_in_chromium(report_run, tmp_path):
    page = (report_run / "report.html").read_text()
    assert (
        "best held-out poster" in page
        and "worst held-out poster" in page
        and "class='label'>asked" in page
    )
    url = (report_run / "report.html").resolve().as_uri() + "#q=Toy%20Story%20(1995)"
    dom = _chromium(tmp_path, url)
    result = dom[dom.index('<div id="search-out">') :]
    assert (
        '<div class="result"><b>Toy Story (1995)</b>' in result and "true intro at rank" in result
    )
    dom = _chromium(tmp_path, (report_run / "report.html").resolve().as_uri() + "#q=the")
    assert "matches, pick one" in dom  # an ambiguous search lists its matches


def test_ambiguous_query_lists_matches(report_run, capsys):
    assert main(["report", str(report_run), "--query", "the"]) == 2
    err = capsys.readouterr().err
    assert "matches" in err and "pass the id" in err and len(err.strip().splitlines()) == 1


def test_comparison_page(report_run, tmp_path, cache_dir):
    from gmatch.data import load_movielens

    other = tmp_path / "seed1"
    data = json.loads((report_run / "metrics.json").read_text())["data"]
    assert (
        main(
            [
                "train",
                "--data",
                data,
                "--out",
                str(other),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                *FAST,
                "seed=1",
            ]
        )
        == 0
    )
    assert main(["report", str(report_run), str(other), "--out", str(tmp_path / "cmp")]) == 0
    page = (tmp_path / "cmp" / "compare.html").read_text()
    assert "<table id='compare'>" in page and "B − A [paired 95 % CI]" in page
    n_held = len(load_movielens(data).heldout_idx)
    wins = [int(x) for x in re.findall(r"<b>(\d+)</b>", page[page.index("<p id='wins'>") :])[:2]]
    assert sum(wins) <= n_held
    dom = _chromium(
        tmp_path, (tmp_path / "cmp" / "compare.html").resolve().as_uri(), tmp_path / "cmp.png"
    )
    assert 'id="compare"' in dom


def test_report_pdf_has_the_headline_on_page_one_and_a_page_per_section(report_run, monkeypatch):
    """gmatch report --pdf: Chromium prints report.pdf with the print style sheet; its
    first page holds the headline numbers (not the search box), and sections start new
    pages. Control: without Chromium the command fails in one line naming the package."""
    if shutil.which("chromium") is None or shutil.which("pdftotext") is None:
        pytest.skip("needs chromium and poppler-utils (apt-get install chromium poppler-utils)")
    assert main(["report", str(report_run), "--query", "Toy Story", "--pdf"]) == 0
    pdf = report_run / "report.pdf"
    assert pdf.read_bytes()[:5] == b"%PDF-"
    info = subprocess.run(["pdfinfo", str(pdf)], capture_output=True, text=True, check=True)
    pages = int(re.search(r"Pages:\s+(\d+)", info.stdout).group(1))
    html = (report_run / "report.html").read_text()
    assert pages >= html.count("<h2>") - 1  # a page per section at least (search hidden)
    page1 = subprocess.run(
        ["pdftotext", "-f", "1", "-l", "1", "-layout", str(pdf), "-"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    m = json.loads((report_run / "metrics.json").read_text())["metrics"]
    assert "Headline" in page1 and "Search" not in page1
    assert f"{m['official']['acc_dim1']:.3f}" in page1  # the headline numbers, as printed
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert main(["report", str(report_run), "--pdf"]) == 2
