"""HTTP requests across the lattice: a request taken by the http provider on one node,
answered by an actor on another.

The provider's node publishes an :class:`~drupelet.node.lattice.requests.HttpDelivery`
(the request's head and its body's first chunk) to ``drupelet.<lattice>.http.<actor>``,
queue group the actor's name, and waits for the :class:`~.requests.HttpAnswer`. The node
that takes it runs the actor's ``incoming-handler`` with a :class:`RemoteExchange`: the
rest of a large body is read, and a large response sent, in chunks of at most
:data:`CHUNK_BYTES` through the provider's operations (``read_body``, ``respond``,
``write_body``), as provider calls over the actor's link, which the provider's node checks
like any other. The answer carries what is left: the status and headers if not yet sent,
the last chunk, the trailers, or why there is no whole response.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from typing import Any

from drupelet.providers.base import Fields, HttpExchange, HttpHead, Link, Provider, ProviderError

from drupelet.node.lattice.errors import BadRequest
from drupelet.node.lattice.protocol import decode, encode, parse_request
from drupelet.node.lattice.requests import HttpAnswer, HttpDelivery, parse_as

log = logging.getLogger(__name__)

CHUNK_BYTES = 256 << 10
"""The most body bytes in one message (base64 in JSON: ~342 KiB, under NATS's 1 MiB)."""


def _fields(pairs: list[tuple[str, Any]] | None) -> Fields:
    return [(str(n), v if isinstance(v, bytes) else str(v).encode("latin-1")) for n, v in decode(pairs or [])]


def delivery(node: str, provider: str, exchange: HttpExchange) -> bytes:
    """The message that carries ``exchange`` to the actor's node (reads the body's first chunk)."""
    first = exchange.read_body(CHUNK_BYTES)
    head = exchange.head
    return json.dumps({
        "node": node, "provider": provider, "exchange": exchange.exchange_id, "method": head.method,
        "scheme": head.scheme, "authority": head.authority, "path": head.path_with_query,
        "headers": encode([list(h) for h in head.headers]), "body": encode(first), "more": len(first) == CHUNK_BYTES,
        "reuse": exchange.reuse_instance,
    }, separators=(",", ":")).encode()


def parse_delivery(data: bytes) -> HttpDelivery:
    return parse_as(HttpDelivery, parse_request(data))


def apply_answer(exchange: HttpExchange, data: bytes) -> None:
    """Give ``exchange`` the end of the response an :class:`HttpAnswer` carries."""
    try:
        answer = parse_as(HttpAnswer, parse_request(data))
        body = decode(answer.body)
    except BadRequest as exc:
        exchange.fail(f"the actor's node sent a malformed answer: {exc.message}")
        return
    if answer.failure is not None:
        exchange.fail(answer.failure)
        return
    try:
        if answer.status is not None:
            exchange.respond(answer.status, _fields(answer.headers))
        if body:
            exchange.write_body(bytes(body))
        exchange.finish(_fields(answer.trailers) if answer.trailers is not None else None)
    except ProviderError as exc:
        exchange.fail(exc.message)


class RemoteExchange:
    """The :class:`~drupelet.providers.base.HttpExchange` an actor answers on this node for
    a request taken on another: reads past the first chunk and response chunks are calls
    to the provider there, over the actor's link."""

    def __init__(self, request: HttpDelivery, provider: Provider, link: Link,
                 loop: asyncio.AbstractEventLoop) -> None:
        self.exchange_id = request.exchange
        self._loop = loop
        self.done: asyncio.Future[None] = loop.create_future()
        """Set once the response is finished or failed (the answer can then be sent)."""
        self.reuse_instance = request.reuse
        self.head = HttpHead(method=request.method, scheme=request.scheme, authority=request.authority,
                             path_with_query=request.path, headers=tuple(_fields(request.headers)))
        self._first = bytes(decode(request.body) or b"")
        self._more = request.more
        self._provider = provider
        self._link = link
        self._lock = threading.Lock()
        self._status: int | None = None
        self._headers: Fields = []
        self._head_sent = False
        self._pending: list[bytes] = []
        self._pending_size = 0
        self._trailers: Fields | None = None
        self._failure: str | None = None
        self._finished = False

    def _call(self, op: str, *args: Any) -> Any:
        return self._provider.invoke(self._link, op, [self.exchange_id, *args])

    def read_body(self, max_bytes: int) -> bytes:
        if self._first:
            chunk, self._first = self._first[:max_bytes], self._first[max_bytes:]
            return chunk
        if not self._more or max_bytes <= 0:
            return b""
        chunk = bytes(self._call("read_body", min(max_bytes, CHUNK_BYTES)) or b"")
        if not chunk:
            self._more = False
        return chunk

    def request_trailers(self) -> Fields | None:
        return None

    def respond(self, status: int, headers: Fields) -> None:
        self._status, self._headers = status, list(headers)

    def write_body(self, data: bytes) -> None:
        self._pending.append(bytes(data))
        self._pending_size += len(data)
        if self._pending_size >= CHUNK_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._head_sent:
            if self._status is None:
                raise ProviderError("body bytes before the response's status")
            self._call("respond", self._status, [[n, v] for n, v in self._headers])
            self._head_sent = True
        data = b"".join(self._pending)
        self._pending, self._pending_size = [], 0
        for start in range(0, len(data), CHUNK_BYTES):
            self._call("write_body", data[start:start + CHUNK_BYTES])

    def finish(self, trailers: Fields | None) -> None:
        self._trailers, self._finished = trailers, True
        self._settle()

    def fail(self, reason: str) -> None:
        if not self._finished:
            self._failure = reason
        self._settle()

    def _settle(self) -> None:
        def settle() -> None:
            if not self.done.done():
                self.done.set_result(None)
        try:
            self._loop.call_soon_threadsafe(settle)
        except RuntimeError:  # the loop closed: nobody waits any more
            pass

    def answer(self) -> bytes:
        """The reply for the provider's node, once :attr:`done`."""
        failure = self._failure
        if failure is None and not self._finished:
            failure = "the component returned without a whole response"
        if failure is not None:
            return json.dumps({"failure": failure[:1024]}, separators=(",", ":")).encode()
        return json.dumps({
            "status": None if self._head_sent else self._status,
            "headers": [] if self._head_sent else encode([list(h) for h in self._headers]),
            "body": encode(b"".join(self._pending)),
            "trailers": encode([list(t) for t in self._trailers]) if self._trailers is not None else None,
        }, separators=(",", ":")).encode()
