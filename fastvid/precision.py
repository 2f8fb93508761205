"""Precision in one place: AMP dtype, autocast context and GradScaler, for train, eval and bench."""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import ContextManager

import torch

from fastvid.errors import FastvidError

__all__ = ["Precision", "resolve_precision", "DTYPES"]

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}


@dataclass(frozen=True)
class Precision:
    """What a run computes in: ``amp_dtype`` None means plain fp32."""

    device_type: str
    amp_dtype: torch.dtype | None

    @property
    def name(self) -> str:
        if self.amp_dtype is None:
            return "fp32"
        return {torch.float16: "fp16", torch.bfloat16: "bf16"}[self.amp_dtype]

    @property
    def needs_grad_scaler(self) -> bool:
        # fp16 gradients underflow without loss scaling; bf16 has fp32's exponent range.
        return self.amp_dtype is torch.float16

    def autocast(self) -> ContextManager:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.needs_grad_scaler)


def resolve_precision(amp: bool, amp_dtype: str, device: torch.device | str) -> Precision:
    """Check that the requested precision is usable on ``device`` and describe it.

    fp16 autocast with a GradScaler is a CUDA recipe; on CPU it is refused with a clear error
    (use bf16). bf16 on a GPU without bf16 support (pre-Ampere) is refused likewise.
    """
    device = torch.device(device)
    if not amp or amp_dtype == "fp32":
        return Precision(device.type, None)
    if amp_dtype not in ("fp16", "bf16"):
        raise FastvidError(f"unknown AMP dtype {amp_dtype!r}; expected fp16 or bf16")
    if device.type == "cpu" and amp_dtype == "fp16":
        raise FastvidError("--amp-dtype fp16 needs a CUDA device (GradScaler fp16 training); "
                           "use --amp-dtype bf16 on CPU")
    # including_emulation=False: by default pre-Ampere GPUs, which only emulate bf16, say True too.
    if (device.type == "cuda" and amp_dtype == "bf16"
            and not torch.cuda.is_bf16_supported(including_emulation=False)):
        raise FastvidError("this GPU does not support bf16; use --amp-dtype fp16")
    return Precision(device.type, DTYPES[amp_dtype])
