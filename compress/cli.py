"""The `compress` command line: run or check a recipe, run one stage, drop layers alone, analyze
layers, and benchmark sweeps."""

from __future__ import annotations

import functools
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Optional

import typer
import typer.core
from rich.console import Console
from rich.markup import escape

from compress.errors import CompressError, excerpt, failure, first_line, is_disk_full, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make pre-trained Transformer encoders smaller and faster: drop layers, fine-tune, distil, quantize.",
)
console = Console()
if not console.is_terminal:  # logs and pipes: keep wide result tables whole instead of truncating cells
    console.width = 160
errors = Console(stderr=True)


TRACEBACK = "COMPRESS_TRACEBACK"
"""Set to 1 to see the traceback of an unexpected failure instead of its one line."""


def user_errors(command):
    """Bad input ends in one line on stderr and exit status 2, never a traceback; so does a file the machine
    will not let compress read or write (a full disk, a special file). Anything else unexpected is one line
    too, with exit status 1 and the way to see its traceback."""

    def fail(message: str, status: int):
        errors.print(f"[red]error:[/] {escape(one_line(message))}", highlight=False, soft_wrap=True)
        raise typer.Exit(status) from None

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressError as error:
            fail(str(error), 2)
        except KeyboardInterrupt:
            errors.print("interrupted: finished stages and combinations are kept; run the same command again to resume")
            raise typer.Exit(130) from None
        except Exception as error:
            if os.environ.get(TRACEBACK) == "1":
                raise
            if is_disk_full(error):
                fail(f"the disk is full ({first_line(error)}); finished stages and combinations are kept: "
                     "free space and run the same command again", 2)
            if isinstance(error, OSError):
                where = f"{error.filename}: " if error.filename else ""
                fail(f"{where}{error.strerror or error}; finished stages and combinations are kept", 2)
            fail(f"unexpected {failure(error)}; finished stages and combinations are kept "
                 f"(set {TRACEBACK}=1 to see where it failed, and report it)", 1)

    return wrapper


def _quiet_libraries() -> None:
    import logging

    import datasets
    import huggingface_hub
    import transformers

    logging.getLogger("bitsandbytes").setLevel(logging.ERROR)  # per-call dtype notes on the CPU
    datasets.disable_progress_bars()  # per-map bars for work that takes a second; training keeps its bar
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()  # transformers 5's bar per weight load and save; training keeps its own
    huggingface_hub.logging.set_verbosity_error()  # hub retries are summed up in our own one-line error


@app.command()
@user_errors
def run(
    recipe_file: Annotated[Path, typer.Argument(help="Recipe YAML, e.g. recipes/quickstart.yaml.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<recipe name>).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Start again: empty the run folder (only one compress made) instead of resuming.")] = False,
) -> None:
    """Run every stage of a recipe; writes one folder per stage, final/ and results.json.

    Run again into the same folder, it resumes: stages finished with the same settings from the same start are reused."""
    from compress.pipeline.recipe import check_recipe, parse_recipe
    from compress.pipeline.runner import run_recipe

    _quiet_libraries()
    recipe = parse_recipe(recipe_file)
    data = check_recipe(recipe, recipe_file)
    run_recipe(recipe, recipe_file, out or Path("runs") / recipe.name, overwrite, console, data=data)


