"""SlowOnly ResNet-50 (3D), laid out like mmaction2's ``ResNet3dSlowOnly`` so its checkpoints load.

SlowOnly (Feichtenhofer et al., "SlowFast Networks for Video Recognition", ICCV 2019) is the slow
pathway alone: a ResNet-50 whose stem and first two stages are per-frame 2D convolutions
(``(1, k, k)`` kernels) and whose last two stages start each block with a temporal ``(3, 1, 1)``
convolution. Temporal resolution is kept all the way through (no temporal strides, no ``pool2``).

Module and parameter names follow mmaction2's ``ConvModule`` wrapping (``conv1.conv.weight``,
``conv1.bn.running_mean``, ``layer3.0.downsample.conv.weight``), which is why every
conv + norm (+ ReLU) triple is a :class:`ConvBNAct` with ``conv`` and ``bn`` children.
"""
from __future__ import annotations

from typing import Optional, Sequence

import torch
import torch.nn as nn

__all__ = ["ConvBNAct", "Bottleneck3d", "ResNet3dSlowOnly", "init_resnet_weights", "IMAGENET_MEAN",
           "IMAGENET_STD"]

_Int3 = tuple[int, int, int]

# Input normalisation of ImageNet-trained ResNets (torchvision, mmaction2), RGB in 0-255 units.
IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class ConvBNAct(nn.Module):
    """A convolution, an optional batch norm and an optional ReLU.

    The children are named ``conv`` and ``bn`` (mmaction2/mmcv ``ConvModule`` names); the ReLU has
    no state, so it does not appear in state dicts. ``conv`` may be any module (the TSM backbone
    passes a temporal-shift wrapper around a ``Conv2d``).

    Args:
        conv: The convolution (or a module wrapping one).
        bn: Normalization applied after ``conv``; ``None`` for none.
        act: Apply a ReLU last.
    """

    def __init__(self, conv: nn.Module, bn: Optional[nn.Module] = None, act: bool = True) -> None:
        super().__init__()
        self.conv = conv
        self.bn = bn if bn is not None else nn.Identity()
        self.act = nn.ReLU(inplace=True) if act else nn.Identity()
        # An Identity holds no state, so a missing norm leaves no ``bn.*`` keys, as in mmaction2.

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(self.conv(x)))


def conv3d_bn(in_ch: int, out_ch: int, kernel: _Int3, stride: _Int3 = (1, 1, 1),
              padding: _Int3 = (0, 0, 0), act: bool = True, groups: int = 1,
              norm: bool = True) -> ConvBNAct:
    """A bias-free ``Conv3d`` + ``BatchNorm3d`` (+ ReLU) as mmaction2 builds them."""
    conv = nn.Conv3d(in_ch, out_ch, kernel, stride=stride, padding=padding, groups=groups,
                     bias=False)
    return ConvBNAct(conv, nn.BatchNorm3d(out_ch) if norm else None, act)


class Bottleneck3d(nn.Module):
    """ResNet bottleneck with optional temporal inflation of its first convolution.

    ``inflate=True`` gives mmaction2's ``3x1x1`` style: ``conv1`` is ``(3, 1, 1)`` and ``conv2``
    stays ``(1, 3, 3)``; otherwise both are per-frame. The spatial stride sits on ``conv2``
    (the "pytorch" style).

    Args:
        in_ch: Input channels.
        planes: Bottleneck width; the block outputs ``4 * planes`` channels.
        spatial_stride: Stride of ``conv2`` (and of the shortcut).
        inflate: Use a temporal kernel in ``conv1``.
        downsample: Projection shortcut, when the shape changes.
    """

    expansion = 4

    def __init__(self, in_ch: int, planes: int, spatial_stride: int = 1, inflate: bool = False,
                 downsample: Optional[nn.Module] = None) -> None:
        super().__init__()
        if inflate:
            self.conv1 = conv3d_bn(in_ch, planes, (3, 1, 1), padding=(1, 0, 0))
        else:
            self.conv1 = conv3d_bn(in_ch, planes, (1, 1, 1))
        self.conv2 = conv3d_bn(planes, planes, (1, 3, 3), stride=(1, spatial_stride, spatial_stride),
                               padding=(0, 1, 1))
        self.conv3 = conv3d_bn(planes, planes * self.expansion, (1, 1, 1), act=False)
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.conv3(self.conv2(self.conv1(x)))
        return self.relu(out + identity)


