"""`compress bench` on a list of recipes: naming rows from their stages, the generated baseline,
one real tiny run end to end (embedded MiniLM and Rotten Tomatoes), resume, and bad input."""

from pathlib import Path

import pytest
import yaml

from compress.benchmarking.records import read_records
from compress.benchmarking.rows import baseline_recipe, describe
from compress.pipeline.cache import STAGE_FILE, read_stage_record
from compress.pipeline.graph import recipe_graph
from compress.pipeline.recipe import parse_recipe, recipe_from_mapping
from tests.helpers import QUICK_TIMING, bench, build_stamps

RECIPES = Path(__file__).resolve().parents[1] / "recipes"

DATA = {"source": "embedded", "max_train_examples": 32, "max_eval_examples": 32}
TRAIN = {"epochs": 1, "batch_size": 16}


def recipe(name, *stages):
    return {"name": name, "model": "minilm-l6", "task": "rotten-tomatoes", "data": DATA, "max_length": 32, "stages": list(stages)}


def write(folder, content):
    path = folder / f"{content['name']}.yaml"
    path.write_text(yaml.safe_dump(content, sort_keys=False))
    return path



def described(recipe, stage):
    return describe(recipe.chain(stage))



@pytest.mark.parametrize(
    "file, expected",
    [
        ("quickstart.yaml", ("top", 2, "distill", "onnx-int8-dynamic-o2")),  # the teacher stage is not on its path
        ("bert_top4_int8.yaml", ("top", 4, "finetune", "onnx-int8-dynamic-o2")),
        ("bert_top4.yaml", ("top", 4, "finetune", "torch-fp32")),
        ("static_int8.yaml", ("top", 2, "finetune", "onnx-int8-static")),
    ],
)
def test_a_recipe_row_is_named_by_what_its_stages_do(file, expected):
    parsed = parse_recipe(RECIPES / file)
    assert described(parsed, parsed.stages[-1].name) == expected


def test_baseline_fine_tunes_the_full_model_as_the_recipe_trains():
    parsed = parse_recipe(RECIPES / "quickstart.yaml")
    baseline = baseline_recipe(parsed)
    teacher = parsed.stages[0]
    assert [s.stage for s in baseline.stages] == ["finetune", "export", "quantize"]
    assert (baseline.stages[0].epochs, baseline.stages[0].learning_rate) == (teacher.epochs, teacher.learning_rate)
    assert baseline.data == parsed.data and baseline.model == parsed.model
    assert described(baseline, "finetune") == ("full", 0, "finetune", "torch-fp32")


@pytest.fixture(scope="module")
def recipe_bench(module_folder):
    folder = module_folder("recipes")
    files = [
        write(folder, recipe("top1", {"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", **TRAIN})),
        write(folder, recipe("bottom1-int8", {"stage": "drop", "strategy": "bottom", "k": 1}, {"stage": "finetune", **TRAIN},
                             {"stage": "export"}, {"stage": "quantize", "mode": "dynamic-int8"})),
    ]
    out = folder / "out"
    return files, out, bench(*files, *QUICK_TIMING, "--out", out)


def test_recipes_run_beside_the_generated_baseline(recipe_bench):
    files, out, result = recipe_bench
    assert result.exit_code == 0, result.output
    rows = {(r.recipe, r.precision): r for r in read_records(out)}
    assert set(rows) == {
        ("baseline-minilm-l6-rotten-tomatoes", "torch-fp32"),
        ("baseline-minilm-l6-rotten-tomatoes", "onnx-int8-dynamic"),
        ("top1", "torch-fp32"),
        ("bottom1-int8", "onnx-int8-dynamic"),
    }
    assert all(r.status == "ok" for r in rows.values())
    top1, bottom1 = rows[("top1", "torch-fp32")], rows[("bottom1-int8", "onnx-int8-dynamic")]
    assert (top1.strategy, top1.k, top1.layers, top1.kept_layers) == ("top", 1, 5, [0, 1, 2, 3, 4])
    assert bottom1.kept_layers == [1, 2, 3, 4, 5] and bottom1.size_mb < top1.size_mb / 2
    assert top1.train_seconds > 0 and top1.trained_in == top1.measured_in
    assert read_stage_record(out / "work" / top1.trained_in).identity == top1.identity
    assert bottom1.trained_in != bottom1.measured_in and read_stage_record(out / "work" / bottom1.measured_in).stage == "quantize"
    table = (out / "results.md").read_text()
    assert "| top (top1) | 1 | finetune | torch-fp32 |" in table
    assert "| full (baseline-minilm-l6-rotten-tomatoes) | 0 | finetune | torch-fp32 |" in table
    assert "+0.00" in table  # the baseline is the reference the changes are counted from
    assert (out / "work" / top1.measured_in / "model.safetensors").exists()
    baseline = rows[("baseline-minilm-l6-rotten-tomatoes", "torch-fp32")]
    assert "name: baseline-minilm-l6-rotten-tomatoes" in (out / "work" / baseline.measured_in / "README.md").read_text()


def test_a_second_run_of_the_recipes_trains_nothing(recipe_bench):
    files, out, _ = recipe_bench
    before = build_stamps(out)
    result = bench(*files, *QUICK_TIMING, "--out", out)
    assert result.exit_code == 0 and "4 already done" in result.output and "0 to run" in result.output
    assert build_stamps(out) == before


