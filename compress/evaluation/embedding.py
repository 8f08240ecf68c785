"""Scoring a sentence embedder as its users read it (the families of MTEB's tasks that local data can serve):

- scored sentence pairs (STS-B): Spearman and Pearson correlation of the two vectors' cosine similarity with
  the gold score, each with its bootstrap standard error;
- the same pairs as a retrieval set: each pair scored in the top fifth of the score range is a query (its first
  text) whose one relevant document is its second text, among every distinct second text of the split;
  nDCG@10 (scikit-learn's), MRR@10 and recall@k, each a mean over queries with its standard error;
- a retrieval set (queries, a corpus, relevance judgements; `data.source: beir-dir`): each query ranks the whole
  corpus; the same metrics, nDCG graded by the judged relevance;
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

from compress.data.encoding import length_order, padded_batches
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
QUERY_CHUNK = 256
"""Queries scored against the whole corpus at once: bounds the similarity matrix held in memory."""


def encode(predict: Predictor, texts: list[str], tokenizer: PreTrainedTokenizerBase, max_length: int, batch_size: int,
           description: str) -> np.ndarray:
    """Sentence vectors of `texts`, in their order (run in batches of similar length, which pad less)."""
    tokenized = Dataset.from_dict({"text_a": texts}).map(
        lambda rows: tokenizer(rows["text_a"], truncation=True, max_length=max_length), batched=True, remove_columns=["text_a"])
    order = length_order(tokenized)
    batches = padded_batches(tokenized.select(order), tokenizer, batch_size)
    vectors = np.concatenate([predict(batch) for batch in track(batches, total=-(-len(texts) // batch_size), description=description)])
    return vectors[np.argsort(order)]


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine similarity."""
    return (a * b).sum(-1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-12)


def retrieval_metrics(queries: np.ndarray, documents: np.ndarray, relevance: list[dict[int, float]]) -> dict[str, float]:
    """nDCG@10 (graded by relevance), MRR@10 and recall@1/10 of `queries` (query i's relevant documents: `relevance[i]`,
    index into `documents` -> relevance above 0) ranked by cosine similarity (ties: the earlier document first), each
    a mean over queries with `<metric>_stderr`."""
    documents = _unit(documents)
    per_query: dict[str, list[float]] = {f"ndcg@{TOP_K}": [], f"mrr@{TOP_K}": [], "recall@1": [], f"recall@{TOP_K}": []}
    for start in range(0, len(queries), QUERY_CHUNK):
        for row, relevant in zip(_unit(queries[start:start + QUERY_CHUNK]) @ documents.T, relevance[start:start + QUERY_CHUNK]):
            truth = np.zeros_like(row)
            truth[list(relevant)] = list(relevant.values())
            found = [int(document) in relevant for document in np.argsort(-row, kind="stable")[:TOP_K]]
            per_query[f"ndcg@{TOP_K}"].append(ndcg_score(truth[None], row[None], k=TOP_K))
            per_query[f"mrr@{TOP_K}"].append(1.0 / (found.index(True) + 1) if any(found) else 0.0)
            per_query["recall@1"].append(sum(found[:1]) / len(relevant))
            per_query[f"recall@{TOP_K}"].append(sum(found) / len(relevant))
    results = {}
    for name, values in per_query.items():
        results[name] = float(np.mean(values))
        if len(values) > 1:
            results[f"{name}_stderr"] = float(np.std(values, ddof=1) / np.sqrt(len(values)))
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
        results |= retrieval_metrics(vectors["text_a"][queries], document_vectors, [{int(d): 1.0} for d in relevant])
    return results


def _corpus_scores(judged: Dataset, queries: list[str], query_vectors: np.ndarray, corpus: list[str],
                   corpus_vectors: np.ndarray) -> dict[str, float]:
    """A retrieval split's metrics: from its (query, relevant document, relevance) rows, each of `queries` (its
    distinct queries, in the order of `query_vectors`) ranking the whole corpus."""
    where_query = {text: position for position, text in enumerate(queries)}
    where_document = {text: position for position, text in enumerate(corpus)}
    relevance: list[dict[int, float]] = [{} for _ in queries]
    for query, document, grade in zip(judged["text_a"], judged["text_b"], judged["label"]):
        graded, position = relevance[where_query[query]], where_document[document]
        graded[position] = max(grade, graded.get(position, 0.0))
    return retrieval_metrics(query_vectors, corpus_vectors, relevance)


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
    corpus_vectors = None if data.corpus is None else encode(predict, data.corpus, tokenizer, max_length, batch_size, "Embedding the corpus")
    results: dict[str, float] = {}
    for position, (split, dataset) in enumerate(data.dev.items()):
        if corpus_vectors is not None:
            queries = list(dict.fromkeys(dataset["text_a"]))
            query_vectors = encode(predict, queries, tokenizer, max_length, batch_size, f"Embedding {split} queries")
            metrics = _corpus_scores(dataset, queries, query_vectors, data.corpus, corpus_vectors)
        elif probe is None:
            vectors, texts = vectors_of(dataset, split)
            metrics = _similarity_scores(data.task, vectors, np.asarray(dataset["label"]), texts)
        else:
            vectors, _ = vectors_of(dataset, split)
            labels = np.asarray(dataset["label"])
            # class probabilities stand for logits: the metrics take their argmax
            probabilities = np.zeros((len(labels), data.task.num_labels))
            probabilities[:, probe.classes_] = probe.predict_proba(_features(vectors))
            metrics = compute_metrics(data.task, probabilities, labels) | standard_errors(data.task, probabilities, labels)
        prefix = "" if position == 0 else f"{split}_"
        results.update({prefix + name: value for name, value in metrics.items()})
    return results
