"""The resources ``wasi:http/types`` shares between requests and responses, incoming
and outgoing: ``fields``, bodies (as :mod:`~drupelet.node.runtime.wasi_io` streams),
future trailers, and the outgoing request or response with its headers and status.
Served from Python, by :mod:`~drupelet.node.runtime.wasi_http`, which says why.
"""

from __future__ import annotations

import re
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime.component import Variant

from drupelet.providers.base import ProviderError

from drupelet.node.runtime.values import Err, Ok
from drupelet.node.runtime.handles import HostRep
from drupelet.node.runtime.wasi_io import (Handle, INPUT_STREAM, OUTPUT_STREAM, POLLABLE, READY, InputStream, OutputStream,
                                           StreamFailed, get, own, take)

TYPES = "wasi:http/types"
INCOMING_HANDLER = "wasi:http/incoming-handler"
OUTGOING_HANDLER = "wasi:http/outgoing-handler"

FIELDS = 0x120
INCOMING_REQUEST = 0x121
OUTGOING_REQUEST = 0x122
REQUEST_OPTIONS = 0x123
RESPONSE_OUTPARAM = 0x124
INCOMING_RESPONSE = 0x125
INCOMING_BODY = 0x126
FUTURE_TRAILERS = 0x127
OUTGOING_RESPONSE = 0x128
OUTGOING_BODY = 0x129
FUTURE_INCOMING_RESPONSE = 0x12A

RESOURCES = {
    "fields": FIELDS, "incoming-request": INCOMING_REQUEST, "outgoing-request": OUTGOING_REQUEST,
    "request-options": REQUEST_OPTIONS, "response-outparam": RESPONSE_OUTPARAM,
    "incoming-response": INCOMING_RESPONSE, "incoming-body": INCOMING_BODY, "future-trailers": FUTURE_TRAILERS,
    "outgoing-response": OUTGOING_RESPONSE, "outgoing-body": OUTGOING_BODY,
    "future-incoming-response": FUTURE_INCOMING_RESPONSE,
}

METHODS = ("get", "head", "post", "put", "delete", "connect", "options", "trace", "patch")
TOKEN = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
FORBIDDEN = frozenset({"connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade", "te",
                       "http2-settings"})
"""Hop-by-hop fields a component may not set: the server owns the connection."""

Entries = list[tuple[str, bytes]]


def method_variant(method: str) -> Variant:
    low = method.lower()
    return Variant(low) if low in METHODS else Variant("other", method)


def method_name(value: Variant) -> str:
    return str(value.payload) if value.tag == "other" else value.tag.upper()


def scheme_variant(scheme: str) -> Variant:
    low = scheme.lower()
    return Variant("HTTP") if low == "http" else Variant("HTTPS") if low == "https" else Variant("other", scheme)


def scheme_name(value: Variant | None) -> str | None:
    if value is None:
        return None
    return str(value.payload) if value.tag == "other" else value.tag.lower()


def internal_error(message: str | None) -> Variant:
    return Variant("internal-error", message)


# -- fields ----------------------------------------------------------------------------


class Fields:
    def __init__(self, entries: Entries | None = None, *, mutable: bool = True) -> None:
        self.entries: Entries = entries if entries is not None else []
        self.mutable = mutable


def _check_field(name: str, value: bytes | None = None) -> Variant | None:
    if not TOKEN.match(name.encode("utf-8", "replace")):
        return Variant("invalid-syntax")
    if value is not None and (b"\r" in value or b"\n" in value or b"\0" in value):
        return Variant("invalid-syntax")
    if name.lower() in FORBIDDEN:
        return Variant("forbidden")
    return None


def _fields_new(store: StoreContext) -> HostRep:
    return own(Fields(), FIELDS)


def _fields_from_list(store: StoreContext, entries: list[tuple[str, bytes]]) -> Ok | Err:
    out: Entries = []
    for name, value in entries:
        value = bytes(value)
        problem = _check_field(name, value)
        if problem is not None:
            return Err(problem)
        out.append((name.lower(), value))
    return Ok(own(Fields(out), FIELDS))


def _fields_get(store: StoreContext, this: Handle, name: str) -> list[bytes]:
    fields: Fields = get(store, this)
    low = name.lower()
    return [v for n, v in fields.entries if n == low]


def _fields_has(store: StoreContext, this: Handle, name: str) -> bool:
    fields: Fields = get(store, this)
    low = name.lower()
    return any(n == low for n, _ in fields.entries)


def _mutate(store: StoreContext, this: Handle, name: str, values: list[bytes], *, replace: bool) -> Ok | Err:
    fields: Fields = get(store, this)
    if not fields.mutable:
        return Err(Variant("immutable"))
    plain = [bytes(v) for v in values]
    problems = [_check_field(name, value) for value in plain] if plain else [_check_field(name)]
    for problem in problems:
        if problem is not None:
            return Err(problem)
    low = name.lower()
    if replace:
        fields.entries[:] = [(n, v) for n, v in fields.entries if n != low]
    fields.entries.extend((low, v) for v in plain)
    return Ok(None)


def _fields_set(store: StoreContext, this: Handle, name: str, values: list[bytes]) -> Ok | Err:
    return _mutate(store, this, name, values, replace=True)


