"""Torch modules run in ONNX Runtime: exported once per process to memory, in a session
with torch's thread count (or a given one) and no spinning (gmatch.threads)."""

from __future__ import annotations

import io
import logging
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


class _QuantiserHints(logging.Filter):
    """Drops the log records below ERROR that onnxruntime's quantiser emits on the root
    logger; every other record (another thread's, the caller's) passes."""

    def filter(self, record: logging.LogRecord) -> bool:
        path = record.pathname.replace("\\", "/")
        return record.levelno >= logging.ERROR or "onnxruntime/quantization" not in path


def quantize_int8(model: bytes) -> bytes:
    """An ONNX model with the weights of its matrix products in int8, per output channel,
    and their inputs quantised on the fly (ONNX Runtime's ``quantize_dynamic``), except
    the down projections (a weight with more input than output features: a transformer
    FFN's second layer, whose GELU inputs have outliers that 8 bits clip).

    Measured on course texts: per tensor moved MiniLM's intro embeddings to cosine
    0.94-0.97 of the float ones, per channel keeps 0.99; quantising mpnet's down
    projections too dropped it to 0.88 (benchmarks/TEXT_INT8.md at dd45a38), without them
    0.99 at 1.7x the float model's texts/s (the same benchmark now)."""
    import tempfile
    from pathlib import Path

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    proto = onnx.load_from_string(model)
    shapes = {w.name: w.dims for w in proto.graph.initializer}
    nodes = [
        n.name
        for n in proto.graph.node
        if n.op_type == "MatMul" and len(shapes.get(n.input[1], ())) == 2
        and shapes[n.input[1]][0] <= shapes[n.input[1]][1]
    ]  # fmt: skip
    root = logging.getLogger()  # the quantiser logs a pre-processing hint on the root logger
    hint = _QuantiserHints()  # drops only the quantiser's own records below ERROR
    with tempfile.TemporaryDirectory(prefix="gmatch-int8-") as tmp:
        out = Path(tmp) / "int8.onnx"
        root.addFilter(hint)
        try:
            quantize_dynamic(
                proto,
                out,
                op_types_to_quantize=["MatMul"],
                nodes_to_quantize=nodes,
                weight_type=QuantType.QInt8,
                per_channel=True,
                extra_options={"MatMulConstBOnly": True},
            )
        finally:
            root.removeFilter(hint)
        return out.read_bytes()
