"""What each fixed shape costs an OpenVINO model run padded to fixed shapes: the seconds to compile it
and the memory its compilation holds (each packs its own copy of the weights), beside the IR's size.

    .venv/bin/python bench/openvino_shapes_cost.py OPENVINO_FOLDER --lengths 32 64 96 128 --threads 2

The shapes are compiled one after another as compress compiles them (`OpenVinoModel.compiled`, batch 1),
and all kept, as a padded predictor keeps them; memory is this process's resident set after each.
"""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path

import psutil
from compress.exporters.openvino_convert import IR_FILE

from compress.models.artifacts import OpenVinoModel
from compress.timing.latency import describe_environment, timing_environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder compress's OpenVINO modes wrote")
    parser.add_argument("--lengths", type=int, nargs="+", default=[32, 64, 96, 128])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    if not (args.folder / IR_FILE).is_file() or not (args.folder / "config.json").is_file():
        parser.exit(2, f"error: no {IR_FILE} and config.json in {args.folder} (a folder compress's OpenVINO modes wrote)\n")

    process = psutil.Process()
    model = OpenVinoModel(args.folder)
    ir_mb = (args.folder / IR_FILE).with_suffix(".bin").stat().st_size / 1e6
    rows, last = [], process.memory_info().rss / 1e6
    kept = []  # every compilation stays alive, as a padded predictor keeps them
    for length in args.lengths:
        start = time.perf_counter()
        kept.append(model.compiled(args.threads, (1, length)))
        seconds = time.perf_counter() - start
        now = process.memory_info().rss / 1e6
        rows.append(f"| [1, {length}] | {seconds:.2f} | {now - last:.0f} | {(now - last) / ir_mb:.1f}x |")
        last = now

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"Command: `{command}`\n\nHost: {describe_environment(timing_environment('cpu'))}; {args.threads} threads; "
          f"IR weights {ir_mb:.0f} MB (the first shape also reads the IR).\n")
    print("| shape | compile s | resident MB added | of the IR's size |")
    print("|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
