"""k-fold selection (train.folds): folds that partition the training positions, fold
models that never see their own fold, the bag of fold models as one checkpoint, and the
fold-paired differences a study decides with."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import make_folder, tiny

from gmatch.cli import main
from gmatch.config import ConfigError, load_config
from gmatch.data import load_movielens
from gmatch.models import Ensemble, Matcher
from gmatch.training import fold_split
from gmatch.training import loop as train_mod

FAST = tiny({"train.episode_sizes": "[32,64]"}, drop=("train.folds",))


def mid_config(mid_dir, cache_dir, *overrides: str):
    """The tiny config on the mid-size folder, with ``overrides``."""
    return load_config(
        None, [f"data.root={mid_dir}", f"data.cache_dir={cache_dir}", *overrides, *FAST]
    )


def test_folds_partition_the_positions_whatever_their_order():
    pos = np.arange(100, 277)
    folds = fold_split(pos, 5, seed=0)
    assert np.array_equal(np.sort(np.concatenate(folds)), pos)  # cover, disjoint
    assert max(map(len, folds)) - min(map(len, folds)) <= 1
    shuffled = fold_split(np.random.default_rng(3).permutation(pos), 5, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(folds, shuffled))  # not file order
    other = fold_split(pos, 5, seed=1)  # control: the seed moves movies between folds
    assert not all(np.array_equal(a, b) for a, b in zip(folds, other))
    with pytest.raises(ConfigError, match="folds"):
        fold_split(pos[:3], 5, seed=0)


@pytest.fixture(scope="module")
def mid_dir(tmp_path_factory):
    # 180 movies, 120 training pairs: 3 folds of 40 (k = 2 per fold)
    return make_folder(tmp_path_factory.mktemp("data") / "mid", n=180, n_train=120, ocr_seeds=True)


def test_fold_models_never_train_on_their_fold_nor_on_heldout(mid_dir, cache_dir, monkeypatch):
    seen = []
    real = train_mod._fit

    def spy(conf, feats, phase, *a, **k):
        seen.append((phase.name, phase.train_pos.copy(), phase.val_pos.copy()))
        return real(conf, feats, phase, *a, **k)

    monkeypatch.setattr(train_mod, "_fit", spy)
    ms = load_movielens(mid_dir)
    conf = mid_config(
        mid_dir,
        cache_dir,
        "train.folds=3",
        "train.fold_model=bag",
        "runtime.train_workers=1",  # the default; the spy counts this process's phases
    )
    result = train_mod.train(conf, ms, progress=False)
    assert [name for name, *_ in seen] == ["fit"] * 3
    train = set(ms.train_idx.tolist())
    vals = [set(v.tolist()) for _, _, v in seen]
    assert set().union(*vals) == train and sum(map(len, vals)) == len(train)
    for (_, fit, _), v in zip(seen, vals):
        assert not (set(fit.tolist()) & v)  # never its own fold
        assert set(fit.tolist()) | v == train  # nothing held out
    cv = result.cv
    assert cv["folds"] == 3 and len(cv["fold_acc"]) == 3
    assert cv["cv_acc"] == pytest.approx(np.mean(cv["fold_acc"]))
    assert cv["cv_se"] == pytest.approx(np.std(cv["fold_acc"], ddof=1) / np.sqrt(3))
    assert isinstance(result.model, Ensemble) and len(result.model.members) == 3

    seen.clear()
    refit = mid_config(
        mid_dir,
        cache_dir,
        "train.folds=3",
        "train.fold_model=refit",
        "train.refits=1",
        "runtime.train_workers=1",
    )
    result = train_mod.train(refit, ms, progress=False)
    assert isinstance(result.model, Matcher)
    assert seen[-1][0] == "refit" and set(seen[-1][1].tolist()) == train
    seen.clear()  # the default: a seed ensemble of refits, each on every training pair
    refit.train.refits = 2
    result = train_mod.train(refit, ms, progress=False)
    assert isinstance(result.model, Ensemble) and len(result.model.members) == 2
    assert [name for name, *_ in seen] == ["fit"] * 3 + ["refit"] * 2
    assert all(set(fit.tolist()) == train and not len(v) for _, fit, v in seen[3:])


@pytest.mark.parametrize("fold_model", ["bag", "refit"])
def test_a_k_fold_run_is_one_checkpoint_that_reproduces_D(mid_dir, cache_dir, tmp_path, fold_model):
    """The bag of fold models and the seed ensemble of refits (the default) each save
    as one checkpoint that `gmatch evaluate` turns back into the run's D."""
    out = tmp_path / fold_model
    common = ["--data", str(mid_dir), "--quiet"]
    args = [
        "train",
        *common,
        "--out",
        str(out),
        f"data.cache_dir={cache_dir}",
        "train.folds=3",
        f"train.fold_model={fold_model}",
        "train.refits=2",
        *FAST,
    ]
    assert main(args) == 0
    rec = json.loads((out / "metrics.json").read_text())
    assert len(rec["cv"]["fold_acc"]) == 3 and rec["val_acc"] == rec["cv"]["cv_acc"]
    ev = tmp_path / "eval"
    assert (
        main(
            [
                "evaluate",
                "--checkpoint",
                str(out / "model.pt"),
                *common,
                "--cache-dir",
                str(cache_dir),
                "--out",
                str(ev),
            ]
        )
        == 0
    )
    assert np.allclose(np.load(ev / "D.npy"), np.load(out / "D.npy"), atol=1e-5)
    if fold_model == "refit":
        return
    with pytest.raises(ConfigError, match="members"):
        conf = mid_config(
            mid_dir,
            cache_dir,
            "train.folds=3",
            "model.members=2",
        )
        train_mod.train(conf, load_movielens(mid_dir), progress=False)


