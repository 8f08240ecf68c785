"""What every stage shares: the recipe fields common to all stages, the context a stage runs in, and what it
hands back (its model and the facts it measured while making it)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from compress.data.loading import TaskData
from compress.models.artifacts import Artifact, Kind, load_artifact
from compress.models.loading import load_saved


BASE_MODEL = "base"
"""The name by which a recipe's stages name its model itself (`from: base`; an embedder's `teacher: base`)."""


class StageSettings(BaseModel):
    """Fields every stage entry of a recipe may carry besides its own settings."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, allow_inf_nan=False)  # .inf passes gt=0 and ge=0, then fails once work starts

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

    added_later: ClassVar[dict[str, object]] = {}
    """Settings added after models were cached, each with the value every earlier model was made with: at that
    value a setting is no part of the identity, so those cached models stay valid."""

    def identity_settings(self, layers_before: int) -> dict:
        """What of the settings decides the model the stage makes from a model of `layers_before` layers."""
        settings = self.model_dump(mode="json", exclude={"name", "source", *self.model_references()})
        for setting, before in self.added_later.items():
            if settings[setting] == before:
                del settings[setting]
        return settings

    def layers_after(self, layers_before: int) -> int:
        return layers_before

    def task_data_use(self) -> str | None:
        """What this stage reads the task's examples for; None where it reads none (a recipe without a task
        may hold only such stages)."""
        return "reads the task's examples"

    def wants_gpu(self) -> bool:
        """Whether the stage runs on a GPU where there is one (a cluster gives its task one)."""
        return False

    def kind_problem(self, embedder: bool) -> str | None:
        """Why these settings cannot make the kind of model the recipe makes (a sentence embedder, for a recipe with
        `embedding:`, else a classifier), if they cannot; the text starts with the field at fault."""
        return None

    def check_chain(self, config: PretrainedConfig, layers_before: int, train_examples: int) -> None:
        """Refuse, before any work, what this stage cannot do at its place in a recipe (a CompressError
        whose text starts with the field at fault)."""

    def describe(self, described: ModelDescription) -> None:
        """Add what this stage does to the description of the model a chain of stages makes."""


TRAINED = "torch-fp32"
"""The precision name of a model as training left it: PyTorch, fp32."""


@dataclass
class ModelDescription:
    """How a benchmark row names the model a chain of stages makes: what a sweep varies."""

    strategies: list[str] = field(default_factory=list)
    k: int = 0
    training: str = "none"
    dropped_after_training: bool = False
    """Whether layers were dropped from a model already trained on the task (and trained again after)."""
    optimization: str = "none"
    """The ONNX optimizer level of the export the chain made, if any."""
    precision: str = TRAINED


@dataclass
class TrainingCheckpoints:
    """Where a training stage saves checkpoints, and how often, so an interrupted build resumes from the last;
    and the build's time, counting what the interrupted builds had spent up to the checkpoint resumed from."""

    folder: Path
    every_seconds: float
    """0: none are saved (one an earlier run left is still resumed from)."""
    started: float
    """time.perf_counter() when the build began."""
    seconds_before: float = 0.0
    """What the interrupted builds had spent up to the checkpoint resumed from (the Trainer state file holds it)."""

    def elapsed(self) -> float:
        return self.seconds_before + time.perf_counter() - self.started


@dataclass
class StageContext:
    """What a stage may read besides its input model; `output_dir` is where it may write extra files."""

    data: TaskData | None
    """None in a recipe without a task (its stages' task_data_use() is None)."""
    tokenizer: PreTrainedTokenizerBase
    output_dir: Path
    max_length: int
    eval_batch_size: int
    stage_folders: dict[str, Path] = field(default_factory=dict)
    """Finished stages this stage reads, by the name its settings give them."""
    checkpoints: TrainingCheckpoints | None = None
    """For a stage that trains: where its checkpoints outlive an interrupted run (None: it keeps none)."""
    base_model: Callable[[], PreTrainedModel] | None = None
    """The recipe's model as its first stage takes it, for a stage that reads `base` (an embedder's teacher)."""

    def load_model(self, ref: str) -> PreTrainedModel:
        """A stage this stage reads by name, the recipe's own model (`base`), else a model alias, folder or hub id."""
        if ref in self.stage_folders:
            return load_artifact(self.stage_folders[ref])
        if ref == BASE_MODEL and self.base_model is not None:
            return self.base_model()
        return load_saved(ref)


class StageFacts(BaseModel):
    """What a stage measured while making its model (e.g. export parity), reported beside its metrics."""

    model_config = ConfigDict(extra="forbid")


@dataclass
class StageOutput:
    model: Artifact
    facts: StageFacts | None = None
