"""onnxruntime's own model format (.ort), which its mobile and minimal builds load (onnxruntime-mobile,
onnxruntime-react-native, onnxruntime-objc/-c on phones): a graph converted by onnxruntime's converter,
written beside the .onnx with the list of operators a minimal build must include."""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

REQUIRED_OPERATORS_SUFFIX = ".required_operators.config"


def convert_to_ort(onnx_path: Path) -> Path:
    """Writes `<name>.ort` and `<name>.required_operators.config` beside `onnx_path` (onnxruntime's
    'Fixed' style: optimized once, at conversion, with no layout changes that tie it to one processor);
    returns the .ort file."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    # the converter prints a line per step, and logs one that names the stage's scratch folder
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    with contextlib.redirect_stdout(io.StringIO()):
        convert_onnx_models_to_ort(onnx_path, output_dir=onnx_path.parent, optimization_styles=[OptimizationStyle.Fixed])
    return onnx_path.with_suffix(".ort")
