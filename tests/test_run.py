"""Running recipes end to end at tiny size, and `compress drop` alone.

Real components only: the embedded all-MiniLM-L6-v2 (alias minilm-l6), the embedded Rotten Tomatoes
data, the Hugging Face Trainer, files in tmp_path. The only stand-in is a stage function that raises
KeyboardInterrupt, to simulate Ctrl-C in the middle of a run.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import yaml
from transformers import AutoConfig, AutoModel, AutoModelForSequenceClassification

import compress.stages
from compress.models.loading import resolve_model
from tests.helpers import assert_scored_on, invoke, write_recipe

REPO = Path(__file__).resolve().parents[1]
RECIPES = REPO / "recipes"
GLUE = Path(__file__).resolve().parents[2] / "shared" / "glue"

TINY_DATA = {"max_train_examples": 48, "max_eval_examples": 48}


def tiny(recipe_file: Path, **data_overrides) -> dict:
    """A shipped recipe's structure at tiny size: 48/48 examples, 1 epoch, 32 tokens."""
    recipe = yaml.safe_load(recipe_file.read_text())
    recipe["data"].update(TINY_DATA, **data_overrides)
    recipe["max_length"] = 32
    for stage in recipe["stages"]:
        if stage["stage"] in ("finetune", "distill"):
            stage["epochs"] = 1
        if stage.get("strategy") == "contribution":
            stage["examples"] = 16
    return recipe


def assert_ok(result):
    assert result.exit_code == 0, (result.output, result.exception)
    assert result.exception is None, repr(result.exception)


def layer_count(folder: Path) -> int:
    return AutoConfig.from_pretrained(folder).num_hidden_layers


def load_cleanly(folder: Path, model_class=AutoModelForSequenceClassification):
    """Load a saved model and check every weight matched: nothing missing, nothing left over."""
    model, info = model_class.from_pretrained(folder, output_loading_info=True)
    for kind in ("missing_keys", "unexpected_keys", "mismatched_keys"):  # lists in transformers 4, sets in 5
        assert not info[kind], (kind, info[kind])
    return model


def drop_only_recipe() -> dict:
    """No training at all: the cheapest complete run."""
    recipe = tiny(RECIPES / "quickstart.yaml")
    recipe["stages"] = [{"stage": "drop", "name": "dropped", "strategy": "top", "k": 2}]
    return recipe


# --- the quickstart, end to end ------------------------------------------------------------------


@pytest.fixture(scope="module")
def quickstart_run(module_folder):
    folder = module_folder("quickstart")
    file = write_recipe(folder, "quickstart", tiny(RECIPES / "quickstart.yaml"))
    run = folder / "run"
    result = invoke("run", file, "--out", run)
    return result, run


def test_quickstart_exits_ok_and_prints_the_table(quickstart_run):
    result, _ = quickstart_run
    assert_ok(result)
    table = result.stdout[result.stdout.rindex("quickstart: minilm-l6 on rotten-tomatoes") :]
    header = next(line for line in table.splitlines() if "stage" in line and "layers" in line)
    assert "accuracy" in header
    rows = {line.split()[1]: line for line in table.splitlines() if line.startswith("│")}
    assert set(rows) == {"teacher", "dropped", "distilled", "onnx", "int8"}
    assert "-" in rows["dropped"].split()  # a drop from the pre-trained model is not evaluated
    assert "size" in header and "parameters" in header


