"""What running a sweep on Ray costs over running it in one process, on this machine.

    .venv/bin/python bench/ray_overhead.py --out bench/results/ray --rounds 3     # about 25 minutes on 2 CPU cores

Runs one small sweep (the embedded MiniLM on 200 Rotten Tomatoes reviews: the two baselines, top,
bottom and alternate-even at K = 2 fine-tuned, top-2 distilled, and top-2 in dynamic int8: 7 rows,
6 trained models) into fresh folders, with the local executor and with `--executor ray` (a local Ray
instance of this machine's CPUs), `--rounds` times in turns, and reports the wall times, whether both
made the same scores, and what Ray adds: once per sweep, starting Ray and a worker's first imports
(torch, transformers and compress: timed by themselves in each round), and per row the rest
(scheduling, tasks waiting on each other, workers loading data). Writes <out>/overhead.md and
overhead.json.
"""

from __future__ import annotations

import argparse
import json
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from compress.benchmarking.records import read_records
from compress.timing.latency import describe_environment, timing_environment

SWEEP = {
    "name": "ray-overhead",
    "models": ["minilm-l6"],
    "tasks": {"rotten-tomatoes": {"source": "embedded", "max_train_examples": 200, "max_eval_examples": 200}},
    "max_length": 64,
    "training": {"epochs": 1, "batch_size": 16},
    "latency": {"batch_sizes": [1], "repeats": 20, "warmup": 3, "task_lengths": False},
    "grids": [{"strategies": ["top", "bottom", "alternate-even"], "k": [2], "training": ["finetune"], "precisions": ["torch-fp32"]},
              {"strategies": ["top"], "k": [2], "training": ["distill"], "precisions": ["torch-fp32"]},
              {"strategies": ["top"], "k": [2], "training": ["finetune"], "precisions": ["onnx-int8-dynamic"]}],
}


def run(sweep: Path, out: Path, executor: str) -> float:
    compress = str(Path(sys.executable).with_name("compress"))
    started = time.perf_counter()
    subprocess.run([compress, "bench", str(sweep), "--out", str(out), "--executor", executor], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


START = """
import time
started = time.perf_counter()
import ray
from compress.benchmarking.ray_executor import connect
connect(None)
joined = time.perf_counter()
ray.get(ray.remote(lambda: __import__("compress.benchmarking.ray_executor")).remote())
print(joined - started, time.perf_counter() - joined)
ray.shutdown()
"""


def ray_start() -> tuple[float, float]:
    """Seconds to start a local Ray instance as the sweep does, and for its first task's imports on a cold worker."""
    done = subprocess.run([sys.executable, "-c", START], check=True, capture_output=True, text=True)
    start, imports = map(float, done.stdout.split())
    return start, imports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/ray"))
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    walls: dict[str, list[float]] = {"local": [], "ray": []}
    starts: dict[str, list[float]] = {"starting Ray": [], "a cold worker's first imports": []}
    same_scores = True
    with tempfile.TemporaryDirectory() as scratch:
        sweep = Path(scratch) / "sweep.yaml"
        sweep.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
        for round_ in range(args.rounds):
            scores = {}
            for executor in ("local", "ray") if round_ % 2 == 0 else ("ray", "local"):
                out = Path(scratch) / f"{executor}-{round_}"
                walls[executor].append(run(sweep, out, executor))
                scores[executor] = {r.key: r.score for r in read_records(out)}
                print(f"round {round_ + 1}, {executor}: {walls[executor][-1]:.1f} s", flush=True)
            for name, seconds in zip(starts, ray_start()):
                starts[name].append(seconds)
            same_scores = same_scores and scores["local"] == scores["ray"]
            rows = len(scores["local"])
    local, ray = statistics.median(walls["local"]), statistics.median(walls["ray"])
    once = sum(statistics.median(values) for values in starts.values())
    per_row = (ray - local - once) / rows
    command = "python " + " ".join(shlex.quote(a) for a in ["bench/ray_overhead.py", *sys.argv[1:]])
    lines = [
        "# Ray's overhead over the local executor", "",
        f"Command: `{command}`", "",
        f"Host: {describe_environment(timing_environment('cpu'))}. A local Ray instance of this machine's CPUs; "
        f"{args.rounds} rounds, the two executors in turns, each into a fresh folder.", "",
        "| executor | wall s (each round) | median s |", "|---|---|---|",
        *(f"| {name} | {', '.join(f'{w:.1f}' for w in values)} | {statistics.median(values):.1f} |" for name, values in walls.items()),
        *(f"| {name}, timed by itself | {', '.join(f'{w:.1f}' for w in values)} | {statistics.median(values):.1f} |"
          for name, values in starts.items()),
        "",
        f"{rows} rows: Ray adds {ray - local:+.1f} s to the sweep: {once:.1f} s once, to start Ray and a worker's first imports, "
        f"and {per_row:+.2f} s per row for the rest (target: under 2 s per row). "
        f"Scores {'identical' if same_scores else 'NOT identical'} between the executors in every round.", "",
    ]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overhead.md").write_text("\n".join(lines))
    (args.out / "overhead.json").write_text(json.dumps({"command": command, "walls": walls, "starts": starts, "rows": rows,
                                                        "once_s": round(once, 1), "per_row_s": round(per_row, 2),
                                                        "same_scores": same_scores}, indent=2) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
