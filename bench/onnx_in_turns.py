"""Time several ONNX model folders (or .onnx files) side by side, in turns, on one host: the figure to
compare two exporters, optimizer levels or quantizations of the same model by.

    .venv/bin/python bench/onnx_in_turns.py A_FOLDER B_FOLDER ... --threads 2 --rounds 15 --calls 20

A model given as `FOLDER::key=value,key=value` is timed with those onnxruntime session configuration
entries (e.g. `FOLDER::session.intra_op.allow_spinning=0`), so one graph can be compared with itself
under other session settings.

Each round times every model on the same batches (batch 1 at `--length` tokens, and real dev
sentences at their own lengths), one model after another, with a pause and two untimed calls between
models (onnxruntime's spinning threads slow whatever runs right after them); the figure per model is
the median over rounds of each round's median, and the ratio to the first model is taken round by
round, so a slow spell of the host moves every model alike.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

import numpy as np
from compress.exporters import onnx_file
from compress.exporters.onnx_runtime import ort_session

from compress.benchmarking.latency import describe_environment, fixed_length_batch, timed_in_turns, timing_environment
from compress.data.loading import DataSettings, load_task_data
from compress.pipeline.models import load_tokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", help="model folders (onnx/*.onnx or model.onnx) or .onnx files, each optionally with "
                        "::key=value,... session entries; the first is the reference")
    parser.add_argument("--tokenizer", default=None, help="folder or alias of the tokenizer (default: the first model folder)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--length", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()

    configs = [dict(entry.split("=", 1) for entry in str(m).partition("::")[2].split(",") if entry) for m in args.models]
    folders = [Path(str(m).partition("::")[0]) for m in args.models]
    graphs = [onnx_file(m) if m.is_dir() else m for m in folders]
    missing = [str(m) for m, g in zip(folders, graphs) if g is None or not g.is_file()]
    if missing:
        parser.exit(2, f"error: no ONNX model in {', '.join(missing)}\n")
    tokenizer = load_tokenizer(args.tokenizer or str(folders[0]))
    dev = load_task_data("rotten-tomatoes", DataSettings(source="embedded")).dev["validation"]
    texts = list(dev["text_a"])
    fixed = {k: v.numpy().astype(np.int64) for k, v in fixed_length_batch(texts, tokenizer, 1, args.length).items()}
    rng = np.random.default_rng(0)
    real = [{k: np.asarray(v, dtype=np.int64)[None] for k, v in tokenizer(texts[i], truncation=True, max_length=args.length).items()}
            for i in rng.choice(len(texts), size=args.calls, replace=False)]
    sessions = [ort_session(g, args.threads, config=c) for g, c in zip(graphs, configs)]
    inputs = [{i.name for i in s.get_inputs()} for s in sessions]

    def feed(index: int, batch: dict) -> dict:
        return {k: v for k, v in batch.items() if k in inputs[index]}

    runners = {str(index): (lambda batch, index=index, session=session: session.run(["logits"], feed(index, batch)))
               for index, session in enumerate(sessions)}
    per_round = timed_in_turns(runners, {"fixed": [fixed] * args.calls, "real": real}, args.rounds)

    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    print(f"Command: `{command}`\n\nHost: {describe_environment(timing_environment('cpu'))}; {args.threads} threads, "
          f"{args.rounds} rounds of {args.calls} calls per model.\n")
    print(f"| model | batch 1, {args.length} tokens: p50 ms | speed-up over the first | real dev sentences: p50 ms | speed-up over the first |")
    print("|---|---|---|---|---|")
    for index, model in enumerate(args.models):
        cells = []
        for shape in ("fixed", "real"):
            times = np.array(per_round[str(index)][shape])
            ratio = np.median(np.array(per_round["0"][shape]) / times)
            cells += [f"{np.median(times):.2f}", f"{ratio:.2f}x"]
        print(f"| {model} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
