"""OpenVINO engines (engines/openvino.py): build, validate, load and run TRN and TPN on CPU, bf16 on a
trained checkpoint, the CLI (build-engine, eval, predict, bench with the mmaction2 peer) and the
``auto`` choice. 64 px, 4-8 frames, the real architectures; each engine is built once per module.
"""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn

import engines
from engines.core import EngineError, EngineValidationError
from fastvid.errors import BackendUnavailable

from _helpers import CONFIG, REPO, SMALL, invoke, invoke_ok
from _tiny import Tiny2D

pytest.importorskip("openvino", reason="openvino is not installed (pip install fastvid[openvino])")

from engines import openvino as ov_backend  # noqa: E402  (after the skip: imports nothing heavy)

CPU = torch.device("cpu")
SIZE, CLASSES, MAX_BATCH = 64, 5, 4
BGR = {"mean": [104.0, 117.0, 128.0], "std": [1.0, 1.0, 1.0]}
RGB = {"mean": [123.675, 116.28, 103.53], "std": [58.395, 57.12, 57.375]}


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


def _model(name: str, **kwargs) -> nn.Module:
    from fastvid.models import create_model

    torch.manual_seed(0)
    return create_model(name, num_classes=CLASSES, **kwargs).eval()


@pytest.fixture(scope="module")
def trn() -> nn.Module:
    return _model("trn_bninception", num_segments=4, consensus="trn_multiscale")


@pytest.fixture(scope="module")
def trn_xml(trn, tmp_path_factory):
    out = tmp_path_factory.mktemp("trn_ov") / "trn"
    return engines.build_engine(trn, torch.zeros(1, 4, 3, SIZE, SIZE), "openvino", "fp32", batch=1,
                                max_batch=MAX_BATCH, out_path=out,
                                meta={"model_name": "trn_bninception", **BGR})


@pytest.fixture(scope="module")
def tpn() -> nn.Module:
    return _model("tpn_slowonly_r50")


@pytest.fixture(scope="module")
def tpn_xml(tpn, tmp_path_factory):
    out = tmp_path_factory.mktemp("tpn_ov") / "tpn"
    return engines.build_engine(tpn, torch.zeros(1, 3, 8, SIZE, SIZE), "openvino", "fp32", batch=1,
                                max_batch=MAX_BATCH, out_path=out,
                                meta={"model_name": "tpn_slowonly_r50", **RGB})


def _check_engine(path, model: nn.Module, sample: tuple[int, ...], precision: str, tol: float) -> dict:
    """The saved IR pair, its JSON, and the reloaded engine against eager at batch 1 and 3."""
    assert path.suffix == ".xml" and path.with_suffix(".bin").is_file()
    meta = json.loads(engines.meta_path(path).read_text())
    assert meta["backend"] == "openvino" and meta["precision"] == precision and meta["valid"]
    assert meta["input_dtype"] == "float32"  # the runtime applies the precision, not the graph
    assert meta["runtime"]["inference_precision"] == precision  # read back from the compiled model
    assert meta["validation"]["tolerance_rel"] == ov_backend.TOLERANCES[precision]
    assert meta["validation"]["rel_err"] <= tol
    eng = engines.load(path, CPU)
    gen = torch.Generator().manual_seed(3)
    for batch in (1, 3):  # LATENCY model (static batch 1), THROUGHPUT streams (batch split)
        x = torch.randn(batch, *sample, generator=gen)
        with torch.no_grad():
            ref = model(x)
        got = eng(x)
        assert got.shape == ref.shape and got.dtype == torch.float32
        assert float((got - ref).abs().max() / ref.abs().max()) <= tol
    info = eng.runtime_info
    assert set(info["compiled"]) == {"LATENCY", "THROUGHPUT"}
    assert all(c["inference_precision"] == precision for c in info["compiled"].values())
    with pytest.raises(EngineError, match=r"B in \[1,4\]"):
        eng(torch.zeros(MAX_BATCH + 1, *sample))
    return meta


def test_trn_openvino_fp32_matches_eager_within_1e_4(trn, trn_xml):
    meta = _check_engine(trn_xml, trn, (4, 3, SIZE, SIZE), "fp32", 1e-4)
    assert meta["batch_range"] == [1, MAX_BATCH] and meta["validation"]["top1_agreement"] == 1.0


def test_tpn_slowonly_openvino_fp32_matches_eager_within_1e_4(tpn, tpn_xml):
    _check_engine(tpn_xml, tpn, (3, 8, SIZE, SIZE), "fp32", 1e-4)


@needs_bf16
@pytest.mark.slow
def test_tpn_slowonly_openvino_bf16(tpn, tmp_path):
    path = engines.build_engine(tpn, torch.zeros(1, 3, 8, SIZE, SIZE), "openvino", "bf16", batch=1,
                                max_batch=MAX_BATCH, out_path=tmp_path / "tpn_bf16", meta=dict(RGB))
    meta = _check_engine(path, tpn, (3, 8, SIZE, SIZE), "bf16", ov_backend.TOLERANCES["bf16"])
    assert meta["validation"]["rel_err"] > 1e-6  # it did compute in bf16, not silently in fp32


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


