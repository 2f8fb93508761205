"""Temporal Pyramid Network (TPN) on SlowOnly-R50 and TSM-R50 backbones.

Yang et al., "Temporal Pyramid Network for Action Recognition" (CVPR 2020), built as mmaction2
1.2.0's ``configs/_base_/models/tpn_slowonly_r50.py`` and ``tpn_tsm_r50.py`` define it, with the
same module names so that mmaction2's published checkpoints load with
:func:`fastvid.models.load_weights`:

* backbone features of stages 3 and 4 (1024 and 2048 channels) form a two-level pyramid;
* *spatial modulation* brings level 0 to level 1's resolution and width (strided ``(1, 3, 3)`` conv);
* *temporal modulation* (grouped ``(3, 1, 1)`` conv to 1024 channels, then a max pool over
  time by 8) sets each level's temporal rate;
* a top-down pass adds level 1 into level 0, *level fusion 1* fuses the result; the *cascade*
  bottom-up pass then adds a ``(3, 1, 1)`` conv of the updated level 0 into level 1, and *level
  fusion 2* fuses again; *pyramid fusion* (1x1x1 conv) merges both to 2048 channels;
* the head averages over time and space, applies dropout and a linear classifier;
* an auxiliary head on the raw stage-3 features (loss weight 0.5) is evaluated in training only.

The published configs set every up/down-sampling scale of the neck's flows to 1, so those layers
are identities; they are left out here (they hold no weights).
"""
from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastvid.errors import FastvidError

from ._registry import ModelSpec, register_model
from .resnet3d import IMAGENET_MEAN, IMAGENET_STD, ConvBNAct, ResNet3dSlowOnly, conv3d_bn
from .resnet_tsm import ResNetTSM

__all__ = ["ceil_max_pool3d", "TemporalModulation", "SpatialModulation", "LevelFusion", "AuxHead",
           "TPNNeck", "TPNHead", "TPN", "tpn_slowonly_r50", "tpn_tsm_r50"]


def ceil_max_pool3d(x: torch.Tensor, scale: Sequence[int]) -> torch.Tensor:
    """Non-overlapping max pool with window = stride = ``scale`` and ceil-mode output size.

    Equals ``nn.MaxPool3d(scale, scale, ceil_mode=True)`` (what mmaction2 uses), but when a size
    is not a multiple of its scale the tail is padded with ``-inf`` and pooled in floor mode, so
    exporters never meet ``ceil_mode``. For the usual clip length 8 and scale 8 no padding is
    added and this is a plain floor-mode pool. Shapes are static under ``torch.export`` (only
    the batch is dynamic), so the padding decision is made once at trace time.
    """
    pads: list[int] = []
    for size, s in zip(reversed(x.shape[2:]), reversed(tuple(scale))):
        pads += [0, (-int(size)) % s]
    if any(pads):
        x = F.pad(x, pads, value=float("-inf"))
    if all(s == 1 for s in scale):
        return x
    return F.max_pool3d(x, kernel_size=tuple(scale), stride=tuple(scale))


class TemporalModulation(nn.Module):
    """Grouped ``(3, 1, 1)`` conv (no norm, no activation), then a temporal max pool by ``scale``."""

    def __init__(self, in_ch: int, out_ch: int, scale: int = 8, groups: int = 32) -> None:
        super().__init__()
        self.conv = conv3d_bn(in_ch, out_ch, (3, 1, 1), padding=(1, 0, 0), act=False,
                              groups=groups, norm=False)
        self.scale = scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return ceil_max_pool3d(self.conv(x), (self.scale, 1, 1))


