"""Serving without launch overhead: the CUDA-graph inference wrapper and the benchmark's modes.

On CPU the graph is a stand-in backend with the training graphs' protocol (warm-up context,
capture -> replay), so the wrapper's logic and the runner's ``+cudagraph`` path are tested up
to the CUDA calls; the real capture runs in the ``gpu`` tests (scripts/gpu_check.sh).
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator

import pytest
import torch
from click.testing import CliRunner

from bench import InferenceBenchmarkRunner
from bench.runner import BenchSettings
from bench.graphed import GraphedRunner, cuda_graph_unsupported
from bench.runner import inference_backends, split_backend
from fastvid.errors import FastvidError

from _tiny import Tiny3D


class _StandInGraphs:
    """A GraphBackend without CUDA: 'capture' runs the body once, 'replay' runs it again."""

    def __init__(self) -> None:
        self.in_warmup = False
        self.warmup_calls = 0
        self.captures = 0

    @contextlib.contextmanager
    def warmup_context(self) -> Iterator[None]:
        self.in_warmup = True
        try:
            yield
        finally:
            self.in_warmup = False

    def capture(self, fn: Callable[[], Any]) -> Callable[[], None]:
        self.captures += 1
        fn()
        return fn


def test_graphed_runner_warms_up_captures_once_and_replays_on_a_static_buffer():
    model = Tiny3D().eval()
    graphs = _StandInGraphs()
    seen: list[torch.Tensor] = []

    def runner(x: torch.Tensor) -> torch.Tensor:
        seen.append(x)
        if graphs.in_warmup:
            graphs.warmup_calls += 1
        with torch.no_grad():
            return model(x)

    graphed = GraphedRunner(runner, "cpu", warmup=2, backend=graphs)
    x1 = torch.randn(2, 3, 4, 8, 8).contiguous(memory_format=torch.channels_last_3d)
    out1 = graphed(x1)
    assert graphs.warmup_calls == 2 and graphs.captures == 1 and graphed.captured
    static = graphed.static_input
    assert static is not None and static is not x1 and torch.equal(static, x1)
    assert static.is_contiguous(memory_format=torch.channels_last_3d)  # the input's layout is kept
    torch.testing.assert_close(out1, model(x1))
    x2 = torch.randn(2, 3, 4, 8, 8)
    out2 = graphed(x2)  # copied into the buffer the graph reads, then replayed
    torch.testing.assert_close(out2, model(x2))
    assert graphs.captures == 1 and graphed.replays == 2
    assert all(arg is static for arg in seen), "every call after the first must read the static buffer"
    with pytest.raises(FastvidError, match=r"captured for input \(2, 3, 4, 8, 8\).*got \(1, 3, 4, 8, 8\)"):
        graphed(torch.randn(1, 3, 4, 8, 8))
    with pytest.raises(FastvidError, match="float16"):
        graphed(x2.half())


def test_graphs_need_a_cuda_device():
    assert "CUDA" in cuda_graph_unsupported("cpu")
    with pytest.raises(FastvidError, match="CUDA graphs need a CUDA device"):
        GraphedRunner(lambda x: x, "cpu")
    with pytest.raises(ValueError, match="warmup"):
        GraphedRunner(lambda x: x, "cpu", warmup=0, backend=_StandInGraphs())


def test_backend_names_say_runner_and_mode():
    names = inference_backends()
    assert names[:4] == ("eager", "eager+cudagraph", "compile", "compile+cudagraph")
    assert "aoti+cudagraph" in names and "trt+cudagraph" in names
    assert "onnx+cudagraph" not in names  # ONNX Runtime launches on its own streams
    assert split_backend("compile+cudagraph") == ("compile", "reduce-overhead")
    assert split_backend("aoti+cudagraph") == ("aoti", "cudagraph")
    assert split_backend("eager") == ("eager", "launch")


def test_cudagraph_variants_are_skipped_on_cpu_with_the_reason():
    runner = InferenceBenchmarkRunner(Tiny3D().eval(), (3, 4, 8, 8), "cpu",
                                      settings=BenchSettings(warmup=0, iters=1))
    recs = runner.run(["eager+cudagraph", "compile+cudagraph"], [1], ["fp32"])
    by = {r["backend"]: r for r in recs}
    assert by["eager"]["status"] == "ok" and by["eager"]["mode"] == "launch"
    for name, mode in (("eager+cudagraph", "cudagraph"), ("compile+cudagraph", "reduce-overhead")):
        assert by[name]["status"] == "skipped" and "CUDA graphs need a CUDA device" in by[name]["reason"]
        assert by[name]["mode"] == mode and by[name]["runner"] == name.split("+")[0]


def _stand_in_graphs(monkeypatch) -> list[_StandInGraphs]:
    """Let the runner's +cudagraph path run on this CPU through the stand-in backend."""
    import bench.graphed
    import bench.runner

    made: list[_StandInGraphs] = []
    monkeypatch.setattr(bench.runner, "cuda_graph_unsupported", lambda device: None)
    monkeypatch.setattr(bench.graphed, "cuda_graph_unsupported", lambda device: None)
    monkeypatch.setattr(bench.graphed, "_cuda_backend", lambda device: made.append(_StandInGraphs()) or made[-1])
    return made


