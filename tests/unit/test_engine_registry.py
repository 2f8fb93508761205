"""Engine registry entries carry the backend behaviour: device_bound, packages, help text."""
from __future__ import annotations

import ast
import json
import re
from pathlib import Path

import pytest
import torch

import engines
from engines.backends import EngineBackendEntry, backend_help, engine_backends, precision_help
from fastvid.errors import BackendUnavailable
from fastvid.precision import PRECISIONS, precision_unusable, usable_precisions

REPO = Path(__file__).resolve().parents[2]
ENTRIES = engine_backends()
CPU = torch.device("cpu")


def _setup_extras() -> dict[str, list[str]]:
    """setup.py's EXTRAS literal, read without running setup()."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXTRAS" for t in node.targets):
            return ast.literal_eval(node.value)
    raise AssertionError("setup.py has no EXTRAS literal")


def _dist(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement, maxsplit=1)[0].lower()


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_packages_are_its_setup_extra(entry):
    extras = _setup_extras()
    if entry.packages:
        assert sorted(map(_dist, extras[entry.name])) == sorted(p.lower() for p in entry.packages)
    else:  # needs nothing beyond fastvid's own requirements (AOTInductor: torch)
        assert entry.name not in extras


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_entry_fields_are_well_formed(entry):
    assert entry.extension.startswith(".") and entry.description and "\n" not in entry.description
    assert isinstance(entry.device_bound, bool) and isinstance(entry.packages, tuple)
    assert set(entry.build_note) <= {"cpu", "cuda"} and set(entry.preference) <= {"cpu", "cuda"}
    entry.load()  # the module fulfils the four functions of EngineBackend


def test_help_text_is_generated_from_the_registry():
    text = backend_help()
    for entry in ENTRIES:
        assert f"{entry.name}: {entry.description}" in text
    # auto's order per device type follows the entries' preference
    for device in ("cuda", "cpu"):
        ranked = sorted((e for e in ENTRIES if device in e.preference), key=lambda e: e.preference[device])
        assert f"{device.upper()}: {', '.join(e.name for e in ranked)}" in text


def test_build_engine_help_shows_the_registry_text():
    from click.testing import CliRunner

    from fastvid.cli import cli

    out = "".join(CliRunner().invoke(cli, ["build-engine", "--help"]).output.split())
    for entry in ENTRIES:  # compared without white space: click wraps at hyphens too
        assert "".join(f"{entry.name}: {entry.description}".split()) in out


def test_a_new_entry_appears_in_the_help(monkeypatch):
    from engines import backends

    monkeypatch.setattr(backends, "_ENGINES", dict(backends._ENGINES))
    backends.register_engine(EngineBackendEntry("toy", ".toy", "engines.onnx_rt", "a toy backend (CPU)",
                                                preference={"cpu": 99}))
    text = backend_help()
    assert "toy: a toy backend (CPU)" in text and re.search(r"CPU: [^)]*, toy\)", text)


def test_precision_help_names_the_runtime_precision_backends_from_the_registry(monkeypatch):
    from engines import backends

    runtime = [e.name for e in ENTRIES if not e.cast_graph]
    assert all(name in precision_help() for name in runtime)
    monkeypatch.setattr(backends, "_ENGINES", dict(backends._ENGINES))
    backends.register_engine(EngineBackendEntry("toy", ".toy", "engines.onnx_rt", "a toy backend (CPU)",
                                                cast_graph=False))
    assert re.search(r"\(([^)]*, )?toy: the graph stays fp32", precision_help())


def _fake_engine(tmp_path: Path, backend: str, built_on: str) -> Path:
    entry = engines.backends.engine_backend(backend)
    artifact = tmp_path / f"model{entry.extension}"
    artifact.write_bytes(b"not really an engine")
    meta = {"format": 1, "artifact": artifact.name, "backend": backend, "precision": "fp32",
            "device": built_on, "input_shape": [1, 3, 8, 8], "batch_range": [1, 1], "opt_batch": 1,
            "input_layout": "NCTHW", "input_dtype": "float32", "num_classes": 2, "valid": True,
            "validation": {"passed": True}}
    meta.update(engines.core.artifact_digest(artifact, engines.core.artifact_companions(backend)))
    engines.meta_path(artifact).write_text(json.dumps(meta))
    return artifact


@pytest.mark.parametrize("entry", [e for e in ENTRIES if e.device_bound], ids=lambda e: e.name)
def test_device_bound_engine_is_refused_on_another_device_type(tmp_path, entry):
    if engines.available_backends(CPU)[entry.name]:
        pytest.skip(f"{entry.name} is unavailable here")
    artifact = _fake_engine(tmp_path, entry.name, built_on="cuda")
    with pytest.raises(engines.EngineError, match="built for cuda.*rebuild it with --device cpu"):
        engines.load(artifact, "cpu")


def test_a_portable_engine_is_not_refused_for_its_build_device(tmp_path, monkeypatch):
    """device_bound False: the device check does not apply (the load fails later, in the runner)."""
    entry = next(e for e in ENTRIES if not e.device_bound and not engines.available_backends(CPU)[e.name])
    artifact = _fake_engine(tmp_path, entry.name, built_on="cuda")
    with pytest.raises(engines.EngineError) as info:
        engines.load(artifact, "cpu")
    assert "built for cuda" not in str(info.value)


def test_usable_precisions_is_the_one_rule(monkeypatch):
    assert usable_precisions("cpu") == ("fp32", "bf16")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert usable_precisions("cuda") == ("fp32", "fp16", "bf16")
    # a pre-Ampere GPU only emulates bf16: the default (including_emulation=True) would say True
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert usable_precisions(torch.device("cuda", 0)) == ("fp32", "fp16")
    assert "no bf16 support" in precision_unusable("bf16", "cuda")
    assert "use --amp-dtype fp32 or bf16" in precision_unusable("fp16", "cpu", option="--amp-dtype")
    assert all(precision_unusable(p, "cpu") is None for p in usable_precisions("cpu"))
    assert set(usable_precisions("cpu")) <= set(PRECISIONS)


@pytest.mark.parametrize("entry", ENTRIES, ids=lambda e: e.name)
def test_backends_refuse_what_the_device_cannot_compute(entry):
    """The device's rule comes before every backend's own: fp16 on a CPU is refused by each."""
    if engines.available_backends(CPU)[entry.name]:
        pytest.skip(f"{entry.name} is unavailable here")
    with pytest.raises(BackendUnavailable, match="fp16"):
        engines.check_supported(entry.name, "fp16", CPU)
    assert engines.precision_reason(entry.name, "fp32", CPU) is None


def test_compile_and_aoti_share_the_compiler_check(monkeypatch):
    from engines import aoti
    from fastvid import cpu
    from fastvid.training import compile_unsupported

    monkeypatch.setattr(cpu, "cxx_compiler_missing", lambda: "g++-none")
    assert "g++-none not found" in compile_unsupported(CPU)
    monkeypatch.setattr(aoti, "cxx_compiler_missing", cpu.cxx_compiler_missing)
    assert "g++-none not found" in aoti.unavailable_reason(CPU)


def test_available_cores_is_the_process_share():
    from fastvid.cpu import available_cores

    assert 1 <= available_cores() <= (__import__("os").cpu_count() or 1)


def test_an_engine_file_is_hashed_once_per_process_until_it_changes(tmp_path, monkeypatch):
    from engines import core

    calls = []
    real = core._sha256
    monkeypatch.setattr(core, "_sha256", lambda p: calls.append(p) or real(p))
    monkeypatch.setattr(core, "_VERIFIED", set())
    artifact = tmp_path / "model.onnx"
    artifact.write_bytes(b"abc")
    meta = {"artifact_size": 3, "artifact_sha256": real(artifact)}
    for _ in range(3):  # eval --engine reads the description three times
        core.verify_artifact(artifact, meta)
    assert len(calls) == 1
    artifact.write_bytes(b"abd")  # same size, another file
    with pytest.raises(engines.EngineError, match="was changed after it was built"):
        core.verify_artifact(artifact, meta)
