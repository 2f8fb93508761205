"""The measuring steps of ``scripts/gpu_check.sh``; every record is appended the moment it exists.

::

    python -m bench.gpu_check train  MODEL OUT_DIR [--preset full|quick|smoke] [--deadline T]
    python -m bench.gpu_check infer  MODEL OUT_DIR [...]
    python -m bench.gpu_check loader OUT_DIR [...]          # torch, DALI (GPU, CPU) at steady state
    python -m bench.gpu_check plan   [--preset P] [--cache cold|warm]   # the schedule, run nothing
    python -m bench.gpu_check slots  [--preset P]           # the script's slots (bash)
    python -m bench.gpu_check keep   SRC_DIR [--repo DIR]   # file a GPU run under reports/gpu/

``train`` and ``infer`` measure TRN-BNInception or TPN-SlowOnly-R50 with random weights (timings
only). Each record goes to ``OUT_DIR/results.json`` as soon as it is measured, so a step stopped
by the script's time cap keeps everything it measured.

Time: with ``--deadline`` (an absolute ``time.time()``, from the script) or ``--budget-s``, a
variant starts only when its expected duration ends before the deadline: its own cold costs
(cuDNN autotuning of a dtype/layout this process has not run, an Inductor compile not in the
cache, a capture, an engine or pipeline build) + its steady-state work, from the priors in
``bench/gpu_priors.yaml`` (:mod:`bench.gpu_plan`), stretched when the variants already measured
took longer than expected. The others are recorded as ``status: skipped, reason: time budget``.
SIGTERM (the script's ``timeout``) stops the variant in flight, which is recorded as ``status:
stopped``, and the variants not started as skipped: every planned variant ends up in
results.json. Variants, their priority order and the slots are plain data (:data:`PRESETS`):
adding one is one line; ``plan`` prints what a cold H100/H200 would run.

It runs where torch, PyYAML and tqdm are installed (a lent GPU machine may lack click and
matplotlib; fastvid's config and training modules need the other two), hence
argparse rather than the package's click CLI.
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

from bench.gpu_plan import (CostModel, Estimate, PlannedItem, PlannedSlot, Priors, Schedule, compiled_keys,
                            format_schedule, remember_compiled)
from bench.records import append_records, new_run_id, read_records, stamp
from bench.runner import GRAPH_SUFFIX, BenchSettings, InferenceBenchmarkRunner, Variant, inference_plan, split_backend
from bench.train import bench_training
from fastvid.cpu import available_cores
from fastvid.models import get_model_spec

__all__ = ["check_models", "group_pytest_args", "PRESETS", "TEST_GROUPS", "Preset", "slot_parts", "loader_items", "shell_slots", "TimeBudget", "StepStopped", "run_section",
           "build_schedule",
           "run_loaders", "keep_results", "main"]

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[1]
V = TypeVar("V")

def check_models(priors: Optional[Priors] = None) -> dict[str, tuple[dict[str, Any], int]]:
    """``{name: (create_model kwargs, training batch on a GPU)}``: every registered model
    (:func:`fastvid.models.model_specs`) that ``bench/gpu_priors.yaml`` has training and
    inference priors for, with the classes and batch of its reference run (TRN: Jester's 27,
    batch 24; TPN: Kinetics-400, batch 8). Layout, normalisation and frames come from the spec."""
    from fastvid.models import model_specs

    priors = priors or Priors.load()
    out: dict[str, tuple[dict[str, Any], int]] = {}
    for spec in model_specs():
        if spec.name in (priors.data.get("train") or {}) and spec.name in (priors.data.get("infer") or {}):
            train = ("train", spec.name)
            out[spec.name] = ({"num_classes": int(priors.get(*train, "num_classes"))},
                              int(priors.get(*train, "batch")))
    return out


TIME_BUDGET = "time budget"

# Test groups, in the order run (each in its slot): name -> (paths, marker expression, extra
# pytest arguments). The capture tests first (the only check that replayed steps equal eager
# ones), then DALI's GPU graph, then the rest; AOTInductor's cold CUDA build last, alone.
# Test files are named, not placed: each is found under tests/ wherever the suite keeps it.
TEST_GROUPS: dict[str, tuple[tuple[str, ...], str, tuple[str, ...]]] = {
    "capture": (("test_step_capture.py", "test_graphed.py"), "gpu", ()),
    "dali_gpu": (("test_dali.py", "test_predict.py"), "gpu and dali", ()),
    "more": (("tests",), "(gpu or trt or dali) and not (gpu and dali)",
             ("test_step_capture.py", "test_graphed.py", "test_engines.py")),
    "aoti": (("test_engines.py",), "gpu or trt", ()),
}


def _test_path(name: str) -> str:
    """``test_x.py`` -> its path under tests/ relative to the repository (``tests`` itself as is)."""
    if "/" in name or name == "tests":
        return name
    found = sorted((REPO / "tests").rglob(name))
    return found[0].relative_to(REPO).as_posix() if found else f"tests/{name}"


def group_pytest_args(group: str) -> list[str]:
    """pytest's arguments for a test group: its paths, ``-m`` marker, ``--ignore``d files."""
    files, marker, ignored = TEST_GROUPS[group]
    return [*map(_test_path, files), "-m", marker, *(f"--ignore={_test_path(f)}" for f in ignored)]


