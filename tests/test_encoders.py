"""The real shipped encoders on a few real posters and intros."""

import numpy as np
import pytest
import torch
from conftest import DATA

from gmatch.data import load_movielens
from gmatch.encoders.image import EfficientNetLite0Encoder, load_image
from gmatch.encoders.registry import build_encoder
from gmatch.features import extract, poster_texts, text_cache_key

# ImageNet classes a movie poster plausibly looks like.
POSTERISH = {
    917: "comic book",
    916: "web site",
    921: "book jacket",
    549: "envelope",
    922: "menu",
    446: "binder",
    692: "packet",
    709: "pencil box",
    454: "bookshop",
}


@pytest.fixture(scope="module")
def effnet():
    return EfficientNetLite0Encoder()


def test_efficientnet_weights_give_confident_sensible_classes(effnet):
    ims = [load_image(DATA / "poster" / f"{i}.jpg") for i in (1, 10, 260)]
    probs = effnet.classify(ims).softmax(-1)
    conf, cls = probs.max(-1)
    assert all(int(c) in POSTERISH for c in cls), cls
    assert conf.min() > 0.5, conf
    # A randomly initialised net is not confident: the load is what makes it so.
    import timm

    rand = timm.create_model("tf_efficientnet_lite0", pretrained=False).eval()
    import torch

    with torch.inference_mode():
        x = torch.stack([effnet.preprocess(im) for im in ims])
        assert rand(x).softmax(-1).max() < 0.2


def test_execution_settings_do_not_change_features(effnet):
    """Micro-batch size and memory layout are speed settings only."""
    ims = [load_image(DATA / "poster" / f"{i}.jpg") for i in (1, 10, 260)]
    ref = effnet.encode(ims)
    other = EfficientNetLite0Encoder(micro_batch=3, channels_last=True)
    other.model = effnet.model
    assert other.settings() == effnet.settings()  # same cache key
    np.testing.assert_allclose(other.encode(ims), ref, atol=1e-4)
    assert np.abs(ref[0] - ref[1]).max() > 0.1  # and the posters do differ


def test_corrupt_and_odd_images(tmp_path):
    bad = tmp_path / "7.jpg"
    bad.write_bytes((DATA / "poster" / "1.jpg").read_bytes()[:300])  # truncated
    with pytest.raises(ValueError, match=r"7\.jpg: cannot decode poster image"):
        load_image(bad)
    from PIL import Image

    for mode in ("L", "CMYK", "P"):
        p = tmp_path / f"{mode}.jpg"
        im = Image.open(DATA / "poster" / "1.jpg").convert(mode)
        im.save(p, format="PNG" if mode == "P" else "JPEG")  # PNG bytes in a .jpg
        assert load_image(p).mode == "RGB"


def test_feature_cache_hit_and_corrupt_rebuild(tiny_dir, cache_dir, monkeypatch):
    ms = load_movielens(tiny_dir).subset(np.arange(6))
    first = extract(ms, "text:minilm", cache_dir, progress=False)
    assert first.values.shape == (6, 384) and first.valid.all()

    from gmatch.encoders.text import SentenceTransformerEncoder

    def boom(*a, **k):
        raise AssertionError("encoder called on a cache hit")

    # A second run, a subset or a shuffled copy encodes nothing.
    perm = np.array([3, 1, 5, 0, 2, 4])
    with monkeypatch.context() as m:
        m.setattr(SentenceTransformerEncoder, "encode", boom)
        again = extract(ms.subset(perm), "text:minilm", cache_dir, progress=False)
    assert np.allclose(again.values, first.values[perm])
    # Corrupt the cache file: it is rebuilt, not trusted.
    f = cache_dir / f"{text_cache_key('text:minilm')}.npz"
    assert f.exists()  # the frozen encoder's file (a tuned one caches under another key)
    f.write_bytes(b"garbage")
    rebuilt = extract(ms, "text:minilm", cache_dir, progress=False)
    assert np.allclose(rebuilt.values, first.values, atol=1e-5)


