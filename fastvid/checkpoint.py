"""Checkpoints: atomic writes, RNG state capture, and model loading for inference.

A fastvid checkpoint is a dict of tensors and plain Python values only (so it loads with
``torch.load(..., weights_only=True)``): ``model``, ``optimizer``, ``scaler``, ``scheduler``,
``epoch`` (epochs completed), ``step``, ``batch_in_epoch`` (batches done in a partial epoch),
``rng``, ``config``, ``classes``, ``model_name``, ``best_top1``, ``fastvid_version``.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from fastvid.errors import CheckpointError, write_error_message
from fastvid.version import __version__

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng",
           "load_model_for_inference", "infer_num_classes", "CheckpointError"]


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A crash (even kill -9) during the write leaves the previous file at ``path`` intact.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise CheckpointError(write_error_message("checkpoint", path, exc)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(state, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, CheckpointError):
            kept = "the previous file is intact" if path.exists() else "no earlier file existed"
            msg = write_error_message("checkpoint", path, exc, needed=state_nbytes(state))
            raise CheckpointError(f"{msg}; {kept}") from exc
        raise
    try:  # make the rename durable
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass
    return path


def state_nbytes(state: Any) -> int:
    """Bytes of the tensors in ``state`` (nested dicts/lists): about the size of its file."""
    if isinstance(state, torch.Tensor):
        return state.numel() * state.element_size()
    if isinstance(state, dict):
        return sum(state_nbytes(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(state_nbytes(v) for v in state)
    return 0


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; a truncated/foreign file raises CheckpointError."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        from fastvid.models.weights import torch_load_error

        raise CheckpointError(torch_load_error(path, exc, "checkpoint")) from exc
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict checkpoint, got {type(obj).__name__}")
    return obj


def _module_generators(model: nn.Module) -> dict[str, torch.Generator]:
    """torch.Generator objects held by modules (e.g. TRN's relation sampler), by qualified name."""
    found = {}
    for mod_name, mod in model.named_modules():
        for attr, value in vars(mod).items():
            if isinstance(value, torch.Generator):
                found[f"{mod_name}.{attr}" if mod_name else attr] = value
    return found


def capture_rng(model: Optional[nn.Module] = None) -> dict[str, Any]:
    state: dict[str, Any] = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if model is not None:
        state["modules"] = {k: g.get_state() for k, g in _module_generators(model).items()}
    return state


def restore_rng(state: dict[str, Any], model: Optional[nn.Module] = None) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        # One state per GPU the saving process saw; resuming on a machine with fewer GPUs must
        # not index a device that is not there (set_rng_state_all enumerates the list).
        torch.cuda.set_rng_state_all(list(state["cuda"])[:torch.cuda.device_count()])
    if model is not None:
        gens = _module_generators(model)
        for key, gstate in state.get("modules", {}).items():
            if key in gens:
                gens[key].set_state(gstate)


_ARCH_KEYS = ("arch", "backbone", "consensus", "num_segments", "img_feature_dim", "subsample_num")


def check_config_matches(ckpt_cfg: dict[str, Any], cfg: Any, where: str) -> None:
    """Refuse a checkpoint whose model architecture differs from the config's, naming the keys."""
    saved = ckpt_cfg.get("model", {}) if isinstance(ckpt_cfg, dict) else {}
    diffs = []
    for key in _ARCH_KEYS:
        # arch and backbone always; the rest only where the configured model is built from them
        if key not in ("arch", "backbone") and key not in cfg.spec.config_keys:
            continue
        if key in saved and saved[key] != getattr(cfg.model, key):
            diffs.append(f"model.{key}: checkpoint {saved[key]!r} vs config {getattr(cfg.model, key)!r}")
    if diffs:
        raise CheckpointError(f"{where} was trained with another model configuration:\n  "
                              + "\n  ".join(diffs) + "\n(use the run's config.yaml, or --set these keys)")


def load_model_for_inference(cfg: Any, checkpoint: str | Path, device: torch.device | str = "cpu",
                             num_classes: Optional[int] = None) -> tuple[nn.Module, dict[str, Any]]:
    """Build the configured model, load a fastvid/TRN-pytorch/mmaction2 checkpoint, eval mode.

    Returns ``(model, meta)`` with meta keys ``classes`` (list or None), ``config`` (dict),
    ``num_classes``, ``checkpoint``.
    """
    from fastvid.models import create_model_from_config, load_weights, read_state_dict

    path = Path(checkpoint)
    raw = load_checkpoint(path)
    classes = raw.get("classes") if isinstance(raw.get("classes"), list) else None
    if isinstance(raw.get("config"), dict):
        check_config_matches(raw["config"], cfg, str(path))
    state = read_state_dict(raw)
    if num_classes is None:
        num_classes = cfg.model.num_classes or (len(classes) if classes else None)
    if num_classes is None:
        num_classes = infer_num_classes(cfg.spec, state, str(path))
    model = create_model_from_config(cfg.model, num_classes)
    load_weights(model, state if not _is_wrapped(raw) else raw)
    model.eval().to(device)
    meta = {"classes": classes, "config": raw.get("config"), "num_classes": num_classes,
            "checkpoint": str(path), "model_name": raw.get("model_name"),
            "fastvid_version": raw.get("fastvid_version", __version__)}
    return model, meta


def _is_wrapped(raw: dict[str, Any]) -> bool:
    return any(k in raw for k in ("model", "state_dict"))


def infer_num_classes(spec: Any, state: dict[str, torch.Tensor], where: str) -> int:
    """Class count from the model's classifier in a state dict (fastvid, TRN-pytorch, mmaction2
    layouts; ``spec`` is the :class:`fastvid.models.ModelSpec` naming the classifiers)."""
    found = spec.num_classes_in(state)
    if found is None:
        raise CheckpointError(f"{where}: cannot tell the number of classes from the checkpoint "
                              f"(none of {', '.join(spec.classifier)} in it); pass "
                              f"--set model.num_classes=N")
    return found
