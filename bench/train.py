"""Training-throughput benchmark: fp32 vs AMP, channels-first vs channels-last, and eager vs
torch.compile vs the step captured in a CUDA graph, side by side.

Each variant trains a fresh copy of the same model on one synthetic batch with the training
step of ``fastvid train`` (:class:`fastvid.training.TrainStep`: forward, loss with the auxiliary
head's, backward, gradient clipping, fused SGD), so the numbers measure compute only; precision
comes from :func:`fastvid.precision.resolve_precision`, as in ``fastvid train``.
"""
from __future__ import annotations

import copy
import dataclasses
import gc
import logging
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import torch
import torch.nn as nn

from fastvid.config import Config, ModelConfig, TrainConfig, replace
from fastvid.errors import FastvidError
from fastvid.precision import resolve_precision
from fastvid.training import (StepOptions, build_train_step, compile_unsupported,
                              cuda_graphs_unsupported)

from .flops import annotate_record
from .memory import PeakMemory
from .records import load_average, percentiles, stability, stamp

__all__ = ["bench_training", "TrainBenchSettings", "default_variants", "TRAIN_MODES", "GRAPH_WARMUP"]

#: How the step runs: eager PyTorch, torch.compile'd model, the whole step replayed from a CUDA
#: graph, or both: the compiled model's step captured whole (fastvid train --compile /
#: --cuda-graphs / --compile --cuda-graphs).
TRAIN_MODES = ("eager", "compile", "cuda-graphs", "compile+cuda-graphs")
#: Eager (or compiled) steps before a step is captured: cuDNN autotuning, Inductor's compile of
#: forward and backward, GradScaler's and the allocator's lazy state all happen there, never
#: inside the capture (PyTorch's whole-network capture example warms up 3 iterations).
GRAPH_WARMUP = 3
# A variant: (precision, channels_last) or (precision, channels_last, mode); mode defaults to eager.
TrainVariant = tuple

log = logging.getLogger(__name__)


def default_variants(device: torch.device | str) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs: fp32 and bf16 on CPU; fp32, fp16 and bf16 on GPU."""
    precisions = ["fp32", "fp16", "bf16"] if torch.device(device).type == "cuda" else ["fp32", "bf16"]
    return [(p, cl) for p in precisions for cl in (False, True)]


def _baseline(records: Sequence[dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The fp32 channels-first eager record, the reference of ``ratio_to_fp32``."""
    return next((r for r in records
                 if r.get("status") == "ok" and r["precision"] == "fp32" and not r["channels_last"]
                 and r.get("mode", "eager") == "eager"), None)


def _set_ratio(rec: dict[str, Any], base_rec: Optional[dict[str, Any]]) -> None:
    """``ratio_to_fp32``, flagged unreliable when either figure is unstable."""
    if base_rec is None or rec.get("status") != "ok":
        return
    rec["ratio_to_fp32"] = round(rec["videos_per_s"] / base_rec["videos_per_s"], 3)
    if rec is not base_rec and (rec.get("unstable") or base_rec.get("unstable")):
        rec["ratio_unstable"] = True
        rec["ratio_unstable_reason"] = (f"unstable: {rec['unstable_reason']}" if rec.get("unstable") else
                                        f"the fp32 baseline is unstable ({base_rec['unstable_reason']})")


def _set_ratio_to_eager(rec: dict[str, Any], records: Sequence[dict[str, Any]]) -> None:
    """``ratio_to_eager``: a compiled or captured step's speed-up over the eager step of the same
    precision and layout measured before it (the record is written at once, so only earlier ones)."""
    if rec.get("status") != "ok" or rec.get("mode", "eager") == "eager":
        return
    eager = next((r for r in records if r.get("status") == "ok" and r.get("mode", "eager") == "eager"
                  and r["precision"] == rec["precision"] and r["channels_last"] == rec["channels_last"]), None)
    if eager is not None:
        rec["ratio_to_eager"] = round(rec["videos_per_s"] / eager["videos_per_s"], 3)


@dataclass(frozen=True)
class TrainBenchSettings:
    """What every variant of :func:`bench_training` shares: the measurement and the step.

    ``aux_loss_weight`` and ``clip_grad_norm`` are the step's (``model.aux_loss_weight``,
    ``train.clip_grad_norm`` of the config; defaults: the configs' defaults); the optimizer is
    ``fastvid train``'s SGD at lr 1e-3 (random data: a larger lr only makes non-finite steps).
    """

    batch: int = 8  # videos per step
    warmup: int = 2  # untimed steps
    iters: int = 10  # timed steps
    model_name: str = ""  # copied into the records
    extra: Optional[Mapping[str, Any]] = None  # copied into the records
    aux_loss_weight: float = ModelConfig.aux_loss_weight
    clip_grad_norm: Optional[float] = TrainConfig.clip_grad_norm

    def step_config(self) -> Config:
        """The config :func:`fastvid.training.build_train_step` builds each variant's step from."""
        return replace(Config(), train={"lr": 1e-3, "clip_grad_norm": self.clip_grad_norm},
                       model={"aux_loss_weight": self.aux_loss_weight})


