"""Host implementations of the standard interfaces an actor may import.

Each function here runs on the calling instance's worker thread. It finds the calling
instance through a thread-local :class:`Imports`, resolves the link for the
interface, calls the provider with plain Python values, and turns the provider's
:class:`~drupelet.providers.base.ProviderError` into the interface's error value. Nothing
here raises into the guest for an expected failure: a trap is only for host bugs.

Why this module is past 500 lines: it is the one table of the interfaces the node serves
itself or through links, each a few short functions that share the resource table and
the error mapping; ``wasi:io`` and ``wasi:http``, which need resources of their own, are
in their own modules.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wasmtime import StoreContext
from wasmtime.component import LinkerInstance, Linker, ResourceAny, ResourceHost, ResourceType, Variant

from drupelet.providers.base import (Busy, Denied, Link, NotFound, NotLinked, Provider, ProviderError,
                                     invoke_method)

from drupelet.node.runtime.values import Err, Ok, add_func, record

log = logging.getLogger(__name__)

LOGGING = "wasi:logging/logging"
CONFIG = "wasi:config/store"
KV_STORE = "wasi:keyvalue/store"
KV_ATOMICS = "wasi:keyvalue/atomics"
KV_BATCH = "wasi:keyvalue/batch"
MSG_TYPES = "wasmcloud:messaging/types"
MSG_CONSUMER = "wasmcloud:messaging/consumer"
MSG_HANDLER = "wasmcloud:messaging/handler"
GPIO = "drupelet:hardware/gpio"
DISPLAY = "drupelet:hardware/display"
I2C_BUS = "drupelet:hardware/i2c-bus"
HW_TYPES = "drupelet:hardware/types"
I2C = "wasi:i2c/i2c"
HTTP_TYPES = "wasi:http/types"
HTTP_INCOMING = "wasi:http/incoming-handler"
HTTP_OUTGOING = "wasi:http/outgoing-handler"

SERVED_VERSIONS: dict[str, tuple[str, ...]] = {
    LOGGING: ("0.1.0-draft",),
    CONFIG: ("0.2.0-rc.1", "0.2.0-draft"),
    KV_STORE: ("0.2.0-draft",),
    KV_ATOMICS: ("0.2.0-draft",),
    KV_BATCH: ("0.2.0-draft",),
    MSG_TYPES: ("0.2.0",),
    MSG_CONSUMER: ("0.2.0",),
    HW_TYPES: ("0.1.0",),
    GPIO: ("0.1.0",),
    DISPLAY: ("0.1.0",),
    I2C_BUS: ("0.1.0",),
    I2C: ("0.2.0-draft",),
    HTTP_TYPES: ("0.2.0",),
    HTTP_INCOMING: ("0.2.0",),
    HTTP_OUTGOING: ("0.2.0",),
}
"""Every versioned interface served (``wasi:http`` at any 0.2.x, by semver: see
:data:`SEMVER_PACKAGES`), besides WASI preview 2 itself. ``wasi:http/incoming-handler``
is exported, not imported: its link names the provider that takes the requests."""

NODE_SERVED = frozenset({LOGGING, CONFIG, MSG_TYPES, HW_TYPES, I2C, HTTP_TYPES})
"""Interfaces the node serves itself; they need no link (``wasi:i2c/i2c`` is reached
through a bus that ``drupelet:hardware/i2c-bus`` opened)."""

HANDLER_EXPORT = f"{MSG_HANDLER}@0.2.0"

WASI_P2_PACKAGES = ("wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/")
"""Served by wasmtime's WASI preview 2 (any 0.2.x, by semver): filesystem with no
preopens, sockets with no addresses allowed, no environment."""

SEMVER_PACKAGES = (*WASI_P2_PACKAGES, "wasi:http/")
"""Packages served at any 0.2.x version (``wasi:http`` from Python, :mod:`.wasi_http`)."""

BUCKET_TYPE = 1
I2C_TYPE = 2


class Imports(Protocol):
    """What an actor instance's imports need from the node."""

    actor: str
    max_payload_bytes: int

    def log(self, level: str, context: str, message: str) -> None: ...

    def config_get(self, key: str) -> str | None: ...

    def config_all(self) -> list[tuple[str, str]]: ...

    def outbound(self, size: int) -> None:
        """Account ``size`` bytes the actor is about to publish or send as a request: may
        wait for the actor's send rate; ProviderError if it would wait too long."""
        ...

    def resolve(self, interface: str) -> tuple[Provider, Link]:
        """The provider and link serving ``interface`` for this actor, or NotLinked."""
        ...


