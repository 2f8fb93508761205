"""Models: BNInception, TSN/TRN, TPN (SlowOnly-R50, TSM-R50), behind a small registry.

Every video model takes the batch contract's input -- ``(N, T, C, H, W)`` for 2D models,
``(N, C, T, H, W)`` for 3D ones -- and returns logits ``(N, num_classes)`` in eval mode. In train
mode a model with an auxiliary head (TPN) returns ``(logits, aux_logits)``; use
:func:`split_outputs` to read either form.
"""
from __future__ import annotations

from typing import Any

import torch

from ._registry import create_model, list_models, register_model
from .weights import WeightsError, load_weights, read_state_dict

__all__ = ["create_model", "list_models", "register_model", "load_weights", "read_state_dict",
           "WeightsError", "split_outputs", "create_model_from_config"]


def split_outputs(out: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
    """``(logits, aux_logits or None)`` from a model's forward output."""
    if isinstance(out, (tuple, list)):
        return out[0], (out[1] if len(out) > 1 else None)
    return out, None


def create_model_from_config(model_cfg: Any, num_classes: int) -> torch.nn.Module:
    """Build the model named by a :class:`fastvid.config.ModelConfig`."""
    from fastvid.config import model_name

    name = model_name(model_cfg)
    if model_cfg.arch == "trn":
        return create_model(name, num_classes=num_classes, num_segments=model_cfg.num_segments,
                            consensus=model_cfg.consensus, img_feature_dim=model_cfg.img_feature_dim,
                            dropout=model_cfg.dropout, subsample_num=model_cfg.subsample_num,
                            partial_bn=model_cfg.partial_bn)
    return create_model(name, num_classes=num_classes, num_segments=model_cfg.num_segments,
                        dropout=model_cfg.dropout, aux_loss_weight=model_cfg.aux_loss_weight)
