"""Telling systemd how the node is doing: the sd_notify protocol.

Under a ``Type=notify`` unit systemd passes a datagram socket in ``NOTIFY_SOCKET``; the
node sends it newline-separated ``KEY=value`` assignments (sd_notify(3)):

- ``READY=1`` with a ``STATUS=`` line, once state is restored and NATS is up or known down;
- ``STATUS=...``: what ``systemctl status`` shows, e.g. ``3 actors, hub connected``;
- ``WATCHDOG=1`` every ``WATCHDOG_USEC``/2, sent from the event loop and only while the
  host says it is healthy, so a blocked loop or a dead actor worker stops the pings and
  systemd restarts the node after ``WatchdogSec=``;
- ``STOPPING=1`` when a stop begins.

:class:`Notifier` sends through ``systemd.daemon.notify`` (systemd-python, the ``pi``
extra) when it imports, else through a plain ``AF_UNIX`` datagram socket (a path, or the
abstract namespace when it starts with ``@``). Without ``NOTIFY_SOCKET`` (not under
systemd) every call does nothing and the node runs the same with plain logs.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
import socket
from collections.abc import Callable, Mapping
from typing import Protocol

log = logging.getLogger(__name__)

STATUS_INTERVAL_S = 5.0
"""How often the status line is recomputed; it is sent only when it changed."""

SEND_TIMEOUT_S = 1.0
"""The longest a send may block (systemd reads the socket at once; this is a bound)."""

HealthCheck = Callable[[], str | None]
"""None while healthy, else why not (one line a person can read)."""


class _Send(Protocol):
    def __call__(self, state: str) -> bool: ...


def _systemd_sender() -> _Send | None:
    """``systemd.daemon.notify`` if systemd-python is installed."""
    try:
        # imported by name: a checkout's systemd/ folder of unit files is no such module
        daemon = importlib.import_module("systemd.daemon")
    except ImportError:
        return None
    notify: _Send = daemon.notify
    return notify


def socket_address(value: str) -> str | bytes:
    """The address ``NOTIFY_SOCKET`` names: a path, or ``@name`` in the abstract namespace."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    return value


def watchdog_interval_s(environ: Mapping[str, str], pid: int | None = None) -> float | None:
    """Half of ``WATCHDOG_USEC`` in seconds if systemd expects this process to ping, else None.

    ``WATCHDOG_PID``, when set, must be this process (``pid``, default: ours), the way
    sd_watchdog_enabled(3) reads it.
    """
    usec = environ.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    watchdog_pid = environ.get("WATCHDOG_PID", "")
    if watchdog_pid:
        if not watchdog_pid.isdigit():
            log.warning("WATCHDOG_PID=%r is not a process id; not pinging the watchdog", watchdog_pid)
            return None
        if int(watchdog_pid) != (os.getpid() if pid is None else pid):
            return None
    if not usec.isdigit() or int(usec) == 0:
        log.warning("WATCHDOG_USEC=%r is not a positive number of microseconds; not pinging the watchdog", usec)
        return None
    return int(usec) / 2e6


