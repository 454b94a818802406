"""Interrupted runs resume to the same result; nothing finished is overwritten."""

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from conftest import ROOT, make_folder, tiny

from gmatch.cli import main

ARGS = tiny(
    {
        "data.poster_views": "[image:efficientnet_lite0]",
        "data.intro_views": "[text:minilm]",
        "model.prior": "[ocr:chars=text:chars@4]",
        "model.n_layers": 1,
        "train.steps": 400,
        "train.val_fraction": 0.25,
        "train.patience": 1000,
        "runtime.threads": 1,
    }
)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("rel") / "d", n=120, n_train=80, ocr_seeds=True)


def test_kill_mid_training_then_resume_matches_uninterrupted(folder, cache_dir, tmp_path):
    common = ["--data", str(folder), "--quiet", f"data.cache_dir={cache_dir}", *ARGS]
    # The uninterrupted reference (also warms the feature cache).
    assert main(["train", "--out", str(tmp_path / "ref"), *common]) == 0

    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "gmatch", "train", "--out", str(out), *common],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    state = out / "train_state.fit.pt"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if state.exists():
            import torch

            try:
                step = torch.load(state, weights_only=True)["step"]
            except Exception:  # noqa: BLE001 - caught mid-rename; try again
                step = 0
            if step >= 50:
                break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed; raise train.steps"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "COMPLETE").exists()

    # Without --resume the interrupted run is not silently replaced.
    assert main(["train", "--out", str(out), *common]) == 2
    assert main(["train", "--out", str(out), "--resume", *common]) == 0
    a = json.loads((tmp_path / "ref" / "metrics.json").read_text())["metrics"]
    b = json.loads((out / "metrics.json").read_text())["metrics"]
    assert a["official"] == b["official"] and a["heldout"] == b["heldout"]
    assert np.array_equal(np.load(tmp_path / "ref" / "D.npy"), np.load(out / "D.npy"))
    assert not list(out.glob("train_state.*"))  # cleaned up once complete
