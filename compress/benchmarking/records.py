"""Benchmark records: one JSON line per measured (or failed) combination in `results.jsonl`.

`BenchRecord` is the one shape records are written in and read back as, from the loop that measures
them to the report that draws them. Older files still load: each older version is migrated on read
(`MIGRATIONS`), so every committed table can be drawn again from its records unchanged.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from compress.errors import CompressError
from compress.folders import append_text, refuse_link
from compress.versions import VersionedRecord

RESULTS_FILE = "results.jsonl"


def version_1_to_2(record: dict) -> dict:
    """Version 1, written before the one executor (and before the version was), holds the same fields,
    fewer of them: what it lacks (`measured_in`, `identity`, `matmul_peaks_gops`) was not recorded, and stays None."""
    return record


MIGRATIONS = (version_1_to_2,)
RECORD_VERSION = len(MIGRATIONS) + 1
"""2: since the one executor."""


class Timing(BaseModel):
    model_config = ConfigDict(extra="forbid")

    batch_size: int
    sequence_length: str
    """A number of tokens, or "task": batches of real dev examples at their own lengths."""
    p50_ms: float
    p95_ms: float
    throughput: float
    """Examples per second at the median."""
    threads: int
    device: str
    other_cpu_load: float | None = None
    """CPU cores' worth of work done elsewhere during the timed calls (None: too short to tell, or not measured)."""
    matmul_gop: float | None = None
    """The layers' MatMul work per call in billions of operations (records from before it was counted: None)."""
    fraction_of_int8_peak: float | None = None
    """`matmul_gop` over p50, as a share of this host's int8 MatMul peak measured in the same run (CPU timings)."""
    fraction_of_fp32_peak: float | None = None


class DevPredictions(BaseModel):
    """A row's prediction for every example of its task's first dev split, in the split's order: class ids, or a
    regression task's scores. Two rows' predictions on the same examples pair their comparison
    (compress/benchmarking/predictions.py)."""

    split: str
    labels: list
    predicted: list


FINISHED_FIELDS = ("metrics", "primary_metric", "score", "layers", "parameters", "size_mb")
"""What every finished ("ok") record holds: the score and the figures each table row shows."""


class BenchRecord(VersionedRecord):
    """A combination (model, task, strategy, K, training, precision; a recipe's name when a list of recipes
    was benchmarked), its status, and what was measured of its model."""

    model_config = ConfigDict(extra="forbid")
    MIGRATIONS = MIGRATIONS

    schema_version: int = RECORD_VERSION
    key: str
    model: str
    task: str
    strategy: str
    k: int
    training: str
    precision: str
    recipe: str | None = None
    finished: str | None = None
    status: Literal["ok", "failed"]
    error: str | None = None
    seconds_total: float | None = None
    # Only finished ("ok") records have these.
    metrics: dict[str, float] | None = None
    primary_metric: str | None = None
    score: float | None = None
    score_stderr: float | None = None
    """Standard error over the choice of dev examples."""
    majority_score: float | None = None
    """What always predicting the majority training label scores (None for regression tasks)."""
    layers: int | None = None
    kept_layers: list[int] | None = None
    parameters: int | None = None
    size_mb: float | None = None
    latency: list[Timing] | None = None
    peak_memory_mb: float | None = None
    threads: int | None = None
    device: str | None = None
    environment: dict | None = None
    """Libraries and processor features the timings depend on."""
    matmul_peaks_gops: dict[str, float] | None = None
    """This host's int8 and fp32 MatMul throughput on the timing's threads, measured in the run (CPU timings)."""
    train_seconds: float | None = None
    train_other_cpu_load: float | None = None
    trained_in: str | None = None
    """The trained model's folder under work/ (rows that share a student share it)."""
    measured_in: str | None = None
    """The measured model's folder under work/."""
    identity: str | None = None
    """The measured model's stage identity: a row whose recipe changed makes another model."""
    seconds: dict | None = None
    """Where the combination's time went: load, evaluate, timing, memory, build, stages by name, overhead."""
    notes: dict | None = None
    dev_predictions: DevPredictions | None = Field(None, exclude=True, repr=False)
    """Handed from the row's measurement to the process that keeps its record, which writes them to the results
    folder's dev_predictions.json: never a field of results.jsonl."""

    @model_validator(mode="after")
    def _finished_has_its_figures(self):
        """A finished record holds what the tables read of it: refused when read, not when a table is drawn."""
        if self.status == "ok":
            missing = [field for field in FINISHED_FIELDS if getattr(self, field) is None]
            if missing:
                raise ValueError(f"status 'ok' needs {', '.join(FINISHED_FIELDS)}; missing: {', '.join(missing)}")
            if self.primary_metric not in self.metrics:
                raise ValueError(f"primary_metric '{self.primary_metric}' is not among the metrics ({', '.join(self.metrics)})")
        return self

    def line(self) -> str:
        """The record as one JSON line: fields a row does not have (a failed row's scores) are left out."""
        return json.dumps({k: v for k, v in self.model_dump(mode="json").items() if v is not None}) + "\n"


def read_records(path: Path) -> list[BenchRecord]:
    """Records of a results.jsonl file, or of the one inside a results folder (none if it is missing),
    checked and migrated."""
    path = path / RESULTS_FILE if path.is_dir() else path
    if not path.exists():
        return []
    try:
        content = path.read_bytes()
    except OSError as error:
        raise CompressError(f"{path}: cannot read ({error.strerror})") from None
    records = []
    for number, line in enumerate(content.split(b"\n"), start=1):
        if line.strip():
            try:
                record = BenchRecord.read(json.loads(line.decode("utf-8")))
            except UnicodeDecodeError as error:
                raise CompressError(f"{path}: line {number}: not UTF-8 text (byte {error.start} of the line); "
                                    "expected one benchmark record per line") from None
            except json.JSONDecodeError as error:
                raise CompressError(f"{path}: line {number}: not JSON ({error.msg}, column {error.colno}); "
                                    "expected one benchmark record per line") from None
            except ValidationError as error:
                problem = error.errors()[0]
                where = ".".join(map(str, problem["loc"])) or "record"
                raise CompressError(f"{path}: line {number}: {where}: {problem['msg'].removeprefix('Value error, ')}; "
                                    "expected one benchmark record per line") from None
            records.append(record)
    return records


def append_record(path: Path, record: BenchRecord) -> None:
    append_text(path, record.line())


def merge_records(records: list[BenchRecord]) -> list[BenchRecord]:
    """One record per combination: a finished one wins over a failed one, the later (by the time it
    finished, whatever folder or shard it comes from) over the earlier."""
    chosen: dict[str, BenchRecord] = {}
    for record in sorted(records, key=lambda r: r.finished or ""):
        previous = chosen.get(record.key)
        if previous is None or record.status == "ok" or previous.status != "ok":
            chosen[record.key] = record
    return list(chosen.values())


def drop_cut_record(path: Path) -> bool:
    """Remove a last line that a killed run left half-written, so the next record starts on a line of
    its own; True if there was one. A last line that lacks only its newline (JSON that parses) is a
    whole record: it is kept, and given its newline."""
    if not path.exists():
        return False
    refuse_link(path)
    content = path.read_bytes()
    if not content or content.endswith(b"\n"):
        return False
    start = content.rfind(b"\n") + 1
    try:
        json.loads(content[start:])
    except ValueError:  # cut short: not JSON, or cut inside a character
        os.truncate(path, start)
        return True
    append_text(path, "\n")
    return False
