"""Scoring predictions with the metrics a task reports (GLUE's names, plain floats, not percent)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable

import numpy as np
from scipy.stats import bootstrap, pearsonr, spearmanr
from sklearn.dummy import DummyClassifier
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef

from compress.data.tasks import TaskSpec

# name -> f(labels, predictions); predictions are class ids or regression scores
_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "accuracy": lambda labels, predicted: accuracy_score(labels, predicted),
    "f1": lambda labels, predicted: f1_score(labels, predicted, average="binary", pos_label=1, zero_division=0.0),
    "matthews_correlation": lambda labels, predicted: matthews_corrcoef(labels, predicted),
    "pearson": lambda labels, predicted: pearsonr(labels, predicted).statistic,
    "spearman": lambda labels, predicted: spearmanr(labels, predicted).statistic,
    # an embedder's, of the cosine similarity of a pair's two vectors (compress.evaluation.embedding)
    "pearson_cosine": lambda labels, similarity: pearsonr(labels, similarity).statistic,
    "spearman_cosine": lambda labels, similarity: spearmanr(labels, similarity).statistic,
}


def _batched_matthews(labels: np.ndarray, predicted: np.ndarray, axis: int = -1) -> np.ndarray:
    """sklearn's matthews_corrcoef (its confusion-matrix formula, 0 where undefined) of each resample along `axis`."""
    labels, predicted = np.moveaxis(labels, axis, -1), np.moveaxis(predicted, axis, -1)
    classes = np.union1d(labels, predicted)  # a class absent from a resample adds nothing to its sums
    true_sums = (labels[..., None] == classes).sum(-2, dtype=np.float64)
    predicted_sums = (predicted[..., None] == classes).sum(-2, dtype=np.float64)
    correct, n = (labels == predicted).sum(-1, dtype=np.float64), float(labels.shape[-1])
    covariance = correct * n - (true_sums * predicted_sums).sum(-1)
    variances = (n * n - (predicted_sums ** 2).sum(-1)) * (n * n - (true_sums ** 2).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(variances == 0, 0.0, covariance / np.sqrt(variances))


def _batched_pearson(labels: np.ndarray, predicted: np.ndarray, axis: int = -1) -> np.ndarray:
    return pearsonr(labels, predicted, axis=axis).statistic


# name -> f(labels, predictions, axis): _METRICS' metric of every bootstrap resample at once (scipy's vectorized
# statistic), the same figures; sklearn's input checks cost milliseconds a call, and a paired error makes 1,000 calls
_BATCHED_METRICS: dict[str, Callable[..., np.ndarray]] = {
    "accuracy": lambda labels, predicted, axis=-1: np.mean(labels == predicted, axis=axis),
    "matthews_correlation": _batched_matthews,
    "pearson": _batched_pearson,
    "pearson_cosine": _batched_pearson,  # of an embedder's cosine similarities
}


STDERR_RESAMPLES = 500
"""Bootstrap resamples per standard error: enough for the error itself to be within about 3%."""


def compute_metrics(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """The task's metrics, in its order; predictions are logits (N, C), or scores (N,) / (N, 1) for regression."""
    return _scores(task, np.asarray(labels), predicted_values(task, predictions))


def standard_errors(task: TaskSpec, predictions: np.ndarray, labels: np.ndarray, resamples: int = STDERR_RESAMPLES,
                    seed: int = 0) -> dict[str, float]:
    """`<metric>_stderr` for each of the task's metrics: how much the score would move with another draw
    of dev examples of the same size, the spread over bootstrap resamples of (label, prediction) pairs
    (as lm-evaluation-harness reports `acc_stderr`). Two models' scores closer than about twice this
    are not told apart by the dev set."""
    labels, predicted = np.asarray(labels), predicted_values(task, predictions)
    errors = {}
    if len(labels) < 2:  # one example has no spread to resample
        return errors
    for name in task.metrics:
        with warnings.catch_warnings():  # resamples of a small dev set can be constant: their correlation is undefined
            warnings.simplefilter("ignore")
            # only the standard error is kept: the percentile interval is the one that costs nothing more
            batched = _BATCHED_METRICS.get(name)
            result = bootstrap((labels, predicted), batched or _METRICS[name], paired=True, vectorized=batched is not None,
                               n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed))
        if np.isfinite(result.standard_error):  # not where every resample scores the same undefined value
            errors[f"{name}_stderr"] = float(result.standard_error)
    return errors


def paired_difference(metric: str, labels: np.ndarray, first: np.ndarray, second: np.ndarray,
                      resamples: int = STDERR_RESAMPLES, seed: int = 0) -> tuple[float, float]:
    """`metric` of the first model's predictions (class ids, or a regression task's scores) minus the second's on the
    same examples, and that difference's standard error over bootstrap resamples of the examples, each resample
    scoring both models on the same draw. Two models mostly right and wrong on the same examples differ by far less
    noise than each score has alone (`standard_errors`), so this tells apart changes the unpaired errors cannot.
    NaN error: too few examples to resample."""
    labels, first, second = np.asarray(labels), np.asarray(first), np.asarray(second)
    score = _METRICS[metric]
    difference = float(score(labels, first) - score(labels, second))
    if len(labels) < 2:
        return difference, math.nan
    with warnings.catch_warnings():  # as in standard_errors: a constant resample's correlation is undefined
        warnings.simplefilter("ignore")
        batched = _BATCHED_METRICS.get(metric)
        statistic = ((lambda y, a, b, axis=-1: batched(y, a, axis) - batched(y, b, axis)) if batched
                     else (lambda y, a, b: score(y, a) - score(y, b)))
        result = bootstrap((labels, first, second), statistic, paired=True, vectorized=batched is not None,
                           n_resamples=resamples, method="percentile", rng=np.random.default_rng(seed))
    return difference, float(result.standard_error)


def metric_texts(metrics: dict[str, float]) -> dict[str, str]:
    """Each metric as text for a table, with its standard error where there is one: `0.9128 ± 0.0095`."""
    return {name: f"{value:.4f}" + (f" ± {metrics[name + '_stderr']:.4f}" if name + "_stderr" in metrics else "")
            for name, value in metrics.items() if not name.endswith("_stderr")}


def predicted_values(task: TaskSpec, predictions: np.ndarray) -> np.ndarray:
    """Class ids from logits (N, C), or the scores of a regression task (N,) / (N, 1)."""
    predictions = np.asarray(predictions)
    if task.is_regression:
        return predictions.reshape(len(predictions))
    if predictions.ndim == 2:
        return predictions.argmax(axis=-1)
    raise ValueError(f"{task.name}: expected logits of shape (N, {task.num_labels}), got {predictions.shape}")


def majority_class_metrics(task: TaskSpec, train_labels, dev_labels) -> dict[str, float] | None:
    """The task's metrics for always predicting the most frequent training label: what a model that
    learnt nothing from its inputs scores. None for regression, where a constant has no correlation."""
    if task.is_regression:
        return None
    train_labels, dev_labels = np.asarray(train_labels), np.asarray(dev_labels)
    majority = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(train_labels), 1)), train_labels)
    return _scores(task, dev_labels, majority.predict(np.zeros((len(dev_labels), 1))))


def _scores(task: TaskSpec, labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    return {name: float(_METRICS[name](labels, predicted)) for name in task.metrics}
