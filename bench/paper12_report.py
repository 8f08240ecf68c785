"""The paper's 12-layer claims, read from the paper12 sweeps (issue #38): per task, every strategy's drop at
K = 2, 4, 6 against the full MPNet-12, the seeds of the rows that decide the claims, what distillation and
int8 change, a figure in the paper's form (per task, bars by strategy, colour by K) and a verdict per claim.

It reads whatever the sweeps have finished (they resume across sittings) and says what is still missing:

    .venv/bin/python bench/paper12_report.py --out bench/results/paper12

Per task, once its sweep has run: its rows measured again on a quiet machine (`compress bench ... --retime`, which
also keeps the dev predictions of rows measured before the bench kept them), the fastest timed in turns
(bench/paper12_in_turns.py) and `best` run on its students (bench/paper12_best.py).

Scores in points (score x 100); "±" is the dev set's bootstrap standard error of one model, "sd" the spread
over training seeds. A difference between two rows counts only beyond twice its own standard error: paired, over
bootstrap resamples of the dev examples both rows are scored on, where both rows' predictions are in the sweep
folder's dev_predictions.json (compress/benchmarking/predictions.py), else the two rows' own errors added in quadrature
(unpaired: conservative wherever the two rows are right and wrong on the same examples more often than by chance, as
two fine-tunings of one model are; the larger of the two alone is not, for rows that disagree a lot).
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import statistics
from pathlib import Path
from typing import NamedTuple

from compress.benchmarking.predictions import PairedErrors
from compress.benchmarking.records import BenchRecord, merge_records, read_records
from compress.benchmarking.sweep import expand, parse_sweep
from compress.data.tasks import find_task
from compress.stages.fastest import BestSettings
from compress.timing.load import contended

TASKS = {"sst2": "SST-2", "cola": "CoLA", "stsb": "STS-B", "rte": "RTE"}

PAPER_SOURCE = ("arXiv 2004.03844v1 (\"Poor Man's BERT\", 8 Apr 2020), Table 1: \"Task-wise performance for the top-layer "
                "dropping strategy using the official development sets\", and Table 5: \"Task-specific dropping\" (K = 6 only). "
                "v1 publishes per-task scores for top-layer dropping only (the other strategies appear as 7-task averages in its "
                "Figure 2, without printed values), leaves CoLA out (\"large variance and unstable results\") and does not name "
                "each task's metric. The journal version (v3, 2022) could not be read here.")
PAPER = {
    # model -> task -> K -> dev score; "ft6": fine-tuned, top 6 dropped, fine-tuned again (Table 5)
    "BERT-base": {"sst2": {0: 92.43, 2: 92.20, 4: 90.60, 6: 90.25, "ft6": 90.02},
                  "stsb": {0: 88.79, 2: 88.70, 4: 88.64, 6: 88.45, "ft6": 88.16},
                  "rte": {0: 67.87, 2: 62.82, 4: 67.87, 6: 64.98}},
    "XLNet-base": {"sst2": {0: 93.92, 2: 93.35, 4: 92.78, 6: 92.20, "ft6": 92.43},
                   "stsb": {0: 88.01, 2: 87.59, 4: 87.74, 6: 87.45, "ft6": 87.60},
                   "rte": {0: 65.70, 2: 66.06, 4: 67.87, 6: 65.70}},
}
"""The paper's published figures, transcribed (the source above); read beside ours, never used to compute a verdict."""
MODEL_NOTE = ("`mpnet-12` is sentence-transformers' all-mpnet-base-v2, the only 12-layer encoder this machine can load offline: "
              "MPNet-base (Song et al. 2020, arXiv 2004.09297) further trained as a sentence embedder on about a billion sentence "
              "pairs, not the raw pre-trained checkpoint the paper drops layers from. Each task fine-tunes it with a fresh "
              "classification (or regression) head. The bars below are set from BERT-base's published dev scores, as the "
              "paper's claims are about BERT-base and XLNet-base; the MPNet paper reports pre-trained MPNet-base above BERT-base "
              "on GLUE dev on average, so a full model here that only meets its bar may sit below what MPNet-base itself reaches.")
BARS = {"sst2": ("accuracy", 91.0), "cola": ("matthews_correlation", 50.0), "stsb": ("pearson", 86.0), "rte": ("accuracy", 65.0)}
"""The full model's dev score each sweep file set as its bar before running (its header says why), in points."""
STRATEGIES = ["top", "bottom", "alternate-even", "alternate-odd", "symmetric", "contribution"]
KS = [2, 4, 6]
REFINETUNE_KS = [4, 6]
"""The Ks the sweeps fine-tune, drop and fine-tune again at (the issue's)."""
SEEDS = ["", "_seed43", "_seed44"]
SEED_NAMES = ("42", "43", "44")
"""Each sweep folder's training seed (the suffix of SEEDS)."""
UNPAIRED_NOTE = "unpaired: the two rows' own errors added in quadrature"
"""The legend of a difference whose rows' predictions are not both kept (`difference`)."""
INT8 = "onnx-int8-dynamic"
INT8_FINETUNED_KS = [4, 6]
"""The Ks whose fine-tuned (and fine-tuned again) top-K models the sweeps also quantize."""
PER_TASK_BOUNDS = ((4, 2.0),)
"""The paper's per-task bound: dropping the top 4 of 12 layers costs at most about 2 points on every task."""
AVERAGE_BOUNDS = ((4, 2.0), (6, 3.3))
"""Its bounds on the average over tasks: top-4 about 2 points, top-6 1.8 to 3.3."""
SWEEPS = Path(__file__).resolve().parent / "sweeps"
Row = tuple[str, int, str, str]
"""A row as a sweep names it: (strategy, K, training, precision)."""
FULL = ("full", 0, "finetune", "torch-fp32")
BUDGETS = (1.0, 2.0)
"""Points below the full model within which the fastest row is named."""
FAILED_NOTE = "at or below the majority class (regression: a correlation at or below 0), a failed fine-tuning run"
"""The legend of a `failed_run` score's ‡ mark."""
TIED_WITHIN = BestSettings.model_fields["tie_margin"].default
"""Rows whose times in turns lie within this fraction of the fastest's are tied, and the best-scoring of them is named
(the margin `quantize: {mode: best}` ties its candidates by): models of one shape and precision time within about 1%
of each other (RTE's three top-6 int8 rows, bench/results/paper12_rte/in_turns.md), so which of them is fastest is
the timer's noise, not the model's."""


PAIRED = PairedErrors([])
"""Paired standard errors of two rows' difference, from every sweep folder's dev_predictions.json (set by main)."""


def _records(results: Path, task: str) -> list[list[BenchRecord]]:
    """The finished records of each seed's sweep of `task` (an absent sweep gives none)."""
    return [[r for r in merge_records(read_records(folder)) if r.status == "ok"] for folder in _folders(results, task)]


def _folders(results: Path, task: str) -> list[Path]:
    return [results / f"paper12_{task}{seed}" for seed in SEEDS]


