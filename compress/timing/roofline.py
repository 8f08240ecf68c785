"""How far a timing is from what the processor can do: the model's MatMul work per call, and this host's
int8 and fp32 MatMul peaks measured with onnxruntime on the same thread count.

The work counts every matrix product of the Transformer layers on the padded batch: the four attention
projections and the feed-forward matrices per token, and the two attention products (scores and
context) per pair of tokens, as 2 operations per multiply-add. Embeddings, softmax, normalisation and the
classification head are left out (they are small beside these). Grouped-query attention is counted as
full attention.

The peak is one large MatMul (a BERT-base feed-forward product: 128 x 768 by 768 x 3072) timed in int8
(`DynamicQuantizeMatMul`, what dynamic int8 leaves) and fp32. A processor's int8 to fp32 ratio differs
between processors of one family name, so a fraction of the measured peak travels between hosts where
a latency does not. Where models are timed in turns, the peak MatMuls are timed in the same rounds
(`peak_runners`, `fractions_in_turns`): a slow spell of the host then moves the model and its peak alike.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from transformers import PretrainedConfig

from compress.surgery.architectures import ARCHITECTURES, layout_for, num_layers
from compress.timing.latency import timed_calls

PEAK_ROWS, PEAK_DEPTH, PEAK_COLUMNS = 128, 768, 3072
PEAK_WEIGHT_SCALE = 0.01
PEAK_GOP = 2 * PEAK_ROWS * PEAK_DEPTH * PEAK_COLUMNS / 1e9
PEAK_RUNNER = "MatMul peak "
"""The name of a peak MatMul among the runners timed in turns, before its type (int8, fp32)."""
PEAK_CALLS_PER_RUN = 8
"""Peak MatMuls per timed call of a peak runner: one takes a third of a millisecond in int8 on a fast
host, and timed so briefly after a turn's pause it reads slower than it runs among the model's own."""


def matmul_gop(config: PretrainedConfig, batch_shapes: list[tuple[int, int]]) -> float | None:
    """Billions of operations (2 per multiply-add) in the layers' matrix products per call, averaged over
    calls on padded batches of the given (batch size, length) shapes; None for an architecture the
    table does not know (its timing is still taken)."""
    if config.model_type not in ARCHITECTURES:
        return None
    layout = layout_for(config)
    hidden = config.hidden_size
    feed_forward = getattr(config, layout.ffn_size_field, None) or 4 * hidden
    per_token = 4 * hidden * hidden + layout.ffn_matrices * hidden * feed_forward
    macs = [size * (length * per_token + 2 * length * length * hidden) for size, length in batch_shapes]
    return 2 * num_layers(config) * float(np.mean(macs)) / 1e9


def peak_models() -> dict:
    """One-node graphs: dynamic int8 (what `quantize_dynamic` leaves after onnxruntime's fusion) and fp32."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    int8_weights = numpy_helper.from_array(rng.integers(-127, 128, (PEAK_DEPTH, PEAK_COLUMNS)).astype(np.int8), "W")
    scales = numpy_helper.from_array(np.full((PEAK_COLUMNS,), PEAK_WEIGHT_SCALE, np.float32), "scale")
    fp32_weights = numpy_helper.from_array(rng.standard_normal((PEAK_DEPTH, PEAK_COLUMNS)).astype(np.float32), "W")
    nodes = {
        "int8": (helper.make_node("DynamicQuantizeMatMul", ["X", "W", "scale"], ["Y"], domain="com.microsoft"), [int8_weights, scales]),
        "fp32": (helper.make_node("MatMul", ["X", "W"], ["Y"]), [fp32_weights]),
    }
    models = {}
    for name, (node, weights) in nodes.items():
        graph = helper.make_graph([node], name, [helper.make_tensor_value_info("X", TensorProto.FLOAT, [PEAK_ROWS, PEAK_DEPTH])],
                                  [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [PEAK_ROWS, PEAK_COLUMNS])], weights)
        models[name] = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    return models


