import importlib.util
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from compress.benchmarking.latency import LoadElsewhere
from compress.benchmarking.report import markdown_table


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_too_short_a_window_tells_no_load():
    # CPU times come in 10 ms ticks: over 50 ms one tick elsewhere would read as 0.2 cores
    with LoadElsewhere() as short:
        spin(0.05)
    assert short.cores is None


def test_table_marks_latencies_timed_on_a_busy_machine():
    row = {"model": "m", "task": "t", "strategy": "top", "k": 1, "training": "finetune", "precision": "torch-fp32",
           "status": "ok", "primary_metric": "accuracy", "score": 0.9, "delta_vs_full": -1.0, "delta_vs_top": 0.0,
           "layers": 5, "parameters": 1e6, "size_mb": 4.0, "speedup_vs_full": 1.2, "threads": 2, "device": "cpu"}
    timing = {"batch_size": 1, "sequence_length": "128", "p50_ms": 10.0, "p95_ms": 12.0}
    quiet = markdown_table([{**row, "latency": [{**timing, "other_cpu_load": 0.1}]}])
    busy = markdown_table([{**row, "latency": [{**timing, "other_cpu_load": 1.3}]}])
    assert "10.00 |" in quiet and "†" not in quiet
    assert "10.00† |" in busy and "† timed while other work" in busy


def load_bench_script(name: str):
    """A script of bench/ as a module (bench/ is not a package; its scripts import each other as siblings)."""
    folder = Path(__file__).resolve().parents[1] / "bench"
    spec = importlib.util.spec_from_file_location(name, folder / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gemm_throughput_script_times_graphs_that_multiply_correctly():
    gemm = load_bench_script("gemm_throughput")
    x = np.random.default_rng(2).standard_normal((gemm.ROWS, gemm.DEPTH)).astype(np.float32)
    for name, model in gemm.gemm_models().items():
        weights = numpy_helper.to_array(next(i for i in model.graph.initializer if i.name == "W")).astype(np.float32)
        expected = x @ (weights * gemm.WEIGHT_SCALE if name == "int8" else weights)
        (result,) = gemm.gemm_session(model, threads=1).run(None, {"X": x})
        if name == "fp32":
            assert np.abs(result - expected).max() < 1e-3 * np.abs(expected).max()
        else:
            # the inputs are quantized on the fly to 8 bits, and on CPUs without VNNI onnxruntime's u8s8
            # dot products saturate (up to 13% of the output's spread on a Zen 1), so agreement is
            # checked as correlation: a wrong graph (other weights, scales or layout) gives about 0
            assert np.corrcoef(result.ravel(), expected.ravel())[0, 1] > 0.99
    figures = gemm.gemm_throughput(threads=1, calls=5, warmup=1)
    assert figures["int8"] > 0 and figures["fp32"] > 0
    assert "int8" in gemm.describe_throughput(figures, 1)


def test_onnx_profile_script_shares_the_time_among_the_graphs_operators(tmp_path):
    gemm, profiler = load_bench_script("gemm_throughput"), load_bench_script("onnx_profile")
    path = tmp_path / "int8.onnx"
    onnx.save(gemm.gemm_models()["int8"], path)
    profile = profiler.profile_by_operator(path, threads=1, batch=gemm.ROWS, length=gemm.DEPTH, calls=3, warmup=1)
    assert list(profile["operators"]) == ["DynamicQuantizeMatMul"]
    row = profile["operators"]["DynamicQuantizeMatMul"]
    assert row["share"] == 1.0 and row["nodes_per_call"] == 1 and row["ms_per_call"] > 0 and profile["call_ms"] > 0


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_stops_with_one_line_without_cuda(tmp_path):
    script = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"
    run = subprocess.run([sys.executable, script, "--out", tmp_path / "gpu"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.splitlines() == ["error: bench/gpu_check.py needs a CUDA GPU, and torch.cuda.is_available() is False here"]
    assert not (tmp_path / "gpu").exists()