class SpatialModulation(nn.Module):
    """Per level, ``log2(out_ch / in_ch)`` strided ``(1, 3, 3)`` convs doubling width each time.

    A level already at ``out_ch`` channels passes unchanged. The top level keeps its resolution,
    lower levels are brought to it, so the pyramid's levels can be added together.
    """

    def __init__(self, in_channels: Sequence[int], out_ch: int) -> None:
        super().__init__()
        self.spatial_modulation = nn.ModuleList()
        for ch in in_channels:
            steps = int(math.log2(out_ch // ch))
            if steps < 1:
                self.spatial_modulation.append(nn.Identity())
                continue
            self.spatial_modulation.append(nn.ModuleList(
                conv3d_bn(ch * 2 ** k, ch * 2 ** (k + 1), (1, 3, 3), stride=(1, 2, 2),
                          padding=(0, 1, 1))
                for k in range(steps)))

    def forward(self, feats: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        outs = []
        for op, x in zip(self.spatial_modulation, feats):
            for conv in (op if isinstance(op, nn.ModuleList) else (op,)):
                x = conv(x)
            outs.append(x)
        return outs


class _ConvUnit(nn.Module):
    """Holds a :class:`ConvBNAct` as ``conv`` (mmaction2's ``DownSample.conv``) with no pooling.

    mmaction2's ``DownSample`` pools around its conv; every scale in the TPN configs is 1, where
    that pool is the identity, so only the conv remains.
    """

    def __init__(self, conv: ConvBNAct) -> None:
        super().__init__()
        self.conv = conv

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class LevelFusion(nn.Module):
    """Grouped 1x1x1 conv + BN + ReLU per level, concatenation, then 1x1x1 conv + BN + ReLU."""

    def __init__(self, in_channels: Sequence[int], mid_channels: Sequence[int], out_ch: int,
                 groups: int = 32) -> None:
        super().__init__()
        self.downsamples = nn.ModuleList(
            _ConvUnit(conv3d_bn(i, m, (1, 1, 1), groups=groups))
            for i, m in zip(in_channels, mid_channels))
        self.fusion_conv = conv3d_bn(sum(mid_channels), out_ch, (1, 1, 1))

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        return self.fusion_conv(torch.cat([d(x) for d, x in zip(self.downsamples, feats)], dim=1))


class AuxHead(nn.Module):
    """Auxiliary classifier on stage-3 features: strided conv, global average, dropout, linear."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.conv = conv3d_bn(in_ch, in_ch * 2, (1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1))
        self.dropout = nn.Dropout(p=dropout)
        self.fc = nn.Linear(in_ch * 2, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv(x).mean(dim=(2, 3, 4))
        return self.fc(self.dropout(x))


class TPNNeck(nn.Module):
    """The TPN neck with cascade flow, configured as mmaction2's published TPN models.

    Args:
        in_channels: Channels of the backbone levels, low to high.
        out_channels: Channels after temporal modulation.
        temporal_scales: Temporal max-pool factor per level.
        fusion_channels: Output channels of each level fusion (the pyramid fusion outputs 2048).
        num_classes: Classes of the auxiliary head.
        groups: Groups of the temporal-modulation and level-fusion convs.

    Input: backbone maps ``(N, C_i, T, H_i, W_i)``; output ``(N, 2048, T', H, W)`` with
    ``T' = ceil(T / temporal_scale)``.
    """

    def __init__(self, in_channels: Sequence[int] = (1024, 2048), out_channels: int = 1024,
                 temporal_scales: Sequence[int] = (8, 8), fusion_channels: int = 2048,
                 num_classes: int = 400, groups: int = 32) -> None:
        super().__init__()
        if len(temporal_scales) != len(in_channels):
            raise ValueError(f"temporal_scales {tuple(temporal_scales)} needs one entry per level "
                             f"of {tuple(in_channels)}")
        top = in_channels[-1]
        self.num_levels = len(in_channels)
        self.spatial_modulation = SpatialModulation(in_channels, top)
        # After spatial modulation every level has the top level's width.
        self.temporal_modulation_ops = nn.ModuleList(
            TemporalModulation(top, out_channels, s, groups) for s in temporal_scales)
        self.downsample_ops = nn.ModuleList(
            _ConvUnit(conv3d_bn(out_channels, out_channels, (3, 1, 1), padding=(1, 0, 0),
                                act=False, norm=False))
            for _ in range(self.num_levels - 1))
        mids = (out_channels,) * self.num_levels
        self.level_fusion_1 = LevelFusion(mids, mids, fusion_channels, groups)
        self.level_fusion_2 = LevelFusion(mids, mids, fusion_channels, groups)
        self.pyramid_fusion = conv3d_bn(fusion_channels * 2, 2048, (1, 1, 1))
        self.aux_head = AuxHead(in_channels[-2], num_classes)
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.xavier_uniform_(m.weight)
            elif isinstance(m, nn.BatchNorm3d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        nn.init.normal_(self.aux_head.fc.weight, std=0.01)
        nn.init.zeros_(self.aux_head.fc.bias)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        levels = [tm(x) for tm, x in zip(self.temporal_modulation_ops, self.spatial_modulation(feats))]
        # Top-down: each level receives the one above it (upsampling scale 1 = identity).
        for i in range(self.num_levels - 1, 0, -1):
            levels[i - 1] = levels[i - 1] + levels[i]
        top_down = self.level_fusion_1(levels)
        # Cascade: the bottom-up pass starts from the top-down result, not from a fresh copy.
        for i in range(self.num_levels - 1):
            levels[i + 1] = levels[i + 1] + self.downsample_ops[i](levels[i])
        bottom_up = self.level_fusion_2(levels)
        return self.pyramid_fusion(torch.cat((top_down, bottom_up), dim=1))


class TPNHead(nn.Module):
    """Global average over ``(T, H, W)``, dropout, linear classifier (``fc_cls``)."""

    def __init__(self, in_ch: int, num_classes: int, dropout: float = 0.5) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        self.fc_cls = nn.Linear(in_ch, num_classes)
        nn.init.normal_(self.fc_cls.weight, std=0.01)
        nn.init.zeros_(self.fc_cls.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc_cls(self.dropout(x.mean(dim=(2, 3, 4))))


class TPN(nn.Module):
    """Backbone + TPN neck + head; one clip in, class logits out.

    Args:
        backbone: A 3D backbone such as :class:`ResNet3dSlowOnly` (input ``(N, C, T, H, W)``) or a
            2D one over segments such as :class:`ResNetTSM` (input ``(N, T, C, H, W)`` with
            ``T == num_segments``), as ``spec.input_layout`` says.
        num_classes: Classes of the main and the auxiliary head.
        spec: The registered spec: its ``input_layout`` decides how frames reach the backbone
            (colour and normalisation are the loader's, from the same spec).
        num_segments: Frames per clip (TSM: required; SlowOnly: the clip length it is used with).
        dropout: Dropout before the classifier.
        aux_loss_weight: Weight the trainer gives the auxiliary head's loss.

    ``forward`` returns logits ``(N, num_classes)`` in eval mode and ``(logits, aux_logits)`` in
    train mode. Averaging over test clips/crops is the evaluator's job.
    """

    def __init__(self, backbone: nn.Module, num_classes: int, spec: ModelSpec,
                 num_segments: int = 8, dropout: float = 0.5, aux_loss_weight: float = 0.5) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        self.backbone = backbone
        self.neck = TPNNeck(in_channels=backbone.out_channels, num_classes=num_classes)
        self.cls_head = TPNHead(2048, num_classes, dropout)
        self.num_classes = num_classes
        self.num_segments = num_segments
        self.aux_loss_weight = aux_loss_weight
        self.spec = spec

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Backbone feature maps as ``(N, C_i, T, H_i, W_i)``, whatever the backbone's layout."""
        layout = self.spec.input_layout
        if x.dim() != 5:
            raise FastvidError(f"{type(self).__name__} expects a 5-D {layout} video batch, "
                               f"got shape {tuple(x.shape)}")
        if self.spec.is_3d:
            return self.backbone(x)
        t = x.shape[1]
        if t != self.num_segments:
            raise FastvidError(f"TSM input has {t} frames on axis 1 of {tuple(x.shape)} (NTCHW), but "
                               f"the model was built with num_segments={self.num_segments}")
        feats = self.backbone(x.flatten(0, 1))
        # The 2D backbone keeps frames in the batch axis; the neck wants time as its own axis.
        return tuple(f.reshape((-1, t) + tuple(f.shape[1:])).transpose(1, 2) for f in feats)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        feats = self.forward_features(x)
        logits = self.cls_head(self.neck(feats))
        if self.training:
            return logits, self.neck.aux_head(feats[-2])
        return logits

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map mmaction2 / DDP / torchvision ResNet-50 layouts onto this model's names.

        Names already match mmaction2's ``backbone.* / neck.* / cls_head.*``; what differs is a
        ``module.`` prefix from DataParallel saves and ``data_preprocessor.*`` buffers (mean/std,
        which fastvid applies in the loader), which are dropped. A torchvision ImageNet ResNet-50
        file (``conv1.weight``, ``bn1.*``, ``layer1.0.bn1.*``, ..., ``fc.*``) becomes the backbone's
        weights, 2D kernels inflated to 3D by repeating them over time divided by the temporal
        size (mmaction2's ``inflate_weights``), so that ``--pretrained resnet50.pth`` starts from
        ImageNet as the ``tpn-*_imagenet-pretrained`` configs do; the neck and heads stay new.
        """
        stripped = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
        if "conv1.weight" in stripped and "bn1.weight" in stripped:
            return self._from_torchvision_resnet(stripped)
        return {k: v for k, v in stripped.items() if not k.startswith("data_preprocessor.")}

    def _from_torchvision_resnet(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        own = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith("fc."):
                continue  # the ImageNet classifier has no counterpart
            name = "backbone." + _torchvision_to_convmodule(key)
            shifted = name.replace(".conv.weight", ".conv.net.weight")
            if name not in own and shifted in own:
                name = shifted  # TSM wraps each block's conv1 in a temporal shift
            target = own.get(name)
            if target is not None and value.dim() == 4 and target.dim() == 5:
                kt = target.shape[2]
                value = value.unsqueeze(2).expand(-1, -1, kt, -1, -1) / kt
            out[name] = value
        return out


def _torchvision_to_convmodule(key: str) -> str:
    """``layer1.0.bn2.weight`` -> ``layer1.0.conv2.bn.weight`` and so on; other keys unchanged."""
    parts = key.split(".")
    if parts[0] == "conv1":
        return "conv1.conv." + ".".join(parts[1:])
    if parts[0] == "bn1":
        return "conv1.bn." + ".".join(parts[1:])
    if parts[0].startswith("layer") and len(parts) >= 4:
        prefix, sub, rest = ".".join(parts[:2]), parts[2], ".".join(parts[3:])
        if sub.startswith("conv"):
            return f"{prefix}.{sub}.conv.{rest}"
        if sub.startswith("bn"):
            return f"{prefix}.conv{sub[2:]}.bn.{rest}"
        if sub == "downsample" and len(parts) >= 5:
            kind = "conv" if parts[3] == "0" else "bn"
            return f"{prefix}.downsample.{kind}.{'.'.join(parts[4:])}"
    return key


_TPN_SPEC = dict(arch="tpn", color="RGB", mean=IMAGENET_MEAN, std=IMAGENET_STD, crop_size=224,
                 num_frames=8, classifier=("cls_head.fc_cls",),
                 class_rows=(r"cls_head\.fc_cls|neck\.aux_head\.fc",),
                 config_keys=("num_segments", "dropout", "aux_loss_weight"),
                 arch_keys=("num_segments",))


@register_model(backbone="resnet3d_slowonly50", input_layout="NCTHW", sampling="dense", **_TPN_SPEC)
def tpn_slowonly_r50(num_classes: int, spec: ModelSpec, num_segments: int = 8,
                     dropout: float = 0.5, aux_loss_weight: float = 0.5, **_: object) -> TPN:
    """TPN on SlowOnly ResNet-50 (mmaction2 ``tpn-slowonly_r50``, 8x8x1 clips); input NCTHW."""
    return TPN(ResNet3dSlowOnly(), num_classes, spec, num_segments, dropout, aux_loss_weight)


@register_model(backbone="tsm_resnet50", input_layout="NTCHW", sampling="tsn", **_TPN_SPEC)
def tpn_tsm_r50(num_classes: int, spec: ModelSpec, num_segments: int = 8, dropout: float = 0.5,
                aux_loss_weight: float = 0.5, **_: object) -> TPN:
    """TPN on TSM ResNet-50 (mmaction2 ``tpn-tsm_r50``, 1x1x8 segments); input NTCHW."""
    return TPN(ResNetTSM(num_segments=num_segments), num_classes, spec, num_segments, dropout,
               aux_loss_weight)
