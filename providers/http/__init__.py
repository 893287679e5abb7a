"""The ``http`` provider: HTTP in and out for actors, as ``wasi:http@0.2``.

In: a link of an actor's ``wasi:http/incoming-handler`` to ``<node>/http`` (or
``local/http``) routes requests arriving at that node's listener to the actor, which
answers them through its exported ``incoming-handler`` wherever in the lattice it runs.
The routing is the link's config (:mod:`.config`): an address of its own, a path
prefix or a Host header on a shared listener. A ``local/http`` link listens on the nodes
where the actor runs (opened as it starts there, closed as it stops); a ``<node>/http``
link listens on that node, wherever the actor runs.

Out: a link of ``wasi:http/outgoing-handler`` lets an actor send requests to the hosts
of its ``allowed_hosts`` (none by default); any other host is refused with
``HTTP-request-denied`` before anything is sent.

Across the lattice, an actor on another node reads a request body past its first chunk
and sends its response body in chunks through this provider's operations
(``read_body``, ``respond``, ``write_body``), which the lattice's provider calls reach
like any other, with the link checked.

aiohttp (the server and the client) is imported only when the first link needs it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

from ..base import Denied, Link, NotFound, Provider, ProviderContext, ProviderError
from .config import HttpSettings, Route, host_allowed, parse_allowed_hosts, parse_route

if TYPE_CHECKING:
    from .client import Client
    from .server import HttpServer, LocalExchange

log = logging.getLogger(__name__)

INCOMING = "wasi:http/incoming-handler"
OUTGOING = "wasi:http/outgoing-handler"


class HttpProvider(Provider):
    """HTTP for actors: a listener that hands requests to `wasi:http/incoming-handler`, and outgoing requests to allowed hosts."""

    name = "http"
    interfaces = (INCOMING, OUTGOING)
    operations = {INCOMING: frozenset({"read_body", "respond", "write_body"}), OUTGOING: frozenset({"send"})}
    relink_when_actor_stops = True
    config_schema = HttpSettings

    def __init__(self) -> None:
        super().__init__()
        self.settings = HttpSettings()
        self.server: HttpServer | None = None
        self.client: Client | None = None
        self._routes: dict[str, Route] = {}
        """Per actor: its route, served now."""
        self._waiting: dict[str, Route] = {}
        """Per actor: the route of a ``local/http`` link whose actor does not run here (yet)."""
        self._allowed: dict[str, tuple[str, ...]] = {}

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        self.settings = self.parse_config(ctx.config)

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.close()
            self.server = None
        if self.client is not None:
            await self.client.close()
            self.client = None
        self._routes.clear()
        self._waiting.clear()

    # -- links ----------------------------------------------------------------------------

    async def link_added(self, link: Link) -> None:
        if link.interface == OUTGOING:
            self._allowed[link.source] = parse_allowed_hosts(link)
            return
        route = parse_route(link, self.settings.address)
        if link.target.startswith("local/") and not self.context.runs_here(link.source):
            self._waiting[link.source] = route
            return
        await self._serve(route)

    async def link_removed(self, link: Link) -> None:
        if link.interface == OUTGOING:
            self._allowed.pop(link.source, None)
            return
        self._waiting.pop(link.source, None)
        route = self._routes.pop(link.source, None)
        if route is not None and self.server is not None:
            await self.server.remove(link.source)

    async def actor_started(self, actor: str) -> None:
        route = self._waiting.pop(actor, None)
        if route is not None:
            try:
                await self._serve(route)
            except ProviderError as exc:
                log.warning("http: actor %s started but cannot be served: %s", actor, exc.message)

    async def _serve(self, route: Route) -> None:
        if self.server is None:
            from .server import HttpServer  # aiohttp's server: only once a listener is wanted

            ctx = self.context
            self.server = HttpServer(ctx.loop, self.settings, self._deliver, ctx.node)
        previous = self._routes.get(route.actor)
        if previous is not None and previous.address != route.address:
            await self.server.remove(route.actor, previous.address)
        await self.server.add(route)
        self._routes[route.actor] = route

    def _deliver(self, actor: str, exchange: LocalExchange) -> Awaitable[None] | None:
        serve = self.context.serve_http
        if serve is None:
            raise ProviderError("this node cannot deliver HTTP requests to actors")
        return serve(actor, exchange)

    # -- operations for actors on other nodes ----------------------------------------------------

    def _exchange(self, link: Link, exchange_id: Any) -> LocalExchange:
        server = self.server
        exchange = server.exchanges.get(exchange_id) if server is not None and type(exchange_id) is int else None
        if exchange is None or exchange.actor != link.source:
            raise NotFound(f"no HTTP request {exchange_id!r} in progress for actor {link.source!r}")
        return exchange

    def read_body(self, link: Link, exchange_id: int, max_bytes: int) -> bytes:
        return self._exchange(link, exchange_id).read_body(int(max_bytes))

    def respond(self, link: Link, exchange_id: int, status: int, headers: list[list[Any]]) -> None:
        self._exchange(link, exchange_id).respond(int(status), [(str(n), bytes(v)) for n, v in headers])

    def write_body(self, link: Link, exchange_id: int, data: bytes) -> None:
        self._exchange(link, exchange_id).write_body(bytes(data))

    # -- outgoing ----------------------------------------------------------------------------

    def send(self, link: Link, request: dict[str, Any]) -> dict[str, Any]:
        """Send an actor's request (on its worker thread) if its host is allowed."""
        authority = str(request.get("authority") or "")
        allowed = self._allowed.get(link.source, ())
        if not host_allowed(allowed, authority):
            raise Denied(f"actor {link.source!r} may not send requests to {authority or '(no host)'!r}: the "
                         f"link's allowed_hosts is {','.join(allowed) or 'empty'}")
        timeout_ms = request.get("timeout_ms") or self.settings.outgoing_timeout_ms
        timeout_s = min(int(timeout_ms), self.settings.outgoing_timeout_ms) / 1000.0
        ctx = self.context
        if self.client is None:
            from .client import Client  # aiohttp's client: only once an actor sends

            self.client = Client()
        result: dict[str, Any] = ctx.run(self.client.send(request, timeout_s, self.settings.max_response_bytes),
                                         timeout_s + 1.0)
        return result

    def describe(self) -> dict[str, Any]:
        server = self.server
        return {
            "listeners": sorted(server.listeners) if server is not None else [],
            "routes": [{"actor": r.actor, "address": r.address, "host": r.host, "path": r.path}
                       for r in sorted(self._routes.values(), key=lambda r: r.actor)],
            "waiting": sorted(self._waiting),
            "requests": server.requests if server is not None else 0,
            "failed": server.failures if server is not None else 0,
        }


__all__ = ["HttpProvider", "HttpSettings", "INCOMING", "OUTGOING"]
