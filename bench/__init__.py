"""Benchmarks: inference per engine backend, training throughput, loaders, and their reports.

Results go to ``DIR/results.json`` (a JSON list of records, see :mod:`bench.records`);
``fastvid report DIR`` renders them. ``bench.loader`` (the data-loader benchmark) is imported
lazily by the CLI.
"""
from .records import RESULTS_FILE, append_records, read_records
from .report import render_report
from .runner import INFERENCE_BACKENDS, InferenceBenchmarkRunner
from .train import bench_training

__all__ = ["RESULTS_FILE", "INFERENCE_BACKENDS", "InferenceBenchmarkRunner", "append_records",
           "bench_training", "read_records", "render_report"]
