"""Engines on tiny models: export checks, ONNX build + validation, errors that name what is
missing, TensorRT's and AOTInductor's device rules (the CUDA builds run on a GPU machine).
Builds of the real models through every backend are in tests/e2e/test_engine_builds.py."""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
from click.testing import CliRunner

import engines
from fastvid.errors import BackendUnavailable

from _engine_models import BGR_MEAN, BGR_STD, CLASSES, FRAMES, MAX_BATCH, SIZE, trn  # noqa: F401 - fixture
from _tiny import Tiny2D


class _Bad(nn.Module):
    """Stand-in with the two things an engine graph must not hold."""

    input_layout = "NTCHW"
    num_classes = 3

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)
        self.pool = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = self.pool(self.conv(x.flatten(0, 1)))
        y = y + 0.01 * torch.rand_like(y)
        return self.fc(y.mean((2, 3)).view(n, t, -1).mean(1))


def test_graph_problems_finds_ceil_mode_and_rng():
    exported = engines.export_model(_Bad().eval(), torch.randn(2, 2, 3, 16, 16), max_batch=4)
    problems = engines.graph_problems(exported)
    assert any("ceil_mode" in p for p in problems), problems
    assert any("random op" in p for p in problems), problems
    clean = engines.export_model(Tiny2D(width=4, bn=False).eval(), torch.randn(2, 2, 3, 16, 16), max_batch=4)
    assert engines.graph_problems(clean) == []


def test_trn_exported_graph_has_no_ceil_mode_pool_or_rng(trn):
    exported = engines.export_model(trn, torch.randn(2, FRAMES, 3, SIZE, SIZE), max_batch=MAX_BATCH)
    assert engines.graph_problems(exported) == []
    ops = {str(n.target) for n in exported.graph.nodes if n.op == "call_function"}
    assert any("max_pool2d" in op for op in ops), "BNInception's pooling should be in the graph"


def test_export_refuses_train_mode():
    with pytest.raises(engines.ExportError, match="eval"):
        engines.export_model(Tiny2D(width=4, bn=False).train(), torch.randn(2, 2, 3, 8, 8), max_batch=2)


def test_failed_validation_removes_the_artifact(tmp_path, monkeypatch):
    monkeypatch.setitem(engines.TOLERANCES, ("fp32", "cpu"), -1.0)  # nothing can pass
    with pytest.raises(engines.EngineValidationError, match="failed validation"):
        engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "onnx", out_path=tmp_path / "tiny")
    artifact = tmp_path / "tiny.onnx"
    assert not artifact.exists()
    assert json.loads(engines.meta_path(artifact).read_text())["valid"] is False
    with pytest.raises(engines.EngineError, match="failed validation"):
        engines.load(artifact)


def test_build_engine_says_what_it_is_doing(tmp_path, caplog):
    # build-engine was silent for 40 s (AOTInductor on a CPU): each stage is logged as it starts.
    import logging

    caplog.set_level(logging.INFO, logger="engines.core")
    engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "onnx", out_path=tmp_path / "tiny")
    stages = [r.getMessage() for r in caplog.records if r.name == "engines.core"]
    expected = ("exporting Tiny2D", "compiling with onnx", "validating the saved engine", "built ")
    at = [next(i for i, m in enumerate(stages) if want in m) for want in expected]
    assert at == sorted(at), stages


def test_fp16_on_cpu_and_missing_trt_are_clear_errors(tmp_path):
    with pytest.raises(BackendUnavailable, match="CUDA"):
        engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "aoti", "fp16",
                             out_path=tmp_path / "x")
    status = engines.available_backends("cpu")
    assert status["aoti"] is None and status["onnx"] is None and "CUDA" in status["trt"]
    with pytest.raises(BackendUnavailable, match="Available backends here: aoti, onnx"):
        engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "trt", out_path=tmp_path / "x")


def test_trt_save_example_keeps_the_batch_dynamic():
    """torch_tensorrt.save(retrace=True) re-exports with an opt-shape example (no TensorRT needed)."""
    from engines.tensorrt import _save_opt_batch, _shape_range

    sample = (FRAMES, 3, 8, 8)
    assert _shape_range(sample, 1, MAX_BATCH) == {"min_shape": (1, *sample), "opt_shape": (1, *sample),
                                                  "max_shape": (MAX_BATCH, *sample)}
    assert [_save_opt_batch(b, m) for b, m in [(1, 1), (1, 4), (2, 4), (3, 4), (4, 4)]] == [1, 2, 2, 3, 4]
    model = Tiny2D(width=4, bn=False).eval()
    batch = torch.export.Dim("_0", min=1, max=MAX_BATCH)  # what save infers from a dynamic Input
    with pytest.raises(Exception, match="specialized"):  # the bug: a batch-1 opt shape as example
        torch.export.export(model, (torch.zeros(1, *sample),), dynamic_shapes=({0: batch},))
    ep = torch.export.export(model, (torch.zeros(_save_opt_batch(1, MAX_BATCH), *sample),),
                             dynamic_shapes=({0: batch},))
    assert ep.module()(torch.zeros(1, *sample)).shape == (1, 3)
    assert ep.module()(torch.zeros(MAX_BATCH, *sample)).shape == (MAX_BATCH, 3)


