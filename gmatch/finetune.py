"""Fine-tuning the towers: the last stages of a pretrained encoder trained with the matcher.

A tower is split at a stage boundary into a frozen **trunk** and a trainable **tail**
(open_clip's ``lock_image_unlocked_groups``, glue-factory's frozen backbones). The
trunk's activations are computed once per item and cached on disk (every augmented
view of every poster), so a training step runs only the tail: fine-tuning the last
stages costs a small fraction of the whole network per step, which is what makes it
fit a laptop CPU. ``train.finetune_blocks`` (image) and ``train.finetune_text_layers``
(text) say how many stages are trainable.

* image (``train.finetune=[image]``): EfficientNet-Lite0's last ``k`` stages, counting
  the 1x1 head conv as stage 1 (k = 2 adds the last MBConv stage, ...). Each poster
  has ``train.augment_views`` cached views: view 0 is the plain poster (validation and
  test), the others a random resized crop inside the poster (scale 0.7-1, aspect
  0.9-1.1) with colour jitter (brightness/contrast/saturation 0.2); no flips, posters
  carry text. A training step draws one view per poster.
* text (``train.finetune=[text]``): the last ``k`` transformer layers of the intro
  view's sentence encoder (all-mpnet-base-v2 / MiniLM) with its mean pooling.

Only the node features change: the zero-shot priors keep reading the frozen
features (they are fixed skips by design). The tuned parameters are saved in the
checkpoint (only the tail's, under the network's own key names) and loaded with
``weights_only``; a tuned encoder's settings carry the hash of those weights, so its
features land under a new cache key and never mix with the frozen ones.
"""

from __future__ import annotations

import copy
import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageEnhance
from torch import nn
from torch.utils.checkpoint import checkpoint
from tqdm.auto import tqdm

from gmatch.config import Config, ConfigError
from gmatch.data import MovieSet, load_image
from gmatch.encoders.registry import build_encoder, parse_spec
from gmatch.features import FeatureBlock, Features, extract
from gmatch.features.cache import FeatureCache, read_rows, settings_hash, write_ragged
from gmatch.text import strip_boilerplate

__all__ = [
    "AUGMENT",
    "augment_poster",
    "ImageTail",
    "TextTail",
    "pad_states",
    "Tower",
    "build_towers",
    "tuned_encoder",
    "tuned_features",
    "weights_hash",
    "device_of",
]

log = logging.getLogger(__name__)

# Poster augmentation of the cached training views (see the module docstring).
AUGMENT = {"scale": (0.7, 1.0), "ratio": (0.9, 1.1), "jitter": 0.2, "version": 1}


def device_of(conf: Config) -> torch.device:
    """``runtime.device``: ``auto`` = CUDA when there is one, else the CPU."""
    name = conf.runtime.device
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("runtime.device=cuda: no CUDA device here; use auto or cpu")
    return torch.device(name)


def weights_hash(state: dict[str, torch.Tensor]) -> str:
    """A short content hash of tuned weights (part of the tuned encoder's cache key)."""
    h = hashlib.sha1()
    for k in sorted(state):
        h.update(k.encode())
        h.update(state[k].detach().cpu().float().numpy().tobytes())
    return h.hexdigest()[:12]


