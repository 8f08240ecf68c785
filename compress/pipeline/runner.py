"""Running a recipe into a run folder: one folder per stage, a final model, results.json and a summary table.

The run folder is the executor's stage cache, with each stage's folder named after the stage. Running
a recipe into a folder that holds an earlier run reuses every stage whose identity is unchanged and
builds the rest, so an interrupted or edited run resumes instead of starting again.
"""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.table import Table

from compress.data.loading import TaskData
from compress.errors import CompressError
from compress.evaluation.metrics import metric_texts
from compress.folders import (
    FINAL,
    RECIPE_FILE,
    RUN_SUMMARY_FILE,
    check_replaceable,
    check_writable,
    claimed,
    copy_folder,
    refuse_link,
    write_text,
    writing,
)
from compress.pipeline.cache import StageCache, StageRecord
from compress.pipeline.executor import Executor
from compress.pipeline.graph import recipe_graph
from compress.pipeline.recipe import Recipe, recipe_file_text



def summary_table(recipe: Recipe, records: list[StageRecord]) -> Table:
    table = Table(title=f"{recipe.name}: {recipe.model}" + (f" on {recipe.task}" if recipe.task else ""))
    texts = [metric_texts(r.metrics) for r in records]
    metric_names = list(dict.fromkeys(name for t in texts for name in t))
    for column in ("stage", "from", "kind", "layers", "parameters", "size", *metric_names, "time"):
        table.add_column(column, justify="left" if column in ("stage", "from", "kind") else "right")
    for r, text in zip(records, texts):
        metrics = [text.get(m, "-") for m in metric_names]
        table.add_row(
            r.name, r.source, r.kind, str(r.layers), f"{r.parameters / 1e6:.1f}M", f"{r.size_mb:.1f} MB",
            *metrics, f"{r.seconds:.0f}s",
        )
    return table


def run_recipe(recipe: Recipe, recipe_file: Path | str, run_folder: Path, overwrite: bool, console: Console,
               recipe_text: str | None = None, data: TaskData | None = None) -> dict:
    """Run (or resume) every stage of a validated recipe in `run_folder`; returns what results.json holds.

    Stages finished in `run_folder` by an earlier run of the same settings from the same start are
    reused; `overwrite` empties the folder first (only a folder compress made). `recipe_file` names
    the recipe in messages; `recipe_text` (default: that file's, `recipe_file_text`) is kept beside the run and in
    model cards; `data`, the recipe's task data where validating it loaded them already."""
    # Everything that can still fail on bad input comes before the run folder is touched.
    check_writable(run_folder)
    check_replaceable(run_folder / FINAL)
    for name in (RECIPE_FILE, RUN_SUMMARY_FILE):
        refuse_link(run_folder / name)
    recipe_text = recipe_text or recipe_file_text(Path(recipe_file))
    executor = Executor(StageCache(run_folder, lambda node: node.name), console)
    executor.tokenizer(recipe.model)
    try:
        data = executor.data(recipe, data)
    except CompressError as error:
        raise CompressError(f"{recipe_file}: {error}") from None
    with claimed(run_folder, "run folder", overwrite):
        write_text(run_folder / RECIPE_FILE, recipe_text)
        if data is not None:
            console.print(
                f"[bold]{recipe.task}[/]: {len(data.train):,} training examples, "
                + ", ".join(f"{len(d):,} {split}" for split, d in data.dev.items())
                + f" ({data.source})"
            )
        nodes = recipe_graph(recipe, recipe_text)
        done = [name for name, node in nodes.items() if executor.cache.find(node)]
        if done:
            left = [name for name in nodes if name not in done]
            console.print(f"resuming {run_folder}: reusing {', '.join(done)} (finished with the same settings from the same start)"
                          + (f"; running {', '.join(left)}" if left else "; nothing left to run"))
        records = []
        for name, node in nodes.items():
            if name in done:
                console.print(f"{name}: finished in an earlier run, reused")
            records.append(executor.ensure(node)[1])

        with writing(run_folder / FINAL) as partial:
            copy_folder(run_folder / records[-1].folder, partial)
        summary = {
            "recipe": recipe.name,
            "model": recipe.model,
            "task": recipe.task,
            "data": None if data is None else data.source,
            "final": {**records[-1].model_dump(), "folder": FINAL},
            "stages": [r.model_dump() for r in records],
        }
        write_text(run_folder / RUN_SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")
    console.print(summary_table(recipe, records))
    console.print(f"Final model: {run_folder / FINAL}  (results: {run_folder / RUN_SUMMARY_FILE})")
    return summary
