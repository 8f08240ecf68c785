"""`extends:` in recipe, sweep and goal files: a file builds on another and writes only what it changes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from compress.benchmarking.sweep import parse_sweep
from compress.folders import RECIPE_FILE
from compress.pipeline.recipe import MAX_EXTENDS, parse_recipe, recipe_from_mapping
from tests.helpers import assert_one_line_error, invoke, write_recipe
from tests.test_bench import TINY
from tests.test_recipe_errors import tiny_quickstart

SWEEPS = Path(__file__).resolve().parents[1] / "bench" / "sweeps"


def _write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(content if isinstance(content, str) else yaml.safe_dump(content, sort_keys=False))
    return path


def test_a_sweep_that_extends_another_is_the_base_with_its_changes_laid_over(tmp_path):
    base = _write(tmp_path / "base" / "tiny.yaml", TINY)
    grids = [{"strategies": ["top"], "k": [1], "training": ["finetune"], "precisions": ["torch-fp32"]}]
    variant = _write(tmp_path / "variant.yaml", {"extends": "base/tiny.yaml", "training": {"seed": 43}, "grids": grids})
    written_out = {**TINY, "name": "variant", "training": {**TINY["training"], "seed": 43}, "grids": grids}
    assert parse_sweep(variant) == parse_sweep(_write(tmp_path / "variant_in_full.yaml", written_out)).model_copy(update={"name": "variant"})
    # a mapping merges key by key (epochs and batch_size kept); a list replaces (one grid, not three)
    sweep = parse_sweep(variant)
    assert (sweep.training.epochs, sweep.training.batch_size, sweep.training.seed) == (1, 16, 43) and len(sweep.grids) == 1
    assert parse_sweep(base).name == "tiny"


def test_a_file_that_inherits_its_grids_is_still_checked_as_a_sweep(tmp_path):
    _write(tmp_path / "tiny.yaml", TINY)
    variant = _write(tmp_path / "seed7.yaml", {"extends": "tiny.yaml", "training": {"seed": 7}})
    result = invoke("check", variant)
    assert result.exit_code == 0, result.output
    assert "sweep:" in result.output
    assert parse_sweep(variant).name == "seed7", "the base's name: would send both to one results folder"


def test_a_recipe_that_extends_another_runs_as_written_out(tmp_path):
    base = write_recipe(tmp_path, "base", tiny_quickstart())
    variant = _write(tmp_path / "fewer.yaml", {"extends": "base.yaml", "data": {"max_train_examples": 16},
                                                "stages": tiny_quickstart()["stages"][:2]})
    recipe = parse_recipe(variant)
    assert recipe.name == "fewer" and recipe.model == parse_recipe(base).model
    assert recipe.data.max_train_examples == 16 and recipe.data.max_eval_examples == 32  # data: merged key by key
    assert [stage.name for stage in recipe.stages] == ["teacher", "dropped"]  # stages: replaced
    result = invoke("check", variant)
    assert result.exit_code == 0, result.output
    assert "2 stages" in result.output


def _loop(tmp_path):
    _write(tmp_path / "b.yaml", {"extends": "a.yaml", "training": {"seed": 1}})
    return _write(tmp_path / "a.yaml", {"extends": "b.yaml", **TINY})


def _symlink_loop(tmp_path):
    (tmp_path / "loop.yaml").symlink_to("loop.yaml")
    return _write(tmp_path / "v.yaml", {"extends": "loop.yaml", **TINY})


def _chain(tmp_path, length: int, last) -> Path:
    for index in range(length):
        _write(tmp_path / f"f{index}.yaml", {"extends": f"f{index + 1}.yaml", "seed": index})
    if last is not None:
        _write(tmp_path / f"f{length}.yaml", last)
    return tmp_path / "f0.yaml"


def _too_deep(tmp_path):
    return _chain(tmp_path, 1000, TINY)  # as many as Python's recursion limit: refused by count, not by a crash


def _missing_far_down(tmp_path):
    _chain(tmp_path, 2, None)
    _write(tmp_path / "f2.yaml", {"extends": "absent.yaml"})
    return tmp_path / "f0.yaml"


@pytest.mark.parametrize("case, expected", [
    (lambda p: _write(p / "v.yaml", {"extends": "absent.yaml", "grids": []}), ["v.yaml", "extends:", "absent.yaml",
                                                                                  "no such recipe, goal or sweep file"]),
    (lambda p: _write(p / "v.yaml", {"extends": "v.yaml", **TINY}), ["v.yaml", "extends:", "leads back to"]),
    (_loop, ["a.yaml", "extends (through", "b.yaml", "leads back to"]),
    (lambda p: _write(p / "v.yaml", {"extends": ["a.yaml", "b.yaml"], **TINY}), ["v.yaml", "extends:", "expected the path"]),
    (lambda p: _write(p / "v.yaml", {"extends": "", **TINY}), ["v.yaml", "extends:", "expected the path"]),
    (lambda p: [_write(p / "list.yaml", "- 1\n- 2\n"), _write(p / "v.yaml", {"extends": "list.yaml", **TINY})][1],
     ["v.yaml", "extends:", "list.yaml", "no mapping"]),
    (lambda p: [_write(p / "broken.yaml", "grids: [\n  - {k: 1\n"), _write(p / "v.yaml", {"extends": "broken.yaml", **TINY})][1],
     ["v.yaml", "extends:", "broken.yaml", "not valid YAML", "line 2"]),
    (lambda p: [_write(p / "tiny.yaml", TINY), _write(p / "v.yaml", {"extends": "tiny.yaml", "training": {"epochz": 2}})][1],
     ["v.yaml", "training.epochz"]),
    (lambda p: _write(p / "v.yaml", {"extends": "base\0.yaml", **TINY}), ["v.yaml", "extends:", "expected the path"]),
    (_symlink_loop, ["v.yaml", "extends:", "loop.yaml", "cannot be read"]),
    (_too_deep, ["f0.yaml", "extends", f"more than {MAX_EXTENDS} files deep"]),
    (_missing_far_down, ["f0.yaml", "extends (through", "f2.yaml", "absent.yaml", "no such"]),
], ids=["missing base", "itself", "a loop", "not a path", "empty", "base not a mapping", "base not YAML", "a bad field laid over",
        "a NUL byte", "a symlink loop", "too deep", "missing far down"])
def test_a_broken_extends_is_one_line_naming_the_file(tmp_path, case, expected):
    assert_one_line_error(invoke("check", case(tmp_path)), *expected)


@pytest.mark.parametrize("variant", sorted(SWEEPS.glob("*_seed*.yaml")), ids=lambda path: path.stem)
def test_each_committed_seed_sweep_changes_only_its_seed_and_rows(variant):
    """A seed sweep's spread means something only if nothing but the training seed (and which rows) differs."""
    assert yaml.safe_load(variant.read_text())["extends"], "seed sweeps build on their base rather than copy it"
    base_name, seed = re.fullmatch(r"(\w+)_seed(\d+)", variant.stem).groups()
    sweep, base = parse_sweep(variant), parse_sweep(SWEEPS / f"{base_name}.yaml")
    assert sweep.training.seed == int(seed) != base.training.seed
    assert sweep.name == variant.stem
    different = {"name", "training", "grids"}
    assert sweep.model_dump(exclude=different) == base.model_dump(exclude=different)
    assert sweep.training.model_dump(exclude={"seed"}) == base.training.model_dump(exclude={"seed"})


