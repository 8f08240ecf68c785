"""Scoring a model on a task's dev set(s) with the metrics GLUE reports."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from rich.progress import track
from transformers import PreTrainedTokenizerBase

from compress.data.encoding import length_order, padded_batches, tokenize
from compress.data.loading import TaskData
from compress.data.tasks import TaskSpec
from compress.errors import CompressError
from compress.evaluation.embedding import evaluate_embedder
from compress.evaluation.metrics import compute_metrics, paired_difference, predicted_values, standard_errors
from compress.models.artifacts import Predictor


def evaluate(
    predict: Predictor, data: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int
) -> dict[str, float]:
    """Metrics on every eval split, each with its standard error (`<metric>_stderr`); the first split's
    metrics bare, the others prefixed by the split name. An embedder is scored on its vectors (evaluate_embedder)."""
    if data.task.embedding:
        return evaluate_embedder(predict, data, tokenizer, max_length, batch_size)
    return split_metrics(data.task, dev_outputs(predict, data, tokenizer, max_length, batch_size))


def split_metrics(task: TaskSpec, outputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> dict[str, float]:
    """The metrics and standard errors of each split's (outputs, labels), named as `evaluate` names them."""
    results: dict[str, float] = {}
    for position, (split, (found, labels)) in enumerate(outputs.items()):
        metrics = compute_metrics(task, found, labels) | standard_errors(task, found, labels)
        prefix = "" if position == 0 else f"{split}_"
        results.update({prefix + name: value for name, value in metrics.items()})
    return results


def dev_outputs(
    predict: Predictor, data: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Per eval split, the model's outputs (logits, or a regression task's scores) and the labels, in the split's own
    order: two models' outputs line up example by example, for a paired comparison (`paired_difference`)."""
    if data.task.embedding:
        raise CompressError(f"{data.task.name}: an embedder is scored on its vectors' similarities, not on outputs per example")
    found = {}
    for split, dataset in data.dev.items():
        tokenized = tokenize(dataset, tokenizer, max_length)
        order = length_order(tokenized)  # batched by length, which pads (and so computes) less
        logits, labels = [], []
        batches = padded_batches(tokenized.select(order), tokenizer, batch_size)
        for batch in track(batches, total=-(-len(tokenized) // batch_size), description=f"Evaluating {split}"):
            labels.append(batch.pop("labels").numpy())
            logits.append(predict(batch))
        restored = np.empty(len(order), dtype=int)
        restored[order] = np.arange(len(order))  # row i of the sorted outputs is example order[i]
        found[split] = (np.concatenate(logits)[restored], np.concatenate(labels)[restored])
    return found


@dataclass(frozen=True)
class Comparison:
    """Two models' scores on one metric of a task's first dev split, and their difference (first minus second) with
    its standard error: paired (both scored on the same bootstrap draws of examples) for a classifier or regressor;
    for an embedder, scored from its vectors (evaluate_embedder, no outputs per example), the two scores' errors
    combined as if independent."""

    metric: str
    first: float
    first_stderr: float
    second: float
    second_stderr: float
    difference: float
    difference_stderr: float
    paired: bool


def compare(first: Predictor, second: Predictor, data: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int,
            batch_size: int, metric: str | None = None) -> Comparison:
    """`first` against `second` on `metric` (default: the task's first) of the task's first dev split."""
    metric = metric or data.task.primary_metric
    if data.task.embedding:
        scores = [evaluate(predict, data, tokenizer, max_length, batch_size) for predict in (first, second)]
        errors = [s.get(f"{metric}_stderr", math.nan) for s in scores]
        return Comparison(metric, scores[0][metric], errors[0], scores[1][metric], errors[1], scores[0][metric] - scores[1][metric],
                          math.hypot(*errors), paired=False)
    (split, (outputs, labels)), (_, (other_outputs, _)) = (next(iter(dev_outputs(p, data, tokenizer, max_length, batch_size).items()))
                                                           for p in (first, second))
    scores = [split_metrics(data.task, {split: (o, labels)}) for o in (outputs, other_outputs)]
    difference, error = paired_difference(metric, labels, predicted_values(data.task, outputs), predicted_values(data.task, other_outputs))
    return Comparison(metric, scores[0][metric], scores[0].get(f"{metric}_stderr", math.nan), scores[1][metric],
                      scores[1].get(f"{metric}_stderr", math.nan), difference, error, paired=True)
