"""Loader throughput: every backend side by side, per CPU thread count, in one run, on one dataset.

``bench_loaders`` times training batches (random sampling + augmentation + normalize, as the
trainer sees them) after one warm-up batch, whose time -- pipeline build, worker start-up -- is
reported apart as ``startup_s``. The clock is read after synchronising the device, so GPU
loaders are charged for their asynchronous work.

Threads: ``threads=[1, 2, ...]`` measures every backend at each count -- a backend with its own
CPU threads (entry ``threads=True``: DALI) with that many threads (its batches built in the main
process unless ``py_workers`` asks for Python worker processes), any other (the torch loader)
with that many worker processes. Each throughput record (``measure: throughput``) holds
``threads``, ``videos_per_s``, ``frames_per_s``, ``ratio_to_torch`` (the registry's baseline
backend, :func:`fastvid.loaders.baseline_loader`, at the same thread count; the field keeps its
name) and ``scaling`` (the backend's own 1-thread figure, when measured), plus the machine's load
average before and after, since a shared machine skews every number, and ``cpu_ms_per_video`` /
``cpu_cores_used`` (CPU time of the process and its workers, /proc).

Steady state: time enough batches that DALI's prefetch queue and the DataLoader's
``workers x prefetch_factor`` batches in flight are a small part of them, on a set larger than
the batches timed plus those in flight (an epoch boundary re-primes the torch workers);
``bench.gpu_check`` times 40 batches on (40 + 8) x batch videos.

The details below are records of their own, written after the throughput record (a run
stopped while they are measured keeps the throughput). ``stages=True`` adds where the time goes
at the sweep's last thread count, per batch (``measure: stages``, ``stage_ms``): the loader's own
``stage_profile(batches)`` (DALI: the graph cut after each stage, source -> decode -> resize ->
normalize, timed at the same threads, plus the source's and loader's Python timers; torch: its
dataset's loading steps run serially in this process).

``train_steps`` > 0 adds a short real training run (the config's model, random weights,
forward + backward + SGD, as ``fastvid train``) fed by the loader at the sweep's last thread
count, continuing the throughput run's stream (``measure: data_wait``): ``data_wait_share`` is
the share of steady-state step time spent waiting for the batch.

    python -m bench.loader -c configs/trn_bninception_jester.yaml --data-root DATA \\
        --backends torch,dali-cpu --threads 1,2,all --stages --batches 20 --out reports/loader.json
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Optional, Sequence

import torch

from bench.records import device_name, load_average, now, versions
from fastvid.config import Config
from fastvid.cpu import available_cores
from fastvid.data.lists import DatasetInfo
from fastvid.errors import FastvidError

if TYPE_CHECKING:
    from fastvid.loaders import LoaderBackend, LoaderRequest

__all__ = ["bench_loaders", "LoaderBenchSettings", "LOADER_PARTS", "thread_counts", "available_cores", "dali_option_values", "main"]

DALI_OPTIONS = ("prefetch", "hw_decoder_load", "decoder_pipelines")

log = logging.getLogger(__name__)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(loader: Any) -> Any:
    """Endless stream of batches across epochs (set_epoch advanced at each pass)."""
    for epoch in itertools.count():
        loader.set_epoch(epoch)
        yield from loader


def thread_counts(text: str | Sequence[int] | None) -> list[Optional[int]]:
    """``"1,2,all"`` / ``"auto"`` (1, 2, 4, ... up to every core) / ints -> thread counts.

    None (no sweep) gives ``[None]``: each backend's default (torch: ``--workers``, DALI: every
    core).
    """
    if text is None:
        return [None]
    cores = available_cores()
    if isinstance(text, str):
        text = text.strip()
        if text == "auto":
            counts = [1 << k for k in range(cores.bit_length()) if 1 << k < cores] + [cores]
            return list(dict.fromkeys(counts))
        items: list[int] = []
        for part in text.split(","):
            part = part.strip()
            if not part:
                continue
            if part == "all":
                items.append(cores)
                continue
            try:
                items.append(int(part))
            except ValueError:
                raise FastvidError(f"threads {text!r}: expected integers, 'all' or 'auto'") from None
        text = items
    counts = [int(t) for t in text]
    if not counts or min(counts) < 1:
        raise FastvidError(f"thread counts must be >= 1, got {counts}")
    return list(dict.fromkeys(counts))


def dali_option_values(items: Sequence[str]) -> dict[str, Any]:
    """``["hw_decoder_load=0.9", "prefetch=3"]`` -> DaliVideoLoader keyword arguments."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or key not in DALI_OPTIONS:
            raise FastvidError(f"DALI loader option {item!r}: expected KEY=VALUE with KEY one of "
                               f"{', '.join(DALI_OPTIONS)}")
        try:
            out[key] = float(value) if key == "hw_decoder_load" else int(value)
        except ValueError:
            raise FastvidError(f"DALI loader option {item!r}: {value!r} is not a number") from None
    return out


