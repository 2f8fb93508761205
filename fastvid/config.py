"""Typed run configuration: YAML files + ``--set key=value`` overrides -> dataclasses.

A config file is flat-ish YAML with three sections (``model``, ``data``, ``train``) shaped like the
seed's ``jester_config.yaml``. Unknown keys are an error naming the key (and the file); the resolved
config is written into every run directory so a run can be reproduced from its folder alone.

The model's facts are its registered spec's (:class:`fastvid.models.ModelSpec`): crop
(``data.image_size``), frames (``model.num_segments``, ``data.clip_len``) and
``data.sampling`` are unset (None) by default and resolved from the spec of the configured
``model.arch`` / ``model.backbone`` (:func:`resolve_spec_defaults`); a value set in the YAML,
with ``--set`` or taken from a checkpoint wins. A model family's own keys are checked by its
spec's ``validate_config``; this module knows no family's rules.
"""
from __future__ import annotations

import copy
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, get_args, get_origin, get_type_hints

import yaml

from fastvid.errors import ConfigError

__all__ = [
    "ConfigError",
    "ModelConfig",
    "DataConfig",
    "TrainConfig",
    "Config",
    "load_config",
    "apply_overrides",
    "config_from_dict",
    "save_config",
    "model_name",
    "model_spec",
    "resolve_spec_defaults",
    "SPEC_DEFAULTS",
]


@dataclass
class ModelConfig:
    arch: str = "trn"  # trn | tpn
    backbone: str = "bninception"  # the registered pairs: fastvid.models.model_specs()
    consensus: str = "trn_multiscale"  # avg | trn | trn_multiscale (TRN only)
    num_classes: Optional[int] = None  # default: from categories.txt or the checkpoint
    num_segments: Optional[int] = None  # TSN segments (TRN, TSM); default: the spec's num_frames
    subsample_num: int = 3  # TRN multi-scale: relations sampled per scale
    img_feature_dim: int = 256  # TRN: per-frame feature size fed to the relation head
    dropout: float = 0.8
    partial_bn: bool = True  # TSN: freeze all BN but the first (fine-tuning from ImageNet)
    aux_loss_weight: float = 0.5  # TPN auxiliary head
    average_clips: str = "prob"  # prob | score: how test views are averaged
    pretrained: Optional[str] = None


@dataclass
class DataConfig:
    format: Optional[str] = None  # frames | videos; detected from the lists when unset
    train_list: Optional[str] = None  # default train_videofolder.txt / train_list.txt
    val_list: Optional[str] = None  # default val_videofolder.txt / val_list.txt
    frames_dir: str = "20bn-jester-v1"  # frame folders live here (Jester layout)
    videos_dir: str = ""  # video paths in lists are relative to ROOT/videos_dir
    frame_tmpl: str = "{:05d}.jpg"
    image_size: Optional[int] = None  # crop fed to the network; default: the spec's crop_size
    scale_size: int = 256  # short side before the crop at test time
    train_aug: str = "multiscale"  # multiscale (TSN corner crops) | random_resized_crop
    flip: bool = False  # off for Jester: it swaps left/right gesture classes
    flip_label_map: Optional[dict] = None  # {class_index: mirrored_class_index} when flipping
    sampling: Optional[str] = None  # tsn (sparse segments) | dense (clips); default: the spec's
    clip_len: Optional[int] = None  # dense sampling: frames per clip; default: the spec's num_frames
    frame_interval: int = 8  # dense sampling: stride between sampled frames
    test_clips: int = 1
    test_crops: int = 1  # 1 (centre) | 3 | 10
    color: Optional[str] = None  # BGR | RGB; default from the model's spec
    mean: Optional[list] = None
    std: Optional[list] = None
    max_bad_fraction: float = 0.01  # stop the run when more samples than this fail to decode


@dataclass
class TrainConfig:
    epochs: int = 120
    batch_size: int = 24
    lr: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    lr_schedule: str = "step"  # step (the papers': x lr_gamma at lr_steps) | cosine (to 0 at the end)
    lr_steps: list = field(default_factory=lambda: [50, 100])
    lr_gamma: float = 0.1
    warmup_epochs: int = 0  # linear warm-up from lr / 10 over this many epochs (either schedule)
    clip_grad_norm: Optional[float] = 20.0
    label_smoothing: float = 0.0
    workers: int = 2
    seed: int = 0
    log_interval: int = 20  # steps between metric log lines
    ckpt_interval: int = 0  # also save last.pt every N steps (0: only per epoch)
    eval_interval: int = 1  # epochs between evaluations
    max_nonfinite_steps: int = 5  # consecutive non-finite losses that stop the run
    # Recompute BN running statistics over this many training batches before each evaluation
    # ("precise BN", as SlowFast's BN.USE_PRECISE_STATS); 0 keeps the running averages. Needed
    # when training from scratch for few steps, where the averages lag the fast-moving weights.
    precise_bn_batches: int = 0


