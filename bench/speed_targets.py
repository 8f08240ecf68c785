"""Check a finished sweep against the benchmark issue's speed targets, timing the models that matter
side by side, and report the harness's own overhead per combination.

    .venv/bin/python bench/speed_targets.py bench/sweeps/mpnet_sst2.yaml --out bench/results/mpnet_sst2

A sweep times each combination on its own, minutes apart, so a slow drift of a shared machine moves
whole rows. Here the rows a target compares (the full model in PyTorch fp32 and as dynamic int8
ONNX, top-K distilled + int8, and top-K plain + int8 for comparison; the same again with the fused
graph, `onnx-int8-dynamic-o2`, and with OpenVINO's `openvino-int8`, when the sweep has those rows) are loaded together from the
sweep's builds (nothing is trained here; a missing export is made) and timed in turns: each round runs every model `--calls` times, and a speed-up is
the median over rounds of the two models' per-round medians. Batch 1, sequence length 128, the
sweep's thread count. Scores come from the sweep's records; the share of the int8 MatMul peak from the
MatMul work they recorded, against the peak MatMuls timed in the same rounds. Prints the figures and writes them to
<out>/speed_targets.md and speed_targets.json.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console

from compress.benchmarking.bench import Benchmark
from compress.benchmarking.precisions import PRECISIONS
from compress.benchmarking.records import BenchRecord, merge_records, read_records
from compress.benchmarking.rows import FULL, Combination
from compress.benchmarking.sweep import load_sweep, sweep_rows
from compress.errors import CompressError
from compress.models.artifacts import load_artifact
from compress.stages import STAGES
from compress.timing.latency import (
    describe_environment,
    device_name,
    fixed_length_batch,
    runner_for,
    timed_in_turns,
    timing_environment,
)
from compress.timing.load import LoadElsewhere, contended
from compress.timing.roofline import describe_peaks, fractions_in_turns, peak_runners, peaks_of_rounds, take_peaks

TRAINING_STAGES = [name for name, stage in STAGES.items() if stage.trains]

INT8_PRECISIONS = ("onnx-int8-dynamic", "onnx-int8-dynamic-o2", "openvino-int8")
"""Dynamic int8 ONNX as exported, with onnxruntime's fused graph (O2), and OpenVINO's NNCF int8; each is
compared like with like."""
BATCH_SIZE, SEQUENCE_LENGTH = 1, 128
FP32 = "torch-fp32"


@dataclass(frozen=True)
class Target:
    k: int
    against_int8: bool  # against the full model in the same int8 precision; else in PyTorch fp32
    min_speedup: float
    max_points_lost: float

    def reference(self, int8: str) -> str:
        return int8 if self.against_int8 else FP32

    def text(self, int8: str) -> str:
        return (f"top-{self.k} distilled + {int8} against the full model in {self.reference(int8)}: "
                f">= {self.min_speedup:g}x faster, at most {self.max_points_lost:g} points lower")


TARGETS = (
    Target(k=6, against_int8=False, min_speedup=12.0, max_points_lost=2.0),
    Target(k=4, against_int8=True, min_speedup=1.4, max_points_lost=1.0),
)
ROOFLINE_K, ROOFLINE_TARGET = 6, 0.75
"""The speed issue's roofline target: top-6 distilled int8 at 128 tokens reaches 75% of the host's int8 MatMul peak."""


def compared_rows(model: str, task: str, int8_precisions: list[str]) -> list[Combination]:
    rows = [Combination(model, task, FULL, 0, "finetune", FP32)]
    for int8 in int8_precisions:
        rows.append(Combination(model, task, FULL, 0, "finetune", int8))
        for target in TARGETS:
            rows += [Combination(model, task, "top", target.k, training, int8) for training in ("distill", "finetune")]
    return rows


def time_in_turns(benchmark: Benchmark, combinations: list[Combination], rounds: int,
                  calls: int) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Per-round median milliseconds of each combination, and of the host's peak MatMuls by type, all timed
    in turns in this process (`timed_in_turns`: a pause and untimed calls between models, since one
    engine's spinning threads slow whatever runs right after it)."""
    threads = benchmark.latency.threads
    rows = {row.combination.key: row for row in sweep_rows(benchmark.sweep)}
    runners = {}
    for c in combinations:
        recipe = rows[c.key].recipe
        batch = fixed_length_batch(next(iter(benchmark.executor.data(recipe).dev.values()))["text_a"],
                                   benchmark.executor.tokenizer(recipe.model), BATCH_SIZE, SEQUENCE_LENGTH)
        _, folder, _ = benchmark.build(rows[c.key])
        run = runner_for(load_artifact(folder), threads)
        runners[c.key] = lambda _, run=run, batch=batch: run(batch)  # each row on its own tokenizer's batch
    per_round = timed_in_turns(runners | peak_runners(threads), {"fixed": [None] * calls}, rounds)
    peak_ms = {name: by_set["fixed"] for name, by_set in take_peaks(per_round).items()}
    return {key: by_set["fixed"] for key, by_set in per_round.items()}, peak_ms


