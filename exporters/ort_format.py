"""onnxruntime's own model format (.ort), which its mobile packages (onnxruntime-android, onnxruntime-objc
and -c, onnxruntime-react-native) and custom minimal builds load: a graph converted by onnxruntime's
converter, written beside the .onnx with the list of operators a minimal build must include."""

from __future__ import annotations

import contextlib
import io
import logging
import os
from pathlib import Path

from compress.exporters import graph_files

MAX_BYTES = 2**31
"""An .ort file is one flatbuffer, which cannot exceed 2 GB (the graph and its weights together)."""
LEVEL_VARIABLE = "ORT_CONVERT_ONNX_MODELS_TO_ORT_OPTIMIZATION_LEVEL"
"""The converter's own setting, which also changes the name of the file it writes."""


class OrtFormatError(Exception):
    """The graph cannot be written in onnxruntime's format."""


def convert_to_ort(onnx_path: Path) -> Path:
    """Writes `<name>.ort` and `<name>.required_operators.config` beside `onnx_path` (onnxruntime's
    'Fixed' style: optimized once, at conversion, with no layout changes that tie it to one processor);
    returns the .ort file."""
    from onnxruntime.tools.convert_onnx_models_to_ort import OptimizationStyle, convert_onnx_models_to_ort

    size = sum(f.stat().st_size for f in graph_files(onnx_path))
    if size > MAX_BYTES:
        raise OrtFormatError(f"{onnx_path.name} and its weights are {size / 1e9:.1f} GB; an .ort file holds at most 2 GB")
    # the converter prints a line per step, and logs one that names the stage's scratch folder
    logging.getLogger("ort_format_model.utils").setLevel(logging.WARNING)
    level = os.environ.pop(LEVEL_VARIABLE, None)  # its default level ("all") writes <name>.ort
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            convert_onnx_models_to_ort(onnx_path, output_dir=onnx_path.parent, optimization_styles=[OptimizationStyle.Fixed])
    finally:
        if level is not None:
            os.environ[LEVEL_VARIABLE] = level
    return onnx_path.with_suffix(".ort")
