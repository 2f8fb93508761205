"""The loader-backend recipe of docs/design.md, followed literally: a backend is its module + one
registration. A throwaway module written to tmp_path registers ``recipe-loader`` (a loader that
wraps the torch loader and records every batch it yields, and a frame stream that records every
chunk), and the CLI, started with ``FASTVID_PLUGINS`` naming it, trains, evaluates, benchmarks
and predicts with it without any other file knowing it exists."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from fastvid.data.synth import synth_dataset
from fastvid.data.video_io import pyav_installed

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "demo_trn_synth.yaml")
SMALL = ["--set", "model.num_segments=4", "--set", "data.image_size=64", "--set",
         "data.scale_size=64", "--set", "train.workers=0", "--set", "train.precise_bn_batches=0"]

PLUGIN = '''
"""A loader backend in one module: the torch loader's batches, each one written to a marker."""
import os

from fastvid.loaders import LoaderBackend, register_loader


def _mark(what):
    with open(os.environ["RECIPE_MARK"], "a") as fh:
        fh.write(what + "\\n")


class RecipeLoader:
    def __init__(self, records, planner, settings):
        from fastvid.data.torch_loader import TorchVideoLoader

        self.backend = settings.backend
        self._inner = TorchVideoLoader(records, planner, settings)
        self.num_samples = self._inner.num_samples
        _mark(f"built {settings.backend} batch_size={settings.batch_size}")

    @property
    def bad_samples(self):
        return self._inner.bad_samples

    def __len__(self):
        return len(self._inner)

    def __iter__(self):
        for video, label in self._inner:
            _mark(f"batch {tuple(video.shape)}")
            yield video, label

    def set_epoch(self, epoch):
        self._inner.set_epoch(epoch)

    def start(self, epoch, first_batch=0):
        self._inner.start(epoch, first_batch)

    def close(self):
        self._inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _stream(path, device, chunk_frames, info):
    from fastvid.data.video_io import stream_video_frames

    for chunk in stream_video_frames(path, chunk_frames):
        _mark(f"chunk {chunk.shape[0]}")
        yield chunk


register_loader(LoaderBackend("recipe-loader", "the recipe test's loader", lambda device: None,
                              RecipeLoader, preference=50, stream=_stream))
'''


def _fastvid(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FASTVID_PLUGINS="fv_recipe_loader", RECIPE_MARK=str(tmp_path / "mark"),
               PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT),
                                           os.environ.get("PYTHONPATH", "")]))
    res = subprocess.run([sys.executable, "-m", "fastvid", *args], env=env, capture_output=True,
                         text=True, timeout=300, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def _marks(tmp_path: Path) -> list[str]:
    path = tmp_path / "mark"
    lines = path.read_text().splitlines() if path.is_file() else []
    path.unlink(missing_ok=True)
    return lines


def test_a_loader_backend_is_one_module_and_one_registration(tmp_path):
    (tmp_path / "fv_recipe_loader.py").write_text(PLUGIN)
    data = tmp_path / "data"
    synth_dataset(data, kind="frames", classes=2, train=4, val=2, frames=8, size=(64, 64))
    work = tmp_path / "run"
    common = ["-c", CONFIG, "--data-root", str(data), "--device", "cpu", *SMALL]

    _fastvid(["train", *common, "--loader", "recipe-loader", "--work-dir", str(work),
              "--no-progress", "--epochs", "1", "--batch-size", "2"], tmp_path)
    marks = _marks(tmp_path)
    assert "built recipe-loader batch_size=2" in marks
    # one epoch: 4 training videos in batches of 2, then the validation batch
    assert sum(m.startswith("batch (2, 4, 3, 64, 64)") for m in marks) >= 2
    assert (work / "last.pt").is_file()

    _fastvid(["eval", *common, "--loader", "recipe-loader", "--checkpoint",
              str(work / "last.pt")], tmp_path)
    marks = _marks(tmp_path)
    assert marks[0].startswith("built recipe-loader") and any(m.startswith("batch") for m in marks)

    out = tmp_path / "bench"
    _fastvid(["bench", *common, "--loader", "recipe-loader,torch", "--loader-batches", "1",
              "--train-batch", "2", "--out", str(out)], tmp_path)
    records = json.loads((out / "results.json").read_text())
    ours = [r for r in records if r["backend"] == "recipe-loader"]
    assert ours and ours[0]["status"] == "ok" and ours[0]["videos_per_s"] > 0
    # the baseline comes from the registry: torch, whatever else is registered
    assert ours[0]["ratio_to_torch"] > 0
    assert any(m.startswith("built recipe-loader") for m in _marks(tmp_path))

    folder = next(p for p in sorted((data / "20bn-jester-v1").iterdir()) if p.is_dir())
    _fastvid(["predict", str(folder), "-c", CONFIG, *SMALL, "--checkpoint", str(work / "last.pt"),
              "--device", "cpu", "--loader", "recipe-loader"], tmp_path)
    assert any(m.startswith("built recipe-loader") for m in _marks(tmp_path))

    if not pyav_installed():
        pytest.skip("the throwaway stream decodes with PyAV")
    # predict --window reads the video through the entry's stream: no switch in predict.py
    # knows the backend.
    videos = tmp_path / "videos"
    summary = synth_dataset(videos, kind="video", codec="mjpeg", classes=2, train=1, val=1,
                            frames=24, size=(64, 64))
    video = videos / summary["videos"][0]["path"]
    pred = tmp_path / "pred.json"
    _fastvid(["predict", str(video), "-c", CONFIG, *SMALL, "--checkpoint", str(work / "last.pt"),
              "--device", "cpu", "--loader", "recipe-loader", "--window", "8", "--out", str(pred)],
             tmp_path)
    marks = _marks(tmp_path)
    result = json.loads(pred.read_text())
    assert marks and all(m.startswith("chunk") for m in marks)
    assert sum(int(m.split()[1]) for m in marks) == result["num_frames"]
    assert len(result["windows"]) > 1