def _cpu_seconds() -> Optional[float]:
    """CPU time (user + system) of this process and all its descendants, from /proc.

    Worker processes (DataLoader workers, DALI's Python workers) are counted while alive, which
    ``resource.getrusage(RUSAGE_CHILDREN)`` does not do. None where /proc is missing.
    """
    proc = Path("/proc")
    if not (proc / "self" / "stat").is_file():
        return None
    parents: dict[int, int] = {}
    times: dict[int, int] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        times[pid] = int(fields[11]) + int(fields[12])  # utime + stime, clock ticks
    tree, frontier = {os.getpid()}, [os.getpid()]
    while frontier:
        parent = frontier.pop()
        for pid, ppid in parents.items():
            if ppid == parent and pid not in tree:
                tree.add(pid)
                frontier.append(pid)
    return sum(times.get(pid, 0) for pid in tree) / os.sysconf("SC_CLK_TCK")


def _time_batches(stream: Any, batches: int, device: torch.device
                  ) -> tuple[float, int, Optional[float]]:
    """(seconds, videos, CPU seconds of the process tree) for ``batches`` batches."""
    n_videos = 0
    _sync(device)
    cpu0 = _cpu_seconds()
    t0 = time.perf_counter()
    for _ in range(batches):
        _, label = next(stream)
        n_videos += label.shape[0]
    _sync(device)
    elapsed = time.perf_counter() - t0
    cpu1 = _cpu_seconds()
    return elapsed, n_videos, (cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None)


def _train_feed(cfg: Config, dataset: DatasetInfo, stream: Any, device: torch.device, steps: int,
                warmup: int, amp: bool) -> dict[str, Any]:
    """Steady-state share of a real training step spent waiting for the loader.

    The step is ``fastvid train``'s (:class:`fastvid.training.TrainStep`, channels-last and fused
    SGD on CUDA), which reads nothing back to the host: the wait is what the host spends in
    ``next(stream)`` while the device may still run earlier steps, as in training.
    """
    from fastvid.models import create_model_from_config
    from fastvid.precision import resolve_precision
    from fastvid.training import StepOptions, build_train_step

    num_classes = cfg.model.num_classes or dataset.num_classes or 27
    precision = resolve_precision(amp, "bf16", device)
    step = build_train_step(cfg, create_model_from_config(cfg.model, num_classes), device=device,
                            precision=precision,
                            options=StepOptions(channels_last=device.type == "cuda"))
    wait = 0.0
    videos = 0
    t_start = 0.0
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t_start = time.perf_counter()
        t0 = time.perf_counter()
        video, label = next(stream)
        t1 = time.perf_counter()
        step(video, label.clamp(min=0) % num_classes)
        if i >= warmup:
            wait += t1 - t0
            videos += label.shape[0]
    _sync(device)
    total = time.perf_counter() - t_start
    return {"data_wait_share": round(wait / total, 4), "train_videos_per_s": round(videos / total, 2),
            "train_steps": steps, "train_warmup": warmup, "train_precision": precision.name}


