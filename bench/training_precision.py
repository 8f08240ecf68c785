"""bf16 against fp32 fine-tuning on this machine's CPU: optimizer steps per second and dev score.

    .venv/bin/python bench/training_precision.py --out bench/results/training_precision --rounds 2

Fine-tunes the embedded 6-layer MiniLM on SST-2 (../shared/glue) with the teacher settings of
bench/sweeps/minilm_sst2.yaml (4,000 sentences, 2 epochs, batch 16, seed 42: 500 steps), once per
training precision per round, the precisions in turns (ABBA over two rounds), each into a fresh folder
through `compress bench`, and reports each training's steps per second (the Trainer's, from the
record's notes), the ratio bf16/fp32 in each round, and the dev accuracy with its bootstrap standard
error. Same seed, same data order: only the precision differs. Writes <out>/training_precision.{md,json}.
Needs a CPU with AVX512-BF16 or AMX (bf16 is refused elsewhere) or a CUDA GPU.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

from compress.benchmarking.records import read_records
from compress.timing.latency import describe_environment, timing_environment

PRECISIONS = ("fp32", "bf16")


def sweep(precision: str) -> dict:
    return {
        "name": f"training-precision-{precision}",
        "models": ["minilm-l6"],
        "tasks": {"sst2": {"source": "glue-dir", "path": "../shared/glue", "max_train_examples": 4000, "seed": 42}},
        "max_length": 128,
        "training": {"epochs": 2, "learning_rate": 5.0e-5, "batch_size": 16, "seed": 42, "precision": precision},
        "latency": {"batch_sizes": [1], "repeats": 10, "warmup": 2, "task_lengths": False},
        # k = 0 is the full model: the baseline row itself, so the sweep trains one model.
        "grids": [{"strategies": ["top"], "k": [0], "training": ["finetune"], "precisions": ["torch-fp32"]}],
    }


def train(precision: str, folder: Path) -> dict:
    file = folder / f"{precision}.yaml"
    file.write_text(yaml.safe_dump(sweep(precision), sort_keys=False))
    out = folder / precision
    subprocess.run([str(Path(sys.executable).with_name("compress")), "bench", str(file), "--out", str(out)],
                   check=True, stdout=subprocess.DEVNULL)
    record = next(r for r in read_records(out) if r.precision == "torch-fp32")
    return {"steps_per_second": record.notes["train_steps_per_second"], "train_seconds": record.train_seconds,
            "other_cpu_load": record.train_other_cpu_load, "computed_in": record.notes["precision"],
            "accuracy": record.score, "stderr": record.score_stderr}


def joined(values: list, form: str) -> str:
    return ", ".join("–" if v is None else format(v, form) for v in values)


def row(precision: str, runs: list[dict]) -> str:
    first = runs[0]
    return (f"| {precision} | {first['computed_in']} | {joined([r['steps_per_second'] for r in runs], '.3f')} | "
            f"{joined([r['train_seconds'] for r in runs], '.0f')} | {joined([r['other_cpu_load'] for r in runs], '.2f')} | "
            f"{first['accuracy']:.4f} ± {first['stderr']:.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/training_precision"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {p: [] for p in PRECISIONS}
    for round_ in range(args.rounds):
        for precision in PRECISIONS if round_ % 2 == 0 else PRECISIONS[::-1]:
            with tempfile.TemporaryDirectory() as scratch:
                runs[precision].append(train(precision, Path(scratch)))
            run = runs[precision][-1]
            print(f"round {round_ + 1}, {precision}: {run['steps_per_second']:.3f} steps/s, "
                  f"accuracy {run['accuracy']:.4f}", flush=True)
    ratios = [b["steps_per_second"] / f["steps_per_second"] for f, b in zip(runs["fp32"], runs["bf16"])]
    fp32, bf16 = runs["fp32"][0], runs["bf16"][0]
    gap = bf16["accuracy"] - fp32["accuracy"]
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/training_precision.py", *sys.argv[1:]])
    lines = [
        "# bf16 against fp32 fine-tuning", "",
        f"Command: `{command}`", "",
        f"Host: {describe_environment(timing_environment('cpu'))}. The embedded MiniLM (6 layers) fine-tuned on 4,000 SST-2 "
        f"sentences, 2 epochs, batch 16, seed 42 (500 steps), scored on the 872 dev sentences; {args.rounds} rounds, "
        "the precisions in turns, each training into a fresh folder.", "",
        "| precision | computed in | steps/s (each round) | train s (each round) | other CPU load, cores | dev accuracy |",
        "|---|---|---|---|---|---|",
        *(row(p, runs[p]) for p in PRECISIONS),
        "",
        f"bf16 trains {statistics.median(ratios):.2f}x as many steps per second as fp32 (median of the rounds' ratios: "
        f"{joined(ratios, '.2f')}; target at least 1.3x). Its dev accuracy is {gap * 100:+.2f} points "
        f"from fp32's, {'within' if abs(gap) <= fp32['stderr'] else 'NOT within'} one standard error ({fp32['stderr'] * 100:.2f} points). "
        f"Scores were {'the same' if all(r['accuracy'] == runs[p][0]['accuracy'] for p in PRECISIONS for r in runs[p]) else 'NOT the same'}"
        " in every round of each precision.", "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "training_precision.md").write_text("\n".join(lines))
    (args.out / "training_precision.json").write_text(json.dumps({"command": command, "runs": runs, "ratios": ratios}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
