"""The contract between the node and a capability provider.

A provider serves one or more WIT interfaces on one node. The node finds providers
through the ``drupelet.providers`` entry-point group, starts one instance per name,
and routes an actor's import calls to it through the link table.

What a provider must override:
    ``name``         the provider's name, used in link targets (``local/<name>``).
    ``interfaces``   the WIT interfaces it serves, as ``package:name/interface`` without
                     a version (``wasi:keyvalue/store``).

What a provider may override:
    ``start(ctx)``   open backends; called once on the node's event loop.
    ``stop()``       close what ``start`` opened; idempotent; called once at shutdown.
    ``health()``     a :class:`Health` a person can read in the inventory.
    ``link_added(link)`` / ``link_removed(link)``  react to links that target it
                     (subscribe, grant pins, …). ``link_removed`` must release what
                     ``link_added`` took.
    ``describe()``   a JSON-able dict for the inventory (backends, state).
    ``config_schema`` the msgspec ``Struct`` of its ``[providers.<name>]`` table
                     (:mod:`drupelet.providers.schema`): the node validates the table
                     against it when the node config is loaded, and ``drupelet
                     config-doc`` documents every key from it. None: the provider
                     declares no schema and checks its table itself at start.
                     ``parse_config(table)`` returns the validated struct; override it
                     for checks across keys.
    ``actor_started(actor)``  an actor started on this node (every provider is told).
    ``relink_when_actor_stops``  True: when a linked actor stops (on this node for a
                     ``local/`` link; on any node for a link that names this node), the
                     node calls ``link_removed`` then ``link_added``, so what the actor held
                     (pins, the display) is released to its safe state while its link stays
                     ready for the next start.
    ``operations``   per interface, the names of the methods an import call may reach,
                     each called as ``method(link, *args)`` with plain JSON-able values
                     (``bytes`` allowed). The node forwards calls from other nodes only to
                     these. A method may return a resource object (a bus, a bucket); its
                     class lists the methods callable on it in ``methods`` and may define
                     ``close()``, called when the guest drops the handle.

Import calls reach the provider on the calling actor instance's worker thread, never on
the event loop. A provider that needs the network uses :meth:`ProviderContext.run` to
hop to the loop and wait with a deadline. Errors are raised as :class:`ProviderError`
subclasses; the node maps them to the interface's error value.

Providers never import the node's internals: everything they need from the node comes
through :class:`ProviderContext`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import tempfile
import threading
from collections.abc import Awaitable, Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import msgspec

from .schema import convert

T = TypeVar("T")

log = logging.getLogger(__name__)


class ProviderError(Exception):
    """Root of the errors a provider raises from an import call.

    ``code`` names the interface-neutral kind of failure; bindings map it to the
    interface's own error cases (``no-such-store``, ``access-denied``, ``other``…).
    """

    code = "other"

    def __init__(self, message: str, *, provider: str | None = None) -> None:
        super().__init__(message)
        self.provider = provider

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else self.code


class NotFound(ProviderError, LookupError):
    code = "not-found"


class Denied(ProviderError, PermissionError):
    code = "denied"


class Busy(ProviderError):
    code = "busy"


class Unavailable(ProviderError, ConnectionError):
    """The backend (a remote node, the NATS connection, a device) cannot be reached."""

    code = "unavailable"


class Timeout(ProviderError, TimeoutError):
    code = "timeout"


class PayloadTooLarge(ProviderError, ValueError):
    code = "payload-too-large"

    def __init__(self, size: int, limit: int, *, provider: str | None = None) -> None:
        super().__init__(f"payload of {size} bytes exceeds the limit of {limit} bytes",
                         provider=provider)
        self.size = size
        self.limit = limit


class BackendIOError(ProviderError, OSError):
    code = "io"


@dataclass(frozen=True)
class Link:
    """One link as a provider sees it: which actor, which interface, what config."""

    source: str
    """The actor's name."""
    interface: str
    """``package:name/interface`` without a version."""
    target: str
    """``<node>/<provider>`` or ``local/<provider>``."""
    config: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Message:
    """A message on its way to an actor's ``wasmcloud:messaging/handler``."""

    subject: str
    body: bytes
    reply_to: str | None = None


