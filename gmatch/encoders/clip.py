"""Either tower of a transformers CLIP model (hub name or local path)."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["HFClipEncoder"]


class HFClipEncoder:
    """``tower="image"``: ``encode(list of PIL images)``; ``"text"``: ``encode(list of str)``.
    Both return the projected embeddings [B x projection_dim] that CLIP compares."""

    def __init__(self, name_or_path: str, tower: str = "text"):
        from transformers import CLIPImageProcessor, CLIPModel, CLIPTokenizer

        if tower not in ("image", "text"):
            raise ValueError(f"tower must be image or text, got {tower!r}")
        self.tower = tower
        self.name = f"hf-clip:{name_or_path}"
        self.model = CLIPModel.from_pretrained(name_or_path).eval().requires_grad_(False)
        if tower == "image":
            self.processor = CLIPImageProcessor.from_pretrained(name_or_path)
        else:
            self.processor = CLIPTokenizer.from_pretrained(name_or_path)
        self.dim = self.model.config.projection_dim

    def settings(self) -> dict:
        return {"model": self.name}

    @torch.inference_mode()
    def encode(self, items: list) -> np.ndarray:
        if self.tower == "image":
            out = self.model.get_image_features(**self.processor(images=items, return_tensors="pt"))
        else:
            max_len = self.model.config.text_config.max_position_embeddings  # 77 for CLIP
            inputs = self.processor(
                items, padding=True, truncation=True, max_length=max_len, return_tensors="pt"
            )
            out = self.model.get_text_features(**inputs)
        out = getattr(out, "pooler_output", out)
        return out.float().numpy()
