"""The `compress` command line: run or check a recipe, run one stage, drop layers alone, analyze
layers, and benchmark sweeps."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from compress.errors import CompressError, excerpt, one_line

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Make pre-trained Transformer encoders smaller and faster: drop layers, fine-tune, distil, quantize.",
)
console = Console()
if not console.is_terminal:  # logs and pipes: keep wide result tables whole instead of truncating cells
    console.width = 160
errors = Console(stderr=True)


def user_errors(command):
    """Bad input ends in one line on stderr and exit status 2, never a traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except CompressError as error:
            errors.print(f"[red]error:[/] {escape(one_line(str(error)))}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except KeyboardInterrupt:
            errors.print("interrupted: finished stages and combinations are kept; run the same command again to resume")
            raise typer.Exit(130) from None

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
    from compress.pipeline.recipe import load_recipe
    from compress.pipeline.runner import run_recipe

    _quiet_libraries()
    recipe = load_recipe(recipe_file)
    run_recipe(recipe, recipe_file, out or Path("runs") / recipe.name, overwrite, console)


def _settings_pairs(pairs: list[str], option: str) -> dict:
    """`key=value` options into a mapping; values are read as YAML scalars (2, 5e-5, true, [1, 4])."""
    import yaml

    settings = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CompressError(f"{option}: expected key=value (got {excerpt(pair)})")
        settings[key.strip()] = yaml.safe_load(value)
    return settings


@app.command()
@user_errors
def stage(
    name: Annotated[str, typer.Argument(help="Stage: drop, finetune, distill, export or quantize.")],
    model: Annotated[str, typer.Argument(help="Alias, model folder (PyTorch or ONNX) or hub id.")],
    task: Annotated[str, typer.Option(help="Task the stage trains, calibrates or evaluates on.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder; the model lands in OUT/final.")],
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
    where = "command line"
    content = {
        "name": name,
        "model": model,
        "task": task,
        "data": _settings_pairs(data, "--data"),
        "max_length": max_length,
        "stages": [{"stage": name, "name": name, **_settings_pairs(settings, "--set")}],
    }
    recipe = recipe_from_mapping(content, where)
    check_recipe(recipe, where)
    run_recipe(recipe, where, out, overwrite, console, recipe_text=yaml.safe_dump(content, sort_keys=False))


@app.command()
@user_errors
def check(recipe_file: Annotated[Path, typer.Argument(help="Recipe YAML to validate.")]) -> None:
    """Validate a recipe (schema, model, layer counts, data files) without running it."""
    from compress.pipeline.recipe import load_recipe

    _quiet_libraries()
    recipe = load_recipe(recipe_file)
    console.print(f"{recipe_file}: ok ({len(recipe.stages)} stages: {', '.join(s.name for s in recipe.stages)})")


@app.command()
@user_errors
def bench(
    targets: Annotated[list[str], typer.Argument(help="SWEEP.yaml, or RECIPE.yaml..., or: merge SHARD_FOLDER... (with --out), or: clean FOLDER.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Results folder (default: bench/runs/<sweep name>, or bench/runs/recipes).")] = None,
    shard: Annotated[Optional[str], typer.Option(help="Run slice i of n (e.g. 2/4), for several machines.")] = None,
    retry_failed: Annotated[bool, typer.Option(help="Run failed combinations again.")] = False,
    retime: Annotated[bool, typer.Option(help="Only measure the finished combinations again, from their builds (e.g. on a quiet machine).")] = False,
    dry_run: Annotated[bool, typer.Option(help="Check the sweep and list its combinations in run order; run nothing.")] = False,
) -> None:
    """Measure every combination of a sweep, or every recipe of a list: score, size, latency; tables and plots.

    `compress bench SWEEP.yaml` runs (and resumes) a sweep.

    `compress bench A.yaml B.yaml` runs recipes, one row each, beside the full model fine-tuned the same way (fp32 and int8).

    `compress bench merge A B --out C` joins the folders of several shards into one table and plots.

    `compress bench clean FOLDER` frees disk: removes dropped models and intermediate exports no record measures (--dry-run lists them).
    """
    import shlex
    import sys

    from compress.benchmarking.bench import SETTINGS_FILE, TO_RUN, SweepRunner, plan, removable_builds, shared_settings
    from compress.benchmarking.bench_recipes import RecipeRunner, is_recipe_file, load_recipes, recipe_rows
    from compress.benchmarking.report import read_records, write_report
    from compress.benchmarking.sweep import LatencySettings, expand, load_sweep, parse_shard
    from compress.benchmarking.sweep import shard as take_shard
    from compress.folders import claim, holding, remove_ours, require_ours

    _quiet_libraries()
    command = "compress " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    if out is not None and out.exists() and not out.is_dir():
        raise CompressError(f"--out: {out} is a file; expected a folder for the results")
    if targets[0] == "merge":
        if out is None or len(targets) < 2:
            raise CompressError("merge: name the shard folders and --out, e.g. compress bench merge a b --out merged")
        missing = [t for t in targets[1:] if not read_records(Path(t))]
        if missing:
            raise CompressError(f"merge: no results.jsonl in {', '.join(missing)}")
        settings = shared_settings([Path(t) for t in targets[1:]])
        records = [r for t in targets[1:] for r in read_records(Path(t))]
        if read_records(out) and out.resolve() not in {Path(t).resolve() for t in targets[1:]}:
            raise CompressError(f"--out: {out} holds results of its own, which merging would replace; name it among the "
                                "folders to merge, or choose another --out")
        claim(out, overwrite=False, what="benchmark results")
        with holding(out):
            if settings is not None:  # the merged folder resumes or retimes like one run of the sweep
                (out / SETTINGS_FILE).write_text(json.dumps(settings, indent=2) + "\n")
            (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
            write_report(records, out, command)
        console.print(f"merged {len(records)} records from {len(targets) - 1} folders into {out}")
        return
    if targets[0] == "clean":
        if len(targets) != 2:
            raise CompressError("clean: name one sweep results folder, e.g. compress bench clean bench/results/minilm_sst2")
        if out or shard or retime or retry_failed:
            raise CompressError("clean: takes one results folder and --dry-run, no other option")
        folder = Path(targets[1])
        if not (folder / SETTINGS_FILE).is_file():
            raise CompressError(f"clean: {folder / SETTINGS_FILE} not found; expected the results folder of a sweep "
                                "(a benchmark of recipes keeps whole runs and is not cleaned)")
        require_ours(folder, "clean")
        with holding(folder):
            removable = removable_builds(folder)
            for path in removable:  # all checked before any is removed
                require_ours(path, "remove (nothing was removed)")
            freed = sum(f.stat().st_size for p in removable for f in p.rglob("*") if f.is_file())
            for path in removable:
                console.print(f"{'would remove' if dry_run else 'removing'} {path}")
                if not dry_run:
                    remove_ours(path)
        console.print(f"{len(removable)} folders, {freed / 1e9:.2f} GB {'would be freed' if dry_run else 'freed'} in {folder / 'work'}")
        return
    files = [Path(t) for t in targets]
    not_recipes = [str(f) for f in files if not is_recipe_file(f)]
    if len(files) == 1 and not_recipes:
        sweep = load_sweep(files[0])
        combinations = expand(sweep)
        folder = out or Path("bench") / "runs" / sweep.name
        runner = SweepRunner(sweep, folder, console)
    else:
        if not_recipes:
            raise CompressError(f"bench: {', '.join(not_recipes)}: not a recipe (no 'stages'); give one sweep file, or recipes only")
        rows, notes = recipe_rows(load_recipes(files))
        for note in notes:
            console.print(f"[yellow]note:[/] {note}")
        combinations = list(rows)
        folder = out or Path("bench") / "runs" / "recipes"
        runner = RecipeRunner(rows, folder, LatencySettings(), console)
    if shard:
        combinations = take_shard(combinations, *parse_shard(shard))
    if dry_run:
        statuses = plan(combinations, read_records(folder), retry_failed, retime)
        for c in combinations:
            console.print(f"{statuses[c.key]:>12}  {c.model} {c.task}: {c.label}")
        console.print(f"{len(combinations)} combinations, {sum(s == TO_RUN for s in statuses.values())} would run ({folder})")
        return
    runner.run(combinations, retry_failed=retry_failed, retime=retime)
    rows = write_report(read_records(folder), folder, command)
    failed = sum(r["status"] != "ok" for r in rows)
    console.print(f"{len(rows)} combinations in {folder / 'results.md'} ({failed} failed); plots: pareto.png, layers_dropped.png, size.png")


# Task data options, shared by the commands that read task examples outside a recipe.
TaskOption = Annotated[Optional[str], typer.Option(help="Task whose training examples are used (sst2, rte, rotten-tomatoes, ...).")]
DataSourceOption = Annotated[str, typer.Option(help="Task data from: hub, glue-dir, files or embedded.")]
DataPathOption = Annotated[Optional[Path], typer.Option(help="GLUE folder (glue-dir) or training file (files).")]
TextColumnsOption = Annotated[Optional[str], typer.Option(help="With --data-source files: comma-separated text columns.")]
ExamplesOption = Annotated[int, typer.Option(min=1, help="Training examples to measure on (a seeded random sample).")]
MaxLengthOption = Annotated[int, typer.Option(min=8, help="Tokens per example.")]


def _training_examples(task: str, data_source: str, data_path: Optional[Path], text_columns: Optional[str]):
    """The task's training examples from the data options, or a one-line error naming the option."""
    from pydantic import ValidationError

    from compress.data.loading import DataSettings, load_task_data
    from compress.pipeline.recipe import format_validation_error

    try:
        data_settings = DataSettings(
            source=data_source,
            path=data_path if data_source == "glue-dir" else None,
            train=data_path if data_source == "files" else None,
            dev=data_path if data_source == "files" else None,
            text_columns=text_columns.split(",") if text_columns else None,
        )
    except ValidationError as error:
        raise CompressError(format_validation_error("command line (data options)", error)) from None
    train = load_task_data(task, data_settings).train
    if len(train) == 0:
        raise CompressError(f"--task: task '{task}' has no training examples in {data_source}")
    return train


@app.command()
@user_errors
def drop(
    model: Annotated[str, typer.Argument(help="Alias (minilm-l6, mpnet-12), local folder or hub id.")],
    strategy: Annotated[str, typer.Option(help="top, bottom, alternate-even, alternate-odd, symmetric, contribution, layers.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the smaller model.")],
    k: Annotated[Optional[int], typer.Option("-k", "--k", help="How many layers to drop.")] = None,
    layers: Annotated[Optional[str], typer.Option(help="strategy layers: comma-separated 0-based indices.")] = None,
    metric: Annotated[Optional[str], typer.Option(help="contribution: cosine (default), block-influence or angular.")] = None,
    task: TaskOption = None,
    data_source: DataSourceOption = "hub",
    data_path: DataPathOption = None,
    text_columns: TextColumnsOption = None,
    examples: ExamplesOption = 500,
    max_length: MaxLengthOption = 128,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing output folder (only one compress made).")] = False,
) -> None:
    """Drop layers from a model and save it, with nothing else (no fine-tuning)."""
    from compress.folders import check_writable, writing
    from compress.pipeline.model_card import CARD_FILE, render_model_card
    from compress.pipeline.models import count_parameters, load_saved, load_tokenizer
    from compress.stages.drop import score_layers_for_drop
    from compress.surgery.architectures import check_max_length, num_layers
    from compress.surgery.layer_drop import drop_layers, kept_original_layers
    from compress.surgery.strategies import CONTRIBUTION_METRICS, STRATEGIES, layers_to_drop

    _quiet_libraries()
    if strategy not in STRATEGIES:
        raise CompressError(f"--strategy: expected one of {', '.join(STRATEGIES)} (got {excerpt(strategy)})")
    if metric is not None and strategy != "contribution":
        raise CompressError(f"--metric: only used with --strategy contribution (got {excerpt(strategy)})")
    metric = metric or "cosine"
    if metric not in CONTRIBUTION_METRICS:
        raise CompressError(f"--metric: expected one of {', '.join(CONTRIBUTION_METRICS)} (got {excerpt(metric)})")
    try:
        indices = [int(i) for i in layers.split(",")] if layers else None
    except ValueError:
        raise CompressError(f"--layers: expected comma-separated integers (got {excerpt(layers)})") from None
    if (layers is None) == (strategy == "layers") or (k is None) != (strategy == "layers"):
        raise CompressError("-k: give -k with every strategy but 'layers', and --layers only with --strategy layers")
    if strategy == "contribution" and task is None:
        raise CompressError("--task: strategy contribution scores layers on task examples; name the task")
    check_writable(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CompressError(f"{out}: folder exists; pass --overwrite to replace it")

    tokenizer = load_tokenizer(model)
    network = load_saved(model)
    check_max_length(network.config, max_length, "--max-length")
    count = num_layers(network.config)
    layers_to_drop(strategy, count, k, layers=indices, scores=[0.0] * count)  # check K before any work
    with writing(out) as partial:
        scores = None
        if strategy == "contribution":
            train = _training_examples(task, data_source, data_path, text_columns)
            scores = score_layers_for_drop(
                network, tokenizer, train, examples=examples, max_length=max_length, seed=42,
                metric=metric, k=k, note={"task": task}, folder=partial,
            )
        dropped = layers_to_drop(strategy, count, k, layers=indices, scores=scores, metric=metric)
        drop_layers(network, dropped, strategy)
        network.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        card = render_model_card(network.config, count_parameters(network), model, None, None, None, None)
        (partial / CARD_FILE).write_text(card)
    console.print(
        f"dropped {dropped} ({strategy}); kept original layers {kept_original_layers(network.config)}; "
        f"{num_layers(network.config)} layers, {count_parameters(network):,} parameters -> {out}"
    )



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
    import time

    import torch

    from compress.analysis.contribution import scoring_batches
    from compress.analysis.layers import CKA_TOKENS, analyze_layers, matched_layers
    from compress.analysis.report import statistics_table, write_analysis
    from compress.folders import check_writable
    from compress.pipeline.models import load_config, load_saved, load_tokenizer
    from compress.surgery.architectures import check_max_length, layout_for, num_layers

    _quiet_libraries()
    if task is None:
        raise CompressError("--task: name the task whose training examples the layers are measured on")
    folder = out or Path("analysis") / f"{Path(model).name}-{task}"
    check_writable(folder)
    if folder.exists() and any(folder.iterdir()) and not overwrite:
        raise CompressError(f"{folder}: folder exists; pass --overwrite to write into it, or --out elsewhere")

    # Every check that needs only configs and data comes before loading weights.
    base_config = load_config(model)
    layout_for(base_config)
    check_max_length(base_config, max_length, "--max-length")
    if block > num_layers(base_config):
        raise CompressError(f"--block: must be at most the model's {num_layers(base_config)} layers (got {block})")

    def finetuned_input(load):
        try:
            return load(finetuned)
        except CompressError as error:
            raise CompressError(f"--finetuned: {str(error).removeprefix('model: ')}") from None

    if finetuned is not None:
        matched_layers(base_config, finetuned_input(load_config))
    train = _training_examples(task, data_source, data_path, text_columns)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(model)
    network = load_saved(model).to(device)
    other = finetuned_input(load_saved).to(device) if finetuned is not None else None
    batches = scoring_batches(train, tokenizer, examples, max_length, seed=42)
    started = time.perf_counter()
    rows = analyze_layers(network, batches, block=block, finetuned=other)
    seconds = time.perf_counter() - started

    tokens = sum(int(batch["attention_mask"].sum()) for batch in batches)
    about = {
        "model": model,
        "finetuned": finetuned,
        "task": task,
        "data_source": data_source,
        "examples": min(examples, len(train)),
        "tokens": tokens,
        "cka_tokens": min(tokens, CKA_TOKENS) if finetuned is not None else None,
        "max_length": max_length,
        "block": block,
        "device": device,
        "seconds": round(seconds, 1),
    }
    title = f"{model} on {task}: {about['examples']} examples, {tokens:,} tokens" + (
        f"; vs {finetuned}" if finetuned else ""
    )
    console.print(statistics_table(rows, title, block))
    written = write_analysis(rows, about, folder, title)
    console.print(f"measured in {seconds:.1f}s on {device}; wrote {', '.join(p.name for p in written)} -> {folder}")
