"""Running a recipe: one folder per stage, a final model, results.json and a summary table.

Every stage writes into `<name>.partial/` and renames it to `<name>/` only when its model is
saved whole, so an interrupted run never leaves a folder that looks complete. Each finished stage
records its identity (a digest of its settings and of everything it starts from); running a recipe
into a folder that holds an earlier run reuses every stage whose identity is unchanged and redoes
the rest, so an interrupted or edited run resumes instead of starting again.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compress.data.loading import load_task_data
from compress.errors import CompressError
from compress.evaluation.evaluate import evaluate, predictor_for
from compress.evaluation.metrics import metric_texts
from compress.folders import check_writable, claim, copy_folder, holding, writing
from compress.pipeline.artifacts import (
    base_kind,
    kind_of,
    load_artifact,
    onnx_parameter_count,
    parameter_count,
    size_on_disk,
)
from compress.pipeline.model_card import CARD_FILE, render_model_card
from compress.pipeline.models import has_task_head, load_config, load_for_task, load_tokenizer, resolve_model
from compress.pipeline.recipe import BASE, Recipe
from compress.stages import STAGES, StageContext, StageSettings, run_stage
from compress.surgery.architectures import num_layers
from compress.surgery.layer_drop import kept_original_layers

FINAL = "final"
RUN_SUMMARY_FILE = "results.json"
STAGE_FILE = "stage.json"


@dataclass
class StageResult:
    name: str
    stage: str
    source: str
    folder: str
    kind: str
    layers: int
    kept_layers: list[int]
    parameters: int
    size_mb: float
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    notes: dict = field(default_factory=dict)
    identity: str = ""
    """What made the model (see `stage_identities`): a later run of a recipe reuses the stage when it matches."""


def stage_identities(recipe: Recipe) -> dict[str, str]:
    """Stage name -> a digest of everything that decides the model the stage makes: the run's model,
    task, data, length and seed, the stage's settings (not its name), and the identities of the stages
    it starts from and reads. Training is seeded, so two stages with one identity make the same model."""
    run = {key: getattr(recipe, key) for key in ("model", "task", "max_length", "eval_batch_size", "seed")}
    identities = {BASE: json.dumps({**run, "data": recipe.data.model_dump(mode="json")}, sort_keys=True)}
    for index, settings in enumerate(recipe.stages):
        reads = {field: identities.get(ref, ref) for field, ref in settings.model_references().items()}
        described = {
            "from": identities[recipe.source_of(index)],
            "settings": settings.model_dump(mode="json", exclude={"name", "source", *reads}),
            "reads": reads,
        }
        identities[settings.name] = hashlib.sha256(json.dumps(described, sort_keys=True).encode()).hexdigest()
    return identities


def _stage_record(settings: StageSettings, result: StageResult) -> str:
    return json.dumps({"settings": settings.model_dump(by_alias=True), **asdict(result)}, indent=2) + "\n"


def finished_result(folder: Path, identity: str) -> StageResult | None:
    """The result of a finished stage folder (its `stage.json`) if it made the model `identity` names."""
    try:
        record = json.loads((folder / STAGE_FILE).read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("identity") != identity:
        return None
    try:
        return StageResult(**{key: record[key] for key in StageResult.__dataclass_fields__})
    except (KeyError, TypeError):
        return None


def reuse_stage(finished: Path, folder: Path, settings: StageSettings, source: str) -> StageResult:
    """Link a finished stage folder of another run in as this run's stage `settings` (from `source`)."""
    with writing(folder) as partial:
        copy_folder(finished, partial)
        record = json.loads((partial / STAGE_FILE).read_text())
        fields = {key: record[key] for key in StageResult.__dataclass_fields__}
        result = StageResult(**{**fields, "name": settings.name, "source": source, "folder": settings.name})
        result.notes = {**result.notes, "reused_from": str(finished)}
        # Hard links: writing through them would change the other run's files.
        for name in (STAGE_FILE, CARD_FILE):
            (partial / name).unlink(missing_ok=True)
        (partial / STAGE_FILE).write_text(_stage_record(settings, result))
        (partial / CARD_FILE).write_text(
            f"# {settings.name}\n\nThe same model as `{finished}` (the same stage settings from the same start), "
            "linked in rather than built again; its model card is there.\n"
        )
    return result


def summary_table(recipe: Recipe, results: list[StageResult]) -> Table:
    table = Table(title=f"{recipe.name}: {recipe.model} on {recipe.task}")
    texts = [metric_texts(r.metrics) for r in results]
    metric_names = list(dict.fromkeys(name for t in texts for name in t))
    for column in ("stage", "from", "kind", "layers", "parameters", "size", *metric_names, "time"):
        table.add_column(column, justify="left" if column in ("stage", "from", "kind") else "right")
    for r, text in zip(results, texts):
        metrics = [text.get(m, "-") for m in metric_names]
        table.add_row(
            r.name, r.source, r.kind, str(r.layers), f"{r.parameters / 1e6:.1f}M", f"{r.size_mb:.1f} MB",
            *metrics, f"{r.seconds:.0f}s",
        )
    return table


