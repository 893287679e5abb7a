"""The listeners: aiohttp's low-level HTTP/1.1 server, one per address, with routes to actors.

aiohttp was chosen for its C HTTP parser and its aarch64 wheels; it costs ~230 ms and
~26 MB to import on this machine, so this module (the only one that imports aiohttp's
server) is imported when the first incoming-handler link arrives, never on the node's
import path.

A request is read whole (its body up to ``max_body_bytes``) on the event loop, then
handed to the actor as a :class:`LocalExchange`; the actor's response is kept until it
is finished and sent as one. The listener answers for the actor when it cannot: 404 (no
route), 413 (body too large), 408 (slow body), 503 (the actor runs nowhere, or is
overloaded), 504 (no response in time), 500 (the component trapped, answered with an
error code or returned no whole response). A 500 names nothing of the component's
internals; the node's log has the reason.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from aiohttp.web_server import Server

from ..base import Fields, HttpHead, PayloadTooLarge, ProviderError
from .config import HttpSettings, Route, is_loopback, split_address

log = logging.getLogger(__name__)

SHUTDOWN_TIMEOUT_S = 2.0
DROPPED_HEADERS = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})
"""Response fields the server sets itself."""
REASONS = {404: "Not Found", 408: "Request Timeout", 413: "Content Too Large", 500: "Internal Server Error",
           503: "Service Unavailable", 504: "Gateway Timeout"}
TIMED_OUT = "no response in time"
UNAVAILABLE_CODES = frozenset({"actor-not-found", "not-running", "overloaded", "actor-stopped", "call-failed",
                               "unavailable", "nats-unavailable"})

Serve = Callable[[str, "LocalExchange"], "Awaitable[None] | None"]


class LocalExchange:
    """One request on this node's listener and the response an actor gives it
    (:class:`~drupelet.providers.base.HttpExchange`). Thread-safe: the actor's instance
    calls it from its worker thread, the lattice from the event loop."""

    _ids = itertools.count(1)

    def __init__(self, loop: asyncio.AbstractEventLoop, actor: str, head: HttpHead, body: bytes,
                 max_response_bytes: int, *, reuse_instance: bool = False) -> None:
        self.exchange_id = next(self._ids)
        self.reuse_instance = reuse_instance
        self.actor = actor
        self.head = head
        self._body = body
        self._offset = 0
        self._loop = loop
        self._lock = threading.Lock()
        self.max_response_bytes = max_response_bytes
        self.status: int | None = None
        self.headers: Fields = []
        self.chunks: list[bytes] = []
        self.size = 0
        self.trailers: Fields | None = None
        self.failure: str | None = None
        self.refusal: BaseException | None = None
        """Why the request never reached the actor (it runs nowhere, it is overloaded…)."""
        self.settled = False
        self.done: asyncio.Future[None] = loop.create_future()

    def read_body(self, max_bytes: int) -> bytes:
        with self._lock:
            chunk = self._body[self._offset:self._offset + max(0, max_bytes)]
            self._offset += len(chunk)
            return chunk

    def request_trailers(self) -> Fields | None:
        return None

    def respond(self, status: int, headers: Fields) -> None:
        with self._lock:
            if self.settled or self.status is not None:
                raise ProviderError("the response was already sent")
            self.status, self.headers = status, list(headers)

    def write_body(self, data: bytes) -> None:
        with self._lock:
            if self.settled:
                raise ProviderError("the response is already complete")
            if self.size + len(data) > self.max_response_bytes:
                raise PayloadTooLarge(self.size + len(data), self.max_response_bytes)
            self.chunks.append(bytes(data))
            self.size += len(data)

    def finish(self, trailers: Fields | None) -> None:
        with self._lock:
            if self.settled:
                return
            if self.status is None:
                self.failure = "the body was finished before a response was set"
            self.trailers = trailers
            self.settled = True
        self._wake()

    def fail(self, reason: str) -> None:
        with self._lock:
            if self.settled:
                return
            self.failure = reason
            self.settled = True
        self._wake()

    def _wake(self) -> None:
        def settle() -> None:
            if not self.done.done():
                self.done.set_result(None)
        try:
            if _on_loop(self._loop):
                settle()
                return
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed: nobody waits any more
            return
        time.sleep(0)  # let the loop send the response now, rather than once this thread blocks


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


def plain(status: int, text: str | None = None) -> web.Response:
    return web.Response(status=status, text=(text or REASONS.get(status, "Error")) + "\n")


class Listener:
    """One address: its aiohttp server, its asyncio server and the routes on it."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.routes: list[Route] = []
        self.server: Server | None = None
        self.socket_server: asyncio.base_events.Server | None = None

    def match(self, host: str | None, path: str) -> Route | None:
        found = [r for r in self.routes if r.matches(host, path)]
        return max(found, key=lambda r: r.specificity) if found else None

    @property
    def port(self) -> int:
        assert self.socket_server is not None
        return int(self.socket_server.sockets[0].getsockname()[1])