@dataclasses.dataclass(frozen=True)
class Preset:
    """What one preset measures, in priority order, and the slots of the script's schedule."""

    # (name, seconds) in the order run: tests_<group>, dali, train_<model>, infer_<model>,
    # report. A slot ends at the sum of the lengths so far (from the script's start); a step
    # that ends early leaves its time to the next one.
    slots: tuple[tuple[str, int], ...]
    # (precision, channels_last[, mode]), mode in bench.train.TRAIN_MODES (default eager)
    train_variants: tuple[tuple, ...]
    infer_plan: tuple[Variant, ...]  # (backend, precision, batch)
    # (backend, part) in order, part in bench.loader.LOADER_PARTS; "dali" is DALI on the GPU
    # (on a CPU, the smoke test's, its details run on dali-cpu)
    loader_plan: tuple[tuple[str, str], ...]
    frames: int = 8
    size: int = 224
    train_batch: Optional[int] = None  # None: the model's (check_models)
    train_warmup: int = 2
    train_iters: int = 6
    warmup: int = 5
    iters: int = 30
    # Steady state: 40 timed batches, on (40 + 8) x batch clips so that no epoch boundary (the
    # torch workers re-priming) falls among them; 96 clips are written (16 JPEG frames of 176x100
    # px, as on 2026-11-30), the others are hard-linked copies (the same decode work).
    loader_batches: int = 40
    loader_batch: int = 24
    loader_videos: int = (40 + 8) * 24
    loader_unique: int = 96
    loader_prefetch: int = 3  # DALI's prefetch queue depth
    loader_train_steps: int = 20  # the data_wait run: real TRN steps fed by DALI


_TRAIN_FULL = (
    ("bf16", True, "eager"),
    ("bf16", True, "compile+cuda-graphs"),  # the whole compiled step, captured
    ("bf16", True, "cuda-graphs"),
    ("fp32", False, "eager"),  # once: the baseline of ratio_to_fp32
    ("bf16", True, "compile"),
    ("fp16", True, "eager"),
    ("fp16", True, "cuda-graphs"),
    # the other layouts, when time remains
    ("bf16", False, "eager"),
    ("fp32", True, "eager"),
    ("fp16", False, "eager"),
)
def _cuda_engines() -> list[Any]:
    """The engine backends that run on CUDA (``preference`` names it), cheapest build first by
    the priors' ``engine_build_s`` (a backend without a prior last): one long build goes last."""
    from engines.backends import engine_backends

    priors = Priors.load()
    builds: dict[str, float] = {}
    for model in priors.data.get("infer") or {}:
        for name, secs in priors.get("infer", model, "engine_build_s").items():
            builds[name] = max(builds.get(name, 0.0), float(secs))
    return sorted((e for e in engine_backends() if "cuda" in e.preference),
                  key=lambda e: builds.get(e.name, float("inf")))


def _engine_variants(batches: Sequence[int]) -> tuple[Variant, ...]:
    """fp16 engines of every CUDA engine backend at ``batches``, each also replayed from a CUDA
    graph where its runner can be captured."""
    out: list[Variant] = []
    for entry in _cuda_engines():
        for n in batches:
            out += [(entry.name, "fp16", n)] + ([(entry.name + GRAPH_SUFFIX, "fp16", n)] if entry.cuda_graphs else [])
    return tuple(out)