def difference(first: BenchRecord, second: BenchRecord) -> tuple[float, float, bool]:
    """Points `first` scores above `second`, that difference's standard error, and whether the error is paired (both
    rows' predictions are kept, on the same examples) or, where not, the rows' own errors added in quadrature."""
    gap = points(first) - points(second)
    error = PAIRED(first, second)
    if error is None or not math.isfinite(error):
        return gap, math.hypot(standard_error(first), standard_error(second)), False
    return gap, 100 * error, True


def row_of(record: BenchRecord) -> Row:
    return record.strategy, record.k, record.training, record.precision


def find_row(records: list[BenchRecord], strategy: str, k: int, training: str = "finetune", precision: str = "torch-fp32") -> BenchRecord | None:
    return next((r for r in records if row_of(r) == (strategy, k, training, precision)), None)


def points(record: BenchRecord | None) -> float | None:
    """A row's score in points; a correlation left undefined by constant predictions counts as 0, as sklearn's Matthews
    correlation counts it (a collapsed regressor's Pearson is NaN)."""
    if record is None:
        return None
    return 100 * record.score if math.isfinite(record.score) else 0.0


def standard_error(record: BenchRecord | None) -> float:
    found = record.score_stderr if record else None
    return 100 * found if found is not None and math.isfinite(found) else 0.0


def failed_run(record: BenchRecord) -> bool:
    """Whether a row scores no better than a constant prediction: the majority class's score, or for regression a
    correlation of 0. A failed fine-tuning run, as Dodge et al. (2020) and Mosbach et al. (2021) count them on GLUE's
    small tasks."""
    task = find_task(record.task)
    floor = 0.0 if record.majority_score is None and task is not None and task.is_regression else record.majority_score
    return floor is not None and points(record) <= 100 * floor


def row_label(row: Row) -> str:
    """A row as the seeds table names it: full, top-4, top-4 distill, top-4 distill onnx-int8-dynamic."""
    strategy, k, training, precision = row
    return (("full" if strategy == FULL[0] else f"{strategy}-{k}") + ("" if training == FULL[2] else f" {training}")
            + ("" if precision == FULL[3] else f" {precision}"))


FAILED_IN_COMPARISON = "a failed run (‡) among the rows compared"


def failed_among(pairs: list[tuple[BenchRecord, BenchRecord]], seeds: tuple[str, ...]) -> str:
    """A verdict's note naming the failed runs (`failed_run`) it rests on, by row and seed (empty: none)."""
    failed = [f"{row_label(row_of(r))} (seed {seed})" for (first, second), seed in zip(pairs, seeds) for r in (first, second) if failed_run(r)]
    return f"; {FAILED_IN_COMPARISON}: {', '.join(failed)}" if failed else ""


def _score(record: BenchRecord) -> str:
    """A row's score in points, ‡-marked where the run failed (`failed_run`)."""
    return f"{points(record):.1f}" + ("‡" if failed_run(record) else "")


def _cell(record: BenchRecord | None, base: BenchRecord | None) -> str:
    """A row's score ± its own error, and (with `base`) its change against `base` ± that difference's error."""
    if record is None:
        return "not yet"
    delta = f" ({_change_cell(record, base)})" if base else ""
    return f"{_score(record)} ± {standard_error(record):.1f}{delta}"


def verdict(by_seed: list[list[BenchRecord]], better: BenchRecord | None, worse: BenchRecord | None) -> str:
    """Whether `better` scores above `worse` by more than twice the difference's standard error (over the seeds where
    every seed has both rows: `seeded_difference`)."""
    if better is None or worse is None:
        return "not yet run"
    gap, error, over, _ = seeded_difference(by_seed, better, worse)
    # one more digit where a tenth would print the gap and its bar alike ("+0.5, beyond 2 SE = 0.5")
    digits = 2 if f"{abs(gap):.1f}" == f"{2 * error:.1f}" else 1
    evidence = (f"{gap:+.{digits}f} points, {'beyond' if abs(gap) > 2 * error else 'within'} "
                f"2 SE = {2 * error:.{digits}f}, {over}")
    if gap > 2 * error:
        return f"holds ({evidence})"
    if gap < -2 * error:
        return f"does not hold ({evidence})"
    return f"cannot be told apart ({evidence})"


def _kind(paired: bool) -> str:
    return " (paired)" if paired else " (unpaired)"


def rebuilt_lines(folder: Path) -> list[str]:
    """Rows whose model was trained again with the same settings and seed (its earlier folder was on another machine),
    with both scores, the same or not: how far one seed moves between hosts. The tables hold the later."""
    by_key: dict[str, list[BenchRecord]] = {}
    for record in sorted(read_records(folder), key=lambda r: r.finished or ""):
        if record.status == "ok" and record.precision == "torch-fp32":
            by_key.setdefault(record.key, []).append(record)
    # a model trained again took its own training time; one only scored again (as saved, not in the bf16 autocast an
    # older compress scored in) kept its build's
    moved = [(found[0], found[-1]) for found in by_key.values()
             if found[0].train_seconds != found[-1].train_seconds and _host(found[0]) != _host(found[-1])]
    rescored = [(found[0], found[-1]) for found in by_key.values()
                if round(found[0].score, 6) != round(found[-1].score, 6) and found[0].train_seconds == found[-1].train_seconds]
    latest = [found[-1] for found in by_key.values()]
    full = next((r for r in latest if r.strategy == "full"), None)
    elsewhere: dict[str, list[str]] = {}
    for record in latest:
        if full and _host(record) != _host(full):
            elsewhere.setdefault(_host(record), []).append(row_label(row_of(record)))
    lines = [] if not elsewhere else [
        "", f"Trained and measured on another host than the full model ({_host(full)}): " + "; ".join(
            f"on {host}: {', '.join(names)}" for host, names in elsewhere.items())
        + ". Their changes against the full model compare trainings on two hosts."]
    if rescored:
        lines += ["", "Scored again as saved (fp32), the same model: an older compress scored bf16-trained models with training's "
                  "autocast still on them: " + "; ".join(f"{row_name(first)} {points(first):.1f} then {points(last):.1f}"
                                                          for first, last in rescored) + ". The tables hold the later."]
    if not moved:
        return lines
    return lines + ["", "Trained again here with the same settings and seed, as their first models were on another machine (a "
            "host's bf16 kernels may round differently; the same score says the change of host did not move this row): " + "; ".join(
                f"{row_name(first)} {points(first):.1f} ({_host(first)}) then {points(last):.1f} ({_host(last)})"
                for first, last in moved) + ". The tables hold the later."]


def _host(record: BenchRecord) -> str:
    cpu = (record.environment or {}).get("cpu") or {}
    return f"{cpu.get('model', 'unknown host')}, family {cpu.get('family')} model {cpu.get('model_number')}"


