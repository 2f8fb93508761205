"""BN-Inception (Ioffe & Szegedy, "Batch Normalization", 2015) as TSN and TRN use it.

The layer names are those of the Caffe model that TSN converted to PyTorch and published as
``bn_inception-9f5701afb96c8044.pth`` (``conv1_7x7_s2``, ``conv1_7x7_s2_bn``,
``inception_3a_1x1``, ..., ``inception_5b_pool_proj_bn``, ``fc``), which are also the names of
``pretrainedmodels``' ``bninception`` (there the classifier is ``last_linear``). Either file loads
with :func:`fastvid.models.load_weights`; :meth:`BNInception.convert_state_dict` squeezes the
published file's ``(1, C)`` BN tensors, fills the ``num_batches_tracked`` buffers it predates and
renames ``last_linear`` to ``fc``.

Export notes. Caffe rounds pooling output sizes up, so the converted models use
``ceil_mode=True`` max pools (112 -> 56 -> 28 -> 14 -> 7 at 224 px). TensorRT rejects
``ceil_mode``; :func:`ceil_max_pool2d` gets the same sizes and values from a ``-inf`` pad on the
right/bottom plus a floor-mode pool. The 3x3 stride-1 pools inside the inception blocks are also
``ceil_mode`` in Caffe, but with stride 1 ceil and floor give the same size (and no window runs
past the padded input, so the average's divisor is the same too): plain pools are used there. The
final 7x7 average pool is an adaptive pool, so any input of at least 64 px gives one feature
vector per image (at 224 px both are the same operation). The stride-2 pools inside 3c/4e are
padded to match their strided conv branches at every size: the Caffe model itself fails to
concatenate at inputs such as 112 px, where 4e sees an odd 7x7 map.

Input convention: BGR, 0-255, mean (104, 117, 128), std 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping

import torch
import torch.nn as nn
import torch.nn.functional as F

from ._registry import register_model

__all__ = ["InceptionSpec", "INCEPTION_BLOCKS", "ceil_max_pool2d", "BNInception", "bninception"]


@dataclass(frozen=True)
class InceptionSpec:
    """Widths of one inception block (0 means the branch does not exist).

    ``stride=2`` blocks (3c, 4e) have no 1x1 and no pool-projection branch; their 3x3 and second
    double-3x3 convs are strided and their pool is a 3x3/2 max pool whose output is concatenated
    as is (sized like the strided convs at any input size; see ``BNInception._block``).
    """

    name: str
    in_ch: int
    c1x1: int
    c3x3_reduce: int
    c3x3: int
    double_reduce: int
    double_3x3: int
    pool: str  # "avg" (3x3/1) | "max" (3x3/1) | "max_s2" (3x3/2 ceil)
    pool_proj: int
    stride: int = 1

    @property
    def out_ch(self) -> int:
        pooled = self.pool_proj if self.pool_proj else self.in_ch
        return self.c1x1 + self.c3x3 + self.double_3x3 + pooled


INCEPTION_BLOCKS: tuple[InceptionSpec, ...] = (
    InceptionSpec("inception_3a", 192, 64, 64, 64, 64, 96, "avg", 32),
    InceptionSpec("inception_3b", 256, 64, 64, 96, 64, 96, "avg", 64),
    InceptionSpec("inception_3c", 320, 0, 128, 160, 64, 96, "max_s2", 0, stride=2),
    InceptionSpec("inception_4a", 576, 224, 64, 96, 96, 128, "avg", 128),
    InceptionSpec("inception_4b", 576, 192, 96, 128, 96, 128, "avg", 128),
    InceptionSpec("inception_4c", 576, 160, 128, 160, 128, 160, "avg", 128),
    InceptionSpec("inception_4d", 608, 96, 128, 192, 160, 192, "avg", 128),
    InceptionSpec("inception_4e", 608, 0, 128, 192, 192, 256, "max_s2", 0, stride=2),
    InceptionSpec("inception_5a", 1056, 352, 192, 320, 160, 224, "avg", 128),
    InceptionSpec("inception_5b", 1024, 352, 192, 320, 192, 224, "max", 128),
)


def ceil_max_pool2d(x: torch.Tensor, kernel_size: int = 3, stride: int = 2) -> torch.Tensor:
    """``nn.MaxPool2d(kernel_size, stride, padding=0, ceil_mode=True)`` without ``ceil_mode``.

    For ``kernel_size >= stride``, ``ceil((H - k) / s) == floor((H + s - 1 - k) / s)`` for every
    ``H``, so padding the right and bottom by ``stride - 1`` with ``-inf`` and pooling in floor
    mode gives ceil mode's output size at any input size. When ceil mode would not have added a
    window the extra column lies outside every window; when it would, the extra window holds at
    least one real value and ``-inf`` never wins. The pad is a constant, so there is no
    size-dependent branch for ``torch.export`` to specialise on.
    """
    extra = stride - 1
    if extra:
        x = F.pad(x, (0, extra, 0, extra), value=float("-inf"))
    return F.max_pool2d(x, kernel_size, stride)


class BNInception(nn.Module):
    """BN-Inception image classifier with the published TSN/TRN parameter names.

    Args:
        num_classes: Size of the ``fc`` classifier; 0 leaves it out, and ``forward`` then returns
            the pooled 1024-d features (how TSN/TRN use it as a frame encoder).

    Every conv is followed by a BN with its name plus ``_bn`` and a ReLU; modules are registered
    in the Caffe model's layer order, so ``conv1_7x7_s2`` is the first conv and
    ``conv1_7x7_s2_bn`` the first BN (TSN's partial BN and optimiser policies rely on this order).
    """

    input_color = "BGR"
    input_mean = (104.0, 117.0, 128.0)
    input_std = (1.0, 1.0, 1.0)
    num_features = 1024

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self.num_classes = num_classes
        self._add_unit("conv1_7x7_s2", 3, 64, 7, stride=2, padding=3)
        self._add_unit("conv2_3x3_reduce", 64, 64, 1)
        self._add_unit("conv2_3x3", 64, 192, 3, padding=1)
        for spec in INCEPTION_BLOCKS:
            self._add_block(spec)
        self.fc: nn.Module = nn.Linear(self.num_features, num_classes) if num_classes else nn.Identity()

    def _add_unit(self, name: str, in_ch: int, out_ch: int, kernel: int, stride: int = 1,
                  padding: int = 0) -> None:
        # Flat attributes (not a conv/bn submodule) keep the published file's key names.
        self.add_module(name, nn.Conv2d(in_ch, out_ch, kernel, stride=stride, padding=padding))
        self.add_module(name + "_bn", nn.BatchNorm2d(out_ch))

    def _add_block(self, spec: InceptionSpec) -> None:
        n, cin = spec.name, spec.in_ch
        if spec.c1x1:
            self._add_unit(f"{n}_1x1", cin, spec.c1x1, 1)
        self._add_unit(f"{n}_3x3_reduce", cin, spec.c3x3_reduce, 1)
        self._add_unit(f"{n}_3x3", spec.c3x3_reduce, spec.c3x3, 3, stride=spec.stride, padding=1)
        self._add_unit(f"{n}_double_3x3_reduce", cin, spec.double_reduce, 1)
        self._add_unit(f"{n}_double_3x3_1", spec.double_reduce, spec.double_3x3, 3, padding=1)
        self._add_unit(f"{n}_double_3x3_2", spec.double_3x3, spec.double_3x3, 3,
                       stride=spec.stride, padding=1)
        if spec.pool_proj:
            self._add_unit(f"{n}_pool_proj", cin, spec.pool_proj, 1)

    def _unit(self, name: str, x: torch.Tensor) -> torch.Tensor:
        bn: nn.Module = getattr(self, name + "_bn")
        conv: nn.Module = getattr(self, name)
        return F.relu(bn(conv(x)))

    def _block(self, spec: InceptionSpec, x: torch.Tensor) -> torch.Tensor:
        n = spec.name
        branches = []
        if spec.c1x1:
            branches.append(self._unit(f"{n}_1x1", x))
        branches.append(self._unit(f"{n}_3x3", self._unit(f"{n}_3x3_reduce", x)))
        double = self._unit(f"{n}_double_3x3_1", self._unit(f"{n}_double_3x3_reduce", x))
        branches.append(self._unit(f"{n}_double_3x3_2", double))
        if spec.pool == "max_s2":
            # Pad by 2, not 1: the output then has the strided 3x3 convs' size,
            # floor((H - 1) / 2) + 1, at every H. Where Caffe's ceil-mode pool agrees with the convs
            # (even H: 224 px, 64 px) the values are identical to it; at odd H (e.g. 7 px into
            # inception_4e at 112 px input) Caffe's pool is one short and the concat would fail,
            # here the extra window covers the last real row/column.
            pooled = F.max_pool2d(F.pad(x, (0, 2, 0, 2), value=float("-inf")), 3, 2)
        elif spec.pool == "max":
            pooled = F.max_pool2d(x, 3, stride=1, padding=1)
        else:
            pooled = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=True)
        branches.append(self._unit(f"{n}_pool_proj", pooled) if spec.pool_proj else pooled)
        return torch.cat(branches, dim=1)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(N, 3, H, W)`` -> feature map ``(N, 1024, H/32, W/32)`` (rounded up)."""
        x = ceil_max_pool2d(self._unit("conv1_7x7_s2", x), 3, 2)
        x = self._unit("conv2_3x3", self._unit("conv2_3x3_reduce", x))
        x = ceil_max_pool2d(x, 3, 2)
        for spec in INCEPTION_BLOCKS:
            x = self._block(spec, x)
        return x

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Global average pool, then the classifier unless ``pre_logits``."""
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.fc(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map the published TSN file or a ``pretrainedmodels`` state dict onto this model's names.

        * a ``module.`` prefix (DataParallel saves) is stripped;
        * ``last_linear.*`` (pretrainedmodels) becomes ``fc.*``; without a classifier
          (``num_classes=0``) both are dropped;
        * tensors stored as ``(1, C)`` where this model has ``(C,)`` (the published file's BN
          weights and statistics) are reshaped;
        * BN ``num_batches_tracked`` buffers missing from files written before PyTorch 0.4.1 are
          filled with 0 for every BN whose statistics the file does hold.

        Anything else passes through unchanged for the strict key check to report.
        """
        own = self.state_dict()
        out: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            if key.startswith("module."):
                key = key[len("module."):]
            if key.startswith("last_linear."):
                key = "fc." + key[len("last_linear."):]
            if key.startswith("fc.") and not isinstance(self.fc, nn.Linear):
                continue
            target = own.get(key)
            if (target is not None and value.dim() == target.dim() + 1 and value.shape[0] == 1
                    and value.shape[1:] == target.shape):
                value = value.reshape(target.shape)
            out[key] = value
        for key in own:
            if key.endswith(".num_batches_tracked") and key not in out:
                stats = key[: -len("num_batches_tracked")] + "running_mean"
                if stats in out:
                    out[key] = torch.zeros((), dtype=torch.long)
        return out


@register_model
def bninception(num_classes: int = 1000, **_: Any) -> BNInception:
    """ImageNet BN-Inception, input ``(N, 3, H, W)`` BGR 0-255 minus (104, 117, 128)."""
    return BNInception(num_classes=num_classes)
