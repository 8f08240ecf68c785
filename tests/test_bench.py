"""The benchmark harness: sweep expansion and validation, shared builds, resume, shards, reports."""

import json
import shutil
import struct
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import onnxruntime
import pytest
import torch
import yaml
from safetensors.torch import load_file

from compress.benchmarking.bench import SETTINGS_FILE, Benchmark, guard_settings
from compress.benchmarking.predictions import PairedErrors
from compress.benchmarking.records import read_records
from compress.benchmarking.report import (
    _mark_majority,
    fastest_table,
    markdown_table,
    pareto_front,
    strategy_table,
    timed_with_full_model,
    with_deltas,
    write_report,
)
from compress.benchmarking.rows import FULL
from compress.benchmarking.sweep import Grid, Sweep, expand, load_sweep, shard_rows, sweep_rows
from compress.errors import CompressError
from compress.folders import CHECKPOINTS, MARKER, claim
from compress.models.loading import load_config
from compress.pipeline.cache import STAGE_FILE, read_stage_record
from compress.timing.roofline import matmul_gop
from tests.helpers import assert_one_line_error, assert_scored_on, bench, bench_record, build_stamps, invoke

TINY = {
    "name": "tiny",
    "models": ["minilm-l6"],
    "tasks": {"rotten-tomatoes": {"source": "embedded", "max_train_examples": 32, "max_eval_examples": 32}},
    "max_length": 32,
    "contribution_examples": 16,
    "training": {"epochs": 1, "batch_size": 16},
    "latency": {"batch_sizes": [1], "repeats": 3, "warmup": 0, "task_lengths": False},
    "grids": [
        {"strategies": ["top", "alternate-even", "bottom"], "k": [1], "training": ["finetune"], "precisions": ["torch-fp32"]},
        {"strategies": ["top"], "k": [1], "training": ["finetune", "distill"], "precisions": ["torch-fp32"]},
    ],
}


def write_sweep(folder, content=TINY, name="sweep.yaml"):
    path = folder / name
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path



def builds(out: Path) -> dict[str, Path]:
    """Every finished model under a benchmark's work/, by '<stage>:<kept layers>' of its record (a
    name that says which model it is), with the folder; several folders of one name are listed once each."""
    found: dict[str, list[Path]] = {}
    for path in sorted((out / "work").rglob(STAGE_FILE)):
        record = read_stage_record(path.parent)
        found.setdefault(f"{record.stage}:{''.join(map(str, record.kept_layers))}", []).append(path.parent)
    return found



def test_expansion_is_the_union_of_grids_without_duplicates_plus_baselines():
    sweep = Sweep.model_validate({**TINY, "models": ["a", "b"]})
    combinations = expand(sweep)
    keys = [c.key for c in combinations]
    assert len(keys) == len(set(keys))
    # per model: 2 baselines + top/alternate-even/bottom k1 finetune + top k1 distill (top k1 finetune named twice)
    assert len(combinations) == 2 * (2 + 4)
    baselines = [c for c in combinations if c.strategy == FULL]
    assert {(c.model, c.precision) for c in baselines} == {(m, p) for m in "ab" for p in ("torch-fp32", "onnx-int8-dynamic")}
    assert Grid(strategies=["top"], k=[0]).k == [0]
    with_zero = expand(Sweep.model_validate({**TINY, "grids": [{"strategies": ["top", "bottom"], "k": [0], "training": ["distill"]}]}))
    assert [c.strategy for c in with_zero].count(FULL) == 2, "K=0 is the full model, whatever the strategy"


def test_expansion_runs_baselines_first_then_grids_in_file_order():
    grids = [{"strategies": ["top"], "k": [2], "training": ["distill"]}, {"strategies": ["bottom", "top"], "k": [1, 2]}]
    labels = [c.label for c in expand(Sweep.model_validate({**TINY, "grids": grids}))]
    assert labels == [
        "full torch-fp32", "full onnx-int8-dynamic", "top k=2 distill torch-fp32",
        "bottom k=1 finetune torch-fp32", "bottom k=2 finetune torch-fp32",
        "top k=1 finetune torch-fp32", "top k=2 finetune torch-fp32",
    ]


def test_shards_partition_the_combinations_without_splitting_a_trained_model():
    grids = [*TINY["grids"], {"strategies": ["top", "bottom"], "k": [1, 2], "training": ["finetune", "distill"],
                              "precisions": ["torch-fp32", "onnx-int8-dynamic"]}]
    rows = sweep_rows(Sweep.model_validate({**TINY, "models": ["a", "b", "c"], "grids": grids}))
    combinations = [row.combination for row in rows]
    slices = [[row.combination for row in shard_rows(rows, i, 3)] for i in (1, 2, 3)]
    assert sorted(c.key for s in slices for c in s) == sorted(c.key for c in combinations)
    assert all(s == [c for c in combinations if c in s] for s in slices), "each slice keeps the sweep's order"
    trained_in = {}  # the student (model, task, strategy, k, training) -> the one slice training it
    for index, s in enumerate(slices):
        for c in s:
            assert trained_in.setdefault((c.model, c.task, c.strategy, c.k, c.training), index) == index
    assert max(map(len, slices)) - min(map(len, slices)) <= 2, "within one student's rows (two precisions)"


