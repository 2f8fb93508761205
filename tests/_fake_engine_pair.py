"""A test engine backend whose artifact is two files, like OpenVINO's ``x.xml`` + ``x.bin``: the
exported program in the main file and its weights checksum in ``<name>.bin`` (a companion named
in ``ARTIFACT_COMPANIONS``), which ``load_runner`` requires."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import torch

ARTIFACT_COMPANIONS = (".bin",)


def unavailable_reason(device: torch.device) -> Optional[str]:
    return None


def precision_unsupported(precision: str, device: torch.device) -> Optional[str]:
    return None if precision == "fp32" else "fp32 only"


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    torch.export.save(exported, str(out_path))
    out_path.with_suffix(".bin").write_bytes(b"companion of " + out_path.name.encode())


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    if not path.with_suffix(".bin").read_bytes().startswith(b"companion of "):
        raise RuntimeError("bad companion")
    module = torch.export.load(str(path)).module()

    def run(video: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return module(video)

    return run
