"""Issue 18's training-step machinery, tested on CPU: no host synchronisation inside the step,
torch.compile of the step, and the CUDA-graph wrapper around it with a stand-in graph backend
(the real capture is GPU-only: ``test_cuda_graph_step_on_cuda``)."""
from __future__ import annotations

import contextlib
from typing import Any, Callable

import pytest
import torch
import torch.nn as nn

from fastvid.config import Config, apply_overrides
from fastvid.errors import FastvidError
from fastvid.precision import resolve_precision
from fastvid.training import TrainStep, build_lr_scheduler, build_optimizer
from fastvid.training.cuda_graphs import GraphedTrainStep, cuda_graphs_unsupported, lr_to_tensors

CPU = torch.device("cpu")
FP32 = resolve_precision(False, "fp32", CPU)


class _Net(nn.Module):
    """Conv + BN + dropout + linear: the kinds of layers the real models have."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.0)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = torch.relu(self.bn(self.conv(x.flatten(0, 1)))).mean((2, 3))
        return self.fc(self.drop(y).view(n, t, -1).mean(1))


def _cfg(*items: str) -> Config:
    return apply_overrides(Config(), ["train.lr=0.05", "train.momentum=0.9", *items])


def _batches(n: int, seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(4, 2, 3, 8, 8, generator=g), torch.randint(0, 3, (4,), generator=g))
            for _ in range(n)]


@contextlib.contextmanager
def _no_host_reads():
    """Make every Python-level read of a tensor value raise (item, bool, float, int, tolist)."""
    names = ("item", "__bool__", "__float__", "__int__", "tolist", "__index__")
    saved = {n: getattr(torch.Tensor, n) for n in names}

    def boom(self: torch.Tensor, *a: Any, **k: Any) -> Any:
        raise AssertionError("host read of a tensor inside the training step")

    try:
        for n in names:
            setattr(torch.Tensor, n, boom)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.Tensor, n, f)


@pytest.mark.parametrize("clip", [None, 1.0])
def test_step_reads_nothing_back_to_the_host(clip):
    torch.manual_seed(0)
    model = _Net().train()
    step = TrainStep(model, build_optimizer(model, _cfg(), CPU), FP32, clip_grad_norm=clip)
    video, label = _batches(1)[0]
    with _no_host_reads():
        out = step(video, label)
        bad = step(video.clone().fill_(float("nan")), label)  # the skip is decided on the device
    assert torch.isfinite(out.loss) and bool(bad.skipped)


def test_trn_relation_sampling_outside_the_step_matches_in_forward_draws():
    """A captured step cannot draw inside the graph: resample_relations() draws the same subsets
    before the step, from the same generator, as the forward would have."""
    from fastvid.models import create_model

    torch.manual_seed(0)
    model = create_model("trn_bninception", num_classes=3, num_segments=5, dropout=0.0).train()
    head = model.consensus
    x = torch.randn(2, 5, 3, 64, 64)
    torch.manual_seed(7)
    eager = model(x)
    head.presampled = True
    torch.manual_seed(7)
    head.resample_relations()
    drawn = [head.train_relations(i).clone() for i in range(1, len(head.scales))]
    torch.testing.assert_close(model(x), eager)
    torch.manual_seed(8)
    head.resample_relations()
    assert any(not torch.equal(a, head.train_relations(i + 1)) for i, a in enumerate(drawn))


class _FakeGraphs:
    """Capture records the function without running it; replay runs it (as a CUDA graph would)."""

    def __init__(self) -> None:
        self.captures = 0
        self.warm = 0

    @contextlib.contextmanager
    def warmup_context(self):
        self.warm += 1
        yield

    def capture(self, fn: Callable[[], Any]) -> Callable[[], None]:
        self.captures += 1
        return fn


def test_graphed_step_warms_up_captures_once_and_follows_the_schedule():
    torch.manual_seed(0)
    model, twin = _Net().train(), _Net().train()
    twin.load_state_dict(model.state_dict())
    cfg = _cfg("train.lr_steps=[1]", "train.epochs=3")
    opt, opt2 = build_optimizer(model, cfg, CPU), build_optimizer(twin, cfg, CPU)
    sched, sched2 = build_lr_scheduler(opt, cfg), build_lr_scheduler(opt2, cfg)
    fake = _FakeGraphs()
    graphed = GraphedTrainStep(TrainStep(model, opt, FP32, clip_grad_norm=5.0), warmup=2, backend=fake)
    lr_to_tensors(opt2, CPU)  # the same arithmetic (a tensor lr rounds unlike a Python float)
    plain = TrainStep(twin, opt2, FP32, clip_grad_norm=5.0)
    assert isinstance(opt.param_groups[0]["lr"], torch.Tensor)  # read on the device from now on
    lr_tensor = opt.param_groups[0]["lr"]
    for epoch in range(2):
        for video, label in _batches(3, seed=epoch):
            a, b = graphed(video, label), plain(video, label)
            torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)
        sched.step()
        sched2.step()
    assert opt.param_groups[0]["lr"] is lr_tensor and float(lr_tensor) == pytest.approx(0.005)
    assert (fake.warm, fake.captures, graphed.replays, graphed.steps_run) == (2, 1, 4, 6)
    for (k, p), q in zip(model.state_dict().items(), twin.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0, msg=k)
    with pytest.raises(FastvidError, match="drop its last partial batch"):
        graphed(torch.randn(3, 2, 3, 8, 8), torch.zeros(3, dtype=torch.long))


def test_cuda_graphs_are_refused_where_they_cannot_run():
    model = _Net()
    opt = build_optimizer(model, _cfg(), CPU)
    assert "needs a CUDA device" in cuda_graphs_unsupported(CPU, None, opt)
    plain = torch.optim.SGD(model.parameters(), lr=0.1, foreach=True)
    if torch.cuda.is_available():
        assert "fused SGD" in cuda_graphs_unsupported(torch.device("cuda"), None, plain)


@pytest.mark.slow
def test_compiled_step_matches_eager_losses():
    """torch.compile of the model inside the step (Inductor, CPU): same losses as eager for four
    steps within 1e-4 relative (kernel fusion reorders float sums; measured ~1e-7)."""
    torch.manual_seed(0)
    model, twin = _Net().train(), _Net().train()
    twin.load_state_dict(model.state_dict())
    cfg = _cfg()
    compiled = TrainStep(torch.compile(model), build_optimizer(model, cfg, CPU), FP32, clip_grad_norm=5.0)
    eager = TrainStep(twin, build_optimizer(twin, cfg, CPU), FP32, clip_grad_norm=5.0)
    for video, label in _batches(4):
        a, b = compiled(video, label), eager(video, label)
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-4, atol=1e-6)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_graph_step_on_cuda(precision):
    """The real capture: a small TRN trains for 6 steps, 3 of them replayed, losses finite and
    within bf16/fp16 noise of the same steps run eagerly."""
    from fastvid.models import create_model

    cuda = torch.device("cuda")
    torch.manual_seed(0)
    model = create_model("trn_bninception", num_classes=5, num_segments=4, dropout=0.0).to(cuda)
    twin = create_model("trn_bninception", num_classes=5, num_segments=4, dropout=0.0).to(cuda)
    twin.load_state_dict(model.state_dict())
    prec = resolve_precision(True, precision, cuda)
    cfg = _cfg()
    graphed = GraphedTrainStep(TrainStep(model, build_optimizer(model, cfg, cuda), prec,
                                         clip_grad_norm=20.0), warmup=3)
    eager = TrainStep(twin, build_optimizer(twin, cfg, cuda), prec, clip_grad_norm=20.0)
    g = torch.Generator().manual_seed(0)
    for _ in range(6):
        video = torch.randn(4, 4, 3, 64, 64, generator=g).to(cuda)
        label = torch.randint(0, 5, (4,), generator=g).to(cuda)
        torch.manual_seed(1)
        a = graphed(video, label).loss.clone()
        torch.manual_seed(1)
        b = eager(video, label).loss
        assert torch.isfinite(a) and abs(float(a) - float(b)) < 0.05 * abs(float(b)) + 1e-3
    assert graphed.captured and graphed.replays == 3


def _compiled_graphed_pair(device: torch.device, backend: Any = None):
    """A compiled model's step in GraphedTrainStep, and its eager twin with the same weights."""
    torch.manual_seed(0)
    model, twin = _Net().train().to(device), _Net().train().to(device)
    twin.load_state_dict(model.state_dict())
    cfg = _cfg()
    prec = FP32 if device.type == "cpu" else resolve_precision(True, "bf16", device)
    graphed = GraphedTrainStep(TrainStep(torch.compile(model), build_optimizer(model, cfg, device), prec,
                                         clip_grad_norm=5.0), warmup=3, backend=backend)
    opt2 = build_optimizer(twin, cfg, device)
    lr_to_tensors(opt2, device)  # the same rounding as the graphed step's tensor lr
    return graphed, TrainStep(twin, opt2, prec, clip_grad_norm=5.0)


