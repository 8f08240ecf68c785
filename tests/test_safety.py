"""A user's files are never lost, an interrupted run resumes, and bad input gets one short line.

One test (or a few) per class of problem: folders compress did not make are never removed or
written into, names cannot walk out of the chosen folder, `compress run` and `compress stage` resume,
unreadable recipes and incomplete model folders are caught by `compress check`, values no one means
are refused before work, error lines stay short, a killed run leaves no process behind and keeps its
temporary files inside its folder, and only one process at a time writes into a folder.

Everything is real: the embedded MiniLM, the embedded data, files in tmp_path, child processes
killed with SIGKILL.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import torch
import yaml
from transformers import Trainer

from compress.benchmarking.records import BenchRecord
from compress.errors import CompressError
from compress.folders import CHECKPOINTS, MARKER, SCRATCH, checkpoints_for, claim, holding
from compress.models.loading import resolve_model
from compress.pipeline.executor import CHECKPOINT_MINUTES
from compress.stages.finetune import checkpoint_step, elapsed_at, last_checkpoint
from tests.helpers import RECIPES, assert_one_line_error, folder_checksum, invoke, write_recipe

TINY_DATA = {"source": "embedded", "max_train_examples": 48, "max_eval_examples": 48}


def tiny_recipe(**changes) -> dict:
    """The quickstart's first three stages at tiny size: teacher, dropped, distilled."""
    recipe = yaml.safe_load((RECIPES / "quickstart.yaml").read_text())
    recipe["stages"] = recipe["stages"][:3]
    recipe["data"] = dict(TINY_DATA)
    recipe["max_length"] = 32
    for stage in recipe["stages"]:
        if stage["stage"] in ("finetune", "distill"):
            stage["epochs"] = 1
    return {**recipe, **changes}


def drop_only(**changes) -> dict:
    return tiny_recipe(stages=[{"stage": "drop", "name": "dropped", "strategy": "top", "k": 2}], **changes)


