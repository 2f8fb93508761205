"""Benchmark records: what each one holds, the machine/version stamp, and the results file.

A run directory holds ``results.json``: a JSON list of records, extended (not overwritten) by
every ``fastvid bench`` run into that directory, so several runs (batch 1 and 16, train, loader)
collect in one place for ``fastvid report``. Record kinds:

* ``inference``: one per (backend, batch, precision): ``video_per_s``, ``latency_ms``
  ``{p50, p90, p99, mean}``, ``peak_mem_mb`` + ``peak_mem_method``, ``ratio_to_eager`` (to eager
  fp32 at the same batch in the same run), ``status`` ``ok`` | ``skipped`` | ``failed`` with
  ``reason``; ``runner`` and ``mode`` (``launch`` | ``cudagraph`` | ``reduce-overhead``, see
  :mod:`bench.runner`), ``channels_last``, ``input_dtype``, ``input_memory_format``,
  ``input_prepared``.
* ``train``: ``videos_per_s``, ``step_ms`` ``{p50, mean}``, ``precision``, ``channels_last``,
  ``data_wait_share`` (None on synthetic tensors), ``ratio_to_fp32``.
* measured ``inference`` and ``train`` records: ``gflop_per_video``, ``flop_basis``, ``tflops``,
  ``peak_tflops``, ``peak_basis``, ``pct_of_peak`` (:mod:`bench.flops`; None off the GPU table).
* ``loader``: written by :func:`bench.loader.bench_loaders`: per (``backend``, ``threads``) a
  ``measure: throughput`` record with ``videos_per_s``, ``frames_per_s``, ``ratio_to_torch`` (same threads), ``scaling`` (x the
  backend's 1-thread figure), ``startup_s``, ``cpu_ms_per_video``, ``loadavg_before``/``after``,
  ``workers``; then, as records of their own, ``measure: data_wait`` (``data_wait_share`` of a
  short training run) and ``measure: stages`` (``stage_ms`` + ``python_ms``, ``stage_method``);
  stamped here with device/versions/date when missing.

Every record carries ``device`` (name), ``device_type``, ``versions``, ``date`` and ``run_id``:
one id per ``fastvid bench`` call (or per ``scripts/gpu_check.sh`` run, through
``FASTVID_RUN_ID``), so that ``fastvid report`` shows the latest run and never mixes runs.
Timed records (inference, train) also carry their dispersion, from :func:`stability`:
``cv`` (standard deviation / mean of the per-iteration times), ``p90_over_p50``, ``load_avg``
(1/5/15-minute load average when timing started), ``cpus``, and ``unstable`` with
``unstable_reason`` when CV > 10% or p90 > 2x p50: such a figure depends on what else the machine
was doing. ``ratio_unstable`` (+ reason) marks a ratio whose baseline moved during the run.
"""
from __future__ import annotations

import datetime
import json
import math
import os
import platform
import secrets
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import torch

from fastvid.cpu import available_cores

__all__ = ["RESULTS_FILE", "CV_MAX", "TAIL_MAX", "RUN_ID_ENV", "device_name", "versions", "now",
           "stamp", "percentiles", "new_run_id", "load_average", "stability", "append_records",
           "read_records", "ResultsWriter"]

RESULTS_FILE = "results.json"
# A timed figure is flagged unstable above these: coefficient of variation of the per-iteration
# times, and p90 / p50. On a quiet machine both stay well below (CV of a few %).
CV_MAX = 0.10
TAIL_MAX = 2.0
RUN_ID_ENV = "FASTVID_RUN_ID"


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
    return f"{_cpu_model()} ({available_cores()} cores)"


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


def new_run_id() -> str:
    """``$FASTVID_RUN_ID`` when set (several calls forming one run), else UTC time + random."""
    env = os.environ.get(RUN_ID_ENV, "").strip()
    if env:
        return env
    stamp_ = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{stamp_}-{secrets.token_hex(2)}"


def load_average() -> Optional[list[float]]:
    """The 1, 5 and 15-minute load averages (None where the OS has none)."""
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def stability(samples_ms: Sequence[float], load_avg: Optional[list[float]] = None) -> dict[str, Any]:
    """Dispersion of per-iteration times and whether the figure is stable enough to quote.

    Returns ``cv``, ``p90_over_p50``, ``load_avg``, ``cpus``, ``unstable`` and
    ``unstable_reason`` (None when stable). ``cv`` is None with fewer than 2 samples.
    """
    import numpy as np

    arr = np.asarray(samples_ms, dtype=np.float64)
    mean = float(arr.mean()) if arr.size else 0.0
    cv = float(arr.std(ddof=1)) / mean if arr.size >= 2 and mean > 0 else None
    p50, p90 = (float(np.percentile(arr, q)) for q in (50, 90)) if arr.size else (0.0, 0.0)
    tail = p90 / p50 if p50 > 0 else None
    reasons = []
    if cv is not None and cv > CV_MAX:
        reasons.append(f"CV {100 * cv:.0f}% > {100 * CV_MAX:.0f}%")
    if tail is not None and tail > TAIL_MAX:
        reasons.append(f"p90 {tail:.1f}x p50 > {TAIL_MAX:g}x")
    load = load_avg if load_avg is not None else load_average()
    cpus = available_cores()
    if reasons and load:
        reasons.append(f"load average {load[0]:g} on {cpus} CPUs")
    return {"cv": None if cv is None or math.isnan(cv) else round(cv, 4),
            "p90_over_p50": None if tail is None else round(tail, 3),
            "load_avg": load, "cpus": cpus, "unstable": bool(reasons),
            "unstable_reason": "; ".join(reasons) or None}


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


def _write_records(directory: Path, records: list[dict[str, Any]]) -> Path:
    """Replace ``directory/results.json`` with ``records`` atomically (temp file + rename): an
    interrupted write leaves results.json as it was, and no stray file."""
    from fastvid.atomic import write_text_atomic

    return write_text_atomic(directory / RESULTS_FILE, json.dumps(records, indent=1, default=str),
                             "benchmark results")


def append_records(directory: str | Path, records: Iterable[dict[str, Any]]) -> Path:
    """Extend ``directory/results.json`` with ``records`` (atomic rewrite); returns the file."""
    directory = Path(directory)
    return _write_records(directory, read_records(directory / RESULTS_FILE) + list(records))


class ResultsWriter:
    """``results.json`` kept current record by record during one ``fastvid bench`` call.

    :meth:`add` writes the file (atomically) with every record of the call so far, so an
    interrupted call keeps what it measured; :meth:`flush` writes it again after records were
    updated in place (e.g. ratios flagged once the baseline was timed again). The records that
    were in the file when the writer was made are kept ahead of the call's.
    """

    def __init__(self, directory: str | Path) -> None:
        self.directory = Path(directory)
        self.path = self.directory / RESULTS_FILE
        self._before = read_records(self.path)
        self.records: list[dict[str, Any]] = []

    def add(self, record: dict[str, Any]) -> None:
        self.records.append(record)
        self.flush()

    def extend(self, records: Iterable[dict[str, Any]]) -> None:
        self.records.extend(r for r in records if not any(r is x for x in self.records))
        self.flush()

    def flush(self) -> None:
        if self.records:
            _write_records(self.directory, self._before + self.records)