def test_quickstart_results_json(quickstart_run):
    _, run = quickstart_run
    results = json.loads((run / "results.json").read_text())
    stages = {s["name"]: s for s in results["stages"]}
    names = ["teacher", "dropped", "distilled", "onnx", "int8"]
    assert [s["name"] for s in results["stages"]] == names
    assert [stages[n]["layers"] for n in names] == [6, 4, 4, 4, 4]
    assert [stages[n]["kind"] for n in names] == ["torch", "torch", "torch", "onnx", "onnx"]
    assert stages["teacher"]["kept_layers"] == [0, 1, 2, 3, 4, 5]
    for name in names[1:]:
        assert stages[name]["kept_layers"] == [0, 1, 2, 3]
    assert stages["dropped"]["source"] == "base" and stages["distilled"]["source"] == "dropped"
    for name in ("teacher", "distilled", "onnx", "int8"):
        assert_scored_on(stages[name]["metrics"], TINY_DATA["max_eval_examples"])
    assert stages["dropped"]["metrics"] == {}
    assert stages["teacher"]["parameters"] > stages["dropped"]["parameters"]
    assert stages["distilled"]["parameters"] == stages["dropped"]["parameters"] == stages["int8"]["parameters"]
    assert stages["onnx"]["notes"]["parity_max_abs_logit_diff"] < 1e-3
    assert stages["int8"]["size_mb"] < 0.3 * stages["onnx"]["size_mb"]
    assert "kl_to_teacher_after" in stages["distilled"]["notes"]
    for trained in ("teacher", "distilled"):  # the loss curve, to tell a model that learnt from one that did not
        notes = stages[trained]["notes"]
        assert notes["train_loss_mean"] > 0 and len(notes["train_loss_by_step"]) >= 2, notes
    assert results["final"]["folder"] == "final"
    assert results["final"]["kept_layers"] == [0, 1, 2, 3]
    assert results["final"]["metrics"] == stages["int8"]["metrics"]


def test_quickstart_distilled_model_loads_whole(quickstart_run):
    _, run = quickstart_run
    model = load_cleanly(run / "distilled")
    assert model.config.num_hidden_layers == 4
    assert len(model.bert.encoder.layer) == 4
    assert model.config.compress_layer_drop["kept_layers"] == [0, 1, 2, 3]
    assert model.config.compress_layer_drop["original_num_layers"] == 6
    assert model.config.id2label == {0: "rotten", 1: "fresh"}


def test_quickstart_final_is_an_edge_ready_int8_onnx_folder(quickstart_run):
    from compress.exporters.onnx_runtime import ort_session
    from transformers import AutoTokenizer

    _, run = quickstart_run
    # final/ is the int8 stage, the graph byte for byte where transformers.js and optimum look for it
    graph = run / "final" / "onnx" / "model_quantized.onnx"
    assert graph.read_bytes() == (run / "int8" / "onnx" / "model_quantized.onnx").read_bytes()
    assert sorted(p.name for p in (run / "final" / "onnx").iterdir()) == ["model_quantized.onnx"]
    config = json.loads((run / "final" / "config.json").read_text())
    assert config["transformers.js_config"] == {"dtype": "q8"}  # only the int8 graph ships
    assert config["compress_layer_drop"]["kept_layers"] == [0, 1, 2, 3]
    assert config["compress_quantization"]["mode"] == "dynamic-int8"
    assert (run / "final" / "tokenizer.json").is_file()  # transformers.js reads the fast tokenizer's file
    tokenizer = AutoTokenizer.from_pretrained(run / "final")
    batch = tokenizer(["a delight", "a mess"], padding=True, return_tensors="np")
    session = ort_session(graph)
    (logits,) = session.run(["logits"], {i.name: batch[i.name].astype("int64") for i in session.get_inputs()})
    assert logits.shape == (2, 2)


def test_quickstart_model_card(quickstart_run):
    _, run = quickstart_run
    card = (run / "final" / "README.md").read_text()
    assert "`top`" in card
    assert "[0, 1, 2, 3]" in card
    assert "[4, 5]" in card  # the dropped layers
    results = json.loads((run / "results.json").read_text())
    final = results["stages"][-1]["metrics"]
    assert f"| accuracy | {final['accuracy']:.4f} ± {final['accuracy_stderr']:.4f} |" in card
    assert "4 of 6 layers" in card
    assert "dynamic-int8" in card


def test_quickstart_stage_folders(quickstart_run):
    _, run = quickstart_run
    for name, layers in (("teacher", 6), ("dropped", 4), ("distilled", 4), ("onnx", 4), ("int8", 4)):
        folder = run / name
        assert folder.is_dir()
        stage = json.loads((folder / "stage.json").read_text())
        assert stage["name"] == name and stage["layers"] == layers
        assert (folder / "config.json").is_file() and (folder / "tokenizer_config.json").is_file()
        assert layer_count(folder) == layers
    assert json.loads((run / "dropped" / "stage.json").read_text())["settings"]["from"] == "base"
    assert not list(run.glob("*.partial"))
    assert (run / "recipe.yaml").is_file()


