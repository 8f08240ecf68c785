"""Running a compressed folder on raw text: `compress.load(folder)` and `compress predict`.

Every kind of folder compress writes (PyTorch, torch int8, ONNX, OpenVINO) loads the same way and runs on
its own engine as the benchmark timed it: the folder's tokenizer, truncated at the length the recipe
trained and measured with, batches of similar lengths (less padding), and an OpenVINO folder padded to the
fixed shapes it was compiled for.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from transformers import DataCollatorWithPadding

from compress.errors import CompressError, excerpt
from compress.folders import model_folder
from compress.models.artifacts import kind_of, load_artifact, predictor_for
from compress.models.embedding import embedding_of
from compress.models.loading import load_tokenizer
from compress.pipeline.cache import STAGE_FILE, read_stage_record
from compress.surgery.architectures import max_sequence_length

HEAD_SUFFIX = "ForSequenceClassification"
"""The classes of models with the task head `load` runs (labels, or a value for regression)."""
DEFAULT_MAX_LENGTH = 512
"""Tokens kept of an input when the folder does not say what it was trained with (nor the model's positions)."""

Text = str | tuple[str, str]
"""One input: a text, or a pair of texts (premise and hypothesis, two sentences to compare)."""


@dataclass(frozen=True)
class Prediction:
    """A classifier's answer: the label it gives and its probability, and every label's probability."""

    label: str
    score: float
    scores: dict[str, float]


class CompressedModel:
    """A model folder compress wrote, ready to run on raw texts or text pairs. Call it (or `predict`) for
    labels with scores (classification), values (regression) or, from a sentence embedder, one vector per text
    (an array, rows in input order); `logits` gives the head's raw output (an embedder's: its vectors)."""

    def __init__(self, folder: str | Path, threads: int | None = None, batch_size: int = 32, max_length: int | None = None):
        self.folder = model_folder(Path(folder))
        if not (self.folder / "config.json").is_file():
            raise CompressError(f"{self.folder}: no config.json; expected a model folder compress wrote (a run folder, "
                                "its final/ or a stage's folder)")
        if batch_size < 1:
            raise CompressError(f"batch_size: expected at least 1 (got {batch_size})")
        self.model = load_artifact(self.folder)
        self.kind = kind_of(self.model)
        self.config = self.model.config
        self.embedding = embedding_of(self.config)
        if self.embedding is None and not any(name.endswith(HEAD_SUFFIX) for name in self.config.architectures or ()):
            raise CompressError(f"{self.folder}: a bare encoder with no task head ({', '.join(self.config.architectures or ['none named'])}), "
                                "as compress drop leaves a pre-trained encoder; fine-tune or distil it on a task first (a recipe), then load that folder")
        self.record = read_stage_record(self.folder) if (self.folder / STAGE_FILE).is_file() else None
        if self.record is not None and not (self.record.metrics if self.record.trained is None else self.record.trained):
            raise CompressError(f"{self.folder}: its task head was never trained (layers dropped from a model not fine-tuned on a "
                                "task); fine-tune or distil it on the task first (a recipe), then load that folder")
        self.tokenizer = load_tokenizer(self.folder)
        self.batch_size = batch_size
        self.max_length = max_length or self._trained_length()
        self._predict = predictor_for(self.model, threads)
        self._collate = DataCollatorWithPadding(self.tokenizer, return_tensors="pt")

    def _trained_length(self) -> int:
        """The length the recipe trained and timed with (its stage record), else what the model's positions serve."""
        if self.record is not None and self.record.max_length:
            return self.record.max_length
        return max_sequence_length(self.config) or DEFAULT_MAX_LENGTH

    @property
    def is_regression(self) -> bool:
        return self.config.problem_type == "regression" or self.config.num_labels == 1

    @property
    def labels(self) -> list[str]:
        return [str(self.config.id2label[i]) for i in range(self.config.num_labels)]

    @property
    def is_embedder(self) -> bool:
        return self.embedding is not None

    def logits(self, texts: Iterable[Text], on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        """The head's output for each input, in input order (rows: inputs; columns: labels, one for regression, or an
        embedder's vector). `on_batch(n)` is told after each batch of n inputs (a progress bar)."""
        inputs = [_checked(text, index) for index, text in enumerate(texts)]
        if self.is_embedder and (pair := next((i for i, text in enumerate(inputs) if not isinstance(text, str)), None)) is not None:
            raise CompressError(f"input {pair}: a text pair, and a sentence embedder encodes each text alone; pass the two texts "
                                "as inputs of their own and compare their vectors")
        if not inputs:
            return np.zeros((0, self.config.hidden_size if self.is_embedder else self.config.num_labels), dtype=np.float32)
        encoded = [self._encode(text) for text in inputs]
        # Batches of similar lengths: each is padded to its longest input, so sorting computes less padding.
        order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]["input_ids"]))
        rows: list[np.ndarray] = [np.empty(0)] * len(encoded)
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                chosen = order[start:start + self.batch_size]
                batch = self._collate([encoded[i] for i in chosen])
                for i, row in zip(chosen, np.asarray(self._predict(dict(batch)), dtype=np.float32)):
                    rows[i] = row
                if on_batch:
                    on_batch(len(chosen))
        return np.stack(rows)

    def predict(self, texts: Iterable[Text], on_batch: Callable[[int], None] | None = None) -> list[Prediction] | list[float] | np.ndarray:
        """A `Prediction` per input (classification), its value (regression), or an embedder's vectors (an array, one
        row per text), in input order."""
        logits = self.logits(texts, on_batch)
        if self.is_embedder:
            return logits
        if self.is_regression:
            return [float(row[0]) for row in logits]
        shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
        probabilities = shifted / shifted.sum(axis=1, keepdims=True)
        labels = self.labels
        return [Prediction(labels[int(row.argmax())], float(row.max()), dict(zip(labels, map(float, row)))) for row in probabilities]

    __call__ = predict

    def _encode(self, text: Text) -> dict:
        first, second = (text, None) if isinstance(text, str) else text
        return self.tokenizer(first, second, truncation=True, max_length=self.max_length)

    def __repr__(self) -> str:
        if self.is_embedder:
            answers = f"vectors of {self.config.hidden_size} ({self.embedding.pooling} pooling{', normalised' if self.embedding.normalize else ''})"
        else:
            answers = "values" if self.is_regression else f"labels {', '.join(self.labels)}"
        return f"CompressedModel({str(self.folder)!r}: {self.kind}, {answers}, at most {self.max_length} tokens)"


