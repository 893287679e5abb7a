"""Shared fixtures: real nats-server processes, a connected client, and the leak guard
(threads, tasks, timers, nats-server children, badly formatted log calls)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import FrameType

# luma.core.virtual starts a module-level pool of four daemon threads when it is first
# imported (luma.oled.device imports it, so the display provider does). They live as long
# as the process; importing it here makes them part of every test's baseline, so the
# leak guard does not charge them to whichever test happens to import luma first.
import luma.core.virtual  # noqa: F401
import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig
from fixtures_actors import (counter_wasm, http_counter_wasm, http_probe_wasm,  # noqa: F401  (session fixtures)
                             js_http_counter_wasm, shared_compile_cache, thermometer_wasm)
from waiting import poll_until

REPO = Path(__file__).resolve().parent.parent
HARDWARE_ENV = "DRUPELET_HARDWARE"
CLEANUP_GRACE_S = 2.0  # threads and processes that are ending get this long
LOOP_GRACE_S = 0.5  # tasks and timers on the test's loop that are finishing get this long
_POLL_S = 0.02


# -- hardware marker ----------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.hardware`` tests unless DRUPELET_HARDWARE=1."""
    if os.environ.get(HARDWARE_ENV) == "1":
        return
    skip = pytest.mark.skip(reason=f"needs a Raspberry Pi; set {HARDWARE_ENV}=1 to run")
    for item in items:
        if item.get_closest_marker("hardware") is not None:
            item.add_marker(skip)


# -- NATS -----------------------------------------------------------------------


@pytest_asyncio.fixture
async def nats_server(tmp_path: Path) -> AsyncIterator[EmbeddedNatsServer]:
    """A JetStream-enabled nats-server on a free port, stopped after the test."""
    server = EmbeddedNatsServer(
        NatsServerConfig(jetstream=True, store_dir=tmp_path / "nats")
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest_asyncio.fixture
async def nats_client(nats_server: EmbeddedNatsServer) -> AsyncIterator[NatsClient]:
    """A nats-py client connected to ``nats_server``, drained afterwards."""
    nc = await nats.connect(nats_server.url, connect_timeout=5, max_reconnect_attempts=0)
    try:
        yield nc
    finally:
        if not nc.is_closed:
            await nc.drain()
        if not nc.is_closed:
            await nc.close()


# -- leak checks (in the spirit of zigpy's verify_cleanup) ----------------------


def child_nats_servers(parent: int) -> set[int]:
    """PIDs of live (non-zombie) children of ``parent`` whose cmdline names nats-server.

    Reads /proc directly (psutil is not a dependency). Processes that vanish while
    being read are simply not counted.
    """
    found: set[int] = set()
    proc = Path("/proc")
    if not proc.is_dir():
        return found
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue  # exited meanwhile, or not ours to read
        # Format: "pid (comm) state ppid ..."; comm may contain spaces and ")".
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) < 2 or fields[0] == "Z" or int(fields[1]) != parent:
            continue
        if b"nats-server" in cmdline:
            found.add(int(entry.name))
    return found


class FailOnBadFormattingHandler(logging.Handler):
    """Notes every log record whose ``%`` arguments do not fit its format string.

    ``record.getMessage()`` is what any real handler would call; a mismatch raises there,
    which logging would only print to stderr. The handler records the problem instead of
    raising, because the call may come from an actor worker or provider thread where an
    exception would be lost; ``verify_cleanup`` fails the test with the list.
    """

    def __init__(self) -> None:
        super().__init__(logging.NOTSET)
        self.problems: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        try:
            record.getMessage()
        except Exception as exc:  # TypeError, ValueError, KeyError, or a failing __str__
            self.problems.append(f"{record.name} at {record.pathname}:{record.lineno}: "
                                 f"{record.msg!r} % {record.args!r}: {type(exc).__name__}: {exc}")


def _where(frame: FrameType | None) -> str:
    """``file:line in function`` of ``frame``, or "" when there is none."""
    if frame is None:
        return ""
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _own_frame(frame: FrameType | None) -> FrameType | None:
    """The innermost frame in this repository's code (not the venv's), else ``frame``."""
    probe = frame
    while probe is not None:
        path = Path(probe.f_code.co_filename)
        if path.is_relative_to(REPO) and not path.is_relative_to(REPO / ".venv"):
            return probe
        probe = probe.f_back
    return frame


def describe_thread(thread: threading.Thread) -> str:
    kind = "daemon thread" if thread.daemon else "thread"
    # threading keeps the target until run() returns; a Thread subclass (Timer, …) has none
    target = getattr(thread, "_target", None) or getattr(thread, "function", None)
    cls = type(thread)
    runs = f" running {getattr(target, '__qualname__', repr(target))}" if target is not None else ""
    if cls is not threading.Thread:
        runs = f" ({cls.__module__}.{cls.__qualname__}){runs}"
    at = _where(_own_frame(sys._current_frames().get(thread.ident or -1)))
    return f"{kind} {thread.name!r}{runs}" + (f" (at {at})" if at else "")


