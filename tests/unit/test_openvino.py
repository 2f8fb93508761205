"""OpenVINO engines (engines/openvino.py): build, validate, load and run TRN and TPN on CPU, the
bench's peer rule and the ``auto`` choice. 64 px, 4-8 frames, the real architectures; each engine
is built once per module. Through the CLI (trained checkpoint, bench beside the mmaction2 peer):
tests/e2e/test_openvino_cli.py.
"""
from __future__ import annotations

import json
import os

import pytest
import torch

import engines
from engines.core import EngineError, EngineValidationError
from fastvid.errors import BackendUnavailable

from _tiny import Tiny2D

pytest.importorskip("openvino", reason="openvino is not installed (pip install fastvid[openvino])")

from engines import openvino as ov_backend  # noqa: E402  (after the skip: imports nothing heavy)

CPU = torch.device("cpu")


def _bf16_skip_reason() -> str | None:
    return ov_backend.precision_unsupported("bf16", CPU)


needs_bf16 = pytest.mark.skipif(_bf16_skip_reason() is not None,
                                reason=f"bf16 engines: {_bf16_skip_reason()}")


@pytest.fixture(scope="module", autouse=True)
def _private_cache(tmp_path_factory):
    """Compiled blobs go to a folder of this module, not the user's ~/.cache."""
    old = os.environ.get(ov_backend.CACHE_ENV)
    os.environ[ov_backend.CACHE_ENV] = str(tmp_path_factory.mktemp("ov_cache"))
    yield
    if old is None:
        os.environ.pop(ov_backend.CACHE_ENV, None)
    else:
        os.environ[ov_backend.CACHE_ENV] = old


def test_bf16_refused_in_one_line_where_the_cpu_lacks_it(monkeypatch):
    monkeypatch.setattr(ov_backend, "_cpu_capabilities", lambda: ["FP32", "INT8"])
    with pytest.raises(BackendUnavailable, match="no native bf16.*--precision fp32"):
        engines.check_supported("openvino", "bf16", CPU)
    with pytest.raises(BackendUnavailable, match="fp32 or bf16"):
        engines.check_supported("openvino", "fp16", CPU)
    # auto falls through to a backend that does build bf16 on this CPU
    assert engines.auto_backend(CPU, "bf16") != "openvino"


def test_auto_picks_openvino_on_a_cpu_and_falls_back_without_it(monkeypatch):
    assert engines.auto_backend(CPU) == "openvino"
    monkeypatch.setattr(ov_backend, "unavailable_reason", lambda device: "not installed (test)")
    assert engines.auto_backend(CPU) in ("aoti", "onnx")
    assert engines.available_backends(CPU)["openvino"] == "not installed (test)"


def test_runtime_precision_other_than_asked_is_refused(monkeypatch, tmp_path):
    """OpenVINO silently computes in bf16 on AVX512_BF16 CPUs unless told: an fp32 engine whose
    compiled model reports another precision is refused, never run mislabelled."""
    if _bf16_skip_reason() is not None:
        pytest.skip(f"needs a CPU where OpenVINO can pick bf16: {_bf16_skip_reason()}")
    model = Tiny2D(width=4).eval()
    monkeypatch.setitem(ov_backend.PRECISION_HINTS, "fp32", "bf16")
    with pytest.raises(EngineError, match="compiled this fp32 engine to run in bf16"):
        engines.build_engine(model, torch.zeros(1, 2, 3, 16, 16), "openvino", "fp32",
                             out_path=tmp_path / "tiny")


def test_failed_validation_removes_the_xml_and_its_bin(monkeypatch, tmp_path):
    model = Tiny2D(width=4).eval()
    monkeypatch.setitem(ov_backend.TOLERANCES, "fp32", 0.0)
    with pytest.raises(EngineValidationError, match="removed"):
        engines.build_engine(model, torch.zeros(1, 2, 3, 16, 16), "openvino", "fp32",
                             out_path=tmp_path / "tiny")
    assert not (tmp_path / "tiny.xml").exists() and not (tmp_path / "tiny.bin").exists()
    assert json.loads((tmp_path / "tiny.xml.json").read_text())["valid"] is False
    assert not list(tmp_path.glob(".openvino-*"))  # no scratch folder left behind


def test_damaged_or_missing_bin_is_a_clear_error(tmp_path):
    model = Tiny2D(width=4).eval()
    path = engines.build_engine(model, torch.zeros(1, 2, 3, 16, 16), "openvino", "fp32",
                                out_path=tmp_path / "tiny")
    weights = path.with_suffix(".bin").read_bytes()
    path.with_suffix(".bin").write_bytes(weights[: len(weights) // 2])  # a half-copied engine
    # The JSON's size and hash of the companion catch it before OpenVINO reads it.
    with pytest.raises(EngineError, match=r"tiny\.bin was changed after it was built.*rebuild"):
        engines.load(path, CPU)
    path.with_suffix(".bin").unlink()
    with pytest.raises(EngineError, match=r"tiny\.bin is missing"):
        engines.load(path, CPU)


def test_threads_beside_a_loader_and_the_cache(tmp_path, monkeypatch):
    model = Tiny2D(width=4).eval()
    path = engines.build_engine(model, torch.zeros(1, 2, 3, 16, 16), "openvino", "fp32",
                                out_path=tmp_path / "tiny")
    eng = engines.load(path, CPU, cpu_threads=1)
    assert eng.runtime_info["num_threads"] == 1 and eng.runtime_info["cpu_pinning"] is False
    assert eng.runtime_info["cache_dir"] == os.environ[ov_backend.CACHE_ENV]
    assert any(os.scandir(eng.runtime_info["cache_dir"]))  # compiled blobs were cached
    again = engines.load(path, CPU, cpu_threads=1).runtime_info["compiled"]["LATENCY"]
    assert again["loaded_from_cache"] is True  # a second eval/predict imports, not compiles
    monkeypatch.setenv(ov_backend.THREADS_ENV, "2")
    assert engines.load(path, CPU).runtime_info["num_threads"] == 2
    monkeypatch.setenv(ov_backend.CACHE_ENV, "off")
    assert engines.load(path, CPU).runtime_info["cache_dir"] is None
    assert 1 <= engines.cpu_threads_beside_loader(8) <= engines.cpu_threads_beside_loader(0)


def test_bench_peer_is_skipped_with_the_reason_for_models_without_one():
    from bench.runner import BenchSettings, InferenceBenchmarkRunner

    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (2, 3, 8, 8), "cpu", model_name="tiny",
                                      settings=BenchSettings(warmup=0, iters=1))
    recs = runner.run(["mmaction2"], [1], ["fp32"])
    peer = next(r for r in recs if r["backend"] == "mmaction2")
    assert peer["status"] == "skipped" and "no mmaction2 peer for tiny" in peer["reason"]
