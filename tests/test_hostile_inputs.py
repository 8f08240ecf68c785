"""Hostile input that used to pass validation and fail later (or hang, or be silently misread): each is
refused by `compress check` / `bench` with one line naming the file, the field and what was expected.

Everything is real: recipes, data files and results written into tmp_path, the embedded MiniLM (only its
config is read) and the embedded reviews; nothing trains.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from compress.benchmarking.rows import load_recipes, recipe_rows
from tests.helpers import assert_one_line_error, bench, folder_checksum, invoke, write_recipe
from tests.test_recipe_errors import tiny_quickstart

# --- 1. seeds outside 0..2**32-1 -----------------------------------------------------------------


SEED_FIELDS = {
    # field: where it is in the recipe below
    "seed": lambda recipe: recipe,
    "data.seed": lambda recipe: recipe["data"],
    "stages[0].seed": lambda recipe: recipe["stages"][0],  # finetune
    "stages[1].seed": lambda recipe: recipe["stages"][1],  # drop
    "stages[2].seed": lambda recipe: recipe["stages"][2],  # distill
    "stages[4].seed": lambda recipe: recipe["stages"][4],  # quantize
}


@pytest.mark.parametrize("seed", [-1, 2**40])
@pytest.mark.parametrize("field", list(SEED_FIELDS))
def test_seeds_outside_what_numpy_takes_are_refused(tmp_path, field, seed):
    recipe = tiny_quickstart()
    recipe["stages"][1]["strategy"] = "contribution"  # its seed draws the examples layers are scored on
    recipe["stages"] += [{"stage": "export", "name": "onnx"}, {"stage": "quantize", "name": "int8", "mode": "static-int8"}]
    SEED_FIELDS[field](recipe)["seed"] = seed
    file = write_recipe(tmp_path, "r", recipe)
    assert_one_line_error(invoke("check", file), "r.yaml", f" {field}: ", f"(got {seed})")


def _sweep(tmp_path: Path, **fields) -> Path:
    sweep = {"models": ["minilm-l6"], "tasks": {"rotten-tomatoes": {"source": "embedded"}}, "grids": [{"strategies": ["top"], "k": [2]}]}
    file = tmp_path / "sweep.yaml"
    file.write_text(yaml.safe_dump({**sweep, **fields}))
    return file


def test_a_sweep_seed_outside_what_numpy_takes_is_refused(tmp_path):
    out = tmp_path / "out"
    assert_one_line_error(bench(_sweep(tmp_path, seed=2**32), "--dry-run", "--out", out), "sweep.yaml", " seed: ", f"(got {2**32})")
    assert not out.exists()


# --- 2. data nothing can train on or be scored with ----------------------------------------------


def _files_recipe(tmp_path: Path, train: str, dev: str, **data) -> dict:
    (tmp_path / "train.csv").write_text(train)
    (tmp_path / "dev.csv").write_text(dev)
    recipe = tiny_quickstart()
    recipe["task"] = "scores" if data.get("regression") else "reviews"
    recipe["data"] = {"source": "files", "train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv"),
                      "text_columns": ["text"], **data}
    return recipe


REVIEWS = "text,label\ngood film,fresh\nbad film,rotten\nfine film,fresh\n"
SCORES = "text,score\ngood film,4.5\nbad film,0.5\nfine film,3\n"

DATA_CASES = {
    # id: (train, dev, data settings, pieces of the one line besides the recipe file)
    "dev-only-a-header": (REVIEWS, "text,label\n", {}, ["dev.csv", "no examples", "validation"]),
    "missing-label": (REVIEWS.replace("bad film,rotten", "bad film,"), REVIEWS, {},
                      ["train.csv", "line 3", "'label'", "label missing", "''"]),
    "nan-class": (REVIEWS.replace("bad film,rotten", "bad film,nan"), REVIEWS, {},
                  ["train.csv", "line 3", "'label'", "label missing", "'nan'"]),
    "nan-score": (SCORES.replace("0.5", "NaN"), SCORES, {"label_column": "score", "regression": True},
                  ["train.csv", "line 3", "'score'", "label missing", "'NaN'"]),
    "infinite-score": (SCORES, SCORES.replace("3\n", "inf\n"), {"label_column": "score", "regression": True},
                       ["dev.csv", "line 4", "'score'", "finite number", "'inf'"]),
    "one-dev-score": (SCORES, SCORES, {"label_column": "score", "regression": True, "max_eval_examples": 1},
                      ["dev.csv", "validation", "max_eval_examples: 1", "two different scores"]),
}


@pytest.mark.parametrize("case", list(DATA_CASES))
def test_data_that_cannot_train_or_be_scored_is_refused(tmp_path, case):
    train, dev, data, expected = DATA_CASES[case]
    file = write_recipe(tmp_path, "data", _files_recipe(tmp_path, train, dev, **data))
    assert_one_line_error(invoke("check", file), "data.yaml", *expected)


def test_a_glue_folder_with_an_empty_dev_file_is_refused(tmp_path):
    (tmp_path / "glue" / "SST-2").mkdir(parents=True)
    (tmp_path / "glue" / "SST-2" / "train.tsv").write_text("sentence\tlabel\ngood film\t1\nbad film\t0\n")
    (tmp_path / "glue" / "SST-2" / "dev.tsv").write_text("sentence\tlabel\n")
    recipe = tiny_quickstart()
    recipe["task"] = "sst2"
    recipe["data"] = {"source": "glue-dir", "path": str(tmp_path / "glue")}
    file = write_recipe(tmp_path, "glue", recipe)
    out = tmp_path / "run"
    assert_one_line_error(invoke("run", file, "--out", out), "glue.yaml", "SST-2/dev.tsv", "no examples")
    assert not out.exists()


# --- 3. a key given twice in one mapping ---------------------------------------------------------


def test_a_key_given_twice_is_refused_with_its_line(tmp_path):
    recipe = yaml.safe_dump(tiny_quickstart(), sort_keys=False)
    file = tmp_path / "twice.yaml"
    file.write_text(recipe + "stages:\n  - {stage: drop, strategy: top, k: 1}\n")  # would replace the first list
    line = len(recipe.splitlines()) + 1
    assert_one_line_error(invoke("check", file), "twice.yaml", f"line {line}", "'stages' given twice", "first at line")
    file.write_text(recipe.replace("strategy: top", "strategy: top\n  k: 1", 1))  # twice within one stage
    assert_one_line_error(invoke("check", file), "twice.yaml", "'k' given twice")


def test_a_merge_key_may_still_be_overridden(tmp_path):
    """`<<: *anchor` then the same key is YAML's way to override what the anchor brings: not a key given twice."""
    recipe = tiny_quickstart()
    recipe["stages"] = recipe["stages"][:2]
    text = yaml.safe_dump(recipe, sort_keys=False).replace("- stage: drop", "- &drop\n  stage: drop", 1)
    file = tmp_path / "merge.yaml"
    file.write_text(text + "- <<: *drop\n  name: dropped-more\n  k: 3\n")
    result = invoke("check", file)
    assert result.exit_code == 0, result.output
    assert "ok (3 stages: teacher, dropped, dropped-more)" in result.stdout