def _fields_delete(store: StoreContext, this: Handle, name: str) -> Ok | Err:
    return _mutate(store, this, name, [], replace=True)


def _fields_append(store: StoreContext, this: Handle, name: str, value: bytes) -> Ok | Err:
    return _mutate(store, this, name, [value], replace=False)


def _fields_entries(store: StoreContext, this: Handle) -> list[tuple[str, bytes]]:
    fields: Fields = get(store, this)
    return list(fields.entries)


def _fields_clone(store: StoreContext, this: Handle) -> HostRep:
    fields: Fields = get(store, this)
    return own(Fields(list(fields.entries)), FIELDS)


class IncomingBody:
    """A request body (or an outgoing request's response body): one stream, then trailers."""

    def __init__(self, read: Any, trailers: Any) -> None:
        self.read = read
        self.trailers = trailers
        self.stream_taken = False
        self.stream_open = False

    def stream_dropped(self) -> None:
        self.stream_open = False


def _body_stream(store: StoreContext, this: Handle) -> Ok | Err:
    body: IncomingBody = get(store, this)
    if body.stream_taken:
        return Err(None)
    body.stream_taken = body.stream_open = True
    stream = InputStream(body.read)
    stream.owner = body
    return Ok(own(stream, INPUT_STREAM))


class FutureTrailers:
    def __init__(self, trailers: Any) -> None:
        self.trailers = trailers
        self.taken = False


def _body_finish(store: StoreContext, this: Handle) -> HostRep:
    body: IncomingBody = take(store, this)
    if body.stream_open:
        raise WasmtimeError("incoming-body.finish: the body's stream is still open (drop it first)")
    return own(FutureTrailers(body.trailers), FUTURE_TRAILERS)


def _trailers_subscribe(store: StoreContext, this: Handle) -> HostRep:
    get(store, this)
    return own(READY, POLLABLE)


def _trailers_get(store: StoreContext, this: Handle) -> Any:
    future: FutureTrailers = get(store, this)
    if future.taken:
        return Err(None)
    future.taken = True
    found = future.trailers()
    value = None if found is None else own(Fields(list(found), mutable=False), FIELDS)
    return Ok(Ok(value))


# -- responses ---------------------------------------------------------------------------


class OutgoingMessage:
    """An outgoing response or request: headers, and a body taken at most once."""

    def __init__(self, headers: Fields) -> None:
        self.headers = headers
        self.status = 200
        self.body: OutgoingBody | None = None
        self.method = "GET"
        self.scheme: str | None = None
        self.authority: str | None = None
        self.path_with_query: str | None = None
        self.outparam_of: object = None
        """The incoming request this is the response to, once the component set it."""


class OutgoingBody:
    """Bytes written through one output stream, then ``finish`` with optional trailers."""

    def __init__(self, message: OutgoingMessage) -> None:
        self.message = message
        self.stream_taken = False
        self.stream_open = False
        self.chunks: list[bytes] = []
        self.size = 0
        self.limit = 0
        self.sink: Any = None
        """Where written bytes go at once (a response in progress), else kept in ``chunks``."""
        self.on_finish: Any = None
        self.on_drop: Any = None
        self.finished = False

    def write(self, data: bytes) -> None:
        self.size += len(data)
        if self.limit and self.size > self.limit:
            raise StreamFailed(f"body larger than {self.limit} bytes",
                               Variant("HTTP-request-body-size", self.size))
        if self.sink is not None:
            self.sink(data)
        else:
            self.chunks.append(data)

    def stream_dropped(self) -> None:
        self.stream_open = False

    def dropped(self) -> None:
        if not self.finished and self.on_drop is not None:
            self.on_drop()


def _response_new(store: StoreContext, headers: Handle) -> HostRep:
    fields: Fields = take(store, headers)
    fields.mutable = True
    return own(OutgoingMessage(fields), OUTGOING_RESPONSE)


def _status(store: StoreContext, this: Handle) -> int:
    message: OutgoingMessage = get(store, this)
    return message.status


def _set_status(store: StoreContext, this: Handle, status: int) -> Ok | Err:
    message: OutgoingMessage = get(store, this)
    if not 100 <= status <= 999:
        return Err(None)
    message.status = status
    return Ok(None)


def _message_headers(store: StoreContext, this: Handle) -> HostRep:
    message: OutgoingMessage = get(store, this)
    return own(message.headers, FIELDS)


def _body_write(store: StoreContext, this: Handle) -> Ok | Err:
    body: OutgoingBody = get(store, this)
    if body.stream_taken:
        return Err(None)
    body.stream_taken = body.stream_open = True
    stream = OutputStream(body.write)
    stream.owner = body
    return Ok(own(stream, OUTPUT_STREAM))


def _body_finish_out(store: StoreContext, this: Handle, trailers: Handle | None) -> Ok | Err:
    body: OutgoingBody = take(store, this)
    if body.stream_open:
        raise WasmtimeError("outgoing-body.finish: the body's stream is still open (drop it first)")
    extra = take(store, trailers).entries if trailers is not None else None
    body.finished = True
    if body.on_finish is not None:
        try:
            body.on_finish(extra)
        except ProviderError as exc:
            return Err(internal_error(exc.message))
    return Ok(None)

