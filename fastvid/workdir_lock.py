"""One ``fastvid train`` per run directory: an OS file lock on ``WORK_DIR/.fastvid.lock``.

Two runs on one ``--work-dir`` would interleave ``metrics.jsonl`` and overwrite each other's
checkpoints without a word. The lock is ``fcntl.flock`` on the lock file, so the kernel releases
it whenever the holder exits, however it exits (kill -9 included); the file itself holds a JSON
description of the holder (``pid``, ``command``, ``host``, ``started``) for the message the
second run prints. A lock file whose process is gone (no flock on it) is taken over, with a
note naming the run that left it. The holder removes the file when it releases the lock.

``flock`` locks are advisory and local to a machine's kernel: they hold on local disks and on
most network file systems with lock support (NFSv4, Lustre, GPFS); where a shared file system
ignores them, two runs on two machines are not detected.
"""
from __future__ import annotations

import datetime
import json
import os
import shlex
import socket
import sys
from pathlib import Path
from types import TracebackType
from typing import Any, Optional

from fastvid.errors import FastvidError

__all__ = ["LOCK_NAME", "WorkDirBusy", "WorkDirLock", "command_line"]

LOCK_NAME = ".fastvid.lock"


class WorkDirBusy(FastvidError):
    """Another process holds the run directory's lock."""


def command_line(argv: Optional[list[str]] = None) -> str:
    """This process's command as a user would type it (``python -m fastvid`` shown as ``fastvid``)."""
    argv = list(sys.argv if argv is None else argv)
    if argv and (argv[0].endswith(os.path.join("fastvid", "__main__.py")) or
                 os.path.basename(argv[0]) == "fastvid"):
        argv[0] = "fastvid"
    return shlex.join(argv)


def _read_holder(fd: int) -> dict[str, Any]:
    """The JSON the holder wrote, or {} (empty file, or one being written)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 1 << 16)
        holder = json.loads(data.decode("utf-8")) if data.strip() else {}
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):
        return {}


def _describe(holder: dict[str, Any]) -> str:
    if not holder:
        return "another process (it has not written its details yet)"
    host = holder.get("host")
    where = f" on {host}" if host and host != socket.gethostname() else ""
    return (f"PID {holder.get('pid', '?')}{where} ({holder.get('command', '?')}, started "
            f"{holder.get('started', '?')})")


class WorkDirLock:
    """``with WorkDirLock(work_dir):`` holds the run directory for this process.

    :meth:`acquire` creates ``work_dir`` when needed and raises :class:`WorkDirBusy` at once
    (no waiting) when another live process holds it, naming that process's PID and command.
    """

    def __init__(self, work_dir: str | Path) -> None:
        self.work_dir = Path(work_dir)
        self.path = self.work_dir / LOCK_NAME
        self._fd: Optional[int] = None
        self.took_over: Optional[dict[str, Any]] = None  # the dead holder's details, if any

    def acquire(self) -> "WorkDirLock":
        import fcntl

        if self._fd is not None:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_holder(fd)
                os.close(fd)
                raise WorkDirBusy(f"work dir {self.work_dir} is in use by {_describe(holder)}; "
                                  f"wait for it to end (or stop it), or train into another "
                                  f"--work-dir") from None
            except OSError:
                os.close(fd)
                raise
            # The releasing holder unlinks the file after we opened it: then we locked a file no
            # one else will ever open, and must lock the one now at the path instead.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(fd)
        if previous and previous.get("pid") != os.getpid():
            self.took_over = previous
        info = {"pid": os.getpid(), "command": command_line(), "host": socket.gethostname(),
                "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode("utf-8"), 0)
        self._fd = fd
        return self

    def release(self) -> None:
        """Remove the lock file and release the lock (idempotent)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            # Unlinked while still locked: a process that opens the path afterwards gets a new
            # file; one that opened the old file sees the inode change and retries (acquire).
            self.path.unlink(missing_ok=True)
        except OSError:
            pass
        os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> "WorkDirLock":
        return self.acquire()

    def __exit__(self, exc_type: Optional[type[BaseException]], exc: Optional[BaseException],
                 tb: Optional[TracebackType]) -> None:
        self.release()
