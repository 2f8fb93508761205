"""Checkpoints: atomic writes, RNG state capture, and model loading for inference.

A fastvid checkpoint is a dict of tensors and plain Python values only (so it loads with
``torch.load(..., weights_only=True)``): ``model``, ``optimizer``, ``scaler``, ``scheduler``,
``epoch`` (epochs completed), ``step``, ``batch_in_epoch`` (batches done in a partial epoch),
``rng``, ``config``, ``classes``, ``data_geometry``, ``model_name``, ``best_top1``,
``fastvid_version``.

``data_geometry`` (:func:`data_geometry`) is what the model was trained to see: crop and scale
size, segments / clip length, frame interval, sampling, colour order, mean and std. ``eval``,
``predict``, ``build-engine`` and ``bench`` take it over the YAML's values
(:func:`apply_checkpoint_geometry`), so a model trained at 64 px is evaluated, exported and
timed at 64 px; a ``--set`` of the key wins, and any difference is named in one line.
Checkpoints written before the field existed give the same values from their ``config``.
"""
from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional

import torch
import torch.nn as nn

from fastvid.atomic import write_atomic
from fastvid.errors import CheckpointError
from fastvid.version import __version__

__all__ = ["save_checkpoint", "load_checkpoint", "capture_rng", "restore_rng",
           "load_model_for_inference", "infer_num_classes", "CheckpointError", "GEOMETRY_KEYS",
           "data_geometry", "saved_geometry", "apply_checkpoint_geometry", "explicit_keys",
           "same_value"]

log = logging.getLogger(__name__)

# The config keys that fix what a model sees; a checkpoint carries them (data_geometry).
GEOMETRY_KEYS = ("data.image_size", "data.scale_size", "model.num_segments", "data.clip_len",
                 "data.frame_interval", "data.sampling", "data.color", "data.mean", "data.std")


