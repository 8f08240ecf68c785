"""The fastest engine on this host for each top-K distilled MPNet-12 student of a paper12 sweep (issue #38):
`quantize: {mode: best}` on the student's fp32 ONNX export (the one the sweep's int8 row was made from), which
builds every CPU candidate (the export itself, onnxruntime dynamic and static int8, OpenVINO fp32, int8 and
bf16 where the CPU has it), scores each on the dev set, times them in turns at the sweep's max_length and at
dev examples' own lengths, and keeps the fastest within 0.5 points of the export.

    .venv/bin/python bench/paper12_best.py cola

Runs `compress stage quantize EXPORT --set mode=best ...` per K into bench/runs/paper12_best/<task>-top<K>
and writes its record, the command and the host to bench/results/paper12_<task>/best_top<K>.json, which
bench/paper12_report.py quotes; a K with that file is not chosen again. Nothing is trained: an export that
`compress bench clean` removed is made again from its student through the sweep's engine, and a K whose distilled
student is not in the sweep's work/ is skipped. Pause other work while it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from paper12_report import INT8, KS, TASKS
from rich.console import Console

from compress.benchmarking.bench import WORK, work_folder_name
from compress.benchmarking.rows import Combination
from compress.benchmarking.sweep import load_sweep, sweep_rows
from compress.pipeline.cache import StageCache
from compress.pipeline.executor import Executor, NotBuilt
from compress.timing.latency import describe_environment, timing_environment

STAGE_FOLDER = "quantize"
"""A one-stage run's folder for its stage (named after the stage)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--runs", type=Path, default=Path("bench/runs/paper12_best"))
    parser.add_argument("--rounds", type=int, default=5, help="rounds of timing in turns (the stage's default: 5)")
    args = parser.parse_args()
    sweep_file = Path(f"bench/sweeps/paper12_{args.task}.yaml")
    sweep = load_sweep(sweep_file)
    results = args.results / f"paper12_{args.task}"
    # The sweep's own engine and cache, where its exports lie; it may export, never train.
    executor = Executor(StageCache(results / WORK, work_folder_name), Console(), may_train=False)
    rows = {row.combination.key: row for row in sweep_rows(sweep)}
    task_data = sweep.tasks[args.task]
    model = sweep.models[0]
    for k in KS:
        row = rows[Combination(model, args.task, "top", k, "distill", INT8).key]
        out, chosen = args.runs / f"{args.task}-top{k}", results / f"best_top{k}.json"
        if chosen.exists():
            print(f"top-{k}: chosen before ({chosen}; remove it to choose again, on this host)")
            continue
        try:
            export, _ = executor.ensure(row.node.source)
        except NotBuilt as error:
            print(f"top-{k}: its distilled student is not built here (the sweep trains it; {error}); skipped")
            continue
        data = [part for key, value in task_data.model_dump(mode="json", exclude_defaults=True).items()
                for part in ("--data", f"{key}={value}")]
        command = [str(Path(sys.executable).parent / "compress"), "stage", "quantize", str(export), "--task", args.task, *data,
                   "--max-length", str(sweep.max_length), "--set", "mode=best", "--set", f"threads={sweep.latency.threads}",
                   "--set", f"lengths=[{sweep.max_length}, task]", "--set", f"rounds={args.rounds}", "-o", str(out),
                   "--overwrite"]  # timed now, on this host, whatever an earlier run left
        print("$ " + shlex.join(command), flush=True)
        subprocess.run(command, check=True)
        record = json.loads((out / STAGE_FOLDER / "stage.json").read_text())
        host = describe_environment(timing_environment("cpu"))
        chosen.write_text(json.dumps({"command": shlex.join(["compress", *command[1:]]), "host": host, **record}, indent=2) + "\n")


if __name__ == "__main__":
    main()