@dataclass
class Config:
    """A run's configuration. Built through :func:`load_config`, :func:`config_from_dict`,
    :func:`apply_overrides`, :func:`replace` or ``Config()``, its :data:`SPEC_DEFAULTS` keys
    always hold concrete values (the model spec's where nothing else set them)."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def __post_init__(self) -> None:
        # Keys whose value is the spec's default rather than one a user set: they follow the
        # model when model.arch / model.backbone change later (an override, replace()).
        self._from_spec: set[str] = set()
        resolve_spec_defaults(self)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def model_name(self) -> str:
        return model_name(self.model)

    @property
    def spec(self) -> Any:
        """The :class:`fastvid.models.ModelSpec` of the configured model."""
        return model_spec(self.model)

    @property
    def frames_per_view(self) -> int:
        """Frames in one clip the model sees: ``data.clip_len`` for 3D models, else
        ``model.num_segments``."""
        return self.data.clip_len if self.spec.is_3d else self.model.num_segments

    def input_shape(self, batch: int) -> tuple[int, ...]:
        """Batch-contract shape of one view at ``data.image_size`` for the configured model."""
        return self.spec.input_shape(batch, self.frames_per_view, self.data.image_size)

    @property
    def input_spec(self) -> dict[str, Any]:
        """Channel order, mean and std the loaders must produce for this model."""
        spec = self.spec
        return {
            "color": self.data.color or spec.color,
            "mean": list(self.data.mean or spec.mean),
            "std": list(self.data.std or spec.std),
        }


def model_spec(model_cfg: ModelConfig) -> Any:
    """The registered :class:`fastvid.models.ModelSpec` for an (arch, backbone) pair."""
    from fastvid.models import UnknownModel, find_model

    try:
        return find_model(model_cfg.arch, model_cfg.backbone)
    except UnknownModel as exc:
        raise ConfigError(str(exc)) from None


#: Config keys that default to a fact of the configured model's spec: key -> spec attribute.
SPEC_DEFAULTS: dict[str, str] = {
    "data.image_size": "crop_size",
    "model.num_segments": "num_frames",
    "data.clip_len": "num_frames",
    "data.sampling": "sampling",
}


def resolve_spec_defaults(cfg: Config) -> Config:
    """Fill each :data:`SPEC_DEFAULTS` key that is unset, or still holds an earlier spec's
    default, from the configured model's spec; returns ``cfg`` (changed in place).

    Raises:
        ConfigError: ``model.arch`` / ``model.backbone`` name no registered model.
    """
    from_spec: set[str] = cfg.__dict__.setdefault("_from_spec", set())
    pending = [k for k in SPEC_DEFAULTS
               if k in from_spec or getattr(getattr(cfg, k.split(".")[0]), k.split(".")[1]) is None]
    if not pending:
        return cfg
    spec = model_spec(cfg.model)
    for dotted in pending:
        section, key = dotted.split(".")
        setattr(getattr(cfg, section), key, getattr(spec, SPEC_DEFAULTS[dotted]))
        from_spec.add(dotted)
    return cfg


def model_name(model_cfg: ModelConfig) -> str:
    """Registry name for an (arch, backbone) pair."""
    return model_spec(model_cfg).name


_SECTIONS = {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


def _coerce(value: Any, typ: Any, key: str, source: str) -> Any:
    """Check/convert a YAML or CLI value to the dataclass field type."""
    origin = get_origin(typ)
    if origin is not None and type(None) in get_args(typ):  # Optional[X]
        if value is None or (isinstance(value, str) and value.lower() in ("null", "none", "")):
            return None
        inner = [a for a in get_args(typ) if a is not type(None)][0]
        return _coerce(value, inner, key, source)
    try:
        if typ is bool:
            if isinstance(value, bool):
                return value
            if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
                return True
            if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
                return False
            raise ValueError(f"expected a boolean, got {value!r}")
        if typ is int:
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(f"expected an integer, got {value!r}")
            return int(value)
        if typ is float:
            if isinstance(value, bool):
                raise ValueError(f"expected a number, got {value!r}")
            return float(value)
        if typ is str:
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise ValueError(f"expected a string, got {value!r}")
            return str(value)
        if typ is list or origin is list:
            if isinstance(value, str):
                value = yaml.safe_load(value) if value.strip().startswith("[") else [
                    yaml.safe_load(v) for v in value.split(",") if v.strip()]
            if isinstance(value, (int, float)):
                value = [value]
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"expected a list, got {value!r}")
            return list(value)
        if typ is dict or origin is dict:
            if isinstance(value, str):
                value = yaml.safe_load(value)
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping, got {value!r}")
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: bad value for '{key}': {exc}") from None
    return value


def config_from_dict(raw: Mapping[str, Any], source: str = "<dict>") -> Config:
    """Build a Config from nested dicts, rejecting unknown sections and keys."""
    cfg = Config()
    if raw is None:
        return cfg
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{source}: top level must be a mapping with sections model/data/train")
    for section, values in raw.items():
        if section not in _SECTIONS:
            raise ConfigError(f"{source}: unknown section '{section}' (known: {', '.join(_SECTIONS)})")
        if values is None:
            continue
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source}: section '{section}' must be a mapping")
        for key, value in values.items():
            _set(cfg, f"{section}.{key}", value, source)
    _validate(cfg, source)
    return cfg


def _set(cfg: Config, dotted: str, value: Any, source: str) -> None:
    parts = dotted.split(".")
    if len(parts) != 2 or parts[0] not in _SECTIONS:
        raise ConfigError(f"{source}: unknown config key '{dotted}' "
                          f"(keys look like model.num_segments, train.lr)")
    section, key = parts
    obj = getattr(cfg, section)
    hints = get_type_hints(type(obj))
    if key not in hints:
        known = ", ".join(f.name for f in fields(obj))
        raise ConfigError(f"{source}: unknown config key '{dotted}'; {section} keys: {known}")
    value = _coerce(value, hints[key], dotted, source)
    setattr(obj, key, value)
    from_spec: set[str] = cfg.__dict__.setdefault("_from_spec", set())
    if value is not None:
        from_spec.discard(dotted)  # a value someone set: it stays when the model changes
    elif dotted in SPEC_DEFAULTS:
        from_spec.add(dotted)  # null: back to the spec's default


_CHOICES = {
    "model.average_clips": ("prob", "score"),
    "data.format": (None, "frames", "videos"),
    "data.train_aug": ("multiscale", "random_resized_crop"),
    "data.sampling": ("tsn", "dense"),
    "data.test_crops": (1, 3, 10),
    "data.color": (None, "BGR", "RGB"),
    "train.lr_schedule": ("step", "cosine"),
}


def _validate(cfg: Config, source: str) -> None:
    try:
        spec = model_spec(cfg.model)
        resolve_spec_defaults(cfg)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    for dotted, choices in _CHOICES.items():
        section, key = dotted.split(".")
        value = getattr(getattr(cfg, section), key)
        if value not in choices:
            shown = ", ".join(str(c) for c in choices if c is not None)
            raise ConfigError(f"{source}: '{dotted}' is {value!r}; expected one of {shown}")
    positive = ["model.num_segments", "train.epochs", "train.batch_size", "data.image_size",
                "data.clip_len", "data.frame_interval", "data.test_clips"]
    for dotted in positive:
        section, key = dotted.split(".")
        if getattr(getattr(cfg, section), key) <= 0:
            raise ConfigError(f"{source}: '{dotted}' must be positive")
    if cfg.train.lr <= 0:
        raise ConfigError(f"{source}: 'train.lr' must be positive")
    if cfg.train.warmup_epochs < 0:
        raise ConfigError(f"{source}: 'train.warmup_epochs' must be >= 0")
    if not 0.0 <= cfg.model.dropout < 1.0:
        raise ConfigError(f"{source}: 'model.dropout' must be in [0, 1)")
    if spec.validate_config is not None:
        try:
            spec.validate_config(cfg)
        except ConfigError as exc:
            raise ConfigError(f"{source}: {exc}") from None


def load_config(path: str | Path | None, overrides: Iterable[str] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides."""
    if path is None:
        cfg = Config()
    else:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            raw = yaml.safe_load(path.read_text())
        except UnicodeDecodeError as exc:
            raise ConfigError(f"{path}: not a text file (byte {exc.start} is not UTF-8); -c takes a "
                              f"YAML config such as configs/trn_bninception_jester.yaml") from None
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: invalid YAML: {exc}") from None
        cfg = config_from_dict(raw or {}, source=str(path))
    return apply_overrides(cfg, overrides)


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Apply ``key=value`` strings (``--set``); values are parsed as YAML scalars/lists."""
    cfg = copy.deepcopy(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value")
        key, text = item.split("=", 1)
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        _set(cfg, key.strip(), value, source="--set")
    _validate(cfg, "--set")
    return cfg


def save_config(cfg: Config, path: str | Path) -> None:
    Path(path).write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def replace(cfg: Config, **sections: Mapping[str, Any]) -> Config:
    """Copy of ``cfg`` with some keys changed, e.g. ``replace(cfg, train={"epochs": 2})``."""
    out = copy.deepcopy(cfg)
    for section, values in sections.items():
        for key, value in values.items():
            _set(out, f"{section}.{key}", value, "replace()")
    return resolve_spec_defaults(out)


