"""The measuring steps of ``scripts/gpu_check.sh``; every record is appended the moment it exists.

::

    python -m bench.gpu_check train  MODEL OUT_DIR [--preset full|quick|smoke] [--deadline T]
    python -m bench.gpu_check infer  MODEL OUT_DIR [...]
    python -m bench.gpu_check loader OUT_DIR [...]          # DALI (GPU, CPU) vs torch loader
    python -m bench.gpu_check keep   SRC_DIR [--repo DIR]   # file a GPU run under reports/gpu/

``train`` and ``infer`` measure TRN-BNInception or TPN-SlowOnly-R50 with random weights (timings
only). Each record goes to ``OUT_DIR/results.json`` as soon as it is measured, so a step stopped
by the script's time cap keeps everything it measured.

Time: with ``--deadline`` (an absolute ``time.time()``, from the script) or ``--budget-s``, a
variant starts only when its expected duration -- the last measured one of its kind in this call,
else :data:`PRIOR_S` -- ends before the deadline; the others are recorded as ``status: skipped,
reason: time budget``. SIGTERM (the script's ``timeout``) stops the variant in flight, which is
recorded as ``status: stopped``, and the variants not started as skipped: every planned variant
ends up in results.json. Variants are plain data (:data:`PRESETS`): adding one is one line.

It runs where torch, PyYAML and tqdm are installed (a lent GPU machine may lack click and
matplotlib; fastvid's config and training modules need the other two), hence
argparse rather than the package's click CLI; ``loader`` also needs PyYAML (the config file).
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence, TypeVar

import torch

from bench.records import append_records, new_run_id, read_records, stamp
from bench.runner import InferenceBenchmarkRunner, Variant, inference_plan, split_backend
from bench.train import bench_training
from fastvid.models import get_model_spec

__all__ = ["MODELS", "PRESETS", "PRIOR_S", "Preset", "TimeBudget", "StepStopped", "run_section",
           "run_loaders", "keep_results", "main"]

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
V = TypeVar("V")

# name: (create_model kwargs, training batch on a GPU); layout, normalisation and frames come
# from the model's spec. The training batches are those of the 2026-11-30 H200 reference run
# (TRN's config batch, 24).
MODELS: dict[str, tuple[dict[str, Any], int]] = {
    "trn_bninception": (dict(num_classes=27, consensus="trn_multiscale"), 24),
    "tpn_slowonly_r50": (dict(num_classes=400), 8),
}

# Seconds a variant of each kind is expected to take before any of its kind was measured in
# this call, from the 2026-11-30 H200 run: a training variant ~16 s (cudnn.benchmark tunes every
# new dtype/layout), AOTInductor's CUDA compile > 110 s, DALI pipelines 11-14 s to start.
# compile / onnx / trt and the CUDA-graph kinds were not timed there: rough guesses, only used
# to decide what to start (an explicit capture adds a few calls to eager; reduce-overhead is an
# Inductor compile; an engine replayed from a graph costs its build unless already built).
PRIOR_S: dict[str, float] = {"train": 15.0, "train-compile": 120.0, "eager": 5.0, "eager+cudagraph": 6.0, "compile": 45.0,
                             "compile+cudagraph": 50.0, "aoti": 150.0, "aoti+cudagraph": 150.0,
                             "onnx": 30.0, "trt": 150.0, "trt+cudagraph": 150.0, "torch": 5.0,
                             "dali": 15.0, "dali-cpu": 15.0}
# A variant that replays an engine this call already built: its load, capture and timing.
REUSED_ENGINE_S = 10.0
TIME_BUDGET = "time budget"


@dataclasses.dataclass(frozen=True)
class Preset:
    """What one preset measures, in the order measured (the first ones are the baselines)."""

    # (precision, channels_last[, mode]); fp32 eager first. mode: bench.train.TRAIN_MODES.
    train_variants: tuple[tuple, ...]
    infer_plan: tuple[Variant, ...]  # (backend, precision, batch); eager fp32 per batch first
    loaders: tuple[str, ...]  # torch first (the baseline of ratio_to_torch)
    frames: int = 8
    size: int = 224
    train_batch: Optional[int] = None  # None: the model's (MODELS)
    train_warmup: int = 2
    train_iters: int = 6
    warmup: int = 5
    iters: int = 30
    loader_videos: int = 96  # synthetic frame folders (16 frames, 176x100 px, as on 2026-11-30)
    loader_batches: int = 10
    loader_batch: int = 24
    # Thread counts swept (bench.loader.thread_counts: "auto" = 1, 2, 4, ... all cores); the
    # largest first, then 1 (the scaling reference), then the rest.
    loader_threads: str = "auto"
    loader_stages: bool = True  # DALI's per-stage breakdown, at all cores
    loader_train_steps: int = 20  # data_wait of real TRN steps fed by DALI on the GPU (CUDA only)


_TRAIN_FULL = (
    ("fp32", False),  # the baseline of ratio_to_fp32
    ("bf16", True),
    # The same dtype and layout again: cuDNN's autotuning is cached, so these cost little.
    ("bf16", True, "cuda-graphs"),
    ("bf16", True, "compile"),
    ("fp16", True, "cuda-graphs"),
    ("fp16", True),
    ("fp32", True),
    ("bf16", False),
    ("fp16", False),
)
# Cheap variants first (the time budget skips what no longer fits, then tries the cheaper ones
# after it): eager, then eager replayed from a CUDA graph (the batch-1 targets), then one
# Inductor compile per (mode, batch), TensorRT (one engine per batch), AOTInductor last.
_INFER_FULL = (
    ("eager", "fp32", 1), ("eager", "fp32", 8), ("eager", "fp32", 16),  # the baselines of ratio_to_eager
    ("eager", "fp16", 1), ("eager", "fp16", 8), ("eager", "fp16", 16),
    ("eager+cudagraph", "fp16", 1), ("eager+cudagraph", "fp16", 8), ("eager+cudagraph", "fp16", 16),
    ("compile+cudagraph", "fp16", 1), ("compile", "fp16", 16), ("compile+cudagraph", "fp16", 8),
    ("compile+cudagraph", "fp16", 16), ("compile", "fp16", 1), ("compile", "fp16", 8),
    ("onnx", "fp16", 1), ("onnx", "fp16", 16),
    ("trt", "fp16", 1), ("trt+cudagraph", "fp16", 1), ("trt", "fp16", 8), ("trt+cudagraph", "fp16", 8),
    ("trt", "fp16", 16), ("trt+cudagraph", "fp16", 16),
    # last: one ~2 min CUDA compile serves every batch, then each batch replays it cheaply
    ("aoti", "fp16", 16), ("aoti+cudagraph", "fp16", 1), ("aoti+cudagraph", "fp16", 8),
    ("aoti+cudagraph", "fp16", 16), ("aoti", "fp16", 1), ("aoti", "fp16", 8),
)
PRESETS: dict[str, Preset] = {
    "full": Preset(_TRAIN_FULL, _INFER_FULL, ("torch", "dali", "dali-cpu")),
    "quick": Preset(_TRAIN_FULL[:3],  # fp32, bf16 channels-last eager and in a CUDA graph
                    (("eager", "fp32", 1), ("eager", "fp32", 16), ("eager", "fp16", 1),
                     ("eager", "fp16", 16), ("eager+cudagraph", "fp16", 1),
                     ("eager+cudagraph", "fp16", 16), ("compile+cudagraph", "fp16", 1),
                     ("compile", "fp16", 16), ("aoti", "fp16", 16)),
                    ("torch", "dali"), train_iters=5, iters=20, loader_videos=48,
                    loader_batches=5, loader_threads="1,all", loader_stages=False,
                    loader_train_steps=10),
    # Tiny inputs: checks the script and the driver end to end on a CPU, measures nothing.
    "smoke": Preset((("fp32", False), ("fp32", True)),
                    (("eager", "fp32", 1), ("eager", "fp32", 2), ("eager+cudagraph", "fp32", 2),
                     ("trt", "fp16", 2)),
                    ("torch", "dali", "dali-cpu"), frames=4, size=64, train_batch=2,
                    train_warmup=1, train_iters=1, warmup=1, iters=2, loader_videos=4,
                    loader_batches=2, loader_batch=2, loader_threads="1,2", loader_train_steps=0),
}


class StepStopped(BaseException):
    """The step's time cap (SIGTERM) arrived while a variant ran.

    A BaseException, so that the benchmarks' ``except Exception`` (a backend failing is a
    result) does not turn it into a ``failed`` record and carry on.
    """


class TimeBudget:
    """Hands out variants while they fit before a deadline; knows the one in flight.

    Also the SIGTERM handler of a step (:meth:`on_signal`): it raises :class:`StepStopped`
    where the variant runs, except while a record is being written or the bookkeeping changes
    (:meth:`hold`), where it waits for the end of that.

    Args:
        deadline: ``time.time()`` by which the step must end; None: no limit.
        clock: for the tests.
    """

    def __init__(self, deadline: Optional[float], clock: Callable[[], float] = time.time) -> None:
        self.deadline = deadline
        self.clock = clock
        self.current: Optional[Any] = None  # the variant in flight
        self.current_started = 0.0
        self.pending: list[Any] = []  # not started yet
        self.last_s: dict[str, float] = {}  # kind -> seconds its last variant took
        self.stop_signal: Optional[int] = None
        self._kind: Callable[[Any], str] = lambda v: ""
        self._hold = 0
        self._deferred = False

    def left_s(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - self.clock()

    def gate(self, variants: Iterable[V], *, kind: Callable[[V], str],
             expected_s: Callable[[V, Optional[float]], float],
             on_skip: Callable[[V, dict[str, Any]], None]) -> Iterator[V]:
        """Yield the variants that fit; ``on_skip(variant, info)`` for those that do not.

        ``expected_s(variant, last_s)`` gets the last duration of the variant's kind in this
        call (None before the first) and returns the seconds it expects. Skipping one variant
        does not stop the rest: a cheaper one later in the list may still fit. The consumer
        calls :meth:`finished` when a variant's record is written (else the next request
        does).
        """
        self.pending = list(variants)
        self._kind = kind
        while self.pending:
            with self.hold():
                self.finished()
                variant = self.pending.pop(0)
                if self.stop_signal is not None:
                    on_skip(variant, {"stopped_by": signal.Signals(self.stop_signal).name})
                    continue
                need = expected_s(variant, self.last_s.get(kind(variant)))
                left = self.left_s()
                if need > left:
                    on_skip(variant, {"expected_s": round(need, 1), "left_s": round(max(left, 0.0), 1)})
                    continue
                self.current, self.current_started = variant, self.clock()
            yield variant
        self.finished()

    def finished(self) -> None:
        """The variant in flight is done: remember how long it took."""
        if self.current is not None:
            self.last_s[self._kind(self.current)] = self.clock() - self.current_started
            self.current = None

    # ----------------------------------------------------------------- SIGTERM
    def on_signal(self, signum: int, frame: Any) -> None:
        """Signal handler: stop the variant in flight (after :meth:`hold`, if one is open)."""
        self.stop_signal = signum
        if self._hold:
            self._deferred = True
        else:
            raise StepStopped(signal.Signals(signum).name)

    @contextlib.contextmanager
    def hold(self) -> Iterator[None]:
        """Defer a signal to the end of this block, so that a record is written whole."""
        self._hold += 1
        try:
            yield
        finally:
            self._hold -= 1
        if not self._hold and self._deferred:
            self._deferred = False
            raise StepStopped(signal.Signals(self.stop_signal or signal.SIGTERM).name)


@dataclasses.dataclass
class _Section:
    """One section's bookkeeping: where records go and how they are logged."""

    out_dir: str
    budget: TimeBudget
    device: torch.device
    records: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    def emit(self, rec: dict[str, Any]) -> None:
        with self.budget.hold():
            append_records(self.out_dir, [rec])
            self.records.append(rec)
            self.budget.finished()  # a measured variant is no longer in flight
            print(_summary(rec), flush=True)

    def skip(self, stub: dict[str, Any], info: dict[str, Any]) -> None:
        self.emit(dict(stamp(stub, self.device), status="skipped", reason=TIME_BUDGET, **info))

    def stopped(self, stub: dict[str, Any]) -> None:
        elapsed = round(self.budget.clock() - self.budget.current_started, 1)
        self.emit(dict(stamp(stub, self.device), status="stopped", elapsed_s=elapsed,
                       reason="time cap: the step's timeout stopped it (SIGTERM)"))


