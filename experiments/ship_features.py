"""Write the read-only feature seeds shipped beside the course data (``data/features/``).

The default's all-mpnet-base-v2 views take ~8 min to extract on 2 cores, its
EfficientNet-Lite0 view ~40 s; shipping their rows for the course data (mpnet in
float16, EfficientNet in float32: the very rows the shipped checkpoint was trained on)
keeps a cold ``make run`` within minutes. A row in a seed is used instead of a locally
computed one, so every machine scores the course data on the same numbers; other data
sets are extracted as usual.

    python -m experiments.ship_features            # the default config's shipped views
    python -m experiments.ship_features data.ocr_model=v4 --keep   # add another reader's rows
"""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np

from gmatch.config import load_config
from gmatch.data import load_movielens
from gmatch.encoders.registry import build_encoder, parse_spec
from gmatch.features import (
    encoder_cache_key,
    extract,
    ocr_config,
    poster_lines,
    poster_texts,
    text_cache_key,
    write_seed,
)
from gmatch.priors import parse_prior, precomputed_pairs
from gmatch.text import split_sentences, strip_boilerplate

# encoders slow enough to ship, and the precision of their rows
SHIP = {"mpnet": np.float16, "efficientnet_lite0": np.float32}


def texts_of(ms, spec: str, cache_dir, ocr=None) -> list[str]:
    """The texts a spec encodes (as gmatch.features.extract builds them, with the OCR
    settings ``ocr``)."""
    view = parse_spec(spec)[0]
    if view == "text":
        return [strip_boilerplate(t) for t in ms.intros]
    if view == "sents":
        return [s for t in ms.intros for s in split_sentences(t)]
    if view == "ocrlines":
        return [x for lines in poster_lines(ms, cache_dir, False, ocr) for x in lines]
    return poster_texts(ms, cache_dir, False, segment=view == "ocrseg", ocr=ocr)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("overrides", nargs="*", help="config overrides (default: the default config)")
    p.add_argument("--out", default="data/features")
    p.add_argument("--keep", action="store_true", help="keep the rows the seeds already hold")
    args = p.parse_args(argv)
    conf = load_config(None, args.overrides)
    ms = load_movielens(conf.data.root)
    specs = set(conf.data.poster_views) | set(conf.data.intro_views)
    for item in conf.model.prior:
        specs |= set(parse_prior(item)[:2])
    specs |= {s for pair in precomputed_pairs(conf.model.prior) for s in pair[:2]}
    by_key: dict[str, list[str]] = {}
    dtypes = {}
    for spec in sorted(specs):
        view, encoder = parse_spec(spec)[:2]
        if encoder not in SHIP:
            continue
        ocr = ocr_config(conf.data)
        extract(ms, spec, conf.data.cache_dir, progress=True, ocr=ocr)  # every row cached
        if view == "image":
            key, item_keys = encoder_cache_key(spec, build_encoder(spec)), ms.poster_hashes()
        else:
            texts = [t for t in texts_of(ms, spec, conf.data.cache_dir, ocr) if t]
            key = text_cache_key(spec)
            item_keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
        by_key.setdefault(key, []).extend(item_keys)
        dtypes[key] = SHIP[encoder]
    for key, item_keys in by_key.items():
        out = write_seed(
            conf.data.cache_dir, key, item_keys, Path(args.out), dtypes[key], keep=args.keep
        )
        print(f"{out}: {len(set(item_keys))} rows, {out.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