# Batch 1 first (the serving targets): eager fp32 (the baseline of ratio_to_eager, seconds),
# eager fp16, the compiled model replayed from CUDA graphs, eager replayed; then batch 16, then
# the rest; then the engines, the ~2.5 min AOTInductor build last.
_INFER_FULL = (
    ("eager", "fp32", 1), ("eager", "fp16", 1), ("compile+cudagraph", "fp16", 1), ("eager+cudagraph", "fp16", 1),
    ("eager", "fp32", 16), ("eager", "fp16", 16), ("compile+cudagraph", "fp16", 16),
    ("eager+cudagraph", "fp16", 16),
    ("compile", "fp16", 1), ("compile", "fp16", 16),
    ("eager", "fp32", 8), ("eager", "fp16", 8), ("eager+cudagraph", "fp16", 8), ("compile+cudagraph", "fp16", 8),
) + _engine_variants((1, 16))


def _loader_plan(full: bool) -> tuple[tuple[str, str], ...]:
    """Loader rows from the loader registry, in auto's order of preference: the last resort
    (the baseline) and the first choice at steady state, the first choice feeding training
    steps (data_wait) and its stage timings, the others' throughput. ``full``: the data_wait
    run before the others (the figure the check is for) and the baseline's stages too; else
    every throughput first (the smoke test's order)."""
    from fastvid.loaders import loader_backends

    ranked = [b.name for b in loader_backends()]
    best, baseline = ranked[0], ranked[-1]
    others = [(name, "throughput") for name in ranked[1:-1]]
    head = [(baseline, "throughput"), (best, "throughput")]
    if full:
        return tuple(head + [(best, "data_wait")] + others + [(best, "stages"), (baseline, "stages")])
    return tuple(head + others + [(best, "data_wait"), (best, "stages")])


_LOADER_FULL = _loader_plan(full=True)
PRESETS: dict[str, Preset] = {
    # 420 s: one run after DALI's parts arrive (a lease of 15 min: machine start, two part
    # transfers, this, one --quick rerun)
    "full": Preset((("tests_capture", 58), ("dali", 60), ("train_trn_bninception", 118),
                    ("train_tpn_slowonly_r50", 22), ("infer_trn_bninception", 66),
                    ("infer_tpn_slowonly_r50", 58), ("tests_dali_gpu", 30), ("tests_more", 0),
                    ("tests_aoti", 0), ("report", 8)),
                   _TRAIN_FULL, _INFER_FULL, _LOADER_FULL),
    # 253 s cold (about 2.5 min on the same machine again, Inductor's cache warm): the capture
    # tests, TRN training eager vs compiled+captured, TRN batch 1 eager vs compiled+replayed
    "quick": Preset((("tests_capture", 58), ("train_trn_bninception", 120), ("infer_trn_bninception", 67),
                     ("report", 8)),
                    _TRAIN_FULL[:3], _INFER_FULL[:4], (), train_iters=5, iters=20),
    # Tiny inputs: checks the script and the driver end to end on a CPU, measures nothing.
    "smoke": Preset((("tests_capture", 60), ("tests_dali_gpu", 0), ("dali", 90),
                     ("train_trn_bninception", 60), ("train_tpn_slowonly_r50", 50),
                     ("infer_trn_bninception", 60), ("infer_tpn_slowonly_r50", 50),
                     ("tests_more", 0), ("tests_aoti", 0), ("report", 30)),
                    (("fp32", False, "eager"), ("fp32", True, "eager")),
                    (("eager", "fp32", 1), ("eager", "fp32", 2), ("eager+cudagraph", "fp32", 2),
                     # the engine a GPU prefers: skipped on a CPU, with its reason
                     (min(_cuda_engines(), key=lambda e: e.preference["cuda"]).name, "fp16", 2)),
                    _loader_plan(full=False),
                    frames=4, size=64, train_batch=2, train_warmup=1, train_iters=1, warmup=1, iters=2,
                    loader_batches=2, loader_batch=2, loader_videos=(2 + 8) * 2, loader_unique=4,
                    loader_train_steps=2),
}


def slot_parts(slot: str) -> tuple[str, Optional[str]]:
    """``train_trn_bninception`` -> ``("train", "trn_bninception")``, ``tests_capture`` ->
    ``("tests", None)``, ``dali`` -> ``("dali", None)``."""
    for part in ("train", "infer"):
        if slot.startswith(part + "_"):
            return part, slot[len(part) + 1:]
    return ("tests", None) if slot.startswith("tests_") else (slot, None)


