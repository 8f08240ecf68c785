"""Sweep files: a readable YAML that expands into combinations of model x task x strategy x K x
training x precision, validated whole (every problem listed at once) before any work starts.

A sweep lists one or more grids; the combinations are the union of the grids' cross products,
de-duplicated, plus for every model and task the two rows a user would pick instead of
compressing: the full fine-tuned model in PyTorch fp32 and exported to dynamic int8 ONNX.

A sweep is a compact way to write recipes: `sweep_rows` turns each combination into the recipe that
makes its model, and the benchmark runs those as it runs any list of recipes.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, field_validator, model_validator

from compress.benchmarking.precisions import INT8, PRECISIONS, TRAINED
from compress.benchmarking.rows import FULL, BenchRow, Combination
from compress.data.loading import DataSettings, load_task_data
from compress.data.seeds import Seed
from compress.errors import CompressError, excerpt
from compress.folders import check_folder_name
from compress.models.embedding import EmbeddingSettings
from compress.models.loading import check_weights, load_config
from compress.pipeline.recipe import BASE, Recipe, named_after_file, validate_yaml_file
from compress.registry import Registry
from compress.stages.base import StageSettings
from compress.stages.distill import DistillationLoss, DistillSettings, read_sentences
from compress.stages.drop import DropSettings
from compress.stages.finetune import FinetuneSettings, TrainingHyperparameters
from compress.surgery.architectures import check_max_length, layout_for, num_layers
from compress.surgery.strategies import EXPLICIT, Strategy, layers_to_drop

BASELINE_PRECISIONS = (TRAINED, INT8)
SWEEP_KEY = "grids"
"""The field that makes a YAML file a sweep rather than a recipe (`stages`) or a goal."""


CLASSIFIER, EMBEDDER = "classifier", "embedder"
"""The kinds of model a sweep makes: classifiers (fine-tuned on labels), or sentence embedders (`embedding:`)."""


@dataclass(frozen=True)
class TrainingKind:
    """How a sweep trains a student: the stages that make it from the pre-trained model, given the layer drop."""

    stages: Callable[[Sweep, DropSettings], list[StageSettings]]
    about: str
    label: str = ""
    """Beside the strategy in tables (`top + distill`); the plain training of each kind of model has none."""
    short_label: str = ""
    """Beside the strategy and K in plots (`top4 KD`)."""
    makes: tuple[str, ...] = (CLASSIFIER,)
    """The kinds of model it can train."""
    full: bool = False
    """Whether the full model is made this way: the row every other one is measured against, for its kind of model."""


def _teacher(sweep: Sweep) -> FinetuneSettings:
    """The full model fine-tuned as the sweep fine-tunes: the baseline row's model, shared through the cache."""
    return FinetuneSettings(name="teacher", **sweep.training.model_dump())


def _distilled(sweep: Sweep, drop: DropSettings) -> list[StageSettings]:
    """A classifier learns from the fine-tuned full model; an embedder from the full embedder itself."""
    settings = {**sweep.training.model_dump(), **sweep.distillation.model_dump()}
    if sweep.embedding is not None:
        return [drop, DistillSettings(name="distill", **settings, teacher=BASE, sentences=sweep.sentences)]
    return [_teacher(sweep), drop, DistillSettings(name="distill", **settings, teacher="teacher")]


TRAININGS: Registry[TrainingKind] = Registry("training")
TRAININGS.add("finetune", TrainingKind(
    lambda sweep, drop: [drop, FinetuneSettings(name="finetune", **sweep.training.model_dump())],
    "drop layers of the pre-trained model, then fine-tune (the paper's main order)", full=True))
TRAININGS.add("distill", TrainingKind(
    _distilled, "drop layers of the pre-trained model, then train on the labels and the fine-tuned full model's outputs "
    "(an embedder: on the full embedder's sentence vectors, texts alone)", " + distill", " KD", makes=(CLASSIFIER, EMBEDDER)))
TRAININGS.add("refinetune", TrainingKind(
    lambda sweep, drop: [_teacher(sweep), drop.model_copy(update={"source": "teacher"}),
                         FinetuneSettings(name="finetune", **sweep.training.model_dump())],
    "fine-tune the full model, drop layers of it, then fine-tune again (the paper's task-specific dropping)", " + refinetune", " FT"))
TRAININGS.add("none", TrainingKind(
    lambda sweep, drop: [drop], "drop layers and train nothing: an embedder as the cut leaves it", makes=(EMBEDDER,), full=True))
