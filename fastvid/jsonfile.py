"""JSON files fastvid writes for people to read: indented, with number lists on one line, atomic.

A 174-class confusion matrix indented one number per line is 30,000 lines; kept one row per line
it reads as a matrix.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

__all__ = ["dumps", "write_json"]

# An innermost JSON array: no nested array, object or string inside.
_FLAT_ARRAY = re.compile(r"\[[^\[\]{}\"]*\]")


def dumps(obj: Any, indent: int = 2) -> str:
    """``json.dumps(obj, indent=indent)`` with every flat array of numbers on one line."""
    text = json.dumps(obj, indent=indent, default=str)
    return _FLAT_ARRAY.sub(lambda m: "[" + ", ".join(x.strip() for x in m.group(0)[1:-1].split(",")
                                                      if x.strip()) + "]", text)


def write_json(path: str | Path, obj: Any) -> Path:
    """Write ``obj`` to ``path`` atomically (temp file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(dumps(obj) + "\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return path
