"""The training package's parts: the shared step, non-finite handling on the device, optimizer
and LR schedules (CPU; the loop itself is exercised end to end by test_train.py)."""
from __future__ import annotations

import io
import logging
import math

import pytest
import torch
import torch.nn as nn

from fastvid.config import Config, apply_overrides
from fastvid.errors import TrainingAborted
from fastvid.precision import resolve_precision
from fastvid.training import (NonFiniteMonitor, TrainStep, build_lr_scheduler, build_optimizer,
                              lr_factor)

CPU = torch.device("cpu")
FP32 = resolve_precision(False, "fp32", CPU)


class _WithAux(nn.Module):
    """Logits and, in training mode, auxiliary logits (as TPN)."""

    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.head = nn.Linear(4, 3)
        self.aux = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor):
        h = torch.relu(self.body(x))
        return (self.head(h), self.aux(h)) if self.training else self.head(h)


def _cfg(*items: str) -> Config:
    return apply_overrides(Config(), ["train.lr=0.1", "train.weight_decay=0", *items])


def test_step_adds_the_weighted_aux_loss_and_clips():
    torch.manual_seed(0)
    model = _WithAux().train()
    x, y = torch.randn(5, 6), torch.tensor([0, 1, 2, 0, 1])
    step = TrainStep(model, build_optimizer(model, _cfg("train.momentum=0"), CPU), FP32,
                     aux_loss_weight=0.25, clip_grad_norm=1e-3)
    logits, aux = model(x)
    ce = nn.functional.cross_entropy
    expected = ce(logits, y) + 0.25 * ce(aux, y)
    before = [p.detach().clone() for p in model.parameters()]
    out = step(x, y)
    assert torch.allclose(out.loss, expected) and not bool(out.skipped)
    # Plain SGD, lr 0.1: the update is -lr x the gradient clipped to a global norm of 1e-3.
    delta = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert delta.norm().item() == pytest.approx(0.1 * 1e-3, rel=1e-3)


def test_non_finite_step_is_skipped_on_the_device_and_leaves_no_trace():
    """Fused SGD skips the flagged step entirely; the zeroed momentum buffers make the next step
    equal to a fresh optimizer's first one (the fused kernel would otherwise leave a buffer it
    skipped uninitialised)."""
    torch.manual_seed(0)
    model = _WithAux().train()
    twin = _WithAux().train()
    twin.load_state_dict(model.state_dict())
    cfg = _cfg("train.momentum=0.9", "train.nesterov=true", "train.weight_decay=1e-4")
    opt = build_optimizer(model, cfg, CPU)
    assert opt.param_groups[0]["fused"] and opt.state  # fused, buffers created up front
    step = TrainStep(model, opt, FP32, clip_grad_norm=20.0)
    x, y = torch.randn(4, 6), torch.tensor([0, 1, 2, 0])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    out = step(x.clone().fill_(float("nan")), y)
    assert bool(out.skipped) and not torch.isfinite(out.loss)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(torch.count_nonzero(s["momentum_buffer"]) == 0 for s in opt.state.values())
    step(x, y)
    TrainStep(twin, build_optimizer(twin, cfg, CPU), FP32, clip_grad_norm=20.0)(x, y)
    for (k, a), b in zip(model.state_dict().items(), twin.state_dict().values()):
        assert torch.equal(a, b), k


def test_non_finite_monitor_counts_on_the_device_and_stops_after_a_run():
    mon = NonFiniteMonitor(CPU, max_run=3)
    log = logging.getLogger("test.monitor")
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    log.addHandler(handler)
    try:
        for step, bad in enumerate([False, True, True, False], start=1):
            mon.update(torch.tensor(bad), step)
        assert mon.check(1, log) == 2  # a run of 2 < 3
        assert "non-finite loss at epoch 1 step 2" in stream.getvalue()
        mon.update(torch.tensor(True), 5)
        mon.update(torch.tensor(True), 6)
        assert mon.check(1, log) == 2  # run 2 again, across no boundary
        mon.update(torch.tensor(True), 7)  # the run continues over the check: 3 in a row
        with pytest.raises(TrainingAborted, match="3 consecutive non-finite losses"):
            mon.check(1, log)
    finally:
        log.removeHandler(handler)


