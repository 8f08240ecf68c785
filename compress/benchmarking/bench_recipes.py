"""Benchmarking a list of recipes: `compress bench a.yaml b.yaml --out DIR`.

Each recipe is one combination: it runs once, with the same runner as `compress run`, into
`<out>/work/recipes/<name>/` and its final model is measured like a sweep's combination (score,
size, latency, memory). Its row in the tables is named by what its stages do: the drop stage's
strategy and K, distillation or fine-tuning, and the precision the last stage leaves.

Beside them, per model and task, a generated baseline recipe fine-tunes the full model with the
first such recipe's data and training settings, exports it and quantizes it to dynamic int8: the
two rows a user would pick instead (the full model in PyTorch fp32 and in int8 ONNX), and the
reference every other row's change is counted from. Recipes that train nothing get no baseline.

A stage that two recipes, or a recipe and its baseline, share (the same settings from the same
start, compress/pipeline/runner.py's `stage_identities`) runs once: the others link its folder in, and their
stage.json notes `reused_from`. A recipe's teacher that is its baseline's model is trained once.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.console import Console

from compress.benchmarking.bench import CombinationRunner, NotBuilt, Scoring, model_slug
from compress.benchmarking.sweep import FULL, Combination, LatencySettings
from compress.data.loading import TaskData, load_task_data
from compress.errors import CompressError
from compress.pipeline.recipe import BASE, Recipe, load_recipe
from compress.pipeline.runner import RUN_SUMMARY_FILE, STAGE_FILE, run_recipe, stage_identities
from compress.stages.drop import DropSettings
from compress.stages.export import ExportSettings
from compress.stages.finetune import FinetuneSettings, TrainingHyperparameters
from compress.stages.quantize import QuantizeSettings

PRECISION_OF_MODE = {
    "dynamic-int8": "onnx-int8-dynamic",
    "static-int8": "onnx-int8-static",
    "torch-dynamic-int8": "torch-int8",
    "bnb-8bit": "bnb-8bit",
    "bnb-4bit": "bnb-4bit",
    "fp16": "fp16",
}
"""The sweep's precision name for what each quantize mode makes."""
BASELINE_TRAINED, BASELINE_INT8 = "finetune", "onnx-int8-dynamic"
"""Stage names in a baseline recipe: the fine-tuned full model and its int8 export."""


@dataclass(frozen=True)
class RecipeRow:
    """One measured row: a stage folder of a recipe's run."""

    recipe: Recipe
    file: str
    """The recipe file, or what generated the recipe."""
    text: str
    """The recipe as its run folder keeps it (recipe.yaml): the file's text, or the generated recipe."""
    measured: str
    """The stage folder measured."""
    trained: str | None
    """The last training stage before it, whose time and parameters the row reports."""


def stage_chain(recipe: Recipe, last: str) -> list:
    """The stages that lead from the base model to stage `last`, in order (following `from`)."""
    index_of = {stage.name: i for i, stage in enumerate(recipe.stages)}
    chain, name = [], last
    while name != BASE:
        chain.append(recipe.stages[index_of[name]])
        name = recipe.source_of(index_of[name])
    return chain[::-1]


def describe(recipe: Recipe, last: str) -> tuple[str, int, str, str]:
    """(strategy, K, training, precision) of the model stage `last` makes, as a sweep would name it."""
    chain = stage_chain(recipe, last)
    drops = [s for s in chain if isinstance(s, DropSettings)]
    strategy = "+".join(dict.fromkeys(s.strategy for s in drops)) or FULL
    k = sum(s.k if s.k is not None else len(s.layers) for s in drops)
    trainings = [s.stage for s in chain if isinstance(s, FinetuneSettings)]  # distill settings are finetune settings
    training = "distill" if "distill" in trainings else "finetune" if trainings else "none"
    precision = "torch-fp32"
    for s in chain:
        if isinstance(s, ExportSettings):
            precision = "onnx-fp32"
        elif isinstance(s, QuantizeSettings):
            precision = PRECISION_OF_MODE[s.mode]
    return strategy, k, training, precision


def last_training_stage(recipe: Recipe, last: str) -> str | None:
    trained = [s.name for s in stage_chain(recipe, last) if isinstance(s, FinetuneSettings)]
    return trained[-1] if trained else None


def baseline_recipe(recipe: Recipe) -> Recipe | None:
    """The full model fine-tuned as `recipe` fine-tunes its student, exported and quantized to dynamic
    int8; None when `recipe` trains nothing."""
    hyperparameters = training_settings(recipe)[-1]
    if hyperparameters is None:
        return None
    return recipe.model_copy(update={
        "name": f"baseline-{model_slug(recipe.model)}-{recipe.task}",
        "description": f"The full {recipe.model} fine-tuned on {recipe.task} as recipe {recipe.name} trains (generated)",
        "stages": [
            FinetuneSettings(name=BASELINE_TRAINED, **hyperparameters),
            ExportSettings(name="onnx-fp32"),
            QuantizeSettings(name=BASELINE_INT8, mode="dynamic-int8", seed=recipe.seed),
        ],
    })


