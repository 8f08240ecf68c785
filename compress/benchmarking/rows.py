"""Benchmark rows: each row is a recipe and the stage of it whose model is measured, named by the
combination of strategy, K, training and precision that the tables and plots group rows by.

A sweep's rows come from compress/benchmarking/sweep.py; a list of recipes gives one row per recipe
(its last stage), and per model and task a generated baseline recipe that fine-tunes the full model
with the first such recipe's data and training settings, exports it and quantizes it to dynamic
int8: the two rows a user would pick instead (the full model in PyTorch fp32 and in int8 ONNX), and
the reference every other row's change is counted from. Recipes that train nothing get no baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import yaml

from compress.benchmarking.precisions import INT8, PRECISIONS
from compress.errors import CompressError
from compress.folders import safe_folder_name
from compress.pipeline.graph import StageNode, recipe_graph
from compress.pipeline.recipe import Recipe, load_recipe, read_yaml, recipe_file_text
from compress.stages import STAGES
from compress.stages.base import ModelDescription, StageSettings
from compress.stages.export import EXPORTED, ExportSettings
from compress.stages.finetune import FinetuneSettings, TrainingHyperparameters
from compress.stages.quantize import DynamicInt8Settings

FULL = "full"
"""Strategy name of the undropped reference rows (K = 0)."""


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


@dataclass(frozen=True)
class BenchRow:
    combination: Combination
    recipe: Recipe
    recipe_text: str
    """The recipe as written (or generated), for model cards."""
    origin: str
    """The recipe file, or what generated the recipe."""
    measured: str
    """The stage whose model is measured."""

    @cached_property
    def node(self) -> StageNode:
        return recipe_graph(self.recipe, self.recipe_text)[self.measured]


def describe(stages: list[StageSettings]) -> tuple[str, int, str, str]:
    """(strategy, K, training, precision) of the model a chain of stages makes, as a sweep would name it."""
    described = ModelDescription()
    for settings in stages:
        settings.describe(described)
    strategy = "+".join(dict.fromkeys(described.strategies)) or FULL
    return strategy, described.k, described.training, described.precision


def trained_node(node: StageNode | None) -> StageNode | None:
    """The last stage that trained the model `node` makes (its time and weights are the row's)."""
    while node is not None and not node.trains:
        node = node.source
    return node


BASELINE_TRAINED, BASELINE_INT8 = "finetune", INT8
"""Stage names in a baseline recipe: the fine-tuned full model and its int8 export."""


def training_settings(recipe: Recipe) -> tuple:
    """What makes two recipes' training comparable: data, length, seed and the first training stage's hyperparameters."""
    training = next((s for s in recipe.stages if STAGES[s.stage].trains), None)
    hyperparameters = training and {name: getattr(training, name) for name in TrainingHyperparameters.model_fields}
    return recipe.data, recipe.max_length, recipe.seed, hyperparameters


def baseline_recipe(recipe: Recipe) -> Recipe | None:
    """The full model fine-tuned as `recipe` fine-tunes its student, exported and quantized to dynamic
    int8; None when `recipe` trains nothing."""
    hyperparameters = training_settings(recipe)[-1]
    if hyperparameters is None:
        return None
    return recipe.model_copy(update={
        "name": safe_folder_name(f"baseline-{recipe.model}-{recipe.task}"),
        "description": f"The full {recipe.model} fine-tuned on {recipe.task} as recipe {recipe.name} trains (generated)",
        "stages": [
            FinetuneSettings(name=BASELINE_TRAINED, **hyperparameters),
            ExportSettings(name=EXPORTED),
            DynamicInt8Settings(name=BASELINE_INT8, seed=recipe.seed),
        ],
    })


def is_recipe_file(file: Path) -> bool:
    """A YAML mapping with `stages` is a recipe (a sweep has `grids`); unreadable files are left to the
    sweep's validation, which names the problem."""
    try:
        content = read_yaml(file, "recipe")
    except CompressError:
        return False
    return isinstance(content, dict) and "stages" in content


def load_recipes(files: list[Path]) -> dict[str, tuple[Recipe, str]]:
    """Every recipe validated before any work, with every problem listed at once; name -> (recipe, file)."""
    recipes: dict[str, tuple[Recipe, str]] = {}
    problems: list[str] = []
    for file in files:
        try:
            recipe = load_recipe(file)
        except CompressError as error:
            problems.append(str(error))
            continue
        if recipe.task is None:
            problems.append(f"{file}: task: a benchmark scores each model on a task; name one")
            continue
        if recipe.name in recipes:
            problems.append(f"{file}: name '{recipe.name}' is also the name of {recipes[recipe.name][1]}; "
                            "recipes in one benchmark need different names")
            continue
        precision = describe(recipe.chain(recipe.stages[-1].name))[3]
        if precision not in PRECISIONS:
            problems.append(f"{file}: stages[{len(recipe.stages) - 1}].mode: a benchmark row needs a named engine and precision, and "
                            f"'{precision}' picks one as it runs; bench the modes it picks from (recipes, or a sweep's precisions)")
            continue
        recipes[recipe.name] = (recipe, str(file))
    if problems:
        raise CompressError(f"{len(problems)} problem(s): " + "; ".join(problems))
    return recipes


def recipe_rows(recipes: dict[str, tuple[Recipe, str]]) -> tuple[list[BenchRow], list[str]]:
    """Per model and task the two baseline rows first, then each recipe's last stage, in file order;
    and a note for each recipe that trains otherwise than its baseline."""
    rows: list[BenchRow] = []
    baselines: dict[tuple[str, str], tuple[Recipe, str]] = {}
    notes: list[str] = []

    def row(recipe: Recipe, text: str, origin: str, stage: str) -> BenchRow:
        return BenchRow(Combination(recipe.model, recipe.task, *describe(recipe.chain(stage)), recipe=recipe.name), recipe, text, origin, stage)

    for recipe, file in recipes.values():
        baseline = baseline_recipe(recipe)
        if baseline is None:
            continue
        if (recipe.model, recipe.task) in baselines:
            source, source_file = baselines[(recipe.model, recipe.task)]
            if training_settings(recipe) != training_settings(source):
                notes.append(f"{file}: trains with other data or settings than {source_file}, which the baseline "
                             f"for {recipe.model} on {recipe.task} copies; its change against the full model mixes the two")
            continue
        baselines[(recipe.model, recipe.task)] = (recipe, file)
        text = yaml.safe_dump(baseline.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=False)
        rows += [row(baseline, text, f"baseline generated from {file}", stage) for stage in (BASELINE_TRAINED, BASELINE_INT8)]
    for recipe, file in recipes.values():
        rows.append(row(recipe, recipe_file_text(Path(file)), file, recipe.stages[-1].name))
    return rows, notes
