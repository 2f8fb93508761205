"""A minimal engine backend for tests/unit/test_registry.py: the exported program, saved as it is.

It implements :class:`engines.backends.EngineBackend` and nothing else, to show (and check) that
a backend is one module plus one registration.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch


def unavailable_reason(device: torch.device) -> Optional[str]:
    return None


def precision_unsupported(precision: str, device: torch.device) -> Optional[str]:
    return None if precision == "fp32" else "the fake backend builds fp32 only"


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    torch.export.save(exported, str(out_path))


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    module = torch.export.load(str(path)).module()

    def run(video: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(video)

    return run
