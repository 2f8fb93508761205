"""Training: AMP + channels-last loop, TSN/TPN SGD recipes, DDP through torchrun, exact resume.

The loop is flat (torchvision's references/video_classification/train.py is the model): build
everything in :func:`train`, run :func:`train_one_epoch` per epoch, evaluate, checkpoint. It never
asks which loader or precision it has: the loader yields the batch contract on the device, and
:class:`fastvid.precision.Precision` supplies the autocast context and the GradScaler.
"""
from __future__ import annotations

import json
import logging
import math
import os
import signal
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch
import torch.distributed as dist
import torch.nn as nn

from fastvid.checkpoint import (capture_rng, check_config_matches, load_checkpoint, restore_rng,
                                save_checkpoint)
from fastvid.config import Config, save_config
from fastvid.errors import FastvidError, TrainingAborted
from fastvid.evaluate import EvalResult, evaluate, interleave_shards, summarize
from fastvid.models import create_model_from_config, read_state_dict, split_outputs
from fastvid.models.weights import WeightsError
from fastvid.precision import Precision, resolve_precision
from fastvid.version import __version__

__all__ = ["TrainOptions", "train", "build_optimizer", "load_pretrained", "DistInfo",
           "init_distributed", "unwrap", "recompute_bn_stats", "evaluate_sharded",
           "process_group", "to_channels_last"]

log = logging.getLogger(__name__)


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
    apex: bool = False  # apex.optimizers.FusedSGD when importable
    tensorboard: bool = False
    progress: bool = True
    max_steps_per_epoch: Optional[int] = None  # smoke tests and benchmarks


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_pref: str) -> DistInfo:
    """Join the torchrun job if there is one (NCCL on GPU, gloo on CPU); pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device_pref == "cuda" or (device_pref == "auto" and torch.cuda.is_available())
    if use_cuda and not torch.cuda.is_available():
        raise FastvidError("--device cuda: no CUDA device is available")
    if use_cuda:
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        import datetime

        dist.init_process_group(backend="nccl" if use_cuda else "gloo",
                                timeout=datetime.timedelta(minutes=10))
    return DistInfo(rank, world, local_rank, device)


@contextmanager
def process_group(device_pref: str) -> Iterator[DistInfo]:
    """:func:`init_distributed` for one command, leaving torchrun's process group at the end."""
    info = init_distributed(device_pref)
    try:
        yield info
    finally:
        if info.distributed and dist.is_initialized():
            dist.destroy_process_group()


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model under DDP and torch.compile wrappers (whose state_dict keys are clean)."""
    while True:
        if isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        elif hasattr(model, "_orig_mod"):
            model = model._orig_mod
        else:
            return model


def build_optimizer(model: nn.Module, cfg: Config, device: torch.device,
                    apex: bool = False) -> torch.optim.Optimizer:
    """SGD with the model's param-group policy (TSN: bias lr x2, no decay on bias/BN)."""
    tc = cfg.train
    policy = getattr(model, "optim_param_groups", None)
    if policy is not None:
        groups = policy(tc.lr, tc.weight_decay)
    else:
        groups = [{"params": [p for p in model.parameters() if p.requires_grad],
                   "lr": tc.lr, "weight_decay": tc.weight_decay}]
    groups = [g for g in groups if len(list(g["params"]))]
    if apex:
        try:
            from apex.optimizers import FusedSGD
        except ImportError as exc:
            raise FastvidError("--apex: apex is not installed (build it from source with "
                               "--cuda_ext; see README)") from exc
        return FusedSGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
                        weight_decay=tc.weight_decay)
    return torch.optim.SGD(groups, lr=tc.lr, momentum=tc.momentum, nesterov=tc.nesterov,
                           weight_decay=tc.weight_decay, fused=True if device.type == "cuda" else None)


