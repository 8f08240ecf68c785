"""Before fine-tuning: does each student of a sweep hand its new classifier anything to read?

A sequence-classification head reads one token's state at the model's top layer ([CLS]/<s>, or the
last real token for XLNet and decoders). Sentence-embedding models trained for mean pooling keep
that token nearly the same for every input below their top layer, so a student whose new top layer
is such a layer starts from a classifier input that carries almost nothing; on a task with few
training steps its fine-tune can stay at the majority class. For every (model, task, strategy, K) of
a sweep this drops the layers as the sweep does (nothing is saved or trained) and measures the
classifier token's mean cosine between inputs at the student's top layer (compress/analysis/layers.py).
With --results, each row also shows the sweep's dev score and training loss for that student.

    .venv/bin/python bench/classifier_token.py bench/sweeps/mpnet_rte.yaml --results bench/results/mpnet_rte

Prints the table and writes <results or --out>/classifier_token.md and classifier_token.json.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

from rich.console import Console

from compress.analysis.contribution import scoring_batches
from compress.analysis.layers import analyze_layers, metric_scores
from compress.benchmarking.records import BenchRecord, merge_records, read_records
from compress.benchmarking.rows import FULL
from compress.benchmarking.sweep import expand, load_sweep
from compress.data.loading import load_task_data
from compress.errors import CompressError
from compress.models.loading import load_saved, load_tokenizer
from compress.stages.drop import DropSettings
from compress.surgery.architectures import num_layers
from compress.surgery.layer_drop import drop_layers, kept_original_layers
from compress.surgery.strategies import layers_to_drop

MARKDOWN_FILE, JSON_FILE = "classifier_token.md", "classifier_token.json"
SWEEP_METRIC = DropSettings.model_fields["metric"].default
"""A sweep's contribution drops use the drop stage's default metric."""


def students(sweep) -> list[tuple[str, str, str, int]]:
    """(model, task, strategy, K) of every distinct student in the sweep, the full model first."""
    found = {(c.model, c.task, c.strategy, c.k): None for c in expand(sweep)}
    return sorted(found, key=lambda s: (s[0], s[1], s[2] != FULL, s[2], s[3]))


def sweep_rows(results: Path | None) -> dict[tuple, BenchRecord]:
    """(model, task, strategy, K) -> the sweep's plain fine-tuned fp32 record of that student."""
    if results is None:
        return {}
    records = merge_records(read_records(results))
    return {
        (r.model, r.task, r.strategy, r.k): r
        for r in records
        if r.status == "ok" and r.training == "finetune" and r.precision == "torch-fp32"
    }


def measure(sweep, examples: int) -> list[dict]:
    rows = []
    wanted = students(sweep)
    for model_name in sweep.models:
        base = load_saved(model_name).eval()
        tokenizer = load_tokenizer(model_name)
        count = num_layers(base.config)
        for task in sweep.tasks:
            train = load_task_data(task, sweep.tasks[task]).train
            measured = scoring_batches(train, tokenizer, examples, sweep.max_length, sweep.seed)
            scores = None
            if any(strategy == "contribution" for _, _, strategy, _ in wanted):
                # ranked on the sweep's own examples and seed, as the sweep ranks them
                scoring = scoring_batches(train, tokenizer, sweep.contribution_examples, sweep.max_length, sweep.seed)
                scores = metric_scores(analyze_layers(base, scoring), SWEEP_METRIC)
            for strategy, k in [(strategy, k) for model, t, strategy, k in wanted if (model, t) == (model_name, task)]:
                dropped = [] if strategy == FULL else layers_to_drop(strategy, count, k, scores=scores)
                student = drop_layers(copy.deepcopy(base), dropped, strategy) if dropped else base
                top = analyze_layers(student, measured, block=None)[-1]
                rows.append({
                    "model": model_name, "task": task, "strategy": strategy, "k": k,
                    "kept_layers": kept_original_layers(student.config),
                    "top_layer": top.original_layer, "classifier_token_cosine": round(top.classifier_token_cosine, 4),
                })
    return rows


def markdown(rows: list[dict], examples: int, command: str) -> str:
    lines = [
        "# The classifier token at each student's top layer, before fine-tuning",
        "",
        f"Mean cosine between {examples} training examples' states of the token the classification head reads,",
        "at the top layer each student keeps (1: the same for every input). Score and training loss: the",
        "sweep's plain fine-tuned fp32 row of that student, where it has one.",
        "",
        f"    {command}",
        "",
        "| model | task | strategy | K | top layer kept | classifier token cos | dev score | train loss (mean) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        score = f"{r['score']:.4f}" if r.get("score") is not None else "-"
        loss = f"{r['train_loss_mean']:.4f}" if r.get("train_loss_mean") is not None else "-"
        lines.append(
            f"| {r['model']} | {r['task']} | {r['strategy']} | {r['k']} | {r['top_layer']} | {r['classifier_token_cosine']:.4f} | {score} | {loss} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("sweep", type=Path)
    parser.add_argument("--results", type=Path, help="The sweep's output folder: adds its scores and losses; written there.")
    parser.add_argument("--out", type=Path, help="Where to write (default: --results).")
    parser.add_argument("--examples", type=int, default=100, help="Training examples the token is measured on (at least 2).")
    args = parser.parse_args()
    out = args.out or args.results
    try:
        if out is None:
            raise CompressError("--out: name a folder to write to (or pass --results)")
        if args.examples < 2:
            raise CompressError(f"--examples: a cosine between inputs needs at least 2 examples (got {args.examples})")
        sweep = load_sweep(args.sweep)
        finished = sweep_rows(args.results)
        rows = measure(sweep, args.examples)
    except CompressError as error:
        Console(stderr=True).print(f"error: {error}", highlight=False)
        sys.exit(2)
    for row in rows:
        record = finished.get((row["model"], row["task"], row["strategy"], row["k"]))
        row["score"] = None if record is None else record.score
        row["train_loss_mean"] = None if record is None else (record.notes or {}).get("train_loss_mean")
    command = "python " + " ".join(sys.argv)
    text = markdown(rows, args.examples, command)
    out.mkdir(parents=True, exist_ok=True)
    (out / MARKDOWN_FILE).write_text(text)
    (out / JSON_FILE).write_text(json.dumps({"command": command, "examples": args.examples, "rows": rows}, indent=2) + "\n")
    print(text)


if __name__ == "__main__":
    main()
