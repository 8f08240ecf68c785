"""`compress bench --executor ray` on a real local Ray instance of two workers (this machine's two
cores): the same records as the local executor, each model built by one task for the whole run,
a driver killed mid-sweep and run again, and a failing task recorded as a failed row."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest
import yaml
from rich.console import Console

from compress.benchmarking.records import read_records
from compress.benchmarking.sweep import Sweep, sweep_rows
from compress.pipeline.cache import STAGE_FILE, read_stage_record
from tests.helpers import GOAL, QUICK_TIMING, bench, invoke, write_goal

ray = pytest.importorskip("ray")
pytestmark = pytest.mark.slow

from compress.benchmarking.ray_executor import RayBenchmark  # noqa: E402

SWEEP = {
    "name": "tiny-ray",
    "models": ["minilm-l6"],
    "tasks": {"rotten-tomatoes": {"source": "embedded", "max_train_examples": 32, "max_eval_examples": 32}},
    "max_length": 32,
    "training": {"epochs": 1, "batch_size": 16},
    "latency": {"batch_sizes": [1], "repeats": 3, "warmup": 0, "task_lengths": False},
    "grids": [{"strategies": ["top", "alternate-even"], "k": [1], "training": ["finetune"], "precisions": ["torch-fp32"]},
              {"strategies": ["top"], "k": [1], "training": ["distill"], "precisions": ["torch-fp32"]}],
}
ROWS = 5  # the two baselines, top and alternate-even fine-tuned (one student), top distilled


def write_sweep(folder: Path) -> Path:
    path = folder / "sweep.yaml"
    path.write_text(yaml.safe_dump(SWEEP, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance in this process for the module's runs that start none of their own: a run
    joins a Ray instance that is already up and leaves it up, and its workers stay warm (torch and the
    data loaded) for the next test."""
    from compress.benchmarking.ray_executor import connect

    assert connect(None), "no Ray instance was up before"
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def both(module_folder, local_ray):
    """The sweep run by the local executor (through the CLI) and by Ray (in this process, to see its tasks)."""
    folder = module_folder("ray")
    sweep_file = write_sweep(folder)
    local = bench(sweep_file, "--no-peak-memory", "--out", folder / "local")
    assert local.exit_code == 0, local.output
    sweep = Sweep.model_validate(SWEEP)
    benchmark = RayBenchmark(folder / "ray", sweep.latency, Console(quiet=True), sweep, peak_memory=False)
    benchmark.run(sweep_rows(sweep))
    return folder, benchmark


def test_ray_makes_the_records_the_local_executor_makes(both):
    folder, _ = both
    local = {r.key: r for r in read_records(folder / "local")}
    distributed = {r.key: r for r in read_records(folder / "ray")}
    assert len(local) == len(distributed) == ROWS and local.keys() == distributed.keys()
    for key, row in distributed.items():
        assert row.status == "ok", row
        for field in ("score", "metrics", "kept_layers", "parameters", "identity", "measured_in", "trained_in", "size_mb"):
            assert getattr(row, field) == getattr(local[key], field), (key, field)  # seeded training, the same thread count: the same model
        assert row.latency[0].p50_ms > 0 and row.seconds["overhead"] >= 0


def test_each_model_is_built_by_one_task_for_the_whole_run(both):
    folder, benchmark = both
    built = Counter(benchmark.submitted)
    assert all(count == 1 for count in built.values()), built
    records = [read_stage_record(p.parent) for p in (folder / "ray" / "work").rglob(STAGE_FILE)]
    full = [r for r in records if r.stage == "finetune" and r.layers == 6]
    assert len(full) == 1, "the teacher is the baseline's model: trained once"
    assert sorted(r.stage for r in records) == sorted(["finetune", "export", "quantize", "drop", "finetune", "distill"])
    assert len(benchmark.submitted) == len(records), "one task per model, none for a model another row shares"
    # each build's time is charged once, to the first row that needed it
    charged = Counter(stage for r in read_records(folder / "ray") for stage in r.seconds["stages"])
    assert charged == Counter({"finetune": 2, "export": 1, "quantize": 1, "drop": 1, "distill": 1})


