"""Sweep files: a readable YAML that expands into combinations of model x task x strategy x K x
training x precision, validated whole (every problem listed at once) before any work starts.

A sweep lists one or more grids; the combinations are the union of the grids' cross products,
de-duplicated, plus for every model and task the two rows a user would pick instead of
compressing: the full fine-tuned model in PyTorch fp32 and exported to dynamic int8 ONNX.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator

from compress.data.loading import DataSettings, load_task_data
from compress.errors import CompressError, excerpt
from compress.folders import check_folder_name
from compress.pipeline.models import check_weights, load_config
from compress.pipeline.recipe import validate_yaml_file
from compress.stages.distill import DistillationLoss
from compress.stages.finetune import TrainingHyperparameters
from compress.surgery.architectures import check_max_length, layout_for, num_layers
from compress.surgery.strategies import Strategy, layers_to_drop

Training = Literal["finetune", "distill"]
Precision = Literal[
    "torch-fp32", "onnx-fp32", "onnx-int8-dynamic", "onnx-fp32-o2", "onnx-int8-dynamic-o2", "onnx-int8-static",
    "torch-int8", "bnb-8bit", "bnb-4bit", "fp16",
]
"""How a trained model is run: `-o2` ONNX graphs are fused by onnxruntime's transformer optimizer (O2) before quantizing."""
CUDA_ONLY_PRECISIONS = ("fp16",)
FULL = "full"
"""Strategy name of the undropped reference rows (K = 0)."""
BASELINE_PRECISIONS = ("torch-fp32", "onnx-int8-dynamic")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Grid(Strict):
    strategies: list[Strategy] = Field(min_length=1)
    k: list[int] = Field(min_length=1)
    training: list[Training] = Field(["finetune"], min_length=1)
    precisions: list[Precision] = Field(["torch-fp32"], min_length=1)


class LatencySettings(Strict):
    threads: int = Field(2, ge=1, description="CPU threads for every timed run (fixed and reported).")
    batch_sizes: list[int] = Field([1, 32], min_length=1)
    sequence_length: int = Field(128, ge=8)
    task_lengths: bool = Field(True, description="Also time batches of real dev examples at their own lengths.")
    warmup: int = Field(3, ge=0)
    repeats: int = Field(20, ge=3, description="Timed calls at batch size 1; a larger batch B gets repeats/sqrt(B), at least 10.")


class Sweep(Strict):
    name: str | None = Field(None, description="Default results folder: bench/runs/<name>; default: the file's name.")
    description: str | None = None
    models: list[str] = Field(min_length=1)
    tasks: dict[str, DataSettings] = Field(min_length=1, description="Task name -> its data settings.")
    max_length: int = Field(128, ge=8)
    eval_batch_size: int = Field(64, ge=1)
    seed: int = 42
    contribution_examples: int = Field(500, ge=1)
    calibration_examples: int = Field(300, ge=1)
    training: TrainingHyperparameters = Field(
        default_factory=TrainingHyperparameters,
        description="Shared by the teacher and every student, so rows differ only in what the sweep varies.",
    )
    distillation: DistillationLoss = Field(default_factory=DistillationLoss)
    latency: LatencySettings = Field(default_factory=LatencySettings)
    grids: list[Grid] = Field(min_length=1)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return None if name is None else check_folder_name(name, "name")


@dataclass(frozen=True, order=True)
class Combination:
    model: str
    task: str
    strategy: str
    k: int
    training: str
    precision: str
    recipe: str = ""
    """The recipe that makes this model, when a benchmark runs a list of recipes."""

    @property
    def key(self) -> str:
        key = f"{self.model}|{self.task}|{self.strategy}|k{self.k}|{self.training}|{self.precision}"
        return f"{key}|recipe={self.recipe}" if self.recipe else key

    def record_fields(self) -> dict:
        """The fields a results record carries; `recipe` only when set, so sweep records keep their shape."""
        fields = dict(self.__dict__)
        if not self.recipe:
            del fields["recipe"]
        return fields

    @property
    def label(self) -> str:
        label = f"full {self.precision}" if self.strategy == FULL else f"{self.strategy} k={self.k} {self.training} {self.precision}"
        return f"{self.recipe}: {label}" if self.recipe else label


