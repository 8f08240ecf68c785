"""How a benchmark runs its rows, by the name `--executor` takes (Ray itself is imported only when used)."""

from compress.benchmarking.bench import Benchmark
from compress.benchmarking.ray_executor import RayBenchmark
from compress.registry import Registry

EXECUTORS: Registry[type[Benchmark]] = Registry("executor")
EXECUTORS.add("local", Benchmark)
EXECUTORS.add("ray", RayBenchmark)
