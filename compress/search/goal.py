"""Goal files: what `compress optimize` is asked for, validated whole before any work.

The smallest goal names the model, the task, its data and the score budget; everything else has a default:

    model: minilm-l6
    task: rotten-tomatoes
    data: {source: embedded}
    max_length: 64
    max_score_drop: 1.0
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PositiveInt, model_validator

from compress.benchmarking.precisions import EXPORTED, INT8, TRAINED
from compress.benchmarking.sweep import Grid, LatencySettings, Sweep, Training, check_sweep, known_precision
from compress.data.loading import DataSettings, TaskData, load_task_data
from compress.data.seeds import Seed
from compress.errors import CompressError
from compress.models.embedding import EmbeddingSettings
from compress.pipeline.recipe import named_after_file, validate_yaml_file
from compress.stages.distill import DistillationLoss
from compress.stages.export import onnx_precision
from compress.stages.finetune import TrainingHyperparameters
from compress.stages.quantize import METHODS
from compress.surgery.strategies import Strategy

PAPER_STRATEGIES: list[Strategy] = ["top", "bottom", "alternate-even", "alternate-odd", "symmetric", "contribution"]
"""Sajjad et al.'s strategies (alternate both ways) and their contribution-based one, in the paper's prior order: top first."""
GOAL_KEY = "max_score_drop"
"""The field that makes a YAML file a goal rather than a recipe."""
DEFAULT_PRECISIONS = [TRAINED, EXPORTED, INT8, onnx_precision(INT8, "O2"), METHODS["openvino-int8"].precision]
"""What the chosen student is tried in, after training: the engines `best` compares on a CPU."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(Strict):
    minimize: Literal["latency", "size"] = Field("latency", description="What the search makes as small as the score budget allows.")
    batch_size: PositiveInt = Field(1, description="Latency: inputs per call.")
    sequence_length: int | Literal["task"] = Field(
        "task", description="Latency: tokens per input, or 'task': the held-out examples at their own lengths.")
    threads: PositiveInt = Field(2, description="Latency: CPU threads, as the model will be served.")
    target: float | None = Field(None, gt=0, description="Instead of the smallest: the best-scoring model within this latency "
                                 "(ms) or size (MB); a goal no trial meets ends with the fastest model and by how much it missed.")


class SearchSpace(Strict):
    strategies: list[Strategy] = Field(default_factory=lambda: list(PAPER_STRATEGIES), min_length=1)
    k: list[PositiveInt] | None = Field(None, description="Layer counts to drop that may be tried; default: 1 to L-1.")
    training: list[Training] | None = Field(None, min_length=1,
                                            description="How students learn the task, in the order tried: distilled from the full model, "
                                            "fine-tuned, or fine-tuned again after dropping layers of the fine-tuned full model (refinetune); "
                                            "default: distill, finetune (an embedder: distill).")
    precisions: list[Annotated[str, AfterValidator(known_precision)]] = Field(
        default_factory=lambda: list(DEFAULT_PRECISIONS), min_length=1,
        description="Engines and precisions the chosen student is tried in (none trains).")


class Budget(Strict):
    trainings: PositiveInt | None = Field(None, description="At most this many models trained (the full reference counts).")
    hours: float | None = Field(None, gt=0, description="No new round of trials starts after this many hours (a round's "
                                "trainings start together).")


class Goal(Strict):
    name: str | None = Field(None, description="Default run folder: runs/<name>; default: the file's name.")
    model: str
    task: str
    data: DataSettings = Field(default_factory=DataSettings)
    max_length: int = Field(128, ge=8)
    seed: Seed = 42
    max_score_drop: float = Field(gt=0, le=100, description="Points (score x 100) the chosen model may lose against the full "
                                  "model fine-tuned the same way, on the held-out split.")
    objective: Objective = Field(default_factory=Objective)
    search: SearchSpace = Field(default_factory=SearchSpace)
    budget: Budget = Field(default_factory=Budget)
    holdout: float = Field(0.1, gt=0, le=0.5, description="Fraction of the training examples held out (seeded) to select on; "
                           "the task's dev split is only used to report the chosen model's score.")
    training: TrainingHyperparameters = Field(default_factory=TrainingHyperparameters)
    distillation: DistillationLoss = Field(default_factory=DistillationLoss)
    embedding: EmbeddingSettings | None = Field(
        None, description="Search for a sentence embedder rather than a classifier (as a recipe's embedding:): the reference is "
        "the full embedder as it is, students are distilled from it, and max_score_drop is in points of the task's first "
        "embedding metric (STS: Spearman of cosine similarity).")
    metric: str | None = Field(None, description="The metric max_score_drop counts points of; default: the task's first "
                               "(an embedder on scored pairs: spearman_cosine; or ndcg@10, mrr@10, recall@10, ...).")
    contribution_examples: PositiveInt = 300
    calibration_examples: PositiveInt = 300

    @model_validator(mode="after")
    def _data_untouched(self) -> Goal:
        if self.data.holdout is not None:
            raise ValueError("data.holdout: set by the goal's own holdout; leave it out of data")
        return self

    def load_data(self, holdout: bool) -> TaskData:
        """The task's examples as the goal's models take them; with `holdout`, the split trials are scored on carved
        out of the training examples, else the task's dev split."""
        settings = self.data.model_copy(update={"holdout": self.holdout}) if holdout else self.data
        return load_task_data(self.task, settings, embedder=self.embedding is not None)

    @property
    def trainings(self) -> list[str]:
        """How students are trained, in the order tried."""
        return self.search.training or (["distill"] if self.embedding is not None else ["distill", "finetune"])


def goal_sweep(goal: Goal) -> Sweep:
    """The goal's search space written as a sweep: the trials are its combinations, built and measured as a sweep's
    rows are (one executor, one cache), trained on the training examples the goal does not hold out."""
    objective = goal.objective
    timed_length = goal.max_length if objective.sequence_length == "task" else objective.sequence_length
    return Sweep(
        name=goal.name, models=[goal.model], tasks={goal.task: goal.data.model_copy(update={"holdout": goal.holdout})},
        max_length=goal.max_length, seed=goal.seed, contribution_examples=goal.contribution_examples,
        calibration_examples=goal.calibration_examples, training=goal.training, distillation=goal.distillation,
        embedding=goal.embedding, latency=LatencySettings(threads=objective.threads, batch_sizes=[objective.batch_size], sequence_length=timed_length,
                                task_lengths=objective.sequence_length == "task", warmup=2, repeats=10),
        grids=[Grid(strategies=goal.search.strategies, k=goal.search.k or [1], training=goal.trainings,
                    precisions=goal.search.precisions)],
    )


def parse_goal(file: Path) -> Goal:
    """A goal file, read and validated against the schema alone."""
    return named_after_file(validate_yaml_file(file, Goal, "goal", "model, task, data and max_score_drop"), file)


def load_goal(file: Path) -> Goal:
    """A goal file, parsed and checked against its model and data (one line per problem, before any work)."""
    goal = parse_goal(file)
    problems = check_sweep(goal_sweep(goal))
    if problems:
        raise CompressError(f"{file}: {len(problems)} problem(s): " + "; ".join(problems))
    if goal.metric is not None and goal.metric not in (metrics := goal.load_data(holdout=True).task.metrics):
        raise CompressError(f"{file}: metric: {goal.task} is scored by {', '.join(metrics)} here (got {goal.metric!r})")
    return goal
