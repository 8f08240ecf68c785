"""Benchmarking rows (compress/benchmarking/rows.py): build each row's model with the executor, measure
it (dev score, size, latency, memory), and append one record per finished or failed row to
results.jsonl, so an interrupted benchmark resumes where it stopped; each row's dev predictions go beside, to
dev_predictions.json, for paired comparisons (compress/benchmarking/predictions.py).

Every model is a node of the stage graph in the executor's cache under `<out>/work/`, one folder per
node (model, task, stage and identity in its name): the teacher once per model and task, a student
once per kept layers and training, each export or quantization of it once, whichever rows share them.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

import torch
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from compress.benchmarking.memory import serving_peak_mb
from compress.benchmarking.precisions import PRECISIONS
from compress.benchmarking.predictions import PREDICTIONS_FILE, check_predictions, keep_record, merged_predictions, predictions_of, write_predictions
from compress.benchmarking.records import RESULTS_FILE, BenchRecord, drop_cut_record, merge_records, read_records
from compress.benchmarking.report import REPORT_FILES, ReportRow, write_report
from compress.benchmarking.rows import BenchRow, trained_node
from compress.benchmarking.sweep import LatencySettings, Sweep
from compress.data.encoding import model_inputs
from compress.errors import CompressError, failure
from compress.evaluation.evaluate import dev_outputs, evaluate, split_metrics
from compress.evaluation.metrics import majority_class_metrics
from compress.folders import CHECKPOINTS, PARTIAL, check_writable, claimed, holding, refuse_link, remove_ours, require_ours, safe_folder_name, write_text
from compress.models.artifacts import load_artifact, predictor_for, size_on_disk
from compress.pipeline.cache import STAGE_FILE, StageCache, StageRecord
from compress.pipeline.executor import Executor, NotBuilt
from compress.pipeline.graph import StageNode
from compress.stages import STAGES
from compress.timing.latency import (
    Latency,
    device_name,
    device_of,
    fixed_length_batch,
    measure,
    task_length_batches,
    timing_environment,
)
from compress.timing.load import contended
from compress.timing.roofline import matmul_gop, matmul_peaks, peak_fractions

WORK = "work"
MIN_TIMED_CALLS = 10
"""Fewest timed calls per latency figure (large batches get fewer calls than batch 1, never fewer than this)."""
SETTINGS_FILE = "sweep-settings.json"
BUILD_SETTINGS = ("tasks", "max_length", "seed", "contribution_examples", "calibration_examples", "training", "distillation")
"""Sweep fields that shape its models: rows recorded with other values are not taken as this sweep's."""
TIMING_SETTINGS = "latency"


def guard_settings(sweep: Sweep | None, out_dir: Path, retime: bool = False, latency: LatencySettings | None = None) -> None:
    """Refuse to mix rows built with other settings into this sweep's folder, or rows timed with other
    latency settings (measuring every finished row again, `retime`, may change those); then record them.
    Recipes (`sweep` None) are timed with `latency`."""
    if sweep is not None:
        current = json.loads(sweep.model_dump_json(include={*BUILD_SETTINGS, TIMING_SETTINGS}))
    else:  # each recipe's row is told apart by its identity; only the timing is shared
        current = {TIMING_SETTINGS: latency.model_dump(mode="json")}
    path = out_dir / SETTINGS_FILE
    recorded_rows = bool(read_records(out_dir))
    if path.exists():
        previous = read_settings(path)
    elif sweep is None and recorded_rows:  # recipes benched before their timing was recorded: the defaults
        previous = {TIMING_SETTINGS: LatencySettings().model_dump(mode="json")}
    else:
        previous = {}
    changed = [field for field in BUILD_SETTINGS if field in previous and field in current and previous[field] != current[field]]
    if changed:
        raise CompressError(f"{out_dir}: holds rows built with other {', '.join(changed)}; use another --out for this sweep")
    timed_before = previous.get(TIMING_SETTINGS)
    if timed_before and timed_before != current[TIMING_SETTINGS] and not retime and recorded_rows:
        raise CompressError(
            f"{out_dir}: its rows were timed with other latency settings ({timed_before}); add --retime to time "
            "every finished row with these, or use another --out"
        )
    write_text(path, json.dumps({**previous, **current}, indent=2) + "\n")