@dataclass
class _Handle:
    """A resource the guest holds: a bucket, a bus; local or a proxy to another node."""

    provider: Provider
    link: Link
    obj: Any


class InstanceContext:
    """Per-instance state the bindings need: the host and the resource table."""

    def __init__(self, host: Imports) -> None:
        self.host = host
        self.resources: dict[int, Any] = {}
        self._next_rep = 1
        self.reply_to: str | None = None
        """The reply subject of the message being handled, if it asked for a reply."""
        self.replied = False
        """Whether the handler has published to ``reply_to`` yet."""
        self.stdout: Callable[[bytes], None] = _discard
        self.stderr: Callable[[bytes], None] = _discard
        """Where the component's ``wasi:cli`` stdout and stderr go (the actor's log)."""
        self.http_call: object = None
        """The ``wasi:http`` request being handled, if any (:mod:`.wasi_http`)."""
        self.call_deadline: float = 0.0
        """``time.monotonic()`` when the call in progress runs out of time."""

    def wait_limit_s(self) -> float:
        """How long a blocking import may still wait in the call in progress."""
        return max(0.0, self.call_deadline - time.monotonic())

    def release(self, rep: int) -> None:
        """Forget a resource and close it if it can be (a bus, a handle on another node)."""
        value = self.resources.pop(rep, None)
        close = getattr(getattr(value, "obj", None), "close", None)
        if callable(close):
            try:
                close()
            except ProviderError as exc:
                log.debug("closing a resource of actor %s: %s", self.host.actor, exc.message)

    def release_all(self) -> None:
        for rep in list(self.resources):
            self.release(rep)

    def add_resource(self, value: Any) -> int:
        rep = self._next_rep
        self._next_rep = (rep + 1) & 0xFFFFFFFF or 1
        self.resources[rep] = value
        return rep


def _discard(data: bytes) -> None:
    """Output of an instance that has nowhere to send it."""


_current = threading.local()


def set_current(ctx: InstanceContext | None) -> None:
    _current.ctx = ctx


def current() -> InstanceContext:
    ctx: InstanceContext | None = getattr(_current, "ctx", None)
    if ctx is None:
        raise RuntimeError("import called outside an actor instance's worker thread")
    return ctx


def versioned_import_names() -> set[str]:
    return {f"{iface}@{v}" for iface, versions in SERVED_VERSIONS.items() for v in versions}


def split_version(name: str) -> tuple[str, str]:
    base, _, version = name.partition("@")
    return base, version


def missing_imports(import_names: list[str]) -> list[str]:
    """Import names no definition here (nor WASI preview 2) satisfies, with a reason."""
    served = versioned_import_names()
    missing = []
    for name in import_names:
        if name in served:
            continue
        base, version = split_version(name)
        if base.startswith(SEMVER_PACKAGES) and version.startswith("0.2."):
            continue
        if base in SERVED_VERSIONS:
            have = ", ".join(SERVED_VERSIONS[base])
            missing.append(f"{name} (this node serves {base} at {have})")
        else:
            missing.append(name)
    return missing


# -- error values ------------------------------------------------------------------

def kv_error(exc: ProviderError) -> Variant:
    if isinstance(exc, NotFound):
        return Variant("no-such-store")
    if isinstance(exc, Denied):
        return Variant("access-denied")
    return Variant("other", f"{exc.code}: {exc.message}")


def config_error(exc: Exception) -> Variant:
    return Variant("io", str(exc))


def msg_error(exc: ProviderError) -> str:
    return f"{exc.code}: {exc.message}"


def _check_payload(host: Imports, size: int) -> None:
    if size > host.max_payload_bytes:
        raise ProviderError(f"payload of {size} bytes exceeds the limit of {host.max_payload_bytes} bytes")


# -- wasi:logging --------------------------------------------------------------------

def _log(store: StoreContext, level: str, context: str, message: str) -> None:
    current().host.log(level, context, message)


# -- wasi:config ---------------------------------------------------------------------

