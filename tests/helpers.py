"""Helpers the test modules share: running the CLI in-process, writing recipes, checking one-line errors,
and fingerprinting a folder to prove nothing in it changed."""

from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

import yaml
from typer.testing import CliRunner

from compress.benchmarking.records import BenchRecord
from compress.cli import app
from compress.pipeline.cache import STAGE_FILE

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
GLUE = REPO.parent / "shared" / "glue"
"""Real GLUE train/dev files beside the checkout (never copied into it); tests that need them skip without them."""


def invoke(*args):
    return CliRunner().invoke(app, [str(a) for a in args], env={"COLUMNS": "200"})


QUICK_TIMING = ("--no-peak-memory", "--latency", "batch_sizes=[1]", "--latency", "repeats=3", "--latency", "warmup=0",
                "--latency", "task_lengths=false")
"""`compress bench` options that time recipes' rows in a few calls, without the fresh process per row that
measures memory (the tests of the figures themselves time and measure in full)."""


def bench(*args):
    """`compress bench ...` in-process."""
    return invoke("bench", *args)


def build_stamps(out: Path) -> dict[Path, int]:
    """When each finished model under a benchmark's work/ was written: unchanged stamps prove nothing was rebuilt."""
    return {p: p.stat().st_mtime_ns for p in (out / "work").rglob(STAGE_FILE)}


def write_recipe(folder: Path, name: str, recipe: dict) -> Path:
    file = folder / f"{name}.yaml"
    file.write_text(yaml.safe_dump(recipe, sort_keys=False))
    return file


def assert_one_line_error(result, *expected: str) -> str:
    """Exit 2, nothing on stdout, one line on stderr holding every expected piece; returns the line."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    line = lines[0]
    assert line.startswith("error: "), line
    for piece in expected:
        assert piece in line, f"{piece!r} not in {line!r}"
    return line


def folder_checksum(folder: Path) -> dict[str, str]:
    """Every file and folder below `folder` (hidden ones too) with a digest of its bytes and its mtime:
    equal before and after means not a byte, a name nor a timestamp changed."""
    entries = {}
    for path in sorted(folder.rglob("*")):
        key = str(path.relative_to(folder))
        if path.is_file():
            entries[key] = f"{hashlib.sha256(path.read_bytes()).hexdigest()} {path.stat().st_mtime_ns}"
        else:
            entries[key] = "folder"
    return entries


def assert_scored_on(metrics: dict, examples: int) -> None:
    """An accuracy counted over `examples` dev examples: a whole number of them right, with the bootstrap
    standard error present (zero only for a score of 0 or 1)."""
    accuracy = metrics["accuracy"]
    assert abs(accuracy * examples - round(accuracy * examples)) < 1e-6, (accuracy, examples)
    assert (metrics["accuracy_stderr"] > 0) == (0 < accuracy < 1), metrics


def bench_record(latency: list[dict] = (), **fields) -> BenchRecord:
    """A finished record of the fields a report test names; what it leaves out is filled with placeholders."""
    timing = {"p95_ms": 0.0, "throughput": 0.0, "threads": 2, "device": "cpu: a"}
    finished = {"key": "k", "model": "m", "task": "t", "strategy": "top", "k": 0, "training": "finetune", "precision": "torch-fp32",
                "status": "ok", "primary_metric": "accuracy", "score": 0.9, "layers": 6, "parameters": 1, "size_mb": 1.0}
    record = {**finished, **fields}
    return BenchRecord(**record, metrics={record["primary_metric"]: record["score"]}, latency=[{**timing, **t} for t in latency])


GOAL = {
    "model": "minilm-l6",
    "task": "rotten-tomatoes",
    "data": {"source": "embedded", "max_train_examples": 240, "max_eval_examples": 80},
    "max_length": 32,
    "max_score_drop": 100.0,  # every student qualifies: the search must find the largest K it may try
    "training": {"epochs": 1, "batch_size": 16, "learning_rate": 1.0e-4},
    "search": {"strategies": ["top", "bottom"], "k": [2, 4], "training": ["finetune"], "precisions": ["torch-fp32", "onnx-int8-dynamic"]},
    "objective": {"threads": 1},
}
"""A goal for `compress optimize` at tiny size: real trainings of the embedded MiniLM in seconds."""


def write_goal(folder: Path, **changes) -> Path:
    file = folder / "goal.yaml"
    file.write_text(yaml.safe_dump({**GOAL, **changes}, sort_keys=False))
    return file


def load_bench_script(name: str):
    """A script of bench/ as a module (bench/ is not a package; its scripts import each other as siblings)."""
    folder = Path(__file__).resolve().parents[1] / "bench"
    if str(folder) not in sys.path:  # as running the script puts its folder first: its sibling imports resolve
        sys.path.insert(0, str(folder))
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
