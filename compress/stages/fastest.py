"""`quantize: {mode: best}`: the fastest artifact is chosen on this machine, not guessed.

Each candidate method is applied to the fp32 ONNX export in a folder of its own, scored on the dev set,
and timed with the others in turns (compress/benchmarking/latency.py) at every length asked for. The
fastest at `choose_by` among those scoring at most `score_budget` points below the export is moved into
the stage's folder; the stage's facts keep every candidate's score and timings, so which wins where
is read from the run, and the console shows them as a table.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import psutil
from rich.console import Console
from rich.table import Table

from compress.benchmarking.latency import fixed_length_batch, task_length_batches, timed_in_turns
from compress.errors import CompressError
from compress.evaluation.evaluate import evaluate, predictor_for
from compress.pipeline.artifacts import QUANTIZATION_FIELD, OnnxModel, RuntimeModel, load_artifact
from compress.stages.base import StageContext, StageFacts, StageOutput

if TYPE_CHECKING:
    from compress.stages.quantize import BestSettings, QuantizationMethod

CANDIDATES_DIR = ".candidates"
"""Inside the stage's folder while it runs: one folder per candidate; only the chosen one's files stay."""


class Candidate(StageFacts):
    mode: str
    score: float | None = None
    """The task's primary metric on the dev set (None: the candidate failed)."""
    within_budget: bool = False
    p50_ms: dict[str, float] = {}
    """Median over rounds of each round's median, by timed length ('task': dev examples at their own lengths)."""
    speedup_over_export: dict[str, float] = {}
    """The fp32 export's time over this candidate's, round by round, median (where the export was timed)."""
    error: str | None = None


class FastestFacts(StageFacts):
    chosen: str
    choose_by: str
    primary_metric: str
    export_score: float
    score_budget_points: float
    batch_size: int
    threads: int
    rounds: int
    fastest_by_length: dict[str, str]
    """Which candidate within the budget is fastest at each timed length."""
    candidates: list[Candidate]
    not_run_here: dict[str, str] = {}
    """Methods of the default list this machine cannot run, with why."""


