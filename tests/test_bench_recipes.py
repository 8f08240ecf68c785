"""`compress bench` on a list of recipes: naming rows from their stages, the generated baseline,
one real tiny run end to end (embedded MiniLM and Rotten Tomatoes), resume, and bad input."""

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from compress.benchmarking.bench_recipes import baseline_recipe, describe
from compress.benchmarking.report import read_records
from compress.cli import app
from compress.pipeline.recipe import parse_recipe, recipe_from_mapping
from compress.pipeline.runner import stage_identities

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

DATA = {"source": "embedded", "max_train_examples": 32, "max_eval_examples": 32}
TRAIN = {"epochs": 1, "batch_size": 16}


def recipe(name, *stages):
    return {"name": name, "model": "minilm-l6", "task": "rotten-tomatoes", "data": DATA, "max_length": 32, "stages": list(stages)}


def write(folder, content):
    path = folder / f"{content['name']}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path


def invoke(*args):
    return CliRunner().invoke(app, ["bench", *map(str, args)], env={"COLUMNS": "200"})


@pytest.mark.parametrize(
    "file, described",
    [
        ("quickstart.yaml", ("top", 2, "distill", "onnx-int8-dynamic")),  # the teacher stage is not on its path
        ("bert_top4_int8.yaml", ("top", 4, "finetune", "onnx-int8-dynamic")),
        ("bert_top4.yaml", ("top", 4, "finetune", "torch-fp32")),
        ("static_int8.yaml", ("top", 2, "finetune", "onnx-int8-static")),
    ],
)
def test_a_recipe_row_is_named_by_what_its_stages_do(file, described):
    parsed = parse_recipe(RECIPES / file)
    assert describe(parsed, parsed.stages[-1].name) == described


def test_baseline_fine_tunes_the_full_model_as_the_recipe_trains():
    parsed = parse_recipe(RECIPES / "quickstart.yaml")
    baseline = baseline_recipe(parsed)
    teacher = parsed.stages[0]
    assert [s.stage for s in baseline.stages] == ["finetune", "export", "quantize"]
    assert (baseline.stages[0].epochs, baseline.stages[0].learning_rate) == (teacher.epochs, teacher.learning_rate)
    assert baseline.data == parsed.data and baseline.model == parsed.model
    assert describe(baseline, "finetune") == ("full", 0, "finetune", "torch-fp32")


@pytest.fixture(scope="module")
def recipe_bench(tmp_path_factory):
    folder = tmp_path_factory.mktemp("recipes")
    files = [
        write(folder, recipe("top1", {"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", **TRAIN})),
        write(folder, recipe("bottom1-int8", {"stage": "drop", "strategy": "bottom", "k": 1}, {"stage": "finetune", **TRAIN},
                             {"stage": "export"}, {"stage": "quantize", "mode": "dynamic-int8"})),
    ]
    out = folder / "out"
    return files, out, invoke(*files, "--out", out)


def test_recipes_run_beside_the_generated_baseline(recipe_bench):
    files, out, result = recipe_bench
    assert result.exit_code == 0, result.output
    rows = {(r["recipe"], r["precision"]): r for r in read_records(out)}
    assert set(rows) == {
        ("baseline-minilm-l6-rotten-tomatoes", "torch-fp32"),
        ("baseline-minilm-l6-rotten-tomatoes", "onnx-int8-dynamic"),
        ("top1", "torch-fp32"),
        ("bottom1-int8", "onnx-int8-dynamic"),
    }
    assert all(r["status"] == "ok" for r in rows.values())
    top1, bottom1 = rows[("top1", "torch-fp32")], rows[("bottom1-int8", "onnx-int8-dynamic")]
    assert (top1["strategy"], top1["k"], top1["layers"], top1["kept_layers"]) == ("top", 1, 5, [0, 1, 2, 3, 4])
    assert bottom1["kept_layers"] == [1, 2, 3, 4, 5] and bottom1["size_mb"] < top1["size_mb"] / 2
    assert top1["train_seconds"] > 0 and top1["trained_in"] == "recipes/top1/02-finetune"
    table = (out / "results.md").read_text()
    assert "| top (top1) | 1 | finetune | torch-fp32 |" in table
    assert "| full (baseline-minilm-l6-rotten-tomatoes) | 0 | finetune | torch-fp32 |" in table
    assert "+0.00" in table  # the baseline is the reference the changes are counted from
    assert (out / "work" / "recipes" / "top1" / "final" / "model.safetensors").exists()
    assert yaml.safe_load((out / "work" / "recipes" / "baseline-minilm-l6-rotten-tomatoes" / "recipe.yaml").read_text())["stages"]


def test_a_second_run_of_the_recipes_trains_nothing(recipe_bench):
    files, out, _ = recipe_bench
    stamp = (out / "work" / "recipes" / "top1" / "results.json").stat().st_mtime_ns
    result = invoke(*files, "--out", out)
    assert result.exit_code == 0 and "4 already done" in result.output and "0 to run" in result.output
    assert (out / "work" / "recipes" / "top1" / "results.json").stat().st_mtime_ns == stamp


