"""The `drop` stage: remove K layers chosen by a strategy (top, bottom, alternate, symmetric, contribution)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

from datasets import Dataset
from pydantic import Field, model_validator
from rich.console import Console
from transformers import PretrainedConfig, PreTrainedModel, PreTrainedTokenizerBase

from compress.analysis.contribution import scoring_batches
from compress.analysis.layers import analyze_layers, metric_scores
from compress.analysis.report import statistics_table
from compress.data.encoding import model_inputs
from compress.data.seeds import Seed
from compress.stages.base import ModelDescription, StageContext, StageOutput, StageSettings
from compress.surgery.architectures import num_layers
from compress.surgery.layer_drop import check_droppable, drop_layers
from compress.surgery.strategies import CONTRIBUTION, CONTRIBUTION_METRICS, EXPLICIT, Strategy, layers_to_drop

Metric = Literal[tuple(CONTRIBUTION_METRICS)]  # cosine, block-influence, angular

SCORES_FILE = "contribution_scores.json"


class DropSettings(StageSettings):
    stage: Literal["drop"] = "drop"
    strategy: Strategy
    k: int | None = Field(None, ge=0, description="How many layers to drop.")
    layers: list[int] | None = Field(None, description="strategy 'layers': 0-based indices to drop.")
    examples: int = Field(500, ge=1, description="strategy 'contribution': task examples to score layers on.")
    seed: Seed = Field(42, description="strategy 'contribution': which examples are drawn.")
    metric: Metric = Field(
        "cosine",
        description="strategy 'contribution': cosine (the paper's), block-influence (1 - cosine, the same "
        "ranking) or angular (the contiguous block of K layers whose input and output are closest).",
    )

    @model_validator(mode="after")
    def _k_or_layers(self):
        # Each message starts with the field at fault, so that the command line names its option.
        if self.strategy == EXPLICIT and self.layers is None:
            raise ValueError(f"layers: strategy '{EXPLICIT}' takes the list of layers to drop")
        if self.strategy == EXPLICIT and self.k is not None:
            raise ValueError(f"k: not used with strategy '{EXPLICIT}', which takes the list 'layers'")
        if self.strategy != EXPLICIT and self.k is None:
            raise ValueError(f"k: strategy '{self.strategy}' takes k, how many layers to drop")
        if self.strategy != EXPLICIT and self.layers is not None:
            raise ValueError(f"layers: only used with strategy '{EXPLICIT}' (got strategy '{self.strategy}', which takes k)")
        if "metric" in self.model_fields_set and self.strategy != CONTRIBUTION:
            raise ValueError(f"metric: only used with strategy '{CONTRIBUTION}' (got strategy '{self.strategy}')")
        return self

    def _static_drop(self, layers_before: int) -> list[int] | None:
        """The layers a strategy other than contribution drops from `layers_before` (None: known only at run time)."""
        if self.strategy == CONTRIBUTION:
            return None
        return layers_to_drop(self.strategy, layers_before, self.k, layers=self.layers)

    def task_data_use(self) -> str | None:
        return "strategy 'contribution' scores layers on the task's training examples" if self.strategy == CONTRIBUTION else None

    def identity_settings(self, layers_before: int) -> dict:
        # Two strategies that drop the same layers (top and alternate-even at K=1) make the same model.
        static = self._static_drop(layers_before)
        return super().identity_settings(layers_before) if static is None else {"stage": "drop", "drop": static}

    def layers_after(self, layers_before: int) -> int:
        return layers_before - (self.k if self.k is not None else len(self.layers))

    def check_chain(self, config: PretrainedConfig, layers_before: int, train_examples: int) -> None:
        # Contribution scores are unknown until run time; any scores check K the same way.
        dropped = layers_to_drop(self.strategy, layers_before, self.k, layers=self.layers, scores=[0.0] * layers_before)
        if self.strategy != CONTRIBUTION:  # which layers contribution drops is known only at run time
            check_droppable(config, dropped)

    def describe(self, described: ModelDescription) -> None:
        described.dropped_after_training = described.training != "none"
        described.strategies.append(self.strategy)
        described.k += self.k if self.k is not None else len(self.layers)


def score_layers_for_drop(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    train: Dataset,
    *,
    examples: int,
    max_length: int,
    seed: int,
    metric: str,
    k: int,
    note: dict,
    folder: Path,
) -> list[float]:
    """Measure every layer on `examples` training examples, save and print the measurements; return the
    scores `metric` ranks by (for angular: of every block of K layers)."""
    batches = scoring_batches(train, tokenizer, examples, max_length, seed)
    statistics = analyze_layers(model, batches, block=k or None)
    rule = CONTRIBUTION_METRICS[metric]
    rows = [
        {"layer": row.layer, "original_layer": row.original_layer, "score": getattr(row, rule.statistic),
         "cosine": row.cosine, "block_influence": row.block_influence, "angular_distance": row.angular_distance}
        for row in statistics
    ]
    about = {**note, "examples": min(examples, len(train)), "metric": metric, "block": k, "meaning": rule.meaning}
    (folder / SCORES_FILE).write_text(json.dumps({**about, "layers": rows}, indent=2) + "\n")
    Console().print(statistics_table(statistics, f"Contribution scores, metric {metric}: {rule.meaning}", k or None))
    return metric_scores(statistics, metric)


def drop(model: PreTrainedModel, settings: DropSettings, context: StageContext) -> StageOutput:
    scores = None
    if settings.strategy == CONTRIBUTION:
        scores = score_layers_for_drop(
            model, context.tokenizer, model_inputs(context.data.task, context.data.train),
            examples=settings.examples, max_length=context.max_length, seed=settings.seed,
            metric=settings.metric, k=settings.k, note={"task": context.data.task.name}, folder=context.output_dir,
        )
    indices = layers_to_drop(
        settings.strategy, num_layers(model.config), settings.k, layers=settings.layers, scores=scores,
        metric=settings.metric,
    )
    return StageOutput(drop_layers(model, indices, settings.strategy))