def expand(sweep: Sweep) -> list[Combination]:
    """Every combination the sweep names, once each: per model and task the baselines first, then the
    grids in the order the file lists them, so a sweep's author decides what finishes first."""
    found: dict[Combination, None] = {}  # a dict keeps first-seen order
    for model, task in itertools.product(sweep.models, sweep.tasks):
        found.update(dict.fromkeys(Combination(model, task, FULL, 0, "finetune", p) for p in BASELINE_PRECISIONS))
        for grid in sweep.grids:
            for strategy, k, training, precision in itertools.product(grid.strategies, grid.k, grid.training, grid.precisions):
                found[Combination(model, task, FULL if k == 0 else strategy, k, "finetune" if k == 0 else training, precision)] = None
    return list(found)


def shard(combinations: list[Combination], index: int, count: int) -> list[Combination]:
    """Slice `index` (1-based) of `count`. The rows of one trained model (its precisions) stay in one
    slice, so no model is trained in two; each group goes to the slice with the fewest rows so far,
    which keeps slices within a group's size of one another. The order of the list is kept."""
    groups: dict[tuple, list[Combination]] = {}
    for c in combinations:
        groups.setdefault((c.model, c.task, c.strategy, c.k, c.training, c.recipe), []).append(c)
    slices: list[list[Combination]] = [[] for _ in range(count)]
    for group in groups.values():
        min(slices, key=len).extend(group)
    chosen = {c.key for c in slices[index - 1]}
    return [c for c in combinations if c.key in chosen]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise CompressError(f"--shard: expected i/n such as 2/4 (got {excerpt(text)})") from None
    if not 1 <= index <= count:
        raise CompressError(f"--shard: expected 1 <= i <= n (got {excerpt(text)})")
    return index, count


def parse_sweep(file: Path) -> Sweep:
    sweep = validate_yaml_file(file, Sweep, "sweep", "models, tasks and grids")
    if sweep.name is None:
        try:
            sweep.name = check_folder_name(file.stem, "name")
        except ValueError as error:
            raise CompressError(f"{file}: {error} (the sweep's name comes from the file name unless it sets name:)") from None
    return sweep


def check_sweep(sweep: Sweep) -> list[str]:
    """Problems that need the models' configs and the data, all of them (empty when the sweep can run)."""
    problems: list[str] = []
    layer_counts: dict[str, int] = {}
    for model in sweep.models:
        try:
            config = load_config(model)
            layout_for(config)
            layer_counts[model] = num_layers(config)
            check_max_length(config, sweep.max_length, "max_length")
            check_weights(model)
        except CompressError as error:
            problems.append(f"models: {error}")
    for task, data in sweep.tasks.items():
        try:
            examples = len(load_task_data(task, data).train)
        except CompressError as error:
            problems.append(f"tasks.{task}: {error}")
            continue
        if problem := sweep.training.budget_problem(examples):
            problems.append(f"training.{problem} (task {task})")
    for index, grid in enumerate(sweep.grids):
        for model, count in layer_counts.items():
            for strategy, k in itertools.product(grid.strategies, grid.k):
                if strategy == "layers":
                    problems.append(f"grids[{index}].strategies: 'layers' needs explicit indices; use a recipe for it")
                    continue
                try:
                    layers_to_drop(strategy, count, k, scores=[0.0] * count)
                except CompressError as error:
                    problems.append(f"grids[{index}] ({model}, {strategy}, k={k}): {error}")
    return list(dict.fromkeys(problems))


def load_sweep(file: Path) -> Sweep:
    sweep = parse_sweep(file)
    problems = check_sweep(sweep)
    if problems:
        raise CompressError(f"{file}: {len(problems)} problem(s): " + "; ".join(problems))
    return sweep


def runnable_here(combination: Combination) -> bool:
    return combination.precision not in CUDA_ONLY_PRECISIONS or torch.cuda.is_available()
