"""One place for each fact: model specs, loader and engine backend registries, one error root."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from fastvid.config import Config, ConfigError, apply_overrides
from fastvid.errors import FastvidError
from fastvid.models import (ModelSpec, UnknownModel, create_model, find_model, get_model_spec,
                            model_specs)

from _tiny import Tiny2D

CPU = torch.device("cpu")


# -- model specs ---------------------------------------------------------------------------------
def test_every_video_model_has_a_spec_that_matches_the_model():
    specs = {s.name: s for s in model_specs()}
    assert {"trn_bninception", "tpn_slowonly_r50", "tpn_tsm_r50"} <= set(specs)  # the shipped families
    for name, spec in specs.items():
        model = create_model(name, num_classes=3, num_segments=4)
        assert model.spec is spec and not hasattr(model, "input_layout")  # the spec is its only layout
        assert find_model(spec.arch, spec.backbone) is spec
        # The classifier the spec names exists and has one row per class.
        state = model.state_dict()
        assert spec.num_classes_in(state) == 3, name
    assert specs["tpn_slowonly_r50"].is_3d and not specs["tpn_tsm_r50"].is_3d
    assert specs["trn_bninception"].color == "BGR" and specs["tpn_tsm_r50"].color == "RGB"
    assert specs["tpn_slowonly_r50"].memory_format is torch.channels_last_3d
    assert specs["trn_bninception"].input_shape(2, 8, 112) == (2, 8, 3, 112, 112)
    assert specs["tpn_slowonly_r50"].input_shape(2, 8, 112) == (2, 3, 8, 112, 112)


def test_config_pairs_and_normalisation_come_from_the_registry():
    for spec in model_specs():
        cfg = apply_overrides(Config(), [f"model.arch={spec.arch}", f"model.backbone={spec.backbone}"])
        assert cfg.model_name == spec.name and cfg.spec is spec
        assert cfg.input_spec == {"color": spec.color, "mean": list(spec.mean), "std": list(spec.std)}
        frames = cfg.data.clip_len if spec.is_3d else cfg.model.num_segments
        assert cfg.input_shape(1) == spec.input_shape(1, frames, cfg.data.image_size)
    cfg = apply_overrides(Config(), ["data.mean=[1,2,3]", "data.color=RGB"])
    assert cfg.input_spec["mean"] == [1, 2, 3] and cfg.input_spec["color"] == "RGB"
    with pytest.raises(ConfigError) as err:
        apply_overrides(Config(), ["model.backbone=resnet3d_slowonly50"])  # trn + a TPN backbone
    assert "trn+resnet3d_slowonly50" in str(err.value)
    assert all(f"{s.arch}+{s.backbone}" in str(err.value) for s in model_specs())


def test_unknown_model_names_the_known_ones():
    with pytest.raises(UnknownModel, match="trn_bninception"):
        get_model_spec("trn_resnet")
    with pytest.raises(UnknownModel, match="tpn_tsm_r50"):
        create_model("nope", num_classes=2)


def test_a_registration_is_all_a_new_model_needs(monkeypatch):
    """A tiny 3D model registered once trains through the shared step with the spec's layout."""
    from fastvid.models import _registry
    from fastvid.training import TrainStep, build_optimizer
    from fastvid.precision import resolve_precision

    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    monkeypatch.setattr(_registry, "_SPECS", dict(_registry._SPECS))

    @_registry.register_model(arch="tpn", backbone="tiny3d", input_layout="NCTHW", color="RGB",
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), classifier=("fc",),
                              config_keys=("dropout",))
    def tpn_tiny3d(num_classes: int, dropout: float = 0.0, **_: object) -> nn.Module:
        return nn.Sequential(nn.Conv3d(3, 4, 1), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                             nn.Dropout(dropout), nn.Linear(4, num_classes))

    cfg = apply_overrides(Config(), ["model.arch=tpn", "model.backbone=tiny3d", "data.clip_len=2",
                                     "data.image_size=8"])
    assert cfg.model_name == "tpn_tiny3d" and cfg.input_shape(2) == (2, 3, 2, 8, 8)
    from fastvid.models import create_model_from_config

    model = create_model_from_config(cfg.model, 5)
    step = TrainStep(model, build_optimizer(model, cfg, CPU), resolve_precision(False, "fp32", CPU),
                     memory_format=cfg.spec.memory_format)
    out = step(torch.randn(cfg.input_shape(2)), torch.tensor([0, 4]))
    assert torch.isfinite(out.loss) and not bool(out.skipped)