_handling = threading.local()


@contextmanager
def handling(reply_to: str | None) -> Iterator[None]:
    """While an actor instance handles a message (the node wraps the handler call in this, on
    the instance's worker thread): its reply subject is :func:`current_reply` there."""
    before = getattr(_handling, "reply_to", None)
    _handling.reply_to = reply_to
    try:
        yield
    finally:
        _handling.reply_to = before


def current_reply() -> str | None:
    """The reply subject of the message the calling actor instance is handling, if any: an
    import call runs on that instance's worker thread. An actor may always answer it."""
    value = getattr(_handling, "reply_to", None)
    return value if isinstance(value, str) else None


Fields = list[tuple[str, bytes]]
"""HTTP header or trailer fields: (lower-case name, value) pairs, in order."""


@dataclass(frozen=True)
class HttpHead:
    """The head of an HTTP request on its way to an actor's ``wasi:http/incoming-handler``."""

    method: str
    """As sent (``GET``, ``POST``, ``PURGE``…)."""
    scheme: str
    """``http`` or ``https``."""
    authority: str
    """The Host header (``pi-1:8080``); empty when the request had none."""
    path_with_query: str
    headers: tuple[tuple[str, bytes], ...]


class HttpExchange(Protocol):
    """One HTTP request and its response, between the provider that took the request and
    the actor instance that answers it. Every method is called from the instance's worker
    thread, never from the event loop; each may raise :class:`ProviderError` (the client
    went away, a limit was reached), which the component sees as a stream error.

    The node calls, in order: ``read_body`` any number of times (and
    ``request_trailers`` after the body's end), then either ``respond`` (the status and
    headers the component set), ``write_body`` any number of times and ``finish``, or
    ``fail`` at any point (the component answered with an error code, trapped, or
    returned without a whole response): the client then gets a 500 that says nothing
    of the component's internals."""

    head: HttpHead
    exchange_id: int
    """Unique among the requests in progress on the provider's node (named in the
    provider's operations, when the actor runs on another node)."""
    reuse_instance: bool
    """False: the request gets an instance of its own (created for it, dropped after it),
    as wasmtime serve and wasmCloud do; True: any running instance may answer it."""

    def read_body(self, max_bytes: int) -> bytes:
        """Up to ``max_bytes`` of the request body; ``b""`` at its end."""
        ...

    def request_trailers(self) -> Fields | None: ...

    def respond(self, status: int, headers: Fields) -> None: ...

    def write_body(self, data: bytes) -> None: ...

    def finish(self, trailers: Fields | None) -> None: ...

    def fail(self, reason: str) -> None: ...


ServeHttp = Callable[[str, HttpExchange], "Awaitable[None] | None"]
"""``serve_http(actor, exchange)``: the actor answers the request wherever it runs. For an
actor on this node the request is queued at once and None returned; for one elsewhere,
an awaitable that carries it across the lattice. Either way the exchange is told the
response, or the failure; an error raised (or by the awaitable) means the request never
reached the actor (it runs nowhere, it is overloaded…)."""


@dataclass(frozen=True)
class Health:
    status: Literal["ok", "degraded", "failed"] = "ok"
    message: str = ""


Deliver = Callable[[str, Message], Awaitable[None]]


