"""Precisions: how a trained model is run, by the names sweeps, tables and plots use for them.

Every name comes from the quantization registry (compress/stages/quantize.py) and the ONNX optimizer
levels, so a method registered there is a precision here with nothing else to add:
`torch-fp32` (the trained model itself), `onnx-fp32` (exported), and each method's name; an ONNX
graph fused by onnxruntime's transformer optimizer first gets the level appended (`onnx-int8-dynamic-o2`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import get_args

from compress.stages.base import TRAINED, StageSettings
from compress.stages.export import EXPORTED, ExportSettings, onnx_precision
from compress.stages.quantize import DEFAULT_INT8, METHODS, QuantizationMethod

LEVELS = get_args(ExportSettings.model_fields["optimization"].annotation)  # none, O1, O2, O3
INT8 = METHODS[DEFAULT_INT8].precision
"""The int8 precision every benchmark's baseline row compares with (onnxruntime's dynamic int8)."""


@dataclass(frozen=True)
class Precision:
    name: str
    optimization: str | None
    """The export's optimizer level; None: the model stays a PyTorch model."""
    method: str | None
    """The quantization method applied last, if any."""

    @property
    def quantization(self) -> QuantizationMethod | None:
        return METHODS[self.method] if self.method else None

    @property
    def matmul_dtype(self) -> str:
        """What the model's matrix products compute in (fp32 where nothing quantized it)."""
        return self.quantization.matmul_dtype if self.quantization else "fp32"

    def cannot_run(self) -> str | None:
        return self.quantization.cannot_run() if self.quantization else None

    def stages(self, seed: int, calibration_examples: int) -> list[StageSettings]:
        """The stages that make this precision from a trained PyTorch model, each named after what it makes."""
        stages: list[StageSettings] = []
        if self.optimization is not None:
            stages.append(ExportSettings(name=onnx_precision(EXPORTED, self.optimization), optimization=self.optimization))
        if self.quantization:
            stages.append(self.quantization.settings_for(self.method, seed, calibration_examples, name=self.name))
        return stages

    @property
    def plot_label(self) -> str:
        """Beside a point in the Pareto plot, after the strategy."""
        label = self.quantization.plot_label if self.quantization else "" if self.optimization is None else "onnx"
        level = f" {self.optimization}" if self.optimization not in (None, "none") else ""
        return f" {label}{level}" if label else ""

    @property
    def plot_marker(self) -> str:
        return self.quantization.plot_marker if self.quantization else "o" if self.optimization is None else "^"


def _precisions() -> dict[str, Precision]:
    found = {TRAINED: Precision(TRAINED, None, None)}
    for level in LEVELS:
        name = onnx_precision(EXPORTED, level)
        found[name] = Precision(name, level, None)
    for mode, method in METHODS.items():
        if method.chooses:
            continue
        for level in LEVELS if method.takes == "onnx" else (None,):
            name = onnx_precision(method.precision, level) if level else method.precision
            found[name] = Precision(name, level, mode)
    return found


PRECISIONS: dict[str, Precision] = _precisions()
