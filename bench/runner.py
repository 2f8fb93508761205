"""Inference benchmark: eager, torch.compile, the engine backends and a peer side by side.

Shaped like timm's ``benchmark.py`` runner: warm-up iterations, then timed iterations with the
device synchronised before the clock is read (CUDA events per iteration on GPU, ``perf_counter``
on CPU). One record per (backend, batch, precision); eager fp32 at each batch is always measured
and every record carries its throughput ratio to it. Backends that cannot run here are recorded
as ``skipped`` with the reason, builds that fail as ``failed``.

A backend name is a runner and how its calls reach the GPU (the record's ``runner`` and
``mode``): ``eager``, ``compile`` and the engines launch their kernels on every call (mode
``launch``); ``<runner>+cudagraph`` replays one CUDA graph per call (``compile+cudagraph``:
torch.compile's ``mode="reduce-overhead"``, mode ``reduce-overhead``; the others an explicit
capture by :class:`bench.graphed.GraphedRunner`, mode ``cudagraph``). fp16/bf16 eager and
compile runs take the faster memory format of a short eager trial (channels-last weights and
input, or not: channels_last_3d made TPN-SlowOnly fp16 slower at batch 8 on an H200); the
input is cast and laid out before timing, and every record says so (``channels_last``,
``input_dtype``, ``input_memory_format``, ``input_prepared``). Records of runs that finished
also carry the FLOP figures of :mod:`bench.flops` (achieved TFLOP/s, % of the dense peak).

``mmaction2`` times the peer implementation of the model (:mod:`bench.peers`: mmaction2's own
TPN recognizer, eager fp32, fastvid's weights) in the same run; it is measured right after the
eager baselines, and every record of that batch gets ``ratio_to_peer``. Engine records say the
precision the runtime actually computes in (``precision_used``; OpenVINO reports it).
"""
from __future__ import annotations

import copy
import gc
import logging
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

import torch
import torch.nn as nn

from fastvid.errors import BackendUnavailable
from fastvid.models import input_layout, memory_format, to_channels_last
from fastvid.cpu import compile_unsupported
from fastvid.precision import DTYPES, precision_unusable

from .flops import annotate_record
from .graphed import GraphedRunner, cuda_graph_unsupported
from .memory import PeakMemory
from .peers import PEER_BACKEND, build_peer, peer_unavailable
from .records import CV_MAX, load_average, percentiles, stability, stamp

__all__ = ["InferenceBenchmarkRunner", "BenchSettings", "INFERENCE_BACKENDS", "inference_backends", "inference_plan",
           "time_callable", "shares_engines", "split_backend", "GRAPH_SUFFIX"]

log = logging.getLogger(__name__)

GRAPH_SUFFIX = "+cudagraph"


def inference_backends() -> tuple[str, ...]:
    """What ``fastvid bench --backends`` takes: eager and torch.compile, each also replayed from
    CUDA graphs, the peer (``mmaction2``, :mod:`bench.peers`), and every engine backend,
    followed by ``<name>+cudagraph`` for those whose runner can be captured
    (``EngineBackendEntry.cuda_graphs``)."""
    from engines.backends import engine_backends

    names = ["eager", "eager" + GRAPH_SUFFIX, "compile", "compile" + GRAPH_SUFFIX, PEER_BACKEND]
    for entry in engine_backends():
        names += [entry.name] + ([entry.name + GRAPH_SUFFIX] if entry.cuda_graphs else [])
    return tuple(names)


INFERENCE_BACKENDS = inference_backends()


def split_backend(backend: str) -> tuple[str, str]:
    """``(runner, mode)`` of a backend name: ``aoti+cudagraph`` -> ``("aoti", "cudagraph")``,
    ``compile+cudagraph`` -> ``("compile", "reduce-overhead")``, ``eager`` -> ``("eager", "launch")``."""
    if backend.endswith(GRAPH_SUFFIX):
        runner = backend[: -len(GRAPH_SUFFIX)]
        return runner, "reduce-overhead" if runner == "compile" else "cudagraph"
    return backend, "launch"


def shares_engines(backend: str) -> bool:
    """True when one engine per precision serves every batch of a run (AOTInductor and ONNX
    Runtime kernels do not depend on an optimisation batch; eager and compile build none);
    False for backends tuned for their opt batch (TensorRT), which get one engine per batch."""
    from engines.backends import engine_backend, engine_names

    backend = split_backend(backend)[0]  # aoti+cudagraph replays the aoti engine
    return backend not in engine_names() or not engine_backend(backend).tuned_per_batch


