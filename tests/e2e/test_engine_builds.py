"""Engines of the real models built, loaded and validated on CPU: TRN-BNInception through every
registered backend that runs here (AOTInductor's C++ compile: minutes on 2 shared cores, so
``slow``), TPN-SlowOnly through AOTInductor, and ``fastvid build-engine`` / ``fastvid bench`` on
a TPN checkpoint. Each engine is built once per module; inputs stay at 64 px and 4 frames."""
from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

import engines
from engines.backends import engine_backend, engine_names

from _engine_models import (BGR_MEAN, BGR_STD, CLASSES, FRAMES, MAX_BATCH, RGB_MEAN, RGB_STD, SIZE,
                            eager, tpn, trn)  # noqa: F401 - fixtures


def _build_trn(trn, tmp_path_factory, backend: str):
    out = tmp_path_factory.mktemp(f"trn_{backend}")
    example = torch.zeros(2, FRAMES, 3, SIZE, SIZE)
    meta = {"model_name": "trn_bninception", "mean": BGR_MEAN, "std": BGR_STD}
    return engines.build_engine(trn, example, backend, "fp32", batch=2, max_batch=MAX_BATCH,
                                out_path=out / f"trn_{backend}", meta=meta)


@pytest.fixture(scope="module")
def trn_engines(trn, tmp_path_factory):
    """``backend -> path``: TRN's fp32 engine of that backend, built on first use (once per module)."""
    built: dict[str, object] = {}

    def get(backend: str):
        if backend not in built:
            built[backend] = _build_trn(trn, tmp_path_factory, backend)
        return built[backend]

    return get


@pytest.fixture(scope="module")
def trn_onnx(trn_engines):
    return trn_engines("onnx")


# AOTInductor compiles C++ on a CPU: 50-100 s of TRN on 2 shared cores.
_SLOW_CPU_BUILDS = {"aoti"}


@pytest.mark.parametrize("backend", [pytest.param(name, marks=[pytest.mark.slow] * (name in _SLOW_CPU_BUILDS))
                                     for name in engine_names()])
def test_trn_engine_matches_eager_over_the_batch_range(trn, trn_engines, backend):
    """Every registered backend that can build on this CPU (the others skip with the reason)."""
    why = engines.available_backends("cpu")[backend]
    if why is not None:
        pytest.skip(f"{backend} cannot build on this CPU: {why}")
    path = trn_engines(backend)
    assert path.name.endswith(engine_backend(backend).extension) and path.is_file()
    meta = json.loads(engines.meta_path(path).read_text())
    assert meta["backend"] == backend and meta["precision"] == "fp32" and meta["valid"] is True
    assert meta["input_shape"] == [2, FRAMES, 3, SIZE, SIZE] and meta["batch_range"] == [1, MAX_BATCH]
    assert meta["input_layout"] == "NTCHW" and meta["num_classes"] == CLASSES
    assert meta["versions"]["torch"] == torch.__version__ and meta["date"]
    val = meta["validation"]
    assert val["passed"] and val["rel_err"] <= val["tolerance_rel"] and val["top1_agreement"] == 1.0

    engine = engines.load(path, "cpu")
    for batch in (1, 3, MAX_BATCH):
        x = engines.validation_batch((batch, FRAMES, 3, SIZE, SIZE), BGR_MEAN, BGR_STD, seed=batch)
        ref = eager(trn, x)
        got = engine(x)
        assert got.shape == (batch, CLASSES) and got.dtype == torch.float32
        scale = ref.abs().max().item()
        assert (got - ref).abs().max().item() <= 1e-3 * scale


def test_engine_rejects_wrong_shape_batch_and_dtype(trn_onnx):
    engine = engines.load(trn_onnx)
    with pytest.raises(engines.EngineError) as err:
        engine(torch.zeros(2, FRAMES, 3, 32, 32))
    assert str(err.value) == (f"engine built for input (B,{FRAMES},3,{SIZE},{SIZE}) with B in [1,{MAX_BATCH}], "
                              f"got (2,{FRAMES},3,32,32)")
    with pytest.raises(engines.EngineError, match=rf"B in \[1,{MAX_BATCH}\], got \({MAX_BATCH + 1},"):
        engine(torch.zeros(MAX_BATCH + 1, FRAMES, 3, SIZE, SIZE))
    with pytest.raises(engines.EngineError, match="got torch.uint8"):
        engine(torch.zeros(1, FRAMES, 3, SIZE, SIZE, dtype=torch.uint8))


@pytest.mark.slow
def test_tpn_slowonly_aoti_engine(tpn, tmp_path):
    example = torch.zeros(1, 3, FRAMES, SIZE, SIZE)
    path = engines.build_engine(tpn, example, "aoti", "fp32", batch=1, max_batch=2,
                                out_path=tmp_path / "tpn", meta={"mean": RGB_MEAN, "std": RGB_STD})
    engine = engines.load(path)
    assert engine.meta["input_layout"] == "NCTHW"
    x = engines.validation_batch((2, 3, FRAMES, SIZE, SIZE), RGB_MEAN, RGB_STD, layout="NCTHW", seed=5)
    ref = eager(tpn, x)
    assert (engine(x) - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()


def test_cli_build_engine_onnx_for_tpn_checkpoint(tpn, tmp_path):
    from fastvid.cli import cli
    from fastvid.config import load_config

    overrides = [f"data.image_size={SIZE}", f"data.clip_len={FRAMES}", f"model.num_classes={CLASSES}"]
    cfg = load_config("configs/tpn_slowonly_r50_k400.yaml", overrides)
    ckpt = tmp_path / "tpn.pt"
    torch.save({"model": tpn.state_dict(), "config": cfg.to_dict(), "classes": list("abcde")}, ckpt)
    args = ["build-engine", "-c", "configs/tpn_slowonly_r50_k400.yaml", "--checkpoint", str(ckpt),
            "--backend", "onnx", "--max-batch", "2", "--device", "cpu"]
    for o in overrides:
        args += ["--set", o]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    path = tmp_path / "tpn.onnx.fp32.b1-2.onnx"
    assert path.is_file(), result.output
    assert "top-1 agreement 100.0%" in result.output
    engine = engines.load(path)
    assert engine.meta["classes"] == list("abcde") and engine.meta["model_name"] == "tpn_slowonly_r50"
    x = engines.validation_batch((2, 3, FRAMES, SIZE, SIZE), RGB_MEAN, RGB_STD, layout="NCTHW", seed=2)
    ref = eager(tpn, x)
    assert (engine(x) - ref).abs().max().item() <= 1e-3 * ref.abs().max().item()

    # The prebuilt engine is benchmarked as is (no rebuild) next to the eager baseline.
    from bench import read_records

    bench_args = ["bench", "-c", "configs/tpn_slowonly_r50_k400.yaml", "--checkpoint", str(ckpt),
                  "--engine", str(path), "--backends", "eager", "--batch", "2", "--iters", "2", "--warmup", "0",
                  "--device", "cpu", "--out", str(tmp_path / "rep")]
    for o in overrides:
        bench_args += ["--set", o]
    result = CliRunner().invoke(cli, bench_args)
    assert result.exit_code == 0, result.output
    recs = {r["backend"]: r for r in read_records(tmp_path / "rep")}
    assert recs["onnx"]["engine_source"] == "prebuilt" and recs["onnx"]["engine"] == str(path)
    assert recs["onnx"]["video_per_s"] > 0 and recs["eager"]["weights"] == str(ckpt)
