"""The composition root: one node, built from its config and stopped in one place.

:class:`Node` builds the real pieces and wires them: the embedded nats-server (when the
config names no server), the NATS connection, the host (:mod:`drupelet.node.host`) with
its lattice port, the artifact store, the control plane, the provider server, the lattice
state and the desired-state owner. It has the one start path and the one stop path;
nothing below it imports it. ``drupelet up`` (:mod:`drupelet.node.cli`) runs one.

Start order: the data-directory lock → NATS → port → host (runtime, providers, the config's actors and links) →
artifacts → state (the disk copy) and desired state → control plane and provider server
→ restore the desired state → follow the bucket. Stop runs every step even when one
fails: host (actors stop, outputs to their safe state, compile killed) → provider server
→ port → control plane (its last event: ``node_stopped``) → desired state and state →
NATS → embedded server → the lock.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from nats.aio.client import Client as NatsClient

from drupelet.node.config import HUB_JETSTREAM_DOMAIN, NodeConfig
from drupelet.node.host.api import EventListener
from drupelet.node.host.host import Host
from drupelet.node.lattice.artifacts import ArtifactStore
from drupelet.node.lattice import subjects
from drupelet.node.lattice.connect import close_quietly, connect, tls_context
from drupelet.node.lattice.control import ControlPlane
from drupelet.node.lattice.desired import DesiredState
from drupelet.node.lattice.errors import NatsUnavailable
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig, NatsServerError, is_loopback
from drupelet.node.lattice.port import NatsPort
from drupelet.node.lattice.provider_server import ProviderServer
from drupelet.node.lattice.state import LatticeState
from drupelet.node.system.datalock import DataDirLock

log = logging.getLogger(__name__)

__all__ = ["Node"]


LEAF_WATCH_INTERVAL_S = 1.0
"""How often the node reads what the embedded server logged about its leaf connection."""


def _read_new_lines(path: Path, offset: int) -> tuple[list[str], int]:
    """The lines added to ``path`` since ``offset``, and the new offset."""
    try:
        with path.open("rb") as f:
            f.seek(offset)
            data = f.read()
    except OSError:
        return [], offset
    end = data.rfind(b"\n") + 1
    return data[:end].decode("utf-8", "replace").splitlines(), offset + end


def leaf_problem(line: str) -> str | None:
    """What a nats-server log line says is wrong with a leaf connection, for a person; None
    for a line about something else."""
    low = line.lower()
    if "[err]" not in low and "[wrn]" not in low:
        return None
    if "x509" in low or "certificate" in low:
        return (f"the hub's TLS certificate is not signed by the CA this node trusts (nats.hub_ca): "
                f"{line.split(' - ')[-1].strip()}")
    if "authorization violation" in low or "authentication" in low:
        return ("the hub refused this node's credentials (nats.hub_creds): revoked, of another lattice, or the hub "
                "asks for others")
    if "tls" in low and ("leafnode" in low or "lid:" in low):
        return f"TLS failed: {line.split(' - ')[-1].strip()}"
    if "lid:" in low and "error" in low:
        return line.split(" - ")[-1].strip()
    return None


class Node:
    """One drupelet node. ``async with Node(config) as node:`` or :meth:`start` / :meth:`stop`."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.host = Host(config)
        self.nats_server: EmbeddedNatsServer | None = None
        self.nats: NatsClient | None = None
        self.port: NatsPort | None = None
        self.artifacts: ArtifactStore | None = None
        self.state: LatticeState | None = None
        self.desired: DesiredState | None = None
        self.control: ControlPlane | None = None
        self.provider_server: ProviderServer | None = None
        self.lock = DataDirLock(config.data_dir)
        self._leaf_watch: asyncio.Task[None] | None = None
        self._started = False
        self._stopped = False

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def lattice(self) -> str:
        return self.host.lattice

    def on_event(self, listener: EventListener) -> None:
        self.host.on_event(listener)

    # -- start --------------------------------------------------------------------------

    async def start(self) -> None:
        """Start everything; on failure stop what started and raise (one clear error)."""
        if self._started:
            raise RuntimeError("a node starts once")
        self._started = True
        cfg = self.config
        try:
            cfg.data_dir.mkdir(parents=True, exist_ok=True)
            await asyncio.to_thread(self.lock.acquire)  # one node per data directory
            nc = self.nats = await self._connect()
            self.port = NatsPort(nc, self.lattice, self.name,
                                 remote_call_timeout_s=cfg.remote_call_timeout_ms / 1000.0)
            self.port.bind(self.host)
            await self.port.start()
            await self.host.start(self.port)
            domain = cfg.nats_jetstream_domain or (HUB_JETSTREAM_DOMAIN if cfg.nats_hub_url else None)
            self.artifacts = ArtifactStore(nc, self.lattice, cfg.artifact_cache_dir, domain=domain)
            self.state = LatticeState(self.lattice, self.name, cfg.data_dir / "state.json",
                                      may_create=not cfg.authenticated)
            self.desired = DesiredState(self.host, self.state, self.artifacts, config_links=cfg.links,
                                        boot_labels=cfg.labels)
            self.control = ControlPlane(self.host, nc, state=self.state, desired=self.desired,
                                        artifacts=self.artifacts, nats_info=self.nats_info,
                                        heartbeat_interval_s=cfg.heartbeat_interval_s,
                                        health_check_interval_s=cfg.health_check_interval_s)
            await self.control.start()
            self.provider_server = ProviderServer(self.host, nc,
                                                  placed=self.state.places if cfg.authenticated else None)
            await self.provider_server.start()
            await self._follow_state(domain)
        except BaseException:
            await self.stop()
            raise
        log.info("node %s is up in lattice %s: %d actor(s), %d provider(s), %d link(s)", self.name, self.lattice,
                 len(self.host.actors), len(self.host.providers), len(self.host.links.all()))
        self.host.emit("node_started", self.host.summary())

    async def _connect(self) -> NatsClient:
        cfg = self.config
        url = cfg.nats_url
        for key, value in (("creds", cfg.nats_creds), ("ca", cfg.nats_ca), ("hub_creds", cfg.nats_hub_creds),
                           ("hub_ca", cfg.nats_hub_ca)):
            if value and not Path(value).is_file():
                raise NatsUnavailable(f"nats.{key} {value}: no such file (drupelet lattice enroll writes a node's "
                                      ".creds and ca.pem)")
        if not url:
            if not is_loopback(cfg.nats_embedded_host):
                raise NatsUnavailable(
                    f"nats.embedded_host {cfg.nats_embedded_host!r}: the embedded nats-server asks for no credentials, "
                    "so it listens on loopback only (127.0.0.1, ::1); to reach nodes across a network, run a hub "
                    "made by `drupelet lattice init` and join it (docs/security.md)")
            self.nats_server = EmbeddedNatsServer(NatsServerConfig(
                host=cfg.nats_embedded_host, port=cfg.nats_embedded_port, jetstream=cfg.nats_embedded_jetstream,
                store_dir=cfg.data_dir / "nats", server_name=self.name,
                # a leaf of the hub keeps its own JetStream domain, named after the node (as on a Pi)
                leaf_remotes=[cfg.nats_hub_url] if cfg.nats_hub_url else [],
                leaf_credentials=Path(cfg.nats_hub_creds) if cfg.nats_hub_creds else None,
                leaf_ca=Path(cfg.nats_hub_ca) if cfg.nats_hub_ca else None,
                jetstream_domain=self.name if cfg.nats_hub_url else None))
            try:
                await self.nats_server.start()
            except NatsServerError as exc:
                if exc.log_tail:
                    log.debug("end of the nats-server log:\n%s", exc.log_tail)
                raise NatsUnavailable(f"cannot start the embedded nats-server: {exc.summary}") from exc
            url = self.nats_server.url
            if cfg.nats_hub_url:
                self._leaf_watch = asyncio.create_task(self._watch_leaf(cfg.nats_hub_url))
                log.info("embedded nats-server listening on %s, a leaf of the hub %s (JetStream domain %s)", url,
                         cfg.nats_hub_url, self.name)
            else:
                log.info("embedded nats-server listening on %s", url)
            if not cfg.authenticated:
                log.warning("the lattice is open: the embedded nats-server at %s asks for no credentials, so anyone "
                            "on this machine can control this node (it listens on loopback only). A lattice across "
                            "machines: drupelet lattice init (docs/security.md)", url)
        tls = tls_context(cfg.nats_ca or None) if cfg.nats_ca or url.startswith("tls://") else None
        return await connect(url, name=f"drupelet-{self.name}", creds=cfg.nats_creds or None,
                             timeout_s=cfg.nats_connect_timeout_s, reconnect=True, error_cb=self._nats_error,
                             disconnected_cb=self._nats_disconnected, reconnected_cb=self._nats_reconnected,
                             tls=tls, inbox_prefix=subjects.inbox_prefix(self.name))

    async def _watch_leaf(self, hub: str) -> None:
        """Say in the node's log why the embedded server's leaf connection to the hub fails (a
        certificate the hub's CA did not sign, refused credentials), once per reason, and when it
        is up again: what the server's own log says, for a person reading the node's."""
        server = self.nats_server
        assert server is not None and server.log_path is not None
        path, offset, said = server.log_path, 0, ""
        while True:
            await asyncio.sleep(LEAF_WATCH_INTERVAL_S)
            lines, offset = await asyncio.to_thread(_read_new_lines, path, offset)
            for line in lines:
                if "Leafnode connection created" in line:
                    if said:
                        log.info("the leaf connection to the hub %s is up", hub)
                    said = ""
                    continue
                reason = leaf_problem(line)
                if reason and reason != said:
                    said = reason
                    log.warning("the leaf connection to the hub %s fails: %s", hub, reason)

    async def _follow_state(self, domain: str | None) -> None:
        """Restore this node's actors and the lattice's links from the disk copy, then
        follow the shared bucket (reachable or not: it retries in the background)."""
        assert self.state is not None and self.desired is not None and self.nats is not None
        await asyncio.to_thread(self.state.load_local)
        await self.desired.restore()
        if self.control is not None:
            self.control.mark_ready()  # the disk copy is applied: requests see this node as it is
        if not await self.state.connect(self.nats, domain=domain):
            log.warning("lattice state bucket unreachable; running from the local copy and retrying")

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc if str(exc) else type(exc).__name__)

    async def _nats_disconnected(self) -> None:
        if self._stopped or self.nats is None:  # stopping, or a first connection that failed
            return
        log.warning("NATS connection lost; reconnecting")

    async def _nats_reconnected(self) -> None:
        log.info("NATS connection restored")

    # -- stop ---------------------------------------------------------------------------

    async def stop(self) -> None:
        """Stop everything, each step even when one before it failed. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self._leaf_watch is not None:
            self._leaf_watch.cancel()
            await asyncio.gather(self._leaf_watch, return_exceptions=True)
        steps: list[tuple[str, Callable[[], Awaitable[Any]] | None]] = [
            ("the host", self.host.stop),
            ("the provider server", self.provider_server.close if self.provider_server else None),
            ("the lattice port", self.port.close if self.port else None),
            ("the control plane", self.control.close if self.control else None),
            ("the desired state", self.desired.close if self.desired else None),
            ("the lattice state", self.state.close if self.state else None),
            ("the NATS connection", self._close_nats),
            ("the embedded nats-server", self.nats_server.stop if self.nats_server else None),
            ("the data-directory lock", self._release_lock),
        ]
        for what, step in steps:
            if step is None:
                continue
            try:
                await step()
            except Exception:
                log.exception("stopping %s failed; going on with the rest", what)
        log.info("node %s stopped", self.name)

    async def _release_lock(self) -> None:
        self.lock.release()

    async def _close_nats(self) -> None:
        nc = self.nats
        if nc is None:
            return
        try:
            await nc.drain()
        except Exception as exc:
            log.debug("NATS drain at stop: %s", exc)
            await close_quietly(nc)

    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- what a person and systemd see -----------------------------------------------------

    def nats_info(self) -> dict[str, Any]:
        nc = self.nats
        return {"connected": bool(nc and nc.is_connected),
                "url": nc.connected_url.geturl() if nc and nc.connected_url else "",
                "embedded": self.nats_server is not None}

    def inventory(self) -> dict[str, Any]:
        """The host's inventory and this node's NATS connection (what ``inventory`` answers)."""
        return self.host.inventory() | {"nats": self.nats_info()}

    def status_line(self) -> str:
        """One line a person reads in ``systemctl status``: actors, hub reachability, and
        providers that are not healthy, e.g. ``3 actors, hub connected``."""
        count = len(self.host.actors)
        parts = [f"{count} actor{'' if count == 1 else 's'}"]
        if self.nats is None or not self.nats.is_connected:
            parts.append("NATS disconnected (reconnecting to the local server)")
        elif self.state is not None and not self.state.connected:
            parts.append("hub unreachable (running from the local copy)")
        else:
            parts.append("hub connected")
        for name, (status, message) in self.host.provider_health().items():
            if status != "ok":
                parts.append(f"provider {name} {status}" + (f": {message}" if message else ""))
        return ", ".join(parts)

    def health_for_watchdog(self) -> str | None:
        return self.host.health_for_watchdog()

    async def call(self, actor: str, subject: str, body: bytes, timeout_s: float | None = None) -> bytes:
        """Send ``body`` to ``actor``'s handler (wherever it runs) and return its reply."""
        if self.port is None:
            raise NatsUnavailable(f"node {self.name} is not started")
        timeout = timeout_s if timeout_s is not None else self.config.call_deadline_ms / 1000.0 + 1.0
        return await self.port.call(actor, subject, body, timeout)