def users_project(folder: Path) -> Path:
    """A folder of the user's: files and a subfolder compress did not make."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "notes.txt").write_text("my notes")
    (folder / "data").mkdir(exist_ok=True)
    (folder / "data" / "train.csv").write_text("text,label\nfine,1\n")
    return folder


# --- 1. --overwrite and names never reach what compress did not make --------------------------------


def test_run_overwrite_into_a_users_folder_touches_nothing(tmp_path, monkeypatch):
    project = users_project(tmp_path / "project")
    file = write_recipe(project, "r", drop_only())
    monkeypatch.chdir(project)
    before = folder_checksum(project)
    assert_one_line_error(invoke("run", "r.yaml", "-o", ".", "--overwrite"), "not made by compress", MARKER)
    assert folder_checksum(project) == before
    assert file.exists()


@pytest.mark.parametrize("command", ["stage", "drop"])
def test_stage_and_drop_overwrite_refuse_a_users_folder(tmp_path, command):
    project = users_project(tmp_path / "project")
    before = folder_checksum(project)
    if command == "stage":
        args = ("stage", "drop", "minilm-l6", "--task", "rotten-tomatoes", "--data", "source=embedded",
                "--set", "strategy=top", "--set", "k=2", "-o", project, "--overwrite")
    else:
        args = ("drop", "minilm-l6", "--strategy", "top", "-k", "2", "-o", project, "--overwrite")
    assert_one_line_error(invoke(*args), str(project), "not made by compress")
    assert folder_checksum(project) == before


def test_analyze_overwrite_refuses_a_users_folder(tmp_path):
    project = users_project(tmp_path / "project")
    before = folder_checksum(project)
    args = ("analyze", "minilm-l6", "--task", "rotten-tomatoes", "--data-source", "embedded", "--out", project, "--overwrite")
    assert_one_line_error(invoke(*args), str(project), "not made by compress")
    assert folder_checksum(project) == before


def record(key: str) -> str:
    """A results.jsonl line of a failed row."""
    return BenchRecord(key=key, model="m", task="t", strategy="top", k=1, training="finetune", precision="torch-fp32",
                       status="failed", error="x").line()


def test_bench_clean_and_merge_refuse_a_users_folder(tmp_path):
    project = users_project(tmp_path / "project")
    (project / "sweep-settings.json").write_text("{}\n")
    (project / "results.jsonl").write_text(record("mine"))
    before = folder_checksum(project)
    assert_one_line_error(invoke("bench", "clean", project), str(project), "not made by compress")
    assert_one_line_error(invoke("bench", "merge", project, "--out", project), str(project), "not made by compress")
    other = tmp_path / "other"
    other.mkdir()
    (other / "results.jsonl").write_text(record("theirs"))
    assert_one_line_error(invoke("bench", "merge", other, "--out", project), "--out", "results of its own")
    assert folder_checksum(project) == before


def test_a_users_partial_folder_is_not_replaced(tmp_path):
    """`x.partial` is where a stage writes `x`; one the user made is refused, not emptied."""
    recipe = write_recipe(tmp_path, "dropped", drop_only())
    run = tmp_path / "run"
    assert invoke("run", recipe, "--out", run).exit_code == 0
    mine = run / "final.partial"
    mine.mkdir()
    (mine / "keep.txt").write_text("mine")
    before = folder_checksum(tmp_path)
    assert_one_line_error(invoke("run", recipe, "--out", run), "final.partial", "not made by compress")
    assert folder_checksum(tmp_path) == before


@pytest.mark.parametrize("name", ["../escape", "a/b", "..", ".hidden", "", "x.partial", "/abs"])
def test_recipe_names_are_plain_folder_names(tmp_path, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    file = write_recipe(tmp_path, "r", drop_only(name=name))
    before = folder_checksum(tmp_path)
    assert_one_line_error(invoke("run", file), "r.yaml", "name", "plain folder name")
    assert folder_checksum(tmp_path) == before


@pytest.mark.parametrize("name", ["../up", "results.json", "final", ".git", "teacher.checkpoints"])
def test_stage_names_are_plain_and_free(tmp_path, name):
    recipe = drop_only()
    recipe["stages"][0]["name"] = name
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "r", recipe)), "r.yaml", "stages[0].name")


def test_a_file_name_that_is_no_plain_name_needs_a_name_field(tmp_path):
    file = write_recipe(tmp_path, ".hidden", drop_only())
    assert_one_line_error(invoke("check", file), ".hidden.yaml", "name", "unless the file sets name:")


def test_overwrite_empties_only_a_folder_compress_made(tmp_path):
    file = write_recipe(tmp_path, "r", drop_only())
    run = tmp_path / "run"
    assert invoke("run", file, "-o", run).exit_code == 0
    assert (run / MARKER).is_file() and (run / "dropped" / MARKER).is_file()
    (run / "dropped" / "leftover.bin").write_bytes(b"0")
    result = invoke("run", file, "-o", run, "--overwrite")
    assert result.exit_code == 0, result.output
    assert "resuming" not in result.output and not (run / "dropped" / "leftover.bin").exists()
    assert (run / MARKER).is_file() and (run / "final" / "model.safetensors").is_file()


# --- 2. compress run and compress stage resume ----------------------------------------------------


def _modified(folder: Path) -> int:
    return (folder / "model.safetensors").stat().st_mtime_ns


def _safetensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(folder / "model.safetensors")


@pytest.mark.slow
def test_a_training_killed_mid_way_resumes_from_its_last_checkpoint_to_the_same_weights(tmp_path, monkeypatch):
    recipe = tiny_recipe()
    recipe["stages"] = [{**recipe["stages"][0], "epochs": 2, "batch_size": 8}]  # the teacher alone: 12 steps, batched by length
    file = write_recipe(tmp_path, "r", recipe)
    run = tmp_path / "run"
    every_step = {CHECKPOINT_MINUTES: "0.00001"}  # a checkpoint after every step
    process = subprocess.Popen([Path(sys.executable).parent / "compress", "run", file, "-o", run], env={**os.environ, **every_step},
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    checkpoints = run / "teacher.checkpoints"
    deadline = time.monotonic() + 240
    # killed in the second epoch (steps 7-12): its by-length order must be drawn again as it was
    while not ((c := last_checkpoint(checkpoints)) and checkpoint_step(c) >= 8) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert process.poll() is None, "the run ended before training saved its eighth checkpoint"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (checkpoints / MARKER).is_file() and (run / "teacher.partial").is_dir() and not (run / "teacher").exists()
    spent_before = elapsed_at(last_checkpoint(checkpoints))

    monkeypatch.setenv(CHECKPOINT_MINUTES, "0")  # saves none, still resumes from the one left
    started = time.perf_counter()
    result = invoke("run", file, "-o", run)
    rerun_seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    # the stage's time counts the killed run's, up to its checkpoint
    assert 0 < spent_before < json.loads((run / "teacher" / "stage.json").read_text())["seconds"] <= spent_before + rerun_seconds
    assert "resuming training from checkpoint-" in " ".join(result.output.split())  # rich wraps long lines
    notes = json.loads((run / "teacher" / "stage.json").read_text())["notes"]
    resumed_from = notes["resumed_from_step"]
    assert 8 <= resumed_from < 12
    assert not checkpoints.exists() and not list(run.glob("*.partial")) and not (run / SCRATCH).exists()

    assert invoke("run", file, "-o", tmp_path / "whole").exit_code == 0  # the same recipe, never stopped
    whole_notes = json.loads((tmp_path / "whole" / "teacher" / "stage.json").read_text())["notes"]
    # the loss is logged every second step; resumed between two, the next logged mean covers only the steps since
    losses, whole_losses = notes["train_loss_by_step"], whole_notes["train_loss_by_step"]
    if str(resumed_from) not in whole_losses:
        first_after = str(min(step for step in map(int, whole_losses) if step > resumed_from))
        del losses[first_after], whole_losses[first_after]
    assert losses == whole_losses
    resumed, whole = _safetensors(run / "teacher"), _safetensors(tmp_path / "whole" / "teacher")
    assert resumed.keys() == whole.keys()
    assert all(torch.equal(resumed[name], whole[name]) for name in whole)


@pytest.mark.slow
def test_a_checkpoint_that_cannot_be_written_warns_and_training_goes_on(tmp_path, monkeypatch):
    """A full disk strikes while the 2x larger optimizer state is written, after the weights: the half-written
    checkpoint goes, and the model is the one a run without checkpoints trains."""
    recipe = tiny_recipe()
    recipe["stages"] = [{**recipe["stages"][0], "batch_size": 8}]  # the teacher alone: 6 steps
    file = write_recipe(tmp_path, "r", recipe)
    monkeypatch.setenv(CHECKPOINT_MINUTES, "0")
    assert invoke("run", file, "-o", tmp_path / "without").exit_code == 0

    def disk_full(trainer, output_dir):
        assert list(Path(output_dir).glob("*.safetensors")), "the weights are written first"
        assert [c.name for c in Path(output_dir).parent.glob("checkpoint-*")] == [Path(output_dir).name], "the last one went"
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Trainer, "_save_optimizer_and_scheduler", disk_full)
    monkeypatch.setenv(CHECKPOINT_MINUTES, "0.00001")  # a checkpoint after every step
    result = invoke("run", file, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output
    assert "warning: checkpoint-1 not saved ([Errno 28] No space left on device); training goes on" in " ".join(result.output.split())
    assert not (tmp_path / "run" / f"teacher{CHECKPOINTS}").exists()
    saved, without = _safetensors(tmp_path / "run" / "teacher"), _safetensors(tmp_path / "without" / "teacher")
    assert all(torch.equal(saved[name], without[name]) for name in without)


def test_checkpoints_left_beside_a_whole_model_go_at_the_next_run_and_a_users_folder_stays(tmp_path):
    """A kill between a trained model's rename and its checkpoints' removal leaves them; the next run that
    finds the model whole removes them. A folder of that name the user made is not touched."""
    file, run = write_recipe(tmp_path, "r", drop_only()), tmp_path / "run"
    assert invoke("run", file, "-o", run).exit_code == 0
    left = run / f"dropped{CHECKPOINTS}"
    claim(left, what="training checkpoints")
    (left / "checkpoint-3").mkdir()
    assert invoke("run", file, "-o", run).exit_code == 0
    assert not left.exists() and (run / "dropped").is_dir()
    users = users_project(left)
    before = folder_checksum(users)
    assert invoke("run", file, "-o", run).exit_code == 0
    assert folder_checksum(users) == before


def test_checkpoints_of_other_settings_are_replaced_and_a_users_folder_is_refused(tmp_path, monkeypatch):
    model, left = tmp_path / "teacher", tmp_path / f"teacher{CHECKPOINTS}"
    with checkpoints_for(model, "settings-a"):
        (left / "checkpoint-3").mkdir()
    assert not left.exists()  # gone once the block ends without error

    def interrupted(identity: str) -> None:
        with contextlib.suppress(KeyboardInterrupt), checkpoints_for(model, identity):
            (left / "checkpoint-3").mkdir(exist_ok=True)
            raise KeyboardInterrupt

    interrupted("settings-a")
    assert (left / "checkpoint-3").is_dir()  # an interrupted training keeps its checkpoints
    with checkpoints_for(model, "settings-a"):
        assert (left / "checkpoint-3").is_dir()  # the same settings resume from them
    interrupted("settings-a")
    with checkpoints_for(model, "settings-b"):
        assert not (left / "checkpoint-3").exists()  # other settings (an edited recipe) do not

    users = users_project(tmp_path / f"mine{CHECKPOINTS}")
    before = folder_checksum(users)
    with pytest.raises(CompressError, match="not made by compress"), checkpoints_for(tmp_path / "mine", "settings-a"):
        pass
    assert folder_checksum(users) == before

    monkeypatch.setenv(CHECKPOINT_MINUTES, "ten")
    assert_one_line_error(invoke("run", write_recipe(tmp_path, "r", drop_only()), "-o", tmp_path / "run"),
                          CHECKPOINT_MINUTES, "a number >= 0", "'ten'")
    assert not (tmp_path / "run").exists()


def test_an_edited_recipe_redoes_only_what_changed(tmp_path):
    run = tmp_path / "run"
    recipe = drop_only()
    recipe["stages"] = [
        {"stage": "drop", "name": "first", "strategy": "top", "k": 1},
        {"stage": "drop", "name": "second", "strategy": "top", "k": 1},
        {"stage": "drop", "name": "apart", "from": "base", "strategy": "bottom", "k": 1},
    ]
    assert invoke("run", write_recipe(tmp_path, "r", recipe), "-o", run).exit_code == 0
    written = {name: _modified(run / name) for name in ("first", "second", "apart")}

    recipe["stages"][1]["k"] = 2  # only the second drop changes; the other two start elsewhere
    result = invoke("run", write_recipe(tmp_path, "r", recipe), "-o", run)
    assert result.exit_code == 0, result.output
    said = " ".join(result.output.split())  # rich wraps long lines
    assert "reusing first, apart (" in said and "running second" in said
    assert _modified(run / "first") == written["first"] and _modified(run / "apart") == written["apart"]
    assert _modified(run / "second") != written["second"]
    assert json.loads((run / "second" / "config.json").read_text())["num_hidden_layers"] == 3
    assert json.loads((run / "final" / "config.json").read_text())["num_hidden_layers"] == 5  # final: the last stage, apart


def test_compress_stage_resumes_too(tmp_path):
    args = ("stage", "drop", "minilm-l6", "--task", "rotten-tomatoes", "--data", "source=embedded",
            "--set", "strategy=top", "--set", "k=2", "-o", tmp_path / "out")
    first = invoke(*args)
    assert first.exit_code == 0 and "resuming" not in first.output, first.output
    written = _modified(tmp_path / "out" / "drop")
    second = invoke(*args)
    assert second.exit_code == 0 and "drop: finished in an earlier run, reused" in second.output, second.output
    assert _modified(tmp_path / "out" / "drop") == written


# --- 4. unreadable recipes and incomplete model folders are caught by check -------------------------


@pytest.mark.parametrize("content", [b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe", "model: minilm-l6\nname: caf\xe9\n".encode("latin-1")])
def test_a_recipe_that_is_not_utf8_text(tmp_path, content):
    file = tmp_path / "r.yaml"
    file.write_bytes(content)
    assert_one_line_error(invoke("check", file), "r.yaml", "not UTF-8")
    assert_one_line_error(invoke("run", file, "-o", tmp_path / "run"), "r.yaml", "not UTF-8")
    assert not (tmp_path / "run").exists()


def _model_copy(folder: Path, leave_out: tuple[str, ...]) -> Path:
    shutil.copytree(resolve_model("minilm-l6"), folder, ignore=shutil.ignore_patterns(*leave_out))
    return folder


def test_a_model_folder_without_weights_or_tokenizer(tmp_path):
    no_weights = _model_copy(tmp_path / "no-weights", ("*.safetensors", "*.bin", "*.onnx", "*.h5", "*.msgpack", "*.ot"))
    no_tokenizer = _model_copy(tmp_path / "no-tokenizer", ("tokenizer*", "vocab.txt", "special_tokens_map.json"))
    # transformers 4 cannot load a tokenizer there; transformers 5 builds one of special tokens only
    for folder, piece in ((no_weights, "has no weights"), (no_tokenizer, "tokenizer")):
        file = write_recipe(tmp_path, folder.name, drop_only(model=str(folder)))
        assert_one_line_error(invoke("check", file), f"{folder.name}.yaml", "model", piece)


# --- 5. values no one means are refused before any work ---------------------------------------------


def test_a_training_budget_over_the_bound_needs_an_opt_in(tmp_path):
    recipe = tiny_recipe()
    recipe["stages"][0]["epochs"] = 1_000_000_000_000
    line = assert_one_line_error(invoke("check", write_recipe(tmp_path, "r", recipe)), "r.yaml", "stages[0].epochs", "allow_long_training")
    assert len(line) < 400
    recipe["stages"][0]["allow_long_training"] = True
    assert invoke("check", write_recipe(tmp_path, "r", recipe)).exit_code == 0


def test_max_length_beyond_the_models_positions(tmp_path):
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "r", drop_only(max_length=100_000))),
                          "r.yaml", "max_length", "at most 512")
    assert_one_line_error(invoke("drop", "minilm-l6", "--strategy", "top", "-k", "1", "-o", tmp_path / "x", "--max-length", "4096"),
                          "--max-length", "at most 512")
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize(("labels", "piece"), [
    (["0", "1", "1.5", "pos", "neg"], "mixes numbers"),
    (["0.1", "0.7", "0.3", "0.9"], "fractional numbers"),
])
def test_a_label_column_of_mixed_kinds(tmp_path, labels, piece):
    rows = "".join(f"text number {i},{label}\n" for i, label in enumerate(labels * 3))
    (tmp_path / "train.csv").write_text("text,label\n" + rows)
    (tmp_path / "dev.csv").write_text("text,label\n" + rows)
    recipe = drop_only(task="mine", data={"source": "files", "train": str(tmp_path / "train.csv"), "dev": str(tmp_path / "dev.csv"),
                                          "text_columns": ["text"]})
    assert_one_line_error(invoke("check", write_recipe(tmp_path, "r", recipe)), "train.csv", "column 'label'", piece)


# --- 6. error lines stay lines ----------------------------------------------------------------------


def test_a_yaml_alias_bomb_is_one_short_line(tmp_path):
    bomb = ["a: &a ['lol','lol','lol','lol','lol','lol','lol','lol','lol']"]
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        bomb.append(f"{level}: &{level} [*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous},*{previous}]")
    file = tmp_path / "bomb.yaml"
    file.write_text("\n".join(bomb) + "\nmodel: *i\ntask: sst2\nstages: *i\n")
    started = time.monotonic()
    line = assert_one_line_error(invoke("check", file), "bomb.yaml")
    assert len(line) < 700 and time.monotonic() - started < 30


@pytest.mark.slow
def test_a_huge_value_is_quoted_short(tmp_path):
    recipe = drop_only()
    recipe["stages"][0]["k"] = "x" * 500_000  # within the size a recipe file may have
    line = assert_one_line_error(invoke("check", write_recipe(tmp_path, "r", recipe)), "r.yaml", "stages[0].k", "xxx")
    assert len(line) < 700


# --- 7. a killed run leaves no process and no temporary file behind ---------------------------------


@pytest.mark.slow
def test_the_memory_measurement_dies_with_the_process_that_started_it(tmp_path):
    parent_code = textwrap.dedent("""
        from pathlib import Path
        from compress.benchmarking.memory import serving_peak_mb
        from compress.models.loading import load_tokenizer, resolve_model
        batch = dict(load_tokenizer("minilm-l6")(["a sentence"] * 4, return_tensors="pt"))
        print("measuring", flush=True)
        serving_peak_mb(Path(resolve_model("minilm-l6")), batch, None, 1)
    """)
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "TMPDIR": str(tmp_path)})
    assert parent.stdout.readline().strip() == "measuring"
    deadline = time.monotonic() + 60
    children = []
    while not children and time.monotonic() < deadline:
        children = [c for c in psutil.Process(parent.pid).children() if "compress.benchmarking.memory" in " ".join(c.cmdline())]
        time.sleep(0.02)
    assert children, "the measurement process did not start"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    gone, alive = psutil.wait_procs(children, timeout=20)
    assert not alive, f"still running after its parent was killed: {[c.pid for c in alive]}"


def test_temporary_files_live_in_the_folder_being_written(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    claim(folder, what="run folder")
    (folder / SCRATCH).mkdir()
    (folder / SCRATCH / "left-by-a-killed-run").write_text("x")
    with holding(folder):
        made = Path(tempfile.mkdtemp())
        assert made.parent == folder / SCRATCH
        assert not (folder / SCRATCH / "left-by-a-killed-run").exists()
        child = subprocess.run([sys.executable, "-c", "import tempfile; print(tempfile.gettempdir())"], capture_output=True, text=True)
        assert Path(child.stdout.strip()) == folder / SCRATCH
    assert not (folder / SCRATCH).exists()
    assert Path(tempfile.gettempdir()) != folder / SCRATCH
    # a folder named relative to the working directory, and a library that changes directory (as
    # onnxruntime's static calibration does) before making a temporary file
    monkeypatch.chdir(tmp_path)
    with holding(Path("run")), tempfile.TemporaryDirectory() as elsewhere, contextlib.chdir(elsewhere):
        assert Path(tempfile.mkdtemp()).parent == folder / SCRATCH
    users = users_project(tmp_path / "project")
    (users / SCRATCH).mkdir()
    with pytest.raises(CompressError, match="not made by compress"):  # its .scratch is never removed
        with holding(users):
            pass
    assert (users / SCRATCH).is_dir()


# --- 8. one writer per folder, claimed atomically ---------------------------------------------------

HOLDER = """
import sys, time
from pathlib import Path
from compress.errors import CompressError
from compress.folders import holding
try:
    with holding(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(float(sys.argv[2]))
except CompressError as error:
    print("refused:", error, flush=True)
"""


def test_processes_started_together_cannot_both_write(tmp_path):
    claim(tmp_path, what="run folder")
    processes = [subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "3"], stdout=subprocess.PIPE, text=True)
                 for _ in range(4)]
    outputs = [p.communicate(timeout=60)[0].strip() for p in processes]
    assert sorted(o.split(":")[0] for o in outputs) == ["held", "refused", "refused", "refused"], outputs
    assert all("is writing to this folder" in o for o in outputs if o.startswith("refused"))


def test_a_killed_writer_leaves_no_claim_behind(tmp_path):
    claim(tmp_path, what="run folder")
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(tmp_path), "60"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(CompressError, match=f"process {holder.pid} on .* is writing to this folder"):
        with holding(tmp_path):
            pass
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with holding(tmp_path):  # the kernel freed the lock with the process
        pass
