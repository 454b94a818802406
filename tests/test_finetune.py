"""Fine-tuning the towers (gmatch.finetune): the split network is the frozen one, training
moves the tuned features, checkpoints reproduce them, resume is exact."""

import numpy as np
import pytest
import torch

import gmatch.training.loop as train_mod
from gmatch.checkpoint import checkpoint_features, load_checkpoint, save_checkpoint
from gmatch.config import ConfigError, load_config
from gmatch.data import load_image, load_movielens
from gmatch.encoders.registry import build_encoder
from gmatch.evaluate import predict_dist, split_metrics
from gmatch.features import load_features
from gmatch.finetune import (
    ImageTail,
    TextTail,
    _item_rng,
    augment_poster,
    build_towers,
    pad_states,
    tuned_encoder,
    weights_hash,
)
from gmatch.runs import streamed_split_metrics
from gmatch.training import train

FT = [
    "data.poster_views=[image:efficientnet_lite0]",
    "data.intro_views=[text:minilm]",
    "model.prior=[]",
    "model.dim=32",
    "train.steps=40",
    "train.folds=1",
    "train.eval_every=10",
    "train.episode_sizes=[16]",
    "train.warmup=2",
    "train.patience=1000",
    "train.augment_views=2",
    "train.finetune_lr=1e-3",
    "runtime.threads=2",
]


def conf_for(cache_dir, *extra):
    return load_config(None, [*FT, f"data.cache_dir={cache_dir}", *extra])


@pytest.mark.parametrize("blocks", [1, 2, 3])
def test_image_tail_of_trunk_is_the_frozen_encoder(tiny_dir, blocks):
    enc = build_encoder("image:efficientnet_lite0")
    ms = load_movielens(tiny_dir)
    ims = [load_image(p) for p in ms.poster_paths[:3]]
    tail = ImageTail(enc.model, blocks)
    x = torch.stack([enc.preprocess(im) for im in ims])
    got = tail(tail.trunk(x)).detach().numpy()
    np.testing.assert_allclose(got, enc.encode(ims), atol=1e-4, rtol=1e-4)
    # Only the tail trains; the trunk is frozen.
    trainable = {
        n.split(".")[0] + "." + n.split(".")[1]
        for n, p in tail.net.named_parameters()
        if p.requires_grad
    }
    assert trainable and all(t.startswith(("blocks.", "conv_head", "bn2")) for t in trainable)
    assert not any(p.requires_grad for p in tail.net.conv_stem.parameters())


def test_text_tail_of_trunk_is_the_frozen_encoder(tiny_dir):
    enc = build_encoder("text:minilm")
    ms = load_movielens(tiny_dir)
    texts = list(ms.intros[:5])
    tail = TextTail(enc.model, 2)
    h, mask = pad_states(tail.trunk(texts))
    np.testing.assert_allclose(tail(h, mask).detach().numpy(), enc.encode(texts), atol=1e-4)


def test_augmentation_is_fixed_per_item_and_stays_inside_the_poster(tiny_dir):
    im = load_image(load_movielens(tiny_dir).poster_paths[0])
    a = np.asarray(augment_poster(im, _item_rng("ab12" * 10, 1)))
    b = np.asarray(augment_poster(im, _item_rng("ab12" * 10, 1)))
    c = np.asarray(augment_poster(im, _item_rng("ab12" * 10, 2)))
    assert np.array_equal(a, b) and (a.shape != c.shape or not np.array_equal(a, c))
    assert a.shape[0] <= im.size[1] and a.shape[1] <= im.size[0]


