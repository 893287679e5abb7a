"""The ``keyvalue`` provider: ``wasi:keyvalue`` store, atomics and batch on one node.

Node config ``[providers.keyvalue]``: one key, ``backend`` (``file`` or ``memory``),
declared in :class:`KeyValueSettings`.

Link config:

| key | meaning |
|---|---|
| ``buckets`` | comma-separated bucket names the actor may open; absent means any |

Bucket names are ``[A-Za-z0-9_.-]{1,64}``; the empty name opens ``default``. Values are
``bytes``; one write's values together are at most the node's ``max_payload_bytes``.

A read never waits for a write's fsync (the node answers remote reads on its event loop):
see :class:`Bucket`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .base import (BackendIOError, Denied, Link, NotFound, PayloadTooLarge, Provider, ProviderContext, ProviderError,
                   atomic_write)

log = logging.getLogger(__name__)

BUCKET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LIST_PAGE_SIZE = 1000
DEFAULT_BUCKET = "default"
PROVIDER = "keyvalue"


class KeyValueSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """``[providers.keyvalue]``."""

    backend: Annotated[Literal["file", "memory"], Meta(description=(
        "`file`: one JSON file per bucket under the provider's data directory, rewritten atomically on every "
        "change, so values survive a restart. `memory`: lost when the node stops"))] = "file"


Change = dict[str, bytes | None]
"""What a write does: the new value of each key it touches, None for a deleted key."""


class Bucket:
    """A bucket's contents, kept in memory. Subclasses persist them (:meth:`_persist`).

    Reads never wait for a disk: writers serialise on ``_write_lock``, work out the change
    from the current contents, persist the contents they will have while holding no lock a
    reader takes, and only then apply the change under ``_lock``, which readers hold just
    long enough to look. A write whose persist fails changes nothing. Every argument is
    checked before anything changes: keys are strings, values ``bytes``, and a write's
    values together at most ``max_value_bytes`` (None: no limit).
    """

    _persists = False
    """Whether :meth:`_persist` writes anything (a memory bucket skips making the contents)."""

    methods = frozenset({"get", "set", "delete", "exists", "list_keys", "increment", "get_many", "set_many",
                         "delete_many"})
    """What an import call may do with an open bucket, here or from another node."""
    quick_methods = frozenset({"get", "exists", "list_keys", "get_many"})
    """Reads of the in-memory contents under a brief lock: safe to answer on the event loop."""

    def __init__(self, name: str, *, max_value_bytes: int | None = None) -> None:
        self.name = name
        self.max_value_bytes = max_value_bytes
        self._lock = threading.Lock()
        """Guards ``_data``; never held across I/O."""
        self._write_lock = threading.Lock()
        """Serialises writers, across their persist."""
        self._data: dict[str, bytes] = {}

    # -- reads (any thread, the event loop too) --

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def list_keys(self, cursor: int | None) -> tuple[list[str], int | None]:
        start = cursor or 0
        with self._lock:
            keys = list(self._data)
        keys.sort()
        page = keys[start:start + LIST_PAGE_SIZE]
        end = start + len(page)
        return page, (end if end < len(keys) else None)

    def get_many(self, keys: Iterable[str]) -> list[tuple[str, bytes] | None]:
        wanted = list(keys)
        with self._lock:
            values = [self._data.get(key) for key in wanted]
        return [None if value is None else (key, value) for key, value in zip(wanted, values)]

    # -- writes (worker threads) --

    def set(self, key: str, value: bytes) -> None:
        self._check_key(key)
        self._check_value(key, value)
        self._check_size(len(value))
        with self._write_lock:
            self._commit({key: value})

    def delete(self, key: str) -> None:
        self._check_key(key)
        with self._write_lock:
            if key in self._data:
                self._commit({key: None})

    def increment(self, key: str, delta: int) -> int:
        self._check_key(key)
        if isinstance(delta, bool) or not isinstance(delta, int):
            raise ProviderError(f"the delta for {key!r} in bucket {self.name!r} must be an integer, "
                                f"not {type(delta).__name__}", provider=PROVIDER)
        with self._write_lock:
            previous = self._data.get(key)
            current = 0
            if previous is not None:
                try:
                    current = int(previous.decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    raise ProviderError(f"value of {key!r} in bucket {self.name!r} is not a decimal integer",
                                        provider=PROVIDER) from None
            current += delta
            self._commit({key: str(current).encode("ascii")})
            return current

    def set_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        change: Change = {}
        size = 0
        for item in items:
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise ProviderError(f"set-many in bucket {self.name!r} takes (key, value) pairs, not {item!r}",
                                    provider=PROVIDER)
            key, value = item
            self._check_key(key)
            self._check_value(key, value)
            size += len(value)
            change[key] = value
        self._check_size(size)
        with self._write_lock:
            self._commit(change)

    def delete_many(self, keys: Iterable[str]) -> None:
        wanted = list(keys)
        for key in wanted:
            self._check_key(key)
        with self._write_lock:
            change: Change = {key: None for key in wanted if key in self._data}
            if change:
                self._commit(change)

    # -- internals --

    def _commit(self, change: Change) -> None:
        """Persist the contents ``change`` makes, then apply it. The write lock is held."""
        if self._persists:
            contents = dict(self._data)  # only writers change _data, and this one holds the write lock
            _apply(contents, change)
            self._persist(contents)
        with self._lock:
            _apply(self._data, change)

    def _persist(self, contents: Mapping[str, bytes]) -> None:
        """Make ``contents`` durable; raise :class:`BackendIOError` to refuse the change."""

    def _check_key(self, key: Any) -> None:
        if not isinstance(key, str):
            raise ProviderError(f"keys of bucket {self.name!r} are strings, not {type(key).__name__}",
                                provider=PROVIDER)

    def _check_value(self, key: str, value: Any) -> None:
        if not isinstance(value, bytes):
            raise ProviderError(f"the value of {key!r} in bucket {self.name!r} must be bytes, not "
                                f"{type(value).__name__}", provider=PROVIDER)

    def _check_size(self, size: int) -> None:
        if self.max_value_bytes is not None and size > self.max_value_bytes:
            raise PayloadTooLarge(size, self.max_value_bytes, provider=PROVIDER)


def _apply(data: dict[str, bytes], change: Change) -> None:
    for key, value in change.items():
        if value is None:
            data.pop(key, None)
        else:
            data[key] = value


class FileBucket(Bucket):
    """A bucket kept in one JSON file, replaced atomically (write, fsync, rename)."""

    _persists = True

    def __init__(self, name: str, path: Path, *, max_value_bytes: int | None = None) -> None:
        super().__init__(name, max_value_bytes=max_value_bytes)
        self.path = path
        if path.exists():
            try:
                raw = json.loads(path.read_text("utf-8"))
                self._data = {k: base64.b64decode(v) for k, v in raw["values"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BackendIOError(f"cannot read bucket file {path}: {exc}", provider=PROVIDER) from exc

    def _persist(self, contents: Mapping[str, bytes]) -> None:
        doc = {"bucket": self.name, "values": {k: base64.b64encode(v).decode("ascii") for k, v in contents.items()}}
        try:
            atomic_write(self.path, json.dumps(doc, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            raise BackendIOError(f"cannot write bucket file {self.path}: {exc.strerror or exc}",
                                 provider=PROVIDER) from exc


class KeyValueProvider(Provider):
    """Node-local ``wasi:keyvalue`` buckets, in memory or in files."""

    name = "keyvalue"
    interfaces = ("wasi:keyvalue/store", "wasi:keyvalue/atomics", "wasi:keyvalue/batch")
    operations = {"wasi:keyvalue/store": frozenset({"open"})}
    """``open`` returns a :class:`Bucket`; atomics and batch act on an open bucket's methods."""
    config_schema = KeyValueSettings

    def __init__(self) -> None:
        super().__init__()
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()
        self.backend: Literal["file", "memory"] = "file"

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        backend = self.parse_config(ctx.config).backend
        self.backend = backend
        if backend == "file":
            log.info("keyvalue buckets are files under %s", ctx.data_dir)
        else:
            log.info("keyvalue buckets are in memory and are lost when the node stops")

    async def stop(self) -> None:
        with self._lock:
            self._buckets.clear()

    def open(self, link: Link, identifier: str) -> Bucket:
        name = identifier or DEFAULT_BUCKET
        if not BUCKET_NAME.match(name):
            raise NotFound(f"bucket name {identifier!r} is not valid: use 1-64 of A-Z a-z 0-9 _ . -",
                           provider=self.name)
        allowed = link.config.get("buckets")
        if allowed is not None and name not in {b.strip() for b in allowed.split(",")}:
            raise Denied(f"actor {link.source!r} is not granted bucket {name!r} (link grants: {allowed})",
                         provider=self.name)
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                limit = self.context.max_payload_bytes
                if self.backend == "file":
                    bucket = FileBucket(name, self.context.data_dir / f"{name}.json", max_value_bytes=limit)
                else:
                    bucket = Bucket(name, max_value_bytes=limit)
                self._buckets[name] = bucket
            return bucket

    def describe(self) -> dict[str, Any]:
        with self._lock:
            names = sorted(self._buckets)
        return {"backend": self.backend, "open_buckets": names}
