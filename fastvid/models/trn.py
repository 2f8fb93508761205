"""TSN and TRN (Zhou et al., "Temporal Relational Reasoning in Videos", ECCV 2018).

Built as TRN-pytorch (``models.py::TSN``, ``TRNmodule.py``) defines them, with the same module
names, so a TRN-pytorch checkpoint (``module.base_model.*``, ``module.new_fc.*``,
``module.consensus.*``) loads after stripping ``module.``:

* the ``T`` frames of a clip go through the 2D backbone as a batch of ``N * T`` images;
* dropout, then ``new_fc`` (1024 -> ``img_feature_dim``, or -> ``num_classes`` for ``avg``;
  initialised N(0, 0.001), bias 0) gives one vector per frame;
* the consensus turns ``(N, T, d)`` into logits ``(N, num_classes)``:

  - ``avg``: TSN's mean of the per-frame class scores;
  - ``trn``: single-scale relation, ``ReLU -> Linear(T*d, 512) -> ReLU -> Linear(512, C)``
    on the concatenated frame features (``consensus.classifier.*``);
  - ``trn_multiscale``: a relation head per scale ``T, T-1, ..., 2``
    (``consensus.fc_fusion_scales.<i>``: ``ReLU -> Linear(scale*d, 256) -> ReLU ->
    Linear(256, C)``, no dropout inside, as in the published code); the full-scale relation is
    used once, every other scale sums ``subsample_num`` of its
    ``itertools.combinations(range(T), scale)`` ordered frame subsets; the scales' logits add up.

Divergences from TRN-pytorch, on purpose:

* **Relation sampling.** TRN-pytorch draws the subsets with ``np.random.choice`` in every forward,
  in evaluation too, so the same clip scores differently from call to call and the model cannot
  be exported. Here training draws them with ``torch.randperm`` on the features' device (the
  global torch generator, which ``train.seed`` seeds and checkpoints capture, or
  :attr:`RelationModuleMultiScale.generator` when set); evaluation uses a fixed subset per scale,
  drawn once at construction from a generator seeded with ``relation_seed`` and kept in
  non-persistent buffers. Every instance built with the same arguments uses the same subsets, the
  same clip always gets the same scores, and an exported eval graph holds no random op.
* ``dropout=0`` keeps ``new_fc`` (TRN-pytorch replaces the backbone classifier instead, which
  only works for ``avg``); such TRN-pytorch checkpoints' ``base_model.fc.*`` is renamed to
  ``new_fc.*`` on load.
* The relation heads gather frames with ``index_select`` and run all sampled relations of a scale
  as one batched ``Linear``, rather than one Python-loop step per relation.

Loading weights (:meth:`TSN.convert_state_dict`, used by :func:`fastvid.models.load_weights`):
fastvid checkpoints, TRN-pytorch checkpoints, and the ImageNet BN-Inception file (published TSN
``bn_inception-9f5701afb96c8044.pth`` or ``pretrainedmodels``'): the latter fills the backbone,
while ``new_fc`` and the consensus keep their current (initial) values, which is logged, so
``load_weights(trn, "bn_inception-9f5701afb96c8044.pth")`` passes the strict key check.
"""
from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

import torch
import torch.nn as nn

from fastvid.errors import ConfigError, FastvidError

from ._registry import register_model
from .bninception import BNInception

__all__ = ["CONSENSUS_TYPES", "AvgConsensus", "RelationModule", "RelationModuleMultiScale", "TSN",
           "TRN", "TSNSettings", "tsn_param_groups", "trn_bninception", "validate_trn_config"]

log = logging.getLogger(__name__)

CONSENSUS_TYPES = ("avg", "trn", "trn_multiscale")


