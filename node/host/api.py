"""The host API as Protocols: what the control plane, the CLI and the tests depend on.

:class:`HostApi` is one node's actors, links, providers and inventory, without NATS.
:class:`~drupelet.node.host.host.Host` implements it; nothing that uses it needs to know
which class that is, so the control plane can be tested against a fake.

:class:`LatticePort` is the other direction: what the host asks of the lattice when one
is there (deliveries from NATS, calls to other nodes' providers, log lines to the
lattice). The composition root (:class:`~drupelet.node.node.Node`) plugs one in; a host
with none is a single node on its own.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

from drupelet.providers.base import HttpExchange, Message, Provider

from drupelet.node.host.links import LinkDef

EventListener = Callable[[str, dict[str, Any]], None]
"""``listener(kind, data)``, called on the event loop for every node event."""


class LatticePort(Protocol):
    """What a host needs from the lattice. Every method may be called when the lattice
    is unreachable; it then fails the way the interface says, never hangs."""

    @property
    def nats(self) -> Any:
        """The connected ``nats.aio.client.Client`` handed to providers (messaging), or None."""
        ...

    async def synced(self) -> None:
        """Return once the NATS server has processed everything sent on :attr:`nats` so far
        (a provider's subscriptions exist, or are gone, at the server)."""
        ...

    async def actor_added(self, actor: str) -> None:
        """``actor`` runs here now: take its deliveries (its queue group) from the lattice."""
        ...

    async def actor_removed(self, actor: str) -> None:
        """``actor`` no longer runs here: stop taking its deliveries."""
        ...

    def remote_provider(self, node: str, provider: str) -> Provider:
        """A stand-in for ``provider`` on ``node``, whose methods are calls across the lattice."""
        ...

    async def forward(self, actor: str, message: Message) -> None:
        """Deliver ``message`` to ``actor`` wherever in the lattice it runs."""
        ...

    async def serve_http(self, actor: str, exchange: HttpExchange) -> None:
        """Have ``actor``, running on another node, answer an HTTP request; returns once
        the exchange has its response or failure. Raises when no node takes it."""
        ...

    async def reply_error(self, reply_to: str, code: str, message: str) -> None:
        """Tell whoever waits on ``reply_to`` that their message failed."""
        ...

    def publish_log(self, actor: str, level: str, context: str, message: str) -> None:
        """Send an actor's log line to the lattice. Thread-safe; never blocks."""
        ...


class HostApi(Protocol):
    """One node's host API (see :class:`~drupelet.node.host.host.Host`)."""

    @property
    def name(self) -> str: ...

    @property
    def lattice(self) -> str: ...

    @property
    def labels(self) -> Mapping[str, str]: ...

    @property
    def max_payload_bytes(self) -> int: ...

    def on_event(self, listener: EventListener) -> None: ...

    # actors
    async def start_actor(self, name: str, wasm: bytes, *, instances: int = 1,
                          config: dict[str, str] | None = None, source: str = "") -> dict[str, Any]: ...

    async def stop_actor(self, name: str) -> None: ...

    async def scale_actor(self, name: str, instances: int) -> dict[str, Any]: ...

    def actor_info(self, name: str) -> dict[str, Any]: ...

    def has_actor(self, name: str) -> bool: ...

    def list_actors(self) -> list[dict[str, Any]]: ...

    def actor_load(self, name: str) -> float:
        """How full the actor's queue is, 0 to 1: the most used of its message count, its
        bytes and the node's bytes (0 for an actor that does not run here)."""
        ...

    def set_actor_config(self, name: str, config: dict[str, str]) -> None: ...

    async def deliver(self, actor: str, subject: str, body: bytes, reply_to: str | None = None,
                      deadline_ms: int | None = None) -> None: ...

    def serve_http(self, actor: str, exchange: HttpExchange) -> Awaitable[None] | None: ...

    async def actor_stopped(self, actor: str, node: str) -> None: ...

    # links
    def link_interfaces(self, interface: str, target: str) -> list[str]: ...

    def check_link_caps(self, source: str, interfaces: list[str], *, strict: bool = True) -> bool: ...

    async def set_revoked(self, keys: list[str]) -> None: ...

    async def put_link(self, source: str, interface: str, target: str,
                       config: dict[str, str] | None = None, *, strict: bool = True) -> list[dict[str, Any]]: ...

    async def del_link(self, source: str, interface: str) -> list[dict[str, Any]]: ...

    def list_links(self) -> list[dict[str, Any]]: ...

    def link_for(self, source: str, interface: str) -> LinkDef | None: ...

    # providers
    def provider(self, name: str) -> Provider | None: ...

    def provider_names(self) -> list[str]: ...

    async def start_provider(self, name: str) -> dict[str, Any]: ...

    async def stop_provider(self, name: str) -> None: ...

    def provider_health(self) -> dict[str, tuple[str, str]]: ...

    # labels
    def check_labels(self, labels: dict[str, str]) -> None: ...

    def put_labels(self, labels: dict[str, str]) -> dict[str, str]: ...

    def del_labels(self, keys: list[str]) -> dict[str, str]: ...

    def replace_labels(self, labels: dict[str, str]) -> None: ...

    # inventory and health
    def summary(self) -> dict[str, Any]: ...

    def inventory(self) -> dict[str, Any]: ...

    def health_for_watchdog(self) -> str | None: ...

    def recent_logs(self, actor: str | None = None, lines: int = 100) -> list[dict[str, Any]]: ...

    # hardware
    async def display_snapshot(self, provider: str = "display") -> bytes: ...

    async def gpio_simulate(self, pin: int, level: bool, provider: str = "gpio") -> None: ...

    async def gpio_read(self, pin: int, provider: str = "gpio") -> dict[str, Any]: ...

    async def gpio_write(self, pin: int, level: bool, provider: str = "gpio") -> None: ...
