"""A small model registry: ``@register_model`` constructors looked up by ``create_model``."""
from __future__ import annotations

from typing import Any, Callable

import torch.nn as nn

__all__ = ["register_model", "create_model", "list_models"]

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register ``fn`` under its function name."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} registered twice")
    _MODELS[name] = fn
    return fn


def list_models() -> list[str]:
    _import_families()
    return sorted(_MODELS)


def create_model(name: str, **kwargs: Any) -> nn.Module:
    """Build a registered model; an unknown name raises with the known ones."""
    _import_families()
    if name not in _MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(_MODELS))}")
    return _MODELS[name](**kwargs)


def _import_families() -> None:
    # Model files register themselves on import; import them lazily so that importing the
    # registry stays cheap and a broken family names itself in the traceback.
    from . import bninception, tpn, trn  # noqa: F401
