"""A benchmark's stage graph on a Ray cluster, or on a local Ray instance: `compress bench ... --executor ray`.

Each node the rows need and the cache lacks is one Ray task, submitted once for the whole cluster and
started when the tasks of the nodes it starts from and reads have finished (their results are its
arguments); each row's measurement is a task after its model's. A training task asks for a GPU where
the cluster has one, else for as many CPUs as the driver's machine trains with, and trains with that
many threads (so a seeded model is the one the local executor makes); a conversion computes with as
many threads too, and asks for as many CPUs unless it runs on a GPU; a measurement asks for the
sweep's timing threads and the one `compress_timing` resource each machine has, so no two timings on
a machine share its cores. Tasks write models into `<out>/work/`,
which every machine must see at the same path; only this process appends to results.jsonl, as each
row's record arrives.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from rich.console import Console

from compress.benchmarking.bench import Benchmark, now_utc
from compress.benchmarking.records import BenchRecord
from compress.benchmarking.report import ReportRow
from compress.benchmarking.rows import BenchRow, trained_node
from compress.benchmarking.sweep import LatencySettings
from compress.errors import CompressError, failure, first_line
from compress.pipeline.cache import StageRecord
from compress.pipeline.executor import CHECKPOINT_MINUTES, NotBuilt
from compress.pipeline.graph import StageNode

TIMING_RESOURCE = "compress_timing"
"""One per machine: a measurement holds it, so timings on one machine never overlap."""
KEEP_IDLE_WORKERS_MS = 3_600_000
"""How long a local Ray instance keeps an idle worker (and what it has loaded) for the next task."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise CompressError("--executor ray: Ray is not installed; pip install 'compress[ray]'") from None
    return ray


def connect(address: str | None) -> bool:
    """Join the cluster at `address`, or start a local Ray instance with this machine's CPUs; True if
    this process started Ray (and so shuts it down)."""
    ray = _import_ray()
    if ray.is_initialized():
        return False
    if address:
        try:
            # the cluster's workers started with their own environment: the driver's checkpoint interval goes with the tasks
            forwarded = {name: os.environ[name] for name in (CHECKPOINT_MINUTES,) if name in os.environ}
            ray.init(address=address, log_to_driver=False, configure_logging=False, runtime_env={"env_vars": forwarded})
        except (ConnectionError, RuntimeError, ValueError) as error:
            raise CompressError(f"--address: cannot join the Ray cluster at {address} ({first_line(error)})") from None
        if not ray.cluster_resources().get(TIMING_RESOURCE):
            ray.shutdown()
            raise CompressError(f"--address: the cluster's machines have no '{TIMING_RESOURCE}' resource; start each with "
                                f"ray start ... --resources='{{\"{TIMING_RESOURCE}\": 1}}'")
    else:
        # A worker that has run a task holds torch, transformers and the task's data (seconds to load again);
        # Ray would end idle workers after a second and start cold ones for the next tasks.
        ray.init(num_cpus=os.cpu_count(), resources={TIMING_RESOURCE: 1}, include_dashboard=False, log_to_driver=False,
                 configure_logging=False, _system_config={"idle_worker_killing_time_threshold_ms": KEEP_IDLE_WORKERS_MS})
    return not address


def _build_node(out_dir: str, cwd: str, threads: int, may_train: bool, node: StageNode, *inputs) -> tuple[StageRecord, bool]:
    """Build one node (the ones it needs are built: `inputs` are their tasks' results); its record, and
    whether this task built it (False: another task or an earlier run had)."""
    executor = _worker_benchmark(out_dir, cwd, threads, may_train).executor
    built_before = len(executor.built)
    _, record = executor.ensure(node)
    return record, len(executor.built) > built_before


def _measure_row(out_dir: str, cwd: str, threads: int, latency: LatencySettings, peak_memory: bool, may_train: bool, row: BenchRow,
                 *inputs) -> BenchRecord | None:
    """Measure one row whose models are built (`inputs` are their tasks' results); its record, as the local loop makes it."""
    benchmark = _worker_benchmark(out_dir, cwd, threads, may_train)
    benchmark.latency, benchmark.peak_memory = latency, peak_memory
    return benchmark.measured_row(row)


_worker_benchmarks: dict[str, Benchmark] = {}
"""This worker process's benchmark per results folder: its executor keeps the data and tokenizers it
loaded for the tasks that come after."""


def _worker_benchmark(out_dir: str, cwd: str, threads: int, may_train: bool) -> Benchmark:
    _enter(cwd, threads)
    if out_dir not in _worker_benchmarks:
        _worker_benchmarks[out_dir] = Benchmark(Path(out_dir), LatencySettings(), Console(quiet=True))
    benchmark = _worker_benchmarks[out_dir]
    benchmark.executor.may_train = may_train
    return benchmark


def _enter(cwd: str, threads: int) -> None:
    """Relative paths of recipes (data folders) mean what they mean to the driver."""
    if os.path.isdir(cwd):
        os.chdir(cwd)
    torch.set_num_threads(threads)


