"""OpenVINO IR from an ONNX graph: converted as it is (fp32 weights), or quantized to int8 by NNCF's
post-training quantization on calibration batches; and compiled for the CPU at a stated precision.

Independent of the `compress` pipeline. A model folder keeps its IR where optimum-intel's
`OVModelForSequenceClassification.from_pretrained(folder)` looks for it: `openvino_model.xml` and
`openvino_model.bin` beside config.json and the tokenizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np

IR_FILE = "openvino_model.xml"
PRECISION_HINTS = {"fp32": "f32", "bf16": "bf16"}
"""OpenVINO's name for the precision its CPU plugin computes in (its INFERENCE_PRECISION_HINT)."""


def _core():
    import openvino as ov

    return ov.Core()


def cpu_capabilities() -> list[str]:
    """What OpenVINO's CPU plugin can compute in on this machine (FP32, INT8, BF16, FP16, ...)."""
    return list(_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"))


def convert_onnx(onnx_path: Path, ir_path: Path) -> None:
    """The ONNX graph as OpenVINO IR, weights kept in fp32 (OpenVINO would halve them to fp16 on disk by default)."""
    import openvino as ov

    ov.save_model(ov.convert_model(str(onnx_path)), str(ir_path), compress_to_fp16=False)


def quantize_int8(onnx_path: Path, ir_path: Path, batches: Iterable[dict[str, np.ndarray]], subset_size: int) -> None:
    """NNCF's post-training int8 quantization of the graph's MatMuls (the transformer preset: activations
    calibrated on `batches`, up to `subset_size` of them, weights per channel; the rest stays float)."""
    import nncf
    import openvino as ov

    model = ov.convert_model(str(onnx_path))
    calibration = nncf.Dataset(list(batches))
    quantized = nncf.quantize(model, calibration, model_type=nncf.ModelType.TRANSFORMER, subset_size=subset_size)
    ov.save_model(quantized, str(ir_path), compress_to_fp16=False)


def read_ir(ir_path: Path):
    """The IR as an `openvino.Model`, to compile for a fixed input shape (`with_input_shape`)."""
    return _core().read_model(str(ir_path))


def with_input_shape(model, batch_size: int, length: int):
    """A copy of `model` whose every input is fixed at [batch_size, length]. OpenVINO runs a model compiled
    for one shape faster than one compiled for any shape, and a dynamic one prepares its graph again for
    each new length it meets. The copy shares the weights of `model`; each compilation packs its own."""
    import openvino as ov

    shaped = model.clone()
    shaped.reshape({i.get_any_name(): ov.PartialShape([batch_size, length]) for i in shaped.inputs})
    return shaped


def compile_ir(ir, threads: int | None = None, precision: str | None = None, **properties):
    """The IR (a path, or an `openvino.Model`) compiled for the CPU for batch-1 latency; `precision`: 'fp32'
    or 'bf16', None for OpenVINO's own choice (bf16 for what int8 leaves where the CPU computes in bf16, else
    fp32); `properties`: further CPU plugin properties (e.g. PERF_COUNT=True for its per-node counters)."""
    config = {"PERFORMANCE_HINT": "LATENCY", **properties}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    if precision:
        config["INFERENCE_PRECISION_HINT"] = PRECISION_HINTS[precision]
    return _core().compile_model(str(ir) if isinstance(ir, Path) else ir, "CPU", config)


def computed_precision(compiled) -> str:
    """The precision a compiled model computes its float operations in (f32, bf16)."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
