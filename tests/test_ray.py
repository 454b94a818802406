"""More than one machine: a real two-node Ray cluster on 127.0.0.1, started and stopped
here; `gmatch features --ray` and `gmatch evaluate --ray` must equal the local paths."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder

from gmatch.cli import main
from gmatch.distributed import local_cluster

RAY = Path(sys.executable).parent / "ray"
# Two detector sides (480, then 320: the default's cheapest extra side), not the default's
# three: the cluster still reads, caches and merges per side, at ~half the OCR time.
SIDES = [320]
VIEWS = [
    f"data.ocr_extra_sides={SIDES}",
    "data.poster_views=[image:efficientnet_lite0,ocr:minilm]",
    "data.intro_views=[text:minilm]",
    "model.prior=[ocr:minilm=text:minilm]",
]


@pytest.fixture(scope="module")
def cluster():
    """A head and a second node, one CPU each, on the loopback interface."""
    if not RAY.exists():
        pytest.skip("ray is not installed")
    with local_cluster(nodes=2, port=6391) as address:
        yield address


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """60 movies for the streamed evaluation (training needs pairs), with the shipped
    OCR seeds: that test is about scoring on the cluster, not reading."""
    return make_folder(tmp_path_factory.mktemp("ray") / "small", n=60, n_train=40, ocr_seeds=True)


@pytest.fixture(scope="module")
def few(tmp_path_factory):
    """16 movies, no OCR seeds: the features tests read every poster."""
    return make_folder(tmp_path_factory.mktemp("ray") / "few", n=16, n_train=10)


def npz_rows(path: Path) -> dict:
    with np.load(path) as z:
        return dict(zip(z["keys"].tolist(), z["values"]))


def test_features_on_the_cluster_equal_the_local_ones(cluster, few, tmp_path):
    local, remote = tmp_path / "local", tmp_path / "ray"
    assert main(["features", "--quiet", "--data", str(few), f"data.cache_dir={local}", *VIEWS]) == 0
    args = [
        "features",
        "--quiet",
        "--ray",
        cluster,
        "--data",
        str(few),
        f"data.cache_dir={remote}",
    ]
    assert main([*args, *VIEWS]) == 0
    files = sorted(p.name for p in local.iterdir())
    # OCR at every detector side (480 and SIDES), image, text
    sides = len(SIDES) + 1
    assert files == sorted(p.name for p in remote.iterdir()) and len(files) == sides + 2
    for name in files:
        if name.endswith(".json"):  # OCR: the same lines, word for word, and confidences
            a, b = json.loads((local / name).read_text()), json.loads((remote / name).read_text())
            assert a["items"] == b["items"] and len(a["items"]) == 16
        else:
            a, b = npz_rows(local / name), npz_rows(remote / name)
            assert a.keys() == b.keys()
            err = max(float(np.abs(a[k] - b[k]).max()) for k in a)
            assert err < 1e-4, (name, err)


def test_streamed_evaluation_on_the_cluster_equals_the_local_one(cluster, small, tmp_path):
    cache = tmp_path / "cache"
    train = [
        "train",
        "--quiet",
        "--data",
        str(small),
        "--out",
        str(tmp_path / "run"),
        f"data.cache_dir={cache}",
    ]
    quick = [
        "model.dim=16",
        "train.steps=10",
        "train.folds=1",
        "train.eval_every=5",
        "train.episode_sizes=[8]",
        "train.warmup=2",
    ]
    assert main([*train, *VIEWS, *quick]) == 0
    ckpt = str(tmp_path / "run" / "model.pt")
    assert (
        main(
            ["evaluate", "--quiet", "--checkpoint", ckpt, "--stream", "--out", str(tmp_path / "a")]
        )
        == 0
    )
    out = ["--out", str(tmp_path / "b"), "--workers", "2"]
    assert main(["evaluate", "--quiet", "--checkpoint", ckpt, "--ray", cluster, *out]) == 0
    a = json.loads((tmp_path / "a" / "metrics.json").read_text())
    b = json.loads((tmp_path / "b" / "metrics.json").read_text())
    assert a["metrics"] == b["metrics"] and set(a["metrics"]) == {"official", "heldout", "train"}
    assert not (tmp_path / "b" / "D.npy").exists() and b["mode"] == "streamed"
    # The streamed metrics are the dense ones (the dense run writes D.npy).
    assert main(["evaluate", "--quiet", "--checkpoint", ckpt, "--out", str(tmp_path / "c")]) == 0
    dense = json.loads((tmp_path / "c" / "metrics.json").read_text())["metrics"]
    assert dense.pop("analysis") and dense == a["metrics"]  # every key of every block, k >= 1 each


def test_without_ray_nothing_imports_it(few, tmp_path):
    code = (
        "import sys; from gmatch.cli import main; "
        f"main(['features', '--quiet', '--data', {str(few)!r}, 'data.cache_dir={tmp_path}', "
        + ", ".join(repr(v) for v in VIEWS)
        + "]); print('ray' in sys.modules)"
    )
    shutil.rmtree(tmp_path, ignore_errors=True)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "False"


def test_without_ray_installed_ray_is_a_one_line_error(few, cache_dir, monkeypatch, capsys):
    """`make run` does not install Ray (the `ray` extra): --ray then says how to get it,
    exit 2, no traceback. Control: the same command without --ray runs without Ray."""
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    args = [*VIEWS, f"data.root={few}", f"data.cache_dir={cache_dir}"]
    capsys.readouterr()
    assert main(["features", "--quiet", "--ray", "local", *args]) == 2
    err = capsys.readouterr().err
    assert "pip install -e '.[ray]'" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["features", "--quiet", *args]) == 0
