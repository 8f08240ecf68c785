"""Each finished row's prediction for every dev example, from a sweep's results folder: what a paired comparison of
two rows needs (both scored on the same examples, most of which both get right or wrong), which tells apart
changes far smaller than each score's own standard error. bench/paper12_report.py reads them.

    .venv/bin/python bench/dev_predictions.py bench/sweeps/paper12_cola.yaml --out bench/results/paper12_cola

Loads each finished row's model from the sweep's work/ folder, scores it on the first dev split again with the
row's own recipe (data, max_length, batch size) and writes `dev_predictions.json` beside `results.jsonl`: the
labels, and per row (by its folder under work/) the predicted class ids or regression scores, the record's score
and the score of these predictions (they match unless the model was built by another version of the code). Rows
already there with the same score are kept; a row whose model is not in work/ (built on another machine) is named
and skipped. Nothing is trained; it can run beside a sweep.
"""

from __future__ import annotations

import argparse
import json
import shlex
from pathlib import Path

from rich.console import Console

from compress.benchmarking.bench import WORK, work_folder_name
from compress.benchmarking.records import merge_records, read_records
from compress.benchmarking.sweep import load_sweep, sweep_rows
from compress.errors import CompressError
from compress.evaluation.evaluate import dev_outputs
from compress.evaluation.metrics import compute_metrics, predicted_values
from compress.folders import write_text
from compress.models.artifacts import load_artifact, predictor_for
from compress.pipeline.cache import StageCache
from compress.pipeline.executor import Executor
from compress.timing.latency import describe_environment, timing_environment

PREDICTIONS_FILE = "dev_predictions.json"
DECIMALS = 4
"""A regression score's digits kept: far below what moves a correlation in its fourth decimal."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path, help="the sweep file the results folder was measured from")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's results folder (holds results.jsonl and work/)")
    args = parser.parse_args()
    try:
        rows = {row.combination.key: row for row in sweep_rows(load_sweep(args.sweep))}
        records = [r for r in merge_records(read_records(args.out)) if r.status == "ok"]
    except CompressError as error:
        parser.exit(2, f"error: {error}\n")
    if not records:
        parser.exit(2, f"error: {args.out}: no finished rows (is it the sweep's results folder?)\n")
    path = args.out / PREDICTIONS_FILE
    command = shlex.join(["python", "bench/dev_predictions.py", str(args.sweep), "--out", str(args.out)])
    found = {"command": command, "host": None, "tasks": {}, "rows": {}} | (json.loads(path.read_text()) if path.exists() else {})
    executor = Executor(StageCache(args.out / WORK, work_folder_name), Console())  # the sweep's cache: its data and tokenizers, loaded once
    for number, record in enumerate(records, 1):
        known = found["rows"].get(record.measured_in)
        if known and round(known["score"], 6) == round(record.score, 6):
            continue
        row, folder = rows.get(record.key), args.out / WORK / str(record.measured_in)
        if row is None or not folder.is_dir():
            print(f"{record.key}: {'not in the sweep file' if row is None else f'its model {folder} is not here'}; skipped")
            continue
        recipe = row.recipe
        data = executor.data(recipe)
        if data.task.embedding:
            print(f"{record.key}: an embedder, scored on its vectors' similarities, not on predictions per example; skipped")
            continue
        split, (outputs, labels) = next(iter(dev_outputs(predictor_for(load_artifact(folder)), data, executor.tokenizer(recipe.model),
                                                         recipe.max_length, recipe.eval_batch_size).items()))
        predicted = predicted_values(data.task, outputs)
        predicted = predicted.round(DECIMALS) if data.task.is_regression else predicted
        rescored = compute_metrics(data.task, outputs, labels)[record.primary_metric]
        task = found["tasks"].setdefault(record.task, {"split": split, "labels": labels.tolist()})
        if task["labels"] != labels.tolist():
            parser.exit(2, f"error: {record.key}: its dev labels differ from the other rows' of {record.task}; "
                           f"their predictions cannot be paired\n")
        found["rows"][record.measured_in] = {"key": record.key, "task": record.task, "score": record.score,
                                             "rescored": rescored, "predicted": predicted.tolist()}
        found["host"] = describe_environment(timing_environment("cpu"))
        print(f"[{number}/{len(records)}] {record.key}: {record.primary_metric} {record.score:.4f} in its record, "
              f"{rescored:.4f} from these predictions", flush=True)
        write_text(path, json.dumps(found, separators=(",", ":")) + "\n")  # whole, after each row; lists of 1,000s: one line


if __name__ == "__main__":
    main()
