"""Benchmarks of the inference paths: end-to-end latency, interleaved, honest about what ran.

    from rtdetr.bench import run_benchmark
    report = run_benchmark(detector, paths=["torch", "torch-fused", "onnxruntime"], threads=2)

Files: paths.py (what can be measured and how each path runs), timing.py (how: interleaved,
paused, threads, other load), images.py (the picture), report.py (statistics, table, JSON),
benchmark.py (`run_benchmark`, which puts them together).
"""
from rtdetr.bench.benchmark import check_agreement, run_benchmark
from rtdetr.bench.images import decode_image, describe_image, synthetic_picture
from rtdetr.bench.paths import PATHS, Exports, available_paths, build_predictor, check_paths, missing, model_call
from rtdetr.bench.report import STAGES, Agreement, BenchmarkReport, PathResult, Stats
from rtdetr.bench.timing import PAUSE, OtherLoad, busy_note, interleaved, machine_info, timed, torch_threads

__all__ = ["PATHS", "PAUSE", "STAGES", "Agreement", "BenchmarkReport", "Exports", "OtherLoad", "PathResult", "Stats",
           "available_paths", "build_predictor", "busy_note", "check_agreement", "check_paths", "decode_image",
           "describe_image", "interleaved", "machine_info", "missing", "model_call", "run_benchmark",
           "synthetic_picture", "timed", "torch_threads"]
