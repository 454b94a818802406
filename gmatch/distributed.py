"""More than one machine: feature extraction and large-N scoring on a Ray cluster.

Nothing here is imported unless ``--ray`` is given (``gmatch features --ray [ADDRESS]``,
``gmatch evaluate --ray [ADDRESS]``); without it gmatch never imports Ray.

- Extraction runs as Ray Data ``map_batches`` over the items the cache lacks, with an
  actor pool: each actor builds its encoder (or the OCR engine) once and encodes many
  batches. Posters travel as bytes, so workers need no shared file system. The driver
  writes every result into the same per-item content-hash cache as a local run, so a
  later run (local or not) reads them back.
- Large-N scoring shards the row blocks of :func:`gmatch.stream.streamed_ranks` over
  Ray tasks; the merge (sums of counts, minima, maxima, concatenated top-k lists) is
  exact, so the metrics equal the single-machine ones.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from gmatch.config import ConfigError
from gmatch.data import load_image
from gmatch.encoders.ocr import ocr_engine, read_image_array
from gmatch.encoders.registry import build_encoder
from gmatch.features import distributed

__all__ = ["RayRunner", "cluster", "local_cluster"]


class _EncodeActor:
    """A Ray Data actor: one encoder, built once, encodes batches of items."""

    def __init__(self, spec: str, threads: int = 1):
        torch.set_num_threads(threads)
        self.kind = "image" if spec.startswith("image:") else "text"
        self.encoder = build_encoder(spec)

    def __call__(self, batch: dict) -> dict:
        items = list(batch["item"])
        if self.kind == "image":
            items = [load_image(b) for b in items]
        return {"i": batch["i"], "values": np.asarray(self.encoder.encode(items), dtype=np.float32)}


class _OCRActor:
    """A Ray Data actor: one RapidOCR engine, reads batches of posters (as bytes)."""

    def __init__(self, conf):
        self.conf = conf
        ocr_engine(conf)  # load the detector and recogniser once

    def __call__(self, batch: dict) -> dict:
        lines = [json.dumps(read_image_array(b, self.conf)) for b in batch["item"]]
        return {"i": batch["i"], "lines": np.array(lines, dtype=object)}


def _run_block(fn, shared, blocks):
    return [fn(shared, b) for b in blocks]


class RayRunner:
    """A connection to a Ray cluster (``address``; None or "local" starts one on this
    machine) with the three operations gmatch distributes."""

    def __init__(self, address: str | None = None, workers: int | None = None):
        try:
            import ray  # here, not at the top: without --ray, gmatch never imports Ray
        except ImportError as e:
            raise ConfigError(
                "--ray needs Ray, which `make run` does not install: pip install -e '.[ray]' "
                "(pinned ray[data]==2.60.0; `make test` installs it)"
            ) from e

        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            local = address in (None, "", "local")
            ray.init(
                address=None if local else address,
                include_dashboard=False,
                log_to_driver=False,
                logging_level=logging.WARNING,
                configure_logging=False,
                **({"num_cpus": os.cpu_count()} if local else {}),
            )
        cpus = int(ray.cluster_resources().get("CPU", 1))
        self.workers = workers or max(1, cpus)

    def close(self) -> None:
        if self.started and self.ray.is_initialized():
            self.ray.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _dataset(self, items: list):
        import ray.data  # see __init__

        ctx = ray.data.DataContext.get_current()
        ctx.enable_progress_bars = False
        # Several blocks per actor: with one block each, Ray Data fed a single actor of the
        # pool (measured: 1 of 2 actors busy), so the second node added nothing.
        blocks = max(1, min(len(items), 4 * self.workers))
        return ray.data.from_items(
            [{"i": i, "item": x} for i, x in enumerate(items)], override_num_blocks=blocks
        )

    def _pool(self):
        """A fixed pool of ``workers`` actors (Ray >= 2.51 spells it ``compute=``;
        ``concurrency=`` is deprecated)."""
        import ray.data  # see __init__

        return ray.data.ActorPoolStrategy(size=self.workers)

    def encode(self, spec: str, items: list, batch_size: int = 32) -> np.ndarray:
        """Rows [len(items) x D] of encoder ``spec`` (texts, or poster bytes for image specs)."""
        ds = self._dataset(items).map_batches(
            _EncodeActor,
            fn_constructor_kwargs={"spec": spec},
            batch_size=batch_size,
            compute=self._pool(),
            num_cpus=1,
            batch_format="numpy",
        )
        rows = sorted(ds.take_all(), key=lambda r: r["i"])
        return np.stack([r["values"] for r in rows]).astype(np.float32)

    def ocr(self, images: list[bytes], conf) -> list[list]:
        """OCR lines ``[[text, confidence], ...]`` of each poster (bytes)."""
        ds = self._dataset(images).map_batches(
            _OCRActor,
            fn_constructor_kwargs={"conf": conf},
            batch_size=8,
            compute=self._pool(),
            num_cpus=1,
            batch_format="numpy",
        )
        rows = sorted(ds.take_all(), key=lambda r: r["i"])
        return [json.loads(r["lines"]) for r in rows]

    def map_blocks(self, fn, shared, blocks: list) -> list:
        """``[fn(shared, block) for block in blocks]``, the blocks split into one shard per
        worker; ``shared`` is put in the object store once."""
        remote = self.ray.remote(num_cpus=1)(_run_block)
        ref = self.ray.put(shared)
        shards = [blocks[k :: self.workers] for k in range(self.workers)]
        futures = [remote.remote(fn, ref, shard) for shard in shards if shard]
        try:
            results = self.ray.get(futures)
        except self.ray.exceptions.RayTaskError as e:  # the worker's own error, not Ray's wrapper
            raise e.cause from None
        by_block = {}
        for shard, out in zip([s for s in shards if s], results):
            by_block.update(zip(shard, out))
        return [by_block[b] for b in blocks]


@contextlib.contextmanager
def cluster(address: str | None, workers: int | None = None):
    """``address`` None: yield None and change nothing (this process does the work).
    Otherwise yield a :class:`RayRunner` on that cluster ("local": a throw-away one here)
    with feature extraction routed to it (:func:`gmatch.features.distributed`)."""
    if address is None:
        yield None
        return
    with RayRunner(address, workers) as runner, distributed(runner):
        yield runner


@contextlib.contextmanager
def local_cluster(nodes: int = 2, port: int = 6391, cpus_per_node: int = 1):
    """A Ray cluster of ``nodes`` node processes (``ray start``: a head, then more
    nodes) on 127.0.0.1, ``cpus_per_node`` CPUs each; yields its address and runs
    ``ray stop`` on exit, which stops every Ray process of this machine. For tests and
    benchmarks that need a real cluster and must leave none behind."""
    ray = Path(sys.executable).parent / "ray"
    env = {**os.environ, "RAY_DISABLE_USAGE_STATS": "1"}
    common = ["--node-ip-address=127.0.0.1", f"--num-cpus={cpus_per_node}", "--disable-usage-stats"]
    subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
    head = [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
    subprocess.run(head, env=env, check=True, capture_output=True, timeout=120)
    try:
        for _ in range(nodes - 1):
            node = [ray, "start", f"--address=127.0.0.1:{port}", *common]
            subprocess.run(node, env=env, check=True, capture_output=True, timeout=120)
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([ray, "stop", "--force"], env=env, capture_output=True, timeout=120)
