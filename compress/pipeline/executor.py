"""The executor: the one code path that builds models. It takes stage nodes (of one recipe or of
many, compress/pipeline/graph.py), builds each into the stage cache once, and finds it there
afterwards, whichever recipe asks, in this run or a later one.

Every build is written into `<folder>.partial/` and renamed when whole, with its `stage.json`
written last, so an interrupted build is never taken for a finished one.
"""

from __future__ import annotations

import os
import time
from contextlib import nullcontext
from pathlib import Path

from rich.console import Console

from compress.data.loading import TaskData
from compress.errors import CompressError
from compress.evaluation.evaluate import evaluate
from compress.evaluation.metrics import metric_texts
from compress.folders import checkpoints_for, remove_finished_checkpoints, write_text, writing
from compress.models.artifacts import (
    base_kind,
    kind_of,
    load_artifact,
    onnx_parameter_count,
    parameter_count,
    predictor_for,
    size_on_disk,
)
from compress.models.embedding import mark_embedder
from compress.models.loading import load_encoder, load_for_task, load_saved, load_tokenizer, resolve_model
from compress.pipeline.cache import StageCache, StageRecord, file_facts
from compress.pipeline.graph import StageNode
from compress.pipeline.model_card import CARD_FILE, render_model_card
from compress.pipeline.recipe import Recipe
from compress.stages import StageContext, run_stage
from compress.stages.base import TrainingCheckpoints
from compress.surgery.architectures import num_layers
from compress.surgery.layer_drop import kept_original_layers, original_num_layers
from compress.timing.load import LoadElsewhere

CHECKPOINT_MINUTES = "COMPRESS_CHECKPOINT_MINUTES"
DEFAULT_CHECKPOINT_MINUTES = 10.0
"""A killed training loses at most this much work; a checkpoint of a 110M-parameter model and its optimizer is 1.3 GB."""


def checkpoint_seconds() -> float:
    """Seconds between training checkpoints: $COMPRESS_CHECKPOINT_MINUTES, else 10 minutes; 0 saves none."""
    text = os.environ.get(CHECKPOINT_MINUTES, str(DEFAULT_CHECKPOINT_MINUTES))
    try:
        minutes = float(text)
    except ValueError:
        minutes = -1.0
    if not 0 <= minutes < float("inf"):
        raise CompressError(f"{CHECKPOINT_MINUTES}: expected the minutes between training checkpoints, a number >= 0 "
                            f"(0: none), got {text[:40]!r}")
    return 60 * minutes


def embedder(recipe: Recipe):
    """The recipe's model as a sentence embedder: its bare encoder, marked with the pooling the recipe gives it."""
    return mark_embedder(load_encoder(recipe.model), recipe.embedding.resolve(recipe.model))


class NotBuilt(CompressError):
    """A trained model that is not in the cache while training is not allowed (measuring again)."""


