"""Nothing lost, nothing silently wrong, no stray tracebacks (issue 23): each test reproduces one
finding of the second newcomer trial with real processes and signals where the finding had them.

1 work-dir lock · 2 engine + JSON as one artifact · 3 loaders closed on errors · 4 bench Ctrl-C
· 5 disk full / read-only · 6 edited engine classes · 7 metrics on resume, rank-0 logging · 8 list
paths, upscaling crops, predict inputs, CSV quoting · 9 log lines and the progress bar.
"""
from __future__ import annotations

import errno
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pytest
import torch

import engines
from _helpers import CONFIG, REPO, SMALL, invoke, invoke_ok, train_args
from _tiny import Tiny2D

ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
LOG_LINE = re.compile(r"^\d\d:\d\d:\d\d (\[rank \d+\] )?(DEBUG|INFO|WARNING|ERROR) ")


def fastvid(*args: str) -> list[str]:
    return [sys.executable, "-m", "fastvid", *args]


def _wait_for(predicate, proc: subprocess.Popen, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{err[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.1)


def _group_members(pgid: int) -> list[str]:
    """Processes still in process group ``pgid`` (the command was started in its own session)."""
    left = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text.rsplit(")", 1)[1].split()
        if int(fields[2]) == pgid and fields[0] != "Z":
            try:
                cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
            except OSError:
                cmd = text.split(")")[0] + ")"
            left.append(f"{stat.parent.name} ({fields[0]}): {cmd}")
    return left


def _stray_lines(stderr: str) -> list[str]:
    """stderr lines that are neither log records, tqdm bars nor the one ``Error:`` line."""
    lines = [ln for chunk in stderr.split("\n") for ln in chunk.split("\r") if ln.strip()]
    return [ln for ln in lines if not (LOG_LINE.match(ln) or ln.startswith("Error: "))]


@pytest.fixture(scope="module")
def trn_state(tmp_path_factory) -> Path:
    from fastvid.models import create_model

    torch.manual_seed(0)
    model = create_model("trn_bninception", num_classes=4, num_segments=4, dropout=0.2)
    path = tmp_path_factory.mktemp("trn_state") / "trn.pth"
    torch.save({f"module.{k}": v for k, v in model.state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def trn_onnx(trn_state, tmp_path_factory) -> Path:
    """A validated ONNX engine of the real TRN (4 segments, 64 px), built through the CLI."""
    out = tmp_path_factory.mktemp("trn_onnx") / "trn"
    invoke_ok(["build-engine", "-c", CONFIG, *SMALL, "--checkpoint", str(trn_state), "--backend", "onnx",
               "--max-batch", "2", "--device", "cpu", "--out", str(out)])
    return out.with_name("trn.onnx")


# ---------------------------------------------------------------- 1. work-dir lock
def test_second_train_on_a_work_dir_stops_naming_the_first(synth_frames, tmp_path):
    from fastvid.workdir_lock import LOCK_NAME, WorkDirLock

    work = tmp_path / "run"
    lock = work / LOCK_NAME
    first = subprocess.Popen(fastvid(*train_args(synth_frames, work, "--epochs", "50")), env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             start_new_session=True)
    try:
        _wait_for(lambda: lock.is_file() and lock.read_text().strip(), first, 300, "the lock")
        holder = json.loads(lock.read_text())
        assert holder["pid"] == first.pid and holder["command"].startswith("fastvid train")
        second = subprocess.run(fastvid(*train_args(synth_frames, work, "--epochs", "1")), env=ENV,
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 1
        errors = [ln for ln in second.stderr.splitlines() if ln.startswith("Error: ")]
        assert len(errors) == 1 and not _stray_lines(second.stderr), second.stderr
        assert f"is in use by PID {first.pid}" in errors[0] and "fastvid train -c" in errors[0]
        assert first.poll() is None  # the first run is untouched and goes on
    finally:
        os.killpg(first.pid, signal.SIGKILL)  # as a crash would: no clean-up at all
        first.communicate()
    # Its lock file is left behind; the next run takes it over and says whose it was.
    assert json.loads(lock.read_text())["pid"] == first.pid
    with WorkDirLock(work) as taken:
        assert taken.took_over["pid"] == first.pid
        assert json.loads(lock.read_text())["pid"] == os.getpid()
    assert not lock.exists()


def test_lock_refuses_a_second_holder_in_another_process(tmp_path):
    from fastvid.workdir_lock import WorkDirBusy, WorkDirLock

    with WorkDirLock(tmp_path):
        code = ("import sys; from fastvid.workdir_lock import WorkDirLock\n"
                f"WorkDirLock({str(tmp_path)!r}).acquire()")
        res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                             timeout=120)
        assert res.returncode == 1 and "WorkDirBusy" in res.stderr
        assert f"PID {os.getpid()}" in res.stderr
        with pytest.raises(WorkDirBusy):  # flock: a second descriptor in this process too
            WorkDirLock(tmp_path).acquire()


# ---------------------------------------------------------------- 2. engine + JSON, one artifact
def _partials(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".partial-" in p.name)


@pytest.mark.slow
@pytest.mark.parametrize("sig,over_existing", [(signal.SIGINT, False), (signal.SIGTERM, True),
                                               (signal.SIGKILL, True)])
def test_build_interrupted_during_validation_leaves_no_unvalidated_engine(trn_state, trn_onnx, tmp_path,
                                                                          sig, over_existing):
    out = tmp_path / "trn.onnx"
    meta = engines.meta_path(out)
    if over_existing:
        shutil.copy(trn_onnx, out)
        shutil.copy(engines.meta_path(trn_onnx), meta)
        before = (out.read_bytes(), meta.read_bytes())
    mark = tmp_path / "validating"
    cmd = [sys.executable, str(REPO / "tests" / "_slow_validation.py"), "build-engine", "-c", CONFIG,
           *SMALL, "--checkpoint", str(trn_state), "--backend", "onnx", "--max-batch", "2",
           "--device", "cpu", "--out", str(tmp_path / "trn")]
    proc = subprocess.Popen(cmd, env={**ENV, "FASTVID_TEST_MARK": str(mark)}, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(mark.exists, proc, 300, "validation to start")
    assert _partials(tmp_path), "the new engine is built under a temporary name"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    if sig != signal.SIGKILL:
        assert proc.returncode == (143 if sig == signal.SIGTERM else 1), err
        assert _partials(tmp_path) == []  # cleaned up while unwinding
    if over_existing:  # the old pair is untouched and still accepted
        assert (out.read_bytes(), meta.read_bytes()) == before
        assert engines.read_meta(out)[1]["artifact_sha256"]
    else:  # nothing at the final path: no engine without JSON, no unvalidated engine
        assert not out.exists() and not meta.exists()
    if sig == signal.SIGKILL:  # the killed build's hidden file is removed by the next build
        assert _partials(tmp_path)
        from engines.core import _remove_stale_partials

        _remove_stale_partials(out, ())
        assert _partials(tmp_path) == []


def test_engine_json_records_size_and_hash_and_a_changed_file_is_refused(tmp_path):
    path = engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "onnx",
                                out_path=tmp_path / "tiny")
    meta = json.loads(engines.meta_path(path).read_text())
    assert meta["artifact_size"] == path.stat().st_size and len(meta["artifact_sha256"]) == 64
    assert _partials(tmp_path) == []
    good = path.read_bytes()
    path.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit
    with pytest.raises(engines.EngineError, match=r"was changed after it was built \(size/hash differ "
                                                  r"from tiny.onnx.json\): rebuild it with"):
        engines.load(path)
    path.write_bytes(good)
    assert engines.load(path)(torch.zeros(1, 2, 3, 8, 8)).shape == (1, 3)


def test_multi_file_artifact_is_hashed_moved_and_checked_as_one(tmp_path, monkeypatch):
    from engines import backends

    monkeypatch.setattr(backends, "_ENGINES", dict(backends._ENGINES))
    backends.register_engine(backends.EngineBackendEntry("pair", ".pxml", "_fake_engine_pair", "test"))
    path = engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "pair",
                                out_path=tmp_path / "tiny")
    companion = path.with_suffix(".bin")
    # written beside the temporary main file, then renamed with it
    assert companion.read_bytes().startswith(b"companion of .tiny.partial-")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["tiny.bin", "tiny.pxml", "tiny.pxml.json"]
    meta = json.loads(engines.meta_path(path).read_text())
    assert meta["companions"][".bin"]["size"] == companion.stat().st_size
    companion.write_bytes(b"companion of something else")
    with pytest.raises(engines.EngineError, match="tiny.bin was changed after it was built"):
        engines.load(path)
    companion.unlink()
    with pytest.raises(engines.EngineError, match="tiny.bin is missing"):
        engines.load(path)


# ---------------------------------------------------------------- 3. loaders closed on errors
@pytest.mark.dali
@pytest.mark.slow
def test_eval_with_a_damaged_engine_closes_the_dali_loader(synth_frames, trn_onnx, tmp_path):
    """dali-cpu with 2 Python source workers is started before the engine loads; the engine
    (an older description without a hash, so the damaged file reaches ONNX Runtime) fails."""
    meta = json.loads(engines.meta_path(trn_onnx).read_text())
    for key in ("artifact_size", "artifact_sha256"):
        meta.pop(key)
    damaged = tmp_path / "trn.onnx"
    damaged.write_bytes(trn_onnx.read_bytes()[:5000])
    engines.meta_path(damaged).write_text(json.dumps(meta))
    proc = subprocess.Popen(fastvid("-v", "eval", "-c", CONFIG, *SMALL, "--set", "train.workers=2",
                                    "--data-root", str(synth_frames), "--engine", str(damaged),
                                    "--loader", "dali-cpu", "--device", "cpu"),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    _, stderr = proc.communicate(timeout=300)
    # Python's multiprocessing resource tracker (started with the spawned workers) ends when the
    # command's pipe to it closes, i.e. as the command exits: a second at most, not a leftover.
    deadline = time.time() + 3
    while (left := _group_members(proc.pid)) and time.time() < deadline:
        time.sleep(0.1)
    assert proc.returncode == 1
    errors = [ln for ln in stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1 and "cannot load this onnx engine" in errors[0], stderr
    assert "Traceback" not in stderr and not _stray_lines(stderr), stderr
    assert "python workers [2]" in stderr  # the workers existed ...
    assert left == []  # ... and none outlived the command


@pytest.mark.dali
@pytest.mark.slow
def test_ctrl_c_in_eval_leaves_no_dali_worker_and_no_worker_traceback(few_frames, trn_state, tmp_path):
    """Ctrl-C in a terminal signals the whole process group: DALI's Python workers printed a
    KeyboardInterrupt traceback each. They ignore SIGINT now; the command closes them."""
    log_file = tmp_path / "stderr.txt"
    with open(log_file, "w") as err:
        proc = subprocess.Popen(fastvid("-v", "eval", "-c", CONFIG, *SMALL, "--set", "train.workers=2",
                                        "--data-root", str(few_frames), "--checkpoint", str(trn_state),
                                        "--loader", "dali-cpu", "--device", "cpu", "--split", "train",
                                        "--batch-size", "1", "--clips", "4"),
                                env=ENV, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        _wait_for(lambda: "python workers [2]" in log_file.read_text()
                  and "1/16" in log_file.read_text(), proc, 300, "evaluation batches")
        os.killpg(proc.pid, signal.SIGINT)  # as the terminal does
        proc.wait(timeout=120)
    deadline = time.time() + 3  # the resource tracker ends as the command exits (see above)
    while (left := _group_members(proc.pid)) and time.time() < deadline:
        time.sleep(0.1)
    stderr = log_file.read_text()
    assert proc.returncode == 1 and "Aborted!" in stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr[-3000:]
    assert left == []


def test_loaders_close_their_workers(synth_frames):
    from fastvid.config import load_config
    from fastvid.data.lists import resolve_dataset
    from fastvid.loaders import build_loader

    cfg = load_config(CONFIG, tuple(SMALL[1::2]) + ("train.workers=2",))
    dataset = resolve_dataset(synth_frames, cfg.data)
    with build_loader(cfg, dataset, "val", loader="torch", device=torch.device("cpu")) as loader:
        next(iter(loader))
        workers = list(loader._dl._iterator._workers)
        assert all(w.is_alive() for w in workers)
    assert not any(w.is_alive() for w in workers)
    loader.close()  # idempotent


# ---------------------------------------------------------------- 4. bench Ctrl-C
@pytest.mark.slow
def test_bench_ctrl_c_keeps_the_records_measured(tmp_path):
    out = tmp_path / "bench"
    proc = subprocess.Popen(fastvid("bench", "-c", CONFIG, *SMALL, "--backends", "eager,onnx",
                                    "--batch", "1", "--iters", "3", "--warmup", "1", "--device", "cpu",
                                    "--out", str(out)),
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = out / "results.json"

    def eager_written() -> bool:
        return results.is_file() and any(r.get("backend") == "eager" for r in json.loads(results.read_text()))

    _wait_for(eager_written, proc, 300, "the eager record")
    proc.send_signal(signal.SIGINT)  # while the ONNX engine is being built
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted: 1 record measured before Ctrl-C is kept in" in err and str(results) in err
    records = json.loads(results.read_text())
    assert [r["backend"] for r in records] == ["eager"] and records[0]["video_per_s"] > 0
    assert not list(out.glob(".results.*"))


# ---------------------------------------------------------------- 5. disk full, read-only
@pytest.fixture
def small_fs(tmp_path):
    """A 1 MB tmpfs (``mounted`` False where mounting is not allowed: the test then simulates
    the full disk and says so with a warning)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                         capture_output=True, text=True)
    if res.returncode != 0:
        yield mnt, False
        return
    try:
        yield mnt, True
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_full_disk_at_checkpoint_names_file_cause_free_and_needed(small_fs, monkeypatch):
    from fastvid.checkpoint import CheckpointError, save_checkpoint

    mnt, mounted = small_fs
    path = mnt / "last.pt"
    save_checkpoint({"w": torch.ones(1000)}, path)  # 4 KB: fits
    before = path.read_bytes()
    if not mounted:
        warnings.warn("cannot mount a tmpfs here: ENOSPC is simulated")
        from fastvid import checkpoint as ckpt_mod

        def full(obj, fh):
            raise OSError(errno.ENOSPC, "No space left on device")

        monkeypatch.setattr(ckpt_mod.torch, "save", full)
    with pytest.raises(CheckpointError) as info:
        save_checkpoint({"w": torch.ones(2_000_000)}, path)  # 8 MB
    msg = str(info.value)
    assert f"cannot write checkpoint {path}: no space left on the device" in msg, msg
    assert re.search(r"\d+(\.\d)? (KB|MB|B) free on ", msg) and "needs about 7.6 MB" in msg
    assert "unexpected pos" not in msg and "previous file is intact" in msg
    assert path.read_bytes() == before and [p.name for p in mnt.iterdir()] == ["last.pt"]


def test_full_disk_at_engine_and_report_writes(small_fs, monkeypatch):
    from fastvid.atomic import write_text_atomic
    from fastvid.errors import FastvidError

    mnt, mounted = small_fs
    if not mounted:
        pytest.skip("cannot mount a tmpfs here (the checkpoint test simulates ENOSPC)")
    with open(mnt / "filler", "wb") as fh:  # fill the file system
        try:
            while True:
                fh.write(b"\0" * 65536)
                fh.flush()
        except OSError:
            pass
    with pytest.raises(FastvidError, match=r"cannot write eval results .*out.json: no space left on "
                                           r"the device \(0 B free on .*needs about"):
        write_text_atomic(mnt / "out.json", json.dumps({"x": list(range(1000))}), "eval results")
    with pytest.raises(engines.EngineError, match=r"cannot write engine .*tiny.onnx: no space left"):
        engines.build_engine(Tiny2D(width=4, bn=False).eval(), torch.zeros(1, 2, 3, 8, 8), "onnx",
                             out_path=mnt / "tiny")
    assert sorted(p.name for p in mnt.iterdir()) == ["filler"]  # no stray temporary files


def test_read_only_file_system_is_named(tmp_path):
    from fastvid.atomic import write_text_atomic
    from fastvid.errors import FastvidError

    mnt = tmp_path / "ro"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        with pytest.raises(FastvidError, match=r"cannot write predictions .*p.json: read-only file "
                                               r"system \(.* is mounted read-only\)"):
            write_text_atomic(mnt / "p.json", "{}", "predictions")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


# ---------------------------------------------------------------- 6. edited engine classes
def test_edited_engine_classes_are_refused_by_predict_and_bench(synth_frames, trn_onnx, tmp_path):
    edited = tmp_path / "trn.onnx"
    shutil.copy(trn_onnx, edited)
    meta = json.loads(engines.meta_path(trn_onnx).read_text())
    meta["classes"] = ["a", "b"]  # 4 outputs
    engines.meta_path(edited).write_text(json.dumps(meta))
    clip = sorted((synth_frames / "20bn-jester-v1").iterdir())[0]
    res = invoke(["predict", str(clip), "-c", CONFIG, *SMALL, "--engine", str(edited), "--device", "cpu",
                  "--loader", "torch"])
    assert res.exit_code == 1 and "IndexError" not in res.output and res.exception is not None
    assert '"classes" has 2 names but the engine outputs 4 classes' in res.output, res.output
    res = invoke(["bench", "-c", CONFIG, *SMALL, "--engine", str(edited), "--backends", "none",
                  "--device", "cpu", "--out", str(tmp_path / "b")])
    assert res.exit_code == 1 and '"classes" has 2 names' in res.output, res.output
    assert not (tmp_path / "b" / "results.json").exists()


# ---------------------------------------------------------------- 7. metrics on resume, rank-0 logs
def test_truncate_metrics_keeps_what_the_checkpoint_holds(tmp_path):
    from fastvid.training import truncate_metrics

    recs = [{"type": "startup", "step": 1}] + [{"type": "train", "epoch": 1 + (s > 4), "step": s}
                                               for s in range(1, 7)]
    recs.insert(5, {"type": "epoch", "epoch": 1, "step": 4})
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in recs) + '{"type": "train", "st')
    assert truncate_metrics(path, step=4, epochs_done=1) == 3  # steps 5, 6 and the torn line
    kept = [json.loads(x) for x in path.read_text().splitlines()]
    assert kept == [r for r in recs if r["step"] <= 4]
    # Killed between the epoch record and its checkpoint: last.pt is mid-epoch 1 at step 4.
    assert truncate_metrics(path, step=4, epochs_done=0) == 1
    assert all(r["type"] != "epoch" for r in map(json.loads, path.read_text().splitlines()))


@pytest.fixture(scope="module")
def few_frames(tmp_path_factory) -> Path:
    """16 train / 4 val frame folders: a run of a few steps with a short validation."""
    from fastvid.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("few_frames")
    synth_dataset(root, kind="frames", classes=4, train=16, val=4, frames=8, size=(64, 64), seed=3)
    return root


@pytest.mark.slow
def test_killed_run_resumed_has_each_step_once_and_logs_clear_of_the_bar(few_frames, tmp_path):
    work = tmp_path / "run"
    args = [a for a in train_args(few_frames, work, "--epochs", "3", "--max-steps-per-epoch", "3",
                                  "--set", "train.batch_size=4", "--set", "train.eval_interval=100",
                                  "--set", "train.precise_bn_batches=0")
            if a != "--no-progress"] + ["--progress"]
    metrics = work / "metrics.jsonl"
    first = subprocess.Popen(fastvid(*args), env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, start_new_session=True)

    def in_second_epoch() -> bool:
        return metrics.is_file() and any(json.loads(x).get("epoch") == 2 and json.loads(x).get("type") == "train"
                                         for x in metrics.read_text().splitlines() if x.endswith("}"))

    _wait_for(in_second_epoch, first, 600, "a step of epoch 2")
    os.killpg(first.pid, signal.SIGKILL)  # a killed rank: records past last.pt are on disk
    _, err1 = first.communicate()
    resumed = subprocess.run(fastvid(*args, "--resume", "auto"), env=ENV, capture_output=True, text=True,
                             timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "record(s) after step 3 removed" in resumed.stderr
    recs = [json.loads(x) for x in metrics.read_text().splitlines()]
    steps = [r["step"] for r in recs if r["type"] == "train"]
    assert steps == list(range(1, 10)), steps
    assert [r["epoch"] for r in recs if r["type"] == "epoch"] == [1, 2, 3]
    # 9. Log lines written while the bar is shown start their own line (tqdm.write), e.g. not
    # "...?batch/s]21:30:45 INFO ...".
    for stderr in (err1, resumed.stderr):
        assert "it/s]" in stderr or "batch/s]" in stderr or "s/batch]" in stderr  # a bar was drawn
        assert not re.search(r"\]\d\d:\d\d:\d\d (INFO|WARNING)", stderr), stderr[-2000:]
        pieces = [p for chunk in stderr.split("\n") for p in chunk.split("\r")]
        assert all(LOG_LINE.match(p) for p in pieces if " INFO fastvid" in p)
    assert "first training step done" in err1


def test_only_rank_0_logs_unless_verbose():
    # One interpreter (importing the CLI takes seconds): the root logger is reset per case, as
    # each torchrun process configures it once.
    code = """
import json, logging, os, sys
from fastvid.cli import cli
out = []
for rank, verbose in (("0", False), ("1", False), ("1", True)):
    os.environ["RANK"] = rank
    logging.root.handlers.clear()
    cli.callback(verbose=verbose)
    handler = logging.root.handlers[0]
    shown = []
    handler.emit = lambda record, shown=shown: shown.append(handler.format(record))
    for level in ("info", "error"):
        getattr(logging.getLogger("fastvid.x"), level)(level)
    out.append(shown)
print(json.dumps(out))
"""
    res = subprocess.run([sys.executable, "-c", code], env=ENV, capture_output=True, text=True,
                         timeout=120)
    rank0, rank1, rank1_verbose = json.loads(res.stdout.strip().splitlines()[-1])
    assert [ln.rsplit(": ", 1)[1] for ln in rank0] == ["info", "error"]
    assert [ln.rsplit(": ", 1)[1] for ln in rank1] == ["error"] and "[rank 1] ERROR" in rank1[0]
    assert [ln.rsplit(": ", 1)[1] for ln in rank1_verbose] == ["info", "error"]
    assert not any("[rank" in ln for ln in rank0)


# ---------------------------------------------------------------- 8. inputs
def test_list_paths_must_stay_inside_the_data_root(tmp_path):
    from fastvid.data.lists import ListError, parse_frame_list, parse_video_list

    lst = tmp_path / "train_videofolder.txt"
    lst.write_text("a 3 0\n../../../../etc/passwd 3 0\n")
    with pytest.raises(ListError, match=r"train_videofolder.txt:2: path '../../../../etc/passwd' leads "
                                        r"outside the data folder"):
        parse_frame_list(lst, tmp_path / "frames")
    vids = tmp_path / "train_list.txt"
    vids.write_text("ok/a.mp4 0\nok/../../b.mp4 1\n")
    with pytest.raises(ListError, match=r"train_list.txt:2: .*outside the data folder"):
        parse_video_list(vids, tmp_path / "videos")
    vids.write_text("ok/../a.mp4 0\n/abs/elsewhere/b.mp4 1\n")  # inside, and absolute: allowed
    assert [r.path for r in parse_video_list(vids, tmp_path / "videos")] == [
        str(tmp_path / "videos" / "ok/../a.mp4"), "/abs/elsewhere/b.mp4"]


def test_crop_larger_than_the_frames_warns_once(synth_frames, caplog):
    from fastvid import loaders
    from fastvid.config import load_config
    from fastvid.data.lists import resolve_dataset

    cfg = load_config(CONFIG, tuple(SMALL[1::2]) + ("data.image_size=96", "data.scale_size=96"))
    dataset = resolve_dataset(synth_frames, cfg.data)
    loaders._UPSCALE_WARNED.clear()
    caplog.set_level(logging.WARNING, logger="fastvid.loaders")
    for split in ("train", "val", "val"):
        loaders.build_loader(cfg, dataset, split, loader="torch", device=torch.device("cpu")).close()
    warned = [r.getMessage() for r in caplog.records if "upscaled" in r.getMessage()]
    assert len(warned) == 1 and "data.image_size 96 is larger than the frames (64x64" in warned[0]


def _frames(folder: Path, names: list[str]) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(names):
        Image.new("RGB", (64, 64), (10 * i, 80, 160)).save(folder / name)
    return folder


def _predict(trn_state: Path, target: Path):
    return invoke(["predict", str(target), "-c", CONFIG, *SMALL, "--checkpoint", str(trn_state),
                   "--device", "cpu", "--loader", "torch"])


def test_predict_names_a_gap_in_the_frames(trn_state, tmp_path):
    folder = _frames(tmp_path / "clip", ["00001.jpg", "00003.jpg", "00004.jpg"])
    res = _predict(trn_state, folder)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "frame 00002.jpg is missing (3 frames numbered up to 00004.jpg)" in res.output, res.output


def test_predict_bad_frame_is_said_without_lists_or_epochs(trn_state, tmp_path):
    folder = _frames(tmp_path / "clip", [f"{i:05d}.jpg" for i in range(1, 9)])
    for i in range(2, 9):  # whichever frames the segments sample, one is broken
        (folder / f"{i:05d}.jpg").write_bytes(b"not a jpeg")
    res = _predict(trn_state, folder)
    assert res.exit_code == 1, res.output
    assert f"{folder}: cannot read this input: " in res.output and ".jpg" in res.output
    assert "epoch" not in res.output and "list" not in res.output and "label -1" not in res.output


def test_predict_lists_skipped_files_and_refuses_a_single_image(trn_state, tmp_path, caplog):
    folder = _frames(tmp_path / "clip", [f"{i:05d}.jpg" for i in range(1, 9)])
    (folder / "notes.txt").write_text("hi")
    (folder / "extra").mkdir()
    caplog.set_level(logging.WARNING, logger="fastvid.predict")
    res = _predict(trn_state, folder)
    assert res.exit_code == 0, res.output
    assert "skipping 2 other entries: extra/, notes.txt" in caplog.text
    res = _predict(trn_state, folder / "00001.jpg")
    assert res.exit_code == 1 and "00001.jpg is a single image; fastvid predict needs a video" in res.output
    assert "25 fps" not in res.output


def test_csv_quoting_is_read_the_same_in_labels_and_splits(tmp_path):
    from fastvid.data.prepare import _read_labels_csv, _read_split_csv

    (tmp_path / "labels.csv").write_text('Swiping Left\n"Quoted"\n"Say ""hi"""\n')
    (tmp_path / "train.csv").write_text('1;"Quoted"\n2;Swiping Left\n3;"Say ""hi"""\n')
    names = _read_labels_csv(tmp_path / "labels.csv")
    assert names == ["Swiping Left", "Quoted", 'Say "hi"']
    rows = _read_split_csv(tmp_path / "train.csv", {n: i for i, n in enumerate(names)})
    assert rows == [("1", 1), ("2", 0), ("3", 2)]
