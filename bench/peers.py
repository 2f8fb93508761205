"""Peer implementations timed beside fastvid: ``fastvid bench --backends mmaction2``.

The speed targets compare fastvid with what users run today. For the TPN models that is
mmaction2 1.2's own recognizer built from its published TPN model config
(``configs/_base_/models/tpn_slowonly_r50.py``: ``Recognizer3D`` with ``ResNet3dSlowOnly`` + ``TPN``
+ ``TPNHead``; ``tpn_tsm_r50.py``: ``Recognizer2D`` with ``ResNetTSM``), run eager in fp32 as
mmaction2's inference does: ``extract_feat`` then ``cls_head``, the scores before the softmax.
Its weights are fastvid's (the module names are mmaction2's, see ``fastvid/models/tpn.py``), so
both sides compute the same function; the largest logit difference is recorded.
"""
from __future__ import annotations

import importlib.util
import os
import sys
import types
from typing import Any, Callable, Optional

import torch
import torch.nn as nn

__all__ = ["PEER_BACKEND", "PEER_CONFIGS", "peer_unavailable", "build_mmaction_tpn", "build_peer"]

PEER_BACKEND = "mmaction2"
# fastvid model -> (mmaction2 base model config, frames folded into the batch by the recognizer)
PEER_CONFIGS: dict[str, tuple[str, bool]] = {
    "tpn_slowonly_r50": ("tpn_slowonly_r50.py", False),
    "tpn_tsm_r50": ("tpn_tsm_r50.py", True),
}


def peer_unavailable(model_name: str, precision: str) -> Optional[str]:
    """Why mmaction2 cannot be timed for ``model_name`` at ``precision``, or None."""
    if model_name not in PEER_CONFIGS:
        return (f"no mmaction2 peer for {model_name or 'this model'} (peers: "
                f"{', '.join(PEER_CONFIGS)})")
    if precision != "fp32":
        return "the mmaction2 peer is timed as its users run it: eager fp32 only"
    missing = [m for m in ("mmaction", "mmengine", "mmcv") if importlib.util.find_spec(m) is None]
    if missing:
        return (f"mmaction2 is not importable (missing {', '.join(missing)}; pip install "
                f"mmaction2==1.2.0 mmengine mmcv-lite, or fastvid[test])")
    return None


def _import_mmaction() -> tuple[Any, Any]:
    """mmaction2 1.2.0's package and model registry, around two packaging problems of its wheel."""
    # The wheel lacks mmaction/models/localizers/drn, which localizers/__init__ imports.
    for name in ("mmaction.models.localizers.drn", "mmaction.models.localizers.drn.drn"):
        if name not in sys.modules:
            mod = types.ModuleType(name)
            mod.__path__ = []  # a package, so that the ``.drn`` submodule import resolves
            mod.DRN = type("DRN", (nn.Module,), {})  # type: ignore[attr-defined]
            sys.modules[name] = mod
    # mmaction/__init__ asserts mmcv < 2.2.0; mmcv-lite 2.2.0 has everything TPN needs.
    import warnings

    import mmcv

    real_version = mmcv.__version__
    mmcv.__version__ = "2.1.0"
    try:
        with warnings.catch_warnings():  # mmcv-lite lacks the compiled ops TPN never uses
            warnings.simplefilter("ignore", UserWarning)
            import mmaction
            from mmaction.registry import MODELS
            from mmaction.utils import register_all_modules
            register_all_modules()
    finally:
        mmcv.__version__ = real_version
    return mmaction, MODELS


def build_mmaction_tpn(config_name: str, num_classes: int, num_segments: Optional[int] = None) -> nn.Module:
    """mmaction2's TPN recognizer of ``configs/_base_/models/<config_name>`` with ``num_classes``
    classes (and the TSM backbone's ``num_segments`` when given), randomly initialised."""
    from mmengine.config import Config

    mmaction, registry = _import_mmaction()
    path = os.path.join(os.path.dirname(mmaction.__file__), ".mim", "configs", "_base_", "models", config_name)
    cfg = Config.fromfile(path).model
    cfg.backbone.pretrained = None  # no download: the caller loads the weights
    cfg.cls_head.num_classes = num_classes
    cfg.neck.aux_head_cfg.out_channels = num_classes
    if num_segments is not None:
        cfg.backbone.num_segments = int(num_segments)  # the temporal shift's segment count
    return registry.build(cfg)


def build_peer(model_name: str, model: nn.Module, device: torch.device,
               example: torch.Tensor) -> tuple[Callable[[torch.Tensor], torch.Tensor], dict[str, Any]]:
    """mmaction2's recognizer for ``model_name`` with ``model``'s weights, as ``video -> logits``
    on ``device`` taking fastvid's batch contract, plus what the record should say about it."""
    from importlib import metadata

    config_name, frames_in_batch = PEER_CONFIGS[model_name]
    num_classes = int(getattr(model, "num_classes", 0) or 400)
    # fastvid's weights are loaded below
    peer = build_mmaction_tpn(config_name, num_classes,
                              int(example.shape[1]) if frames_in_batch else None).eval().to(device)
    ours = model.state_dict()
    theirs = peer.state_dict()
    shared = {k: v for k, v in ours.items() if k in theirs and theirs[k].shape == v.shape}
    peer.load_state_dict(shared, strict=False)

    def run(video: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            # Recognizer3D takes (N, clips, C, T, H, W); Recognizer2D (N, T, C, H, W) as fastvid.
            inputs = video if frames_in_batch else video.unsqueeze(1)
            feat, kwargs = peer.extract_feat(inputs, stage="neck")
            return peer.cls_head(feat, **kwargs)

    with torch.inference_mode():
        diff = float((run(example) - model(example)).abs().max())
    parts = " + ".join(type(m).__name__ for m in (peer.backbone, peer.neck, peer.cls_head))
    info = {"peer": f"mmaction2 {metadata.version('mmaction2')} {type(peer).__name__} ({parts}) from "
                    f"configs/_base_/models/{config_name}, eager",
            "peer_weights": f"fastvid's ({len(shared)} of {len(theirs)} tensors by name)",
            "peer_max_abs_diff": diff}
    return run, info
