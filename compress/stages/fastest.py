"""`quantize: {mode: best}`: the fastest artifact is chosen on this machine, not guessed.

Each candidate method is applied to the fp32 ONNX export in a folder of its own (a method whose models
run padded to fixed shapes once per padding multiple), scored on the dev set, and timed with the others in turns (compress/timing/latency.py) at every length asked for. The
fastest at `choose_by` among those scoring at most `score_budget` points below the export (of those
within `tie_margin` of its time, the smallest on disk) is moved into the stage's folder; the stage's
facts keep every candidate's score and timings, so which wins where is read from the run, and the
console shows them as a table. The choice is this machine's: another processor may choose otherwise.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Annotated, Literal

import numpy as np
import psutil
from pydantic import Field, PositiveInt, field_validator, model_validator
from rich.console import Console
from rich.table import Table
from transformers import PretrainedConfig

from compress.data.encoding import model_inputs
from compress.errors import CompressError, failure
from compress.evaluation.evaluate import evaluate
from compress.exporters import graph_files
from compress.models.artifacts import PADDING_SETTING, QUANTIZATION_FIELD, OnnxModel, load_artifact, predictor_for, size_on_disk
from compress.stages.base import StageContext, StageFacts, StageOutput
from compress.stages.quantize import METHODS, QuantizationMethod, QuantizeSettings, candidate_methods, runs_anywhere
from compress.surgery.architectures import check_max_length
from compress.timing.latency import distinct_batches, fixed_length_batch, task_length_batches, timed_in_turns
from compress.timing.load import CONTENDED_LOAD, LoadElsewhere, contended
from compress.timing.roofline import describe_peaks, fractions_in_turns, matmul_gop, peak_runners, peaks_of_rounds, take_peaks

SCORE_BUDGET_POINTS = 0.5
"""How far below its reference (the fp32 model it was made from) an engine or precision may score and still
count as the same model when the fastest one is picked: by `best`, and by a benchmark's fastest table."""
KEEP_EXPORT = "none"
"""The candidate of `mode: best` that is the fp32 export as it is."""


class BestSettings(QuantizeSettings):
    """Every candidate method applied to the ONNX export, each scored on the dev set and timed in turns on
    this machine; the fastest whose score is within `score_budget` of the export's is kept."""

    mode: Literal["best"]
    candidates: list[str] | None = Field(
        None, min_length=1, description=f"Methods to try ('{KEEP_EXPORT}': the fp32 export as it is); default: "
        f"'{KEEP_EXPORT}' and every method that starts from an ONNX export and runs on this machine.")
    score_budget: float = Field(SCORE_BUDGET_POINTS, ge=0, description="Points (the task's primary metric x 100) a candidate may score below the export.")
    lengths: list[PositiveInt | Literal["task"]] = Field(
        [128, "task"], min_length=1, description="Timed sequence lengths: a number of tokens, or 'task' (dev examples at their own lengths).")
    choose_by: PositiveInt | Literal["task"] = Field("task", description="Which of `lengths` the fastest is chosen at (the others are reported).")
    tie_margin: float = Field(0.03, ge=0, description="Times within this fraction of the fastest count as tied (timing noise); "
                              "of tied candidates the smallest on disk is kept.")
    batch_size: int = Field(1, ge=1)
    threads: int | None = Field(None, ge=1, description="CPU threads of every timed call; default: this machine's physical cores.")
    rounds: int = Field(5, ge=1, description="Rounds of timing, each timing every candidate in turn.")
    calls: int = Field(20, ge=3, description="Timed calls per candidate, length and round.")
    calibration_examples: int = Field(300, ge=1, description="Training examples the calibrated candidates calibrate on.")
    pad_multiples: list[Annotated[int, Field(ge=8)]] = Field(
        [32, 16], min_length=1, description="A method whose models run padded to fixed shapes (OpenVINO's `pad_to_multiple_of`) "
        "is tried at each of these multiples of tokens: which pads least depends on the task's lengths.")

    @field_validator("pad_multiples")
    @classmethod
    def _distinct_multiples(cls, multiples: list[int]) -> list[int]:
        if len(set(multiples)) < len(multiples):
            raise ValueError(f"a multiple is named twice in {multiples}")
        return multiples

    @field_validator("candidates")
    @classmethod
    def _known_candidates(cls, candidates: list[str] | None) -> list[str] | None:
        for mode in candidates or []:
            if mode != KEEP_EXPORT and mode not in candidate_methods():
                raise ValueError(f"expected '{KEEP_EXPORT}' or a method that starts from an ONNX export "
                                 f"({', '.join(candidate_methods())}); got {mode!r}")
        if candidates and len(set(candidates)) < len(candidates):
            raise ValueError("a candidate is named twice")
        return candidates

    @model_validator(mode="after")
    def _chosen_at_a_timed_length(self) -> BestSettings:
        if len(set(self.lengths)) < len(self.lengths):
            raise ValueError(f"lengths: a length is named twice in {self.lengths}")
        if self.choose_by not in self.lengths:
            raise ValueError(f"choose_by: expected one of lengths {self.lengths}, got {self.choose_by!r}")
        return self

    def check_chain(self, config: PretrainedConfig, layers_before: int, train_examples: int) -> None:
        for length in self.lengths:
            if length != "task":
                check_max_length(config, length, "lengths")
        for mode in self.candidates or []:
            if mode != KEEP_EXPORT and (reason := METHODS[mode].cannot_run()):
                raise CompressError(f"candidates: {mode}: {reason}")

    def chosen_candidates(self) -> tuple[list[str], dict[str, str]]:
        """The candidates to build, and those of the default list this machine cannot run, with why."""
        if self.candidates is not None:
            return self.candidates, {}
        methods = candidate_methods()
        cannot = {mode: reason for mode, method in methods.items() if (reason := method.cannot_run())}
        return [KEEP_EXPORT, *(mode for mode in methods if mode not in cannot)], cannot

