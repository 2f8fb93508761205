"""Out-of-tree model families, loader backends and engine backends, loaded by name.

A plugin is an importable module that registers what it adds when imported
(``@register_model(...)``, ``register_loader(...)``, ``register_engine(...)``), exactly as the
in-tree families and backends do. ``FASTVID_PLUGINS=pkg.mod1,pkg.mod2 fastvid ...`` imports
them before the command line is built, so their names are ``--loader`` / ``--backend`` /
``model.arch`` choices like the built-in ones; the variable travels to ``torchrun`` ranks and
loader worker processes with the rest of the environment.
"""
from __future__ import annotations

import importlib
import os
from typing import Optional, Sequence

from fastvid.errors import FastvidError

__all__ = ["PLUGINS_ENV", "PluginError", "plugin_names", "load_plugins"]

PLUGINS_ENV = "FASTVID_PLUGINS"

_LOADED: list[str] = []


class PluginError(FastvidError, ImportError):
    """A module named in ``FASTVID_PLUGINS`` cannot be imported."""


def plugin_names(text: Optional[str] = None) -> list[str]:
    """The module names of ``text`` (default: ``$FASTVID_PLUGINS``), comma- or space-separated."""
    text = os.environ.get(PLUGINS_ENV, "") if text is None else text
    return [name for name in text.replace(",", " ").split() if name]


def load_plugins(names: Optional[Sequence[str]] = None) -> list[str]:
    """Import each plugin module once (default: those of ``$FASTVID_PLUGINS``); returns every
    plugin loaded so far. A module that does not import raises :class:`PluginError` naming it
    and the variable."""
    for name in plugin_names() if names is None else names:
        if name in _LOADED:
            continue
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"{PLUGINS_ENV}: cannot import plugin module {name!r}: {exc} "
                              f"(is its folder on PYTHONPATH?)") from exc
        _LOADED.append(name)
    return list(_LOADED)