def is_recipe_file(file: Path) -> bool:
    """A YAML mapping with `stages` is a recipe (a sweep has `grids`); unreadable files are left to the
    sweep's validation, which names the problem."""
    try:
        content = yaml.safe_load(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, RecursionError, yaml.YAMLError):
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
        if recipe.name in recipes:
            problems.append(f"{file}: name '{recipe.name}' is also the name of {recipes[recipe.name][1]}; "
                            "recipes in one benchmark need different names")
            continue
        recipes[recipe.name] = (recipe, str(file))
    if problems:
        raise CompressError(f"{len(problems)} problem(s): " + "; ".join(problems))
    return recipes


def training_settings(recipe: Recipe) -> tuple:
    """What makes two recipes' training comparable: data, length, seed and the first training
    stage's hyperparameters."""
    training = next((s for s in recipe.stages if isinstance(s, FinetuneSettings)), None)
    hyperparameters = training and {name: getattr(training, name) for name in TrainingHyperparameters.model_fields}
    return recipe.data, recipe.max_length, recipe.seed, hyperparameters


def recipe_rows(recipes: dict[str, tuple[Recipe, str]]) -> tuple[dict[Combination, RecipeRow], list[str]]:
    """Per model and task the two baseline rows first, then each recipe's final model, in file order;
    and a note for each recipe that trains otherwise than its baseline."""
    rows: dict[Combination, RecipeRow] = {}
    baselines: dict[tuple[str, str], tuple[Recipe, str]] = {}
    notes: list[str] = []
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
        for stage in (BASELINE_TRAINED, BASELINE_INT8):
            c = Combination(recipe.model, recipe.task, *describe(baseline, stage), recipe=baseline.name)
            rows[c] = RecipeRow(baseline, f"baseline generated from {file}", text, stage, BASELINE_TRAINED)
    for recipe, file in recipes.values():
        last = recipe.stages[-1].name
        c = Combination(recipe.model, recipe.task, *describe(recipe, last), recipe=recipe.name)
        rows[c] = RecipeRow(recipe, file, Path(file).read_text(), last, last_training_stage(recipe, last))
    return rows, notes


class RecipeRunner(CombinationRunner):
    def __init__(self, rows: dict[Combination, RecipeRow], out_dir: Path, latency: LatencySettings, console: Console):
        super().__init__(out_dir, latency, console)
        self.rows = {c.key: row for c, row in rows.items()}
        self._data: dict[str, TaskData] = {}
        self.finished_stages: dict[str, Path] = {}
        """Stage identity -> a finished stage folder: a stage two recipes (or a recipe and its baseline)
        share is run once, also across runs of the benchmark."""
        for row in self.rows.values():
            folder = self.run_folder(row.recipe)
            if (folder / RUN_SUMMARY_FILE).exists():
                for stage, identity in stage_identities(row.recipe).items():
                    if (folder / stage / STAGE_FILE).exists():
                        self.finished_stages.setdefault(identity, folder / stage)

    def run_folder(self, recipe: Recipe) -> Path:
        return self.work / "recipes" / recipe.name

    def check_out_dir(self, retime: bool) -> None:
        """Refuse a folder holding a run of another version of one of these recipes."""
        for row in self.rows.values():
            kept = self.run_folder(row.recipe) / "recipe.yaml"
            if kept.exists() and kept.read_text() != row.text:
                raise CompressError(
                    f"{self.run_folder(row.recipe)}: holds a run of another version of {row.file}; "
                    "use another --out (or delete that folder)"
                )

    def data(self, recipe: Recipe) -> TaskData:
        if recipe.name not in self._data:
            self._data[recipe.name] = load_task_data(recipe.task, recipe.data)
        return self._data[recipe.name]

    def scoring(self, c: Combination) -> Scoring:
        recipe = self.rows[c.key].recipe
        return Scoring(self.data(recipe), self.tokenizer(recipe.model), recipe.max_length, recipe.eval_batch_size, recipe.seed)

    def build_record(self, folder: Path) -> dict:
        return json.loads((folder / STAGE_FILE).read_text())

    def artifact(self, c: Combination) -> tuple[Path | None, Path]:
        row = self.rows[c.key]
        folder = self.run_folder(row.recipe)
        if not (folder / RUN_SUMMARY_FILE).exists():  # not run yet, or interrupted: run it whole
            if self.finished is not None:
                raise NotBuilt(f"{folder} holds no finished run of {row.file}; run the benchmark without --retime")
            self.console.print(f"  running recipe {row.recipe.name} ({row.file})")
            run_recipe(row.recipe, row.file, folder, overwrite=True, console=self.console, recipe_text=row.text,
                       finished_stages=self.finished_stages)
            for stage in row.recipe.stages:
                built = self.build_record(folder / stage.name)
                if "reused_from" not in built["notes"]:  # a linked stage took no time in this run
                    self.stage_seconds[stage.stage] = round(self.stage_seconds.get(stage.stage, 0.0) + built["seconds"], 1)
        return (folder / row.trained if row.trained else None), folder / row.measured
