"""TPN (SlowOnly-R50, TSM-R50): shapes, mmaction2 parity through load_weights, export, layouts.

The parity tests build mmaction2 1.2.0's own TPN from its config files and need mmaction2, mmcv-lite
and mmengine (test dependencies): if they do not import, these tests fail rather than skip.
"""
from __future__ import annotations


import pytest
import torch
import torch.nn as nn

from fastvid.errors import FastvidError
from fastvid.models import WeightsError, create_model, list_models, load_weights, split_outputs
from fastvid.models.resnet_tsm import temporal_shift
from fastvid.models.tpn import ceil_max_pool3d

NUM_CLASSES = 5
T = 8
SIZE = 64


def _build_mmaction_tpn(config_name: str) -> nn.Module:
    from bench.peers import build_mmaction_tpn  # mmaction2 1.2.0 around its packaging problems

    return build_mmaction_tpn(config_name, NUM_CLASSES)


def _randomize(mm: nn.Module, example: torch.Tensor) -> None:
    """Random BN affine parameters, then running stats taken from one batch (momentum 1).

    Stats from real activations keep eval-mode activations O(1) through 50+ layers, so logits
    are comparable at a tight absolute tolerance; random affine terms make every BN matter.
    """
    g = torch.Generator().manual_seed(1)
    bns = [m for m in mm.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    with torch.no_grad():
        for bn in bns:
            bn.weight.copy_(torch.rand(bn.weight.shape, generator=g) + 0.5)
            bn.bias.copy_(torch.randn(bn.bias.shape, generator=g) * 0.2)
            bn.momentum = 1.0
        for lin in (mm.cls_head.fc_cls, mm.neck.aux_head.fc):
            lin.weight.normal_(0, 0.05, generator=g)
            lin.bias.normal_(0, 0.05, generator=g)
        mm.train()
        feats = mm.backbone(example)
        if example.dim() == 4:  # TSM: frames in the batch axis, as Recognizer2D reshapes them
            feats = [f.reshape((-1, T) + f.shape[1:]).transpose(1, 2).contiguous() for f in feats]
        mm.neck(feats)
        mm.neck.aux_head(feats[-2])
    mm.eval()
    for bn in bns:
        bn.momentum = 0.1


def _mm_logits_and_aux(mm: nn.Module, video: torch.Tensor, tsm: bool):
    """Pre-softmax scores of mmaction2's recognizer (extract_feat + cls_head) and its aux head."""
    with torch.no_grad():
        inputs = video if tsm else video.unsqueeze(1)  # Recognizer3D takes (N, clips, C, T, H, W)
        feat, kwargs = mm.extract_feat(inputs, stage="neck")
        logits = mm.cls_head(feat, **kwargs)
        feats = mm.backbone(inputs.flatten(0, 1))
        if tsm:
            feats = [f.reshape((-1, T) + f.shape[1:]).transpose(1, 2).contiguous() for f in feats]
        aux = mm.neck.aux_head(feats[-2])
    return logits, aux


def _save_mm_checkpoint(mm: nn.Module, path) -> None:
    torch.save({"meta": {"mmaction_version": "1.2.0", "epoch": 1}, "state_dict": mm.state_dict()},
               path)


@pytest.fixture(scope="module")
def mm_slowonly():
    mm = _build_mmaction_tpn("tpn_slowonly_r50.py")
    _randomize(mm, torch.randn(2, 3, T, SIZE, SIZE))
    return mm


@pytest.fixture(scope="module")
def mm_tsm():
    mm = _build_mmaction_tpn("tpn_tsm_r50.py")
    _randomize(mm, torch.randn(2 * T, 3, SIZE, SIZE))
    return mm


def test_registered():
    assert {"tpn_slowonly_r50", "tpn_tsm_r50"} <= set(list_models())
    model = create_model("tpn_tsm_r50", num_classes=7, num_segments=4, dropout=0.3, consensus="x")
    assert (model.spec.input_layout, model.num_classes, model.num_segments) == ("NTCHW", 7, 4)
    assert model.spec.color == "RGB" and model.aux_loss_weight == 0.5
    assert model.cls_head.dropout.p == 0.3
    assert create_model("tpn_slowonly_r50", num_classes=3).spec.input_layout == "NCTHW"


@pytest.mark.parametrize("name,shape", [("tpn_slowonly_r50", (2, 3, T, SIZE, SIZE)),
                                        ("tpn_tsm_r50", (2, T, 3, SIZE, SIZE))])
def test_shapes_eval_and_train(name, shape):
    model = create_model(name, num_classes=NUM_CLASSES)
    x = torch.randn(shape)
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert isinstance(out, torch.Tensor) and out.shape == (2, NUM_CLASSES)
    model.train()
    logits, aux = split_outputs(model(x[:1]))  # one clip keeps the backward pass cheap
    assert logits.shape == (1, NUM_CLASSES) and aux is not None and aux.shape == (1, NUM_CLASSES)
    (logits.sum() + aux.sum()).backward()
    assert model.neck.aux_head.fc.weight.grad is not None
    assert model.backbone.conv1.conv.weight.grad is not None


def test_tsm_rejects_wrong_layout():
    model = create_model("tpn_tsm_r50", num_classes=NUM_CLASSES).eval()
    with pytest.raises(FastvidError, match="num_segments=8"):
        model(torch.randn(1, 4, 3, SIZE, SIZE))
    with pytest.raises(FastvidError, match="5-D"):
        model(torch.randn(8, 3, SIZE, SIZE))


def test_temporal_shift_matches_definition():
    n, c = 2, 16
    x = torch.randn(n * T, c, 3, 3)
    out = temporal_shift(x, T, shift_div=8).reshape(n, T, c, 3, 3)
    ref = x.reshape(n, T, c, 3, 3)
    fold = c // 8
    for t in range(T):
        nxt = ref[:, t + 1, :fold] if t + 1 < T else torch.zeros_like(ref[:, 0, :fold])
        prv = ref[:, t - 1, fold:2 * fold] if t > 0 else torch.zeros_like(ref[:, 0, :fold])
        assert torch.equal(out[:, t, :fold], nxt)
        assert torch.equal(out[:, t, fold:2 * fold], prv)
        assert torch.equal(out[:, t, 2 * fold:], ref[:, t, 2 * fold:])


@pytest.mark.parametrize("t", [4, 6, 8, 12, 16])
def test_ceil_pool_equals_ceil_mode_maxpool(t):
    x = torch.randn(2, 3, t, 5, 5)
    ref = nn.MaxPool3d((8, 1, 1), (8, 1, 1), ceil_mode=True)(x)
    assert torch.equal(ceil_max_pool3d(x, (8, 1, 1)), ref)
    ref2 = nn.MaxPool3d((2, 2, 2), (2, 2, 2), ceil_mode=True)(x)
    assert torch.equal(ceil_max_pool3d(x, (2, 2, 2)), ref2)


@pytest.mark.parametrize("tsm", [False, True], ids=["slowonly", "tsm"])
def test_parity_with_mmaction2(tsm, request, tmp_path):
    mm = request.getfixturevalue("mm_tsm" if tsm else "mm_slowonly")
    ckpt = tmp_path / "mmaction_tpn.pth"
    _save_mm_checkpoint(mm, ckpt)
    model = create_model("tpn_tsm_r50" if tsm else "tpn_slowonly_r50", num_classes=NUM_CLASSES)
    result = load_weights(model, ckpt)
    assert result == {"missing": [], "unexpected": []}
    model.eval()

    torch.manual_seed(3)
    video = torch.randn((2, T, 3, SIZE, SIZE) if tsm else (2, 3, T, SIZE, SIZE))
    want, want_aux = _mm_logits_and_aux(mm, video, tsm)
    with torch.no_grad():
        got = model(video)
        got_aux = model.neck.aux_head(model.forward_features(video)[-2])
    assert want.shape == got.shape == (2, NUM_CLASSES)
    assert want.abs().max() > 1e-2  # a degenerate (all-zero) model would match trivially
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(got_aux, want_aux, atol=1e-4, rtol=1e-4)


def test_wrong_checkpoint_names_keys(mm_slowonly, tmp_path):
    state = dict(mm_slowonly.state_dict())
    state.pop("neck.pyramid_fusion.conv.weight")
    state["neck.not_a_layer.weight"] = torch.zeros(1)
    bad = tmp_path / "bad.pth"
    torch.save({"meta": {}, "state_dict": state}, bad)
    model = create_model("tpn_slowonly_r50", num_classes=NUM_CLASSES)
    with pytest.raises(WeightsError) as err:
        load_weights(model, bad)
    assert "neck.pyramid_fusion.conv.weight" in str(err.value)
    assert "neck.not_a_layer.weight" in str(err.value)

    # A SlowOnly checkpoint does not fit the TSM model: 3-D vs 2-D kernels and other names.
    good = tmp_path / "slowonly.pth"
    _save_mm_checkpoint(mm_slowonly, good)
    with pytest.raises(WeightsError, match="backbone.conv1.conv.weight"):
        load_weights(create_model("tpn_tsm_r50", num_classes=NUM_CLASSES), good)


def test_convert_drops_preprocessor_and_module_prefix(mm_slowonly):
    state = {f"module.{k}": v for k, v in mm_slowonly.state_dict().items()}
    state["data_preprocessor.mean"] = torch.zeros(3, 1, 1, 1)
    model = create_model("tpn_slowonly_r50", num_classes=NUM_CLASSES)
    assert load_weights(model, state) == {"missing": [], "unexpected": []}
    torch.testing.assert_close(model.cls_head.fc_cls.weight, mm_slowonly.cls_head.fc_cls.weight)


@pytest.mark.parametrize("tsm", [False, True], ids=["slowonly", "tsm"])
def test_export_dynamic_batch(tsm, request):
    mm = request.getfixturevalue("mm_tsm" if tsm else "mm_slowonly")
    model = create_model("tpn_tsm_r50" if tsm else "tpn_slowonly_r50", num_classes=NUM_CLASSES)
    load_weights(model, mm.state_dict())  # non-trivial weights: default init gives ~0 logits
    model.eval()
    shape = (2, T, 3, SIZE, SIZE) if tsm else (2, 3, T, SIZE, SIZE)
    batch = torch.export.Dim("batch", min=1, max=16)
    exported = torch.export.export(model, (torch.randn(shape),), dynamic_shapes=({0: batch},))
    module = exported.module()
    for n in (1, 3):
        x = torch.randn((n,) + shape[1:])
        with torch.no_grad():
            want = model(x)
            got = module(x)
        assert got.shape == (n, NUM_CLASSES) and want.abs().max() > 1e-2
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_channels_last_3d_same_output(mm_slowonly):
    model = create_model("tpn_slowonly_r50", num_classes=NUM_CLASSES)
    load_weights(model, mm_slowonly.state_dict())  # realistic BN stats, non-trivial logits
    model.eval()
    x = torch.randn(2, 3, T, SIZE, SIZE)
    with torch.no_grad():
        want = model(x)
        model = model.to(memory_format=torch.channels_last_3d)
        assert model.backbone.conv1.conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
        got = model(x.contiguous(memory_format=torch.channels_last_3d))
    # Channels-last convolutions sum in another order; over ~60 fp32 layers that moves logits by
    # ~1e-4 of their scale, far below what a wrong layout (mixed-up axes) would do.
    scale = want.abs().max().item()
    assert scale > 1e-2
    torch.testing.assert_close(got, want, atol=1e-3 * scale, rtol=1e-3)


@pytest.mark.parametrize("tsm", [False, True], ids=["slowonly", "tsm"])
def test_torchvision_resnet50_initialises_backbone(tsm):
    import torchvision

    tv = torchvision.models.resnet50(num_classes=10).eval()
    with torch.no_grad():
        for bn in (m for m in tv.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.weight.uniform_(0.5, 1.5)
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    model = create_model("tpn_tsm_r50" if tsm else "tpn_slowonly_r50", num_classes=NUM_CLASSES)
    result = load_weights(model, tv.state_dict(), strict=False)
    assert result["unexpected"] == []
    assert result["missing"] and all(not k.startswith("backbone.") for k in result["missing"])
    model.eval()

    frame = torch.randn(1, 3, SIZE, SIZE)
    with torch.no_grad():
        bb = model.backbone
        if tsm:
            # A static clip: the shift swaps equal frames, so frames the clip ends' zeros have
            # not reached yet (one frame per block: 3 in layer1) match the 2D network.
            want = tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(frame)))))
            got = bb.layer1(bb.maxpool(bb.conv1(frame.expand(T, -1, -1, -1))))[T // 2]
            torch.testing.assert_close(bb.layer1[0].conv1.conv.net.weight, tv.layer1[0].conv1.weight)
        else:
            want = tv.layer2(tv.layer1(tv.maxpool(tv.relu(tv.bn1(tv.conv1(frame))))))
            clip = frame.unsqueeze(2).expand(-1, -1, T, -1, -1)
            got = bb.layer2(bb.layer1(bb.maxpool(bb.conv1(clip))))[:, :, T // 2]
            inflated = bb.layer3[0].conv1.conv.weight
            assert inflated.shape[2] == 3
            torch.testing.assert_close(inflated.sum(2), tv.layer3[0].conv1.weight)
    torch.testing.assert_close(got.squeeze(0), want.squeeze(0), atol=1e-4, rtol=1e-4)