def test_compiled_step_is_compiled_in_warmup_and_captured_without_recompiling():
    """--compile --cuda-graphs up to the CUDA calls: Inductor compiles forward and backward in
    the 3 warm-up steps, nothing compiles while the step is captured (Dynamo's recompile guard is
    on there), the replays give eager's losses; a batch that would recompile at capture time is a
    clear error instead of a broken graph."""
    from torch._dynamo.utils import counters

    fake = _FakeGraphs()
    graphed, eager = _compiled_graphed_pair(CPU, fake)
    batches = _batches(6)
    for i, (video, label) in enumerate(batches):
        a, b = graphed(video, label), eager(video, label)
        torch.testing.assert_close(a.loss, b.loss, rtol=1e-4, atol=1e-6)
        if i == 2:  # the last warm-up step: forward and backward are compiled by now
            compiled_graphs = counters["stats"]["unique_graphs"]
            assert compiled_graphs >= 1 and fake.captures == 0
    assert counters["stats"]["unique_graphs"] == compiled_graphs  # none during capture/replays
    assert (fake.warm, fake.captures, graphed.replays) == (3, 1, 3)

    fresh, _ = _compiled_graphed_pair(CPU, _FakeGraphs())
    for video, label in batches[:3]:
        fresh(video, label)
    odd = torch.randn(4, 3, 3, 8, 8)  # 3 frames: a shape the compiled model has not seen
    with pytest.raises(FastvidError, match="recompiled while the step was being captured"):
        fresh(odd, torch.zeros(4, dtype=torch.long))


