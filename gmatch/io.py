"""Atomic file writes (a finished file is either the old one or the new one), and
checked model files (a weight file is loaded only with the sha256 it is pinned to)."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = [
    "WeightsError",
    "file_sha256",
    "clean_stale_temp_files",
    "atomic_write_text",
    "atomic_write_json",
    "atomic_save_npy",
    "atomic_savez",
    "atomic_torch_save",
]


class WeightsError(RuntimeError):
    """Model weights missing or not the expected file; the message says how to fix it."""


_SHA: dict = {}


def file_sha256(path: Path) -> str:
    """sha256 of a file (hex), computed once per process per path."""
    path = Path(path)
    if path not in _SHA:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _SHA[path] = h.hexdigest()
    return _SHA[path]


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # The writer's pid is in the name, so a later run can remove what a killed one left.
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp"
    )
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes 0600 files
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def clean_stale_temp_files(path: Path) -> list[Path]:
    """Remove temp files of :func:`_atomic` writes of ``path`` whose writer is gone."""
    removed = []
    for tmp in Path(path).parent.glob(f".{Path(path).name}.*.tmp"):
        pid = tmp.name[len(Path(path).name) + 2 :].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def atomic_write_text(path: Path, text: str) -> None:
    _atomic(path, lambda f: f.write(text.encode("utf-8")))


def _strict(obj):
    """NaN and inf become null: the file stays strict JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_strict(v) for v in obj]
    return obj


def atomic_write_json(path: Path, obj) -> None:
    """Strict JSON (NaN/inf written as null), atomically."""
    text = json.dumps(_strict(obj), indent=2, sort_keys=True, default=str, allow_nan=False)
    atomic_write_text(path, text + "\n")


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    _atomic(path, lambda f: np.save(f, array))


def atomic_savez(path: Path, **arrays) -> None:
    """``np.savez`` of ``arrays`` to ``path`` (keep the ``.npz`` suffix), atomically."""
    _atomic(path, lambda f: np.savez(f, **arrays))


def atomic_torch_save(path: Path, obj) -> None:
    import torch

    _atomic(path, lambda f: torch.save(obj, f))