# -- through the CLI, on a checkpoint trained with the demo's recipe ---------------------------------
@pytest.fixture(scope="module")
def tiny_trained(tmp_path_factory):
    """``(root, checkpoint)``: TRN trained with the demo config (64 px, 4 segments) for 3 epochs on
    a small 2-class set separable from any frame (colour vs grey object): confident logits,
    unlike random weights, whose nearly flat logits make top-1 agreement meaningless."""
    from fastvid.data.synth import synth_dataset

    from _helpers import train_args

    root = tmp_path_factory.mktemp("ov_separable")
    synth_dataset(root, kind="frames", train=32, val=12, frames=8, size=(64, 64), seed=2,
                  class_ids=[0, 32])
    work = tmp_path_factory.mktemp("ov_trained")
    invoke_ok(train_args(root, work, "--epochs", "3", "--batch-size", "8",
                         "--set", "train.lr=0.01", "--set", "model.dropout=0.2"))
    return root, work / "best.pt"


def _eval(root, args: list[str], out) -> tuple[dict, np.ndarray]:
    invoke_ok(["eval", "-c", CONFIG, "--data-root", str(root), "--loader", "torch", "--device", "cpu",
               *SMALL, *args, "--out", str(out / "eval.json"), "--save-scores", str(out / "s.npy")])
    return json.loads((out / "eval.json").read_text()), np.load(out / "s.npy")


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", pytest.param("bf16", marks=needs_bf16)])
def test_cli_engine_from_trained_checkpoint_agrees_with_eager(tiny_trained, tmp_path, precision):
    """build-engine --backend auto -> eval --engine and predict --engine agree with the checkpoint
    (bf16: every val video's top-1, and its scores within the stated tolerance)."""
    synth_frames, ckpt = tiny_trained
    ckpt = str(ckpt)
    engine = tmp_path / "trn"
    out = invoke_ok(["build-engine", "-c", CONFIG, "--checkpoint", ckpt, "--backend", "auto",
                     "--precision", precision, "--batch", "1", "--max-batch", "4",
                     "--out", str(engine), "--device", "cpu", *SMALL])
    assert f"openvino {precision}" in out and f"computes in {precision}" in out
    engine = engine.with_suffix(".xml")
    meta = json.loads(engines.meta_path(engine).read_text())
    assert meta["validation"]["top1_agreement"] == 1.0  # seeded inputs, trained weights
    (tmp_path / "c").mkdir()
    (tmp_path / "e").mkdir()
    ref, ref_scores = _eval(synth_frames, ["--checkpoint", ckpt, "--batch-size", "4"], tmp_path / "c")
    got, scores = _eval(synth_frames, ["--engine", str(engine), "--batch-size", "4"], tmp_path / "e")
    assert ref["num_videos"] == got["num_videos"] == len(scores) > 0
    assert (scores.argmax(1) == ref_scores.argmax(1)).all()
    assert np.abs(scores - ref_scores).max() <= (2e-2 if precision == "bf16" else 1e-4)
    assert got["top1"] == ref["top1"]

    name = (synth_frames / "val_videofolder.txt").read_text().split()[0]
    res = invoke(["predict", str(synth_frames / "20bn-jester-v1" / name), "-c", CONFIG, "--engine",
                  str(engine), "--device", "cpu", *SMALL, "--out", str(tmp_path / "p.json")])
    assert res.exit_code == 0, res.output
    pred = json.loads((tmp_path / "p.json").read_text())
    assert pred["windows"][0]["topk"][0]["index"] == int(ref_scores[0].argmax())


@pytest.mark.slow  # ~40 s on 2 busy cores: eager and mmaction2's TPN are timed
def test_cli_bench_openvino_beside_eager_and_the_mmaction2_peer(tpn_xml, tmp_path):
    """One bench call: eager, mmaction2's own TPN and the OpenVINO engine, with the precision the
    runtime computes in and the ratios to both baselines."""
    from bench.peers import peer_unavailable

    if peer_unavailable("tpn_slowonly_r50", "fp32"):
        pytest.skip(peer_unavailable("tpn_slowonly_r50", "fp32"))
    cfg = str(REPO / "configs" / "tpn_slowonly_r50_k400.yaml")
    invoke_ok(["bench", "-c", cfg, "--device", "cpu", "--set", f"data.image_size={SIZE}",
               "--set", f"model.num_classes={CLASSES}", "--engine", str(tpn_xml),
               "--backends", "eager,mmaction2", "--batch", "1", "--iters", "1", "--warmup", "0",
               "--out", str(tmp_path)])
    recs = {r["backend"]: r for r in json.loads((tmp_path / "results.json").read_text())}
    assert {"eager", "mmaction2", "openvino"} <= set(recs)
    assert all(r["status"] == "ok" for r in recs.values()), recs
    peer, ov = recs["mmaction2"], recs["openvino"]
    assert peer["peer"].startswith("mmaction2 1.2") and "Recognizer3D" in peer["peer"]
    assert peer["peer_max_abs_diff"] < 1e-3  # the same function, fastvid's weights
    assert ov["precision_used"] == "fp32" and ov["runtime"]["inference_precision"] == "fp32"
    assert ov["ratio_to_peer"] == pytest.approx(ov["video_per_s"] / peer["video_per_s"], rel=1e-2)
    assert recs["eager"]["ratio_to_peer"] > 0
    invoke_ok(["report", str(tmp_path)])
    report = (tmp_path / "report.md").read_text()
    assert "× mmaction2" in report and "fp32 (runtime fp32)" in report


def test_bench_peer_is_skipped_with_the_reason_for_models_without_one():
    from bench.runner import BenchSettings, InferenceBenchmarkRunner

    runner = InferenceBenchmarkRunner(Tiny2D().eval(), (2, 3, 8, 8), "cpu", model_name="tiny",
                                      settings=BenchSettings(warmup=0, iters=1))
    recs = runner.run(["mmaction2"], [1], ["fp32"])
    peer = next(r for r in recs if r["backend"] == "mmaction2")
    assert peer["status"] == "skipped" and "no mmaction2 peer for tiny" in peer["reason"]
