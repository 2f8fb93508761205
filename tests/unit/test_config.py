"""Config files, --set overrides and their errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from fastvid.config import (Config, ConfigError, apply_overrides, config_from_dict, load_config,
                            save_config)
from fastvid.models import model_specs

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize("name", sorted(p.name for p in CONFIGS.glob("*.yaml")))
def test_shipped_configs_load(name):
    cfg = load_config(CONFIGS / name)
    assert cfg.model_name in {spec.name for spec in model_specs()}


def test_trn_jester_recipe_values():
    cfg = load_config(CONFIGS / "trn_bninception_jester.yaml")
    assert (cfg.model.num_segments, cfg.model.subsample_num, cfg.model.img_feature_dim) == (8, 3, 256)
    assert (cfg.train.lr, cfg.train.clip_grad_norm, cfg.train.epochs, cfg.train.batch_size) == (
        0.001, 20.0, 120, 24)
    assert cfg.train.lr_steps == [50, 100] and cfg.model.dropout == 0.8
    assert cfg.input_spec["color"] == "BGR" and cfg.input_spec["mean"] == [104.0, 117.0, 128.0]


def test_trn_sthv2_recipe_values():
    cfg = load_config(CONFIGS / "trn_bninception_sthv2.yaml")
    jester = load_config(CONFIGS / "trn_bninception_jester.yaml")
    assert cfg.model_name == "trn_bninception" and cfg.model.consensus == "trn_multiscale"
    assert cfg.model.num_segments == 8 and cfg.model == jester.model
    assert cfg.data.format == "videos" and cfg.data.videos_dir == "" and cfg.data.flip is False
    assert (cfg.train.lr, cfg.train.lr_steps, cfg.train.epochs, cfg.train.batch_size) == (
        0.001, [50, 100], 120, 24)


def test_tpn_recipes():
    slow = load_config(CONFIGS / "tpn_slowonly_r50_k400.yaml")
    tsm = load_config(CONFIGS / "tpn_tsm_r50_sthv1.yaml")
    assert slow.train.nesterov and tsm.train.nesterov
    assert (slow.train.weight_decay, tsm.train.weight_decay) == (1e-4, 5e-4)
    assert (slow.train.clip_grad_norm, tsm.train.clip_grad_norm) == (40.0, 20.0)
    assert slow.train.lr_steps == [75, 125] and slow.train.epochs == 150
    assert slow.input_spec["color"] == "RGB"


def test_overrides_are_typed():
    cfg = apply_overrides(Config(), ["train.lr=0.01", "model.partial_bn=false",
                                     "train.lr_steps=[3,6]", "model.num_classes=27",
                                     "data.flip=true", "train.clip_grad_norm=null"])
    assert cfg.train.lr == 0.01 and isinstance(cfg.train.lr, float)
    assert cfg.model.partial_bn is False and cfg.data.flip is True
    assert cfg.train.lr_steps == [3, 6] and cfg.model.num_classes == 27
    assert cfg.train.clip_grad_norm is None


def test_override_comma_list():
    cfg = apply_overrides(Config(), ["train.lr_steps=10,20"])
    assert cfg.train.lr_steps == [10, 20]


@pytest.mark.parametrize("item, fragment", [
    ("train.lrr=1", "unknown config key 'train.lrr'"),
    ("optim.lr=1", "unknown config key 'optim.lr'"),
    ("train.lr", "expected key=value"),
    ("train.epochs=abc", "bad value for 'train.epochs'"),
    ("train.epochs=1.5", "bad value for 'train.epochs'"),
    ("model.consensus=max", "'model.consensus' is 'max'"),
    ("model.arch=tpn", "unsupported model.arch/model.backbone tpn+bninception"),
    ("train.batch_size=0", "'train.batch_size' must be positive"),
])
def test_override_errors_name_the_key(item, fragment):
    with pytest.raises(ConfigError, match=fragment.replace("(", r"\(").replace("+", r"\+")):
        apply_overrides(Config(), [item])


def test_unknown_key_in_file_names_file_and_key(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  arch: trn\n  num_segmentz: 4\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert str(path) in str(err.value) and "model.num_segmentz" in str(err.value)


def test_unknown_section_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="unknown section 'optimizer'"):
        config_from_dict({"optimizer": {"lr": 1}})
    bad = tmp_path / "broken.yaml"
    bad.write_text("model: [unclosed\n")
    with pytest.raises(ConfigError, match="invalid YAML"):
        load_config(bad)
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "missing.yaml")


def test_saved_config_round_trips(tmp_path):
    cfg = apply_overrides(load_config(CONFIGS / "tpn_tsm_r50_sthv1.yaml"), ["train.lr=0.02"])
    save_config(cfg, tmp_path / "config.yaml")
    again = load_config(tmp_path / "config.yaml")
    assert again == cfg
    assert yaml.safe_load((tmp_path / "config.yaml").read_text())["train"]["lr"] == 0.02