def test_bad_sweep_lists_every_problem_before_any_work(tmp_path):
    bad = {
        **TINY,
        "tasks": {"sst9": {"source": "embedded"}, "rotten-tomatoes": {"source": "embedded"}},
        "grids": [{"strategies": ["top", "alternate-even"], "k": [4, 6], "precisions": ["torch-fp32"]}],
    }
    result = bench(write_sweep(tmp_path, bad), "--out", tmp_path / "out")
    assert result.exit_code == 2
    message = result.output.strip()
    assert len(message.splitlines()) == 1 and "sweep.yaml" in message
    assert "tasks.sst9" in message
    assert "(minilm-l6, top, k=6)" in message and "(minilm-l6, alternate-even, k=4)" in message
    assert not (tmp_path / "out").exists()

    schema = {**TINY, "grids": [{"strategies": ["middle"], "k": [1], "precisions": ["int3"]}]}
    result = bench(write_sweep(tmp_path, schema, "schema.yaml"), "--out", tmp_path / "out")
    assert result.exit_code == 2
    assert "grids[0].strategies[0]" in result.output and "grids[0].precisions[0]" in result.output


def test_pareto_front():
    points = [(10, 0.8), (5, 0.7), (20, 0.9), (12, 0.75), (5, 0.6)]
    assert pareto_front(points) == [1, 0, 2]


@pytest.mark.parametrize(("scores", "line_drawn"), [([0.90, 0.92], False), ([0.53, 0.66], True)], ids=["far-above", "near-chance"])
def test_majority_class_line_does_not_squeeze_points_far_above_it(scores, line_drawn):
    """SST-2 models at 0.90-0.92 over a majority class of 0.51: a line there would press them into a thin
    band; RTE students near chance keep it."""
    figure, axis = plt.subplots()
    axis.scatter([10, 20], scores)
    _mark_majority(axis, [bench_record(majority_score=0.51)], scores)
    noted = [t.get_text() for t in axis.texts if "majority class" in t.get_text()]
    plt.close(figure)
    assert noted == (["majority class"] if line_drawn else ["majority class: 0.5100 (below)"])
    assert (axis.get_ylim()[0] <= 0.51) == line_drawn


def test_strategy_table_has_the_papers_layout():
    def row(strategy, k, score, training="finetune", precision="torch-fp32", **fields):
        return bench_record(key=f"{strategy}|{k}|{training}|{precision}", task="sst2", strategy=strategy, k=k, training=training,
                            precision=precision, score=score, **fields)

    records = [row(FULL, 0, 0.90, majority_score=0.5), row("contribution", 2, 0.85), row("bottom", 2, 0.80), row("top", 4, 0.86),
               row("top", 2, 0.88), row("top", 2, 0.87, training="distill"), row("top", 2, 0.10, precision="onnx-int8-dynamic")]
    lines = strategy_table(with_deltas(records)).splitlines()
    # strategies in the paper's order, distilled rows last, only PyTorch fp32 scores
    assert lines == [
        "### m on sst2: accuracy by strategy and layers dropped (full model: 0.9000; majority class: 0.5000)",
        "",
        "| strategy | K=2 | K=4 |",
        "|---|---|---|",
        "| top | 0.8800 (-2.0) | 0.8600 (-4.0) |",
        "| bottom | 0.8000 (-10.0) |  |",
        "| contribution | 0.8500 (-5.0) |  |",
        "| top + distill | 0.8700 (-3.0) |  |",
    ]


@pytest.fixture(scope="module")
def finished_sweep(module_folder):
    folder = module_folder("bench")
    sweep = write_sweep(folder)
    result = bench(sweep, "--out", folder / "out")
    assert result.exit_code == 0, result.output
    return folder, sweep, result.output