class Executor:
    def __init__(self, cache: StageCache, console: Console, may_train: bool = True):
        self.cache = cache
        self.console = console
        self.may_train = may_train
        """False while measuring again: a model that needs training and is missing is an error, never trained."""
        self.built: list[StageRecord] = []
        """Every stage built (not found) by this executor, in order."""
        self._data: dict[str, TaskData] = {}
        self._tokenizers: dict = {}
        self.checkpoint_seconds = checkpoint_seconds()  # read now: a bad value stops the command before any work

    def data(self, recipe: Recipe, loaded: TaskData | None = None) -> TaskData | None:
        """The recipe's task data, loaded once (`loaded`: where validating the recipe loaded them already);
        None for a recipe without a task."""
        if recipe.task is None:
            return None
        key = recipe.task + recipe.data.model_dump_json() + str(recipe.embedding is not None)
        if key not in self._data:
            self._data[key] = loaded or recipe.load_data()
        return self._data[key]

    def tokenizer(self, model: str):
        if model not in self._tokenizers:
            self._tokenizers[model] = load_tokenizer(model)
        return self._tokenizers[model]

    def ensure(self, node: StageNode) -> tuple[Path, StageRecord]:
        """The folder and record of `node`'s model: found in the cache, linked in, or built (its sources first)."""
        found = self.cache.find(node)
        for note in self.cache.notes:
            self.console.print(f"[yellow]note[/]: {note}")
        self.cache.notes.clear()
        if found is not None:
            folder, record = found
            if folder == self.cache.folder(node):
                remove_finished_checkpoints(folder)
            else:
                record = self.cache.link(folder, record, node)
                self.console.print(f"{node.name}: the same stage as {folder}, linked in, not built again")
                folder = self.cache.folder(node)
            return folder, self._scored_as_saved(node, folder, record) if record.scored_in_autocast else record
        if node.trains and not self.may_train:
            raise NotBuilt(f"{self.cache.folder(node)} is not trained in this folder; run without --retime to train it")
        source = self.ensure(node.source) if node.source else None
        reads = {name: self.ensure(read)[0] for name, read in node.reads.items()}
        return self._build(node, source, reads)

    def _scored_as_saved(self, node: StageNode, folder: Path, record: StageRecord) -> StageRecord:
        """The record of a model an older compress scored in bf16 autocast, with the scores of the model its folder holds
        (its record and card rewritten; the model's files stay as they are)."""
        recipe = node.recipe
        data, tokenizer, model = self.data(recipe), self.tokenizer(recipe.model), load_artifact(folder)
        metrics = evaluate(predictor_for(model), data, tokenizer, recipe.max_length, recipe.eval_batch_size)
        primary = data.task.primary_metric
        self.console.print(f"[yellow]note[/]: {node.name} ({folder}) was scored in bf16 autocast by an older compress, "
                           f"{primary} {record.metrics.get(primary, float('nan')):.4f}; as saved it scores {metrics[primary]:.4f}")
        rescored = record.model_copy(update={"metrics": metrics, "scored_in_autocast": False})
        rescored.write(folder)
        write_card(folder, model, rescored, node, data)
        return rescored

    def _base_model(self, recipe: Recipe):
        """The recipe's model and its weight count."""
        if base_kind(recipe.model) == "onnx":
            model = load_artifact(Path(resolve_model(recipe.model)))
            return model, onnx_parameter_count(model)
        data = self.data(recipe)
        if recipe.embedding is not None:
            model = embedder(recipe)
        # Without a task the model keeps the head it has (none for a pre-trained encoder).
        elif data is None:
            model = load_saved(recipe.model)
        else:
            model = load_for_task(recipe.model, data.task, self.tokenizer(recipe.model), recipe.seed)
        return model, parameter_count(model)

    def _build(self, node: StageNode, source: tuple[Path, StageRecord] | None, reads: dict[str, Path]) -> tuple[Path, StageRecord]:
        recipe, folder = node.recipe, self.cache.folder(node)
        self.console.rule(f"[bold]{node.name}[/]: {node.settings.stage} from {node.source_name}")
        started = time.perf_counter()
        if source is None:
            model, source_parameters = self._base_model(recipe)
        else:
            model, source_parameters = load_artifact(source[0]), source[1].parameters
        data, tokenizer = self.data(recipe), self.tokenizer(recipe.model)
        # A training stage's checkpoints outlive an interrupted build (and go only once the model's folder is whole).
        with (checkpoints_for(folder, node.identity) if node.trains else nullcontext()) as checkpoints, writing(folder) as partial:
            training = checkpoints and TrainingCheckpoints(checkpoints, self.checkpoint_seconds, started)
            context = StageContext(data, tokenizer, partial, recipe.max_length, recipe.eval_batch_size, stage_folders=reads,
                                   checkpoints=training, base_model=(lambda: embedder(recipe)) if recipe.embedding else None)
            with LoadElsewhere() as elsewhere:
                output = run_stage(node.settings, model, context)
            model = output.model
            scored = node.trained and data is not None
            metrics = evaluate(predictor_for(model), data, tokenizer, recipe.max_length, recipe.eval_batch_size) if scored else {}
            record = StageRecord(
                identity=node.identity,
                name=node.name,
                stage=node.settings.stage,
                settings=node.settings.model_dump(by_alias=True),
                source=node.source_name,
                folder=str(folder.relative_to(self.cache.root)),
                kind=kind_of(model),
                layers=num_layers(model.config),
                kept_layers=kept_original_layers(model.config),
                # Export and quantization keep the weight count of the model they start from.
                parameters=parameter_count(model) or source_parameters,
                size_mb=round(size_on_disk(partial) / 1e6, 2),
                seconds=round(training.elapsed() if training else time.perf_counter() - started, 1),
                metrics=metrics,
                notes=output.facts.model_dump(exclude_none=True) if output.facts else {},
                other_cpu_load=elsewhere.cores,
                files=file_facts(partial),
                max_length=recipe.max_length,
                trained=node.trained,
            )
            record.write(partial)
            write_card(partial, model, record, node, data)
        self.cache.add(folder, record)
        self.built.append(record)
        scores = ", ".join(f"{name} {text}" for name, text in metric_texts(metrics).items())
        kept = f" (original layers {record.kept_layers})" if record.layers < original_num_layers(model.config) else ""
        self.console.print(f"{node.name}: {record.layers} layers{kept}, {record.parameters:,} parameters" + (f", {scores}" if scores else ""))
        return folder, record


def write_card(folder: Path, model, record: StageRecord, node: StageNode, data: TaskData | None) -> None:
    """The model card of a stage folder, from its record's figures and the recipe that made it (written whole)."""
    recipe = node.recipe
    card = render_model_card(model.config, record.parameters, recipe.model, recipe.task, None if data is None else data.source,
                             record.metrics, node.recipe_text)
    write_text(folder / CARD_FILE, card)