def bar_line(task: str, by_seed: list[list[BenchRecord]]) -> str:
    """Whether each training seed's full model reached the bar its sweep file set before running."""
    metric, bar = BARS[task]
    reached = [(seed, 100 * full.metrics[metric]) for seed, records in zip(SEED_NAMES, by_seed) if (full := find_row(records, *FULL))]
    start = f"The bar set before running (`bench/sweeps/paper12_{task}.yaml`): {metric} at least {bar:g}; "
    if len(reached) == 1:
        score = reached[0][1]
        return start + (f"met ({score:.1f})." if score >= bar else f"**missed** ({score:.1f}): read this task's drops with care.")
    missed = [seed for seed, score in reached if score < bar]
    scores = ", ".join(f"{score:.1f}" + (" (**missed**)" if score < bar else "") for _, score in reached)
    return start + f"the full model of seeds {', '.join(seed for seed, _ in reached)}: {scores}" + (
        f"; seed {' and '.join(missed)}'s changes are read against a weaker full model." if missed else "; met by every seed.")


def bound_verdict(change: float, noise: float, bound: float, over: str = "") -> str:
    """Whether dropping loses at most `bound` points, from the change it brings (negative: a loss, as in every table) and
    that change's standard error: it holds when even the change minus 2 SE is a loss within the bound, does not hold
    when even the change plus 2 SE is a loss beyond it, and in between the dev set cannot tell (the estimate's side said)."""
    evidence = f"a change of {change:+.1f} ± {noise:.1f} points" + (f", {over}" if over else "")
    if change - 2 * noise >= -bound:
        return f"holds ({evidence}: a loss within {bound:g} even 2 SE below the estimate)"
    if change + 2 * noise < -bound:
        return f"does not hold ({evidence}: a loss beyond {bound:g} even 2 SE above the estimate)"
    return (f"cannot be told apart ({evidence}: the estimate {'within' if change >= -bound else 'a loss beyond'} {bound:g}, "
            "but 2 SE reach the other side)")


def task_section(task: str, by_seed: list[list[BenchRecord]], folder: Path) -> list[str]:
    records = by_seed[0]
    full = find_row(records, "full", 0)
    name = TASKS[task]
    if full is None:
        return [f"## {name}", "", "Not run yet: the full model has not finished.", ""]
    metric = full.primary_metric
    lines = [f"## {name}", "", f"Full MPNet-12: **{points(full):.1f} ± {standard_error(full):.1f}** ({metric}; majority class "
             f"{'n/a' if full.majority_score is None else f'{100 * full.majority_score:.1f}'}). {bar_line(task, by_seed)} Each cell: score ± SE (change against the full model ± the change's SE, paired over the dev examples; †: " + UNPAIRED_NOTE + "; ‡: " + FAILED_NOTE + ").", "",
             "| strategy | " + " | ".join(f"K={k}" for k in KS) + " |", "|---|" + "---|" * len(KS)]
    for strategy in STRATEGIES:
        lines.append(f"| {strategy} | " + " | ".join(_cell(find_row(records, strategy, k), full) for k in KS) + " |")
    lines.append("| top, fine-tuned, dropped, fine-tuned again | " + " | ".join(
        _cell(find_row(records, "top", k, "refinetune"), full) if k in REFINETUNE_KS else "not in the sweep" for k in KS) + " |")
    lines.append("| top, fine-tuned, dropped, fine-tuned again, int8 | " + " | ".join(
        _cell(find_row(records, "top", k, "refinetune", INT8), full) if k in REFINETUNE_KS else "not in the sweep" for k in KS) + " |")
    lines.append("| top + distill | " + " | ".join(_cell(find_row(records, "top", k, "distill"), full) for k in KS) + " |")
    lines.append("| top + distill, int8 | " + " | ".join(_cell(find_row(records, "top", k, "distill", INT8), full) for k in KS) + " |")
    lines += same_layers_lines(records)
    lines += above_full_lines(by_seed, full)
    lines += rebuilt_lines(folder)
    lines += paper_rows(task, full, records)
    lines += seed_lines(task, by_seed)
    lines += ["", "Claims:", ""]
    lines += [f"- {claim}: {finding}" for claim, finding in claims(by_seed, full)]
    return lines + [""] + open_question(records, full, folder)


def above_full_lines(by_seed: list[list[BenchRecord]], full: BenchRecord) -> list[str]:
    """A note naming the rows that score above the full model by more than twice the difference's error, read as the
    claims read it (`seeded_difference`): there a drop's "cost" is measured from a full model that fine-tuning left
    short of what its own lower layers reach."""
    above = []
    for record in by_seed[0]:
        gap, error, _, paired = seeded_difference(by_seed, record, full, trained_apart=record.strategy != "full")
        if gap > 2 * error:  # the full row's gap, 0, never is
            above.append(f"{row_label(row_of(record))} ({gap:+.1f} ± {error:.1f}{'' if paired else '†'})")
    if not above:
        return []
    return ["", "Above the full model by more than twice the error (as the claims read it: the mean over the seeds where "
            f"every seed has the row, else seed 42's with training's spread added): {', '.join(above)}. The full model is then no ceiling "
            "for its drops: fine-tuned whole, it scores below what a subset of its own layers reaches (a likely reason, not "
            "tested here: all-mpnet-base-v2's sentence-embedding training tuned its upper layers toward pooled sentence "
            "vectors, not a task head). A drop's cost here reads against that weaker full model."]


def twins(records: list[BenchRecord], k: int) -> dict[str, str]:
    """Strategies whose fine-tuned K-layer drop kept the very layers an earlier strategy (in STRATEGIES' order) kept, by
    the strategy they repeat: one model under two names (contribution often keeps symmetric's layers)."""
    found, kept_by = {}, {}
    for strategy in STRATEGIES:
        record = find_row(records, strategy, k)
        if record is None or record.kept_layers is None:
            continue
        layers = tuple(record.kept_layers)
        if layers in kept_by:
            found[strategy] = kept_by[layers]
        else:
            kept_by[layers] = strategy
    return found


def same_layers_lines(records: list[BenchRecord]) -> list[str]:
    """A note under the strategy table for each strategy that kept another's layers (`twins`)."""
    pairs: dict[tuple[str, str], list[int]] = {}
    for k in KS:
        for strategy, repeated in twins(records, k).items():
            pairs.setdefault((strategy, repeated), []).append(k)
    return [""] + [f"At K = {', '.join(map(str, ks))}, {strategy} kept the layers {repeated} keeps: the same model, "
                   "trained a second time under its name, so no separate evidence." for (strategy, repeated), ks in pairs.items()] if pairs else []


@functools.cache  # read once per task: every single-seed verdict asks (`training_noise`)
def seeded_rows(task: str) -> tuple[Row, ...]:
    """The fp32 rows the task's seed sweeps run (bench/sweeps/paper12_<task>_seed43.yaml, as _seed44's), in its
    order; none where the task has no seed sweep."""
    file = SWEEPS / f"paper12_{task}{SEEDS[1]}.yaml"
    if not file.exists():
        return ()
    return tuple((c.strategy, c.k, c.training, c.precision) for c in expand(parse_sweep(file)) if c.precision == FULL[3])