def _summary(rec: dict[str, Any]) -> str:
    keys = ("kind", "model", "backend", "mode", "precision", "channels_last", "batch", "status",
            "video_per_s", "videos_per_s", "ratio_to_eager", "ratio_to_fp32", "ratio_to_torch",
            "tflops", "pct_of_peak", "reason", "expected_s", "left_s")
    return str({k: rec[k] for k in keys if k in rec})


def _resolve(preset: str | Preset, **overrides: Any) -> Preset:
    base = PRESETS[preset] if isinstance(preset, str) else preset
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _measure(sec: _Section, variants: Sequence[V], *, stub: Callable[[V], dict[str, Any]],
             kind: Callable[[V], str], expected_s: Callable[[V, Optional[float]], float],
             run: Callable[[Iterator[V]], Any]) -> list[dict[str, Any]]:
    """``run(gated variants)`` under the budget; every variant ends up recorded.

    When the deadline has passed nothing is built: all are recorded as skipped. A SIGTERM (even
    while ``run`` still builds its model) records the variant in flight as ``stopped`` and the
    rest as skipped, then raises :class:`StepStopped` again.
    """
    budget = sec.budget
    budget.pending = list(variants)  # a stop before the first variant still finds them here
    try:
        if budget.left_s() <= 0:
            with budget.hold():
                while budget.pending:
                    sec.skip(stub(budget.pending.pop(0)), {"left_s": 0.0})
        else:
            run(budget.gate(variants, kind=kind, expected_s=expected_s,
                            on_skip=lambda v, info: sec.skip(stub(v), info)))
    except StepStopped:
        with budget.hold():
            if budget.current is not None:
                sec.stopped(stub(budget.current))
            stopped_by = signal.Signals(budget.stop_signal or signal.SIGTERM).name
            while budget.pending:
                sec.skip(stub(budget.pending.pop(0)), {"stopped_by": stopped_by})
        raise
    return sec.records


