"""onnxruntime sessions with a stated thread count."""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort


def ort_session(path: Path, threads: int | None = None, profile_prefix: Path | None = None,
                config: dict[str, str] | None = None) -> ort.InferenceSession:
    """A CPU session (CUDA first when onnxruntime-gpu sees a device); `threads` fixes intra-op threads;
    with `profile_prefix`, onnxruntime's profiler records every node's time (`end_profiling` writes it);
    `config`: session configuration entries (e.g. {"session.intra_op.allow_spinning": "0"})."""
    options = ort.SessionOptions()
    for key, value in (config or {}).items():
        options.add_session_config_entry(key, value)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    if profile_prefix:
        options.enable_profiling = True
        options.profile_file_prefix = str(profile_prefix)
    return ort.InferenceSession(str(path), options, providers=execution_providers())


def execution_providers() -> list[str]:
    """CUDA first when onnxruntime-gpu sees a device, else the CPU."""
    available = ort.get_available_providers()
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


def onnx_device() -> str:
    """Where sessions made here run: 'cuda' or 'cpu'."""
    return "cuda" if execution_providers()[0] == "CUDAExecutionProvider" else "cpu"
