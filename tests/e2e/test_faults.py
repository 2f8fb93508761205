"""Faults that must lose nothing and explain themselves (training side; loader faults are in
tests/unit/test_loaders.py): bad lists, missing data roots, unwritable work dirs, disk-full and kill -9
during checkpoint writes, truncated or foreign checkpoints, non-finite losses, a dying DDP worker."""
from __future__ import annotations

import errno
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from fastvid import checkpoint as ckpt_mod
from fastvid.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from _helpers import CONFIG, SMALL, invoke, train_args


@pytest.fixture(scope="module")
def root(synth_frames) -> Path:
    return synth_frames


@pytest.fixture(scope="module")
def trained(trained_trn) -> Path:
    return trained_trn


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_missing_data_root_and_missing_lists(tmp_path):
    res = invoke(train_args(tmp_path / "nope", tmp_path / "w", "--epochs", "1"))
    assert res.exit_code == 1 and "does not exist" in res.output and "Traceback" not in res.output
    res = invoke(train_args(tmp_path, tmp_path / "w", "--epochs", "1"))
    assert res.exit_code == 1 and "train_videofolder.txt not found" in res.output


def test_malformed_list_line_stops_before_training(root, tmp_path):
    bad = tmp_path / "bad_root"
    bad.mkdir()
    for name in ("categories.txt", "val_videofolder.txt"):
        (bad / name).write_text((root / name).read_text())
    (bad / "20bn-jester-v1").symlink_to(root / "20bn-jester-v1")
    lines = (root / "train_videofolder.txt").read_text().splitlines()
    lines[2] = lines[2].rsplit(" ", 1)[0] + " 9"  # class index out of range
    (bad / "train_videofolder.txt").write_text("\n".join(lines) + "\n")
    res = invoke(train_args(bad, tmp_path / "w", "--epochs", "1"))
    assert res.exit_code == 1
    assert "train_videofolder.txt:3" in res.output and "class index 9 out of range" in res.output
    assert not (tmp_path / "w").exists()  # nothing written, not even an empty run dir


def test_resuming_a_finished_run_is_a_no_op_that_keeps_its_summary(root, trained, tmp_path):
    work = tmp_path / "done"
    work.mkdir()
    for name in ("last.pt", "summary.json", "metrics.jsonl"):
        (work / name).write_bytes((trained / name).read_bytes())
    before = {name: _digest(work / name) for name in ("last.pt", "summary.json", "metrics.jsonl")}
    epochs = json.loads((work / "summary.json").read_text())["epochs"]
    res = invoke(train_args(root, work, "--epochs", str(epochs), "--resume", "auto"))
    assert res.exit_code == 0, res.output
    assert {name: _digest(work / name) for name in before} == before
    # Killed between the last checkpoint and the summary: the summary is rebuilt, not nulled.
    (work / "summary.json").unlink()
    res = invoke(train_args(root, work, "--epochs", str(epochs), "--resume", "auto"))
    assert res.exit_code == 0, res.output
    summary = json.loads((work / "summary.json").read_text())
    assert summary["final"]["epoch"] == epochs and summary["final"]["val_top1"] >= 0


