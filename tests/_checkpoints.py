"""A fastvid checkpoint written without training (random weights, a chosen data geometry), for
the checkpoint-geometry tests of both layers."""
from __future__ import annotations

from pathlib import Path

from fastvid.checkpoint import data_geometry, save_checkpoint
from fastvid.config import load_config
from fastvid.models import create_model_from_config

from _helpers import REPO

CONFIG = str(REPO / "configs" / "trn_bninception_jester.yaml")  # 224 px, 8 segments
TRAINED = ["model.num_segments=4", "data.image_size=64", "data.scale_size=72",
           "data.mean=[100,110,120]"]
CLASSES = ["a", "b", "c"]


def write_checkpoint(path: Path, old: bool = False) -> Path:
    """A fastvid checkpoint 'trained' with TRAINED (random weights); ``old``: as written before
    ``data_geometry`` existed (the config only)."""
    cfg = load_config(CONFIG, TRAINED)
    model = create_model_from_config(cfg.model, len(CLASSES))
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "classes": CLASSES,
             "model_name": cfg.model_name, "fastvid_version": "0.1.0"}
    if not old:
        state["data_geometry"] = data_geometry(cfg)
    return save_checkpoint(state, path)
