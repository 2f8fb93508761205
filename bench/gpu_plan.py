"""The GPU check's plan: what each item costs on a cold H100/H200, and the schedule that follows.

``scripts/gpu_check.sh`` runs its steps in slots (:data:`bench.gpu_check.PRESETS`); inside a slot
the driver starts an item (a test group, a training or inference variant, a loader row) only
when its expected duration ends before the slot's deadline. This module holds that expectation:

* :class:`Priors` -- the numbers, kept as data in ``bench/gpu_priors.yaml``, each with its source
  (the recorded 2026-11-30 H200 run, figures derived from it, or estimates with their reasoning);
* :class:`CostModel` -- an item's expected seconds = its steady-state work from the recorded
  timings + the cold costs *it* pays: the cuDNN autotuning of a (dtype, layout, batch) not yet
  seen in its process, an Inductor compile of a graph not yet in the cache, a CUDA graph capture,
  an engine build, a DALI pipeline build. Nothing is borrowed from "the last one of its kind";
* :func:`bench.gpu_check.build_schedule` -- the whole check simulated with those costs: every item's expected
  start and end, and what would be skipped (``python -m bench.gpu_check plan`` prints it).

The driver uses the same :class:`CostModel` at run time, with what its process really paid so
far and a slowdown learned from the items already measured (never below the priors).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import os
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, Sequence

from fastvid.atomic import WriteError, write_text_atomic

__all__ = ["PRIORS_FILE", "Priors", "Estimate", "CostModel", "PlannedItem", "PlannedSlot", "Schedule",
           "format_schedule", "COMPILED_KEYS_FILE", "LENT_MACHINE_MISSING"]

PRIORS_FILE = Path(__file__).with_name("gpu_priors.yaml")
#: Inductor graphs this check compiled, kept in the Inductor cache folder: a rerun on the same
#: machine expects those compiles warm and the others cold.
COMPILED_KEYS_FILE = "fastvid_gpu_check_compiled.json"
#: Engine runners missing on the lent GPU machines (the device tool's package list): planned as skipped.
LENT_MACHINE_MISSING = {"trt": "torch_tensorrt is not installed on the lent GPU machines"}

Key = tuple


@functools.lru_cache(maxsize=4)
def _read_yaml(path: Path) -> Any:
    import yaml

    with open(path) as f:
        return yaml.safe_load(f)


class Priors:
    """``bench/gpu_priors.yaml``: ``{value, source}`` leaves under sections and models."""

    def __init__(self, data: dict[str, Any]) -> None:
        self.data = data

    @classmethod
    def load(cls, path: str | Path | None = None) -> "Priors":
        """The priors of ``path`` (default: the shipped file, parsed once per process: the
        check's tables, schedule and cost model all read it)."""
        return cls(_read_yaml(Path(path) if path else PRIORS_FILE))

    def _node(self, *keys: str) -> Any:
        node: Any = self.data
        for k in keys:
            try:
                node = node[k]
            except (KeyError, TypeError):
                raise KeyError(f"{PRIORS_FILE.name}: no prior {'.'.join(keys)}") from None
        return node

    def get(self, *keys: str) -> Any:
        node = self._node(*keys)
        return node["value"] if isinstance(node, dict) and "value" in node else node

    def leaves(self) -> Iterable[tuple[str, dict[str, Any]]]:
        """``(dotted.path, {value, source})`` of every prior."""
        def walk(node: Any, path: list[str]) -> Iterable[tuple[str, dict[str, Any]]]:
            if isinstance(node, dict) and "value" in node:
                yield ".".join(path), node
            elif isinstance(node, dict):
                for k, v in node.items():
                    yield from walk(v, path + [str(k)])
        yield from walk(self.data, [])


@dataclasses.dataclass
class Estimate:
    """Expected seconds of one item, itemised; ``pays``: the cold costs it pays (then paid)."""

    seconds: float
    parts: dict[str, float]
    pays: frozenset = frozenset()
    skip: Optional[str] = None  # known not to run here (then 0 s)

    def describe(self) -> str:
        if self.skip:
            return self.skip
        return ", ".join(f"{k} {v:.1f}" for k, v in self.parts.items() if v >= 0.05)


def _interp(table: dict[str, float], precision: str, batch: int) -> float:
    """ms of (precision, batch) from ``{"fp16/1": ms, ...}``: linear in batch between the
    recorded batches (the nearest two; extrapolated beyond), fp32's figures for a precision
    without its own."""
    pts = sorted((int(k.split("/")[1]), v) for k, v in table.items() if k.split("/")[0] == precision)
    if not pts:
        pts = sorted((int(k.split("/")[1]), v) for k, v in table.items() if k.split("/")[0] == "fp32")
    if len(pts) == 1:
        return pts[0][1] * max(1.0, batch / pts[0][0])
    (b0, v0), (b1, v1) = (pts[0], pts[1]) if batch <= pts[1][0] else (pts[-2], pts[-1])
    return max(0.1, v0 + (v1 - v0) * (batch - b0) / (b1 - b0))


class CostModel:
    """Expected seconds of the check's items (see the module doc).

    Args:
        priors: the numbers.
        warm_compiles: Inductor graph keys already in the cache (a rerun on the same machine);
            ``True``: all of them (``plan --cache warm``).
        missing: runner -> why it cannot run here (planned as a 0 s skip).
    """

    def __init__(self, priors: Priors, *, warm_compiles: Iterable[Key] | bool = (),
                 missing: Optional[dict[str, str]] = None) -> None:
        self.p = priors
        self.all_warm = warm_compiles is True
        self.paid: set[Key] = set() if isinstance(warm_compiles, bool) else {tuple(k) for k in warm_compiles}
        self.missing = dict(LENT_MACHINE_MISSING if missing is None else missing)

    # ------------------------------------------------------------------ bookkeeping
    def new_process(self) -> None:
        """cuDNN's autotuning and the typed model copies live in a process; Inductor's cache on disk."""
        self.paid = {k for k in self.paid if k[0] == "inductor"}

    def pay(self, est: Estimate) -> None:
        self.paid |= est.pays

    def _cold(self, key: Key, parts: dict[str, float], label: str, seconds: float,
              pays: set[Key]) -> None:
        if key not in self.paid and key not in pays:
            parts[label] = parts.get(label, 0.0) + seconds
            pays.add(key)

    def _compile(self, key: Key, parts: dict[str, float], section: str, model: str,
                 pays: set[Key]) -> None:
        if self.all_warm or key in self.paid or key in pays:
            parts["Inductor compile (cache warm)"] = float(self.p.get(section, model, "compile_warm_s"))
        else:
            parts["cold: Inductor compile"] = float(self.p.get(section, model, "compile_cold_s"))
        pays.add(key)

    # ------------------------------------------------------------------ items
    def process_start(self, pytest: bool = False) -> float:
        return float(self.p.get("process", "pytest_start_s" if pytest else "python_start_s"))

    def tests(self, group: str) -> Estimate:
        s = float(self.p.get("tests", group))
        return Estimate(s, {"tests": s})

    def train(self, model: str, variant: Sequence[Any], *, batch: int, warmup: int, iters: int) -> Estimate:
        precision, cl, *rest = variant
        mode = rest[0] if rest else "eager"
        m = ("train", model)
        step_ms = float(self.p.get(*m, "step_ms")[precision + ("+cl" if cl else "")])
        step_ms *= batch / float(self.p.get(*m, "batch"))
        parts: dict[str, float] = {"model copy": float(self.p.get(*m, "build_s"))}
        pays: set[Key] = set()
        self._cold(("cudnn", model, "train", precision, cl, batch), parts, "cold: cuDNN autotune",
                   float(self.p.get(*m, "cudnn_autotune_s")), pays)
        untimed = warmup
        if "compile" in mode:
            self._compile(("inductor", model, "train", precision, cl, batch), parts, "train", model, pays)
        if "cuda-graphs" in mode:
            parts["capture"] = float(self.p.get(*m, "capture_s"))
            from bench.train import GRAPH_WARMUP  # bench.train's untimed steps around a capture

            untimed = max(warmup, GRAPH_WARMUP) + 2
        ratio = float(self.p.get(*m, "compiled_step_ratio")) if mode != "eager" else 1.0
        parts["steps"] = (untimed + iters) * step_ms * ratio / 1e3
        return Estimate(sum(parts.values()), parts, frozenset(pays))

    def infer(self, model: str, variant: Sequence[Any], *, warmup: int, iters: int,
              skip: Optional[Callable[[str, str], Optional[str]]] = None) -> Estimate:
        from bench.runner import shares_engines, split_backend

        backend, precision, batch = variant
        runner, mode = split_backend(backend)
        reason = skip(backend, precision) if skip else self.missing.get(runner)
        if reason:
            return Estimate(0.0, {}, skip=reason)
        m = ("infer", model)
        ms = _interp(self.p.get(*m, "ms"), precision, batch)
        parts: dict[str, float] = {}
        pays: set[Key] = set()
        autotune = float(self.p.get(*m, "cudnn_autotune_s"))
        if runner in ("eager", "compile"):
            layouts = (False,) if precision == "fp32" else (False, True)
            if len(layouts) > 1 and ("trial", model, precision, batch) not in self.paid:
                # bench.runner's memory-format trial: 2 + 10 eager calls in each layout
                parts["layout trial"] = 24 * ms / 1e3
                pays.add(("trial", model, precision, batch))
            for cl in layouts:
                self._cold(("typed", model, precision, cl), parts, "model copy",
                           float(self.p.get(*m, "build_s")), pays)
                self._cold(("cudnn", model, "infer", precision, cl, batch), parts,
                           "cold: cuDNN autotune", autotune, pays)
            if runner == "compile":
                self._compile(("inductor", model, "infer", precision, batch, mode), parts, "infer", model, pays)
                ms *= float(self.p.get(*m, "compiled_ms_ratio"))
                if mode == "reduce-overhead":
                    parts["CUDA graph trees"] = float(self.p.get(*m, "reduce_overhead_s"))
        else:
            # one engine per precision serves every batch, unless the backend tunes it per batch
            key = ("engine", model, runner, precision) + (() if shares_engines(runner) else (batch,))
            builds = self.p.get(*m, "engine_build_s")  # a backend without a prior: the slowest known
            build = float(builds.get(runner, max(builds.values())))
            self._cold(key, parts, f"cold: {runner} build", build, pays)
        if mode == "cudagraph":
            parts["capture"] = float(self.p.get(*m, "graph_capture_s"))
        parts["calls"] = (1 + warmup + iters) * ms / 1e3
        return Estimate(sum(parts.values()), parts, frozenset(pays))

    def loader_setup(self, videos: int, unique: int) -> Estimate:
        p = ("loader",)
        parts = {"synthetic frames": unique * float(self.p.get(*p, "synth_s_per_video")),
                 "linked copies": max(0, videos - unique) * float(self.p.get(*p, "link_s_per_video"))}
        return Estimate(sum(parts.values()), parts)

    def loader(self, item: Sequence[Any], *, batches: int, batch: int, workers: int,
               py_workers: int, after: Optional[Sequence[Any]] = None,
               skip: Optional[str] = None) -> Estimate:
        """A loader row; ``after``: the item measured just before it in the same process (a
        data_wait run continues its throughput run's loader)."""
        if skip:
            return Estimate(0.0, {}, skip=skip)
        backend, _threads, part = item
        p = ("loader",)
        vps = float(self.p.get(*p, "videos_per_s")[backend])
        startup = float(self.p.get(*p, "startup_s")[backend])
        if py_workers > 0:
            startup += float(self.p.get(*p, "py_workers_start_s").get(backend, 0.0))
        steady = batches * batch / vps
        pays: set[Key] = set()
        if part == "throughput":
            parts = {"start-up": startup, "timed batches": steady}
        elif part == "data_wait":
            model = str(self.p.get(*p, "data_wait_model"))
            m = ("train", model)
            parts = {} if after is not None and tuple(after[:2]) == tuple(item[:2]) and after[2] == "throughput" \
                else {"start-up": startup}
            parts["model copy"] = float(self.p.get(*m, "build_s"))
            self._cold(("cudnn", model, "train", "bf16", True, batch), parts,
                       "cold: cuDNN autotune", float(self.p.get(*m, "cudnn_autotune_s")), pays)
            step_s = max(float(self.p.get(*m, "step_ms")["bf16+cl"]) * batch / float(self.p.get(*m, "batch")) / 1e3,
                         batch / vps)
            parts["training steps"] = (2 + int(self.p.get(*p, "data_wait_steps"))) * step_s
        else:  # stages
            if self.p.get(*p, "stages")[backend] == "serial":  # one worker's steps in the main process
                parts = {"serial steps": steady * max(1, workers)}
            else:  # four graphs cut after each stage, each built and timed
                parts = {"4 pipeline builds": 4 * startup, "timed batches": 4 * steady}
        return Estimate(sum(parts.values()), parts, frozenset(pays))


# ---------------------------------------------------------------------- the schedule
@dataclasses.dataclass
class PlannedItem:
    name: str
    start: float
    end: float
    status: str  # run | skip | cut (a test group that runs into its slot's end)
    detail: str


@dataclasses.dataclass
class PlannedSlot:
    name: str
    start: float  # when the step starts (the previous one finished)
    end: float  # the slot's end: the step is stopped there
    items: list[PlannedItem]

    @property
    def finish(self) -> float:
        return max([self.start] + [i.end for i in self.items if i.status != "skip"])


@dataclasses.dataclass
class Schedule:
    preset: str
    budget_s: float
    slots: list[PlannedSlot]
    cache: str

    def item(self, slot: str, name: str) -> PlannedItem:
        for s in self.slots:
            if s.name == slot:
                for i in s.items:
                    if i.name == name:
                        return i
        raise KeyError(f"{slot}: no item {name!r}")

    def ran(self) -> set[tuple[str, str]]:
        return {(s.name, i.name) for s in self.slots for i in s.items if i.status == "run"}

    def finish(self) -> float:
        return max(s.finish for s in self.slots) if self.slots else 0.0


def compiled_keys(cache_dir: Optional[str] = None) -> list[Key]:
    """The Inductor graphs an earlier check compiled into ``cache_dir`` (default
    ``$TORCHINDUCTOR_CACHE_DIR``)."""
    cache_dir = cache_dir or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if not cache_dir:
        return []
    try:
        return [tuple(k) for k in json.loads((Path(cache_dir) / COMPILED_KEYS_FILE).read_text())]
    except (OSError, ValueError, TypeError):
        return []


def remember_compiled(keys: Iterable[Key], cache_dir: Optional[str] = None) -> None:
    """Add ``keys`` to the cache folder's list of compiled graphs (written atomically)."""
    cache_dir = cache_dir or os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    new = [list(k) for k in keys if k and k[0] == "inductor"]
    if not cache_dir or not new:
        return
    known = [list(k) for k in compiled_keys(cache_dir)]
    merged = known + [k for k in new if k not in known]
    try:
        write_text_atomic(Path(cache_dir) / COMPILED_KEYS_FILE, json.dumps(merged), "compiled-graph list")
    except WriteError:  # a read-only cache only costs the next run's estimates
        pass


def _mmss(t: float) -> str:
    return f"{int(t) // 60}:{int(t) % 60:02d}"


def format_schedule(schedule: Schedule) -> str:
    """The schedule as text: slots with their caps, every item with its expected start and end."""
    lines = [f"GPU check plan: preset {schedule.preset}, {schedule.budget_s:.0f} s of slots, "
             f"Inductor cache {schedule.cache}, priors {PRIORS_FILE.name} "
             f"(H200 2026-11-30 + cold-start costs)",
             "times are m:ss from the script's start; 'skip' items are recorded as skipped"]
    for s in schedule.slots:
        lines.append(f"[{_mmss(s.start)}-{_mmss(s.end)}] {s.name} (slot ends at {_mmss(s.end)}, "
                     f"step done by ~{_mmss(s.finish)})")
        for i in s.items:
            when = f"{_mmss(i.start)}-{_mmss(i.end)}" if i.status != "skip" else "  skip   "
            lines.append(f"    {when}  {i.name}: {i.detail}")
    ran = sum(1 for s in schedule.slots for i in s.items if i.status == "run")
    skipped = sum(1 for s in schedule.slots for i in s.items if i.status == "skip")
    lines.append(f"expected end {_mmss(schedule.finish())} of {_mmss(schedule.budget_s)}: "
                 f"{ran} items run, {skipped} skipped")
    return "\n".join(lines)