@dataclass
class ProviderContext:
    """What the node hands a provider at start."""

    node: str
    """This node's name."""
    lattice: str
    loop: asyncio.AbstractEventLoop
    data_dir: Path
    """A directory this provider owns for persistent state."""
    config: Mapping[str, Any]
    """The ``[providers.<name>]`` table of the node config."""
    nats: Any = None
    """The node's connected ``nats.aio.client.Client``, or None when running without NATS."""
    synced: Callable[[], Awaitable[None]] | None = None
    """Wait until the NATS server has processed every command sent on ``nats`` so far
    (set by the node with ``nats``; ``nats.flush()`` alone does not promise it)."""
    deliver: Deliver | None = None
    """Send a message to an actor's messaging handler (by actor name)."""
    max_payload_bytes: int = 1 << 20
    call_timeout_s: float = 5.0
    runs_here: Callable[[str], bool] = lambda actor: True
    """Whether an actor (by name) has instances on this node."""
    serve_http: ServeHttp | None = None
    """Hand an HTTP request to an actor's ``wasi:http/incoming-handler`` (by actor name)."""

    def run(self, coro: Awaitable[T], timeout_s: float | None = None) -> T:
        """Run ``coro`` on the node's event loop from a worker thread and wait for it.

        Raises :class:`Timeout` past the deadline; the coroutine is cancelled.
        """
        timeout = self.call_timeout_s if timeout_s is None else timeout_s
        if _on_loop(self.loop):
            raise RuntimeError("ProviderContext.run called on the event loop thread")

        async def _wrapped() -> T:
            return await coro

        fut = asyncio.run_coroutine_threadsafe(_wrapped(), self.loop)
        try:
            return fut.result(timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise Timeout(f"no answer within {timeout:.3g} s") from None


def _on_loop(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False


class Provider:
    """Base class of every capability provider. See the module docstring."""

    name: str = ""
    interfaces: tuple[str, ...] = ()
    operations: Mapping[str, frozenset[str]] = {}
    relink_when_actor_stops: bool = False
    config_schema: ClassVar[type[msgspec.Struct] | None] = None

    @classmethod
    def parse_config(cls, table: Mapping[str, Any], *, where: str = "") -> Any:
        """Validate a ``[providers.<name>]`` table (without the node's own ``enabled``
        key); :class:`~drupelet.providers.schema.SchemaError` names the key."""
        where = where or f"providers.{cls.name}"
        if cls.config_schema is None:
            return dict(table)
        return convert(table, cls.config_schema, where=where)

    def __init__(self) -> None:
        self.ctx: ProviderContext | None = None

    @property
    def context(self) -> ProviderContext:
        if self.ctx is None:
            raise RuntimeError(f"provider {self.name!r} is not started")
        return self.ctx

    async def start(self, ctx: ProviderContext) -> None:
        self.ctx = ctx

    async def stop(self) -> None:
        """Release everything ``start`` took. Must be idempotent."""

    def health(self) -> Health:
        return Health()

    async def link_added(self, link: Link) -> None:
        """A link targeting this provider was put. Raise ProviderError to refuse it."""

    async def link_removed(self, link: Link) -> None:
        """A link targeting this provider was deleted or its actor stopped."""

    async def actor_started(self, actor: str) -> None:
        """An actor started on this node (a ``local/`` link may now have work here)."""

    def describe(self) -> dict[str, Any]:
        return {}

    def invoke(self, link: Link, op: str, args: list[Any]) -> Any:
        """Run operation ``op`` of ``link.interface`` with ``args``: the one way in for
        import calls, local or forwarded from another node."""
        if op not in self.operations.get(link.interface, frozenset()):
            raise ProviderError(f"provider {self.name!r} has no operation {op!r} in {link.interface}")
        return getattr(self, op)(link, *args)


def invoke_method(resource: Any, method: str, args: list[Any]) -> Any:
    """Call ``method`` on a resource a provider returned, if its class lists it."""
    if method not in getattr(resource, "methods", frozenset()):
        raise ProviderError(f"{type(resource).__name__} has no operation {method!r}")
    return getattr(resource, method)(*args)


class NotLinked(ProviderError):
    """The actor called an import that no link serves."""

    code = "not-linked"


def atomic_write(path: Path, data: bytes) -> None:
    """Replace ``path`` with ``data`` so a crash leaves the old or the new file, never half
    of one: write a temporary file beside it, fsync, rename, fsync the directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
