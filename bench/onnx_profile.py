"""Where an ONNX model spends its time, by operator type: onnxruntime's own profiler, on a fixed thread count.

    .venv/bin/python bench/onnx_profile.py MODEL.onnx --threads 2 --batch 1 --length 128

Runs the model on a batch of random token ids (every position attended; the content does not
change the work), profiles `--calls` calls after a warm-up, and prints each operator type's
milliseconds per call, share of the kernel time, and node count per call. It tells what a faster
graph could still gain: time in int8 MatMuls can only shrink on a faster processor, time in the
operators around them can shrink with fusions.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from compress.exporters import onnx_file
from compress.exporters.onnx_runtime import ort_session

from compress.timing.latency import timed_calls

TOKEN_IDS = (1000, 2000)
"""Random ids are drawn from here: ordinary word pieces in every vocabulary of 2,000 or more."""


def random_feed(session, batch: int, length: int) -> dict[str, np.ndarray]:
    """Inputs for any graph: token ids, a full attention mask and zero segment ids for a
    transformer; random floats for other float inputs (their dynamic axes set to batch, length)."""
    rng = np.random.default_rng(0)
    feed = {}
    for i in session.get_inputs():
        shape = [d if isinstance(d, int) else (batch if position == 0 else length) for position, d in enumerate(i.shape)]
        if i.type == "tensor(float)":
            feed[i.name] = rng.standard_normal(shape).astype(np.float32)
        elif i.name == "input_ids":
            feed[i.name] = rng.integers(*TOKEN_IDS, shape).astype(np.int64)
        elif i.name == "attention_mask":
            feed[i.name] = np.ones(shape, np.int64)
        else:  # token_type_ids, position ids a graph takes as zeros by default
            feed[i.name] = np.zeros(shape, np.int64)
    return feed


def profile_by_operator(path: Path, threads: int, batch: int, length: int, calls: int = 30, warmup: int = 5) -> dict:
    """Per operator type: `ms_per_call`, `share` of all kernel time, `nodes_per_call`; and `total_ms_per_call`."""
    with tempfile.TemporaryDirectory() as scratch:
        session = ort_session(path, threads, profile_prefix=Path(scratch) / "profile")
        feed = random_feed(session, batch, length)
        for _ in range(warmup + calls):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    runs = sorted((e["ts"], e["dur"]) for e in events if e.get("cat") == "Session" and e["name"] == "model_run")
    timed_from = runs[warmup][0]  # the warm-up calls' nodes are left out
    plain = ort_session(path, threads)
    unprofiled = timed_calls(lambda: plain.run(None, feed), warmup, calls)
    microseconds, nodes = Counter(), Counter()
    for event in events:
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time") and event["ts"] >= timed_from:
            microseconds[event["args"]["op_name"]] += event["dur"]
            nodes[event["args"]["op_name"]] += 1
    total = sum(microseconds.values())
    return {
        # the profiler's own cost per node makes profiled calls slower; the shares are of profiled time
        "call_ms": round(1000 * float(np.median(unprofiled)), 3),
        "profiled_call_ms": round(float(np.median([dur for _, dur in runs[warmup:]])) / 1000, 3),
        "total_ms_per_call": round(total / calls / 1000, 3),
        "operators": {op: {"ms_per_call": round(us / calls / 1000, 3), "share": round(us / total, 4),
                           "nodes_per_call": nodes[op] / calls} for op, us in microseconds.most_common()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="an .onnx file, or a model folder (its onnx/*.onnx)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--calls", type=int, default=30)
    args = parser.parse_args()
    path = onnx_file(args.model) if args.model.is_dir() else args.model
    if path is None or not path.is_file():
        parser.exit(2, f"error: {args.model}: no ONNX model there (expected an .onnx file or a model folder with onnx/*.onnx)\n")
    profile = profile_by_operator(path, args.threads, args.batch, args.length, args.calls)
    print(f"{path}: batch {args.batch}, length {args.length}, {args.threads} threads, {args.calls} calls; "
          f"a call takes {profile['call_ms']:.2f} ms (median), {profile['profiled_call_ms']:.2f} ms with the profiler on, "
          f"whose kernel times below sum to {profile['total_ms_per_call']:.2f} ms per call\n")
    print("| operator | ms per call | share | nodes per call |\n|---|---|---|---|")
    for op, row in profile["operators"].items():
        print(f"| {op} | {row['ms_per_call']:.3f} | {100 * row['share']:.1f}% | {row['nodes_per_call']:g} |")
    print(f"\nCommand: `.venv/bin/python {shlex.join(sys.argv)}`")


if __name__ == "__main__":
    main()