def test_a_changed_recipe_is_not_mixed_with_its_old_run(recipe_bench, tmp_path):
    files, out, _ = recipe_bench
    changed = yaml.safe_load(files[0].read_text())
    changed["stages"][1]["epochs"] = 2
    file = tmp_path / files[0].name
    file.write_text(yaml.safe_dump(changed, sort_keys=False))
    result = bench(file, *QUICK_TIMING, "--out", out)
    assert result.exit_code == 2 and "another version" in result.output and "top1" in result.output
    assert "Traceback" not in result.output


def test_recipes_timed_otherwise_are_not_mixed_into_one_table(recipe_bench):
    files, out, _ = recipe_bench
    records = (out / "results.jsonl").read_text()
    result = bench(*files, "--latency", "repeats=4", "--out", out)
    assert result.exit_code == 2 and "its rows were timed with other latency settings" in result.output, result.output
    assert (out / "results.jsonl").read_text() == records
    result = bench(*files, "--latency", "batch_sizes=[0]", "--out", out)
    assert result.exit_code == 2 and "--latency: batch_sizes[0]: Input should be greater than 0" in result.output, result.output
    result = bench(*files, "--latency", "batch_sizes=[1", "--out", out)
    assert result.exit_code == 2 and "--latency: 'batch_sizes': expected a YAML value" in result.output, result.output
    recorded = (out / "sweep-settings.json").read_text()
    (out / "sweep-settings.json").unlink()  # as a folder of recipes benched before their timing was recorded
    try:
        result = bench(*files, "--latency", "repeats=4", "--out", out)
        assert result.exit_code == 2 and "its rows were timed with other latency settings" in result.output, result.output
    finally:
        (out / "sweep-settings.json").write_text(recorded)


def test_a_recipe_whose_engine_is_chosen_as_it_runs_is_not_a_benchmark_row(tmp_path):
    best = write(tmp_path, recipe("best", {"stage": "finetune", **TRAIN}, {"stage": "export"}, {"stage": "quantize", "mode": "best"}))
    result = bench(best, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "best.yaml: stages[2].mode: a benchmark row needs a named engine and precision" in result.output
    assert not (tmp_path / "out").exists()


def test_bad_recipes_are_all_listed_before_any_work(tmp_path):
    good = write(tmp_path, recipe("good", {"stage": "finetune", **TRAIN}))
    bad_k = write(tmp_path, recipe("bad-k", {"stage": "drop", "strategy": "top", "k": 9}, {"stage": "finetune", **TRAIN}))
    bad_key = write(tmp_path, recipe("bad-key", {"stage": "finetune", "epoch": 1}))
    result = bench(good, bad_k, bad_key, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "2 problem(s)" in result.output
    assert "bad-k.yaml" in result.output and "bad-key.yaml" in result.output and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_sweep_among_recipes_is_refused(tmp_path):
    good = write(tmp_path, recipe("good", {"stage": "finetune", **TRAIN}))
    sweep = tmp_path / "sweep.yaml"
    sweep.write_text(yaml.safe_dump({"models": ["minilm-l6"], "tasks": {"sst2": {}}, "grids": []}))
    result = bench(good, sweep, "--out", tmp_path / "out")
    assert result.exit_code == 2 and "sweep.yaml: not a recipe" in result.output


def test_a_recipe_trained_otherwise_than_its_baseline_gets_a_note(tmp_path):
    first = write(tmp_path, recipe("first", {"stage": "finetune", **TRAIN}))
    same = write(tmp_path, recipe("same", {"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", **TRAIN}))
    longer = write(tmp_path, recipe("longer", {"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", "epochs": 3}))
    result = bench(first, same, longer, "--out", tmp_path / "out", "--dry-run")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())  # the console wraps long lines
    assert text.count("note:") == 1 and "longer.yaml: trains with other data or settings than" in text
    assert "first.yaml, which the baseline" in text
    assert "5 would run" in result.output  # two baseline rows and three recipes


def test_a_stage_is_identified_by_what_makes_its_model_not_by_its_name():
    teacher = {"stage": "finetune", **TRAIN}
    drop = {"stage": "drop", "from": "base", "strategy": "top", "k": 1}

    def identities(*stages, **changes):
        nodes = recipe_graph(recipe_from_mapping({**recipe("r", *stages), **changes}, "test"), "")
        return {name: node.identity for name, node in nodes.items()}

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


@pytest.mark.slow
def test_a_teacher_that_is_the_baseline_is_trained_once(tmp_path):
    teacher = {"stage": "finetune", "name": "teacher", **TRAIN}
    files = [
        write(tmp_path, recipe(f"distill-top{k}", teacher, {"stage": "drop", "from": "base", "strategy": "top", "k": k},
                               {"stage": "distill", "teacher": "teacher", **TRAIN}))
        for k in (1, 2)
    ]
    out = tmp_path / "out"
    result = bench(*files, *QUICK_TIMING, "--out", out)
    assert result.exit_code == 0, result.output
    records = [read_stage_record(p.parent) for p in (out / "work").rglob(STAGE_FILE)]
    assert sorted(r.stage for r in records) == ["distill", "distill", "drop", "drop", "export", "finetune", "quantize"]
    (trained,) = [r for r in records if r.stage == "finetune"]
    assert trained.name == "finetune", "built once, by the baseline that asked first"
    rows = {r.recipe: r for r in read_records(out)}
    assert rows["distill-top1"].status == rows["distill-top2"].status == "ok"
    assert {rows[name].notes["teacher"] for name in ("distill-top1", "distill-top2")} == {"teacher"}