def save_checkpoint(state: dict[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: temp file in the same folder, fsync, rename.

    A crash (even kill -9) during the write leaves the previous file at ``path`` intact.
    """
    return write_atomic(path, lambda fh: torch.save(state, fh), "checkpoint",
                        needed=state_nbytes(state), error=CheckpointError)


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


def data_geometry(cfg: Any) -> dict[str, Any]:
    """``{config key: value}`` of :data:`GEOMETRY_KEYS` for ``cfg``, colour/mean/std resolved
    (the model's defaults written out, so a reader needs no model registry)."""
    spec = cfg.input_spec
    out: dict[str, Any] = {}
    for key in GEOMETRY_KEYS:
        section, name = key.split(".")
        value = spec[name] if name in ("color", "mean", "std") else getattr(getattr(cfg, section), name)
        out[key] = list(value) if isinstance(value, (list, tuple)) else value
    return out


def saved_geometry(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The geometry a checkpoint (or an engine's description) was trained/built with: its
    ``data_geometry``, else what its ``config`` says (older fastvid checkpoints; a None colour
    or mean there meant the model's default and is left out); ``{}`` for foreign files."""
    geom = raw.get("data_geometry")
    if isinstance(geom, Mapping):
        return {k: v for k, v in geom.items() if k in GEOMETRY_KEYS and v is not None}
    config = raw.get("config")
    if not isinstance(config, Mapping):
        return {}
    out: dict[str, Any] = {}
    for key in GEOMETRY_KEYS:
        section, name = key.split(".")
        part = config.get(section)
        if isinstance(part, Mapping) and part.get(name) is not None:
            out[key] = part[name]
    return out


def explicit_keys(overrides: Iterable[str]) -> set[str]:
    """Config keys a user set with ``--set key=value``."""
    return {item.split("=", 1)[0].strip() for item in overrides if "=" in item}


def same_value(a: Any, b: Any) -> bool:
    """Equal config values: lists element-wise, numbers within 1e-6 relative (JSON round trips)."""
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _show(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_show(v) for v in value) + "]"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def apply_checkpoint_geometry(cfg: Any, raw: Mapping[str, Any], overrides: Iterable[str],
                              where: str, what: str = "checkpoint") -> Any:
    """``cfg`` with the data geometry ``raw`` was trained with (:func:`saved_geometry`).

    A key the user set with ``--set`` keeps the user's value; every other key that differs
    from the config takes the checkpoint's. Both kinds of difference are logged, each in one
    line naming the keys and both values, so nothing changes silently.
    """
    from fastvid.config import replace

    saved = saved_geometry(raw)
    if not saved:
        return cfg
    explicit = explicit_keys(overrides)
    current = data_geometry(cfg)
    taken: dict[str, dict[str, Any]] = {}
    adopted, kept = [], []
    for key, value in saved.items():
        have = current.get(key)
        if same_value(have, value):
            continue
        if key in explicit:
            kept.append(f"{key}={_show(have)} ({what} {_show(value)})")
            continue
        section, name = key.split(".")
        taken.setdefault(section, {})[name] = list(value) if isinstance(value, tuple) else value
        adopted.append(f"{key}={_show(value)} (config {_show(have)})")
    if adopted:
        log.warning("%s was trained with %s: using the %s's (--set KEY=VALUE to override)",
                    where, ", ".join(adopted), what)
    if kept:
        log.warning("%s: --set %s differs from what the %s was trained with", where,
                    ", ".join(kept), what)
    return replace(cfg, **taken) if taken else cfg


def check_config_matches(ckpt_cfg: dict[str, Any], cfg: Any, where: str) -> None:
    """Refuse a checkpoint whose model architecture differs from the config's, naming the keys:
    ``model.arch``, ``model.backbone`` and the configured model's ``spec.arch_keys``."""
    saved = ckpt_cfg.get("model", {}) if isinstance(ckpt_cfg, dict) else {}
    diffs = []
    for key in ("arch", "backbone", *cfg.spec.arch_keys):
        if key in saved and saved[key] != getattr(cfg.model, key):
            diffs.append(f"model.{key}: checkpoint {saved[key]!r} vs config {getattr(cfg.model, key)!r}")
    if diffs:
        raise CheckpointError(f"{where} was trained with another model configuration:\n  "
                              + "\n  ".join(diffs) + "\n(use the run's config.yaml, or --set these keys)")


def load_model_for_inference(cfg: Any, checkpoint: str | Path, device: torch.device | str = "cpu",
                             num_classes: Optional[int] = None,
                             raw: Optional[dict[str, Any]] = None,
                             target_classes: Optional[list[str]] = None,
                             class_order: str = "auto",
                             dataset_info: Optional[Mapping[str, Any]] = None,
                             ) -> tuple[nn.Module, dict[str, Any]]:
    """Build the configured model, load a fastvid/TRN-pytorch/mmaction2 checkpoint, eval mode.

    ``raw``: the checkpoint already read (:func:`load_checkpoint`), so it is not read twice.
    ``target_classes``: the dataset's class names (``categories.txt``); the checkpoint's rows
    are mapped onto them by name (:mod:`fastvid.models.class_order`): ``class_order``
    ``auto`` takes the names a fastvid checkpoint saved, TRN-pytorch's sorted order, or
    mmaction2's label map for the dataset (``dataset_info``, the dataset's ``dataset.json``);
    ``as-is``, ``sorted`` and ``file:PATH`` say it outright. Returns ``(model, meta)`` with
    meta keys ``classes`` (the name of each output row after mapping, or None), ``config``
    (dict), ``num_classes``, ``checkpoint``, ``class_order`` (how the names were decided).
    """
    from fastvid.models.class_order import (check_class_order, checkpoint_origin,
                                            class_permutation, permute_class_rows,
                                            source_classes)

    check_class_order(class_order)
    from fastvid.models import create_model_from_config, load_weights, read_state_dict

    path = Path(checkpoint)
    if raw is None:
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

    origin = checkpoint_origin(raw, state)
    names, how = source_classes(class_order, origin, raw, target_classes, dataset_info or {},
                                str(path))
    if names is not None and len(names) != num_classes:
        raise CheckpointError(f"{path}: its classifier has {num_classes} rows but {how} names "
                              f"{len(names)} classes")
    if names is not None and target_classes is not None:
        if origin == "fastvid" and class_order == "auto" and set(names) != set(target_classes):
            # Trained on other classes: nothing to map by name; eval/predict say what differs.
            log.warning("%s: its classes differ from the dataset's categories.txt; not mapped",
                        path)
            classes = list(names)
        else:
            perm = class_permutation(names, target_classes, str(path), how)
            if perm is not None:
                rows = permute_class_rows(model, cfg.spec, perm, str(path))
                moved = sum(i != j for i, j in enumerate(perm))
                log.warning("%s: %d of %d classes are in another order (%s); rows of %s "
                            "reordered to categories.txt's", path, moved, len(perm), how,
                            ", ".join(rows))
            classes = list(target_classes)
    elif names is not None:
        classes = list(names)
    elif target_classes is not None and origin != "fastvid":
        log.info("%s: class names from categories.txt in its order (%s)", path, how)
        classes = list(target_classes)
    model.eval().to(device)
    meta = {"classes": classes, "config": raw.get("config"), "num_classes": num_classes,
            "checkpoint": str(path), "model_name": raw.get("model_name"),
            "fastvid_version": raw.get("fastvid_version", __version__),
            "origin": origin, "class_order": how}
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
