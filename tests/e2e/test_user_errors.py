"""A newcomer's bad inputs (issue 15): each gets one clear line and exit code, or works right,
and nothing already on disk is lost. Engine files, engine/config mismatches, binary configs,
out-of-range options, unsafe or garbage checkpoints, class counts of foreign state dicts."""
from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from _helpers import CONFIG, REPO, SMALL, invoke, invoke_ok

TPN_TSM = str(REPO / "configs" / "tpn_tsm_r50_sthv1.yaml")
# TPN-TSM on the same 4 x 3 x 64 x 64 samples as SMALL's TRN, reading the Jester-layout set.
TSM_SMALL = ["--set", "model.num_segments=4", "--set", "data.image_size=64", "--set", "data.scale_size=64",
             "--set", "data.frames_dir=20bn-jester-v1", "--set", "train.workers=0"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _one_line_error(res, exit_code: int = 1) -> str:
    """The error line of a failed command; asserts the exit code and that no traceback leaked."""
    assert res.exit_code == exit_code, res.output
    assert "Traceback" not in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit), repr(res.exception)
    errors = [line for line in res.output.splitlines() if line.startswith("Error:")]
    assert len(errors) == 1, res.output
    return errors[0]


def _trn(num_classes: int = 4, consensus: str = "trn_multiscale", dropout: float = 0.2):
    from fastvid.models import create_model

    torch.manual_seed(0)
    return create_model("trn_bninception", num_classes=num_classes, num_segments=4,
                        consensus=consensus, dropout=dropout).eval()


@pytest.fixture(scope="module")
def trn_pytorch_state(tmp_path_factory) -> Path:
    """A bare state dict in TRN-pytorch's layout (``module.`` prefix, no config, no classes)."""
    path = tmp_path_factory.mktemp("trn_pytorch") / "TRN_synth_RGB_BNInception_TRNmultiscale_segment4.pth"
    torch.save({f"module.{k}": v for k, v in _trn().state_dict().items()}, path)
    return path


@pytest.fixture(scope="module")
def trn_engine(trn_pytorch_state, tmp_path_factory) -> Path:
    """ONNX engine built through the CLI from ``trn_pytorch_state`` with the demo config (~15 s)."""
    out = tmp_path_factory.mktemp("trn_engine") / "trn"
    output = invoke_ok(["build-engine", "-c", CONFIG, *SMALL, "--checkpoint", str(trn_pytorch_state),
                        "--backend", "onnx", "--max-batch", "4", "--device", "cpu", "--out", str(out)])
    assert "top-1 agreement 100.0%" in output
    return out.with_name("trn.onnx")


# ---------------------------------------------------------------- class counts of foreign layouts
def test_bare_trn_pytorch_state_dict_builds_an_engine_with_its_class_count(trn_engine):
    # checkpoint._infer_num_classes read new_fc (TRN's 256-wide feature projection) as the
    # class count, and the build failed with 14 shape mismatches in the relation heads.
    meta = json.loads(Path(f"{trn_engine}.json").read_text())
    assert meta["num_classes"] == 4 and meta["model_name"] == "trn_bninception"


@pytest.mark.parametrize("layout", ["trn_multiscale", "trn", "avg", "avg_dropout0", "fastvid", "trn_pytorch_file"])
def test_class_count_inferred_for_trn_and_tsn_layouts(layout):
    from fastvid.checkpoint import infer_num_classes
    from fastvid.models import get_model_spec

    consensus = {"avg_dropout0": "avg", "fastvid": "trn_multiscale", "trn_pytorch_file": "trn_multiscale"}
    model = _trn(num_classes=7, consensus=consensus.get(layout, layout),
                 dropout=0.0 if layout == "avg_dropout0" else 0.5)
    state = model.state_dict()
    if layout == "avg_dropout0":  # TRN-pytorch replaces the backbone's fc instead of adding new_fc
        state = {k.replace("new_fc.", "base_model.fc."): v for k, v in state.items()}
    if layout != "fastvid":
        state = {f"module.{k}": v for k, v in state.items()}
    if layout == "trn_pytorch_file":
        from fastvid.models import read_state_dict

        state = read_state_dict({"epoch": 3, "arch": "BNInception", "state_dict": state})
    assert infer_num_classes(get_model_spec("trn_bninception"), state, "x.pth") == 7