Runner = Callable[[torch.Tensor], Any]
Variant = tuple[str, str, int]  # (backend, precision, batch)
RecordCallback = Callable[[dict[str, Any]], None]


def inference_plan(backends: Sequence[str], batches: Sequence[int],
                   precisions: Sequence[str] = ("fp32",)) -> list[Variant]:
    """(backend, precision, batch) in the order measured: eager fp32 at every batch first (the
    baseline of ``ratio_to_eager``), then the peer (mmaction2) when asked for (the baseline of
    ``ratio_to_peer``), then backend by backend in the given order, each backend's batches
    together (a shared engine is built once, at its first batch)."""
    plan: list[Variant] = [("eager", "fp32", b) for b in batches]
    if PEER_BACKEND in backends:
        plan += [(PEER_BACKEND, "fp32", b) for b in batches]
    for backend in backends:
        if backend == PEER_BACKEND:
            continue
        for precision in precisions:
            plan += [(backend, precision, b) for b in batches if (backend, precision) != ("eager", "fp32")]
    return plan


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_callable(fn: Runner, x: torch.Tensor, device: torch.device, warmup: int,
                  iters: int) -> tuple[list[float], float]:
    """Per-iteration latencies (ms) and total wall time (s) of ``iters`` calls after ``warmup``."""
    for _ in range(warmup):
        fn(x)
    _sync(device)
    if device.type == "cuda":
        starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
        stream = torch.cuda.current_stream(device)  # not the current device's: device may be cuda:1
        t0 = time.perf_counter()
        for start, end in zip(starts, ends):
            start.record(stream)
            fn(x)
            end.record(stream)
        torch.cuda.synchronize(device)
        total = time.perf_counter() - t0
        return [s.elapsed_time(e) for s, e in zip(starts, ends)], total
    lat = []
    t0 = time.perf_counter()
    for _ in range(iters):
        t = time.perf_counter()
        fn(x)
        lat.append((time.perf_counter() - t) * 1e3)
    return lat, time.perf_counter() - t0


@dataclass(frozen=True)
class BenchSettings:
    """How an :class:`InferenceBenchmarkRunner` times each variant.

    Attributes:
        warmup: untimed iterations per (backend, batch, precision) (also triggers compilation).
        iters: timed iterations.
        channels_last: memory format of eager and compile runs: None (default) picks the faster
            of channels-first and channels-last by a short eager trial for fp16/bf16 and keeps
            fp32 channels-first (the baseline as users run it); True/False force it.
        graph_warmup: calls before a CUDA graph is captured (``+cudagraph`` backends).
        cudnn_benchmark: on CUDA, let cuDNN time its algorithms for each new shape (as
            ``fastvid train`` does); a process-wide setting, recorded in every record.
    """

    warmup: int = 5
    iters: int = 20
    channels_last: Optional[bool] = None
    graph_warmup: int = 3
    cudnn_benchmark: bool = True


