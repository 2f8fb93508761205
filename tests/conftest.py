"""Shared fixtures and the GPU/TensorRT/DALI markers (skipped with the reason when unavailable).

Two layers: ``tests/unit/`` (library calls on tiny tensors, ``make test-unit``) and ``tests/e2e/``
(through the CLI, auto-marked ``e2e``; its CLI-trained session fixtures live in
``tests/e2e/conftest.py``). This folder is on ``sys.path`` for both, so helpers such as
``_helpers.py`` and ``_media.py`` stay here and import as top-level modules. Test file names
must be unique across both layers (no ``__init__.py``: pytest imports them by base name).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch


def _has(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _trt_importable() -> tuple[bool, str]:
    if not _has("torch_tensorrt"):
        return False, "torch_tensorrt is not installed (it cannot be installed on CPU-only machines)"
    try:
        import torch_tensorrt  # noqa: F401
    except Exception as exc:  # its import touches CUDA
        return False, f"torch_tensorrt does not import: {type(exc).__name__}: {exc}"
    return True, ""


_E2E_DIR = Path(__file__).parent / "e2e"


def pytest_collection_modifyitems(config, items):
    cuda = torch.cuda.is_available()
    for item in items:
        if _E2E_DIR in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.e2e)
        if "gpu" in item.keywords and not cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU: torch.cuda.is_available() is False"))
        if "trt" in item.keywords:
            ok, why = _trt_importable()
            if not cuda:
                item.add_marker(pytest.mark.skip(reason="TensorRT needs a CUDA GPU: none available"))
            elif not ok:
                item.add_marker(pytest.mark.skip(reason=why))
        if "dali" in item.keywords and not _has("nvidia.dali"):
            item.add_marker(pytest.mark.skip(reason="nvidia-dali is not installed (pip install .[dali])"))


@pytest.fixture(autouse=True)
def _seed_and_threads():
    torch.manual_seed(0)
    yield


@pytest.fixture(scope="session")
def synth_frames(tmp_path_factory):
    """A 4-class synthetic Jester-layout set of 64 px frame folders (order-dependent classes)."""
    from fastvid.data.synth import synth_dataset

    root = tmp_path_factory.mktemp("synth_frames")
    synth_dataset(root, kind="frames", classes=4, train=64, val=24, frames=12, size=(64, 64), seed=1)
    return root
