"""The ``keyvalue`` provider: ``wasi:keyvalue`` store, atomics and batch on one node.

Backends (node config ``[providers.keyvalue] backend = ...``):

| key | default | meaning |
|---|---|---|
| ``backend`` | ``"file"`` | ``"file"``: one JSON file per bucket under the provider's data directory, rewritten atomically on every change, so values survive a restart. ``"memory"``: lost when the node stops. |

Link config:

| key | meaning |
|---|---|
| ``buckets`` | comma-separated bucket names the actor may open; absent means any |

Bucket names are ``[A-Za-z0-9_.-]{1,64}``; the empty name opens ``default``.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .base import BackendIOError, Denied, Link, NotFound, Provider, ProviderContext, ProviderError, atomic_write

log = logging.getLogger(__name__)

BUCKET_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
LIST_PAGE_SIZE = 1000
DEFAULT_BUCKET = "default"


class Bucket:
    """A bucket's contents: a dict guarded by a lock. Subclasses persist it."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}

    def get(self, key: str) -> bytes | None:
        with self._lock:
            return self._data.get(key)

    def exists(self, key: str) -> bool:
        with self._lock:
            return key in self._data

    def set(self, key: str, value: bytes) -> None:
        with self._lock:
            previous = self._data.get(key)
            self._data[key] = value
            self._commit({key: previous})

    def delete(self, key: str) -> None:
        with self._lock:
            if key not in self._data:
                return
            previous = self._data.pop(key)
            self._commit({key: previous})

    def list_keys(self, cursor: int | None) -> tuple[list[str], int | None]:
        start = cursor or 0
        with self._lock:
            keys = sorted(self._data)
        page = keys[start:start + LIST_PAGE_SIZE]
        end = start + len(page)
        return page, (end if end < len(keys) else None)

    def increment(self, key: str, delta: int) -> int:
        with self._lock:
            previous = self._data.get(key)
            current = 0
            if previous is not None:
                try:
                    current = int(previous.decode("ascii"))
                except (UnicodeDecodeError, ValueError):
                    raise ProviderError(f"value of {key!r} in bucket {self.name!r} is not a decimal integer") from None
            current += delta
            self._data[key] = str(current).encode("ascii")
            self._commit({key: previous})
            return current

    def get_many(self, keys: Iterable[str]) -> list[tuple[str, bytes] | None]:
        with self._lock:
            out: list[tuple[str, bytes] | None] = []
            for key in keys:
                value = self._data.get(key)
                out.append(None if value is None else (key, value))
            return out

    def set_many(self, items: Iterable[tuple[str, bytes]]) -> None:
        with self._lock:
            previous: dict[str, bytes | None] = {}
            for key, value in items:
                previous.setdefault(key, self._data.get(key))
                self._data[key] = value
            self._commit(previous)

    def delete_many(self, keys: Iterable[str]) -> None:
        with self._lock:
            previous: dict[str, bytes | None] = {}
            for key in keys:
                if key in self._data:
                    previous.setdefault(key, self._data.pop(key))
            if previous:
                self._commit(previous)

    def _commit(self, previous: dict[str, bytes | None]) -> None:
        """Persist the change; on failure restore ``previous`` and raise. Lock is held."""


class FileBucket(Bucket):
    """A bucket kept in one JSON file, replaced atomically (write, fsync, rename)."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        if path.exists():
            try:
                raw = json.loads(path.read_text("utf-8"))
                self._data = {k: base64.b64decode(v) for k, v in raw["values"].items()}
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise BackendIOError(f"cannot read bucket file {path}: {exc}") from exc

    def _commit(self, previous: dict[str, bytes | None]) -> None:
        doc = {"bucket": self.name, "values": {k: base64.b64encode(v).decode("ascii") for k, v in self._data.items()}}
        try:
            atomic_write(self.path, json.dumps(doc, sort_keys=True).encode("utf-8"))
        except OSError as exc:
            for key, value in previous.items():
                if value is None:
                    self._data.pop(key, None)
                else:
                    self._data[key] = value
            raise BackendIOError(f"cannot write bucket file {self.path}: {exc.strerror or exc}") from exc


class KeyValueProvider(Provider):
    """Node-local ``wasi:keyvalue`` buckets, in memory or in files."""

    name = "keyvalue"
    interfaces = ("wasi:keyvalue/store", "wasi:keyvalue/atomics", "wasi:keyvalue/batch")

    def __init__(self) -> None:
        super().__init__()
        self._buckets: dict[str, Bucket] = {}
        self._lock = threading.Lock()
        self.backend = "file"

    async def start(self, ctx: ProviderContext) -> None:
        await super().start(ctx)
        unknown = sorted(set(ctx.config) - {"backend"})
        if unknown:
            raise ValueError(f"providers.keyvalue: unknown key(s) {', '.join(unknown)} (known: backend)")
        backend = ctx.config.get("backend", "file")
        if backend not in ("file", "memory"):
            raise ValueError(f"providers.keyvalue.backend must be 'file' or 'memory', not {backend!r}")
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
            raise NotFound(f"bucket name {identifier!r} is not valid: use 1-64 of A-Z a-z 0-9 _ . -")
        allowed = link.config.get("buckets")
        if allowed is not None and name not in {b.strip() for b in allowed.split(",")}:
            raise Denied(f"actor {link.source!r} is not granted bucket {name!r} (link grants: {allowed})")
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                if self.backend == "file":
                    bucket = FileBucket(name, self.context.data_dir / f"{name}.json")
                else:
                    bucket = Bucket(name)
                self._buckets[name] = bucket
            return bucket

    def describe(self) -> dict[str, Any]:
        with self._lock:
            names = sorted(self._buckets)
        return {"backend": self.backend, "open_buckets": names}
