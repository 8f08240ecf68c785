"""The stage registry: recipe name -> settings model and the function that applies it.

Every stage function has the same shape: `apply(model, settings, context) -> StageOutput` (the model and
the facts the stage measured while making it).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from compress.models.artifacts import Artifact, save_artifact
from compress.models.embedding import embedding_of, write_sentence_transformers_files
from compress.registry import Registry
from compress.stages import fastest  # noqa: F401  (registers quantize mode `best` before the settings union is taken)
from compress.stages.base import StageContext, StageOutput, StageSettings
from compress.stages.distill import DistillSettings, distill
from compress.stages.drop import DropSettings, drop
from compress.stages.export import ExportSettings, export
from compress.stages.finetune import FinetuneSettings, finetune
from compress.stages.quantize import any_quantize_settings, quantize


@dataclass(frozen=True)
class Stage:
    settings: Any
    """The settings model, or a union of them told apart by a field (quantize: one per method, by `mode`)."""
    apply: Callable
    trains: bool
    """Whether the output has been trained on the task (and so is worth evaluating)."""


STAGES: Registry[Stage] = Registry("stage")
STAGES.add("drop", Stage(DropSettings, drop, trains=False))
STAGES.add("finetune", Stage(FinetuneSettings, finetune, trains=True))
STAGES.add("distill", Stage(DistillSettings, distill, trains=True))
STAGES.add("export", Stage(ExportSettings, export, trains=False))
STAGES.add("quantize", Stage(any_quantize_settings(), quantize, trains=False))


def run_stage(settings: StageSettings, model: Artifact, context: StageContext) -> StageOutput:
    """Apply a stage and save its model, with the tokenizer, into `context.output_dir`."""
    output = STAGES[settings.stage].apply(model, settings, context)
    save_artifact(output.model, context.output_dir)
    context.tokenizer.save_pretrained(context.output_dir)
    if embedding_of(output.model.config):  # sentence-transformers (and its ONNX and OpenVINO backends) load it as it is
        write_sentence_transformers_files(context.output_dir, output.model.config, context.max_length)
    return output


__all__ = ["STAGES", "Stage", "StageContext", "StageOutput", "StageSettings", "run_stage"]
