"""Timing a model the way a user would run it: fixed threads, warm-up first, medians and tails.

On a CUDA device, timings synchronise the device around each call so that queued kernels are
counted; on the CPU the thread count is fixed and reported with the figures.
"""

from __future__ import annotations

import functools
import importlib.metadata
import itertools
import os
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from compress.models.artifacts import Artifact, RuntimeModel, predictor_for
from compress.timing.load import LoadElsewhere

if TYPE_CHECKING:  # the memory process imports this module: datasets would cost it a second
    from datasets import Dataset


@dataclass
class Latency:
    batch_size: int
    sequence_length: str  # a number, or "task" for the task's own length distribution
    p50_ms: float
    p95_ms: float
    throughput: float  # examples per second at the median
    threads: int
    device: str
    other_cpu_load: float | None  # CPU cores' worth of work done elsewhere during the timed calls (None: too short to tell)
    matmul_gop: float | None = None  # the layers' MatMul work per call (compress/timing/roofline.py)
    fraction_of_int8_peak: float | None = None  # that work over p50, against this host's measured MatMul peaks (CPU only)
    fraction_of_fp32_peak: float | None = None

    def as_dict(self) -> dict:
        return asdict(self)


def device_of(model: Artifact) -> str:
    """Where the model runs: 'cuda' or 'cpu' (a runtime model: where its engine runs it)."""
    if isinstance(model, RuntimeModel):
        return model.device()
    return next(model.parameters()).device.type


def device_name(device: str) -> str:
    if device == "cuda":
        return f"cuda: {torch.cuda.get_device_name(0)}"
    return f"cpu: {cpu_model()} ({platform.machine()}, {os.cpu_count()} cores)"


def cpu_model() -> str:
    """The processor's model name (from /proc/cpuinfo on Linux; platform's guess elsewhere)."""
    return _cpuinfo().get("model name") or platform.processor() or "unknown"


def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where there is none)."""
    try:
        first = Path("/proc/cpuinfo").read_text().split("\n\n", 1)[0]
    except OSError:
        return {}
    return {key.strip(): value.strip() for key, _, value in (line.partition(":") for line in first.splitlines())}


TIMING_LIBRARIES = ("torch", "onnxruntime", "onnxruntime-gpu", "transformers", "optimum", "optimum-onnx", "openvino", "numpy")
"""Libraries whose kernels or exported graphs a timing depends on (those installed are recorded)."""
KERNEL_CPU_FEATURES = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                       "asimddot", "i8mm", "sve")
"""Instruction sets (x86 and Arm) from which onnxruntime and PyTorch pick their int8 and fp32 kernels."""


@functools.cache  # the same for every record of a run
def timing_environment(device: str) -> dict:
    """What a timing depends on besides the model, so that figures from two machines or sittings can be
    told apart: library versions, and the processor's family and model numbers (a virtual machine
    often names only "AMD EPYC") with the instruction sets that choose the kernels."""
    libraries = {}
    for name in TIMING_LIBRARIES:
        try:
            libraries[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    environment = {
        "python": platform.python_version(),
        "libraries": libraries,
        "cpu": {"model": cpu_model(), "family": info.get("cpu family"), "model_number": info.get("model"),
                "features": [f for f in KERNEL_CPU_FEATURES if f in flags]},
    }
    if device == "cuda":
        environment["cuda"] = {"device": torch.cuda.get_device_name(0), "cuda": torch.version.cuda,
                               "capability": ".".join(map(str, torch.cuda.get_device_capability(0)))}
    return environment


def processor_of(environment: dict | None) -> tuple | None:
    """The processor an environment names (brand, family, model, kernel features), or None where a record stored none:
    a device line names the brand only, and a Zen 4 and a Zen 5 EPYC read alike there."""
    cpu = (environment or {}).get("cpu")
    return None if not cpu else (cpu.get("model"), cpu.get("family"), cpu.get("model_number"), tuple(cpu.get("features") or ()))


def describe_environment(environment: dict) -> str:
    """One line for a report: the libraries and the processor a timing was taken with."""
    libraries = ", ".join(f"{name} {version}" for name, version in environment["libraries"].items())
    cpu = environment["cpu"]
    numbers = f", family {cpu['family']} model {cpu['model_number']}" if cpu.get("family") else ""
    features = f" ({', '.join(cpu['features'])})" if cpu["features"] else ""
    cuda = environment.get("cuda")
    gpu = f"; {cuda['device']}, CUDA {cuda['cuda']}" if cuda else ""
    return f"Python {environment['python']}, {libraries}; CPU {cpu['model']}{numbers}{features}{gpu}"


def timed_calls(call: Callable[[], object], warmup: int, repeats: int) -> np.ndarray:
    """Seconds per call after `warmup` untimed calls."""
    cuda = torch.cuda.is_available()
    for _ in range(warmup):
        call()
    seconds = []
    for _ in range(repeats):
        if cuda:
            torch.cuda.synchronize()
        start = time.perf_counter()
        call()
        if cuda:
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - start)
    return np.array(seconds)


TURN_PAUSE_S = 0.15
"""Seconds between engines timed in turns: onnxruntime's spinning threads slow whatever runs right after them."""