def describe_task(task: asyncio.Task[object]) -> str:
    coro = task.get_coro()
    name = getattr(coro, "__qualname__", repr(coro))
    stack = task.get_stack()
    at = _where(stack[-1]) if stack else ""
    return f"task {task.get_name()!r} running {name}" + (f" (waiting at {at})" if at else "")


def describe_timer(handle: asyncio.TimerHandle, now: float) -> str:
    callback = getattr(handle, "_callback", None)
    name = getattr(callback, "__qualname__", None) or repr(callback)
    return f"timer {name} due in {handle.when() - now:.3f} s"


def new_threads(before: set[threading.Thread]) -> list[threading.Thread]:
    """Threads started since ``before`` that still run, daemon ones included.

    ``threading._DummyThread`` entries (threads not started by ``threading``, seen only
    because they called into it) are left out: they cannot be joined and never end.
    """
    return [t for t in threading.enumerate()
            if t not in before and t.is_alive() and t is not threading.current_thread()
            and not isinstance(t, threading._DummyThread)]


@pytest.fixture(autouse=True)
def verify_cleanup() -> Iterator[None]:
    """Fail a test that leaves threads (daemon ones too: actor workers and the epoch
    ticker are daemons), nats-server children or badly formatted log calls behind.

    Only threads and processes that appeared during the test count; they get
    ``CLEANUP_GRACE_S`` seconds to finish first. Every ``drupelet`` logger runs at
    DEBUG meanwhile, so each log call of the project has its format checked. Tasks and
    timers are checked on the test's loop by ``verify_loop_cleanup``, which runs first.
    """
    threads_before = set(threading.enumerate())
    pid = os.getpid()
    servers_before = child_nats_servers(pid)
    formatting = FailOnBadFormattingHandler()
    root = logging.getLogger()
    project = logging.getLogger("drupelet")
    project_level = project.level
    project.setLevel(logging.DEBUG)
    root.addHandler(formatting)
    try:
        yield
    finally:
        root.removeHandler(formatting)
        project.setLevel(project_level)

    def servers_left() -> set[int]:
        return child_nats_servers(pid) - servers_before

    poll_until(lambda: not new_threads(threads_before) and not servers_left(), CLEANUP_GRACE_S)
    leaked_threads = new_threads(threads_before)
    leaked_servers = servers_left()

    problems: list[str] = []
    if leaked_threads:
        problems.append("threads still running: " + "; ".join(describe_thread(t) for t in leaked_threads))
    if leaked_servers:
        pids = ", ".join(str(p) for p in sorted(leaked_servers))
        problems.append(f"nats-server child processes still running: pid {pids}")
        for leaked in leaked_servers:
            # Don't let one leaky test hold ports and files for the rest of the run.
            try:
                os.kill(leaked, signal.SIGKILL)
            except ProcessLookupError:
                continue
    if formatting.problems:
        problems.append("log calls whose arguments do not fit the format: " + "; ".join(formatting.problems))
    if problems:
        pytest.fail("test did not clean up: " + "; ".join(problems), pytrace=False)


def _loop_leftovers(loop: asyncio.AbstractEventLoop) -> tuple[list[asyncio.Task[object]], list[asyncio.TimerHandle]]:
    current = asyncio.current_task()
    tasks = [t for t in asyncio.all_tasks(loop) if t is not current]
    # BaseEventLoop keeps its timers in ``_scheduled`` (zigpy's guard reads it too); a
    # cancelled one stays there until the loop drops it, and does not count.
    timers = [h for h in getattr(loop, "_scheduled", ()) if not h.cancelled()]
    return tasks, timers


@pytest.fixture(autouse=True)
async def verify_loop_cleanup(verify_cleanup: None) -> AsyncIterator[None]:
    """Fail a test that leaves a pending task or a scheduled timer on its event loop.

    Runs after every other fixture of the test is torn down and before pytest-asyncio
    closes the loop (closing would cancel the tasks and drop the timers silently). A
    task or timer gets ``LOOP_GRACE_S`` to finish; what is left is named in the failure,
    then cancelled so that it cannot run into the next test. Plain tests get a loop of
    their own here too, and have nothing on it.
    """
    yield
    loop = asyncio.get_running_loop()
    deadline = loop.time() + LOOP_GRACE_S
    tasks, timers = _loop_leftovers(loop)
    while (tasks or timers) and loop.time() < deadline:
        await asyncio.sleep(_POLL_S)
        tasks, timers = _loop_leftovers(loop)
    if not tasks and not timers:
        return
    now = loop.time()
    leaked = [describe_task(t) for t in tasks] + [describe_timer(h, now) for h in timers]
    for handle in timers:
        handle.cancel()
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.wait(tasks, timeout=CLEANUP_GRACE_S)
    pytest.fail("test did not clean up its event loop: " + "; ".join(leaked), pytrace=False)