CANDIDATES_DIR = ".candidates"
"""Inside the stage's folder while it runs: one folder per candidate; only the chosen one's files stay."""


class Candidate(StageFacts):
    name: str
    """The method, and the padding multiple where it is tried at more than one (e.g. 'openvino-int8, pad 16')."""
    mode: str
    """The method ('none': the export as it is)."""
    settings: dict[str, int] = {}
    """Settings it is built with beyond the seed and calibration size `best` shares: the padding multiple of a
    method whose models run padded to fixed shapes (recorded at the default multiple too)."""
    score: float | None = None
    """The task's primary metric on the dev set (None: the candidate failed)."""
    within_budget: bool = False
    size_mb: float | None = None
    """Its weight files on disk."""
    p50_ms: dict[str, float] = {}
    """Median over rounds of each round's median, by timed length ('task': dev examples at their own lengths)."""
    speedup_over_export: dict[str, float] = {}
    """The fp32 export's time over this candidate's, round by round, median (where the export was timed)."""
    matmul_dtype: str = "fp32"
    """What its matrix products compute in: which of the host's MatMul peaks its times are set against."""
    fraction_of_peak: dict[str, float] = {}
    """By timed length: the share of this host's MatMul peak in its `matmul_dtype` that its p50 reaches
    (absent where no such peak is measured, as for bf16)."""
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
    tie_margin: float
    kept_by_length: dict[str, str]
    """The candidate that would be kept at each timed length (of those within the budget and within
    `tie_margin` of the fastest time there, the smallest on disk)."""
    candidates: list[Candidate]
    not_run_here: dict[str, str] = {}
    """Methods of the default list this machine cannot run, with why."""
    matmul_gop: dict[str, float] = {}
    """By timed length: the model's MatMul work per call (compress/timing/roofline.py)."""
    matmul_peaks_gops: dict[str, float] = {}
    """This host's onnxruntime MatMul peaks on the stage's threads, timed in turns with the candidates (median over rounds)."""
    timing_other_cpu_load: float | None = None
    """CPU cores' worth of other work while the candidates were timed (the stage's own record averages it over
    building and scoring too, which can hide a busy timing window; None: not measured)."""


def _keep_export(model: OnnxModel, folder: Path) -> OnnxModel:
    """The export as it is, as a candidate: its graph (with any external weights file beside it, named after
    it) and config copied, never linked: the stage's folder gets its own files."""
    target = folder / model.path.parent.relative_to(model.folder)
    target.mkdir(parents=True, exist_ok=True)
    for file in graph_files(model.path):
        shutil.copyfile(file, target / file.name)
    shutil.copyfile(model.folder / "config.json", folder / "config.json")
    return OnnxModel(folder)