def raylets() -> set[int]:
    return {p.pid for p in psutil.process_iter(["name", "cmdline"]) if "raylet" in " ".join(p.info["cmdline"] or [])}


def test_a_killed_driver_loses_no_record_and_a_second_run_finishes(tmp_path, local_ray):
    sweep_file, out = write_sweep(tmp_path), tmp_path / "out"
    before = raylets()  # this process's own instance among them: the driver below starts another
    command = [str(Path(sys.executable).with_name("compress")), "bench", str(sweep_file), "--no-peak-memory", "--out", str(out),
               "--executor", "ray"]
    driver = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.monotonic() + 300
    while not (results.exists() and results.read_text().count("\n") >= 1) and driver.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert driver.poll() is None, "killed mid-sweep, not after it"
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    first = read_records(out)
    assert 1 <= len(first) < ROWS
    gone = time.monotonic() + 30  # Ray's own processes share the driver's fate
    while raylets() - before and time.monotonic() < gone:
        time.sleep(0.5)
    assert not raylets() - before, "the local Ray instance outlived its driver"

    result = bench(sweep_file, "--no-peak-memory", "--out", out, "--executor", "ray")
    assert result.exit_code == 0, result.output
    keys = [r.key for r in read_records(out)]
    assert len(keys) == len(set(keys)) == ROWS, "no row lost, none twice"
    assert read_records(out)[: len(first)] == first


def test_a_task_that_raises_is_a_failed_row_and_the_rest_finish(tmp_path, local_ray):
    def recipe(name, export):
        content = {"name": name, "model": "minilm-l6", "task": "rotten-tomatoes", "data": SWEEP["tasks"]["rotten-tomatoes"],
                   "max_length": 32, "stages": [{"stage": "drop", "strategy": "top", "k": 2}, {"stage": "finetune", "epochs": 1},
                                                {"stage": "export", **export}]}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(content, sort_keys=False))
        return path

    never = recipe("never-parity", {"tolerance": 1e-30})  # no export can be that close
    result = bench(never, *QUICK_TIMING, "--out", tmp_path / "out", "--executor", "ray")
    assert result.exit_code == 0, result.output
    records = read_records(tmp_path / "out")
    failed = {r.recipe: r.error for r in records if r.status != "ok"}
    assert len(records) == 3, "the two baseline rows (the rest, which finish) and the recipe"
    assert list(failed) == ["never-parity"] and "ONNX logits differ" in failed["never-parity"]


def test_the_goal_search_on_ray_asks_the_trials_the_local_executor_asks(tmp_path, local_ray):
    """A round's trials run in parallel on two workers; the answers decide the next round, so the same trials are asked."""
    goal = write_goal(tmp_path, max_score_drop=1.0, search={**GOAL["search"], "k": [1, 2, 3, 4, 5]})
    runs = {}
    for executor in ("local", "ray"):
        result = invoke("optimize", goal, "--out", tmp_path / executor, "--executor", executor)
        assert result.exit_code == 0, result.output
        runs[executor] = {r.key: r for r in read_records(tmp_path / executor)}
    assert runs["local"].keys() == runs["ray"].keys()
    for key, record in runs["ray"].items():
        assert record.status == "ok", key
        # Seeded: the same models, up to float noise between processes (which int8 of a near-chance model can turn into a flipped label).
        if record.precision == "torch-fp32":
            assert record.score == runs["local"][key].score, key
    chosen = [json.loads((tmp_path / executor / "summary.json").read_text()) for executor in ("local", "ray")]
    assert chosen[0]["trainings"] == chosen[1]["trainings"] >= 3
    assert {c["reference_points"] for c in chosen} == {chosen[0]["reference_points"]}


def test_an_address_without_ray_is_refused_with_one_line(tmp_path):
    result = bench(write_sweep(tmp_path), "--out", tmp_path / "out", "--address", "auto")
    assert result.exit_code == 2 and "--address: only used with --executor ray" in result.output
    result = bench(write_sweep(tmp_path), "--out", tmp_path / "out", "--executor", "dask")
    assert result.exit_code == 2 and "--executor: expected one of local, ray (got 'dask')" in result.output
    assert not (tmp_path / "out").exists()