#: What one loader item measures; each is its own record, written as soon as it is measured.
LOADER_PARTS = ("throughput", "data_wait", "stages")
LoaderItem = tuple  # (backend, threads) or (backend, threads, part)


@dataclass(frozen=True)
class LoaderBenchSettings:
    """What a loader benchmark measures, beside the config, dataset, backends and device.

    Attributes:
        batches: batches timed per throughput record (after one warm-up batch).
        batch_size: videos per batch.
        workers: default ``cfg.train.workers`` (the sweep-less worker count).
        split: the list read.
        threads: thread counts to sweep (:func:`thread_counts`); None: each backend's default.
        py_workers: Python worker processes of a backend with its own CPU threads (DALI) in a
            thread sweep (0: the main process).
        options: backend tuning (:func:`dali_option_values`), recorded as ``dali_options``.
        stages: also time each stage (``measure: stages``).
        train_steps: > 0: also measure ``data_wait`` over this many real training steps.
        train_warmup: steps before the data_wait clock starts.
        amp: bf16 autocast for the training steps.
        detail_backends: the backends that get the detail records (None: all).
    """

    batches: int = 20
    batch_size: int = 8
    workers: Optional[int] = None
    split: str = "train"
    threads: Optional[Sequence[Optional[int]]] = None
    py_workers: int = 0
    options: Optional[dict[str, Any]] = None
    stages: bool = False
    train_steps: int = 0
    train_warmup: int = 2
    amp: bool = False
    detail_backends: Optional[Sequence[str]] = None


@dataclass(frozen=True)
class _Target:
    """What every measurement of one benchmark run shares."""

    cfg: Config
    dataset: DatasetInfo
    device: torch.device
    records: list
    batch_size: int

    def build(self, backend: str, request: "LoaderRequest") -> Any:
        from fastvid.loaders import build_loader

        return build_loader(self.cfg, self.dataset, dataclasses.replace(
            request, split="train", batch_size=self.batch_size, records=self.records),
            loader=backend, device=self.device)


