"""Atomic writes of small files (JSON reports, summaries): temp file in the same folder, fsync,
rename. A crash leaves the previous file or none, never half of one; a failed write raises a
:class:`fastvid.errors.FastvidError` naming the file and the cause
(:func:`fastvid.errors.write_error_message`)."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path

from fastvid.errors import FastvidError, write_error_message

__all__ = ["write_text_atomic", "WriteError"]


class WriteError(FastvidError):
    """A result file could not be written (disk full, read-only, permission)."""


def write_text_atomic(path: str | Path, text: str, what: str = "file") -> Path:
    """Replace ``path`` with ``text`` atomically (creating its folder); returns the path."""
    path = Path(path)
    data = text.encode("utf-8")
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise WriteError(write_error_message(what, path, exc, needed=len(data))) from exc
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass
    return path
