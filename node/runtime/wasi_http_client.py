"""``wasi:http/outgoing-handler`` and the outgoing side of ``wasi:http/types``: outgoing
requests, their options, the future response and the incoming response.

A request goes to the provider linked for ``wasi:http/outgoing-handler`` (here or on
another node) once its body is finished and the component first asks for the response
(``future-incoming-response.get``, or a poll of its pollable); the provider's refusal
or failure becomes the interface's ``error-code``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from wasmtime import StoreContext
from wasmtime.component import Variant

from drupelet.providers.base import ProviderError

from drupelet.node.runtime.bindings import current
from drupelet.node.runtime.values import Err, Ok, record
from drupelet.node.runtime.wasi_http_types import (FIELDS, FUTURE_INCOMING_RESPONSE, INCOMING_BODY, INCOMING_RESPONSE,
                                                   OUTGOING_HANDLER, OUTGOING_REQUEST, REQUEST_OPTIONS, Entries, Fields,
                                                   IncomingBody, OutgoingMessage, internal_error)
from drupelet.node.runtime.handles import HostRep
from drupelet.node.runtime.wasi_io import Handle, POLLABLE, Pollable, get, own, take


@dataclass


class RequestOptions:
    connect_ns: int | None = None
    first_byte_ns: int | None = None
    between_bytes_ns: int | None = None


def _request_new(store: StoreContext, headers: Handle) -> HostRep:
    fields: Fields = take(store, headers)
    fields.mutable = True
    return own(OutgoingMessage(fields), OUTGOING_REQUEST)


def _req_get(attr: str, convert: Any = None) -> Any:
    def call(store: StoreContext, this: Handle) -> Any:
        value = getattr(get(store, this), attr)
        return convert(value) if convert is not None and value is not None else value
    return call


def _req_set(attr: str, convert: Any = None) -> Any:
    def call(store: StoreContext, this: Handle, value: Any) -> Ok | Err:
        message = get(store, this)
        setattr(message, attr, convert(value) if convert is not None and value is not None else value)
        return Ok(None)
    return call


def _options_new(store: StoreContext) -> HostRep:
    return own(RequestOptions(), REQUEST_OPTIONS)


def _opt_get(attr: str) -> Any:
    def call(store: StoreContext, this: Handle) -> int | None:
        value: int | None = getattr(get(store, this), attr)
        return value
    return call


def _opt_set(attr: str) -> Any:
    def call(store: StoreContext, this: Handle, value: int | None) -> Ok | Err:
        setattr(get(store, this), attr, value)
        return Ok(None)
    return call


class FutureResponse:
    """The response to an outgoing request: sent once its body is finished (or it has
    none) and the component first asks for it; the answer, or the error code."""

    def __init__(self, request: OutgoingMessage, options: RequestOptions | None) -> None:
        self.request = request
        self.options = options
        self.result: Ok | Err | None = None
        self.taken = False
        self.pollable = Pollable(check=self.ready)

    def ready(self) -> bool:
        body = self.request.body
        if body is not None and not body.finished:
            return False
        if self.result is None:
            self.result = send_outgoing(self.request, self.options)
        return True


@dataclass


class IncomingResponse:
    status: int
    headers: Entries
    body: bytes
    consumed: bool = False
    offset: int = field(default=0)


def send_outgoing(request: OutgoingMessage, options: RequestOptions | None) -> Ok | Err:
    """Send ``request`` through the provider linked for the outgoing handler (blocking)."""
    ctx = current()
    body = b"".join(request.body.chunks) if request.body is not None else b""
    timeout_ms = None
    if options is not None:
        waits = [v for v in (options.connect_ns, options.first_byte_ns, options.between_bytes_ns) if v]
        timeout_ms = max(1, max(waits) // 1_000_000) if waits else None
    try:
        provider, link = ctx.host.resolve(OUTGOING_HANDLER)
        answer = provider.invoke(link, "send", [{
            "method": request.method, "scheme": request.scheme or "https", "authority": request.authority or "",
            "path_with_query": request.path_with_query or "/", "headers": [list(e) for e in request.headers.entries],
            "body": body, "timeout_ms": timeout_ms}])
    except ProviderError as exc:
        ctx.host.log("warn", OUTGOING_HANDLER, f"{request.method} {request.authority}: {exc.message}")
        return Err(outgoing_error(exc))
    return Ok(IncomingResponse(int(answer["status"]), [(str(n), bytes(v)) for n, v in answer["headers"]],
                               bytes(answer["body"])))


def outgoing_error(exc: ProviderError) -> Variant:
    """A provider's error as ``error-code``: ``http:<case>`` codes name the case."""
    code = exc.code
    if code == "denied" or code == "not-linked":
        return Variant("HTTP-request-denied")
    if code == "timeout":
        return Variant("connection-timeout")
    if code.startswith("http:"):
        case = code.removeprefix("http:")
        if case == "DNS-error":
            return Variant(case, record(rcode=None, info_code=None))
        if case in ("HTTP-response-body-size", "HTTP-request-body-size"):
            return Variant(case, None)
        if case in ("destination-not-found", "connection-refused", "connection-terminated", "connection-timeout",
                    "HTTP-protocol-error", "HTTP-response-incomplete", "HTTP-response-timeout",
                    "destination-unavailable", "HTTP-request-URI-invalid", "HTTP-request-method-invalid",
                    "TLS-protocol-error", "TLS-certificate-error", "HTTP-request-denied"):
            return Variant(case)
    return internal_error(exc.message)


def outgoing_handle(store: StoreContext, request: Handle, options: Handle | None) -> Ok | Err:
    message: OutgoingMessage = take(store, request)
    opts: RequestOptions | None = take(store, options) if options is not None else None
    return Ok(own(FutureResponse(message, opts), FUTURE_INCOMING_RESPONSE))


def _future_subscribe(store: StoreContext, this: Handle) -> HostRep:
    future: FutureResponse = get(store, this)
    return own(future.pollable, POLLABLE)


def _future_get(store: StoreContext, this: Handle) -> Any:
    future: FutureResponse = get(store, this)
    if not future.ready():
        return None
    if future.taken:
        return Err(None)
    future.taken = True
    result = future.result
    if isinstance(result, Err):
        return Ok(result)
    assert result is not None
    return Ok(Ok(own(result.value, INCOMING_RESPONSE)))


def _resp_status(store: StoreContext, this: Handle) -> int:
    response: IncomingResponse = get(store, this)
    return response.status


def _resp_headers(store: StoreContext, this: Handle) -> HostRep:
    response: IncomingResponse = get(store, this)
    return own(Fields(list(response.headers), mutable=False), FIELDS)


def _resp_consume(store: StoreContext, this: Handle) -> Ok | Err:
    response: IncomingResponse = get(store, this)
    if response.consumed:
        return Err(None)
    response.consumed = True

    def read(n: int) -> bytes:
        chunk = response.body[response.offset:response.offset + n]
        response.offset += len(chunk)
        return chunk

    return Ok(own(IncomingBody(read, lambda: None), INCOMING_BODY))