def test_null_takes_a_key_out_as_a_json_merge_patch_does(tmp_path):
    two_tasks = {**TINY, "tasks": {**TINY["tasks"], "sst2": {"source": "embedded"}}, "seed": 7}
    _write(tmp_path / "two.yaml", two_tasks)
    variant = _write(tmp_path / "one.yaml", {"extends": "two.yaml", "tasks": {"sst2": None}, "seed": None})
    sweep = parse_sweep(variant)
    assert list(sweep.tasks) == ["rotten-tomatoes"] and sweep.seed == 42  # the default again
    assert list(parse_sweep(tmp_path / "two.yaml").tasks) == ["rotten-tomatoes", "sst2"]


def test_a_chain_as_deep_as_allowed_reads(tmp_path):
    assert parse_sweep(_chain(tmp_path, MAX_EXTENDS, TINY)).seed == 0  # the nearest file's seed wins


def test_a_field_from_the_base_is_named_with_the_files_it_came_through(tmp_path):
    _write(tmp_path / "base.yaml", {**TINY, "training": {"epochz": 2}})
    variant = _write(tmp_path / "v.yaml", {"extends": "base.yaml", "seed": 1})
    assert_one_line_error(invoke("check", variant), "v.yaml (laid over", "base.yaml)", "training.epochz")


def test_a_run_keeps_the_recipe_it_ran_written_out(tmp_path):
    """recipe.yaml beside a run (and the model card) must stand alone: `extends: base.yaml` would not resolve from there."""
    base = tiny_quickstart()
    (tmp_path / "recipes").mkdir()
    write_recipe(tmp_path / "recipes", "base", base)
    variant = _write(tmp_path / "recipes" / "teacher_only.yaml", {"extends": "base.yaml", "stages": base["stages"][:1]})
    result = invoke("run", variant, "--out", tmp_path / "run")
    assert result.exit_code == 0, result.output
    kept = (tmp_path / "run" / RECIPE_FILE).read_text()
    assert "extends" not in yaml.safe_load(kept)
    assert kept.startswith(f"# {variant} over {tmp_path / 'recipes' / 'base.yaml'}, written out")
    assert recipe_from_mapping(yaml.safe_load(kept), "kept") == parse_recipe(variant).model_copy(update={"name": None})
