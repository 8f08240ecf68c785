import math

import numpy as np
import pytest

from compress.data.tasks import get_task
from compress.evaluation.metrics import _BATCHED_METRICS, _METRICS, compute_metrics, majority_class_metrics, metric_texts, paired_difference, standard_errors


def logits_for(class_ids: list[int], num_labels: int = 2) -> np.ndarray:
    """Logits whose argmax is class_ids."""
    return np.eye(num_labels)[class_ids] * 3.0 - 1.0


def test_accuracy_and_binary_f1_by_hand():
    # predicted 1 0 1 1 against 1 0 0 1: 3 of 4 right; tp=2 fp=1 fn=0 -> precision 2/3, recall 1, f1 0.8
    scores = compute_metrics(get_task("mrpc"), logits_for([1, 0, 1, 1]), np.array([1, 0, 0, 1]))
    assert list(scores) == ["accuracy", "f1"]
    assert scores["accuracy"] == pytest.approx(0.75)
    assert scores["f1"] == pytest.approx(0.8)
    assert all(type(value) is float for value in scores.values())


def test_f1_counts_class_1_as_positive():
    # all predictions class 0: no true positives of class 1, f1 0 although accuracy is 0.5
    scores = compute_metrics(get_task("qqp"), logits_for([0, 0, 0, 0]), np.array([0, 0, 1, 1]))
    assert scores == {"accuracy": 0.5, "f1": 0.0}


def test_matthews_correlation():
    labels = np.array([1, 0, 0, 0])
    assert compute_metrics(get_task("cola"), logits_for([1, 0, 0, 0]), labels) == {"matthews_correlation": 1.0}
    # tp=1 fp=1 tn=2 fn=0: (1*2 - 1*0) / sqrt(2 * 1 * 3 * 2) = 1/sqrt(3)
    scores = compute_metrics(get_task("cola"), logits_for([1, 1, 0, 0]), labels)
    assert scores["matthews_correlation"] == pytest.approx(1 / math.sqrt(3))


def test_three_class_accuracy_uses_argmax():
    logits = np.array([[2.0, 1.0, 0.0], [0.0, 0.5, 0.2], [0.1, 0.0, 0.3]])
    assert compute_metrics(get_task("mnli"), logits, np.array([0, 1, 0])) == {"accuracy": pytest.approx(2 / 3)}


@pytest.mark.parametrize("shape", [(5,), (5, 1)])
def test_pearson_and_spearman_of_a_linear_relation(shape):
    labels = np.array([0.0, 1.0, 2.5, 4.0, 5.0], dtype=np.float32)
    predictions = (2 * labels + 1).reshape(shape)
    assert compute_metrics(get_task("stsb"), predictions, labels) == {
        "pearson": pytest.approx(1.0),
        "spearman": pytest.approx(1.0),
    }


def test_spearman_sees_rank_order_only():
    labels = np.array([1.0, 2.0, 3.0, 4.0])
    scores = compute_metrics(get_task("stsb"), labels**4, labels)
    assert scores["spearman"] == pytest.approx(1.0)
    assert scores["pearson"] < 0.99
    assert compute_metrics(get_task("stsb"), -labels, labels)["pearson"] == pytest.approx(-1.0)


def test_class_ids_instead_of_logits_are_refused():
    with pytest.raises(ValueError, match="logits"):
        compute_metrics(get_task("sst2"), np.array([0, 1]), np.array([0, 1]))


def test_majority_class_scores_the_most_frequent_training_label():
    # class 1 is the training majority; dev has 2 of 5 class 1: accuracy 0.4, f1 = 2*2 / (2*2 + 3) = 4/7
    scores = majority_class_metrics(get_task("mrpc"), [1, 1, 1, 0, 0], [1, 0, 0, 1, 0])
    assert scores == {"accuracy": pytest.approx(0.4), "f1": pytest.approx(4 / 7)}
    # a constant prediction carries no correlation with the labels
    assert majority_class_metrics(get_task("cola"), [0, 0, 1], [1, 0, 1]) == {"matthews_correlation": 0.0}
    assert majority_class_metrics(get_task("stsb"), [0.5, 2.0], [1.0, 3.0]) is None


