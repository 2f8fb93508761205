"""A checkpoint carries the data geometry it was trained with; eval/predict/build-engine/bench use
it instead of the YAML's unless ``--set`` says otherwise, and say so in one line."""
from __future__ import annotations

import logging

from fastvid.checkpoint import apply_checkpoint_geometry, data_geometry, saved_geometry
from fastvid.config import load_config

from _checkpoints import CONFIG, TRAINED, write_checkpoint


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

    ckpt = write_checkpoint(tmp_path / "old.pt", old=True)
    cfg, raw = load_inference_config(CONFIG, (), str(ckpt))
    assert "data_geometry" not in raw
    assert (cfg.data.image_size, cfg.data.scale_size, cfg.model.num_segments) == (64, 72, 4)
    assert cfg.input_spec["mean"] == [100, 110, 120]
    cfg, _ = load_inference_config(CONFIG, ("data.image_size=80",), str(ckpt))
    assert cfg.data.image_size == 80