def bench_loaders(cfg: Config, dataset: DatasetInfo, backends: Sequence[str], device: torch.device,
                  settings: LoaderBenchSettings = LoaderBenchSettings(), *,
                  pairs: Optional[Iterable[LoaderItem]] = None,
                  on_record: Optional[Callable[[dict[str, Any]], None]] = None
                  ) -> list[dict[str, Any]]:
    """Loader records: per (backend, thread count) its throughput, then its details.

    Each (backend, threads) gives a ``measure: throughput`` record (videos/s, frames/s,
    start-up, CPU cost, ratios), written first; at the sweep's largest thread count (for
    ``settings.detail_backends`` only, when given) a ``measure: data_wait`` record
    (``train_steps`` > 0: a short real training run fed by the same loader, continuing its
    stream) and a ``measure: stages`` record (``stages=True``: the loader's own
    ``stage_profile``) follow as records of their own, so a run stopped during the details
    keeps the throughput it measured.

    A backend that cannot run here (no DALI, no GPU, a codec DALI's CPU decoder lacks) gives a
    record with ``"skipped": reason`` instead of stopping the comparison. ``pairs`` replaces
    ``backends`` x ``threads``: items ``(backend, threads)`` (the throughput, then the details
    as above) or ``(backend, threads, part)`` with part in :data:`LOADER_PARTS` (exactly that
    record), read one at a time (a lazy iterable can stop early: a time budget). ``on_record``
    gets each record as soon as it is measured, with ``ratio_to_torch`` (to the registry's
    baseline backend, :func:`fastvid.loaders.baseline_loader`) and ``scaling`` when their
    references were measured before it.
    """
    from fastvid.loaders import LoaderRequest, LoaderTuning, close_loader, loader_backend

    device = torch.device(device)
    records = dataset.records(settings.split, frame_tmpl=cfg.data.frame_tmpl)
    target = _Target(cfg, dataset, device, list(records), settings.batch_size)
    n_workers = cfg.train.workers if settings.workers is None else settings.workers
    batches, stages, train_steps = settings.batches, settings.stages, settings.train_steps
    detail_backends, dali_options = settings.detail_backends, settings.options
    base = {"kind": "loader", "batches": batches, "batch_size": settings.batch_size,
            "device": device_name(device), "device_type": device.type,
            "dataset": str(dataset.root), "format": dataset.format,
            "image_size": cfg.data.image_size, "layout": cfg.spec.input_layout,
            "videos": len(records), "cores": available_cores(),
            "versions": dict(versions(), python=platform.python_version())}
    results: list[dict[str, Any]] = []
    swept: list[Optional[int]] = []  # the sweep's thread count of each record
    sweep = list(settings.threads) if settings.threads else [None]
    last_t = max((t for t in sweep if t is not None), default=None)

    def details(backend: str, t: Optional[int]) -> list[str]:
        if t != last_t or (detail_backends is not None and backend not in detail_backends):
            return []
        return (["data_wait"] if train_steps else []) + (["stages"] if stages else [])

    def expand(items: Iterable[LoaderItem]) -> Iterable[tuple[str, Optional[int], str]]:
        for item in items:
            if len(item) == 3:
                yield item[0], item[1], item[2]
            else:
                yield item[0], item[1], "throughput"
                for part in details(item[0], item[1]):
                    yield item[0], item[1], part

    if pairs is None:
        pairs = [(backend, t) for t in sweep for backend in backends]

    def done(rec: dict[str, Any], t: Optional[int]) -> None:
        results.append(rec)
        swept.append(t)
        _ratios(results, swept)
        if on_record is not None:
            on_record(rec)

    live: dict[str, Any] = {}  # the last throughput item's loader and stream, for its data_wait

    def drop_live() -> None:
        loader = live.pop("loader", None)
        live.clear()
        close_loader(loader)

    try:
        for backend, t, part in expand(pairs):
            if part not in LOADER_PARTS:
                raise ValueError(f"loader part {part!r}: expected one of {', '.join(LOADER_PARTS)}")
            # A backend with its own CPU threads (DALI) sweeps them; the others (the torch
            # DataLoader) sweep their worker processes.
            entry = loader_backend(backend)
            tuning = LoaderTuning(**dict(dali_options or {}))
            if entry.threads:
                tuning = dataclasses.replace(tuning, threads=t)
                loader_workers = settings.py_workers if t is not None else n_workers
            else:
                loader_workers = t if t is not None else n_workers
            request = LoaderRequest(workers=loader_workers, tuning=tuning)
            rec: dict[str, Any] = dict(base, backend=backend, threads=t, workers=loader_workers,
                                       measure=part, loadavg_before=load_average(),
                                       date=now())
            if entry.threads and dali_options:
                rec["dali_options"] = dict(dali_options)
            key = (backend, t)
            if live.get("key") != key or part == "throughput":
                drop_live()
            try:
                if part == "throughput":
                    rec.update(_throughput(target, entry, request, batches, live))
                    live["key"] = key
                elif part == "data_wait":
                    if "stream" not in live:  # not right after its throughput item: a fresh start
                        _throughput(target, entry, request, 0, live)
                        live["key"] = key
                    rec.update(_train_feed(cfg, dataset, live["stream"], device, train_steps or 20,
                                           settings.train_warmup, settings.amp))
                else:
                    drop_live()
                    rec.update(_stage_profile(target, backend, request, batches))
            except FastvidError as exc:
                drop_live()
                rec.update(skipped=str(exc), status="skipped", reason=str(exc))
                log.warning("loader bench: %s %s skipped: %s", backend, part, exc)
                done(rec, t)
                continue
            rec["loadavg_after"] = load_average()
            rec["status"] = "ok"
            done(rec, t)
    finally:
        drop_live()
    return results


