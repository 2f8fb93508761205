"""FASTVID_PLUGINS: a module named there is imported before the CLI reads its registries."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _fastvid(args: list[str], plugins: str, path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, FASTVID_PLUGINS=plugins,
               PYTHONPATH=os.pathsep.join([str(path), str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "fastvid", *args], env=env, capture_output=True,
                          text=True, timeout=120)


def test_plugin_module_is_imported_and_a_missing_one_named(tmp_path, monkeypatch):
    (tmp_path / "fv_plugin_probe.py").write_text(
        "import os\nopen(os.environ['PROBE_OUT'], 'a').write('imported')\n")
    monkeypatch.setenv("PROBE_OUT", str(tmp_path / "probe.txt"))
    ok = _fastvid(["--version"], "fv_plugin_probe", tmp_path)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "probe.txt").read_text() == "imported"

    bad = _fastvid(["--version"], "fv_plugin_probe, fv_no_such_plugin", tmp_path)
    assert bad.returncode != 0
    assert "FASTVID_PLUGINS" in bad.stderr and "fv_no_such_plugin" in bad.stderr
    assert "Traceback" not in bad.stderr
