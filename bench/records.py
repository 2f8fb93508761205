"""Benchmark records: what each one holds, the machine/version stamp, and the results file.

A run directory holds ``results.json``: a JSON list of records, extended (not overwritten) by
every ``fastvid bench`` run into that directory, so several runs (batch 1 and 16, train, loader)
collect in one place for ``fastvid report``. Record kinds:

* ``inference``: one per (backend, batch, precision): ``video_per_s``, ``latency_ms``
  ``{p50, p90, p99, mean}``, ``peak_mem_mb`` + ``peak_mem_method``, ``ratio_to_eager`` (to eager
  fp32 at the same batch in the same run), ``status`` ``ok`` | ``skipped`` | ``failed`` with
  ``reason``.
* ``train``: ``videos_per_s``, ``step_ms`` ``{p50, mean}``, ``precision``, ``channels_last``,
  ``data_wait_share`` (None on synthetic tensors), ``ratio_to_fp32``.
* ``loader``: written by :func:`bench.loader.bench_loaders`: one per (``backend``, ``threads``)
  with ``videos_per_s``, ``frames_per_s``, ``ratio_to_torch`` (same threads), ``scaling`` (x the
  backend's 1-thread figure), ``startup_s``, ``cpu_ms_per_video``, ``loadavg_before``/``after``,
  ``workers``; optionally ``stage_ms`` (+ ``python_ms``, ``stage_method``) and
  ``data_wait_share`` of a short training run; stamped here with device/versions/date when
  missing.

Every record carries ``device`` (name), ``device_type``, ``versions`` and ``date``.
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

__all__ = ["RESULTS_FILE", "device_name", "versions", "now", "stamp", "percentiles",
           "append_records", "read_records"]

RESULTS_FILE = "results.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "CPU"


def device_name(device: torch.device | str) -> str:
    """``NVIDIA H100 80GB HBM3`` or ``AMD EPYC (2 cores)``."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{_cpu_model()} ({cores} cores)"


def versions() -> dict[str, Optional[str]]:
    """torch, onnxruntime, tensorrt, ... versions (from package metadata, no heavy imports)."""
    from engines import backend_versions

    out = backend_versions()
    out["cuda"] = torch.version.cuda
    from importlib import metadata

    out["dali"] = None
    for dist in ("nvidia-dali-cuda130", "nvidia-dali-cuda120"):
        try:
            out["dali"] = metadata.version(dist)
            break
        except metadata.PackageNotFoundError:
            continue
    return out


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def stamp(record: dict[str, Any], device: torch.device | str) -> dict[str, Any]:
    """Add ``device``, ``device_type``, ``versions`` and ``date`` where the record lacks them."""
    device = torch.device(device)
    record.setdefault("device", device_name(device))
    record.setdefault("device_type", device.type)
    record.setdefault("versions", versions())
    record.setdefault("date", now())
    return record


def percentiles(samples_ms: Sequence[float], qs: Iterable[int] = (50, 90, 99)) -> dict[str, float]:
    """``{"p50": ..., "p90": ..., "p99": ..., "mean": ...}`` with linear interpolation."""
    import numpy as np

    arr = np.asarray(samples_ms, dtype=np.float64)
    out = {f"p{q}": round(float(np.percentile(arr, q)), 4) for q in qs}
    out["mean"] = round(float(arr.mean()), 4)
    return out


def read_records(directory: str | Path) -> list[dict[str, Any]]:
    """The records in ``directory/results.json`` (or a path to the file itself); [] when absent."""
    path = Path(directory)
    if path.is_dir():
        path = path / RESULTS_FILE
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        from fastvid.errors import FastvidError

        raise FastvidError(f"{path}: invalid JSON at line {exc.lineno}: {exc.msg}") from None
    if isinstance(data, dict):  # a single record written by hand
        data = [data]
    if not isinstance(data, list):
        from fastvid.errors import FastvidError

        raise FastvidError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    return [r for r in data if isinstance(r, dict)]


def append_records(directory: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Extend ``directory/results.json`` with ``records`` (atomic rewrite); returns the file."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / RESULTS_FILE
    merged = read_records(path) + list(records)
    fd, tmp = tempfile.mkstemp(prefix=".results.", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as fh:
        json.dump(merged, fh, indent=1, default=str)
    os.replace(tmp, path)
    return path
