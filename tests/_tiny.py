"""Tiny stand-ins for the real models, in the batch contract's two layouts: for tests of engines,
runners, registries and FLOP counting, where the architecture is not what is tested."""
from __future__ import annotations

import torch
import torch.nn as nn


class Tiny2D(nn.Module):
    """``(N, T, 3, H, W)``: Conv2d(3 -> width, 3x3, pad 1) [+ BN] + ReLU on every frame, mean over
    space and time, Linear(width -> classes)."""

    input_layout = "NTCHW"

    def __init__(self, width: int = 8, classes: int = 3, bn: bool = True) -> None:
        super().__init__()
        self.num_classes = classes
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.bn = nn.BatchNorm2d(width) if bn else nn.Identity()
        self.fc = nn.Linear(width, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t = x.shape[:2]
        y = torch.relu(self.bn(self.conv(x.flatten(0, 1)))).mean((2, 3))
        return self.fc(y.view(n, t, -1).mean(1))


class Tiny3D(nn.Module):
    """``(N, 3, T, H, W)``: Conv3d(3 -> 8, 3x3x3, pad 1) + ReLU, mean, Linear(8 -> classes)."""

    input_layout = "NCTHW"

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.num_classes = classes
        self.conv = nn.Conv3d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).mean((2, 3, 4)))
