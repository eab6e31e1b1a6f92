"""Benchmarks of the inference paths: end-to-end latency, interleaved, honest about what ran."""
from rtdetr.bench.benchmark import PATHS, BenchmarkReport, check_paths, run_benchmark

__all__ = ["PATHS", "BenchmarkReport", "check_paths", "run_benchmark"]
