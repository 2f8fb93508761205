"""Data and model shared by test_train's sharded-eval test and its torchrun worker."""
from __future__ import annotations

import torch
import torch.nn as nn

NUM_CLASSES = 3


class TinyVideoNet(nn.Module):
    """(N, T, C, H, W) -> mean over T, H, W -> BatchNorm1d -> Linear: BN buffers matter in eval."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm1d(3)
        self.fc = nn.Linear(3, NUM_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.bn(x.mean(dim=(1, 3, 4))))


def make_model(bn_shift: float) -> TinyVideoNet:
    torch.manual_seed(0)
    model = TinyVideoNet()
    with torch.no_grad():
        model.bn.running_mean.fill_(bn_shift)
        model.bn.running_var.fill_(1.0 + bn_shift)
    return model.eval()


def make_data(num_videos: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    videos = torch.randn(num_videos, 2, 3, 4, 4, generator=gen) * 2
    labels = torch.arange(num_videos) % NUM_CLASSES
    if num_videos > 3:
        labels[3] = -1  # a bad sample keeps its row
    return videos, labels
