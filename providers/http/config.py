"""The http provider's configuration: ``[providers.http]`` declared once, and its link config.

Link config of ``wasi:http/incoming-handler`` (all optional; strings, checked when the
link is put):

| key | meaning |
|---|---|
| ``address`` | ``host:port`` to listen on for this actor; default: the provider's ``address`` |
| ``path`` | a path prefix (``/api``): the listener hands this actor the requests under it (the path unchanged) |
| ``host`` | a Host header (``pi-1.local``, without the port): the listener hands this actor the requests naming it |
| ``instances`` | ``fresh`` (default): each request gets an instance of its own, as wasmtime serve and wasmCloud give it (componentize-js components need it); ``reuse``: an instance answers request after request (faster; for components that allow it, as componentize-py's do) |

These are wasmCloud's routing modes: an address of its own per actor, one listener
shared by path prefix, or one shared by Host header (``path`` and ``host`` together
narrow a route further). A request no route matches is a 404.

Link config of ``wasi:http/outgoing-handler``:

| key | meaning |
|---|---|
| ``allowed_hosts`` | comma-separated hosts (``api.example.com``, ``127.0.0.1:9000``, ``*.example.com``) the actor may send requests to; a host without a port matches any port. Absent or empty: none |
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import Meta

from ..base import Link, ProviderError


class HttpSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[providers.http]``."""

    address: Annotated[str, Meta(description=(
        "`host:port` of the listener shared by the links that name no `address` of their own. A host other "
        "than loopback serves anyone who can reach the node: a WARNING says so"))] = "127.0.0.1:8080"
    max_body_bytes: Annotated[int, Meta(ge=0, description=(
        "largest request body; a larger one is answered 413 before the actor sees it"))] = 1 << 20
    max_response_bytes: Annotated[int, Meta(ge=0, description=(
        "largest response body an actor may write; past it the actor's write fails and the client gets a 500"))] \
        = 8 << 20
    max_headers: Annotated[int, Meta(ge=1, le=1000, description=(
        "most header fields in a request; more is answered 431"))] = 100
    max_header_bytes: Annotated[int, Meta(ge=256, le=1 << 20, description=(
        "longest request line or header field, in bytes; longer is answered 431 (or 400 for the request line)"))] \
        = 8190
    request_timeout_ms: Annotated[int, Meta(ge=1, description=(
        "longest a request may take from its head to the actor's response, its body read included; past it "
        "the client gets a 504 (slow body: 408)"))] = 30_000
    header_timeout_ms: Annotated[int, Meta(ge=1, description=(
        "longest a connection may stay without a whole request head, idle keep-alive included: a client "
        "that sends its headers slowly, or nothing, is disconnected"))] = 10_000
    max_concurrent: Annotated[int, Meta(ge=1, description=(
        "requests in progress per actor; more wait their turn (within `request_timeout_ms`) while the "
        "actor's instances work through them"))] = 16
    outgoing_timeout_ms: Annotated[int, Meta(ge=1, description=(
        "longest an outgoing request may take, when the actor's request options name no shorter one"))] = 30_000


@dataclass(frozen=True)
class Route:
    """Where an actor's requests come from: a listener, and an optional Host and path prefix."""

    actor: str
    address: str
    host: str | None
    path: str | None
    reuse: bool = False
    """Whether instances answer request after request (link config ``instances = reuse``)."""

    def matches(self, host: str | None, path: str) -> bool:
        if self.host is not None and (host or "").lower() != self.host:
            return False
        if self.path is not None and not (path == self.path or path.startswith(self.path.rstrip("/") + "/")
                                          or self.path == "/"):
            return False
        return True

    @property
    def specificity(self) -> tuple[int, int]:
        return (self.host is not None, len(self.path or ""))


ADDRESS = re.compile(r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(?P<port>[0-9]{1,5})$")
HOST = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62}\.?)*[A-Za-z0-9]?$")
PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/-]*$")


def split_address(text: str, *, what: str) -> tuple[str, int]:
    match = ADDRESS.match(text.strip())
    if not match or not 0 < int(match.group("port")) < 65536:
        raise ProviderError(f"{what} {text!r} is not host:port (such as 127.0.0.1:8080 or 0.0.0.0:80)")
    return match.group("host").strip("[]"), int(match.group("port"))


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse_route(link: Link, default_address: str) -> Route:
    """The route of an incoming-handler link; ProviderError naming the bad key."""
    config = link.config
    address = config.get("address", "").strip() or default_address
    host, port = split_address(address, what=f"actor {link.source!r}: link config address =")
    vhost = config.get("host", "").strip().lower() or None
    if vhost is not None:
        vhost = vhost.rsplit(":", 1)[0] if vhost.count(":") == 1 else vhost
        if not HOST.match(vhost):
            raise ProviderError(f"actor {link.source!r}: link config host = {config['host']!r} is not a host name")
    path = config.get("path", "").strip() or None
    if path is not None and not PATH.match(path):
        raise ProviderError(f"actor {link.source!r}: link config path = {path!r} must start with / and hold "
                            "only URL path characters")
    instances = config.get("instances", "fresh").strip()
    if instances not in ("fresh", "reuse"):
        raise ProviderError(f"actor {link.source!r}: link config instances = {instances!r} must be fresh or reuse")
    return Route(actor=link.source, address=f"{host}:{port}" if ":" not in host else f"[{host}]:{port}",
                 host=vhost, path=path, reuse=instances == "reuse")


def parse_allowed_hosts(link: Link) -> tuple[str, ...]:
    """The outgoing link's ``allowed_hosts`` (lower case); ProviderError on a bad entry."""
    hosts = []
    for item in link.config.get("allowed_hosts", "").split(","):
        item = item.strip().lower()
        if not item:
            continue
        name = item[2:] if item.startswith("*.") else item
        name, _, port = name.rpartition(":") if name.count(":") == 1 else (name, "", "")
        if not HOST.match(name) or (port and not port.isdigit()):
            raise ProviderError(f"actor {link.source!r}: link config allowed_hosts entry {item!r} is not a host, "
                                "host:port or *.domain")
        hosts.append(item)
    return tuple(hosts)


def host_allowed(allowed: tuple[str, ...], authority: str) -> bool:
    """Whether ``authority`` (``host`` or ``host:port``) is in the allowlist."""
    authority = authority.lower()
    host = authority.rsplit(":", 1)[0] if authority.count(":") == 1 else authority
    for entry in allowed:
        if entry.startswith("*."):
            pattern, _, port = entry[2:].partition(":")
            if host.endswith("." + pattern) and (not port or authority == f"{host}:{port}"):
                return True
        elif entry == authority or (":" not in entry and entry == host):
            return True
    return False
