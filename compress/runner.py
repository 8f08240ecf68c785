"""Running a recipe: one folder per stage, a final model, results.json and a summary table.

Every stage writes into `<name>.partial/` and renames it to `<name>/` only when its model is
saved whole, so an interrupted run never leaves a folder that looks complete.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import transformers
from rich.console import Console
from rich.table import Table

from compress.architectures import num_layers
from compress.data import load_task_data
from compress.errors import CompressError
from compress.evaluate import evaluate, torch_predictor
from compress.layer_drop import kept_original_layers
from compress.model_card import render_model_card
from compress.models import count_parameters, load_for_task, load_saved, load_tokenizer
from compress.recipe import BASE, Recipe
from compress.stages import STAGES, StageContext

FINAL = "final"
RESULTS_FILE = "results.json"
STAGE_FILE = "stage.json"


@dataclass
class StageResult:
    name: str
    stage: str
    source: str
    folder: str
    layers: int
    kept_layers: list[int]
    parameters: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)


def prepare_run_folder(folder: Path, overwrite: bool) -> None:
    if folder.exists() and any(folder.iterdir()):
        if not overwrite:
            raise CompressError(f"{folder}: run folder exists; pass --overwrite to replace it, or --out elsewhere")
        shutil.rmtree(folder)
    folder.mkdir(parents=True, exist_ok=True)


def _link_or_copy_tree(source: Path, target: Path) -> None:
    """`final/` is a copy of the last stage's folder; hard links make it cost no disk where allowed."""
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)


def summary_table(recipe: Recipe, results: list[StageResult]) -> Table:
    table = Table(title=f"{recipe.name}: {recipe.model} on {recipe.task}")
    metric_names = list(dict.fromkeys(name for r in results for name in r.metrics))
    for column in ("stage", "from", "layers", "parameters", *metric_names, "time"):
        table.add_column(column, justify="left" if column in ("stage", "from") else "right")
    for r in results:
        metrics = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metric_names]
        table.add_row(r.name, r.source, str(r.layers), f"{r.parameters / 1e6:.1f}M", *metrics, f"{r.seconds:.0f}s")
    return table


def run_recipe(recipe: Recipe, recipe_file: Path, run_folder: Path, overwrite: bool, console: Console) -> dict:
    """Run every stage of a validated recipe; returns what results.json holds."""
    prepare_run_folder(run_folder, overwrite)
    recipe_text = recipe_file.read_text()
    (run_folder / "recipe.yaml").write_text(recipe_text)

    tokenizer = load_tokenizer(recipe.model)
    data = load_task_data(recipe.task, recipe.data)
    console.print(
        f"[bold]{recipe.task}[/]: {len(data.train):,} training examples, "
        + ", ".join(f"{len(d):,} {split}" for split, d in data.dev.items())
        + f" ({data.source})"
    )

    trained = {BASE: False}
    results: list[StageResult] = []
    for index, settings in enumerate(recipe.stages):
        source = recipe.source_of(index)
        stage = STAGES[settings.stage]
        console.rule(f"[bold]{settings.name}[/]: {settings.stage} from {source}")
        started = time.perf_counter()
        if source == BASE:
            transformers.set_seed(recipe.seed)  # the new classification head is drawn from it
            model = load_for_task(recipe.model, data.task, tokenizer)
        else:
            model = load_saved(run_folder / source)

        partial = run_folder / f"{settings.name}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        context = StageContext(data, tokenizer, partial, recipe.max_length, recipe.eval_batch_size)
        model = stage.apply(model, settings, context)
        trained[settings.name] = stage.trains or trained[source]

        metrics = {}
        if trained[settings.name]:
            metrics = evaluate(torch_predictor(model), data, tokenizer, recipe.max_length, recipe.eval_batch_size)
        result = StageResult(
            name=settings.name,
            stage=settings.stage,
            source=source,
            folder=settings.name,
            layers=num_layers(model.config),
            kept_layers=kept_original_layers(model),
            parameters=count_parameters(model),
            seconds=round(time.perf_counter() - started, 1),
            metrics=metrics,
        )
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        (partial / STAGE_FILE).write_text(
            json.dumps({"settings": settings.model_dump(by_alias=True), **asdict(result)}, indent=2) + "\n"
        )
        card = render_model_card(model, recipe.model, recipe.task, data.source, metrics, recipe_text)
        (partial / "README.md").write_text(card)
        partial.rename(run_folder / settings.name)
        results.append(result)
        console.print(f"{settings.name}: {result.layers} layers, {result.parameters:,} parameters, {metrics or ''}")

    _link_or_copy_tree(run_folder / results[-1].folder, run_folder / FINAL)
    summary = {
        "recipe": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "data": data.source,
        "final": {**asdict(results[-1]), "folder": FINAL},
        "stages": [asdict(r) for r in results],
    }
    (run_folder / RESULTS_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    console.print(summary_table(recipe, results))
    console.print(f"Final model: {run_folder / FINAL}  (results: {run_folder / RESULTS_FILE})")
    return summary
