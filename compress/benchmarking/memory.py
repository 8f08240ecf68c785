"""Peak memory of serving a model: measured in a fresh process that loads it and runs one batch.

A long-lived harness process keeps the allocations of every model it has run (the allocator reuses
freed memory without returning it), so neither its peak nor the growth of its peak tells one model
from another. A new process does: once the libraries are imported, its resident memory is noted,
the model is loaded and the heaviest timed batch run, and the peak above that mark is what the
model needs (weights, runtime buffers, activations), the libraries' own memory left out.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from compress.models.artifacts import load_artifact
from compress.timing.latency import device_of, runner_for

STATUS_FILE = Path("/proc/self/status")


def _resident_mb(field: str) -> float:
    """VmRSS (now) or VmHWM (peak since the last reset) of this process, in MB (Linux)."""
    for line in STATUS_FILE.read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1e3
    raise OSError(f"{STATUS_FILE} has no {field}")


def _reset_peak() -> bool:
    """Set the kernel's peak-resident mark to the current resident size (Linux); False elsewhere."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _lifetime_peak_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1e6 if sys.platform == "darwin" else peak / 1e3  # bytes on macOS, KiB elsewhere


def peak_added_mb(folder: Path, batch: dict, device: str | None, threads: int) -> float:
    """In this process: the peak memory that loading the model and running `batch` adds."""
    linux = _reset_peak()
    # elsewhere only the lifetime peak exists, and the imports' own peak may hide a small model's
    before = _resident_mb("VmRSS") if linux else _lifetime_peak_mb()
    model = load_artifact(folder, device)
    runner_for(model, threads)(batch)
    if device_of(model) == "cuda":
        return torch.cuda.max_memory_allocated() / 1e6
    return (_resident_mb("VmHWM") if linux else _lifetime_peak_mb()) - before


PR_SET_PDEATHSIG = 1


def _die_with_parent(parent: int) -> None:
    """In the measuring process, first thing: the kernel kills it when the process that started it dies
    (Linux), so a killed sweep leaves no measurement running behind it; a parent already gone ends it now."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != parent:
        sys.exit(1)


def serving_peak_mb(folder: Path, batch: dict, device: str | None, threads: int) -> float | None:
    """Peak memory (MB) that loading the model in `folder` (onto `device`) and running `batch` through
    it adds to a fresh Python process: resident memory on the CPU, allocated device memory on CUDA.
    None if that process failed (the row keeps its other figures). Its batch file is a temporary file,
    inside the results folder while a sweep holds it (compress.folders.holding)."""
    with tempfile.TemporaryDirectory() as scratch:
        batch_file = Path(scratch) / "batch.pt"
        torch.save(batch, batch_file)
        command = [sys.executable, "-m", "compress.benchmarking.memory", str(os.getpid()), str(folder), str(batch_file), device or "", str(threads)]
        done = subprocess.run(command, capture_output=True, text=True, check=False)
    lines = done.stdout.strip().splitlines()
    return round(float(lines[-1]), 1) if done.returncode == 0 and lines else None


if __name__ == "__main__":
    parent_arg, folder_arg, batch_arg, device_arg, threads_arg = sys.argv[1:]
    _die_with_parent(int(parent_arg))
    print(peak_added_mb(Path(folder_arg), torch.load(batch_arg, weights_only=True), device_arg or None, int(threads_arg)))