class AvgConsensus(nn.Module):
    """TSN's segmental consensus: the mean of the per-frame scores ``(N, T, C) -> (N, C)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


class RelationModule(nn.Module):
    """Single-scale temporal relation over all ``num_frames`` frames (TRN-pytorch's ``TRN``).

    Args:
        img_feature_dim: Size ``d`` of each frame's feature.
        num_frames: Frames ``T`` per clip.
        num_classes: Output classes.
        num_bottleneck: Hidden width (512 in TRN-pytorch).
    """

    def __init__(self, img_feature_dim: int, num_frames: int, num_classes: int,
                 num_bottleneck: int = 512) -> None:
        super().__init__()
        self.num_frames = num_frames
        self.img_feature_dim = img_feature_dim
        self.classifier = nn.Sequential(
            nn.ReLU(),
            nn.Linear(num_frames * img_feature_dim, num_bottleneck),
            nn.ReLU(),
            nn.Linear(num_bottleneck, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frame features ``(N, T, d)`` -> logits ``(N, num_classes)``."""
        return self.classifier(x.flatten(1))


class RelationModuleMultiScale(nn.Module):
    """Multi-scale temporal relations, summed over scales ``T .. 2`` (TRN-pytorch's ``TRNmultiscale``).

    Args:
        img_feature_dim: Size ``d`` of each frame's feature.
        num_frames: Frames ``T`` per clip (at least 2).
        num_classes: Output classes.
        subsample_num: Relations summed per scale, except the full scale which has exactly one.
        num_bottleneck: Hidden width of every scale's head (256 in TRN-pytorch).
        relation_seed: Seed of the fixed evaluation subsets.

    Buffers ``relations_<i>`` hold every ordered frame subset of scale ``scales[i]`` (one row per
    ``itertools.combinations`` tuple), ``eval_relations_<i>`` the fixed rows used in eval mode.
    Neither is saved in state dicts: both follow from the constructor arguments.

    Training draws ``subsample_num`` rows per scale in every forward. With :attr:`presampled`
    set (a training step captured in a CUDA graph, which cannot draw inside the graph), forward
    reads ``train_relations_<i>`` instead, which :meth:`resample_relations` fills before each
    step, outside the graph, with the same draws.
    """

    def __init__(self, img_feature_dim: int, num_frames: int, num_classes: int,
                 subsample_num: int = 3, num_bottleneck: int = 256, relation_seed: int = 0) -> None:
        super().__init__()
        if num_frames < 2:
            raise ValueError(f"trn_multiscale needs num_segments >= 2 (relations between frames), "
                             f"got {num_frames}")
        if subsample_num < 1:
            raise ValueError(f"subsample_num must be >= 1, got {subsample_num}")
        self.img_feature_dim = img_feature_dim
        self.num_frames = num_frames
        self.subsample_num = subsample_num
        self.scales: list[int] = list(range(num_frames, 1, -1))
        self.subsample_scales: list[int] = []
        #: Generator for training-time sampling; ``None`` uses the global one of the features'
        #: device. A generator set here must live on the same device as the model.
        self.generator: Optional[torch.Generator] = None
        #: Read the training subsets from ``train_relations_<i>`` (filled by
        #: :meth:`resample_relations`) instead of drawing them in forward.
        self.presampled = False
        fixed = torch.Generator().manual_seed(relation_seed)
        self.fc_fusion_scales = nn.ModuleList()
        for i, scale in enumerate(self.scales):
            relations = torch.tensor(list(itertools.combinations(range(num_frames), scale)),
                                     dtype=torch.long)
            count = 1 if i == 0 else min(subsample_num, relations.shape[0])
            self.subsample_scales.append(count)
            pick = torch.randperm(relations.shape[0], generator=fixed)[:count]
            self.register_buffer(f"relations_{i}", relations, persistent=False)
            self.register_buffer(f"eval_relations_{i}", relations[pick.sort().values].clone(),
                                 persistent=False)
            self.register_buffer(f"train_relations_{i}", relations[pick.sort().values].clone(),
                                 persistent=False)
            self.fc_fusion_scales.append(nn.Sequential(
                nn.ReLU(),
                nn.Linear(scale * img_feature_dim, num_bottleneck),
                nn.ReLU(),
                nn.Linear(num_bottleneck, num_classes),
            ))

    def relations(self, scale_index: int) -> torch.Tensor:
        """All frame subsets of ``scales[scale_index]`` as a ``(count, scale)`` index tensor."""
        return getattr(self, f"relations_{scale_index}")

    def train_relations(self, scale_index: int) -> torch.Tensor:
        """The subsets :meth:`resample_relations` drew last at this scale."""
        return getattr(self, f"train_relations_{scale_index}")

    def _draw(self, scale_index: int) -> torch.Tensor:
        every = self.relations(scale_index)
        order = torch.randperm(every.shape[0], device=every.device, generator=self.generator)
        return every.index_select(0, order[: self.subsample_scales[scale_index]])

    def resample_relations(self) -> None:
        """Draw the next training step's subsets into ``train_relations_<i>`` (in place)."""
        for i in range(1, len(self.scales)):
            self.train_relations(i).copy_(self._draw(i))

    def sample_relations(self, scale_index: int) -> torch.Tensor:
        """The subsets a forward uses at this scale: fixed in eval, freshly drawn in training."""
        if not self.training or scale_index == 0:
            return getattr(self, f"eval_relations_{scale_index}")
        if self.presampled:
            return self.train_relations(scale_index)
        return self._draw(scale_index)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Frame features ``(N, T, d)`` -> logits ``(N, num_classes)``."""
        n = x.shape[0]
        out: Optional[torch.Tensor] = None
        for i, head in enumerate(self.fc_fusion_scales):
            idx = self.sample_relations(i)
            count, scale = idx.shape
            # One gather + one batched head per scale; the sum over relations is TRN's.
            rel = x.index_select(1, idx.reshape(-1)).reshape(n, count, scale * self.img_feature_dim)
            logits = head(rel).sum(dim=1)
            out = logits if out is None else out + logits
        assert out is not None  # num_frames >= 2 guarantees one scale
        return out


def tsn_param_groups(model: nn.Module, lr: float, weight_decay: float) -> list[dict[str, Any]]:
    """TSN's ``get_optim_policies`` as torch.optim param groups with absolute lr/weight decay.

    First conv weight: lr x1, decay x1; first conv bias: lr x2, no decay; other conv/linear
    weights: lr x1, decay x1; their biases: lr x2, no decay; norm-layer scale/shift: lr x1, no
    decay. Parameters with ``requires_grad=False`` (partial BN's frozen layers) are left out, so
    every trainable parameter is in exactly one group. Groups also carry ``name``, ``lr_mult``
    and ``decay_mult``; empty groups are dropped.

    Raises:
        TypeError: A module type with parameters that has no policy here.
    """
    names = ("first_conv_weight", "first_conv_bias", "normal_weight", "normal_bias", "bn")
    mults = {"first_conv_weight": (1.0, 1.0), "first_conv_bias": (2.0, 0.0),
             "normal_weight": (1.0, 1.0), "normal_bias": (2.0, 0.0), "bn": (1.0, 0.0)}
    groups: dict[str, list[nn.Parameter]] = {name: [] for name in names}
    seen_conv = False
    norm_types = (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm)
    for mod_name, module in model.named_modules():
        own = dict(module.named_parameters(recurse=False))
        if not own:
            continue
        if isinstance(module, (nn.modules.conv._ConvNd, nn.Linear)):
            is_conv = isinstance(module, nn.modules.conv._ConvNd)
            prefix = "first_conv" if is_conv and not seen_conv else "normal"
            seen_conv = seen_conv or is_conv
            groups[f"{prefix}_weight"].append(module.weight)
            if module.bias is not None:
                groups[f"{prefix}_bias"].append(module.bias)
        elif isinstance(module, norm_types):
            groups["bn"].extend(own.values())
        else:
            raise TypeError(f"no optimiser policy for {type(module).__name__} at {mod_name!r}")
    out = []
    for name in names:
        params = [p for p in groups[name] if p.requires_grad]
        if params:
            lr_mult, decay_mult = mults[name]
            out.append({"params": params, "lr": lr * lr_mult, "weight_decay": weight_decay * decay_mult,
                        "name": name, "lr_mult": lr_mult, "decay_mult": decay_mult})
    return out


@dataclass(frozen=True)
class TSNSettings:
    """How a :class:`TSN` is built around its backbone (``model.*`` config keys of the same names).

    Attributes:
        num_segments: Frames ``T`` per clip; the input's axis 1 must have this size.
        consensus: ``avg`` (TSN), ``trn`` or ``trn_multiscale`` (TRN).
        img_feature_dim: Per-frame feature size fed to the relation heads (TRN only).
        dropout: Dropout on the backbone features, before ``new_fc``.
        subsample_num: Relations per scale for ``trn_multiscale``.
        partial_bn: TSN's partial BN: in ``train()`` every BN of the backbone but the first is put
            in eval mode and its scale/shift frozen (applied at construction too, so that
            :meth:`TSN.optim_param_groups` is right before the first ``train()``).
        relation_seed: Seed of the fixed eval relation subsets (``trn_multiscale``).
    """

    num_segments: int = 8
    consensus: str = "trn_multiscale"
    img_feature_dim: int = 256
    dropout: float = 0.8
    subsample_num: int = 3
    partial_bn: bool = True
    relation_seed: int = 0


class TSN(nn.Module):
    """A 2D backbone over ``T`` segments, a new per-frame fc, and a segment consensus.

    Args:
        base_model: Frame encoder returning ``(N, num_features)`` (a headless
            :class:`~fastvid.models.bninception.BNInception`); must have ``num_features``.
        num_classes: Output classes.
        settings: Segments, consensus and heads (:class:`TSNSettings`).

    Input ``(N, T, 3, H, W)`` (``NTCHW``), output logits ``(N, num_classes)`` in both modes. The
    colour order and normalisation the input needs are the registered spec's (``model.spec``).
    """

    def __init__(self, base_model: nn.Module, num_classes: int,
                 settings: TSNSettings = TSNSettings()) -> None:
        super().__init__()
        consensus, num_segments = settings.consensus, settings.num_segments
        if consensus not in CONSENSUS_TYPES:
            raise ValueError(f"unknown consensus {consensus!r}; known: {', '.join(CONSENSUS_TYPES)}")
        if num_classes < 1 or num_segments < 1:
            raise ValueError(f"num_classes and num_segments must be >= 1, got {num_classes} and "
                             f"{num_segments}")
        self.num_classes = num_classes
        self.num_segments = num_segments
        self.consensus_type = consensus
        self.img_feature_dim = settings.img_feature_dim
        self.base_model = base_model
        self.dropout = nn.Dropout(p=settings.dropout)
        frame_dim = num_classes if consensus == "avg" else settings.img_feature_dim
        self.new_fc = nn.Linear(base_model.num_features, frame_dim)
        nn.init.normal_(self.new_fc.weight, 0.0, 0.001)
        nn.init.zeros_(self.new_fc.bias)
        self.consensus: nn.Module
        if consensus == "avg":
            self.consensus = AvgConsensus()
        elif consensus == "trn":
            self.consensus = RelationModule(settings.img_feature_dim, num_segments, num_classes)
        else:
            self.consensus = RelationModuleMultiScale(settings.img_feature_dim, num_segments,
                                                      num_classes, settings.subsample_num,
                                                      relation_seed=settings.relation_seed)
        self.partial_bn = settings.partial_bn
        self.train()

    def train(self, mode: bool = True) -> "TSN":
        """Set train/eval mode, then re-apply partial BN (which ``nn.Module.train`` would undo)."""
        super().train(mode)
        if self.partial_bn:
            bns = [m for m in self.base_model.modules()
                   if isinstance(m, nn.modules.batchnorm._BatchNorm)]
            for bn in bns[1:]:
                bn.eval()
                for p in bn.parameters(recurse=False):
                    p.requires_grad_(False)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 5 or x.shape[1] != self.num_segments:
            raise FastvidError(f"{type(self).__name__} expects (N, {self.num_segments}, C, H, W) "
                               f"(NTCHW, num_segments={self.num_segments}), got {tuple(x.shape)}")
        feats = self.base_model(x.flatten(0, 1))
        feats = self.new_fc(self.dropout(feats))
        feats = feats.reshape(-1, self.num_segments, feats.shape[-1])
        return self.consensus(feats)

    def optim_param_groups(self, lr: float, weight_decay: float) -> list[dict[str, Any]]:
        """TSN's optimiser policies; see :func:`tsn_param_groups`."""
        return tsn_param_groups(self, lr, weight_decay)

    def convert_state_dict(self, state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Map fastvid, TRN-pytorch or ImageNet backbone layouts onto this model's names.

        * ``module.`` (DataParallel) prefixes are stripped; TRN-pytorch names then match ours;
        * TRN-pytorch ``dropout=0`` checkpoints' ``base_model.fc.*`` becomes ``new_fc.*``;
        * ``base_model.*`` goes through the backbone's own ``convert_state_dict`` (BN-Inception:
          ``(1, C)`` BN tensors, missing ``num_batches_tracked``);
        * a bare backbone file (keys without ``base_model.``, e.g. ``conv1_7x7_s2.weight``) is
          converted by the backbone (its ImageNet classifier dropped) and prefixed; every other
          key of this model (``new_fc``, consensus) is filled from the model's current state,
          and logged, so a strict load keeps the heads at their initialisation.

        Anything else passes through for the strict key check to name.
        """
        stripped = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
        own = self.state_dict()
        backbone_convert = getattr(self.base_model, "convert_state_dict", None)
        ours = ("base_model.", "new_fc.", "consensus.")
        own_backbone = {k[len("base_model."):] for k in own if k.startswith("base_model.")}
        if not any(k.startswith(ours) for k in stripped) and own_backbone & set(stripped):
            backbone = backbone_convert(stripped) if backbone_convert is not None else stripped
            out = {"base_model." + k: v for k, v in backbone.items()}
            kept = [k for k in own if not k.startswith("base_model.")]
            for key in kept:
                out[key] = own[key]
            log.info("backbone-only weights: %d tensors go to base_model; %s keep their current "
                     "values", len(backbone), ", ".join(sorted({k.rsplit(".", 1)[0] for k in kept})))
            return out
        if "base_model.fc.weight" in stripped and "new_fc.weight" not in stripped:
            for name in ("weight", "bias"):
                if f"base_model.fc.{name}" in stripped:
                    stripped[f"new_fc.{name}"] = stripped.pop(f"base_model.fc.{name}")
        sub = {k[len("base_model."):]: v for k, v in stripped.items() if k.startswith("base_model.")}
        if backbone_convert is not None:
            sub = backbone_convert(sub)
        out = {"base_model." + k: v for k, v in sub.items()}
        out.update({k: v for k, v in stripped.items() if not k.startswith("base_model.")})
        return out


#: TRN is TSN with a relation consensus; the name exists for readers looking for it.
TRN = TSN


def validate_trn_config(cfg: Any) -> None:
    """TRN's own ``model.*`` keys (the spec's ``validate_config``); raises :class:`ConfigError`
    naming the key. ``cfg`` is a :class:`fastvid.config.Config` with its defaults resolved."""
    m = cfg.model
    if m.consensus not in CONSENSUS_TYPES:
        raise ConfigError(f"'model.consensus' is {m.consensus!r}; expected one of "
                          f"{', '.join(CONSENSUS_TYPES)}")
    if m.consensus == "trn_multiscale" and m.num_segments < 2:
        raise ConfigError(f"'model.num_segments' is {m.num_segments}; trn_multiscale needs >= 2 "
                          f"(relations between frames)")
    for key in ("subsample_num", "img_feature_dim"):
        if getattr(m, key) < 1:
            raise ConfigError(f"'model.{key}' must be positive")


@register_model(arch="trn", backbone="bninception", input_layout="NTCHW",
                color=BNInception.input_color, mean=BNInception.input_mean,
                std=BNInception.input_std, crop_size=224, num_frames=8, sampling="tsn",
                # multi-scale and single-scale relation heads end in the classifier; with avg
                # consensus new_fc is it (with a relation head it is the feature projection).
                # TRN-pytorch with dropout 0 and avg consensus replaced base_model.fc instead.
                classifier=("consensus.fc_fusion_scales.0.3", "consensus.classifier.3", "new_fc",
                            "base_model.fc"),
                # every relation scale ends in its own classifier: all are permuted together
                class_rows=(r"consensus\.fc_fusion_scales\.\d+\.3", r"consensus\.classifier\.3",
                            r"new_fc", r"base_model\.fc"),
                config_keys=("num_segments", "consensus", "img_feature_dim", "dropout",
                             "subsample_num", "partial_bn"),
                arch_keys=("consensus", "num_segments", "img_feature_dim", "subsample_num"),
                validate_config=validate_trn_config)
def trn_bninception(num_classes: int, **settings: Any) -> TSN:
    """TRN (or TSN with ``consensus="avg"``) on BN-Inception; input ``(N, T, 3, H, W)`` BGR.

    Keyword arguments: the fields of :class:`TSNSettings` (its defaults); others (the spec the
    registry passes) are ignored.
    """
    known = {f.name for f in fields(TSNSettings)}
    return TSN(BNInception(num_classes=0), num_classes,
               TSNSettings(**{k: v for k, v in settings.items() if k in known}))