def test_minilm_semantics(tiny_dir, cache_dir):
    from gmatch.encoders.text import SentenceTransformerEncoder, minilm_path

    enc = SentenceTransformerEncoder(minilm_path())
    x = enc.encode(
        [
            "a cowboy doll is jealous of a new toy",
            "toys come alive in a boy's room",
            "a submarine crew hunts a nuclear missile",
        ]
    )
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    assert x[0] @ x[1] > x[0] @ x[2]


def test_ocr_reads_titles_and_marks_textless(tmp_path):
    from conftest import make_folder

    folder = make_folder(tmp_path / "d", n=2, train=False, start=1)  # Jumanji, Grumpier Old Men
    ms = load_movielens(folder)
    texts = poster_texts(ms, tmp_path / "cache", progress=False)
    assert "jumanji" in texts[0]
    assert "grumpier" in texts[1] or "old men" in texts[1]
    # A blank poster has no text: the view is marked invalid (the model uses a learned vector).
    from PIL import Image

    Image.new("RGB", (182, 268), (40, 40, 40)).save(folder / "poster" / "2.jpg")
    blank = extract(load_movielens(folder), "ocr:minilm", tmp_path / "cache", progress=False)
    assert not blank.valid[0] and blank.valid[1]
    assert np.all(blank.values[0] == 0)


def test_ocr_cache_hit_skips_ocr(tmp_path, monkeypatch):
    from conftest import make_folder

    from gmatch.encoders import ocr

    folder = make_folder(tmp_path / "d", n=2, train=False, start=1)
    ms = load_movielens(folder)
    first = poster_texts(ms, tmp_path / "cache", progress=False)

    def boom(*a, **k):
        raise AssertionError("OCR ran on a cache hit")

    monkeypatch.setattr(ocr, "ProcessPoolExecutor", boom)
    assert poster_texts(ms, tmp_path / "cache", progress=False) == first
    # A corrupt cache is not trusted: OCR runs again (and here, fails loudly).
    (cache,) = (tmp_path / "cache").glob("ocr_rapidocr_*.json")
    cache.write_text("{not json")
    with pytest.raises(AssertionError, match="OCR ran"):
        poster_texts(ms, tmp_path / "cache", progress=False)


def test_onnx_backend_gives_the_torch_features():
    pytest.importorskip("onnx")
    from gmatch.encoders.image import EfficientNetLite0Encoder, load_image

    paths = sorted((DATA / "poster").glob("*.jpg"))[:3]
    ims = [load_image(p) for p in paths]
    ref = EfficientNetLite0Encoder().encode(ims)
    for flip in (False, True):
        torch_enc, onnx_enc = (
            EfficientNetLite0Encoder(flip=flip),
            EfficientNetLite0Encoder(flip=flip, backend="onnx"),
        )
        assert onnx_enc.settings() == torch_enc.settings()  # same cache key: same features
        got = onnx_enc.encode(ims)
        assert np.abs(got - torch_enc.encode(ims)).max() < 1e-4 * np.abs(ref).max()
    assert (
        np.abs(EfficientNetLite0Encoder(flip=True, backend="onnx").encode(ims) - ref).max() > 1e-3
    )  # flip matters


def test_ocr_settings_key_keeps_the_shipped_cache_and_separates_new_settings():
    import json

    from gmatch.encoders.ocr import OCRConfig

    shipped = json.loads((DATA.parent / "ocr" / "movielens_rapidocr.json").read_text())["settings"]
    v4 = OCRConfig(model="v4")  # the reader the shipped movielens_rapidocr.json was read with
    assert v4.key() == shipped  # adding rec_width / model / thresholds did not orphan it
    keys = {
        v4.key(),
        OCRConfig(model="v4", rec_width=96).key(),
        OCRConfig(model="v4", det_limit_side_len=320).key(),
    }
    assert len(keys) == 3
    # cleaning only, not what is cached
    assert OCRConfig(model="v4", min_confidence=0.9).key() == shipped