# --- the other order: fine-tune, drop, fine-tune -------------------------------------------------


@pytest.mark.slow
def test_finetune_drop_finetune_evaluates_the_dropped_stage(tmp_path):
    recipe = tiny(RECIPES / "finetune_drop_finetune.yaml")
    assert [s["stage"] for s in recipe["stages"]] == ["finetune", "drop", "finetune"]
    run = tmp_path / "run"
    result = invoke("run", write_recipe(tmp_path, "fdf", recipe), "-o", run)
    assert_ok(result)
    stages = {s["name"]: s for s in json.loads((run / "results.json").read_text())["stages"]}
    assert [stages[n]["layers"] for n in ("full", "dropped", "refinetuned")] == [6, 4, 4]
    assert stages["dropped"]["source"] == "full"
    for name in ("full", "dropped", "refinetuned"):
        assert_scored_on(stages[name]["metrics"], TINY_DATA["max_eval_examples"])
    assert "accuracy" in (run / "dropped" / "README.md").read_text()
    # The dropped model keeps the fine-tuned head of `full`.
    dropped = load_cleanly(run / "dropped")
    full = load_cleanly(run / "full")
    assert dropped.classifier.weight.equal(full.classifier.weight)
    assert not list(run.glob("*.partial"))


# --- an interrupted run --------------------------------------------------------------------------


@pytest.mark.slow
def test_interrupted_run_keeps_completed_stages(tmp_path, monkeypatch):
    real = compress.stages.STAGES["finetune"]
    calls = []

    def finetune_then_interrupt(model, settings, context):
        calls.append(settings.name)
        if len(calls) == 1:
            return real.apply(model, settings, context)
        (context.output_dir / "half-written.bin").write_bytes(b"\0" * 16)
        raise KeyboardInterrupt

    monkeypatch.setitem(compress.stages.STAGES._entries, "finetune", dataclasses.replace(real, apply=finetune_then_interrupt))
    recipe = tiny(RECIPES / "finetune_drop_finetune.yaml")
    run = tmp_path / "run"
    result = invoke("run", write_recipe(tmp_path, "interrupted", recipe), "-o", run)

    assert result.exit_code == 130, (result.output, result.exception)
    assert "Traceback" not in result.output
    assert "interrupted" in result.stderr
    assert calls == ["full", "refinetuned"]

    assert (run / "full").is_dir() and (run / "dropped").is_dir()
    assert_scored_on(json.loads((run / "full" / "stage.json").read_text())["metrics"], TINY_DATA["max_eval_examples"])
    assert load_cleanly(run / "full").config.num_hidden_layers == 6
    dropped = load_cleanly(run / "dropped")
    assert dropped.config.num_hidden_layers == 4
    assert dropped.config.compress_layer_drop["kept_layers"] == [0, 1, 2, 3]

    assert (run / "refinetuned.partial").is_dir()
    assert not (run / "refinetuned").exists()
    assert not (run / "final").exists()
    assert not (run / "results.json").exists()
    assert sorted(p.name for p in run.glob("*.partial")) == ["refinetuned.partial"]


# --- `compress drop` -----------------------------------------------------------------------------