def _config_get(store: StoreContext, key: str) -> Ok | Err:
    try:
        return Ok(current().host.config_get(key))
    except ProviderError as exc:
        return Err(config_error(exc))


def _config_get_all(store: StoreContext) -> Ok | Err:
    try:
        return Ok(current().host.config_all())
    except ProviderError as exc:
        return Err(config_error(exc))


# -- wasi:keyvalue -------------------------------------------------------------------

def _resource(store: StoreContext, ctx: InstanceContext, handle: ResourceAny, what: str) -> _Handle:
    rep = handle.to_host(store).rep
    value = ctx.resources.get(rep)
    if not isinstance(value, _Handle):
        raise ProviderError(f"{what} handle {rep} is not open")
    return value


def _kv_open(store: StoreContext, identifier: str) -> Ok | Err:
    ctx = current()
    try:
        provider, link = ctx.host.resolve(KV_STORE)
        bucket = provider.invoke(link, "open", [identifier])
    except ProviderError as exc:
        return Err(kv_error(exc))
    rep = ctx.add_resource(_Handle(provider, link, bucket))
    return Ok(ResourceHost.own(rep, BUCKET_TYPE))


def _kv_call(store: StoreContext, handle: ResourceAny, method: str, args: list[Any], size: int = 0) -> Any:
    """A method of an open bucket, here or on another node; raises ProviderError."""
    ctx = current()
    if size:
        _check_payload(ctx.host, size)
    return invoke_method(_resource(store, ctx, handle, "bucket").obj, method, args)


def _kv(method: str, size_arg: int | None = None) -> Callable[..., Ok | Err]:
    """A bucket method whose result lowers as it is (``get``, ``set``, ``increment``…)."""
    def call(store: StoreContext, this: ResourceAny, *args: Any) -> Ok | Err:
        values = list(args)
        size = 0
        if size_arg is not None:
            values[size_arg] = bytes(values[size_arg])
            size = len(values[size_arg])
        try:
            return Ok(_kv_call(store, this, method, values, size))
        except ProviderError as exc:
            return Err(kv_error(exc))
    return call


def _kv_list_keys(store: StoreContext, this: ResourceAny, cursor: int | None) -> Ok | Err:
    try:
        keys, next_cursor = _kv_call(store, this, "list_keys", [cursor])
    except ProviderError as exc:
        return Err(kv_error(exc))
    return Ok(record(keys=list(keys), cursor=next_cursor))


def _kv_get_many(store: StoreContext, bucket: ResourceAny, keys: list[str]) -> Ok | Err:
    try:
        found = _kv_call(store, bucket, "get_many", [keys])
    except ProviderError as exc:
        return Err(kv_error(exc))
    return Ok([None if item is None else (str(item[0]), bytes(item[1])) for item in found])


def _kv_set_many(store: StoreContext, bucket: ResourceAny, items: list[tuple[str, bytes]]) -> Ok | Err:
    pairs = [(k, bytes(v)) for k, v in items]
    try:
        return Ok(_kv_call(store, bucket, "set_many", [pairs], sum(len(v) for _, v in pairs)))
    except ProviderError as exc:
        return Err(kv_error(exc))


def _drop(store: StoreContext, rep: int) -> None:
    ctx: InstanceContext | None = getattr(_current, "ctx", None)
    if ctx is not None:
        ctx.release(rep)


# -- wasmcloud:messaging -------------------------------------------------------------

def _msg_publish(store: StoreContext, msg: Any) -> Ok | Err:
    ctx = current()
    try:
        body = bytes(msg.body)
        _check_payload(ctx.host, len(body))
        provider, link = ctx.host.resolve(MSG_CONSUMER)
        ctx.host.outbound(len(body))
        provider.invoke(link, "publish", [str(msg.subject), body, getattr(msg, "reply-to")])
    except ProviderError as exc:
        return Err(msg_error(exc))
    if ctx.reply_to is not None and str(msg.subject) == ctx.reply_to:
        ctx.replied = True
    return Ok(None)


