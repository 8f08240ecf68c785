"""A second process, a symbolic link, a name and a damaged file, as a hostile tester would use them
against the folders compress writes: nothing of the user's is deleted or overwritten, nothing is
written outside the output folder, and a finished stage whose files changed is built again.

Real commands on the embedded MiniLM (drop-only recipes take seconds, no training)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from compress.benchmarking.bench import WORK, work_folder_name
from compress.benchmarking.rows import recipe_rows
from compress.folders import LOCK, MARKER, SCRATCH, safe_folder_name
from compress.pipeline.cache import STAGE_FILE
from compress.pipeline.recipe import recipe_from_mapping
from tests.helpers import assert_one_line_error, folder_checksum, invoke, write_recipe
from tests.test_safety import HOLDER, drop_only, tiny_recipe, users_project


def _held(folder: Path) -> subprocess.Popen:
    """Another process writing into `folder` (it holds the lock) until killed."""
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder), "120"], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    return holder


@pytest.fixture
def finished_run(tmp_path) -> tuple[Path, Path]:
    """A recipe and the run folder a finished `compress run` of it left."""
    recipe = write_recipe(tmp_path, "dropped", drop_only())
    run = tmp_path / "run"
    assert invoke("run", recipe, "--out", run).exit_code == 0
    return recipe, run


def test_overwrite_of_a_folder_another_process_writes_changes_nothing(tmp_path, finished_run):
    recipe, run = finished_run
    dropped = tmp_path / "small"
    assert invoke("drop", "minilm-l6", "--strategy", "top", "-k", "2", "-o", dropped).exit_code == 0
    for folder, command in ((run, ("run", recipe, "--out", run, "--overwrite")),
                            (dropped, ("drop", "minilm-l6", "--strategy", "top", "-k", "4", "-o", dropped, "--overwrite"))):
        holder = _held(folder)
        try:
            before = folder_checksum(folder)
            assert_one_line_error(invoke(*command), str(folder), "is writing to this folder")
            assert folder_checksum(folder) == before
        finally:
            holder.kill()
            holder.wait()
    # once the other process is gone, --overwrite starts again
    assert invoke("drop", "minilm-l6", "--strategy", "top", "-k", "4", "-o", dropped, "--overwrite").exit_code == 0
    assert '"num_hidden_layers": 2' in (dropped / "final" / "config.json").read_text()


@pytest.mark.parametrize("name", ["recipe.yaml", "results.json", LOCK])
def test_a_link_left_in_a_run_folder_is_never_written_through(tmp_path, finished_run, name):
    recipe, run = finished_run
    users = users_project(tmp_path / "project")
    (run / name).unlink()
    (run / name).symlink_to(users / "notes.txt")
    before = folder_checksum(users)
    assert_one_line_error(invoke("run", recipe, "--out", run), name, "symbolic link")
    assert folder_checksum(users) == before
    assert (run / name).is_symlink()


def test_a_linked_scratch_or_run_folder_is_refused(tmp_path, finished_run):
    recipe, run = finished_run
    users = users_project(tmp_path / "project")
    before = folder_checksum(users)
    (run / SCRATCH).symlink_to(users / "data")
    assert_one_line_error(invoke("run", recipe, "--out", run), SCRATCH, "symbolic link")
    (run / SCRATCH).unlink()
    linked = tmp_path / "linked"
    linked.symlink_to(run)
    assert_one_line_error(invoke("run", recipe, "--out", linked, "--overwrite"), "linked", "symbolic link")
    assert folder_checksum(users) == before
    assert (run / "final" / "config.json").is_file()


def test_a_link_inside_a_folder_being_emptied_is_removed_as_a_link(tmp_path, finished_run):
    recipe, run = finished_run
    users = users_project(tmp_path / "project")
    before = folder_checksum(users)
    (run / "pointer").symlink_to(users)
    assert invoke("run", recipe, "--out", run, "--overwrite").exit_code == 0
    assert not (run / "pointer").exists()
    assert folder_checksum(users) == before


@pytest.mark.parametrize("name", ["../../x/evil", "/etc/evil", "..", "a/../../b", "x.partial", ".hidden"])
def test_names_never_lead_out_of_the_folder(tmp_path, name):
    assert "/" not in safe_folder_name(name) and safe_folder_name(name) not in (".", "..")
    content = {**drop_only(), "task": name,
               "data": {"source": "files", "train": "t.csv", "dev": "d.csv", "text_columns": ["text"]}}
    file = write_recipe(tmp_path, "escape", content)
    rows, _ = recipe_rows({"r": (recipe_from_mapping(content, file), str(file))})
    work = tmp_path / WORK
    for row in rows:
        folder = (work / work_folder_name(row.node)).resolve()
        assert folder.is_relative_to(work), folder
        assert not any(part.endswith((".partial", ".checkpoints")) or part.startswith(".")
                       for part in folder.relative_to(work).parts)


def _said(result) -> str:
    """A command's output as one line: rich wraps long paths."""
    assert result.exit_code == 0, result.output
    return " ".join(result.output.split())