def test_tuned_ocr_engine_reads_what_rapidocr_reads():
    """gmatch's OCR engine (arena sessions, one recognizer forward per line) feeds every
    line the exact tensor RapidOCR's batched path feeds it, and reads the same lines
    as RapidOCR's own path and as the shipped cache (written by that path). Negative
    control: padding each line to its own width (what "unbatched" would naively mean)
    gives other tensors and other readings, so the comparison can fail."""
    import json

    from gmatch.encoders import ocr
    from gmatch.encoders.ocr import OCRConfig

    ids = (1, 10, 260, 2, 31, 48, 150, 500)  # posters with several lines, wide and short
    paths = [DATA / "poster" / f"{i}.jpg" for i in ids]
    stock, tuned = OCRConfig(model="v4", engine="rapidocr"), OCRConfig(model="v4")
    assert stock.key() == tuned.key()  # same cache: the engine does not change what is read

    def tensors(conf):
        """Per line, the recognizer input it was given (rows of a batch = lines)."""
        rec = ocr.ocr_engine(conf).text_rec
        rec = getattr(rec, "rec", rec)
        session, seen = rec.session, []

        def spy(x):
            seen.extend(x)
            return session(x)

        rec.session = spy
        try:
            lines = [ocr.read_one((p, conf)) for p in paths]
        finally:
            rec.session = session
        return lines, sorted(seen, key=lambda t: (t.shape, t.tobytes()))

    ref_lines, ref_x = tensors(stock)
    got_lines, got_x = tensors(tuned)
    assert len(got_x) == len(ref_x) >= 3 * len(ids)
    assert all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(got_x, ref_x))
    assert got_lines == ref_lines
    shipped = json.loads((DATA.parent / "ocr" / "movielens_rapidocr.json").read_text())["items"]
    ms = load_movielens(DATA)
    by_id = dict(zip(ms.ids, ms.poster_hashes()))
    assert got_lines == [shipped[by_id[i]] for i in ids]

    # The detector's input: the table-driven normalisation gives RapidOCR's array.
    from gmatch.data import load_image as load

    ours, theirs = ocr.ocr_engine(tuned).text_det, ocr.ocr_engine(stock).text_det
    for p in paths[:3]:
        img = np.ascontiguousarray(np.asarray(load(p))[:, :, ::-1])
        a = ours.get_preprocess(max(img.shape))(img)
        b = theirs.get_preprocess(max(img.shape))(img)
        assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    shifted = theirs.get_preprocess(max(img.shape))
    shifted.mean = shifted.mean + 1e-3  # control: another mean gives another table
    assert not np.array_equal(ocr._TableDetPreProcess(shifted)(img), b)

    # Negative control: each line padded to max(its own width, rec_width).
    rec = ocr.ocr_engine(tuned).text_rec
    original = rec.__class__.__call__

    def own_width(self, img_list, return_word_box=False):
        r = self.rec
        out = []
        for img in img_list:
            ratio = img.shape[1] / img.shape[0]
            padded = max(r.rec_image_shape[2] / r.rec_image_shape[1], ratio)
            x = r.resize_norm_img(img, padded)[np.newaxis].astype(np.float32)
            out.append(r.postprocess_op(r.session(x)[0])[0])
        return out, 0.0

    rec.__class__.__call__ = own_width
    try:
        bad_lines, bad_x = tensors(tuned)
    finally:
        rec.__class__.__call__ = original
    assert len(bad_x) == len(ref_x)
    assert not all(a.shape == b.shape and np.array_equal(a, b) for a, b in zip(bad_x, ref_x))
    assert bad_lines != ref_lines
    with pytest.raises(ValueError, match="engine"):
        ocr.ocr_engine(OCRConfig(engine="fast"))


