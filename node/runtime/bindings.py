"""Host implementations of the standard interfaces an actor may import.

Each function here runs on the calling instance's worker thread. It finds the calling
instance through a thread-local :class:`ImportHost`, resolves the link for the
interface, calls the provider with plain Python values, and turns the provider's
:class:`~drupelet.providers.base.ProviderError` into the interface's error value. Nothing
here raises into the guest for an expected failure: a trap is only for host bugs.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from wasmtime import StoreContext
from wasmtime.component import LinkerInstance, Linker, ResourceAny, ResourceHost, ResourceType, Variant

from drupelet.providers.base import Link, Message, NotFound, Denied, ProviderError, Provider

from .values import Err, Ok, record

log = logging.getLogger(__name__)

LOGGING = "wasi:logging/logging"
CONFIG = "wasi:config/store"
KV_STORE = "wasi:keyvalue/store"
KV_ATOMICS = "wasi:keyvalue/atomics"
KV_BATCH = "wasi:keyvalue/batch"
MSG_TYPES = "wasmcloud:messaging/types"
MSG_CONSUMER = "wasmcloud:messaging/consumer"
MSG_HANDLER = "wasmcloud:messaging/handler"

SERVED_VERSIONS: dict[str, tuple[str, ...]] = {
    LOGGING: ("0.1.0-draft",),
    CONFIG: ("0.2.0-rc.1", "0.2.0-draft"),
    KV_STORE: ("0.2.0-draft",),
    KV_ATOMICS: ("0.2.0-draft",),
    KV_BATCH: ("0.2.0-draft",),
    MSG_TYPES: ("0.2.0",),
    MSG_CONSUMER: ("0.2.0",),
}
"""Every versioned import this module defines, besides WASI preview 2 itself."""

NODE_SERVED = frozenset({LOGGING, CONFIG, MSG_TYPES})
"""Interfaces the node serves itself; they need no link."""

HANDLER_EXPORT = f"{MSG_HANDLER}@0.2.0"

WASI_P2_PACKAGES = ("wasi:cli/", "wasi:clocks/", "wasi:filesystem/", "wasi:io/", "wasi:random/", "wasi:sockets/")
"""Served by wasmtime's WASI preview 2 (any 0.2.x, by semver): filesystem with no
preopens, sockets with no addresses allowed, no environment."""

BUCKET_TYPE = 1


class ImportHost(Protocol):
    """What an actor instance's imports need from the node."""

    actor: str
    max_payload_bytes: int

    def log(self, level: str, context: str, message: str) -> None: ...

    def config_get(self, key: str) -> str | None: ...

    def config_all(self) -> list[tuple[str, str]]: ...

    def resolve(self, interface: str) -> tuple[Provider, Link]:
        """The provider and link serving ``interface`` for this actor, or NotLinked."""
        ...


@dataclass
class _BucketHandle:
    provider: Provider
    link: Link
    bucket: Any


class InstanceContext:
    """Per-instance state the bindings need: the host and the resource table."""

    def __init__(self, host: ImportHost) -> None:
        self.host = host
        self.resources: dict[int, Any] = {}
        self._next_rep = 1

    def release(self, rep: int) -> None:
        """Forget a resource; a bucket with a ``close`` (a remote handle) is closed."""
        value = self.resources.pop(rep, None)
        close = getattr(getattr(value, "bucket", None), "close", None)
        if callable(close):
            close()

    def release_all(self) -> None:
        for rep in list(self.resources):
            self.release(rep)

    def add_resource(self, value: Any) -> int:
        rep = self._next_rep
        self._next_rep = (rep + 1) & 0xFFFFFFFF or 1
        self.resources[rep] = value
        return rep


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
        if base.startswith(WASI_P2_PACKAGES) and version.startswith("0.2."):
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


def _check_payload(host: ImportHost, size: int) -> None:
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

def _bucket(store: StoreContext, ctx: InstanceContext, handle: ResourceAny) -> _BucketHandle:
    rep = handle.to_host(store).rep
    value = ctx.resources.get(rep)
    if not isinstance(value, _BucketHandle):
        raise ProviderError(f"bucket handle {rep} is not open")
    return value


def _kv_open(store: StoreContext, identifier: str) -> Ok | Err:
    ctx = current()
    try:
        provider, link = ctx.host.resolve(KV_STORE)
        open_bucket: Callable[[Link, str], Any] = getattr(provider, "open")
        bucket = open_bucket(link, identifier)
    except ProviderError as exc:
        return Err(kv_error(exc))
    rep = ctx.add_resource(_BucketHandle(provider, link, bucket))
    return Ok(ResourceHost.own(rep, BUCKET_TYPE))


def _kv_call(store: StoreContext, handle: ResourceAny, op: Callable[[Any], Any], size: int = 0) -> Ok | Err:
    ctx = current()
    try:
        if size:
            _check_payload(ctx.host, size)
        return Ok(op(_bucket(store, ctx, handle).bucket))
    except ProviderError as exc:
        return Err(kv_error(exc))


