"""Scoring a model on a task's dev set(s) with the metrics GLUE reports."""

from __future__ import annotations

import numpy as np
from rich.progress import track
from transformers import PreTrainedTokenizerBase

from compress.data.encoding import length_order, padded_batches, tokenize
from compress.data.loading import TaskData
from compress.evaluation.embedding import evaluate_embedder
from compress.evaluation.metrics import compute_metrics, standard_errors
from compress.models.artifacts import Predictor


def evaluate(
    predict: Predictor, data: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int
) -> dict[str, float]:
    """Metrics on every eval split, each with its standard error (`<metric>_stderr`); the first split's
    metrics bare, the others prefixed by the split name. An embedder is scored on its vectors (evaluate_embedder)."""
    if data.task.embedding:
        return evaluate_embedder(predict, data, tokenizer, max_length, batch_size)
    results: dict[str, float] = {}
    for position, (split, dataset) in enumerate(data.dev.items()):
        tokenized = tokenize(dataset, tokenizer, max_length)
        tokenized = tokenized.select(length_order(tokenized))
        logits, labels = [], []
        batches = padded_batches(tokenized, tokenizer, batch_size)
        for batch in track(batches, total=-(-len(tokenized) // batch_size), description=f"Evaluating {split}"):
            labels.append(batch.pop("labels").numpy())
            logits.append(predict(batch))
        logits, labels = np.concatenate(logits), np.concatenate(labels)
        metrics = compute_metrics(data.task, logits, labels) | standard_errors(data.task, logits, labels)
        prefix = "" if position == 0 else f"{split}_"
        results.update({prefix + name: value for name, value in metrics.items()})
    return results
