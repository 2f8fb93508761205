"""build_train_step: the one recipe behind fastvid train, bench --train and the loader bench's
training feed (tiny models on the CPU; the loop is exercised end to end by test_train.py)."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from fastvid.config import Config, apply_overrides
from fastvid.errors import FastvidError
from fastvid.models import to_channels_last
from fastvid.precision import resolve_precision
from fastvid.training import StepOptions, TrainStep, build_optimizer, build_train_step

CPU = torch.device("cpu")
FP32 = resolve_precision(False, "fp32", CPU)


class _Tiny3D(nn.Module):
    """(N, C, T, H, W) clips, logits and (training) auxiliary logits, as TPN."""

    input_layout = "NCTHW"

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 4, 3, padding=1)
        self.bn = nn.BatchNorm3d(4)
        self.head = nn.Linear(4, classes)
        self.aux = nn.Linear(4, classes)

    def forward(self, x: torch.Tensor):
        h = torch.relu(self.bn(self.conv(x))).mean((2, 3, 4))
        return (self.head(h), self.aux(h)) if self.training else self.head(h)


def _cfg(*items: str) -> Config:
    return apply_overrides(Config(), ["train.lr=0.05", "train.label_smoothing=0.1",
                                      "train.clip_grad_norm=1.0", "model.aux_loss_weight=0.4",
                                      *items])


def _batches(n: int = 4) -> list[tuple[torch.Tensor, torch.Tensor]]:
    gen = torch.Generator().manual_seed(1)
    return [(torch.randn(2, 3, 2, 8, 8, generator=gen), torch.randint(0, 3, (2,), generator=gen))
            for _ in range(n)]


def _losses(step, batches) -> list[float]:
    return [float(step(v, y).loss) for v, y in batches]


def test_the_built_step_is_the_papers_recipe_as_the_config_says():
    """Same losses and weights as the step written out by hand: channels-last, fused SGD with
    the config's lr, clipping, label smoothing and aux-loss weight."""
    cfg = _cfg()
    torch.manual_seed(0)
    model = _Tiny3D()
    twin = copy.deepcopy(model)
    built = build_train_step(cfg, model, device=CPU, precision=FP32)
    twin = to_channels_last(twin)
    by_hand = TrainStep(twin, build_optimizer(twin, cfg, CPU), FP32, aux_loss_weight=0.4,
                        clip_grad_norm=1.0, label_smoothing=0.1,
                        memory_format=torch.channels_last_3d)
    batches = _batches()
    assert _losses(built, batches) == _losses(by_hand, batches)
    for a, b in zip(model.parameters(), twin.parameters()):
        assert torch.equal(a, b)
    assert built.memory_format is torch.channels_last_3d and built.precision is FP32
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert isinstance(built.optimizer, torch.optim.SGD) and built.optimizer.defaults["fused"]
    assert not built.scaler.is_enabled()  # fp32: GradScaler only for fp16


def test_without_channels_last_the_batch_keeps_its_format():
    step = build_train_step(_cfg(), _Tiny3D(), device=CPU, precision=FP32,
                            options=StepOptions(channels_last=False))
    assert step.memory_format is None
    assert step.model.conv.weight.is_contiguous()