def _kv_get(store: StoreContext, this: ResourceAny, key: str) -> Ok | Err:
    return _kv_call(store, this, lambda b: b.get(key))


def _kv_set(store: StoreContext, this: ResourceAny, key: str, value: bytes) -> Ok | Err:
    return _kv_call(store, this, lambda b: b.set(key, bytes(value)), len(value) or 0)


def _kv_delete(store: StoreContext, this: ResourceAny, key: str) -> Ok | Err:
    return _kv_call(store, this, lambda b: b.delete(key))


def _kv_exists(store: StoreContext, this: ResourceAny, key: str) -> Ok | Err:
    return _kv_call(store, this, lambda b: b.exists(key))


def _kv_list_keys(store: StoreContext, this: ResourceAny, cursor: int | None) -> Ok | Err:
    def op(b: Any) -> Any:
        keys, next_cursor = b.list_keys(cursor)
        return record(keys=keys, cursor=next_cursor)

    return _kv_call(store, this, op)


def _kv_increment(store: StoreContext, bucket: ResourceAny, key: str, delta: int) -> Ok | Err:
    return _kv_call(store, bucket, lambda b: b.increment(key, delta))


def _kv_get_many(store: StoreContext, bucket: ResourceAny, keys: list[str]) -> Ok | Err:
    return _kv_call(store, bucket, lambda b: b.get_many(keys))


def _kv_set_many(store: StoreContext, bucket: ResourceAny, items: list[tuple[str, bytes]]) -> Ok | Err:
    pairs = [(k, bytes(v)) for k, v in items]
    return _kv_call(store, bucket, lambda b: b.set_many(pairs), sum(len(v) for _, v in pairs))


def _kv_delete_many(store: StoreContext, bucket: ResourceAny, keys: list[str]) -> Ok | Err:
    return _kv_call(store, bucket, lambda b: b.delete_many(keys))


def _kv_drop(store: StoreContext, rep: int) -> None:
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
        publish: Callable[[Link, Message], None] = getattr(provider, "publish")
        publish(link, Message(subject=msg.subject, body=body, reply_to=getattr(msg, "reply-to")))
    except ProviderError as exc:
        return Err(msg_error(exc))
    return Ok(None)


def _msg_request(store: StoreContext, subject: str, body: bytes, timeout_ms: int) -> Ok | Err:
    ctx = current()
    try:
        _check_payload(ctx.host, len(body))
        provider, link = ctx.host.resolve(MSG_CONSUMER)
        request: Callable[[Link, str, bytes, int], Message] = getattr(provider, "request")
        reply = request(link, subject, bytes(body), timeout_ms)
    except ProviderError as exc:
        return Err(msg_error(exc))
    return Ok(record(subject=reply.subject, body=reply.body, reply_to=reply.reply_to))


# -- the linker ----------------------------------------------------------------------

def _define(root: LinkerInstance, name: str, funcs: dict[str, Callable[..., Any]],
            resources: dict[str, int] | None = None) -> None:
    with root.add_instance(name) as inst:
        for res_name, type_id in (resources or {}).items():
            inst.add_resource(res_name, ResourceType.host(type_id), _kv_drop)
        for func_name, func in funcs.items():
            inst.add_func(func_name, func)


def define_all(linker: Linker) -> None:
    """Add WASI preview 2 and every interface in :data:`SERVED_VERSIONS` to ``linker``."""
    linker.add_wasip2()
    with linker.root() as root:
        for version in SERVED_VERSIONS[LOGGING]:
            _define(root, f"{LOGGING}@{version}", {"log": _log})
        for version in SERVED_VERSIONS[CONFIG]:
            _define(root, f"{CONFIG}@{version}", {"get": _config_get, "get-all": _config_get_all})
        for version in SERVED_VERSIONS[KV_STORE]:
            _define(root, f"{KV_STORE}@{version}", {
                "open": _kv_open,
                "[method]bucket.get": _kv_get,
                "[method]bucket.set": _kv_set,
                "[method]bucket.delete": _kv_delete,
                "[method]bucket.exists": _kv_exists,
                "[method]bucket.list-keys": _kv_list_keys,
            }, {"bucket": BUCKET_TYPE})
        for version in SERVED_VERSIONS[KV_ATOMICS]:
            _define(root, f"{KV_ATOMICS}@{version}", {"increment": _kv_increment})
        for version in SERVED_VERSIONS[KV_BATCH]:
            _define(root, f"{KV_BATCH}@{version}", {
                "get-many": _kv_get_many, "set-many": _kv_set_many, "delete-many": _kv_delete_many,
            })
        for version in SERVED_VERSIONS[MSG_TYPES]:
            _define(root, f"{MSG_TYPES}@{version}", {})
        for version in SERVED_VERSIONS[MSG_CONSUMER]:
            _define(root, f"{MSG_CONSUMER}@{version}", {"publish": _msg_publish, "request": _msg_request})