def _stage_profile(target: _Target, backend: str, request: "LoaderRequest",
                   batches: int) -> dict[str, Any]:
    """The loader's own ``stage_profile(batches)`` (where a batch's time goes), on a loader of
    its own; a backend without one is skipped with that reason."""
    from fastvid.loaders import close_loader

    loader = target.build(backend, request)
    try:
        profile = getattr(loader, "stage_profile", None)
        if profile is None:
            raise FastvidError(f"the {backend} loader has no stage_profile()")
        return profile(batches)
    finally:
        close_loader(loader)  # its workers / pipelines end now, not at garbage collection


def _throughput(target: _Target, entry: "LoaderBackend", request: "LoaderRequest", batches: int,
                live: dict[str, Any]) -> dict[str, Any]:
    """Start a loader (timed apart as ``startup_s``), then time ``batches`` batches; the loader
    and its stream stay in ``live`` for a data_wait run that continues them."""
    device = target.device
    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    loader = target.build(entry.name, request)
    live["loader"] = loader
    stream = _batches(loader)
    video, _ = next(stream)  # warm-up: builds pipelines, starts workers
    _sync(device)
    live["stream"] = stream
    out["startup_s"] = round(time.perf_counter() - t0, 3)
    if entry.threads:  # what the backend's own CPU threads came to
        out["threads"] = out["dali_threads"] = loader.num_threads
        # Split decoder pipelines share the threads (at least one each): what ran.
        out["decoder_pipelines"] = len(loader.pipeline_threads)
        out["dali_threads_used"] = sum(loader.pipeline_threads)
    if batches <= 0:
        return out
    frames_per_video = video.shape[target.cfg.spec.input_layout.index("T")]
    elapsed, n_videos, cpu_s = _time_batches(stream, batches, device)
    out.update(seconds=round(elapsed, 4), videos_per_s=round(n_videos / elapsed, 2),
               frames_per_s=round(n_videos * frames_per_video / elapsed, 1),
               frames_per_video=int(frames_per_video))
    if cpu_s is not None:
        # CPU cost per video: what a loader needs of a machine, and far less skewed than
        # videos/s when other jobs share the cores
        out["cpu_ms_per_video"] = round(1e3 * cpu_s / n_videos, 2)
        out["cpu_cores_used"] = round(cpu_s / elapsed, 2)
    return out


def _ratios(results: list[dict[str, Any]], swept: list[Optional[int]]) -> None:
    """``ratio_to_torch`` (the registry's baseline backend at the same sweep point; the record
    field keeps its name) and ``scaling`` (the backend's own 1-thread figure) for every record
    whose reference is measured."""
    from fastvid.loaders import baseline_loader

    baseline = baseline_loader().name
    measured = [(r, t) for r, t in zip(results, swept) if "videos_per_s" in r]
    for rec, t in measured:
        same = [r for r, t2 in measured if r["backend"] == baseline and t2 == t]
        if same:  # the baseline at the same sweep point (without a sweep: each one's default)
            rec["ratio_to_torch"] = round(rec["videos_per_s"] / same[0]["videos_per_s"], 3)
        one = [r for r, t2 in measured if r["backend"] == rec["backend"] and t2 == 1]
        if one and t is not None:
            rec["scaling"] = round(rec["videos_per_s"] / one[0]["videos_per_s"], 3)