def test_class_count_inferred_for_mmaction2_tpn_and_tsn():
    from fastvid.checkpoint import infer_num_classes
    from fastvid.models import create_model, get_model_spec

    spec = get_model_spec("tpn_slowonly_r50")
    tpn = create_model("tpn_slowonly_r50", num_classes=9).state_dict()
    assert infer_num_classes(spec, tpn, "tpn.pth") == 9
    tsn = {"backbone.conv1.conv.weight": torch.zeros(64, 3, 7, 7), "cls_head.fc_cls.weight": torch.zeros(174, 2048),
           "cls_head.fc_cls.bias": torch.zeros(174)}  # mmaction2 TSN-R50
    assert infer_num_classes(spec, tsn, "tsn.pth") == 174
    from fastvid.checkpoint import CheckpointError

    with pytest.raises(CheckpointError, match="model.num_classes=N"):
        infer_num_classes(spec, {"conv.weight": torch.zeros(3, 3)}, "plain.pth")


# ---------------------------------------------------------------- engine files
def _fake_engine(trn_engine: Path, dest: Path, backend: str, payload: bytes) -> Path:
    """A damaged artifact next to a valid description (as a half-copied engine folder has)."""
    meta = json.loads(Path(f"{trn_engine}.json").read_text())
    from engines.backends import engine_backend

    artifact = dest / f"trn{engine_backend(backend).extension}"
    meta.update(backend=backend, artifact=artifact.name)
    Path(f"{artifact}.json").write_text(json.dumps(meta))
    artifact.write_bytes(payload)
    return artifact


@pytest.mark.parametrize("backend,kind", [("aoti", "garbage"), ("aoti", "zip"), ("onnx", "truncated")])
def test_damaged_engine_file_is_one_line(synth_frames, trn_engine, tmp_path, backend, kind, caplog):
    payload = {"garbage": os.urandom(3000), "truncated": trn_engine.read_bytes()[:5000]}.get(kind)
    if kind == "zip":  # a zip archive that is not an AOTInductor package (e.g. a checkpoint)
        torch.save({"w": torch.zeros(3)}, tmp_path / "other.pt")
        payload = (tmp_path / "other.pt").read_bytes()
    artifact = _fake_engine(trn_engine, tmp_path, backend, payload)
    caplog.set_level(logging.WARNING)
    res = invoke(["eval", "-c", CONFIG, *SMALL, "--data-root", str(synth_frames), "--engine", str(artifact),
                  "--loader", "torch", "--device", "cpu"])
    line = _one_line_error(res)
    assert str(artifact) in line and "rebuild" in line and "fastvid build-engine" in line
    assert "outdated pt2" not in caplog.text  # torch's advice for a file it could not read


# ---------------------------------------------------------------- engine vs config / checkpoint
def test_trn_engine_with_the_tpn_tsm_config_is_refused_naming_the_fields(synth_frames, trn_engine):
    # Same input shape: this ran and printed a meaningless Top1 (25% vs 53% with the right config).
    res = invoke(["eval", "-c", TPN_TSM, *TSM_SMALL, "--data-root", str(synth_frames), "--engine",
                  str(trn_engine), "--loader", "torch", "--device", "cpu"])
    line = _one_line_error(res)
    assert str(trn_engine) in line and "Top1" not in res.output
    for field in ("model_name: engine 'trn_bninception' vs config 'tpn_tsm_r50'", "color: engine 'BGR' vs config 'RGB'",
                  "mean: engine (104,117,128)", "std: engine (1,1,1)"):
        assert field in line
    assert "sample_shape" not in line  # the shapes agree; the check is not about them
    # With the config it was built with, it evaluates.
    out = invoke_ok(["eval", "-c", CONFIG, *SMALL, "--data-root", str(synth_frames), "--engine", str(trn_engine),
                     "--loader", "torch", "--device", "cpu"])
    assert "Top1:" in out


