"""Run folders: one run per folder, resume that checks its config, a failed
--overwrite keeps the finished run, csv-module record rules, one-line errors."""

import csv
import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from conftest import ROOT, make_folder
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gmatch.cli import main
from gmatch.data import _read_info

QUICK = [
    "data.poster_views=[image:efficientnet_lite0]",
    "data.intro_views=[text:minilm]",
    "model.prior=[]",
    "model.dim=16",
    "train.steps=20",
    "train.folds=1",
    "train.eval_every=10",
    "train.episode_sizes=[16]",
    "train.warmup=2",
]
SLOW = [
    *QUICK[:4],
    "model.n_layers=1",
    "train.steps=100000",
    "train.folds=1",
    "train.eval_every=5",
    "train.episode_sizes=[32]",
    "train.patience=100000",
    "runtime.threads=1",
]


def one_line_error(capsys, *names) -> str:
    raw = capsys.readouterr().err
    assert "Traceback" not in raw, raw
    lines = [x for x in raw.replace("\r", "\n").splitlines() if x.startswith("gmatch ")]
    assert len(lines) == 1, raw  # other stderr lines are progress bars of model loading
    err = lines[0]
    for n in names:
        assert str(n) in err, (n, err)
    return err


def spawn(args, **kw):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-m", "gmatch", *args],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        **kw,
    )


def wait_for(pred, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.2)
    return False


def test_second_run_into_a_busy_folder_refuses(tiny_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "busy"
    common = ["--data", str(tiny_dir), "--quiet", f"data.cache_dir={cache_dir}"]
    assert main(["features", *common, *QUICK]) == 0  # warm the cache
    proc = spawn(["train", "--out", str(out), *common, *SLOW])
    try:
        assert wait_for(lambda: (out / "train_state.fit.pt").exists()), (
            "first run never started training"
        )
        assert main(["train", "--out", str(out), *common, *QUICK]) == 2
        err = one_line_error(capsys, out, f"pid {proc.pid}")
        assert "in use by" in err
    finally:
        proc.kill()
        proc.wait()
    assert not (out / "COMPLETE").exists()
    # The holder is gone: the lock is free again (the interrupted run needs --resume or --overwrite).
    assert main(["train", "--out", str(out), "--overwrite", *common, *QUICK]) == 0


def test_resume_refuses_another_config_and_a_damaged_state(tiny_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "r"
    common = ["--data", str(tiny_dir), "--quiet", f"data.cache_dir={cache_dir}"]
    proc = spawn(["train", "--out", str(out), *common, *SLOW])
    try:
        assert wait_for(lambda: (out / "train_state.fit.pt").exists())
    finally:
        proc.kill()
        proc.wait()
    assert (
        main(["train", "--out", str(out), "--resume", *common, *SLOW, "seed=5", "train.lr=0.01"])
        == 2
    )
    err = one_line_error(capsys, out, "seed", "train.lr")
    assert "another config" in err and not (out / "COMPLETE").exists()
    assert "seed: 0" in (out / "config.yaml").read_text()  # the saved config is untouched
    state = out / "train_state.fit.pt"
    state.write_bytes(state.read_bytes()[:100])  # truncated
    assert main(["train", "--out", str(out), "--resume", *common, *SLOW]) == 2
    assert "damaged" in one_line_error(capsys, state)


def test_failed_overwrite_keeps_the_finished_run(tiny_dir, cache_dir, tmp_path, capsys):
    out = tmp_path / "done"
    common = ["--quiet", f"data.cache_dir={cache_dir}", *QUICK]
    assert main(["train", "--data", str(tiny_dir), "--out", str(out), *common]) == 0
    before = (out / "metrics.json").read_text()
    assert (
        main(
            [
                "train",
                "--data",
                str(tmp_path / "missing"),
                "--out",
                str(out),
                "--overwrite",
                *common,
            ]
        )
        == 2
    )
    one_line_error(capsys, tmp_path / "missing")
    assert (out / "COMPLETE").exists() and (out / "metrics.json").read_text() == before
    assert (
        main(
            ["train", "--data", str(tiny_dir), "--out", str(out), "--overwrite", *common, "seed=1"]
        )
        == 0
    )
    assert (out / "COMPLETE").exists() and json.loads((out / "metrics.json").read_text())["config"][
        "seed"
    ] == 1
    assert not [
        p for p in tmp_path.iterdir() if p.name.startswith(".done.") and p.is_dir()
    ]  # no staging left
    # An early failure into a new folder leaves no empty run folder behind.
    assert (
        main(
            ["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "new"), *common]
        )
        == 2
    )
    assert not (tmp_path / "new").exists()


ODD = "\x0c\x85\u2028\u2029\x1c\x1d\x1e\x0b"


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    rows=st.lists(
        st.tuples(
            st.text(
                alphabet=st.characters(codec="utf-8", exclude_characters="\x00")
                | st.sampled_from(list(ODD + ',"\n\r')),
                max_size=30,
            ),
            st.text(max_size=8),
        ),
        min_size=1,
        max_size=6,
    )
)
def test_info_csv_reads_back_what_the_csv_module_writes(tmp_path_factory, rows):
    path = tmp_path_factory.mktemp("csv") / "info.csv"
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "name", "genre", "intro"])
    for i, (intro, name) in enumerate(rows):
        w.writerow([i, name, "Drama", intro])
    path.write_text(buf.getvalue(), encoding="utf-8", newline="")
    got = _read_info(path)
    assert sorted(got) == list(range(len(rows)))
    for i, (intro, name) in enumerate(rows):
        assert got[i]["intro"] == intro and got[i]["name"] == name