def _keep_export(model: OnnxModel, folder: Path) -> OnnxModel:
    """The export as it is, as a candidate: its graph and config copied (never linked: the stage's folder
    gets its own files)."""
    target = folder / model.path.relative_to(model.folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(model.path, target)
    shutil.copyfile(model.folder / "config.json", folder / "config.json")
    return OnnxModel(folder)


def _timing_batches(settings: BestSettings, context: StageContext) -> dict[str, list[dict]]:
    dev = next(iter(context.data.dev.values()))
    batches = {}
    for length in settings.lengths:
        if length == "task":
            batches["task"] = task_length_batches(dev, context.tokenizer, settings.batch_size, context.max_length,
                                                  count=settings.calls, seed=settings.seed)
        else:
            batches[str(length)] = [fixed_length_batch(dev["text_a"], context.tokenizer, settings.batch_size, length)] * settings.calls
    return batches


def pick_fastest(model: OnnxModel, settings: BestSettings, context: StageContext,
                 methods: dict[str, QuantizationMethod]) -> StageOutput:
    from compress.stages.quantize import KEEP_EXPORT

    if quantized := getattr(model.config, QUANTIZATION_FIELD, None):
        raise CompressError(f"best: starts from an fp32 ONNX export, and its source is already quantized ({quantized['mode']})")
    modes, not_run_here = settings.chosen_candidates()
    primary = context.data.task.primary_metric

    def score(artifact) -> float:
        return evaluate(predictor_for(artifact), context.data, context.tokenizer, context.max_length, context.eval_batch_size)[primary]

    export_score = score(model)
    candidates = {mode: Candidate(mode=mode) for mode in modes}
    built: dict[str, RuntimeModel] = {}
    scratch = context.output_dir / CANDIDATES_DIR
    for mode in modes:
        folder = scratch / mode
        folder.mkdir(parents=True)
        try:
            if mode == KEEP_EXPORT:
                built[mode], candidates[mode].score = _keep_export(model, folder), export_score
            else:
                method = methods[mode]
                wanted = {"seed": settings.seed, "calibration_examples": settings.calibration_examples}
                method_settings = method.settings(mode=mode, **{k: v for k, v in wanted.items() if k in method.settings.model_fields})
                built[mode] = method.apply(model, method_settings, replace(context, output_dir=folder)).model
                candidates[mode].score = score(built[mode])
        except Exception as error:  # a candidate that fails here is reported and the others still compete
            message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            candidates[mode].error = f"{type(error).__name__}: {message}"
            continue
        candidates[mode].within_budget = 100 * (export_score - candidates[mode].score) <= settings.score_budget

    threads = settings.threads or psutil.cpu_count(logical=False) or psutil.cpu_count()
    runners: dict[str, Callable] = {mode: predictor_for(artifact, threads) for mode, artifact in built.items()}
    per_round = timed_in_turns(runners, _timing_batches(settings, context), settings.rounds)
    for mode, by_length in per_round.items():
        candidates[mode].p50_ms = {length: round(float(np.median(ms)), 3) for length, ms in by_length.items()}
        if KEEP_EXPORT in per_round:
            candidates[mode].speedup_over_export = {
                length: round(float(np.median(np.array(per_round[KEEP_EXPORT][length]) / np.array(ms))), 3)
                for length, ms in by_length.items()}

    allowed = [mode for mode in built if candidates[mode].within_budget]
    if not allowed:
        raise CompressError(f"best: no candidate scored within {settings.score_budget:g} points of the export's "
                            f"{primary} ({export_score:.4f}): " + _scores(candidates.values()))
    fastest = {length: min(allowed, key=lambda mode: candidates[mode].p50_ms[length]) for length in per_round[allowed[0]]}
    chosen = fastest[str(settings.choose_by)]
    for entry in (scratch / chosen).iterdir():
        entry.rename(context.output_dir / entry.name)
    shutil.rmtree(scratch)  # made by this stage inside its own unfinished folder

    facts = FastestFacts(chosen=chosen, choose_by=str(settings.choose_by), primary_metric=primary, export_score=export_score,
                         score_budget_points=settings.score_budget, batch_size=settings.batch_size, threads=threads,
                         rounds=settings.rounds, fastest_by_length=fastest, candidates=list(candidates.values()),
                         not_run_here=not_run_here)
    console = Console()
    console.print(candidates_table(facts))
    for c in facts.candidates:
        if c.error:
            console.print(f"[yellow]best[/]: candidate {c.mode} failed here: {c.error}")
    return StageOutput(load_artifact(context.output_dir), facts)


def _scores(candidates) -> str:
    return ", ".join(f"{c.mode} {c.score:.4f}" if c.score is not None else f"{c.mode} failed" for c in candidates)


def candidates_table(facts: FastestFacts) -> Table:
    """Each candidate's score and times, the chosen one marked: which engine wins at which length."""
    lengths = list(facts.fastest_by_length)
    table = Table(title=f"best: {facts.chosen} chosen, the fastest at length {facts.choose_by} within {facts.score_budget_points:g} "
                        f"points of the export ({facts.primary_metric} {facts.export_score:.4f}); batch {facts.batch_size}, "
                        f"{facts.threads} threads, {facts.rounds} rounds in turns")
    table.add_column("candidate")
    table.add_column(facts.primary_metric, justify="right")
    for length in lengths:
        table.add_column(f"p50 ms, {length}", justify="right")
    for c in facts.candidates:
        if c.error:
            table.add_row(c.mode, "failed", *([""] * len(lengths)))
            continue
        delta = 100 * (c.score - facts.export_score)
        times = [f"{c.p50_ms[length]:.2f}" + (f" ({c.speedup_over_export[length]:.2f}x)" if c.speedup_over_export else "")
                 + (" fastest" if facts.fastest_by_length[length] == c.mode else "") for length in lengths]
        marker = " (chosen)" if c.mode == facts.chosen else "" if c.within_budget else " (over budget)"
        table.add_row(c.mode + marker, f"{c.score:.4f} ({delta:+.2f})", *times)
    return table
