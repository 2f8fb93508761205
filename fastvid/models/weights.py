"""Loading weights from fastvid, TRN-pytorch, mmaction2 and ImageNet BNInception files."""
from __future__ import annotations

import logging
import re
from collections import OrderedDict
from pathlib import Path
from typing import Any, Mapping

import torch
import torch.nn as nn

from fastvid.errors import WeightsError

__all__ = ["WeightsError", "load_weights", "load_pretrained", "read_state_dict", "check_and_load",
           "torch_load_error"]


log = logging.getLogger(__name__)


def torch_load_error(path: Path, exc: BaseException, what: str = "weights file") -> str:
    """One line saying why ``torch.load(path, weights_only=True)`` failed, and what to do.

    torch's own message for a weights-only failure advises re-running with
    ``weights_only=False``, even for random bytes; for a file of unknown origin that means
    running whatever code its pickle names, so it is not passed on.
    """
    text = str(exc)
    unsafe = re.search(r"GLOBAL ([\w.]+)", text)
    if unsafe:
        return (f"{what} {path} holds Python objects besides tensors ({unsafe.group(1)}), which "
                f"fastvid does not unpickle: that could run code from the file. If you trust its "
                f"source, save just its tensors (its state dict) with torch.save and pass that file")
    detail = re.search(r"WeightsUnpickler error:\s*(\S[^\n]*)", text)
    if detail:
        reason = detail.group(1).strip()
    elif isinstance(exc, EOFError) or (path.is_file() and path.stat().st_size == 0):
        reason = "the file ends early" if path.stat().st_size else "the file is empty"
    else:
        # torch's zip reader appends a paragraph of advice: keep its first sentence.
        first = text.strip().splitlines()[0] if text.strip() else ""
        reason = f"{type(exc).__name__}: {first.split('. ')[0][:160]}" if first else type(exc).__name__
    return f"cannot read {what} {path}: not a PyTorch file, or truncated ({reason})"


def read_state_dict(source: str | Path | Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Return the raw tensor mapping stored in a checkpoint file or dict.

    Accepts a bare state dict, or a dict holding it under ``model`` (fastvid), ``state_dict``
    (TRN-pytorch, mmaction2) or ``model_state``. Files are read with ``weights_only=True``.
    """
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.is_file():
            raise WeightsError(f"weights file not found: {path}")
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, pickle of arbitrary objects, ...
            raise WeightsError(torch_load_error(path, exc)) from exc
        where = str(path)
    else:
        obj, where = source, "<state dict>"
    if isinstance(obj, Mapping):
        for key in ("model", "state_dict", "model_state"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{where}: no state dict found (expected tensors, or a dict with "
                           f"'model' or 'state_dict')")
    return OrderedDict(obj)


def _summarise(keys: list[str], limit: int = 12) -> str:
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_and_load(model: nn.Module, state: Mapping[str, torch.Tensor], where: str = "weights",
                   strict: bool = True) -> dict[str, list[str]]:
    """Load ``state`` into ``model``; on mismatch raise naming missing/unexpected/shape keys."""
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state and state[k].shape != own[k].shape]
    if shapes or (strict and (missing or unexpected)):
        lines = [f"{where} does not fit {type(model).__name__}:"]
        if missing:
            lines.append(f"  missing keys ({len(missing)}): {_summarise(missing)}")
        if unexpected:
            lines.append(f"  unexpected keys ({len(unexpected)}): {_summarise(unexpected)}")
        if shapes:
            lines.append(f"  shape mismatches ({len(shapes)}): {_summarise(shapes, 6)}")
        raise WeightsError("\n".join(lines))
    model.load_state_dict(state, strict=False)
    return {"missing": missing, "unexpected": unexpected}


def load_weights(model: nn.Module, source: str | Path | Mapping[str, Any],
                 strict: bool = True) -> dict[str, list[str]]:
    """Load a checkpoint into ``model``, converting foreign key layouts first.

    A model may define ``convert_state_dict(state) -> state`` to map other layouts (TRN-pytorch's
    ``module.base_model.*``, mmaction2's, ImageNet BNInception's (1, C) BN tensors) onto its own
    names; this function unwraps the file, converts, and loads strictly. Returns the lists of
    missing and unexpected keys (both empty under ``strict=True``).
    """
    where = str(source) if isinstance(source, (str, Path)) else "<state dict>"
    state = read_state_dict(source)
    convert = getattr(model, "convert_state_dict", None)
    if convert is not None:
        state = convert(state)
    return check_and_load(model, state, where=where, strict=strict)


def load_pretrained(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Initialise from an ImageNet BNInception file, a TRN-pytorch or mmaction2 checkpoint.

    Unlike :func:`load_weights` this is for fine-tuning: tensors whose shape differs from the
    model's (a classifier for another class count) and keys the file lacks (new heads) are left
    at their initialisation and reported, never silently.
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