class StagedResNet(nn.Module):
    """A stem (``conv1`` + ``maxpool``) and named stages; returns the ``out_indices`` outputs.

    The forward shared by :class:`ResNet3dSlowOnly` and ``ResNetTSM``: subclasses set
    ``conv1``, ``maxpool``, ``stage_names`` and ``out_indices``.
    """

    conv1: nn.Module
    maxpool: nn.Module
    stage_names: list[str]
    out_indices: tuple[int, ...]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.conv1(x))
        outs = []
        for i, name in enumerate(self.stage_names):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
            if i >= self.out_indices[-1]:
                break  # later stages would only cost time
        return tuple(outs)


class ResNet3dSlowOnly(StagedResNet):
    """SlowOnly ResNet-50 backbone returning the feature maps of the chosen stages.

    Matches mmaction2's ``ResNet3dSlowOnly(depth=50, conv1_kernel=(1, 7, 7), conv1_stride_t=1,
    pool1_stride_t=1, inflate=(0, 0, 1, 1), with_pool2=False, lateral=False)`` as used by the TPN
    configs: stem ``(1, 7, 7)`` conv stride ``(1, 2, 2)`` + ``(1, 3, 3)`` max pool stride
    ``(1, 2, 2)``, stages of (3, 4, 6, 3) bottlenecks with spatial strides (1, 2, 2, 2).

    Args:
        in_chans: Input channels.
        stage_blocks: Blocks per stage.
        inflate: Per stage, whether its blocks use a temporal ``(3, 1, 1)`` first convolution.
        out_indices: Stages (0-based) whose outputs ``forward`` returns, in order.

    Input ``(N, C, T, H, W)``; output a tuple of ``(N, C_i, T, H_i, W_i)`` maps.
    """

    def __init__(self, in_chans: int = 3, stage_blocks: Sequence[int] = (3, 4, 6, 3),
                 inflate: Sequence[int] = (0, 0, 1, 1), out_indices: Sequence[int] = (2, 3)) -> None:
        super().__init__()
        if len(inflate) != len(stage_blocks) or not out_indices or max(out_indices) >= len(stage_blocks):
            raise ValueError(f"inflate {tuple(inflate)} / out_indices {tuple(out_indices)} do not fit "
                             f"{len(stage_blocks)} stages")
        self.out_indices = tuple(out_indices)
        self.conv1 = conv3d_bn(in_chans, 64, (1, 7, 7), stride=(1, 2, 2), padding=(0, 3, 3))
        self.maxpool = nn.MaxPool3d(kernel_size=(1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        in_ch = 64
        self.stage_names: list[str] = []
        for i, num_blocks in enumerate(stage_blocks):
            planes = 64 * 2 ** i
            stride = 1 if i == 0 else 2
            layer = _make_layer(in_ch, planes, num_blocks, stride, bool(inflate[i]))
            in_ch = planes * Bottleneck3d.expansion
            self.add_module(f"layer{i + 1}", layer)
            self.stage_names.append(f"layer{i + 1}")
        self.out_channels = tuple(64 * 2 ** i * Bottleneck3d.expansion for i in self.out_indices)
        init_resnet_weights(self)


def _make_layer(in_ch: int, planes: int, num_blocks: int, stride: int, inflate: bool) -> nn.Sequential:
    downsample = None
    if stride != 1 or in_ch != planes * Bottleneck3d.expansion:
        downsample = conv3d_bn(in_ch, planes * Bottleneck3d.expansion, (1, 1, 1),
                               stride=(1, stride, stride), act=False)
    blocks = [Bottleneck3d(in_ch, planes, stride, inflate, downsample)]
    blocks += [Bottleneck3d(planes * Bottleneck3d.expansion, planes, 1, inflate)
               for _ in range(1, num_blocks)]
    return nn.Sequential(*blocks)


def init_resnet_weights(model: nn.Module) -> None:
    """Kaiming-normal convolutions, unit batch norms, and zero on each residual branch's last BN.

    Zeroing ``conv3.bn`` makes every block start as the identity, which is what mmaction2 does
    (``zero_init_residual``) and what lets a ResNet train from scratch at a normal learning rate.
    """
    for m in model.modules():
        if isinstance(m, (nn.Conv2d, nn.Conv3d)):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        conv3 = getattr(m, "conv3", None)
        if isinstance(conv3, ConvBNAct) and isinstance(conv3.bn, (nn.BatchNorm2d, nn.BatchNorm3d)):
            nn.init.zeros_(conv3.bn.weight)
