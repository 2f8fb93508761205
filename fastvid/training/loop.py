"""The training loop: :func:`train` sets the run up, runs :func:`train_one_epoch` per epoch,
evaluates, checkpoints (torchvision's ``references/video_classification/train.py`` is the model).

It never asks which loader or precision it has: the loader yields the batch contract on the
device, :class:`fastvid.precision.Precision` supplies autocast and the GradScaler, and
:class:`fastvid.training.TrainStep` is the step. Host synchronisations happen at log steps
(``train.log_interval``), checkpoints and epoch ends only.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from fastvid.atomic import write_text_atomic
from fastvid.checkpoint import (capture_rng, check_config_matches, data_geometry,
                                load_checkpoint, restore_rng, save_checkpoint)
from fastvid.config import Config, save_config
from fastvid.cpu import compile_unsupported  # re-exported by fastvid.training
from fastvid.distributed import DistInfo, any_rank, init_distributed, unwrap
from fastvid.errors import FastvidError, TrainingAborted
from fastvid.evaluate import evaluate_sharded
from fastvid.loaders import close_loader
from fastvid.models import create_model_from_config, load_pretrained
from fastvid.precision import resolve_precision
from fastvid.version import __version__

from .bn import recompute_bn_stats
from .build import StepOptions, build_train_step
from .cuda_graphs import cuda_graphs_unsupported, lr_to_floats
from .optim import build_lr_scheduler, load_optimizer_state
from .step import NonFiniteMonitor, TrainStep

__all__ = ["TrainOptions", "train", "train_one_epoch", "EpochSetup", "MetricsLog", "StopFlag",
           "truncate_metrics"]

log = logging.getLogger("fastvid.train")


@dataclass
class TrainOptions:
    data_root: Path
    work_dir: Path
    loader: str = "auto"
    device: str = "auto"
    amp: bool = False
    amp_dtype: str = "bf16"
    resume: Optional[str] = None  # None | "auto" | path
    pretrained: Optional[str] = None
    compile: bool = False
    compile_mode: Optional[str] = None  # torch.compile mode (None: its default)
    cuda_graphs: bool = False  # capture the whole step in a CUDA graph (fastvid.training.cuda_graphs)
    apex: bool = False  # apex.optimizers.FusedSGD when importable
    tensorboard: bool = False
    progress: bool = True
    max_steps_per_epoch: Optional[int] = None  # smoke tests and benchmarks


class StopFlag:
    """SIGTERM/SIGINT set a flag; the loop saves ``last.pt`` at the next step and exits non-zero."""

    def __init__(self) -> None:
        self.signum: Optional[int] = None
        self._previous: dict[int, Any] = {}

    def _handler(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: stop now
        self.signum = signum
        log.warning("received %s: finishing the current step, saving last.pt, then exiting",
                    signal.Signals(signum).name)

    @contextmanager
    def installed(self) -> Iterator["StopFlag"]:
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                self._previous[sig] = signal.signal(sig, self._handler)
            except ValueError:  # not the main thread (e.g. called from a test thread)
                pass
        try:
            yield self
        finally:
            for sig, handler in self._previous.items():
                signal.signal(sig, handler)


class MetricsLog:
    """``metrics.jsonl`` (one JSON object per log step / epoch), optionally mirrored to TensorBoard."""

    def __init__(self, path: Optional[Path], tensorboard_dir: Optional[Path] = None) -> None:
        self.path = path
        self.tb = None
        if tensorboard_dir is not None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:
                log.warning("--tensorboard: the tensorboard package is not installed; skipping")
            else:
                self.tb = SummaryWriter(str(tensorboard_dir))

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()

    def write(self, record: dict[str, Any]) -> None:
        if self.path is None:
            return
        with open(self.path, "a") as fh:
            fh.write(json.dumps(record) + "\n")
        if self.tb is not None:
            step = record.get("step", 0)
            for key, value in record.items():
                if isinstance(value, (int, float)) and key not in ("step", "epoch"):
                    self.tb.add_scalar(f"{record.get('type', 'train')}/{key}", value, step)


@dataclass
class EpochSetup:
    """What :func:`train_one_epoch` needs besides the step and the loader."""

    cfg: Config
    dist_info: DistInfo
    metrics: MetricsLog
    stop: StopFlag
    monitor: NonFiniteMonitor
    progress: bool = True
    max_steps: Optional[int] = None
    save_mid_epoch: Callable[[int, int], None] = lambda step, batches: None
    #: ``time.time()`` the process started at; the first step of the run is timed from it.
    process_start: Optional[float] = None
    first_step_done: Optional[float] = None  # set by train_one_epoch after the run's first step
    #: Precise BN's batches: the epoch's first ``bn_batches`` are kept (on the device) for it
    #: when they fit in ``bn_cache_bytes``, so BN statistics need no second pass of the loader.
    bn_batches: int = 0
    bn_cache_bytes: int = 1 << 30


def _num_classes(cfg: Config, dataset: Any, records: list) -> int:
    if cfg.model.num_classes:
        return cfg.model.num_classes
    if dataset.num_classes:
        return dataset.num_classes
    return max(r.label for r in records) + 1


def process_start_time() -> float:
    """``time.time()`` at which this process started (Linux ``/proc``; else fastvid's import)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        btime = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                     if line.startswith("btime"))
        return btime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return _IMPORTED_AT


_IMPORTED_AT = time.time()




def _compile_mode_uses_cudagraphs(mode: Optional[str]) -> bool:
    """True for torch.compile modes that capture CUDA graphs themselves (reduce-overhead,
    max-autotune), per Inductor's own table of mode options."""
    from torch._inductor import list_mode_options

    return bool(list_mode_options(mode or "default").get("triton.cudagraphs"))


def _check_writable(work_dir: Path) -> None:
    """Fail before any work when ``work_dir`` cannot be created or written (creating nothing)."""
    existing = work_dir
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FastvidError(f"work dir {work_dir} is not writable: {existing} is not a directory")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FastvidError(f"work dir {work_dir} is not writable: no write permission on {existing}")


def _resume_path(opts: TrainOptions, work_dir: Path) -> Optional[Path]:
    if not opts.resume:
        return None
    if opts.resume == "auto":
        path = work_dir / "last.pt"
        if path.is_file():
            return path
        log.info("--resume auto: no %s yet, starting from scratch", path)
        return None
    path = Path(opts.resume)
    if not path.is_file():
        raise FastvidError(f"--resume {path}: file not found")
    return path


def truncate_metrics(path: Path, step: int, epochs_done: int) -> int:
    """Cut ``metrics.jsonl`` back to what a run resumed at ``step`` has already done.

    The records written after the checkpoint (a killed rank, Ctrl-C between a log line and the
    next save) are written again by the resumed run; kept, they would appear twice. Kept: every
    record of a step before ``step``, and those of ``step`` itself except an epoch record of an
    epoch the checkpoint has not completed (``epochs_done``). A torn last line (a kill during
    the write) goes too. Returns how many records were dropped.
    """
    if not path.is_file():
        return 0
    kept, dropped = [], 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            at = int(rec.get("step", 0))
        except (ValueError, TypeError, AttributeError):
            dropped += 1
            continue
        if at < step or (at == step and not (rec.get("type") == "epoch"
                                             and int(rec.get("epoch", 0)) > epochs_done)):
            kept.append(line)
        else:
            dropped += 1
    if dropped:
        write_text_atomic(path, "".join(f"{line}\n" for line in kept), "metrics log")
        log.info("%s: %d record(s) after step %d removed (the resumed run writes them again)",
                 path, dropped, step)
    return dropped


def _finished_summary(work_dir: Path, ckpt: dict[str, Any], cfg: Config) -> Optional[dict[str, Any]]:
    """The run's summary when ``ckpt`` ends the configured training (resuming it is a no-op)."""
    if int(ckpt.get("epoch", 0)) < cfg.train.epochs or int(ckpt.get("batch_in_epoch", 0)):
        return None
    path = work_dir / "summary.json"
    if path.is_file():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            pass
    # Finished, but the summary was never written (killed right after the last checkpoint):
    # rebuild it from the metrics log.
    final = None
    metrics = work_dir / "metrics.jsonl"
    if metrics.is_file():
        epochs = [json.loads(x) for x in metrics.read_text().splitlines() if '"type": "epoch"' in x]
        final = epochs[-1] if epochs else None
    return {"model": cfg.model_name, "epochs": cfg.train.epochs, "steps": int(ckpt.get("step", 0)),
            "best_top1": float(ckpt.get("best_top1", -1.0)), "final": final,
            "fastvid_version": __version__, "rebuilt_from": str(metrics)}


def train(cfg: Config, opts: TrainOptions) -> dict[str, Any]:
    """Train as configured; returns the run summary (also written to ``summary.json``).

    Rank 0 holds the run directory's lock (:class:`fastvid.workdir_lock.WorkDirLock`) for the
    whole run, and the loaders are closed (workers and pipelines shut down) however it ends.
    The run is :func:`_setup` (lists, lock, checkpoint, loaders, model and step, restored by
    :func:`_resume`), one :func:`_run_epoch` per epoch, then :func:`_finish`.
    """
    with ExitStack() as resources:
        run = _setup(cfg, opts, resources)
        if isinstance(run, dict):  # resumed from a run that had already finished
            return run
        t_start = time.time()
        with run.stop.installed():
            for epoch in range(run.start_epoch, cfg.train.epochs):
                _run_epoch(run, epoch)
        return _finish(run, time.time() - t_start)


def _lock_work_dir(work_dir: Path, dist_info: DistInfo, resources: ExitStack) -> None:
    """Rank 0 takes the run directory's lock; every rank stops when it could not."""
    from fastvid.workdir_lock import WorkDirLock

    error: Optional[FastvidError] = None
    if dist_info.is_main:
        lock = WorkDirLock(work_dir)
        try:
            resources.enter_context(lock)
        except FastvidError as exc:
            error = exc
        else:
            if lock.took_over:
                log.warning("%s was left by PID %s (%s, started %s), which is no longer running; "
                            "taking it over", lock.path, lock.took_over.get("pid", "?"),
                            lock.took_over.get("command", "?"), lock.took_over.get("started", "?"))
    if any_rank(error is not None, dist_info):  # under DDP all ranks stop together
        if error is None:
            error = FastvidError(f"rank 0 could not lock the work dir {work_dir}")
        raise error


@dataclass
class _Run:
    """One run: what :func:`_setup` builds, :func:`_resume` restores and the epochs advance."""

    cfg: Config
    opts: TrainOptions
    dist_info: DistInfo
    work_dir: Path
    classes: Optional[list[str]]
    train_loader: Any
    val_loader: Any
    stop: StopFlag = field(default_factory=StopFlag)
    train_step: Any = None  # TrainStep or GraphedTrainStep (build_train_step)
    scheduler: Any = None
    setup: Optional[EpochSetup] = None  # what train_one_epoch needs (metrics, monitor, ...)
    resume_path: Optional[Path] = None  # the checkpoint it resumes from
    start_epoch: int = 0  # where the run (re)starts
    skip_batches: int = 0  # batches of start_epoch a resumed run already did
    step: int = 0  # global optimisation steps done
    best_top1: float = -1.0
    history: list[dict[str, Any]] = field(default_factory=list)  # epoch records (rank 0)

    @property
    def num_classes(self) -> int:
        return int(self.cfg.model.num_classes)


def _check_options(opts: TrainOptions, device: torch.device, dist_info: DistInfo) -> None:
    """Refuse --cuda-graphs / --compile where they cannot run, before any data is read."""
    if opts.cuda_graphs:
        reason = cuda_graphs_unsupported(device, dist_info)
        if reason is None and opts.compile and _compile_mode_uses_cudagraphs(opts.compile_mode):
            reason = (f"--cuda-graphs captures the whole step itself; --compile-mode "
                      f"{opts.compile_mode} would capture CUDA graphs inside it: use "
                      f"--compile-mode default or max-autotune-no-cudagraphs")
        if reason:
            raise FastvidError(reason)
    if opts.compile:
        reason = compile_unsupported(device)
        if reason:
            raise FastvidError(f"--compile: {reason}")


def _read_lists(cfg: Config, opts: TrainOptions) -> tuple[Any, list, list]:
    """The dataset and its train / val records; sets ``cfg.model.num_classes`` (checked)."""
    from fastvid.data.lists import resolve_dataset

    dataset = resolve_dataset(opts.data_root, cfg.data)
    train_records = dataset.records("train", frame_tmpl=cfg.data.frame_tmpl)
    val_records = dataset.records("val", frame_tmpl=cfg.data.frame_tmpl)
    num_classes = _num_classes(cfg, dataset, train_records)
    for split, recs in (("train", train_records), ("val", val_records)):
        bad = [r for r in recs if r.label >= num_classes]
        if bad:
            raise FastvidError(f"{split} list has class index {bad[0].label} but the model has "
                               f"{num_classes} classes (model.num_classes)")
    cfg.model.num_classes = num_classes
    return dataset, train_records, val_records


def _open_checkpoint(cfg: Config, opts: TrainOptions, work_dir: Path, dist_info: DistInfo
                     ) -> tuple[Optional[Path], Optional[dict[str, Any]], Optional[dict[str, Any]]]:
    """``(path, checkpoint, None)`` to resume from, ``(None, None, None)`` for a new run, or
    ``(path, None, summary)`` when the checkpoint ended the configured training.

    A resumed run's ``metrics.jsonl`` is cut back to the checkpoint (rank 0).
    """
    resume_path = _resume_path(opts, work_dir)
    if resume_path is None:
        return None, None, None
    ckpt = load_checkpoint(resume_path)
    check_config_matches(ckpt.get("config", {}), cfg, str(resume_path))
    finished = _finished_summary(work_dir, ckpt, cfg)
    if finished is not None:
        if dist_info.is_main:
            if not (work_dir / "summary.json").is_file():
                write_text_atomic(work_dir / "summary.json", json.dumps(finished, indent=2),
                                  "run summary")
            log.info("%s: this run already finished its %d epochs; nothing to do (raise "
                     "--epochs to train on)", resume_path, cfg.train.epochs)
        if dist_info.distributed:
            dist.destroy_process_group()
        return resume_path, None, finished
    if dist_info.is_main:
        truncate_metrics(work_dir / "metrics.jsonl", int(ckpt.get("step", 0)),
                         int(ckpt.get("epoch", 0)))
    return resume_path, ckpt, None


def _setup(cfg: Config, opts: TrainOptions, resources: ExitStack) -> "_Run | dict[str, Any]":
    """Everything before the first epoch; a finished run's summary when there is nothing to do.

    Order matters: options and lists are checked before the run directory is locked (a bad
    list creates nothing), the loaders start decoding before the model is built, and the
    checkpoint is restored before the step is compiled, wrapped or captured.
    """
    from fastvid.loaders import LoaderRequest, build_loader

    t_process = process_start_time()
    dist_info = init_distributed(opts.device)
    device = dist_info.device
    precision = resolve_precision(opts.amp, opts.amp_dtype, device)
    _check_options(opts, device, dist_info)
    work_dir = Path(opts.work_dir)
    if dist_info.is_main:
        _check_writable(work_dir)
    dataset, train_records, val_records = _read_lists(cfg, opts)
    # Before anything is read from or written to the run directory.
    _lock_work_dir(work_dir, dist_info, resources)
    resume_path, ckpt, finished = _open_checkpoint(cfg, opts, work_dir, dist_info)
    if finished is not None:
        return finished

    start_epoch = int(ckpt["epoch"]) if ckpt is not None else 0
    skip_batches = int(ckpt.get("batch_in_epoch", 0)) if ckpt is not None else 0
    train_loader = build_loader(cfg, dataset, LoaderRequest(
        "train", shard_id=dist_info.rank, num_shards=dist_info.world_size, records=train_records),
        loader=opts.loader, device=device)
    resources.callback(close_loader, train_loader)
    # Workers/pipelines start now and decode the first batches while the model is built,
    # moved, compiled; a resumed run starts at its batch without decoding the ones before.
    train_loader.start(start_epoch, skip_batches)
    # Every rank scores its own records[rank::world] (each video once, no padding); the scores
    # are gathered and put back in list order, so the metrics are those of one process.
    val_shard = val_records[dist_info.rank::dist_info.world_size]
    val_loader = None
    if val_shard:
        val_loader = build_loader(cfg, dataset, LoaderRequest("val", records=val_shard),
                                  loader=opts.loader, device=device)
        resources.callback(close_loader, val_loader)
    run = _Run(cfg, opts, dist_info, work_dir, dataset.categories, train_loader, val_loader,
               start_epoch=start_epoch, skip_batches=skip_batches, resume_path=resume_path)

    torch.manual_seed(cfg.train.seed + dist_info.rank)
    model = create_model_from_config(cfg.model, run.num_classes)
    if opts.pretrained and ckpt is None:
        load_pretrained(model, opts.pretrained)
    run.train_step = build_train_step(
        cfg, model, device=device, precision=precision, dist_info=dist_info,
        options=StepOptions(compile=opts.compile, compile_mode=opts.compile_mode,
                            cuda_graphs=opts.cuda_graphs, apex=opts.apex),
        restore=lambda plain, optimizer: _resume(run, ckpt, plain, optimizer))
    scaler = run.train_step.scaler
    scaler_state = ckpt.get("scaler") if ckpt is not None else None
    if scaler_state or not scaler.is_enabled():
        scaler.load_state_dict(scaler_state or {})
    elif ckpt is not None:  # saved by an fp32/bf16 run (disabled scaler, empty state)
        log.info("resume: the checkpoint has no GradScaler state; fp16 starts a new loss scale")

    if dist_info.is_main:
        work_dir.mkdir(parents=True, exist_ok=True)
        save_config(cfg, work_dir / "config.yaml")
        log.info("training %s (%d classes) on %s, %s, loader %s, %d train / %d val videos, "
                 "world size %d", cfg.model_name, run.num_classes, device, precision.name,
                 train_loader.backend, len(train_records), len(val_records), dist_info.world_size)
    metrics = MetricsLog(work_dir / "metrics.jsonl" if dist_info.is_main else None,
                         work_dir / "tb" if (opts.tensorboard and dist_info.is_main) else None)
    run.setup = EpochSetup(cfg, dist_info, metrics, run.stop,
                           NonFiniteMonitor(device, cfg.train.max_nonfinite_steps),
                           progress=opts.progress, max_steps=opts.max_steps_per_epoch,
                           process_start=t_process, bn_batches=cfg.train.precise_bn_batches)
    return run


def _resume(run: _Run, ckpt: Optional[dict[str, Any]], model: nn.Module,
            optimizer: torch.optim.Optimizer) -> None:
    """Build the LR schedule and, resuming, restore model, optimizer, schedule, step and RNG.

    Called by :func:`build_train_step` with the plain model and its optimizer, before the model
    is compiled or wrapped (the schedule must exist before the optimizer state is loaded: its
    construction sets the first epoch's learning rate).
    """
    cfg, dist_info = run.cfg, run.dist_info
    run.scheduler = build_lr_scheduler(optimizer, cfg)
    if ckpt is None:
        return
    unwrap(model).load_state_dict(ckpt["model"])
    load_optimizer_state(optimizer, ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    run.step = int(ckpt["step"])
    run.best_top1 = float(ckpt.get("best_top1", -1.0))
    restore_rng(ckpt["rng"], unwrap(model))
    if dist_info.rank:
        # last.pt holds rank 0's generators only: restored on every rank they would give all
        # ranks the same dropout masks and relation draws. Other ranks get their own stream.
        torch.manual_seed(int(np.random.SeedSequence([cfg.train.seed, dist_info.rank, run.step])
                              .generate_state(1)[0]))
    log.info("resumed from %s: epoch %d, step %d%s", run.resume_path, run.start_epoch, run.step,
             f", batch {run.skip_batches} of the epoch" if run.skip_batches else "")


def _checkpoint_state(run: _Run, epoch: int, step: int, batch_in_epoch: int) -> dict[str, Any]:
    """``last.pt`` / ``best.pt`` at global ``step``: at ``batch_in_epoch`` of 0-based ``epoch``
    (mid-epoch), or with ``epoch`` epochs done and ``batch_in_epoch`` 0."""
    train_step = run.train_step
    plain = unwrap(train_step.model)
    opt_state = train_step.optimizer.state_dict()  # fresh dicts per group: converting changes nothing live
    lr_to_floats(opt_state["param_groups"])  # a CUDA-graph run keeps its lr in device tensors
    sched_state = run.scheduler.state_dict()
    sched_state["_last_lr"] = [float(v) for v in sched_state.get("_last_lr", [])]
    return {
        "model": plain.state_dict(),
        "optimizer": opt_state,
        "scaler": train_step.scaler.state_dict(),
        "scheduler": sched_state,
        "epoch": epoch,
        "step": step,
        "batch_in_epoch": batch_in_epoch,
        "rng": capture_rng(plain),
        "config": run.cfg.to_dict(),
        "classes": run.classes,
        "data_geometry": data_geometry(run.cfg),
        "model_name": run.cfg.model_name,
        "best_top1": run.best_top1,
        "fastvid_version": __version__,
    }


def _run_epoch(run: _Run, epoch: int) -> None:
    """Train 0-based ``epoch`` (the rest of it, resumed), precise BN, evaluate, checkpoint.

    Raises :class:`TrainingAborted` after saving ``last.pt`` when a signal stopped the epoch.
    """
    cfg, dist_info, setup = run.cfg, run.dist_info, run.setup
    assert setup is not None
    train_step, optimizer = run.train_step, run.train_step.optimizer
    last = run.work_dir / "last.pt"
    run.train_loader.set_epoch(epoch)

    def save_mid_epoch(at_step: int, batches: int) -> None:
        save_checkpoint(_checkpoint_state(run, epoch, at_step, batches), last)

    setup.save_mid_epoch = save_mid_epoch
    result = train_one_epoch(train_step, run.train_loader, epoch, run.step, run.skip_batches, setup)
    run.step = result["step"]
    run.skip_batches = 0
    if result["stopped"]:
        if dist_info.is_main:
            save_mid_epoch(run.step, result["batches"])
            log.warning("saved %s at epoch %d step %d; continue with --resume auto",
                        last, epoch + 1, run.step)
        signum = run.stop.signum or signal.SIGTERM
        raise TrainingAborted(f"interrupted by {signal.Signals(signum).name}; last.pt saved "
                              f"(epoch {epoch + 1}, step {run.step}); continue with --resume auto",
                              ) from None
    lr = float(optimizer.param_groups[0]["lr"])  # the lr this epoch trained with
    run.scheduler.step()
    record = {"type": "epoch", "epoch": epoch + 1, "step": run.step,
              "train_loss": result["loss"], "lr": lr,
              "next_lr": float(optimizer.param_groups[0]["lr"]),
              "videos_per_s": result["videos_per_s"], "data_wait": result["data_wait"],
              "bad_samples": len(getattr(run.train_loader, "bad_samples", []) or []),
              "epoch_time_s": result["time"]}
    for key in ("startup_overhead_s", "outside_steady_share"):
        if key in result:
            record[key] = result[key]
    plain = unwrap(train_step.model)
    if cfg.train.precise_bn_batches > 0:
        # The epoch's first batches (at most as many as it trained): kept from the epoch,
        # or read again (a resumed epoch, or too big to keep) - the same batches.
        kept = result.pop("bn_batches")
        if kept is None:
            run.train_loader.set_epoch(epoch)
        used = recompute_bn_stats(plain, run.train_loader if kept is None else kept,
                                  result["bn_batches_wanted"], train_step.precision,
                                  train_step.memory_format, dist_info)
        del kept  # device memory back before evaluation
        record["precise_bn_batches"] = used
    is_best = False
    ev = None
    if (epoch + 1) % cfg.train.eval_interval == 0 or epoch + 1 == cfg.train.epochs:
        ev = evaluate_sharded(plain, run.val_loader, run.num_classes, dist_info,
                              average=cfg.model.average_clips,
                              autocast=train_step.precision.autocast)
    if ev is not None:
        record.update(val_top1=ev.top1, val_top5=ev.top5, val_mean_class_acc=ev.mean_class_acc)
        is_best = ev.top1 > run.best_top1
        run.best_top1 = max(run.best_top1, ev.top1)
        log.info("epoch %d: loss %.4f, val top1 %.2f%% top5 %.2f%%", epoch + 1,
                 result["loss"], 100 * ev.top1, 100 * ev.top5)
    if dist_info.is_main:
        setup.metrics.write(record)
        run.history.append(record)
        state = _checkpoint_state(run, epoch + 1, run.step, 0)
        save_checkpoint(state, last)
        if is_best:
            save_checkpoint(state, run.work_dir / "best.pt")
    if dist_info.distributed:
        dist.barrier()


def _finish(run: _Run, seconds: float) -> dict[str, Any]:
    """The run summary (``summary.json`` on rank 0); closes the metrics log and DDP."""
    dist_info, setup = run.dist_info, run.setup
    assert setup is not None
    summary = {"model": run.cfg.model_name, "num_classes": run.num_classes,
               "epochs": run.cfg.train.epochs, "steps": run.step, "best_top1": run.best_top1,
               "device": str(dist_info.device), "precision": run.train_step.precision.name,
               "loader": run.train_loader.backend, "world_size": dist_info.world_size,
               "time_s": seconds, "final": run.history[-1] if run.history else None,
               "fastvid_version": __version__}
    if dist_info.is_main:
        write_text_atomic(run.work_dir / "summary.json", json.dumps(summary, indent=2),
                          "run summary")
    setup.metrics.close()
    if dist_info.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def train_one_epoch(train_step: TrainStep, loader: Any, epoch: int, step: int, skip_batches: int,
                    setup: EpochSetup) -> dict[str, Any]:
    """One epoch of ``loader`` (0-based ``epoch``), after the ``skip_batches`` a resumed run did.

    Returns ``step`` (global, after the epoch), ``loss`` (mean over the steps taken), ``stopped``
    (a signal arrived), ``batches`` (position in the epoch), ``videos_per_s``, ``data_wait``
    (share of the epoch spent waiting for the loader), ``time``, ``bn_batches_wanted`` (precise
    BN's share: ``min(setup.bn_batches, batches of the epoch)``) and ``bn_batches``: those first
    batches as ``[(video,), ...]`` when this call saw all of them and they fit the cache, else None.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    cfg, dist_info = setup.cfg, setup.dist_info
    train_step.model.train()
    total = len(loader)
    if setup.max_steps:
        total = min(total, setup.max_steps)
    main = dist_info.is_main
    show_bar = setup.progress and main
    bar = tqdm(total=total, initial=skip_batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
               unit="batch", disable=not show_bar, leave=False)
    with logging_redirect_tqdm() if show_bar else nullcontext():
        # Log lines go through tqdm.write while the bar is shown: written above the bar
        # instead of glued to its end ("...batch/s]21:30:45 INFO ...").
        return _epoch_steps(train_step, loader, epoch, step, skip_batches, setup, bar, total)


def _epoch_steps(train_step: TrainStep, loader: Any, epoch: int, step: int, skip_batches: int,
                 setup: EpochSetup, bar: Any, total: int) -> dict[str, Any]:
    cfg, dist_info, monitor = setup.cfg, setup.dist_info, setup.monitor
    main = dist_info.is_main
    loss_sum = torch.zeros((), device=dist_info.device)
    n_loss = torch.zeros((), dtype=torch.int64, device=dist_info.device)
    videos, wait, t_epoch = 0, 0.0, time.time()
    t_last = time.time()
    window_videos, window_wait, window_start = 0, 0.0, time.time()
    batches_done = skip_batches
    stopped = False
    out = None
    log_every = max(1, cfg.train.log_interval)
    taken = 0  # steps this call took
    first_done: Optional[float] = None  # when the run's first step finished, if in this epoch
    # Resuming inside an epoch, the loader was started at ``skip_batches`` (loader.start): the
    # sampling of epoch e is a pure function of (seed, e), so it replays exactly the rest.
    bn_wanted = min(setup.bn_batches, total)
    bn_kept: Optional[list[tuple[torch.Tensor]]] = [] if bn_wanted and not skip_batches else None
    for i, (video, label) in enumerate(loader, start=skip_batches):
        if i >= total:
            break
        if bn_kept is not None and len(bn_kept) < bn_wanted:
            if video.numel() * video.element_size() * bn_wanted <= setup.bn_cache_bytes:
                bn_kept.append((video,))
            else:
                bn_kept = None
        t_data = time.time()
        wait += t_data - t_last
        window_wait += t_data - t_last
        out = train_step(video, label)
        good = ~out.skipped
        loss_sum += torch.where(good, out.loss, 0.0)
        n_loss += good.to(torch.int64)
        step += 1
        taken += 1
        monitor.update(out.skipped, step)
        if setup.first_step_done is None:
            # Time to first step (one synchronisation, once per run): start-up, loader warm-up,
            # cuDNN autotuning and compilation all happen before it completes.
            if dist_info.device.type == "cuda":
                torch.cuda.synchronize(dist_info.device)
            first_done = setup.first_step_done = time.time()
            if main and setup.process_start is not None:
                ttfs = first_done - setup.process_start
                setup.metrics.write({"type": "startup", "epoch": epoch + 1, "step": step,
                                     "time_to_first_step_s": ttfs,
                                     "first_epoch_to_first_step_s": first_done - t_epoch})
                log.info("first training step done %.1f s after the process started", ttfs)
        batches_done = i + 1
        videos += label.shape[0]
        window_videos += label.shape[0]
        bar.update(1)
        at_log = step % log_every == 0
        if at_log:
            monitor.check(epoch + 1, log)
            if main:
                elapsed = max(time.time() - window_start, 1e-9)
                rec = {"type": "train", "epoch": epoch + 1, "step": step,
                       "loss": float(out.loss), "lr": float(train_step.optimizer.param_groups[0]["lr"]),
                       "videos_per_s": window_videos * dist_info.world_size / elapsed,
                       "data_wait": window_wait / elapsed}
                setup.metrics.write(rec)
                bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}",
                                vps=f"{rec['videos_per_s']:.1f}", wait=f"{100 * rec['data_wait']:.0f}%")
            window_videos, window_wait, window_start = 0, 0.0, time.time()
        if cfg.train.ckpt_interval and step % cfg.train.ckpt_interval == 0:
            monitor.check(epoch + 1, log)  # never checkpoint past the non-finite limit
            if main:
                setup.save_mid_epoch(step, batches_done)
        # Single process: the flag is a Python value, free to read every step. Under DDP the
        # ranks agree through a collective, at log steps only (it synchronises the host).
        if (not dist_info.distributed or at_log) and any_rank(setup.stop.signum is not None,
                                                               dist_info):
            stopped = True
            break
        t_last = time.time()
    bar.close()
    monitor.check(epoch + 1, log)
    n = int(n_loss)  # synchronises: the epoch's work is done when its time is read
    mean_loss = float(loss_sum) / max(n, 1)
    t_end = time.time()
    elapsed = max(t_end - t_epoch, 1e-9)
    timing: dict[str, float] = {}
    if first_done is not None and taken >= 2:
        # Steady state = the steps after the first; what the epoch spent beyond taken x that
        # step time is start-up (loader, compilation, autotuning, CUDA-graph capture).
        steady = (t_end - first_done) / (taken - 1)
        timing["startup_overhead_s"] = max(0.0, elapsed - taken * steady)
        timing["outside_steady_share"] = timing["startup_overhead_s"] / elapsed
    if dist_info.distributed:
        t = torch.tensor([mean_loss], device=dist_info.device)
        dist.all_reduce(t)
        mean_loss = float(t) / dist_info.world_size
    if bn_kept is not None and len(bn_kept) < bn_wanted:
        bn_kept = None  # stopped early: precise BN is not run then anyway
    return {"step": step, "loss": mean_loss if n else math.nan, "stopped": stopped,
            "bn_batches": bn_kept, "bn_batches_wanted": bn_wanted,
            "batches": batches_done, "videos_per_s": videos * dist_info.world_size / elapsed,
            "data_wait": wait / elapsed, "time": elapsed, **timing}
