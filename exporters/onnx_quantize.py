"""int8 quantization of ONNX models with onnxruntime: dynamic (weights only) and static (QDQ, calibrated)."""

from __future__ import annotations

import contextlib
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import onnx
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_dynamic,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process

CALIBRATION_METHODS = {
    "minmax": CalibrationMethod.MinMax,
    "entropy": CalibrationMethod.Entropy,
    "percentile": CalibrationMethod.Percentile,
}
# Graphs fused by the transformer optimizer carry ops whose output types onnx shape inference
# cannot name; the quantizer then needs a default element type to assume.
_EXTRA_OPTIONS = {"DefaultTensorType": onnx.TensorProto.FLOAT}


def quantize_dynamic_int8(source: Path, target: Path, per_channel: bool = True, reduce_range: bool = False) -> None:
    """int8 weights (per output channel), activations quantized on the fly at run time.

    `reduce_range` (7-bit weights) helps accuracy on CPUs without VNNI, where int8 dot products
    can saturate; on VNNI CPUs it only costs accuracy.
    """
    quantize_dynamic(
        str(source),
        str(target),
        weight_type=QuantType.QInt8,
        per_channel=per_channel,
        reduce_range=reduce_range,
        extra_options=_EXTRA_OPTIONS,
    )


class _Feeds(CalibrationDataReader):
    def __init__(self, feeds: Iterable[dict[str, np.ndarray]]):
        self._feeds: Iterator[dict[str, np.ndarray]] = iter(feeds)

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)


def quantize_static_int8(
    source: Path,
    target: Path,
    calibration: Iterable[dict[str, np.ndarray]],
    method: str = "minmax",
    per_channel: bool = True,
    reduce_range: bool = False,
) -> None:
    """QDQ int8 with activation ranges calibrated on `calibration` input feeds (a few hundred examples).

    Only MatMul/Gemm inputs are quantized: those carry nearly all the compute, while quantizing
    softmax, layer norm and GELU inputs costs accuracy for little speed.
    """
    source, target = source.resolve(), target.resolve()
    # Shape inference and calibration leave temporary files in the working directory.
    with tempfile.TemporaryDirectory() as scratch, contextlib.chdir(scratch):
        prepared = Path(scratch) / "prepared.onnx"
        quant_pre_process(str(source), str(prepared), auto_merge=True)
        quantize_static(
            str(prepared),
            str(target),
            _Feeds(calibration),
            quant_format=QuantFormat.QDQ,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            per_channel=per_channel,
            reduce_range=reduce_range,
            calibrate_method=CALIBRATION_METHODS[method],
            op_types_to_quantize=["MatMul", "Gemm", "Gather"],
            extra_options={**_EXTRA_OPTIONS, "ActivationSymmetric": False, "WeightSymmetric": True},
        )
