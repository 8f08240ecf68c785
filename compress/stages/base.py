"""What every stage shares: the recipe fields common to all stages, and the context a stage runs in."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from transformers import PreTrainedTokenizerBase

from compress.data import TaskData


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


@dataclass
class StageContext:
    """What a stage may read besides its input model; `output_dir` is where it may write extra files."""

    data: TaskData
    tokenizer: PreTrainedTokenizerBase
    output_dir: Path
    max_length: int
    eval_batch_size: int