def with_defaults(field: str, value):
    """A recorded sweep setting as this version writes it: a field added since (training's `precision`, say)
    takes its default, so a folder of an older version is not taken for one built otherwise."""
    if field not in Sweep.model_fields:
        return value
    adapter = TypeAdapter(Sweep.model_fields[field].annotation)
    try:
        return adapter.dump_python(adapter.validate_python(value), mode="json", exclude_none=False)
    except ValidationError:
        return value


def read_settings(path: Path) -> dict:
    """A sweep's recorded settings, with the defaults of fields added since it was written."""
    try:
        recorded = json.loads(path.read_bytes())
    except ValueError:  # not JSON, or not UTF-8
        recorded = None
    if not isinstance(recorded, dict):
        raise CompressError(f"{path}: not a JSON object; restore it from the sweep's first run, or use another --out")
    return {field: with_defaults(field, value) for field, value in recorded.items()}


def shared_settings(folders: list[Path]) -> dict | None:
    """The settings that shard folders have in common (a sweep's, or the timing of recipes; None for folders
    that record none); folders run with other settings cannot go into one table."""
    found = {folder: read_settings(folder / SETTINGS_FILE) if (folder / SETTINGS_FILE).exists() else None for folder in folders}
    first, settings = next(iter(found.items()))
    for folder, other in found.items():
        if other != settings:
            fields = sorted(f for f in {*(settings or {}), *(other or {})} if (settings or {}).get(f) != (other or {}).get(f))
            raise CompressError(f"merge: {folder} was run with other sweep settings than {first} ({', '.join(fields) or SETTINGS_FILE}); "
                                "merge only shards of one sweep")
    return settings


TO_RUN, DONE, CANNOT_RUN, NOT_FINISHED = "to run", "done", "not here", "not finished"


def plan(rows: list[BenchRow], records: list[BenchRecord], retry_failed: bool = False, retime: bool = False,
         rebuild: frozenset[str] = frozenset()) -> dict[str, str]:
    """What a run does with each row (by key), given the records already written: runs it (`to run`),
    skips it as `done` or as `not here` (this machine cannot run its precision); with `retime`, runs only
    finished ones; a finished row in `rebuild` (its model is not in this folder: `missing_models`) runs again.
    A record of the row's name that measured another model (its recipe was changed since) is refused: the
    folder's table would mix the two."""
    ok = {r.key for r in records if r.status == "ok"}
    recorded = {r.key for r in records}
    measured = {r.key: r.identity for r in records if r.identity}
    for row in rows:
        if measured.get(row.combination.key, row.node.identity) != row.node.identity:
            raise CompressError(f"{row.origin}: the results folder holds a record of another version of it ({row.combination.label}); "
                                "use another --out, or delete that folder")

    def status(row: BenchRow) -> str:
        key = row.combination.key
        if PRECISIONS[row.combination.precision].cannot_run():
            return CANNOT_RUN
        if key in rebuild:
            return TO_RUN
        if retime:
            return TO_RUN if key in ok else NOT_FINISHED
        return DONE if key in ok or (key in recorded and not retry_failed) else TO_RUN

    return {row.combination.key: status(row) for row in rows}


def missing_models(out_dir: Path, records: list[BenchRecord]) -> frozenset[str]:
    """The finished rows whose measured model is not in the folder's work/: measured on another machine (a merged
    shard, a folder carried over), so measuring them again here would have nothing to measure."""
    return frozenset(r.key for r in merge_records(records)
                     if r.status == "ok" and r.measured_in and not (out_dir / WORK / r.measured_in).is_dir())


def work_folder_name(node: StageNode) -> str:
    """A node's folder under work/: readable (model, task, kind of stage) and one per identity, whichever
    recipe and stage name ask for it."""
    return f"{safe_folder_name(node.recipe.model)}/{safe_folder_name(node.recipe.task)}/{node.settings.stage}-{node.identity[:12]}"


