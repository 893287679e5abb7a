"""One node per data directory: an exclusive lock on ``<data_dir>/node.lock``.

Two nodes sharing a data directory would write the same state copy, buckets and compile
cache under each other. :class:`DataDirLock` takes ``flock(LOCK_EX | LOCK_NB)`` on the lock
file and writes the holder's pid and command line into it, so the node that is refused
can say who holds it (:class:`DataDirInUse`). The kernel drops the lock when its holder
exits, however it exits: a lock file left behind by a dead process blocks nothing, and
is simply taken over.

The lock belongs to one open file description: a second :class:`DataDirLock` on the same
directory is refused in the same process as it is in another. The descriptor is
close-on-exec, so a child the node starts (its nats-server, a compile) never keeps the
lock after the node has let go of it.
"""

from __future__ import annotations

import fcntl
import logging
import os
import shlex
import sys
from pathlib import Path
from types import TracebackType

from drupelet.node.errors import DrupeletError

log = logging.getLogger(__name__)

LOCK_FILE = "node.lock"
MAX_HOLDER_BYTES = 4096
"""How much of the lock file is read to name its holder."""


class DataDirInUse(DrupeletError):
    """Another node holds the data directory. ``path`` is the directory, ``pid`` the
    holder's process id (None when it could not be read), ``command`` its command line."""

    code = "data-dir-in-use"

    def __init__(self, path: Path, pid: int | None, command: str = "") -> None:
        who = f"pid {pid}" if pid is not None else "pid unknown"
        if command:
            who += f": {command}"
        super().__init__(f"data directory {path} is in use by another drupelet node ({who})")
        self.path = path
        self.pid = pid
        self.command = command


def holder_command() -> str:
    """This process's command line as the lock file records it (``drupelet up --config …``)."""
    argv = list(sys.argv) or [sys.executable]
    argv[0] = os.path.basename(argv[0]) or sys.executable
    return shlex.join(argv)


class DataDirLock:
    """The lock on a data directory. ``acquire()`` takes it or raises :class:`DataDirInUse`;
    ``release()`` gives it back (idempotent). As a context manager: held inside the block.
    The directory is created when it does not exist."""

    def __init__(self, path: Path, *, command: str | None = None) -> None:
        self.path = Path(path)
        self.file = self.path / LOCK_FILE
        self.command = command
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock, or raise :class:`DataDirInUse` naming the process that has it.
        Blocking file work (a mkdir, an open, a small write): call it before the event
        loop runs, or in a thread."""
        if self._fd is not None:
            return
        self.path.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.file, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            pid, command = _holder(fd)
            os.close(fd)
            raise DataDirInUse(self.path, pid, command) from None
        except BaseException:
            os.close(fd)
            raise
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n{self.command or holder_command()}\n".encode(), 0)
        except OSError:
            os.close(fd)  # closing drops the lock
            raise
        self._fd = fd
        log.debug("data directory %s locked (%s)", self.path, self.file)

    def release(self) -> None:
        """Give the lock back; its file stays, emptied. Does nothing when not held."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            os.ftruncate(fd, 0)  # while still held: the next holder writes after we let go
        except OSError as exc:
            log.warning("could not empty %s: %s", self.file, exc)
        finally:
            os.close(fd)  # closing the only descriptor releases the flock

    def __enter__(self) -> DataDirLock:
        self.acquire()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.release()


def _holder(fd: int) -> tuple[int | None, str]:
    """(pid, command line) as the holder wrote them; (None, "") while it has not yet."""
    try:
        text = os.pread(fd, MAX_HOLDER_BYTES, 0).decode("utf-8", "replace")
    except OSError as exc:
        log.debug("cannot read the lock file's holder: %s", exc)
        return None, ""
    first, _, rest = text.partition("\n")
    pid = int(first) if first.strip().isdigit() else None
    return pid, rest.strip().replace("\n", " ")


__all__ = ["LOCK_FILE", "DataDirInUse", "DataDirLock", "holder_command"]
