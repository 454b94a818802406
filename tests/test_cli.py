"""The CLI end to end on a tiny real folder, in-process (open_clip's main(argv) pattern)."""

import json

import numpy as np
import pytest
import torch
from conftest import tiny

from gmatch.checkpoint import CheckpointError, load_checkpoint
from gmatch.cli import main

FAST = tiny({"model.n_layers": 1, "model.edge": "mlp", "train.steps": 30})


@pytest.fixture(scope="module")
def trained(tiny_dir, cache_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "r1"
    rc = main(
        [
            "train",
            "--data",
            str(tiny_dir),
            "--out",
            str(out),
            "--quiet",
            f"data.cache_dir={cache_dir}",
            *FAST,
        ]
    )
    assert rc == 0
    return out


def test_train_writes_a_complete_run(trained, capsys):
    for name in ("D.npy", "metrics.json", "config.yaml", "model.pt", "history.json", "COMPLETE"):
        assert (trained / name).exists(), name
    rec = json.loads((trained / "metrics.json").read_text())
    m = rec["metrics"]
    assert m["official"]["n"] == 48 and m["heldout"]["n"] == 16 and m["train"]["n"] == 32
    for block in ("official", "train"):
        assert 0 <= m[block]["acc_dim0"] <= 1
    assert (
        m["heldout"]["acc_dim0"] is None
    )  # k = int(0.05 * 16) = 0: no get_acc (strict JSON null), only ranks
    assert 0 <= m["heldout"]["poster_to_intro/R@1"] <= 1
    assert "hungarian/all" in m["analysis"]
    D = np.load(trained / "D.npy")
    assert D.shape == (48, 48) and D.dtype == np.float32


def test_refuses_to_overwrite_a_finished_run(trained, tiny_dir, cache_dir, capsys):
    rc = main(
        [
            "train",
            "--data",
            str(tiny_dir),
            "--out",
            str(trained),
            "--quiet",
            f"data.cache_dir={cache_dir}",
            *FAST,
        ]
    )
    assert rc == 2
    assert "a finished run is already there" in capsys.readouterr().err


def test_evaluate_reproduces_D_from_the_checkpoint(trained, tiny_dir, cache_dir, tmp_path):
    out = tmp_path / "eval"
    rc = main(
        [
            "evaluate",
            "--checkpoint",
            str(trained / "model.pt"),
            "--data",
            str(tiny_dir),
            "--cache-dir",
            str(cache_dir),
            "--out",
            str(out),
            "--quiet",
        ]
    )
    assert rc == 0
    assert np.allclose(np.load(out / "D.npy"), np.load(trained / "D.npy"), atol=1e-5)


def test_evaluate_an_ensemble_with_the_sinkhorn_analysis(trained, tiny_dir, cache_dir, tmp_path):
    """Several checkpoints: their scores are averaged. --sinkhorn-tau adds the
    test-set-wide Sinkhorn as an analysis; D.npy and the official block stay raw."""
    from gmatch.assignment import sinkhorn
    from gmatch.metrics import get_acc

    other = tmp_path / "seed1"
    assert (
        main(
            [
                "train",
                "--data",
                str(tiny_dir),
                "--out",
                str(other),
                "--quiet",
                f"data.cache_dir={cache_dir}",
                *FAST,
                "seed=1",
            ]
        )
        == 0
    )
    ckpts = [str(trained / "model.pt"), str(other / "model.pt")]
    common = ["--data", str(tiny_dir), "--cache-dir", str(cache_dir), "--quiet"]
    assert main(["evaluate", "--checkpoint", *ckpts, "--out", str(tmp_path / "ens"), *common]) == 0
    D0, D1 = np.load(trained / "D.npy"), np.load(other / "D.npy")
    assert not np.allclose(D0, D1)
    D = np.load(tmp_path / "ens" / "D.npy")
    assert np.allclose(D, (D0 + D1) / 2, atol=1e-5)
    rec = json.loads((tmp_path / "ens" / "metrics.json").read_text())
    assert rec["checkpoint"] == ckpts and "test_set_sinkhorn" not in rec["metrics"]["analysis"]
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                *ckpts,
                "--sinkhorn-tau",
                "2",
                "--out",
                str(tmp_path / "sk"),
                *common,
            ]
        )
        == 0
    )
    sk = json.loads((tmp_path / "sk" / "metrics.json").read_text())["metrics"]
    D_sk_file = np.load(tmp_path / "sk" / "D.npy")
    assert np.array_equal(D_sk_file, D)  # the raw D, not the normalised one
    for dim in (0, 1):
        assert sk["official"][f"acc_dim{dim}"] == get_acc(D_sk_file, 0.05, dim)
    analysis = sk["analysis"]["test_set_sinkhorn"]
    assert analysis["tau"] == 2 and "not official" in analysis["note"]
    D_norm = -sinkhorn(-torch.from_numpy(D).double(), 20, 2.0)
    assert analysis["official"]["acc_dim1"] == get_acc(D_norm.float(), 0.05, 1)
    assert (
        analysis["official"]["intro_to_poster/mean_rank"]
        != sk["official"]["intro_to_poster/mean_rank"]
    )
    # metrics.json records the analysis settings the run used (the flag), not the
    # checkpoint's (0.0, the control: the run without the flag)
    sk_rec = json.loads((tmp_path / "sk" / "metrics.json").read_text())
    assert sk_rec["analysis_settings"]["sinkhorn_tau"] == 2.0
    one = tmp_path / "one-sk"
    args = ["evaluate", "--checkpoint", ckpts[0], "--sinkhorn-tau", "2", "--out", str(one)]
    assert main([*args, *common]) == 0
    assert json.loads((one / "metrics.json").read_text())["config"]["analysis"]["sinkhorn_tau"] == 2
    plain = json.loads((trained / "metrics.json").read_text())
    assert plain["config"]["analysis"]["sinkhorn_tau"] == 0.0