class InferenceBenchmarkRunner:
    """Benchmark one model's inference across backends, batch sizes and precisions.

    Args:
        model: eval-mode model (random or trained weights) on ``device``.
        sample_shape: one sample in the batch contract, e.g. ``(8, 3, 224, 224)``.
        device: where to run.
        model_name: registry name written into the records.
        engines: prebuilt engine artifacts by backend (``--engine``); backends without one are
            built on the fly into a temporary folder for the requested batch and precision.
        extra: keys copied into every record (config path, weights, ...).
        norm: the input's ``(mean, std)``, used for the engines' validation batch.
        settings: warm-up, iterations, memory format, CUDA graph warm-up, cuDNN autotuning.
    """

    def __init__(self, model: nn.Module, sample_shape: Sequence[int], device: torch.device | str, *,
                 model_name: str = "", engines: Optional[dict[str, list[Path]]] = None,
                 extra: Optional[dict[str, Any]] = None,
                 norm: Optional[tuple[Sequence[float], Sequence[float]]] = None,
                 settings: BenchSettings = BenchSettings()) -> None:
        self.model = model.eval()
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.device = torch.device(device)
        self.model_name = model_name
        self.warmup = max(0, settings.warmup)
        self.iters = max(1, settings.iters)
        self.engines = {k: [Path(p) for p in v] for k, v in (engines or {}).items()}
        self.extra = dict(extra or {})
        self.mean, self.std = norm if norm is not None else (None, None)
        self.channels_last = settings.channels_last
        self.graph_warmup = max(1, settings.graph_warmup)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        self._tmp: Optional[Path] = None
        self._typed: dict[tuple[str, bool], nn.Module] = {}
        self._max_batch = 1
        self._built: dict[tuple[str, str], tuple[Path, dict[str, Any]]] = {}
        self._loaded: dict[tuple[tuple[str, str], bool], Any] = {}
        self._formats: dict[tuple[str, int], tuple[bool, Optional[dict[str, Any]]]] = {}
        self._peer_runner: Optional[tuple[Runner, dict[str, Any]]] = None

    # ----------------------------------------------------------------- building the callables
    def _typed_model(self, precision: str, channels_last: bool) -> nn.Module:
        """The model in ``precision`` and memory format (a copy unless fp32 channels-first)."""
        if precision == "fp32" and not channels_last:
            return self.model
        key = (precision, channels_last)
        if key not in self._typed:  # one copy per (dtype, format) for the whole run
            model = copy.deepcopy(self.model).to(DTYPES[precision])
            self._typed[key] = to_channels_last(model) if channels_last else model
        return self._typed[key]

    def _eager(self, precision: str, channels_last: bool = False) -> Runner:
        model = self._typed_model(precision, channels_last)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model(x)

        return run

    def _compiled(self, precision: str, channels_last: bool = False, reduce_overhead: bool = False) -> Runner:
        # A fresh start per variant: every variant recompiles anyway (new dtype, layout or batch
        # with dynamic=False), and the recompile limit must not turn a later one into eager.
        torch.compiler.reset()
        model = self._typed_model(precision, channels_last)
        compiled = torch.compile(model, dynamic=False, mode="reduce-overhead" if reduce_overhead else None)

        def run(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                if reduce_overhead:  # each call is a new request; its output lives until the next
                    torch.compiler.cudagraph_mark_step_begin()
                return compiled(x)

        return run

    def _engine(self, backend: str, precision: str, batch: int,
                cuda_graph: bool = False) -> tuple[Runner, dict[str, Any]]:
        import engines

        for path in self.engines.get(backend, []):
            _, meta = engines.read_meta(path)
            lo, hi = meta["batch_range"]
            if meta["precision"] == precision and lo <= batch <= hi:
                eng = engines.load(path, self.device, cuda_graph=cuda_graph)
                return eng, {"engine": str(path), "engine_source": "prebuilt"}
        shared = shares_engines(backend)
        key = self._engine_key(backend, precision, batch)
        if key in self._built:
            path, info = self._built[key]
            if (key, cuda_graph) not in self._loaded:
                self._loaded[(key, cuda_graph)] = engines.load(path, self.device, cuda_graph=cuda_graph)
            return self._loaded[(key, cuda_graph)], dict(info, engine_reused=True)
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="fastvid-bench-"))
        max_batch = max(self._max_batch, batch) if shared else batch
        log.info("building a %s %s engine for batch 1-%d (export, compile, validate; minutes on a CPU)",
                 backend, precision, max_batch)
        example = torch.zeros((batch,) + self.sample_shape, device=self.device)
        t0 = time.perf_counter()
        path = engines.build_engine(self.model, example, backend, precision, batch=batch, max_batch=max_batch,
                                    out_path=self._tmp / f"{backend}_{precision}_b{batch}-{max_batch}",
                                    meta={"model_name": self.model_name, "mean": self.mean, "std": self.std})
        build_s = time.perf_counter() - t0
        eng = engines.load(path, self.device, cuda_graph=cuda_graph)
        info = {"engine_source": "built for this run", "build_s": round(build_s, 2),
                "engine_batch_range": [1, max_batch], "validation": eng.meta.get("validation")}
        self._built[key] = (path, info)
        self._loaded[(key, cuda_graph)] = eng
        return eng, info

    def _peer(self) -> tuple[Runner, dict[str, Any]]:
        """The peer implementation (mmaction2) of this model, built once per run."""
        if self._peer_runner is None:
            example = self._input(1, "fp32")
            self._peer_runner = build_peer(self.model_name, self.model, self.device, example)
        return self._peer_runner

    def skip_reason(self, backend: str, precision: str) -> Optional[str]:
        """Why (backend, precision) cannot run here (package, device, precision), or None."""
        import engines

        reason = precision_unusable(precision, self.device)
        if reason:
            return reason
        known = inference_backends()
        if backend not in known:
            return f"unknown backend {backend!r}; known: {', '.join(known)}"
        if backend == PEER_BACKEND:
            return peer_unavailable(self.model_name, precision)
        backend, mode = split_backend(backend)
        if mode != "launch":
            reason = cuda_graph_unsupported(self.device)
            if reason:
                return reason
        if backend in ("eager",):
            return None
        if backend == "compile":
            # Inductor's JIT: Triton on CUDA (not AOTInductor's C++ compiler and CUDA headers)
            return compile_unsupported(self.device)
        status = engines.available_backends(self.device)
        if status[backend]:
            return status[backend]
        try:
            engines.check_supported(backend, precision, self.device)
        except BackendUnavailable as exc:
            return str(exc)
        return None

    # ----------------------------------------------------------------- measuring
    def _input_format(self) -> torch.memory_format:
        return memory_format(self.model)

    def _input(self, batch: int, precision: str, channels_last: bool = False) -> torch.Tensor:
        from engines import validation_batch
        from fastvid.training import to_input_format

        layout = input_layout(self.model)
        x = validation_batch((batch,) + self.sample_shape, self.mean, self.std, layout=layout, seed=1)
        x = x.to(device=self.device, dtype=DTYPES[precision])
        return to_input_format(x, self._input_format()) if channels_last else x

    def memory_format(self, precision: str, batch: int) -> tuple[bool, Optional[dict[str, Any]]]:
        """``(channels_last, trial)`` of eager and compile runs at (precision, batch).

        With ``channels_last=None``, fp16/bf16 take the faster format of a short eager trial
        (cached per precision and batch; ``trial`` holds both p50s), fp32 stays channels-first.
        """
        if self.channels_last is not None:
            return self.channels_last, None
        if precision == "fp32":
            return False, None
        key = (precision, batch)
        if key not in self._formats:
            iters = max(3, min(self.iters, 10))
            p50 = {}
            for cl in (False, True):
                lat, _ = time_callable(self._eager(precision, cl), self._input(batch, precision, cl),
                                       self.device, warmup=2, iters=iters)
                p50[cl] = percentiles(lat)["p50"]
            self._formats[key] = (p50[True] < p50[False], {
                "contiguous_p50_ms": p50[False], "channels_last_p50_ms": p50[True],
                "method": f"eager p50 of {iters} calls after 2 warm-up calls, each format"})
        return self._formats[key]

    def _input_fields(self, x: torch.Tensor, channels_last: bool, mode: str) -> dict[str, Any]:
        # A 2D model's (N, T, C, H, W) input stays contiguous: frames fold into the batch inside
        # forward, where the channels-last weights pick the NHWC kernels (to_input_format).
        fmt = ("channels_last_3d" if channels_last and memory_format(self.model) is torch.channels_last_3d
               else "contiguous")
        prepared = "cast and laid out before timing (not timed)"
        if mode != "launch":
            prepared += "; each call copies it into the CUDA graph's static input buffer (timed)"
        return {"channels_last": channels_last, "input_dtype": str(x.dtype).replace("torch.", ""),
                "input_memory_format": fmt, "input_prepared": prepared}

    @staticmethod
    def _engine_key(backend: str, precision: str, batch: int) -> tuple[str, str]:
        return split_backend(backend)[0], precision if shares_engines(backend) else f"{precision}/b{batch}"

    def reuses_engine(self, backend: str, precision: str, batch: int) -> bool:
        """True when (backend, precision, batch) would run an engine this run already built."""
        return self._engine_key(backend, precision, batch) in self._built

    def _base(self, backend: str, precision: str, batch: int) -> dict[str, Any]:
        runner, mode = split_backend(backend)
        rec: dict[str, Any] = {"kind": "inference", "backend": backend, "precision": precision,
                               "batch": batch, "model": self.model_name,
                               "input_shape": [batch, *self.sample_shape],
                               "warmup": self.warmup, "iters": self.iters, "runner": runner, "mode": mode}
        if self.device.type == "cuda":
            rec["cudnn_benchmark"] = torch.backends.cudnn.benchmark
        rec.update(self.extra)
        return stamp(rec, self.device)

    def bench_one(self, backend: str, precision: str, batch: int) -> dict[str, Any]:
        """One record; never raises for a backend that is missing or fails to build."""
        rec = self._base(backend, precision, batch)
        reason = self.skip_reason(backend, precision)
        if reason:
            rec.update(status="skipped", reason=reason)
            log.info("%s %s batch %d: skipped (%s)", backend, precision, batch, reason)
            return rec
        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
        log.info("%s %s batch %d: measuring (%d warm-up + %d timed iterations)", backend, precision,
                 batch, self.warmup, self.iters)
        try:
            extra: dict[str, Any] = {}
            t0 = time.perf_counter()
            runner, mode = split_backend(backend)
            channels_last = False
            if runner == PEER_BACKEND:
                fn, info = self._peer()
                extra.update(info)
            elif runner in ("eager", "compile"):
                channels_last, trial = self.memory_format(precision, batch)
                if trial:
                    extra["memory_format_trial"] = trial
                fn = (self._eager(precision, channels_last) if runner == "eager"
                      else self._compiled(precision, channels_last, reduce_overhead=mode == "reduce-overhead"))
            else:
                fn, info = self._engine(runner, precision, batch, cuda_graph=mode == "cudagraph")
                extra.update(info)
                runtime = getattr(fn, "runtime_info", None) or {}
                if runtime:
                    extra["runtime"] = runtime
                # What the runtime computes in, as it reports it (OpenVINO); else the engine's.
                extra["precision_used"] = runtime.get("inference_precision", precision)
            if mode == "cudagraph":
                fn = GraphedRunner(fn, self.device, warmup=self.graph_warmup)
            x = self._input(batch, precision, channels_last)
            engine_dtype = getattr(fn, "dtype", None)
            if isinstance(engine_dtype, torch.dtype) and engine_dtype != x.dtype:
                # An engine that applies its precision itself (OpenVINO) takes float32 input.
                x = self._input(batch, "fp32", channels_last).to(engine_dtype)
            extra.update(self._input_fields(x, channels_last, mode))
            with PeakMemory(self.device) as mem:
                # The first call compiles (torch.compile), initialises the runtime or captures
                # the CUDA graph; time it apart.
                t1 = time.perf_counter()
                fn(x)
                _sync(self.device)
                first_call_s = time.perf_counter() - t1
                load = load_average()
                lat, total = time_callable(fn, x, self.device, self.warmup, self.iters)
            extra["setup_s"] = round(t1 - t0, 3)
        except Exception as exc:  # a backend failing (compiler error, runtime error) is a result too
            rec.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            log.warning("%s %s batch %d failed: %s", backend, precision, batch, rec["reason"])
            return rec
        rec.update(extra)
        rec.update(status="ok", video_per_s=round(batch * self.iters / total, 3),
                   latency_ms=percentiles(lat), first_call_s=round(first_call_s, 3),
                   timing_method=("CUDA events per iteration, synchronised" if self.device.type == "cuda"
                                  else "time.perf_counter per iteration (CPU, synchronous)"))
        rec.update(stability(lat, load))
        rec.update(mem.result())
        annotate_record(rec, self.model, self.sample_shape, training=False)
        log.info("%s %s batch %d: %.1f video/s, p50 %.2f ms%s", backend, precision, batch,
                 rec["video_per_s"], rec["latency_ms"]["p50"],
                 f" (unstable: {rec['unstable_reason']})" if rec["unstable"] else "")
        return rec

    def _check_baseline(self, baseline: dict[str, Any], group: list[dict[str, Any]]) -> None:
        """Time eager fp32 again after the batch's other measurements: when the machine's load
        changed in between, the ratios compare figures taken under different conditions."""
        others = [r for r in group if r is not baseline and r.get("status") == "ok"]
        if not others or baseline.get("status") != "ok":
            return
        log.info("eager fp32 batch %d: measuring again to check the baseline held", baseline["batch"])
        x = self._input(int(baseline["batch"]), "fp32")
        _, total = time_callable(self._eager("fp32"), x, self.device, min(self.warmup, 2), self.iters)
        after = int(baseline["batch"]) * self.iters / total
        before = baseline["video_per_s"]
        drift = after / before - 1.0
        baseline["video_per_s_after"] = round(after, 3)
        baseline["baseline_drift"] = round(drift, 3)
        unsteady = [r for r in group if r.get("unstable")]
        reason = None
        if abs(drift) > CV_MAX:
            reason = (f"eager fp32 baseline went from {before:.3g} to {after:.3g} video/s while this "
                      f"batch was measured ({100 * drift:+.0f}%)")
        elif baseline.get("unstable"):
            reason = f"the eager fp32 baseline is unstable ({baseline['unstable_reason']})"
        for rec in others:
            why = reason or (f"unstable: {rec['unstable_reason']}" if rec in unsteady else None)
            if why:
                rec["ratio_unstable"] = True
                rec["ratio_unstable_reason"] = why

    def run(self, backends: Sequence[str], batches: Sequence[int], precisions: Sequence[str] = ("fp32",),
            on_record: Optional[RecordCallback] = None,
            check_baseline: Optional[bool] = None) -> list[dict[str, Any]]:
        """Records for every (backend, batch, precision) in :func:`inference_plan` order."""
        return self.run_variants(inference_plan(backends, batches, precisions), max_batch=max(batches),
                                 on_record=on_record, check_baseline=check_baseline)

    def run_variants(self, variants: Iterable[Variant], *, max_batch: Optional[int] = None,
                     on_record: Optional[RecordCallback] = None,
                     check_baseline: Optional[bool] = None) -> list[dict[str, Any]]:
        """One record per (backend, precision, batch), with ``ratio_to_eager`` filled in.

        Args:
            variants: read one at a time, each when the previous one is measured, so a lazy
                iterable can stop handing out variants (a time budget). Eager fp32 at a batch,
                when it comes earlier, is the baseline of that batch's ratios.
            max_batch: the largest batch a shared engine (AOTInductor, ONNX) must accept; by
                default the batch it is first built for.
            on_record: called with each record as soon as it is measured (to keep partial
                results when a time limit cuts the run short). Without it, eager fp32 is timed
                again at the end for every batch and ratios whose baseline moved by more than
                10% are flagged (:meth:`_check_baseline`).
            check_baseline: time the baselines again at the end even with ``on_record`` (the
                records handed over are then updated in place; the caller writes them again).
                Default: only without ``on_record``.
        """
        if check_baseline is None:
            check_baseline = on_record is None
        records: list[dict[str, Any]] = []
        baselines: dict[int, float] = {}
        peers: dict[int, float] = {}

        def set_peer_ratio(rec: dict[str, Any]) -> None:
            peer = peers.get(int(rec["batch"]))
            if rec.get("status") == "ok" and peer:
                rec["ratio_to_peer"] = round(rec["video_per_s"] / peer, 3)
                rec["peer_backend"] = PEER_BACKEND

        self._max_batch = max_batch or 1
        try:
            for backend, precision, batch in variants:
                rec = self.bench_one(backend, precision, batch)
                if backend == "eager" and precision == "fp32":
                    rec["baseline"] = True
                    if rec.get("status") == "ok":
                        baselines.setdefault(batch, rec["video_per_s"])
                if backend == PEER_BACKEND and rec.get("status") == "ok":
                    peers.setdefault(batch, rec["video_per_s"])
                base = baselines.get(batch)
                if rec.get("status") == "ok" and base:
                    rec["ratio_to_eager"] = round(rec["video_per_s"] / base, 3)
                set_peer_ratio(rec)
                records.append(rec)
                if on_record is not None:
                    on_record(rec)
            for rec in records:  # the eager baselines were measured before the peer
                if "ratio_to_peer" not in rec:
                    set_peer_ratio(rec)
            if check_baseline:
                # Records not handed over yet: time each batch's baseline again and flag ratios
                # whose baseline moved (a streamed record is already written; no second pass).
                for batch in dict.fromkeys(int(r["batch"]) for r in records):
                    group = [r for r in records if int(r["batch"]) == batch]
                    baseline = next((r for r in group if r.get("baseline")), None)
                    if baseline is not None:
                        self._check_baseline(baseline, group)
        finally:
            self._built.clear()
            self._loaded.clear()
            self._typed.clear()
            self._peer_runner = None
            if self._tmp is not None:
                shutil.rmtree(self._tmp, ignore_errors=True)
                self._tmp = None
        return records