class HttpServer:
    """The listeners of one node's http provider and the requests in progress on them."""

    def __init__(self, loop: asyncio.AbstractEventLoop, settings: HttpSettings, serve: Serve, node: str) -> None:
        self.loop = loop
        self.settings = settings
        self.serve = serve
        self.node = node
        self.listeners: dict[str, Listener] = {}
        self.exchanges: dict[int, LocalExchange] = {}
        self._limits: dict[str, asyncio.Semaphore] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.requests = 0
        self.failures = 0

    async def add(self, route: Route) -> Listener:
        """Serve ``route``; opens its address's listener if it is the first there."""
        listener = self.listeners.get(route.address)
        if listener is not None:
            for other in listener.routes:
                if other.host == route.host and other.path == route.path and other.actor != route.actor:
                    raise ProviderError(f"{route.address}{route.path or ''} (host {route.host or 'any'}) is already "
                                        f"routed to actor {other.actor!r}")
            listener.routes = [r for r in listener.routes if r.actor != route.actor] + [route]
            return listener
        listener = Listener(route.address)
        host, port = split_address(route.address, what="address")
        s = self.settings
        listener.server = Server(self._handler(listener), loop=self.loop, access_log=None,
                                 keepalive_timeout=s.header_timeout_ms / 1000.0, max_line_size=s.max_header_bytes,
                                 max_field_size=s.max_header_bytes, max_headers=s.max_headers,
                                 handler_cancellation=True)
        try:
            listener.socket_server = await self.loop.create_server(listener.server, host, port, reuse_address=True)
        except OSError as exc:
            raise ProviderError(f"cannot listen on {route.address}: {exc.strerror or exc}") from exc
        listener.routes.append(route)
        self.listeners[route.address] = listener
        if not is_loopback(host):
            log.warning("http: listening on %s: actor %s answers anyone who can reach this node, with no "
                        "authentication", route.address, route.actor)
        else:
            log.info("http: listening on %s for actor %s", route.address, route.actor)
        return listener

    async def remove(self, actor: str, address: str | None = None) -> None:
        """Stop serving ``actor`` (on ``address``, or everywhere); a listener left with no
        route closes."""
        for addr, listener in list(self.listeners.items()):
            if address is not None and addr != address:
                continue
            listener.routes = [r for r in listener.routes if r.actor != actor]
            if not listener.routes:
                del self.listeners[addr]
                await self._close(listener)

    async def close(self) -> None:
        listeners, self.listeners = list(self.listeners.values()), {}
        for listener in listeners:
            await self._close(listener)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    async def _close(self, listener: Listener) -> None:
        if listener.socket_server is not None:
            listener.socket_server.close()
        if listener.server is not None:
            await listener.server.shutdown(SHUTDOWN_TIMEOUT_S)
        if listener.socket_server is not None:
            await listener.socket_server.wait_closed()
        log.info("http: stopped listening on %s", listener.address)

    def _handler(self, listener: Listener) -> Callable[[web.BaseRequest], Awaitable[web.StreamResponse]]:
        async def handle(request: web.BaseRequest) -> web.StreamResponse:
            return await self.handle(listener, request)
        return handle

    async def handle(self, listener: Listener, request: web.BaseRequest) -> web.StreamResponse:
        started = time.monotonic()
        timeout = self.settings.request_timeout_ms / 1000.0
        host = request.host.rsplit(":", 1)[0] if request.host.count(":") == 1 else request.host
        route = listener.match(host, request.path)
        if route is None:
            return plain(404)
        self.requests += 1
        body = await self._read_body(request, timeout)
        if isinstance(body, web.Response):
            return body
        head = HttpHead(method=request.method, scheme="https" if request.secure else "http",
                        authority=request.headers.get("Host", ""), path_with_query=request.raw_path,
                        headers=tuple((n.decode("latin-1").lower(), bytes(v)) for n, v in request.raw_headers))
        exchange = LocalExchange(self.loop, route.actor, head, body, self.settings.max_response_bytes,
                                 reuse_instance=route.reuse)
        limit = self._limits.get(route.actor)
        if limit is None:
            limit = self._limits[route.actor] = asyncio.Semaphore(self.settings.max_concurrent)
        if limit.locked():  # wait for a turn (an idle actor's request goes straight on)
            try:
                await asyncio.wait_for(limit.acquire(), max(0.0, timeout - (time.monotonic() - started)))
            except TimeoutError:
                log.info("http: actor %s has %d requests in progress; one waited %.0f ms and was refused",
                         route.actor, self.settings.max_concurrent, timeout * 1000)
                return plain(503)
        else:
            await limit.acquire()
        self.exchanges[exchange.exchange_id] = exchange

        def settled(_: asyncio.Future[None]) -> None:
            limit.release()
            self.exchanges.pop(exchange.exchange_id, None)

        exchange.done.add_done_callback(settled)
        try:
            self._start(route.actor, exchange)
        except Exception as exc:  # the request could not reach the actor
            exchange.fail(str(exc))
            return self._refused(route.actor, exc)
        remaining = max(0.0, timeout - (time.monotonic() - started))
        timer = self.loop.call_later(remaining, exchange.fail, TIMED_OUT)
        try:
            await exchange.done
        finally:
            timer.cancel()
        if exchange.failure == TIMED_OUT:
            log.warning("http: actor %s did not answer %s %s within %d ms", route.actor, request.method,
                        request.path, self.settings.request_timeout_ms)
            self.failures += 1
            return plain(504)
        if exchange.refusal is not None:
            return self._refused(route.actor, exchange.refusal)
        if exchange.failure is not None:
            log.warning("http: actor %s failed %s %s: %s", route.actor, request.method, request.path,
                        exchange.failure)
            self.failures += 1
            return plain(500)
        assert exchange.status is not None
        response = web.Response(status=exchange.status, body=b"".join(exchange.chunks))
        for name, value in exchange.headers:
            if name not in DROPPED_HEADERS:
                response.headers.add(name, value.decode("latin-1"))
        return response

    def _start(self, actor: str, exchange: LocalExchange) -> None:
        """Hand the request to the actor: queued at once when it runs here; across the
        lattice, a task whose error refuses the exchange. An error raised here means the
        request could not reach the actor."""
        pending = self.serve(actor, exchange)
        if pending is None:
            return

        async def carry() -> None:
            await pending

        task = asyncio.ensure_future(carry())
        self._tasks.add(task)

        def ended(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            error = None if t.cancelled() else t.exception()
            if error is not None and not exchange.settled:
                exchange.refusal = error
                exchange.fail(str(error))

        task.add_done_callback(ended)

    def _refused(self, actor: str, exc: BaseException | None) -> web.Response:
        """The request could not reach the actor: 503 when it runs nowhere or is busy."""
        code = str(getattr(exc, "code", ""))
        self.failures += 1
        if code in UNAVAILABLE_CODES:
            log.info("http: actor %s cannot take the request: %s", actor, exc)
            return plain(503)
        if code == "payload-too-large":
            return plain(413)
        log.warning("http: actor %s: %s", actor, exc)
        return plain(500)

    async def _read_body(self, request: web.BaseRequest, timeout: float) -> bytes | web.Response:
        limit = self.settings.max_body_bytes
        if not request.body_exists:
            return b""
        if request.content_length is not None and request.content_length > limit:
            return plain(413)
        chunks: list[bytes] = []
        size = 0

        async def read() -> None:
            nonlocal size
            while True:
                chunk = await request.content.readany()
                if not chunk:
                    return
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(size, limit)
                chunks.append(chunk)

        try:
            await asyncio.wait_for(read(), timeout)
        except PayloadTooLarge:
            return plain(413)
        except TimeoutError:
            return plain(408)
        return b"".join(chunks)
