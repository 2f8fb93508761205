"""The pieces train() is cut into, without data or the CLI: the run state a checkpoint is written
from and restored into (_checkpoint_state / _resume) and the resume decision (_open_checkpoint:
a finished run is a no-op, an unfinished one's metrics are cut back to the checkpoint)."""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from fastvid.checkpoint import load_checkpoint, save_checkpoint
from fastvid.config import Config, apply_overrides
from fastvid.distributed import DistInfo
from fastvid.precision import resolve_precision
from fastvid.training import build_train_step
from fastvid.training.loop import TrainOptions, _checkpoint_state, _open_checkpoint, _resume, _Run

CPU = torch.device("cpu")
FP32 = resolve_precision(False, "fp32", CPU)


class _Tiny(nn.Module):
    input_layout = "NTCHW"

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.drop = nn.Dropout(0.3)  # draws from the RNG a resumed run must restore
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        h = torch.relu(self.conv(x.flatten(0, 1))).mean((2, 3)).reshape(n, t, -1).mean(1)
        return self.fc(self.drop(h))


def _cfg() -> Config:
    return apply_overrides(Config(), ["train.lr=0.1", "train.epochs=4", "train.lr_steps=[1,3]"])


def _run(tmp_path: Path, cfg: Config, **fields) -> _Run:
    opts = TrainOptions(data_root=tmp_path, work_dir=tmp_path, resume="auto")
    return _Run(cfg, opts, DistInfo(), tmp_path, ["a", "b", "c"], None, None, **fields)


def _build(run: _Run, ckpt=None) -> None:
    torch.manual_seed(0)
    run.train_step = build_train_step(run.cfg, _Tiny(), device=CPU, precision=FP32,
                                      restore=lambda m, o: _resume(run, ckpt, m, o))


def _batch(i: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(i)
    return torch.randn(2, 2, 3, 8, 8, generator=gen), torch.randint(0, 3, (2,), generator=gen)


def test_a_checkpointed_run_resumes_exactly(tmp_path):
    """Steps after a restore from _checkpoint_state equal those of the run that went on."""
    cfg = _cfg()
    run = _run(tmp_path, cfg)
    _build(run)
    for i in range(3):
        run.train_step(*_batch(i))
    run.scheduler.step()  # one epoch done: lr 0.1 -> 0.01 (lr_steps [1, 3])
    run.step, run.best_top1 = 3, 0.5
    save_checkpoint(_checkpoint_state(run, 1, run.step, 0), tmp_path / "last.pt")
    ckpt = load_checkpoint(tmp_path / "last.pt")
    assert (ckpt["epoch"], ckpt["step"], ckpt["batch_in_epoch"]) == (1, 3, 0)
    assert ckpt["classes"] == ["a", "b", "c"] and ckpt["best_top1"] == 0.5

    went_on = [float(run.train_step(*_batch(i)).loss) for i in range(3, 6)]  # dropout: global RNG

    resumed = _run(tmp_path, cfg, start_epoch=1, resume_path=tmp_path / "last.pt")
    _build(resumed, ckpt)
    assert (resumed.step, resumed.best_top1) == (3, 0.5)
    assert resumed.scheduler.last_epoch == run.scheduler.last_epoch == 1
    assert resumed.train_step.optimizer.param_groups[0]["lr"] == run.train_step.optimizer.param_groups[0]["lr"]
    assert [float(resumed.train_step(*_batch(i)).loss) for i in range(3, 6)] == went_on
    for a, b in zip(run.train_step.model.parameters(), resumed.train_step.model.parameters()):
        assert torch.equal(a, b)


def test_a_finished_run_is_not_trained_again(tmp_path):
    cfg = _cfg()
    run = _run(tmp_path, cfg)
    _build(run)
    run.step = 8
    save_checkpoint(_checkpoint_state(run, cfg.train.epochs, run.step, 0), tmp_path / "last.pt")
    (tmp_path / "metrics.jsonl").write_text(json.dumps({"type": "epoch", "epoch": 4, "step": 8}) + "\n")
    path, ckpt, finished = _open_checkpoint(cfg, run.opts, tmp_path, DistInfo())
    assert path == tmp_path / "last.pt" and ckpt is None
    assert finished["steps"] == 8 and finished["final"]["epoch"] == 4
    assert json.loads((tmp_path / "summary.json").read_text())["steps"] == 8


def test_resuming_cuts_the_metrics_back_to_the_checkpoint(tmp_path):
    cfg = _cfg()
    run = _run(tmp_path, cfg)
    _build(run)
    save_checkpoint(_checkpoint_state(run, 1, 4, 2), tmp_path / "last.pt")  # mid-epoch 1
    lines = [{"type": "train", "epoch": 2, "step": 4}, {"type": "train", "epoch": 2, "step": 5},
             {"type": "epoch", "epoch": 2, "step": 6}]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    path, ckpt, finished = _open_checkpoint(cfg, run.opts, tmp_path, DistInfo())
    assert finished is None and (ckpt["step"], ckpt["batch_in_epoch"]) == (4, 2)
    kept = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert kept == lines[:1]


def test_a_new_run_has_nothing_to_open(tmp_path):
    cfg = _cfg()
    assert _open_checkpoint(cfg, _run(tmp_path, cfg).opts, tmp_path, DistInfo()) == (None, None, None)
