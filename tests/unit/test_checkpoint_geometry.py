"""A checkpoint carries the data geometry it was trained with; eval/predict/build-engine/bench use
it instead of the YAML's unless ``--set`` says otherwise, and say so in one line."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from _helpers import REPO, invoke_ok
from fastvid.checkpoint import (apply_checkpoint_geometry, data_geometry, save_checkpoint,
                                saved_geometry)
from fastvid.config import load_config
from fastvid.models import create_model_from_config

CONFIG = str(REPO / "configs" / "trn_bninception_jester.yaml")  # 224 px, 8 segments
TRAINED = ["model.num_segments=4", "data.image_size=64", "data.scale_size=72",
           "data.mean=[100,110,120]"]
CLASSES = ["a", "b", "c"]


def _checkpoint(path: Path, old: bool = False) -> Path:
    """A fastvid checkpoint 'trained' with TRAINED (random weights); ``old``: as written before
    ``data_geometry`` existed (the config only)."""
    cfg = load_config(CONFIG, TRAINED)
    model = create_model_from_config(cfg.model, len(CLASSES))
    state = {"model": model.state_dict(), "config": cfg.to_dict(), "classes": CLASSES,
             "model_name": cfg.model_name, "fastvid_version": "0.1.0"}
    if not old:
        state["data_geometry"] = data_geometry(cfg)
    return save_checkpoint(state, path)


def test_geometry_saved_applied_and_overridden(caplog):
    trained = load_config(CONFIG, TRAINED)
    geometry = data_geometry(trained)
    assert geometry["data.image_size"] == 64 and geometry["data.color"] == "BGR"
    assert geometry["data.mean"] == [100, 110, 120] and geometry["model.num_segments"] == 4
    # An old checkpoint's config gives the same keys (its None colour/std: the model's defaults).
    old = saved_geometry({"config": trained.to_dict()})
    assert {k: v for k, v in geometry.items() if k not in ("data.color", "data.std")} == old
    assert saved_geometry({"state_dict": {}}) == {}  # foreign: nothing to apply
    yaml_cfg = load_config(CONFIG, ["data.image_size=96"])
    with caplog.at_level(logging.WARNING, logger="fastvid.checkpoint"):
        cfg = apply_checkpoint_geometry(yaml_cfg, {"data_geometry": geometry},
                                        ["data.image_size=96"], "best.pt")
    assert cfg.data.image_size == 96  # --set wins
    assert (cfg.data.scale_size, cfg.model.num_segments, cfg.input_spec["mean"]) == (72, 4, [100, 110, 120])
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert lines[0].startswith("best.pt was trained with data.scale_size=72 (config 256), "
                               "model.num_segments=4 (config 8), data.mean=[100,110,120] "
                               "(config [104,117,128])")
    assert "--set data.image_size=96 (checkpoint 64)" in lines[1]
    caplog.clear()
    same = apply_checkpoint_geometry(trained, {"data_geometry": geometry}, [], "best.pt")
    assert same.to_dict() == trained.to_dict() and not caplog.records  # nothing differs, nothing said


def test_an_old_checkpoint_gives_its_geometry_from_its_config(tmp_path):
    from fastvid.cli.common import load_inference_config

    ckpt = _checkpoint(tmp_path / "old.pt", old=True)
    cfg, raw = load_inference_config(CONFIG, (), str(ckpt))
    assert "data_geometry" not in raw
    assert (cfg.data.image_size, cfg.data.scale_size, cfg.model.num_segments) == (64, 72, 4)
    assert cfg.input_spec["mean"] == [100, 110, 120]
    cfg, _ = load_inference_config(CONFIG, ("data.image_size=80",), str(ckpt))
    assert cfg.data.image_size == 80


@pytest.mark.slow  # ONNX export + benchmark of BNInception-TRN: 133-160 s measured on the shared, loaded 2 cores
def test_built_and_benchmarked_at_the_checkpoints_64_px(tmp_path):
    ckpt = _checkpoint(tmp_path / "best.pt")
    out = tmp_path / "engine"
    invoke_ok(["build-engine", "-c", CONFIG, "--checkpoint", str(ckpt), "--backend", "onnx",
               "--device", "cpu", "--out", str(out)])
    meta = json.loads(Path(f"{out}.onnx.json").read_text())
    assert meta["image_size"] == 64 and meta["input_shape"][1:] == [4, 3, 64, 64]
    assert meta["mean"] == [100, 110, 120] and meta["classes"] == CLASSES
    bench = tmp_path / "bench"
    invoke_ok(["bench", "-c", CONFIG, "--checkpoint", str(ckpt), "--backends", "eager",
               "--iters", "1", "--warmup", "0", "--device", "cpu", "--out", str(bench)])
    records = json.loads((bench / "results.json").read_text())
    assert records and all(r["input_shape"][1:] == [4, 3, 64, 64] for r in records)
    # the engine carries the geometry too: predict with it needs no --set either
    frames = tmp_path / "clip"
    from _media import write_frame_folder

    write_frame_folder(frames, 8, 72, 96)
    pred = tmp_path / "p.json"
    invoke_ok(["predict", str(frames), "-c", CONFIG, "--engine", f"{out}.onnx", "--device", "cpu",
               "--topk", "1", "--out", str(pred)])
    assert json.loads(pred.read_text())["windows"][0]["topk"][0]["label"] in CLASSES
