"""A small model registry with a spec per video model (in the spirit of timm's pretrained cfg).

``@register_model`` registers a constructor under its function name; a video model registers
with the facts the rest of fastvid needs about it, as a :class:`ModelSpec`::

    @register_model(arch="tpn", backbone="resnet3d_slowonly50", input_layout="NCTHW", ...)
    def tpn_slowonly_r50(num_classes, ...): ...

Loaders (layout, normalisation), training (memory format), checkpoints (input shape, class
count), engines and benchmarks read the spec -- ``model.spec`` on a model built by
:func:`create_model`, or :func:`get_model_spec` / :func:`find_model` for a name -- and never
test a backbone name themselves. The config's allowed ``model.arch`` / ``model.backbone`` pairs
are the registered specs; the config's crop, frames and sampling default to the spec's, and a
family's own keys are checked by its spec's ``validate_config``.

This module imports no model file (as timm's ``_registry.py``): ``fastvid/models/__init__.py``
imports every family after it, so importing any part of ``fastvid.models`` registers them all,
and a plugin module (``FASTVID_PLUGINS``) registers more the same way.
"""
from __future__ import annotations

from dataclasses import dataclass, field
import inspect
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

from fastvid.errors import FastvidError

__all__ = ["ModelSpec", "register_model", "create_model", "list_models", "get_model_spec",
           "find_model", "model_specs", "input_layout", "memory_format", "layout_memory_format",
           "config_kwargs", "UnknownModel", "LAYOUTS", "SAMPLINGS"]

LAYOUTS = ("NTCHW", "NCTHW")
SAMPLINGS = ("tsn", "dense")


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
        crop_size: The crop the published recipes train and test at: ``data.image_size``
            when the config does not set it.
        num_frames: Default segments (2D) or clip length (3D): ``model.num_segments`` and
            ``data.clip_len`` when the config does not set them.
        sampling: How the published recipe samples a view's frames: ``tsn`` (one frame per
            segment, TSN/TSM) or ``dense`` (``clip_len`` frames ``frame_interval`` apart,
            SlowOnly): ``data.sampling`` when the config does not set it.
        classifier: Module names whose ``weight`` has one row per class, most specific first
            (the first one present in a state dict gives its class count).
        config_keys: ``ModelConfig`` fields the constructor takes (besides ``num_classes``).
        arch_keys: Those of :attr:`config_keys` that fix the architecture (another value gives
            other weights or another computation, e.g. TRN's ``consensus``): a checkpoint
            trained with other values is refused, naming them (``dropout`` is not one).
        class_rows: Regular expressions over module names: the first that matches a module of
            the built model names every ``Linear`` with one output row per class (all of
            TRN's relation scales, TPN's head and auxiliary head), the rows a foreign
            checkpoint's class order permutes. Default: :attr:`classifier`'s names.
        validate_config: Checks the family's own ``ModelConfig`` keys (a config after its
            defaults are resolved) and raises :class:`fastvid.errors.ConfigError` naming the
            key; called by config validation, so ``config.py`` holds no family's rules.

    A constructor that declares a ``spec`` parameter is given this spec by
    :func:`create_model`, so the model reads its layout and normalisation from here rather than
    keeping copies of its own.
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
    sampling: str = "tsn"
    config_keys: tuple[str, ...] = field(default=())
    arch_keys: tuple[str, ...] = field(default=())
    class_rows: tuple[str, ...] = field(default=())
    validate_config: Optional[Callable[[Any], None]] = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.input_layout not in LAYOUTS:
            raise ValueError(f"{self.name}: input_layout must be one of {LAYOUTS}, got {self.input_layout!r}")
        if self.color not in ("BGR", "RGB"):
            raise ValueError(f"{self.name}: color must be BGR or RGB, got {self.color!r}")
        if not set(self.arch_keys) <= set(self.config_keys):
            raise ValueError(f"{self.name}: arch_keys {self.arch_keys} must be among config_keys")
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"{self.name}: sampling must be one of {SAMPLINGS}, got {self.sampling!r}")

    @property
    def is_3d(self) -> bool:
        """A 3D model takes ``(N, C, T, H, W)``; a 2D one ``(N, T, C, H, W)``."""
        return self.input_layout == "NCTHW"

    @property
    def memory_format(self) -> torch.memory_format:
        """The channels-last format of the input batch (:func:`layout_memory_format`)."""
        return layout_memory_format(self.input_layout)

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


def layout_memory_format(layout: str) -> torch.memory_format:
    """The channels-last format of an input batch in ``layout``: ``channels_last_3d`` for a 3D
    model's ``NCTHW`` clip; ``channels_last`` for ``NTCHW`` (2D models fold T into N inside
    forward, so only their 4-D conv weights are channels-last and the 5-D input stays as it is)."""
    return torch.channels_last_3d if layout == "NCTHW" else torch.channels_last


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


def list_models() -> list[str]:
    """Every registered model (video models and plain backbones)."""
    return sorted(_MODELS)


def model_specs() -> list[ModelSpec]:
    """The specs of every registered video model, by name."""
    return [_SPECS[k] for k in sorted(_SPECS)]


def get_model_spec(name: str) -> ModelSpec:
    """The spec of a registered video model; :class:`UnknownModel` names the known ones."""
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

    A video model gets its :class:`ModelSpec` as ``model.spec`` (and as the constructor's
    ``spec`` argument where it declares one).
    """
    if name not in _MODELS:
        raise UnknownModel(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    fn = _MODELS[name]
    spec = _SPECS.get(name)
    if spec is not None and "spec" in inspect.signature(fn).parameters:
        kwargs = {**kwargs, "spec": spec}
    model = fn(**kwargs)
    if spec is not None:
        model.spec = spec
    return model


def input_layout(model: Any, default: str = "NTCHW") -> str:
    """The batch-contract layout ``model`` takes: its spec's, else its ``input_layout``, else
    ``default``. The fallbacks serve bare modules built without the registry (engine
    export and benchmarks of an arbitrary module, the tests' tiny models); registered models
    carry no layout of their own."""
    spec = getattr(model, "spec", None)
    if isinstance(spec, ModelSpec):
        return spec.input_layout
    return str(getattr(model, "input_layout", default))


def memory_format(model: Any) -> torch.memory_format:
    """The channels-last format of ``model``'s input batch (:attr:`ModelSpec.memory_format`, or
    from its ``input_layout`` for a model built without the registry)."""
    return layout_memory_format(input_layout(model))


def config_kwargs(spec: ModelSpec, model_cfg: Any) -> dict[str, Any]:
    """The constructor arguments ``spec.config_keys`` read from a ``ModelConfig``."""
    return {key: getattr(model_cfg, key) for key in spec.config_keys}

