"""A layer analysis from start to end, as `compress analyze` runs it: the checks that need only configs
(before any weights load), then the measurement, its table and its files."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import torch
from datasets import Dataset

from compress.analysis.contribution import scoring_batches
from compress.analysis.layers import CKA_TOKENS, LayerStatistics, analyze_layers, matched_layers
from compress.analysis.report import write_analysis
from compress.errors import CompressError
from compress.models.loading import load_config, load_saved, load_tokenizer
from compress.surgery.architectures import check_max_length, layout_for, num_layers


@dataclass
class Analysis:
    rows: list[LayerStatistics]
    about: dict
    """What was measured, on what, and how long it took (analysis.json's header)."""
    title: str
    written: list[Path]


def _finetuned_input(load, finetuned: str):
    try:
        return load(finetuned)
    except CompressError as error:
        raise CompressError(f"--finetuned: {str(error).removeprefix('model: ')}") from None


def check_analysis(model: str, finetuned: str | None, max_length: int, block: int) -> None:
    """Refuse, from the configs alone (no weights loaded), an analysis that cannot run."""
    base_config = load_config(model)
    layout_for(base_config)
    check_max_length(base_config, max_length, "--max-length")
    if block > num_layers(base_config):
        raise CompressError(f"--block: must be at most the model's {num_layers(base_config)} layers (got {block})")
    if finetuned is not None:
        matched_layers(base_config, _finetuned_input(load_config, finetuned))


def run_analysis(model: str, task: str, train: Dataset, folder: Path, data_source: str, finetuned: str | None = None,
                 examples: int = 500, max_length: int = 128, block: int = 1) -> Analysis:
    """Measure `model`'s layers (and, with `finetuned`, how fine-tuning changed them) on seeded training
    examples of `task`, and write analysis.json, analysis.csv and analysis.png into `folder`."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    tokenizer = load_tokenizer(model)
    network = load_saved(model).to(device)
    other = _finetuned_input(load_saved, finetuned).to(device) if finetuned is not None else None
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
    title = f"{model} on {task}: {about['examples']} examples, {tokens:,} tokens" + (f"; vs {finetuned}" if finetuned else "")
    return Analysis(rows, about, title, write_analysis(rows, about, folder, title))