# --- 4. recipes that are not regular files of a sane size ----------------------------------------


def test_recipes_from_devices_pipes_and_huge_files_are_refused_before_reading(tmp_path):
    fifo = tmp_path / "recipe.fifo"
    os.mkfifo(fifo)
    writer = threading.Thread(target=_write_recipe_into, args=(fifo,), daemon=True)  # so that reading it would not hang
    writer.start()
    assert_one_line_error(invoke("check", fifo), "recipe.fifo", "not a regular file")
    _release(fifo, writer)

    assert_one_line_error(invoke("check", "/dev/zero"), "/dev/zero", "not a regular file")

    huge = tmp_path / "huge.yaml"
    huge.write_text(yaml.safe_dump(tiny_quickstart()) + "#" * 2_000_000 + "\n")
    assert_one_line_error(invoke("check", huge), "huge.yaml", "more than 1,000,000 bytes")
    assert_one_line_error(bench(huge, "--dry-run", "--out", tmp_path / "out"), "huge.yaml", "more than 1,000,000 bytes")
    assert not (tmp_path / "out").exists()


def _write_recipe_into(fifo: Path) -> None:
    try:
        with fifo.open("w") as out:
            out.write(yaml.safe_dump(tiny_quickstart()))
    except BrokenPipeError:
        pass