def speedup(medians: dict[str, list[float]], reference: Combination, student: Combination) -> tuple[float, float, float]:
    """Median, lowest and highest over rounds of reference time / student time."""
    ratios = [r / s for r, s in zip(medians[reference.key], medians[student.key])]
    return statistics.median(ratios), min(ratios), max(ratios)


def round_fractions(record: BenchRecord, model_ms: list[float], peak_ms: dict[str, list[float]]) -> tuple[list[float] | None, str]:
    """Round by round, the share of the host's MatMul peak (in the type the row computes in, timed in the same
    round) that the row's time reached, from the MatMul work the sweep recorded at this batch and length
    (None for a record without it)."""
    dtype = PRECISIONS[record.precision].matmul_dtype
    gop = next((t.matmul_gop for t in record.latency or [] if t.batch_size == BATCH_SIZE and t.sequence_length == str(SEQUENCE_LENGTH)), None)
    if gop is None or dtype not in peak_ms:
        return None, dtype
    return [fractions_in_turns(gop, [ms], {dtype: [peak]})[dtype] for ms, peak in zip(model_ms, peak_ms[dtype])], dtype


def table(rows: list[Combination], records: dict[str, BenchRecord], medians: dict[str, list[float]], peak_ms: dict[str, list[float]]) -> list[str]:
    full = records[rows[0].key]
    lines = ["| row | score | Δ points | params (M) | size (MB) | p50 ms (median of rounds) | speed-up | of MatMul peak |",
             "|---|---|---|---|---|---|---|---|"]
    for c in rows:
        r = records[c.key]
        fractions, dtype = round_fractions(r, medians[c.key], peak_ms)
        lines.append(
            f"| {c.label} | {r.score:.4f} | {100 * (r.score - full.score):+.2f} | {r.parameters / 1e6:.1f} | "
            f"{r.size_mb:.1f} | {statistics.median(medians[c.key]):.2f} | {speedup(medians, rows[0], c)[0]:.2f}x | "
            f"{'' if fractions is None else f'{statistics.median(fractions):.0%} {dtype}'} |"
        )
    return lines


def roofline_lines(records: dict[str, BenchRecord], medians: dict, model: str, task: str, int8_precisions: list[str],
                   peak_ms: dict[str, list[float]]) -> list[str]:
    lines = []
    for int8 in int8_precisions:
        student = Combination(model, task, "top", ROOFLINE_K, "distill", int8)
        fractions, _ = round_fractions(records[student.key], medians[student.key], peak_ms)
        if fractions is None:
            continue
        fraction = statistics.median(fractions)
        lines.append(f"- top-{ROOFLINE_K} distilled + {int8} at batch {BATCH_SIZE}, {SEQUENCE_LENGTH} tokens: >= {ROOFLINE_TARGET:.0%} "
                     f"of the int8 MatMul peak: **{'met' if fraction >= ROOFLINE_TARGET else 'not met'}**: {fraction:.0%} "
                     f"(rounds: {min(fractions):.0%}-{max(fractions):.0%})")
    return lines