def test_audit_passes(trained, tiny_dir, cache_dir, capsys):
    rc = main(
        [
            "audit",
            "--checkpoint",
            str(trained / "model.pt"),
            "--data",
            str(tiny_dir),
            "--cache-dir",
            str(cache_dir),
        ]
    )
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.count("PASS") == 5 and "FAIL" not in out


def test_audit_checks_fail_on_negative_controls(trained, tiny_dir, cache_dir, monkeypatch):
    """Each audit check catches a model that breaks its rule."""
    from gmatch.audit import check_diagonal, check_equivariance, check_text_statistics
    from gmatch.data import load_movielens
    from gmatch.features import extract_features
    from gmatch.text import TrainOnlyTfidf

    model, conf, ckpt = load_checkpoint(trained / "model.pt")
    ms = load_movielens(tiny_dir)
    feats = extract_features(
        ms,
        ckpt["poster_views"],
        ckpt["intro_views"],
        cache_dir,
        False,
        ckpt["encoder_states"],
        conf.model.prior,
    )
    n = len(ms)

    def score(idx0, idx1):
        with torch.no_grad():
            return model(**feats.inputs(idx0, idx1))["dist"]

    def diagonal_bonus(idx0, idx1):  # cheats by position: whatever sits on the diagonal wins
        return score(idx0, idx1) - 0.5 * torch.eye(n)

    rng = np.random.default_rng(0)
    assert all(ok for _, ok, _ in check_equivariance(score, n, rng)) and check_diagonal(score, n)[1]
    assert not check_diagonal(diagonal_bonus, n)[1]
    assert not check_equivariance(diagonal_bonus, n, rng)[0][1]

    def column_order(idx0, idx1):  # depends on file order: later intros look farther
        return score(idx0, idx1) + 0.5 * torch.arange(n)[None, :]

    shuffle = check_equivariance(column_order, n, np.random.default_rng(0))
    assert shuffle[1][0] == "metrics invariant to a shared shuffle" and not shuffle[1][1]
    states = ckpt["encoder_states"]
    assert check_text_statistics(ms, states, cache_dir, ["text:tfidf"])[1]
    leaky = dict(states)
    spec = next(k for k in states if k.endswith(":tfidf"))
    leaky[spec] = (
        TrainOnlyTfidf(*states[spec]["params"]).fit(list(ms.intros)).state_dict()
    )  # all intros
    name, ok, detail = check_text_statistics(ms, leaky, cache_dir, ["text:tfidf"])
    assert not ok and "NO" in detail
    # the train-rows half: a fit that also reads held-out intros moves the training rows
    import dataclasses

    import gmatch.features.views as views

    fitted = views.fitted_block

    def on_all_intros(view, ms, *args):
        return fitted(view, dataclasses.replace(ms, train_idx=np.arange(len(ms))), *args)

    monkeypatch.setattr(views, "fitted_block", on_all_intros)
    views.fit_tfidf.cache_clear()
    _, ok, detail = check_text_statistics(ms, {}, cache_dir, ["text:tfidf"])
    assert not ok and "train rows move" in detail, detail


def test_bad_checkpoints(trained, tmp_path):
    raw = (trained / "model.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(tmp_path / "cut.pt")
    ckpt = torch.load(trained / "model.pt", weights_only=True)
    ckpt["config"]["model"]["dim"] = 48  # another model config
    torch.save(ckpt, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="do not fit"):
        load_checkpoint(tmp_path / "other.pt")


def test_bad_override_and_bad_data(tmp_path, capsys):
    assert main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r")]) == 2
    assert "data folder not found" in capsys.readouterr().err
    assert main(["train", "--out", str(tmp_path / "r2"), "model.depth=3"]) == 2
    assert "'model.depth' is not a valid config key" in capsys.readouterr().err


def test_evaluate_a_folder_without_train_txt(trained, cache_dir, tmp_path):
    """The checkpoint carries its fitted TF-IDF, so a folder of unseen movies can be scored."""
    from conftest import make_folder

    folder = make_folder(tmp_path / "new", n=40, train=False, start=200, ocr_seeds=True)
    out = tmp_path / "eval_new"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(trained / "model.pt"),
                "--data",
                str(folder),
                "--cache-dir",
                str(cache_dir),
                "--out",
                str(out),
                "--quiet",
            ]
        )
        == 0
    )
    m = json.loads((out / "metrics.json").read_text())["metrics"]
    assert set(m) == {"official", "analysis"} and m["official"]["n"] == 40


