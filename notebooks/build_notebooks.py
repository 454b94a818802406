# ruff: noqa: E501 - the notebooks' source lines live in strings here
"""Build (and with --execute, run) the course notebooks from this file, so their code is
reviewed as Python and their committed outputs come from one real run.

    python notebooks/build_notebooks.py              # write the .ipynb files, no outputs
    python notebooks/build_notebooks.py --execute    # ... and run them top to bottom (nbclient)

`make notebooks` does the second. tests/test_notebooks.py executes them again and checks
that their key numbers equal the committed outputs.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent

SETUP = """\
import json, subprocess, time, warnings
from pathlib import Path

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm without ipywidgets

import numpy as np
import torch

import gmatch

ROOT = Path.cwd().parent if (Path.cwd().parent / "gmatch").is_dir() else Path.cwd()
sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "gmatch", "notebooks/build_notebooks.py"],
                            cwd=ROOT, capture_output=True, text=True).stdout.strip())
print(f"gmatch {gmatch.__version__}, commit {sha}{' +dirty' if dirty else ''}, torch {torch.__version__}")
t_start = time.time()
CACHE = ROOT / "cache"  # the feature cache `make run` fills (content-keyed; shared)
"""

WALKTHROUGH = [
    new_markdown_cell(
        "# gmatch: course walkthrough\n\n"
        "Cross-modal alignment on the course data: match each of the 2938 movie posters to its "
        "plot intro (and back). This notebook is the course submission's shape: it runs top to "
        "bottom on 2 CPU cores in a few minutes, loads the shipped model, retrains the default, "
        "computes the distance matrix **D** and the official metric, and answers the four "
        "analysis questions with numbers from this run.\n\n"
        "Rebuild and rerun: `python notebooks/build_notebooks.py --execute` (or `make notebooks`)."
    ),
    new_code_cell(SETUP),
    new_markdown_cell(
        "## 1. Data\n`train.txt` holds positions into the movies sorted by id; "
        "the official test set is all 2938 movies, the 1176 others are held out."
    ),
    new_code_cell(
        'movies = gmatch.load_movielens(ROOT / "data" / "movielens")\n'
        "assert len(movies) == 2938\n"
        'print(f"{len(movies)} movies, {len(movies.train_idx)} training pairs, '
        '{len(movies.heldout_idx)} held out")\n'
        'print(movies.titles[0], "|", movies.intros[0][:120], "...")'
    ),
    new_markdown_cell(
        "## 2. The shipped model and D\nFeatures come from the on-disk caches (the OCR text and "
        "mpnet rows ship with the repo; EfficientNet features are computed once, ~40 s). "
        "`D[i, j]` is the distance of poster *i* to intro *j*; the true pairs are the diagonal."
    ),
    new_code_cell(
        "t = time.time()\n"
        'model = gmatch.load_checkpoint(ROOT / "checkpoints" / "default.pt")\n'
        "D = model.distance(movies, CACHE)\n"
        'print(f"D: {tuple(D.shape)}, {D.dtype}, computed in {time.time() - t:.1f} s")\n'
        'print("reader:", model.config.data.ocr_model, "| layers:", model.config.model.n_layers, '
        '"| folds:", model.config.train.folds)'
    ),
    new_markdown_cell(
        "## 3. The official metric, both dims\nThe course's loop, literally, beside gmatch's "
        "vectorised `get_acc` (ties count against the query; identical when nothing ties)."
    ),
    new_code_cell(
        "def get_acc_course(D, ratio=0.05, dim=1):  # the SPEC's loop\n"
        "    N = len(D); k = int(ratio * N)\n"
        "    _, topk = D.topk(k, dim=dim, largest=False)\n"
        "    if dim == 0:\n"
        "        topk = topk.T\n"
        "    return float(np.mean([i in topk[i] for i in range(N)]))\n\n"
        "acc = {}\n"
        "for dim in (0, 1):\n"
        "    acc[dim] = gmatch.get_acc(D, 0.05, dim)\n"
        "    assert acc[dim] == get_acc_course(D, 0.05, dim)\n"
        'print(f"official: acc1 (dim 0, intro -> poster) = {acc[0]:.4f}, acc2 (dim 1, poster -> intro) = {acc[1]:.4f}")\n'
        'print(f"course score 10 * min(acc1 + acc2, 1.5) = {10 * min(acc[0] + acc[1], 1.5):.2f}")'
    ),
    new_markdown_cell(
        "## 4. Held-out beside official\n60 % of the official set are training pairs, so the "
        "official number mostly measures fit. The 1176 held-out movies, scored among themselves "
        "(k = 58, chance 0.05), measure transfer to movies the model never saw paired."
    ),
    new_code_cell(
        "m = model.metrics(movies, D)\n"
        'for block in ("official", "train", "heldout"):\n'
        "    b = m[block]\n"
        "    print(f\"{block:9s} n={b['n']:5d} k={b['k']:4d}  dim0 {b['acc_dim0']:.4f}  dim1 {b['acc_dim1']:.4f}  \"\n"
        "          f\"mean {b['acc_mean']:.4f}  R@1 {b['poster_to_intro/R@1']:.4f}\")"
    ),
    new_markdown_cell(
        "## 5. Retrain (timed)\nOne model of the default recipe, trained here from the cached "
        "features on the training pairs only (validation slice + refit: `train.folds=1`; the "
        "shipped checkpoint is the default's 5 fold models' step and 5 refits averaged, `make run` "
        "trains it)."
    ),
    new_code_cell(
        "t = time.time()\n"
        'run = gmatch.fit(["train.folds=1", f"data.cache_dir={CACHE}"], data=ROOT / "data" / "movielens")\n'
        "train_seconds = time.time() - t\n"
        "r = run.metrics\n"
        "print(f\"trained in {train_seconds:.0f} s (best step {run.best_step}): official {r['official']['acc_mean']:.4f}, \"\n"
        "      f\"held-out {r['heldout']['acc_mean']:.4f}\")"
    ),
    new_markdown_cell(
        "## 6. Top-k examples\nA held-out poster whose own intro is its nearest: its top-5 "
        "intros, and that intro's nearest posters (green: the true partner)."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "from PIL import Image\n\n"
        "def show_posters(indices, titles, marks):\n"
        "    fig, axes = plt.subplots(1, len(indices), figsize=(2 * len(indices), 3.2), squeeze=False)\n"
        "    for ax, i, t, ok in zip(axes[0], indices, titles, marks):\n"
        "        ax.imshow(Image.open(movies.poster_paths[i])); ax.set_xticks([]); ax.set_yticks([])\n"
        "        ax.set_title(t[:22], fontsize=8, color='green' if ok else 'black')\n"
        "    plt.tight_layout(); plt.show()\n\n"
        "held_all = movies.heldout_idx\n"
        "from gmatch.metrics import true_ranks\n"
        "rank_all = true_ranks(D, 1)  # 0 = the true intro is the nearest of all 2938\n"
        "named = [i for i in held_all if rank_all[i] == 0 and movies.titles[i].startswith(('Casablanca', 'Toy Story', 'Heat', 'Jumanji'))]\n"
        "q = int(named[0] if named else next(i for i in held_all if rank_all[i] == 0))\n"
        'print("query poster:", movies.titles[q])\n'
        "show_posters([q], [movies.titles[q]], [False])\n"
        "for row in gmatch.topk(D, movies, q, k=5):\n"
        '    mark = "✔" if row["correct"] else " "\n'
        "    print(f\"{mark} {row['rank']}. {row['title']}  (d={row['distance']:.2f}, {row['genres']})  {movies.intros[row['index']][:90]}...\")\n"
        'rows = gmatch.topk(D, movies, q, k=5, side="intro")\n'
        'print("\\nintro of", movies.titles[q], "-> nearest posters:")\n'
        'show_posters([r["index"] for r in rows], [r["title"] for r in rows], [r["correct"] for r in rows])'
    ),
    new_markdown_cell(
        "## 7. Analysis (Task 3, Step 2)\n"
        "**Q1. Is poster content correlated with intro content?** Yes, measurably: on the held-out "
        "movies the true intro is in a poster's top 5 % far above chance (0.05), and the share "
        "comes mostly from the text printed on the poster (title, tagline, credits) matched to the "
        "intro; pixels alone carry little (see README: 0.185 held-out for a pixels-only model). "
        "The numbers below split it."
    ),
    new_code_cell(
        "from gmatch.evaluate import split_metrics\n"
        "from gmatch.metrics import true_ranks\n\n"
        "held = movies.heldout_idx\n"
        "feats = model.features(movies, CACHE)\n"
        "with torch.inference_mode():\n"
        "    inp = feats.inputs()\n"
        '    S_text = model.matcher.prior_logits(*(inp[k] for k in ("views0", "valid0", "views1", "valid1", "lexical")))\n'
        "text_only = gmatch.evaluate_distance(-S_text, held, allow_constant=True)\n"
        "print(f\"held-out, the untrained text priors alone (OCR text vs intro): {text_only['acc_mean']:.4f}\")\n"
        "print(f\"held-out, the trained model (text priors + image + learned heads): {m['heldout']['acc_mean']:.4f}\")\n"
        "sub = D[held][:, held]\n"
        "k = int(0.05 * len(held))\n"
        "hits = true_ranks(sub, 1) < k\n"
        "from gmatch.features import poster_texts, ocr_config\n"
        "ocr = poster_texts(movies, CACHE, False, segment=True, ocr=ocr_config(model.config.data))\n"
        "words = np.array([len(ocr[i].split()) for i in held])\n"
        'for name, mask in (("no text read", words == 0), ("1-3 words", (words >= 1) & (words <= 3)), ("4+ words", words >= 4)):\n'
        "    print(f\"  posters with {name:12s}: n={mask.sum():4d}  hit rate {hits[mask].mean() if mask.any() else float('nan'):.3f}\")"
    ),
    new_markdown_cell(
        "**Q2. Do the top-k neighbours share semantics, theme, style or genre?** Genre is the "
        "label we have: the mean genre Jaccard between a held-out poster's movie and the movies "
        "of its top-10 intros, against random movies; then the hit rate per genre."
    ),
    new_code_cell(
        "from gmatch.report import genre_overlap, wilson\n\n"
        "g = genre_overlap(D, movies, held, k=10)\n"
        "print(f\"genre Jaccard with the top-10 intros' movies: {g['topk_jaccard']:.3f}  vs random movies: {g['random_jaccard']:.3f}\")\n"
        "by_genre = {}\n"
        "for h, i in zip(hits, held):\n"
        "    for genre in movies.genres[i]:\n"
        "        by_genre.setdefault(genre, []).append(h)\n"
        'print(f"hit rate per genre (held-out, k = {k} of {len(held)}; chance {k / len(held):.3f}):")\n'
        "for genre, v in sorted(by_genre.items(), key=lambda x: -np.mean(x[1])):\n"
        "    if len(v) >= 30:\n"
        "        lo, hi = wilson(int(np.sum(v)), len(v))\n"
        '        print(f"  {genre:12s} n={len(v):4d}  {np.mean(v):.3f}  [{lo:.3f}, {hi:.3f}]")'
    ),
    new_markdown_cell(
        "**Shared theme, by example:** a held-out poster whose true intro is *not* in its top 5, "
        "and the intros it is matched to instead: wrong movies, often the same kind of story."
    ),
    new_code_cell(
        "miss = [i for i, h in zip(held, true_ranks(sub, 1)) if h >= 5]\n"
        "q2 = int(miss[len(miss) // 3])\n"
        'print("poster:", movies.titles[q2], "|", "|".join(movies.genres[q2]))\n'
        'print("its intro:", movies.intros[q2][:160])\n'
        "for row in gmatch.topk(D, movies, q2, k=5):\n"
        "    print(f\"  {row['rank']}. {row['title']} ({row['genres']}): {movies.intros[row['index']][:110]}\")"
    ),
    new_markdown_cell(
        "**Q3. Which downstream tasks could such aligned features serve?** Poster ↔ synopsis "
        "retrieval for catalogue search (find a film from a half-remembered plot, or check that "
        "a poster and a blurb belong together); metadata repair (flag posters attached to the "
        "wrong movie: a true pair ranked far down is a candidate error); cold-start "
        "recommendation from content (posters and intros in one space give item neighbours for "
        "films without ratings); genre / theme tagging from the neighbours' labels (Q2 shows "
        "neighbours share genre well above chance); and OCR-aware poster analysis (what text a "
        "poster shows, and whether it names the film).\n\n"
        "## 8. One-to-one assignment (an analysis, never the official number)\n"
        "Hungarian and Sinkhorn use every test movie at once, so they are reported apart from "
        "`get_acc` on the raw D."
    ),
    new_code_cell(
        "from gmatch.assignment import hungarian, sinkhorn\n\n"
        "perm = hungarian(D[held][:, held])\n"
        'print(f"held-out: share of posters whose Hungarian partner is their intro: {float((perm == torch.arange(len(held))).float().mean()):.4f}")\n'
        "Dn = -sinkhorn(-D[held][:, held].double(), 20, 8.0)\n"
        "print(f\"held-out get_acc after Sinkhorn (tau 8) over all held-out movies: {gmatch.evaluate_distance(Dn.float())['acc_mean']:.4f} "
        "(raw: {m['heldout']['acc_mean']:.4f})\")"
    ),
    new_markdown_cell(
        "## Key numbers\n`tests/test_notebooks.py` reruns this notebook and "
        "compares these with the committed outputs."
    ),
    new_code_cell(
        "key = {\n"
        '    "n_movies": len(movies),\n'
        '    "official_dim0": round(acc[0], 4), "official_dim1": round(acc[1], 4),\n'
        '    "heldout_mean": round(m["heldout"]["acc_mean"], 4),\n'
        '    "text_prior_heldout": round(text_only["acc_mean"], 4),\n'
        '    "genre_jaccard_top10": round(g["topk_jaccard"], 4),\n'
        '    "retrained_heldout": round(r["heldout"]["acc_mean"], 4),\n'
        "}\n"
        'print("KEY_NUMBERS " + json.dumps(key))\n'
        'print(f"notebook ran in {time.time() - t_start:.0f} s")'
    ),
]

ABLATION = [
    new_markdown_cell(
        "# gmatch: ablations from Python\n\nHow a researcher compares modelling choices in a "
        "notebook: attention depth L and the edge scorer (cosine vs learned MLP), each trained "
        "with `gmatch.fit` on the training pairs and scored on held-out. One seed each for time "
        "(the committed studies use 3 seeds or 5-fold CV: experiments/README.md)."
    ),
    new_code_cell(SETUP),
    new_code_cell(
        'DATA = ROOT / "data" / "movielens"\n'
        'cases = {"L=0 (dual encoder)": ["model.n_layers=0"],\n'
        '         "L=1, cosine edges": ["model.n_layers=1", "model.edge=cosine"],\n'
        '         "L=1, MLP edges": ["model.n_layers=1", "model.edge=mlp"]}\n'
        "results = {}\n"
        "for name, overrides in cases.items():\n"
        "    t = time.time()\n"
        '    run = gmatch.fit(["train.folds=1", "train.steps=150", f"data.cache_dir={CACHE}", *overrides], data=DATA)\n'
        '    results[name] = (run.metrics["official"]["acc_mean"], run.metrics["heldout"]["acc_mean"], time.time() - t)\n'
        '    print(f"{name:20s} official {results[name][0]:.4f}  held-out {results[name][1]:.4f}  ({results[name][2]:.0f} s)")'
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n\n"
        "names = list(results)\n"
        "x = np.arange(len(names))\n"
        "fig, ax = plt.subplots(figsize=(6, 3))\n"
        'ax.bar(x - 0.2, [results[n][0] for n in names], 0.4, label="official (all 2938)")\n'
        'ax.bar(x + 0.2, [results[n][1] for n in names], 0.4, label="held-out (1176)")\n'
        'ax.axhline(0.05, color="gray", ls=":", label="chance")\n'
        'ax.set_xticks(x, names, fontsize=8); ax.set_ylabel("get_acc, mean of dims"); ax.legend(fontsize=7)\n'
        "plt.tight_layout(); plt.show()\n"
        "key = {n: round(results[n][1], 4) for n in names}\n"
        'print("KEY_NUMBERS " + json.dumps(key))\n'
        'print(f"notebook ran in {time.time() - t_start:.0f} s")'
    ),
]

NOTEBOOKS = {"course_walkthrough.ipynb": WALKTHROUGH, "ablation.ipynb": ABLATION}


def build(name: str) -> nbformat.NotebookNode:
    nb = new_notebook(cells=[nbformat.from_dict(c) for c in NOTEBOOKS[name]])
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    return nb


def execute(
    nb: nbformat.NotebookNode, cwd: Path = HERE, timeout: int = 900
) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}
    ).execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--execute", action="store_true")
    p.add_argument("--only", choices=sorted(NOTEBOOKS))
    args = p.parse_args(argv)
    for name in [args.only] if args.only else NOTEBOOKS:
        nb = build(name)
        if args.execute:
            t = time.time()
            execute(nb)
            print(f"{name}: executed in {time.time() - t:.0f} s")
        nbformat.write(nb, HERE / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())