def test_standard_error_of_accuracy_is_the_binomial_one():
    # 800 of 1,000 right: the textbook standard error is sqrt(0.8 * 0.2 / 1000) = 0.0126
    labels = np.array([0, 1] * 500)
    predicted = labels.copy()
    predicted[:200] = 1 - predicted[:200]
    errors = standard_errors(get_task("sst2"), logits_for(list(predicted)), labels)
    assert list(errors) == ["accuracy_stderr"]
    assert errors["accuracy_stderr"] == pytest.approx(math.sqrt(0.8 * 0.2 / 1000), rel=0.1)
    assert errors == standard_errors(get_task("sst2"), logits_for(list(predicted)), labels), "seeded"
    # four times the examples, half the error
    quadrupled = standard_errors(get_task("sst2"), logits_for(list(predicted) * 4), np.tile(labels, 4))
    assert quadrupled["accuracy_stderr"] == pytest.approx(errors["accuracy_stderr"] / 2, rel=0.15)


def test_standard_errors_of_every_metric_and_none_for_a_perfect_score():
    rng = np.random.default_rng(0)
    labels = rng.uniform(0, 5, 300)
    errors = standard_errors(get_task("stsb"), labels + rng.normal(0, 1, 300), labels)
    assert errors.keys() == {"pearson_stderr", "spearman_stderr"} and all(0 < e < 0.1 for e in errors.values())
    perfect = standard_errors(get_task("cola"), logits_for([0, 1] * 50), np.array([0, 1] * 50))
    assert perfect == {"matthews_correlation_stderr": 0.0}  # every resample scores 1
    assert standard_errors(get_task("sst2"), logits_for([1]), np.array([1])) == {}  # one example: nothing to resample


def test_a_paired_difference_is_far_less_noisy_than_either_score():
    # 1,000 examples, the first model 800 right; the second differs from it on 30 of them (20 it gets right, 10 wrong)
    labels = np.array([0, 1] * 500)
    first = labels.copy()
    first[:200] = 1 - first[:200]
    second = first.copy()
    second[:20] = labels[:20]
    second[500:510] = 1 - labels[500:510]
    difference, error = paired_difference("accuracy", labels, second, first)
    assert difference == pytest.approx(0.01)
    # McNemar's: only the 30 examples they disagree on vary the difference, sqrt(30) / 1000
    assert error == pytest.approx(math.sqrt(30) / 1000, rel=0.15)
    alone = standard_errors(get_task("sst2"), logits_for(list(first)), labels)["accuracy_stderr"]
    assert error < alone / 2, "the unpaired test could not tell a 1-point change apart; the paired one can"
    assert paired_difference("accuracy", labels, first, first) == (0.0, 0.0)
    assert paired_difference("accuracy", labels, second, first) == (difference, error), "seeded"
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 5, 400)
    noisy = scores + rng.normal(0, 1, 400)
    difference, error = paired_difference("pearson", scores, noisy + rng.normal(0, 0.1, 400), noisy)
    assert abs(difference) < 3 * error and 0 < error < standard_errors(get_task("stsb"), noisy, scores)["pearson_stderr"]


def test_metric_texts_put_each_error_beside_its_metric():
    texts = metric_texts({"accuracy": 0.91234, "accuracy_stderr": 0.0095, "f1": 0.8, "mismatched_accuracy": 0.7,
                          "mismatched_accuracy_stderr": 0.02})
    assert texts == {"accuracy": "0.9123 ± 0.0095", "f1": "0.8000", "mismatched_accuracy": "0.7000 ± 0.0200"}


@pytest.mark.parametrize("name", sorted(_BATCHED_METRICS))
def test_a_batched_metric_scores_every_resample_as_the_metric_scores_it_alone(name):
    rng = np.random.default_rng(0)
    if name.startswith("pearson"):
        labels = rng.uniform(0, 5, (40, 60))
        predicted = labels + rng.normal(0, 1, (40, 60))
    else:  # three classes; a resample that predicts one class only (MCC's undefined case, 0) and one all right
        labels, predicted = rng.integers(0, 3, (40, 60)), rng.integers(0, 3, (40, 60))
        predicted[0], predicted[1] = 2, labels[1]
    batched = _BATCHED_METRICS[name](labels, predicted, axis=-1)
    assert batched.shape == (40,)
    np.testing.assert_allclose(batched, [_METRICS[name](y, p) for y, p in zip(labels, predicted)], rtol=0, atol=1e-12)
    np.testing.assert_allclose(_BATCHED_METRICS[name](labels.T, predicted.T, axis=0), batched, rtol=0, atol=1e-12)