def loader_items(preset: Preset, cuda: bool = True) -> list[tuple[str, Optional[int], str]]:
    """The loader rows as bench.loader items ``(backend, threads, part)``: each backend with its
    usual threads and workers (threads None). On a CPU the details (data_wait, stages) of a
    backend that cannot run there run on the next backend in auto's order that can (DALI's GPU
    loader -> DALI on the CPU); its throughput row stays, recorded as skipped with the reason."""
    from fastvid.loaders import loader_backends

    ranked = loader_backends()
    cpu = torch.device("cpu")
    items: list[tuple[str, Optional[int], str]] = []
    for backend, part in preset.loader_plan:
        if not cuda and part != "throughput":
            names = [b.name for b in ranked]
            entry = ranked[names.index(backend)] if backend in names else None
            if entry is not None and entry.unavailable_reason(cpu) is not None:
                backend = next((b.name for b in ranked[names.index(backend) + 1:]
                                if b.unavailable_reason(cpu) is None), backend)
        if (backend, None, part) not in items:
            items.append((backend, None, part))
    return items


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
        # called when a variant starts and when it is done (with its seconds): the cost model
        self.on_start: Optional[Callable[[Any], None]] = None
        self.on_finish: Optional[Callable[[Any, float], None]] = None

    def left_s(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - self.clock()

    def gate(self, variants: Iterable[V], *, expected_s: Callable[[V, Optional[float]], float],
             on_skip: Callable[[V, dict[str, Any]], None],
             kind: Callable[[V], str] = lambda v: "") -> Iterator[V]:
        """Yield the variants that fit; ``on_skip(variant, info)`` for those that do not.

        ``expected_s(variant, last_s)`` gets the last duration of the variant's ``kind`` in this
        call (None before the first; one kind for all when not given) and returns the seconds it expects. Skipping one variant
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
                if self.on_start is not None:
                    self.on_start(variant)
            yield variant
        self.finished()

    def finished(self) -> None:
        """The variant in flight is done: remember how long it took."""
        if self.current is not None:
            took = self.clock() - self.current_started
            self.last_s[self._kind(self.current)] = took
            if self.on_finish is not None:
                self.on_finish(self.current, took)
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


class _Costs:
    """The plan's cost model in a driver process (:mod:`bench.gpu_plan`), with what this process
    paid so far (cuDNN autotuning, compiles, engines) and a slowdown learned from the variants
    measured: a machine slower than the priors makes the later estimates longer, never shorter.
    """

    def __init__(self, budget: TimeBudget, model: Optional[CostModel] = None) -> None:
        self.model = model or CostModel(Priors.load(), warm_compiles=compiled_keys())
        self.slowdown = 1.0
        self._est: dict[Any, Estimate] = {}
        budget.on_start, budget.on_finish = self.started, self.finished

    def expect(self, variant: Any, est: Estimate) -> float:
        self._est[variant] = est
        return est.seconds * self.slowdown

    def started(self, variant: Any) -> None:
        est = self._est.get(variant)
        if est is not None:
            self.model.pay(est)
            remember_compiled(k for k in est.pays if k[0] == "inductor")

    def finished(self, variant: Any, seconds: float) -> None:
        est = self._est.get(variant)
        # Learned from items long enough to say something about the machine (a 2 s capture
        # taking 4 s must not double a 90 s compile's estimate).
        if est is not None and est.seconds >= 10.0:
            self.slowdown = min(2.0, max(1.0, seconds / est.seconds))


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
    keys = ("kind", "model", "backend", "measure", "mode", "precision", "channels_last", "batch", "status",
            "video_per_s", "videos_per_s", "ratio_to_eager", "ratio_to_fp32", "ratio_to_torch",
            "tflops", "pct_of_peak", "reason", "expected_s", "left_s")
    return str({k: rec[k] for k in keys if k in rec})


def _resolve(preset: str | Preset, **overrides: Any) -> Preset:
    base = PRESETS[preset] if isinstance(preset, str) else preset
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


def _measure(sec: _Section, variants: Sequence[V], *, stub: Callable[[V], dict[str, Any]],
             expected_s: Callable[[V, Optional[float]], float],
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
            run(budget.gate(variants, expected_s=expected_s,
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
                device: Optional[str] = None, budget: Optional[TimeBudget] = None,
                run_id: Optional[str] = None, **overrides: Any) -> list[dict[str, Any]]:
    """Measure ``section`` (``train`` or ``infer``) of model ``name``; returns its records.

    Every record is appended to ``out_dir/results.json`` as soon as it is measured, and the
    variants that do not fit before the budget's deadline (none by default) as skipped ones. ``overrides`` replace
    :class:`Preset` fields (``frames``, ``iters``, ``infer_plan``, ...). Raises
    :class:`StepStopped` (after recording the variant in flight and the rest) when the
    budget's signal handler fires. ``run_id`` (default :func:`bench.records.new_run_id`, i.e.
    ``$FASTVID_RUN_ID`` when set) goes into every record: the script's steps share one, so the
    report shows them as one run.
    """
    if name not in check_models():
        raise ValueError(f"unknown model {name!r}; known: {', '.join(check_models())}")
    if section not in ("train", "infer"):
        raise ValueError(f"section must be 'train' or 'infer', got {section!r}")
    cfg = _resolve(preset, **overrides)
    kwargs, gpu_batch = check_models()[name]
    spec = get_model_spec(name)
    if not spec.is_3d:  # a 2D model (TRN's relation head) is built for its number of segments
        kwargs = {**kwargs, "num_segments": cfg.frames}
    mean, std = list(spec.mean), list(spec.std)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sec = _Section(out_dir, budget or TimeBudget(None), dev)
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
                    if dev.type == "cuda" or (v[0] != "fp16" and "cuda-graphs" not in train_mode(v))]

        def train_stub(v: tuple) -> dict[str, Any]:
            return {"kind": "train", "model": name, "precision": v[0], "channels_last": v[1],
                    "mode": train_mode(v), "batch": batch, "input_shape": [batch, *sample], "warmup": cfg.train_warmup,
                    "iters": cfg.train_iters, **extra}

        def train(gated: Iterator[tuple]) -> None:
            bench_training(model(), sample, kwargs["num_classes"], dev, batch=batch, variants=gated,
                           warmup=cfg.train_warmup, iters=cfg.train_iters, model_name=name,
                           extra=extra, on_record=sec.emit)

        # Each variant's own cost: its cold costs (cuDNN autotuning of a new dtype/layout, an
        # Inductor compile, a capture) + its steps, from the priors (bench/gpu_priors.yaml).
        costs = _Costs(sec.budget)

        def train_expected(v: tuple, last: Optional[float]) -> float:
            return costs.expect(v, costs.model.train(name, v, batch=batch, warmup=cfg.train_warmup,
                                                     iters=cfg.train_iters))

        return _measure(sec, variants, stub=train_stub, expected_s=train_expected, run=train)

    plan = list(cfg.infer_plan)
    runner: Optional[InferenceBenchmarkRunner] = None
    costs = _Costs(sec.budget)

    def infer_stub(v: Variant) -> dict[str, Any]:
        backend, precision, batch = v
        runner_name, mode = split_backend(backend)
        return {"kind": "inference", "backend": backend, "precision": precision, "batch": batch,
                "model": name, "input_shape": [batch, *sample], "warmup": cfg.warmup,
                "iters": cfg.iters, "runner": runner_name, "mode": mode, **extra}

    def expected(v: Variant, last: Optional[float]) -> float:
        assert runner is not None  # the gate runs inside infer(), after the runner exists
        # a backend that cannot run here is recorded as skipped with its reason, at once (0 s)
        return costs.expect(v, costs.model.infer(name, v, warmup=cfg.warmup, iters=cfg.iters,
                                                 skip=runner.skip_reason))

    def infer(gated: Iterator[Variant]) -> None:
        nonlocal runner
        runner = InferenceBenchmarkRunner(model().eval().to(dev), sample, dev, model_name=name,
                                          extra=extra, norm=(mean, std),
                                          settings=BenchSettings(warmup=cfg.warmup, iters=cfg.iters))
        runner.run_variants(gated, max_batch=max(b for _, _, b in plan), on_record=sec.emit)

    return _measure(sec, plan, stub=infer_stub, expected_s=expected, run=infer)


#: What each slot runs (docs/gpu-check.md's table, :func:`slot_table`).
SLOT_WHAT = {
    "tests_capture": "`pytest -m gpu` on tests/test_step_capture.py, tests/test_graphed.py: replayed (and compiled + captured) steps equal eager ones",
    "dali": "loader rows at steady state: torch, DALI GPU, the data_wait of 20 TRN steps fed by DALI, DALI CPU, stage timings",
    "train_trn_bninception": "TRN batch 24: bf16 channels-last eager, compile + CUDA graphs, CUDA graphs, fp32, then the rest",
    "train_tpn_slowonly_r50": "TPN-SlowOnly batch 8: the same order",
    "infer_trn_bninception": "TRN batch 1 eager fp32 / fp16, compile + CUDA graphs, eager + CUDA graphs; batch 16; the rest; AOTInductor last",
    "infer_tpn_slowonly_r50": "TPN-SlowOnly: the same order",
    "tests_dali_gpu": "`pytest -m 'gpu and dali'`: DALI's GPU graph (nvJPEG, NVDEC with test media)",
    "tests_more": "the other gpu/trt/dali tests (DALI on the CPU, TensorRT), when time remains",
    "tests_aoti": "tests/test_engines.py: AOTInductor's cold CUDA build, when time remains",
    "report": "report.md + up to 4 PNGs",
}


def slot_table() -> str:
    """The slots of the full and quick presets as a Markdown table (docs/gpu-check.md)."""
    full, quick = dict(PRESETS["full"].slots), dict(PRESETS["quick"].slots)
    rows = ["| slot | what | full (s) | quick (s) |", "|---|---|---|---|"]
    for name, seconds in PRESETS["full"].slots:
        rows.append(f"| {name} | {SLOT_WHAT[name]} | {seconds} | {quick.get(name, '-')} |")
    rows.append(f"| total | | {sum(full.values())} | {sum(quick.values())} |")
    return "\n".join(rows)


def shell_slots(preset: str) -> str:
    """``SLOTS=(name:seconds ...)`` and ``TESTS_<group>=(pytest arguments)`` for the script."""
    import shlex

    lines = ["SLOTS=(" + " ".join(f"{n}:{t}" for n, t in PRESETS[preset].slots) + ")"]
    for group in TEST_GROUPS:
        lines.append(f"TESTS_{group}=(" + " ".join(shlex.quote(a) for a in group_pytest_args(group)) + ")")
    return "\n".join(lines)


def _replicate_train_list(dataset: Any, videos: int) -> int:
    """Grow a frame-folder dataset's train list (a :class:`fastvid.data.lists.DatasetInfo`) to
    ``videos`` clips with hard-linked copies of the written ones (the same JPEG bytes to decode;
    writing them all would take a minute)."""
    lst = dataset.train_list
    lines = [ln.split() for ln in lst.read_text().splitlines() if ln.strip()]
    frames_dir = dataset.data_dir
    out = [" ".join(ln) for ln in lines]
    copy = 0
    while len(out) < videos:
        vid, n, label = lines[copy % len(lines)]
        new = f"{vid}r{copy // len(lines) + 1}"
        (frames_dir / new).mkdir()
        for f in (frames_dir / vid).iterdir():
            try:
                os.link(f, frames_dir / new / f.name)
            except OSError:  # a file system without hard links
                shutil.copyfile(f, frames_dir / new / f.name)
        out.append(f"{new} {n} {label}")
        copy += 1
    lst.write_text("\n".join(out) + "\n")
    return len(out)


def loader_workers(cores: int) -> int:
    """The loader rows' worker processes on a machine of ``cores`` cores (half of them, 1-8):
    what the run uses and what the schedule costs."""
    return max(1, min(8, cores // 2))


def run_loaders(out_dir: str, *, preset: str | Preset = "full", device: Optional[str] = None,
                budget: Optional[TimeBudget] = None, workers: Optional[int] = None,
                run_id: Optional[str] = None, **overrides: Any) -> list[dict[str, Any]]:
    """Loader rows at steady state (DALI on the GPU, torch, DALI on the CPU) on a synthetic set.

    The set (JPEG frame folders, written with PIL into a temporary folder, removed after) is
    TRN's Jester layout; the loaders read it through ``configs/trn_bninception_jester.yaml``.
    Every backend runs with its usual threads: torch with ``workers`` DataLoader workers (half
    the cores, at most 8, as the 2026-11-30 reference), DALI with every core's CPU threads,
    ``workers`` Python source workers and a prefetch queue of ``Preset.loader_prefetch``. Each
    throughput record is written when measured; the data_wait run and the stage timings follow
    as records of their own.
    """
    from bench.loader import LoaderBenchSettings, bench_loaders
    from fastvid.config import load_config
    from fastvid.data.lists import resolve_dataset
    from fastvid.data.synth import synth_dataset
    from fastvid.loaders import loader_backend

    cfg = _resolve(preset, **overrides)
    dev = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    sec = _Section(out_dir, budget or TimeBudget(None), dev)
    n_workers = workers if workers is not None else loader_workers(available_cores())
    train_cfg = load_config(REPO / "configs" / "trn_bninception_jester.yaml",
                            [f"data.image_size={cfg.size}", f"data.scale_size={cfg.size * 8 // 7}",
                             f"train.workers={n_workers}", f"model.num_segments={cfg.frames}"])
    common = {"config": "configs/trn_bninception_jester.yaml", "config_model": train_cfg.model_name,
              "source": "scripts/gpu_check.sh", "batch_size": cfg.loader_batch,
              "run_id": run_id or new_run_id()}
    plan = loader_items(cfg, cuda=dev.type == "cuda")
    costs = _Costs(sec.budget)
    unique = min(cfg.loader_videos, cfg.loader_unique)
    state: dict[str, Any] = {"previous": None}

    def stub(v: tuple) -> dict[str, Any]:
        return {"kind": "loader", "backend": v[0], "threads": v[1], "measure": v[2], **common}

    def on_record(rec: dict[str, Any]) -> None:
        for k, v in common.items():
            rec.setdefault(k, v)
        state["previous"] = (rec["backend"], rec.get("threads"), rec["measure"]) \
            if rec.get("status") == "ok" else None
        sec.emit(stamp(rec, dev))

    def expected(v: tuple, last: Optional[float]) -> float:
        reason = loader_backend(v[0]).unavailable_reason(dev)  # e.g. DALI's GPU loader off CUDA
        return costs.expect(v, costs.model.loader(v, batches=cfg.loader_batches, batch=cfg.loader_batch,
                                                  workers=n_workers, py_workers=n_workers,
                                                  after=state["previous"], skip=reason))

    def measure(gated: Iterator[tuple]) -> None:
        with tempfile.TemporaryDirectory(prefix="fastvid_gpu_check_data.") as tmp:
            # Written before the first row is gated: a stop meanwhile records every row skipped.
            synth_dataset(tmp, kind="frames", classes=4, train=unique, val=4, frames=16,
                          size=(176, 100), seed=0)
            dataset = resolve_dataset(tmp, train_cfg.data)
            _replicate_train_list(dataset, cfg.loader_videos)
            settings = LoaderBenchSettings(
                cfg.loader_batches, cfg.loader_batch, workers=n_workers,
                options={"prefetch": cfg.loader_prefetch}, train_steps=cfg.loader_train_steps,
                amp=dev.type == "cuda")
            bench_loaders(train_cfg, dataset, (), dev, settings, pairs=gated, on_record=on_record)

    return _measure(sec, plan, stub=stub, expected_s=expected, run=measure)


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
    models.add_argument("model", choices=sorted(check_models()))
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
    plan = sub.add_parser("plan", help="print the schedule the check would run on a cold H100/H200")
    plan.add_argument("--preset", choices=sorted(PRESETS), default="full")
    plan.add_argument("--models", type=_csv, default=None, help="default: both")
    plan.add_argument("--only", type=_csv, default=None, help="parts: tests,dali,train,infer (default: all)")
    plan.add_argument("--cache", choices=("cold", "warm"), default="cold",
                      help="Inductor's cache: cold (a fresh machine, default) or warm (a rerun on it)")
    slots = sub.add_parser("slots", help="the preset's slots and test groups, as bash assignments "
                                          "(read by scripts/gpu_check.sh)")
    slots.add_argument("--preset", choices=sorted(PRESETS), default="full")
    slots.add_argument("--table", action="store_true", help="the Markdown table of docs/gpu-check.md instead")
    keep = sub.add_parser("keep", help="file a GPU check's OUT_DIR under reports/gpu/<date>-<device>/")
    keep.add_argument("src")
    keep.add_argument("--repo", default=str(REPO))
    return parser


def build_schedule(preset_name: str, *, priors: Optional[Priors] = None, models: Sequence[str] = (),
                   parts: Sequence[str] = ("tests", "dali", "train", "infer"),
                   warm_cache: bool = False, cpus: int = 16) -> Schedule:
    """Simulate ``scripts/gpu_check.sh --preset`` on a GPU machine with the priors.

    Slots follow each other as in the script (a slot's end is fixed from the script's start;
    a step that ends early leaves its time to the next); inside a slot an item starts only when
    its expected duration ends before the driver's deadline (the slot's end - 3 s), as the
    driver decides at run time.
    """
    preset = PRESETS[preset_name]
    priors = priors or Priors.load()
    models = list(models) or list(check_models(priors))
    cost = CostModel(priors, warm_compiles=warm_cache)
    t = float(priors.get("process", "env_probe_s"))
    slot_end = 0.0
    planned: list[PlannedSlot] = []
    for slot, length in preset.slots:
        slot_end += length
        part, model = slot_parts(slot)
        if (part != "report" and part not in parts) or (model and model not in models):
            continue
        if part == "report":
            s = PlannedSlot(slot, t, slot_end, [])
            d = float(priors.get("process", "report_s"))
            s.items.append(PlannedItem("report.md + plots", t, min(t + d, slot_end),
                                       "run" if t + d <= slot_end else "cut", f"{d:.0f} s"))
            planned.append(s)
            t = s.finish
            continue
        cost.new_process()
        s = PlannedSlot(slot, t, slot_end, [])
        planned.append(s)
        now = t + cost.process_start(pytest=part == "tests")
        deadline = slot_end - 3.0
        if part == "tests":
            group = slot[len("tests_"):]
            est = cost.tests(group)
            files = " ".join(_group_files(group))
            name = f"pytest {files} -m '{TEST_GROUPS[group][1]}'"
            detail = f"{est.seconds:.0f} s after pytest's start-up"
            if slot_end - t < 3:  # the script skips a step with less than 3 s left
                s.items.append(PlannedItem(name, t, t, "skip", f"its slot has ended ({detail})"))
            elif now + est.seconds > slot_end:
                s.items.append(PlannedItem(name, now, slot_end, "cut", f"{detail}: stopped at the "
                                           f"slot's end, the tests run by then are in gpu_tests.log"))
            else:
                s.items.append(PlannedItem(name, now, now + est.seconds, "run", detail))
            t = s.finish
            continue
        if part == "dali":
            videos, unique = preset.loader_videos, min(preset.loader_videos, preset.loader_unique)
            est = cost.loader_setup(videos, unique)
            s.items.append(PlannedItem(f"synthetic set: {videos} clips ({unique} written)", now,
                                       now + est.seconds, "run", est.describe()))
            now += est.seconds
            previous = None
            py_workers = loader_workers(cpus)
            for item in loader_items(preset):
                est = cost.loader(item, batches=preset.loader_batches, batch=preset.loader_batch,
                                  workers=py_workers, py_workers=py_workers, after=previous)
                name = f"{item[0]} {item[2]}"
                now = _place_item(s, name, est, now, deadline, cost)
                previous = item if s.items[-1].status == "run" else None
            t = s.finish
            continue
        kwargs, gpu_batch = check_models()[model]
        if part == "train":
            for v in preset.train_variants:
                est = cost.train(model, v, batch=preset.train_batch or gpu_batch,
                                 warmup=preset.train_warmup, iters=preset.train_iters)
                name = f"{v[0]}{' channels_last' if v[1] else ''} {v[2] if len(v) > 2 else 'eager'}"
                now = _place_item(s, name, est, now, deadline, cost)
        else:
            for v in preset.infer_plan:
                est = cost.infer(model, v, warmup=preset.warmup, iters=preset.iters)
                now = _place_item(s, f"{v[0]} {v[1]} batch {v[2]}", est, now, deadline, cost)
        t = s.finish
    return Schedule(preset_name, float(sum(n for _, n in preset.slots)), planned,
                    "warm" if warm_cache else "cold")


def _group_files(group: str) -> list[str]:
    """The test files a group's pytest arguments select: folders expand to the files (at any
    depth) that carry a gpu/trt/dali mark, minus the ignored ones."""
    paths, _marker, ignored = TEST_GROUPS[group]
    files: list[str] = []
    for p in paths:
        if (REPO / p).is_dir():
            for f in sorted((REPO / p).rglob("test_*.py"), key=lambda f: f.name):
                text = f.read_text()
                if f.name not in ignored and any(f"mark.{m}" in text for m in ("gpu", "trt", "dali")):
                    files.append(f.name)
        else:
            files.append(Path(p).name)
    return files


def _place_item(slot: PlannedSlot, name: str, est: Estimate, now: float, deadline: float,
           cost: CostModel) -> float:
    if est.skip:
        slot.items.append(PlannedItem(name, now, now, "skip", est.skip))
        return now
    if now + est.seconds > deadline:
        slot.items.append(PlannedItem(name, now, now, "skip",
                                      f"time budget: expects {est.seconds:.0f} s, {max(0.0, deadline - now):.0f} s left"))
        return now
    slot.items.append(PlannedItem(name, now, now + est.seconds, "run", est.describe()))
    cost.pay(est)
    return now + est.seconds


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.section == "plan":
        print(format_schedule(build_schedule(args.preset, models=args.models or (),
                                             parts=args.only or ("tests", "dali", "train", "infer"),
                                             warm_cache=args.cache == "warm")))
        return 0
    if args.section == "slots":
        print(slot_table() if args.table else shell_slots(args.preset))
        return 0
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
            loader_plan = None
            if args.loaders:
                loader_plan = tuple(x for x in PRESETS[args.preset].loader_plan if x[0] in args.loaders)
            run_loaders(args.out_dir, workers=args.workers, loader_plan=loader_plan, **common)
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
