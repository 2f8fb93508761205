"""Helpers shared by the CLI-level tests: the small TRN settings and CLI invocation."""
from __future__ import annotations

import os
from pathlib import Path

from click.testing import CliRunner

from fastvid.cli import cli

REPO = Path(__file__).resolve().parents[1]
CONFIG = str(REPO / "configs" / "demo_trn_synth.yaml")
# Small but the real architecture: BNInception + multi-scale TRN, 4 segments of 64 px.
SMALL = ["--set", "model.num_segments=4", "--set", "data.image_size=64", "--set", "data.scale_size=64",
         "--set", "train.workers=0", "--set", "train.log_interval=1", "--set", "train.lr_steps=[100]"]


def train_args(root: Path, work: Path, *extra: str) -> list[str]:
    return ["train", "-c", CONFIG, "--data-root", str(root), "--work-dir", str(work),
            "--loader", "torch", "--device", "cpu", "--no-progress", *SMALL, *extra]


def invoke(args: list[str]):
    return CliRunner().invoke(cli, args)


def invoke_ok(args: list[str]) -> str:
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def repo_env(*paths: Path) -> dict[str, str]:
    """This process's environment with ``paths`` and the repository first on PYTHONPATH (for
    subprocesses that import fastvid, bench or a test helper)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), str(REPO), env.get("PYTHONPATH", "")])
    return env
