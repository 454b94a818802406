"""The thread policy (gmatch.threads): set before torch starts, the user's choice kept,
inherited by worker processes, and ONNX Runtime sessions built without spinning."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from conftest import ROOT

PROBE = (
    "import os, sys; {first}"
    "from gmatch import threads; "
    "print(os.environ.get('OMP_WAIT_POLICY'), threads.policy_in_effect())"
)


def _probe(first: str = "", **env) -> list[str]:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(first=first)],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        check=True,
    )
    return out.stdout.split()


def test_import_gmatch_sets_the_passive_policy_before_torch_loads():
    assert _probe() == ["PASSIVE", "PASSIVE"]
    assert _probe(OMP_WAIT_POLICY="ACTIVE") == ["ACTIVE", "ACTIVE"]  # the user's choice wins
    # control: torch loaded first keeps OpenMP's own policy, and the probe says so
    assert _probe("import torch; ") == ["PASSIVE", "unknown"]


def _policy() -> str | None:
    return os.environ.get("OMP_WAIT_POLICY")


def test_pool_workers_inherit_the_policy():
    """The OCR pool is a ProcessPoolExecutor of this process: its workers see the policy
    (conftest imports gmatch before torch, as a script would)."""
    from concurrent.futures import ProcessPoolExecutor

    assert _policy() == "PASSIVE"
    with ProcessPoolExecutor(1) as pool:
        assert pool.submit(_policy).result() == "PASSIVE"


def test_onnxruntime_sessions_do_not_spin():
    import onnxruntime as ort

    from gmatch.threads import ort_no_spin

    opts = ort.SessionOptions()
    with pytest.raises(RuntimeError):  # control: not set by default (ORT then spins)
        opts.get_session_config_entry("session.intra_op.allow_spinning")
    ort_no_spin(opts)
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"


def test_available_cores_follows_the_affinity():
    from gmatch.threads import available_cores

    assert available_cores() == len(os.sched_getaffinity(0))