def test_tiny_sweep_end_to_end(finished_sweep):
    folder, _, output = finished_sweep
    out = folder / "out"
    records = read_records(out)
    assert {r.status for r in records} == {"ok"}
    assert len(records) == 6
    by_name = {(r.strategy, r.k, r.training, r.precision): r for r in records}
    full, int8 = by_name[(FULL, 0, "finetune", "torch-fp32")], by_name[(FULL, 0, "finetune", "onnx-int8-dynamic")]
    top = by_name[("top", 1, "finetune", "torch-fp32")]
    assert full.layers == 6 and top.layers == 5 and top.kept_layers == [0, 1, 2, 3, 4]
    assert top.parameters < full.parameters and int8.parameters == full.parameters
    assert int8.size_mb < 0.35 * full.size_mb
    for r in records:
        assert_scored_on(r.metrics, TINY["tasks"]["rotten-tomatoes"]["max_eval_examples"])
        assert r.score == r.metrics["accuracy"] and r.latency[0].p50_ms > 0 and r.threads == 2
        load = r.latency[0].other_cpu_load  # None when the timed calls took too short a time to tell
        assert load is None or load >= 0
        assert r.peak_memory_mb > 0
        assert r.train_other_cpu_load is None or r.train_other_cpu_load >= 0  # None: trained too briefly to tell
        # the roofline: MatMul work per call (5 or 6 MiniLM layers, batch 1 at 128 tokens) against this run's measured peaks
        timing = r.latency[0]
        assert timing.sequence_length == "128"
        assert timing.matmul_gop == pytest.approx(matmul_gop(load_config("minilm-l6"), [(1, 128)]) * r.layers / 6, rel=1e-3)
        assert r.matmul_peaks_gops["int8"] > 0 and r.matmul_peaks_gops["fp32"] > 0
        achieved = timing.matmul_gop / (timing.p50_ms / 1000)
        assert timing.fraction_of_fp32_peak == pytest.approx(achieved / r.matmul_peaks_gops["fp32"], abs=1e-3)
    assert by_name[("top", 1, "distill", "torch-fp32")].notes["loss"] == "kl"
    # each stage's time is charged to the combination that built it, and only once
    assert full.seconds["stages"]["finetune"] > 0 and int8.seconds["stages"].keys() == {"export", "quantize"}
    assert top.seconds["stages"].keys() == {"drop", "finetune"}
    assert by_name[("top", 1, "distill", "torch-fp32")].seconds["stages"].keys() == {"distill"}
    assert all(0 <= r.seconds["overhead"] < r.seconds_total for r in records)
    # the noise of each score over the choice of 32 dev examples: about sqrt(p(1-p)/32), 0.06 to 0.09 here
    assert all(0.03 < r.score_stderr < 0.12 and r.metrics["accuracy_stderr"] == r.score_stderr for r in records)
    # the same learn-nothing score for every row: the majority training label's share of dev
    majority = {r.majority_score for r in records}
    assert len(majority) == 1 and 0.3 < majority.pop() < 0.8
    table = (out / "results.md").read_text()
    assert f"majority class: {full.majority_score:.4f}" in table
    assert "| top | 1 | distill | torch-fp32 |" in table and "Δ vs top-K" in table
    assert f"| {FULL} | 0 | finetune | torch-fp32 | {full.score:.4f} ± {full.score_stderr:.4f} |" in table
    top_delta = 100 * (top.score - full.score)
    assert f"| top | {top.score:.4f} ({top_delta:+.1f} ± " in table, "strategy x K table, paper layout"
    # every row's prediction per dev example is kept, in the dev set's order, and scores what its record says:
    # the changes in the tables carry their paired error
    kept = json.loads((out / "dev_predictions.json").read_text())
    labels = np.array(kept["tasks"]["rotten-tomatoes"]["labels"])
    assert len(labels) == 32 and kept["rows"].keys() == {r.measured_in for r in records}  # rows of one model: one entry
    for r in records:
        predicted = np.array(kept["rows"][r.measured_in]["predicted"])
        assert (predicted == labels).mean() == pytest.approx(r.score)
    rows = {(row.record.strategy, row.record.k, row.record.training, row.record.precision): row
            for row in with_deltas(records, PairedErrors([out]))}
    paired = rows[("top", 1, "finetune", "torch-fp32")]
    assert paired.delta_vs_full_stderr >= 0 and f"{paired.delta_vs_full:+.2f} ± {paired.delta_vs_full_stderr:.2f}" in table
    assert "paired over the dev examples both rows are scored on" in table
    assert "| top + distill | " in table
    assert "### minilm-l6 on rotten-tomatoes: the fastest engine and precision per timing, at most 0.5 points below PyTorch fp32" in table
    for plot in ("pareto.png", "layers_dropped.png", "size.png"):
        data = (out / plot).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", data[16:24])
        assert width > 300 and height > 200
    assert "combinations" in output and "left" in output
    # each record says what its timings were taken with, and so does the table
    libraries = full.environment["libraries"]
    assert libraries["torch"] == torch.__version__ and libraries["onnxruntime"] == onnxruntime.__version__
    assert f"Timed with Python {full.environment['python']}, torch {torch.__version__}, " in table
    assert "| MatMul GOP | of peak |" in table and f"{full.latency[0].fraction_of_fp32_peak:.0%} fp32 |" in table
    assert f"{int8.latency[0].fraction_of_int8_peak:.0%} int8 |" in table and "measured with onnxruntime in the same run" in table


def test_teacher_is_built_once_and_shared(finished_sweep):
    folder, _, _ = finished_sweep
    out = folder / "out"
    built = {name: len(folders) for name, folders in builds(out).items()}
    # the full model is trained once: the baseline rows and the distillation teacher share it; each
    # student is dropped once for its finetune and distill rows; alternate-even drops the same layer as
    # top at K=1 (layer 5), so its dropped model and student are top's, not made again
    assert built == {"finetune:012345": 1, "export:012345": 1, "quantize:012345": 1, "drop:01234": 1, "drop:12345": 1,
                     "finetune:01234": 1, "finetune:12345": 1, "distill:01234": 1}
    records = {r.strategy: r for r in read_records(out) if r.k == 1 and r.training == "finetune"}
    assert records["alternate-even"].trained_in == records["top"].trained_in == records["top"].measured_in
    assert records["alternate-even"].score == records["top"].score
    distilled = next(r for r in read_records(out) if r.training == "distill")
    teacher = read_stage_record(out / "work" / distilled.trained_in).settings["teacher"]
    assert teacher == "teacher" and not list((out / "work").rglob("*.partial"))


def test_refinetune_drops_layers_of_the_fine_tuned_model_and_trains_again(tmp_path):
    """The paper's task-specific dropping: fine-tune the full model, drop from it, fine-tune again."""
    sweep = {**TINY, "grids": [{"strategies": ["top"], "k": [2], "training": ["refinetune"]}]}
    out = tmp_path / "out"
    result = bench(write_sweep(tmp_path, sweep), "--no-peak-memory", "--out", out)
    assert result.exit_code == 0, result.output
    rows = {(r.strategy, r.training): r for r in read_records(out)}
    student, full = rows[("top", "refinetune")], rows[(FULL, "finetune")]
    assert student.status == "ok" and student.kept_layers == [0, 1, 2, 3] and student.seconds["stages"].keys() == {"drop", "finetune"}
    finetuned = read_stage_record(out / "work" / student.trained_in)
    assert finetuned.source == "drop" and read_stage_record(dropped_folder(out)).source == "teacher"
    # the dropped model holds the fine-tuned full model's layers (the baseline's, from the cache), not the pre-trained ones
    teacher = load_file(out / "work" / full.trained_in / "model.safetensors")
    kept = load_file(dropped_folder(out) / "model.safetensors")
    name = next(n for n in kept if "layer.3." in n and n.endswith("weight"))
    assert torch.equal(kept[name], teacher[name])
    assert "| top | 2 | refinetune | torch-fp32 |" in (out / "results.md").read_text()


