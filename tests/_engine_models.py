"""The real models at engine-test size (64 px, 4 frames, 5 classes) and their input statistics,
for the engine tests of both layers (``trn`` / ``tpn`` are module-scoped fixtures: import them)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

SIZE, FRAMES, CLASSES, MAX_BATCH = 64, 4, 5, 4
BGR_MEAN, BGR_STD = [104.0, 117.0, 128.0], [1.0, 1.0, 1.0]
RGB_MEAN, RGB_STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


def create_small(name: str, **kwargs) -> nn.Module:
    from fastvid.models import create_model, list_models

    if name not in list_models():
        pytest.skip(f"model {name} is not registered yet")
    return create_model(name, num_classes=CLASSES, **kwargs).eval()


@pytest.fixture(scope="module")
def trn() -> nn.Module:
    torch.manual_seed(0)
    return create_small("trn_bninception", num_segments=FRAMES, consensus="trn_multiscale")


@pytest.fixture(scope="module")
def tpn() -> nn.Module:
    torch.manual_seed(0)
    return create_small("tpn_slowonly_r50")


def eager(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x)
