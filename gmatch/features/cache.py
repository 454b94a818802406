"""The on-disk feature cache, shared by every writer (extraction, fine-tuning, seeds).

Rows are keyed by an item's content hash (poster bytes or text) in one
``<cache_dir>/<key>.npz`` per encoder (name + hash of its settings), with a checksum
of keys and values. A file that fails to load or whose checksum does not match is
rebuilt, never trusted. *Seeds* are read-only caches shipped beside a data set
(``data/features/``, float16): a row found there is used instead of a local one, so
every machine scores the course data on the same numbers.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from gmatch.io import atomic_savez

__all__ = [
    "FeatureCache",
    "settings_hash",
    "write_rows",
    "read_rows",
    "write_ragged",
    "cached_encode",
    "write_seed",
    "distributed",
    "current_runner",
]

log = logging.getLogger(__name__)


def settings_hash(obj) -> str:
    """A short hash of JSON-able settings (part of a cache file's name)."""
    return hashlib.sha1(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:12]


def checksum(keys: np.ndarray, values: np.ndarray, lengths: np.ndarray | None = None) -> str:
    h = hashlib.sha1(keys.astype("U64").tobytes())
    h.update(np.ascontiguousarray(values, dtype=np.float32).tobytes())
    if lengths is not None:
        h.update(np.ascontiguousarray(lengths, dtype=np.int64).tobytes())
    return h.hexdigest()


def write_rows(path: Path, keys, rows, dtype=np.float32) -> None:
    """``<path>`` = item keys, their rows as ``dtype`` and a checksum, written atomically."""
    keys = np.array(keys, dtype="U64")
    values = np.stack(rows).astype(dtype)
    atomic_savez(path, keys=keys, values=values, checksum=np.array(checksum(keys, values)))


def read_rows(path: Path) -> dict[str, np.ndarray]:
    """The rows of a cache file by key (:func:`write_rows`' fixed-width rows, or
    :func:`write_ragged`'s rows of different lengths); {} for a missing, unreadable or
    stale file."""
    if not path.exists():
        return {}
    try:
        with np.load(path, allow_pickle=False) as z:
            keys, values, stored = z["keys"], z["values"], str(z["checksum"])
            lengths = z["lengths"] if "lengths" in z.files else None
        if checksum(keys, values, lengths) != stored:
            raise ValueError("checksum mismatch")
        rows = values if lengths is None else np.split(values, np.cumsum(lengths)[:-1])
        return dict(zip(keys.tolist(), rows))
    except Exception as e:  # noqa: BLE001 - any unreadable cache is rebuilt
        log.warning("feature cache %s is corrupt or stale (%s); rebuilding", path, e)
        return {}


def write_ragged(path: Path, rows: dict[str, np.ndarray]) -> None:
    """Rows of different lengths (one [L_k x D] array per key, float16) in one file with a
    checksum, written atomically (the text trunk cache of :mod:`gmatch.finetune`); read
    back with :func:`read_rows`."""
    keys = np.array(list(rows), dtype="U64")
    flat = np.concatenate([rows[k] for k in rows]).astype(np.float16)
    lengths = np.array([len(rows[k]) for k in rows])
    stored = checksum(keys, flat, lengths)
    atomic_savez(path, keys=keys, values=flat, lengths=lengths, checksum=np.array(stored))


class FeatureCache:
    """Rows keyed by item hash in ``<cache_dir>/<key>.npz``; ``seeds``: folders of
    read-only caches whose rows win over local ones."""

    def __init__(self, cache_dir: Path, key: str, seeds: tuple[Path, ...] = ()):
        self.path = Path(cache_dir) / f"{key}.npz"
        self.rows = read_rows(self.path)
        self.seed_rows: dict[str, np.ndarray] = {}
        for folder in seeds:
            self.seed_rows.update(read_rows(Path(folder) / f"{key}.npz"))

    def get(self, key: str) -> np.ndarray | None:
        row = self.seed_rows.get(key)
        return self.rows.get(key) if row is None else row

    def save(self, dtype=np.float32) -> None:
        write_rows(self.path, list(self.rows), list(self.rows.values()), dtype)


# The Ray cluster extraction runs on (gmatch.distributed.RayRunner), if any: set with
# `distributed(runner)`, read where items are encoded. None = this process.
_RUNNER: contextvars.ContextVar = contextvars.ContextVar("gmatch_runner", default=None)


def current_runner():
    """The Ray runner of the enclosing :func:`distributed` block, or None."""
    return _RUNNER.get()


@contextlib.contextmanager
def distributed(runner):
    """Within this block, items the caches lack are encoded (and posters read) on
    ``runner``'s Ray cluster; results land in the same caches as a local run."""
    token = _RUNNER.set(runner)
    try:
        yield runner
    finally:
        _RUNNER.reset(token)


def cached_encode(
    cache_dir, key, item_keys, items, encode_fn, batch_size, desc, progress, seeds=(), remote=None
):
    """Rows of ``items`` (keyed by ``item_keys``) from the cache; the missing ones are
    encoded with ``encode_fn`` in batches, or, inside :func:`distributed`, on the Ray
    cluster: ``remote = (encoder spec, item -> payload)`` says what the workers build and
    receive. Either way they are written to the cache."""
    cache = FeatureCache(cache_dir, key, seeds)
    todo = {}
    for k, item in zip(item_keys, items):
        if cache.get(k) is None:
            todo.setdefault(k, item)
    runner = current_runner()
    if todo and runner is not None and remote is not None:
        spec, payload = remote
        out = runner.encode(spec, [payload(x) for x in todo.values()], batch_size)
        cache.rows.update(zip(todo, out))
        cache.save()
    elif todo:
        keys, values = list(todo), list(todo.values())
        for s in tqdm(range(0, len(keys), batch_size), desc=desc, disable=not progress):
            out = encode_fn(values[s : s + batch_size])
            cache.rows.update(zip(keys[s : s + batch_size], out))
        cache.save()
    return np.stack([cache.get(k) for k in item_keys]).astype(np.float32)


def write_seed(
    cache_dir, key: str, item_keys: list[str], out_dir: Path, dtype=np.float16, keep: bool = False
) -> Path:
    """Write the cached rows ``item_keys`` of encoder ``key`` as a read-only seed cache
    (``<out_dir>/<key>.npz``, ``dtype``) to ship beside a data set. ``keep``: the rows
    the seed already holds stay (as they are), so a seed can serve several readers."""
    old = FeatureCache(cache_dir, key, seeds=(Path(out_dir),)).seed_rows if keep else {}
    rows = {**FeatureCache(cache_dir, key).rows, **old}
    keys = sorted(set(item_keys) | set(old))
    out = Path(out_dir) / f"{key}.npz"
    write_rows(out, keys, [rows[k] for k in keys], dtype)
    return out