def _truncate(file: Path) -> None:
    with file.open("r+b") as handle:
        handle.truncate(file.stat().st_size // 2)


def test_a_finished_stage_whose_files_changed_is_built_again(tmp_path):
    """A weight file cut short, an ONNX graph cut short, a file replaced: resume rebuilds that stage and says so."""
    stages = [{"stage": "drop", "name": "dropped", "strategy": "top", "k": 4}, {"stage": "export", "name": "onnx"}]
    recipe = write_recipe(tmp_path, "exported", tiny_recipe(stages=stages))
    run = tmp_path / "run"
    assert invoke("run", recipe, "--out", run).exit_code == 0
    graph = run / "onnx" / "onnx" / "model.onnx"
    whole = graph.read_bytes()

    _truncate(graph)
    said = _said(invoke("run", recipe, "--out", run))
    assert "onnx/model.onnx has" in said and "built again" in said
    assert graph.read_bytes() == whole  # the export is deterministic: the same graph again
    assert (run / "final" / "onnx" / "model.onnx").read_bytes() == whole

    weights = run / "dropped" / "model.safetensors"
    _truncate(weights)
    said = _said(invoke("run", recipe, "--out", run))
    assert "model.safetensors has" in said and "built again" in said

    config = run / "dropped" / "config.json"  # the same size, other content
    config.write_text(config.read_text().replace('"num_hidden_layers": 2', '"num_hidden_layers": 3'))
    assert "config.json has changed since it was made; that stage is built again" in _said(invoke("run", recipe, "--out", run))

    said = _said(invoke("run", recipe, "--out", run))  # whole again: everything reused, nothing said
    assert "built again" not in said and "nothing left to run" in said


def test_a_full_disk_is_one_line_and_keeps_what_was_written(tmp_path):
    """A file system with room for the run folder and marker but not the model."""
    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        out = mount / "small"
        result = invoke("drop", "minilm-l6", "--strategy", "top", "-k", "2", "-o", out)  # it fails mid-way, after saying what it runs
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.stderr.startswith("error: the disk is full") and len(result.stderr.splitlines()) == 1, result.stderr
        assert (out / MARKER).is_file()  # compress's folder: a later --overwrite may empty it
        recipe = write_recipe(tmp_path, "dropped", drop_only())
        result = invoke("run", recipe, "--out", mount / "run")  # it fails mid-way, after saying what it runs
        assert result.exit_code == 2 and "Traceback" not in result.output
        assert result.stderr.startswith("error: the disk is full") and len(result.stderr.splitlines()) == 1, result.stderr
        assert (mount / "run" / "recipe.yaml").is_file()
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=True)


def test_a_stage_record_lists_its_files(tmp_path, finished_run):
    _, run = finished_run
    listed = (run / "dropped" / STAGE_FILE).read_text()
    for name in ("model.safetensors", "config.json", "tokenizer.json"):
        assert f'"{name}"' in listed
    assert f'"{MARKER}"' not in listed and '"README.md"' not in listed
    assert os.path.getsize(run / "dropped" / "model.safetensors") > 1_000_000