def bench_training(model: nn.Module, sample_shape: Sequence[int], num_classes: int,
                   device: torch.device | str, settings: Optional[TrainBenchSettings] = None, *,
                   variants: Optional[Iterable[TrainVariant]] = None,
                   on_record: Optional[Callable[[dict[str, Any]], None]] = None,
                   **overrides: Any) -> list[dict[str, Any]]:
    """One ``kind: train`` record per (precision, channels_last[, mode]) variant.

    Args:
        model: the model to copy for every variant (weights are not changed).
        sample_shape: one sample in the batch contract, e.g. ``(8, 3, 112, 112)``.
        num_classes: for the synthetic labels.
        device: where to train.
        settings: batch, warm-up and timed steps, record fields, the step's loss weights
            (:class:`TrainBenchSettings`); ``overrides`` (its field names as keywords, e.g.
            ``batch=2, iters=3``) replace some of them.
        variants: (precision, channels_last) pairs or (precision, channels_last, mode) with mode
            in :data:`TRAIN_MODES`; default :func:`default_variants`. Read one at a time, each
            when the previous one is measured, so a lazy iterable can stop handing out variants
            (a time budget).
        on_record: called with each record as soon as it is complete (to save it before the
            next variant starts). Its ``ratio_to_fp32`` is set when the fp32 channels-first
            baseline was measured before it (it is first in :func:`default_variants`), and a
            compiled or captured variant's ``ratio_to_eager`` when the eager step of its
            precision and layout was.
    """
    settings = dataclasses.replace(settings or TrainBenchSettings(), **overrides)
    batch, warmup, iters = settings.batch, settings.warmup, settings.iters
    step_cfg = settings.step_config()
    device = torch.device(device)
    gen = torch.Generator().manual_seed(0)
    video = torch.randn((batch, *sample_shape), generator=gen).to(device)
    label = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    records: list[dict[str, Any]] = []

    def done(rec: dict[str, Any]) -> None:
        annotate_record(rec, model, sample_shape, training=True)
        records.append(rec)
        _set_ratio(rec, _baseline(records))
        _set_ratio_to_eager(rec, records)
        if on_record is not None:
            on_record(rec)

    for variant in (variants or default_variants(device)):
        precision_name, channels_last, *rest = variant
        mode = rest[0] if rest else "eager"
        rec: dict[str, Any] = {"kind": "train", "model": settings.model_name, "precision": precision_name,
                               "channels_last": channels_last, "mode": mode, "batch": batch,
                               "input_shape": [batch, *sample_shape], "warmup": warmup, "iters": iters,
                               "data_wait_share": None, "data": "synthetic tensors on the device"}
        rec.update(settings.extra or {})
        stamp(rec, device)
        try:
            precision = resolve_precision(precision_name != "fp32", precision_name, device)
            if mode not in TRAIN_MODES:
                raise FastvidError(f"unknown training mode {mode!r}; known: {', '.join(TRAIN_MODES)}")
            reason = cuda_graphs_unsupported(device, None) if "cuda-graphs" in mode else None
            if reason is None and "compile" in mode:
                reason = compile_unsupported(device)
            if reason:
                raise FastvidError(reason)
        except FastvidError as exc:  # e.g. fp16 training or CUDA graphs asked for on a CPU
            rec.update(status="skipped", reason=str(exc))
            done(rec)
            continue
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        # fastvid train's step on a fresh copy: channels-last per weight rank (TPN-TSM mixes 2D
        # and 3D convolutions), fused SGD with zeroed momentum buffers. Compiled in Inductor's
        # default mode: its Triton kernels fuse BN/ReLU/concat (BNInception's Inception blocks)
        # and it captures no CUDA graph itself, so the whole step -- forward, backward, clipping
        # and the fused SGD -- can then be captured in one graph (compile+cuda-graphs).
        # reduce-overhead would capture only the compiled regions and cannot nest in our
        # capture; max-autotune-no-cudagraphs autotunes for minutes, more than a cold GPU visit
        # has. Captured: untimed GRAPH_WARMUP eager (compiled) steps, the step that captures and
        # replays, and one more replay; the timed steps are replays only.
        graph_warmup = max(warmup, GRAPH_WARMUP)
        n_warmup = graph_warmup + 2 if "cuda-graphs" in mode else warmup
        train_step: Any = build_train_step(
            step_cfg, copy.deepcopy(model), device=device, precision=precision,
            options=StepOptions(channels_last=channels_last, compile="compile" in mode,
                                cuda_graphs="cuda-graphs" in mode, graph_warmup=graph_warmup))

        def step() -> None:
            train_step(video, label)

        log.info("train %s channels_last=%s %s: measuring (%d warm-up + %d timed steps of %d videos)",
                 precision_name, channels_last, mode, n_warmup, iters, batch)
        try:
            with PeakMemory(device) as mem:
                t_warm = time.perf_counter()
                for _ in range(n_warmup):
                    step()
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                rec["warmup_s"] = round(time.perf_counter() - t_warm, 3)  # compile / capture / autotune
                load = load_average()
                times = []
                if device.type == "cuda":
                    torch.cuda.synchronize(device)
                t0 = time.perf_counter()
                for _ in range(iters):
                    t = time.perf_counter()
                    step()
                    if device.type == "cuda":  # one sync per step: step time includes the GPU work
                        torch.cuda.synchronize(device)
                    times.append((time.perf_counter() - t) * 1e3)
                total = time.perf_counter() - t0
        except RuntimeError as exc:  # e.g. an op without a bf16 kernel on this device
            rec.update(status="failed", reason=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
            done(rec)
            continue
        finally:  # free this variant's model before the next one is copied
            train_step = None
        rec.update(status="ok", videos_per_s=round(batch * iters / total, 3), step_ms=percentiles(times))
        rec.update(stability(times, load))
        rec.update(mem.result())
        log.info("train %s channels_last=%s %s: %.1f videos/s, step %.1f ms%s", precision_name,
                 channels_last, mode, rec["videos_per_s"], rec["step_ms"]["p50"],
                 f" (unstable: {rec['unstable_reason']})" if rec["unstable"] else "")
        done(rec)
    base_rec = _baseline(records)
    for rec in records:  # variants measured before the baseline
        _set_ratio(rec, base_rec)
    return records