class Notifier:
    """Sends sd_notify messages, or nothing when not under systemd.

    Sends never raise: a failure is logged (once per kind of failure) and the node goes
    on. :meth:`run_watchdog` and :meth:`run_status` start tasks on the event loop; the
    caller keeps and cancels them.
    """

    def __init__(self, environ: Mapping[str, str] | None = None, *, use_systemd_python: bool = True) -> None:
        env = os.environ if environ is None else environ
        self.socket_path = env.get("NOTIFY_SOCKET", "")
        self.watchdog_interval_s = watchdog_interval_s(env) if self.socket_path else None
        # systemd-python reads NOTIFY_SOCKET from the process environment itself
        same = self.socket_path == os.environ.get("NOTIFY_SOCKET", "")
        sender = _systemd_sender() if use_systemd_python and self.socket_path and same else None
        self.via = "" if not self.socket_path else "systemd-python" if sender is not None else "socket"
        self._systemd_send = sender
        self.unhealthy: str | None = None
        """Why the watchdog stopped pinging, once it has."""
        self._last_status = ""
        self._wake: asyncio.Event | None = None
        self._failures: set[str] = set()

    @property
    def enabled(self) -> bool:
        """Whether systemd listens (``NOTIFY_SOCKET`` is set)."""
        return bool(self.socket_path)

    # -- messages -------------------------------------------------------------------

    def notify(self, *assignments: str) -> bool:
        """Send ``KEY=value`` assignments in one datagram; True if it was sent."""
        if not self.socket_path:
            return False
        state = "\n".join(a.replace("\n", " ") for a in assignments)
        if self._systemd_send is not None:
            try:
                return self._systemd_send(state)
            except OSError as exc:
                self._failed("systemd.daemon.notify", exc)
                return False
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                sock.settimeout(SEND_TIMEOUT_S)
                sock.sendto(state.encode(), socket_address(self.socket_path))
        except OSError as exc:
            self._failed(self.socket_path, exc)
            return False
        return True

    def _failed(self, where: str, exc: OSError) -> None:
        kind = f"{where}:{exc.errno}"
        if kind not in self._failures:
            self._failures.add(kind)
            log.warning("cannot notify systemd through %s: %s", where, exc.strerror or exc)

    def ready(self, status: str) -> bool:
        """The node is up: its state is restored and NATS is up or known to be down."""
        self._last_status = status
        return self.notify("READY=1", f"STATUS={status}")

    def status(self, text: str) -> bool:
        """The line ``systemctl status`` shows."""
        self._last_status = text
        return self.notify(f"STATUS={text}")

    def stopping(self, status: str = "stopping: finishing calls, outputs to their safe state") -> bool:
        """A stop has begun."""
        self._last_status = status
        return self.notify("STOPPING=1", f"STATUS={status}")

    def watchdog(self) -> bool:
        """One keep-alive ping."""
        return self.notify("WATCHDOG=1")

    # -- tasks ----------------------------------------------------------------------

    def run_watchdog(self, loop: asyncio.AbstractEventLoop, health_check: HealthCheck) -> asyncio.Task[None] | None:
        """Ping the watchdog every ``WATCHDOG_USEC``/2 from ``loop`` while ``health_check()``
        returns None. Returns the task, or None when systemd expects no pings.

        The pings come from a coroutine on the loop, so anything that blocks the loop
        stops them. When the check names a problem, or raises, the task logs it, puts it
        in ``STATUS=`` and ends: without pings systemd restarts the node.
        """
        interval = self.watchdog_interval_s
        if interval is None:
            return None
        return loop.create_task(self._watchdog(interval, health_check), name="drupelet-watchdog")

    async def _watchdog(self, interval_s: float, health_check: HealthCheck) -> None:
        while True:
            try:
                problem = health_check()
            except Exception as exc:
                log.exception("the watchdog's health check failed")
                problem = f"the health check failed: {exc or type(exc).__name__}"
            if problem is not None:
                self.unhealthy = problem
                log.error("unhealthy: %s; no more watchdog pings, systemd will restart the node", problem)
                self.status(f"unhealthy: {problem}; waiting for systemd's watchdog to restart the node")
                return
            self.watchdog()
            await asyncio.sleep(interval_s)

    def run_status(self, loop: asyncio.AbstractEventLoop, status_line: Callable[[], str], *,
                   interval_s: float = STATUS_INTERVAL_S) -> asyncio.Task[None] | None:
        """Keep ``STATUS=`` current: recompute ``status_line()`` every ``interval_s`` and
        on :meth:`refresh_status`, send it when it changed. None when not under systemd."""
        if not self.enabled:
            return None
        self._wake = asyncio.Event()
        return loop.create_task(self._status(status_line, interval_s, self._wake), name="drupelet-status")

    def refresh_status(self) -> None:
        """Recompute the status line soon (call on the event loop, e.g. on a node event)."""
        if self._wake is not None:
            self._wake.set()

    async def _status(self, status_line: Callable[[], str], interval_s: float, wake: asyncio.Event) -> None:
        while True:
            try:
                await asyncio.wait_for(wake.wait(), interval_s)
            except asyncio.TimeoutError:
                pass
            wake.clear()
            if self.unhealthy is not None:
                continue  # the watchdog's last word stays on display
            try:
                line = status_line()
            except Exception:
                log.exception("computing the status line failed")
                continue
            if line != self._last_status:
                self.status(line)


__all__ = ["HealthCheck", "Notifier", "socket_address", "watchdog_interval_s"]
