"""ONNX export and onnxruntime quantization of Hugging Face sequence-classification models.

Independent of the `compress` pipeline: each function takes a model or an ONNX file and writes files.
A model folder holds its graph where optimum's ORTModel and transformers.js both look for it:
`onnx/model.onnx` (fp32) or `onnx/model_quantized.onnx` (int8), beside config.json and the tokenizer.
"""

from pathlib import Path

ONNX_DIR = "onnx"
FP32_FILE = "model.onnx"
QUANTIZED_FILE = "model_quantized.onnx"
"""transformers.js's name for the graph of dtype `q8` (8-bit weights)."""


def onnx_file(folder: Path) -> Path | None:
    """The graph of an ONNX model folder: the fp32 one if there are several (a hub repository made for
    transformers.js ships a graph per dtype), or the one model.onnx at the top of a folder written
    before the `onnx/` layout; None for a folder without one."""
    graphs = sorted((folder / ONNX_DIR).glob("*.onnx"), key=lambda p: (p.name != FP32_FILE, p.name != QUANTIZED_FILE, p.name))
    if graphs:
        return graphs[0]
    legacy = folder / FP32_FILE
    return legacy if legacy.is_file() else None


def graph_files(graph: Path) -> list[Path]:
    """An ONNX graph's file and the external weights files named after it (model.onnx_data, model.onnx.data)."""
    return sorted(graph.parent.glob(f"{graph.name}*"))