def candidates_for(modes: list[str], methods: dict[str, QuantizationMethod], pad_multiples: list[int]) -> list[Candidate]:
    """One candidate per method, and one per padding multiple for a method whose models run padded to fixed
    shapes (named by the method alone at its default multiple)."""
    candidates = []
    for mode in modes:
        fields = methods[mode].settings.model_fields if mode in methods else {}
        if PADDING_SETTING not in fields:
            candidates.append(Candidate(name=mode, mode=mode))
            continue
        for multiple in pad_multiples:
            name = mode if multiple == fields[PADDING_SETTING].default else f"{mode}, pad {multiple}"
            candidates.append(Candidate(name=name, mode=mode, settings={PADDING_SETTING: multiple}))
    return candidates


def _timing_batches(settings: BestSettings, context: StageContext) -> dict[str, list[dict]]:
    dev = model_inputs(context.data.task, next(iter(context.data.dev.values())))
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
    if quantized := getattr(model.config, QUANTIZATION_FIELD, None):
        raise CompressError(f"best: starts from an fp32 ONNX export, and its source is already quantized ({quantized['mode']})")
    modes, not_run_here = settings.chosen_candidates()
    primary = context.data.task.primary_metric

    def score(artifact) -> float:
        return evaluate(predictor_for(artifact), context.data, context.tokenizer, context.max_length, context.eval_batch_size)[primary]

    export_score = score(model)
    threads = settings.threads or psutil.cpu_count(logical=False) or psutil.cpu_count()
    batches = _timing_batches(settings, context)
    candidates = {c.name: c for c in candidates_for(modes, methods, settings.pad_multiples)}
    runners: dict[str, Callable] = {}
    scratch = context.output_dir / CANDIDATES_DIR
    scratch.mkdir()  # never one that was there before: removing it at the end removes only what this stage wrote
    folders = {name: scratch / str(index) for index, name in enumerate(candidates)}
    for name, candidate in candidates.items():
        folder = folders[name]
        folder.mkdir()
        try:
            if candidate.mode == KEEP_EXPORT:
                built, candidate.score = _keep_export(model, folder), export_score
            else:
                method = methods[candidate.mode]
                method_settings = method.settings_for(candidate.mode, settings.seed, settings.calibration_examples, **candidate.settings)
                built = method.apply(model, method_settings, replace(context, output_dir=folder)).model
                candidate.score = score(built)
            run = predictor_for(built, threads)
            for batch in distinct_batches(batches):
                run(batch)  # an engine that cannot run (or compile for) a timed input fails here, not mid-timing
        except Exception as error:  # a candidate that fails is reported and the others still compete
            candidate.error = failure(error)
            continue
        runners[name] = run
        candidate.size_mb = round(size_on_disk(folder) / 1e6, 2)
        # the export is its own reference (even where its score is NaN, as a constant regression output's correlation is)
        candidate.within_budget = candidate.mode == KEEP_EXPORT or 100 * (export_score - candidate.score) <= settings.score_budget

    # the host's MatMul peaks timed in the same rounds, so that a slow spell moves a candidate and its peak alike
    with LoadElsewhere() as elsewhere:
        per_round = timed_in_turns({**runners, **peak_runners(threads)}, batches, settings.rounds)
    peak_ms = take_peaks(per_round)
    peaks = peaks_of_rounds(peak_ms)
    work = {length: matmul_gop(model.config, [tuple(b["input_ids"].shape) for b in calls]) for length, calls in batches.items()}
    for name, by_length in per_round.items():
        candidate = candidates[name]
        candidate.p50_ms = {length: round(float(np.median(ms)), 3) for length, ms in by_length.items()}
        if candidate.mode in methods:  # the export itself (`none`, no method) keeps the default, fp32
            candidate.matmul_dtype = methods[candidate.mode].matmul_dtype
        dtype = candidate.matmul_dtype
        candidate.fraction_of_peak = {length: fractions_in_turns(work[length], ms, {dtype: peak_ms[dtype][length]})[dtype]
                                      for length, ms in by_length.items() if work[length] and dtype in peak_ms}
        if KEEP_EXPORT in per_round:
            candidate.speedup_over_export = {
                length: round(float(np.median(np.array(per_round[KEEP_EXPORT][length]) / np.array(ms))), 3)
                for length, ms in by_length.items()}

    allowed = [candidates[name] for name in runners if candidates[name].within_budget]
    if not allowed:
        raise CompressError(f"best: no candidate scored within {settings.score_budget:g} points of the export's "
                            f"{primary} ({export_score:.4f}): " + _scores(candidates.values()))
    kept = {length: _kept_at(allowed, length, settings.tie_margin) for length in batches}
    chosen = kept[str(settings.choose_by)]
    for entry in folders[chosen].iterdir():
        entry.rename(context.output_dir / entry.name)
    shutil.rmtree(scratch)  # made above by this stage, inside its own unfinished (.partial) folder

    facts = FastestFacts(chosen=chosen, choose_by=str(settings.choose_by), primary_metric=primary, export_score=export_score,
                         score_budget_points=settings.score_budget, batch_size=settings.batch_size, threads=threads,
                         rounds=settings.rounds, tie_margin=settings.tie_margin, kept_by_length=kept, candidates=list(candidates.values()),
                         matmul_gop={length: round(gop, 3) for length, gop in work.items() if gop}, matmul_peaks_gops=peaks,
                         not_run_here=not_run_here,
                         timing_other_cpu_load=elsewhere.cores)
    console = Console()
    console.print(candidates_table(facts))
    if contended(facts.timing_other_cpu_load):
        console.print(f"[yellow]best[/]: other work used {facts.timing_other_cpu_load:.2f} CPU cores while the candidates "
                      f"were timed (at least {CONTENDED_LOAD} counts as busy): their times are slower than on a quiet "
                      "machine, and the pick may differ; run it again with the machine quiet")
    for c in facts.candidates:
        if c.error:
            console.print(f"[yellow]best[/]: candidate {c.name} failed here: {c.error}")
    return StageOutput(load_artifact(context.output_dir), facts)