def test_paired_differences_pair_by_seed_and_fold(tmp_path):
    """Fabricated runs where case b beats a by exactly 0.01 on every fold of every seed,
    except one fold (+0.03): Δcv is their mean over the 2 x 3 pairs, with its se."""
    from experiments import paired

    for case, bump in (("a", 0.0), ("b", 0.01)):
        for seed in (0, 1):
            folds = [
                0.5 + 0.1 * f + bump + (0.02 if case == "b" and f == 2 and seed == 1 else 0)
                for f in range(3)
            ]
            run = tmp_path / f"case={case}-seed={seed}"
            run.mkdir()
            rec = {
                "overrides": [f"case={case}", f"seed={seed}"],
                "val_acc": float(np.mean(folds)),
                "cv": {"fold_acc": folds, "cv_acc": float(np.mean(folds))},
                "metrics": {"heldout": {"acc_dim0": 0.4, "acc_dim1": 0.4}},
            }
            (run / "metrics.json").write_text(json.dumps(rec))
    assert paired.main([str(tmp_path), "--ref", "a", "--out", str(tmp_path / "out")]) == 0
    text = (tmp_path / "out" / "results.md").read_text()
    d = [0.01] * 5 + [0.03]
    se = np.std(d, ddof=1) / np.sqrt(6)
    assert f"+{np.mean(d):.4f} ± {se:.4f} (n = 6)" in text


def test_streamed_subsets_equal_dense_for_l0_and_are_refused_with_attention(mid_dir, cache_dir):
    """Large-N mode's held-out and train blocks equal the dense path's for a model without
    attention; with an attention unit (scrambled: a fresh unit is the identity) the subset
    forward would differ from the dense slice, so only the official block is streamed.
    Control: that model's own subset forward really differs from the dense slice."""
    from conftest import scramble_

    from gmatch.evaluate import predict_dist, split_metrics
    from gmatch.features import load_features
    from gmatch.runs import streamed_split_metrics
    from gmatch.training import new_model

    ms = load_movielens(mid_dir)
    for layers in (0, 1):
        conf = mid_config(
            mid_dir,
            cache_dir,
            f"model.n_layers={layers}",
        )
        feats = load_features(ms, conf, progress=False)
        model = scramble_(new_model(conf, feats), seed=layers, std=0.05).eval()
        dense = split_metrics(predict_dist(model, feats), ms)
        streamed = streamed_split_metrics(model, feats, ms, chunk=50)
        if layers == 0:
            for block in ("official", "heldout", "train"):
                for key in ("acc_dim0", "acc_dim1", "poster_to_intro/R@1", "intro_to_poster/R@5"):
                    assert streamed[block][key] == pytest.approx(dense[block][key], abs=1e-9)
        else:
            assert set(streamed) == {"official", "subsets"} and "n_layers" in streamed["subsets"]
            for key in ("acc_dim0", "acc_dim1"):
                assert streamed["official"][key] == pytest.approx(dense["official"][key], abs=0.02)
            held = ms.heldout_idx
            own = predict_dist(model, feats.subset(held))
            assert not torch.allclose(own, predict_dist(model, feats)[held][:, held], atol=1e-4)