@pytest.mark.parametrize("items", [
    ["train.lr_steps=[2,4]", "train.epochs=6"],
    ["train.lr_schedule=cosine", "train.epochs=5"],
    ["train.lr_schedule=cosine", "train.epochs=6", "train.warmup_epochs=2"],
    ["train.lr_steps=[3]", "train.epochs=5", "train.warmup_epochs=2"],
])
def test_lr_schedules_follow_lr_factor_and_checkpoint_cleanly(items, tmp_path):
    cfg = _cfg(*items)
    model = nn.Linear(2, 2)
    opt = build_optimizer(model, cfg, CPU)
    sched = build_lr_scheduler(opt, cfg)
    seen = []
    for epoch in range(cfg.train.epochs):
        seen.append(opt.param_groups[0]["lr"])
        assert seen[-1] == pytest.approx(0.1 * lr_factor(epoch, cfg.train)), (epoch, seen)
        sched.step()
    if "cosine" in items[0]:
        warm = cfg.train.warmup_epochs
        assert seen[warm] == pytest.approx(0.1) and seen[-1] < 0.1 * 0.2
        assert all(a >= b for a, b in zip(seen[warm:], seen[warm + 1:]))  # decreasing after warm-up
    if cfg.train.warmup_epochs:
        assert seen[0] == pytest.approx(0.01) and seen[0] < seen[1]
    # A checkpoint of the schedule loads with weights_only=True and resumes where it was.
    buf = io.BytesIO()
    torch.save(sched.state_dict(), buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    opt2 = build_optimizer(model, cfg, CPU)
    sched2 = build_lr_scheduler(opt2, cfg)
    sched2.load_state_dict(state)
    assert sched2.last_epoch == cfg.train.epochs
    assert math.isclose(sched2.get_last_lr()[0], sched.get_last_lr()[0])


def test_cosine_and_warmup_are_config_keys():
    cfg = _cfg("train.lr_schedule=cosine", "train.warmup_epochs=3")
    assert cfg.train.lr_schedule == "cosine" and cfg.train.warmup_epochs == 3
    with pytest.raises(ValueError, match="train.lr_schedule"):
        _cfg("train.lr_schedule=poly")


# -- precise BN's batches kept from the epoch ---------------------------------------------------
@pytest.mark.parametrize("skip, budget, max_steps, kept", [
    (0, 1 << 30, None, 3),  # the epoch's first 3 batches are kept, as they were yielded
    (0, 1 << 30, 2, 2),  # an epoch cut at 2 steps: BN uses (and keeps) those 2
    (1, 1 << 30, None, None),  # a resumed epoch never saw its first batch: read them again
    (0, 100, None, None),  # over the budget: nothing kept, read again
])
def test_epoch_keeps_precise_bn_batches_for_the_statistics(skip, budget, max_steps, kept):
    from _tiny import Tiny2D

    from fastvid.distributed import DistInfo
    from fastvid.training import EpochSetup, MetricsLog, StopFlag, recompute_bn_stats, train_one_epoch

    torch.manual_seed(0)
    model = Tiny2D(width=4)
    gen = torch.Generator().manual_seed(1)
    batches = [(torch.randn(2, 2, 3, 8, 8, generator=gen), torch.tensor([0, 1])) for _ in range(5)]
    info = DistInfo(rank=0, world_size=1, local_rank=0, device=CPU)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    setup = EpochSetup(_cfg(), info, MetricsLog(None), StopFlag(), NonFiniteMonitor(CPU, 3),
                       progress=False, max_steps=max_steps, bn_batches=3, bn_cache_bytes=budget)
    # A started loader yields the batches from ``skip`` on (fastvid.loaders.VideoLoader.start).
    res = train_one_epoch(TrainStep(model, optimizer, FP32), batches[skip:], 0, 0, skip, setup)
    assert res["bn_batches_wanted"] == (kept or 3)
    if kept is None:
        assert res["bn_batches"] is None
        return
    assert [b[0] is batches[i][0] for i, b in enumerate(res["bn_batches"])] == [True] * kept
    # The statistics from the kept batches are those of reading the loader again.
    import copy

    twin = copy.deepcopy(model)
    recompute_bn_stats(model, res["bn_batches"], kept, FP32)
    recompute_bn_stats(twin, batches, kept, FP32)
    torch.testing.assert_close(model.bn.running_mean, twin.bn.running_mean, rtol=0, atol=0)
    torch.testing.assert_close(model.bn.running_var, twin.bn.running_var, rtol=0, atol=0)
