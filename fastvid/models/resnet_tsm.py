"""TSM ResNet-50: a 2D ResNet whose blocks shift part of their channels along time.

Lin et al., "TSM: Temporal Shift Module for Efficient Video Understanding" (ICCV 2019), in the
"residual shift" placement that mmaction2's ``ResNetTSM(depth=50, shift_div=8,
shift_place='blockres')`` uses: before the first convolution of every bottleneck, 1/8 of the
channels take the next frame's values and another 1/8 the previous frame's (zeros at the clip's
ends). Names match mmaction2 checkpoints, e.g. ``layer1.0.conv1.conv.net.weight`` for the shifted
convolution.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from .resnet3d import ConvBNAct, StagedResNet, init_resnet_weights

__all__ = ["temporal_shift", "TemporalShift", "Bottleneck", "ResNetTSM"]


def temporal_shift(x: torch.Tensor, num_segments: int, shift_div: int = 8) -> torch.Tensor:
    """Shift channel groups of ``(N * num_segments, C, H, W)`` features along time.

    Channels ``[0, C/d)`` move one step back in time (frame ``t`` gets frame ``t + 1``), channels
    ``[C/d, 2C/d)`` one step forward, the rest stay; vacated positions are zero. Built from slices,
    ``pad`` and ``cat`` rather than in-place writes so that autograd, ``torch.export`` and
    TensorRT see a pure function of the input.
    """
    nt, c, h, w = x.shape
    fold = c // shift_div
    x = x.reshape(nt // num_segments, num_segments, c, h * w)
    # F.pad's tuple runs from the last dim: (hw, hw, channel, channel, time_front, time_back).
    from_next = F.pad(x[:, 1:, :fold], (0, 0, 0, 0, 0, 1))
    from_prev = F.pad(x[:, :-1, fold:2 * fold], (0, 0, 0, 0, 1, 0))
    out = torch.cat((from_next, from_prev, x[:, :, 2 * fold:]), dim=2)
    return out.reshape(nt, c, h, w)


class TemporalShift(nn.Module):
    """Apply :func:`temporal_shift` before ``net`` (kept as the child ``net`` for mmaction2 names)."""

    def __init__(self, net: nn.Module, num_segments: int, shift_div: int = 8) -> None:
        super().__init__()
        self.net = net
        self.num_segments = num_segments
        self.shift_div = shift_div

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(temporal_shift(x, self.num_segments, self.shift_div))


def conv2d_bn(in_ch: int, out_ch: int, kernel: int, stride: int = 1, padding: int = 0,
              act: bool = True) -> ConvBNAct:
    """A bias-free ``Conv2d`` + ``BatchNorm2d`` (+ ReLU)."""
    conv = nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding, bias=False)
    return ConvBNAct(conv, nn.BatchNorm2d(out_ch), act)


class Bottleneck(nn.Module):
    """2D ResNet bottleneck (stride on the 3x3 conv) with a temporal shift before ``conv1``.

    Args:
        in_ch: Input channels.
        planes: Bottleneck width; the block outputs ``4 * planes`` channels.
        stride: Spatial stride of ``conv2`` and the shortcut.
        num_segments: Frames per clip, needed to find the time axis inside the batch.
        shift_div: ``1 / shift_div`` of the channels move each way; 0 disables the shift.
        downsample: Projection shortcut, when the shape changes.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, stride: int = 1, num_segments: int = 8,
                 shift_div: int = 8, downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        self.conv1 = conv2d_bn(in_ch, planes, 1)
        if shift_div > 0:
            self.conv1.conv = TemporalShift(self.conv1.conv, num_segments, shift_div)
        self.conv2 = conv2d_bn(planes, planes, 3, stride=stride, padding=1)
        self.conv3 = conv2d_bn(planes, planes * self.expansion, 1, act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # The shortcut takes the unshifted input, as in TSM's residual-shift design.
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


class ResNetTSM(StagedResNet):
    """TSM ResNet-50 backbone returning the feature maps of the chosen stages.

    Args:
        num_segments: Frames per clip; the batch axis holds ``N * num_segments`` frames, clip-major.
        shift_div: Fraction divisor of the shifted channels (8: 1/8 each way).
        in_chans: Input channels.
        stage_blocks: Blocks per stage.
        out_indices: Stages (0-based) whose outputs ``forward`` returns, in order.

    Input ``(N * T, C, H, W)``; output a tuple of ``(N * T, C_i, H_i, W_i)`` maps.
    """

    def __init__(self, num_segments: int = 8, shift_div: int = 8, in_chans: int = 3,
                 stage_blocks: Sequence[int] = (3, 4, 6, 3), out_indices: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        if not out_indices or max(out_indices) >= len(stage_blocks):
            raise ValueError(f"out_indices {tuple(out_indices)} do not fit {len(stage_blocks)} stages")
        self.num_segments = num_segments
        self.out_indices = tuple(out_indices)
        self.conv1 = conv2d_bn(in_chans, 64, 7, stride=2, padding=3)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        in_ch = 64
        self.stage_names: list[str] = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = 64 * 2 ** i
            stride = 1 if i == 0 else 2
            downsample = None
            if stride != 1 or in_ch != planes * Bottleneck.expansion:
                downsample = conv2d_bn(in_ch, planes * Bottleneck.expansion, 1, stride=stride, act=False)
            blocks = [Bottleneck(in_ch, planes, stride, num_segments, shift_div, downsample)]
            in_ch = planes * Bottleneck.expansion
            blocks += [Bottleneck(in_ch, planes, 1, num_segments, shift_div)
                       for _ in range(1, num_blocks)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            self.stage_names.append(f"layer{i + 1}")
        self.out_channels = tuple(64 * 2 ** i * Bottleneck.expansion for i in self.out_indices)
        init_resnet_weights(self)