def test_nested_cv_never_trains_on_the_outer_fold_and_its_refit_is_the_configs(
    mid_dir, cache_dir, monkeypatch
):
    """experiments.protocol: every phase of every protocol trains and early-stops on
    the inner pairs only (the outer fold is never a training or validation pair), and
    its refit and its seed ensemble of refits are exactly ``train.fold_model=refit``
    with ``train.refits`` 1 and 2. Control: the next seed's refit is another model."""
    from experiments import protocol

    ms = load_movielens(mid_dir)
    conf = mid_config(
        mid_dir,
        cache_dir,
        "train.folds=2",
        "runtime.train_workers=1",  # the default; the spy counts this process's phases
    )
    outer = fold_split(np.sort(ms.train_idx), 3, seed=0)[1]
    seen = []
    real = train_mod._fit

    def spy(conf, feats, phase, *a, **k):
        seen.append(set(phase.train_pos.tolist()) | set(phase.val_pos.tolist()))
        return real(conf, feats, phase, *a, **k)

    monkeypatch.setattr(train_mod, "_fit", spy)
    inner = set(ms.train_idx.tolist()) - set(outer.tolist())
    inner_ms = protocol.dataclasses.replace(ms, train_idx=np.sort(list(inner)))
    feats = protocol.load_features(inner_ms, conf, progress=False)
    models = protocol.protocol_models(conf, inner_ms, feats, members=2)
    assert set(models) == set(protocol.PROTOCOLS)
    assert len(seen) == 2 + 2  # two fold models, two refits
    assert all(s <= inner for s in seen) and set().union(*seen) == inner
    ref = mid_config(
        mid_dir,
        cache_dir,
        "train.folds=2",
        "train.fold_model=refit",
        "train.refits=2",
    )
    expected = train_mod.train(ref, inner_ms, feats, progress=False).model  # 2 refits
    D = protocol.predict_dist
    assert isinstance(expected, Ensemble) and len(expected.members) == 2
    assert torch.equal(D(models["refit"][0], feats), D(expected.members[0], feats))
    assert torch.equal(D(models["ens5"][0], feats), D(expected, feats))
    # control: the second seed's refit is another model
    assert not torch.equal(D(expected.members[1], feats), D(expected.members[0], feats))


def test_validation_scores_the_fold_alone_only_where_that_is_the_full_forwards_slice(
    mid_dir, cache_dir, monkeypatch
):
    """A model whose pair scores depend on their two movies alone (no attention, no local
    stage) is validated on the fold's movies only: the same history and model as scoring
    every movie and slicing. Control: with an attention unit (re-initialised: a fresh unit
    is the identity) a subset's own forward differs from the slice, so such a model is
    not marked independent."""
    from conftest import scramble_

    from gmatch.evaluate import predict_dist
    from gmatch.models import independent_pairs
    from gmatch.training import new_model

    ms = load_movielens(mid_dir)
    conf = mid_config(mid_dir, cache_dir, "train.folds=2", "train.fold_model=bag")
    fast = train_mod.train(conf, ms, progress=False)
    assert independent_pairs(fast.model)
    monkeypatch.setattr(train_mod, "independent_pairs", lambda model: False)
    slow = train_mod.train(conf, ms, progress=False)  # every movie scored, then sliced
    assert fast.history == slow.history
    feats = train_mod.load_features(ms, conf, progress=False)
    assert torch.equal(predict_dist(fast.model, feats), predict_dist(slow.model, feats))
    monkeypatch.undo()
    attn = mid_config(mid_dir, cache_dir, "train.folds=2", "model.n_layers=1")
    model = scramble_(new_model(attn, feats))
    assert not independent_pairs(model)
    sub = np.arange(0, len(ms), 3)
    assert not torch.allclose(
        predict_dist(model, feats, sub), predict_dist(model, feats)[sub][:, sub]
    )


def test_fold_models_and_refits_do_not_depend_on_the_process_they_train_in(
    mid_dir, cache_dir, monkeypatch
):
    """runtime.train_workers moves phases to worker processes, not what they compute: 2
    fold models and 2 refits trained by 2 forked workers give the same history, cv block
    and D, bitwise, as one process at the same thread count (1 per phase). Control: when
    phases do not seed themselves, a forked worker starts from the parent's random state
    instead of where the previous phase left it, and the check sees the models differ."""
    from gmatch.evaluate import predict_dist
    from gmatch.features import load_features
    from gmatch.training import state as state_mod

    ms = load_movielens(mid_dir)

    def run(workers: int, threads: int):
        conf = mid_config(
            mid_dir,
            cache_dir,
            "train.folds=2",
            "train.fold_model=refit",
            "train.refits=2",
            f"runtime.threads={threads}",
            f"runtime.train_workers={workers}",
        )
        feats = load_features(ms, conf, progress=False)
        res = train_mod.train(conf, ms, feats, progress=False)
        return predict_dist(res.model, feats), res.cv, res.history

    one, two = run(1, 1), run(2, 2)  # two workers at 2 threads: 1 thread each
    assert torch.equal(one[0], two[0]) and one[1] == two[1] and one[2] == two[2]
    assert len(one[1]["fold_acc"]) == 2 and sum("member" in r for r in one[2]) > 0
    monkeypatch.setattr(state_mod, "seed_everything", lambda seed: None)
    torch.manual_seed(0)
    one = run(1, 1)
    torch.manual_seed(0)
    two = run(2, 2)
    assert not torch.equal(one[0], two[0])
