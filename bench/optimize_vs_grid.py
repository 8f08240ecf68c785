"""The goal search against the exhaustive grid, on a committed sweep: which model each picks and how many
trainings each needs, with the same space and budget.

The search (compress/search/optimize.py, its own `Search` class) is replayed on the sweep's measured
records: each trial it asks for is looked up instead of trained, and a combination the sweep did not
measure counts as failed. The grid's answer is the fastest record within the budget; its cost is every
model the sweep trained. Scores are the sweep's dev scores (the sweeps held nothing out), the same for both.

    .venv/bin/python bench/optimize_vs_grid.py bench/results/mpnet_sst2 --max-score-drop 1 2
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rich.console import Console

from compress.benchmarking.records import BenchRecord, merge_records, read_records
from compress.benchmarking.rows import Combination
from compress.search.goal import PAPER_STRATEGIES, Goal, Objective
from compress.search.optimize import Search, Trial


class Replay(Search):
    """The search, asking a committed sweep's records instead of training."""

    def __init__(self, goal: Goal, records: list[BenchRecord]):
        self.goal, self.console = goal, Console(quiet=True)
        self.records = {r.key: r for r in records}
        self.trials: dict[str, Trial] = {}
        self.trained: set[str] = set()
        self.asked: list[str] = []
        self.rounds_asked = 0

    def ask(self, combinations: list[Combination]) -> None:
        new = [c for c in dict.fromkeys(combinations) if c.key in self.records and c.key not in self.trials]
        self.rounds_asked += bool(new)
        for c in new:
            record = self.records[c.key]
            self.asked.append(c.label)
            self.trained.add(record.trained_in)
            self.trials[c.key] = Trial(c, record)

    def arm_ks(self, strategy, training):
        return sorted({r.k for r in self.records.values() if r.strategy == strategy and r.training == training and r.k})


def compare(folder: Path, max_score_drop: float, batch_size: int, length: str) -> dict:
    records = [r for r in merge_records(read_records(folder)) if r.status == "ok"]
    first = records[0]
    strategies = [s for s in PAPER_STRATEGIES if any(r.strategy == s for r in records)]
    trainings = [t for t in ("distill", "finetune") if any(r.training == t and r.k for r in records)]
    precisions = list(dict.fromkeys(r.precision for r in records))
    goal = Goal(model=first.model, task=first.task, max_score_drop=max_score_drop,
                objective=Objective(batch_size=batch_size, sequence_length=length if length == "task" else int(length)),
                search={"strategies": strategies, "training": trainings, "precisions": precisions})
    replay = Replay(goal, records)
    chosen = replay.run()
    grid = Replay(goal, records)
    grid.ask([Combination(r.model, r.task, r.strategy, r.k, r.training, r.precision) for r in records])
    best = grid.choose()
    return {
        "folder": str(folder), "max_score_drop": max_score_drop, "timing": f"batch {batch_size}, length {length}",
        "search": chosen.combination.label, "search_points": chosen.points, "search_ms": replay.cost(chosen),
        "grid": best.combination.label, "grid_points": best.points, "grid_ms": grid.cost(best),
        "search_trainings": len(replay.trained), "grid_trainings": len({r.trained_in for r in records}),
        "reference_points": replay.reference.points, "asked": replay.asked, "rounds": replay.rounds_asked,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", nargs="+", type=Path)
    parser.add_argument("--max-score-drop", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--batch-size", type=int, default=1)
    parser.add_argument("--length", default="task", help="'task' or the fixed timing length the sweep used (e.g. 128)")
    args = parser.parse_args()
    print("| sweep | budget | search picks | grid picks | same, or as fast within budget | trainings: search / grid | search rounds |")
    print("|---|---|---|---|---|---|---|")
    for folder in args.folders:
        for drop in args.max_score_drop:
            row = compare(folder, drop, args.batch_size, args.length)
            same = row["search"] == row["grid"] or (row["search_ms"] <= row["grid_ms"]
                                                     and row["search_points"] >= row["reference_points"] - drop)
            print(f"| {folder.name} | {drop:g} | {row['search']} ({row['search_points']:.2f}, {row['search_ms']:.2f} ms) | "
                  f"{row['grid']} ({row['grid_points']:.2f}, {row['grid_ms']:.2f} ms) | {'yes' if same else 'no'} | "
                  f"{row['search_trainings']} / {row['grid_trainings']} ({100 * row['search_trainings'] / row['grid_trainings']:.0f} %) | "
                  f"{row['rounds']} |")


if __name__ == "__main__":
    main()
