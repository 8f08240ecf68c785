"""How a benchmark runs its rows, by the name `--executor` takes (Ray itself is imported only when used)."""

from compress.benchmarking.bench import Benchmark
from compress.benchmarking.ray_executor import RayBenchmark

EXECUTORS: dict[str, type[Benchmark]] = {"local": Benchmark, "ray": RayBenchmark}