def distinct_batches(batch_sets: dict[str, list[dict]]) -> list[dict]:
    """Each batch of the sets once (a set may repeat one batch for a fixed length)."""
    return list({id(batch): batch for batches in batch_sets.values() for batch in batches}.values())


def timed_in_turns(runners: dict[str, Callable[[dict], object]], batch_sets: dict[str, list[dict]], rounds: int) -> dict[str, dict[str, list[float]]]:
    """Each runner's median milliseconds per round on each set of batches (its calls take the set's batches
    in turn). Every round times one runner after another, with a pause and two untimed calls between them,
    so a slow spell of the host moves every runner alike: compare them by the median over rounds, or by
    their ratio round by round. Every runner meets every batch once before the first round (see `measure`)."""
    for run in runners.values():
        for batch in distinct_batches(batch_sets):
            run(batch)
    per_round = {name: {label: [] for label in batch_sets} for name in runners}
    for _ in range(rounds):
        for name, run in runners.items():
            time.sleep(TURN_PAUSE_S)
            for label, batches in batch_sets.items():
                run(batches[0])
                run(batches[-1])
                turn = iter(batches)
                seconds = timed_calls(lambda: run(next(turn)), 0, len(batches))
                per_round[name][label].append(float(np.median(seconds)) * 1000)
    return per_round


def fixed_length_batch(texts: Sequence[str], tokenizer: PreTrainedTokenizerBase, batch_size: int, length: int) -> dict:
    """Real task text, padded or cut to exactly `length` tokens (repeated if the texts run out)."""
    rows = [texts[i % len(texts)] for i in range(batch_size)]
    return dict(tokenizer(rows, padding="max_length", truncation=True, max_length=length, return_tensors="pt"))


def task_length_batches(
    dataset: Dataset, tokenizer: PreTrainedTokenizerBase, batch_size: int, max_length: int, count: int, seed: int = 0
) -> list[dict]:
    """`count` batches of random task examples, each padded to its own longest row: the task's real lengths."""
    pair = "text_b" in dataset.column_names
    generator = np.random.default_rng(seed)
    batches = []
    for _ in range(count):
        rows = dataset.select(generator.integers(0, len(dataset), size=batch_size))
        encoded = tokenizer(list(rows["text_a"]), list(rows["text_b"]) if pair else None, padding=True, truncation=True,
                            max_length=max_length, return_tensors="pt")
        batches.append(dict(encoded))
    return batches


def runner_for(model: Artifact, threads: int) -> Callable[[dict], object]:
    """A function running one batch through the model, with its thread count fixed."""
    if not isinstance(model, RuntimeModel):
        torch.set_num_threads(threads)
    return predictor_for(model, threads)


def measure(
    model: Artifact, batches: list[dict], threads: int, label_length: str, warmup: int = 5, repeats: int = 30
) -> Latency:
    """Time `repeats` calls after `warmup` untimed ones, and at least one untimed call on every batch: a
    serving process has met each length before (OpenVINO's first call at a shape costs milliseconds more,
    paid once per shape; what a change of shape costs on every call stays in the timing). The timed calls take `batches` in turn from the first, so each
    batch is timed equally often (one batch is reused when a single one is given)."""
    run = runner_for(model, threads)
    for turn in range(max(warmup, len(batches))):
        run(batches[turn % len(batches)])
    in_turn = itertools.cycle(batches)
    with LoadElsewhere() as elsewhere:
        seconds = timed_calls(lambda: run(next(in_turn)), 0, repeats)
    batch_size = len(next(iter(batches[0].values())))
    median = float(np.median(seconds))
    return Latency(
        batch_size=batch_size,
        sequence_length=label_length,
        p50_ms=round(median * 1000, 3),
        p95_ms=round(float(np.percentile(seconds, 95)) * 1000, 3),
        throughput=round(batch_size / median, 2),
        threads=threads,
        device=device_name(device_of(model)),
        other_cpu_load=elsewhere.cores,
    )
