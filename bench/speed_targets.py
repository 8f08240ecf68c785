"""Check a sweep's results against the speed targets of the benchmark issue, and the harness's overhead.

    .venv/bin/python bench/speed_targets.py bench/results/mpnet_sst2

Reads <folder>/results.jsonl (written by `compress bench`), prints the figures and writes them to
<folder>/speed_targets.md. Latency is the p50 at batch 1, sequence length 128, as measured in the
sweep (every row of one sweep on the same machine, with the same thread count).
"""

from __future__ import annotations

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from compress.report import HEADLINE_LATENCY, latency_of, merge_records, read_records
from compress.sweep import FULL


@dataclass(frozen=True)
class Target:
    k: int
    reference_precision: str
    min_speedup: float
    max_points_lost: float

    @property
    def text(self) -> str:
        return (f"top-{self.k} distilled + dynamic int8 ONNX: >= {self.min_speedup:g}x faster than the full model in "
                f"{self.reference_precision}, at most {self.max_points_lost:g} points below the full fine-tuned model in {self.reference_precision}")


TARGETS = (
    Target(k=6, reference_precision="torch-fp32", min_speedup=12.0, max_points_lost=2.0),
    Target(k=4, reference_precision="onnx-int8-dynamic", min_speedup=1.4, max_points_lost=1.0),
)
INT8 = "onnx-int8-dynamic"
TRAINING_STAGES = ("finetune", "distill")


def p50(record: dict) -> float:
    return latency_of(record, *HEADLINE_LATENCY)["p50_ms"]


def target_lines(rows: dict, model: str, task: str) -> list[str]:
    lines = []
    for target in TARGETS:
        reference = rows.get((model, task, FULL, 0, "finetune", target.reference_precision))
        student = rows.get((model, task, "top", target.k, "distill", INT8))
        if reference is None or student is None:
            lines.append(f"- {target.text}: not measured (missing rows)")
            continue
        speedup = p50(reference) / p50(student)
        points = 100 * (student["score"] - reference["score"])
        met = speedup >= target.min_speedup and points >= -target.max_points_lost
        lines.append(
            f"- {target.text}: {'met' if met else 'NOT met'}: {p50(student):.2f} ms vs {p50(reference):.2f} ms = "
            f"{speedup:.2f}x; score {student['score']:.4f} vs {reference['score']:.4f} ({points:+.2f} points)"
        )
        plain = rows.get((model, task, "top", target.k, "finetune", INT8))
        if plain:
            lines.append(
                f"  - for comparison, top-{target.k} plain fine-tuned + int8: {p50(reference) / p50(plain):.2f}x, "
                f"{100 * (plain['score'] - reference['score']):+.2f} points"
            )
    return lines


def overhead_lines(records: list[dict]) -> list[str]:
    timed = [r for r in records if r["status"] == "ok" and "overhead" in r.get("seconds", {})]
    if not timed:
        return ["- no record carries the time split (records written before it was added)"]
    overhead = [r["seconds"]["overhead"] for r in timed]
    # the stricter reading: everything but training and the timed runs (so exporting, quantizing,
    # dropping and the dev evaluation count as overhead too)
    strict = [
        r["seconds_total"] - sum(r["seconds"]["stages"].get(s, 0.0) for s in TRAINING_STAGES) - r["seconds"]["timing"]
        for r in timed
    ]
    return [
        f"- {len(timed)} combinations; harness bookkeeping (loading models and data, writing records): "
        f"median {statistics.median(overhead):.1f} s, max {max(overhead):.1f} s",
        f"- everything but training and timed runs (adds dropping, export, quantization and the dev evaluation): "
        f"median {statistics.median(strict):.1f} s, max {max(strict):.1f} s",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path, help="a `compress bench` output folder")
    folder = parser.parse_args().folder
    records = merge_records(read_records(folder / "results.jsonl"))
    rows = {(r["model"], r["task"], r["strategy"], r["k"], r["training"], r["precision"]): r for r in records if r["status"] == "ok"}
    pairs = sorted({(r["model"], r["task"]) for r in records})
    batch, length = HEADLINE_LATENCY
    lines = [f"# Speed targets: {folder}", "", f"Latency: p50 at batch {batch}, sequence length {length}.", ""]
    for model, task in pairs:
        lines += [f"## {model} on {task}", "", *target_lines(rows, model, task), ""]
    lines += ["## Harness overhead per combination", "", *overhead_lines(records), ""]
    lines += ["Command: `.venv/bin/python bench/speed_targets.py " + str(folder) + "`", ""]
    text = "\n".join(lines)
    print(text)
    (folder / "speed_targets.md").write_text(text)


if __name__ == "__main__":
    main()