def test_sweep_runs_a_grid_and_builds_the_table(tiny_dir, cache_dir, tmp_path, capsys):
    cfg = tmp_path / "grid.yaml"
    cfg.write_text(
        f"data: {{root: {tiny_dir}, cache_dir: {cache_dir}, poster_views: [image:efficientnet_lite0],"
        " intro_views: [text:minilm]}\n"
        "model: {dim: 32, prior: []}\ntrain: {steps: 20, eval_every: 10, episode_sizes: [16]}\n"
        "sweep:\n  model.n_layers: [0, 1]\n  seed: [0, 1]\n"
    )
    out = tmp_path / "grid"
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet"]) == 0
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == [
        "n_layers=0-seed=0",
        "n_layers=0-seed=1",
        "n_layers=1-seed=0",
        "n_layers=1-seed=1",
    ]
    table = (out / "results.md").read_text().splitlines()
    assert len(table) == 2 + 2 + 2 and "| 0 | 2 |" in table[2]  # one row per depth, 2 seeds each
    assert (
        table[-1].startswith("± = sample standard deviation (ddof = 1)") and "commit" in table[-1]
    )
    rows = [
        json.loads((out / r / "metrics.json").read_text())
        for r in ("n_layers=0-seed=0", "n_layers=0-seed=1")
    ]
    vals = [r["metrics"]["official"]["acc_mean"] for r in rows]
    assert f"{np.mean(vals):.3f} ± {np.std(vals, ddof=1):.3f}" in table[2]  # sample std, ddof = 1
    assert all(isinstance(r["git_dirty"], bool) and r["git_sha"] != "unknown" for r in rows)
    assert (out / "results.png").stat().st_size > 0
    # A rerun refuses finished runs unless told to skip them.
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet"]) == 2
    assert main(["sweep", str(cfg), "--out", str(out), "--quiet", "--skip-existing"]) == 0
    assert capsys.readouterr().out.count("finished, skipped") == 4
    # --only runs the grid points that carry all the given labels.
    part = tmp_path / "part"
    only = ["--only", "seed=1", "model.n_layers=0"]
    assert main(["sweep", str(cfg), "--out", str(part), "--quiet", *only]) == 0
    assert [p.name for p in part.iterdir() if p.is_dir()] == ["n_layers=0-seed=1"]
    assert main(["sweep", str(cfg), "--out", str(part), "--quiet", "--only", "seed=7"]) == 2
    assert "no grid point carries all of seed=7" in capsys.readouterr().err


def test_sweep_cases_cross_the_grid():
    from gmatch.sweep import grid_points, run_name

    pts = grid_points(
        {
            "cases": {
                "pix": {"data.poster_views": ["image:efficientnet_lite0"], "model.prior": []},
                "all": {},
            },
            "sweep": {"seed": [0, 1]},
        }
    )
    assert [run_name(labels) for labels, _ in pts] == [
        "case=pix-seed=0",
        "case=pix-seed=1",
        "case=all-seed=0",
        "case=all-seed=1",
    ]
    assert pts[0][1] == [
        'data.poster_views=["image:efficientnet_lite0"]',
        "model.prior=[]",
        "seed=0",
    ]
    assert pts[3][1] == ["seed=1"]
    assert grid_points({"sweep": {"seed": [3]}}) == [(["seed=3"], ["seed=3"])]


def test_stream_refusal_is_a_one_line_error(tiny_dir, cache_dir, tmp_path, capsys):
    """Large-N mode cannot run prior-guided attention: `gmatch evaluate --stream` says so in
    one line (exit 2, no traceback); the same checkpoint evaluates densely."""
    out = tmp_path / "guided"
    overrides = tiny({"model.n_layers": 1, "model.attn_prior": 1.0, "train.steps": 5})
    base = ["--data", str(tiny_dir), "--quiet"]
    assert main(["train", *base, "--out", str(out), f"data.cache_dir={cache_dir}", *overrides]) == 0
    capsys.readouterr()
    ckpt = str(out / "model.pt")
    rc = main(["evaluate", "--checkpoint", ckpt, "--stream", "--out", str(tmp_path / "s"), *base])
    err = capsys.readouterr().err
    assert rc == 2 and "prior-guided attention" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert main(["evaluate", "--checkpoint", ckpt, "--out", str(tmp_path / "d"), *base]) == 0
