"""Time, in turns on this host, the paper12 rows that answer the open question for one task (issue #38): the
full MPNet-12 in PyTorch fp32 (the reference), the full model in int8, and every finished row of the task's
sweep that scores within 2 points of the full model, whatever its strategy, training or precision.

    .venv/bin/python bench/paper12_in_turns.py cola

Runs bench/time_in_turns.py on those rows' folders in the sweep's work/ (batch 1, at the sweep's max_length
and at dev examples' own lengths; 15 rounds of 20 calls) and writes its table to
bench/results/paper12_<task>/in_turns.md, headed by which row each folder is, and its figures to
in_turns.json (each model with its row's folder and score), which bench/paper12_report.py quotes as the fastest
row within 1 and 2 points. A row whose model is not in work/ (built on another machine) is named and left out.
Pause other work while it runs.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

from paper12_report import BUDGETS, INT8, TASKS, find_row, is_within, points, row_name, standard_error

from compress.benchmarking.bench import WORK
from compress.benchmarking.records import merge_records, read_records

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("task", choices=list(TASKS))
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=20)
    args = parser.parse_args()
    folder = args.results / f"paper12_{args.task}"
    records = [r for r in merge_records(read_records(folder)) if r.status == "ok"]
    full = find_row(records, "full", 0)
    if full is None:
        parser.exit(2, f"error: {folder}: the full model has not finished; nothing to time against\n")
    within = sorted((r for r in records if r is not full and is_within(r, full, max(BUDGETS))),
                    key=lambda r: -points(r))
    full_int8 = find_row(records, "full", 0, precision=INT8)
    chosen = [full] + ([full_int8] if full_int8 and full_int8 not in within else []) + within
    here = [r for r in chosen if r.measured_in and (folder / WORK / r.measured_in).is_dir()]
    missing = [r for r in chosen if r not in here]
    if full not in here:
        parser.exit(2, f"error: {folder / WORK / str(full.measured_in)}: the full model's folder is not here; "
                       f"run the sweep (its command heads bench/sweeps/paper12_{args.task}.yaml) to build it\n")
    settings = json.loads((folder / "sweep-settings.json").read_text())
    command = [sys.executable, "bench/time_in_turns.py", *(str(folder / WORK / r.measured_in) for r in here),
               "--task", args.task, "--length", str(settings["max_length"]), "--threads", str(full.threads or 2),
               "--rounds", str(args.rounds), "--calls", str(args.calls), "--json", str(folder / "in_turns.json")]
    print("$ " + " ".join(shlex.quote(part) for part in command), flush=True)
    table = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    figures = json.loads((folder / "in_turns.json").read_text())
    for figure, record in zip(figures["models"], here, strict=True):  # which row each time is, and of which model
        figure |= {"measured_in": record.measured_in, "score": record.score}
    (folder / "in_turns.json").write_text(json.dumps(figures, indent=2) + "\n")
    rows = [f"{n}. {row_name(r)}: `{r.measured_in}`, {points(r):.1f} ± {standard_error(r):.1f} "
            f"({points(r) - points(full):+.1f})" for n, r in enumerate(here, 1)]
    lines = [f"# {TASKS[args.task]}: the rows within {max(BUDGETS):g} points of the full MPNet-12, timed in turns", "",
             "Written by `.venv/bin/python bench/paper12_in_turns.py " + args.task + "`; each round runs every model on the same "
             "batches, one after another, and a speed-up is taken round by round (bench/time_in_turns.py). The models, in "
             "the table's order (folders under work/; dev score ± SE, change against the full model):", "", *rows, ""]
    if missing:
        lines += ["Not timed (its model is not in work/: built on another machine): "
                  + "; ".join(f"{row_name(r)} ({points(r):.1f})" for r in missing), ""]
    (folder / "in_turns.md").write_text("\n".join(lines) + "\n" + table)
    print("\n".join(lines) + "\n" + table)


if __name__ == "__main__":
    main()
