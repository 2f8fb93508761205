"""docs/design.md's "add a model family" recipe, followed literally: one module with one
``@register_model`` and a config YAML, nothing else, run through the CLI with FASTVID_PLUGINS
(train one epoch, eval, build-engine, bench).

The YAML leaves crop, frames and sampling unset, so those come from the registration's spec
alone; the model class holds no layout or normalisation, so the engine's layout, colour and
mean can only come from the spec too.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

from fastvid.data.synth import synth_dataset

ROOT = Path(__file__).resolve().parents[2]

FAMILY = '''
"""A throwaway model family: one module, one registration."""
import torch
import torch.nn as nn

from fastvid.models import register_model


class Tiny3D(nn.Module):
    def __init__(self, num_classes: int, dropout: float) -> None:
        super().__init__()
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm3d(8)
        self.drop = nn.Dropout(dropout)
        self.fc = nn.Linear(8, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))
        return self.fc(self.drop(x.mean(dim=(2, 3, 4))))


@register_model(arch="tiny", backbone="tiny3d", input_layout="NCTHW", color="RGB",
                mean=(123.675, 116.28, 103.53), std=(58.395, 57.12, 57.375), crop_size=48,
                num_frames=4, sampling="dense", classifier=("fc",), config_keys=("dropout",))
def tiny_tiny3d(num_classes: int, dropout: float = 0.0, **_: object) -> nn.Module:
    return Tiny3D(num_classes, dropout)
'''

CONFIG = {
    "model": {"arch": "tiny", "backbone": "tiny3d", "dropout": 0.0},
    "data": {"scale_size": 56, "frame_interval": 2},
    "train": {"epochs": 1, "batch_size": 4, "lr": 0.01, "workers": 0, "log_interval": 1,
              "lr_steps": [100]},
}


def _fastvid(args: list[str], cwd: Path) -> str:
    env = dict(os.environ, FASTVID_PLUGINS="fv_recipe_family",
               PYTHONPATH=os.pathsep.join([str(cwd), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-m", "fastvid", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, f"fastvid {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def test_a_model_family_is_one_module_and_one_registration(tmp_path):
    (tmp_path / "fv_recipe_family.py").write_text(FAMILY)
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(CONFIG))
    synth_dataset(tmp_path / "data", classes=2, train=8, val=4, frames=12, size=(64, 64))
    common = ["-c", "tiny.yaml", "--device", "cpu"]

    _fastvid(["train", *common, "--data-root", "data", "--work-dir", "run", "--loader", "torch",
              "--no-progress"], tmp_path)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())
    # The spec's defaults, resolved and written into the run's config.
    assert (saved["data"]["image_size"], saved["data"]["clip_len"], saved["data"]["sampling"]) == \
        (48, 4, "dense")

    _fastvid(["eval", *common, "--data-root", "data", "--checkpoint", "run/best.pt", "--loader",
              "torch", "--out", "eval.json"], tmp_path)
    result = json.loads((tmp_path / "eval.json").read_text())
    assert result["num_videos"] == 4 and 0.0 <= result["top1"] <= 1.0

    _fastvid(["build-engine", *common, "--checkpoint", "run/best.pt", "--backend", "onnx",
              "--out", "tiny"], tmp_path)
    meta = json.loads((tmp_path / "tiny.onnx.json").read_text())
    assert meta["valid"] and meta["model_name"] == "tiny_tiny3d"
    assert meta["input_layout"] == "NCTHW" and meta["input_shape"] == [1, 3, 4, 48, 48]
    assert meta["color"] == "RGB" and meta["mean"] == [123.675, 116.28, 103.53]

    _fastvid(["bench", *common, "--checkpoint", "run/best.pt", "--engine", "tiny.onnx",
              "--batch", "1", "--backends", "eager", "--precision", "fp32", "--iters", "2",
              "--warmup", "1", "--out", "bench"], tmp_path)
    records = json.loads((tmp_path / "bench" / "results.json").read_text())
    assert {r["backend"] for r in records} >= {"eager", "onnx"}
    assert all(r["model"] == "tiny_tiny3d" for r in records if "model" in r)