def test_a_long_intro_is_legitimate(tmp_path):
    path = tmp_path / "info.csv"
    path.write_text("id,name,genre,intro\n1,A,Drama," + "x" * 2_000_000 + "\n", encoding="utf-8")
    assert len(_read_info(path)[1]["intro"]) == 2_000_000


@pytest.fixture()
def small(tmp_path):
    return make_folder(tmp_path / "d", n=12, n_train=8)


def _jpeg(folder, pos=0):
    return sorted((folder / "poster").iterdir(), key=lambda p: int(p.stem))[pos]


@pytest.mark.parametrize(
    "case",
    [
        "corrupt",
        "truncated",
        "bomb",
        "directory",
        "dangling",
        "huge_id",
        "negative_id",
        "small_train",
        "unknown_view",
        "garbage_ocr",
        "missing_model",
    ],
)
def test_bad_inputs_end_in_one_line(case, small, tmp_path, capsys):
    """Every input class through main: non-zero exit, the file named, no traceback."""
    cache = tmp_path / "cache"
    views = [
        "data.poster_views=[image:efficientnet_lite0]",
        "data.intro_views=[text:minilm]",
        "model.prior=[]",
    ]
    named = small
    if case in ("corrupt", "truncated", "bomb"):
        named = _jpeg(small)
        raw = named.read_bytes()
        if case == "corrupt":
            named.write_bytes(b"\xff\xd8\xff\xe0 not a jpeg at all" * 20)
        elif case == "truncated":
            named.write_bytes(raw[: len(raw) // 3])
        else:
            from PIL import Image

            Image.new("L", (20000, 20000)).save(
                named, format="JPEG"
            )  # 4e8 pixels > PIL's 2x bomb limit
    elif case == "directory":
        named = _jpeg(small)
        named.unlink()
        named.mkdir()
    elif case == "dangling":
        named = _jpeg(small)
        named.unlink()
        named.symlink_to(tmp_path / "gone.jpg")
    elif case == "huge_id":
        named = small / "info.csv"
        named.write_text(named.read_text() + f"{2**63},Huge,Drama,An intro.\n")
    elif case == "negative_id":
        named = small / "poster" / "-5.jpg"
        shutil.copyfile(_jpeg(small), named)
    elif case == "small_train":
        (small / "train.txt").write_text("0\n1\n")
        named = "train.txt"
        views = [
            "data.intro_views=[text:tfidf]",
            "data.poster_views=[image:efficientnet_lite0]",
            "model.prior=[]",
        ]
    elif case == "missing_model":
        named = tmp_path / "no_such_model"
        views = [
            "data.poster_views=[image:efficientnet_lite0]",
            f"data.intro_views=[text:st:{named}]",
            "model.prior=[]",
        ]
    elif case == "unknown_view":
        views = ["data.intro_views=[plot:minilm]"]
        named = "plot:minilm"
    elif case == "garbage_ocr":
        views = [
            "data.poster_views=[ocr:minilm]",
            "data.intro_views=[text:minilm]",
            "model.prior=[]",
        ]
        from gmatch.encoders.ocr import OCRConfig

        named = cache / f"ocr_rapidocr_{OCRConfig().key()}.json"
        cache.mkdir()
        named.write_text(json.dumps({"settings": OCRConfig().key(), "items": [1, 2, 3]}))
        (small / "poster").rename(tmp_path / "p")  # keep the run short: 2 posters to read
        (small / "poster").mkdir()
        for p in sorted((tmp_path / "p").iterdir(), key=lambda p: int(p.stem))[:2]:
            shutil.copyfile(p, small / "poster" / p.name)
        (small / "train.txt").unlink()
        rc = main(["features", "--data", str(small), "--quiet", f"data.cache_dir={cache}", *views])
        assert rc == 0  # a garbage OCR cache is rebuilt (with a warning), never a crash
        assert isinstance(json.loads(named.read_text())["items"], dict)
        return
    rc = main(["features", "--data", str(small), "--quiet", f"data.cache_dir={cache}", *views])
    assert rc == 2
    one_line_error(capsys, named)


def test_unwritable_output_and_report_failures(
    trained_quick, tiny_dir, cache_dir, tmp_path, capsys
):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dir),
                "--out",
                str(blocker / "run"),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                *QUICK,
            ]
        )
        == 2
    )
    one_line_error(capsys, blocker)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    one_line_error(capsys, empty / "metrics.json")
    bad = tmp_path / "bad"
    shutil.copytree(trained_quick, bad)
    np.save(bad / "D.npy", np.zeros((3, 3), np.float32))
    assert main(["report", str(bad)]) == 2
    one_line_error(capsys, bad / "D.npy", "shape")
    (bad / "metrics.json").write_text("{not json")
    assert main(["report", str(bad)]) == 2
    one_line_error(capsys, bad / "metrics.json")


