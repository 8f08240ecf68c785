"""How fast this machine multiplies matrices in int8 and in fp32 with onnxruntime, on a fixed thread count.

    .venv/bin/python bench/gemm_throughput.py --threads 2

A speed-up of an int8 model over a PyTorch fp32 one is bounded by the processor's int8 to fp32
throughput, which differs between processors of one family name (a virtual machine may say only
"AMD EPYC"): a transformer's feed-forward MatMul (128 x 768 by 768 x 3072, one sequence of 128
tokens through BERT-base) timed both ways says which kind of host a set of timings came from.
`bench/speed_targets.py` prints these figures beside its own.
"""

from __future__ import annotations

import argparse

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

from compress.benchmarking.latency import timed_calls

ROWS, DEPTH, COLUMNS = 128, 768, 3072
WEIGHT_SCALE = 0.01


def gemm_models() -> dict[str, onnx.ModelProto]:
    """One-node graphs: dynamic int8 (what `quantize_dynamic` leaves after onnxruntime's fusion) and fp32."""
    rng = np.random.default_rng(0)
    int8_weights = numpy_helper.from_array(rng.integers(-127, 128, (DEPTH, COLUMNS)).astype(np.int8), "W")
    scales = numpy_helper.from_array(np.full((COLUMNS,), WEIGHT_SCALE, np.float32), "scale")
    fp32_weights = numpy_helper.from_array(rng.standard_normal((DEPTH, COLUMNS)).astype(np.float32), "W")
    nodes = {
        "int8": (helper.make_node("DynamicQuantizeMatMul", ["X", "W", "scale"], ["Y"], domain="com.microsoft"),
                 [int8_weights, scales]),
        "fp32": (helper.make_node("MatMul", ["X", "W"], ["Y"]), [fp32_weights]),
    }
    models = {}
    for name, (node, weights) in nodes.items():
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [ROWS, DEPTH])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [ROWS, COLUMNS])], weights)
        models[name] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return models


def gemm_session(model: onnx.ModelProto, threads: int) -> ort.InferenceSession:
    """On the CPU always (not `ort_session`, which takes CUDA first): the figures describe the CPU."""
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def gemm_throughput(threads: int, calls: int = 200, warmup: int = 20) -> dict[str, float]:
    """Billions of multiply-adds x 2 per second (GOPS) at the median call, for `int8` and `fp32`."""
    x = np.random.default_rng(1).standard_normal((ROWS, DEPTH)).astype(np.float32)
    figures = {}
    for name, model in gemm_models().items():
        session = gemm_session(model, threads)
        seconds = timed_calls(lambda: session.run(None, {"X": x}), warmup, calls)
        figures[name] = round(2 * ROWS * DEPTH * COLUMNS / float(np.median(seconds)) / 1e9, 1)
    return figures


def describe_throughput(figures: dict[str, float], threads: int) -> str:
    return (f"onnxruntime {ROWS}x{DEPTH} by {DEPTH}x{COLUMNS} MatMul on {threads} thread{'s' if threads != 1 else ''}: int8 {figures['int8']:.0f} GOPS, "
            f"fp32 {figures['fp32']:.0f} GFLOPS (ratio {figures['int8'] / figures['fp32']:.1f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    print(describe_throughput(gemm_throughput(args.threads), args.threads))


if __name__ == "__main__":
    main()
