"""Bad recipes: exit status 2, one line naming the recipe file and the field, no traceback, nothing written.

Everything here is real: recipe files written into tmp_path, the embedded MiniLM (only its config is
read by validation), real data files. `compress check` validates without running; a few cases go
through `compress run` to show that validation happens before any folder is created.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import transformers
import yaml

from tests.helpers import assert_one_line_error, invoke, write_recipe

REPO = Path(__file__).resolve().parents[1]
QUICKSTART = REPO / "recipes" / "quickstart.yaml"


def tiny_quickstart() -> dict:
    """The first three stages of recipes/quickstart.yaml (model minilm-l6, embedded data), tiny caps."""
    recipe = yaml.safe_load(QUICKSTART.read_text())
    assert recipe["model"] == "minilm-l6" and recipe["data"]["source"] == "embedded"
    recipe["stages"] = recipe["stages"][:3]
    assert [s["name"] for s in recipe["stages"]] == ["teacher", "dropped", "distilled"]
    recipe["data"].update(max_train_examples=32, max_eval_examples=32)
    recipe["max_length"] = 32
    for stage in recipe["stages"]:
        if stage["stage"] in ("finetune", "distill"):
            stage["epochs"] = 1
    return recipe


# --- shape errors: what pydantic catches --------------------------------------------------------


def _unknown_top_key(r):
    r["epochz"] = 3


def _unknown_stage_key(r):
    r["stages"][1]["kk"] = 2


def _missing_model(r):
    del r["model"]


def _k_wrong_type(r):
    r["stages"][1]["k"] = "two"


def _epochs_wrong_type(r):
    r["stages"][0]["epochs"] = "fast"


def _unknown_strategy(r):
    r["stages"][1]["strategy"] = "middle-out"


def _unknown_stage(r):
    r["stages"][1]["stage"] = "prune"


def _negative_k(r):
    r["stages"][1]["k"] = -1


def _from_unknown(r):
    r["stages"][1]["from"] = "nowhere"


def _k_and_layers(r):
    r["stages"][1]["layers"] = [1]


SHAPE_CASES = {
    # id: (mutation, pieces the one line must hold besides the file name)
    "unknown-top-level-key": (_unknown_top_key, ["epochz", "unknown key"]),
    "unknown-stage-key": (_unknown_stage_key, ["stages[1].kk", "unknown key"]),
    "missing-model": (_missing_model, ["model", "missing"]),
    "k-not-an-integer": (_k_wrong_type, ["stages[1].k", "'two'"]),
    "epochs-not-a-number": (_epochs_wrong_type, ["stages[0].epochs", "'fast'"]),
    "unknown-strategy": (_unknown_strategy, ["stages[1].strategy", "'middle-out'", "top"]),
    "unknown-stage-name": (_unknown_stage, ["stages[1]", "'prune'", "drop", "finetune"]),
    "negative-k": (_negative_k, ["stages[1].k", "-1"]),
    "from-unknown-stage": (_from_unknown, ["stages[1].from", "'nowhere'", "teacher"]),
    "k-and-layers-together": (_k_and_layers, ["stages[1]", "layers"]),
}


@pytest.mark.parametrize("case", list(SHAPE_CASES))
def test_shape_errors(tmp_path, case):
    mutate, expected = SHAPE_CASES[case]
    recipe = tiny_quickstart()
    mutate(recipe)
    file = write_recipe(tmp_path, case, recipe)
    assert_one_line_error(invoke("check", file), f"{case}.yaml", *expected)


# --- errors that need the model's config or the data --------------------------------------------


def test_unknown_task(tmp_path):
    recipe = tiny_quickstart()
    recipe["task"] = "sst-3"
    file = write_recipe(tmp_path, "task", recipe)
    line = assert_one_line_error(invoke("check", file), "task.yaml", "task", "'sst-3'")
    assert "sst2" in line  # the known tasks are listed


def test_k_equal_to_layer_count(tmp_path):
    recipe = tiny_quickstart()
    recipe["stages"][1]["k"] = 6  # minilm-l6 has 6 layers
    file = write_recipe(tmp_path, "k6", recipe)
    assert_one_line_error(invoke("check", file), "k6.yaml", "stages[1].k", "6 layers", "(got 6)")


def test_k_that_fits_only_before_an_earlier_drop(tmp_path):
    recipe = tiny_quickstart()
    recipe["stages"] = [
        {"stage": "drop", "name": "first", "strategy": "top", "k": 3},
        {"stage": "drop", "name": "second", "strategy": "bottom", "k": 3},
    ]
    file = write_recipe(tmp_path, "twodrops", recipe)
    assert_one_line_error(invoke("check", file), "twodrops.yaml", "stages[1].k", "3 layers", "(got 3)")

    # The same second drop from the 6-layer base instead fits: the layer count follows `from`.
    recipe["stages"][1]["from"] = "base"
    ok = write_recipe(tmp_path, "twodrops_from_base", recipe)
    result = invoke("check", ok)
    assert result.exit_code == 0, result.output
    assert "ok (2 stages: first, second)" in result.stdout


def test_layers_index_out_of_range(tmp_path):
    recipe = tiny_quickstart()
    recipe["stages"][1] = {"stage": "drop", "name": "dropped", "from": "base", "strategy": "layers", "layers": [0, 9]}
    file = write_recipe(tmp_path, "layers", recipe)
    assert_one_line_error(invoke("check", file), "layers.yaml", "stages[1].layers", "0..5", "[9]")


def test_model_folder_that_does_not_exist(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the relative path is looked up from the working directory
    recipe = tiny_quickstart()
    recipe["model"] = "./no/such/folder"
    file = write_recipe(tmp_path, "nomodel", recipe)
    assert_one_line_error(invoke("check", file), "nomodel.yaml", "model", "./no/such/folder", "does not exist")


def test_architecture_without_a_layout_entry(tmp_path):
    t5 = tmp_path / "tiny-t5"
    transformers.T5Config(d_model=16, d_ff=32, d_kv=8, num_layers=2, num_heads=2, vocab_size=100).save_pretrained(t5)
    recipe = tiny_quickstart()
    recipe["model"] = str(t5)
    file = write_recipe(tmp_path, "t5", recipe)
    line = assert_one_line_error(invoke("check", file), "t5.yaml", "model", "'t5'", "no layer-layout entry")
    assert "bert" in line  # the supported architectures are listed


def test_data_file_without_the_named_column(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\nfine film,1\ndull film,0\n")
    (tmp_path / "dev.csv").write_text("sentence,label\ngood,1\nbad,0\n")
    recipe = tiny_quickstart()
    recipe["task"] = "reviews"
    recipe["data"] = {
        "source": "files",
        "train": str(tmp_path / "train.csv"),
        "dev": str(tmp_path / "dev.csv"),
        "text_columns": ["review"],
    }
    file = write_recipe(tmp_path, "columns", recipe)
    assert_one_line_error(invoke("check", file), "columns.yaml", "train.csv", "'review'", "sentence, label")

    # The same recipe naming the column the files have is accepted: the error above was the column.
    recipe["data"]["text_columns"] = ["sentence"]
    result = invoke("check", write_recipe(tmp_path, "columns_ok", recipe))
    assert result.exit_code == 0, result.output


def test_missing_data_file(tmp_path):
    (tmp_path / "train.csv").write_text("sentence,label\nfine film,1\ndull film,0\n")
    recipe = tiny_quickstart()
    recipe["task"] = "reviews"
    recipe["data"] = {
        "source": "files",
        "train": str(tmp_path / "train.csv"),
        "dev": str(tmp_path / "missing-dev.csv"),
        "text_columns": ["sentence"],
    }
    file = write_recipe(tmp_path, "nodev", recipe)
    assert_one_line_error(invoke("check", file), "nodev.yaml", "missing-dev.csv", "data.dev")


def test_invalid_yaml(tmp_path):
    file = tmp_path / "broken.yaml"
    file.write_text("model: minilm-l6\nstages: [\n  - {stage: drop\n")
    assert_one_line_error(invoke("check", file), "broken.yaml", "not valid YAML", "line 3")


def test_yaml_that_is_not_a_mapping(tmp_path):
    file = tmp_path / "list.yaml"
    file.write_text("- model: minilm-l6\n- task: sst2\n")
    assert_one_line_error(invoke("check", file), "list.yaml", "mapping")


def test_recipe_file_that_does_not_exist(tmp_path):
    assert_one_line_error(invoke("check", tmp_path / "absent.yaml"), "absent.yaml", "no such recipe, goal or sweep file")


def test_valid_recipe_passes_check(tmp_path):
    """The base every case above is mutated from is itself valid (so each error comes from its change)."""
    result = invoke("check", write_recipe(tmp_path, "good", tiny_quickstart()))
    assert result.exit_code == 0, result.output
    assert "good.yaml: ok (3 stages: teacher, dropped, distilled)" in result.stdout
    assert result.stderr == ""


# --- `compress run` validates the whole recipe before writing anything ---------------------------


def test_run_rejects_bad_k_before_creating_the_run_folder(tmp_path):
    recipe = tiny_quickstart()
    recipe["stages"][2] = {"stage": "drop", "name": "student", "strategy": "top", "k": 4}  # 4 of the 4 left
    file = write_recipe(tmp_path, "late", recipe)
    out = tmp_path / "run"
    assert_one_line_error(invoke("run", file, "--out", out), "late.yaml", "stages[2].k", "4 layers")
    assert not out.exists()
    assert not (tmp_path / "run.partial").exists()


def test_run_with_default_folder_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = tiny_quickstart()
    recipe["stages"][0]["learning_rat"] = 1e-4
    file = write_recipe(tmp_path, "typo", recipe)
    before = sorted(p.name for p in tmp_path.iterdir())
    assert_one_line_error(invoke("run", file), "typo.yaml", "stages[0].learning_rat", "unknown key")
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # in particular no runs/typo
    assert not (tmp_path / "runs").exists()


def test_run_missing_recipe_file(tmp_path):
    out = tmp_path / "run"
    assert_one_line_error(invoke("run", tmp_path / "nope.yaml", "-o", out), "nope.yaml", "no such recipe file")
    assert not out.exists()


# --- the installed console script, as a user runs it ---------------------------------------------


def test_console_script_bad_recipe_exit_status_and_single_stderr_line(tmp_path):
    script = Path(sys.executable).parent / "compress"
    assert script.is_file(), f"console script not found next to {sys.executable}"
    recipe = tiny_quickstart()
    recipe["stages"][1]["k"] = 6
    file = write_recipe(tmp_path, "script_k6", recipe)
    out = tmp_path / "run"
    process = subprocess.run(
        [str(script), "run", str(file), "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "COLUMNS": "200"},
        timeout=300,
    )
    assert process.returncode == 2, (process.stdout, process.stderr)
    assert "Traceback" not in process.stderr + process.stdout
    lines = process.stderr.splitlines()
    assert len(lines) == 1, process.stderr
    assert "script_k6.yaml" in lines[0] and "stages[1].k" in lines[0]
    assert process.stdout == ""
    assert not out.exists()