def test_bench_train_compile_with_cuda_graphs_needs_cuda():
    from bench.train import TRAIN_MODES, bench_training

    assert "compile+cuda-graphs" in TRAIN_MODES
    recs = bench_training(_Net(), (2, 3, 8, 8), 3, CPU, batch=2, warmup=1, iters=1,
                          variants=[("fp32", False, "compile+cuda-graphs")])
    assert recs[0]["status"] == "skipped" and "needs a CUDA device" in recs[0]["reason"]
    assert recs[0]["mode"] == "compile+cuda-graphs"


def test_compile_needs_triton_on_cuda_and_a_compiler_on_cpu(monkeypatch):
    import shutil

    from fastvid.training import compile_unsupported

    assert compile_unsupported(CPU) is None  # g++ is on this machine (AOTInductor tests need it too)
    monkeypatch.setattr(shutil, "which", lambda name: None)
    assert "C++ compiler" in compile_unsupported(CPU)
    if not torch.cuda.is_available():
        assert "needs a CUDA device" in compile_unsupported(torch.device("cuda"))


@pytest.mark.gpu
def test_compiled_step_captured_on_cuda():
    """The real thing: torch.compile'd model, its whole bf16 step captured after 3 warm-up
    steps; losses within bf16 noise of eager, no compilation after the warm-up."""
    from torch._dynamo.utils import counters

    cuda = torch.device("cuda")
    graphed, eager = _compiled_graphed_pair(cuda)
    g = torch.Generator().manual_seed(0)
    for i in range(7):
        video = torch.randn(4, 2, 3, 8, 8, generator=g).to(cuda)
        label = torch.randint(0, 3, (4,), generator=g).to(cuda)
        a = graphed(video, label).loss.clone()
        b = eager(video, label).loss
        assert torch.isfinite(a) and abs(float(a) - float(b)) < 0.05 * abs(float(b)) + 1e-3, (i, a, b)
        if i == 2:
            compiled_graphs = counters["stats"]["unique_graphs"]
    assert counters["stats"]["unique_graphs"] == compiled_graphs
    assert graphed.captured and graphed.replays == 4