def test_finetune_trains_the_tower_and_the_checkpoint_reproduces_it(tiny_dir, cache_dir, tmp_path):
    conf = conf_for(cache_dir, "train.finetune=[image]")
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    result = train(conf, ms, feats, progress=False)
    fit = [r["loss"] for r in result.history if not r.get("refit")]
    assert fit[-1] < fit[0]  # the loss falls
    frozen = feats.poster[0].values
    tuned = result.feats.tuned[(0, 0)].values
    assert tuned.shape == frozen.shape and not np.allclose(tuned, frozen, atol=1e-3)
    # Features not tuned stay the frozen ones (the model reads frozen text).
    assert not result.feats.tuned.get((1, 0))
    # A tuned encoder caches under its own key; the frozen cache file is untouched.
    (entry,) = result.feats.finetune
    assert set(entry["state"]) and all(
        k.startswith(("blocks.6", "blocks.5", "conv_head", "bn2")) for k in entry["state"]
    )
    enc = tuned_encoder(entry)
    assert enc.tuned == weights_hash(entry["state"])
    names = {p.name for p in cache_dir.glob("efficientnet_lite0-*.npz")}
    assert len(names) >= 2
    # The checkpoint (weights_only) gives the same D on the same data.
    path = tmp_path / "ft.pt"
    save_checkpoint(path, result.model, conf, result.feats)
    model, conf2, ckpt = load_checkpoint(path)
    again = checkpoint_features(path, ckpt, conf2, ms, cache_dir, progress=False)
    D1, D2 = predict_dist(result.model, result.feats), predict_dist(model, again)
    assert torch.equal(D1, D2)
    # Large-N mode scores the tuned views too: streamed ranks give the dense metrics.
    dense = split_metrics(D2, ms)
    streamed = streamed_split_metrics(model, again, ms, chunk=16)
    for block in ("official", "train"):
        for key in ("acc_dim0", "acc_dim1", "poster_to_intro/R@1", "intro_to_poster/R@10"):
            assert streamed[block][key] == pytest.approx(dense[block][key], abs=1e-12)
    # ... and differs from the frozen features' D under the same matcher (negative control).
    frozen_feats = load_features(ms, conf, progress=False)
    assert not torch.equal(D1, predict_dist(model, frozen_feats))


def test_text_finetune_moves_only_the_node_view_priors_stay_frozen(tiny_dir, cache_dir):
    conf = conf_for(
        cache_dir,
        "train.finetune=[text]",
        "train.steps=10",
        "train.folds=1",
        "model.prior=[ocr:minilm=text:minilm@1]",
        "data.poster_views=[image:efficientnet_lite0,ocr:minilm]",
    )
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    result = train(conf, ms, feats, progress=False)
    tuned = result.feats.tuned[(1, 0)].values
    assert not np.allclose(tuned, feats.intro[0].values, atol=1e-4)
    # The prior reads the frozen block (unchanged object), the node encoder the tuned one.
    assert result.feats.intro[0] is feats.intro[0]
    inputs = result.feats.inputs(np.arange(4))
    assert set(inputs["tuned1"]) == {0} and "tuned0" not in inputs


def test_finetune_resumes_exactly(tiny_dir, cache_dir, tmp_path, monkeypatch):
    conf = conf_for(cache_dir, "train.finetune=[image]", "train.refit=false")
    ms = load_movielens(tiny_dir)
    feats = load_features(ms, conf, progress=False)
    ref = predict_dist(*(lambda r: (r.model, r.feats))(train(conf, ms, feats, progress=False)))

    real, calls = train_mod._train_step, {"n": 0}

    def interrupted(*a, **k):
        calls["n"] += 1
        if calls["n"] == 25:  # after the state of step 20 was saved
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(train_mod, "_train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(conf, ms, feats, progress=False, state_path=tmp_path / "state")
    monkeypatch.setattr(train_mod, "_train_step", real)
    saved = torch.load(tmp_path / "state.fit.pt", weights_only=True)
    assert saved["step"] == 20 and saved["towers"]
    r = train(conf, ms, feats, progress=False, state_path=tmp_path / "state")
    assert torch.equal(ref, predict_dist(r.model, r.feats))


def test_finetune_refuses_what_it_cannot_tune(tiny_dir, cache_dir):
    ms = load_movielens(tiny_dir)
    conf = conf_for(cache_dir, "train.finetune=[image]", "data.poster_views=[ocr:minilm]")
    with pytest.raises(ConfigError, match="no image: view"):
        build_towers(conf, ms, load_features(ms, conf, progress=False), progress=False)
    with pytest.raises(ConfigError, match="ensemble"):
        train(conf_for(cache_dir, "train.finetune=[image]", "model.members=2"), ms, progress=False)
    with pytest.raises(ConfigError, match="finetune_blocks"):
        ImageTail(build_encoder("image:efficientnet_lite0").model, 9)
    with pytest.raises(ConfigError, match="train.finetune"):
        load_config(None, ["train.finetune=[audio]"])
