"""fastvid's exceptions: one root, :class:`FastvidError`, with the specific errors under it.

Everything that means bad input or an unavailable feature is a ``FastvidError``; the CLI shows
those as one line without a traceback (``fastvid.cli.common.friendly_errors``). Errors about a
config value or a list line also derive from ``ValueError``, as they always did, so code that
caught ``ValueError`` keeps working.
"""

import errno as _errno
import os as _os
import shutil as _shutil
from pathlib import Path as _Path
from typing import Optional as _Optional

__all__ = ["FastvidError", "ConfigError", "ListError", "DataError", "WeightsError",
           "CheckpointError", "BackendUnavailable", "TrainingAborted", "write_error_message",
           "is_write_failure"]



class FastvidError(RuntimeError):
    """Base class for errors that mean bad input or an unavailable feature (shown without traceback)."""


class ConfigError(FastvidError, ValueError):
    """A config file or override is invalid; the message names the key and source."""


class ListError(FastvidError, ValueError):
    """A dataset list or folder is malformed; the message names file and line."""


class DataError(FastvidError):
    """A sample could not be read/decoded, or too many samples failed."""


class WeightsError(FastvidError):
    """A weights file cannot be read or does not fit the model."""


class CheckpointError(FastvidError):
    """A checkpoint is unreadable or belongs to another model/config."""


class BackendUnavailable(FastvidError):
    """A loader or engine backend needs a package or device that is missing."""


class TrainingAborted(FastvidError):
    """Training stopped on purpose (non-finite loss, too many bad samples, signal)."""


_ERRNO_TEXT = {_errno.ENOSPC: "no space left on the device", _errno.EDQUOT: "disk quota exceeded",
               _errno.EROFS: "read-only file system", _errno.EACCES: "permission denied",
               _errno.EPERM: "operation not permitted", _errno.ENOENT: "folder does not exist",
               _errno.EISDIR: "is a directory", _errno.ENOTDIR: "a parent is not a directory"}


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _oserror_in(exc: BaseException) -> _Optional[OSError]:
    """The OSError in ``exc`` or its causes; torch.save's C++ writer raises a RuntimeError
    ("unexpected pos ...") with no errno, so a full disk is recognised by the free space left."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno is not None:
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def _free_space(path: "str | _Path") -> tuple[_Path, _Optional[int]]:
    """The nearest existing folder above ``path`` (the file need not exist yet) and its free
    bytes (None when they cannot be read)."""
    probe = _Path(path).parent
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        return probe, _shutil.disk_usage(probe).free
    except OSError:
        return probe, None


def is_write_failure(exc: BaseException, path: "str | _Path", needed: _Optional[int] = None) -> bool:
    """Whether ``exc``, raised while writing ``path``, is the machine's state (disk full,
    read-only, permission) rather than a bug: true for such an errno in ``exc`` or its causes,
    and for any error when the folder has less than ``needed`` (or 1 MB) free."""
    os_exc = _oserror_in(exc)
    if os_exc is not None:
        return os_exc.errno in _ERRNO_TEXT
    return _low_on_space(_free_space(path)[1], needed)


def _low_on_space(free: _Optional[int], needed: _Optional[int]) -> bool:
    """Less than ``needed`` (or 1 MB) free: an error without an errno counts as a full disk."""
    return free is not None and free < max(needed or 0, 1 << 20)


def write_error_message(what: str, path: "str | _Path", exc: BaseException,
                        needed: _Optional[int] = None) -> str:
    """One line for a failed write of ``what`` (checkpoint, engine, report ...) to ``path``.

    Names the file and the cause in words (no space left, read-only file system, permission
    denied, ...); for a full disk also the free space there and, when known, the size needed.
    An exception without an errno (torch.save's writer) counts as a full disk when less than
    ``needed`` (or 1 MB) is free.
    """
    path = _Path(path)
    os_exc = _oserror_in(exc)
    code = os_exc.errno if os_exc is not None else None
    probe, free = _free_space(path)
    if code is None and _low_on_space(free, needed):
        code = _errno.ENOSPC
    if code is None:
        first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        return f"cannot write {what} {path}: {first}"
    text = _ERRNO_TEXT.get(code) or _os.strerror(code).lower()
    msg = f"cannot write {what} {path}: {text}"
    if code in (_errno.ENOSPC, _errno.EDQUOT):
        parts = []
        if free is not None:
            parts.append(f"{_human(free)} free on {probe}")
        if needed:
            parts.append(f"the {what} needs about {_human(needed)}")
        if parts:
            msg += f" ({', '.join(parts)})"
        msg += "; free some space or write elsewhere"
    elif code == _errno.EROFS:
        msg += f" ({probe} is mounted read-only); write elsewhere"
    elif code in (_errno.EACCES, _errno.EPERM):
        msg += f" (no write permission on {probe if not path.exists() else path})"
    return msg