def _settings_pairs(pairs: list[str], option: str) -> dict:
    """`key=value` options into a mapping; values are read as YAML scalars (2, 5e-5, true, [1, 4])."""
    import yaml

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CompressError(f"{option}: expected key=value (got {excerpt(pair)})")
        try:
            settings[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise CompressError(f"{option}: {excerpt(key.strip())}: expected a YAML value such as 2, 5e-5, true or [1, 4] "
                                f"(got {excerpt(value)})") from None
    return settings


OPTIONS = "command line"
"""Where a recipe made from command-line options comes from, in its error messages."""


DROP_OPTIONS = {"model": "MODEL", "task": "--task", "max_length": "--max-length", "data": "--data-path", "data.source": "--data-source",
                "data.path": "--data-path", "data.train": "--data-path", "data.dev": "--data-path", "data.text_columns": "--text-columns",
                "stages[0].strategy": "--strategy", "stages[0].k": "--k", "stages[0].layers": "--layers",
                "stages[0].metric": "--metric", "stages[0].examples": "--examples"}
"""A recipe field, by the `compress drop` option or argument that sets it."""


@contextmanager
def _naming_options():
    """A recipe check's error on a recipe made from `compress drop`'s options names the option, not the recipe field."""
    try:
        yield
    except CompressError as error:
        field, sep, message = str(error).removeprefix(f"{OPTIONS}: ").partition(": ")
        if not sep or field not in DROP_OPTIONS:  # not one option's problem (e.g. a data file's): kept as it is
            raise
        raise CompressError(f"{DROP_OPTIONS[field]}: {message}") from None


@app.command()
@user_errors
def stage(
    name: Annotated[str, typer.Argument(help="Stage: drop, finetune, distill, export or quantize.")],
    model: Annotated[str, typer.Argument(help="Alias, model folder (PyTorch or ONNX) or hub id.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; the model lands in OUT/final.")],
    task: Annotated[Optional[str], typer.Option(help="Task the stage trains, calibrates or evaluates on (a drop by a fixed strategy needs none).")] = None,
    data: Annotated[list[str], typer.Option("--data", help="Data setting key=value, as in a recipe's data: section (repeatable).")] = [],  # noqa: B006
    settings: Annotated[list[str], typer.Option("--set", help="Stage setting key=value, as in a recipe stage (repeatable).")] = [],  # noqa: B006
    max_length: Annotated[int, typer.Option(help="Tokens per example.")] = 128,
    overwrite: Annotated[bool, typer.Option(help="Start again: empty the run folder (only one compress made) instead of resuming.")] = False,
) -> None:
    """Run one stage on a model, as a one-stage recipe: e.g.
    `compress stage quantize runs/x/onnx --task sst2 --data source=glue-dir --data path=../shared/glue --set mode=dynamic-int8 -o int8`."""
    import yaml

    from compress.pipeline.recipe import check_recipe, recipe_from_mapping
    from compress.pipeline.runner import run_recipe

    _quiet_libraries()
    content = {
        "name": name,
        "model": model,
        **({"task": task} if task is not None else {}),
        **({"data": _settings_pairs(data, "--data")} if data else {}),
        "max_length": max_length,
        "stages": [{"stage": name, "name": name, **_settings_pairs(settings, "--set")}],
    }
    recipe = recipe_from_mapping(content, OPTIONS)
    data = check_recipe(recipe, OPTIONS)
    run_recipe(recipe, OPTIONS, out, overwrite, console, recipe_text=yaml.safe_dump(content, sort_keys=False), data=data)


@app.command()
@user_errors
def check(recipe_file: Annotated[Path, typer.Argument(help="Recipe, goal or sweep YAML to validate.")]) -> None:
    """Validate a recipe (schema, model, layer counts, data files), a goal or a sweep file, without running it."""
    from compress.benchmarking.sweep import SWEEP_KEY, expand, load_sweep
    from compress.pipeline.recipe import load_recipe, read_yaml
    from compress.search.goal import GOAL_KEY, load_goal

    _quiet_libraries()
    content = read_yaml(recipe_file, "recipe, goal or sweep")  # its kind is known only once it is read
    if isinstance(content, dict) and GOAL_KEY in content:
        goal = load_goal(recipe_file)
        console.print(f"{recipe_file}: ok (goal: {goal.model} on {goal.task}, at most {goal.max_score_drop:g} points below the full model)")
        return
    if isinstance(content, dict) and SWEEP_KEY in content:
        sweep = load_sweep(recipe_file)
        console.print(f"{recipe_file}: ok (sweep: {len(expand(sweep))} combinations; `compress bench {recipe_file} --dry-run` lists them)")
        return
    recipe = load_recipe(recipe_file)
    console.print(f"{recipe_file}: ok ({len(recipe.stages)} stages: {', '.join(s.name for s in recipe.stages)})")


ExecutorOption = Annotated[str, typer.Option(help="local: one model after another in this process; ray: the stage graph as Ray tasks.")]
AddressOption = Annotated[Optional[str], typer.Option(help="With --executor ray: the cluster to join (e.g. ray://head:10001, or auto); "
                                                      "default: a local Ray instance on this machine's CPUs.")]


def _check_executor(executor: str, address: str | None) -> None:
    from compress.benchmarking.executors import EXECUTORS

    if executor not in EXECUTORS:
        raise CompressError(f"--executor: expected one of {', '.join(EXECUTORS)} (got {excerpt(executor)})")
    if address and executor != "ray":
        raise CompressError("--address: only used with --executor ray")


@app.command()
@user_errors
def optimize(
    goal_file: Annotated[Path, typer.Argument(help="Goal YAML: model, task, data, max_score_drop (see docs).")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Run folder (default: runs/<goal name>).")] = None,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
) -> None:
    """Find the fastest (or smallest) model within a score budget on this machine; writes final/, chosen.yaml,
    report.md, every trial (results.jsonl, tables, plots) and Optuna's trials.db.

    Run again into the same folder, it resumes: finished trials are reused, nothing is trained twice."""
    from compress.search.goal import load_goal
    from compress.search.optimize import REPORT, optimize as search

    _quiet_libraries()
    goal = load_goal(goal_file)
    folder = out or Path("runs") / goal.name
    _check_executor(executor, address)
    summary = search(goal, folder, console, _command_line(), executor, address)
    console.print((folder / REPORT).read_text())
    console.print(f"Final model: {folder / 'final'}  (report: {folder / REPORT}; recipe: {folder / 'chosen.yaml'})")
    if summary["target_missed_by"] is not None:
        raise CompressError(f"{goal_file}: objective.target: no trial met {goal.objective.target:g}; the fastest within the "
                            f"score budget missed it by {summary['target_missed_by']:g} (kept in {folder / 'final'})")


@app.command()
@user_errors
def predict(
    folder: Annotated[Path, typer.Argument(help="A folder compress wrote: a run folder (its final model), its final/ or a stage's folder.")],
    inputs: Annotated[Path, typer.Argument(help="Texts: one per line, or a .csv/.tsv (with a header) or .jsonl file.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="JSON-lines file for the predictions (default: standard output).")] = None,
    text_column: Annotated[Optional[str], typer.Option(help="CSV/JSON-lines: the column of texts (default: text, else sentence).")] = None,
    pair_column: Annotated[Optional[str], typer.Option(help="CSV/JSON-lines: the column of second texts, for sentence-pair tasks.")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Inputs run together.")] = 32,
    threads: Annotated[Optional[int], typer.Option(min=1, help="Compute threads (default: as many as PyTorch uses).")] = None,
    max_length: Annotated[Optional[int], typer.Option(min=1, help="Tokens kept per input (default: what the recipe trained with).")] = None,
) -> None:
    """Run a compressed model on a file of texts: one JSON line per input, with its label and score (or value).

    The same as `compress.load(FOLDER)(texts)` in Python."""
    import json

    from rich.progress import Progress

    from compress.folders import write_text
    from compress.pipeline.serving import load, prediction_record, read_inputs

    _quiet_libraries()
    if out is not None:
        if out.exists() and not out.is_file():
            raise CompressError(f"--out: {out} exists and is not a file")
        if out.exists():
            raise CompressError(f"--out: {out} exists; compress does not replace a file it did not make: choose another name")
    texts = read_inputs(inputs, text_column, pair_column)
    model = load(folder, threads, batch_size, max_length)
    with Progress(console=errors, transient=True) as progress:
        bar = progress.add_task(f"{model.kind} on {len(texts):,} inputs", total=len(texts))
        answers = model.predict(texts, on_batch=lambda n: progress.advance(bar, n))
    lines = "".join(json.dumps(prediction_record(text, answer), ensure_ascii=False) + "\n" for text, answer in zip(texts, answers))
    if out is None:
        typer.echo(lines, nl=False)
    else:
        write_text(out, lines)
        errors.print(f"{len(texts):,} predictions -> {out}")


class _RunByDefault(typer.core.TyperGroup):
    """`compress bench FILES...` is `compress bench run FILES...`: the group's commands, else `run`."""

    def parse_args(self, ctx, args):
        if args and args[0] not in self.commands and args[0] not in ("--help", "-h"):
            args = ["run", *args]
        return super().parse_args(ctx, args)


bench_app = typer.Typer(
    cls=_RunByDefault,
    no_args_is_help=True,
    help="Measure every combination of a sweep, or every recipe of a list: score, size, latency; tables and plots. "
    "`compress bench FILES...` is short for `compress bench run FILES...`.",
)
app.add_typer(bench_app, name="bench")


def _command_line() -> str:
    import shlex
    import sys

    return "compress " + " ".join(shlex.quote(a) for a in sys.argv[1:])


@bench_app.command("run")
@user_errors
def bench_run(
    files: Annotated[list[Path], typer.Argument(help="One SWEEP.yaml, or RECIPE.yaml files.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: bench/runs/<sweep name>, or bench/runs/recipes).")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Run slice i of n (e.g. 2/4), for several machines.")] = None,
    only: Annotated[list[str], typer.Option("--only", help="Only the combinations whose key (model|task|strategy|kK|training|precision, "
                                            "as in results.jsonl) matches this shell pattern (repeatable), e.g. 'mpnet-12|rte|top|k6|*'.")] = [],  # noqa: B006
    retry_failed: Annotated[bool, typer.Option(help="Run failed combinations again.")] = False,
    retime: Annotated[bool, typer.Option(help="Only measure the finished combinations again, from their builds (e.g. on a quiet machine).")] = False,
    rebuild_missing: Annotated[bool, typer.Option(help="Also build again (training too) and measure the finished combinations whose "
                                                  "models are not in the folder's work/ (measured on another machine).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Check the sweep and list its combinations in run order; run nothing.")] = False,
    executor: ExecutorOption = "local",
    address: AddressOption = None,
    latency: Annotated[list[str], typer.Option("--latency", help="For recipes: a timing setting key=value, as in a sweep's latency: "
                                               "section (repeatable), e.g. --latency batch_sizes=[1]; a sweep sets them in its file.")] = [],  # noqa: B006
    peak_memory: Annotated[bool, typer.Option("--peak-memory/--no-peak-memory", help="Measure each row's serving peak memory in a fresh "
                                              "process (seconds a row: it imports the libraries first).")] = True,
) -> None:
    """Run (and resume) a sweep, or recipes with one row each beside the full model fine-tuned the same way (fp32 and int8).

    `compress bench FILES...` is short for `compress bench run FILES...`."""
    from pydantic import ValidationError

    from compress.benchmarking.bench import TO_RUN, missing_models, plan
    from compress.benchmarking.executors import EXECUTORS
    from compress.benchmarking.records import read_records
    from compress.benchmarking.report import PLOTS, TABLE_FILES
    from compress.benchmarking.rows import is_recipe_file, load_recipes, recipe_rows
    from compress.benchmarking.sweep import LatencySettings, load_sweep, parse_shard, select_rows, shard_rows, sweep_rows
    from compress.pipeline.recipe import format_validation_error

    _quiet_libraries()
    if retime and rebuild_missing:
        raise CompressError("--rebuild-missing: builds (and trains) what --retime only measures again; give one of the two")
    if out is not None and out.exists() and not out.is_dir():
        raise CompressError(f"--out: {out} is a file; expected a folder for the results")
    _check_executor(executor, address)
    engine = {"address": address} if address else {}
    not_recipes = [str(f) for f in files if not is_recipe_file(f)]
    if len(files) == 1 and not_recipes:
        if latency:
            raise CompressError(f"--latency: {files[0]} is a sweep; set its timing in the file's latency: section")
        sweep = load_sweep(files[0])
        rows = sweep_rows(sweep)
        folder = out or Path("bench") / "runs" / sweep.name
        benchmark = EXECUTORS[executor](folder, sweep.latency, console, sweep, peak_memory=peak_memory, **engine)
    else:
        if not_recipes:
            raise CompressError(f"bench: {', '.join(not_recipes)}: not a recipe (no 'stages'); give one sweep file, or recipes only")
        rows, notes = recipe_rows(load_recipes(files))
        for note in notes:
            console.print(f"[yellow]note:[/] {note}")
        folder = out or Path("bench") / "runs" / "recipes"
        try:
            timing = LatencySettings.model_validate(_settings_pairs(latency, "--latency"))
        except ValidationError as error:
            raise CompressError(format_validation_error("--latency", error)) from None
        benchmark = EXECUTORS[executor](folder, timing, console, peak_memory=peak_memory, **engine)
    if shard:
        rows = shard_rows(rows, *parse_shard(shard))
    if only:
        rows = select_rows(rows, only)
    if dry_run:
        earlier = read_records(folder)
        statuses = plan(rows, earlier, retry_failed, retime, missing_models(folder, earlier) if rebuild_missing else frozenset())
        for row in rows:
            c = row.combination
            console.print(f"{statuses[c.key]:>12}  {c.model} {c.task}: {c.label}")
        console.print(f"{len(rows)} combinations, {sum(s == TO_RUN for s in statuses.values())} would run ({folder})")
        return
    rows = benchmark.run(rows, retry_failed=retry_failed, retime=retime, command=_command_line(), rebuild_missing=rebuild_missing)
    failed = sum(row.record.status != "ok" for row in rows)
    console.print(f"{len(rows)} combinations in {folder / TABLE_FILES[1]} ({failed} failed); plots: {', '.join(PLOTS)}")


@bench_app.command("merge")
@user_errors
def bench_merge(
    folders: Annotated[list[Path], typer.Argument(help="Results folders of shards of one sweep.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the merged records, tables and plots.")],
) -> None:
    """Join the folders of several shards into one table and plots."""
    from compress.benchmarking.bench import merge_results

    records = merge_results(folders, out, _command_line())
    console.print(f"merged {len(records)} records from {len(folders)} folders into {out}")


@bench_app.command("clean")
@user_errors
def bench_clean(
    folder: Annotated[Path, typer.Argument(help="A benchmark's results folder.")],
    dry_run: Annotated[bool, typer.Option(help="List what would be removed; remove nothing.")] = False,
) -> None:
    """Free disk: remove dropped models and intermediate exports no record measures (trained models stay)."""
    from compress.benchmarking.bench import WORK, clean_builds

    removable, freed = clean_builds(folder, dry_run)
    for path in removable:
        console.print(f"{'would remove' if dry_run else 'removed'} {path}")
    console.print(f"{len(removable)} folders, {freed / 1e9:.2f} GB {'would be freed' if dry_run else 'freed'} in {folder / WORK}")


# Task data options, shared by the commands that read task examples outside a recipe.
TaskOption = Annotated[Optional[str], typer.Option(help="Task whose training examples are used (sst2, rte, rotten-tomatoes, ...).")]
DataSourceOption = Annotated[str, typer.Option(help="Task data from: hub, glue-dir, files or embedded.")]
DataPathOption = Annotated[Optional[Path], typer.Option(help="GLUE folder (glue-dir) or training file (files).")]
TextColumnsOption = Annotated[Optional[str], typer.Option(help="With --data-source files: comma-separated text columns.")]
ExamplesOption = Annotated[int, typer.Option(min=1, help="Training examples to measure on (a seeded random sample).")]
MaxLengthOption = Annotated[int, typer.Option(min=8, help="Tokens per example.")]


def _data_settings(data_source: str, data_path: Optional[Path], text_columns: Optional[str]) -> dict:
    """A recipe's `data:` from the data options: --data-path is a folder, or one file for train and dev."""
    from compress.data.loading import SOURCES

    reads = SOURCES[data_source].fields if data_source in SOURCES else ()
    settings = {"source": data_source, **{field: str(data_path) for field in ("path", "train", "dev") if field in reads and data_path}}
    return settings | ({"text_columns": text_columns.split(",")} if text_columns else {})


def _task_data(task: str, data_source: str, data_path: Optional[Path], text_columns: Optional[str]):
    """The task's data from the data options (with training examples), or a one-line error naming the option."""
    from pydantic import ValidationError

    from compress.data.loading import DataSettings, load_task_data
    from compress.pipeline.recipe import format_validation_error

    try:
        data_settings = DataSettings.model_validate(_data_settings(data_source, data_path, text_columns))
    except ValidationError as error:
        raise CompressError(format_validation_error("command line (data options)", error)) from None
    return load_task_data(task, data_settings)  # refuses a task without training examples


@app.command()
@user_errors
def drop(
    model: Annotated[str, typer.Argument(help="Alias (minilm-l6, mpnet-12), local folder or hub id.")],
    strategy: Annotated[str, typer.Option(help="top, bottom, alternate-even, alternate-odd, symmetric, contribution, layers.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; the smaller model lands in OUT/final.")],
    k: Annotated[Optional[int], typer.Option("-k", "--k", help="How many layers to drop.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="strategy layers: comma-separated 0-based indices.")] = None,
    metric: Annotated[Optional[str], typer.Option(help="contribution: cosine (default), block-influence or angular.")] = None,
    task: TaskOption = None,
    data_source: DataSourceOption = "hub",
    data_path: DataPathOption = None,
    text_columns: TextColumnsOption = None,
    examples: ExamplesOption = 500,
    max_length: MaxLengthOption = 128,
    overwrite: Annotated[bool, typer.Option(help="Start again: empty the run folder (only one compress made); without it the same "
                                            "options resume, and other options make the stage again and replace final/.")] = False,
) -> None:
    """Drop layers from a model, with nothing else (no fine-tuning): a one-stage recipe run into OUT, the model in OUT/final.

    Without --task the model keeps the head it has (none for a pre-trained encoder); strategy contribution scores layers on the task's examples."""
    from compress.pipeline.recipe import check_recipe, recipe_from_mapping, recipe_yaml
    from compress.pipeline.runner import run_recipe
    from compress.stages.drop import DropSettings

    _quiet_libraries()
    try:
        indices = [int(i) for i in layers.split(",")] if layers else None
    except ValueError:
        raise CompressError(f"--layers: expected comma-separated integers (got {excerpt(layers)})") from None
    given = {"k": k, "layers": indices, "metric": metric}
    stage = {"stage": "drop", "name": "drop", "strategy": strategy, "examples": examples, **{f: v for f, v in given.items() if v is not None}}
    _validated(DropSettings, stage)  # a mistake is named by its option, before the recipe's own checks
    if task is None and (use := DropSettings.model_validate(stage).task_data_use()):
        raise CompressError(f"--task: {use}; name the task")
    content = {"name": "drop", "model": model, "max_length": max_length, "stages": [stage]}
    if task is not None:
        content |= {"task": task, "data": _data_settings(data_source, data_path, text_columns)}
    with _naming_options():
        recipe = recipe_from_mapping(content, OPTIONS)
        data = check_recipe(recipe, OPTIONS)
    run_recipe(recipe, OPTIONS, out, overwrite, console, recipe_text=recipe_yaml(recipe), data=data)



def _validated(settings_model, content: dict):
    """Stage settings from command-line options, or one line naming the option at fault."""
    from pydantic import ValidationError

    try:
        return settings_model.model_validate(content)
    except ValidationError as error:
        problem = error.errors()[0]
        field, message = "-".join(map(str, problem["loc"])), problem["msg"].removeprefix("Value error, ")
        if not field and re.match(r"\w+: ", message):  # a check across fields names the field at fault first
            field, message = message.split(": ", 1)
        raise CompressError(f"--{field.replace('_', '-')}: {message}" if field else message) from None


@app.command()
@user_errors
def analyze(
    model: Annotated[str, typer.Argument(help="Alias (minilm-l6, mpnet-12), local folder or hub id.")],
    task: TaskOption = None,
    finetuned: Annotated[
        Optional[str], typer.Option(help="A fine-tuned model of the same base (dropped or not) to compare layer by layer.")
    ] = None,
    data_source: DataSourceOption = "hub",
    data_path: DataPathOption = None,
    text_columns: TextColumnsOption = None,
    examples: ExamplesOption = 500,
    max_length: MaxLengthOption = 128,
    block: Annotated[
        int, typer.Option(min=1, help="Angular distance between the input of layer l and the output of layer l+block-1.")
    ] = 1,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the results (default: analysis/<model>-<task>).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Write into an existing output folder (only one compress made).")] = False,
) -> None:
    """Per layer: how much it changes its input, and (with --finetuned) how fine-tuning changed its output.

    Prints a table and writes analysis.json, analysis.csv and analysis.png.
    """
    from compress.analysis.report import statistics_table
    from compress.analysis.run import check_analysis, run_analysis
    from compress.folders import check_writable

    _quiet_libraries()
    if task is None:
        raise CompressError("--task: name the task whose training examples the layers are measured on")
    folder = out or Path("analysis") / f"{Path(model).name}-{task}"
    check_writable(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise CompressError(f"{folder}: folder exists; pass --overwrite to write into it, or --out elsewhere")
    check_analysis(model, finetuned, max_length, block)  # before the data and any weights load
    train = _task_data(task, data_source, data_path, text_columns).train
    analysis = run_analysis(model, task, train, folder, data_source, finetuned, examples, max_length, block)
    console.print(statistics_table(analysis.rows, analysis.title, block))
    console.print(f"measured in {analysis.about['seconds']:.1f}s on {analysis.about['device']}; "
                  f"wrote {', '.join(p.name for p in analysis.written)} -> {folder}")