class Benchmark:
    """The loop every benchmark runs: build what is missing, measure, append one record per row."""

    def __init__(self, out_dir: Path, latency: LatencySettings, console: Console, sweep: Sweep | None = None, peak_memory: bool = True):
        self.out_dir = out_dir
        self.work = out_dir / WORK
        self.latency = latency
        self.peak_memory = peak_memory
        """Measure each row's serving peak memory (a fresh process per row, which first imports the libraries)."""
        self.console = console
        self.sweep = sweep
        self.executor = Executor(StageCache(self.work, work_folder_name), console)

    def run(self, rows: list[BenchRow], retry_failed: bool = False, retime: bool = False, command: str | None = None,
            rebuild_missing: bool = False) -> list[ReportRow]:
        """Run what results.jsonl does not hold yet; with `retime`, only measure the finished rows again
        from their builds (nothing is trained), appending records that supersede the earlier ones; with
        `rebuild_missing`, also build again (training too) and measure the finished rows whose models are not
        in work/, their new records superseding the earlier ones. Then the
        folder's tables and plots are drawn again from all its records (`command`: the one written above
        them); returns the table's rows."""
        check_writable(self.out_dir)
        for name in (RESULTS_FILE, SETTINGS_FILE, PREDICTIONS_FILE, *REPORT_FILES):  # refused now, not once every row is measured
            refuse_link(self.out_dir / name)
        check_predictions(self.out_dir)
        with claimed(self.out_dir, "benchmark results"):
            self._run(rows, retry_failed, retime, rebuild_missing)
            return write_report(read_records(self.out_dir), self.out_dir, command)

    def _run(self, rows: list[BenchRow], retry_failed: bool, retime: bool, rebuild_missing: bool) -> None:
        results_path = self.out_dir / RESULTS_FILE
        if drop_cut_record(results_path):  # before the records are read, here and by guard_settings
            self.console.print(f"[yellow]note[/]: {results_path} ended in a record cut short (an interrupted run); "
                               "it was removed and that combination runs again")
        guard_settings(self.sweep, self.out_dir, retime, self.latency)
        earlier = read_records(results_path)
        rebuild = missing_models(self.out_dir, earlier) if rebuild_missing else frozenset()
        statuses = plan(rows, earlier, retry_failed, retime, rebuild)
        todo = [row for row in rows if statuses[row.combination.key] == TO_RUN]
        self.executor.may_train = not retime
        if retime:
            self.console.print(f"{len(rows)} combinations: {len(todo)} finished ones to measure again, nothing to train")
        else:
            counts = Counter(statuses.values())
            again = len(rebuild & {row.combination.key for row in todo})
            self.console.print(f"{len(rows)} combinations: {counts[DONE]} already done, "
                               f"{counts[CANNOT_RUN]} cannot run on this machine (skipped here), {len(todo)} to run"
                               + (f" ({again} finished elsewhere, built again here)" if rebuild_missing else ""))
        # measuring again without memory keeps each row's memory measured before (the same build)
        memory_before = {} if self.peak_memory else {r.key: r.peak_memory_mb for r in merge_records(earlier) if r.status == "ok"}
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            bar = progress.add_task("benchmark", total=len(todo))
            for record in self.records(todo, lambda text: progress.update(bar, description=text)):
                if record is not None:  # only this process appends, one whole line per row
                    if record.status == "ok" and record.peak_memory_mb is None:
                        record.peak_memory_mb = memory_before.get(record.key)
                    keep_record(self.out_dir, record)
                progress.advance(bar)

    def session(self) -> AbstractContextManager:
        """Held around work this executor runs outside `run` (the goal search's rounds): here, nothing."""
        return nullcontext()

    def records(self, todo: list[BenchRow], announce: Callable[[str], None]) -> Iterator[BenchRecord | None]:
        """Each row's record as it finishes (None: measuring again found its trained model missing).
        Here one row after another in this process; compress/benchmarking/ray_executor.py spreads them over a cluster."""
        for row in todo:
            c = row.combination
            announce(f"{c.model} {c.task}: {c.label}")
            yield self.measured_row(row)

    def build(self, row: BenchRow) -> tuple[StageNode, Path, StageRecord]:
        """The node of the row's measured model, its folder and record: built if the cache lacks it."""
        return row.node, *self.executor.ensure(row.node)

    def measured_row(self, row: BenchRow) -> BenchRecord | None:
        """The record of one row: built and measured, or failed; None when measuring again finds its trained model missing."""
        c = row.combination
        started = time.perf_counter()
        built_before = len(self.executor.built)
        fields = {"key": c.key, **c.record_fields()}
        try:
            node, folder, built = self.build(row)
            trained = trained_node(node)
            trained_folder, trained_record = self.executor.ensure(trained) if trained else (None, None)
            build_seconds = time.perf_counter() - started
            measured = self.measure(row, node, folder, built, trained_folder, trained_record)
        except NotBuilt as error:  # its finished record stays the one that counts
            self.console.print(f"[yellow]not measured again[/] {c.label}: {error}")
            return None
        except Exception as error:  # one failed row is recorded and the benchmark goes on
            self.console.print(f"[red]failed[/] {c.key}: {failure(error)}")
            return BenchRecord(**fields, status="failed", error=failure(error),
                               seconds_total=round(time.perf_counter() - started, 1), finished=now_utc())
        total = round(time.perf_counter() - started, 1)
        stages: dict[str, float] = {}
        for record in self.executor.built[built_before:]:  # each stage's time is charged to the row that built it
            stages[record.stage] = round(stages.get(record.stage, 0.0) + record.seconds, 1)
        seconds = {**measured.pop("seconds"), "build": round(build_seconds, 1), "stages": stages}
        spent = sum(stages.values()) + seconds["evaluate"] + seconds["timing"] + seconds["memory"]
        # the harness's own time; max(): each part is rounded to 0.1 s, so their sum can pass the total by 0.1
        seconds["overhead"] = max(0.0, round(total - spent, 1))
        return BenchRecord(**fields, status="ok", **measured, seconds=seconds, seconds_total=total, finished=now_utc())

    def measure(self, row: BenchRow, node: StageNode, folder: Path, built: StageRecord,
                trained_folder: Path | None, trained: StageRecord | None) -> dict:
        latency, recipe = self.latency, row.recipe
        data, tokenizer = self.executor.data(recipe), self.executor.tokenizer(recipe.model)
        started = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else None
        model = load_artifact(folder, device)
        loaded = time.perf_counter()
        task = data.task
        if task.embedding:  # scored from its vectors, no outputs per example: as its build scored it (if it trained)
            metrics = built.metrics or evaluate(predictor_for(model), data, tokenizer, recipe.max_length, recipe.eval_batch_size)
            predictions = None
        else:  # scored as loaded and timed, its predictions kept for paired comparisons
            outputs = dev_outputs(predictor_for(model), data, tokenizer, recipe.max_length, recipe.eval_batch_size)
            metrics, predictions = split_metrics(task, outputs), predictions_of(task, outputs)
            primary = task.primary_metric
            if built.metrics and abs(built.metrics.get(primary, math.nan) - metrics[primary]) > 1e-9:
                self.console.print(f"[yellow]note[/]: {row.combination.label} scores {primary} {metrics[primary]:.4f} as loaded here, "
                                   f"{built.metrics.get(primary, math.nan):.4f} when it was built ({folder / 'stage.json'}); the table holds the first")
        evaluated = time.perf_counter()

        dev = next(iter(data.dev.values()))
        inputs = model_inputs(data.task, dev)  # as the model takes them: an embedder, each text alone
        # The host's MatMul peaks, measured once per run before the first timing (CPU timings only).
        peaks = None if device else matmul_peaks(latency.threads)

        def timed_with_work(batches: list[dict], label: str, repeats: int) -> Latency:
            timing = measure(model, batches, latency.threads, label, latency.warmup, repeats)
            gop = matmul_gop(model.config, [tuple(b["input_ids"].shape) for b in batches])
            fractions = peak_fractions(gop, timing.p50_ms, peaks) if peaks and gop else {}
            return replace(timing, matmul_gop=gop and round(gop, 3), fraction_of_int8_peak=fractions.get("int8"),
                           fraction_of_fp32_peak=fractions.get("fp32"))

        timings = []
        fixed = {size: fixed_length_batch(inputs["text_a"], tokenizer, size, latency.sequence_length) for size in latency.batch_sizes}
        for batch_size in latency.batch_sizes:
            repeats = max(MIN_TIMED_CALLS, round(latency.repeats / math.sqrt(batch_size)))
            timings.append(timed_with_work([fixed[batch_size]], str(latency.sequence_length), repeats))
            if latency.task_lengths:  # a fresh random draw of dev examples for every timed call
                real = task_length_batches(inputs, tokenizer, batch_size, recipe.max_length, count=repeats, seed=recipe.seed)
                timings.append(timed_with_work(real, "task", repeats))
        timed = time.perf_counter()
        peak_memory = serving_peak_mb(folder, fixed[max(latency.batch_sizes)], device, latency.threads) if self.peak_memory else None
        measured_memory = time.perf_counter()
        busiest = max((t.other_cpu_load for t in timings if t.other_cpu_load is not None), default=None)
        if contended(busiest):
            self.console.print(f"[yellow]busy machine[/]: other work used {busiest:.1f} CPU cores while {row.combination.label} was timed; "
                               "its latencies are slower than on a quiet machine (--retime measures again)")
        majority = majority_class_metrics(task, data.train["label"], dev["label"])
        return {
            "metrics": metrics,
            "primary_metric": task.primary_metric,
            "score": metrics[task.primary_metric],
            "score_stderr": metrics.get(f"{task.primary_metric}_stderr"),
            "majority_score": majority and majority[task.primary_metric],
            "layers": built.layers,
            "kept_layers": built.kept_layers,
            "parameters": built.parameters,
            "size_mb": round(size_on_disk(folder) / 1e6, 2),
            "latency": [t.as_dict() for t in timings],
            "peak_memory_mb": peak_memory,
            "threads": latency.threads,
            "device": device_name(device_of(model)),
            "environment": timing_environment(device_of(model)),
            "matmul_peaks_gops": peaks,
            "train_seconds": trained and trained.seconds,
            "train_other_cpu_load": trained and trained.other_cpu_load,
            "trained_in": str(trained_folder.relative_to(self.work)) if trained_folder else None,
            "measured_in": str(folder.relative_to(self.work)),
            "identity": node.identity,
            "seconds": {
                "load": round(loaded - started, 1),
                "evaluate": round(evaluated - loaded, 1),
                "timing": round(timed - evaluated, 1),
                "memory": round(measured_memory - timed, 1),
            },
            "notes": built.notes,
            "dev_predictions": predictions,
        }


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def removable_builds(out_dir: Path) -> list[Path]:
    """What a benchmark's work/ holds that neither its records nor a later run need: models no stage
    trained (dropped models, exports made only as a step towards a quantized model) that no record
    measured, builds cut short (`.partial`) and the training checkpoints of models that are whole (left
    by a kill between the two). Every trained model stays, so `--retime` measures every row again and a
    resumed benchmark trains nothing twice (it drops layers again in seconds); so do the checkpoints of
    an unfinished training, which a later run resumes from."""
    work = out_dir / WORK
    measured = {work / r.measured_in for r in merge_records(read_records(out_dir)) if r.status == "ok" and r.measured_in}
    removable = [p for p in work.rglob(f"*{PARTIAL}") if p.is_dir()]
    removable += [p for p in work.rglob(f"*{CHECKPOINTS}")
                  if p.is_dir() and (p.with_name(p.name.removesuffix(CHECKPOINTS)) / STAGE_FILE).is_file()]
    for folder, record in StageCache(work, work_folder_name).records():
        if not STAGES[record.stage].trains and folder not in measured:
            removable.append(folder)
    return sorted(removable)


