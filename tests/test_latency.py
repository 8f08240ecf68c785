import subprocess
import sys
import time
from pathlib import Path

import onnx
import pytest
import torch

from compress.benchmarking.report import ReportRow, markdown_table
from compress.timing.load import LoadElsewhere
from compress.timing.roofline import PEAK_DEPTH, PEAK_ROWS, peak_models
from tests.helpers import bench_record, load_bench_script


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
    def row(other_cpu_load):
        timing = {"batch_size": 1, "sequence_length": "128", "p50_ms": 10.0, "p95_ms": 12.0, "other_cpu_load": other_cpu_load}
        record = bench_record(k=1, layers=5, parameters=10**6, size_mb=4.0, threads=2, device="cpu", latency=[timing])
        return ReportRow(record, delta_vs_full=-1.0, delta_vs_top=0.0, speedup_vs_full=1.2)

    quiet = markdown_table([row(0.1)])
    busy = markdown_table([row(1.3)])
    assert "10.00 |" in quiet and "†" not in quiet
    assert "10.00† |" in busy and "† timed while other work" in busy


def test_onnx_profile_script_shares_the_time_among_the_graphs_operators(tmp_path):
    profiler = load_bench_script("onnx_profile")
    path = tmp_path / "int8.onnx"
    onnx.save(peak_models()["int8"], path)
    profile = profiler.profile_by_operator(path, threads=1, batch=PEAK_ROWS, length=PEAK_DEPTH, calls=3, warmup=1)
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
