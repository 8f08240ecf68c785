import subprocess
import sys
import time

from compress.latency import CONTENDED_LOAD, LoadElsewhere
from compress.report import markdown_table


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_too_short_a_window_tells_no_load():
    # CPU times come in 10 ms ticks: over 50 ms one tick elsewhere would read as 0.2 cores
    with LoadElsewhere() as short:
        spin(0.05)
    assert short.cores is None


def test_load_elsewhere_counts_other_processes_not_this_one():
    with LoadElsewhere() as own_work:
        spin(1.5)
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # let it start
        with LoadElsewhere() as other_work:
            time.sleep(1.5)
    finally:
        busy.kill()
    # compared with each other, not with zero: the machine may be busy with other work throughout
    assert other_work.cores - own_work.cores >= CONTENDED_LOAD, (
        f"a process spinning beside this one added only {other_work.cores - own_work.cores:.2f} cores of work elsewhere "
        f"over this process spinning itself ({own_work.cores:.2f} cores): own work counted as elsewhere, or the spinner unseen"
    )


def test_table_marks_latencies_timed_on_a_busy_machine():
    row = {"model": "m", "task": "t", "strategy": "top", "k": 1, "training": "finetune", "precision": "torch-fp32",
           "status": "ok", "primary_metric": "accuracy", "score": 0.9, "delta_vs_full": -1.0, "delta_vs_top": 0.0,
           "layers": 5, "parameters": 1e6, "size_mb": 4.0, "speedup_vs_full": 1.2, "threads": 2, "device": "cpu"}
    timing = {"batch_size": 1, "sequence_length": "128", "p50_ms": 10.0, "p95_ms": 12.0}
    quiet = markdown_table([{**row, "latency": [{**timing, "other_cpu_load": 0.1}]}])
    busy = markdown_table([{**row, "latency": [{**timing, "other_cpu_load": 1.3}]}])
    assert "10.00 |" in quiet and "†" not in quiet
    assert "10.00† |" in busy and "† timed while other work" in busy
