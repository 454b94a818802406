"""Fine-tuning the towers: a forward + backward of the tuned tails vs the whole towers."""

from __future__ import annotations

import numpy as np
import torch

from benchmarks.common import DATA, timeit
from gmatch.data import load_image, load_movielens
from gmatch.encoders.registry import build_encoder
from gmatch.finetune import ImageTail, TextTail, pad_states
from gmatch.text import strip_boilerplate


def bench_finetune(n: int = 128, repeat: int = 3) -> list[dict]:
    """One training step's tower cost (forward + backward) for ``n`` posters / intros:
    the tail that ``train.finetune`` trains on cached trunk activations vs the naive
    reference, the whole tower trained from pixels / tokens. Variants interleaved,
    ``repeat`` times each, median."""

    ms = load_movielens(DATA)
    enc = build_encoder("image:efficientnet_lite0")
    x = torch.stack([enc.preprocess(load_image(p)) for p in ms.poster_paths[:n]])
    tails = {k: ImageTail(enc.model, k) for k in (1, 2, 3, 8)}
    inputs = {k: t.trunk(x) for k, t in tails.items()}
    full = tails[8]  # every stage trainable: the trunk is the stem only
    for p_ in full.net.parameters():
        p_.requires_grad_(True)

    def step(fn):
        def run():
            fn().sum().backward()

        return run

    tenc = build_encoder("text:mpnet")
    texts = sorted((strip_boilerplate(t) for t in ms.intros[:n]), key=len)
    ttail = TextTail(tenc.model, 1)
    h, mask = pad_states(ttail.trunk(texts))
    st = tenc.model
    st.train()
    for p_ in st.parameters():
        p_.requires_grad_(True)
    tok = (getattr(st, "preprocess", None) or st.tokenize)(texts)

    variants = {
        **{
            f"image tail, last {k} stage(s)": step(lambda k=k: tails[k](inputs[k]))
            for k in (1, 2, 3)
        },
        "image, whole network from pixels": step(
            lambda: full.net.forward_head(full.net.forward_features(x), pre_logits=True)
        ),
        "text tail, last mpnet layer": step(lambda: ttail(h, mask)),
        "text, whole mpnet from tokens": step(lambda: st(tok)["sentence_embedding"]),
    }
    times = {k: [] for k in variants}
    for fn in variants.values():  # warm-up
        fn()
    for _ in range(repeat):
        for name, fn in variants.items():
            times[name].append(timeit(fn))
    med = {k: float(np.median(v)) for k, v in times.items()}
    rows = []
    for name, sec in med.items():
        ref = med[
            "image, whole network from pixels"
            if name.startswith("image")
            else "text, whole mpnet from tokens"
        ]
        rows.append(
            {
                "what": f"{name}: forward + backward, {n} items (s)",
                "value": sec,
                "reference": ref,
                "note": f"{n / sec:.0f} items/s; reference: the whole tower",
            }
        )
    return rows
