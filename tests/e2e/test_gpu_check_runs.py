"""The GPU check's runs on a CPU, in subprocesses: records kept when a benchmark step is stopped
(SIGTERM / SIGKILL), the DALI tests skipping without PyAV, and scripts/gpu_check.sh end to end
(at most 8 files)."""
from __future__ import annotations

import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from bench.gpu_check import PRESETS, TIME_BUDGET, loader_items
from bench.records import read_records

from _helpers import REPO, repo_env


VARIANTS = [("fp32", False), ("fp32", True), ("bf16", False), ("bf16", True)]


def _start_train_bench(out: Path) -> subprocess.Popen:
    # Small inputs; fp32 second, so that the signal lands in short steps (bf16 is slow on CPUs
    # without bf16 units, and a signal waits for the step's backward to return).
    cmd = [sys.executable, "-m", "bench.gpu_check", "train", "trn_bninception", str(out), "--device", "cpu",
           "--frames", "2", "--size", "32", "--train-batch", "2", "--train-warmup", "0", "--train-iters", "2",
           "--train-variants", "fp32,fp32:cl,bf16,bf16:cl"]
    return subprocess.Popen(cmd, cwd=REPO, env=repo_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def _wait_for_records(out: Path, proc: subprocess.Popen, n: int, timeout: float = 180.0) -> list[dict]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        recs = read_records(out)  # results.json is replaced atomically: never half written
        if len(recs) >= n:
            return recs
        assert proc.poll() is None, proc.communicate()[0]
        time.sleep(0.1)
    proc.kill()
    raise AssertionError(f"no {n} records in {timeout} s")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopped_train_bench_keeps_what_it_measured(tmp_path, sig):
    """A step's cap sends SIGTERM (then SIGKILL): the variants measured before are in results.json;
    after SIGTERM the one in flight is recorded as stopped and the rest as skipped."""
    out = tmp_path / "out"
    proc = _start_train_bench(out)
    first = _wait_for_records(out, proc, 1)
    proc.send_signal(sig)
    log = proc.communicate(timeout=60)[0]
    recs = read_records(out)
    assert recs[0] == first[0] and first[0]["status"] == "ok" and first[0]["videos_per_s"] > 0
    assert first[0]["precision"] == "fp32" and first[0]["ratio_to_fp32"] == 1.0
    assert not list(out.glob(".results.*")), "an interrupted write left a temporary file"
    if sig == signal.SIGKILL:
        assert proc.returncode == -signal.SIGKILL and all(r["status"] == "ok" for r in recs)
        return
    assert proc.returncode == 124, log
    assert [(r["precision"], r["channels_last"]) for r in recs] == VARIANTS, log
    statuses = [r["status"] for r in recs]
    # The signal came while the second variant ran, or (rarely) before it started.
    assert statuses in (["ok", "stopped", "skipped", "skipped"], ["ok", "skipped", "skipped", "skipped"]), log
    assert all(r["reason"] == TIME_BUDGET and r["stopped_by"] == "SIGTERM" for r in recs if r["status"] == "skipped")
    if statuses[1] == "stopped":
        assert "time cap" in recs[1]["reason"] and recs[1]["elapsed_s"] >= 0


@pytest.mark.dali
def test_stopped_loader_slot_keeps_the_dali_throughput(tmp_path):
    """The slot's SIGTERM while the details (data_wait training run, stage timings) run: the
    DALI throughput measured before them is in results.json, the detail in flight is recorded as
    stopped and the rest as skipped. (On a CPU the rows' details run on DALI's CPU loader.)"""
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "bench.gpu_check", "loader", str(out), "--preset", "smoke", "--device", "cpu",
           "--workers", "0"]
    proc = subprocess.Popen(cmd, cwd=REPO, env=repo_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    recs = _wait_for_records(out, proc, 3)  # torch, dali (skipped here: no GPU), dali-cpu
    proc.send_signal(signal.SIGTERM)
    log = proc.communicate(timeout=120)[0]
    assert proc.returncode == 124, log
    kept = read_records(out)
    dali = kept[2]
    assert dali == recs[2] and (dali["backend"], dali["measure"], dali["status"]) == ("dali-cpu", "throughput", "ok")
    assert dali["videos_per_s"] > 0 and dali["dali_options"] == {"prefetch": 3}
    details = kept[3:]
    assert [(r["backend"], r["measure"]) for r in details] == [("dali-cpu", "data_wait"), ("dali-cpu", "stages")]
    assert [r["status"] for r in details] in (["stopped", "skipped"], ["ok", "stopped"]), log
    assert all(r["stopped_by"] == "SIGTERM" for r in details if r["status"] == "skipped")


def test_dali_tests_skip_without_pyav(tmp_path):
    """On the GPU machine (no PyAV) 20 DALI tests errored in a fixture that wrote videos: with
    ``import av`` blocked they skip with the reason, and those on frame folders still run."""
    junit = tmp_path / "junit.xml"
    select = ("mjpeg or vp9 or h264 or sthv2 or truncated or needs_cuda_target "
              "or batch_contract and 2d-frames or gpu_graph")
    cmd = [sys.executable, "-m", "pytest", "-p", "_block_av", "-p", "no:cacheprovider",
           "tests/unit/test_loaders.py", "tests/unit/test_dali.py", "tests/unit/test_data_prep.py",
           "-m", "gpu or trt or dali", "-k", select, f"--junitxml={junit}", "-q"]
    proc = subprocess.run(cmd, cwd=REPO, env=repo_env(REPO / "tests"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    outcome = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        skip = case.find("skipped")
        bad = [c.tag for c in case if c.tag in ("error", "failure")]
        outcome[case.get("name")] = bad[0] if bad else ("skipped", skip.get("message")) if skip is not None else "passed"
    assert "No module named 'av' (blocked" in " ".join(str(v) for v in outcome.values())
    pyav = {n: o for n, o in outcome.items()  # (the GPU tests skip earlier here: no CUDA)
            if any(k in n for k in ("mjpeg", "vp9", "h264", "sthv2", "truncated"))
            and not (o[0] == "skipped" and "needs a CUDA GPU" in o[1])}
    assert len(pyav) >= 10 and all(o[0] == "skipped" and "PyAV is not installed" in o[1] for o in pyav.values()), pyav
    assert outcome["test_batch_contract[2d-frames-dali-cpu]"] == "passed"
    assert outcome["test_dali_gpu_needs_cuda_target"] == "passed"
    # the GPU graph on frame folders needs no PyAV: only the missing GPU skips it here
    assert outcome["test_dali_gpu_graph_matches_torch[frames]"][0] == "skipped"
    assert "CUDA" in outcome["test_dali_gpu_graph_matches_torch[frames]"][1]


@pytest.mark.slow
def test_gpu_check_script_on_cpu(tmp_path):
    """The whole script with --smoke on this CPU: every step runs, OUT_DIR can come back whole."""
    out = tmp_path / "out"
    t0 = time.time()
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", str(out), "--smoke", "--models", "trn_bninception",
                           "--tests", "tests/unit/test_bench.py"], cwd=REPO, env=dict(repo_env(), PYTHON=sys.executable),
                          capture_output=True, text=True, timeout=420)
    elapsed = time.time() - t0
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.parent == out for p in files), files
    names = {p.name for p in files}
    assert {"results.json", "report.md", "gpu_check.log", "gpu_tests.log"} <= names, names
    assert elapsed < 360
    tests_log = (out / "gpu_tests.log").read_text()
    # -rA: the full summary, one line per test, the skipped GPU test with its reason
    assert "short test summary info" in tests_log and "SKIPPED" in tests_log and "needs a CUDA GPU" in tests_log
    recs = read_records(out)
    smoke = PRESETS["smoke"]
    train = [(r["precision"], r["channels_last"], r["mode"]) for r in recs if r["kind"] == "train"]
    assert train == list(smoke.train_variants)
    infer = [(r["backend"], r["precision"], r["batch"]) for r in recs if r["kind"] == "inference"]
    assert infer == list(smoke.infer_plan)
    assert all(r["model"] == "trn_bninception" for r in recs if r["kind"] != "loader")
    loader = [r for r in recs if r["kind"] == "loader"]
    assert [(r["backend"], r["measure"]) for r in loader] == [(b, p) for b, _, p in loader_items(smoke, cuda=False)]
    assert loader[0]["status"] == "ok" and loader[0]["videos_per_s"] > 0  # torch, first
    assert loader[1]["status"] == "skipped" and "CUDA" in loader[1]["reason"]  # DALI's GPU loader
    assert all(r["status"] in ("ok", "skipped", "stopped") for r in recs)
    log = (out / "gpu_check.log").read_text()
    assert "== train bench trn_bninception" in log and "train bench tpn_slowonly_r50" not in log
    assert "holds" in log and "WARNING" not in log
    md = (out / "report.md").read_text()
    assert "## Training throughput" in md and "## Inference" in md and "## Data loaders" in md
