"""One node per data directory: the lock in ``<data_dir>/node.lock``."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from drupelet.node.errors import DrupeletError
from drupelet.node.system.datalock import LOCK_FILE, DataDirInUse, DataDirLock

COMMAND = "drupelet up --config /etc/drupelet/node.toml"
CHILD_TIMEOUT_S = 30

HOLDER = """
import sys
from pathlib import Path
from drupelet.node.system.datalock import DataDirLock

lock = DataDirLock(Path(sys.argv[1]), command=sys.argv[2])
lock.acquire()
print("locked", flush=True)
sys.stdin.readline()  # hold it until the test closes stdin
lock.release()
"""


@contextmanager
def holder(data_dir: Path) -> Iterator[subprocess.Popen[str]]:
    """A child process holding the lock on ``data_dir`` until its stdin is closed."""
    proc = subprocess.Popen([sys.executable, "-c", HOLDER, str(data_dir), COMMAND], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline() == "locked\n"  # waits for the child to take the lock (or to die)
        yield proc
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        if proc.stdout is not None:
            proc.stdout.close()
        if proc.poll() is None:
            proc.wait(CHILD_TIMEOUT_S)


def in_use_message(data_dir: Path, pid: int, command: str) -> str:
    return f"data directory {data_dir} is in use by another drupelet node (pid {pid}: {command})"


def test_a_second_lock_in_the_same_process_is_refused(tmp_path: Path) -> None:
    with DataDirLock(tmp_path, command=COMMAND) as first:
        assert first.held
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(tmp_path).acquire()
    err = refused.value
    assert str(err) == in_use_message(tmp_path, os.getpid(), COMMAND)
    assert (err.path, err.pid, err.command) == (tmp_path, os.getpid(), COMMAND)
    assert isinstance(err, DrupeletError) and err.code == DataDirInUse.code == "data-dir-in-use"


def test_a_lock_held_by_another_process_is_refused_and_names_it(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    with holder(data_dir) as proc:
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(data_dir).acquire()
        assert str(refused.value) == in_use_message(data_dir, proc.pid, COMMAND)
        assert "\n" not in str(refused.value)
        assert refused.value.pid == proc.pid
    assert proc.returncode == 0
    with DataDirLock(data_dir) as lock:  # the child released it on its way out
        assert lock.held


def test_release_lets_the_next_one_in_and_is_idempotent(tmp_path: Path) -> None:
    first = DataDirLock(tmp_path, command=COMMAND)
    first.acquire()
    first.acquire()  # already held: nothing more
    second = DataDirLock(tmp_path, command="drupelet up")
    with pytest.raises(DataDirInUse):
        second.acquire()
    first.release()
    first.release()
    assert not first.held
    second.acquire()
    try:
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\ndrupelet up\n"
        with pytest.raises(DataDirInUse):
            first.acquire()
    finally:
        second.release()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # the file stays, emptied


def test_a_stale_lock_file_of_a_dead_process_does_not_block(tmp_path: Path) -> None:
    with holder(tmp_path) as proc:
        proc.send_signal(signal.SIGKILL)  # no release: the kernel drops the flock at exit
        proc.wait(CHILD_TIMEOUT_S)
    assert (tmp_path / LOCK_FILE).read_text().startswith(f"{proc.pid}\n")  # its pid is still written there
    with DataDirLock(tmp_path, command=COMMAND):
        assert (tmp_path / LOCK_FILE).read_text() == f"{os.getpid()}\n{COMMAND}\n"


def test_a_child_the_holder_starts_does_not_keep_the_lock(tmp_path: Path) -> None:
    """A node's own nats-server outlives nothing it should not: the descriptor is not inherited."""
    lock = DataDirLock(tmp_path)
    lock.acquire()
    child = subprocess.Popen([sys.executable, "-c", "import sys; print('up', flush=True); sys.stdin.readline()"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                             close_fds=False)  # as a careless spawner would: only O_CLOEXEC keeps the lock home
    try:
        assert child.stdout is not None
        assert child.stdout.readline() == "up\n"  # past exec, when close-on-exec descriptors are closed
        lock.release()
        with DataDirLock(tmp_path) as again:
            assert again.held
    finally:
        assert child.stdin is not None and child.stdout is not None
        child.stdin.close()
        child.stdout.close()
        child.wait(CHILD_TIMEOUT_S)


def test_an_unreadable_holder_is_still_refused_in_one_line(tmp_path: Path) -> None:
    with DataDirLock(tmp_path):
        (tmp_path / LOCK_FILE).write_text("")  # as if the holder had not written yet
        with pytest.raises(DataDirInUse) as refused:
            DataDirLock(tmp_path).acquire()
    assert str(refused.value) == f"data directory {tmp_path} is in use by another drupelet node (pid unknown)"
    assert refused.value.pid is None
