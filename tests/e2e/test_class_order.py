"""Foreign checkpoints name the right classes: their classifier rows follow the order their code
used (TRN-pytorch: sorted names; mmaction2: its label map), mapped onto fastvid's categories.txt
by name.

The peers' files are built here in their key layouts from a fastvid model whose classifier favours
one class by a wide margin, with the class rows permuted as the peer's order permutes them; a
prediction through the CLI on a dataset fastvid prepared must name that class.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from _helpers import REPO, invoke, invoke_ok
from _official import JESTER_CLASSES, KINETICS_CLASSES, jester_replica, kinetics_replica
from fastvid.checkpoint import load_model_for_inference
from fastvid.config import load_config
from fastvid.data.prepare import prepare_jester, prepare_videos, read_dataset_info
from fastvid.errors import CheckpointError
from fastvid.models import create_model_from_config
from fastvid.models.class_order import (class_modules, class_permutation,
                                        mmaction2_kinetics_order, source_classes)

TRN_CONFIG = str(REPO / "configs" / "trn_bninception_jester.yaml")
TRN_SETS = ["model.num_segments=4", "data.image_size=64", "data.scale_size=64"]
TPN_CONFIG = str(REPO / "configs" / "tpn_slowonly_r50_k400.yaml")
TPN_SETS = ["data.clip_len=4", "data.frame_interval=2", "model.num_segments=4",
            "data.image_size=64", "data.scale_size=64"]


def _cli_sets(sets: list[str]) -> list[str]:
    return [arg for s in sets for arg in ("--set", s)]


def _favouring(cfg, classes: list[str], favourite: str) -> torch.nn.Module:
    """The configured model (random weights) whose every class-indexed row favours ``favourite``."""
    model = create_model_from_config(cfg.model, len(classes)).eval()
    with torch.no_grad():
        for _, linear in class_modules(model, cfg.spec, len(classes)):
            linear.bias[classes.index(favourite)] += 1000.0
    return model


def _peer_state(model: torch.nn.Module, cfg, ours: list[str], theirs: list[str]) -> dict:
    """``model``'s state dict with every class row reordered to the peer's class order."""
    rows = torch.tensor([ours.index(name) for name in theirs])
    names = {f"{n}.{p}" for n, _ in class_modules(model, cfg.spec, len(ours)) for p in ("weight", "bias")}
    return {k: (v.index_select(0, rows) if k in names else v) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def jester(tmp_path_factory) -> Path:
    root = jester_replica(tmp_path_factory.mktemp("cls") / "jester", per_class=1, frames=6)
    prepare_jester(root, progress=False)
    return root


@pytest.fixture(scope="module")
def trn_pytorch_jester(jester, tmp_path_factory) -> tuple[Path, torch.nn.Module]:
    """A TRN-pytorch ``main.py`` checkpoint ({epoch, arch, state_dict of a DataParallel TSN,
    best_prec1}) whose rows are in sorted-name order, favouring 'Swiping Left' (row 1 there,
    class 0 in jester-v1-labels.csv)."""
    cfg = load_config(TRN_CONFIG, TRN_SETS)
    model = _favouring(cfg, JESTER_CLASSES, "Swiping Left")
    state = _peer_state(model, cfg, JESTER_CLASSES, sorted(JESTER_CLASSES))
    path = tmp_path_factory.mktemp("trn") / "TRN_jester_RGB_BNInception_TRNmultiscale_segment4_best.pth.tar"
    torch.save({"epoch": 30, "arch": "BNInception", "best_prec1": 94.8,
                "state_dict": {f"module.{k}": v for k, v in state.items()}}, path)
    return path, model


def test_trn_pytorch_jester_checkpoint_names_the_right_gesture(jester, trn_pytorch_jester, tmp_path,
                                                                caplog):
    ckpt, reference = trn_pytorch_jester
    cats = jester / "categories.txt"
    assert cats.read_text().splitlines() == JESTER_CLASSES  # the label file's order, not sorted
    folder = jester / "20bn-jester-v1" / "10001"
    args = ["predict", str(folder), "-c", TRN_CONFIG, *_cli_sets(TRN_SETS), "--checkpoint",
            str(ckpt), "--device", "cpu", "--labels", str(cats), "--topk", "1"]
    out = tmp_path / "p.json"
    with caplog.at_level(logging.WARNING):
        invoke_ok(args + ["--out", str(out)])
    assert json.loads(out.read_text())["windows"][0]["topk"][0]["label"] == "Swiping Left"
    assert any("TRN-pytorch's order" in r.getMessage() and "consensus.fc_fusion_scales.0.3"
               in r.getMessage() for r in caplog.records)
    # Taken as it is, row 1 would be read as categories.txt's class 1: the wrong gesture.
    invoke_ok(args + ["--class-order", "as-is", "--out", str(out)])
    assert json.loads(out.read_text())["windows"][0]["topk"][0]["label"] == "Swiping Right"

    # Every relation scale's classifier was reordered: the model equals the reference.
    cfg = load_config(TRN_CONFIG, TRN_SETS)
    model, meta = load_model_for_inference(cfg, ckpt, target_classes=JESTER_CLASSES,
                                           dataset_info=read_dataset_info(jester))
    assert meta["classes"] == JESTER_CLASSES and meta["origin"] == "trn-pytorch"
    x = torch.randn(2, 4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(model(x), reference(x))


def test_eval_maps_a_trn_pytorch_checkpoint_and_class_order_options(jester, trn_pytorch_jester,
                                                                     tmp_path):
    ckpt, _ = trn_pytorch_jester
    base = ["eval", "-c", TRN_CONFIG, *_cli_sets(TRN_SETS), "--data-root", str(jester),
            "--checkpoint", str(ckpt), "--device", "cpu", "--loader", "torch",
            "--set", "train.workers=0"]
    out = tmp_path / "e.json"
    invoke_ok(base + ["--out", str(out)])
    # Every video scored 'Swiping Left': exactly that class's val video is right.
    assert json.loads(out.read_text())["top1"] == pytest.approx(1 / 4)
    order = tmp_path / "category.txt"  # TRN-pytorch's category.txt, sorted
    order.write_text("\n".join(sorted(JESTER_CLASSES)) + "\n")
    invoke_ok(base + ["--class-order", f"file:{order}", "--out", str(out)])
    assert json.loads(out.read_text())["top1"] == pytest.approx(1 / 4)
    order.write_text("Swiping Left\nSwiping Right\nThumb Down\nThumb Up\n")
    res = invoke(base + ["--class-order", f"file:{order}"])
    assert res.exit_code == 1 and "cannot map its classes" in res.output
    assert "'Doing other things'" in res.output and "'Thumb Down'" in res.output
    assert "Traceback" not in res.output
    res = invoke(base + ["--class-order", "alphabetical"])
    assert res.exit_code == 2 and "expected auto, as-is, sorted or file:PATH" in res.output


def test_a_fastvid_checkpoint_in_another_order_is_mapped(jester, tmp_path):
    cfg = load_config(TRN_CONFIG, TRN_SETS)
    theirs = list(reversed(JESTER_CLASSES))
    model = _favouring(cfg, JESTER_CLASSES, "Thumb Up")
    path = tmp_path / "other.pt"
    torch.save({"model": _peer_state(model, cfg, JESTER_CLASSES, theirs), "classes": theirs,
                "config": cfg.to_dict(), "fastvid_version": "0.1.0"}, path)
    mapped, meta = load_model_for_inference(cfg, path, target_classes=JESTER_CLASSES)
    assert meta["classes"] == JESTER_CLASSES and meta["origin"] == "fastvid"
    x = torch.randn(1, 4, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(mapped(x), model(x))


def test_source_classes_per_origin():
    names = ["b c", "b's", "a"]
    assert source_classes("auto", "trn-pytorch", {}, names, {}, "x")[0] == ["a", "b c", "b's"]
    # mmaction2 Kinetics: sorted after ' ' -> '_' ("b_c" > "b's"), from dataset.json or 400 classes
    assert source_classes("auto", "mmaction2", {}, names, {"dataset": "kinetics"}, "x")[0] == \
        ["a", "b's", "b c"]
    assert mmaction2_kinetics_order(KINETICS_CLASSES)[:2] == ["jumping-rope", "jumping jacks"]
    # mmaction2 Jester / Sth: the label file's order, which categories.txt keeps
    assert source_classes("auto", "mmaction2", {}, names,
                          {"dataset": "jester", "class_order": "label-file"}, "x")[0] is None
    assert source_classes("auto", "fastvid", {"classes": names}, None, {}, "x")[0] == names
    assert source_classes("as-is", "trn-pytorch", {}, names, {}, "x")[0] is None
    assert class_permutation(["a", "b"], ["a", "b"], "x", "y") is None
    assert class_permutation(["b", "a", "c"], ["a", "b", "c"], "x", "y") == [1, 0, 2]
    with pytest.raises(CheckpointError, match="3 names vs 2 classes"):
        class_permutation(["a", "b", "c"], ["a", "b"], "x", "y")


@pytest.mark.slow
def test_mmaction2_kinetics_checkpoint_names_the_right_action(tmp_path, caplog):
    """An mmaction2 TPN-SlowOnly file ({meta, state_dict} with data_preprocessor buffers) whose
    rows follow mmaction2's Kinetics label map; predicted on an H.264 clip of a Kinetics download
    prepared by fastvid, it names the class it favours."""
    root = kinetics_replica(tmp_path / "k400", per_class=1, frames=10)
    prepare_videos(root)
    cats = (root / "categories.txt").read_text().splitlines()
    assert cats == sorted(KINETICS_CLASSES)
    cfg = load_config(TPN_CONFIG, TPN_SETS)
    model = _favouring(cfg, cats, "jumping jacks")
    state = _peer_state(model, cfg, cats, mmaction2_kinetics_order(cats))
    state["data_preprocessor.mean"] = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1, 1)
    state["data_preprocessor.std"] = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1, 1)
    ckpt = tmp_path / "tpn-slowonly_r50_kinetics400-rgb.pth"
    torch.save({"meta": {"mmaction_version": "1.2.0", "epoch": 150}, "state_dict": state}, ckpt)
    video = next((root / "val").iterdir())
    out = tmp_path / "p.json"
    args = ["predict", str(video), "-c", TPN_CONFIG, *_cli_sets(TPN_SETS), "--checkpoint",
            str(ckpt), "--device", "cpu", "--labels", str(root / "categories.txt"), "--topk", "1",
            "--clips", "1", "--crops", "1"]
    with caplog.at_level(logging.WARNING):
        invoke_ok(args + ["--out", str(out)])
    assert json.loads(out.read_text())["windows"][0]["topk"][0]["label"] == "jumping jacks"
    said = [r.getMessage() for r in caplog.records if "another order" in r.getMessage()]
    assert said and "mmaction2's Kinetics label map" in said[0] and "neck.aux_head.fc" in said[0]
    invoke_ok(args + ["--class-order", "as-is", "--out", str(out)])
    assert json.loads(out.read_text())["windows"][0]["topk"][0]["label"] == "jumping-rope"