def run_section(section: str, name: str, out_dir: str, *, preset: str | Preset = "full",
                device: Optional[str] = None, deadline: Optional[float] = None,
                budget: Optional[TimeBudget] = None, run_id: Optional[str] = None,
                **overrides: Any) -> list[dict[str, Any]]:
    """Measure ``section`` (``train`` or ``infer``) of model ``name``; returns its records.

    Every record is appended to ``out_dir/results.json`` as soon as it is measured, and the
    variants that do not fit before ``deadline`` as skipped ones. ``overrides`` replace
    :class:`Preset` fields (``frames``, ``iters``, ``infer_plan``, ...). Raises
    :class:`StepStopped` (after recording the variant in flight and the rest) when the
    budget's signal handler fires. ``run_id`` (default :func:`bench.records.new_run_id`, i.e.
    ``$FASTVID_RUN_ID`` when set) goes into every record: the script's steps share one, so the
    report shows them as one run.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known: {', '.join(MODELS)}")
    if section not in ("train", "infer"):
        raise ValueError(f"section must be 'train' or 'infer', got {section!r}")
    cfg = _resolve(preset, **overrides)
    kwargs, gpu_batch = MODELS[name]
    spec = get_model_spec(name)
    if not spec.is_3d:  # a 2D model (TRN's relation head) is built for its number of segments
        kwargs = {**kwargs, "num_segments": cfg.frames}
    mean, std = list(spec.mean), list(spec.std)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fastvid train runs
    sec = _Section(out_dir, budget or TimeBudget(deadline), dev)
    sample = spec.input_shape(1, cfg.frames, cfg.size)[1:]
    extra = {"weights": "random (gpu_check): timings only", "source": "scripts/gpu_check.sh",
             "run_id": run_id or new_run_id()}

    def model() -> torch.nn.Module:
        from fastvid.models import create_model

        return create_model(name, **kwargs)

    if section == "train":
        def train_mode(v: tuple) -> str:
            return v[2] if len(v) > 2 else "eager"

        batch = cfg.train_batch or (gpu_batch if dev.type == "cuda" else 2)
        # fp16 training and CUDA graphs need a GPU (resolve_precision / cuda_graphs_unsupported
        # say so): not planned on a CPU.
        variants = [v for v in cfg.train_variants
                    if dev.type == "cuda" or (v[0] != "fp16" and train_mode(v) != "cuda-graphs")]

        def train_stub(v: tuple) -> dict[str, Any]:
            return {"kind": "train", "model": name, "precision": v[0], "channels_last": v[1],
                    "mode": train_mode(v), "batch": batch, "input_shape": [batch, *sample], "warmup": cfg.train_warmup,
                    "iters": cfg.train_iters, **extra}

        def train(gated: Iterator[tuple]) -> None:
            bench_training(model(), sample, kwargs["num_classes"], dev, batch=batch, variants=gated,
                           warmup=cfg.train_warmup, iters=cfg.train_iters, model_name=name,
                           extra=extra, on_record=sec.emit)

        # A compile variant (Inductor, cold cache) costs minutes, the others seconds: two kinds.
        def train_kind(v: tuple) -> str:
            return "train-compile" if train_mode(v) == "compile" else "train"

        return _measure(sec, variants, stub=train_stub, kind=train_kind,
                        expected_s=lambda v, last: PRIOR_S[train_kind(v)] if last is None else last,
                        run=train)

    plan = list(cfg.infer_plan)
    runner: Optional[InferenceBenchmarkRunner] = None
    last_build: dict[str, float] = {}

    def infer_stub(v: Variant) -> dict[str, Any]:
        backend, precision, batch = v
        runner_name, mode = split_backend(backend)
        return {"kind": "inference", "backend": backend, "precision": precision, "batch": batch,
                "model": name, "input_shape": [batch, *sample], "warmup": cfg.warmup,
                "iters": cfg.iters, "runner": runner_name, "mode": mode, **extra}

    def on_record(rec: dict[str, Any]) -> None:
        # A reused engine's record repeats the build_s of its build, which this variant did not pay.
        last_build[rec["backend"]] = 0.0 if rec.get("engine_reused") else float(rec.get("build_s") or 0.0)
        sec.emit(rec)

    def expected(v: Variant, last: Optional[float]) -> float:
        backend, precision, batch = v
        assert runner is not None  # the gate runs inside infer(), after the runner exists
        if runner.skip_reason(backend, precision):
            return 0.0  # recorded as skipped with the real reason, at once
        if runner.reuses_engine(backend, precision, batch):  # aoti+cudagraph after aoti, ...
            return REUSED_ENGINE_S if last is None else max(0.0, last - last_build.get(backend, 0.0))
        if last is None:
            return PRIOR_S.get(backend, 30.0)
        return last

    def infer(gated: Iterator[Variant]) -> None:
        nonlocal runner
        runner = InferenceBenchmarkRunner(model().eval().to(dev), sample, dev, model_name=name,
                                          warmup=cfg.warmup, iters=cfg.iters, extra=extra, mean=mean,
                                          std=std)
        runner.run_variants(gated, max_batch=max(b for _, _, b in plan), on_record=on_record)

    return _measure(sec, plan, stub=infer_stub, kind=lambda v: v[0], expected_s=expected, run=infer)


def run_loaders(out_dir: str, *, preset: str | Preset = "full", device: Optional[str] = None,
                deadline: Optional[float] = None, budget: Optional[TimeBudget] = None,
                workers: Optional[int] = None, run_id: Optional[str] = None,
                **overrides: Any) -> list[dict[str, Any]]:
    """Loader throughput (DALI on the GPU, DALI on the CPU, torch) on a synthetic frame set.

    The set (JPEG frame folders, written with PIL into a temporary folder, removed after) is
    TRN's Jester layout; the loaders read it through ``configs/trn_bninception_jester.yaml``.
    """
    from bench.loader import bench_loaders
    from fastvid.config import load_config
    from fastvid.data.lists import resolve_dataset
    from fastvid.data.synth import synth_dataset

    cfg = _resolve(preset, **overrides)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sec = _Section(out_dir, budget or TimeBudget(deadline), dev)
    n_workers = workers if workers is not None else max(1, min(8, (os.cpu_count() or 2) // 2))
    train_cfg = load_config(REPO / "configs" / "trn_bninception_jester.yaml",
                            [f"data.image_size={cfg.size}", f"data.scale_size={cfg.size * 8 // 7}",
                             f"train.workers={n_workers}", f"model.num_segments={cfg.frames}"])
    common = {"config": "configs/trn_bninception_jester.yaml", "config_model": train_cfg.model_name,
              "source": "scripts/gpu_check.sh", "batch_size": cfg.loader_batch, "workers": n_workers,
              "run_id": run_id or new_run_id()}

    from bench.loader import thread_counts
    from fastvid.loaders import loader_backend

    sweep = thread_counts(cfg.loader_threads)
    order = [max(sweep)] + ([1] if 1 in sweep and max(sweep) != 1 else [])
    order += [t for t in sweep if t not in order]
    # torch first at each thread count: the reference of ratio_to_torch at the same threads.
    plan = [(b, t) for t in order for b in cfg.loaders]

    def stub(v: tuple[str, int]) -> dict[str, Any]:
        return {"kind": "loader", "backend": v[0], "threads": v[1], **common}

    def on_record(rec: dict[str, Any]) -> None:
        for k, v in common.items():
            rec.setdefault(k, v)
        sec.emit(stamp(rec, dev))

    def expected(v: tuple[str, int], last: Optional[float]) -> float:
        if loader_backend(v[0]).unavailable_reason(dev):
            return 0.0  # skipped at once, with the reason (e.g. DALI's GPU loader off CUDA)
        return PRIOR_S.get(v[0], 15.0) if last is None else last

    def measure(gated: Iterator[tuple[str, int]]) -> None:
        with tempfile.TemporaryDirectory(prefix="fastvid_gpu_check_data.") as tmp:
            synth_dataset(tmp, kind="frames", classes=4, train=cfg.loader_videos, val=4, frames=16,
                          size=(176, 100), seed=0)
            bench_loaders(train_cfg, resolve_dataset(tmp, train_cfg.data), cfg.loaders, dev,
                          cfg.loader_batches, cfg.loader_batch, workers=n_workers, threads=sweep,
                          pairs=gated, on_record=on_record, stages=cfg.loader_stages,
                          detail_backends=("dali",) if dev.type == "cuda" else ("dali-cpu",),
                          train_steps=cfg.loader_train_steps if dev.type == "cuda" else 0,
                          amp=dev.type == "cuda")

    return _measure(sec, plan, stub=stub, kind=lambda v: v[0], expected_s=expected, run=measure)


# ------------------------------------------------------------------------- keep
_LINK = re.compile(r"(<!-- newest-gpu-report -->).*?(<!-- /newest-gpu-report -->)", re.S)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def keep_results(src: str | Path, repo: str | Path = REPO) -> Path:
    """Copy a GPU check's files into ``repo/reports/gpu/<date>-<device>/``; link the newest.

    ``src`` is the check's OUT_DIR as it came back (results.json, report.md, logs, PNGs). Date
    and device come from its CUDA records; a folder that exists gets a ``-2``, ``-3`` ...
    suffix. The report is rendered again there (its paths then name the repo's folder) when
    matplotlib imports, and README.md's ``<!-- newest-gpu-report -->`` line is pointed at the
    newest folder under reports/gpu/.
    """
    from fastvid.errors import FastvidError

    src, repo = Path(src), Path(repo)
    found = [src] if (src / "results.json").is_file() else [p.parent for p in src.rglob("results.json")]
    if len(found) == 1:  # the device tool may put the files a folder or two further down
        src = found[0]
    gpu = [r for r in read_records(src) if r.get("device_type") == "cuda"]
    if not gpu:
        raise FastvidError(f"{src}: no CUDA records in results.json: nothing to keep under reports/gpu/")
    date = min(str(r.get("date", "")) for r in gpu)[:10] or "undated"
    device = Counter(str(r.get("device")) for r in gpu).most_common(1)[0][0]
    root = repo / "reports" / "gpu"
    dest = root / f"{date}-{_slug(device)}"
    n = 2
    while dest.exists():
        dest = root / f"{date}-{_slug(device)}-{n}"
        n += 1
    dest.mkdir(parents=True)
    for f in sorted(src.iterdir()):
        if f.is_file() and not f.name.startswith("."):
            shutil.copyfile(f, dest / f.name)  # not copy2: the returned files are read-only
    from bench.report import render_report

    # Relative from the repo root, so that report.md names the repo's folder, not $OUT.
    render_report(Path(os.path.relpath(dest, repo)) if Path.cwd() == repo.resolve() else dest)
    _link_newest(repo)
    return dest


def _link_newest(repo: Path) -> Optional[Path]:
    """Point README.md's newest-gpu-report line at the newest reports/gpu/* folder."""
    folders = []
    for d in (repo / "reports" / "gpu").glob("*/results.json"):
        dates = [str(r.get("date", "")) for r in read_records(d) if r.get("device_type") == "cuda"]
        if dates:
            folders.append((max(dates), d.parent))
    readme = repo / "README.md"
    if not folders or not readme.is_file():
        return None
    newest = max(folders)[1]
    rel = newest.relative_to(repo).as_posix()
    text = readme.read_text()
    if not _LINK.search(text):
        raise ValueError(f"{readme}: no <!-- newest-gpu-report --> ... <!-- /newest-gpu-report --> line")
    device = next((r.get("device") for r in read_records(newest) if r.get("device_type") == "cuda"), "GPU")
    link = f"Newest GPU report: [`{rel}/report.md`]({rel}/report.md) ({device}, {newest.name[:10]})."
    readme.write_text(_LINK.sub(lambda m: m.group(1) + link + m.group(2), text, count=1))
    return newest


# ------------------------------------------------------------------------- command line
def _csv(text: str) -> list[str]:
    return [item.strip() for item in text.split(",") if item.strip()]


def _train_variants(text: str) -> tuple[tuple, ...]:
    """``fp32,bf16:cl,bf16:cl:cuda-graphs`` -> (precision, channels_last, mode) variants."""
    from bench.train import TRAIN_MODES

    out = []
    for item in _csv(text):
        precision, layout, mode = (item.split(":") + ["", ""])[:3]
        if precision not in ("fp32", "fp16", "bf16") or layout not in ("", "cl") or \
                mode not in ("", *TRAIN_MODES):
            raise argparse.ArgumentTypeError(
                f"{item!r}: expected fp32|fp16|bf16, optionally :cl, then optionally "
                f":{'|'.join(TRAIN_MODES)} (e.g. bf16:cl:cuda-graphs, fp32::compile)")
        out.append((precision, layout == "cl", mode or "eager"))
    return tuple(out)


def _parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--preset", choices=sorted(PRESETS), default="full",
                        help="what to measure (default: full; smoke: tiny inputs, for a CPU)")
    common.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    when = common.add_mutually_exclusive_group()
    when.add_argument("--deadline", type=float, default=None,
                      help="time.time() by which to stop starting variants")
    when.add_argument("--budget-s", type=float, default=None, help="seconds from now, instead")
    common.add_argument("--frames", type=int, default=None, help="segments / clip length")
    common.add_argument("--size", type=int, default=None, help="crop size in pixels")
    common.add_argument("--run-id", default=None,
                        help="id stored in every record (default: $FASTVID_RUN_ID, else a new one)")
    models = argparse.ArgumentParser(add_help=False)
    models.add_argument("model", choices=sorted(MODELS))
    models.add_argument("out_dir")
    models.add_argument("--train-variants", type=_train_variants, default=None,
                        help="instead of the preset's, e.g. fp32,bf16:cl,fp16:cl (:cl = channels-last)")
    models.add_argument("--train-batch", type=int, default=None, help="default: the model's on a GPU, 2 on a CPU")
    models.add_argument("--train-warmup", type=int, default=None)
    models.add_argument("--train-iters", type=int, default=None)
    models.add_argument("--warmup", type=int, default=None)
    models.add_argument("--iters", type=int, default=None)
    models.add_argument("--backends", type=_csv, default=None,
                        help="inference backends instead of the preset's plan (with --batches, --precisions)")
    models.add_argument("--batches", type=lambda t: [int(b) for b in _csv(t)], default=None)
    models.add_argument("--precisions", type=_csv, default=None, help="besides the fp32 baseline")

    parser = argparse.ArgumentParser(prog="python -m bench.gpu_check", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="section", required=True)
    sub.add_parser("train", parents=[common, models], help="training throughput variants")
    sub.add_parser("infer", parents=[common, models], help="inference backends")
    loader = sub.add_parser("loader", parents=[common], help="data loaders on a synthetic frame set")
    loader.add_argument("out_dir")
    loader.add_argument("--loaders", type=_csv, default=None, help="default: the preset's")
    loader.add_argument("--workers", type=int, default=None)
    keep = sub.add_parser("keep", help="file a GPU check's OUT_DIR under reports/gpu/<date>-<device>/")
    keep.add_argument("src")
    keep.add_argument("--repo", default=str(REPO))
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    if args.section == "keep":
        from fastvid.errors import FastvidError

        try:
            print(f"kept in {keep_results(args.src, args.repo)}")
        except (FastvidError, ValueError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        return 0
    deadline = args.deadline if args.budget_s is None else time.time() + args.budget_s
    budget = TimeBudget(deadline)
    previous = signal.signal(signal.SIGTERM, budget.on_signal)
    common = dict(preset=args.preset, device=args.device, budget=budget, frames=args.frames,
                  size=args.size, run_id=args.run_id or new_run_id())
    try:
        if args.section == "loader":
            run_loaders(args.out_dir, workers=args.workers,
                        loaders=tuple(args.loaders) if args.loaders else None, **common)
        else:
            plan = None
            if args.backends or args.batches or args.precisions:
                base = PRESETS[args.preset].infer_plan
                plan = tuple(inference_plan(args.backends or list(dict.fromkeys(b for b, _, _ in base)),
                                            args.batches or list(dict.fromkeys(n for _, _, n in base)),
                                            args.precisions or ["fp16"]))
            run_section(args.section, args.model, args.out_dir, train_variants=args.train_variants,
                        train_batch=args.train_batch, train_warmup=args.train_warmup,
                        train_iters=args.train_iters, warmup=args.warmup, iters=args.iters,
                        infer_plan=plan, **common)
    except StepStopped as exc:
        print(f"stopped by {exc} (the step's time cap); what was measured is in results.json",
              file=sys.stderr, flush=True)
        return 124
    finally:
        signal.signal(signal.SIGTERM, previous)
    return 124 if budget.stop_signal is not None else 0


if __name__ == "__main__":
    raise SystemExit(main())