def test_ocr_settings_follow_the_config_into_features_and_checkpoints(tmp_path):
    """data.ocr_* choose what is read (their own cache file), and a checkpoint trained
    with them evaluates with them; the default settings read other lines (control)."""
    from conftest import make_folder

    from gmatch.checkpoint import checkpoint_features, load_checkpoint, save_checkpoint
    from gmatch.config import load_config
    from gmatch.encoders.ocr import OCRConfig
    from gmatch.features import load_features
    from gmatch.training import train

    folder = make_folder(tmp_path / "d", n=24, n_train=16)
    cache = tmp_path / "cache"
    conf = load_config(
        None,
        [
            f"data.root={folder}",
            f"data.cache_dir={cache}",
            "data.poster_views=[ocr:minilm]",
            "data.intro_views=[text:minilm]",
            "data.ocr_det_side=320",
            "data.ocr_extra_sides=[]",
            "data.ocr_rec_width=96",
            "model.prior=[]",
            "model.dim=8",
            "train.steps=2",
            "train.folds=1",
            "train.eval_every=1",
            "train.episode_sizes=[8]",
            "train.refit=false",
        ],
    )
    fast = OCRConfig(det_limit_side_len=320, rec_width=96)
    ms = load_movielens(folder)
    feats = load_features(ms, conf, progress=False)
    assert sorted(cache.glob("ocr_rapidocr_*.json")) == [cache / f"ocr_rapidocr_{fast.key()}.json"]
    expected = extract(ms, "ocr:minilm", cache, False, ocr=fast).values
    assert np.array_equal(feats.poster[0].values, expected)
    result = train(conf, ms, feats, progress=False)
    save_checkpoint(tmp_path / "m.pt", result.model, conf, feats)
    _, loaded, ckpt = load_checkpoint(tmp_path / "m.pt")
    again = checkpoint_features(tmp_path / "m.pt", ckpt, loaded, ms, cache, progress=False)
    assert np.array_equal(again.poster[0].values, expected)
    assert len(list(cache.glob("ocr_rapidocr_*.json"))) == 1  # nothing read with other settings
    default = extract(ms, "ocr:minilm", cache, False, ocr=OCRConfig()).values
    assert len(list(cache.glob("ocr_rapidocr_*.json"))) == 2
    assert not np.array_equal(default, expected)


def test_region_elements_are_the_pooled_feature_map_cells(tmp_path):
    """regions:efficientnet_lite0: per poster one element per grid cell, the cell's mean
    of the feature map (normalised) and its one-hot position (control: another poster's
    cells differ)."""
    import torch
    import torch.nn.functional as F

    from gmatch.encoders.image import REGION_GRID, EfficientNetLite0Encoder, load_image

    ms = load_movielens(DATA).subset(np.arange(3))
    block = extract(ms, "regions:efficientnet_lite0", tmp_path, progress=False)
    cells = REGION_GRID[0] * REGION_GRID[1]
    assert block.values.shape == (3 * cells, 1280 + cells)
    assert np.array_equal(block.owner, np.repeat(np.arange(3), cells))
    assert np.array_equal(block.values[:cells, 1280:], np.eye(cells))
    enc = EfficientNetLite0Encoder()
    with torch.no_grad():
        fmap = enc.model.forward_features(enc.preprocess(load_image(ms.poster_paths[1]))[None])
        want = F.normalize(F.adaptive_avg_pool2d(fmap, REGION_GRID).flatten(2)[0].T, dim=-1)
    got = torch.from_numpy(block.values[cells : 2 * cells, :1280])
    assert torch.allclose(got, want, atol=1e-4)
    other = torch.from_numpy(block.values[:cells, :1280])
    assert not torch.allclose(other, want, atol=1e-2)