def target_lines(records: dict[str, BenchRecord], medians: dict, model: str, task: str, int8_precisions: list[str]) -> list[str]:
    lines = []
    for int8, target in itertools.product(int8_precisions, TARGETS):
        reference = Combination(model, task, FULL, 0, "finetune", target.reference(int8))
        for training in ("distill", "finetune"):
            student = Combination(model, task, "top", target.k, training, int8)
            ratio, low, high = speedup(medians, reference, student)
            points = 100 * (records[student.key].score - records[reference.key].score)
            figures = (f"{ratio:.2f}x (rounds: {low:.2f}-{high:.2f}), score {records[student.key].score:.4f} vs "
                       f"{records[reference.key].score:.4f} ({points:+.2f} points)")
            if training == "distill":
                met = ratio >= target.min_speedup and points >= -target.max_points_lost
                lines.append(f"- {target.text(int8)}: **{'met' if met else 'not met'}**: {figures}")
            else:
                lines.append(f"  - for comparison, top-{target.k} plain fine-tuned + {int8}: {figures}")
    return lines


OVERHEAD_LIMIT_SECONDS = 10.0
"""The issue's target for the harness's overhead per combination (everything but training and the timed runs)."""


def overhead_lines(records: list[BenchRecord]) -> list[str]:
    first_runs: dict[str, BenchRecord] = {}  # the run that built each combination, not a later --retime
    for r in records:
        if r.status == "ok" and "overhead" in (r.seconds or {}):
            first_runs.setdefault(r.key, r)
    timed = list(first_runs.values())
    if not timed:
        return ["- no record carries the time split (records written before it was added)"]
    # the wording: everything but training and the timed runs, so dropping, export,
    # quantization and the dev evaluation count, besides the harness's own bookkeeping
    everything_else = [
        r.seconds_total - sum(r.seconds["stages"].get(s, 0.0) for s in TRAINING_STAGES)
        - r.seconds["timing"] - r.seconds.get("memory", 0.0)  # measured runs: timing, and the memory run
        for r in timed
    ]
    over = sum(seconds >= OVERHEAD_LIMIT_SECONDS for seconds in everything_else)
    evaluation = [r.seconds["evaluate"] for r in timed]
    other_stages = [sum(t for s, t in r.seconds["stages"].items() if s not in TRAINING_STAGES) for r in timed]
    own = [r.seconds["overhead"] for r in timed]
    return [
        f"- {len(timed)} combinations, as first run. Everything but training and the measured runs (timing and the memory "
        f"run), so loading, dropping, export, quantization, the dev evaluation and bookkeeping: median {statistics.median(everything_else):.1f} s, "
        f"max {max(everything_else):.1f} s; target under {OVERHEAD_LIMIT_SECONDS:g} s per combination: "
        f"**{'met' if not over else 'not met'}** ({over} of {len(timed)} combinations at or above it)",
        f"- of that, dropping, export and quantization, each stage scoring the model it builds on the dev set: median "
        f"{statistics.median(other_stages):.1f} s, max {max(other_stages):.1f} s; the dev evaluation of models no stage "
        f"scored: median {statistics.median(evaluation):.1f} s, max {max(evaluation):.1f} s",
        f"- and the harness's own time (loading models and data, bookkeeping, writing records; not the "
        f"stages' work or the dev evaluation): median {statistics.median(own):.1f} s, max {max(own):.1f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep", type=Path, help="the sweep file")
    parser.add_argument("--out", type=Path, required=True, help="the sweep's output folder")
    # One round of the 12-layer rows takes about 2 s; single rounds' ratios spread by +-4%, so many rounds steady the median.
    parser.add_argument("--rounds", type=int, default=21)
    parser.add_argument("--calls", type=int, default=10, help="timed calls per model per round")
    parser.add_argument("--overhead-only", action="store_true",
                        help="only the harness's overhead, from the records (any sweep; nothing is timed): <out>/overhead.md")
    args = parser.parse_args()
    sweep = load_sweep(args.sweep)
    all_records = read_records(args.out)
    if args.overhead_only:
        command = f".venv/bin/python bench/speed_targets.py {args.sweep} --out {args.out} --overhead-only"
        text = "\n".join([f"# Harness overhead per combination: {args.out}", "", *overhead_lines(all_records), "",
                          f"Command: `{command}`", ""])
        print(text)
        (args.out / "overhead.md").write_text(text)
        return
    records = {r.key: r for r in merge_records(all_records) if r.status == "ok"}
    benchmark = Benchmark(args.out, sweep.latency, Console(), sweep)
    benchmark.executor.may_train = False  # time the sweep's own trained models; never train here
    environment = timing_environment("cpu")
    lines = [f"# Speed targets: {args.out}", "",
             f"Batch {BATCH_SIZE}, sequence length {SEQUENCE_LENGTH}, {sweep.latency.threads} threads, {device_name('cpu')}; "
             f"{args.rounds} rounds of {args.calls} calls per model, models timed in turns.", "",
             f"Timed with {describe_environment(environment)}.", ""]
    figures, throughput = {}, {}
    for model in sweep.models:
        for task in sweep.tasks:
            # the fused and OpenVINO int8 rows only when the sweep has them (sweeps from before they were added do not)
            int8_precisions = [p for p in INT8_PRECISIONS
                               if p == INT8_PRECISIONS[0] or Combination(model, task, FULL, 0, "finetune", p).key in records]
            rows = compared_rows(model, task, int8_precisions)
            missing = [c.label for c in rows if c.key not in records]
            lines += [f"## {model} on {task}", ""]
            if missing:
                lines += [f"- not measured: the sweep has not finished {', '.join(missing)}", ""]
                continue
            with LoadElsewhere() as elsewhere:
                medians, peak_ms = time_in_turns(benchmark, rows, args.rounds, args.calls)
            # which kind of host: the int8/fp32 ratio bounds the speed-ups
            throughput = peaks_of_rounds({name: {"fixed": rounds} for name, rounds in peak_ms.items()})
            lines += [f"This machine's {describe_peaks(throughput, sweep.latency.threads)}, timed in the same rounds "
                      "(`bench/gemm_throughput.py` times it alone).", ""]
            lines += table(rows, records, medians, peak_ms)
            lines += ["", f"Other work on this machine while these were timed: {elsewhere.cores:.2f} CPU cores on average"
                      + (" (busy: measure again on a quiet machine)." if contended(elsewhere.cores) else ".")]
            lines += ["", *target_lines(records, medians, model, task, int8_precisions),
                      *roofline_lines(records, medians, model, task, int8_precisions, peak_ms), ""]
            figures[f"{model}|{task}"] = {key: [round(ms, 3) for ms in values] for key, values in medians.items()}
    lines += ["## Harness overhead per combination", "", *overhead_lines(all_records), ""]
    command = f".venv/bin/python bench/speed_targets.py {args.sweep} --out {args.out} --rounds {args.rounds} --calls {args.calls}"
    lines += [f"Command: `{command}`", ""]
    text = "\n".join(lines)
    print(text)
    (args.out / "speed_targets.md").write_text(text)
    (args.out / "speed_targets.json").write_text(json.dumps({"environment": environment, "gemm_gops": throughput, "per_round_median_ms": figures}, indent=2) + "\n")


if __name__ == "__main__":
    try:
        main()
    except CompressError as error:
        print(f"speed_targets: {error}", file=sys.stderr)
        sys.exit(2)
