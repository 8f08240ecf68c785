"""Turning task text into model inputs: tokenization and padded batches."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase

from compress.data.tasks import TaskSpec


def tokenize(dataset: Dataset, tokenizer: PreTrainedTokenizerBase, max_length: int) -> Dataset:
    """Token ids for `text_a` (and `text_b` for sentence pairs), truncated to `max_length`, unpadded."""
    pair = "text_b" in dataset.column_names

    def encode(rows):
        return tokenizer(rows["text_a"], rows["text_b"] if pair else None, truncation=True, max_length=max_length)

    text_columns = [c for c in ("text_a", "text_b") if c in dataset.column_names]
    return dataset.map(encode, batched=True, remove_columns=text_columns, desc="Tokenizing")


def sentences(dataset: Dataset) -> Dataset:
    """Every text of the examples as an example of its own (`text_a`, labels dropped): what an embedder encodes,
    one text at a time, where a classifier takes a pair together."""
    texts = list(dataset["text_a"]) + (list(dataset["text_b"]) if "text_b" in dataset.column_names else [])
    return Dataset.from_dict({"text_a": texts})


def model_inputs(task: TaskSpec, dataset: Dataset) -> Dataset:
    """The examples as a model of `task` takes them in one input: an embedder each text alone, a classifier
    an example (a pair together) with its label."""
    return sentences(dataset) if task.embedding else dataset


def length_order(tokenized: Dataset) -> np.ndarray:
    """Row indices shortest first (stable): batches of similar lengths pad, and so compute, less."""
    return np.argsort([len(ids) for ids in tokenized["input_ids"]], kind="stable")


def padded_batches(
    tokenized: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int
) -> Iterator[dict[str, torch.Tensor]]:
    """Batches padded to their longest row, in dataset order; the `label` column becomes `labels`."""
    collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
    for start in range(0, len(tokenized), batch_size):
        yield collate(list(tokenized.select(range(start, min(start + batch_size, len(tokenized))))))