def _checked(text: Text, index: int) -> Text:
    """An input as the tokenizer takes it: a string, or a pair of strings; anything else is one line."""
    if isinstance(text, str):
        return text
    if isinstance(text, Sequence) and len(text) == 2 and all(isinstance(part, str) for part in text):
        return (text[0], text[1])
    raise CompressError(f"input {index}: expected a text or a pair of texts (got {excerpt(text)})")


def load(folder: str | Path, threads: int | None = None, batch_size: int = 32, max_length: int | None = None) -> CompressedModel:
    """A folder compress wrote (a run folder, its `final/`, any stage's), ready to run: `compress.load("runs/x")(["a text"])`.

    `threads`: compute threads (default: as many as PyTorch uses); `batch_size`: inputs run together;
    `max_length`: tokens kept of each input (default: what the recipe trained with)."""
    return CompressedModel(folder, threads, batch_size, max_length)


def prediction_record(text: Text, answer: Prediction | float | np.ndarray) -> dict:
    """One line of `compress predict`'s output: the input and what the model said of it."""
    given = {"text": text} if isinstance(text, str) else {"text": text[0], "text_pair": text[1]}
    if isinstance(answer, Prediction):
        return {**given, "label": answer.label, "score": round(answer.score, 6)}
    if isinstance(answer, np.ndarray):
        return {**given, "vector": [round(float(value), 7) for value in answer]}
    return {**given, "value": round(answer, 6)}


def read_inputs(file: Path, text_column: str | None, pair_column: str | None) -> list[Text]:
    """Inputs from a file: one text per line (.txt and anything else), or a column (and a pair column) of a
    CSV/TSV file with a header or of a JSON-lines file (default column: `text`, else `sentence`)."""
    if not file.is_file():
        raise CompressError(f"{file}: no such file; expected texts, one per line, or a CSV/TSV/JSON-lines file")
    try:
        content = file.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        raise CompressError(f"{file}: not UTF-8 text (byte {error.start})") from None
    suffix = file.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import csv
        import io

        rows = list(csv.DictReader(io.StringIO(content), delimiter="\t" if suffix == ".tsv" else ","))
    elif suffix in (".jsonl", ".json"):
        rows = []
        for number, line in enumerate(content.splitlines(), start=1):
            if line.strip():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    raise CompressError(f"{file}: line {number}: not JSON; expected one JSON object per line") from None
                if not isinstance(row, dict):
                    raise CompressError(f"{file}: line {number}: expected a JSON object such as {{\"text\": \"...\"}}")
                rows.append(row)
    else:
        if text_column or pair_column:
            raise CompressError(f"--text-column: {file} is plain text (one input per line); columns need a .csv, .tsv or .jsonl file")
        return [line for line in content.splitlines() if line.strip()]
    if not rows:
        raise CompressError(f"{file}: no rows")
    column = text_column or next((c for c in ("text", "sentence") if c in rows[0]), None)
    if column is None or column not in rows[0]:
        raise CompressError(f"--text-column: {file} has no column {excerpt(column or 'text')} (its columns: {excerpt(list(rows[0]))})")
    if pair_column and pair_column not in rows[0]:
        raise CompressError(f"--pair-column: {file} has no column {excerpt(pair_column)} (its columns: {excerpt(list(rows[0]))})")
    texts: list[Text] = []
    for number, row in enumerate(rows, start=1):
        values = [row.get(column), row.get(pair_column)] if pair_column else [row.get(column)]
        if not all(isinstance(value, str) for value in values):
            raise CompressError(f"{file}: row {number}: {column}{' or ' + pair_column if pair_column else ''} is missing or not text")
        texts.append(values[0] if len(values) == 1 else (values[0], values[1]))
    return texts