def test_drop_top_saves_a_clean_smaller_model_through_the_executor(tmp_path):
    out = tmp_path / "top"
    result = invoke("drop", "minilm-l6", "--strategy", "top", "-k", "2", "-o", out)
    assert_ok(result)
    assert "[0, 1, 2, 3]" in result.stdout
    model = load_cleanly(out / "final", AutoModel)
    assert model.config.num_hidden_layers == 4 and len(model.encoder.layer) == 4
    assert model.config.compress_layer_drop["kept_layers"] == [0, 1, 2, 3]
    assert model.config.compress_layer_drop["drops"] == [{"strategy": "top", "dropped_layers": [4, 5]}]
    assert (out / "final" / "tokenizer_config.json").is_file()
    # A run folder like any other: the recipe it ran, the stage's record, results.json; no task, no scores.
    recipe = yaml.safe_load((out / "recipe.yaml").read_text())
    assert recipe["stages"] == [{"stage": "drop", "name": "drop", "strategy": "top", "k": 2}] and "task" not in recipe
    record = json.loads((out / "drop" / "stage.json").read_text())
    assert record["kept_layers"] == [0, 1, 2, 3] and record["metrics"] == {}
    assert json.loads((out / "results.json").read_text())["task"] is None
    # The run folder stands for its final model wherever a model is expected.
    assert AutoConfig.from_pretrained(resolve_model(out)).num_hidden_layers == 4

    again = invoke("drop", "minilm-l6", "--strategy", "top", "-k", "2", "-o", out)
    assert_ok(again)
    assert "reused" in again.stdout  # the same drop is found, not made again

    other = invoke("drop", "minilm-l6", "--strategy", "bottom", "-k", "1", "-o", out)
    assert_ok(other)  # as an edited recipe: the stage is made again with its new settings
    assert AutoConfig.from_pretrained(out / "final").compress_layer_drop["kept_layers"] == [1, 2, 3, 4, 5]
    assert yaml.safe_load((out / "recipe.yaml").read_text())["stages"][0]["strategy"] == "bottom"


def test_drop_refuses_bad_options_in_one_line_naming_the_option(tmp_path):
    for options, named in [
        (["--strategy", "top"], "--k"),
        (["--strategy", "sideways", "-k", "1"], "--strategy"),
        (["--strategy", "top", "-k", "9"], "--k: must be at least 0 and less than the model's 6 layers"),
        (["--strategy", "contribution", "-k", "1"], "--task: strategy 'contribution' scores layers"),
        (["--strategy", "top", "-k", "1", "--max-length", "4096"], "--max-length: at most 512 tokens"),
    ]:
        result = invoke("drop", "minilm-l6", *options, "-o", tmp_path / "out")
        assert result.exit_code == 2, result.output
        assert len(result.stderr.splitlines()) == 1 and named in result.stderr, result.stderr
        assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("stages, problem", [
    ([{"stage": "drop", "strategy": "top", "k": 1}, {"stage": "finetune", "epochs": 1}], "stages[1]: finetune trains on the task's examples"),
    ([{"stage": "drop", "strategy": "contribution", "k": 1}], "stages[0]: drop strategy 'contribution' scores layers"),
    ([{"stage": "export"}], "stages[0]: export checks the graph"),
])
def test_a_recipe_without_a_task_refuses_stages_that_read_task_data(tmp_path, stages, problem):
    file = write_recipe(tmp_path, "no-task", {"model": "minilm-l6", "stages": stages})
    result = invoke("run", file, "-o", tmp_path / "run")
    assert result.exit_code == 2, result.output
    assert len(result.stderr.splitlines()) == 1 and problem in result.stderr and "name a task" in result.stderr, result.stderr
    assert not (tmp_path / "run").exists()


def test_a_recipe_without_a_task_refuses_data_settings(tmp_path):
    file = write_recipe(tmp_path, "no-task", {"model": "minilm-l6", "data": {"source": "embedded"},
                                              "stages": [{"stage": "drop", "strategy": "top", "k": 1}]})
    result = invoke("check", file)
    assert result.exit_code == 2 and "data: given without a task" in result.stderr, result.output


def test_a_dropped_run_folder_is_a_model_a_recipe_can_start_from(tmp_path):
    dropped = tmp_path / "dropped"
    assert_ok(invoke("drop", "minilm-l6", "--strategy", "top", "-k", "4", "-o", dropped))
    recipe = tiny(RECIPES / "quickstart.yaml")
    recipe |= {"model": str(dropped), "stages": [{"stage": "finetune", "epochs": 1}]}
    run = tmp_path / "run"
    assert_ok(invoke("run", write_recipe(tmp_path, "from-dropped", recipe), "-o", run))
    final = load_cleanly(run / "final")
    assert final.config.num_hidden_layers == 2
    assert final.config.compress_layer_drop["kept_layers"] == [0, 1]