def _release(fifo: Path, writer: threading.Thread) -> None:
    """Let the writer waiting for a reader finish."""
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)
    writer.join(timeout=10)
    os.close(reader)


def test_a_recipe_piped_into_dev_stdin_is_refused(tmp_path):
    script = Path(sys.executable).parent / "compress"
    process = subprocess.run([str(script), "check", "/dev/stdin"], input=yaml.safe_dump(tiny_quickstart()),
                             capture_output=True, text=True, cwd=tmp_path, timeout=300, env={**os.environ, "COLUMNS": "200"})
    assert process.returncode == 2, (process.stdout, process.stderr)
    assert process.stdout == "" and "Traceback" not in process.stderr
    assert process.stderr.splitlines() == ["error: /dev/stdin: not a regular file (a device, pipe or socket); expected a YAML recipe, goal or sweep file"]


# --- 5. results.jsonl -----------------------------------------------------------------------------


def _failed(key: str) -> dict:
    return {"key": key, "model": "minilm-l6", "task": "rotten-tomatoes", "strategy": "top", "k": 2, "training": "finetune",
            "precision": "torch-fp32", "status": "failed", "error": "RuntimeError: out of memory"}


def _finished(key: str) -> dict:
    return {**_failed(key), "status": "ok", "error": None, "metrics": {"accuracy": 0.8}, "primary_metric": "accuracy",
            "score": 0.8, "layers": 4, "parameters": 15_000_000, "size_mb": 60.0}


def _shard(folder: Path, records: list[dict], end: bytes = b"\n") -> Path:
    folder.mkdir(parents=True)
    lines = [json.dumps({k: v for k, v in r.items() if v is not None}).encode() for r in records]
    (folder / "results.jsonl").write_bytes(b"\n".join(lines) + end)
    return folder


def test_a_non_utf8_byte_in_a_middle_line_is_named(tmp_path):
    shard = _shard(tmp_path / "shard", [_failed("a"), _failed("b"), _failed("c")])
    content = (shard / "results.jsonl").read_bytes()
    (shard / "results.jsonl").write_bytes(content.replace(b"out of memory\"}\n{\"key\": \"b\"", b"out of memory\"}\n{\"key\": \"b\xff\"", 1))
    assert_one_line_error(bench("merge", shard, "--out", tmp_path / "merged"), "shard/results.jsonl", "line 2", "not UTF-8")
    assert not (tmp_path / "merged").exists()


@pytest.mark.parametrize("field", ["score", "metrics", "primary_metric"])
def test_a_finished_record_without_its_score_is_refused_before_merge_writes(tmp_path, field):
    merged = tmp_path / "merged"
    result = bench("merge", _shard(tmp_path / "first", [_finished("a"), _failed("b")]), "--out", merged)
    assert result.exit_code == 0, result.output
    before = folder_checksum(merged)
    broken = {**_finished("c"), field: None}
    second = _shard(tmp_path / "second", [_failed("d"), broken])
    assert_one_line_error(bench("merge", merged, second, "--out", merged), "second/results.jsonl", "line 2", "status 'ok' needs", f"missing: {field}")
    assert folder_checksum(merged) == before  # merging into one of its inputs rewrote nothing


