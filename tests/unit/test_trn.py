"""BN-Inception and TSN/TRN: shapes, pretrainedmodels parity, weight layouts, relations,
partial BN, optimiser policies, export and memory formats.

The parity tests need ``pretrainedmodels`` (a test dependency): its ``bninception`` with
``pretrained=None`` is the reference (no download).
"""
from __future__ import annotations

import importlib
import itertools
import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvid.errors import FastvidError
from fastvid.models import WeightsError, create_model, list_models, load_weights
from fastvid.models.bninception import BNInception, ceil_max_pool2d
from fastvid.models.trn import RelationModuleMultiScale

NUM_CLASSES = 5
T = 8
SIZE = 64
# rand covers rand/randn/randint/randperm/rand_like; native_dropout is training-mode dropout.
RNG_OPS = ("rand", "bernoulli", "multinomial", "normal", "uniform", "native_dropout")


def _trn(consensus: str = "trn_multiscale", num_segments: int = T, **kwargs) -> nn.Module:
    return create_model("trn_bninception", num_classes=NUM_CLASSES, num_segments=num_segments,
                        consensus=consensus, **kwargs)


def _video(n: int = 2, t: int = T, size: int = SIZE) -> torch.Tensor:
    # BGR 0-255 minus the mean: roughly what the loaders produce.
    return torch.rand(n, t, 3, size, size) * 255.0 - 120.0


def _bn_layers(module: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in module.modules() if isinstance(m, nn.BatchNorm2d)]


