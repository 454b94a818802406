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
):
    """An ONNX Runtime session of ``module`` traced on ``example`` inputs (named
    ``input_names``; ``dynamic_axes`` as ``torch.onnx.export`` takes them), with
    ``threads`` intra-op threads (default: torch's count)."""
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
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads or torch.get_num_threads()
    opts.inter_op_num_threads = 1
    ort_no_spin(opts)  # idle intra-op threads block
    return ort.InferenceSession(buf.getvalue(), opts, providers=["CPUExecutionProvider"])
