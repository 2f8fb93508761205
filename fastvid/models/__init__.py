"""Models: BNInception, TSN/TRN, TPN (SlowOnly-R50, TSM-R50), behind a small registry.

Every video model takes the batch contract's input -- ``(N, T, C, H, W)`` for 2D models,
``(N, C, T, H, W)`` for 3D ones (``model.spec.input_layout``) -- and returns logits
``(N, num_classes)`` in eval mode. In train mode a model with an auxiliary head (TPN) returns
``(logits, aux_logits)``; use :func:`split_outputs` to read either form. Each registered video
model carries a :class:`ModelSpec` (layout, normalisation, crop, frames, classifier), which the
rest of fastvid reads instead of testing model names.

Every family module is imported here, after the registry (as timm's ``models/__init__.py``):
importing ``fastvid.models`` registers them all, and ``_registry`` imports no model file, so
there is no import circle. A new family is its model file + one import line below.
"""
from __future__ import annotations

from typing import Any

import torch

from fastvid.errors import WeightsError

from ._registry import (ModelSpec, UnknownModel, config_kwargs, create_model, find_model,
                        get_model_spec, input_layout, layout_memory_format, list_models,
                        memory_format, model_specs, register_model)
from .weights import load_pretrained, load_weights, read_state_dict

# The families register themselves on import.
from . import bninception, tpn, trn  # noqa: E402,F401  (after the registry they import)

__all__ = ["ModelSpec", "UnknownModel", "create_model", "list_models", "register_model",
           "get_model_spec", "find_model", "model_specs", "input_layout", "memory_format",
           "layout_memory_format", "load_weights",
           "load_pretrained", "read_state_dict", "WeightsError", "split_outputs",
           "create_model_from_config", "to_channels_last"]


def split_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits or None)`` from a model's forward output."""
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def create_model_from_config(model_cfg: Any, num_classes: int) -> torch.nn.Module:
    """Build the model of a :class:`fastvid.config.ModelConfig` (``arch`` + ``backbone``)."""
    spec = find_model(model_cfg.arch, model_cfg.backbone)
    return create_model(spec.name, num_classes=num_classes, **config_kwargs(spec, model_cfg))


def to_channels_last(model: torch.nn.Module) -> torch.nn.Module:
    """Put every convolution's weight in channels-last: ``channels_last`` for 4-D weights,
    ``channels_last_3d`` for 5-D ones; returns ``model``.

    ``model.to(memory_format=...)`` cannot do this for a model that mixes 2D and 3D
    convolutions (TPN-TSM: 2D backbone, 3D neck): it converts every 4-D and 5-D tensor to the
    one format given and raises "required rank 4 tensor to use channels_last format" on the
    other rank.
    """
    for m in model.modules():
        if isinstance(m, torch.nn.modules.conv._ConvNd) and m.weight.dim() in (4, 5):
            m.to(memory_format=torch.channels_last if m.weight.dim() == 4 else torch.channels_last_3d)
    return model
