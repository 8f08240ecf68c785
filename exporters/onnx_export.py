"""Exporting a sequence-classification model to one ONNX file, with its config and tokenizer beside it.

optimum's exporter serves every architecture it has an export config for; the others (XLNet)
go through `torch.onnx.export` with the TorchScript tracer and eager attention.
"""

from __future__ import annotations

import inspect
import shutil
import tempfile
from pathlib import Path

import onnx
import torch
from optimum.exporters.onnx import onnx_export_from_model
from optimum.exporters.tasks import TasksManager
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from exporters import ONNX_FILE

OPTIMIZATION_LEVELS = ("O1", "O2", "O3")
PROTOBUF_LIMIT = 2**31 - 1


class ExportError(Exception):
    """An export that cannot be done as asked (unsupported architecture, file too large, ...)."""


def optimum_supports(model_type: str) -> bool:
    try:
        tasks = TasksManager.get_supported_tasks_for_model_type(model_type, "onnx", library_name="transformers")
    except KeyError:
        return False
    return "text-classification" in tasks


def _torch_export(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, path: Path, opset: int) -> None:
    accepted = inspect.signature(model.forward).parameters
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids") if n in accepted and n in tokenizer.model_input_names]
    # Two rows of different lengths, so the traced graph sees padding and a real attention mask.
    dummy = tokenizer(["a short one", "a somewhat longer example, with padding in the other row"], padding=True, return_tensors="pt")

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, *inputs):
            return self.model(**dict(zip(names, inputs))).logits

    axes = {name: {0: "batch_size", 1: "sequence_length"} for name in names}
    torch.onnx.export(
        Logits().eval(),  # the exporter restores the wrapper's mode afterwards, and with it the model's
        tuple(dummy[n] for n in names),
        str(path),
        input_names=names,
        output_names=["logits"],
        dynamic_axes={**axes, "logits": {0: "batch_size"}},
        opset_version=opset,
        do_constant_folding=True,
        dynamo=False,
    )


def _inline_external_data(path: Path) -> None:
    """Rewrite the model as one self-contained file (edge runtimes often take a single file)."""
    proto = onnx.load(str(path), load_external_data=True)
    if proto.ByteSize() > PROTOBUF_LIMIT:
        raise ExportError(f"{path}: {proto.ByteSize() / 1e9:.1f} GB does not fit one ONNX file (2 GB limit); use single_file: false")
    external = {
        entry.value
        for tensor in proto.graph.initializer
        for entry in tensor.external_data
        if entry.key == "location"
    }
    onnx.save_model(proto, str(path), save_as_external_data=False)
    for name in external:
        (path.parent / name).unlink(missing_ok=True)


def export_onnx(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    output_dir: Path,
    opset: int = 18,
    single_file: bool = True,
) -> Path:
    """Write `model.onnx` (inputs: token ids, attention mask[, token types]; output: logits),
    `config.json` and the tokenizer into `output_dir`; returns the ONNX file's path."""
    model = model.eval().to("cpu")
    path = output_dir / ONNX_FILE
    if optimum_supports(model.config.model_type):
        onnx_export_from_model(model, output_dir, opset=opset, task="text-classification", do_validation=False)
    else:
        if hasattr(model, "set_attn_implementation"):
            model.set_attn_implementation("eager")
        _torch_export(model, tokenizer, path, opset)
    if single_file:
        _inline_external_data(path)
    model.config.save_pretrained(output_dir)
    tokenizer.save_pretrained(output_dir)
    return path


def optimize_onnx(folder: Path, level: str) -> None:
    """Fuse the graph in place with optimum's ORTOptimizer at level O1, O2 or O3 (O3 adds GELU approximation)."""
    from optimum.onnxruntime import ORTOptimizer
    from optimum.onnxruntime.configuration import AutoOptimizationConfig

    if level not in OPTIMIZATION_LEVELS:
        raise ExportError(f"optimization: expected one of {', '.join(OPTIMIZATION_LEVELS)} (got '{level}')")
    try:
        optimizer = ORTOptimizer.from_pretrained(folder, file_names=[ONNX_FILE])
        with tempfile.TemporaryDirectory() as scratch:
            optimizer.optimize(save_dir=scratch, optimization_config=AutoOptimizationConfig.with_optimization_level(level))
            optimized = next(Path(scratch).glob("*.onnx"))
            shutil.move(optimized, folder / ONNX_FILE)
    except (NotImplementedError, KeyError, ValueError) as error:
        raise ExportError(f"optimization: onnxruntime's transformer optimizer cannot optimize this model ({error})") from None
