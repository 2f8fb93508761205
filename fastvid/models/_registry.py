"""A small model registry with a spec per video model (in the spirit of timm's pretrained cfg).

``@register_model`` registers a constructor under its function name; a video model registers
with the facts the rest of fastvid needs about it, as a :class:`ModelSpec`::

    @register_model(arch="tpn", backbone="resnet3d_slowonly50", input_layout="NCTHW", ...)
    def tpn_slowonly_r50(num_classes, ...): ...

Loaders (layout, normalisation), training (memory format), checkpoints (input shape, class
count), engines and benchmarks read the spec -- ``model.spec`` on a model built by
:func:`create_model`, or :func:`get_model_spec` / :func:`find_model` for a name -- and never
test a backbone name themselves. The config's allowed ``model.arch`` / ``model.backbone`` pairs
are the registered specs.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from fastvid.errors import FastvidError

__all__ = ["ModelSpec", "register_model", "create_model", "list_models", "get_model_spec",
           "find_model", "model_specs", "input_layout", "memory_format", "config_kwargs",
           "UnknownModel"]

LAYOUTS = ("NTCHW", "NCTHW")


class UnknownModel(FastvidError, ValueError):
    """No registered model has that name (or arch/backbone pair); the message lists the known ones."""


@dataclass(frozen=True)
class ModelSpec:
    """What fastvid needs to know about a registered video model.

    Attributes:
        name: Registry name (the constructor's function name), e.g. ``trn_bninception``.
        arch: ``model.arch`` in configs (``trn``, ``tpn``).
        backbone: ``model.backbone`` in configs.
        input_layout: ``NTCHW`` (2D model over T segments: frames folded into the batch) or
            ``NCTHW`` (3D model over a clip).
        color: Channel order the weights expect (``BGR`` or ``RGB``), values 0-255.
        mean, std: Per-channel normalisation in 0-255 units, in ``color`` order.
        crop_size: The crop the published recipes train and test at.
        num_frames: Default segments (2D) or clip length (3D).
        classifier: Module names whose ``weight`` has one row per class, most specific first
            (the first one present in a state dict gives its class count).
        config_keys: ``ModelConfig`` fields the constructor takes (besides ``num_classes``).
        class_rows: Regular expressions over module names: the first that matches a module of
            the built model names every ``Linear`` with one output row per class (all of
            TRN's relation scales, TPN's head and auxiliary head), the rows a foreign
            checkpoint's class order permutes. Default: :attr:`classifier`'s names.
    """

    name: str
    arch: str
    backbone: str
    input_layout: str
    color: str
    mean: tuple[float, ...]
    std: tuple[float, ...]
    classifier: tuple[str, ...]
    crop_size: int = 224
    num_frames: int = 8
    config_keys: tuple[str, ...] = field(default=())
    class_rows: tuple[str, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.input_layout not in LAYOUTS:
            raise ValueError(f"{self.name}: input_layout must be one of {LAYOUTS}, got {self.input_layout!r}")
        if self.color not in ("BGR", "RGB"):
            raise ValueError(f"{self.name}: color must be BGR or RGB, got {self.color!r}")

    @property
    def is_3d(self) -> bool:
        """A 3D model takes ``(N, C, T, H, W)``; a 2D one ``(N, T, C, H, W)``."""
        return self.input_layout == "NCTHW"

    @property
    def memory_format(self) -> torch.memory_format:
        """The channels-last format of the input batch (2D models fold T into N inside forward,
        so only their 4-D conv weights are channels-last and the 5-D input stays as it is)."""
        return torch.channels_last_3d if self.is_3d else torch.channels_last

    def input_shape(self, batch: int, frames: int, size: int) -> tuple[int, int, int, int, int]:
        """Batch-contract shape of ``batch`` clips of ``frames`` frames of ``size`` pixels."""
        if self.is_3d:
            return (batch, 3, frames, size, size)
        return (batch, frames, 3, size, size)

    def num_classes_in(self, state: dict[str, torch.Tensor]) -> Optional[int]:
        """Class count from the first classifier of :attr:`classifier` in ``state`` (None if absent).

        Keys may carry a ``module.`` prefix (DataParallel saves).
        """
        for name in self.classifier:
            for prefix in ("", "module."):
                weight = state.get(f"{prefix}{name}.weight")
                if isinstance(weight, torch.Tensor) and weight.dim() >= 2:
                    return int(weight.shape[0])
        return None


_MODELS: dict[str, Callable[..., nn.Module]] = {}
_SPECS: dict[str, ModelSpec] = {}


def register_model(fn: Optional[Callable[..., nn.Module]] = None, /,
                   **spec: Any) -> Any:
    """Register a constructor under its function name: ``@register_model`` for plain models
    (e.g. the ImageNet ``bninception``), ``@register_model(arch=..., ...)`` with the
    :class:`ModelSpec` fields (but ``name``) for video models."""

    def add(func: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        name = func.__name__
        if name in _MODELS:
            raise ValueError(f"model {name!r} registered twice")
        if spec:
            new = ModelSpec(name=name, **spec)
            clash = [s.name for s in _SPECS.values() if (s.arch, s.backbone) == (new.arch, new.backbone)]
            if clash:
                raise ValueError(f"{name}: {new.arch}+{new.backbone} is already {clash[0]}")
            _SPECS[name] = new
        _MODELS[name] = func
        return func

    return add(fn) if fn is not None else add


def _import_families() -> None:
    # Model files register themselves on import; import them lazily so that importing the
    # registry stays cheap and a broken family names itself in the traceback.
    from . import bninception, tpn, trn  # noqa: F401


def list_models() -> list[str]:
    """Every registered model (video models and plain backbones)."""
    _import_families()
    return sorted(_MODELS)


def model_specs() -> list[ModelSpec]:
    """The specs of every registered video model, by name."""
    _import_families()
    return [_SPECS[k] for k in sorted(_SPECS)]


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered video model; :class:`UnknownModel` names the known ones."""
    _import_families()
    if name not in _SPECS:
        raise UnknownModel(f"unknown video model {name!r}; known: {', '.join(sorted(_SPECS))}")
    return _SPECS[name]


def find_model(arch: str, backbone: str) -> ModelSpec:
    """The spec registered for a config's ``(model.arch, model.backbone)`` pair."""
    for spec in model_specs():
        if (spec.arch, spec.backbone) == (arch, backbone):
            return spec
    known = ", ".join(f"{s.arch}+{s.backbone}" for s in model_specs())
    raise UnknownModel(f"unsupported model.arch/model.backbone {arch}+{backbone}; known: {known}")


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; an unknown name raises with the known ones.

    A video model gets its :class:`ModelSpec` as ``model.spec``.
    """
    _import_families()
    if name not in _MODELS:
        raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    model = _MODELS[name](**kwargs)
    spec = _SPECS.get(name)
    if spec is not None:
        layout = getattr(model, "input_layout", spec.input_layout)
        if layout != spec.input_layout:  # the class and its registration disagree: a bug here
            raise AssertionError(f"{name}: model input_layout {layout} != spec {spec.input_layout}")
        model.spec = spec
    return model


def input_layout(model: Any, default: str = "NTCHW") -> str:
    """The batch-contract layout ``model`` takes: its spec's, its ``input_layout``, or ``default``."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        return spec.input_layout
    return str(getattr(model, "input_layout", default))


def memory_format(model: Any) -> torch.memory_format:
    """The channels-last format of ``model``'s input batch (:attr:`ModelSpec.memory_format`, or
    from its ``input_layout`` for a model built without the registry)."""
    return torch.channels_last_3d if input_layout(model) == "NCTHW" else torch.channels_last


def config_kwargs(spec: ModelSpec, model_cfg: Any) -> dict[str, Any]:
    """The constructor arguments ``spec.config_keys`` read from a ``ModelConfig``."""
    return {key: getattr(model_cfg, key) for key in spec.config_keys}