@pytest.fixture()
def trained_quick(tiny_dir, cache_dir, tmp_path):
    out = tmp_path / "q"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dir),
                "--out",
                str(out),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                *QUICK,
            ]
        )
        == 0
    )
    return out


def test_checkpoint_naming_an_unknown_encoder_or_bad_key(trained_quick, tiny_dir, tmp_path, capsys):
    ckpt = torch.load(trained_quick / "model.pt", weights_only=True)
    bad = dict(ckpt, poster_views=["image:nonet"])
    torch.save(bad, tmp_path / "enc.pt")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "enc.pt"),
                "--data",
                str(tiny_dir),
                "--out",
                str(tmp_path / "e1"),
            ]
        )
        == 2
    )
    one_line_error(capsys, tmp_path / "enc.pt", "nonet")
    bad = json.loads(json.dumps(ckpt["config"]))
    bad["model"]["no_such_key"] = 1
    torch.save(dict(ckpt, config=bad), tmp_path / "key.pt")
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(tmp_path / "key.pt"),
                "--data",
                str(tiny_dir),
                "--out",
                str(tmp_path / "e2"),
            ]
        )
        == 2
    )
    one_line_error(capsys, tmp_path / "key.pt", "no_such_key")


def test_all_training_no_heldout_writes_strict_json(tmp_path, cache_dir, capsys):
    folder = make_folder(tmp_path / "all", n=24, n_train=24)
    (folder / "train.txt").write_text("\n".join(map(str, range(24))) + "\n")
    (folder / "train.txt").write_bytes(
        b"\xef\xbb\xbf" + (folder / "train.txt").read_bytes()
    )  # a BOM is fine
    out = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(folder),
                "--out",
                str(out),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                *QUICK,
                "train.val_fraction=0",
            ]
        )
        == 0
    )
    text = (out / "metrics.json").read_text()
    assert "NaN" not in text and "heldout" not in json.loads(text)["metrics"]
    json.loads(text, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))


def test_killed_ocr_leaves_no_workers_and_no_temp_files(tmp_path):
    folder = make_folder(tmp_path / "ocr", n=40, n_train=20)
    cache = tmp_path / "cache"
    proc = spawn(
        [
            "features",
            "--data",
            str(folder),
            "--quiet",
            f"data.cache_dir={cache}",
            "data.poster_views=[ocr:minilm]",
            "data.intro_views=[text:minilm]",
            "model.prior=[]",
        ]
    )

    def children():
        out = subprocess.run(
            ["ps", "-o", "pid=", "--ppid", str(proc.pid)], capture_output=True, text=True
        ).stdout
        return [int(x) for x in out.split()]

    assert wait_for(lambda: len(children()) >= 1, 120), "OCR workers never started"
    workers = children()
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    def gone():
        return all(
            not os.path.exists(f"/proc/{w}") or open(f"/proc/{w}/stat").read().split()[2] == "Z"
            for w in workers
        )

    assert wait_for(gone, 20), "OCR workers outlived their parent"
    # A stray temp file of the killed writer is removed by the next start.
    from gmatch.encoders.ocr import OCRConfig
    from gmatch.io import clean_stale_temp_files

    target = cache / f"ocr_rapidocr_{OCRConfig().key()}.json"
    cache.mkdir(exist_ok=True)
    stray = cache / f".{target.name}.{proc.pid}.abc.tmp"
    stray.write_text("{")
    assert stray in clean_stale_temp_files(target) and not stray.exists()