def _kept_at(allowed: list[Candidate], length: str, tie_margin: float) -> str:
    """The candidate kept at one timed length: of those within `tie_margin` of the fastest time (a
    difference timing noise can make), the smallest on disk."""
    fastest = min(c.p50_ms[length] for c in allowed)
    tied = [c for c in allowed if c.p50_ms[length] <= fastest * (1 + tie_margin)]
    return min(tied, key=lambda c: (c.size_mb, c.p50_ms[length])).name


def _scores(candidates) -> str:
    return ", ".join(f"{c.name} {c.score:.4f}" if c.score is not None else f"{c.name} failed" for c in candidates)


def candidates_table(facts: FastestFacts) -> Table:
    """Each candidate's score, size and times, the kept one marked: which engine wins at which length."""
    lengths = list(facts.kept_by_length)
    table = Table(title=f"best: {facts.chosen} kept, the fastest at length {facts.choose_by} within {facts.score_budget_points:g} points "
                        f"of the export ({facts.primary_metric} {facts.export_score:.4f}; times within {facts.tie_margin:.0%} count as "
                        f"tied, the smallest kept); batch {facts.batch_size}, {facts.threads} threads, {facts.rounds} rounds in turns"
                        + (f"; in brackets the export's time over the candidate's; after them, the share of this host's MatMul peak in the "
                           f"candidate's arithmetic, timed in the same rounds ({describe_peaks(facts.matmul_peaks_gops, facts.threads)}), that the model's "
                           f"MatMul work reaches (GOP per call: " + ", ".join(f"{k} {v:.2f}" for k, v in facts.matmul_gop.items()) + ")"
                           if facts.matmul_peaks_gops else ""))
    table.add_column("candidate")
    table.add_column(facts.primary_metric, justify="right")
    table.add_column("size MB", justify="right")
    for length in lengths:
        table.add_column(f"p50 ms, {length}", justify="right")
    for c in facts.candidates:
        if c.error:
            table.add_row(c.name, "failed", "", *([""] * len(lengths)))
            continue
        delta = 100 * (c.score - facts.export_score)
        times = [f"{c.p50_ms[length]:.2f}" + (f" ({c.speedup_over_export[length]:.2f}x)" if c.speedup_over_export else "")
                 + (f" {c.fraction_of_peak[length]:.0%} {c.matmul_dtype}" if length in c.fraction_of_peak else "")
                 + (" kept" if facts.kept_by_length[length] == c.name else "") for length in lengths]
        marker = " (chosen)" if c.name == facts.chosen else "" if c.within_budget else " (over budget)"
        table.add_row(c.name + marker, f"{c.score:.4f} ({delta:+.2f})", f"{c.size_mb:.1f}", *times)
    return table


METHODS.add("best", QuantizationMethod(BestSettings, "onnx", "runtime", runs_anywhere, "best", "best", "*",
    lambda model, settings, context: pick_fastest(model, settings, context, METHODS), chooses=True))
