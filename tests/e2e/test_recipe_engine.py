"""The engine-backend recipe of docs/design.md, followed literally: one module + one registration.

A throwaway backend (the exported program saved with ``torch.export.save``, run eagerly on
load) is written to a temporary module, registered with ``register_engine`` there, and loaded
through ``FASTVID_PLUGINS``: ``build-engine --backend``, ``eval --engine`` and ``bench
--backends`` take it like a built-in one. No file of the repository is touched.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from fastvid.data.synth import synth_dataset

ROOT = Path(__file__).resolve().parents[2]
CONFIG = str(ROOT / "configs" / "demo_trn_synth.yaml")
# Small but the real architecture: BNInception + multi-scale TRN, 4 segments of 64 px.
SMALL = ["--set", "model.num_segments=4", "--set", "data.image_size=64", "--set", "data.scale_size=64",
         "--set", "train.workers=0", "--set", "train.batch_size=4", "--set", "train.epochs=1",
         "--set", "train.precise_bn_batches=0"]

BACKEND_MODULE = '''
"""A throwaway engine backend: torch.export.save's program, run eagerly (CPU, fp32)."""
import os
from pathlib import Path

import torch

from engines.backends import EngineBackendEntry, register_engine


def _log(line):
    with open(os.environ["RECIPE_LOG"], "a") as f:
        f.write(line + "\\n")


def unavailable_reason(device):
    return None if device.type == "cpu" else "the recipe backend runs on a CPU only"


def precision_unsupported(precision, device):
    return None if precision == "fp32" else "the recipe backend builds fp32 only"


def compile_and_save(exported, example, *, precision, batch, max_batch, out_path, device):
    torch.export.save(exported, str(out_path))
    _log(f"saved {out_path}")


def load_runner(path, device, meta):
    module = torch.export.load(str(path)).module()
    _log(f"loaded {path}")

    def run(video):
        with torch.inference_mode():
            out = module(video)
        return out[0] if isinstance(out, (tuple, list)) else out

    return run


register_engine(EngineBackendEntry(
    "recipe", ".rcp", __name__, "a recipe test's backend (torch.export.save, run eagerly; CPU)",
    preference={}))
'''


def _fastvid(args: list[str], tmp: Path) -> str:
    env = dict(os.environ, FASTVID_PLUGINS="fv_recipe_engine", RECIPE_LOG=str(tmp / "backend.log"),
               PYTHONPATH=os.pathsep.join([str(tmp), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.run([sys.executable, "-m", "fastvid", *args], env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def _log_lines(tmp: Path) -> list[str]:
    return (tmp / "backend.log").read_text().splitlines()


def test_engine_recipe_build_eval_bench_through_the_cli(tmp_path):
    (tmp_path / "fv_recipe_engine.py").write_text(BACKEND_MODULE)
    data = tmp_path / "data"
    synth_dataset(data, kind="frames", classes=2, train=4, val=4, frames=8, size=(64, 64), seed=0)
    work = tmp_path / "work"
    _fastvid(["train", "-c", CONFIG, "--data-root", str(data), "--work-dir", str(work), "--loader", "torch",
              "--device", "cpu", "--no-progress", *SMALL], tmp_path)
    ckpt = next(p for name in ("best.pt", "last.pt", "checkpoint.pt") for p in work.rglob(name))

    # build-engine: the backend compiles, saves and loads its artifact for the validation
    out = _fastvid(["build-engine", "-c", CONFIG, "--checkpoint", str(ckpt), "--backend", "recipe",
                    "--device", "cpu", "--out", str(tmp_path / "model")], tmp_path)
    artifact = tmp_path / "model.rcp"
    assert artifact.is_file() and f"engine: {artifact}" in out
    meta = json.loads((tmp_path / "model.rcp.json").read_text())
    assert meta["backend"] == "recipe" and meta["validation"]["passed"]
    # compiled and saved under a temporary name, then loaded from it for validation
    assert [line.split()[0] for line in _log_lines(tmp_path)] == ["saved", "loaded"]

    # eval --engine: scored by the recipe backend's runner on its artifact
    before = len(_log_lines(tmp_path))
    results = tmp_path / "eval.json"
    _fastvid(["eval", "-c", CONFIG, "--data-root", str(data), "--engine", str(artifact), "--loader", "torch",
              "--device", "cpu", "--out", str(results), *SMALL], tmp_path)
    assert _log_lines(tmp_path)[before:] == [f"loaded {artifact}"]
    assert json.loads(results.read_text())["num_videos"] == 4

    # bench --backends recipe --engine: the prebuilt artifact is measured, nothing rebuilt
    before = len(_log_lines(tmp_path))
    bench_out = tmp_path / "bench"
    _fastvid(["bench", "-c", CONFIG, "--checkpoint", str(ckpt), "--device", "cpu", "--backends", "recipe",
              "--engine", str(artifact), "--batch", "1", "--iters", "2", "--warmup", "0",
              "--out", str(bench_out)], tmp_path)
    recs = json.loads((bench_out / "results.json").read_text())
    recs = recs["records"] if isinstance(recs, dict) else recs
    mine = [r for r in recs if r["backend"] == "recipe"]
    assert mine and all(r["status"] == "ok" and r["engine"] == str(artifact) for r in mine), mine
    assert not any(line.startswith("saved") for line in _log_lines(tmp_path)[before:])
    assert f"loaded {artifact}" in _log_lines(tmp_path)[before:]