# -- loader registry -----------------------------------------------------------------------------
def test_loader_choices_and_auto_come_from_the_registry(monkeypatch):
    import fastvid.loaders as loaders
    from fastvid.cli.common import loader_option

    assert loaders.loader_names() == ("auto", "dali", "dali-cpu", "torch")
    made = []

    def factory(records, planner, settings):
        made.append((len(records), settings.batch_size, settings.channels_first, settings.backend))
        return "a loader"

    monkeypatch.setattr(loaders, "_BACKENDS", dict(loaders._BACKENDS))
    loaders.register_loader(loaders.LoaderBackend("mine", "test backend", lambda d: None, factory,
                                                  preference=-1))
    assert "mine" in loaders.loader_names() and loaders.resolve_loader_name("auto", CPU) == "mine"
    from fastvid.data.lists import VideoRecord

    cfg = apply_overrides(Config(), ["model.arch=tpn", "model.backbone=resnet3d_slowonly50"])
    got = loaders.build_loader(cfg, None, loaders.LoaderRequest(
        "val", batch_size=3, records=[VideoRecord("a", 0, 8)]), loader="mine", device=CPU)
    assert got == "a loader" and made == [(1, 3, True, "mine")]
    # An unavailable backend says why and names the ones that work.
    loaders.register_loader(loaders.LoaderBackend("never", "x", lambda d: "it needs a unicorn",
                                                  factory))
    with pytest.raises(FastvidError, match="needs a unicorn; use --loader .*torch"):
        loaders.resolve_loader_name("never", CPU)

    @loader_option
    def cmd(loader: str) -> None: ...

    assert "mine" in cmd.__click_params__[0].type.choices


# -- engine registry -----------------------------------------------------------------------------
def test_an_engine_backend_is_one_module_and_one_registration(monkeypatch, tmp_path):
    import engines
    from engines import backends

    monkeypatch.setattr(backends, "_ENGINES", dict(backends._ENGINES))
    backends.register_engine(backends.EngineBackendEntry("fake", ".ept", "_fake_engine", "test"))
    assert "fake" in backends.engine_names() and engines.available_backends(CPU)["fake"] is None
    torch.manual_seed(0)
    model = Tiny2D(width=4, bn=False).eval()
    path = engines.build_engine(model, torch.zeros(2, 3, 3, 16, 16), "fake", "fp32", batch=2,
                                max_batch=3, out_path=tmp_path / "tiny")
    assert path.name == "tiny.ept"
    eng = engines.load(path, CPU)
    x = torch.randn(3, 3, 3, 16, 16)
    torch.testing.assert_close(eng(x), model(x))
    with pytest.raises(FastvidError, match="fp32 only"):
        engines.check_supported("fake", "bf16", CPU)
    from bench.runner import inference_backends

    assert inference_backends()[-1] == "fake"
    # A module that does not fulfil the protocol is refused, naming what it lacks.
    backends.register_engine(backends.EngineBackendEntry("broken", ".brk", "_helpers", "test"))
    with pytest.raises(TypeError, match="unavailable_reason"):
        backends.engine_backend("broken").load()
    with pytest.raises(FastvidError, match="expected one of"):
        backends.engine_backend("nope")


def test_one_error_root():
    import engines
    from fastvid import errors
    from fastvid.checkpoint import CheckpointError
    from fastvid.data.lists import ListError
    from fastvid.models import WeightsError

    for exc in (ConfigError, ListError, WeightsError, CheckpointError, errors.DataError,
                errors.BackendUnavailable, errors.TrainingAborted, engines.EngineError,
                engines.ExportError, UnknownModel):
        assert issubclass(exc, FastvidError), exc
    assert issubclass(ConfigError, ValueError) and issubclass(ListError, ValueError)


def test_spec_reads_class_counts_of_peer_layouts():
    spec = get_model_spec("trn_bninception")
    # TRN-pytorch multi-scale: new_fc is the 256-d feature projection, the heads end in classes.
    trn_pytorch = {"module.new_fc.weight": torch.zeros(256, 1024),
                   "module.consensus.fc_fusion_scales.0.3.weight": torch.zeros(27, 256)}
    assert spec.num_classes_in(trn_pytorch) == 27
    assert spec.num_classes_in({"module.consensus.classifier.3.weight": torch.zeros(174, 512),
                                "module.new_fc.weight": torch.zeros(256, 1024)}) == 174
    assert spec.num_classes_in({"new_fc.weight": torch.zeros(101, 1024)}) == 101  # TSN (avg)
    assert get_model_spec("tpn_tsm_r50").num_classes_in(
        {"cls_head.fc_cls.weight": torch.zeros(174, 2048)}) == 174
    assert spec.num_classes_in({"other.weight": torch.zeros(3, 3)}) is None
    assert isinstance(spec, ModelSpec)