def dropped_folder(out: Path) -> Path:
    return next(p.parent for p in (out / "work").rglob(STAGE_FILE) if read_stage_record(p.parent).stage == "drop")


def test_check_validates_a_sweep_whole(tmp_path):
    result = invoke("check", write_sweep(tmp_path))
    assert result.exit_code == 0 and "ok (sweep: 6 combinations" in result.output, result.output
    unknown = {**TINY, "grids": [{"strategies": ["top"], "k": [1], "training": ["refinetune", "retrain"]}]}
    result = invoke("check", write_sweep(tmp_path, unknown, "unknown.yaml"))
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "retrain" in result.stderr, result.output
    too_many = {**TINY, "grids": [{"strategies": ["top"], "k": [9]}]}  # needs the model's config: checked past the schema
    result = invoke("check", write_sweep(tmp_path, too_many, "too-many.yaml"))
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1 and "k" in result.stderr and "6 layers" in result.stderr, result.output


def test_dry_run_lists_combinations_in_run_order_and_writes_nothing(tmp_path):
    result = bench(write_sweep(tmp_path), "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    listed = [line.split(":", 1)[1].strip() for line in result.output.splitlines() if "to run" in line]
    assert listed == [c.label for c in expand(Sweep.model_validate(TINY))]
    assert not (tmp_path / "out").exists()


def test_only_keeps_the_rows_a_key_pattern_names_and_refuses_one_that_names_none(tmp_path):
    sweep = write_sweep(tmp_path)
    result = bench(sweep, "--out", tmp_path / "out", "--dry-run", "--only", "*|top|k[12]|*", "--only", "*|full|*|onnx-int8-dynamic")
    assert result.exit_code == 0, result.output
    listed = [line.split(":", 1)[1].strip() for line in result.output.splitlines() if "to run" in line]
    assert listed == [c.label for c in expand(Sweep.model_validate(TINY))
                      if c.strategy == "top" or (c.strategy == "full" and c.precision == "onnx-int8-dynamic")], "in the sweep's order"
    assert len(listed) == 3, listed
    assert_one_line_error(bench(sweep, "--out", tmp_path / "out", "--dry-run", "--only", "*|top|k3|*"), "--only", "k3", "matches no combination")
    assert not (tmp_path / "out").exists()


def test_second_run_of_a_finished_sweep_trains_nothing(finished_sweep):
    folder, sweep, _ = finished_sweep
    before = build_stamps(folder / "out")
    lines = (folder / "out" / "results.jsonl").read_text()
    result = bench(sweep, "--out", folder / "out")
    assert result.exit_code == 0
    assert "6 already done" in result.output and "0 to run" in result.output
    assert build_stamps(folder / "out") == before
    assert (folder / "out" / "results.jsonl").read_text() == lines


def test_retime_measures_again_without_training(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    before = read_records(out)
    # a folder measured before the bench kept dev predictions, one of whose models its build scored otherwise
    (out / "dev_predictions.json").unlink()
    top = next(r for r in before if r.key.endswith("|top|k1|finetune|torch-fp32"))
    stage = out / "work" / top.measured_in / STAGE_FILE
    content = json.loads(stage.read_text())
    content["metrics"]["accuracy"] = top.score + 0.25
    stage.write_text(json.dumps(content))
    built = build_stamps(out)
    result = bench(sweep, "--no-peak-memory", "--out", out, "--retime")
    assert result.exit_code == 0, result.output
    assert "6 finished ones to measure again" in result.output
    assert f"scores accuracy {top.score:.4f} as loaded here, {top.score + 0.25:.4f} when it was built" in " ".join(result.output.split())
    assert json.loads((out / "dev_predictions.json").read_text())["rows"].keys() == {r.measured_in for r in before}
    assert build_stamps(out) == built
    after = read_records(out)
    assert after[: len(before)] == before, "earlier records are kept"
    retimed = after[len(before):]
    assert sorted(r.key for r in retimed) == sorted(r.key for r in before)
    assert all(r.seconds["stages"] == {} and r.score == pytest.approx(b.score) for r, b in zip(
        sorted(retimed, key=lambda r: r.key), sorted(before, key=lambda r: r.key)))
    assert (out / "results.csv").read_text().count("\n") == 1 + len(before), "one row per combination"
    assert {r.key: r.measured_in for r in retimed} == {r.key: r.measured_in for r in before}
    # measured again without memory: each row keeps the memory its build was measured with
    assert {r.key: r.peak_memory_mb for r in retimed} == {r.key: r.peak_memory_mb for r in before}


def test_rows_measured_elsewhere_are_built_again_here_only_when_asked(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    out = tmp_path / "out"
    shutil.copytree(folder / "out", out)
    before = read_records(out)
    top = next(r for r in before if (r.strategy, r.precision) == ("top", "torch-fp32"))
    shutil.rmtree(out / "work" / top.measured_in)  # its model stayed on the machine that measured it
    sharing = sorted(r.key for r in before if r.measured_in == top.measured_in)  # alternate-even k=1 drops the same layer
    kept = build_stamps(out)
    assert bench(sweep, "--out", out, "--no-peak-memory").output.count("0 to run") == 1, "by default a finished row is done"
    result = bench(sweep, "--out", out, "--dry-run", "--rebuild-missing")
    listed = [line for line in result.output.splitlines() if line.strip().startswith("to run")]
    assert len(listed) == len(sharing) == 2 and "top" in listed[0] and "2 would run" in result.output, result.output
    result = bench(sweep, "--out", out, "--no-peak-memory", "--rebuild-missing")
    assert result.exit_code == 0 and "2 to run (2 finished elsewhere, built again here)" in result.output, result.output
    after = read_records(out)
    assert after[:len(before)] == before and sorted(r.key for r in after[len(before):]) == sharing, "the old records stay"
    assert {r.measured_in for r in after[len(before):]} == {top.measured_in} and (out / "work" / top.measured_in / "stage.json").is_file()
    assert sum(bool(r.seconds["stages"]) for r in after[len(before):]) == 1, "trained here once, for both rows"
    assert {path: stamp for path, stamp in build_stamps(out).items() if path in kept} == kept, "nothing else built again"
    result = bench(sweep, "--out", out, "--retime", "--rebuild-missing")
    assert_one_line_error(result, "--rebuild-missing", "--retime")


def test_shards_merge_into_the_same_table(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    for i in (1, 2):  # each shard on a machine that holds the trained models already: it measures its rows
        shard = tmp_path / f"shard{i}"
        shutil.copytree(folder / "out" / "work", shard / "work")
        for name in (MARKER, SETTINGS_FILE):
            shutil.copy(folder / "out" / name, shard / name)
        result = bench(sweep, "--no-peak-memory", "--out", shard, "--shard", f"{i}/2")
        assert result.exit_code == 0 and "3 to run" in result.output, result.output
    result = bench("merge", tmp_path / "shard1", tmp_path / "shard2", "--out", tmp_path / "merged")
    assert result.exit_code == 0, result.output
    single = {r.key: r.score for r in read_records(folder / "out")}
    merged = {r.key: r.score for r in read_records(tmp_path / "merged")}
    assert merged.keys() == single.keys()
    assert all(merged[k] == pytest.approx(single[k], abs=1e-6) for k in single)
    assert (tmp_path / "merged" / "pareto.png").exists()
    kept = json.loads((tmp_path / "merged" / "dev_predictions.json").read_text())["rows"]
    assert kept.keys() == {r.measured_in for r in read_records(folder / "out")}, "each shard's predictions, merged"
    assert all(r.peak_memory_mb is None for r in read_records(tmp_path / "merged")), "--no-peak-memory measures none"


@pytest.mark.slow
def test_interrupted_sweep_resumes_without_rebuilding(tmp_path, monkeypatch):
    sweep = write_sweep(tmp_path, {**TINY, "grids": [{"strategies": ["top"], "k": [1], "precisions": ["torch-fp32"]}]})
    real_measure = Benchmark.measure
    calls = []

    def interrupt_second(self, row, *args):
        calls.append(row.combination.key)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_measure(self, row, *args)

    monkeypatch.setattr(Benchmark, "measure", interrupt_second)
    assert bench(sweep, "--no-peak-memory", "--out", tmp_path / "out").exit_code == 130
    assert len(read_records(tmp_path / "out")) == 1
    (teacher,) = builds(tmp_path / "out")["finetune:012345"]
    stamp = (teacher / STAGE_FILE).stat().st_mtime_ns

    monkeypatch.setattr(Benchmark, "measure", real_measure)
    result = bench(sweep, "--no-peak-memory", "--out", tmp_path / "out")
    assert result.exit_code == 0 and "1 already done" in result.output
    keys = [r.key for r in read_records(tmp_path / "out")]
    assert len(keys) == len(set(keys)) == 3, "the two baseline rows and top k=1"
    assert (teacher / STAGE_FILE).stat().st_mtime_ns == stamp


@pytest.mark.slow
def test_failed_combination_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    from compress.stages import STAGES
    from compress.stages.export import export

    content = {**TINY, "grids": [{"strategies": ["top"], "k": [1], "precisions": ["torch-fp32", "onnx-fp32"]}]}
    never_parity = replace(STAGES["export"], apply=lambda model, settings, context: export(model, settings.model_copy(update={"tolerance": 1e-30}), context))
    monkeypatch.setitem(STAGES._entries, "export", never_parity)
    result = bench(write_sweep(tmp_path, content), "--no-peak-memory", "--out", tmp_path / "out")
    assert result.exit_code == 0
    records = {r.precision + str(r.k): r for r in read_records(tmp_path / "out")}
    assert records["onnx-fp321"].status == "failed" and "ONNX logits differ" in records["onnx-fp321"].error
    assert records["torch-fp321"].status == "ok"
    assert "failed" in (tmp_path / "out" / "results.md").read_text()


def test_a_folder_built_with_other_settings_is_not_reused(finished_sweep):
    folder, _, _ = finished_sweep
    changed = {**TINY, "training": {**TINY["training"], "learning_rate": 1e-3}}
    result = bench(write_sweep(folder, changed, "changed.yaml"), "--out", folder / "out")
    assert result.exit_code == 2
    assert "holds rows built with other training" in result.output


def test_a_folder_of_an_older_version_is_reused_when_only_a_new_settings_default_differs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    guard_settings(load_sweep(write_sweep(tmp_path)), out)
    recorded = json.loads((out / SETTINGS_FILE).read_text())
    del recorded["training"]["precision"]  # what versions before the training precision setting wrote
    (out / SETTINGS_FILE).write_text(json.dumps(recorded))
    guard_settings(load_sweep(write_sweep(tmp_path)), out)
    assert json.loads((out / SETTINGS_FILE).read_text())["training"]["precision"] == "fp32"

    (out / SETTINGS_FILE).write_text(json.dumps(recorded))
    bf16 = load_sweep(write_sweep(tmp_path, {**TINY, "training": {**TINY["training"], "precision": "auto"}}, "auto.yaml"))
    with pytest.raises(CompressError, match="holds rows built with other training"):
        guard_settings(bf16, out)


def test_rows_timed_with_other_latency_settings_are_not_mixed(finished_sweep, tmp_path):
    folder, _, _ = finished_sweep
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy)
    retimed = {**TINY, "latency": {**TINY["latency"], "repeats": 4}}
    sweep = write_sweep(tmp_path, retimed)
    result = bench(sweep, "--no-peak-memory", "--out", copy)
    assert result.exit_code == 2 and "other latency settings" in result.output and "--retime" in result.output
    result = bench(sweep, "--no-peak-memory", "--out", copy, "--retime")
    assert result.exit_code == 0, result.output
    assert bench(sweep, "--no-peak-memory", "--out", copy).exit_code == 0, "the folder now holds this sweep's timings"


def test_retime_without_builds_trains_nothing(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    fresh = tmp_path / "out"  # as in a new clone: records and settings are committed, work/ is not
    fresh.mkdir()
    for name in ("results.jsonl", "sweep-settings.json", MARKER):
        shutil.copy(folder / "out" / name, fresh / name)
    lines = (fresh / "results.jsonl").read_text()
    result = bench(sweep, "--no-peak-memory", "--out", fresh, "--retime")
    assert result.exit_code == 0, result.output
    assert "not measured again" in result.output and "without --retime" in result.output
    assert not list(fresh.rglob(STAGE_FILE)) and not list(fresh.rglob("*.partial"))
    assert (fresh / "results.jsonl").read_text() == lines


def test_a_record_cut_short_is_dropped_and_run_again(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy)
    lines = (copy / "results.jsonl").read_text().splitlines(keepends=True)[:6]  # the first run's (other tests add retimes)
    (copy / "results.jsonl").write_text("".join(lines[:-1]) + lines[-1][:40])  # killed while appending
    result = bench(sweep, "--no-peak-memory", "--out", copy)
    assert result.exit_code == 0, result.output
    assert "cut short" in result.output and "1 to run" in result.output
    assert len(read_records(copy)) == len(lines)
    (copy / "results.jsonl").write_text("".join(lines[:2]) + "{not json\n" + "".join(lines[2:]))
    result = bench(sweep, "--no-peak-memory", "--out", copy)
    assert result.exit_code == 2 and "results.jsonl: line 3" in result.output


def test_merge_refuses_shards_of_other_sweeps(finished_sweep, tmp_path):
    folder, _, _ = finished_sweep
    other = tmp_path / "other"
    shutil.copytree(folder / "out", other, ignore=shutil.ignore_patterns("work"))
    settings = other / "sweep-settings.json"
    settings.write_text(settings.read_text().replace('"seed": 42', '"seed": 7'))
    result = bench("merge", folder / "out", other, "--out", tmp_path / "merged")
    assert result.exit_code == 2 and "other sweep settings" in result.output and "seed" in result.output
    assert not (tmp_path / "merged").exists()


def test_speedups_only_between_timings_on_one_device():
    def row(strategy, k, p50, device):
        return bench_record(key=strategy, strategy=strategy, k=k,
                            latency=[{"batch_size": 1, "sequence_length": "128", "p50_ms": p50, "threads": 2, "device": device}])

    rows = {r.record.strategy: r for r in with_deltas([row(FULL, 0, 10.0, "cpu: a"), row("top", 2, 5.0, "cpu: a"),
                                                       row("bottom", 2, 1.0, "cpu: b")])}
    assert rows["top"].speedup_vs_full == 2.0 and rows["bottom"].speedup_vs_full is None

    def on(record, family):  # one brand, so one device line: a Zen 4 and a Zen 5 EPYC
        return record.model_copy(update={"environment": {"cpu": {"model": "AMD EPYC", "family": family, "model_number": "1", "features": []}}})

    rows = {r.record.strategy: r for r in with_deltas([on(row(FULL, 0, 10.0, "cpu: a"), "26"), on(row("top", 2, 5.0, "cpu: a"), "26"),
                                                       on(row("bottom", 2, 1.0, "cpu: a"), "25"), row("symmetric", 2, 4.0, "cpu: a")])}
    assert rows["top"].speedup_vs_full == 2.0 and rows["bottom"].speedup_vs_full is None
    assert rows["symmetric"].speedup_vs_full == 2.5, "a record that names no processor is read by its device line"


def test_the_pareto_plot_sets_side_by_side_only_rows_timed_alike_the_full_model():
    def row(strategy, k, family, p50=5.0):
        return bench_record(key=strategy, strategy=strategy, k=k, environment={"cpu": {"model": "AMD EPYC", "family": family, "model_number": "1", "features": []}},
                            latency=[{"batch_size": 1, "sequence_length": "128", "p50_ms": p50, "threads": 2, "device": "cpu: a"}])

    group = [row("top", 2, "25"), row(FULL, 0, "26", 10.0), row("bottom", 2, "26"), row("symmetric", 4, "25")]
    alike, left_out = timed_with_full_model(group, (1, "128"))
    assert [r.strategy for r, _ in alike] == [FULL, "bottom"] and left_out == 2
    alike, left_out = timed_with_full_model([group[0], group[3]], (1, "128"))
    assert [r.strategy for r, _ in alike] == ["top", "symmetric"] and left_out == 0, "no full model timed: the first timed row leads"


def test_the_fastest_engine_within_the_score_budget_is_named_per_timing():
    def row(precision, score, p50_128, p50_task, device="cpu: a"):
        return bench_record(key=precision, strategy=FULL, precision=precision, score=score, threads=2, parameters=10**6, size_mb=4.0,
                            latency=[{"batch_size": 1, "sequence_length": "128", "p50_ms": p50_128, "threads": 2, "device": device},
                                     {"batch_size": 1, "sequence_length": "task", "p50_ms": p50_task, "threads": 2, "device": device}])

    another_processor = row("onnx-int8-static", 0.899, 1.0, 1.0).model_copy(update={"environment": {"cpu": {"model": "x", "features": []}}})
    records = [row("torch-fp32", 0.900, 20.0, 8.0).model_copy(update={"environment": {"cpu": {"model": "y", "features": []}}}),
               row("onnx-int8-dynamic", 0.897, 5.0, 1.5), row("openvino-int8", 0.890, 4.0, 1.7),
               row("onnx-fp32", 0.900, 9.0, 1.6, device="cpu: b"), another_processor]
    table = fastest_table(records)
    # openvino-int8 is faster at 128 tokens but 1 point below fp32; onnx-fp32 and onnx-int8-static were timed on other machines
    assert "| full | batch 1, sequence 128 | onnx-int8-dynamic | 0.8970 (-0.30) | 5.00 | 4.00x |" in table
    assert "| full | batch 1, the task's own lengths | onnx-int8-dynamic | 0.8970 (-0.30) | 1.50 | 5.33x |" in table
    assert "| full | batch 1, sequence 128 | openvino-int8 | 0.8900 (-1.00) | 4.00 | 5.00x |" in fastest_table(records, budget=2.0)


def test_a_row_trained_on_a_busy_machine_is_marked():
    def row(strategy, k, train_load):
        return bench_record(key=strategy, strategy=strategy, k=k, threads=2, layers=6 - k, parameters=10**6, size_mb=4.0,
                            train_seconds=100.0, train_other_cpu_load=train_load,
                            latency=[{"batch_size": 1, "sequence_length": "128", "p50_ms": 5.0, "threads": 2, "device": "cpu: a"}])

    table = markdown_table(with_deltas([row(FULL, 0, 0.02), row("top", 2, 1.1)]))
    assert "| 100 |" in table and "| 100‡ |" in table and "‡ trained while other work used" in table
    assert "‡" not in markdown_table(with_deltas([row(FULL, 0, None)]))


def test_rows_timed_with_other_software_are_flagged_in_the_table():
    def row(strategy, k, onnxruntime):
        environment = {"python": "3.11.7", "libraries": {"onnxruntime": onnxruntime},
                       "cpu": {"model": "AMD EPYC", "family": "25", "model_number": "17", "features": ["avx512_vnni"]}}
        return bench_record(key=strategy, strategy=strategy, k=k, threads=2, layers=6 - k, parameters=10**6, size_mb=4.0,
                            environment=environment,
                            latency=[{"batch_size": 1, "sequence_length": "128", "p50_ms": 5.0, "threads": 2, "device": "cpu: a"}])

    same = markdown_table(with_deltas([row(FULL, 0, "1.22.1"), row("top", 2, "1.22.1")]))
    assert "Timed with Python 3.11.7, onnxruntime 1.22.1; CPU AMD EPYC, family 25 model 17 (avx512_vnni)." in same
    mixed = markdown_table(with_deltas([row(FULL, 0, "1.22.1"), row("top", 2, "1.32.0")]))
    assert "Timed with different software or processors" in mixed and "- Python 3.11.7, onnxruntime 1.32.0;" in mixed


def test_serving_peak_memory_is_measured_per_model_in_a_fresh_process(finished_sweep):
    from compress.benchmarking.memory import serving_peak_mb
    from compress.models.artifacts import size_on_disk
    from compress.models.loading import load_tokenizer
    from compress.timing.latency import fixed_length_batch

    folder, _, _ = finished_sweep
    (full,) = builds(folder / "out")["finetune:012345"]
    tokenizer = load_tokenizer("minilm-l6")
    one, many = (fixed_length_batch(["a short review"], tokenizer, size, 128) for size in (1, 64))
    small, large = (serving_peak_mb(full, batch, None, threads=2) for batch in (one, many))
    # the weights are read from a memory-mapped file: only the pages a batch touches (not every
    # embedding row) become resident
    assert 20 < small < 2 * size_on_disk(full) / 1e6
    assert large > small + 50, "a batch of 64 x 128 tokens needs far more activation memory than one"
    assert all(r.peak_memory_mb > 0 for r in read_records(folder / "out"))


def test_retime_makes_a_missing_export_of_a_trained_model(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy)
    made = builds(copy)
    for name in ("export:012345", "quantize:012345"):
        shutil.rmtree(made[name][0])
    trained = build_stamps(copy)
    result = bench(sweep, "--no-peak-memory", "--out", copy, "--retime")
    assert result.exit_code == 0, result.output
    assert "not measured again" not in result.output
    assert (made["quantize:012345"][0] / STAGE_FILE).exists()
    assert {p: p.stat().st_mtime_ns for p in trained} == trained, "no trained model is touched"


def test_clean_removes_only_what_no_record_or_later_run_needs(finished_sweep, tmp_path):
    folder, _, _ = finished_sweep
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy)
    trained_stages = ("finetune", "distill")
    trained = {p: t for p, t in build_stamps(copy).items() if read_stage_record(p.parent).stage in trained_stages}
    whole_model = next(iter(trained)).parent
    orphan, resumable = whole_model.with_name(whole_model.name + CHECKPOINTS), whole_model.with_name(f"finetune-unfinished{CHECKPOINTS}")
    for checkpoints in (orphan, resumable):  # left by kills: after the model was whole, and mid-training
        claim(checkpoints, what="training checkpoints")
    result = bench("clean", copy)
    assert result.exit_code == 0, result.output
    assert not orphan.exists() and resumable.is_dir()
    left = builds(copy)
    assert not any(name.startswith("drop:") for name in left)
    assert "quantize:012345" in left and "export:012345" not in left, "the measured int8 stays, its step goes"
    assert {p: p.stat().st_mtime_ns for p in trained} == trained, "every trained model stays"

    # measuring again needs nothing that was removed, not even for alternate-even at K=1, which shares top's student
    added_rows = [{"strategies": ["bottom", "alternate-even"], "k": [1], "training": ["distill"]}]
    sweep = write_sweep(tmp_path, {**TINY, "grids": [*TINY["grids"], *added_rows]})
    result = bench(sweep, "--no-peak-memory", "--out", copy, "--retime")
    assert result.exit_code == 0 and "6 finished ones" in result.output and "not measured again" not in result.output, result.output
    assert builds(copy) == left, "nothing rebuilt"
    # new rows drop layers again and train only a student no strategy has: bottom's distilled one
    result = bench(sweep, "--no-peak-memory", "--out", copy)
    assert result.exit_code == 0 and "6 already done" in result.output and "2 to run" in result.output, result.output
    added = {name: len(folders) for name, folders in builds(copy).items() if folders != left.get(name)}
    assert added == {"drop:12345": 1, "distill:12345": 1}, added
    assert {p: p.stat().st_mtime_ns for p in trained} == trained

    result = bench("clean", tmp_path)
    assert result.exit_code == 2 and "not made by compress" in result.output
    claim(tmp_path / "empty", what="benchmark results")
    result = bench("clean", tmp_path / "empty")
    assert result.exit_code == 2 and "results.jsonl not found" in result.output


def test_a_folder_a_live_run_writes_to_is_not_cleaned_or_run_twice(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    copy = tmp_path / "out"
    shutil.copytree(folder / "out", copy, ignore=shutil.ignore_patterns("work"))
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; from compress.folders import holding\n"
         "with holding(Path(sys.argv[1])): print('held', flush=True); time.sleep(120)", str(copy)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        before = {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != ".compress-lock"}
        for args in (("clean", copy), (sweep, "--out", copy)):
            result = bench(*args)
            assert result.exit_code == 2 and f"process {holder.pid}" in result.output and "is writing to this folder" in result.output, result.output
        assert {p: p.read_bytes() for p in copy.rglob("*") if p.is_file() and p.name != ".compress-lock"} == before
    finally:
        holder.kill()
        holder.wait()
    result = bench(sweep, "--no-peak-memory", "--out", copy)  # the claim died with its process
    assert result.exit_code == 0 and "6 already done" in result.output, result.output


def test_tables_and_plots_use_the_timings_the_sweep_has(finished_sweep, tmp_path):
    """A sweep timed at another batch size and length (or not timed at all) still gets its tables and plots."""
    folder, _, _ = finished_sweep
    records = read_records(folder / "out")
    for r in records:
        r.latency = [t.model_copy(update={"batch_size": 4, "sequence_length": "64"}) for t in r.latency]
    (tmp_path / "b4s64").mkdir()
    rows = write_report(records, tmp_path / "b4s64")
    table = (tmp_path / "b4s64" / "results.md").read_text()
    assert "latency: batch 4, sequence 64," in table
    assert all(row.speedup_vs_full is not None for row in rows), "speed-ups come from the timings there are"
    for r in records:
        r.latency = []
    (tmp_path / "untimed").mkdir()
    write_report(records, tmp_path / "untimed")
    assert "latency: not timed," in (tmp_path / "untimed" / "results.md").read_text()
    for name in ("b4s64", "untimed"):
        for plot in ("pareto.png", "layers_dropped.png", "size.png"):
            assert (tmp_path / name / plot).stat().st_size > 10_000, (name, plot)


def test_classifier_token_script_drops_each_student_as_the_sweep_did(finished_sweep, tmp_path):
    folder, sweep, _ = finished_sweep
    script = Path(__file__).resolve().parents[1] / "bench" / "classifier_token.py"
    run = subprocess.run(
        [sys.executable, script, sweep, "--results", folder / "out", "--out", tmp_path, "--examples", "8"],
        capture_output=True, text=True,
    )
    assert run.returncode == 0, run.stderr
    rows = json.loads((tmp_path / "classifier_token.json").read_text())["rows"]
    assert [(r["strategy"], r["k"]) for r in rows] == [(FULL, 0), ("alternate-even", 1), ("bottom", 1), ("top", 1)]
    records = {
        (r.strategy, r.k): r for r in read_records(folder / "out") if r.training == "finetune" and r.precision == "torch-fp32"
    }
    for row in rows:
        assert row["kept_layers"] == records[(row["strategy"], row["k"])].kept_layers
        assert row["score"] == records[(row["strategy"], row["k"])].score
        assert row["top_layer"] == row["kept_layers"][-1] and -1 <= row["classifier_token_cosine"] <= 1
    # the embedded MiniLM's [CLS] varies between inputs only at its top layer (layer 5)
    by_strategy = {row["strategy"]: row["classifier_token_cosine"] for row in rows}
    assert by_strategy["top"] > 0.99 and by_strategy[FULL] < 0.9
    assert "| minilm-l6 | rotten-tomatoes | top | 1 | 4 |" in (tmp_path / "classifier_token.md").read_text()
