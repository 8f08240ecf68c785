"""The engine without training: stage identities and how recipes merge into one graph, the cache's
decisions (find, reuse, refuse to train while measuring again), sweeps written as recipes, the
precision and quantization registries, and records of every committed results folder read back and
drawn into the same tables."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from rich.console import Console

from compress.benchmarking.precisions import PRECISIONS
from compress.benchmarking.records import RECORD_VERSION as BENCH_RECORD_VERSION
from compress.benchmarking.records import BenchRecord, read_records, version_1_to_2
from compress.benchmarking.predictions import PREDICTIONS_FILE
from compress.benchmarking.report import write_report
from compress.benchmarking.rows import describe
from compress.benchmarking.sweep import Sweep, sweep_rows
from compress.errors import CompressError
from compress.folders import PARTIAL
from compress.evaluation.evaluate import compare, dev_outputs, evaluate
from compress.models.artifacts import load_artifact, predictor_for
from compress.pipeline.cache import RECORD_VERSION, STAGE_FILE, StageCache, StageRecord, read_stage_record
from compress.pipeline.executor import Executor, NotBuilt
from compress.pipeline.graph import recipe_graph
from compress.pipeline.model_card import CARD_FILE
from compress.pipeline.recipe import recipe_from_mapping
from compress.stages.quantize import METHODS
from tests.helpers import folder_checksum

REPO = Path(__file__).resolve().parents[1]
DATA = {"source": "embedded", "max_train_examples": 32, "max_eval_examples": 32}


def recipe(*stages, **fields):
    content = {"name": "r", "model": "minilm-l6", "task": "rotten-tomatoes", "data": DATA, "max_length": 32, "stages": list(stages), **fields}
    return recipe_from_mapping(content, "test")


def nodes(*stages, **fields):
    return recipe_graph(recipe(*stages, **fields), "")


# --- identities and the graph ---------------------------------------------------------------------


def test_strategies_that_drop_the_same_layers_are_one_node():
    top = nodes({"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", "epochs": 1})
    alternate = nodes({"stage": "drop", "strategy": "alternate-even", "k": 1}, {"stage": "finetune", "epochs": 1})
    bottom = nodes({"stage": "drop", "strategy": "bottom", "k": 1}, {"stage": "finetune", "epochs": 1})
    explicit = nodes({"stage": "drop", "strategy": "layers", "layers": [5]}, {"stage": "finetune", "epochs": 1})
    assert top["02-finetune"].identity == alternate["02-finetune"].identity == explicit["02-finetune"].identity
    assert top["02-finetune"].identity != bottom["02-finetune"].identity
    # which layers contribution drops is known only when it runs: its settings identify it
    one, other = (nodes({"stage": "drop", "strategy": "contribution", "k": 1, "examples": n})["01-drop"] for n in (16, 32))
    assert one.identity != other.identity


def test_a_node_is_named_by_its_recipe_but_identified_by_what_makes_its_model():
    teacher = {"stage": "finetune", "epochs": 1}
    drop = {"stage": "drop", "from": "base", "strategy": "top", "k": 2}
    a = nodes({**teacher, "name": "teacher"}, drop, {"stage": "distill", "teacher": "teacher", "epochs": 1})
    b = nodes({**teacher, "name": "big"}, drop, {"stage": "distill", "teacher": "big", "epochs": 1})
    assert a["03-distill"].identity == b["03-distill"].identity
    assert a["03-distill"].reads["teacher"] is a["teacher"] and a["03-distill"].source is a["02-drop"]
    assert [s.name for s in a["03-distill"].recipe.chain("03-distill")] == ["02-drop", "03-distill"], "the teacher is read, not started from"
    assert a["teacher"].trained and a["03-distill"].trained and not a["02-drop"].trained
    assert nodes(teacher, seed=7)["01-finetune"].identity != nodes(teacher)["01-finetune"].identity
    # a flag that changes no model is no part of the identity
    assert nodes({**teacher, "allow_long_training": True})["01-finetune"].identity == nodes(teacher)["01-finetune"].identity


def test_a_sweep_is_a_list_of_recipes_whose_shared_stages_are_one_node():
    sweep = Sweep.model_validate({
        "models": ["minilm-l6"], "tasks": {"rotten-tomatoes": DATA}, "max_length": 32, "training": {"epochs": 1},
        "grids": [{"strategies": ["top"], "k": [2], "training": ["finetune", "distill"],
                   "precisions": ["torch-fp32", "onnx-int8-dynamic-o2", "onnx-int8-static", "torch-int8"]}],
    })
    rows = {row.combination.label: row for row in sweep_rows(sweep)}
    full, teacher = rows["full torch-fp32"].node, rows["top k=2 distill torch-fp32"].node.reads["teacher"]
    assert teacher.identity == full.identity, "the distillation teacher is the full model's row"
    fp32, o2 = rows["top k=2 finetune torch-fp32"].node, rows["top k=2 finetune onnx-int8-dynamic-o2"].node
    assert o2.source.source.identity == fp32.identity and o2.source.settings.optimization == "O2"
    for label, row in rows.items():  # each row's recipe is named back to its combination
        c = row.combination
        assert describe(row.recipe.chain(row.measured)) == (c.strategy, c.k, c.training, c.precision), label
    static = rows["top k=2 finetune onnx-int8-static"].node.settings
    assert static.calibration_examples == sweep.calibration_examples and static.seed == sweep.seed


def test_every_quantization_method_is_a_precision_and_checks_its_fields():
    for mode, method in METHODS.items():  # `best` picks one of the others as it runs: not a precision of its own
        assert (method.precision in PRECISIONS) != method.chooses, mode
        assert method.chooses or PRECISIONS[method.precision].method == mode
    assert PRECISIONS["onnx-int8-dynamic-o2"].optimization == "O2"
    with pytest.raises(CompressError, match=r"stages\[1\].calibration_examples: unknown key"):
        recipe({"stage": "export"}, {"stage": "quantize", "mode": "dynamic-int8", "calibration_examples": 10})
    with pytest.raises(CompressError, match=r"stages\[1\].mode: expected one of dynamic-int8, static-int8"):
        recipe({"stage": "export"}, {"stage": "quantize", "mode": "int4"})


# --- the cache and the executor's decisions -------------------------------------------------------


def test_the_executor_builds_a_node_once_and_finds_it_by_identity(tmp_path):
    drop = {"stage": "drop", "strategy": "top", "k": 4}
    console = Console(quiet=True)
    cache = StageCache(tmp_path / "work", lambda node: f"{node.settings.stage}-{node.identity[:8]}")
    executor = Executor(cache, console)
    first = nodes({**drop, "name": "a"})["a"]
    folder, record = executor.ensure(first)
    assert record.layers == 2 and record.identity == first.identity and len(executor.built) == 1
    # another recipe naming the same stage otherwise, and a later process, find it: nothing is built again
    again = Executor(StageCache(tmp_path / "work", cache.folder_name), console)
    assert again.ensure(nodes({**drop, "name": "b"})["b"])[0] == folder and again.built == []
    # a folder cut short is never taken for a finished one
    partial = folder.with_name(folder.name + PARTIAL)
    shutil.copytree(folder, partial)
    (folder / STAGE_FILE).unlink()
    assert StageCache(tmp_path / "work", cache.folder_name).find(first) is None


def test_a_run_folder_links_a_second_stage_of_the_same_model_under_its_own_name(tmp_path):
    executor = Executor(StageCache(tmp_path, lambda node: node.name), Console(quiet=True))
    graph = nodes({"stage": "drop", "strategy": "top", "k": 1, "name": "top1"},
                  {"stage": "drop", "from": "base", "strategy": "alternate-even", "k": 1, "name": "even1"})
    executor.ensure(graph["top1"])
    folder, record = executor.ensure(graph["even1"])
    assert folder == tmp_path / "even1" and record.notes["reused_from"] == str(tmp_path / "top1") and len(executor.built) == 1
    assert (folder / "model.safetensors").stat().st_ino == (tmp_path / "top1" / "model.safetensors").stat().st_ino


def test_measuring_again_never_trains(tmp_path):
    executor = Executor(StageCache(tmp_path, lambda node: node.name), Console(quiet=True), may_train=False)
    graph = nodes({"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", "epochs": 1})
    with pytest.raises(NotBuilt, match="not trained in this folder"):
        executor.ensure(graph["02-finetune"])
    assert executor.built == [], "not even the drop before it is made"


def test_a_stage_record_of_the_first_version_still_reads(tmp_path):
    record = {"name": "x", "stage": "drop", "source": "base", "folder": "x", "kind": "torch", "layers": 5, "kept_layers": [0, 1, 2, 3, 4],
              "parameters": 1, "size_mb": 1.0, "seconds": 1.0, "metrics": {}, "notes": {}, "identity": "abc", "settings": {}}
    (tmp_path / STAGE_FILE).write_text(json.dumps(record))
    assert read_stage_record(tmp_path).schema_version == RECORD_VERSION and read_stage_record(tmp_path).other_cpu_load is None


def test_a_score_an_older_compress_took_in_bf16_autocast_is_taken_again_of_the_saved_model(tmp_path):
    # compress 3 scored a bf16-trained model with the Trainer's autocast still on it; its record is marked on reading
    # and the executor scores the folder as saved, once, without building anything again.
    cache = StageCache(tmp_path, lambda node: node.name)
    node = nodes({"stage": "drop", "strategy": "top", "k": 4, "name": "top4"})["top4"]
    folder, record = Executor(cache, Console(quiet=True)).ensure(node)
    def model_files():
        return {name: facts for name, facts in folder_checksum(folder).items() if name not in (STAGE_FILE, CARD_FILE)}

    files = model_files()
    written = json.loads((folder / STAGE_FILE).read_text())
    older = {**written, "schema_version": 3, "metrics": {"accuracy": 0.123, "accuracy_stderr": 0.05}, "notes": {"precision": "bf16"}}
    del older["scored_in_autocast"]
    (folder / STAGE_FILE).write_text(json.dumps(older))
    assert read_stage_record(folder).scored_in_autocast
    assert not StageRecord.read({**older, "notes": {"precision": "fp32"}}).scored_in_autocast, "fp32 scores stand"
    made = {key: value for key, value in older.items() if key != "schema_version"}
    assert not StageRecord(**made).scored_in_autocast, "a record made now names no version, and is current: not migrated"

    executor = Executor(StageCache(tmp_path, cache.folder_name), Console(record=True, width=300))
    found, rescored = executor.ensure(node)
    data = node.recipe.load_data()
    expected = evaluate(predictor_for(load_artifact(folder)), data, executor.tokenizer("minilm-l6"), 32, node.recipe.eval_batch_size)
    assert found == folder and executor.built == [] and model_files() == files
    assert rescored.metrics == expected and rescored.metrics["accuracy"] != 0.123 and not rescored.scored_in_autocast
    assert read_stage_record(folder) == rescored, "the record on disk holds the new scores"
    assert f"{expected['accuracy']:.4f}" in (folder / CARD_FILE).read_text() and "0.1230" not in (folder / CARD_FILE).read_text()
    assert "scored in bf16 autocast by an older compress, accuracy 0.1230; as saved it scores" in executor.console.export_text()
    later = Executor(StageCache(tmp_path, cache.folder_name), Console(record=True, width=300))
    assert later.ensure(node)[1] == rescored and "autocast" not in later.console.export_text(), "scored again once only"


def test_dev_outputs_are_in_the_dev_sets_own_order(tmp_path):
    # scored in batches sorted by length, handed back example by example as the dev set lists them: two models'
    # outputs pair up
    node = nodes({"stage": "drop", "strategy": "top", "k": 4, "name": "top4"})["top4"]
    executor = Executor(StageCache(tmp_path, lambda node: node.name), Console(quiet=True))
    folder, _ = executor.ensure(node)
    data, tokenizer, predict = node.recipe.load_data(), executor.tokenizer("minilm-l6"), predictor_for(load_artifact(folder))
    (split, (outputs, labels)), = dev_outputs(predict, data, tokenizer, 32, 8).items()
    dev = data.dev[split]
    assert list(labels) == list(dev["label"]) and len(set(len(t) for t in dev["text_a"][:8])) > 1, "lengths differ: sorting moves rows"
    for i in (0, 3, 7):
        alone = predict(dict(tokenizer(dev["text_a"][i], truncation=True, max_length=32, return_tensors="pt")))
        assert np.allclose(outputs[i], alone[0], atol=1e-4)


def test_two_models_compare_on_the_same_dev_examples(tmp_path):
    executor = Executor(StageCache(tmp_path, lambda node: node.name), Console(quiet=True))
    top = nodes({"stage": "drop", "strategy": "top", "k": 4, "name": "top4"})["top4"]
    bottom = nodes({"stage": "drop", "strategy": "bottom", "k": 4, "name": "bottom4"})["bottom4"]
    data, tokenizer = top.recipe.load_data(), executor.tokenizer("minilm-l6")
    first, second = (predictor_for(load_artifact(executor.ensure(node)[0])) for node in (top, bottom))
    found = compare(first, second, data, tokenizer, 32, 8)
    alone = [evaluate(p, data, tokenizer, 32, 8) for p in (first, second)]
    assert found.paired and found.metric == "accuracy"
    assert (found.first, found.second) == (alone[0]["accuracy"], alone[1]["accuracy"])
    assert found.difference == pytest.approx(found.first - found.second) and found.difference_stderr > 0
    itself = compare(first, first, data, tokenizer, 32, 8)
    assert itself.difference == 0 and itself.difference_stderr == 0, "a model against itself: every resample agrees"


# --- records --------------------------------------------------------------------------------------

RESULTS = sorted(path.parent for path in (REPO / "bench" / "results").glob("*/results.jsonl"))


@pytest.mark.parametrize("folder", RESULTS, ids=[folder.name for folder in RESULTS])
def test_every_committed_results_folder_redraws_the_same_tables(folder, tmp_path):
    first = (folder / "results.md").read_text().splitlines()[0]
    command = first.removeprefix("Command: `").removesuffix("`") if first.startswith("Command: `") else None
    if (folder / PREDICTIONS_FILE).exists():  # the tables' paired errors come from it
        shutil.copy(folder / PREDICTIONS_FILE, tmp_path)
    write_report(read_records(folder), tmp_path, command)
    for table in ("results.md", "results.csv"):
        assert (tmp_path / table).read_bytes() == (folder / table).read_bytes(), table


def test_records_read_back_typed_and_one_of_the_first_version_is_migrated_by_its_step(tmp_path, monkeypatch):
    first_version = (REPO / "bench" / "results" / "minilm_cola" / "results.jsonl").read_text().splitlines()[0]  # written before the version was
    assert "schema_version" not in json.loads(first_version)
    (tmp_path / "results.jsonl").write_text(first_version + "\n")
    migrated = []
    monkeypatch.setattr(BenchRecord, "MIGRATIONS", (lambda record: version_1_to_2(migrated.append(record) or record),))
    (record,) = read_records(tmp_path)
    assert isinstance(record, BenchRecord) and record.schema_version == BENCH_RECORD_VERSION == 2
    assert migrated == [json.loads(first_version)] and record.measured_in is None and record.latency[0].p50_ms == 16.557
    current = tmp_path / "current.jsonl"
    current.write_text(record.line())
    assert read_records(current) == [record] and migrated == [json.loads(first_version)], "a current record takes no step"


def test_a_record_that_is_not_one_is_refused_with_its_line(tmp_path):
    good = BenchRecord(key="k", model="m", task="t", strategy="top", k=1, training="finetune", precision="torch-fp32", status="failed", error="x")
    (tmp_path / "results.jsonl").write_text(good.line() + json.dumps({**good.model_dump(), "status": "maybe"}) + "\n")
    with pytest.raises(CompressError, match=r"results.jsonl: line 2: status: Input should be 'ok' or 'failed'"):
        read_records(tmp_path)