@pytest.mark.parametrize("override,field", [
    ("data.color=RGB", "color: engine 'BGR' vs config 'RGB'"),
    ("data.mean=[0,0,0]", "mean: engine (104,117,128) vs config (0,0,0)"),
    ("model.num_segments=8", "sample_shape: engine (4,3,64,64) vs config (8,3,64,64)"),
])
def test_engine_normalisation_and_shape_checked_against_the_config(synth_frames, trn_engine, override, field):
    res = invoke(["eval", "-c", CONFIG, *SMALL, "--set", override, "--data-root", str(synth_frames),
                  "--engine", str(trn_engine), "--loader", "torch", "--device", "cpu"])
    assert field in _one_line_error(res)


def test_engine_classes_checked_against_categories_and_checkpoint(synth_frames, trn_engine, tmp_path):
    meta_file = Path(f"{trn_engine}.json")
    named = tmp_path / "named.onnx"
    named.write_bytes(trn_engine.read_bytes())
    meta = json.loads(meta_file.read_text())
    cats = (synth_frames / "categories.txt").read_text().split()
    Path(f"{named}.json").write_text(json.dumps(dict(meta, artifact=named.name, classes=cats[::-1])))
    res = invoke(["eval", "-c", CONFIG, *SMALL, "--data-root", str(synth_frames), "--engine", str(named),
                  "--loader", "torch", "--device", "cpu"])
    assert f"classes: engine class 0 is {cats[-1]!r}, {synth_frames / 'categories.txt'} says {cats[0]!r}" in \
        _one_line_error(res)
    # bench: a prebuilt engine must be the checkpoint's model (else its ratio to eager is meaningless)
    ckpt = tmp_path / "six.pt"
    torch.save({f"module.{k}": v for k, v in _trn(num_classes=6).state_dict().items()}, ckpt)
    res = invoke(["bench", "-c", CONFIG, *SMALL, "--checkpoint", str(ckpt), "--engine", str(trn_engine),
                  "--backends", "eager", "--iters", "1", "--warmup", "0", "--device", "cpu",
                  "--out", str(tmp_path / "rep")])
    assert "num_classes: engine 4 vs the checkpoint 6" in _one_line_error(res)
    assert not (tmp_path / "rep" / "results.json").exists()


# ---------------------------------------------------------------- configs, options, checkpoints
def test_binary_config_file_is_one_line(synth_frames, tmp_path):
    binary = tmp_path / "config.yaml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n" + os.urandom(200))
    res = invoke(["eval", "-c", str(binary), "--data-root", str(synth_frames), "--checkpoint", "x.pt"])
    line = _one_line_error(res)
    assert str(binary) in line and "not a text file" in line and "YAML config" in line


def test_binary_categories_file_is_one_line(tmp_path):
    from fastvid.data.lists import ListError, read_categories

    (tmp_path / "categories.txt").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ListError, match="categories.txt: not a text file"):
        read_categories(tmp_path / "categories.txt")


@pytest.mark.parametrize("option,value", [("--batch-size", "-2"), ("--batch-size", "0"), ("--clips", "0")])
def test_eval_refuses_non_positive_counts(option, value, tmp_path):
    # -2 reached the DataLoader (39-line ValueError); 0 silently meant "the default".
    res = invoke(["eval", "-c", CONFIG, "--data-root", str(tmp_path), "--checkpoint", "x.pt", option, value])
    assert res.exit_code == 2 and f"Invalid value for '{option}'" in res.output
    assert "Traceback" not in res.output


def test_train_batch_size_zero_names_the_option(tmp_path):
    res = invoke(["train", "-c", CONFIG, "--data-root", str(tmp_path), "--work-dir", str(tmp_path / "w"),
                  "--batch-size", "0"])
    assert res.exit_code == 2 and "Invalid value for '--batch-size'" in res.output and "--set" not in res.output


