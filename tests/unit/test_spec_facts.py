"""The model spec is the only source of model facts: config defaults resolved from it, family
config checks registered with it, no layout or normalisation copies in the model classes, and a
registry that imports no model file."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from fastvid.config import (Config, ConfigError, apply_overrides, config_from_dict, replace,
                            save_config, load_config)
from fastvid.models import (ModelSpec, create_model, layout_memory_format, memory_format,
                            model_specs)

MODELS = Path(__file__).resolve().parents[2] / "fastvid" / "models"
SLOWONLY = ["model.arch=tpn", "model.backbone=resnet3d_slowonly50"]


def _geometry(cfg: Config) -> tuple:
    return cfg.data.image_size, cfg.model.num_segments, cfg.data.clip_len, cfg.data.sampling


@pytest.fixture
def registry(monkeypatch):
    """The registry, restored after the test (registrations made in it are thrown away)."""
    from fastvid.models import _registry

    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    monkeypatch.setattr(_registry, "_SPECS", dict(_registry._SPECS))
    return _registry


def _register_tiny(registry, **extra) -> None:
    @registry.register_model(arch="tiny", backbone="tiny3d", input_layout="NCTHW", color="RGB",
                             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), classifier=("fc",),
                             crop_size=48, num_frames=4, sampling="dense", **extra)
    def tiny_tiny3d(num_classes: int, **_: object) -> nn.Module:
        return nn.Sequential(nn.Conv3d(3, 4, 1), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                             nn.Linear(4, num_classes))


# -- config defaults from the spec ---------------------------------------------------------------
def test_every_spec_default_is_what_an_unset_config_resolves_to():
    for spec in model_specs():
        cfg = apply_overrides(Config(), [f"model.arch={spec.arch}", f"model.backbone={spec.backbone}"])
        assert _geometry(cfg) == (spec.crop_size, spec.num_frames, spec.num_frames, spec.sampling)
    assert _geometry(Config()) == (224, 8, 8, "tsn")  # TRN, as before the spec held them
    assert _geometry(apply_overrides(Config(), SLOWONLY))[3] == "dense"


def test_a_set_value_wins_and_stays_when_the_model_changes():
    cfg = apply_overrides(Config(), ["data.image_size=112", "data.sampling=tsn", *SLOWONLY])
    assert _geometry(cfg) == (112, 8, 8, "tsn")
    # Unset keys follow the model through replace() too (the checkpoint-geometry path uses it).
    cfg = replace(Config(), model={"arch": "tpn", "backbone": "resnet3d_slowonly50"})
    assert cfg.data.sampling == "dense"
    back = replace(cfg, data={"image_size": 96}, model={"arch": "trn", "backbone": "bninception"})
    assert _geometry(back) == (96, 8, 8, "tsn")
    # null puts a key back to the spec's default.
    assert apply_overrides(back, ["data.image_size=null"]).data.image_size == 224


def test_a_registered_family_supplies_the_defaults(registry, tmp_path):
    _register_tiny(registry)
    raw = {"model": {"arch": "tiny", "backbone": "tiny3d"}, "data": {"frame_interval": 2}}
    cfg = config_from_dict(raw, "tiny.yaml")
    assert _geometry(cfg) == (48, 4, 4, "dense") and cfg.input_shape(2) == (2, 3, 4, 48, 48)
    # The run's config.yaml records the resolved values, so it reloads the same without the spec.
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(tmp_path / "config.yaml").to_dict() == cfg.to_dict()


def test_shipped_configs_resolve_to_concrete_values():
    for path in sorted((MODELS.parents[1] / "configs").glob("*.yaml")):
        cfg = load_config(path)
        assert None not in _geometry(cfg), path.name


# -- each family checks its own keys -------------------------------------------------------------
def test_trn_checks_its_keys_and_other_families_ignore_them():
    with pytest.raises(ConfigError, match=r"--set: 'model.consensus' is 'max'; expected one of avg"):
        apply_overrides(Config(), ["model.consensus=max"])
    with pytest.raises(ConfigError, match="'model.num_segments' is 1; trn_multiscale needs >= 2"):
        apply_overrides(Config(), ["model.num_segments=1"])
    assert apply_overrides(Config(), ["model.num_segments=1", "model.consensus=avg"])
    with pytest.raises(ConfigError, match="'model.subsample_num' must be positive"):
        apply_overrides(Config(), ["model.subsample_num=0"])
    # TPN takes no consensus: TRN's rule is not applied to it.
    assert apply_overrides(Config(), [*SLOWONLY, "model.consensus=max"]).model.consensus == "max"


def test_a_family_validate_config_hook_is_called_with_the_resolved_config(registry):
    seen = []

    def check(cfg: Config) -> None:
        seen.append(_geometry(cfg))
        if cfg.model.dropout > 0.5:
            raise ConfigError("'model.dropout' must be <= 0.5 for tiny")

    _register_tiny(registry, validate_config=check)
    apply_overrides(Config(), ["model.arch=tiny", "model.backbone=tiny3d", "model.dropout=0.1"])
    assert seen[-1] == (48, 4, 4, "dense")
    with pytest.raises(ConfigError, match=r"^x\.yaml: 'model.dropout' must be <= 0.5 for tiny"):
        config_from_dict({"model": {"arch": "tiny", "backbone": "tiny3d", "dropout": 0.7}}, "x.yaml")


def test_config_py_holds_no_family_choices():
    from fastvid import config

    assert "model.consensus" not in config._CHOICES


# -- no model fact outside the spec ---------------------------------------------------------------
@pytest.mark.parametrize("spec", model_specs(), ids=lambda s: s.name)
def test_models_keep_no_layout_colour_or_normalisation_of_their_own(spec):
    model = create_model(spec.name, num_classes=3, num_segments=4)
    assert model.spec is spec
    for attr in ("input_layout", "input_color", "input_mean", "input_std"):
        assert not hasattr(model, attr), f"{spec.name}.{attr} duplicates the spec"


def test_create_model_passes_the_spec_only_to_constructors_that_declare_it(registry):
    got = {}

    @registry.register_model(arch="tiny", backbone="spec2d", input_layout="NTCHW", color="BGR",
                             mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), classifier=("fc",))
    def tiny_spec2d(num_classes: int, spec: ModelSpec) -> nn.Module:
        got["spec"] = spec
        return nn.Linear(2, num_classes)

    model = create_model("tiny_spec2d", num_classes=2)
    assert got["spec"] is model.spec and model.spec.name == "tiny_spec2d"
    _register_tiny(registry)  # declares no spec parameter and takes none
    assert create_model("tiny_tiny3d", num_classes=2).spec.sampling == "dense"


def test_the_layout_to_memory_format_rule_is_one_function():
    assert layout_memory_format("NCTHW") is torch.channels_last_3d
    assert layout_memory_format("NTCHW") is torch.channels_last
    for spec in model_specs():
        assert spec.memory_format is layout_memory_format(spec.input_layout)

    class Bare(nn.Module):  # an unregistered module (engine export of any nn.Module)
        input_layout = "NCTHW"

    assert memory_format(Bare()) is torch.channels_last_3d


def test_a_checkpoint_is_checked_on_the_spec_arch_keys_only(registry):
    from fastvid.checkpoint import CheckpointError, check_config_matches

    cfg = Config()
    saved = {"model": {**cfg.to_dict()["model"], "dropout": 0.5}}
    check_config_matches(saved, cfg, "a.pt")  # dropout does not change the architecture
    saved["model"]["img_feature_dim"] = 128
    with pytest.raises(CheckpointError, match="model.img_feature_dim: checkpoint 128 vs config 256"):
        check_config_matches(saved, cfg, "a.pt")
    _register_tiny(registry, config_keys=("dropout",), arch_keys=("dropout",))
    tiny = apply_overrides(Config(), ["model.arch=tiny", "model.backbone=tiny3d", "model.dropout=0.1"])
    with pytest.raises(CheckpointError, match="model.dropout: checkpoint 0.5 vs config 0.1"):
        check_config_matches({"model": {**tiny.to_dict()["model"], "dropout": 0.5}}, tiny, "t.pt")


def test_a_spec_refuses_an_unknown_sampling():
    with pytest.raises(ValueError, match="sampling must be one of"):
        ModelSpec(name="x", arch="x", backbone="x", input_layout="NTCHW", color="RGB",
                  mean=(0.0,) * 3, std=(1.0,) * 3, classifier=("fc",), sampling="random")


# -- imports -------------------------------------------------------------------------------------
def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = "." * node.level + (node.module or "")
            sep = "" if base.endswith(".") else "."
            names |= {base} | {base + sep + a.name for a in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
    return names


def test_the_registry_imports_no_model_file_and_the_package_imports_every_family():
    families = {"bninception", "trn", "tpn"}
    registry_imports = _imports(MODELS / "_registry.py")
    assert not any(name.rsplit(".", 1)[-1] in families for name in registry_imports), registry_imports
    assert {f".{f}" for f in families} <= _imports(MODELS / "__init__.py")
    for family in families:  # families import the registry, not the package
        imports = _imports(MODELS / f"{family}.py")
        assert "._registry" in imports and "fastvid.models" not in imports, family
