"""One `rekey run` per checkpoint: an exclusive flock on `<checkpoint>.lock`, holding `pid@host` of its owner.

The lock is an advisory `fcntl.flock` on a side file, so it goes with the process: a run killed with SIGKILL
leaves the file behind but not the lock, and the next run takes it at once. Readers (`status`, `plan`,
`verify`) never take it. The file is created readable by its owner only.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
from pathlib import Path
from types import TracebackType

from workers.errors import CheckpointError

LOCK_SUFFIX = ".lock"


class CheckpointBusyError(CheckpointError):
    """Another process holds the checkpoint's lock."""


def lock_path(checkpoint: Path) -> Path:
    return checkpoint.with_name(checkpoint.name + LOCK_SUFFIX)


def unwritable_message(checkpoint: Path, reason: str) -> str:
    """Why a checkpoint cannot be written, with advice that keeps its resume state."""
    return (f"{checkpoint}: cannot write the checkpoint ({reason}); make {checkpoint.parent} writable and run "
            "again: the checkpoint is kept as it is and the run resumes from it")


class CheckpointLock:
    """`with CheckpointLock(path):` for the whole of a run; CheckpointBusyError names the holder."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.path = lock_path(checkpoint)
        self._fd: int | None = None

    def acquire(self) -> None:
        try:
            self.checkpoint.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise CheckpointError(unwritable_message(self.checkpoint, exc.strerror or str(exc))) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 256, 0).decode("utf-8", "replace").strip() or "another process"
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise CheckpointError(f"{self.checkpoint}: cannot lock the checkpoint: {exc.strerror}") from None
            raise CheckpointBusyError(
                f"{self.checkpoint}: in use by another rekey run (pid@host {holder}); wait for it to finish "
                "or stop it, then run again") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}@{socket.gethostname()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing the last descriptor drops the flock
            self._fd = None

    def __enter__(self) -> CheckpointLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()