def test_predict_topk_zero_is_refused(tmp_path):
    res = invoke(["predict", str(tmp_path), "-c", CONFIG, "--checkpoint", "x.pt", "--topk", "0"])
    assert res.exit_code == 2 and "Invalid value for '--topk'" in res.output


def test_eval_help_documents_amp_dtype_without_rst():
    out = invoke_ok(["eval", "--help"])
    assert "``" not in out
    amp = out[out.index("--amp-dtype"):].split("\n  -")[0]
    assert "Autocast dtype" in amp


@pytest.mark.parametrize("kind", ["garbage", "pickled_object"])
def test_garbage_or_unsafe_checkpoint_gets_no_unsafe_advice(synth_frames, tmp_path, kind):
    bad = tmp_path / "model.pt"
    if kind == "garbage":
        bad.write_bytes(os.urandom(4000))
    else:  # a pickle naming a global: torch suggests weights_only=False, which would execute it
        import numpy as np

        torch.save({"state_dict": {}, "best_prec1": np.float64(0.5)}, bad)
    before = _digest(bad)
    res = invoke(["eval", "-c", CONFIG, *SMALL, "--data-root", str(synth_frames), "--checkpoint", str(bad),
                  "--loader", "torch", "--device", "cpu"])
    line = _one_line_error(res)
    assert str(bad) in line and "weights_only" not in line and "will likely succeed" not in res.output
    if kind == "garbage":
        assert "not a PyTorch file, or truncated" in line
    else:
        assert "holds Python objects besides tensors (numpy" in line and "trust" in line
    assert _digest(bad) == before


# ---------------------------------------------------------------- logs
@pytest.mark.skipif(torch.cuda.is_available(), reason="torch prints the message only without a GPU")
def test_no_cuda_runtime_warning_is_dropped_on_cpu(tmp_path):
    # A CUDA toolkit without a GPU made torch.utils.cpp_extension print
    # "No CUDA runtime is found, using CUDA_HOME=..." in every engine command.
    env = dict(os.environ, CUDA_HOME=str(tmp_path), PYTHONPATH=str(REPO))
    code = ("import sys\nfrom click.testing import CliRunner\nfrom fastvid.cli import cli\n"
            "if sys.argv[1] == 'cli': CliRunner().invoke(cli, ['report', sys.argv[2]])\n"
            "import torch.utils.cpp_extension\n")
    runs = {how: subprocess.run([sys.executable, "-c", code, how, str(tmp_path)], env=env, capture_output=True,
                                text=True, timeout=120) for how in ("bare", "cli")}
    assert "No CUDA runtime is found" in runs["bare"].stderr  # the message this filter is about
    assert "No CUDA runtime is found" not in runs["cli"].stderr


@pytest.fixture(scope="module")
def tiny_frames(tmp_path_factory) -> Path:
    from fastvid.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("tiny_frames")
    synth_dataset(root, kind="frames", classes=4, train=8, val=4, frames=8, size=(64, 64), seed=3)
    return root


def test_train_logs_the_auto_loader_once(tiny_frames, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    invoke_ok(["train", "-c", CONFIG, *SMALL, "--data-root", str(tiny_frames), "--work-dir", str(tmp_path / "w"),
               "--device", "cpu", "--epochs", "1", "--batch-size", "4", "--max-steps-per-epoch", "1",
               "--no-progress"])
    assert sum("loader auto ->" in r.getMessage() for r in caplog.records) == 1


def test_predict_does_not_log_a_loader_it_does_not_use(tiny_frames, trn_pytorch_state, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    folder = next((tiny_frames / "20bn-jester-v1").iterdir())
    invoke_ok(["predict", str(folder), "-c", CONFIG, *SMALL, "--checkpoint", str(trn_pytorch_state),
               "--device", "cpu", "--topk", "2"])
    assert not any("dali-cpu" in r.getMessage() for r in caplog.records)