def test_a_last_record_without_its_newline_is_kept(tmp_path):
    """A record whose line lacks only its newline is whole: resuming keeps it (and measures nothing), and the
    next record appended would start on a line of its own."""
    recipe = tiny_quickstart()
    recipe["stages"] = [{"stage": "drop", "name": "dropped", "strategy": "top", "k": 2}]  # trains nothing: one row, no baselines
    file = write_recipe(tmp_path, "drop_only", recipe)
    rows, _ = recipe_rows(load_recipes([file]))
    (row,) = rows
    record = {**_failed(""), **row.combination.record_fields(), "key": row.combination.key}
    out = tmp_path / "out"
    assert bench("merge", _shard(tmp_path / "shard", [record], end=b""), "--out", out).exit_code == 0  # a folder of compress's
    content = (out / "results.jsonl").read_bytes()
    (out / "results.jsonl").write_bytes(content.removesuffix(b"\n"))  # as a run killed before its newline left it

    result = bench(file, "--no-peak-memory", "--out", out)
    assert result.exit_code == 0, result.output
    assert "1 already done" in result.output and "0 to run" in result.output and "cut short" not in result.output
    assert (out / "results.jsonl").read_bytes() == content


@pytest.mark.parametrize("content, expected", [
    (b"{not json", "not JSON"),
    (b'{"tasks": {}, "rows": {"a": {"key": "k", "task": "rte", "score": 0.5}}}', "rows.a.predicted"),
    (b'{"tasks": {}, "rows": {"a": {"key": "k", "task": "rte", "score": 0.5, "predicted": [1]}}}', "rows of task rte"),
])
def test_a_damaged_predictions_file_is_refused_before_anything_is_written(tmp_path, content, expected):
    shard = _shard(tmp_path / "shard", [_finished("a")])
    (shard / "dev_predictions.json").write_bytes(content)
    assert_one_line_error(bench("merge", shard, "--out", tmp_path / "merged"), "shard/dev_predictions.json", expected)
    assert not (tmp_path / "merged").exists()
    recipe = tiny_quickstart()
    recipe["stages"] = [{"stage": "drop", "name": "dropped", "strategy": "top", "k": 2}]
    out = tmp_path / "out"
    assert bench("merge", _shard(tmp_path / "second", [_finished("b")]), "--out", out).exit_code == 0  # a folder of compress's
    (out / "dev_predictions.json").write_bytes(content)
    before = folder_checksum(out)
    assert_one_line_error(bench(write_recipe(tmp_path, "drop_only", recipe), "--out", out), "out/dev_predictions.json", expected)
    assert folder_checksum(out) == before


# --- 6. other values that passed validation and failed later -------------------------------------


def test_infinite_training_settings_are_refused(tmp_path):
    recipe = tiny_quickstart()
    recipe["stages"][0].update(epochs=float("inf"), allow_long_training=True)
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "inf", recipe)), "inf.yaml", "stages[0].epochs", "finite")
    recipe = tiny_quickstart()
    recipe["stages"][2]["temperature"] = float("inf")
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "inf", recipe)), "inf.yaml", "stages[2].temperature", "finite")


def test_a_sweep_timed_at_more_tokens_than_the_model_takes_is_refused(tmp_path):
    sweep = _sweep(tmp_path, latency={"sequence_length": 4096})  # MiniLM's position embeddings hold 512
    out = tmp_path / "out"
    assert_one_line_error(bench(sweep, "--dry-run", "--out", out), "sweep.yaml", "latency.sequence_length", "512", "4096")
    assert not out.exists()


def test_a_data_file_that_is_a_pipe_is_refused_unread(tmp_path):
    recipe = _files_recipe(tmp_path, REVIEWS, REVIEWS)
    (tmp_path / "dev.csv").unlink()
    os.mkfifo(tmp_path / "dev.csv")  # opening it to read the header would wait for a writer forever
    file = write_recipe(tmp_path, "pipe", recipe)
    assert_one_line_error(invoke("check", file), "pipe.yaml", "dev.csv", "data.dev", "not a regular file")


def test_recorded_sweep_settings_that_are_not_an_object_are_named(tmp_path):
    shards = [_shard(tmp_path / name, [_failed(name)]) for name in ("first", "second")]
    (shards[0] / "sweep-settings.json").write_text("[1, 2]\n")
    (shards[1] / "sweep-settings.json").write_bytes(b'{"seed": "\xff"}\n')
    for shard in shards:
        assert_one_line_error(bench("merge", shard, "--out", tmp_path / "merged"), f"{shard.name}/sweep-settings.json", "not a JSON object")
    assert not (tmp_path / "merged").exists()