def load_pretrained(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise from an ImageNet BNInception file, a TRN-pytorch or mmaction2 checkpoint.

    Unlike :func:`fastvid.models.load_weights` this is for fine-tuning: tensors whose shape
    differs from the model's (a classifier for another class count) and keys the file lacks
    (new heads) are left at their initialisation and reported, never silently.
    """
    state = read_state_dict(path)
    convert = getattr(model, "convert_state_dict", None)
    if convert is not None:
        state = convert(state)
    own = model.state_dict()
    loaded = {k: v for k, v in state.items() if k in own and v.shape == own[k].shape}
    if not loaded:
        raise WeightsError(f"--pretrained {path}: no tensor of the file matches "
                           f"{type(model).__name__} (is it for another architecture?)")
    report = {
        "loaded": sorted(loaded),
        "shape_mismatch": sorted(k for k, v in state.items() if k in own and v.shape != own[k].shape),
        "not_in_file": sorted(k for k in own if k not in state and not k.endswith("num_batches_tracked")),
        "unused": sorted(k for k in state if k not in own),
    }
    model.load_state_dict(loaded, strict=False)
    log.info("pretrained %s: loaded %d tensors; kept initialisation for %d (%d shape mismatches); "
             "%d tensors of the file unused", path, len(report["loaded"]), len(report["not_in_file"]) +
             len(report["shape_mismatch"]), len(report["shape_mismatch"]), len(report["unused"]))
    for key in ("shape_mismatch", "not_in_file", "unused"):
        if report[key]:
            log.info("  %s: %s%s", key, ", ".join(report[key][:8]),
                     " ..." if len(report[key]) > 8 else "")
    return report


class _StopFlag:
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
    def installed(self) -> Iterator["_StopFlag"]:
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


def _any_rank(flag: bool, dist_info: DistInfo) -> bool:
    """True when ``flag`` is set on any rank, so that every rank stops at the same step."""
    if not dist_info.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=dist_info.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item() > 0)


class _MetricsLog:
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


def _num_classes(cfg: Config, dataset: Any, records: list) -> int:
    if cfg.model.num_classes:
        return cfg.model.num_classes
    if dataset.num_classes:
        return dataset.num_classes
    return max(r.label for r in records) + 1


def _checkpoint_state(model: nn.Module, optimizer: torch.optim.Optimizer, scaler: Any,
                      scheduler: Any, cfg: Config, classes: Optional[list[str]], epoch: int,
                      step: int, batch_in_epoch: int, best_top1: float) -> dict[str, Any]:
    plain = unwrap(model)
    return {
        "model": plain.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scaler": scaler.state_dict(),
        "scheduler": scheduler.state_dict(),
        "epoch": epoch,
        "step": step,
        "batch_in_epoch": batch_in_epoch,
        "rng": capture_rng(plain),
        "config": cfg.to_dict(),
        "classes": classes,
        "model_name": cfg.model_name,
        "best_top1": best_top1,
        "fastvid_version": __version__,
    }


def _memory_format(cfg: Config) -> torch.memory_format:
    return torch.channels_last_3d if cfg.model.backbone == "resnet3d_slowonly50" else torch.channels_last


def to_channels_last(model: nn.Module) -> nn.Module:
    """Put every convolution's weight in channels-last: ``channels_last`` for 4-D weights,
    ``channels_last_3d`` for 5-D ones; returns ``model``.

    ``model.to(memory_format=...)`` cannot do this for a model that mixes 2D and 3D
    convolutions (TPN-TSM: 2D backbone, 3D neck): it converts every 4-D and 5-D tensor to the
    one format given and raises "required rank 4 tensor to use channels_last format" on the
    other rank.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.conv._ConvNd) and m.weight.dim() in (4, 5):
            m.to(memory_format=torch.channels_last if m.weight.dim() == 4 else torch.channels_last_3d)
    return model