def augment_poster(im: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A random resized crop inside the poster (keeping roughly its aspect) with colour
    jitter; no flip (posters carry text)."""
    w, h = im.size
    scale = rng.uniform(*AUGMENT["scale"])
    ratio = rng.uniform(*AUGMENT["ratio"])
    cw = min(w, max(8, round(w * np.sqrt(scale * ratio))))
    ch = min(h, max(8, round(h * np.sqrt(scale / ratio))))
    x0, y0 = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    im = im.crop((x0, y0, x0 + cw, y0 + ch))
    j = AUGMENT["jitter"]
    for enhance in (ImageEnhance.Brightness, ImageEnhance.Contrast, ImageEnhance.Color):
        im = enhance(im).enhance(rng.uniform(1 - j, 1 + j))
    return im


def _item_rng(key: str, view: int) -> np.random.Generator:
    """The augmentation of view ``view`` of the item with content hash ``key``: fixed,
    so the trunk cache is the same on every machine and in every order."""
    return np.random.default_rng([int(key[:12], 16), view])


class TunedTail(nn.Module):
    """A tower's trainable tail: ``net`` whose parameters under ``prefixes`` train."""

    net: nn.Module
    prefixes: list[str]

    def tuned_state(self) -> dict[str, torch.Tensor]:
        """The trainable tensors (parameters and BN statistics) under the network's key names."""
        return {
            k: v.detach().clone()
            for k, v in self.net.state_dict().items()
            if k.startswith(tuple(self.prefixes))
        }


class ImageTail(TunedTail):
    """The last ``blocks`` stages of EfficientNet-Lite0 (1 = the 1x1 head conv + BN) and
    its global average pool: ``tail(trunk(x))`` is the frozen encoder's feature."""

    def __init__(self, net: nn.Module, blocks: int):
        super().__init__()
        n = len(net.blocks)
        if not 1 <= blocks <= n + 1:
            raise ConfigError(f"train.finetune_blocks: EfficientNet-Lite0 has {n + 1} stages")
        self.cut = n + 1 - blocks  # first trainable MBConv stage
        self.net = copy.deepcopy(net).eval()
        self.net.requires_grad_(False)
        self.prefixes = [f"blocks.{i}." for i in range(self.cut, n)] + ["conv_head.", "bn2."]
        for name, p in self.net.named_parameters():
            p.requires_grad_(name.startswith(tuple(self.prefixes)))

    @torch.no_grad()
    def trunk(self, x: torch.Tensor) -> torch.Tensor:
        x = self.net.bn1(self.net.conv_stem(x))
        for stage in self.net.blocks[: self.cut]:
            x = stage(x)
        return x

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        for stage in self.net.blocks[self.cut :]:
            z = stage(z)
        return self.net.global_pool(self.net.bn2(self.net.conv_head(z)))

    def train(self, mode: bool = True):
        # Always eval: BatchNorm keeps its ImageNet statistics (episodes are small) and
        # timm's head dropout stays off; the parameters still train.
        return super().train(False)


def pad_states(seqs: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Hidden states [T_i x H] of several texts -> padded [B x T x H] and mask [B x T]
    (1 = a token): the input of :class:`TextTail`."""
    hidden = nn.utils.rnn.pad_sequence(seqs, batch_first=True)
    lengths = torch.tensor([len(s) for s in seqs])
    return hidden, (torch.arange(hidden.shape[1])[None] < lengths[:, None]).long()


class TextTail(TunedTail):
    """The last ``layers`` transformer layers of a sentence-transformers BERT-like model
    (MPNet, MiniLM) and its mean pooling; the trunk returns the hidden states before them.
    """

    def __init__(self, st_model, layers: int):
        super().__init__()
        auto = st_model[0].auto_model
        n = len(auto.encoder.layer)
        if not 1 <= layers <= n:
            raise ConfigError(f"train.finetune_text_layers: the text tower has {n} layers")
        self.cut = n - layers
        self.tokenizer = st_model.tokenizer
        self.max_len = st_model.max_seq_length
        self.normalize = any(type(m).__name__ == "Normalize" for m in st_model)
        self.net = copy.deepcopy(auto).eval()
        self.net.requires_grad_(False)
        self.prefixes = [f"encoder.layer.{i}." for i in range(self.cut, n)]
        for name, p in self.net.named_parameters():
            p.requires_grad_(name.startswith(tuple(self.prefixes)))

    def train(self, mode: bool = True):
        return super().train(False)  # dropout off: a deterministic tail, like the image one

    def _run(self, hidden, mask, layers):
        from transformers.masking_utils import create_bidirectional_mask

        ext = create_bidirectional_mask(
            config=self.net.config, inputs_embeds=hidden, attention_mask=mask
        )
        bias = None
        if hasattr(self.net.encoder, "compute_position_bias"):  # MPNet's relative positions
            bias = self.net.encoder.compute_position_bias(hidden)
        for layer in layers:
            out = layer(hidden, ext, bias) if bias is not None else layer(hidden, ext)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    @torch.no_grad()
    def trunk(self, texts: list[str]) -> list[torch.Tensor]:
        """Hidden states [T_i x H] before the tail, one per text (no padding)."""
        tok = self.tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_len, return_tensors="pt"
        )
        mask = tok["attention_mask"]
        hidden = self.net.embeddings(input_ids=tok["input_ids"])
        hidden = self._run(hidden, mask, self.net.encoder.layer[: self.cut])
        return [h[: int(m.sum())].clone() for h, m in zip(hidden, mask)]

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Padded hidden states [B x T x H] and their mask [B x T] -> pooled [B x H]."""
        hidden = self._run(hidden, mask, self.net.encoder.layer[self.cut :])
        m = mask[..., None].to(hidden.dtype)
        pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
        return nn.functional.normalize(pooled, dim=-1) if self.normalize else pooled


@dataclass
class Tower:
    """One fine-tuned node view: ``side`` (0 poster, 1 intro) and ``index`` in that
    side's views; ``acts`` the cached trunk activations per item (image: [N x A x C x
    H x W] float16, view 0 plain; text: a list of [T_i x H]); ``tail`` the trainable part."""

    spec: str
    side: int
    index: int
    tail: nn.Module
    acts: object
    stages: int  # train.finetune_blocks / finetune_text_layers it was built with

    @property
    def kind(self) -> str:
        return "image" if isinstance(self.tail, ImageTail) else "text"

    def fresh(self) -> Tower:
        """A copy with the pretrained tail (the trunk cache is shared, not copied)."""
        return Tower(
            self.spec, self.side, self.index, copy.deepcopy(self.tail), self.acts, self.stages
        )

    def inputs(self, idx, augment: bool, device) -> tuple:
        """Tail inputs of items ``idx``; with ``augment`` one random cached view per poster."""
        idx = torch.as_tensor(np.asarray(idx), dtype=torch.long)
        if self.kind == "image":
            n_views = self.acts.shape[1]
            if augment and n_views > 1:
                view = torch.randint(1, n_views, (len(idx),))
            else:
                view = torch.zeros(len(idx), dtype=torch.long)
            return (self.acts[idx, view].to(device=device, dtype=torch.float32),)
        hidden, mask = pad_states([self.acts[int(i)] for i in idx])
        return hidden.to(device, torch.float32), mask.to(device)

    def __call__(self, idx, augment: bool, device, chunk: int, grad_checkpoint: bool = False):
        """Tuned features [len(idx) x D] on the CPU (gradients flow into the tail).
        Texts go through in micro-batches of similar length (little padding)."""
        idx = np.asarray(idx)
        order = np.arange(len(idx))
        if self.kind == "text":
            order = np.argsort([len(self.acts[int(i)]) for i in idx], kind="stable")
        out = []
        for s in range(0, len(idx), chunk):
            args = self.inputs(idx[order[s : s + chunk]], augment, device)
            if grad_checkpoint and torch.is_grad_enabled():
                out.append(checkpoint(self.tail, *args, use_reentrant=False))
            else:
                out.append(self.tail(*args))
        return torch.cat(out).float().cpu()[torch.from_numpy(np.argsort(order))]


def _image_acts(ms, enc, tail: ImageTail, views, cache_dir, progress) -> torch.Tensor:
    """Trunk activations of every poster's ``views`` views, cached per poster hash."""
    key = f"trunk-{enc.name}-" + settings_hash(
        {**enc.settings(), "encoder": enc.name, "cut": tail.cut, "views": views, "aug": AUGMENT}
    )
    cache = FeatureCache(cache_dir, key)
    keys = ms.poster_hashes()
    todo = [(k, p) for k, p in dict(zip(keys, ms.poster_paths)).items() if cache.get(k) is None]
    for n, (k, path) in enumerate(
        tqdm(todo, desc=f"trunk cache ({views} views)", disable=not progress), start=1
    ):
        if n % 500 == 0:  # an interrupted fill keeps what it computed
            cache.save(np.float16)
        im = load_image(path)
        ims = [im] + [augment_poster(im, _item_rng(k, v)) for v in range(1, views)]
        # Plain NCHW, not channels_last: with a channels_last trunk the first training run
        # after filling the cache differed in the last digits from later ones (measured).
        x = torch.stack([enc.preprocess(i) for i in ims])
        cache.rows[k] = tail.trunk(x).float().numpy().astype(np.float16)
    if todo:
        cache.save(np.float16)
    return torch.from_numpy(np.stack([cache.get(k) for k in keys]).astype(np.float16))


def _text_acts(texts: list[str], tail: TextTail, name: str, cache_dir, progress) -> list:
    """Trunk hidden states of every text, cached per text hash in one flat file."""
    path = Path(cache_dir) / f"trunk-{name}-{settings_hash({'cut': tail.cut, 'v': 1})}.npz"
    rows = read_rows(path)
    keys = [hashlib.sha1(t.encode()).hexdigest() for t in texts]
    todo = {k: t for k, t in zip(keys, texts) if k not in rows}
    items = list(todo.items())
    for s in tqdm(range(0, len(items), 16), desc="trunk cache (text)", disable=not progress):
        batch = items[s : s + 16]
        for (k, _), h in zip(batch, tail.trunk([t for _, t in batch])):
            rows[k] = h.numpy().astype(np.float16)
    if todo:
        write_ragged(path, rows)
    return [torch.from_numpy(rows[k].astype(np.float32)) for k in keys]


def _tuned_spec(feats: Features, kind: str) -> tuple[int, int, str]:
    """(side, view index, spec) of the node view a tower kind tunes."""
    if kind == "image":
        found = [(0, i, b.spec) for i, b in enumerate(feats.poster) if b.spec.startswith("image:")]
        if not found:
            raise ConfigError("train.finetune=image: data.poster_views has no image: view")
        spec = found[0][2]
        if parse_spec(spec)[1] != "efficientnet_lite0":
            raise ConfigError(
                f"train.finetune=image: only image:efficientnet_lite0 can be fine-tuned, not {spec}"
            )
        return found[0]
    found = [(1, i, b.spec) for i, b in enumerate(feats.intro) if b.spec.startswith("text:")]
    names = [parse_spec(s)[1] for *_, s in found]
    found = [f for f, n in zip(found, names) if n in ("mpnet", "minilm", "st")]
    if not found:
        raise ConfigError(
            "train.finetune=text: data.intro_views has no sentence-encoder text: view "
            "(text:mpnet, text:minilm, text:st:<path>)"
        )
    return found[0]


def build_towers(conf: Config, ms: MovieSet, feats: Features, progress: bool = True) -> list:
    """The pretrained towers ``train.finetune`` names, with their trunk caches filled."""
    towers = []
    for kind in dict.fromkeys(conf.train.finetune):
        side, index, spec = _tuned_spec(feats, kind)
        enc = build_encoder(spec)
        if kind == "image":
            tail = ImageTail(enc.model, conf.train.finetune_blocks)
            acts = _image_acts(
                ms, enc, tail, conf.train.augment_views, conf.data.cache_dir, progress
            )
            stages = conf.train.finetune_blocks
        else:
            tail = TextTail(enc.model, conf.train.finetune_text_layers)
            texts = [strip_boilerplate(t) for t in ms.intros]
            acts = _text_acts(texts, tail, enc.name, conf.data.cache_dir, progress)
            stages = conf.train.finetune_text_layers
        towers.append(Tower(spec, side, index, tail, acts, stages))
    return towers


def tuned_encoder(entry: dict):
    """The full encoder of a checkpoint's fine-tuning entry, its tuned weights loaded."""
    enc = build_encoder(entry["spec"])
    net = enc.model if entry["kind"] == "image" else enc.model[0].auto_model
    missing = set(entry["state"]) - set(net.state_dict())
    if missing:
        raise ConfigError(f"fine-tuned weights do not fit {entry['spec']}: {sorted(missing)[:3]}")
    net.load_state_dict(entry["state"], strict=False)
    enc.tuned = weights_hash(entry["state"])
    return enc


def tuned_features(feats: Features, ms: MovieSet, entries: list[dict], cache_dir, progress=True):
    """``feats`` with the node views of ``entries`` (checkpoint fine-tuning entries)
    replaced by the full tuned encoders' features (cached under their own key)."""
    blocks = {
        (e["side"], e["index"]): extract(ms, e["spec"], cache_dir, progress, enc=tuned_encoder(e))
        for e in entries
    }
    return feats.with_tuned(blocks, list(entries))


def tower_entries(towers: list[Tower]) -> list[dict]:
    """What a checkpoint stores of each tuned tower (loadable with ``weights_only``)."""
    return [
        {
            "kind": t.kind,
            "spec": t.spec,
            "side": t.side,
            "index": t.index,
            "stages": t.stages,
            "state": t.tail.tuned_state(),
        }
        for t in towers
    ]


def tail_features(feats: Features, towers: list[Tower], idx, device, chunk: int) -> Features:
    """``feats`` whose tuned views hold the tails' outputs on the plain view of items
    ``idx`` (validation during training; rows outside ``idx`` stay the frozen ones)."""
    blocks = {}
    with torch.no_grad():
        for t in towers:
            frozen = feats.nodes(t.side)[t.index]
            values = frozen.values.copy()
            values[idx] = t(idx, False, device, chunk).numpy()
            blocks[(t.side, t.index)] = FeatureBlock(frozen.spec, values, frozen.valid)
    return feats.with_tuned(blocks)