def test_trt_bf16_check_ignores_emulated_bf16(monkeypatch):
    from engines.core import precision_reason

    def precision_unsupported(precision, device):  # the device's rule, then TensorRT's own
        return precision_reason("trt", precision, device)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # A pre-Ampere GPU: bf16 only emulated, so the default (including_emulation=True) says True.
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert "bf16" in precision_unsupported("bf16", torch.device("cuda", 0))
    assert precision_unsupported("fp16", torch.device("cuda", 0)) is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_cli_build_engine_trt_without_tensorrt_says_what_is_missing(tmp_path):
    from fastvid.cli import cli

    result = CliRunner().invoke(cli, ["build-engine", "-c", "configs/trn_bninception_jester.yaml",
                                      "--checkpoint", str(tmp_path / "none.pt"), "--backend", "trt"])
    assert result.exit_code != 0
    assert "TensorRT needs a CUDA GPU" in result.output
    assert "Available backends here: aoti, onnx" in result.output
    assert "Traceback" not in result.output


@pytest.mark.gpu
def test_aoti_fp16_engine_on_cuda(tmp_path):
    # A conv and a linear layer: AOTInductor's CUDA compile of TRN-BNInception ran past 50 s on
    # an H200 (this test's old model); the engine path is the same.
    model = Tiny2D(width=4, bn=False).eval().to("cuda")
    example = torch.zeros(1, FRAMES, 3, SIZE, SIZE, device="cuda")
    path = engines.build_engine(model, example, "aoti", "fp16", batch=1, max_batch=2, out_path=tmp_path / "t",
                                meta={"mean": BGR_MEAN, "std": BGR_STD})
    engine = engines.load(path, "cuda")
    assert engine.meta["validation"]["passed"]  # fp16 engine vs fp32 eager, within fp16 tolerance
    x = engines.validation_batch((2, FRAMES, 3, SIZE, SIZE), BGR_MEAN, BGR_STD, seed=4).cuda()
    out = engine(x)
    assert out.is_cuda and out.dtype == torch.float32 and out.shape == (2, model.num_classes)


@pytest.mark.trt
@pytest.mark.parametrize("precision,opt_batch", [("fp32", 2), ("fp16", 2), ("fp16", 1)])
def test_trt_engine_build_load_validate(trn, tmp_path, precision, opt_batch):
    model = trn.to("cuda")
    example = torch.zeros(2, FRAMES, 3, SIZE, SIZE, device="cuda")
    path = engines.build_engine(model, example, "trt", precision, batch=opt_batch, max_batch=MAX_BATCH,
                                out_path=tmp_path / f"trn_{precision}", meta={"mean": BGR_MEAN, "std": BGR_STD})
    assert path.suffix == ".ep"
    engine = engines.load(path, "cuda")
    assert engine.meta["validation"]["passed"]
    for batch in (1, MAX_BATCH):
        x = engines.validation_batch((batch, FRAMES, 3, SIZE, SIZE), BGR_MEAN, BGR_STD, seed=batch).cuda()
        assert engine(x).shape == (batch, CLASSES)
    with pytest.raises(engines.EngineError, match="got"):
        engine(torch.zeros(MAX_BATCH + 1, FRAMES, 3, SIZE, SIZE, device="cuda"))
    trn.to("cpu")


def test_aoti_on_cuda_needs_a_compiler_and_the_cuda_toolkit(monkeypatch):
    """AOTInductor's CUDA wrapper is C++ compiled against the toolkit headers (CUDA_HOME)."""
    from torch._inductor import config as inductor_config
    from torch.utils import cpp_extension

    from engines.aoti import unavailable_reason

    cuda = torch.device("cuda", 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", None)
    assert "CUDA_HOME" in unavailable_reason(cuda)
    monkeypatch.setattr(cpp_extension, "CUDA_HOME", "/opt/cuda")
    assert unavailable_reason(cuda) is None
    # (monkeypatch.setattr on the config proxy would delete the option on undo)
    with inductor_config.patch({"cpp.cxx": ("no-such-compiler-xyz",)}):
        assert "C++ compiler" in unavailable_reason(cuda)
        assert "C++ compiler" in unavailable_reason(torch.device("cpu"))
    assert inductor_config.cpp.cxx != ("no-such-compiler-xyz",)


def test_aoti_bf16_check_ignores_emulated_bf16(monkeypatch):
    from engines.core import precision_reason

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert "bf16" in precision_reason("aoti", "bf16", torch.device("cuda", 0))


def test_onnx_cuda_session_that_fell_back_to_cpu_is_refused(monkeypatch, tmp_path):
    """ONNX Runtime silently runs on the CPU provider when the CUDA one fails to load."""
    import onnxruntime

    from engines.onnx_rt import _session

    class _FellBack:
        def __init__(self, path, sess_options=None, providers=None):
            assert providers[0][0] == "CUDAExecutionProvider"

        def get_providers(self):
            return ["CPUExecutionProvider"]

    monkeypatch.setattr(onnxruntime, "InferenceSession", _FellBack)
    with pytest.raises(BackendUnavailable, match="CUDAExecutionProvider"):
        _session(tmp_path / "m.onnx", torch.device("cuda", 0))