def test_a_changed_recipe_is_not_mixed_with_its_old_run(recipe_bench, tmp_path):
    files, out, _ = recipe_bench
    changed = yaml.safe_load(files[0].read_text())
    changed["stages"][1]["epochs"] = 2
    file = tmp_path / files[0].name
    file.write_text(yaml.safe_dump(changed, sort_keys=False))
    result = invoke(file, "--out", out)
    assert result.exit_code == 2 and "another version" in result.output and "top1" in result.output


def test_bad_recipes_are_all_listed_before_any_work(tmp_path):
    good = write(tmp_path, recipe("good", {"stage": "finetune", **TRAIN}))
    bad_k = write(tmp_path, recipe("bad-k", {"stage": "drop", "strategy": "top", "k": 9}, {"stage": "finetune", **TRAIN}))
    bad_key = write(tmp_path, recipe("bad-key", {"stage": "finetune", "epoch": 1}))
    result = invoke(good, bad_k, bad_key, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "2 problem(s)" in result.output
    assert "bad-k.yaml" in result.output and "bad-key.yaml" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_sweep_among_recipes_is_refused(tmp_path):
    good = write(tmp_path, recipe("good", {"stage": "finetune", **TRAIN}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"models": ["minilm-l6"], "tasks": {"sst2": {}}, "grids": []}))
    result = invoke(good, sweep, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "sweep.yaml: not a recipe" in result.output


def test_a_recipe_trained_otherwise_than_its_baseline_gets_a_note(tmp_path):
    first = write(tmp_path, recipe("first", {"stage": "finetune", **TRAIN}))
    same = write(tmp_path, recipe("same", {"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", **TRAIN}))
    longer = write(tmp_path, recipe("longer", {"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", "epochs": 3}))
    result = invoke(first, same, longer, "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert text.count("note:") == 1 and "longer.yaml: trains with other data or settings than" in text
    assert "first.yaml, which the baseline" in text
    assert "5 would run" in result.output  # two baseline rows and three recipes


def test_a_stage_is_identified_by_what_makes_its_model_not_by_its_name():
    teacher = {"stage": "finetune", **TRAIN}
    drop = {"stage": "drop", "from": "base", "strategy": "top", "k": 1}

    def identities(*stages, **changes):
        return stage_identities(recipe_from_mapping({**recipe("r", *stages), **changes}, "test"))

    one = identities({**teacher, "name": "teacher"}, drop, {"stage": "distill", "teacher": "teacher", **TRAIN})
    renamed = identities({**teacher, "name": "big"}, drop, {"stage": "distill", "teacher": "big", **TRAIN})
    assert one["teacher"] == renamed["big"] and one["03-distill"] == renamed["03-distill"]
    other_teacher = identities({**teacher, "name": "teacher", "learning_rate": 1e-4}, drop, {"stage": "distill", "teacher": "teacher", **TRAIN})
    assert other_teacher["02-drop"] == one["02-drop"]  # starts from the base, does not read the teacher
    assert other_teacher["03-distill"] != one["03-distill"]  # reads another teacher
    assert identities({**teacher, "name": "teacher"}, seed=7)["teacher"] != one["teacher"]
    assert identities({**teacher, "name": "teacher"}, max_length=64)["teacher"] != one["teacher"]
    # the same drop after the teacher instead of from the base starts from another model
    after = identities({**teacher, "name": "teacher"}, {**drop, "from": "teacher"})
    assert after["02-drop"] != one["02-drop"]


def test_a_teacher_that_is_the_baseline_is_trained_once(tmp_path):
    teacher = {"stage": "finetune", "name": "teacher", **TRAIN}
    files = [
        write(tmp_path, recipe(f"distill-top{k}", teacher, {"stage": "drop", "from": "base", "strategy": "top", "k": k},
                               {"stage": "distill", "teacher": "teacher", **TRAIN}))
        for k in (1, 2)
    ]
    out = tmp_path / "out"
    result = invoke(*files, "--out", out)
    assert result.exit_code == 0, result.output
    recipes = out / "work" / "recipes"
    trained = recipes / "baseline-minilm-l6-rotten-tomatoes" / "finetune"
    assert "reused_from" not in json.loads((trained / "stage.json").read_text())["notes"]
    weights = (trained / "model.safetensors").stat()
    for name in ("distill-top1", "distill-top2"):
        record = json.loads((recipes / name / "teacher" / "stage.json").read_text())
        assert record["notes"]["reused_from"] == str(trained) and record["name"] == record["settings"]["name"] == "teacher"
        linked = (recipes / name / "teacher" / "model.safetensors").stat()
        assert (linked.st_ino, linked.st_size) == (weights.st_ino, weights.st_size)
        assert str(trained) in (recipes / name / "teacher" / "README.md").read_text()
    assert json.loads((trained / "stage.json").read_text())["name"] == "finetune"  # the original record is untouched
    assert "baseline" in (trained / "README.md").read_text()  # and so is its model card
    rows = {r["recipe"]: r for r in read_records(out)}
    assert rows["distill-top1"]["status"] == rows["distill-top2"]["status"] == "ok"
