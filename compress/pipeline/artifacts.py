"""The three kinds of model a stage can hand on, and how each is saved, loaded and scored.

- `torch`: a `PreTrainedModel` saved with `save_pretrained` (also bitsandbytes and fp16 models);
- `onnx`: a folder with `onnx/model.onnx` (or `onnx/model_quantized.onnx`), `config.json` and the
  tokenizer (`OnnxModel`): the layout optimum's ORTModel and transformers.js load as it is;
- `torch-int8`: a PyTorch model whose Linear layers were dynamically quantized; its packed
  weights do not fit `save_pretrained`, so the whole module is pickled to `model_int8.pt`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Literal, Union

import torch
from transformers import AutoConfig, PretrainedConfig, PreTrainedModel

from compress.exporters import onnx_file
from compress.pipeline.models import count_parameters, load_saved

Kind = Literal["torch", "onnx", "torch-int8"]

TORCH_INT8_FILE = "model_int8.pt"
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".onnx", ".onnx_data", ".data", ".pt")


@dataclass
class OnnxModel:
    folder: Path

    @property
    def path(self) -> Path:
        return onnx_file(self.folder)

    @cached_property
    def config(self) -> PretrainedConfig:
        return AutoConfig.from_pretrained(self.folder)


Artifact = Union[PreTrainedModel, OnnxModel]

QUANTIZATION_FIELD = "compress_quantization"
"""Config field recording how a model was quantized (mode and settings), for cards and loading."""


def kind_of(artifact: Artifact) -> Kind:
    if isinstance(artifact, OnnxModel):
        return "onnx"
    quantization = getattr(artifact.config, QUANTIZATION_FIELD, None) or {}
    return "torch-int8" if quantization.get("mode") == "torch-dynamic-int8" else "torch"


def save_artifact(artifact: Artifact, folder: Path) -> None:
    """Write the model into `folder` (an ONNX model is already there: its stage wrote it)."""
    kind = kind_of(artifact)
    if kind == "onnx":
        if artifact.folder != folder:
            raise ValueError(f"ONNX stage wrote to {artifact.folder}, expected {folder}")
    elif kind == "torch-int8":
        artifact.config.save_pretrained(folder)
        torch.save(artifact, folder / TORCH_INT8_FILE)
    else:
        artifact.save_pretrained(folder)


def load_artifact(folder: Path, device: str | None = None) -> Artifact:
    """The model saved in `folder`; a PyTorch model is loaded onto `device` (default: the CPU) when it can
    move (a torch-int8 model runs on the CPU only), in the precision it was saved in (fp16 stays fp16)."""
    if onnx_file(folder) is not None:
        return OnnxModel(folder)
    if (folder / TORCH_INT8_FILE).exists():
        # Our own file, written by save_artifact: the quantized module is pickled whole.
        return torch.load(folder / TORCH_INT8_FILE, weights_only=False)
    # "auto": the dtype the config records (an fp16 model stays fp16), not transformers' default fp32
    return load_saved(folder, dtype="auto", **({"device_map": device} if device else {}))


def base_kind(ref: str) -> Kind:
    """The kind of model a recipe's `model:` names: an ONNX folder, or anything from_pretrained loads."""
    from compress.pipeline.models import MODEL_ALIASES

    return "onnx" if ref not in MODEL_ALIASES and Path(ref).expanduser().is_dir() and onnx_file(Path(ref).expanduser()) else "torch"


def onnx_parameter_count(model: OnnxModel) -> int:
    """Elements of the graph's weight tensors (initializers): the exported model's parameters."""
    import numpy as np
    import onnx

    graph = onnx.load(str(model.path), load_external_data=False).graph
    return int(sum(np.prod(tensor.dims, dtype=np.int64) for tensor in graph.initializer))


def size_on_disk(folder: Path) -> int:
    """Bytes of weight files in a model folder, `onnx/` included (tokenizer and config files not counted)."""
    return sum(f.stat().st_size for f in folder.rglob("*") if f.is_file() and f.name.endswith(WEIGHT_SUFFIXES))


def parameter_count(artifact: Artifact) -> int | None:
    """Weights of an unquantized PyTorch model; None for exported or quantized models, whose packed
    weights do not count the same: they keep the count of the model they were made from."""
    if isinstance(artifact, OnnxModel) or getattr(artifact.config, QUANTIZATION_FIELD, None):
        return None
    return count_parameters(artifact)