def _load_optimizer_state(optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
    """``optimizer.load_state_dict(state)``, keeping this run's ``fused``/``foreach`` choice.

    Saved param groups carry the implementation flags of the run that wrote them and
    ``load_state_dict`` copies them over: a CPU checkpoint (``fused=None``) resumed on CUDA would
    run the unfused SGD, which GradScaler (that sees the optimizer built with ``fused=True``)
    then hands ``found_inf`` - an AssertionError in fp16 training.
    """
    keep = [{k: g[k] for k in ("fused", "foreach") if k in g} for g in optimizer.param_groups]
    optimizer.load_state_dict(state)
    for group, flags in zip(optimizer.param_groups, keep):
        group.update(flags)


def _to_memory_format(video: torch.Tensor, fmt: torch.memory_format) -> torch.Tensor:
    # 2D models fold (N, T) into the batch inside forward; the 5D input stays contiguous and the
    # channels_last weights make the convolutions pick the NHWC kernels.
    if fmt is torch.channels_last_3d and video.dim() == 5:
        return video.contiguous(memory_format=fmt)
    return video


def train(cfg: Config, opts: TrainOptions) -> dict[str, Any]:
    """Train as configured; returns the run summary (also written to ``summary.json``)."""
    from fastvid.data.lists import resolve_dataset
    from fastvid.loaders import build_loader

    dist_info = init_distributed(opts.device)
    device = dist_info.device
    precision = resolve_precision(opts.amp, opts.amp_dtype, device)
    work_dir = Path(opts.work_dir)
    if dist_info.is_main:
        try:
            work_dir.mkdir(parents=True, exist_ok=True)
            probe = work_dir / ".write_test"
            probe.write_text("ok")
            probe.unlink()
        except OSError as exc:
            raise FastvidError(f"work dir {work_dir} is not writable: {exc}") from exc

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
    classes = dataset.categories

    resume_path = _resume_path(opts, work_dir)
    ckpt = None
    if resume_path is not None:
        ckpt = load_checkpoint(resume_path)
        check_config_matches(ckpt.get("config", {}), cfg, str(resume_path))

    torch.manual_seed(cfg.train.seed + dist_info.rank)
    model = create_model_from_config(cfg.model, num_classes)
    if opts.pretrained and ckpt is None:
        load_pretrained(model, opts.pretrained)
    fmt = _memory_format(cfg)
    model = to_channels_last(model.to(device))
    if device.type == "cuda":
        # Fixed input shapes: let cuDNN time its algorithms once (torchvision's reference does).
        torch.backends.cudnn.benchmark = True
    optimizer = build_optimizer(model, cfg, device, apex=opts.apex)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(cfg.train.lr_steps),
                                                     gamma=cfg.train.lr_gamma)
    scaler = precision.grad_scaler()

    start_epoch, step, skip_batches, best_top1 = 0, 0, 0, -1.0
    if ckpt is not None:
        unwrap(model).load_state_dict(ckpt["model"])
        _load_optimizer_state(optimizer, ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler") or not scaler.is_enabled():
            scaler.load_state_dict(ckpt.get("scaler", {}))
        else:  # saved by an fp32/bf16 run (disabled scaler, empty state): start a fresh scale
            log.info("resume: the checkpoint has no GradScaler state; fp16 starts a new loss scale")
        start_epoch, step = int(ckpt["epoch"]), int(ckpt["step"])
        skip_batches = int(ckpt.get("batch_in_epoch", 0))
        best_top1 = float(ckpt.get("best_top1", -1.0))
        restore_rng(ckpt["rng"], unwrap(model))
        if dist_info.rank:
            # last.pt holds rank 0's generators only: restored on every rank they would give all
            # ranks the same dropout masks and relation draws. Other ranks get their own stream.
            torch.manual_seed(int(np.random.SeedSequence([cfg.train.seed, dist_info.rank, step])
                                  .generate_state(1)[0]))
        log.info("resumed from %s: epoch %d, step %d%s", resume_path, start_epoch, step,
                 f", batch {skip_batches} of the epoch" if skip_batches else "")

    if opts.compile:
        model = torch.compile(model)
    if dist_info.distributed:
        model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    train_loader = build_loader(cfg, dataset, "train", loader=opts.loader, device=device,
                                shard_id=dist_info.rank, num_shards=dist_info.world_size,
                                records=train_records)
    # Every rank scores its own records[rank::world] (each video once, no padding); the scores
    # are gathered and put back in list order, so the metrics are those of one process.
    val_shard = val_records[dist_info.rank::dist_info.world_size]
    val_loader = None
    if val_shard:
        val_loader = build_loader(cfg, dataset, "val", loader=opts.loader, device=device,
                                  records=val_shard)
    criterion = nn.CrossEntropyLoss(label_smoothing=cfg.train.label_smoothing)

    metrics = _MetricsLog(work_dir / "metrics.jsonl" if dist_info.is_main else None,
                          work_dir / "tb" if (opts.tensorboard and dist_info.is_main) else None)
    if dist_info.is_main:
        save_config(cfg, work_dir / "config.yaml")
        log.info("training %s (%d classes) on %s, %s, loader %s, %d train / %d val videos, "
                 "world size %d", cfg.model_name, num_classes, device, precision.name,
                 train_loader.backend, len(train_records), len(val_records), dist_info.world_size)

    history: list[dict[str, Any]] = []
    stop = _StopFlag()
    t_start = time.time()
    with stop.installed():
        for epoch in range(start_epoch, cfg.train.epochs):
            train_loader.set_epoch(epoch)

            def save_mid_epoch(at_step: int, batches: int, epoch: int = epoch) -> None:
                save_checkpoint(_checkpoint_state(model, optimizer, scaler, scheduler, cfg, classes,
                                                  epoch, at_step, batches, best_top1),
                                work_dir / "last.pt")

            result = _train_one_epoch(model, criterion, optimizer, scaler, train_loader, precision,
                                      cfg, epoch, step, skip_batches, fmt, metrics, stop, dist_info,
                                      opts, save_mid_epoch)
            step = result["step"]
            skip_batches = 0
            if result["stopped"]:
                if dist_info.is_main:
                    save_mid_epoch(step, result["batches"])
                    log.warning("saved %s at epoch %d step %d; continue with --resume auto",
                                work_dir / "last.pt", epoch, step)
                signum = stop.signum or signal.SIGTERM
                raise TrainingAborted(f"interrupted by {signal.Signals(signum).name}; last.pt saved "
                                      f"(epoch {epoch}, step {step}); continue with --resume auto",
                                      ) from None
            scheduler.step()
            record = {"type": "epoch", "epoch": epoch + 1, "step": step,
                      "train_loss": result["loss"], "lr": optimizer.param_groups[0]["lr"],
                      "videos_per_s": result["videos_per_s"], "data_wait": result["data_wait"],
                      "bad_samples": len(getattr(train_loader, "bad_samples", []) or []),
                      "epoch_time_s": result["time"]}
            if cfg.train.precise_bn_batches > 0:
                # The loader is still at this epoch: its first batches again, no new randomness.
                used = recompute_bn_stats(unwrap(model), train_loader, cfg.train.precise_bn_batches,
                                          precision, fmt, dist_info)
                record["precise_bn_batches"] = used
            is_best = False
            ev = None
            if (epoch + 1) % cfg.train.eval_interval == 0 or epoch + 1 == cfg.train.epochs:
                ev = evaluate_sharded(unwrap(model), val_loader, num_classes, dist_info,
                                      average=cfg.model.average_clips, autocast=precision.autocast)
            if ev is not None:
                record.update(val_top1=ev.top1, val_top5=ev.top5, val_mean_class_acc=ev.mean_class_acc)
                is_best = ev.top1 > best_top1
                best_top1 = max(best_top1, ev.top1)
                log.info("epoch %d: loss %.4f, val top1 %.2f%% top5 %.2f%%", epoch + 1,
                         result["loss"], 100 * ev.top1, 100 * ev.top5)
            if dist_info.is_main:
                metrics.write(record)
                history.append(record)
                state = _checkpoint_state(model, optimizer, scaler, scheduler, cfg, classes,
                                          epoch + 1, step, 0, best_top1)
                save_checkpoint(state, work_dir / "last.pt")
                if is_best:
                    save_checkpoint(state, work_dir / "best.pt")
            if dist_info.distributed:
                dist.barrier()

    summary = {"model": cfg.model_name, "num_classes": num_classes, "epochs": cfg.train.epochs,
               "steps": step, "best_top1": best_top1, "device": str(device),
               "precision": precision.name, "loader": train_loader.backend,
               "world_size": dist_info.world_size, "time_s": time.time() - t_start,
               "final": history[-1] if history else None, "fastvid_version": __version__}
    if dist_info.is_main:
        (work_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if dist_info.distributed:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def evaluate_sharded(model: Callable[[torch.Tensor], torch.Tensor], loader: Optional[Any],
                     num_classes: int, dist_info: DistInfo, average: str = "prob",
                     autocast: Optional[Callable[[], Any]] = None, sync_buffers: bool = True,
                     **eval_kwargs: Any) -> Optional[EvalResult]:
    """Evaluate on every rank's shard of the val list; the merged result on rank 0, else None.

    ``loader`` yields this rank's ``records[rank::world]`` (None when that is empty); the
    scores of all ranks are gathered and put back in list order (:func:`interleave_shards`).

    Under DDP the ranks' BN running statistics differ slightly (DDP broadcasts rank 0's buffers
    at the start of each forward, then every rank updates them with its own batch), so rank 0's
    buffers - the ones the checkpoint keeps - are broadcast first (``sync_buffers``; pointless
    for a model every rank loaded from one file, impossible for an engine): the scores are those
    of the saved model, whichever rank computed them. ``eval_kwargs`` go to :func:`evaluate`.
    """
    if not dist_info.distributed:
        if loader is None:
            return None
        return evaluate(model, loader, view_dims=4, average=average, autocast=autocast,
                        **eval_kwargs)
    if sync_buffers and isinstance(model, nn.Module):
        for buf in model.buffers():
            dist.broadcast(buf, src=0)
    if loader is not None:
        part = evaluate(model, loader, view_dims=4, average=average, autocast=autocast,
                        **eval_kwargs)
        mine = (part.scores, part.labels, part.views, part.bad_samples)
    else:  # fewer val videos than ranks
        mine = (np.zeros((0, num_classes), np.float32), np.zeros(0, np.int64), 1, [])
    parts: list[Any] = [None] * dist_info.world_size
    dist.all_gather_object(parts, mine)
    if not dist_info.is_main:
        return None
    scores, labels = interleave_shards([(p[0], p[1]) for p in parts])
    views = max(p[2] for p in parts)
    result = summarize(scores, labels, views, [b for p in parts for b in p[3]])
    log.info("evaluated %d val videos on %d ranks", len(labels), dist_info.world_size)
    return result


@torch.no_grad()
def recompute_bn_stats(model: nn.Module, loader: Any, num_batches: int, precision: Precision,
                       memory_format: torch.memory_format, dist_info: Optional[DistInfo] = None,
                       ) -> int:
    """Replace the running statistics of the *trainable* BN layers by exact averages.

    Runs ``num_batches`` batches of ``loader`` (the training loader: the statistics must come
    from training data) through ``model`` in training mode without gradients, with each BN's
    ``momentum`` set to None (cumulative average). Layers that partial BN keeps in eval mode are
    left alone. Under DDP every rank averages its own shard, then the statistics are averaged
    over ranks. Returns the number of batches used.
    """
    model.train()  # applies partial BN: frozen layers stay in eval mode
    bns = [m for m in model.modules()
           if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training and m.track_running_stats]
    if not bns or num_batches <= 0:
        return 0
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    used = 0
    try:
        for video, *_ in loader:
            with precision.autocast():
                model(_to_memory_format(video, memory_format))
            used += 1
            if used >= num_batches:
                break
    finally:
        for m, momentum in zip(bns, momenta):
            m.momentum = momentum
    if dist_info is not None and dist_info.distributed:
        for m in bns:
            for buf in (m.running_mean, m.running_var):
                dist.all_reduce(buf)
                buf.div_(dist_info.world_size)
    return used


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


def _train_one_epoch(model: nn.Module, criterion: nn.Module, optimizer: torch.optim.Optimizer,
                     scaler: torch.amp.GradScaler, loader: Any, precision: Precision, cfg: Config,
                     epoch: int, step: int, skip_batches: int, fmt: torch.memory_format,
                     metrics: _MetricsLog, stop: _StopFlag, dist_info: DistInfo,
                     opts: TrainOptions, save_mid_epoch: Callable[[int, int], None]) -> dict[str, Any]:
    from tqdm import tqdm

    model.train()
    aux_weight = cfg.model.aux_loss_weight
    total = len(loader)
    if opts.max_steps_per_epoch:
        total = min(total, opts.max_steps_per_epoch)
    bar = tqdm(total=total, initial=skip_batches, desc=f"epoch {epoch + 1}/{cfg.train.epochs}",
               unit="batch", disable=not (opts.progress and dist_info.is_main), leave=False)
    loss_sum = torch.zeros((), device=dist_info.device)
    n_loss, nonfinite_run, videos, wait, t_epoch = 0, 0, 0, 0.0, time.time()
    t_last = time.time()
    window_videos, window_wait, window_start = 0, 0.0, time.time()
    batches_done = skip_batches
    stopped = False
    for i, (video, label) in enumerate(loader):
        if i < skip_batches:
            # Resuming inside an epoch: the sampling of epoch e is a pure function of (seed, e),
            # so skipping the consumed batches replays exactly the remaining ones.
            continue
        if i >= total:
            break
        t_data = time.time()
        wait += t_data - t_last
        window_wait += t_data - t_last
        video = _to_memory_format(video, fmt)
        with precision.autocast():
            logits, aux = split_outputs(model(video))
            loss = criterion(logits.float(), label)
            if aux is not None:
                loss = loss + aux_weight * criterion(aux.float(), label)
        # One sync per step: a non-finite loss must not reach the weights. With fp16 the
        # GradScaler also skips steps whose gradients overflowed. Under DDP every rank must take
        # the same branch: a rank that skipped backward would leave the others waiting in DDP's
        # gradient all-reduce (and pair its next collective with theirs).
        finite = torch.isfinite(loss.detach()).float().reshape(1)
        if dist_info.distributed:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if not bool(finite):
            nonfinite_run += 1
            optimizer.zero_grad(set_to_none=True)
            log.warning("non-finite loss at epoch %d step %d (%d in a row); step skipped",
                        epoch + 1, step + 1, nonfinite_run)
            if nonfinite_run >= cfg.train.max_nonfinite_steps:
                raise TrainingAborted(
                    f"{nonfinite_run} consecutive non-finite losses (train.max_nonfinite_steps); "
                    f"stopping. The last checkpoint was not overwritten; lower train.lr or use "
                    f"--amp-dtype bf16")
        else:
            nonfinite_run = 0
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.train.clip_grad_norm:
                scaler.unscale_(optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.train.clip_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            loss_sum += loss.detach()
            n_loss += 1
        step += 1
        batches_done = i + 1
        videos += label.shape[0]
        window_videos += label.shape[0]
        bar.update(1)
        if step % cfg.train.log_interval == 0 and dist_info.is_main:
            elapsed = max(time.time() - window_start, 1e-9)
            rec = {"type": "train", "epoch": epoch + 1, "step": step,
                   "loss": float(loss.detach()), "lr": optimizer.param_groups[0]["lr"],
                   "videos_per_s": window_videos * dist_info.world_size / elapsed,
                   "data_wait": window_wait / elapsed}
            metrics.write(rec)
            bar.set_postfix(loss=f"{rec['loss']:.3f}", lr=f"{rec['lr']:.2e}",
                            vps=f"{rec['videos_per_s']:.1f}", wait=f"{100 * rec['data_wait']:.0f}%")
            window_videos, window_wait, window_start = 0, 0.0, time.time()
        if opts.progress and dist_info.is_main and step % cfg.train.log_interval != 0:
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", refresh=False)
        if cfg.train.ckpt_interval and step % cfg.train.ckpt_interval == 0 and dist_info.is_main:
            save_mid_epoch(step, batches_done)
        if _any_rank(stop.signum is not None, dist_info):
            stopped = True
            break
        t_last = time.time()
    bar.close()
    elapsed = max(time.time() - t_epoch, 1e-9)
    mean_loss = float(loss_sum) / max(n_loss, 1)
    if dist_info.distributed:
        t = torch.tensor([mean_loss], device=dist_info.device)
        dist.all_reduce(t)
        mean_loss = float(t) / dist_info.world_size
    return {"step": step, "loss": mean_loss if n_loss else math.nan, "stopped": stopped,
            "batches": batches_done, "videos_per_s": videos * dist_info.world_size / elapsed,
            "data_wait": wait / elapsed, "time": elapsed}
