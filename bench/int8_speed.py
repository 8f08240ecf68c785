"""Speed, size and accuracy of int8 exports of the embedded 6-layer MiniLM, and the export time of a 12-layer model.

    .venv/bin/python bench/int8_speed.py            # about 10 minutes on 2 CPU cores
    .venv/bin/python bench/int8_speed.py --reuse    # time the models of an earlier run again

Runs bench/recipes/minilm_sst2_int8.yaml (fine-tune on SST-2 from ../shared/glue, export,
quantize), then times every artifact at batch 1, sequence length 128, on 2 threads (medians
after warm-up, all in this one run), and writes bench/results/int8_speed.{json,md}.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compress.benchmarking.latency import fixed_length_batch, measure
from compress.data.loading import load_task_data
from compress.data.tasks import get_task
from compress.errors import CompressError
from compress.pipeline.artifacts import load_artifact
from compress.pipeline.models import load_for_task, load_tokenizer
from compress.pipeline.recipe import load_recipe, parse_recipe
from compress.pipeline.runner import run_recipe

HERE = Path(__file__).parent


def export_time_12_layers(model_ref: str, scratch: Path) -> dict:
    """Seconds to export a 12-layer model to ONNX and quantize it to dynamic int8."""
    from compress.exporters.onnx_export import export_onnx
    from compress.exporters.onnx_quantize import quantize_dynamic_int8

    tokenizer = load_tokenizer(model_ref)
    model = load_for_task(model_ref, get_task("sst2"), tokenizer)
    start = time.perf_counter()
    path = export_onnx(model, tokenizer, scratch / "onnx")
    exported = time.perf_counter() - start
    quantize_dynamic_int8(path, scratch / "int8.onnx")
    return {"model": model_ref, "export_s": round(exported, 1), "export_and_quantize_s": round(time.perf_counter() - start, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--recipe", type=Path, default=HERE / "recipes" / "minilm_sst2_int8.yaml")
    parser.add_argument("--run", type=Path, default=HERE / "runs" / "minilm_sst2_int8")
    parser.add_argument("--reuse", action="store_true", help="time an existing run folder instead of running the recipe")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "int8_speed")
    args = parser.parse_args()
    console = Console(width=160)

    if not args.reuse:
        run_recipe(load_recipe(args.recipe), args.recipe, args.run, overwrite=True, console=console)
    results = json.loads((args.run / "results.json").read_text())
    tokenizer = load_tokenizer(str(args.run / "fp32"))
    recipe = parse_recipe(args.recipe)
    texts = next(iter(load_task_data(recipe.task, recipe.data).dev.values()))["text_a"]
    batch = [fixed_length_batch(texts, tokenizer, batch_size=1, length=128)]

    rows = []
    for stage in results["stages"]:
        latency = measure(load_artifact(args.run / stage["folder"]), batch, args.threads, "128", warmup=10, repeats=args.repeats)
        rows.append({"artifact": stage["name"], "accuracy": stage["metrics"]["accuracy"], "size_mb": stage["size_mb"], **latency.as_dict()})
        console.print(f"{stage['name']}: p50 {latency.p50_ms:.2f} ms")
    reference = rows[0]
    for row in rows:
        row["speedup_vs_torch_fp32"] = round(reference["p50_ms"] / row["p50_ms"], 2)
        row["accuracy_change_points"] = round(100 * (row["accuracy"] - reference["accuracy"]), 2)
        row["size_vs_fp32"] = round(row["size_mb"] / reference["size_mb"], 3)

    try:
        with tempfile.TemporaryDirectory() as scratch:
            twelve = export_time_12_layers("mpnet-12", Path(scratch))
    except CompressError as error:  # the 12-layer model is an optional extra (make mpnet)
        twelve = {"model": "mpnet-12", "skipped": str(error)}

    command = "python " + " ".join(shlex.quote(a) for a in ["bench/int8_speed.py", *sys.argv[1:]])
    table = Table(title=f"MiniLM-L6 on SST-2 dev (872): batch 1, seq 128, {args.threads} threads, median of {args.repeats}")
    for column in ("artifact", "accuracy", "Δ points", "size MB", "size/fp32", "p50 ms", "p95 ms", "speed-up"):
        table.add_column(column, justify="left" if column == "artifact" else "right")
    for r in rows:
        table.add_row(r["artifact"], f"{r['accuracy']:.4f}", f"{r['accuracy_change_points']:+.2f}", f"{r['size_mb']:.1f}",
                      f"{r['size_vs_fp32']:.2f}", f"{r['p50_ms']:.2f}", f"{r['p95_ms']:.2f}", f"{r['speedup_vs_torch_fp32']:.2f}x")
    console.print(table)
    console.print(f"12-layer export: {twelve}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows, "twelve_layer_export": twelve}, indent=2) + "\n")
    lines = [f"Command: `{command}`", "", f"Device: {rows[0]['device']}; threads: {args.threads}; batch 1; sequence length 128; "
             f"median of {args.repeats} after 10 warm-up runs, all in one run.", "",
             "| artifact | SST-2 acc | Δ points | size MB | size/fp32 | p50 ms | p95 ms | speed-up vs PyTorch fp32 |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['artifact']} | {r['accuracy']:.4f} | {r['accuracy_change_points']:+.2f} | {r['size_mb']:.1f} | {r['size_vs_fp32']:.2f} | "
              f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['speedup_vs_torch_fp32']:.2f}x |" for r in rows]
    lines += ["", f"12-layer export + dynamic int8: {twelve}"]
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
