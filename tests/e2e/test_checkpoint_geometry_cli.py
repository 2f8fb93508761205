"""build-engine, bench and predict through the CLI take a checkpoint's data geometry (64 px,
4 segments, its mean) without any ``--set``."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from _checkpoints import CLASSES, CONFIG, write_checkpoint
from _helpers import invoke_ok


@pytest.mark.slow  # ONNX export + benchmark of BNInception-TRN: 133-160 s measured on the shared, loaded 2 cores
def test_built_and_benchmarked_at_the_checkpoints_64_px(tmp_path):
    ckpt = write_checkpoint(tmp_path / "best.pt")
    out = tmp_path / "engine"
    invoke_ok(["build-engine", "-c", CONFIG, "--checkpoint", str(ckpt), "--backend", "onnx",
               "--device", "cpu", "--out", str(out)])
    meta = json.loads(Path(f"{out}.onnx.json").read_text())
    assert meta["image_size"] == 64 and meta["input_shape"][1:] == [4, 3, 64, 64]
    assert meta["mean"] == [100, 110, 120] and meta["classes"] == CLASSES
    bench = tmp_path / "bench"
    invoke_ok(["bench", "-c", CONFIG, "--checkpoint", str(ckpt), "--backends", "eager",
               "--iters", "1", "--warmup", "0", "--device", "cpu", "--out", str(bench)])
    records = json.loads((bench / "results.json").read_text())
    assert records and all(r["input_shape"][1:] == [4, 3, 64, 64] for r in records)
    # the engine carries the geometry too: predict with it needs no --set either
    frames = tmp_path / "clip"
    from _media import write_frame_folder

    write_frame_folder(frames, 8, 72, 96)
    pred = tmp_path / "p.json"
    invoke_ok(["predict", str(frames), "-c", CONFIG, "--engine", f"{out}.onnx", "--device", "cpu",
               "--topk", "1", "--out", str(pred)])
    assert json.loads(pred.read_text())["windows"][0]["topk"][0]["label"] in CLASSES