Training = Literal[tuple(TRAININGS)]


def full_training(embedder: bool) -> str:
    """How the full model of a sweep's rows is made: fine-tuned (a classifier), or as it is (an embedder)."""
    kind = EMBEDDER if embedder else CLASSIFIER
    return next(name for name, entry in TRAININGS.items() if entry.full and kind in entry.makes)


def is_plain(training: str) -> bool:
    """Whether rows of this training are plain for their kind of model (fine-tuned; an embedder untrained)."""
    return training in TRAININGS and TRAININGS[training].full


def training_label(training: str, short: bool = False) -> str:
    """How tables (`top + distill`) or plots (`top4 KD`) mark a student's training: nothing for plain fine-tuning,
    or for a recipe row that trains otherwise."""
    kind = TRAININGS.get(training)
    return "" if kind is None else kind.short_label if short else kind.label


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def known_precision(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"expected one of {', '.join(PRECISIONS)} (got {excerpt(name)})")
    return name


class Grid(Strict):
    strategies: list[Strategy] = Field(min_length=1)
    k: list[int] = Field(min_length=1)
    training: list[Training] = Field(["finetune"], min_length=1)
    precisions: list[Annotated[str, AfterValidator(known_precision)]] = Field([TRAINED], min_length=1)


class LatencySettings(Strict):
    threads: int = Field(2, ge=1, description="CPU threads for every timed run (fixed and reported).")
    batch_sizes: list[PositiveInt] = Field([1, 32], min_length=1)
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
    seed: Seed = 42
    contribution_examples: int = Field(500, ge=1)
    calibration_examples: int = Field(300, ge=1)
    training: TrainingHyperparameters = Field(
        default_factory=TrainingHyperparameters,
        description="Shared by the teacher and every student, so rows differ only in what the sweep varies.",
    )
    distillation: DistillationLoss = Field(default_factory=DistillationLoss)
    embedding: EmbeddingSettings | None = Field(
        None, description="Make sentence embedders rather than classifiers (as a recipe's embedding:); their full model is the "
        "embedder as it is, and students are distilled from it or left as the cut leaves them (training: none).")
    sentences: Path | None = Field(
        None, description="Embedders: distil students on these texts (a plain text file, one per line, or JSON lines "
        "with 'text') instead of the task's training texts.")
    latency: LatencySettings = Field(default_factory=LatencySettings)
    grids: list[Grid] = Field(min_length=1)

    @model_validator(mode="after")
    def _sentences_for_embedders(self) -> Sweep:
        if self.sentences is not None and self.embedding is None:
            raise ValueError("sentences: only embedders (embedding:) distil on texts alone")
        return self

    @property
    def full_training(self) -> str:
        return full_training(self.embedding is not None)

    @field_validator("name")
    @classmethod
    def _plain_name(cls, name: str | None) -> str | None:
        return None if name is None else check_folder_name(name, "name")


def expand(sweep: Sweep) -> list[Combination]:
    """Every combination the sweep names, once each: per model and task the baselines first, then the
    grids in the order the file lists them, so a sweep's author decides what finishes first."""
    found: dict[Combination, None] = {}  # a dict keeps first-seen order
    for model, task in itertools.product(sweep.models, sweep.tasks):
        full = sweep.full_training
        found.update(dict.fromkeys(Combination(model, task, FULL, 0, full, p) for p in BASELINE_PRECISIONS))
        for grid in sweep.grids:
            for strategy, k, training, precision in itertools.product(grid.strategies, grid.k, grid.training, grid.precisions):
                found[Combination(model, task, FULL if k == 0 else strategy, k, full if k == 0 else training, precision)] = None
    return list(found)


def shard_rows(rows: list[BenchRow], index: int, count: int) -> list[BenchRow]:
    """Slice `index` (1-based) of `count`. The rows of one trained model (its precisions) stay in one
    slice, so no model is trained in two; each group goes to the slice with the fewest rows so far,
    which keeps slices within a group's size of one another. The order of the list is kept."""
    groups: dict[tuple, list[BenchRow]] = {}
    for row in rows:
        c = row.combination
        groups.setdefault((c.model, c.task, c.strategy, c.k, c.training, c.recipe), []).append(row)
    slices: list[list[BenchRow]] = [[] for _ in range(count)]
    for group in groups.values():
        min(slices, key=len).extend(group)
    chosen = {row.combination.key for row in slices[index - 1]}
    return [row for row in rows if row.combination.key in chosen]


