"""Thread policy: how gmatch's torch and ONNX Runtime threads wait, and how many run.

On a shared 2-core machine, OpenMP threads that spin while they wait for work steal the
core another job needs, and the job that spins slows down most: EfficientNet at two
torch threads ran 5-140x slower beside another process (issue 30's table,
benchmarks/LOAD.md). So gmatch asks waiting threads to sleep (``OMP_WAIT_POLICY=PASSIVE``)
and turns ONNX Runtime's spin-waiting off in the sessions it builds.

The OpenMP runtime reads the policy once, when torch loads it, so :func:`configure` runs
when ``gmatch`` is imported (``gmatch/__init__.py``), before any gmatch module imports
torch; ``setdefault`` keeps whatever the user exported. A process that imported torch
before gmatch keeps torch's policy: :func:`policy_in_effect` tells which one holds.
Child processes (the OCR pool, Ray workers started from here) inherit the environment.
"""

from __future__ import annotations

import os
import sys

__all__ = [
    "DEFAULTS",
    "configure",
    "available_cores",
    "policy_in_effect",
    "ort_no_spin",
    "die_with_parent",
]

# Environment defaults set before torch / onnxruntime / transformers load.
DEFAULTS = {
    "OMP_WAIT_POLICY": "PASSIVE",  # OpenMP threads sleep when idle instead of spinning
    "HF_HUB_OFFLINE": "1",  # shipped weights only unless the user opts in
    "TOKENIZERS_PARALLELISM": "false",  # no tokenizer thread pool beside torch's
}


_TORCH_BEFORE: list[bool] = []  # was torch loaded before the first configure()?


def configure() -> dict[str, str]:
    """Set :data:`DEFAULTS` where the environment does not already say otherwise;
    returns the values in force."""
    if not _TORCH_BEFORE:
        _TORCH_BEFORE.append("torch" in sys.modules)
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    return {key: os.environ[key] for key in DEFAULTS}


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, not the machine's count)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not on Linux
        return max(1, os.cpu_count() or 1)


def policy_in_effect() -> str:
    """The OpenMP wait policy torch runs with: the environment's value, unless torch was
    already loaded by something that imported it before gmatch (then "unknown")."""
    if not _TORCH_BEFORE or _TORCH_BEFORE[0]:
        return "unknown"
    return os.environ.get("OMP_WAIT_POLICY", "unset")


def ort_no_spin(opts) -> None:
    """ONNX Runtime session options: its intra-op threads block instead of spinning
    between runs (the ORT counterpart of OMP_WAIT_POLICY=PASSIVE)."""
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    opts.add_session_config_entry("session.inter_op.allow_spinning", "0")


def die_with_parent() -> None:
    """Worker initializer: on Linux the worker gets SIGTERM when its parent dies (a
    killed run leaves no workers behind); elsewhere nothing."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
