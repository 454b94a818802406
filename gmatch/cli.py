"""Command line: ``python -m gmatch <command>`` (or the ``gmatch`` script).

Commands: features | train | evaluate | audit | report | sweep | table. Every command
is ``main(argv)``-callable, so tests run it in-process.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
from pathlib import Path

from gmatch import threads
from gmatch.audit import audit
from gmatch.checkpoint import CheckpointError
from gmatch.config import ConfigError, load_config
from gmatch.data import DataError, load_movielens
from gmatch.distributed import cluster  # imports Ray only when one is built
from gmatch.encoders.text import WeightsError
from gmatch.features import load_features
from gmatch.io import atomic_write_json
from gmatch.metrics import DegenerateDistanceError
from gmatch.pdf import PDFError, render_pdf
from gmatch.report import ReportError, make_comparison, make_report
from gmatch.runs import (
    ResumeError,
    RunDir,
    evaluate_checkpoints,
    evaluate_streamed,
    git_state,
    summary_line,
    train_and_record,
)
from gmatch.stream import StreamError
from gmatch.sweep import build_table, run_sweep
from gmatch.training import TrainStateError

__all__ = ["main"]

# Exceptions that mean bad input, not a bug: one line, no traceback.
USER_ERRORS = (
    DataError,
    CheckpointError,
    ConfigError,
    FileExistsError,
    ResumeError,
    TrainStateError,
    WeightsError,
    DegenerateDistanceError,
    ReportError,
    PDFError,
    StreamError,
    OSError,
)


def _conf(args):
    overrides = list(args.overrides)
    if getattr(args, "data", None):
        overrides.append(f"data.root={args.data}")
    return load_config(args.config, overrides)


def cmd_features(args) -> int:
    conf = _conf(args)
    ms = load_movielens(conf.data.root)
    with cluster(args.ray, args.workers):
        feats = load_features(ms, conf, progress=not args.quiet)
    blocks = feats.poster + feats.intro + [b for pair in feats.prior_blocks for b in pair]
    for b in {b.spec: b for b in blocks + feats.poster_sets + feats.intro_sets}.values():
        print(f"{b.spec:32s} {tuple(b.values.shape)}  empty={int((~b.valid).sum())}")
    return 0


def cmd_train(args) -> int:
    conf = _conf(args)
    run = RunDir(args.out, overwrite=args.overwrite)
    ms = load_movielens(conf.data.root)
    feats = load_features(ms, conf, progress=not args.quiet)
    result, record = train_and_record(
        run, conf, ms, feats, not args.quiet, {"kind": "train"}, resume=args.resume
    )
    print(
        f"run folder: {run.path}  (trained in {result.seconds:.1f}s, best step {result.best_step})"
    )
    print(summary_line(record["metrics"]))
    if args.checkpoint:
        ckpt = Path(args.checkpoint)
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run.path / "model.pt", ckpt)
        atomic_write_json(
            ckpt.with_suffix(".metrics.json"), {**record["metrics"], "command": record["command"]}
        )
        print(f"checkpoint: {ckpt} (+ {ckpt.with_suffix('.metrics.json').name})")
    return 0


def cmd_evaluate(args) -> int:
    if args.stream or args.ray is not None:
        if len(args.checkpoint) > 1:
            raise ConfigError(
                "--stream / --ray score one checkpoint (large-N mode); drop the others"
            )
        out, record = evaluate_streamed(
            args.checkpoint[0],
            args.out,
            args.data,
            args.cache_dir,
            args.overwrite,
            args.ray,
            args.workers,
            progress=not args.quiet,
        )
        print(f"run folder: {out}")
        print(summary_line(record["metrics"]))
        return 0
    out, record = evaluate_checkpoints(
        args.checkpoint,
        args.out,
        args.data,
        args.cache_dir,
        args.overwrite,
        args.sinkhorn_tau,
        progress=not args.quiet,
    )
    print(f"run folder: {out}")
    print(summary_line(record["metrics"]))
    return 0


def cmd_audit(args) -> int:
    results = audit(args.checkpoint, args.data, args.cache_dir, seed=args.seed)
    for name, ok, detail in results:
        print(f"{'PASS' if ok else 'FAIL'}  {name}: {detail}")
    return 0 if all(ok for _, ok, _ in results) else 1


def cmd_sweep(args) -> int:
    run_sweep(
        args.config,
        args.out,
        args.overrides,
        skip_existing=args.skip_existing,
        only=args.only or [],
        progress=not args.quiet,
    )
    return 0


def cmd_table(args) -> int:
    print(build_table(args.runs))
    return 0


def cmd_report(args) -> int:
    if len(args.run) == 2:
        out = make_comparison(args.run[0], args.run[1], args.out, args.data)
    elif len(args.run) == 1:
        out = make_report(args.run[0], args.data, args.query, n_random=args.random, k=args.k)
        if args.pdf:
            print(f"pdf: {render_pdf(out)}")
    else:
        raise ReportError("gmatch report takes one run folder (a report) or two (a comparison)")
    print(f"report: {out}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(prog="gmatch", description=__doc__, formatter_class=fmt)
    p.add_argument("-v", "--verbose", action="store_true")
    p.add_argument(
        "--debug", action="store_true", help="show tracebacks of input errors (or GMATCH_DEBUG=1)"
    )
    sub = p.add_subparsers(dest="command", required=True)

    def ray_option(sp, what: str):
        sp.add_argument(
            "--ray",
            nargs="?",
            const="local",
            metavar="ADDRESS",
            help=f"{what}; ADDRESS of a running cluster (e.g. 127.0.0.1:6379), or none to start one here",
        )
        sp.add_argument(
            "--workers", type=int, help="Ray actors / tasks (default: the cluster's CPUs)"
        )

    def common(sp, overrides=True):
        sp.add_argument("--config", help="YAML file of config overrides")
        sp.add_argument("--data", help="course-format data folder (sets data.root)")
        sp.add_argument("--quiet", action="store_true", help="no progress bars")
        if overrides:
            sp.add_argument(
                "overrides", nargs="*", help="key=value config overrides, e.g. model.n_layers=2"
            )

    sp = sub.add_parser("features", help="extract and cache encoder features", formatter_class=fmt)
    common(sp)
    ray_option(sp, "extract on a Ray cluster (Ray Data actor pools) into the same cache")
    sp.set_defaults(func=cmd_features)

    sp = sub.add_parser("train", help="train, evaluate, write a run folder", formatter_class=fmt)
    common(sp)
    sp.add_argument("--out", default="runs/default", help="run folder")
    sp.add_argument("--checkpoint", help="also copy the trained model here")
    sp.add_argument("--overwrite", action="store_true", help="replace a finished run")
    sp.add_argument("--resume", action="store_true", help="continue an interrupted run in --out")
    sp.set_defaults(func=cmd_train)

    sp = sub.add_parser(
        "evaluate", help="score a checkpoint (or an ensemble) on a data folder", formatter_class=fmt
    )
    sp.add_argument(
        "--checkpoint",
        required=True,
        nargs="+",
        help="one checkpoint, or several whose scores are averaged (an ensemble)",
    )
    sp.add_argument(
        "--sinkhorn-tau",
        type=float,
        default=None,
        help="> 0: also report -log Sinkhorn(exp(S / tau)) over all test movies at once "
        "(analysis block; D.npy and official stay raw); default: the checkpoint's "
        "analysis.sinkhorn_tau",
    )
    sp.add_argument("--data", help="course-format folder (default: the checkpoint's)")
    sp.add_argument("--cache-dir", help="feature cache (default: the checkpoint's)")
    sp.add_argument(
        "--out", help="run folder (default: runs/eval-<checkpoint>, runs/stream-<checkpoint>)"
    )
    sp.add_argument(
        "--stream",
        action="store_true",
        help="large-N mode: metrics from streamed row blocks, never an N x N matrix (no D.npy)",
    )
    ray_option(sp, "large-N mode with the row blocks (and the features) on a Ray cluster")
    sp.add_argument("--overwrite", action="store_true")
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_evaluate)

    sp = sub.add_parser(
        "audit", help="check a checkpoint against the SPEC's rules", formatter_class=fmt
    )
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--data", help="course-format folder (default: the checkpoint's)")
    sp.add_argument("--cache-dir", help="feature cache (default: the checkpoint's)")
    sp.add_argument("--seed", type=int, default=0, help="seed of the random permutations")
    sp.set_defaults(func=cmd_audit)

    sp = sub.add_parser(
        "sweep", help="run a grid from a YAML with a sweep: block", formatter_class=fmt
    )
    sp.add_argument("config", help="experiments/configs/<name>.yaml")
    sp.add_argument("overrides", nargs="*", help="key=value overrides applied to every run")
    sp.add_argument("--out", help="folder of the runs (default: runs/<config name>)")
    sp.add_argument("--skip-existing", action="store_true", help="keep finished runs, run the rest")
    sp.add_argument(
        "--only",
        nargs="+",
        metavar="LABEL",
        help="run only the grid points carrying all these labels (case=image seed=0); "
        "it takes every word after it, so put key=value overrides before it",
    )
    sp.add_argument("--quiet", action="store_true")
    sp.set_defaults(func=cmd_sweep)

    sp = sub.add_parser(
        "report", help="HTML analysis report of a finished run", formatter_class=fmt
    )
    sp.add_argument(
        "run", nargs="+", help="run folder with D.npy and metrics.json; two folders: compare them"
    )
    sp.add_argument(
        "--out", help="folder of the comparison page (default: <parent>/compare-<A>-vs-<B>)"
    )
    sp.add_argument("--data", help="data folder (default: the run's)")
    sp.add_argument(
        "--query", action="append", default=[], help="movie id or title to show (repeatable)"
    )
    sp.add_argument(
        "--random",
        type=int,
        default=2,
        help="random held-out queries to show beside the curated ones",
    )
    sp.add_argument("-k", type=int, default=5, help="neighbours per query")
    sp.add_argument("--pdf", action="store_true", help="also write report.pdf (headless Chromium)")
    sp.set_defaults(func=cmd_report)

    sp = sub.add_parser("table", help="collect runs into results.csv/.md", formatter_class=fmt)
    sp.add_argument("runs", help="folder of run folders")
    sp.set_defaults(func=cmd_table)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run a command. Bad input ends in one line on stderr naming the file and the fix,
    and exit code 2; ``--debug`` (or ``GMATCH_DEBUG=1``) shows the traceback instead.
    An unexpected internal error always shows its traceback."""
    threads.configure()  # a no-op after `import gmatch` did it; kept for embedders
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(levelname)s %(name)s: %(message)s",
    )
    debug = args.debug or os.environ.get("GMATCH_DEBUG", "") not in ("", "0")
    git_state()  # the code this process runs: recorded now, before any run starts
    try:
        return args.func(args)
    except USER_ERRORS as e:
        unexpected = (
            isinstance(e, OSError) and not isinstance(e, FileExistsError) and not e.filename
        )
        if debug or unexpected:  # an OSError without a file is not an input problem: show it
            raise
        if isinstance(e, OSError) and e.filename:
            msg = f"{e.filename}: {e.strerror or e}; check the path (a writable folder, not a file)"
        else:
            msg = " ".join(str(e).split())  # one line
        print(f"gmatch {args.command}: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