def peak_session(model, threads: int):
    """On the CPU always (not `ort_session`, which takes CUDA first): the figures describe the CPU."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def peak_calls(threads: int) -> dict[str, Callable[[], object]]:
    """One call of each peak MatMul, `int8` and `fp32`, with onnxruntime on `threads` threads."""
    x = np.random.default_rng(1).standard_normal((PEAK_ROWS, PEAK_DEPTH)).astype(np.float32)
    return {name: (lambda session=peak_session(model, threads): session.run(None, {"X": x})) for name, model in peak_models().items()}


def gops_at(milliseconds: float) -> float:
    """The peak MatMul's throughput in GOPS (billions of operations per second) at that time per call."""
    return round(PEAK_GOP / (milliseconds / 1000), 1)


@functools.cache  # measured once per run and thread count: every row of a sweep is set against the same peaks
def matmul_peaks(threads: int, calls: int = 200, warmup: int = 20) -> dict[str, float]:
    """This CPU's MatMul throughput in GOPS (at the median call) for `int8` and `fp32`, with onnxruntime
    on `threads` threads."""
    return {name: gops_at(1000 * float(np.median(timed_calls(call, warmup, calls)))) for name, call in peak_calls(threads).items()}


def peak_runners(threads: int) -> dict[str, Callable[[dict], object]]:
    """The peak MatMuls as runners to time in turns beside models (they take a batch and leave it), each
    call `PEAK_CALLS_PER_RUN` MatMuls; `take_peaks` gives their times per MatMul."""
    return {PEAK_RUNNER + name: (lambda batch, call=call: [call() for _ in range(PEAK_CALLS_PER_RUN)])
            for name, call in peak_calls(threads).items()}


def take_peaks(per_round: dict[str, dict[str, list[float]]]) -> dict[str, dict[str, list[float]]]:
    """The peak runners' milliseconds per MatMul (by type: int8, fp32; then by batch set, one per round),
    removed from the times of everything `timed_in_turns` timed."""
    return {name.removeprefix(PEAK_RUNNER): {label: [ms / PEAK_CALLS_PER_RUN for ms in rounds] for label, rounds in per_round.pop(name).items()}
            for name in [n for n in per_round if n.startswith(PEAK_RUNNER)]}


def peaks_of_rounds(peak_ms: dict[str, dict[str, list[float]]]) -> dict[str, float]:
    """Each peak in GOPS at its median call over every round and batch set."""
    return {name: gops_at(float(np.median([ms for rounds in by_set.values() for ms in rounds]))) for name, by_set in peak_ms.items()}


def fractions_in_turns(gop: float, model_ms: list[float], peak_ms: dict[str, list[float]]) -> dict[str, float]:
    """The share of each peak that `gop` operations reach, round by round against the peak MatMul timed in
    the same round (`model_ms` and each of `peak_ms` hold one time per round): the median over rounds."""
    return {name: round(float(np.median([gop / PEAK_GOP * peak / model for model, peak in zip(model_ms, times)])), 3)
            for name, times in peak_ms.items()}


def describe_peaks(peaks: dict[str, float], threads: int) -> str:
    return (f"onnxruntime {PEAK_ROWS}x{PEAK_DEPTH} by {PEAK_DEPTH}x{PEAK_COLUMNS} MatMul on {threads} thread{'s' if threads != 1 else ''}: "
            f"int8 {peaks['int8']:.0f} GOPS, fp32 {peaks['fp32']:.0f} GFLOPS (ratio {peaks['int8'] / peaks['fp32']:.1f})")


def peak_fractions(gop: float, p50_ms: float, peaks: dict[str, float]) -> dict[str, float]:
    """The share of each peak that `gop` operations in `p50_ms` milliseconds reach."""
    achieved = gop / (p50_ms / 1000)
    return {name: round(achieved / peak, 3) for name, peak in peaks.items()}
