"""Torch modules run in ONNX Runtime: exported once per process to memory, in a session
with torch's thread count (or a given one) and no spinning (gmatch.threads)."""

from __future__ import annotations

import io
import warnings

import torch

from gmatch.threads import ort_no_spin

__all__ = ["ort_session"]


def ort_session(
    module: torch.nn.Module,
    example: tuple,
    input_names: list[str],
    dynamic_axes: dict,
    threads: int | None = None,
    int8: bool = False,
):
    """An ONNX Runtime session of ``module`` traced on ``example`` inputs (named
    ``input_names``; ``dynamic_axes`` as ``torch.onnx.export`` takes them), with
    ``threads`` intra-op threads (default: torch's count). ``int8``: the weights of its
    matrix products quantised to int8, activations quantised per call (ONNX Runtime's
    dynamic quantisation)."""
    import onnxruntime as ort  # only the ONNX backends pay for it

    buf = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's notes on code it traces
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module.eval(),
            example,
            buf,
            input_names=input_names,
            output_names=["out"],
            dynamic_axes=dynamic_axes,
            opset_version=17,
            dynamo=False,
        )
    model = buf.getvalue()
    if int8:
        model = quantize_int8(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    ort_no_spin(opts)  # idle intra-op threads block
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def quantize_int8(model: bytes) -> bytes:
    """An ONNX model with the weights of its MatMul / Gemm nodes in int8 (per output
    channel: per tensor moved MiniLM's intro embeddings to cosine 0.94-0.97 of the
    float ones, per channel keeps them at 0.99) and its activations quantised on the fly
    (``quantize_dynamic``)."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="gmatch-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        quantize_dynamic(
            onnx.load_from_string(model),
            out,
            op_types_to_quantize=["MatMul", "Gemm"],
            weight_type=QuantType.QInt8,
            per_channel=True,
        )
        return out.read_bytes()
