"""Running a sweep: build each combination's model once, share what combinations have in common,
and append one record per finished combination to results.jsonl (so an interrupted sweep resumes).

Shared work lives under `<out>/work/`, one folder per built model, each written as `<name>.partial`
and renamed when whole: the teacher once per model and task, a dropped-and-trained student once
per strategy, K and training, and each export or quantization of it once.

`CombinationRunner` is the loop itself (build, measure, append a record), shared with benchmarks
of a list of recipes (compress/benchmarking/bench_recipes.py); `SweepRunner` builds a sweep's combinations.
"""

from __future__ import annotations

import json
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from compress.benchmarking.latency import (
    LoadElsewhere,
    contended,
    device_name,
    device_of,
    fixed_length_batch,
    measure,
    task_length_batches,
    timing_environment,
)
from compress.benchmarking.memory import serving_peak_mb
from compress.benchmarking.report import RESULTS_FILE, drop_cut_record, merge_records, read_records
from compress.benchmarking.sweep import FULL, Combination, LatencySettings, Sweep, runnable_here
from compress.data.loading import TaskData, load_task_data
from compress.errors import CompressError
from compress.evaluation.evaluate import evaluate, predictor_for
from compress.evaluation.metrics import majority_class_metrics
from compress.folders import claim, holding, writing
from compress.pipeline.artifacts import Artifact, load_artifact, parameter_count, size_on_disk
from compress.pipeline.models import load_config, load_for_task, load_tokenizer
from compress.stages import StageContext, StageSettings, run_stage
from compress.stages.distill import DistillSettings
from compress.stages.drop import DropSettings
from compress.stages.export import ExportSettings
from compress.stages.finetune import FinetuneSettings
from compress.stages.quantize import QuantizeSettings
from compress.surgery.architectures import num_layers
from compress.surgery.layer_drop import kept_original_layers

BUILD_FILE = "built.json"
MIN_TIMED_CALLS = 10
"""Fewest timed calls per latency figure (large batches get fewer calls than batch 1, never fewer than this)."""
SETTINGS_FILE = "sweep-settings.json"
BUILD_SETTINGS = ("tasks", "max_length", "seed", "contribution_examples", "calibration_examples", "training", "distillation")
"""Sweep fields that shape the models built under work/: a folder built with other values is not reused."""
TIMING_SETTINGS = "latency"


def guard_settings(sweep: Sweep, out_dir: Path, retime: bool = False) -> None:
    """Refuse to mix builds made with other settings into this sweep's folder, or rows timed with other
    latency settings (measuring every finished row again, `retime`, may change those); then record them."""
    current = json.loads(sweep.model_dump_json(include={*BUILD_SETTINGS, TIMING_SETTINGS}))
    path = out_dir / SETTINGS_FILE
    previous = read_settings(path) if path.exists() else {}
    changed = [field for field in BUILD_SETTINGS if field in previous and previous[field] != current[field]]
    if changed:
        raise CompressError(f"{out_dir}: holds models built with other {', '.join(changed)}; use another --out for this sweep")
    timed_before = previous.get(TIMING_SETTINGS)
    if timed_before and timed_before != current[TIMING_SETTINGS] and not retime and read_records(out_dir):
        raise CompressError(
            f"{out_dir}: its rows were timed with other latency settings ({timed_before}); add --retime to time "
            "every finished row with this sweep's, or use another --out"
        )
    path.write_text(json.dumps(current, indent=2) + "\n")


