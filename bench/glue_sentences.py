"""Texts to distil embedders on: the distinct training texts of GLUE tasks (both sides of a pair), seeded shuffled
and capped, one per line, into a file outside the repository's tracked files (the GLUE data is never copied into it).

    .venv/bin/python bench/glue_sentences.py --glue ../shared/glue --tasks STS-B CoLA RTE SST-2 --max 40000 \\
        --out bench/runs/glue_sentences.txt
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from compress.data.loading import DataSettings, load_task_data

TASKS = {"STS-B": "stsb", "CoLA": "cola", "RTE": "rte", "SST-2": "sst2", "MRPC": "mrpc", "QNLI": "qnli", "MNLI": "mnli", "QQP": "qqp"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--glue", type=Path, default=Path("../shared/glue"))
    parser.add_argument("--tasks", nargs="+", default=["STS-B", "CoLA", "RTE", "SST-2"], choices=list(TASKS))
    parser.add_argument("--max", type=int, default=40000, help="texts kept (seeded), the tasks listed first first")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    texts: dict[str, None] = {}
    for folder in args.tasks:
        train = load_task_data(TASKS[folder], DataSettings(source="glue-dir", path=args.glue)).train
        found = [t for column in ("text_a", "text_b") if column in train.column_names for t in train[column] if t.strip()]
        random.Random(args.seed).shuffle(found)
        texts.update(dict.fromkeys(" ".join(t.split()) for t in found))  # one line each: no newline inside a text
    kept = list(texts)[: args.max]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("".join(t + "\n" for t in kept))
    print(f"{len(kept):,} distinct texts of {', '.join(args.tasks)} -> {args.out}")


if __name__ == "__main__":
    main()
