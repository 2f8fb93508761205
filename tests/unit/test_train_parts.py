"""The parts of `fastvid train` / `fastvid eval` that need no CLI run: channels-last on mixed
2D/3D convs, a gradient for every trainable parameter of every registered model, the optimizer
and RNG state on resume, and the merge of sharded eval scores."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from fastvid.models import model_specs


def test_interleave_shards_restores_list_order():
    from fastvid.evaluate import interleave_shards

    rows = np.arange(10, dtype=np.float32)[:, None].repeat(2, axis=1)
    labels = np.arange(10)
    parts = [(rows[r::4], labels[r::4]) for r in range(4)]
    scores, merged = interleave_shards(parts)
    np.testing.assert_array_equal(merged, labels)
    np.testing.assert_array_equal(scores, rows)
    with pytest.raises(ValueError, match=r"shard 0 of 2 has 5 labels .* of 8 has 4"):
        interleave_shards([(rows[:5], labels[:5]), (rows[:3], labels[:3])])


def test_to_channels_last_handles_2d_and_3d_convs_in_one_model():
    from fastvid.models import create_model
    from fastvid.models import to_channels_last

    model = create_model("tpn_tsm_r50", num_classes=3, num_segments=4)  # 2D backbone, 3D neck
    with pytest.raises(RuntimeError, match="rank 4"):
        model.to(memory_format=torch.channels_last)  # what fastvid train did before
    to_channels_last(model)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
    assert {m.weight.dim() for m in convs} == {4, 5}
    for m in convs:
        fmt = torch.channels_last if m.weight.dim() == 4 else torch.channels_last_3d
        assert m.weight.is_contiguous(memory_format=fmt), m


@pytest.mark.parametrize("spec", model_specs(), ids=lambda spec: spec.name)
def test_every_trainable_parameter_gets_a_gradient_each_step(spec):
    """DDP is built without find_unused_parameters: a trainable parameter left without a gradient
    in a training step (TPN's aux head, TRN's sampled relations) would fail the next iteration."""
    from fastvid.models import create_model, split_outputs, to_channels_last

    torch.manual_seed(0)
    kwargs = {} if spec.is_3d else {"num_segments": 4}  # a 3D model takes the clip's length
    model = to_channels_last(create_model(spec.name, num_classes=3, **kwargs)).train()
    logits, aux = split_outputs(model(torch.randn(spec.input_shape(2, 4, 32))))
    loss = logits.float().logsumexp(1).mean() + (0.5 * aux.float().logsumexp(1).mean() if aux is not None else 0)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
    assert (aux is not None) == (spec.arch == "tpn")  # TPN's auxiliary head trains beside its head


def test_resumed_optimizer_keeps_this_runs_fused_choice():
    """A CPU checkpoint (fused=None) resumed on CUDA must stay fused: GradScaler hands found_inf
    to an optimizer built with fused=True, which the unfused SGD asserts against."""
    from fastvid.training import load_optimizer_state as _load_optimizer_state

    params = [torch.nn.Parameter(torch.ones(2))]
    saved = torch.optim.SGD(params, lr=0.1, momentum=0.9).state_dict()
    assert saved["param_groups"][0]["fused"] is None
    cuda_run = torch.optim.SGD(params, lr=0.1, momentum=0.9, fused=True)  # as built on CUDA
    _load_optimizer_state(cuda_run, saved)
    assert cuda_run.param_groups[0]["fused"] is True and cuda_run.param_groups[0]["lr"] == 0.1


def test_restore_rng_with_fewer_gpus_than_the_saving_run(monkeypatch):
    from fastvid.checkpoint import restore_rng

    got = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", lambda states: got.append(list(states)))
    states = [torch.zeros(16, dtype=torch.uint8), torch.ones(16, dtype=torch.uint8)]
    restore_rng({"torch": torch.get_rng_state(), "cuda": states})
    assert len(got) == 1 and len(got[0]) == 1 and torch.equal(got[0][0], states[0])
