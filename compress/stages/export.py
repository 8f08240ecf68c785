"""The `export` stage: an ONNX model for onnxruntime and edge devices, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
from pydantic import Field
from transformers import PreTrainedModel

from compress.data.encoding import length_order, model_inputs, padded_batches, tokenize
from compress.errors import CompressError
from compress.exporters.onnx_export import FUSING_LEVELS, LOGITS, ExportError, export_onnx, fused_operators, optimize_onnx
from compress.exporters.ort_format import OrtFormatError, convert_to_ort
from compress.models.artifacts import Kind, OnnxModel, onnx_predictor, output_name, torch_predictor
from compress.models.embedding import embedding_of, graph_outputs
from compress.stages.base import ModelDescription, StageContext, StageFacts, StageOutput, StageSettings
from compress.surgery.architectures import layout_for

PARITY_EXAMPLES = 32
"""Dev examples an exported graph is checked on, by default (and its .ort copy, after int8)."""
ORT_FORMAT_HELP = ("Also write the graph in onnxruntime's own format (onnx/<name>.ort, with the operators a minimal build "
                   "needs in <name>.required_operators.config), for onnxruntime's mobile and minimal builds; checked "
                   "against the .onnx on the parity batch.")
ORT_FORMAT_TOLERANCE = 1e-4
"""Largest allowed |.ort logit - .onnx logit|: the same graph, optimized once at conversion instead of at load."""


EXPORTED = "onnx-fp32"
"""The precision name of a model exported to ONNX and nothing more (an optimizer level is appended)."""


class ExportSettings(StageSettings):
    stage: Literal["export"] = "export"
    opset: int = Field(18, ge=14, le=23)
    single_file: bool = Field(True, description="One self-contained .onnx file (no external data).")
    optimization: Literal["none", "O1", "O2", "O3"] = Field(
        "none", description="onnxruntime's transformer optimizer: O1 basic graph optimizations, O2 and the transformer "
        "fusions (attention, LayerNorm, GELU), O3 and GELU approximation (optimum's levels of the same names).",
    )
    tolerance: float = Field(1e-3, gt=0, description="Largest allowed |ONNX logit - PyTorch logit|.")
    parity_examples: int = Field(PARITY_EXAMPLES, ge=2, description="Dev examples, of spread lengths, in the parity batch.")
    ort_format: bool = Field(False, description=ORT_FORMAT_HELP)
    added_later: ClassVar[dict[str, object]] = {"ort_format": False}

    def output_kind(self) -> Kind:
        return "onnx"

    def task_data_use(self) -> str | None:
        return "checks the graph against PyTorch on the task's dev examples"

    def describe(self, described: ModelDescription) -> None:
        described.optimization = self.optimization
        described.precision = onnx_precision(EXPORTED, self.optimization)


def onnx_precision(name: str, optimization: str) -> str:
    """A precision's name for an ONNX graph the transformer optimizer fused at `optimization` first."""
    return name if optimization == "none" else f"{name}-{optimization.lower()}"


class OrtFormatFacts(StageFacts):
    ort_format_max_abs_logit_diff: float | None = None
    """Against the .onnx graph on the parity batch; None where no .ort was asked for."""


class ExportFacts(OrtFormatFacts):
    fused_operators: dict[str, int]
    """Fused nodes by operator (Attention, SkipLayerNormalization, ...); none without optimization."""
    parity_max_abs_logit_diff: float
    parity_examples: int


def write_ort_format(graph: Path, batch: dict, graph_logits: np.ndarray, output: str) -> float:
    """The graph in onnxruntime's format beside it; how far its `output` (logits) on `batch` is from the .onnx's
    (`graph_logits`; a CompressError past ORT_FORMAT_TOLERANCE)."""
    try:
        path = convert_to_ort(graph)
    except OrtFormatError as error:
        raise CompressError(f"ort_format: {error}") from None
    difference = float(np.abs(onnx_predictor(path, output=output)(batch) - graph_logits).max())
    if difference > ORT_FORMAT_TOLERANCE:
        raise CompressError(f"ort_format: {path.name} gives logits {difference:.2e} away from {graph.name} "
                            f"(tolerance {ORT_FORMAT_TOLERANCE:g})")
    return difference


def parity_batch(context: StageContext, count: int) -> dict:
    """One padded batch of real dev examples whose lengths span the shortest to the longest."""
    dev = tokenize(model_inputs(context.data.task, next(iter(context.data.dev.values()))), context.tokenizer, context.max_length)
    order = length_order(dev)
    picked = order[np.linspace(0, len(order) - 1, num=min(count, len(order))).round().astype(int)]
    batch = next(padded_batches(dev.select(picked), context.tokenizer, len(picked)))
    batch.pop("labels", None)  # an embedder's texts have none
    return batch


def export(model: PreTrainedModel, settings: ExportSettings, context: StageContext) -> StageOutput:
    optimizer = layout_for(model.config).onnx_optimizer
    if settings.optimization != "none" and optimizer is None:
        raise CompressError(f"export.optimization: onnxruntime's transformer optimizer has no fusions for {model.config.model_type}; "
                            "use optimization: none")
    embedding = embedding_of(model.config)
    try:
        path = export_onnx(model, context.tokenizer, context.output_dir, settings.opset, settings.single_file,
                           fused_later=settings.optimization in FUSING_LEVELS, outputs=graph_outputs(embedding) if embedding else LOGITS)
        if settings.optimization != "none":
            optimize_onnx(path, settings.optimization, model.config, optimizer)
    except ExportError as error:
        raise CompressError(f"export: {error}") from None
    exported = OnnxModel(context.output_dir)

    batch = parity_batch(context, settings.parity_examples)
    onnx_logits = exported.predictor()(batch)
    difference = float(np.abs(onnx_logits - torch_predictor(model)(batch)).max())
    lengths = batch["attention_mask"].sum(dim=1)
    if difference > settings.tolerance:
        raise CompressError(
            f"export: ONNX {'sentence vectors' if embedding else 'logits'} differ from PyTorch by {difference:.2e} on {len(lengths)} dev examples "
            f"of {int(lengths.min())}-{int(lengths.max())} tokens (tolerance {settings.tolerance:g})"
        )
    ort_difference = write_ort_format(path, batch, onnx_logits, output_name(model.config)) if settings.ort_format else None
    return StageOutput(exported, ExportFacts(fused_operators=fused_operators(path), parity_max_abs_logit_diff=difference,
                                             parity_examples=int(len(lengths)), ort_format_max_abs_logit_diff=ort_difference))