def main() -> None:
    import click

    from fastvid.loaders import loader_backends, loader_names

    @click.command()
    @click.option("-c", "--config", "config_path", required=True, type=click.Path(dir_okay=False))
    @click.option("--data-root", required=True, type=click.Path(file_okay=False))
    @click.option("--backends", default=",".join(b.name for b in loader_backends() if "cpu" in b.devices),
                  show_default=True,
                  help=f"Comma-separated loaders to compare ({', '.join(loader_names(auto=False))}).")
    @click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True)
    @click.option("--batches", type=int, default=20, show_default=True)
    @click.option("--batch-size", type=int, default=8, show_default=True)
    @click.option("--workers", type=int, default=None, help="Default: train.workers of the config.")
    @click.option("--threads", default=None,
                  help="Thread counts to sweep: '1,2,4', 'all' (every core) or 'auto' (1, 2, 4, "
                       "... all). torch: DataLoader workers; DALI: CPU threads.")
    @click.option("--dali-workers", type=int, default=0, show_default=True,
                  help="DALI Python worker processes in a thread sweep (0: the main process).")
    @click.option("--dali-option", "dali_opts", multiple=True, metavar="KEY=VALUE",
                  help=f"DALI loader setting ({', '.join(DALI_OPTIONS)}), repeatable.")
    @click.option("--stages", is_flag=True, help="Also time each stage (see the module doc).")
    @click.option("--train-steps", type=int, default=0, show_default=True,
                  help="Also measure data_wait over this many real training steps.")
    @click.option("--amp", is_flag=True, help="bf16 autocast for --train-steps.")
    @click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
    @click.option("--out", type=click.Path(dir_okay=False), default=None, help="Write the records as JSON.")
    def cli(config_path: str, data_root: str, backends: str, device: str, batches: int,
            batch_size: int, workers: Optional[int], threads: Optional[str], dali_workers: int,
            dali_opts: tuple[str, ...], stages: bool, train_steps: int, amp: bool,
            overrides: tuple[str, ...],
            out: Optional[str]) -> None:
        """Compare data-loader throughput on one dataset."""
        from fastvid.config import load_config
        from fastvid.data.lists import resolve_dataset

        cfg = load_config(config_path, overrides)
        dataset = resolve_dataset(data_root, cfg.data)
        settings = LoaderBenchSettings(
            batches, batch_size, workers=workers,
            threads=thread_counts(threads) if threads else None, py_workers=dali_workers,
            options=dali_option_values(dali_opts), stages=stages, train_steps=train_steps, amp=amp)
        results = bench_loaders(cfg, dataset, [b.strip() for b in backends.split(",") if b.strip()],
                                torch.device(device), settings)
        for r in results:
            click.echo(summary_line(r))
        if out:
            Path(out).parent.mkdir(parents=True, exist_ok=True)
            Path(out).write_text(json.dumps(results, indent=2))

    cli()


def summary_line(r: dict[str, Any]) -> str:
    """One console line per loader record."""
    part = r.get("measure", "throughput")
    if "skipped" in r or r.get("status", "ok") != "ok":
        what = "" if part == "throughput" else f" {part}"
        return f"{r['backend']:>9}{what}: {r.get('status', 'skipped')} ({r.get('skipped') or r.get('reason')})"
    if part == "data_wait":
        return (f"{r['backend']:>9} {r.get('threads') or '-'!s:>3} thr: data_wait "
                f"{100 * r['data_wait_share']:.1f}% of {r['train_steps']} training steps "
                f"({r['train_videos_per_s']:.1f} videos/s trained)")
    if part == "stages":
        return (f"{r['backend']:>9} {r.get('threads') or '-'!s:>3} thr: ms/batch: "
                + ", ".join(f"{k} {v:.1f}" for k, v in r["stage_ms"].items()))
    line = (f"{r['backend']:>9} {r.get('threads') or '-'!s:>3} thr: {r['videos_per_s']:8.1f} "
            f"videos/s {r['frames_per_s']:9.1f} frames/s")
    if r.get("ratio_to_torch") is not None:
        from fastvid.loaders import baseline_loader

        line += f"  x{r['ratio_to_torch']:.2f} vs {baseline_loader().name}"
    if r.get("scaling") is not None:
        line += f"  x{r['scaling']:.2f} vs 1 thread"
    if r.get("cpu_ms_per_video") is not None:
        line += f"  {r['cpu_ms_per_video']:.1f} CPU-ms/video"
    line += f"  (start-up {r['startup_s']:.1f} s, {r['workers']} workers, load {r.get('loadavg_before')})"
    return line


if __name__ == "__main__":
    main()