def test_onnx_text_backend_gives_torchs_embeddings():
    """mpnet and MiniLM through ONNX Runtime (the default of the shipped encoders) embed
    real intros and short OCR-like strings as sentence-transformers does in torch.
    Control: the same export with CLS instead of mean pooling is far off, so the
    comparison sees a wrong pipeline."""
    from gmatch.data import load_movielens
    from gmatch.encoders.text import SentenceTransformerEncoder, minilm_path, onnx_text_session
    from gmatch.text import strip_boilerplate

    ms = load_movielens(DATA)
    texts = [strip_boilerplate(t) for t in ms.intros[:40]] + ["DARK", "the long kiss goodnight"]
    torch_enc = SentenceTransformerEncoder(minilm_path, name="minilm")
    onnx_enc = SentenceTransformerEncoder(minilm_path, name="minilm", backend="onnx")
    onnx_enc._model = torch_enc.model  # one set of weights
    ref, got = torch_enc.encode(texts), onnx_enc.encode(texts)
    assert got.shape == ref.shape and np.abs(got - ref).max() < 1e-5
    assert build_encoder("text:mpnet").backend == "onnx"  # the shipped encoders' default
    assert SentenceTransformerEncoder(minilm_path).backend == "torch"  # any other model's

    class CLS(torch.nn.Module):
        def __init__(self, m):
            super().__init__()
            self.m = m

        def forward(self, input_ids, attention_mask):
            return self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state[
                :, 0
            ]

    onnx_enc._session = onnx_text_session(CLS(torch_enc.model[0].auto_model))
    wrong = onnx_enc.encode(texts)
    assert np.abs(wrong / np.linalg.norm(wrong, axis=1, keepdims=True) - ref).max() > 0.1


def test_int8_text_backend_is_quantised_and_close():
    """``onnx-int8`` (``text:mpnet:int8``) runs a session whose matrix products are
    int8: its embeddings of real intros differ from the float session's (so the
    quantisation ran) but stay close in direction, and each intro's nearest float
    embedding is its own. The variant is its own encoder: another name, another cache."""
    from gmatch.config import ConfigError
    from gmatch.data import load_movielens
    from gmatch.encoders.text import SentenceTransformerEncoder, minilm_path
    from gmatch.features import encoder_cache_key
    from gmatch.text import strip_boilerplate

    ms = load_movielens(DATA)
    texts = [strip_boilerplate(t) for t in ms.intros[:40]] + ["DARK", "the long kiss goodnight"]
    ref_enc = SentenceTransformerEncoder(minilm_path, name="minilm", backend="onnx")
    int8_enc = SentenceTransformerEncoder(minilm_path, name="minilm-int8", backend="onnx-int8")
    int8_enc._model = ref_enc.model  # one set of weights
    ref, got = ref_enc.encode(texts), int8_enc.encode(texts)
    cos = (ref * got).sum(1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(got, axis=1)
    assert np.abs(got - ref).max() > 1e-3  # control: not the float session
    assert cos.min() > 0.98, cos.min()
    assert ((got @ ref.T).argmax(1) == np.arange(len(texts))).all()
    enc = build_encoder("text:mpnet:int8")
    assert (enc.name, enc.backend) == ("mpnet-int8", "onnx-int8")
    assert encoder_cache_key("text:mpnet:int8", enc) != encoder_cache_key(
        "text:mpnet", build_encoder("text:mpnet")
    )
    with pytest.raises(ConfigError, match="int8"):
        build_encoder("text:mpnet:int4")
    # A caller's other backend (the new-posters benchmark's torch reference) is refused,
    # not silently replaced; the int8 backend itself is accepted.
    with pytest.raises(ConfigError, match="backend=torch"):
        build_encoder("text:mpnet:int8", backend="torch")
    assert build_encoder("text:mpnet:int8", backend="onnx-int8").backend == "onnx-int8"


def test_int8_quantiser_hint_is_muted_without_muting_anyone_else():
    """quantize_int8 drops the quantiser's own root-logger hints below ERROR with a filter,
    not by raising the root level: another module's warning at the same time still passes,
    and so does the quantiser's own error."""
    import logging

    from gmatch.encoders.exported import _QuantiserHints

    def record(path, level=logging.WARNING):
        return logging.LogRecord("root", level, path, 1, "msg", None, None)

    hint = _QuantiserHints()
    quantiser = "/x/site-packages/onnxruntime/quantization/quantize.py"
    assert not hint.filter(record(quantiser))
    assert hint.filter(record(quantiser, logging.ERROR))
    assert hint.filter(record("/x/site-packages/gmatch/cli.py"))  # control: others pass
