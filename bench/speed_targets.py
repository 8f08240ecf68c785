"""Check a finished sweep against the benchmark issue's speed targets, timing the models that matter
side by side, and report the harness's own overhead per combination.

    .venv/bin/python bench/speed_targets.py bench/sweeps/mpnet_sst2.yaml --out bench/results/mpnet_sst2

A sweep times each combination on its own, minutes apart, so a slow drift of a shared machine moves
whole rows. Here the rows a target compares (the full model in PyTorch fp32 and as dynamic int8
ONNX, top-K distilled + int8, and top-K plain + int8 for comparison) are loaded together from the
sweep's builds and timed in turns: each round runs every model `--calls` times, and a speed-up is
the median over rounds of the two models' per-round medians. Batch 1, sequence length 128, the
sweep's thread count. Scores come from the sweep's records. Prints the figures and writes them to
<out>/speed_targets.md and speed_targets.json.
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from rich.console import Console

from compress.artifacts import load_artifact
from compress.bench import SweepRunner
from compress.latency import LoadElsewhere, contended, device_name, fixed_length_batch, runner_for, timed_calls
from compress.report import merge_records, read_records
from compress.sweep import FULL, Combination, load_sweep

INT8 = "onnx-int8-dynamic"
TRAINING_STAGES = ("finetune", "distill")
BATCH_SIZE, SEQUENCE_LENGTH = 1, 128


@dataclass(frozen=True)
class Target:
    k: int
    reference_precision: str
    min_speedup: float
    max_points_lost: float

    @property
    def text(self) -> str:
        return (f"top-{self.k} distilled + dynamic int8 ONNX against the full model in {self.reference_precision}: "
                f">= {self.min_speedup:g}x faster, at most {self.max_points_lost:g} points lower")


TARGETS = (
    Target(k=6, reference_precision="torch-fp32", min_speedup=12.0, max_points_lost=2.0),
    Target(k=4, reference_precision=INT8, min_speedup=1.4, max_points_lost=1.0),
)


def compared_rows(model: str, task: str) -> list[Combination]:
    rows = [Combination(model, task, FULL, 0, "finetune", p) for p in ("torch-fp32", INT8)]
    for target in TARGETS:
        rows += [Combination(model, task, "top", target.k, training, INT8) for training in ("distill", "finetune")]
    return rows


def time_in_turns(runner: SweepRunner, combinations: list[Combination], rounds: int, calls: int) -> dict[str, list[float]]:
    """Per-round median seconds of each combination, all timed in turns in this process."""
    threads = runner.latency.threads
    calls_of = {}
    for c in combinations:
        batch = fixed_length_batch(next(iter(runner.data(c.task).dev.values()))["text_a"], runner.tokenizer(c.model),
                                   BATCH_SIZE, SEQUENCE_LENGTH)
        _, folder = runner.artifact(c)
        run = runner_for(load_artifact(folder), threads)
        calls_of[c.key] = lambda run=run, batch=batch: run(batch)
        timed_calls(calls_of[c.key], warmup=3, repeats=1)
    medians: dict[str, list[float]] = {key: [] for key in calls_of}
    for _ in range(rounds):
        for key, call in calls_of.items():
            medians[key].append(float(np.median(timed_calls(call, warmup=0, repeats=calls))))
    return medians


def speedup(medians: dict[str, list[float]], reference: Combination, student: Combination) -> tuple[float, float, float]:
    """Median, lowest and highest over rounds of reference time / student time."""
    ratios = [r / s for r, s in zip(medians[reference.key], medians[student.key])]
    return statistics.median(ratios), min(ratios), max(ratios)


def table(rows: list[Combination], records: dict, medians: dict[str, list[float]]) -> list[str]:
    full = records[rows[0].key]
    lines = ["| row | score | Δ points | params (M) | size (MB) | p50 ms (median of rounds) | speed-up |", "|---|---|---|---|---|---|---|"]
    for c in rows:
        r = records[c.key]
        lines.append(
            f"| {c.label} | {r['score']:.4f} | {100 * (r['score'] - full['score']):+.2f} | {r['parameters'] / 1e6:.1f} | "
            f"{r['size_mb']:.1f} | {1000 * statistics.median(medians[c.key]):.2f} | {speedup(medians, rows[0], c)[0]:.2f}x |"
        )
    return lines


def target_lines(records: dict, medians: dict, model: str, task: str) -> list[str]:
    lines = []
    for target in TARGETS:
        reference = Combination(model, task, FULL, 0, "finetune", target.reference_precision)
        for training in ("distill", "finetune"):
            student = Combination(model, task, "top", target.k, training, INT8)
            ratio, low, high = speedup(medians, reference, student)
            points = 100 * (records[student.key]["score"] - records[reference.key]["score"])
            figures = (f"{ratio:.2f}x (rounds: {low:.2f}-{high:.2f}), score {records[student.key]['score']:.4f} vs "
                       f"{records[reference.key]['score']:.4f} ({points:+.2f} points)")
            if training == "distill":
                met = ratio >= target.min_speedup and points >= -target.max_points_lost
                lines.append(f"- {target.text}: **{'met' if met else 'not met'}**: {figures}")
            else:
                lines.append(f"  - for comparison, top-{target.k} plain fine-tuned + int8: {figures}")
    return lines


def overhead_lines(records: list[dict]) -> list[str]:
    first_runs: dict[str, dict] = {}  # the run that built each combination, not a later --retime
    for r in records:
        if r["status"] == "ok" and "overhead" in r.get("seconds", {}):
            first_runs.setdefault(r["key"], r)
    timed = list(first_runs.values())
    if not timed:
        return ["- no record carries the time split (records written before it was added)"]
    overhead = [r["seconds"]["overhead"] for r in timed]
    # the stricter reading: everything but training and the timed runs (so dropping, exporting,
    # quantizing and the dev evaluation count as overhead too)
    strict = [
        r["seconds_total"] - sum(r["seconds"]["stages"].get(s, 0.0) for s in TRAINING_STAGES) - r["seconds"]["timing"]
        for r in timed
    ]
    return [
        f"- {len(timed)} combinations, as first run; the harness's own time (loading models and data, bookkeeping, "
        f"writing records): median {statistics.median(overhead):.1f} s, max {max(overhead):.1f} s",
        f"- everything but training and the timed runs (adds dropping, export, quantization and the dev "
        f"evaluation): median {statistics.median(strict):.1f} s, max {max(strict):.1f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the sweep file")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's output folder")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per model per round")
    args = parser.parse_args()
    sweep = load_sweep(args.sweep)
    all_records = read_records(args.out)
    records = {r["key"]: r for r in merge_records(all_records) if r["status"] == "ok"}
    runner = SweepRunner(sweep, args.out, Console())
    lines = [f"# Speed targets: {args.out}", "",
             f"Batch {BATCH_SIZE}, sequence length {SEQUENCE_LENGTH}, {sweep.latency.threads} threads, {device_name()}; "
             f"{args.rounds} rounds of {args.calls} calls per model, models timed in turns.", ""]
    figures = {}
    for model in sweep.models:
        for task in sweep.tasks:
            rows = compared_rows(model, task)
            missing = [c.label for c in rows if c.key not in records]
            lines += [f"## {model} on {task}", ""]
            if missing:
                lines += [f"- not measured: the sweep has not finished {', '.join(missing)}", ""]
                continue
            with LoadElsewhere() as elsewhere:
                medians = time_in_turns(runner, rows, args.rounds, args.calls)
            lines += table(rows, records, medians)
            lines += ["", f"Other work on this machine while these were timed: {elsewhere.cores:.2f} CPU cores on average"
                      + (" (busy: measure again on a quiet machine)." if contended(elsewhere.cores) else ".")]
            lines += ["", *target_lines(records, medians, model, task), ""]
            figures[f"{model}|{task}"] = {key: [round(1000 * s, 3) for s in values] for key, values in medians.items()}
    lines += ["## Harness overhead per combination", "", *overhead_lines(all_records), ""]
    lines += [f"Command: `.venv/bin/python bench/speed_targets.py {args.sweep} --out {args.out}`", ""]
    text = "\n".join(lines)
    print(text)
    (args.out / "speed_targets.md").write_text(text)
    (args.out / "speed_targets.json").write_text(json.dumps({"per_round_median_ms": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
