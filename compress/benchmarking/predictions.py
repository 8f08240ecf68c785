"""Every measured row's dev predictions, in `dev_predictions.json` beside `results.jsonl`: what a paired comparison
of two rows needs. Two models scored on the same examples are mostly right and wrong on the same ones, so the
error of their difference, resampling the examples once for both (`paired_difference`), is far smaller than
either score's own: the tables give each change against the full model and against top-K that error.

The file: per task, the dev split and its labels; per row (by its folder under work/), its key, task, score and
predictions (class ids, or a regression task's scores to DECIMALS places). A row measured again replaces its entry.
Files written by `bench/dev_predictions.py` before the bench kept them (with a `rescored` score beside the
record's) read the same way.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ValidationError

from compress.benchmarking.records import RESULTS_FILE, BenchRecord, DevPredictions, append_record
from compress.data.tasks import TaskSpec
from compress.errors import CompressError
from compress.evaluation.metrics import paired_difference, predicted_values
from compress.folders import refuse_link, write_text

PREDICTIONS_FILE = "dev_predictions.json"
DECIMALS = 4
"""A regression score's digits kept: far below what moves a correlation in its fourth decimal."""


class _Task(BaseModel):
    split: str
    labels: list


class _Row(BaseModel):
    key: str
    task: str
    score: float
    predicted: list
    rescored: float | None = None


class _PredictionsFile(BaseModel):
    tasks: dict[str, _Task]
    rows: dict[str, _Row]


def _read(path: Path) -> dict:
    """The folder's predictions file, checked whole (empty where there is none)."""
    if not path.exists():
        return {"tasks": {}, "rows": {}}
    refuse_link(path)
    try:
        found = json.loads(path.read_text())
        checked = _PredictionsFile.model_validate(found)
    except ValidationError as error:
        problem = error.errors()[0]
        raise CompressError(f"{path}: {'.'.join(map(str, problem['loc']))}: {problem['msg']}; expected what compress bench writes") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise CompressError(f"{path}: not JSON ({error}); expected what compress bench writes") from None
    unknown = sorted({row.task for row in checked.rows.values()} - checked.tasks.keys())
    if unknown:
        raise CompressError(f"{path}: rows of task {', '.join(unknown)}, which 'tasks' does not list; expected what compress bench writes")
    return found


def check_predictions(out_dir: Path) -> None:
    """Refuse a damaged predictions file before any work, not once a row is measured."""
    _read(out_dir / PREDICTIONS_FILE)


def keep_record(out_dir: Path, record: BenchRecord) -> None:
    """A measured row's record appended to the folder's results.jsonl, and its dev predictions kept beside."""
    append_record(out_dir / RESULTS_FILE, record)
    add_predictions(out_dir, record)


def add_predictions(out_dir: Path, record: BenchRecord) -> None:
    """Keep `record`'s dev predictions in the folder's file (rewritten whole). Rows scored on other examples of the
    same task (its data settings changed) cannot be paired with this one: the task's earlier rows are dropped."""
    found: DevPredictions | None = record.dev_predictions
    if found is None or record.measured_in is None:
        return
    path = out_dir / PREDICTIONS_FILE
    content = _read(path)
    task = {"split": found.split, "labels": found.labels}
    if content["tasks"].get(record.task) != task:
        content["tasks"][record.task] = task
        content["rows"] = {folder: row for folder, row in content["rows"].items() if row["task"] != record.task}
    content["rows"][record.measured_in] = {"key": record.key, "task": record.task, "score": record.score, "predicted": found.predicted}
    write_predictions(out_dir, content)


def merged_predictions(folders: list[Path]) -> dict | None:
    """The predictions files of several shards' folders as one (None: none keeps any); a shard's rows of a task
    scored on other examples than the first shard's are left out, as they cannot be paired."""
    merged: dict = {"tasks": {}, "rows": {}}
    for folder in folders:
        content = _read(folder / PREDICTIONS_FILE)
        for task, examples in content["tasks"].items():
            merged["tasks"].setdefault(task, examples)
        merged["rows"].update({measured_in: row for measured_in, row in content["rows"].items()
                               if merged["tasks"][row["task"]] == content["tasks"][row["task"]]})
    return merged if merged["rows"] else None


def write_predictions(out_dir: Path, content: dict) -> None:
    write_text(out_dir / PREDICTIONS_FILE, json.dumps(content, separators=(",", ":")) + "\n")  # lists of 1,000s: one line


def predictions_of(task: TaskSpec, outputs: dict[str, tuple[np.ndarray, np.ndarray]]) -> DevPredictions:
    """What a row keeps of its scoring (`dev_outputs`): its first split's class ids, or a regression task's scores."""
    split, (found, labels) = next(iter(outputs.items()))
    predicted = predicted_values(task, found)
    return DevPredictions(split=split, labels=labels.tolist(),
                          predicted=(predicted.round(DECIMALS) if task.is_regression else predicted).tolist())


class PairedErrors:
    """The standard error of the difference between two rows of a results folder, paired over the dev examples
    both are scored on, where both rows' predictions are in its dev_predictions.json and score what their records
    say (None otherwise)."""

    def __init__(self, folders: list[Path]):
        self._rows: dict[tuple[str, float], tuple[np.ndarray, np.ndarray]] = {}
        self._found: dict[tuple, float] = {}
        for folder in folders:
            content = _read(folder / PREDICTIONS_FILE)
            for measured_in, row in content["rows"].items():
                if round(row.get("rescored", row["score"]), 6) == round(row["score"], 6):
                    labels = np.asarray(content["tasks"][row["task"]]["labels"])
                    self._rows[(measured_in, round(row["score"], 6))] = (labels, np.asarray(row["predicted"]))

    def __call__(self, first: BenchRecord, second: BenchRecord) -> float | None:
        a, b = (self._rows.get((r.measured_in, round(r.score, 6))) for r in (first, second))
        if a is None or b is None or not np.array_equal(a[0], b[0]):
            return None
        key = (first.measured_in, first.score, second.measured_in, second.score)
        if key not in self._found:
            self._found[key] = paired_difference(first.primary_metric, a[0], a[1], b[1])[1]
        return self._found[key]
