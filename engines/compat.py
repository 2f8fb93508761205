"""Does an engine fit the run it is used in? Its ``<artifact>.json`` against the config/checkpoint.

An engine runs whatever it was built from, on whatever tensor it gets: an engine built for TRN
(BGR, mean 104/117/128, std 1) fed TPN-TSM's RGB ImageNet-normalised batches of the same shape
runs and scores nonsense. :func:`check_engine_fits` compares what ``build-engine`` recorded
(model, input layout and shape, colour order, mean/std, sampling, classes) with what the caller
will feed it, and refuses a mismatch naming every field that differs.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Mapping, Optional

from fastvid.checkpoint import same_value

__all__ = ["Expected", "check_engine_fits", "expected_from_config"]

log = logging.getLogger(__name__)

# field -> (value the caller will use, where that value comes from), e.g.
# {"color": ("RGB", "config"), "num_classes": (27, "data/categories.txt")}; a None value is not checked.
Expected = Mapping[str, tuple[Any, str]]


def _lookup(meta: Mapping[str, Any], key: str) -> Any:
    """``meta[key]``, a dotted path into meta (``config.data.sampling``), or ``sample_shape``
    (``input_shape`` without the batch); None when absent."""
    if key in meta:
        return meta[key]
    if key == "sample_shape":
        shape = meta.get("input_shape")
        return list(shape[1:]) if isinstance(shape, (list, tuple)) else None
    value: Any = meta
    for part in key.split("."):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "(" + ",".join(_fmt(v) for v in value) + ")"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return repr(value) if isinstance(value, str) else str(value)


def _diff(key: str, have: Any, want: Any, source: str) -> str:
    if key == "classes" and isinstance(have, list) and isinstance(want, list) and len(have) == len(want):
        i = next(i for i, (h, w) in enumerate(zip(have, want)) if h != w)
        return f"classes: engine class {i} is {have[i]!r}, {source} says {want[i]!r}"
    if key == "classes" and isinstance(have, list) and isinstance(want, list):
        return f"classes: engine names {len(have)}, {source} {len(want)}"
    return f"{key}: engine {_fmt(have)} vs {source} {_fmt(want)}"


def check_engine_fits(meta: Mapping[str, Any], expected: Expected, path: str | Path) -> None:
    """Raise :class:`engines.EngineError` when ``meta`` differs from ``expected`` in any field.

    Fields the engine's description does not record (engines built by older versions or by
    :func:`engines.build_engine` without them) are logged as unchecked, not refused.
    """
    from .core import EngineError, meta_path

    diffs, unchecked = [], []
    for key, (want, source) in expected.items():
        if want is None:
            continue
        have = _lookup(meta, key)
        if have is None:
            unchecked.append(key)
        elif not same_value(have, want):
            diffs.append(_diff(key, have, want, source))
    if unchecked:
        log.warning("%s: its description does not record %s; not checked", path, ", ".join(unchecked))
    if diffs:
        raise EngineError(f"engine {path} was built for another input or model: {'; '.join(diffs)}. "
                          f"Use the config it was built with ({meta_path(path).name} keeps it under "
                          f"\"config\") or rebuild the engine with `fastvid build-engine`")


def expected_from_config(cfg: Any, num_classes: Optional[tuple[Optional[int], str]] = None,
                         classes: Optional[tuple[Optional[list[str]], str]] = None) -> dict[str, tuple[Any, str]]:
    """What a fastvid config will feed an engine: model, layout, sample shape, colour, mean/std,
    sampling; plus the class count and names when the caller knows them (categories.txt, checkpoint).
    """
    spec = cfg.input_spec
    out: dict[str, tuple[Any, str]] = {
        "model_name": (cfg.model_name, "config"),
        "input_layout": (cfg.spec.input_layout, "config"),
        "sample_shape": (list(cfg.input_shape(1)[1:]), "config"),
        "color": (spec["color"], "config"),
        "mean": (spec["mean"], "config"),
        "std": (spec["std"], "config"),
        "config.data.sampling": (cfg.data.sampling, "config"),
    }
    if cfg.data.sampling == "dense":
        out["config.data.frame_interval"] = (cfg.data.frame_interval, "config")
    if num_classes is not None:
        out["num_classes"] = num_classes
    if classes is not None:
        out["classes"] = classes
    return out
