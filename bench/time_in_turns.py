"""Time several model folders side by side, in turns, on one host: PyTorch, ONNX or OpenVINO, as compress
wrote them (a stage's folder), or bare .onnx files. The figure to compare engines, exporters, optimizer
levels or quantizations of the same model by.

    .venv/bin/python bench/time_in_turns.py A_FOLDER B_FOLDER ... --threads 2 --rounds 15 --calls 20

A model given as `FOLDER::key=value,key=value` (ONNX only) is timed with those onnxruntime session
configuration entries (e.g. `FOLDER::session.intra_op.allow_spinning=0`), so one graph can be compared
with itself under other session settings.

Each round times every model on the same batches (batch 1 at `--length` tokens, and dev examples of
`--task` at their own lengths, as the first model takes them: a sentence embedder each text of a pair alone), one model after another, with a pause and two untimed calls between
models (onnxruntime's spinning threads slow whatever runs right after them); the figure per model is
the median over rounds of each round's median, and the ratio to the first model is taken round by
round, so a slow spell of the host moves every model alike. Each time is also set against this host's
MatMul peak in the model's arithmetic (int8 or fp32, the peak MatMuls timed in the same rounds; none
is measured for bf16): the share of it that the model's MatMul work reaches, round by round
(compress/timing/roofline.py).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path

import numpy as np
from compress.exporters import onnx_file
from compress.exporters.onnx_runtime import ort_session
from transformers import AutoConfig

from compress.data.encoding import model_inputs
from compress.data.loading import DataSettings, load_task_data
from compress.models.artifacts import QUANTIZATION_FIELD, load_artifact, output_name, predictor_for
from compress.models.embedding import embedding_of
from compress.models.loading import load_tokenizer
from compress.stages.quantize import METHODS
from compress.timing.latency import describe_environment, fixed_length_batch, task_length_batches, timed_in_turns, timing_environment
from compress.timing.roofline import describe_peaks, fractions_in_turns, matmul_gop, peak_runners, peaks_of_rounds, take_peaks


def runner(folder: Path, config, entries: dict[str, str], threads: int):
    """Logits (an embedder's sentence vectors) for a batch of torch tensors: the folder's own engine, or an
    onnxruntime session of a bare graph file or one with session entries."""
    if folder.is_dir() and not entries:
        return predictor_for(load_artifact(folder), threads)
    session = ort_session(onnx_file(folder) if folder.is_dir() else folder, threads, config=entries)
    wanted = {i.name for i in session.get_inputs()}
    output = output_name(config) if config else "logits"
    return lambda batch: session.run([output], {k: v.numpy().astype(np.int64) for k, v in batch.items() if k in wanted})


def config_for(path: Path):
    """The model's config: its folder's, or for a bare .onnx file the nearest folder above it holding one
    (None: its MatMul work is not known, and no share of the peak is given)."""
    for folder in ([path] if path.is_dir() else [path.parent, path.parent.parent]):
        if (folder / "config.json").is_file():
            return AutoConfig.from_pretrained(folder)
    return None


def matmul_dtype(config) -> str:
    """What the model's matrix products compute in: its quantization method's, fp32 where it has none."""
    quantization = getattr(config, QUANTIZATION_FIELD, None) if config else None
    return METHODS[quantization["mode"]].matmul_dtype if quantization else "fp32"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders or .onnx files (an ONNX one optionally with ::key=value,... "
                        "session entries); the first is the reference")
    parser.add_argument("--tokenizer", default=None, help="folder or alias of the tokenizer (default: the first model folder)")
    parser.add_argument("--task", default="rotten-tomatoes", help="whose dev examples are timed at their own lengths: "
                        "rotten-tomatoes (embedded) or a GLUE task read from ../shared/glue")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0, help="which dev examples are drawn for the real lengths")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here, for scripts that quote them")
    args = parser.parse_args()

    specs = [str(m).partition("::") for m in args.models]
    folders = [Path(path) for path, _, _ in specs]
    entries = [dict(entry.split("=", 1) for entry in rest.split(",") if entry) for _, _, rest in specs]
    missing = [str(f) for f in folders if not (f.is_file() or (f.is_dir() and (f / "config.json").is_file()))]
    if missing:
        parser.exit(2, f"error: no model folder (with config.json) or .onnx file at {', '.join(missing)}\n")
    configs = [config_for(f) for f in folders]
    tokenizer = load_tokenizer(args.tokenizer or str(folders[0] if folders[0].is_dir() else folders[0].parent))
    data = DataSettings(source="embedded") if args.task == "rotten-tomatoes" else DataSettings(source="glue-dir", path="../shared/glue")
    task_data = load_task_data(args.task, data, embedder=embedding_of(configs[0]) is not None)
    dev = model_inputs(task_data.task, next(iter(task_data.dev.values())))
    batches = {"fixed": [fixed_length_batch(dev["text_a"], tokenizer, 1, args.length)] * args.calls,
               "real": task_length_batches(dev, tokenizer, 1, args.length, count=args.calls, seed=args.seed)}
    runners = {str(index): runner(folder, config, entry, args.threads)
               for index, (folder, config, entry) in enumerate(zip(folders, configs, entries))}
    per_round = timed_in_turns({**runners, **peak_runners(args.threads)}, batches, args.rounds)
    peak_ms = take_peaks(per_round)
    peaks = peaks_of_rounds(peak_ms)

    lengths = [b["input_ids"].shape[1] for b in batches["real"]]
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"Command: `{command}`\n\nHost: {describe_environment(timing_environment('cpu'))}; {args.threads} threads, "
          f"{args.rounds} rounds of {args.calls} calls per model; {describe_peaks(peaks, args.threads)}. "
          f"Real lengths: {args.task} dev {'texts' if task_data.task.embedding else 'examples'}, one per call, {min(lengths)} to {max(lengths)} tokens (median {int(np.median(lengths))}).\n")
    print(f"| model | batch 1, {args.length} tokens: p50 ms | speed-up over the first | of MatMul peak | "
          "real lengths: p50 ms | speed-up over the first | of MatMul peak |")
    print("|---|---|---|---|---|---|---|")
    figures = []
    for index, (model, config) in enumerate(zip(args.models, configs)):
        dtype, cells, figure = matmul_dtype(config), [], {"model": model}
        for shape, calls in batches.items():
            times = np.array(per_round[str(index)][shape])
            ratio = np.median(np.array(per_round["0"][shape]) / times)
            gop = config and matmul_gop(config, [tuple(b["input_ids"].shape) for b in calls])
            share = f"{fractions_in_turns(gop, list(times), {dtype: peak_ms[dtype][shape]})[dtype]:.0%} {dtype}" if gop and dtype in peak_ms else "–"
            cells += [f"{np.median(times):.2f}", f"{ratio:.2f}x", share]
            figure |= {f"{shape}_p50_ms": round(float(np.median(times)), 3), f"{shape}_speedup": round(float(ratio), 3)}
        print(f"| {model} | " + " | ".join(cells) + " |")
        figures.append(figure)
    if args.json:
        args.json.write_text(json.dumps({"command": command, "host": describe_environment(timing_environment("cpu")),
                                         "fixed_length": args.length, "models": figures}, indent=2) + "\n")


if __name__ == "__main__":
    main()