def _msg_request(store: StoreContext, subject: str, body: bytes, timeout_ms: int) -> Ok | Err:
    ctx = current()
    try:
        _check_payload(ctx.host, len(body))
        provider, link = ctx.host.resolve(MSG_CONSUMER)
        ctx.host.outbound(len(body))
        reply = provider.invoke(link, "request", [str(subject), bytes(body), int(timeout_ms)])
    except ProviderError as exc:
        return Err(msg_error(exc))
    return Ok(record(subject=str(reply["subject"]), body=bytes(reply["body"]), reply_to=reply["reply_to"]))


# -- drupelet:hardware ---------------------------------------------------------------

def hw_error(exc: ProviderError) -> Variant:
    if isinstance(exc, Denied | NotLinked):
        return Variant("denied", exc.message)
    if isinstance(exc, Busy):
        return Variant("busy", exc.message)
    if isinstance(exc, NotFound):
        return Variant("not-found", exc.message)
    return Variant("io", exc.message if exc.code in ("io", "other") else f"{exc.code}: {exc.message}")


def _hw(interface: str, op: str, *args: Any, size: int = 0) -> Ok | Err:
    """Run ``op`` on the provider linked for ``interface``; errors become ``types.error``."""
    ctx = current()
    try:
        if size:
            _check_payload(ctx.host, size)
        provider, link = ctx.host.resolve(interface)
        return Ok(provider.invoke(link, op, list(args)))
    except ProviderError as exc:
        return Err(hw_error(exc))


def _gpio(op: str) -> Callable[..., Ok | Err]:
    def call(store: StoreContext, *args: Any) -> Ok | Err:
        return _hw(GPIO, op, *args)
    return call


def _display_info(store: StoreContext) -> Ok | Err:
    result = _hw(DISPLAY, "info")
    if isinstance(result, Ok):
        info = result.value
        return Ok(record(width=int(info["width"]), height=int(info["height"]), mode=str(info["mode"]),
                         driver=str(info["driver"])))
    return result


def _display(op: str) -> Callable[..., Ok | Err]:
    def call(store: StoreContext, *args: Any) -> Ok | Err:
        return _hw(DISPLAY, op, *args)
    return call


def _display_image(store: StoreContext, x: int, y: int, fmt: str, data: bytes, width: int, height: int) -> Ok | Err:
    return _hw(DISPLAY, "image", x, y, fmt, bytes(data), width, height, size=len(data))


def _i2c_open(store: StoreContext, name: str) -> Ok | Err:
    ctx = current()
    try:
        provider, link = ctx.host.resolve(I2C_BUS)
        bus = provider.invoke(link, "open", [name])
    except ProviderError as exc:
        return Err(hw_error(exc))
    return Ok(ResourceHost.own(ctx.add_resource(_Handle(provider, link, bus)), I2C_TYPE))


def _i2c_buses(store: StoreContext) -> list[str]:
    ctx = current()
    try:
        provider, link = ctx.host.resolve(I2C_BUS)
        return [str(name) for name in provider.invoke(link, "buses", [])]
    except ProviderError as exc:
        ctx.host.log("warn", I2C_BUS, f"buses: {exc.message}")
        return []


def i2c_error(exc: ProviderError) -> Variant:
    """A provider error as ``wasi:i2c``'s ``error-code``: ``i2c:<kind>[:<source>]`` codes
    keep their case; anything else is ``other`` (its message goes to the actor's log)."""
    kind, _, source = exc.code.removeprefix("i2c:").partition(":") if exc.code.startswith("i2c:") else ("", "", "")
    if kind == "no-acknowledge":
        return Variant(kind, source if source in ("address", "data") else "unknown")
    if kind in ("bus", "arbitration-loss", "overrun"):
        return Variant(kind)
    return Variant("other")


def _i2c(method: str, size_arg: int | None = None) -> Callable[..., Ok | Err]:
    def call(store: StoreContext, this: ResourceAny, *args: Any) -> Ok | Err:
        ctx = current()
        values = list(args)
        try:
            if size_arg is not None:
                values[size_arg] = bytes(values[size_arg])
                _check_payload(ctx.host, len(values[size_arg]))
            handle = _resource(store, ctx, this, "i2c bus")
            return Ok(invoke_method(handle.obj, method, values))
        except ProviderError as exc:
            ctx.host.log("warn", I2C, f"{method}: {exc.message}")
            return Err(i2c_error(exc))
    return call