def _assert_close(ours: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    """Max abs difference within ``tol`` of the reference's scale (at least 1).

    fp32 sums in another order (adaptive vs fixed 7x7 average pool) differ by a few ulps of
    the largest value, so the bound scales with it.
    """
    assert ours.shape == ref.shape
    diff = (ours - ref).abs().max().item()
    assert diff <= tol * max(1.0, ref.abs().max().item()), diff


@pytest.fixture(scope="module")
def reference():
    """pretrainedmodels' BN-Inception with realistic, randomized BN statistics and affines.

    Random running statistics alone make the network's output nearly independent of its input
    (every BN re-centres on noise), which would let a wrong layer pass the parity test; so the
    statistics are first measured on random images, then perturbed.
    """
    # A test dependency (setup.py extra "test"): a missing peer must fail the parity test.
    # ``pretrainedmodels.models.bninception`` is shadowed by the function of that name in the
    # package namespace, so ``import ... as`` would bind the function; import the module itself.
    bn_mod = importlib.import_module("pretrainedmodels.models.bninception")
    torch.manual_seed(1)
    ref = bn_mod.bninception(pretrained=None)
    for bn in _bn_layers(ref):
        bn.momentum = None  # cumulative average: one batch sets the statistics
        bn.reset_running_stats()
    ref.train()
    with torch.no_grad():
        ref.features(torch.rand(4, 3, 96, 96) * 255.0 - 120.0)
    with torch.no_grad():
        for bn in _bn_layers(ref):
            bn.momentum = 0.1
            bn.running_mean.add_(torch.randn_like(bn.running_mean) * 0.1 * bn.running_var.sqrt())
            bn.running_var.mul_(torch.empty_like(bn.running_var).uniform_(0.8, 1.25))
            bn.weight.uniform_(0.7, 1.3)
            bn.bias.normal_(0.0, 0.1)
    return ref.eval()


def _published_layout(ref: nn.Module) -> dict[str, torch.Tensor]:
    """The TSN file's layout: BN tensors (1, C), no num_batches_tracked, classifier named fc."""
    out = {}
    for key, value in ref.state_dict().items():
        if key.endswith("num_batches_tracked"):
            continue
        if "_bn." in key:
            value = value.reshape(1, -1)
        out[key.replace("last_linear.", "fc.")] = value.clone()
    return out


# -- BN-Inception -------------------------------------------------------------------------------

@pytest.mark.parametrize("size", [7, 8, 13, 14, 28, 56, 97, 112])
def test_ceil_max_pool_matches_ceil_mode(size):
    x = torch.randn(2, 3, size, size + 1)
    ours = ceil_max_pool2d(x, 3, 2)
    ref = F.max_pool2d(x, 3, 2, ceil_mode=True)
    assert ours.shape == ref.shape
    assert torch.equal(ours, ref)


def test_ceil_pool_chain_224():
    x = torch.randn(1, 1, 112, 112)
    sizes = []
    for _ in range(4):
        x = ceil_max_pool2d(x)
        sizes.append(x.shape[-1])
    assert sizes == [56, 28, 14, 7]


def test_bninception_parity_224(reference):
    model = BNInception().eval()
    load_weights(model, reference.state_dict())  # pretrainedmodels names: last_linear -> fc
    x = torch.rand(2, 3, 224, 224) * 255.0 - 120.0
    with torch.no_grad():
        ours, ref = model(x), reference(x)
        feats = model.forward_features(x)
    assert feats.shape == (2, 1024, 7, 7)
    assert ours.shape == (2, 1000)
    assert (ref[0] - ref[1]).abs().max() > 1e-2  # the check below is not on a constant
    _assert_close(ours, ref)


@pytest.mark.parametrize("size", [97, 64])
def test_bninception_parity_small(reference, size):
    # pretrainedmodels' fixed 7x7 global pool needs >= 193 px; compare the feature maps, which
    # also checks that the ceil-mode replacement keeps every intermediate shape.
    model = BNInception().eval()
    load_weights(model, reference.state_dict())
    x = torch.rand(2, 3, size, size) * 255.0 - 120.0
    with torch.no_grad():
        ours, ref = model.forward_features(x), reference.features(x)
        logits = model(x)
    assert ours.shape == ref.shape
    _assert_close(ours, ref)
    _assert_close(logits, reference.last_linear(ref.mean(dim=(2, 3))))


@pytest.mark.parametrize("size", [112, 120, 150])
def test_bninception_sizes_where_caffe_fails(reference, size):
    # At these sizes inception_4e (or 3c) sees an odd map: the Caffe model's ceil-mode pool is one
    # short of its strided convs and its concat fails. Ours pads that pool to the convs' size;
    # everything before the failing block still matches the reference exactly.
    with torch.no_grad(), pytest.raises(RuntimeError, match="Sizes of tensors must match"):
        reference.features(torch.zeros(1, 3, size, size))
    model = BNInception().eval()
    x = torch.rand(2, 3, size, size) * 255.0 - 120.0
    with torch.no_grad():
        feats = model.forward_features(x)
        logits = model(x)
    expect = size
    for _ in range(5):  # conv1 (pad 3), pool1, pool2 (ceil), 3c, 4e (as the strided convs)
        expect = (expect + 1) // 2 if _ in (0, 3, 4) else -(-(expect - 3) // 2) + 1
    assert feats.shape == (2, 1024, expect, expect)
    assert logits.shape == (2, 1000) and torch.isfinite(logits).all()


def test_published_bninception_file_loads(reference, tmp_path):
    path = tmp_path / "bn_inception-9f5701afb96c8044.pth"
    torch.save(_published_layout(reference), path)
    model = create_model("bninception").eval()
    assert load_weights(model, path) == {"missing": [], "unexpected": []}
    assert model.conv1_7x7_s2_bn.running_mean.shape == (64,)
    x = torch.rand(1, 3, 96, 96) * 255.0 - 120.0
    with torch.no_grad():
        _assert_close(model.forward_features(x), reference.features(x))

    # The same file initialises a TRN's backbone; the new heads keep their initialisation.
    trn = _trn(num_segments=4)
    heads = {k: v.clone() for k, v in trn.state_dict().items() if not k.startswith("base_model.")}
    load_weights(trn, path)
    state = trn.state_dict()
    for key, value in reference.state_dict().items():
        if key.endswith("num_batches_tracked"):  # not in the file: filled with 0
            assert state["base_model." + key] == 0
        elif not key.startswith("last_linear."):
            assert torch.equal(state["base_model." + key], value), key
    assert all(torch.equal(state[k], v) for k, v in heads.items())


def test_bad_bninception_file_names_keys(reference):
    state = _published_layout(reference)
    del state["inception_4a_1x1.weight"]
    state["inception_9z_1x1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match="inception_4a_1x1.weight") as info:
        load_weights(BNInception(), state)
    assert "inception_9z_1x1.weight" in str(info.value)


def test_bninception_registered():
    assert {"bninception", "trn_bninception"} <= set(list_models())
    model = create_model("bninception")
    assert model.fc.out_features == 1000 and model.input_color == "BGR"
    # TSN/TRN-pytorch names: inception 3c/4e have no 1x1 and no pool projection.
    keys = set(model.state_dict())
    assert "inception_3a_1x1.weight" in keys and "inception_3c_1x1.weight" not in keys
    assert "inception_4e_pool_proj.weight" not in keys
    assert "inception_5b_pool_proj_bn.running_var" in keys


# -- TSN / TRN ----------------------------------------------------------------------------------

@pytest.mark.parametrize("consensus", ["avg", "trn", "trn_multiscale"])
def test_output_shapes(consensus):
    model = _trn(consensus)
    x = _video()
    out_train = model(x)
    model.eval()
    with torch.no_grad():
        out_eval = model(x)
    assert out_train.shape == out_eval.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out_eval).all()


def test_avg_consensus_is_blind_to_order_and_trn_is_not():
    # Why TRN beats TSN on order-dependent actions: the synthetic pairs (grow/shrink, ...) are the
    # same frames reversed, and average consensus scores a clip and its reverse identically, so
    # on such a pair it cannot beat chance; the relation head sees the order.
    import numpy as np

    from fastvid.data.synth import render_clip

    frames = render_clip(0, 8, (64, 64), np.random.default_rng(3))  # grow
    x = torch.from_numpy(frames[:, :, :, ::-1].copy()).permute(0, 3, 1, 2).float()[None] - 120.0
    reverse = torch.from_numpy(render_clip(1, 8, (64, 64), np.random.default_rng(3))[:, :, :, ::-1]
                               .copy()).permute(0, 3, 1, 2).float()[None] - 120.0
    assert torch.equal(reverse, x.flip(1))  # the partner class is exactly the reversed clip
    # So what decides is how each consensus treats a clip and its time reversal: the whole TSN
    # model scores them identically; the relation heads do not (tested on frame features: an
    # untrained backbone in eval mode maps every frame to nearly the same feature).
    torch.manual_seed(0)
    avg = _trn("avg").eval()
    with torch.no_grad():
        torch.testing.assert_close(avg(x), avg(reverse), rtol=1e-5, atol=1e-5)
        clip = _video(1)
        torch.testing.assert_close(avg(clip), avg(clip.flip(1)), rtol=1e-5, atol=1e-5)
    feats = torch.randn(2, T, 256)
    for consensus in ("trn_multiscale", "trn"):
        head = _trn(consensus).eval().consensus
        with torch.no_grad():
            a, b = head(feats), head(feats.flip(1))
        assert (a - b).abs().max() > 1e-2 * a.abs().max(), consensus


def test_model_attributes_and_bad_input():
    model = _trn()
    assert (model.spec.input_layout, model.num_segments, model.num_classes, model.spec.color) == \
        ("NTCHW", T, NUM_CLASSES, "BGR")
    with pytest.raises(FastvidError, match="num_segments=8"):
        model(_video(t=4))
    with pytest.raises(ValueError, match="trn_multiscale"):
        _trn("trn_max")


def test_state_dict_names_match_trn_pytorch():
    keys = set(_trn("trn_multiscale").state_dict())
    assert {"base_model.conv1_7x7_s2.weight", "new_fc.weight", "new_fc.bias",
            "consensus.fc_fusion_scales.0.1.weight", "consensus.fc_fusion_scales.6.3.bias"} <= keys
    assert not any("relations" in k for k in keys)  # derived from the arguments, not saved
    single = set(_trn("trn").state_dict())
    assert {"consensus.classifier.1.weight", "consensus.classifier.3.bias"} <= single
    assert _trn("trn").consensus.classifier[1].in_features == T * 256
    assert _trn("avg").new_fc.out_features == NUM_CLASSES


def test_relation_counts_match_combinations():
    head = RelationModuleMultiScale(img_feature_dim=4, num_frames=8, num_classes=3)
    assert head.scales == [8, 7, 6, 5, 4, 3, 2]
    counts = [head.relations(i).shape[0] for i in range(len(head.scales))]
    assert counts == [math.comb(8, s) for s in head.scales] == [1, 8, 28, 56, 70, 56, 28]
    for i, scale in enumerate(head.scales):
        assert head.relations(i).tolist() == [list(c) for c in itertools.combinations(range(8), scale)]
    assert head.subsample_scales == [1, 3, 3, 3, 3, 3, 3]
    for i in range(len(head.scales)):
        fixed = head.sample_relations(i).tolist()
        assert len(fixed) == head.subsample_scales[i] and len({tuple(r) for r in fixed}) == len(fixed)
        assert all(r in head.relations(i).tolist() for r in fixed)


def test_eval_is_deterministic():
    torch.manual_seed(3)
    a = _trn().eval()
    torch.manual_seed(4)  # the fixed eval relations must not depend on the global RNG
    b = _trn().eval()
    b.load_state_dict(a.state_dict())
    for i in range(len(a.consensus.scales)):
        assert torch.equal(a.consensus.sample_relations(i), b.consensus.sample_relations(i))
    x = _video()
    with torch.no_grad():
        first, second, other = a(x), a(x), b(x)
    assert torch.equal(first, second)
    assert torch.equal(first, other)


def test_training_samples_fresh_relations():
    head = RelationModuleMultiScale(img_feature_dim=16, num_frames=8, num_classes=4).train()
    feats = torch.randn(3, 8, 16)
    outs = [head(feats) for _ in range(6)]
    assert any(not torch.allclose(outs[0], o) for o in outs[1:])
    for i in range(1, len(head.scales)):
        drawn = head.sample_relations(i)
        assert drawn.shape == (3, head.scales[i])
        assert all(r in head.relations(i).tolist() for r in drawn.tolist())
    # A generator of one's own makes training draws reproducible.
    head.generator = torch.Generator().manual_seed(7)
    first = head(feats)
    head.generator = torch.Generator().manual_seed(7)
    assert torch.equal(first, head(feats))
    head.eval()
    assert torch.equal(head(feats), head(feats))


def test_partial_bn_freezes_all_but_first():
    model = _trn(num_segments=2).train()
    bns = _bn_layers(model.base_model)
    assert bns[0] is model.base_model.conv1_7x7_s2_bn
    assert bns[0].training and bns[0].weight.requires_grad
    assert all(not bn.training and not bn.weight.requires_grad and not bn.bias.requires_grad
               for bn in bns[1:])
    before = [bn.running_mean.clone() for bn in bns]
    model(_video(n=2, t=2))
    assert not torch.equal(bns[0].running_mean, before[0])
    assert all(torch.equal(bn.running_mean, b) for bn, b in zip(bns[1:], before[1:]))
    model.eval().train()  # eval/train round trips keep the frozen layers frozen
    assert all(not bn.training for bn in bns[1:]) and bns[0].training

    full = _trn(num_segments=2, partial_bn=False).train()
    assert all(bn.training and bn.weight.requires_grad for bn in _bn_layers(full))


@pytest.mark.parametrize("partial_bn", [True, False])
def test_optim_policies_cover_trainable_params_once(partial_bn):
    model = _trn(partial_bn=partial_bn)
    groups = model.optim_param_groups(lr=0.01, weight_decay=5e-4)
    by_name = {g["name"]: g for g in groups}
    ids = [id(p) for g in groups for p in g["params"]]
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert len(ids) == len(set(ids)) and set(ids) == trainable
    conv1 = model.base_model.conv1_7x7_s2
    (first_w,), (first_b,) = by_name["first_conv_weight"]["params"], by_name["first_conv_bias"]["params"]
    assert first_w is conv1.weight and first_b is conv1.bias
    expected = {"first_conv_weight": (0.01, 5e-4), "first_conv_bias": (0.02, 0.0),
                "normal_weight": (0.01, 5e-4), "normal_bias": (0.02, 0.0), "bn": (0.01, 0.0)}
    assert {name: (g["lr"], g["weight_decay"]) for name, g in by_name.items()} == expected
    assert id(model.new_fc.weight) in {id(p) for p in by_name["normal_weight"]["params"]}
    n_bn = len(_bn_layers(model))
    assert len(by_name["bn"]["params"]) == (2 if partial_bn else 2 * n_bn)
    torch.optim.SGD(groups, lr=0.01, momentum=0.9)  # accepted as is


def test_trn_pytorch_checkpoint_loads(tmp_path):
    src = _trn(num_segments=4).eval()
    with torch.no_grad():
        for p in src.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    # TRN-pytorch saves {epoch, arch, state_dict, best_prec1} of a DataParallel model, written
    # by PyTorch < 0.4.1 (no num_batches_tracked).
    ckpt = {"epoch": 12, "arch": "BNInception", "best_prec1": 81.5,
            "state_dict": {"module." + k: v for k, v in src.state_dict().items()
                           if not k.endswith("num_batches_tracked")}}
    path = tmp_path / "TRN_jester_RGB_BNInception_TRNmultiscale_segment4_best.pth.tar"
    torch.save(ckpt, path)
    dst = _trn(num_segments=4).eval()
    load_weights(dst, path)
    x = _video(t=4)
    with torch.no_grad():
        assert torch.equal(dst(x), src(x))

    bad = dict(ckpt["state_dict"])
    del bad["module.consensus.fc_fusion_scales.1.3.weight"]
    bad["module.consensus.fc_fusion_scales.9.1.weight"] = torch.zeros(1)
    with pytest.raises(WeightsError, match=r"consensus\.fc_fusion_scales\.1\.3\.weight") as info:
        load_weights(_trn(num_segments=4), {"state_dict": bad})
    assert "consensus.fc_fusion_scales.9.1.weight" in str(info.value)
    with pytest.raises(WeightsError, match="shape"):
        load_weights(create_model("trn_bninception", num_classes=7, num_segments=4), path)


def test_trn_pytorch_tsn_without_dropout_loads():
    # TRN-pytorch with dropout=0 and avg consensus puts the classifier in base_model.fc.
    src = _trn("avg", num_segments=2)
    state = {"module." + k.replace("new_fc.", "base_model.fc."): v
             for k, v in src.state_dict().items()}
    dst = _trn("avg", num_segments=2, dropout=0.0)
    load_weights(dst, {"state_dict": state})
    assert torch.equal(dst.new_fc.weight, src.new_fc.weight)


def test_export_dynamic_batch():
    from torch.export import Dim, export

    model = _trn(num_segments=4).eval()
    ep = export(model, (_video(n=2, t=4),), dynamic_shapes=({0: Dim("batch", min=1, max=64)},))
    for graph in (ep.graph, ep.run_decompositions().graph):
        calls = [n for n in graph.nodes if n.op == "call_function"]
        pools = [n for n in calls if "max_pool" in str(n.target)]
        assert pools  # the checks below look at something
        for node in pools:
            ceil = node.kwargs.get("ceil_mode", node.args[5] if len(node.args) > 5 else False)
            assert not ceil, node.format_node()
        names = [str(n.target) for n in calls]
        assert not [n for n in names if any(r in n for r in RNG_OPS)], names
    runner = ep.module()
    for n in (1, 3):
        x = _video(n=n, t=4)
        with torch.no_grad():
            torch.testing.assert_close(runner(x), model(x), rtol=0, atol=1e-6)


def test_channels_last_matches_contiguous():
    model = _trn(num_segments=4).eval()
    with torch.no_grad():
        model.new_fc.weight.normal_(0.0, 0.05)  # larger logits than the 0.001 init: a real check
    cl = _trn(num_segments=4).eval()
    cl.load_state_dict(model.state_dict())
    cl = cl.to(memory_format=torch.channels_last)
    assert cl.base_model.conv1_7x7_s2.weight.is_contiguous(memory_format=torch.channels_last)
    x = _video(t=4)
    with torch.no_grad():
        torch.testing.assert_close(cl(x), model(x), rtol=0, atol=1e-4)
        frames = x.flatten(0, 1)
        torch.testing.assert_close(
            cl.base_model(frames.contiguous(memory_format=torch.channels_last)),
            model.base_model(frames), rtol=0, atol=1e-4)