def test_drop_alternate_odd(tmp_path):
    out = tmp_path / "odd"
    assert_ok(invoke("drop", "minilm-l6", "--strategy", "alternate-odd", "-k", "2", "-o", out))
    model = load_cleanly(out / "final", AutoModel)
    assert model.config.compress_layer_drop["kept_layers"] == [0, 1, 3, 5]
    assert len(model.encoder.layer) == 4


def test_drop_contribution_scores_and_drops_the_highest(tmp_path):
    out = tmp_path / "contribution"
    result = invoke(
        "drop", "minilm-l6", "--strategy", "contribution", "-k", "2", "--task", "rotten-tomatoes",
        "--data-source", "embedded", "--examples", "16", "--max-length", "32", "-o", out,
    )
    assert_ok(result)
    assert "score" in result.stdout and "Contribution" in result.stdout  # the printed table

    scores = json.loads((out / "final" / "contribution_scores.json").read_text())
    assert scores["task"] == "rotten-tomatoes" and scores["examples"] == 16
    rows = scores["layers"]
    assert [row["layer"] for row in rows] == list(range(6))
    assert all(-1.0 <= row["score"] <= 1.0 for row in rows)
    assert len({row["score"] for row in rows}) == 6  # real, distinct measurements

    highest = sorted(sorted(range(6), key=lambda i: rows[i]["score"], reverse=True)[:2])
    config = AutoConfig.from_pretrained(out / "final")
    assert config.compress_layer_drop["drops"][0]["dropped_layers"] == highest
    assert config.compress_layer_drop["kept_layers"] == [i for i in range(6) if i not in highest]
    # With a task, the model gets the task's head (seeded, untrained), ready to fine-tune; nothing may run it as trained.
    assert load_cleanly(out / "final").config.num_hidden_layers == 4
    (texts := out.parent / "texts.txt").write_text("a fine film\n")
    refused = invoke("predict", out, texts)
    assert refused.exit_code == 2 and "never trained" in refused.stderr, refused.output


# --- a real GLUE folder --------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.skipif(not (GLUE / "SST-2" / "train.tsv").is_file(), reason=f"no GLUE folder at {GLUE}")
def test_top_strategy_recipe_on_sst2_from_a_glue_folder(tmp_path):
    recipe = tiny(RECIPES / "strategies" / "top.yaml", path=str(GLUE))
    assert recipe["task"] == "sst2" and recipe["data"]["source"] == "glue-dir"
    run = tmp_path / "run"
    result = invoke("run", write_recipe(tmp_path, "top", recipe), "-o", run)
    assert_ok(result)
    results = json.loads((run / "results.json").read_text())
    assert str(GLUE / "SST-2") in results["data"]
    stages = results["stages"]
    assert [s["layers"] for s in stages] == [4, 4]
    assert stages[-1]["kept_layers"] == [0, 1, 2, 3]
    assert_scored_on(stages[-1]["metrics"], TINY_DATA["max_eval_examples"])
    final = load_cleanly(run / "final")
    assert final.config.num_hidden_layers == 4
    assert final.config.id2label == {0: "negative", 1: "positive"}


# --- every shipped recipe ------------------------------------------------------------------------


@pytest.mark.parametrize("file", sorted(RECIPES.rglob("*.yaml")), ids=lambda f: str(f.relative_to(RECIPES)))
def test_every_shipped_recipe_is_valid(file):
    """Schema for all; the full check (model, K, data columns) for those that run offline here. Goal files
    (recipes/goals/) are checked whole where their model and data are here."""
    from compress.pipeline.recipe import check_recipe, parse_recipe, read_yaml
    from compress.search.goal import GOAL_KEY, load_goal, parse_goal

    def data_here(data) -> bool:  # offline, and a data folder (GLUE's, or one a bench script writes) present
        return data.source != "hub" and (data.path is None or (REPO / data.path).exists())

    if GOAL_KEY in read_yaml(file, "recipe"):
        goal = parse_goal(file)
        if goal.model == "minilm-l6" and data_here(goal.data):
            with pytest.MonkeyPatch.context() as patch:
                patch.chdir(REPO)
                load_goal(file)
        return
    recipe = parse_recipe(file)
    if recipe.model == "minilm-l6" and data_here(recipe.data):
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(REPO)  # recipe paths are relative to where compress runs
            check_recipe(recipe, file)
