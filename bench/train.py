"""Training-throughput benchmark: fp32 vs AMP and channels-first vs channels-last, side by side.

Each variant trains a fresh copy of the same model on one synthetic batch (forward, backward,
SGD step) so the numbers measure compute only; precision comes from
:func:`fastvid.precision.resolve_precision`, as in ``fastvid train``.
"""
from __future__ import annotations

import copy
import gc
import logging
import time
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn

from fastvid.errors import FastvidError
from fastvid.models import split_outputs
from fastvid.precision import resolve_precision
from fastvid.train import to_channels_last

from .memory import PeakMemory
from .records import load_average, percentiles, stability, stamp

__all__ = ["bench_training", "default_variants"]

log = logging.getLogger(__name__)


def default_variants(device: torch.device | str) -> list[tuple[str, bool]]:
    """(precision, channels_last) pairs: fp32 and bf16 on CPU; fp32, fp16 and bf16 on GPU."""
    precisions = ["fp32", "fp16", "bf16"] if torch.device(device).type == "cuda" else ["fp32", "bf16"]
    return [(p, cl) for p in precisions for cl in (False, True)]


def _memory_format(layout: str) -> torch.memory_format:
    # 3D models see (N, C, T, H, W): channels_last_3d; 2D models fold T into N inside forward, so
    # only their 4D conv weights take channels_last.
    return torch.channels_last_3d if layout == "NCTHW" else torch.channels_last


def bench_training(model: nn.Module, sample_shape: Sequence[int], num_classes: int,
                   device: torch.device | str, *, batch: int = 8,
                   variants: Optional[Sequence[tuple[str, bool]]] = None, warmup: int = 2,
                   iters: int = 10, model_name: str = "",
                   extra: Optional[dict[str, Any]] = None) -> list[dict[str, Any]]:
    """One ``kind: train`` record per (precision, channels_last) variant.

    Args:
        model: the model to copy for every variant (weights are not changed).
        sample_shape: one sample in the batch contract, e.g. ``(8, 3, 112, 112)``.
        num_classes: for the synthetic labels.
        device: where to train.
        batch: videos per step.
        variants: (precision, channels_last) pairs; default :func:`default_variants`.
        warmup, iters: untimed and timed steps.
        model_name, extra: copied into the records.
    """
    device = torch.device(device)
    layout = getattr(model, "input_layout", "NTCHW")
    gen = torch.Generator().manual_seed(0)
    video = torch.randn((batch, *sample_shape), generator=gen).to(device)
    label = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    records: list[dict[str, Any]] = []
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # as fastvid train (and bench.gpu_check) run
    for precision_name, channels_last in (variants or default_variants(device)):
        rec: dict[str, Any] = {"kind": "train", "model": model_name, "precision": precision_name,
                               "channels_last": channels_last, "batch": batch,
                               "input_shape": [batch, *sample_shape], "warmup": warmup, "iters": iters,
                               "data_wait_share": None, "data": "synthetic tensors on the device"}
        rec.update(extra or {})
        stamp(rec, device)
        try:
            precision = resolve_precision(precision_name != "fp32", precision_name, device)
        except FastvidError as exc:  # e.g. fp16 training asked for on a CPU
            rec.update(status="skipped", reason=str(exc))
            records.append(rec)
            continue
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()
        net = copy.deepcopy(model).to(device).train()
        x = video
        if channels_last:
            fmt = _memory_format(layout)
            # Per weight rank, as fastvid train does (TPN-TSM mixes 2D and 3D convolutions).
            net = to_channels_last(net)
            if fmt is torch.channels_last_3d:
                x = video.contiguous(memory_format=fmt)
        # The optimizer fastvid train builds: fused SGD on CUDA.
        optimizer = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9,
                                    fused=True if device.type == "cuda" else None)
        scaler = precision.grad_scaler()
        criterion = nn.CrossEntropyLoss()

        def step() -> None:
            optimizer.zero_grad(set_to_none=True)
            with precision.autocast():
                logits, aux = split_outputs(net(x))
                loss = criterion(logits.float(), label)
                if aux is not None:
                    loss = loss + 0.5 * criterion(aux.float(), label)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()

        log.info("train %s channels_last=%s: measuring (%d warm-up + %d timed steps of %d videos)",
                 precision_name, channels_last, warmup, iters, batch)
        try:
            with PeakMemory(device) as mem:
                for _ in range(warmup):
                    step()
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
            records.append(rec)
            continue
        finally:
            del net, optimizer
        rec.update(status="ok", videos_per_s=round(batch * iters / total, 3), step_ms=percentiles(times))
        rec.update(stability(times, load))
        rec.update(mem.result())
        log.info("train %s channels_last=%s: %.1f videos/s, step %.1f ms%s", precision_name, channels_last,
                 rec["videos_per_s"], rec["step_ms"]["p50"],
                 f" (unstable: {rec['unstable_reason']})" if rec["unstable"] else "")
        records.append(rec)
    base_rec = next((r for r in records
                     if r.get("status") == "ok" and r["precision"] == "fp32" and not r["channels_last"]), None)
    base = base_rec["videos_per_s"] if base_rec else None
    for rec in records:
        if rec.get("status") == "ok" and base:
            rec["ratio_to_fp32"] = round(rec["videos_per_s"] / base, 3)
            if rec is not base_rec and (rec["unstable"] or base_rec["unstable"]):
                rec["ratio_unstable"] = True
                rec["ratio_unstable_reason"] = (f"unstable: {rec['unstable_reason']}" if rec["unstable"] else
                                                f"the fp32 baseline is unstable ({base_rec['unstable_reason']})")
    return records