def clean_builds(folder: Path, dry_run: bool) -> tuple[list[Path], int]:
    """Remove (or with `dry_run` only list) `removable_builds` of a benchmark folder; returns them and the bytes freed."""
    require_ours(folder, "clean")
    if not (folder / RESULTS_FILE).is_file():
        raise CompressError(f"clean: {folder / RESULTS_FILE} not found; expected the results folder of a benchmark")
    with holding(folder):
        removable = removable_builds(folder)
        for path in removable:  # all checked before any is removed
            require_ours(path, "remove (nothing was removed)")
        freed = sum(f.stat().st_size for p in removable for f in p.rglob("*") if f.is_file())
        if not dry_run:
            for path in removable:
                remove_ours(path)
    return removable, freed


def merge_results(folders: list[Path], out: Path, command: str) -> list[BenchRecord]:
    """Join the records of several shards' folders into `out`, with its tables and plots; returns the records.
    Every input is read and checked before anything is written."""
    if out.exists() and not out.is_dir():
        raise CompressError(f"--out: {out} is a file; expected a folder for the merged results")
    found = {folder: read_records(folder) for folder in folders}
    missing = [str(f) for f, records in found.items() if not records]
    if missing:
        raise CompressError(f"merge: no {RESULTS_FILE} in {', '.join(missing)}")
    settings = shared_settings(folders)
    predictions = merged_predictions(folders)
    records = [r for shard in found.values() for r in shard]
    if read_records(out) and out.resolve() not in {f.resolve() for f in folders}:
        raise CompressError(f"--out: {out} holds results of its own, which merging would replace; name it among the "
                            "folders to merge, or choose another --out")
    with claimed(out, "benchmark results"):
        if settings is not None:  # the merged folder resumes or retimes like one run of the sweep
            write_text(out / SETTINGS_FILE, json.dumps(settings, indent=2) + "\n")
        write_text(out / RESULTS_FILE, "".join(r.line() for r in records))
        if predictions is not None:
            write_predictions(out, predictions)
        write_report(records, out, command)
    return records
