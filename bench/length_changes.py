"""What a change of input length costs each engine: model folders timed on dev examples at their own
lengths, every example run twice in a row, so that the first call follows another length and the second
repeats its own. The two medians cover the same lengths; their difference is the cost of the change
(OpenVINO prepares its graph again for every new shape it is given; onnxruntime's kernels take any shape).

    .venv/bin/python bench/length_changes.py A_FOLDER B_FOLDER ... --task sst2 --threads 2 --rounds 7 --calls 40

Every length is run once before timing (first-seen shapes are not what a serving process meets), and the
models are timed in turns, round by round, with the time_in_turns.py runners.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from time_in_turns import runner

from compress.data.loading import DataSettings, load_task_data
from compress.models.loading import load_tokenizer
from compress.timing.latency import TURN_PAUSE_S, describe_environment, task_length_batches, timing_environment


def timed_pairs(run, batches: list[dict]) -> tuple[list[float], list[float]]:
    """Milliseconds of each batch's call after a different length, and of the same batch run again."""
    changed, repeated = [], []
    for batch in batches:
        for times in (changed, repeated):
            start = time.perf_counter()
            run(batch)
            times.append(1000 * (time.perf_counter() - start))
    return changed, repeated


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path, help="model folders (PyTorch, ONNX or OpenVINO, as compress wrote them)")
    parser.add_argument("--task", default="rotten-tomatoes", help="whose dev examples are timed: rotten-tomatoes (embedded) "
                        "or a GLUE task read from ../shared/glue")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=40, help="dev examples per round, each run twice")
    args = parser.parse_args()
    missing = [str(f) for f in args.models if not (f / "config.json").is_file()]
    if missing:
        parser.exit(2, f"error: no model folder (with config.json) at {', '.join(missing)}\n")

    tokenizer = load_tokenizer(str(args.models[0]))
    data = DataSettings(source="embedded") if args.task == "rotten-tomatoes" else DataSettings(source="glue-dir", path="../shared/glue")
    dev = next(iter(load_task_data(args.task, data).dev.values()))
    batches = task_length_batches(dev, tokenizer, 1, 128, count=args.calls, seed=0)
    runners = {str(model): runner(model, {}, args.threads) for model in args.models}
    for run in runners.values():
        for batch in batches:
            run(batch)
    medians = {name: ([], []) for name in runners}
    for _ in range(args.rounds):
        for name, run in runners.items():
            time.sleep(TURN_PAUSE_S)
            for kept, times in zip(medians[name], timed_pairs(run, batches)):
                kept.append(float(np.median(times)))

    lengths = [b["input_ids"].shape[1] for b in batches]
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"Command: `{command}`\n\nHost: {describe_environment(timing_environment('cpu'))}; {args.threads} threads, "
          f"{args.rounds} rounds; {len(batches)} {args.task} dev examples per round, {min(lengths)} to {max(lengths)} tokens "
          f"(median {int(np.median(lengths))}), each run twice in a row.\n")
    print("| model | after another length: p50 ms | same length again: p50 ms | cost of a change: ms |")
    print("|---|---|---|---|")
    for name, (changed, repeated) in medians.items():
        after, again = np.median(changed), np.median(repeated)
        print(f"| {name} | {after:.2f} | {again:.2f} | {after - again:+.2f} |")


if __name__ == "__main__":
    main()