def select_rows(rows: list[BenchRow], patterns: list[str]) -> list[BenchRow]:
    """The rows whose key (model|task|strategy|kK|training|precision, as results.jsonl writes it) matches one of
    the shell-style `patterns`, in the sweep's order: to build or time again a few rows of a large sweep."""
    for pattern in patterns:
        if not any(fnmatchcase(row.combination.key, pattern) for row in rows):
            example = rows[0].combination.key if rows else "model|task|top|k4|finetune|torch-fp32"
            raise CompressError(f"--only: {excerpt(pattern)} matches no combination to run (keys read like {example})")
    return [row for row in rows if any(fnmatchcase(row.combination.key, pattern) for pattern in patterns)]


def parse_shard(text: str) -> tuple[int, int]:
    try:
        index, count = (int(part) for part in text.split("/"))
    except ValueError:
        raise CompressError(f"--shard: expected i/n such as 2/4 (got {excerpt(text)})") from None
    if not 1 <= index <= count:
        raise CompressError(f"--shard: expected 1 <= i <= n (got {excerpt(text)})")
    return index, count


def parse_sweep(file: Path) -> Sweep:
    return named_after_file(validate_yaml_file(file, Sweep, "sweep", "models, tasks and grids"), file)


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
            check_max_length(config, sweep.latency.sequence_length, "latency.sequence_length")  # else every row fails once trained
            check_weights(model)
        except CompressError as error:
            problems.append(f"models: {error}")
    for task, data in sweep.tasks.items():
        try:
            examples = len(load_task_data(task, data, embedder=sweep.embedding is not None).train)
        except CompressError as error:
            problems.append(f"tasks.{task}: {error}")
            continue
        if problem := sweep.training.budget_problem(examples):
            problems.append(f"training.{problem} (task {task})")
    if sweep.sentences is not None:
        try:
            read_sentences(sweep.sentences)
        except CompressError as error:
            problems.append(str(error))
    kind = EMBEDDER if sweep.embedding is not None else CLASSIFIER
    for index, grid in enumerate(sweep.grids):
        for training in grid.training:
            if kind not in TRAININGS[training].makes:
                able = [name for name, entry in TRAININGS.items() if kind in entry.makes]
                problems.append(f"grids[{index}].training: '{training}' cannot train {kind}s (use {', '.join(able)})")
        for model, count in layer_counts.items():
            for strategy, k in itertools.product(grid.strategies, grid.k):
                if strategy == EXPLICIT:
                    problems.append(f"grids[{index}].strategies: '{EXPLICIT}' needs explicit indices; use a recipe for it")
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


def combination_recipe(sweep: Sweep, c: Combination) -> Recipe:
    """The recipe that makes combination `c`'s model: fine-tune (the full model), or drop layers and train
    as its training kind says (TRAININGS); then the stages of its precision."""
    if c.strategy == FULL and sweep.embedding is not None:  # the embedder as it is: no layer dropped
        stages = [DropSettings(name="full", source=BASE, strategy="top", k=0)]
    elif c.strategy == FULL:
        stages = [FinetuneSettings(name="finetune", **sweep.training.model_dump())]
    else:
        drop = DropSettings(name="drop", source=BASE, strategy=c.strategy, k=c.k, examples=sweep.contribution_examples, seed=sweep.seed)
        stages = TRAININGS[c.training].stages(sweep, drop)
    stages += PRECISIONS[c.precision].stages(sweep.seed, sweep.calibration_examples)
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{c.model}-{c.task}-{c.strategy}-k{c.k}-{c.training}-{c.precision}").strip(".-")
    return Recipe(name=name, model=c.model, task=c.task, data=sweep.tasks[c.task], embedding=sweep.embedding,
                  max_length=sweep.max_length, eval_batch_size=sweep.eval_batch_size, seed=sweep.seed, stages=stages)


def sweep_rows(sweep: Sweep) -> list[BenchRow]:
    """Every combination of the sweep as the recipe that makes it, in the sweep's order."""
    rows = []
    for c in expand(sweep):
        recipe = combination_recipe(sweep, c)
        text = yaml.safe_dump(recipe.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)
        rows.append(BenchRow(c, recipe, text, f"sweep {sweep.name}", recipe.stages[-1].name))
    return rows
