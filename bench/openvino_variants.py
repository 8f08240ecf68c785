"""OpenVINO int8 settings against compress's own, timed in turns on one host: NNCF variants of one fp32
ONNX export, and compile settings of compress's IR. What was tried for the speed issue's roofline gap.

    .venv/bin/python bench/openvino_variants.py EXPORT_FOLDER --task sst2 --out runs/openvino_variants

Each NNCF variant is calibrated as the `openvino-int8` stage calibrates (300 seeded training examples of
`--task`, batch 1) and written to `--out`; an IR already there is reused. Every model is timed at batch 1,
`--length` tokens, in turns (compress/timing/latency.py, `timed_in_turns`): the figure is the median
over rounds, the ratio to compress's settings is taken round by round. The share of this host's int8
MatMul peak is set, round by round, against the peak MatMul timed in the same round.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
import openvino as ov
from compress.exporters import onnx_file
from compress.exporters.openvino_convert import compile_ir, read_ir, with_input_shape
from transformers import AutoConfig

from compress.data.loading import DataSettings, load_task_data
from compress.models.artifacts import compiled_predictor
from compress.models.loading import load_tokenizer
from compress.timing.latency import describe_environment, fixed_length_batch, timed_in_turns, timing_environment
from compress.timing.roofline import describe_peaks, fractions_in_turns, matmul_gop, peak_runners, peaks_of_rounds, take_peaks

COMPRESS = "compress's (NNCF transformer preset, latency hint, any shape)"


def attention_products(model: ov.Model) -> list[str]:
    """The MatMuls of two activations (scores and context), which the transformer preset quantizes too."""
    return [op.get_friendly_name() for op in model.get_ops() if op.get_type_name() == "MatMul"
            and not any(op.input(i).get_source_output().get_node().get_type_name() in ("Constant", "Convert") for i in range(2))]


def nncf_variants() -> dict:
    import nncf

    return {
        COMPRESS: lambda model: {},
        "NNCF: symmetric activations (performance preset)": lambda model: {"preset": nncf.QuantizationPreset.PERFORMANCE},
        "NNCF: attention products left in float": lambda model: {"ignored_scope": nncf.IgnoredScope(names=attention_products(model))},
        "NNCF: no smooth quant": lambda model: {"advanced_parameters": nncf.AdvancedQuantizationParameters(
            smooth_quant_alphas=nncf.AdvancedSmoothQuantParameters(matmul=-1))},
    }


COMPILE_VARIANTS = {
    "compile: one stream, no hint": ({"NUM_STREAMS": 1}, False),
    "compile: CPU pinning": ({"PERFORMANCE_HINT": "LATENCY", "ENABLE_CPU_PINNING": True}, False),
    "compile: what int8 leaves in f32 (not bf16)": ({"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}, False),
    "compile: for the one shape [1, length] (compress pads to such shapes: pad_to_multiple_of)": ({"PERFORMANCE_HINT": "LATENCY"}, True),
}


def calibration(folder: Path, task: str, examples: int, seed: int) -> list[dict[str, np.ndarray]]:
    data = DataSettings(source="embedded") if task == "rotten-tomatoes" else DataSettings(source="glue-dir", path="../shared/glue")
    train = load_task_data(task, data).train.shuffle(seed=seed).select(range(examples))
    tokenizer = load_tokenizer(str(folder))
    pairs = zip(train["text_a"], train["text_b"] if "text_b" in train.column_names else [None] * len(train))
    return [{k: v.astype(np.int64) for k, v in tokenizer(a, b, truncation=True, max_length=128, return_tensors="np").items()}
            for a, b in pairs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("export", type=Path, help="a folder compress's export stage wrote (fp32 ONNX)")
    parser.add_argument("--out", type=Path, required=True, help="where the variants' IRs are written (and reused)")
    parser.add_argument("--task", default="rotten-tomatoes", help="whose training examples calibrate: rotten-tomatoes or a GLUE task")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    graph = onnx_file(args.export) if args.export.is_dir() else None
    if graph is None:
        parser.exit(2, f"error: no ONNX export at {args.export}\n")

    import nncf

    core, args.out = ov.Core(), args.out.resolve()
    args.out.mkdir(parents=True, exist_ok=True)
    feeds = None
    compiled = {}
    for index, (name, options) in enumerate(nncf_variants().items()):
        ir = args.out / f"nncf-{index}.xml"
        if not ir.exists():
            feeds = feeds or calibration(args.export, args.task, 300, 42)
            model = ov.convert_model(str(graph))
            wanted = {i.get_any_name() for i in model.inputs}
            dataset = nncf.Dataset([{k: v for k, v in feed.items() if k in wanted} for feed in feeds])
            quantized = nncf.quantize(model, dataset, model_type=nncf.ModelType.TRANSFORMER, subset_size=len(feeds), **options(model))
            ov.save_model(quantized, str(ir), compress_to_fp16=False)
        compiled[name] = compile_ir(ir, args.threads)
    for name, (config, static) in COMPILE_VARIANTS.items():
        model = read_ir(args.out / "nncf-0.xml")
        compiled[name] = core.compile_model(with_input_shape(model, 1, args.length) if static else model, "CPU",
                                            {**config, "INFERENCE_NUM_THREADS": args.threads})

    tokenizer = load_tokenizer(str(args.export))
    batch = fixed_length_batch(["a review of a film"], tokenizer, 1, args.length)

    runners = {name: compiled_predictor(model) for name, model in compiled.items()} | peak_runners(args.threads)
    per_round = timed_in_turns(runners, {"fixed": [batch] * args.calls}, args.rounds)
    peak_ms = take_peaks(per_round)
    peaks = peaks_of_rounds(peak_ms)
    gop = matmul_gop(AutoConfig.from_pretrained(args.export), [(1, args.length)])
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"Command: `{command}`\n\nHost: {describe_environment(timing_environment('cpu'))}; {args.threads} threads, {args.rounds} "
          f"rounds of {args.calls} calls, batch 1 at {args.length} tokens; {describe_peaks(peaks, args.threads)}.\n")
    print("| OpenVINO int8 | p50 ms | against compress's | of int8 MatMul peak |")
    print("|---|---|---|---|")
    reference = np.array(per_round[COMPRESS]["fixed"])
    for name, rounds in per_round.items():
        times = np.array(rounds["fixed"])
        share = f"{fractions_in_turns(gop, list(times), {'int8': peak_ms['int8']['fixed']})['int8']:.0%}" if gop else "–"
        print(f"| {name} | {np.median(times):.2f} | {np.median(reference / times):.2f}x | {share} |")


if __name__ == "__main__":
    main()