def read_settings(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        raise CompressError(f"{path}: not a JSON object; restore it from the sweep's first run, or use another --out") from None


def shared_settings(folders: list[Path]) -> dict | None:
    """The sweep settings that shard folders have in common (None for folders of recipe benchmarks);
    folders of sweeps run with other settings cannot go into one table."""
    found = {folder: read_settings(folder / SETTINGS_FILE) if (folder / SETTINGS_FILE).exists() else None for folder in folders}
    first, settings = next(iter(found.items()))
    for folder, other in found.items():
        if other != settings:
            fields = sorted(f for f in {*(settings or {}), *(other or {})} if (settings or {}).get(f) != (other or {}).get(f))
            raise CompressError(f"merge: {folder} was run with other sweep settings than {first} ({', '.join(fields) or SETTINGS_FILE}); "
                                "merge only shards of one sweep")
    return settings


def precision_steps(sweep: Sweep) -> dict[str, list[tuple[str, StageSettings]]]:
    """How each precision is made from the trained PyTorch model: (folder name, stage settings) in order."""
    export = ("onnx-fp32", ExportSettings())
    fused = ("onnx-fp32-o2", ExportSettings(optimization="O2"))  # onnxruntime's attention/LayerNorm/GELU fusions
    quantize = lambda mode, **extra: QuantizeSettings(mode=mode, seed=sweep.seed, **extra)  # noqa: E731
    return {
        "torch-fp32": [],
        "onnx-fp32": [export],
        "onnx-int8-dynamic": [export, ("onnx-int8-dynamic", quantize("dynamic-int8"))],
        "onnx-fp32-o2": [fused],
        "onnx-int8-dynamic-o2": [fused, ("onnx-int8-dynamic-o2", quantize("dynamic-int8"))],
        "onnx-int8-static": [
            export,
            ("onnx-int8-static", quantize("static-int8", calibration_examples=sweep.calibration_examples)),
        ],
        "torch-int8": [("torch-int8", quantize("torch-dynamic-int8"))],
        "bnb-8bit": [("bnb-8bit", quantize("bnb-8bit"))],
        "bnb-4bit": [("bnb-4bit", quantize("bnb-4bit"))],
        "fp16": [("fp16", quantize("fp16"))],
    }


def model_slug(model: str) -> str:
    """A model name as one folder name (hub ids contain '/')."""
    return model.replace("/", "--")


TO_RUN, DONE, NEEDS_CUDA, NOT_FINISHED = "to run", "done", "needs CUDA", "not finished"


class NotBuilt(CompressError):
    """A trained model that measuring again (--retime) needs is not in work/; nothing is trained to replace it."""

    @classmethod
    def untrained(cls, folder: Path) -> NotBuilt:
        return cls(f"{folder} is not trained in this folder (work/ is not committed); run the sweep without --retime to train it")


TRAINING_STAGES = ("finetune", "distill")
CONVERSION_STAGES = ("export", "quantize")
"""Stages that only convert a trained model (seconds, no training): measuring again may run them."""


def plan(combinations: list[Combination], records: list[dict], retry_failed: bool = False, retime: bool = False) -> dict[str, str]:
    """What a run does with each combination (by key), given the records already written: runs it
    (`to run`), skips it as `done` or as `needs CUDA`; with `retime`, runs only finished ones."""
    ok = {r["key"] for r in records if r["status"] == "ok"}
    recorded = {r["key"] for r in records}

    def status(c: Combination) -> str:
        if not runnable_here(c):
            return NEEDS_CUDA
        if retime:
            return TO_RUN if c.key in ok else NOT_FINISHED
        return DONE if c.key in ok or (c.key in recorded and not retry_failed) else TO_RUN

    return {c.key: status(c) for c in combinations}


@dataclass(frozen=True)
class Scoring:
    """How a combination's model is scored on dev and timed on real examples."""

    data: TaskData
    tokenizer: object
    max_length: int
    eval_batch_size: int
    seed: int


class CombinationRunner:
    """The loop every benchmark shares: build what is missing, measure, append one record per
    combination. Subclasses say how a combination's model is built (`artifact`), scored (`scoring`)
    and what its build recorded (`build_record`)."""

    def __init__(self, out_dir: Path, latency: LatencySettings, console: Console):
        self.out_dir = out_dir
        self.work = out_dir / "work"
        self.latency = latency
        self.console = console
        self._tokenizers: dict = {}
        self.stage_seconds: dict[str, float] = {}
        """Seconds each stage (finetune, drop, export, ...) spent building for the current combination."""
        self.finished: dict[str, dict] | None = None
        """While measuring again, the finished record of each combination (None while building): a trained
        model missing from work/ is then an error, never made (an export or quantization of one that is
        there still is)."""

    def tokenizer(self, model: str):
        if model not in self._tokenizers:
            self._tokenizers[model] = load_tokenizer(model)
        return self._tokenizers[model]

    def check_out_dir(self, retime: bool) -> None:
        """Refuse an output folder whose builds (or, unless measuring again, timings) this run must not
        mix with its own (nothing to check by default)."""

    def artifact(self, c: Combination) -> tuple[Path | None, Path]:
        """The folder of the trained model (None if nothing was trained) and of the combination's
        model, built if missing."""
        raise NotImplementedError

    def scoring(self, c: Combination) -> Scoring:
        raise NotImplementedError

    def build_record(self, folder: Path) -> dict:
        """What building `folder` recorded: at least `seconds`, `parameters` and `notes`."""
        raise NotImplementedError

    # --- measuring -----------------------------------------------------------------------------

    def measure(self, c: Combination, trained_folder: Path | None, folder: Path) -> dict:
        latency = self.latency
        scoring = self.scoring(c)
        data, tokenizer = scoring.data, scoring.tokenizer
        started = time.perf_counter()
        device = "cuda" if torch.cuda.is_available() else None
        model = load_artifact(folder, device)
        loaded = time.perf_counter()
        metrics = evaluate(predictor_for(model), data, tokenizer, scoring.max_length, scoring.eval_batch_size)
        evaluated = time.perf_counter()

        dev = next(iter(data.dev.values()))
        timings = []
        fixed = {size: fixed_length_batch(dev["text_a"], tokenizer, size, latency.sequence_length) for size in latency.batch_sizes}
        for batch_size in latency.batch_sizes:
            repeats = max(MIN_TIMED_CALLS, round(latency.repeats / math.sqrt(batch_size)))
            timings.append(measure(model, [fixed[batch_size]], latency.threads, str(latency.sequence_length), latency.warmup, repeats))
            if latency.task_lengths:  # a fresh random draw of dev examples for every timed call
                real = task_length_batches(dev, tokenizer, batch_size, scoring.max_length, count=repeats, seed=scoring.seed)
                timings.append(measure(model, real, latency.threads, "task", latency.warmup, repeats))
        timed = time.perf_counter()
        peak_memory = serving_peak_mb(folder, fixed[max(latency.batch_sizes)], device, latency.threads)
        measured_memory = time.perf_counter()
        busiest = max((t.other_cpu_load for t in timings if t.other_cpu_load is not None), default=None)
        if contended(busiest):
            self.console.print(f"[yellow]busy machine[/]: other work used {busiest:.1f} CPU cores while {c.label} was timed; "
                               "its latencies are slower than on a quiet machine (--retime measures again)")

        built = self.build_record(folder)
        trained = self.build_record(trained_folder) if trained_folder else {}  # None: nothing was trained
        config = model.config
        task = data.task
        majority = majority_class_metrics(task, data.train["label"], dev["label"])
        return {
            "metrics": metrics,
            "primary_metric": task.primary_metric,
            "score": metrics[task.primary_metric],
            "score_stderr": metrics.get(f"{task.primary_metric}_stderr"),  # over the choice of dev examples
            "majority_score": majority and majority[task.primary_metric],  # what learning nothing scores
            "layers": num_layers(config),
            "kept_layers": kept_original_layers(config),
            "parameters": built["parameters"] or trained.get("parameters"),
            "size_mb": round(size_on_disk(folder) / 1e6, 2),
            "latency": [t.as_dict() for t in timings],
            "peak_memory_mb": peak_memory,
            "threads": latency.threads,
            "device": device_name(device_of(model)),
            "environment": timing_environment(device_of(model)),  # libraries and processor features the timings depend on
            "train_seconds": trained.get("seconds"),
            "train_other_cpu_load": trained.get("other_cpu_load"),  # None from builds before it was measured
            "trained_in": str(trained_folder.relative_to(self.work)) if trained_folder else None,  # rows sharing a student
            "seconds": {
                "load": round(loaded - started, 1),
                "evaluate": round(evaluated - loaded, 1),
                "timing": round(timed - evaluated, 1),
                "memory": round(measured_memory - timed, 1),
            },
            "notes": built["notes"],
        }

    # --- the loop ------------------------------------------------------------------------------

    def run(self, combinations: list[Combination], retry_failed: bool = False, retime: bool = False) -> list[dict]:
        """Run what results.jsonl does not hold yet; with `retime`, only measure the finished combinations
        again from their builds (nothing is trained), appending records that supersede the earlier ones."""
        claim(self.out_dir, overwrite=False, what="benchmark results")
        with holding(self.out_dir):
            return self._run(combinations, retry_failed, retime)

    def _run(self, combinations: list[Combination], retry_failed: bool, retime: bool) -> list[dict]:
        results_path = self.out_dir / RESULTS_FILE
        self.check_out_dir(retime)
        if drop_cut_record(results_path):
            self.console.print(f"[yellow]note[/]: {results_path} ended in a record cut short (an interrupted run); "
                               "it was removed and that combination runs again")
        earlier = read_records(results_path)
        self.finished = {r["key"]: r for r in merge_records(earlier) if r["status"] == "ok"} if retime else None
        statuses = plan(combinations, earlier, retry_failed, retime)
        todo = [c for c in combinations if statuses[c.key] == TO_RUN]
        if retime:
            self.console.print(f"{len(combinations)} combinations: {len(todo)} finished ones to measure again, nothing to train")
        else:
            counts = Counter(statuses.values())
            self.console.print(
                f"{len(combinations)} combinations: {counts[DONE]} already done, "
                f"{counts[NEEDS_CUDA]} need CUDA (skipped here), {len(todo)} to run"
            )
        records = []
        columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(), TextColumn("left"), TimeRemainingColumn())
        with Progress(*columns, console=self.console, transient=False) as progress:
            bar = progress.add_task("sweep", total=len(todo))
            for c in todo:
                progress.update(bar, description=f"{c.model} {c.task}: {c.label}")
                started = time.perf_counter()
                self.stage_seconds = {}
                record = {"key": c.key, **c.record_fields(), "finished": None}
                try:
                    trained, folder = self.artifact(c)
                    built = time.perf_counter()
                    record.update(status="ok", **self.measure(c, trained, folder))
                    record["seconds"]["build"] = round(built - started, 1)
                except NotBuilt as error:  # its finished record stays the one that counts
                    self.console.print(f"[yellow]not measured again[/] {c.label}: {error}")
                    progress.advance(bar)
                    continue
                except Exception as error:  # one failed combination is recorded and the sweep goes on
                    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
                    record.update(status="failed", error=f"{type(error).__name__}: {message}")
                    self.console.print(f"[red]failed[/] {c.key}: {record['error']}")
                record["seconds_total"] = round(time.perf_counter() - started, 1)
                if record["status"] == "ok":
                    # the harness's own time: all but the stages' work, the dev evaluation and the measured runs (timing, memory)
                    seconds = record["seconds"]
                    seconds["stages"] = dict(self.stage_seconds)
                    measured = sum(self.stage_seconds.values()) + seconds["evaluate"] + seconds["timing"] + seconds["memory"]
                    # max(): each part is rounded to 0.1 s, so their sum can pass the total by 0.1
                    seconds["overhead"] = max(0.0, round(record["seconds_total"] - measured, 1))
                record["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
                with results_path.open("a") as out:
                    out.write(json.dumps(record) + "\n")
                records.append(record)
                progress.advance(bar)
        return records


class SweepRunner(CombinationRunner):
    def __init__(self, sweep: Sweep, out_dir: Path, console: Console):
        super().__init__(out_dir, sweep.latency, console)
        self.sweep = sweep
        self.steps = precision_steps(sweep)
        self._data: dict[str, TaskData] = {}

    def data(self, task: str) -> TaskData:
        if task not in self._data:
            self._data[task] = load_task_data(task, self.sweep.tasks[task])
        return self._data[task]

    def scoring(self, c: Combination) -> Scoring:
        return Scoring(self.data(c.task), self.tokenizer(c.model), self.sweep.max_length, self.sweep.eval_batch_size, self.sweep.seed)

    def build_record(self, folder: Path) -> dict:
        return json.loads((folder / BUILD_FILE).read_text())

    def check_out_dir(self, retime: bool) -> None:
        guard_settings(self.sweep, self.out_dir, retime)

    # --- building models once ------------------------------------------------------------------

    def build(self, folder: Path, settings: StageSettings, source: Callable[[], Artifact], c: Combination) -> Path:
        """Apply one stage to the source model into `folder`, unless an earlier run already did."""
        if (folder / BUILD_FILE).exists():
            return folder
        if settings.stage not in CONVERSION_STAGES and self.finished is not None:
            raise NotBuilt.untrained(folder)
        self.console.print(f"  building {folder.relative_to(self.work)}")
        started = time.perf_counter()
        model = source()
        with writing(folder) as partial:
            scoring = self.scoring(c)
            context = StageContext(scoring.data, scoring.tokenizer, partial, scoring.max_length, scoring.eval_batch_size)
            stage_started = time.perf_counter()
            with LoadElsewhere() as elsewhere:  # training time on a shared machine is only as good as its quiet
                built = run_stage(settings, model, context)
            spent = time.perf_counter() - stage_started
            self.stage_seconds[settings.stage] = round(self.stage_seconds.get(settings.stage, 0.0) + spent, 1)
            record = {
                "stage": settings.model_dump(by_alias=True),
                "parameters": parameter_count(built),  # None for exported/quantized: they keep the trained count
                "seconds": round(time.perf_counter() - started, 1),
                "other_cpu_load": None if elsewhere.cores is None else round(elsewhere.cores, 2),
                "notes": context.notes,
            }
            (partial / BUILD_FILE).write_text(json.dumps(record, indent=2) + "\n")
        return folder

    def base_model(self, c: Combination) -> Artifact:
        return load_for_task(c.model, self.data(c.task).task, self.tokenizer(c.model), self.sweep.seed)

    def teacher(self, c: Combination) -> Path:
        folder = self.work / model_slug(c.model) / c.task / FULL / "finetune" / "torch-fp32"
        return self.build(folder, FinetuneSettings(**self.sweep.training.model_dump()), lambda: self.base_model(c), c)

    def trained(self, c: Combination) -> Path:
        if c.strategy == FULL:
            return self.teacher(c)
        root = self.work / model_slug(c.model) / c.task / f"{c.strategy}-k{c.k}"
        own = root / c.training / "torch-fp32"
        if (own / BUILD_FILE).exists():  # its dropped model is not needed (`compress bench clean` removes it)
            return own
        if self.finished is not None:  # measuring again: its record says which layers it kept; nothing is built
            same = self.trained_with_layers(c, self.finished[c.key]["kept_layers"])
            if same:
                return same
            raise NotBuilt.untrained(own)
        drop = DropSettings(strategy=c.strategy, k=c.k, examples=self.sweep.contribution_examples, seed=self.sweep.seed)
        dropped = self.build(root / "dropped", drop, lambda: self.base_model(c), c)
        same = self.trained_with_layers(c, kept_original_layers(load_config(dropped)))
        if same:
            return same
        if c.training == "distill":
            settings = DistillSettings(
                **self.sweep.training.model_dump(), **self.sweep.distillation.model_dump(), teacher=str(self.teacher(c))
            )
        else:
            settings = FinetuneSettings(**self.sweep.training.model_dump())
        return self.build(own, settings, lambda: load_artifact(dropped), c)

    def trained_with_layers(self, c: Combination, kept: list[int]) -> Path | None:
        """A student another strategy already trained from the same kept layers (e.g. alternate-even and
        top at K=1): the same weights, head seed and training, so the same model; it is reused."""
        task_folder = self.work / model_slug(c.model) / c.task
        for build in sorted(task_folder.glob(f"*/{c.training}/torch-fp32/{BUILD_FILE}")):
            # a trained model's config keeps the original indices of its layers
            if kept_original_layers(load_config(build.parent)) == kept:
                return build.parent
        return None

    def artifact(self, c: Combination) -> tuple[Path, Path]:
        """The trained student and, built from it, the combination's model in its precision."""
        trained = folder = self.trained(c)
        steps = self.steps[c.precision]
        if steps and (trained.parent / steps[-1][0] / BUILD_FILE).exists():  # its intermediate export may be cleaned away
            return trained, trained.parent / steps[-1][0]
        for name, settings in steps:
            source = folder
            folder = self.build(folder.parent / name, settings, lambda source=source: load_artifact(source), c)
        return trained, folder


def measured_folder(record: dict) -> Path:
    """Where under work/ a sweep record's model is: its trained student, or the conversion of it named
    after the precision (each precision's last step folder carries its name)."""
    trained = Path(record["trained_in"])
    return trained if record["precision"] == "torch-fp32" else trained.parent / record["precision"]


def removable_builds(out_dir: Path) -> list[Path]:
    """What a sweep's work/ holds that neither its records nor a later run need: untrained dropped
    models, exports made only as a step towards a quantized model, and builds cut short (`.partial`).
    Every trained model (student or teacher) and every measured model stays, so `--retime` measures
    every row again and a resumed sweep trains nothing twice (it drops layers again in seconds)."""
    work = out_dir / "work"
    counted = [r for r in merge_records(read_records(out_dir)) if r["status"] == "ok"]
    unplaced = [r["key"] for r in counted if not r.get("trained_in")]
    if unplaced:
        raise CompressError(f"clean: {out_dir / RESULTS_FILE}: {len(unplaced)} records (e.g. {unplaced[0]}) do not say which model "
                            "they measured (field trained_in, which older records lack); measure them again with --retime first")
    measured = {work / measured_folder(r) for r in counted}
    removable = [p for p in work.rglob("*.partial") if p.is_dir()]
    for build in sorted(work.rglob(BUILD_FILE)):
        try:
            stage = json.loads(build.read_text())["stage"]["stage"]
        except (ValueError, KeyError, TypeError):
            raise CompressError(f"clean: {build}: not a build record (expected JSON with stage.stage); nothing was removed") from None
        if stage not in TRAINING_STAGES and build.parent not in measured:
            removable.append(build.parent)
    return sorted(removable)
