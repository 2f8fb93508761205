"""A test engine backend whose artifact is two files, like OpenVINO's ``x.xml`` + ``x.bin``: the
exported program in the main file (saved and run by :mod:`_fake_engine`) and a companion
``<name>.bin`` (named in ``ARTIFACT_COMPANIONS``), which ``load_runner`` requires."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

import _fake_engine
from _fake_engine import precision_unsupported, unavailable_reason  # noqa: F401 - the module contract

ARTIFACT_COMPANIONS = (".bin",)


def compile_and_save(exported: torch.export.ExportedProgram, example: torch.Tensor, *, precision: str,
                     batch: int, max_batch: int, out_path: Path, device: torch.device) -> None:
    _fake_engine.compile_and_save(exported, example, precision=precision, batch=batch,
                                  max_batch=max_batch, out_path=out_path, device=device)
    out_path.with_suffix(".bin").write_bytes(b"companion of " + out_path.name.encode())


def load_runner(path: Path, device: torch.device, meta: dict[str, Any]) -> Callable[[torch.Tensor], torch.Tensor]:
    if not path.with_suffix(".bin").read_bytes().startswith(b"companion of "):
        raise RuntimeError("bad companion")
    return _fake_engine.load_runner(path, device, meta)