class RayBenchmark(Benchmark):
    def __init__(self, *args, address: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.address = address
        self.submitted: list[str] = []
        """The identity of each node a build task was submitted for, in order."""

    def run(self, rows: list[BenchRow], retry_failed: bool = False, retime: bool = False, command: str | None = None,
            rebuild_missing: bool = False) -> list[ReportRow]:
        # Ray's processes start before the results folder is held: they keep the machine's own temporary folder.
        with self.session():
            return super().run(rows, retry_failed, retime, command, rebuild_missing)

    @contextmanager
    def session(self) -> Iterator[None]:
        """Connected to the cluster (or a local Ray instance started, and shut down after)."""
        started_here = connect(self.address)
        try:
            yield
        finally:
            if started_here:
                _import_ray().shutdown()

    def records(self, todo: list[BenchRow], announce: Callable[[str], None]) -> Iterator[BenchRecord | None]:
        ray = _import_ray()
        gpus = ray.cluster_resources().get("GPU", 0) > 0
        cwd, train_threads = os.getcwd(), torch.get_num_threads()
        out_dir = str(self.out_dir.resolve())
        build = ray.remote(_build_node)
        measure = ray.remote(_measure_row)
        tasks: dict[str, object] = {}  # node identity -> its build task (absent: already in the cache)

        def submit(node: StageNode):
            if node.identity not in tasks:
                if self.executor.cache.find(node):
                    tasks[node.identity] = None
                else:
                    needs = [submit(n) for n in (node.source, *node.reads.values()) if n is not None]
                    # every build computes with the driver's thread count, as the local executor does (the same model),
                    # and so asks for that many CPUs: conversions given one each ran several threads to a core
                    on_gpu = gpus and (node.trains or node.settings.wants_gpu())
                    options = {"num_gpus": 1, "num_cpus": 1} if on_gpu else {"num_gpus": 0, "num_cpus": train_threads}
                    self.submitted.append(node.identity)
                    tasks[node.identity] = build.options(**options, name=f"build {node.name}").remote(
                        out_dir, cwd, train_threads, self.executor.may_train, node, *(t for t in needs if t is not None))
            return tasks[node.identity]

        timing = {"num_cpus": self.latency.threads, "num_gpus": 1 if gpus else 0, "resources": {TIMING_RESOURCE: 1}}
        pending = {}
        for row in todo:
            needs = [submit(row.node)]
            if (trained := trained_node(row.node)) is not None:
                needs.append(submit(trained))
            ref = measure.options(**timing, name=f"measure {row.combination.label}").remote(
                out_dir, cwd, train_threads, self.latency, self.peak_memory, self.executor.may_train, row, *(t for t in needs if t is not None))
            pending[ref] = (row, time.perf_counter())
        announce(f"{len(pending)} rows, {sum(t is not None for t in tasks.values())} models to build on Ray")
        charged: set[str] = set()
        while pending:
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            row, submitted = pending.pop(ready)
            announce(f"{row.combination.model} {row.combination.task}: {row.combination.label} done")
            yield self._settled(ray, ready, row, tasks, charged, submitted)

    def _settled(self, ray, ready, row: BenchRow, tasks: dict, charged: set[str], submitted: float) -> BenchRecord | None:
        """A row's record from its finished measurement task: its build times charged to it (each
        stage's time to the first row that needed it), or the error of whichever task failed."""
        c = row.combination
        try:
            record = ray.get(ready)
        except ray.exceptions.RayTaskError as error:
            cause = error.cause if isinstance(error.cause, BaseException) else error
            if isinstance(cause, NotBuilt):  # measuring again: its finished record stays the one that counts
                self.console.print(f"[yellow]not measured again[/] {c.label}: {cause}")
                return None
            self.console.print(f"[red]failed[/] {c.key}: {failure(cause)}")
            return BenchRecord(key=c.key, **c.record_fields(), status="failed", error=failure(cause),
                               seconds_total=round(time.perf_counter() - submitted, 1), finished=now_utc())
        if record is None:
            return None
        stages: dict[str, float] = {}
        for node in _needed(row.node):
            task = tasks.get(node.identity)
            if task is not None and node.identity not in charged:
                built, made_here = ray.get(task)
                if made_here:
                    stages[built.stage] = round(stages.get(built.stage, 0.0) + built.seconds, 1)
                charged.add(node.identity)
        seconds = {**record.seconds, "stages": stages, "build": round(sum(stages.values()), 1)}
        total = round(time.perf_counter() - submitted, 1)  # from submission: waiting for a free machine counts
        spent = sum(stages.values()) + seconds["evaluate"] + seconds["timing"] + seconds["memory"]
        seconds["overhead"] = max(0.0, round(total - spent, 1))
        return record.model_copy(update={"seconds": seconds, "seconds_total": total})


def _needed(node: StageNode) -> list[StageNode]:
    """`node` and every node it starts from or reads, each once."""
    found: dict[str, StageNode] = {}
    pending = [node]
    while pending:
        current = pending.pop()
        if current.identity not in found:
            found[current.identity] = current
            pending += [n for n in (current.source, *current.reads.values()) if n is not None]
    return list(found.values())
