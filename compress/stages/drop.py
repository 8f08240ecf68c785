"""The `drop` stage: remove K layers chosen by a strategy (top, bottom, alternate, symmetric, contribution)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from rich.console import Console
from rich.table import Table
from transformers import PreTrainedModel

from compress.architectures import num_layers
from compress.contribution import score_layers_on_task
from compress.layer_drop import drop_layers, kept_original_layers
from compress.stages.base import StageContext, StageSettings
from compress.strategies import layers_to_drop

Strategy = Literal["top", "bottom", "alternate-even", "alternate-odd", "symmetric", "contribution", "layers"]

SCORES_FILE = "contribution_scores.json"


class DropSettings(StageSettings):
    stage: Literal["drop"] = "drop"
    strategy: Strategy
    k: int | None = Field(None, ge=0, description="How many layers to drop.")
    layers: list[int] | None = Field(None, description="strategy 'layers': 0-based indices to drop.")
    examples: int = Field(500, ge=1, description="strategy 'contribution': task examples to score layers on.")
    seed: int = Field(42, description="strategy 'contribution': which examples are drawn.")

    @model_validator(mode="after")
    def _k_or_layers(self):
        if self.strategy == "layers" and (self.layers is None or self.k is not None):
            raise ValueError("strategy 'layers' takes the list 'layers' and no 'k'")
        if self.strategy != "layers" and (self.k is None or self.layers is not None):
            raise ValueError(f"strategy '{self.strategy}' takes 'k' and no 'layers'")
        return self


def write_contribution_scores(scores: list[float], model: PreTrainedModel, context_note: dict, folder: Path) -> None:
    """Save the scores as JSON beside the model and print them, one row per layer."""
    original = kept_original_layers(model.config)
    rows = [{"layer": i, "original_layer": original[i], "score": s} for i, s in enumerate(scores)]
    (folder / SCORES_FILE).write_text(json.dumps({**context_note, "layers": rows}, indent=2) + "\n")
    table = Table(title="Contribution: cosine(layer input, layer output); highest = first dropped")
    for column in ("layer", "original layer", "score"):
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(str(row["layer"]), str(row["original_layer"]), f"{row['score']:.4f}")
    Console().print(table)


def drop(model: PreTrainedModel, settings: DropSettings, context: StageContext) -> PreTrainedModel:
    scores = None
    if settings.strategy == "contribution":
        scores = score_layers_on_task(
            model, context.tokenizer, context.data.train, settings.examples, context.max_length, settings.seed
        )
        note = {"task": context.data.task.name, "examples": min(settings.examples, len(context.data.train))}
        write_contribution_scores(scores, model, note, context.output_dir)
    indices = layers_to_drop(
        settings.strategy, num_layers(model.config), settings.k, layers=settings.layers, scores=scores
    )
    return drop_layers(model, indices, settings.strategy)
