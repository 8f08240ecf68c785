"""A compress embedder against sentence-transformers' own int8 export of the full model, both run by
sentence-transformers' ONNX backend (so the same code tokenizes, runs and pools both), in the optimum stack's venv
where that backend installs:

    .venv-optimum/bin/python bench/embedders_vs_sentence_transformers.py COMPRESS_FOLDER --model minilm-l6 \\
        --out bench/results/embeddings_minilm_stsb/vs_sentence_transformers.md

The full model is exported by sentence-transformers (`backend="onnx"`) and quantized by its
`export_dynamic_quantized_onnx_model` with the config for this CPU (avx512_vnni, else avx2); COMPRESS_FOLDER is a
compress int8 ONNX embedder folder (onnx/model_quantized.onnx). Both are scored on STS-B dev (Spearman of the cosine
similarity, each pair's two sentences encoded alone) and timed in turns at batch 1 on dev sentences at their own
lengths: each round times one model after the other on the same sentences, and the speed-up is taken round by round.
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model

from compress.data.loading import DataSettings, load_task_data
from compress.models.loading import resolve_model
from compress.timing.latency import describe_environment, timed_in_turns, timing_environment


def spearman(model: SentenceTransformer, first: list[str], second: list[str], scores: np.ndarray) -> float:
    a, b = model.encode(first, batch_size=64), model.encode(second, batch_size=64)
    cosine = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    return float(spearmanr(cosine, scores).statistic)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="a compress int8 ONNX embedder folder")
    parser.add_argument("--model", default="minilm-l6", help="the full model (alias or folder)")
    parser.add_argument("--glue", type=Path, default=Path("../shared/glue"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=50, help="dev sentences per model per round")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    dev = load_task_data("stsb", DataSettings(source="glue-dir", path=args.glue)).dev["validation"]
    first, second, scores = list(dev["text_a"]), list(dev["text_b"]), np.asarray(dev["label"])
    config = "avx512_vnni" if "avx512_vnni" in Path("/proc/cpuinfo").read_text() else "avx2"
    with tempfile.TemporaryDirectory() as scratch:
        full_folder = Path(scratch) / "full"
        shutil.copytree(resolve_model(args.model), full_folder)
        full = SentenceTransformer(str(full_folder), backend="onnx", device="cpu")
        export_dynamic_quantized_onnx_model(full, config, str(full_folder))
        theirs = SentenceTransformer(str(full_folder), backend="onnx", device="cpu",
                                     model_kwargs={"file_name": f"onnx/model_qint8_{config}.onnx"})
        ours = SentenceTransformer(str(args.folder), backend="onnx", device="cpu",
                                   model_kwargs={"file_name": "onnx/model_quantized.onnx"})
        models = {f"sentence-transformers int8 ({config}) of the full model": theirs, f"compress {args.folder.name}": ours}
        quality = {name: spearman(model, first, second, scores) for name, model in models.items()}
        sentences = [{"texts": [text]} for text in first[: args.calls]]
        runners = {name: (lambda model: lambda batch: model.encode(batch["texts"]))(model) for name, model in models.items()}
        rounds = timed_in_turns(runners, {"task": sentences}, args.rounds)
    names = list(models)
    ms = {name: float(np.median(rounds[name]["task"])) for name in names}
    ratio = float(np.median(np.array(rounds[names[0]]["task"]) / np.array(rounds[names[1]]["task"])))
    environment = describe_environment(timing_environment("cpu"))
    lines = [
        "# A compress embedder against sentence-transformers' int8 export of the full model",
        "",
        f"Command: `{' '.join(shlex.quote(part) for part in [os.path.relpath(sys.executable), *sys.argv])}`",
        "",
        f"Host: {environment}; {args.threads} threads.",
        "",
        "Both run by sentence-transformers' ONNX backend (optimum's ORTModelForFeatureExtraction); STS-B dev (1,500 pairs), "
        f"Spearman of cosine similarity; latency: batch 1, the first {args.calls} dev sentences at their own lengths, "
        f"{args.rounds} rounds in turns, median over rounds of each round's median.",
        "",
        "| model | STS-B Spearman | ms per sentence |",
        "|---|---|---|",
        *(f"| {name} | {quality[name]:.4f} | {ms[name]:.2f} |" for name in names),
        "",
        f"Speed-up of compress's over sentence-transformers' own int8 model, round by round (median): **{ratio:.2f}x**, at "
        f"{100 * (quality[names[1]] - quality[names[0]]):+.2f} Spearman points.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