def run_recipe(recipe: Recipe, recipe_file: Path | str, run_folder: Path, overwrite: bool, console: Console,
               recipe_text: str | None = None, finished_stages: dict[str, Path] | None = None) -> dict:
    """Run (or resume) every stage of a validated recipe in `run_folder`; returns what results.json holds.

    Stages finished in `run_folder` by an earlier run of the same settings from the same start are
    reused; `overwrite` empties the folder first (only a folder compress made). `recipe_file` names
    the recipe in messages; `recipe_text` (default: that file's text) is kept beside the run and in
    model cards. With `finished_stages` (stage identity -> a finished stage folder of another run), a
    stage found there is linked in instead of run again, and every stage this run makes is added to it."""
    # Everything that can still fail on bad input comes before the run folder is touched.
    check_writable(run_folder)
    recipe_text = recipe_text or Path(recipe_file).read_text()
    tokenizer = load_tokenizer(recipe.model)
    try:
        data = load_task_data(recipe.task, recipe.data)
    except CompressError as error:
        raise CompressError(f"{recipe_file}: {error}") from None
    claim(run_folder, overwrite, "run folder")
    with holding(run_folder):
        return _run_stages(recipe, recipe_text, data, tokenizer, run_folder, console, finished_stages)


def _run_stages(recipe: Recipe, recipe_text: str, data, tokenizer, run_folder: Path, console: Console,
                finished_stages: dict[str, Path] | None) -> dict:
    (run_folder / "recipe.yaml").write_text(recipe_text)
    console.print(
        f"[bold]{recipe.task}[/]: {len(data.train):,} training examples, "
        + ", ".join(f"{len(d):,} {split}" for split, d in data.dev.items())
        + f" ({data.source})"
    )
    identities = stage_identities(recipe)
    done_here = {s.name: r for s in recipe.stages if (r := finished_result(run_folder / s.name, identities[s.name]))}
    if done_here:
        redo = [s.name for s in recipe.stages if s.name not in done_here]
        console.print(f"resuming {run_folder}: reusing {', '.join(done_here)} (finished with the same settings from the same start)"
                      + (f"; running {', '.join(redo)}" if redo else "; nothing left to run"))

    # A model saved with a task head has been trained on a task; a pre-trained encoder has not.
    trained = {BASE: has_task_head(load_config(recipe.model))}
    parameters: dict[str, int] = {}
    stage_folders: dict[str, Path] = {}
    results: list[StageResult] = []
    for index, settings in enumerate(recipe.stages):
        source = recipe.source_of(index)
        identity = identities[settings.name]
        folder = run_folder / settings.name
        console.rule(f"[bold]{settings.name}[/]: {settings.stage} from {source}")
        linked = finished_stages.get(identity) if finished_stages is not None else None
        result = done_here.get(settings.name)
        if result is not None:
            console.print(f"{settings.name}: finished in an earlier run, reused")
        elif linked is not None:
            result = reuse_stage(linked, folder, settings, source)
            console.print(f"{settings.name}: the same stage as {linked}, linked in, not run again")
        else:
            result = _build_stage(recipe, recipe_text, index, identity, data, tokenizer, folder, stage_folders, parameters, trained)
            scores = ", ".join(f"{name} {text}" for name, text in metric_texts(result.metrics).items())
            console.print(f"{settings.name}: {result.layers} layers, {result.parameters:,} parameters" + (f", {scores}" if scores else ""))
        trained[settings.name] = STAGES[settings.stage].trains or trained[source]
        parameters[settings.name] = result.parameters
        stage_folders[settings.name] = folder
        if finished_stages is not None:
            finished_stages.setdefault(identity, folder)
        results.append(result)

    with writing(run_folder / FINAL) as partial:
        copy_folder(run_folder / results[-1].folder, partial)
    summary = {
        "recipe": recipe.name,
        "model": recipe.model,
        "task": recipe.task,
        "data": data.source,
        "final": {**asdict(results[-1]), "folder": FINAL},
        "stages": [asdict(r) for r in results],
    }
    (run_folder / RUN_SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n")
    console.print(summary_table(recipe, results))
    console.print(f"Final model: {run_folder / FINAL}  (results: {run_folder / RUN_SUMMARY_FILE})")
    return summary


def _build_stage(recipe: Recipe, recipe_text: str, index: int, identity: str, data, tokenizer, folder: Path,
                 stage_folders: dict[str, Path], parameters: dict[str, int], trained: dict[str, bool]) -> StageResult:
    """Run stage `index` into `folder` (through `folder.partial`), evaluate its model, write stage.json and its card."""
    settings, source = recipe.stages[index], recipe.source_of(index)
    started = time.perf_counter()
    if source == BASE and base_kind(recipe.model) == "onnx":
        model = load_artifact(Path(resolve_model(recipe.model)))
        parameters[BASE] = onnx_parameter_count(model)
    elif source == BASE:
        model = load_for_task(recipe.model, data.task, tokenizer, recipe.seed)
        parameters[BASE] = parameter_count(model)
    else:
        model = load_artifact(stage_folders[source])

    with writing(folder) as partial:
        context = StageContext(data, tokenizer, partial, recipe.max_length, recipe.eval_batch_size, stage_folders=dict(stage_folders))
        model = run_stage(settings, model, context)
        metrics = {}
        if STAGES[settings.stage].trains or trained[source]:
            metrics = evaluate(predictor_for(model), data, tokenizer, recipe.max_length, recipe.eval_batch_size)
        result = StageResult(
            name=settings.name,
            stage=settings.stage,
            source=source,
            folder=settings.name,
            kind=kind_of(model),
            layers=num_layers(model.config),
            kept_layers=kept_original_layers(model.config),
            # Export and quantization keep the weight count of the model they start from.
            parameters=parameter_count(model) or parameters[source],
            size_mb=round(size_on_disk(partial) / 1e6, 2),
            seconds=round(time.perf_counter() - started, 1),
            metrics=metrics,
            notes=context.notes,
            identity=identity,
        )
        (partial / STAGE_FILE).write_text(_stage_record(settings, result))
        card = render_model_card(model.config, result.parameters, recipe.model, recipe.task, data.source, metrics, recipe_text)
        (partial / CARD_FILE).write_text(card)
    return result
