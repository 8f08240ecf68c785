"""What every stage shares: the recipe fields common to all stages, and the context a stage runs in."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from compress.data.loading import TaskData
from compress.pipeline.artifacts import Kind, load_artifact
from compress.pipeline.models import load_saved


class StageSettings(BaseModel):
    """Fields every stage entry of a recipe may carry besides its own settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str | None = Field(None, description="Folder name of this stage's output (default: NN-stage).")
    source: str | None = Field(
        None,
        alias="from",
        description="Model this stage starts from: 'base' (the pre-trained model) or an earlier stage's name; "
        "default: the previous stage.",
    )

    def input_kind(self) -> Kind:
        """The kind of model this stage takes (checked against the chain before a run starts)."""
        return "torch"

    def output_kind(self) -> Kind:
        return self.input_kind()

    def model_references(self) -> dict[str, str]:
        """Other models this stage reads (field -> stage name or model), e.g. a distillation teacher."""
        return {}


@dataclass
class StageContext:
    """What a stage may read besides its input model; `output_dir` is where it may write extra files."""

    data: TaskData
    tokenizer: PreTrainedTokenizerBase
    output_dir: Path
    max_length: int
    eval_batch_size: int
    stage_folders: dict[str, Path] = field(default_factory=dict)
    """Completed stages of this run, by name."""
    notes: dict[str, Any] = field(default_factory=dict)
    """Facts a stage measured (e.g. export parity) that the run reports beside its metrics."""

    def load_model(self, ref: str) -> PreTrainedModel:
        """An earlier stage of this run by name, else a model alias, folder or hub id."""
        if ref in self.stage_folders:
            return load_artifact(self.stage_folders[ref])
        return load_saved(ref)