def test_runner_replays_eager_through_the_graph_wrapper(monkeypatch):
    made = _stand_in_graphs(monkeypatch)
    runner = InferenceBenchmarkRunner(Tiny3D().eval(), (3, 4, 8, 8), "cpu", model_name="tiny",
                                      settings=BenchSettings(warmup=1, iters=3, graph_warmup=2))
    recs = runner.run(["eager+cudagraph"], [2], ["fp32", "bf16"])
    graphed = [r for r in recs if r["backend"] == "eager+cudagraph"]
    assert [r["status"] for r in graphed] == ["ok", "ok"], [r.get("reason") for r in graphed]
    assert len(made) == 2 and all(g.captures == 1 for g in made)  # one capture per variant
    for r in graphed:
        assert r["mode"] == "cudagraph" and r["runner"] == "eager" and r["video_per_s"] > 0
        assert "static input buffer (timed)" in r["input_prepared"] and r["ratio_to_eager"] > 0
        assert r["gflop_per_video"] > 0 and r["tflops"] > 0
    fp32, bf16 = graphed
    assert fp32["channels_last"] is False and fp32["input_dtype"] == "float32"
    # fp16/bf16 pick their memory format by a short eager trial, recorded beside the choice.
    trial = bf16["memory_format_trial"]
    assert bf16["channels_last"] == (trial["channels_last_p50_ms"] < trial["contiguous_p50_ms"])
    assert bf16["input_dtype"] == "bfloat16"
    assert bf16["input_memory_format"] == ("channels_last_3d" if bf16["channels_last"] else "contiguous")


def test_forced_channels_last_lays_out_weights_and_input():
    runner = InferenceBenchmarkRunner(Tiny3D().eval(), (3, 4, 8, 8), "cpu",
                                      settings=BenchSettings(warmup=0, iters=1, channels_last=True))
    recs = runner.run(["eager"], [1], ["bf16"])
    bf16 = [r for r in recs if r["precision"] == "bf16"][0]
    assert bf16["status"] == "ok" and bf16["channels_last"] is True and "memory_format_trial" not in bf16
    assert bf16["input_memory_format"] == "channels_last_3d"
    x = runner._input(1, "bf16", True)
    assert x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous()
    model = runner._typed_model("bf16", True)
    assert model.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert runner.model.conv.weight.is_contiguous()  # the runner's own model is untouched


