"""Scoring a sentence embedder as its users read it (MTEB's three families that local data can serve):

- scored sentence pairs (STS-B): Spearman and Pearson correlation of the two vectors' cosine similarity with
  the gold score, each with its bootstrap standard error;
- the same pairs as a retrieval set: each pair scored in the top fifth of the score range is a query (its first
  text) whose one relevant document is its second text, among every distinct second text of the split;
  nDCG@10 (scikit-learn's), MRR@10 and recall@k, each a mean over queries with its standard error;
- labelled texts (or pairs): a logistic regression fitted on the training examples' frozen vectors (a pair's:
  its cosine similarity) scores the dev examples with the task's own metrics, as MTEB's classification does.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
from datasets import Dataset
from rich.progress import track
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import ndcg_score
from transformers import PreTrainedTokenizerBase

from compress.data.encoding import padded_batches
from compress.data.loading import TaskData
from compress.data.tasks import SIMILARITY_METRICS, TaskSpec
from compress.evaluation.metrics import compute_metrics, standard_errors
from compress.models.artifacts import Predictor

RELEVANT_SHARE = 0.8
"""A pair is relevant for retrieval when its score lies in the top fifth of the split's score range (STS-B's 0-5:
at least 4, "mostly equivalent")."""
CLASSIFIER_TRAIN_EXAMPLES = 4000
"""Training examples (seeded) the logistic regression on frozen vectors is fitted on: enough for a linear probe."""
TOP_K = 10


def encode(predict: Predictor, texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int,
           description: str) -> np.ndarray:
    """Sentence vectors of `texts`, in their order (run in batches of similar length, which pad less)."""
    tokenized = Dataset.from_dict({"text_a": texts}).map(
        lambda rows: tokenizer(rows["text_a"], truncation=True, max_length=max_length), batched=True, remove_columns=["text_a"])
    order = np.argsort([len(ids) for ids in tokenized["input_ids"]], kind="stable")
    batches = padded_batches(tokenized.select(order), tokenizer, batch_size)
    vectors = np.concatenate([predict(batch) for batch in track(batches, total=-(-len(texts) // batch_size), description=description)])
    return vectors[np.argsort(order)]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray, relevant: np.ndarray) -> dict[str, float]:
    """nDCG@10, MRR@10 and recall@1/10 of `queries` (one relevant document each: `relevant[i]`, an index into
    `documents`) ranked by cosine similarity, each a mean over queries with `<metric>_stderr`."""
    scores = _unit(queries) @ _unit(documents).T
    truth = np.zeros_like(scores)
    truth[np.arange(len(queries)), relevant] = 1.0
    # rank of the relevant document: 1 + documents scored higher (ties against it)
    rank = 1 + (scores > scores[np.arange(len(queries)), relevant][:, None]).sum(1)
    per_query = {
        f"ndcg@{TOP_K}": np.array([ndcg_score(truth[i:i + 1], scores[i:i + 1], k=TOP_K) for i in range(len(queries))]),
        f"mrr@{TOP_K}": np.where(rank <= TOP_K, 1.0 / rank, 0.0),
        "recall@1": (rank <= 1).astype(float),
        f"recall@{TOP_K}": (rank <= TOP_K).astype(float),
    }
    results = {}
    for name, values in per_query.items():
        results[name] = float(values.mean())
        if len(values) > 1:
            results[f"{name}_stderr"] = float(values.std(ddof=1) / np.sqrt(len(values)))
    return results


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def retrieval_set(first: list[str], second: list[str], scores: np.ndarray) -> tuple[list[int], list[str], np.ndarray]:
    """(the pairs that are queries, the distinct second texts as documents, each query's relevant document)."""
    bar = scores.min() + RELEVANT_SHARE * (scores.max() - scores.min())
    queries = [i for i in range(len(first)) if scores[i] >= bar]
    documents = list(dict.fromkeys(second))
    index = {text: position for position, text in enumerate(documents)}
    return queries, documents, np.array([index[second[i]] for i in queries], dtype=int)


def _similarity_scores(task: TaskSpec, vectors: dict[str, np.ndarray], labels: np.ndarray, texts: dict[str, list[str]]) -> dict[str, float]:
    similarity = cosine(vectors["text_a"], vectors["text_b"])
    correlations = replace(task, metrics=SIMILARITY_METRICS)
    results = compute_metrics(correlations, similarity, labels) | standard_errors(correlations, similarity, labels)
    queries, documents, relevant = retrieval_set(texts["text_a"], texts["text_b"], labels)
    if queries:
        index = {text: position for position, text in enumerate(texts["text_b"])}
        document_vectors = vectors["text_b"][[index[text] for text in documents]]
        results |= retrieval_metrics(vectors["text_a"][queries], document_vectors, relevant)
    return results


def _features(vectors: dict[str, np.ndarray]) -> np.ndarray:
    """What the linear probe reads: a text's vector, or a pair's cosine similarity."""
    return cosine(vectors["text_a"], vectors["text_b"])[:, None] if "text_b" in vectors else vectors["text_a"]


def evaluate_embedder(predict: Predictor, data: TaskData, tokenizer: PreTrainedTokenizerBase, max_length: int,
                      batch_size: int) -> dict[str, float]:
    """An embedder's metrics on every eval split (see the module docstring), each with its standard error; the
    first split's bare, the others prefixed by the split name."""

    def vectors_of(dataset: Dataset, split: str) -> tuple[dict[str, np.ndarray], dict[str, list[str]]]:
        texts = {column: list(dataset[column]) for column in ("text_a", "text_b") if column in dataset.column_names}
        # each distinct text is encoded once, even where it appears in both columns or many pairs
        distinct = list(dict.fromkeys(text for column in texts.values() for text in column))
        encoded = encode(predict, distinct, tokenizer, max_length, batch_size, f"Embedding {split}")
        where = {text: position for position, text in enumerate(distinct)}
        return {column: encoded[[where[t] for t in values]] for column, values in texts.items()}, texts

    probe = None
    if not data.task.is_regression:
        train = data.train.shuffle(seed=0).select(range(min(CLASSIFIER_TRAIN_EXAMPLES, len(data.train))))
        train_vectors, _ = vectors_of(train, "train")
        probe = LogisticRegression(max_iter=1000).fit(_features(train_vectors), np.asarray(train["label"]))
    results: dict[str, float] = {}
    for position, (split, dataset) in enumerate(data.dev.items()):
        vectors, texts = vectors_of(dataset, split)
        labels = np.asarray(dataset["label"])
        if probe is None:
            metrics = _similarity_scores(data.task, vectors, labels, texts)
        else:
            # class probabilities stand for logits: the metrics take their argmax
            probabilities = np.zeros((len(labels), data.task.num_labels))
            probabilities[:, probe.classes_] = probe.predict_proba(_features(vectors))
            metrics = compute_metrics(data.task, probabilities, labels) | standard_errors(data.task, probabilities, labels)
        prefix = "" if position == 0 else f"{split}_"
        results.update({prefix + name: value for name, value in metrics.items()})
    return results
