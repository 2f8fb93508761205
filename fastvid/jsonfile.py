"""JSON files fastvid writes for people to read: indented, with number lists on one line, atomic.

A 174-class confusion matrix indented one number per line is 30,000 lines; kept one row per line
it reads as a matrix.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from fastvid.atomic import write_text_atomic

__all__ = ["dumps", "write_json"]

# An innermost JSON array: no nested array, object or string inside.
_FLAT_ARRAY = re.compile(r"\[[^\[\]{}\"]*\]")


def dumps(obj: Any, indent: int = 2) -> str:
    """``json.dumps(obj, indent=indent)`` with every flat array of numbers on one line."""
    text = json.dumps(obj, indent=indent, default=str)
    return _FLAT_ARRAY.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")
                                                      if x.strip()) + "]", text)


def write_json(path: str | Path, obj: Any, what: str = "file") -> Path:
    """Write ``obj`` to ``path`` atomically (:func:`fastvid.atomic.write_text_atomic`: temp file in
    the same folder, fsync, rename; a failed write names the file and the cause)."""
    return write_text_atomic(path, dumps(obj) + "\n", what)