def test_engine_replayed_from_a_graph_reuses_the_built_engine(monkeypatch, tmp_path):
    """``<engine>+cudagraph`` replays the engine its plain variant built, loaded for capture."""
    import engines
    from engines import backends

    monkeypatch.setattr(backends, "_ENGINES", dict(backends._ENGINES))
    backends.register_engine(backends.EngineBackendEntry("fake", ".ept", "_fake_engine", "test",
                                                         cuda_graphs=True))
    made = _stand_in_graphs(monkeypatch)
    loads: list[bool] = []
    real_load = engines.load
    monkeypatch.setattr(engines, "load", lambda path, device=None, *, cuda_graph=False:
                        loads.append(cuda_graph) or real_load(path, device, cuda_graph=cuda_graph))
    runner = InferenceBenchmarkRunner(Tiny3D().eval(), (3, 4, 8, 8), "cpu",
                                      settings=BenchSettings(warmup=0, iters=2))
    recs = runner.run(["fake", "fake+cudagraph"], [1, 2], ["fp32"])
    by = {(r["backend"], r["batch"]): r for r in recs}
    assert all(r["status"] == "ok" for r in recs), [r.get("reason") for r in recs]
    assert by[("fake", 1)]["engine_source"] == "built for this run"
    assert by[("fake+cudagraph", 1)]["engine_reused"] and by[("fake+cudagraph", 2)]["engine_reused"]
    assert loads == [False, True]  # built and loaded once, loaded once more for capture
    assert len(made) == 2 and by[("fake+cudagraph", 2)]["mode"] == "cudagraph"


def test_engines_that_cannot_be_captured_refuse_a_graph_load(monkeypatch, tmp_path):
    import engines
    from engines import backends

    monkeypatch.setattr(backends, "_ENGINES", dict(backends._ENGINES))
    backends.register_engine(backends.EngineBackendEntry("fake", ".ept", "_fake_engine", "test"))
    path = engines.build_engine(Tiny3D().eval(), torch.zeros(1, 3, 4, 8, 8), "fake", "fp32",
                                out_path=tmp_path / "tiny")
    with pytest.raises(engines.EngineError, match="cannot be captured in a CUDA graph"):
        engines.load(path, "cpu", cuda_graph=True)
    assert engines.load(path, "cpu")(torch.zeros(1, 3, 4, 8, 8)).shape == (1, 3)


def test_cli_bench_lists_the_graph_backends():
    from fastvid.cli import cli

    result = CliRunner().invoke(cli, ["bench", "--help"])
    assert result.exit_code == 0
    assert "eager+cudagraph" in result.output and "reduce-overhead" in result.output


# ------------------------------------------------------------------------- GPU
@pytest.mark.gpu
def test_cuda_graph_replay_matches_eager_on_the_gpu():
    model = Tiny3D().eval().cuda().half()
    runner = GraphedRunner(lambda x: model(x), "cuda", warmup=2)
    with torch.inference_mode():
        for _ in range(3):
            x = torch.randn(2, 3, 4, 16, 16, device="cuda", dtype=torch.half)
            torch.testing.assert_close(runner(x), model(x), rtol=1e-3, atol=1e-3)
    assert runner.replays == 3


@pytest.mark.gpu
def test_graph_modes_on_the_gpu_are_measured_and_annotated():
    runner = InferenceBenchmarkRunner(Tiny3D().eval().cuda(), (3, 4, 16, 16), "cuda", model_name="tiny",
                                      settings=BenchSettings(warmup=2, iters=5))
    recs = runner.run(["eager+cudagraph", "compile+cudagraph"], [1, 4], ["fp16"])
    ok = {(r["backend"], r["batch"]): r for r in recs if r["status"] == "ok"}
    failed = [(r["backend"], r.get("reason")) for r in recs if r["status"] != "ok"]
    assert ("eager+cudagraph", 1) in ok and ("eager+cudagraph", 4) in ok, failed
    assert ("compile+cudagraph", 1) in ok, failed
    for r in ok.values():
        assert r["tflops"] > 0 and r["cudnn_benchmark"] is True
        assert r["pct_of_peak"] is not None or "no peak known" in r["peak_basis"]