def test_restore_sees_the_plain_model_and_optimizer_before_they_are_wrapped(monkeypatch, tmp_path):
    """A resumed run loads its checkpoint there: before torch.compile wraps the model (and
    before a CUDA graph turns the learning rates into tensors)."""
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    seen = {}
    model = _Tiny3D()

    def restore(plain: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        seen.update(plain=plain, optimizer=optimizer, lr=optimizer.param_groups[0]["lr"])

    step = build_train_step(_cfg(), model, device=CPU, precision=FP32,
                            options=StepOptions(compile=True), restore=restore)
    assert seen["plain"] is model and seen["optimizer"] is step.optimizer
    assert step.model is not model and step.model._orig_mod is model  # compiled lazily
    assert isinstance(seen["lr"], float)


def test_cuda_graphs_are_refused_where_they_cannot_run():
    with pytest.raises(FastvidError, match="needs a CUDA device"):
        build_train_step(_cfg(), _Tiny3D(), device=CPU, precision=FP32,
                         options=StepOptions(cuda_graphs=True))


def _spy(monkeypatch, module) -> list:
    """Record every step ``module`` builds, with the batches it was given and its losses."""
    built: list = []
    real = module.build_train_step

    def spy(cfg, model, **kwargs):
        start = copy.deepcopy(model)
        step = real(cfg, model, **kwargs)
        calls: list = []

        def run(video, label):
            out = step(video, label)
            calls.append((video.clone(), label.clone(), float(out.loss)))
            return out

        built.append((cfg, start, kwargs, calls))
        return run

    monkeypatch.setattr(module, "build_train_step", spy)
    return built


def _replay(cfg, start, kwargs, calls) -> list[float]:
    step = build_train_step(cfg, copy.deepcopy(start), **kwargs)
    return [float(step(v, y).loss) for v, y, _ in calls]


def test_bench_training_measures_the_step_build_train_step_gives(monkeypatch):
    """bench --train's variant steps are build_train_step's (same losses for the same start)."""
    import bench.train

    built = _spy(monkeypatch, bench.train)
    recs = bench.train.bench_training(_Tiny3D(), (3, 2, 8, 8), 3, CPU, batch=2, warmup=1, iters=2,
                                      variants=[("fp32", False), ("fp32", True)],
                                      aux_loss_weight=0.25, clip_grad_norm=2.0)
    assert [r["status"] for r in recs] == ["ok", "ok"]
    assert [kw["options"].channels_last for _, _, kw, _ in built] == [False, True]
    for cfg, start, kwargs, calls in built:
        assert cfg.model.aux_loss_weight == 0.25 and cfg.train.clip_grad_norm == 2.0
        assert cfg.train.lr == 1e-3  # the benchmark's optimizer, as before
        assert len(calls) == 3 and _replay(cfg, start, kwargs, calls) == [c[2] for c in calls]


def test_bench_training_settings_and_keywords_are_one_form():
    from bench.train import TrainBenchSettings, bench_training

    settings = TrainBenchSettings(batch=2, warmup=0, iters=1, model_name="tiny", extra={"run": 7})
    (rec,) = bench_training(_Tiny3D(), (3, 2, 8, 8), 3, CPU, settings, variants=[("fp32", False)])
    (again,) = bench_training(_Tiny3D(), (3, 2, 8, 8), 3, CPU, batch=2, warmup=0, iters=1,
                              model_name="tiny", extra={"run": 7}, variants=[("fp32", False)])
    for r in (rec, again):
        assert (r["model"], r["batch"], r["iters"], r["run"], r["status"]) == ("tiny", 2, 1, 7, "ok")
    with pytest.raises(TypeError):
        bench_training(_Tiny3D(), (3, 2, 8, 8), 3, CPU, batches=2)


def test_the_loader_benchs_training_feed_runs_the_configs_step(monkeypatch):
    """_train_feed trains the config's model with build_train_step (channels-last on CUDA only)."""
    import bench.loader
    from fastvid.models import _registry

    monkeypatch.setattr(_registry, "_MODELS", dict(_registry._MODELS))
    monkeypatch.setattr(_registry, "_SPECS", dict(_registry._SPECS))

    @_registry.register_model(arch="tpn", backbone="tinyfeed", input_layout="NCTHW", color="RGB",
                              mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0), classifier=("head",),
                              config_keys=())
    def tpn_tinyfeed(num_classes: int, **_: object) -> nn.Module:
        return _Tiny3D(num_classes)

    cfg = apply_overrides(Config(), ["model.arch=tpn", "model.backbone=tinyfeed",
                                     "model.num_classes=3"])
    import fastvid.training

    built = _spy(monkeypatch, fastvid.training)  # _train_feed imports it when called
    stream = iter(_batches(5))
    out = bench.loader._train_feed(cfg, None, stream, CPU, steps=3, warmup=2, amp=False)
    assert out["train_steps"] == 3 and out["train_precision"] == "fp32"
    ((used_cfg, start, kwargs, calls),) = built
    assert used_cfg is cfg and kwargs["options"].channels_last is False
    assert _replay(used_cfg, start, kwargs, calls) == [c[2] for c in calls]