def test_train_cuda_graphs_without_cuda_is_a_clear_error(synth_frames, tmp_path):
    from _helpers import invoke, train_args

    work = tmp_path / "run"
    res = invoke(train_args(synth_frames, work, "--epochs", "1", "--cuda-graphs"))
    assert res.exit_code == 1 and "--cuda-graphs needs a CUDA device" in res.output, res.output
    assert "Traceback" not in res.output and not work.exists()


def test_compile_modes_that_capture_graphs_themselves_are_known():
    """--cuda-graphs refuses a --compile-mode that would nest Inductor's own CUDA graphs."""
    from fastvid.training.loop import _compile_mode_uses_cudagraphs

    assert _compile_mode_uses_cudagraphs("reduce-overhead") and _compile_mode_uses_cudagraphs("max-autotune")
    assert not _compile_mode_uses_cudagraphs(None)
    assert not _compile_mode_uses_cudagraphs("max-autotune-no-cudagraphs")


def test_compiled_and_captured_train_records_carry_their_speed_up_over_eager():
    from bench.train import _set_ratio_to_eager

    eager = {"status": "ok", "mode": "eager", "precision": "bf16", "channels_last": True, "videos_per_s": 400.0}
    fp32 = {"status": "ok", "mode": "eager", "precision": "fp32", "channels_last": False, "videos_per_s": 300.0}
    both = {"status": "ok", "mode": "compile+cuda-graphs", "precision": "bf16", "channels_last": True,
            "videos_per_s": 1000.0}
    other = dict(both, channels_last=False)
    records = [fp32, eager, both, other]
    for r in records:
        _set_ratio_to_eager(r, records)
    assert both["ratio_to_eager"] == 2.5 and "ratio_to_eager" not in other and "ratio_to_eager" not in eager


@pytest.mark.gpu
def test_bench_train_compile_with_cuda_graphs_on_cuda():
    """The GPU check's training row on a small net: eager, then the compiled step captured after
    3 warm-up steps; both measured, the second with its speed-up over the first."""
    from bench.train import bench_training

    # the shapes of test_compiled_step_captured_on_cuda: Inductor's cache serves its graphs
    recs = bench_training(_Net(), (2, 3, 8, 8), 3, torch.device("cuda"), batch=4, warmup=1, iters=3,
                          variants=[("bf16", False, "eager"), ("bf16", False, "compile+cuda-graphs")])
    assert [r["status"] for r in recs] == ["ok", "ok"], [r.get("reason") for r in recs]
    assert recs[1]["mode"] == "compile+cuda-graphs" and recs[1]["ratio_to_eager"] > 0
    assert recs[1]["warmup_s"] > 0 and recs[1]["videos_per_s"] > 0


def test_train_compile_without_its_compiler_is_a_clear_error(synth_frames, tmp_path, monkeypatch):
    import shutil

    from _helpers import invoke, train_args

    monkeypatch.setattr(shutil, "which", lambda name: None)
    work = tmp_path / "run"
    res = invoke(train_args(synth_frames, work, "--epochs", "1", "--compile"))
    assert res.exit_code == 1 and "--compile: torch.compile on CPU needs a C++ compiler" in res.output, res.output
    assert "Traceback" not in res.output and not work.exists()
