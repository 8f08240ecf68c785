"""Where an OpenVINO model spends its time, by operation type and kernel (OpenVINO's own per-node counters),
beside the time per call: what the kernels leave is the plugin's own work between them.

    .venv/bin/python bench/openvino_profile.py OPENVINO_FOLDER --threads 2 --length 128

The folder is one compress's OpenVINO modes wrote (`openvino_model.xml`); compiled as compress compiles
it (latency hint, `--threads`, its method's precision; for the one shape [1, `--length`] where the folder
is run padded to fixed shapes, `pad_to_multiple_of`), run at batch 1 on `--length` tokens of ones (the work of a MatMul does not
depend on the token ids), `--calls` times after 30 untimed calls.
"""

from __future__ import annotations

import argparse
import collections
import shlex
import sys
import time
from pathlib import Path

import numpy as np
from compress.exporters.openvino_convert import IR_FILE, compile_ir, with_input_shape

from compress.models.artifacts import PADDING_SETTING, OpenVinoModel
from compress.timing.latency import describe_environment, timing_environment


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a folder with openvino_model.xml")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--calls", type=int, default=300)
    args = parser.parse_args()
    if not (args.folder / IR_FILE).is_file():
        parser.exit(2, f"error: no {IR_FILE} in {args.folder}\n")

    if not (args.folder / "config.json").is_file():
        parser.exit(2, f"error: no config.json in {args.folder} (a folder compress's OpenVINO modes wrote)\n")
    model = OpenVinoModel(args.folder)
    multiple = model.quantization.get(PADDING_SETTING)
    if multiple and args.length % multiple:
        parser.exit(2, f"error: --length: compress runs this folder padded to multiples of {multiple} tokens; got {args.length}\n")
    fixed = bool(multiple)
    ir = with_input_shape(model.ir, 1, args.length) if fixed else model.path
    compiled = compile_ir(ir, args.threads, model.quantization.get("compute_precision"), PERF_COUNT=True)
    request = compiled.create_infer_request()
    feed = {i.get_any_name(): np.ones((1, args.length), np.int64) for i in compiled.inputs}
    for _ in range(30):
        request.infer(feed)
    seconds = []
    for _ in range(args.calls):
        start = time.perf_counter()
        request.infer(feed)
        seconds.append(time.perf_counter() - start)
    by_kernel, count = collections.Counter(), collections.Counter()
    for node in request.profiling_info:  # the last call's counters
        if node.status == node.Status.EXECUTED:
            by_kernel[node.node_type, node.exec_type] += node.real_time.total_seconds() * 1e6
            count[node.node_type, node.exec_type] += 1
    kernels = sum(by_kernel.values())
    p50_us = 1e6 * float(np.median(seconds))

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"Command: `{command}`\n\nHost: {describe_environment(timing_environment('cpu'))}; {args.threads} threads, batch 1 at "
          f"{args.length} tokens, compiled for {'that one shape' if fixed else 'any shape'}; computed in {compiled.get_property('INFERENCE_PRECISION_HINT').get_type_name()} where not int8.\n")
    print(f"p50 per call: {p50_us:.0f} µs; the kernels of the last call: {kernels:.0f} µs; the rest, the plugin's own work: "
          f"{p50_us - kernels:.0f} µs ({(p50_us - kernels) / p50_us:.0%}).\n")
    print("| operation | kernel | nodes | µs | share of kernel time |")
    print("|---|---|---|---|---|")
    for (operation, kernel), micros in by_kernel.most_common():
        if micros >= 0.001 * kernels:
            print(f"| {operation} | {kernel} | {count[operation, kernel]} | {micros:.0f} | {micros / kernels:.1%} |")


if __name__ == "__main__":
    main()
