"""The README's workflow per dataset on a tiny replica of its official download (``_official``):
prepare -> train 1 epoch -> eval -> predict through the CLI, with the README's commands.

Training runs at 64 px with ``--set``; eval and predict do not repeat it: they take the geometry
saved in the checkpoint (and say that the YAML differs). Kinetics' H.264 clips train with the
loader ``auto`` picks on this CPU (torch: DALI-on-CPU cannot decode H.264).
"""
from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest
import torch

from _helpers import REPO, invoke_ok
from _official import (JESTER_CLASSES, KINETICS_CLASSES, STHV1_CLASSES, STHV2_TEMPLATES,
                       jester_replica, kinetics_replica, sthv1_replica, sthv2_name,
                       sthv2_replica)

README = re.sub(r"\\\n\s*", "", (REPO / "README.md").read_text())  # joined continuation lines
# Tiny but the real architectures; only the training command gets the sizes.
TINY = ["--set", "data.image_size=64", "--set", "data.scale_size=64", "--set", "train.workers=0",
        "--set", "train.log_interval=1", "--epochs", "1", "--batch-size", "2",
        "--max-steps-per-epoch", "2", "--device", "cpu", "--no-progress"]
RUN = ["--device", "cpu", "--set", "train.workers=0"]


def _readme(command: str, root: Path, **names: str) -> list[str]:
    """``command`` (with ``~/data/X``) must be a line of the README; returns its argv for ``root``."""
    assert command in README, f"README does not say: {command}"
    text = re.sub(r"~/data/\w+", str(root), command)
    for key, value in names.items():
        text = text.replace(key, value)
    argv = text.split()
    assert argv[0] == "fastvid"
    return argv[1:]


def _workflow(tmp_path: Path, caplog, root: Path, prepare: str, config: str, work: str,
              model_sets: list[str], sample: Path, classes: list[str]) -> dict:
    """prepare, train, eval, predict as the README says; returns what the commands wrote."""
    caplog.set_level(logging.INFO)
    data = prepare.split()[-1]  # ~/data/<name>
    invoke_ok(_readme(prepare, root) + ["--no-progress"] * ("prepare-videos" not in prepare))
    assert (root / "categories.txt").read_text().splitlines() == classes
    work_dir = tmp_path / "runs"
    train = _readme(f"fastvid train -c {config} --data-root {data}", root)
    invoke_ok(train + ["--work-dir", str(work_dir), *TINY, *model_sets])
    train_log = [r.getMessage() for r in caplog.records]
    ckpt = torch.load(work_dir / "best.pt", map_location="cpu", weights_only=True)
    assert ckpt["classes"] == classes and ckpt["data_geometry"]["data.image_size"] == 64
    caplog.clear()
    out = tmp_path / "eval.json"
    evaluate = _readme(f"fastvid eval -c {config} --data-root {data} --checkpoint {work}/best.pt",
                       root, **{f"{work}/": f"{work_dir}/"})
    text = invoke_ok(evaluate + [*RUN, "--clips", "1", "--crops", "1", "--out", str(out)])
    assert "Top1: " in text
    result = json.loads(out.read_text())
    # evaluated at the checkpoint's 64 px, not the YAML's 224, and the difference was said
    assert result["config"]["data"]["image_size"] == 64, result["config"]["data"]
    assert result["num_videos"] == len(classes)
    said = [r.getMessage() for r in caplog.records if "was trained with" in r.getMessage()]
    assert len(said) == 1 and "data.image_size=64 (config 224)" in said[0], said
    assert f"-c {config} --checkpoint {work}/best.pt" in README  # the README's predict
    pred_out = tmp_path / "pred.json"
    invoke_ok(["predict", str(sample), "-c", config, "--checkpoint", str(work_dir / "best.pt"),
               *RUN, "--topk", "2", "--out", str(pred_out)])
    pred = json.loads(pred_out.read_text())
    top = pred["windows"][0]["topk"]
    assert len(top) == 2 and {t["label"] for t in top} <= set(classes), top
    return {"work": work_dir, "eval": result, "predict": pred, "checkpoint": ckpt,
            "train_log": train_log}


def test_jester_as_downloaded(tmp_path, caplog):
    root = jester_replica(tmp_path / "jester")
    res = _workflow(tmp_path, caplog, root, "fastvid data prepare-jester ~/data/jester",
                    "configs/trn_bninception_jester.yaml", "runs/trn_jester",
                    ["--set", "model.num_segments=4", "--set", "model.partial_bn=false"],
                    root / "20bn-jester-v1" / "10001", JESTER_CLASSES)
    assert res["checkpoint"]["data_geometry"]["model.num_segments"] == 4


@pytest.mark.slow  # TSM-R50 + TPN: the largest of the four to train
def test_sthv1_as_downloaded(tmp_path, caplog):
    root = sthv1_replica(tmp_path / "sthv1")
    _workflow(tmp_path, caplog, root, "fastvid data prepare-sthv1 ~/data/sthv1",
              "configs/tpn_tsm_r50_sthv1.yaml", "runs/tpn_sthv1",
              ["--set", "model.num_segments=4"],
              root / "20bn-something-something-v1" / "10001", STHV1_CLASSES)


def test_sthv2_as_downloaded(tmp_path, caplog):
    root = sthv2_replica(tmp_path / "sthv2")
    res = _workflow(tmp_path, caplog, root, "fastvid data prepare-sthv2 ~/data/sthv2",
                    "configs/trn_bninception_sthv2.yaml", "runs/trn_sthv2",
                    ["--set", "model.num_segments=4", "--set", "model.partial_bn=false"],
                    root / "20bn-something-something-v2" / "70001.webm",
                    [sthv2_name(t) for t in STHV2_TEMPLATES])
    assert res["predict"]["fps"] == pytest.approx(12)


@pytest.mark.slow
def test_kinetics_as_downloaded(tmp_path, caplog):
    root = kinetics_replica(tmp_path / "k400")
    caplog.set_level(logging.INFO)
    res = _workflow(tmp_path, caplog, root, "fastvid data prepare-videos ~/data/k400",
                    "configs/tpn_slowonly_r50_k400.yaml", "runs/tpn_k400",
                    ["--set", "data.clip_len=4", "--set", "data.frame_interval=2",
                     "--set", "model.num_segments=4"],
                    root / "val" / "-aXy_02z02_000020_000030.mp4", sorted(KINETICS_CLASSES))
    geometry = res["checkpoint"]["data_geometry"]
    assert (geometry["data.clip_len"], geometry["data.frame_interval"]) == (4, 2)
    assert res["eval"]["config"]["data"]["clip_len"] == 4  # from the checkpoint, not the YAML's 8
    assert (root / "train_list.txt").read_text().count("\n") == 8  # the missing clip left out
    # auto on this CPU: the torch loader for H.264, whether or not DALI is installed
    assert any("loader auto -> torch for h264 videos" in m for m in res["train_log"]), \
        res["train_log"]
