"""Atomic file writes: temp file in the same folder, fsync, rename, fsync of the folder. A crash
(even kill -9) leaves the previous file or none, never half of one; a failed write raises a
:class:`fastvid.errors.FastvidError` naming the file, the cause
(:func:`fastvid.errors.write_error_message`) and whether the previous file is intact.

:func:`write_text_atomic` writes small text files (JSON reports, summaries); :func:`write_atomic`
takes a writer function (``fastvid.checkpoint.save_checkpoint`` streams ``torch.save`` there).
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import BinaryIO, Callable, Optional

from fastvid.errors import FastvidError, write_error_message

__all__ = ["write_text_atomic", "write_atomic", "fsync_dir", "WriteError"]


class WriteError(FastvidError):
    """A result file could not be written (disk full, read-only, permission)."""


def write_atomic(path: str | Path, write: Callable[[BinaryIO], None], what: str = "file", *,
                 needed: Optional[int] = None, error: type[FastvidError] = WriteError) -> Path:
    """Replace ``path`` with what ``write(fh)`` writes, atomically (creating its folder).

    Args:
        path: The file to replace.
        write: Writes the content to the open binary temp file.
        what: Names the file in the error ("checkpoint", "run summary", ...).
        needed: About how many bytes the file takes (said when the disk is full, and an error
            without an errno -- torch.save's C++ writer -- counts as a full disk below it).
        error: The :class:`FastvidError` subclass raised when the write fails (OSError, or the
            RuntimeError torch.save raises for a failed write).

    Returns the path.
    """
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise error(write_error_message(what, path, exc, needed=needed)) from exc
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(exc, (OSError, RuntimeError)) and not isinstance(exc, FastvidError):
            kept = "the previous file is intact" if path.exists() else "no earlier file existed"
            msg = write_error_message(what, path, exc, needed=needed)
            raise error(f"{msg}; {kept}") from exc
        raise
    fsync_dir(path.parent)
    return path


def fsync_dir(folder: str | Path) -> None:
    """Make renames into ``folder`` durable (best effort: a file system without directory
    fsync keeps the rename as it is)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError:
        pass


def write_text_atomic(path: str | Path, text: str, what: str = "file",
                      error: type[FastvidError] = WriteError) -> Path:
    """Replace ``path`` with ``text`` (UTF-8) atomically (creating its folder); returns the path.
    A failed write raises ``error`` (as :func:`write_atomic`)."""
    data = text.encode("utf-8")
    return write_atomic(path, lambda fh: fh.write(data), what, needed=len(data), error=error)
