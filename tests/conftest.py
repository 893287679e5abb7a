"""Shared fixtures: real nats-server processes, a connected client, leak checks."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import nats
import pytest
import pytest_asyncio
from nats.aio.client import Client as NatsClient

from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig
from fixtures_actors import counter_wasm, thermometer_wasm  # noqa: F401  (session fixtures: built examples)

HARDWARE_ENV = "DRUPELET_HARDWARE"
CLEANUP_GRACE_S = 2.0
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


@pytest.fixture(autouse=True)
def verify_cleanup() -> Iterator[None]:
    """Fail a test that leaves non-daemon threads or nats-server children running.

    Only threads and processes that appeared during the test count; they get
    ``CLEANUP_GRACE_S`` seconds to finish first.
    """
    threads_before = set(threading.enumerate())
    pid = os.getpid()
    servers_before = child_nats_servers(pid)

    yield

    deadline = time.monotonic() + CLEANUP_GRACE_S
    leaked_threads = [
        t
        for t in threading.enumerate()
        if t not in threads_before and not t.daemon and t is not threading.current_thread()
    ]
    for thread in leaked_threads:
        thread.join(timeout=max(0.0, deadline - time.monotonic()))
    leaked_threads = [t for t in leaked_threads if t.is_alive()]

    def servers_left() -> set[int]:
        return child_nats_servers(pid) - servers_before

    while servers_left() and time.monotonic() < deadline:
        time.sleep(_POLL_S)
    leaked_servers = servers_left()

    problems: list[str] = []
    if leaked_threads:
        names = ", ".join(repr(t.name) for t in leaked_threads)
        problems.append(f"non-daemon threads still running: {names}")
    if leaked_servers:
        pids = ", ".join(str(p) for p in sorted(leaked_servers))
        problems.append(f"nats-server child processes still running: pid {pids}")
        for leaked in leaked_servers:
            # Don't let one leaky test hold ports and files for the rest of the run.
            try:
                os.kill(leaked, signal.SIGKILL)
            except ProcessLookupError:
                continue
    if problems:
        pytest.fail("test did not clean up: " + "; ".join(problems), pytrace=False)
