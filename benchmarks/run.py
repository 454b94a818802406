"""Speed and memory benchmarks; prints a table and writes benchmarks/RESULTS.md.

    python -m benchmarks.run            # everything (about 10 minutes on 2 cores)
    python -m benchmarks.run --quick    # smaller N, fewer items

Every timing has a naive reference measured in the same run. Each inference
measurement runs in its own subprocess so its peak RSS is its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from gmatch.runs import git_state
from gmatch.sweep import commit_label

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "movielens"
CKPT = ROOT / "checkpoints" / "default.pt"


def _timeit(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class PeakRSS:
    """Samples this process's RSS every 2 ms in a thread; ``peak - base`` is what
    the measured block added on top of what was already resident."""

    def __enter__(self):
        import threading

        self.base = self.peak = _rss_mb()
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self.peak = max(self.peak, _rss_mb())
                time.sleep(0.002)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, _rss_mb())


# ---------------------------------------------------------------- extraction
def bench_extraction(n: int) -> list[dict]:
    from gmatch.data import load_movielens
    from gmatch.encoders.image import EfficientNetLite0Encoder, load_image
    from gmatch.encoders.text import SentenceTransformerEncoder, minilm_path
    from gmatch.features import extract

    ms = load_movielens(DATA).subset(np.arange(n))
    ims = [load_image(p) for p in ms.poster_paths]
    enc = EfficientNetLite0Encoder()
    variants = {"default (torch, micro-batches of 1, channels_last)": enc}
    for name, kw in (
        ("batch 32 in one forward, NCHW", {"micro_batch": 32, "channels_last": False}),
        ("batch 32 in one forward, channels_last", {"micro_batch": 32, "channels_last": True}),
        ("micro-batches of 1, NCHW", {"channels_last": False}),
        ("ONNX Runtime, micro-batches of 1", {"backend": "onnx"}),
        ("ONNX Runtime, batches of 8", {"backend": "onnx", "micro_batch": 8}),
    ):
        v = EfficientNetLite0Encoder(**kw)
        v.model = enc.model
        variants[name] = v

    def naive():  # one poster at a time, autograd on, contiguous NCHW
        with torch.enable_grad():
            for im in ims:
                x = enc.preprocess(im)[None]
                enc.model.forward_head(enc.model.forward_features(x), pre_logits=True)

    for v in variants.values():
        v.encode(
            ims[:4]
        )  # warm-up: the first forward pays for allocations, kernel choice, the ONNX export
    times: dict = {name: [] for name in [*variants, "naive"]}
    for _ in range(
        3
    ):  # interleaved, median of 3: the order of the variants no longer picks the winner
        for name, v in variants.items():
            times[name].append(
                _timeit(lambda v=v: [v.encode(ims[s : s + 32]) for s in range(0, n, 32)])
            )
        times["naive"].append(_timeit(naive))
    slow = float(np.median(times["naive"]))
    # ~0.4 GFLOP per 224 x 329 poster, ~50 GFLOP/s fp32 on 2 cores: about 120 posters/s.
    rows = [
        {
            "what": f"EfficientNet-Lite0 posters/s, {name}",
            "value": n / float(np.median(t)),
            "reference": n / slow,
            "note": f"median of 3, interleaved, preprocessing included; {n / float(np.median(t)) / 120:.2f}× the "
            "~120/s compute estimate; reference: batch 1 with autograd (NCHW)",
        }
        for name, t in times.items()
        if name != "naive"
    ]
    st = SentenceTransformerEncoder(minilm_path())
    texts = ms.intros
    fast = _timeit(lambda: st.encode(texts))
    slow = _timeit(lambda: [st.model.encode([t]) for t in texts])
    rows.append(
        {
            "what": "MiniLM intros/s",
            "value": n / fast,
            "reference": n / slow,
            "note": "batch 64 vs one at a time",
        }
    )
    cache = ROOT / "cache" / "bench"
    extract(ms, "image:efficientnet_lite0", cache, progress=False)
    hit = _timeit(lambda: extract(ms, "image:efficientnet_lite0", cache, progress=False))
    rows.append(
        {
            "what": f"cache hit, {n} posters (s)",
            "value": hit,
            "reference": n / rows[0]["value"],
            "note": "includes hashing the poster files and building the encoder",
        }
    )
    return rows


def bench_ocr(n: int) -> list[dict]:
    from gmatch.data import load_movielens
    from gmatch.encoders import ocr
    from gmatch.encoders.ocr import OCRConfig, clean_ocr

    ms = load_movielens(DATA).subset(np.arange(n))
    rows = []
    for conf, label in (
        (OCRConfig(model="v4"), "default: det 480, no angle classifier"),
        (
            OCRConfig(model="v4", det_limit_side_len=736, use_cls=True, engine="rapidocr"),
            "RapidOCR stock: det 736 + cls",
        ),
    ):
        ocr._read_one((ms.poster_paths[0], conf))  # warm-up
        t = time.perf_counter()
        lines = [ocr._read_one((p, conf)) for p in ms.poster_paths]
        dt = (time.perf_counter() - t) / n
        chars = np.mean([len(clean_ocr(x)) for x in lines])
        rows.append(
            {
                "what": f"OCR s/poster ({label})",
                "value": dt,
                "reference": float("nan"),
                "note": f"{chars:.0f} clean chars/poster, 1 thread",
            }
        )
    return rows


def bench_ocr_recognizer(repeat: int = 5) -> list[dict]:
    """Why gmatch's engine runs one line per recognizer forward: the cost of a forward
    per padded column (a line is 48 px high) at batch 1, 6 (RapidOCR's batch) and 12
    (batching across posters), at widths a poster's lines are padded to; median of
    ``repeat``, 1 thread. Reference: batch 1 at the same width."""
    from gmatch.encoders import ocr
    from gmatch.encoders.ocr import OCRConfig

    session = ocr.ocr_engine(OCRConfig(model="v4")).text_rec.rec.session
    rng = np.random.default_rng(0)
    rows = []
    for width in (320, 640, 1024):
        cost = {}
        for batch in (1, 6, 12):
            x = rng.random((batch, 3, 48, width), dtype=np.float32)
            session(x)  # warm-up
            times = []
            for _ in range(repeat):
                t = time.perf_counter()
                session(x)
                times.append(time.perf_counter() - t)
            cost[batch] = float(np.median(times)) / (batch * width) * 1e6
        for batch, us in cost.items():
            rows.append(
                {
                    "what": f"recognizer forward, width {width}, batch {batch}: us per column",
                    "value": us,
                    "reference": cost[1],
                    "note": f"median of {repeat}, 1 thread; reference: batch 1 at this width",
                }
            )
    return rows


def bench_ocr_levers(
    n: int = 96, repeat: int = 3, n_e2e: int = 480, full: bool = True
) -> list[dict]:
    """OCR levers (issue 18): seconds per poster in one process (1 thread) of RapidOCR
    stock, gmatch's default, the default's settings on RapidOCR's own engine (the
    previous default: same lines, ``OCRConfig(model="v4", engine="rapidocr")``) and variants
    (detector side, recognition padding width), interleaved, median of ``repeat``;
    each variant's confident lines compared with the default's (share of posters read
    identically). Then the end-to-end rate of ``read_posters`` (2 worker processes,
    empty cache, ``n_e2e`` posters) for stock, the previous default, the default and the
    fast setting (``data.ocr_det_side=320 data.ocr_rec_width=96``); with ``full``, the
    previous default and the default end to end on all 2938 course posters too (their
    posters carry more text than the 480-poster slice; ~8 minutes)."""
    import tempfile

    from gmatch.data import load_movielens
    from gmatch.encoders import ocr
    from gmatch.encoders.ocr import OCRConfig, ocr_lines, read_posters

    ms = load_movielens(DATA).subset(np.arange(200, 200 + n))
    stock = "RapidOCR stock (det 736, angle classifier)"
    previous = "det 480, no classifier, RapidOCR's engine (previous default)"
    default = "default (det 480, no classifier, gmatch engine)"
    fast = "det 320, recognition width 96"
    variants = {
        stock: OCRConfig(model="v4", det_limit_side_len=736, use_cls=True, engine="rapidocr"),
        previous: OCRConfig(model="v4", engine="rapidocr"),
        default: OCRConfig(model="v4"),
        "det 480, recognition width 96": OCRConfig(model="v4", rec_width=96),
        "det 384, recognition width 96": OCRConfig(
            model="v4", det_limit_side_len=384, rec_width=96
        ),
        fast: OCRConfig(model="v4", det_limit_side_len=320, rec_width=96),
    }
    times = {k: [] for k in variants}
    out = {}
    for conf in variants.values():
        ocr._read_one((ms.poster_paths[0], conf))  # warm-up (loads the models)
    for _ in range(repeat):
        for name, conf in variants.items():
            t = time.perf_counter()
            out[name] = [ocr._read_one((p, conf)) for p in ms.poster_paths]
            times[name].append((time.perf_counter() - t) / n)
    base = [ocr_lines(x) for x in out[default]]
    rows = []
    for name in variants:
        lines = [ocr_lines(x) for x in out[name]]
        same = np.mean([a == b for a, b in zip(lines, base)])
        raw_same = np.mean([a == b for a, b in zip(out[name], out[default])])
        rows.append(
            {
                "what": f"OCR s/poster, 1 process: {name}",
                "value": float(np.median(times[name])),
                "reference": float(np.median(times[stock])),
                "note": f"{np.mean([len(x) for x in lines]):.2f} confident lines/poster; "
                f"{same:.0%} of posters read as the default does ({raw_same:.0%} with "
                "every raw line and confidence equal); reference: stock",
            }
        )

    def end_to_end(movies, hashes, names):
        """Seconds and raw lines per variant, each from an empty cache."""
        sec, read = {}, {}
        for name in names:
            with tempfile.TemporaryDirectory() as tmp:
                t = time.perf_counter()
                read[name] = read_posters(
                    movies.poster_paths,
                    hashes,
                    Path(tmp) / "c.json",
                    variants[name],
                    workers=2,
                    progress=False,
                )
                sec[name] = time.perf_counter() - t
        return sec, read

    sets = [
        (
            load_movielens(DATA).subset(np.arange(200, 200 + n_e2e)),
            (stock, previous, default, fast),
            stock,
            "stock",
        )
    ]
    if full:
        sets.append((load_movielens(DATA), (previous, default), previous, "previous default"))
    shipped = json.loads((DATA.parent / "ocr" / f"{DATA.name}_rapidocr.json").read_text())
    for movies, names, ref, ref_name in sets:
        hashes = movies.poster_hashes()  # once per set, outside the timed reads
        sec, read = end_to_end(movies, hashes, names)
        count = len(movies)
        for name, s in sec.items():
            note = (
                f"{count / s:.1f} posters/s end to end (pool start and model loading "
                f"included); reference: {ref_name}"
            )
            if name == default:  # the same lines? (raw text and confidence)
                same = sum(a == b for a, b in zip(read[name], read[previous]))
                cached = sum(shipped["items"].get(h) == x for h, x in zip(hashes, read[name]))
                note += (
                    f"; {same}/{count} posters read exactly as the previous default reads them, "
                    f"{cached}/{count} exactly as the shipped cache (data/ocr)"
                )
            rows.append(
                {
                    "what": f"read_posters, {count} new posters, 2 processes: {name} (s)",
                    "value": s,
                    "reference": sec[ref],
                    "note": note,
                }
            )
    return rows


# ---------------------------------------------------------------- training
def bench_train(steps: int = 20) -> list[dict]:
    from gmatch.config import ModelConf
    from gmatch.losses import total_loss
    from gmatch.models import Matcher

    rows = []
    g = torch.Generator().manual_seed(0)
    for label, conf in (
        ("dual encoder (n_layers=0)", ModelConf(n_layers=0)),
        ("matcher (n_layers=1, cosine)", ModelConf(n_layers=1)),
        ("matcher (n_layers=1, mlp edge)", ModelConf(n_layers=1, edge="mlp")),
    ):
        model = Matcher([1280, 384, 256], [384, 256], conf, [(1, 0)])
        opt = torch.optim.AdamW(model.parameters(), 1e-3)
        v0 = [torch.randn(512, d, generator=g) for d in (1280, 384, 256)]
        v1 = [torch.randn(512, d, generator=g) for d in (384, 256)]
        m0, m1 = [torch.ones(512, dtype=torch.bool)] * 3, [torch.ones(512, dtype=torch.bool)] * 2

        def step(model=model, opt=opt, v0=v0, m0=m0, v1=v1, m1=m1):
            loss = total_loss(model(v0, m0, v1, m1, all_layers=True), "ce", 0.5)["total"]
            opt.zero_grad()
            loss.backward()
            opt.step()

        step()
        dt = _timeit(lambda: [step() for _ in range(steps)]) / steps
        rows.append(
            {
                "what": f"train step, 512 pairs, {label} (s)",
                "value": dt,
                "reference": float("nan"),
                "note": "",
            }
        )
    return rows


# ---------------------------------------------------------------- inference
def _synthetic_views(n: int, seed: int = 0, with_lexical: bool = True):
    """Real course features replicated with noise up to n nodes."""
    from gmatch.config import load_config
    from gmatch.data import load_movielens
    from gmatch.features import load_features

    conf = load_config(None, [f"data.cache_dir={ROOT / 'cache'}"])
    ms = load_movielens(DATA)
    feats = load_features(ms, conf, progress=False)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(ms), n) if n > len(ms) else np.arange(n)

    def grow(blocks):
        views = []
        for b in blocks:
            x = b.values[idx]
            if n > len(ms):
                x = x + 0.3 * x.std() * rng.standard_normal(x.shape).astype(np.float32)
            views.append(torch.from_numpy(x))
        return views, [torch.from_numpy(b.valid[idx]) for b in blocks]

    # Lexical (sparse) views: rows replicated as they are.
    lexical = (
        [(a.values[idx], b.values[idx]) for a, b in feats.prior_blocks] if with_lexical else []
    )
    return feats, grow(feats.poster), grow(feats.intro), lexical


def one_inference(n: int, mode: str) -> dict:
    """Run in a subprocess: time and peak RSS of one way of scoring n movies."""
    from gmatch.checkpoint import load_checkpoint
    from gmatch.metrics import evaluate_distance
    from gmatch.stream import streamed_metrics, streamed_ranks

    torch.set_num_threads(2)
    from gmatch.config import merge
    from gmatch.encoders.registry import is_sparse_spec
    from gmatch.models import build_matcher
    from gmatch.priors import lexical_cosine, parse_prior

    label = mode
    trained, conf, ckpt = load_checkpoint(CKPT)
    model, topm, use_lex = trained, None, True
    # Variants built from the checkpoint (its encoders and head; state loaded non-strictly):
    # dense0/stream: attention units dropped; *_nolex: without the lexical prior;
    # stream_sparse1: one seeded (self + cross) unit with top-64 sparse attention.
    changes = {}
    if mode in ("dense0", "stream", "stream_nolex"):
        changes["n_layers"] = 0
    if mode in ("stream_nolex", "stream_sparse1"):
        changes["prior"] = [p for p in conf.model.prior if not is_sparse_spec(parse_prior(p)[0])]
        use_lex = False
    if mode == "stream_sparse1":
        changes["n_layers"], topm = 1, 64
    if changes:
        conf = merge(conf, {"model": changes})
        torch.manual_seed(0)
        model = build_matcher(
            conf.model,
            ckpt["poster_views"],
            ckpt["intro_views"],
            ckpt["poster_dims"],
            ckpt["intro_dims"],
        ).eval()
        model.load_state_dict(
            {k: v for k, v in trained.state_dict().items() if k != "lexical_log_weight"},
            strict=False,
        )
    if mode.startswith("stream"):
        mode = "stream"
    _, (v0, m0), (v1, m1), lexical = _synthetic_views(n, with_lexical=use_lex)
    rss = PeakRSS().__enter__()
    t = time.perf_counter()
    if mode == "stream":
        out = streamed_metrics(
            streamed_ranks(model, v0, m0, v1, m1, chunk=2048, lexical=lexical, topm=topm)
        )
    elif mode == "naive_metric":
        with torch.inference_mode():
            D = model(v0, m0, v1, m1, lexical=[lexical_cosine(A, B) for A, B in lexical])["dist"]
        k = int(0.05 * n)
        _, top = D.topk(k, dim=1, largest=False)
        out = {"acc_dim1": float(np.mean([i in top[i] for i in range(n)]))}  # the SPEC's loop
    else:
        with torch.inference_mode():
            D = model(v0, m0, v1, m1, lexical=[lexical_cosine(A, B) for A, B in lexical])["dist"]
        out = evaluate_distance(D)
    dt = time.perf_counter() - t
    rss.__exit__()
    return {
        "n": n,
        "mode": label,
        "seconds": dt,
        "peak_rss_mb": rss.peak - rss.base,
        "base_rss_mb": rss.base,
        "acc_dim1": out["acc_dim1"],
    }


def bench_inference(ns: list[int], stream_ns: list[int]) -> list[dict]:
    rows = []
    plan = [(n, "dense") for n in ns] + [(n, "naive_metric") for n in ns if n <= 2938]
    plan += [(n, "dense0") for n in ns if n <= 10000] + [(n, "stream") for n in stream_ns]
    plan += [(n, "stream_nolex") for n in stream_ns] + [(n, "stream_sparse1") for n in stream_ns]
    for n, mode in plan:
        res = subprocess.run(
            [sys.executable, "-m", "benchmarks.run", "--one", mode, "--n", str(n)],
            capture_output=True,
            text=True,
            cwd=ROOT,
            timeout=1800,
        )
        if res.returncode != 0:
            rows.append({"n": n, "mode": mode, "error": res.stderr.strip().splitlines()[-1:]})
        else:
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
    return rows


def _fit_exponent(rows, mode):
    pts = [(r["n"], r["seconds"]) for r in rows if r.get("mode") == mode and "seconds" in r]
    if len(pts) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def bench_reading(repeat: int = 3) -> list[dict]:
    """Issue 16's costs: mpnet vs MiniLM encoding (interleaved, median of ``repeat``),
    the max-pooled line prior vs a per-poster loop, and D for the course data."""
    from gmatch.checkpoint import load_checkpoint
    from gmatch.data import load_movielens
    from gmatch.encoders.registry import _minilm, _mpnet
    from gmatch.evaluate import predict_dist
    from gmatch.features import extract, load_features, poster_lines, poster_texts
    from gmatch.metrics import evaluate_distance
    from gmatch.priors import pair_scores
    from gmatch.text import strip_boilerplate

    ms = load_movielens(DATA)
    intros = [strip_boilerplate(t) for t in ms.intros[:256]]
    ocr = [t for t in poster_texts(ms, ROOT / "cache", False, segment=True) if t][:256]
    lines = [x for ls in poster_lines(ms, ROOT / "cache", False) for x in ls][:1024]
    encoders = {"MiniLM": _minilm(None), "mpnet": _mpnet(None)}
    for enc in encoders.values():
        enc.encode(intros[:8])  # load and warm up
    times: dict = {}
    for _ in range(repeat):  # interleaved, so order does not pick the winner
        for name, enc in encoders.items():
            for what, texts in (
                ("intros", intros),
                ("segmented OCR strings", ocr),
                ("OCR lines", lines),
            ):
                t = time.perf_counter()
                enc.encode(texts)
                times.setdefault((what, name), []).append(len(texts) / (time.perf_counter() - t))
    rows = [
        {
            "what": f"mpnet {what}/s",
            "value": float(np.median(times[(what, "mpnet")])),
            "reference": float(np.median(times[(what, "MiniLM")])),
            "note": f"median of {repeat}, interleaved; reference: MiniLM on the same {len(t_)} texts",
        }
        for what, t_ in (("intros", intros), ("segmented OCR strings", ocr), ("OCR lines", lines))
    ]

    a, b = (
        extract(ms, "ocrlines:mpnet", ROOT / "cache", False),
        extract(ms, "text:mpnet", ROOT / "cache", False),
    )

    def loop():  # naive reference: one poster at a time
        x = torch.nn.functional.normalize(torch.from_numpy(a.values), dim=-1)
        y = torch.nn.functional.normalize(torch.from_numpy(b.values), dim=-1)
        out = torch.zeros(len(ms), len(ms))
        for i in range(len(ms)):
            rows_i = x[torch.from_numpy(a.owner == i)]
            if len(rows_i):
                out[i] = (rows_i @ y.T).amax(0)
        return out

    fast = _timeit(lambda: pair_scores(a, b), repeat=repeat)
    slow = _timeit(loop, repeat=1)
    assert torch.allclose(pair_scores(a, b), loop(), atol=1e-5)
    rows.append(
        {
            "what": "line prior ocrlines:mpnet=text:mpnet, N = 2938 (s)",
            "value": fast,
            "reference": slow,
            "note": f"{len(a.values)} lines x 2938 intros, chunked scatter_reduce vs a per-poster loop (equal)",
        }
    )
    model, conf, _ = load_checkpoint(ROOT / "checkpoints" / "default.pt")
    conf.data.cache_dir = str(ROOT / "cache")

    def full():
        feats = load_features(ms, conf, progress=False)  # cached features; priors precomputed here
        return evaluate_distance(predict_dist(model, feats))

    full()
    t_full = _timeit(full, repeat=repeat)
    feats = load_features(ms, conf, progress=False)

    def scores_only():
        feats.priors.clear()  # the lexical and line priors are recomputed each time
        return evaluate_distance(predict_dist(model, feats))

    def naive_metric():  # the same D (priors recomputed too), then the SPEC's Python loop for dim 1 only
        feats.priors.clear()
        D = predict_dist(model, feats)
        k = int(0.05 * len(D))
        top = D.topk(k, dim=1, largest=False).indices
        return np.mean([i in top[i] for i in range(len(D))])

    t_scores = _timeit(scores_only, repeat=repeat)
    rows.append(
        {
            "what": "D + all metrics, N = 2938, default checkpoint (s)",
            "value": t_scores,
            "reference": _timeit(naive_metric, repeat=1),
            "note": "features in memory: lexical and line priors, head, every metric (both dims, R@K, ranks); "
            "reference: the same D and only the SPEC loop for dim 1",
        }
    )
    rows.append(
        {
            "what": "the same from the feature cache on disk (s)",
            "value": t_full,
            "reference": float("nan"),
            "note": "plus hashing 2938 poster files, reading the caches, the TF-IDF transforms",
        }
    )
    return rows


def bench_ray(n: int = 96) -> list[dict]:
    """Extraction of ``n`` new posters (EfficientNet-Lite0 + OCR) and MiniLM on their intros:
    this process (torch on 2 threads, OCR in 2 processes) vs a Ray cluster of 1 and of 2
    node processes (one CPU each; Ray Data actor pools), each from an empty cache. Wall
    time includes starting the actors and loading the models, as a user pays it."""
    import shutil
    import tempfile

    from gmatch.cli import main as gmatch
    from gmatch.distributed import local_cluster

    folder = Path(tempfile.mkdtemp()) / "posters"
    sys.path.insert(0, str(ROOT / "tests"))
    from conftest import make_folder

    make_folder(folder, n=n, n_train=n // 2)
    views = [
        "data.poster_views=[image:efficientnet_lite0,ocr:minilm]",
        "data.intro_views=[text:minilm]",
        "model.prior=[]",
    ]
    times = {}
    for label, nodes in (
        ("this process", 0),
        ("Ray, 1 node process", 1),
        ("Ray, 2 node processes", 2),
    ):
        cache = Path(tempfile.mkdtemp())
        # The cluster starts before the clock and stops after it.
        with local_cluster(nodes, port=6393) if nodes else contextlib.nullcontext() as address:
            extra = ["--ray", address] if nodes else []  # options before the key=value overrides
            t = time.perf_counter()
            gmatch(
                [
                    "features",
                    "--quiet",
                    *extra,
                    "--data",
                    str(folder),
                    f"data.cache_dir={cache}",
                    *views,
                ]
            )
            times[label] = time.perf_counter() - t
        shutil.rmtree(cache)
    base = times["Ray, 1 node process"]
    return [
        {
            "what": f"{label}: {n} new posters, seconds",
            "value": sec,
            "reference": base,
            "note": f"{n / sec:.2f} posters/s end to end; reference: Ray with 1 node process",
        }
        for label, sec in times.items()
    ]


def bench_matcher(repeat: int = 3) -> list[dict]:
    """Issue 17's costs: D for the course data (N = 2938) with the default matcher and
    with the local-node variants of study `transfer` (fresh weights: the cost does not
    depend on them), median of ``repeat``, interleaved; the default is the reference."""
    from gmatch.config import load_config
    from gmatch.data import load_movielens
    from gmatch.evaluate import predict_dist
    from gmatch.features import load_features
    from gmatch.train import new_model

    ms = load_movielens(DATA)
    local = ["data.poster_sets=[ocrlines:mpnet]", "data.intro_sets=[sents:mpnet]"]
    variants = {
        "default (global head + priors, L = 0)": [],
        "+ local graphs, L = 1": [*local, "model.local_layers=1"],
        "+ local graphs with image regions, L = 1": [
            "data.poster_sets=[ocrlines:mpnet,regions:efficientnet_lite0]",
            "data.intro_sets=[sents:mpnet]",
            "model.local_layers=1",
        ],
        "+ local graphs, L = 1, re-ranking top 10 %": [
            *local,
            "model.local_layers=1",
            "model.rerank=0.1",
        ],
    }
    models = {}
    for name, overrides in variants.items():
        conf = load_config(
            None, [f"data.root={DATA}", f"data.cache_dir={ROOT / 'cache'}", *overrides]
        )
        feats = load_features(ms, conf, progress=False)
        models[name] = (new_model(conf, feats).eval(), feats)
    times: dict = {k: [] for k in variants}
    for _ in range(repeat):
        for name, (model, feats) in models.items():
            t = time.perf_counter()
            predict_dist(model, feats)
            times[name].append(time.perf_counter() - t)
    ref = float(np.median(times["default (global head + priors, L = 0)"]))
    return [
        {
            "what": f"D for N = {len(ms)}: {name} (s)",
            "value": float(np.median(times[name])),
            "reference": ref,
            "note": f"median of {repeat}, interleaved; reference: the default",
        }
        for name in variants
    ]


def bench_finetune(n: int = 128, repeat: int = 3) -> list[dict]:
    """One training step's tower cost (forward + backward) for ``n`` posters / intros:
    the tail that ``train.finetune`` trains on cached trunk activations vs the naive
    reference, the whole tower trained from pixels / tokens. Variants interleaved,
    ``repeat`` times each, median."""
    from gmatch.data import load_image, load_movielens
    from gmatch.encoders.registry import build_encoder
    from gmatch.finetune import ImageTail, TextTail, pad_states
    from gmatch.text import strip_boilerplate

    ms = load_movielens(DATA)
    enc = build_encoder("image:efficientnet_lite0")
    x = torch.stack([enc.preprocess(load_image(p)) for p in ms.poster_paths[:n]])
    tails = {k: ImageTail(enc.model, k) for k in (1, 2, 3, 8)}
    inputs = {k: t.trunk(x) for k, t in tails.items()}
    full = tails[8]  # every stage trainable: the trunk is the stem only
    for p_ in full.net.parameters():
        p_.requires_grad_(True)

    def step(fn):
        def run():
            fn().sum().backward()

        return run

    tenc = build_encoder("text:mpnet")
    texts = sorted((strip_boilerplate(t) for t in ms.intros[:n]), key=len)
    ttail = TextTail(tenc.model, 1)
    h, mask = pad_states(ttail.trunk(texts))
    st = tenc.model
    st.train()
    for p_ in st.parameters():
        p_.requires_grad_(True)
    tok = (getattr(st, "preprocess", None) or st.tokenize)(texts)

    variants = {
        **{
            f"image tail, last {k} stage(s)": step(lambda k=k: tails[k](inputs[k]))
            for k in (1, 2, 3)
        },
        "image, whole network from pixels": step(
            lambda: full.net.forward_head(full.net.forward_features(x), pre_logits=True)
        ),
        "text tail, last mpnet layer": step(lambda: ttail(h, mask)),
        "text, whole mpnet from tokens": step(lambda: st(tok)["sentence_embedding"]),
    }
    times = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in variants.items():
            times[name].append(_timeit(fn))
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for name, sec in med.items():
        ref = med[
            "image, whole network from pixels"
            if name.startswith("image")
            else "text, whole mpnet from tokens"
        ]
        rows.append(
            {
                "what": f"{name}: forward + backward, {n} items (s)",
                "value": sec,
                "reference": ref,
                "note": f"{n / sec:.0f} items/s; reference: the whole tower",
            }
        )
    return rows


def _write_md(
    path: Path, title: str, command: str, rows: list[dict], digits: int = 3, note: str = ""
) -> None:
    """Print and write a benchmark table (value, reference, ratio per row)."""
    from gmatch.io import atomic_write_text

    lines = [
        f"# gmatch benchmarks: {title}",
        "",
        f"Command: `{command}` ({time.strftime('%Y-%m-%d')}{note}).",
        "",
        "| measurement | gmatch | reference | ratio | note |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['what']} | {r['value']:.{digits}f} | {r['reference']:.{digits}f} | "
        f"{r['value'] / r['reference']:.2f} | {r['note']} |"
        for r in rows
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    atomic_write_text(path, text)


def _write_text(name: str, title: str, flag: str, bench) -> int:
    """Run a suite that returns its own markdown body; print it and write benchmarks/name."""
    from gmatch.io import atomic_write_text

    t0 = time.time()
    body = bench()
    text = (
        f"# gmatch benchmarks: {title}\n\nCommand: `python -m benchmarks.run {flag}` "
        f"({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s; "
        f"commit {commit_label(git_state())}; "
        f"{os.cpu_count()} cores).\n\n{body}"
    )
    print(text)
    atomic_write_text(ROOT / "benchmarks" / name, text)
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "RESULTS.md"))
    p.add_argument(
        "--reading",
        action="store_true",
        help="only issue 16's rows: mpnet vs MiniLM, the line prior, D (writes benchmarks/READING.md)",
    )
    p.add_argument(
        "--extraction",
        action="store_true",
        help="only the feature-extraction rows (writes benchmarks/EXTRACTION.md)",
    )
    p.add_argument(
        "--ray", action="store_true", help="only the Ray rows (writes benchmarks/RAY.md)"
    )
    p.add_argument(
        "--ocr", action="store_true", help="only the OCR levers (writes benchmarks/OCR.md)"
    )
    p.add_argument(
        "--finetune",
        action="store_true",
        help="only the fine-tuning rows: tower tails vs whole towers (writes benchmarks/FINETUNE.md)",
    )
    p.add_argument(
        "--matcher",
        action="store_true",
        help="only the cost of D per matcher variant (writes benchmarks/MATCHER.md)",
    )
    p.add_argument(
        "--ocr-quality",
        action="store_true",
        help="only the OCR readers' title-word recall and speed (writes benchmarks/OCR_QUALITY.md)",
    )
    p.add_argument(
        "--load",
        action="store_true",
        help="only each stage quiet vs beside a neighbour job (writes benchmarks/LOAD.md)",
    )
    p.add_argument(
        "--fresh-clone",
        nargs="*",
        choices=["run", "test"],
        help="time a cold `make run` and/or the CI command on a fresh clone (benchmarks/FRESH_CLONE.md)",
    )
    args = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.fresh_clone is not None:
        from benchmarks.fresh_clone import bench_fresh_clone

        which = tuple(args.fresh_clone) or ("run", "test")
        return _write_text(
            "FRESH_CLONE.md",
            "fresh-clone wall times",
            "--fresh-clone " + " ".join(which),
            lambda: bench_fresh_clone(which),
        )
    if args.ocr_quality:
        from benchmarks.ocr_quality import bench_ocr_quality

        return _write_text(
            "OCR_QUALITY.md",
            "reading quality of the OCR readers",
            "--ocr-quality",
            bench_ocr_quality,
        )
    if args.load:
        from benchmarks.load import bench_load

        return _write_text("LOAD.md", "speed when the machine is shared", "--load", bench_load)
    if args.one:
        print(json.dumps(one_inference(args.n, args.one)))
        return 0
    torch.set_num_threads(2)
    if args.ocr:
        t0 = time.time()
        _write_md(
            ROOT / "benchmarks" / "OCR.md",
            "poster OCR (issue 18)",
            "python -m benchmarks.run --ocr",
            bench_ocr_levers() + bench_ocr_recognizer(),
            note=f", {time.time() - t0:.0f} s; 2 cores",
        )
        return 0
    if args.matcher:
        t0 = time.time()
        rows = bench_matcher()
        _write_md(
            ROOT / "benchmarks" / "MATCHER.md",
            "the matcher's cost (issue 17)",
            "python -m benchmarks.run --matcher",
            rows,
            note=f", {time.time() - t0:.0f} s; 2 cores, torch threads 2",
        )
        return 0
    if args.finetune:
        t0 = time.time()
        rows = bench_finetune()
        _write_md(
            ROOT / "benchmarks" / "FINETUNE.md",
            "fine-tuning the towers (issue 21)",
            "python -m benchmarks.run --finetune",
            rows,
            note=f", {time.time() - t0:.0f} s; 2 cores, torch threads 2; median of 3, variants interleaved",
        )
        return 0
    if args.reading:
        t0 = time.time()
        rows = bench_reading()
        _write_md(
            ROOT / "benchmarks" / "READING.md",
            "reading posters (issue 16)",
            "python -m benchmarks.run --reading",
            rows,
            note=f", {time.time() - t0:.0f} s; 2 cores, torch threads 2",
        )
        return 0
    if args.ray:
        t0 = time.time()
        rows = bench_ray(96) + bench_ray(384)
        _write_md(
            ROOT / "benchmarks" / "RAY.md",
            "more than one machine (Ray)",
            "python -m benchmarks.run --ray",
            rows,
            digits=1,
            note=f", {time.time() - t0:.0f} s; one 2-core machine, so the node processes share its cores",
        )
        return 0
    if args.extraction:
        t0 = time.time()
        rows = bench_extraction(256)
        lines = [
            "# gmatch benchmarks: feature extraction",
            "",
            f"Command: `python -m benchmarks.run --extraction` ({time.strftime('%Y-%m-%d')}, "
            f"{time.time() - t0:.0f} s). Every variant is warmed up; the EfficientNet variants are then timed "
            "interleaved, three times each (median).",
            "",
            "| measurement | gmatch | naive reference | ratio | note |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['what']} | {r['value']:.3f} | {r['reference']:.3f} | {r['value'] / r['reference']:.2f} | "
            f"{r['note']} |"
            for r in rows
        ]
        from gmatch.io import atomic_write_text

        text = "\n".join(lines) + "\n"
        print(text)
        atomic_write_text(ROOT / "benchmarks" / "EXTRACTION.md", text)
        return 0
    n_items = 64 if args.quick else 256
    ns = [1000, 2938] if args.quick else [1000, 2938, 10000, 30000]
    stream_ns = [2938, 10000] if args.quick else [2938, 10000, 30000, 100000]
    t0 = time.time()
    simple = bench_extraction(n_items) + bench_ocr(8 if args.quick else 24) + bench_train()
    inf = bench_inference(ns, stream_ns)
    lines = [
        "# gmatch benchmarks",
        "",
        f"Command: `python -m benchmarks.run{' --quick' if args.quick else ''}` "
        f"({time.strftime('%Y-%m-%d')}, {time.time() - t0:.0f} s in all).  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads.",
        "",
        "## Throughput (higher is better unless marked s)",
        "",
        "| measurement | gmatch | naive reference | ratio | note |",
        "|---|---|---|---|---|",
    ]
    for r in simple:
        ratio = r["value"] / r["reference"] if r["reference"] == r["reference"] else float("nan")
        lines.append(
            f"| {r['what']} | {r['value']:.3f} | {r['reference']:.3f} | {ratio:.2f} | {r['note']} |"
        )
    lines += [
        "",
        "## Scoring N posters x N intros (default checkpoint; N > 2938: real features replicated with noise)",
        "",
        "`dense`: the default checkpoint, full D + every metric of `evaluate_distance` (both dims, "
        "R@K, ranks). `naive_metric`: the same D, then only the SPEC's Python loop for dim 1. "
        "`dense0`: the checkpoint without attention layers (identical when n_layers=0). "
        "`stream`: large-N mode, row chunks of 2048, never an N x N matrix. "
        "`stream_nolex`: the same without the lexical prior (its sparse products grow as N^2 "
        "with a larger constant than the head). "
        "`stream_sparse1`: large-N mode for a model with one attention unit (self + cross; "
        "the checkpoint's encoders, a seeded unit), no lexical prior: each node attends to its "
        "top-64 candidates (found by chunked cosine), then the streamed head (a fresh unit is the "
        "identity at init — its ffn's last layer starts at zero — so its accuracy equals "
        "`stream_nolex`; the row measures cost). "
        "Seconds exclude loading features; extra peak RSS is the resident memory the step adds "
        "(sampled every 2 ms) over the features already loaded.",
        "",
        "| N | mode | seconds | extra peak RSS (MB) | acc_dim1 |",
        "|---|---|---|---|---|",
    ]
    for r in inf:
        if "error" in r:
            lines.append(f"| {r['n']} | {r['mode']} | failed: {r['error']} | | |")
        else:
            lines.append(
                f"| {r['n']} | {r['mode']} | {r['seconds']:.2f} | {r['peak_rss_mb']:.0f} | {r['acc_dim1']:.4f} |"
            )
    lines += [
        "",
        "Fitted exponent of time vs N: "
        + ", ".join(
            f"{m} {_fit_exponent(inf, m):.2f}"
            for m in ("dense", "dense0", "stream", "stream_nolex", "stream_sparse1")
        ),
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    from gmatch.io import atomic_write_text

    atomic_write_text(Path(args.out), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
