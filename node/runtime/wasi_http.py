"""``wasi:http@0.2`` served from Python: the types, the incoming handler, the outgoing handler.

The resources follow the WIT of ``wasi:http/types`` (0.2.0 to 0.2.x, the same names and
signatures): ``fields`` (header names kept in lower case, values as bytes; the
``headers()`` of a request or response from the host are immutable), requests,
responses, bodies as ``wasi:io`` streams (:mod:`~drupelet.node.runtime.wasi_io`),
future trailers and the future response of an outgoing request.

An incoming request is a :class:`~drupelet.providers.base.HttpExchange` from the http
provider (here or on another node): :func:`handle_incoming` passes it to the
component's ``incoming-handler.handle`` as an ``incoming-request`` and a
``response-outparam``, and the exchange gets the response the component sets, its body
and its trailers. An outgoing request goes to the provider linked for
``wasi:http/outgoing-handler``, when its body is finished and the component first asks
for the response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from wasmtime import StoreContext, WasmtimeError
from wasmtime.component import LinkerInstance, Variant

from drupelet.providers.base import HttpExchange, ProviderError

from drupelet.node.runtime.bindings import current
from drupelet.node.runtime.values import Err, Ok
from drupelet.node.runtime import wasi_http_client as client
from drupelet.node.runtime import wasi_http_types as types
from drupelet.node.runtime.wasi_http_types import (FIELDS, INCOMING_BODY, INCOMING_HANDLER, INCOMING_REQUEST,
                                                   OUTGOING_BODY, OUTGOING_HANDLER, RESPONSE_OUTPARAM, TYPES, Entries,
                                                   Fields, IncomingBody, OutgoingBody, OutgoingMessage, method_variant,
                                                   scheme_variant)
from drupelet.node.runtime.handles import HostRep
from drupelet.node.runtime.wasi_io import (ERROR, Funcs, Handle, IoError, StreamFailed, define_instance, get, own,
                                           take)


# -- incoming requests ---------------------------------------------------------------------


# -- incoming requests and their bodies ---------------------------------------------------


@dataclass


class Call:
    """One ``incoming-handler.handle`` in progress: the exchange and what the component did."""

    exchange: HttpExchange
    responded: bool = False
    finished: bool = False
    failed: str | None = None
    body_taken: bool = False
    body_dropped: bool = False


class IncomingRequest:
    def __init__(self, exchange: HttpExchange) -> None:
        self.exchange = exchange
        self.consumed = False


def _req_method(store: StoreContext, this: Handle) -> Variant:
    req: IncomingRequest = get(store, this)
    return method_variant(req.exchange.head.method)


def _req_path(store: StoreContext, this: Handle) -> str | None:
    req: IncomingRequest = get(store, this)
    return req.exchange.head.path_with_query


def _req_scheme(store: StoreContext, this: Handle) -> Variant | None:
    req: IncomingRequest = get(store, this)
    return scheme_variant(req.exchange.head.scheme) if req.exchange.head.scheme else None


def _req_authority(store: StoreContext, this: Handle) -> str | None:
    req: IncomingRequest = get(store, this)
    return req.exchange.head.authority or None


def _req_headers(store: StoreContext, this: Handle) -> HostRep:
    req: IncomingRequest = get(store, this)
    return own(Fields(list(req.exchange.head.headers), mutable=False), FIELDS)


def _req_consume(store: StoreContext, this: Handle) -> Ok | Err:
    req: IncomingRequest = get(store, this)
    if req.consumed:
        return Err(None)
    req.consumed = True
    exchange = req.exchange

    def read(n: int) -> bytes:
        try:
            return exchange.read_body(n)
        except ProviderError as exc:
            raise StreamFailed(exc.message) from exc

    return Ok(own(IncomingBody(read, exchange.request_trailers), INCOMING_BODY))


def _message_body(store: StoreContext, this: Handle) -> Ok | Err:
    message: OutgoingMessage = get(store, this)
    if message.body is not None:
        return Err(None)
    body = message.body = OutgoingBody(message)
    call = current().http_call
    if isinstance(call, Call) and message.outparam_of is call:
        _bind_response_body(call, body)
    return Ok(own(body, OUTGOING_BODY))


class Outparam:
    def __init__(self, call: Call) -> None:
        self.call = call
        self.used = False


def _bind_response_body(call: Call, body: OutgoingBody) -> None:
    exchange = call.exchange
    call.body_taken = True

    def sink(data: bytes) -> None:
        try:
            exchange.write_body(data)
        except ProviderError as exc:
            raise StreamFailed(exc.message) from exc

    def finish(trailers: Entries | None) -> None:
        call.finished = True
        exchange.finish(trailers)

    def dropped() -> None:
        call.body_dropped = True

    body.sink, body.on_finish, body.on_drop = sink, finish, dropped


def _outparam_set(store: StoreContext, param: Handle, response: Any) -> None:
    outparam: Outparam = take(store, param)
    call = outparam.call
    if outparam.used or call.responded or call.failed:
        raise WasmtimeError("response-outparam.set called twice")
    outparam.used = True
    if isinstance(response, Variant):  # err(error-code)
        payload = f": {response.payload}" if isinstance(response.payload, str) else ""
        call.failed = f"the component answered with error-code {response.tag}{payload}"
        call.exchange.fail(call.failed)
        return
    message: OutgoingMessage = take(store, response)
    call.responded = True
    call.exchange.respond(message.status, list(message.headers.entries))
    message.outparam_of = call
    if message.body is not None:
        _bind_response_body(call, message.body)
        if message.body.chunks:
            for chunk in message.body.chunks:
                message.body.sink(chunk)
            message.body.chunks.clear()
        if message.body.finished:
            call.finished = True
            call.exchange.finish(None)


def _http_error_code(store: StoreContext, err: Handle) -> Variant | None:
    found: IoError = get(store, err)
    return found.http_code


# -- the linker and the call ------------------------------------------------------------------

TYPE_FUNCS: Funcs = {
    "[constructor]fields": types._fields_new,
    "[static]fields.from-list": types._fields_from_list,
    "[method]fields.get": types._fields_get,
    "[method]fields.has": types._fields_has,
    "[method]fields.set": types._fields_set,
    "[method]fields.delete": types._fields_delete,
    "[method]fields.append": types._fields_append,
    "[method]fields.entries": types._fields_entries,
    "[method]fields.clone": types._fields_clone,
    "[method]incoming-request.method": _req_method,
    "[method]incoming-request.path-with-query": _req_path,
    "[method]incoming-request.scheme": _req_scheme,
    "[method]incoming-request.authority": _req_authority,
    "[method]incoming-request.headers": _req_headers,
    "[method]incoming-request.consume": _req_consume,
    "[constructor]outgoing-request": client._request_new,
    "[method]outgoing-request.body": _message_body,
    "[method]outgoing-request.method": client._req_get("method", method_variant),
    "[method]outgoing-request.set-method": client._req_set("method", types.method_name),
    "[method]outgoing-request.path-with-query": client._req_get("path_with_query"),
    "[method]outgoing-request.set-path-with-query": client._req_set("path_with_query"),
    "[method]outgoing-request.scheme": client._req_get("scheme", scheme_variant),
    "[method]outgoing-request.set-scheme": client._req_set("scheme", types.scheme_name),
    "[method]outgoing-request.authority": client._req_get("authority"),
    "[method]outgoing-request.set-authority": client._req_set("authority"),
    "[method]outgoing-request.headers": types._message_headers,
    "[constructor]request-options": client._options_new,
    "[method]request-options.connect-timeout": client._opt_get("connect_ns"),
    "[method]request-options.set-connect-timeout": client._opt_set("connect_ns"),
    "[method]request-options.first-byte-timeout": client._opt_get("first_byte_ns"),
    "[method]request-options.set-first-byte-timeout": client._opt_set("first_byte_ns"),
    "[method]request-options.between-bytes-timeout": client._opt_get("between_bytes_ns"),
    "[method]request-options.set-between-bytes-timeout": client._opt_set("between_bytes_ns"),
    "[static]response-outparam.set": _outparam_set,
    "[method]incoming-response.status": client._resp_status,
    "[method]incoming-response.headers": client._resp_headers,
    "[method]incoming-response.consume": client._resp_consume,
    "[method]incoming-body.stream": types._body_stream,
    "[static]incoming-body.finish": types._body_finish,
    "[method]future-trailers.subscribe": types._trailers_subscribe,
    "[method]future-trailers.get": types._trailers_get,
    "[constructor]outgoing-response": types._response_new,
    "[method]outgoing-response.status-code": types._status,
    "[method]outgoing-response.set-status-code": types._set_status,
    "[method]outgoing-response.headers": types._message_headers,
    "[method]outgoing-response.body": _message_body,
    "[method]outgoing-body.write": types._body_write,
    "[static]outgoing-body.finish": types._body_finish_out,
    "[method]future-incoming-response.subscribe": client._future_subscribe,
    "[method]future-incoming-response.get": client._future_get,
    "http-error-code": _http_error_code,
}

FUNCS: dict[str, Funcs] = {TYPES: TYPE_FUNCS, OUTGOING_HANDLER: {"handle": client.outgoing_handle}}
HTTP_RESOURCES: dict[str, dict[str, int]] = {TYPES: types.RESOURCES}


def define(root: LinkerInstance, import_name: str, wanted: list[str]) -> None:
    base = import_name.partition("@")[0]
    define_instance(root, import_name, FUNCS[base], HTTP_RESOURCES.get(base, {}), wanted)


def handle_incoming(func: Any, exchange: HttpExchange, invoke: Any) -> None:
    """Call ``incoming-handler.handle`` with ``exchange`` as its request; ``invoke(func,
    args)`` runs the call under the instance's deadline and trap handling. Afterwards
    the exchange has its response: the component's, or a failure saying why not."""
    ctx = current()
    call = Call(exchange)
    ctx.http_call = call
    try:
        request = own(IncomingRequest(exchange), INCOMING_REQUEST)
        outparam = own(Outparam(call), RESPONSE_OUTPARAM)
        invoke(func, (request, outparam))
    except BaseException:
        if not call.finished and not call.failed:
            exchange.fail("the component trapped")
        raise
    finally:
        ctx.http_call = None
    if call.failed or call.finished:
        return
    if not call.responded:
        exchange.fail("the component returned without setting a response")
    elif not call.body_taken:
        exchange.finish(None)
    else:
        exchange.fail("the component returned without finishing the response body")


__all__ = ["FUNCS", "HTTP_RESOURCES", "INCOMING_HANDLER", "OUTGOING_HANDLER", "TYPES", "define", "handle_incoming",
           "ERROR"]