def _i2c_transaction(store: StoreContext, this: ResourceAny, address: int, operations: list[Any]) -> Ok | Err:
    ops: list[list[Any]] = []
    size = 0
    for op in operations:
        if op.tag == "write":
            ops.append(["write", bytes(op.payload)])
            size += len(op.payload)
        else:
            ops.append(["read", int(op.payload)])
    ctx = current()
    try:
        _check_payload(ctx.host, size)
        handle = _resource(store, ctx, this, "i2c bus")
        return Ok([bytes(b) for b in invoke_method(handle.obj, "transaction", [address, ops])])
    except ProviderError as exc:
        ctx.host.log("warn", I2C, f"transaction: {exc.message}")
        return Err(i2c_error(exc))


# -- the linker ----------------------------------------------------------------------

def _define(root: LinkerInstance, name: str, funcs: dict[str, Callable[..., Any]],
            resources: dict[str, int] | None = None) -> None:
    with root.add_instance(name) as inst:
        for res_name, type_id in (resources or {}).items():
            inst.add_resource(res_name, ResourceType.host(type_id), _drop)
        for func_name, func in funcs.items():
            add_func(inst, func_name, func)


def define_all(linker: Linker) -> None:
    """Add WASI preview 2 and every interface in :data:`SERVED_VERSIONS` but ``wasi:http``
    to ``linker``."""
    linker.add_wasip2()
    with linker.root() as root:
        define_served(root)


def define_served(root: LinkerInstance) -> None:
    """Every interface in :data:`SERVED_VERSIONS` but ``wasi:http`` (defined per component
    with the Python WASI it needs, :mod:`.wasi_http`)."""
    for version in SERVED_VERSIONS[LOGGING]:
        _define(root, f"{LOGGING}@{version}", {"log": _log})
    for version in SERVED_VERSIONS[CONFIG]:
        _define(root, f"{CONFIG}@{version}", {"get": _config_get, "get-all": _config_get_all})
    for version in SERVED_VERSIONS[KV_STORE]:
        _define(root, f"{KV_STORE}@{version}", {
            "open": _kv_open,
            "[method]bucket.get": _kv("get"),
            "[method]bucket.set": _kv("set", size_arg=1),
            "[method]bucket.delete": _kv("delete"),
            "[method]bucket.exists": _kv("exists"),
            "[method]bucket.list-keys": _kv_list_keys,
        }, {"bucket": BUCKET_TYPE})
    for version in SERVED_VERSIONS[KV_ATOMICS]:
        _define(root, f"{KV_ATOMICS}@{version}", {"increment": _kv("increment")})
    for version in SERVED_VERSIONS[KV_BATCH]:
        _define(root, f"{KV_BATCH}@{version}", {
            "get-many": _kv_get_many, "set-many": _kv_set_many, "delete-many": _kv("delete_many"),
        })
    for version in SERVED_VERSIONS[MSG_TYPES]:
        _define(root, f"{MSG_TYPES}@{version}", {})
    for version in SERVED_VERSIONS[MSG_CONSUMER]:
        _define(root, f"{MSG_CONSUMER}@{version}", {"publish": _msg_publish, "request": _msg_request})
    for version in SERVED_VERSIONS[HW_TYPES]:
        _define(root, f"{HW_TYPES}@{version}", {})
    for version in SERVED_VERSIONS[GPIO]:
        _define(root, f"{GPIO}@{version}", {
            name: _gpio(name.replace("-", "_"))
            for name in ("configure-input", "configure-output", "read", "write", "toggle", "set-pwm")})
    for version in SERVED_VERSIONS[DISPLAY]:
        funcs = {name: _display(name) for name in ("clear", "text", "line", "rectangle", "flush", "contrast", "power")}
        _define(root, f"{DISPLAY}@{version}", {**funcs, "info": _display_info, "image": _display_image})
    for version in SERVED_VERSIONS[I2C]:
        _define(root, f"{I2C}@{version}", {
            "[method]i2c.transaction": _i2c_transaction,
            "[method]i2c.read": _i2c("read"),
            "[method]i2c.write": _i2c("write", size_arg=1),
            "[method]i2c.write-read": _i2c("write_read", size_arg=1),
        }, {"i2c": I2C_TYPE})
    for version in SERVED_VERSIONS[I2C_BUS]:
        _define(root, f"{I2C_BUS}@{version}", {"open": _i2c_open, "buses": _i2c_buses})