def seed_lines(task: str, by_seed: list[list[BenchRecord]]) -> list[str]:
    """The rows that decide the claims over three training seeds, where the task has seed sweeps: each row's score
    per seed, their mean and spread beside the dev set's bootstrap error, and its change against the full model of
    the same seed (paired over the dev examples)."""
    rows_run = seeded_rows(task)
    if not rows_run:
        return ["", f"One training seed (42): no seed sweep for this task (`bench/sweeps/paper12_{task}{SEEDS[1]}.yaml`). The "
                "errors here are the dev set's alone; training's own spread over seeds is not in them."]
    lines = ["", "Seeds (training seed 42, 43, 44) of the rows that decide the claims. *sd*: the spread of the scores over "
             "the seeds finished, training's own noise; *dev SE*: the bootstrap error of one score over the dev examples "
             "(mean over seeds), the noise of the dev set, which the spread adds to. A claim pairs seeds, and reads the "
             "mean only once all three are in. ‡: " + FAILED_NOTE + "; it stays in the mean and spread.", "",
             "| row | score per seed | mean | sd | dev SE | change against the same seed's full model | mean change | sd |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows_run:
        label = row_label(row)
        rows = [find_row(seed, *row) for seed in by_seed]
        found = [r for r in rows if r is not None]
        if not found:
            lines.append(f"| {label} | not yet | | | | | | |")
            continue
        changes = seed_changes(by_seed, row, FULL) if row != FULL else []
        gaps = [c[0] for c in changes if c is not None]
        change_cells = ", ".join("–" if c is None else f"{c[0]:+.1f} ± {c[1]:.1f}{'' if c[2] else '†'}" for c in changes) or "–"
        mean_change = f"{statistics.mean(gaps):+.1f}" if gaps else "–"
        scores = [points(r) for r in found]
        lines.append(f"| {label} | {', '.join('–' if r is None else _score(r) for r in rows)} | {statistics.mean(scores):.1f} "
                     f"| {_spread(scores)} | {statistics.mean(map(standard_error, found)):.1f} | {change_cells} | {mean_change} | {_spread(gaps)} |")
    return lines


def _spread(values: list[float]) -> str:
    return f"{statistics.stdev(values):.1f}" if len(values) > 1 else "–"


def row_name(record: BenchRecord) -> str:
    if record.strategy == "full":
        return "the full model" + ("" if record.precision == "torch-fp32" else f", {record.precision}")
    return f"{record.strategy}-{record.k} {record.training}, {record.precision}"


def in_turns_figures(folder: Path) -> dict | None:
    """bench/paper12_in_turns.py's figures for the task's sweep folder, by the row's folder under work/ (None: not run)."""
    path = folder / "in_turns.json"
    if not path.exists():
        return None
    figures = json.loads(path.read_text())
    return {**figures, "by_folder": {m["measured_in"]: m for m in figures["models"]}}


def timed(record: BenchRecord, turns: dict) -> dict | None:
    """The row's figures in turns, if they time the model the row now measures (a row trained again since has another score)."""
    figure = turns["by_folder"].get(record.measured_in)
    return figure if figure and round(figure["score"], 6) == round(record.score, 6) else None


def busy_timing(other_cpu_load: float | None) -> str:
    """A note for a `best` pick timed on a busy machine (None: quiet, or chosen before the load was metered)."""
    return (f"; timed while other work used {other_cpu_load:.2f} CPU cores: slower than on a quiet machine, "
            "choose it again (`rm` its file, then bench/paper12_best.py)" if contended(other_cpu_load) else "")


def best_lines(folder: Path) -> list[str]:
    """What `quantize: {mode: best}` kept for each top-K distilled student (bench/paper12_best.py), if it has run."""
    found = {k: json.loads(path.read_text()) for k in KS if (path := folder / f"best_top{k}.json").exists()}
    if not found:
        return ["", f"The fastest engine for each top-K distilled student: not yet chosen (`.venv/bin/python bench/paper12_best.py "
                f"{folder.name.removeprefix('paper12_')}`)."]
    lines = ["", "The fastest engine `quantize: {mode: best}` keeps for each top-K distilled student, of every CPU candidate built "
             "from its fp32 ONNX export and timed in turns with it (batch 1, dev examples at their own lengths; within "
             "0.5 points of the export; `best_top<K>.json` holds every candidate and the command):", ""]
    hosts = {record["host"] for record in found.values()}
    for k, record in found.items():
        notes = record["notes"]
        chosen = next(c for c in notes["candidates"] if c.get("name", c["mode"]) == notes["chosen"])
        export = next(c for c in notes["candidates"] if c["mode"] == "none")
        length = notes["choose_by"]
        lines.append(f"- top-{k}: **{notes['chosen']}**, {100 * chosen['score']:.1f} (export {100 * export['score']:.1f}): "
                     f"{chosen['p50_ms'][length]:.1f} ms against the export's {export['p50_ms'][length]:.1f} ms "
                     f"({chosen['speedup_over_export'][length]:.2f}x)" + busy_timing(notes.get("timing_other_cpu_load"))
                     + (f"; host: {record['host']}" if len(hosts) > 1 else ""))
    return lines + ([] if len(hosts) > 1 else ["", f"Host: {hosts.pop()}."])


def open_question(records: list[BenchRecord], full: BenchRecord, folder: Path) -> list[str]:
    """What the paper left open, for one task: distillation against fine-tuning at each K, what int8 costs on top,
    and the fastest row within 1 and 2 points of the full model."""
    lines = ["### The open question: dropping with distillation and int8", "",
             f"The full model in int8 (onnxruntime dynamic, no training): {_cell(find_row(records, 'full', 0, precision=INT8), full)}.", "",
             "Each cell: score ± SE (change against the row named ± the change's SE, paired; †: unpaired).", "",
             "| K | top, fine-tuned (against the full model) | its int8 (against its fp32) | top, distilled (against fine-tuned) "
             "| distilled, int8 (against its fp32) |", "|---|---|---|---|---|"]
    for k in KS:
        tuned, distilled = find_row(records, "top", k), find_row(records, "top", k, "distill")
        tuned_int8 = find_row(records, "top", k, precision=INT8)
        int8 = find_row(records, "top", k, "distill", INT8)
        lines.append(f"| {k} | {_cell(tuned, full)} | {_cell(tuned_int8, tuned) if k in INT8_FINETUNED_KS else 'not in the sweep'} "
                     f"| {_cell(distilled, tuned)} | {_cell(int8, distilled)} |")
    lines += ["", "int8's cost is read against the PyTorch row; the student's fp32 ONNX export, which int8 is made from, can score "
              "a few tenths of a point apart from it (each `best_top<K>.json` holds its export's score)."]
    lines += best_lines(folder)
    lines += ["", "The fastest of the rows timed in turns (PyTorch and onnxruntime; the OpenVINO picks above were timed in their own "
              "runs) within 1 and 2 points of the full model, on one host (batch 1, dev examples at their own lengths; "
              "`in_turns.md` beside the sweep's results has the table, the host and the command):", ""]
    turns = in_turns_figures(folder)
    if turns is None:
        return lines + [f"- not yet timed in turns (`.venv/bin/python bench/paper12_in_turns.py {full.task}`)", ""]
    reference = timed(full, turns)
    if reference is None:
        return lines + [f"- `in_turns.json` does not time the full model the table holds: run `bench/paper12_in_turns.py {full.task}` again", ""]
    for budget in BUDGETS:
        fastest, tied, untimed = fastest_within(records, full, turns, budget)
        tie = tied_phrase(tied, full, turns)
        late = (f"; {tie}" if tie else "") + untimed_text(untimed, fastest, full.task)
        if fastest is None:
            lines.append(f"- within {budget:g} point(s): {'unknown' if untimed else 'only the full model itself'}{late}")
            continue
        figure, share = timed(fastest, turns), dropping_share(records, fastest, turns)
        engine = f"; {share:.1f}x the full model in the same int8: dropping's share" if share is not None else ""
        lines.append(f"- within {budget:g} point(s): **{row_name(fastest)}**, {_cell(fastest, full)}: {figure['real_p50_ms']:.1f} ms "
                     f"against {reference['real_p50_ms']:.1f} ms, **{figure['real_speedup']:.1f}x** in turns "
                     f"({figure['fixed_speedup']:.1f}x at {turns['fixed_length']} tokens){engine}{late}")
    lines += ["", "Each pick rests on single-seed dev scores (standard errors above): another seed may put another row within the "
              "budget, so read it as one fast model that met the budget here, not as the only one.", "", f"Host: {turns['host']}."]
    return lines + [""]


def is_within(record: BenchRecord, full: BenchRecord, budget: float) -> bool:
    """Whether `record` scores at most `budget` points below the full model (a hair of float error allowed)."""
    return points(full) - points(record) <= budget + 1e-9


def fastest_within(records: list[BenchRecord], full: BenchRecord, turns: dict, budget: float) -> tuple[BenchRecord | None, list[BenchRecord], list[BenchRecord]]:
    """The row fastest in turns at dev lengths among those within `budget` points of the full model, the best-scoring
    of those tied with it (TIED_WITHIN; None: none but the full model was timed); the other rows tied with it, which
    timing alone cannot rank against it; and the rows within the budget that were not timed."""
    within = [r for r in records if is_within(r, full, budget)]
    found = [r for r in within if timed(r, turns) and r is not full]
    untimed = [r for r in within if timed(r, turns) is None]
    if not found:
        return None, [], untimed
    quickest = min(timed(r, turns)["real_p50_ms"] for r in found)
    tied = [r for r in found if timed(r, turns)["real_p50_ms"] <= quickest * (1 + TIED_WITHIN)]
    pick = max(tied, key=lambda r: (points(r), -timed(r, turns)["real_p50_ms"]))
    return pick, [r for r in tied if r is not pick], untimed


def tied_phrase(tied: list[BenchRecord], full: BenchRecord, turns: dict) -> str:
    """The rows a pick is tied with in time, each with its change, p50 (what the tie is read on) and speed-up (the
    median of round-by-round ratios, which can rank tied rows otherwise); empty: none. The pick took the better score,
    and a reader choosing between them may weigh them otherwise."""
    if not tied:
        return ""
    return f"tied in time with it, p50 within {TIED_WITHIN:.0%}: " + ", ".join(
        f"{row_name(r)} at {points(r) - points(full):+.1f}, {timed(r, turns)['real_p50_ms']:.1f} ms, {timed(r, turns)['real_speedup']:.1f}x"
        for r in tied)


def slower_by_shape(record: BenchRecord, fastest: BenchRecord) -> bool:
    """Whether an untimed row cannot be faster than the timed pick: it keeps more layers, in the pick's precision or
    in fp32 against an int8 pick (more layers of the same or wider arithmetic: more time at batch 1)."""
    return record.k < fastest.k and record.precision in {fastest.precision, *(["torch-fp32"] if fastest.precision == INT8 else [])}


def untimed_note(untimed: list[BenchRecord], fastest: BenchRecord | None) -> str:
    """How the rows within a budget that were not timed bear on its pick: none, all slower by their shape, or unknown."""
    if not untimed:
        return ""
    if fastest is not None and all(slower_by_shape(r, fastest) for r in untimed):
        return f"{len(untimed)} within it not timed, each with more layers in the same or wider precision"
    return f"{len(untimed)} within it not timed"


def untimed_text(untimed: list[BenchRecord], fastest: BenchRecord | None, task: str) -> str:
    """What a pick's line says of the rows within its budget not timed, and how to time them where one might be faster
    than the pick (rows slower by their shape are not worth building here)."""
    if not untimed:
        return ""
    text = f"; {untimed_note(untimed, fastest)}"
    if fastest is None or not all(slower_by_shape(r, fastest) for r in untimed):
        text += f" (finished since, or built on another machine: `bench/paper12_in_turns.py {task}` again once they are here)"
    return text


def _marked_change(better: BenchRecord | None, base: BenchRecord | None, by_seed: list[list[BenchRecord]] | None = None,
                   trained_apart: bool = True) -> str:
    """`better`'s change against `base` in points, *-marked beyond twice its error, †-marked unpaired (n/a: not finished);
    with `by_seed`, read over the seeds where every seed has both rows, as the verdicts read it (`seeded_difference`:
    before that, the error of two rows `trained_apart` adds training's spread)."""
    if better is None or base is None:
        return "n/a"
    if by_seed is None:
        gap, error, paired = difference(better, base)
    else:
        gap, error, _, paired = seeded_difference(by_seed, better, base, trained_apart)
    return f"{gap:+.1f}" + ("*" if abs(gap) > 2 * error else "") + ("" if paired else "†")


def full_int8(records: list[BenchRecord], turns: dict | None) -> tuple[BenchRecord | None, dict | None]:
    """The full model in onnxruntime dynamic int8, no training: the engine's own speed-up, against which a dropped
    model's shows what dropping adds; and its figures in turns, where timed."""
    record = find_row(records, "full", 0, precision=INT8)
    return record, (timed(record, turns) if record and turns else None)


def dropping_share(records: list[BenchRecord], fastest: BenchRecord, turns: dict) -> float | None:
    """How many times faster than the full model in the same int8 a pick runs in turns: what dropping adds to the
    engine's own speed-up (None: the full int8 model not timed, or the pick is that model)."""
    int8, figure = full_int8(records, turns)
    if figure is None or fastest is int8:
        return None
    return figure["real_p50_ms"] / timed(fastest, turns)["real_p50_ms"]


def full_int8_text(by_seed: list[list[BenchRecord]], full: BenchRecord, turns: dict | None, joiner: str) -> str | None:
    """The full model's change in int8, read over the seeds where every seed has both (int8 is made from each seed's
    own model: no training spread before that), and its speed-up in turns after `joiner` (None: int8 not run)."""
    int8, figure = full_int8(by_seed[0], turns)
    if int8 is None:
        return None
    return _marked_change(int8, full, by_seed, trained_apart=False) + (f"{joiner}{figure['real_speedup']:.1f}x" if figure else "")


def fastest_text(records: list[BenchRecord], full: BenchRecord, turns: dict, budget: float) -> str:
    """The fastest row within `budget`: its change, its speed-up over the full PyTorch model and over the full model in
    int8, timed in turns (or why none is named)."""
    fastest, tied, untimed = fastest_within(records, full, turns, budget)
    text = ("unknown" if untimed else "the full model") if fastest is None else (
        f"{row_name(fastest)}: {points(fastest) - points(full):+.1f}, {timed(fastest, turns)['real_speedup']:.1f}x")
    share = None if fastest is None else dropping_share(records, fastest, turns)
    if share is not None:
        text += f" ({share:.1f}x the full model in int8)"
    tie = tied_phrase(tied, full, turns)
    return text + (f" ({tie})" if tie else "") + (f" ({untimed_note(untimed, fastest)})" if untimed else "")


def in_short(results: Path, by_task: dict[str, list[list[BenchRecord]]]) -> list[str]:
    """The answer in sentences, counted from the tasks finished: how often distillation and int8 moved a top-K student
    beyond twice the error, what int8 does to the full model, and the fastest model within 1 point."""
    distilled, quantized, full_lines, fastest_lines, finished = [], [], [], [], 0
    for task, name in TASKS.items():
        records = by_task[task][0]
        full = find_row(records, "full", 0)
        if full is None:
            continue
        finished += 1
        for k in KS:
            pair = find_row(records, "top", k, "distill"), find_row(records, "top", k)
            if all(pair):  # two models trained apart: training's spread in the error, as in the verdicts
                distilled.append(seeded_difference(by_task[task], *pair)[:2])
            pair = find_row(records, "top", k, "distill", INT8), find_row(records, "top", k, "distill")
            if all(pair):
                quantized.append(difference(*pair)[:2])
        turns = in_turns_figures(results / f"paper12_{task}")
        if (int8_text := full_int8_text(by_task[task], full, turns, " at ")) is not None:
            full_lines.append(f"{name} {int8_text}")
        if turns is not None and timed(full, turns) is not None:
            fastest_lines.append(f"{name}: {fastest_text(records, full, turns, BUDGETS[0])}")
    if not distilled:
        return []

    def counted(changes: list[tuple[float, float]]) -> str:
        beyond = sum(abs(gap) > 2 * error for gap, error in changes)
        gaps = [gap for gap, _ in changes]
        return f"beyond twice its error in {beyond} of {len(changes)} (changes from {min(gaps):+.1f} to {max(gaps):+.1f} points)"

    lines = [f"In short, over the {finished} of {len(TASKS)} tasks run (seed 42; points of each task's metric):", "",
             f"- Distilling the top-K student (K = 2, 4, 6) from the full fine-tuned model, against fine-tuning it alone: {counted(distilled)}."]
    if quantized:
        lines.append(f"- onnxruntime dynamic int8 on the distilled students, against their fp32: {counted(quantized)}.")
    if full_lines:
        lines.append(f"- The full model in the same int8, no training (the mean over the three training seeds where each has it; "
                     f"\\*: beyond twice its error): {'; '.join(full_lines)}.")
    if fastest_lines:
        lines.append(f"- The fastest model within 1 point of the full one, timed in turns against the full PyTorch model: "
                     f"{'; '.join(fastest_lines)}.")
    return lines + [""]


def answer_table(results: Path, by_task: dict[str, list[list[BenchRecord]]]) -> list[str]:
    """The open question at a glance, one row per task: what distillation adds over fine-tuning and what int8 changes
    on top, per K, the full model in int8 alone, and the fastest row within 1 and 2 points in turns (each task's section
    has the evidence)."""
    lines = ["## The open question, answered", "", *in_short(results, by_task),
             "Per task: the change distillation brings against plain fine-tuning of the same top-K student, then the change "
             "onnxruntime dynamic int8 brings the distilled student (points, K = 2 / 4 / 6; negative: a loss), the full model in "
             "that int8 without dropping (its change and speed-up: the engine's share), and the fastest of the rows timed in turns "
             "within 1 and 2 points of the full model (speed-up over the full PyTorch model at dev examples' own lengths, and over "
             "the full model in int8: dropping's share). *n/a*: a row not finished yet.", "",
             "| task | distilled against fine-tuned | int8 against distilled fp32 | the full model in int8 | fastest within 1 point "
             "| fastest within 2 points |", "|---|---|---|---|---|---|"]
    for task, name in TASKS.items():
        records = by_task[task][0]
        full = find_row(records, "full", 0)
        if full is None:
            lines.append(f"| {name} | not run yet | | | | |")
            continue
        distill = " / ".join(_marked_change(find_row(records, "top", k, "distill"), find_row(records, "top", k), by_task[task]) for k in KS)
        int8 = " / ".join(_marked_change(find_row(records, "top", k, "distill", INT8), find_row(records, "top", k, "distill")) for k in KS)
        turns = in_turns_figures(results / f"paper12_{task}")
        full_cell = full_int8_text(by_task[task], full, turns, ", ") or "n/a"
        cells = [fastest_text(records, full, turns, budget) if turns is not None and timed(full, turns) is not None
                 else "not timed in turns yet" for budget in BUDGETS]
        lines.append(f"| {name} | {distill} | {int8} | {full_cell} | " + " | ".join(cells) + " |")
    return lines + ["", "\\*: beyond twice the standard error of the difference, paired over the dev examples both rows are "
                    "scored on (`dev_predictions.json`); †: a row's predictions are not here, so the error is "
                    f"{UNPAIRED_NOTE.removeprefix('unpaired: ')} (unpaired). Training seed 42 throughout, but for the full model in int8, "
                    "read over the three training seeds where each seed has both rows (their mean; the error adds their spread): "
                    "distilled against fine-tuned, two models trained apart, adds to its error the spread over seeds the seeded rows "
                    "measured, as the verdicts do; int8 against the fp32 it is made from shares one training. `quantize: {mode: best}`'s OpenVINO picks are timed in their own runs, against their "
                    "student's export (each task's section), not in these turns.", ""]


def paper_rows(task: str, full: BenchRecord, records: list[BenchRecord]) -> list[str]:
    """The paper's top-layer figures for the task beside ours: each model's full score, and the change at each K."""
    published = {model: tasks[task] for model, tasks in PAPER.items() if task in tasks}
    if not published:
        return ["", "The paper publishes no per-task figure for this task (v1 leaves CoLA out)."]
    lines = ["", "Top-layer dropping beside the paper's published figures (change against each model's full score, points):", "",
             "| model | full | top-2 | top-4 | top-6 | fine-tuned, top-6 dropped, fine-tuned again |", "|---|---|---|---|---|---|"]
    for model, scores in published.items():
        cells = [f"{scores[k] - scores[0]:+.2f}" for k in KS]
        lines.append(f"| {model} (paper) | {scores[0]:.2f} | " + " | ".join(cells) + f" | {_paper_delta(scores, 'ft6')} |")
    ours = [_change_cell(find_row(records, "top", k), full) for k in KS]
    refined_cell = _change_cell(find_row(records, "top", 6, "refinetune"), full)
    lines.append(f"| MPNet-12 (ours) | {points(full):.1f} | " + " | ".join(ours) + f" | {refined_cell} |")
    return lines


def _change_cell(record: BenchRecord | None, full: BenchRecord) -> str:
    """A row's change against the full model ± the difference's standard error (†: unpaired)."""
    if record is None:
        return "not yet"
    gap, error, paired = difference(record, full)
    return f"{gap:+.1f} ± {error:.1f}" + ("" if paired else "†")


def _paper_delta(scores: dict, key: str) -> str:
    return f"{scores[key] - scores[0]:+.2f}" if key in scores else "not published"


def seed_pairs(by_seed: list[list[BenchRecord]], first: Row, second: Row) -> list[tuple[BenchRecord | None, BenchRecord | None]]:
    """Per training seed, its `first` row and its `second` (None where one has not finished)."""
    return [(find_row(records, *first), find_row(records, *second)) for records in by_seed]


def seed_changes(by_seed: list[list[BenchRecord]], first: Row, second: Row) -> list[tuple[float, float, bool] | None]:
    """Per training seed, the `difference` of its `first` row from its `second` (None where either has not finished)."""
    return [difference(a, b) if a and b else None for a, b in seed_pairs(by_seed, first, second)]


def training_noise(by_seed: list[list[BenchRecord]], task: str) -> float | None:
    """How far one training seed moves a change between two separately trained rows, as the task's seeded rows
    measured it: the spread over the seeds of each seeded drop's change against its seed's full model, pooled (the
    mean variance) over the drops whose every seed has finished without a failed run. None until one has."""
    variances = []
    for row in seeded_rows(task):
        if row == FULL:
            continue
        pairs = seed_pairs(by_seed, row, FULL)
        if len(pairs) == len(SEEDS) and all(all(pair) for pair in pairs) and not any(failed_run(r) for pair in pairs for r in pair):
            variances.append(statistics.variance([points(first) - points(second) for first, second in pairs]))
    return math.sqrt(statistics.mean(variances)) if variances else None


class Comparison(NamedTuple):
    gap: float
    """Points the better row scores above the worse."""
    error: float
    """The gap's standard error."""
    over: str
    """What the gap rests on, in words (seeds, pairing, training's spread, failed runs)."""
    paired: bool
    """Whether seed 42's dev-set error is paired over the examples (else the rows' own errors in quadrature)."""


def seeded_difference(by_seed: list[list[BenchRecord]], better: BenchRecord, worse: BenchRecord,
                      trained_apart: bool = True) -> Comparison:
    """Points `better` scores above `worse` (seed 42's rows), the difference's standard error, and what they rest on
    (failed runs among them named). Once every seed has both rows: the mean over the seeds, whose error keeps seed 42's
    dev-set error (the seeds share one dev set) and adds the seeds' spread as a mean's (training's noise, which shrinks
    with more seeds; the spread, read on the same dev set, carries some of its noise again: conservative). Before that,
    seed 42's difference, whose error adds `training_noise` for two rows `trained_apart` (a dev-set error alone would
    read one seed's luck as a strategy's effect)."""
    gap, noise, paired = difference(better, worse)
    complete = [(pair, seed) for pair, seed in zip(seed_pairs(by_seed, row_of(better), row_of(worse)), SEED_NAMES) if all(pair)]
    if len(complete) < len(SEEDS):  # a mean over some seeds would weigh them unevenly against the table's
        over = "training seed 42" + _kind(paired)
        spread = training_noise(by_seed, better.task) if trained_apart else None
        if spread is not None:
            noise, over = math.hypot(noise, spread), over + f" + training's sd {spread:.1f}, from the seeded rows"
        elif trained_apart:
            over += ", dev error only: training's spread not measured yet"
        return Comparison(gap, noise, over + failed_among([(better, worse)], SEED_NAMES[:1]), paired)
    gaps = [points(first) - points(second) for (first, second), _ in complete]
    kept = [g for g, ((first, second), _) in zip(gaps, complete) if not (failed_run(first) or failed_run(second))]
    spread = statistics.stdev(gaps)
    without = f"; {statistics.mean(kept):+.1f} over the seeds without one" if kept and len(kept) < len(gaps) else ""
    return Comparison(statistics.mean(gaps), math.sqrt(noise ** 2 + spread ** 2 / len(gaps)),
                      f"mean of {len(gaps)} seeds, sd {spread:.1f}; dev error seed 42's" + _kind(paired)
                      + failed_among([pair for pair, _ in complete], tuple(seed for _, seed in complete)) + without, paired)


def claims(by_seed: list[list[BenchRecord]], full: BenchRecord) -> list[tuple[str, str]]:
    """Each claim of the paper one task's rows can test, with what they say of it (and the evidence): which rows
    each compares is read from the first seed's, and the comparison is over the seeds once every seed has both."""
    records, found = by_seed[0], []
    for k in KS:
        top = find_row(records, "top", k)
        others = [r for r in (find_row(records, s, k) for s in STRATEGIES[1:]) if r is not None]
        best_other = max(others, key=points, default=None)
        found.append((f"top is the best strategy at K={k}", _so_far(others, top) + verdict(by_seed, top, best_other)
                      + (f" (best of the {len(others)} of {len(STRATEGIES) - 1} other strategies run so far: {best_other.strategy}"
                         f"{_twins_note(records, k)})" if best_other and top else "")))
    for k, bound in PER_TASK_BOUNDS:
        top = find_row(records, "top", k)
        claim = f"top-{k} costs at most about {bound:g} points"
        if top is None:
            found.append((claim, "not yet run"))
            continue
        change, noise, over, _ = seeded_difference(by_seed, top, full)
        found.append((claim, bound_verdict(change, noise, bound, over)))
    for k in KS:
        bottom = find_row(records, "bottom", k)
        others = [r for r in (find_row(records, s, k) for s in STRATEGIES if s != "bottom") if r is not None]
        worst_other = min(others, key=points, default=None)
        found.append((f"bottom is the worst at K={k}", _so_far(others, bottom) + verdict(by_seed, worst_other, bottom)
                      + (f" (against the {len(others)} of {len(STRATEGIES) - 1} other strategies run so far{_twins_note(records, k)})"
                         if others and bottom else "")))
    for k in REFINETUNE_KS:
        found.append((f"dropping from the fine-tuned model loses task information, top-{k}",
                      verdict(by_seed, find_row(records, "top", k), find_row(records, "top", k, "refinetune"))))
    for k in KS:
        found.append((f"distillation adds over fine-tuning, top-{k}", verdict(by_seed, find_row(records, "top", k, "distill"), find_row(records, "top", k))))
    return found


def _twins_note(records: list[BenchRecord], k: int) -> str:
    return "".join(f"; {strategy} kept {repeated}'s layers" for strategy, repeated in twins(records, k).items())


def _so_far(others: list[BenchRecord], tested: BenchRecord | None) -> str:
    """A verdict against only some of the other strategies is provisional (one not yet run is not a verdict)."""
    return "so far " if tested is not None and 0 < len(others) < len(STRATEGIES) - 1 else ""


def verdict_table(by_task: dict[str, list[list[BenchRecord]]]) -> list[str]:
    """Every claim across the tasks at a glance: its verdict's first words per task (the evidence is in each task's section)."""
    found_by_task = {}
    for task, by_seed in by_task.items():
        full = find_row(by_seed[0], "full", 0)
        found_by_task[task] = dict(claims(by_seed, full)) if full else {}
    names = next((list(found) for found in found_by_task.values() if found), [])
    lines = ["## Verdicts", "", "| claim | " + " | ".join(TASKS.values()) + " |", "|---|" + "---|" * len(TASKS)]
    for name in names:
        found = [found_by_task[task].get(name, "not yet run") for task in TASKS]
        cells = [text.split(" (")[0] + ("‡" if FAILED_IN_COMPARISON in text else "") for text in found]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines + ["", "A difference counts only beyond twice its standard error (paired over the dev examples where both rows' "
                    f"predictions are here, else {UNPAIRED_NOTE}), read over the three training seeds where each "
                    "seed has both rows (their mean; the error adds their spread), else on seed 42's rows, whose error adds the spread "
                    "over seeds of a change between two trained rows as the task's seeded rows measured it (none on a task without "
                    "seeds: dev error only); *cannot be told apart* is within it; "
                    "*so far*: against the other strategies run until now; ‡: the verdict rests on a failed fine-tuning run "
                    "(its section names it). A claim that a drop costs at most B points holds when even the change 2 SE below "
                    "the estimate is a loss within B, and does not hold when even 2 SE above it is a loss beyond B.", "",
                    *average_claims(by_task), "",
                    "Not testable on these four tasks: that QNLI and MNLI are the most sensitive to dropping (neither is in "
                    "`../shared/glue`), and what it says of XLNet against BERT (XLNet more robust to dropping; one 12-layer model here, MPNet).", ""]


def average_claims(by_task: dict[str, list[list[BenchRecord]]]) -> list[str]:
    """The paper's averages over tasks: top-4 costs at most about 2 points and top-6 1.8 to 3.3 (read against its upper
    end), here the mean change over the tasks finished (each task's as its own claim reads it: the mean over the seeds
    once every seed has both rows, else seed 42's; in each task's own metric's points, as GLUE's average mixes them),
    its error from the tasks' errors."""
    lines = []
    for k, bound in AVERAGE_BOUNDS:
        changes, errors = [], []
        for by_seed in by_task.values():
            full, top = find_row(by_seed[0], "full", 0), find_row(by_seed[0], "top", k)
            if full and top:
                change, error, _, _ = seeded_difference(by_seed, top, full)
                changes.append(change)
                errors.append(error)
        claim = f"- top-{k} costs at most about {bound:g} points on average over the tasks"
        if not changes:
            lines.append(f"{claim}: not yet run")
            continue
        noise = math.sqrt(sum(e ** 2 for e in errors)) / len(errors)
        lines.append(f"{claim}: {bound_verdict(statistics.mean(changes), noise, bound, f'{len(changes)} of {len(TASKS)} tasks')}")
    return lines


def plot(by_task: dict[str, list[list[BenchRecord]]], out: Path) -> None:
    """Per task, bars by strategy, colour by K: the change against the full model (the form of the paper's Figure 2,
    which draws averages over tasks). Each task has its own scale, so that one task's collapse does not flatten the
    others' small drops, linear within 5 points and logarithmic beyond, so that one strategy's collapse does not
    flatten its own task's; a failed run's bar is hatched."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, ScalarFormatter

    figure, axes = plt.subplots(1, len(TASKS), figsize=(4.2 * len(TASKS), 4.4))
    width = 0.8 / len(KS)
    for axis, task in zip(axes, TASKS):
        records = by_task[task][0]
        full = find_row(records, "full", 0)
        for i, k in enumerate(KS):
            rows = [find_row(records, s, k) if full else None for s in STRATEGIES]
            # a row not finished is no bar (NaN), not a bar of height 0, which would read as "no change"
            deltas = [points(r) - points(full) if r else math.nan for r in rows]
            errors = [difference(r, full)[1] if r else 0.0 for r in rows]
            bars = axis.bar([x + i * width for x in range(len(STRATEGIES))], deltas, width, yerr=errors, capsize=2,
                            error_kw={"elinewidth": 0.8}, label=f"K={k}")
            for bar, record in zip(bars, rows):
                if record is not None and failed_run(record):
                    bar.set_hatch("///")
        axis.set_xticks([x + width for x in range(len(STRATEGIES))], STRATEGIES, rotation=45, ha="right", fontsize=8)
        axis.set_title(f"{TASKS[task]}" + ("" if full else " (not run yet)"))
        axis.axhline(0, color="black", linewidth=0.8)
        axis.set_yscale("symlog", linthresh=5)
        axis.yaxis.set_major_locator(FixedLocator([-80, -40, -20, -10, -5, -2, 0, 2, 5, 10, 20]))
        axis.yaxis.set_major_formatter(ScalarFormatter())
        axis.grid(axis="y", alpha=0.3)
    axes[0].set_ylabel("points against the full MPNet-12\n(linear within ±5, logarithmic beyond;\nwhiskers: ± SE of the difference;\nhatched: a failed run)")
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(out / "strategies_by_task.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", type=Path, default=Path("bench/results"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/paper12"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    lines = ["# The paper's 12-layer claims on MPNet-12 (issue #38)", "",
             "Generated by `.venv/bin/python bench/paper12_report.py --out bench/results/paper12` from the sweeps "
             "`bench/sweeps/paper12_*.yaml` (their commands are in each file); rows marked *not yet* have not finished.", "",
             f"The model: {MODEL_NOTE}", "",
             f"The paper's figures: {PAPER_SOURCE}", "",
             "![every strategy's change against the full model, per task](strategies_by_task.png)", ""]
    by_task = {task: _records(args.results, task) for task in TASKS}  # each sweep folder read once
    global PAIRED
    PAIRED = PairedErrors([folder for task in TASKS for folder in _folders(args.results, task)])
    lines += answer_table(args.results, by_task)
    lines += verdict_table(by_task)
    for task in TASKS:
        lines += task_section(task, by_task[task], args.results / f"paper12_{task}")
    (args.out / "README.md").write_text("\n".join(lines))
    plot(by_task, args.out)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