def test_unwritable_work_dir(root, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = invoke(train_args(root, blocker / "run", "--epochs", "1"))
    assert res.exit_code == 1 and "is not writable" in res.output


def test_disk_full_during_checkpoint_keeps_previous(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint({"epoch": 1, "w": torch.ones(3)}, path)
    before = _digest(path)

    def full_disk(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt_mod.torch, "save", full_disk)
    with pytest.raises(CheckpointError, match="no space left on the device.*free.*needs about.*"
                                              "previous file is intact"):
        save_checkpoint({"epoch": 2, "w": torch.zeros(3)}, path)
    assert _digest(path) == before
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # temp file removed


def test_kill_9_during_checkpoint_write_leaves_previous_loadable(tmp_path):
    path = tmp_path / "last.pt"
    child = textwrap.dedent(f"""
        import os, sys, time, torch
        from fastvid.checkpoint import save_checkpoint
        save_checkpoint({{"epoch": 1, "w": torch.ones(4)}}, {str(path)!r})
        real_fsync = os.fsync
        def stall(fd):
            print("writing", flush=True)
            time.sleep(120)
        os.fsync = stall
        save_checkpoint({{"epoch": 2, "w": torch.zeros(1_000_000)}}, {str(path)!r})
    """)
    proc = subprocess.Popen([sys.executable, "-c", child], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "writing"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["w"], torch.ones(4))


def test_truncated_checkpoint_is_a_clear_error(root, trained, tmp_path):
    data = (trained / "last.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 2])
    res = invoke(["eval", "-c", CONFIG, "--data-root", str(root), "--checkpoint", str(cut),
                  "--loader", "torch", "--device", "cpu", *SMALL])
    assert res.exit_code == 1 and "cannot read checkpoint" in res.output and str(cut) in res.output
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(cut)


def test_checkpoint_from_another_config_names_the_difference(root, trained):
    res = invoke(["eval", "-c", CONFIG, "--data-root", str(root), "--checkpoint",
                  str(trained / "last.pt"), "--loader", "torch", "--device", "cpu", *SMALL,
                  "--set", "model.num_segments=8", "--set", "model.consensus=avg"])
    assert res.exit_code == 1
    assert "model.num_segments: checkpoint 4 vs config 8" in res.output
    assert "model.consensus: checkpoint 'trn_multiscale' vs config 'avg'" in res.output


def test_non_finite_losses_stop_the_run_and_keep_last_checkpoint(root, trained, tmp_path):
    work = tmp_path / "nan"
    work.mkdir()
    (work / "last.pt").write_bytes((trained / "last.pt").read_bytes())
    before = _digest(work / "last.pt")
    # std 0 makes every normalized input non-finite, so every loss is.
    res = invoke(train_args(root, work, "--epochs", "20", "--batch-size", "4", "--resume", "auto",
                            "--set", "data.std=[0,0,0]", "--set", "train.max_nonfinite_steps=2"))
    assert res.exit_code == 1
    assert "2 consecutive non-finite losses" in res.output
    assert _digest(work / "last.pt") == before


def test_ddp_worker_death_ends_the_job_promptly(root, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "fastvid", *train_args(root, tmp_path / "ddp", "--epochs", "50", "--batch-size", "2")]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    metrics = tmp_path / "ddp" / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline and not (metrics.is_file() and metrics.stat().st_size):
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        time.sleep(0.2)
    workers = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
    assert len(workers) == 2, workers
    os.kill(int(workers[-1]), signal.SIGKILL)
    t0 = time.time()
    proc.communicate(timeout=120)
    assert proc.returncode != 0
    assert time.time() - t0 < 90


def _copy_set(root: Path, dest: Path) -> Path:
    import shutil

    shutil.copytree(root, dest)
    return dest


@pytest.mark.parametrize("loader", ["torch", "dali-cpu"])
def test_corrupt_frames_in_training_are_counted_then_limited(root, tmp_path, loader):
    pytest.importorskip("nvidia.dali") if loader == "dali-cpu" else None
    data = _copy_set(root, tmp_path / "data")
    name = (data / "train_videofolder.txt").read_text().split()[0]
    frame = data / "20bn-jester-v1" / name / "00003.jpg"
    frame.write_bytes(frame.read_bytes()[:200])  # truncated JPEG
    args = train_args(data, tmp_path / "w", "--epochs", "1", "--batch-size", "8",
                      "--loader", loader, "--set", "train.precise_bn_batches=0")
    res = invoke(args + ["--set", "data.max_bad_fraction=0.1"])
    assert res.exit_code == 0, res.output
    epoch = [x for x in (tmp_path / "w" / "metrics.jsonl").read_text().splitlines() if '"epoch"' in x]
    assert '"bad_samples": 1' in epoch[-1]
    # above the limit: a clear stop that names the setting and the file, no traceback
    res = invoke(args + ["--set", "data.max_bad_fraction=0.001", "--work-dir", str(tmp_path / "w2")])
    assert res.exit_code == 1 and "max_bad_fraction" in res.output and "Traceback" not in res.output
    assert name in res.output
