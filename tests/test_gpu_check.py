"""The GPU check on a CPU: tests that skip without PyAV (as on the lent GPU machine)."""
from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO), env.get("PYTHONPATH", "")])
    return env


def test_dali_tests_skip_without_pyav(tmp_path):
    """On the GPU machine (no PyAV) 20 DALI tests errored in a fixture that wrote videos: with
    ``import av`` blocked they skip with the reason, and those on frame folders still run."""
    junit = tmp_path / "junit.xml"
    select = ("mjpeg or vp9 or h264 or sthv2 or truncated or needs_cuda_target "
              "or batch_contract and 2d-frames or gpu_graph")
    cmd = [sys.executable, "-m", "pytest", "-p", "_block_av", "-p", "no:cacheprovider",
           "tests/test_loaders.py", "tests/test_dali.py", "tests/test_data_prep.py",
           "-m", "gpu or trt or dali", "-k", select, f"--junitxml={junit}", "-q"]
    proc = subprocess.run(cmd, cwd=REPO, env=_env(REPO / "tests"), capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:]
    outcome = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        skip = case.find("skipped")
        bad = [c.tag for c in case if c.tag in ("error", "failure")]
        outcome[case.get("name")] = bad[0] if bad else ("skipped", skip.get("message")) if skip is not None else "passed"
    assert "No module named 'av' (blocked" in " ".join(str(v) for v in outcome.values())
    pyav = {n: o for n, o in outcome.items()  # (the GPU tests skip earlier here: no CUDA)
            if any(k in n for k in ("mjpeg", "vp9", "h264", "sthv2", "truncated")) and "gpu_graph" not in n}
    assert len(pyav) >= 10 and all(o[0] == "skipped" and "PyAV is not installed" in o[1] for o in pyav.values()), pyav
    assert outcome["test_batch_contract[2d-frames-dali-cpu]"] == "passed"
    assert outcome["test_dali_gpu_needs_cuda_target"] == "passed"
    # the GPU graph on frame folders needs no PyAV: only the missing GPU skips it here
    assert outcome["test_dali_gpu_graph_matches_torch[frames]"][0] == "skipped"
    assert "CUDA" in outcome["test_dali_gpu_graph_matches_torch[frames]"][1]
