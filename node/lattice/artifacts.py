"""Wasm artifacts in a JetStream object store, addressed by SHA-256, cached on disk.

An artifact is stored in the lattice's object store bucket (:func:`bucket_name`) under
its bare lowercase hex SHA-256 digest as the object name. Nodes fetch an artifact by
digest, check that the bytes hash to that digest (a mismatch is refused and nothing is
cached) and keep a copy in ``cache_dir/<hex>.wasm``, so a node restarts its actors with
the hub down. A cached copy is hashed again whenever it is read; a copy that no longer
matches its name is deleted and fetched again.

Example::

    store = ArtifactStore(nc, "default", Path("~/.cache/drupelet/artifacts").expanduser())
    info = await store.put(wasm, name="counter")
    print(info.ref)                      # sha256:1399e04f…
    wasm = await store.get(info.digest)

Object metadata (readable by any NATS client, e.g. ``nats object info``):

=====================  ==========================================================
header                 value
=====================  ==========================================================
``Drupelet-Digest``    ``sha256:<hex>`` (the same digest as the object name)
``Drupelet-Name``      the human name given to :meth:`ArtifactStore.put`, if any
=====================  ==========================================================

Why this module is past 500 lines: it is one store with one error vocabulary and one
cache; the digest helpers, the streaming sinks and the ref names are each small and used
only here, and splitting them out would spread the store's invariants (verify before
cache, refs move only with their object) over several files.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import io
import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, TypeVar

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.client import JetStreamContext
from nats.js.object_store import ObjectStore

from drupelet.providers.base import atomic_write

from drupelet.node.lattice import subjects
from drupelet.node.lattice.errors import (ArtifactError, ArtifactNotFound, ArtifactStoreUnavailable, ArtifactTooLarge,
                                          DigestMismatch, InvalidDigest)

if TYPE_CHECKING:
    from _typeshed import ReadableBuffer, WriteableBuffer

__all__ = [
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactNotFound",
    "ArtifactStore",
    "ArtifactStoreUnavailable",
    "ArtifactTooLarge",
    "DigestMismatch",
    "InvalidDigest",
    "bucket_name",
    "format_digest",
    "parse_digest",
    "sha256_hex",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

#: Prefix of a digest written for people and the CLI: ``sha256:<hex>``.
DIGEST_PREFIX: Final = "sha256:"
#: Largest artifact :class:`ArtifactStore` stores or fetches by default (a
#: componentize-py actor is ~18 MB).
DEFAULT_MAX_BYTES: Final = 64 << 20
#: Deadline of one JetStream API request (stream info, object info, delete).
DEFAULT_REQUEST_TIMEOUT_S: Final = 5.0
#: Deadline of a whole upload or download.
DEFAULT_TRANSFER_TIMEOUT_S: Final = 120.0
#: File name suffix of a cached artifact.
CACHE_SUFFIX: Final = ".wasm"

HEADER_DIGEST: Final = "Drupelet-Digest"
HEADER_NAME: Final = "Drupelet-Name"

_WASM_MAGIC: Final = b"\0asm"
REF_PREFIX: Final = "ref:"
"""Objects named ``ref:<name>`` hold the hex digest a pushed name points at."""
_HEX_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
_ISO_FRACTION = re.compile(r"(\.\d{6})\d+")


# -- digests -----------------------------------------------------------------------


def sha256_hex(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def format_digest(digest: str) -> str:
    """``sha256:<hex>``, the form people and the CLI see."""
    return DIGEST_PREFIX + digest


def parse_digest(text: str) -> str:
    """Return the bare lowercase hex of ``sha256:<64 hex>`` or of 64 bare hex digits.

    Surrounding whitespace is ignored and the hex may be upper case. Anything else,
    including a shortened prefix of a digest, raises :class:`InvalidDigest`.
    """
    value = text.strip()
    hexpart = value
    if ":" in value:
        algorithm, _, hexpart = value.partition(":")
        if algorithm.lower() != DIGEST_PREFIX[:-1]:
            raise InvalidDigest(
                f"unsupported digest algorithm {algorithm!r} in {text!r}: "
                f"artifacts are addressed by {DIGEST_PREFIX}<64 hex digits>",
                text=text,
            )
    if _HEX_DIGEST.match(hexpart):
        return hexpart.lower()
    if hexpart and all(c in "0123456789abcdefABCDEF" for c in hexpart):
        raise InvalidDigest(
            f"digest {text!r} has {len(hexpart)} hex digits, a SHA-256 digest has 64 "
            "(shortened digests are not accepted here)",
            text=text,
        )
    raise InvalidDigest(
        f"{text!r} is not a SHA-256 digest: expected {DIGEST_PREFIX}<64 hex digits> or 64 hex digits",
        text=text,
    )


def bucket_name(lattice: str) -> str:
    """The lattice's artifact object store bucket: ``drupelet-<lattice>-artifacts``."""
    return f"drupelet-{subjects.token(lattice, 'lattice')}-artifacts"


# -- artifact info ------------------------------------------------------------------


@dataclass(frozen=True)
class ArtifactInfo:
    """One stored artifact. ``digest`` is bare lowercase hex; ``created`` is epoch seconds."""

    digest: str
    size: int
    name: str | None = None
    created: float | None = None

    @property
    def ref(self) -> str:
        """``sha256:<hex>``."""
        return format_digest(self.digest)

    def to_json(self) -> dict[str, Any]:
        return {"digest": self.digest, "size": self.size, "name": self.name, "created": self.created}


def _header(headers: dict[str, Any] | None, key: str) -> str | None:
    """A header value from object metadata; Go clients store ``{key: [value, …]}``."""
    if not headers:
        return None
    value = headers.get(key)
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, str) and value else None


def _parse_mtime(mtime: str | None) -> float | None:
    """Epoch seconds of an RFC 3339 ``mtime``; None when absent, unparsable or Go's zero time."""
    if not mtime:
        return None
    text = _ISO_FRACTION.sub(r"\1", mtime)  # Go writes nanoseconds; Python takes 6 digits
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        log.debug("unparsable object mtime %r", mtime)
        return None
    if when.year <= 1:
        return None
    return when.timestamp()


def _info_from_object(obj: api.ObjectInfo) -> ArtifactInfo:
    return ArtifactInfo(
        digest=obj.name,
        size=int(obj.size or 0),
        name=_header(obj.headers, HEADER_NAME),
        created=_parse_mtime(obj.mtime),
    )


def _nats_digest(data: bytes) -> str:
    """The digest string the object store keeps in an object's metadata."""
    return "SHA-256=" + base64.urlsafe_b64encode(hashlib.sha256(data).digest()).decode()


# -- file-like adapters for nats-py's object store ------------------------------------


class _ProgressReader(io.BufferedIOBase):
    """Feeds ``data`` to ``ObjectStore.put`` and reports how much of it was published.

    nats-py reads one chunk, publishes it and waits for JetStream's acknowledgement
    before it reads the next, so when ``readinto`` is called, everything read before
    was acknowledged. nats-py calls ``readinto`` in an executor thread, so ``report``
    must be thread-safe.
    """

    def __init__(self, data: bytes, report: Callable[[int], None]) -> None:
        super().__init__()
        self._view = memoryview(data)
        self._pos = 0
        self._report = report

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: WriteableBuffer, /) -> int:
        self._report(self._pos)
        out = memoryview(buffer).cast("B")
        n = min(len(out), len(self._view) - self._pos)
        out[:n] = self._view[self._pos : self._pos + n]
        self._pos += n
        return n


class _HashingSink(io.BufferedIOBase):
    """Collects the chunks ``ObjectStore.get`` writes (in an executor thread) and hashes them."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.data = bytearray()
        self._hash = hashlib.sha256()
        self._limit = limit

    def writable(self) -> bool:
        return True

    def write(self, buffer: ReadableBuffer, /) -> int:
        chunk = memoryview(buffer).cast("B")
        if len(self.data) + len(chunk) > self._limit:
            raise OverflowError(f"object is larger than {self._limit} bytes")
        self.data += chunk
        self._hash.update(chunk)
        return len(chunk)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


# -- the store ------------------------------------------------------------------------


class ArtifactStore:
    """The lattice's wasm artifacts: a JetStream object store plus a verified disk cache.

    ``nc`` may be None (no NATS): then only cached artifacts can be read, and every
    other operation raises :class:`ArtifactStoreUnavailable`. ``domain`` is the
    JetStream domain holding the bucket (the hub's, seen from a leaf). Artifacts larger
    than ``max_bytes`` are neither stored nor fetched.
    """

    def __init__(
        self,
        nc: NatsClient | None,
        lattice: str,
        cache_dir: Path,
        *,
        domain: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        transfer_timeout_s: float = DEFAULT_TRANSFER_TIMEOUT_S,
    ) -> None:
        if max_bytes <= 0:
            raise ValueError(f"max_bytes must be positive, got {max_bytes}")
        self.lattice = lattice
        self.bucket = bucket_name(lattice)
        self.cache_dir = Path(cache_dir)
        self.domain = domain
        self.max_bytes = max_bytes
        self.transfer_timeout_s = transfer_timeout_s
        self._nc = nc
        self._js: JetStreamContext | None = (
            nc.jetstream(domain=domain, timeout=request_timeout_s) if nc is not None else None
        )
        self._obs: ObjectStore | None = None
        self._locks: dict[str, asyncio.Lock] = {}

    # -- cache ---------------------------------------------------------------------

    def cache_path(self, digest: str) -> Path:
        """Where the cached copy of ``digest`` lives (it may not exist)."""
        return self.cache_dir / f"{parse_digest(digest)}{CACHE_SUFFIX}"

    def _read_cached(self, digest: str) -> bytes | None:
        """The cached bytes of ``digest`` if present and intact; a bad copy is deleted.

        Blocking (reads and hashes the file): call it in a thread.
        """
        path = self.cache_dir / f"{digest}{CACHE_SUFFIX}"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as err:
            log.warning("cannot read cached artifact %s (%s); fetching it again", path, err)
            return None
        actual = sha256_hex(data)
        if actual == digest:
            return data
        log.warning(
            "cached artifact %s is corrupt (its sha256 is %s); deleting it and fetching it again", path, actual
        )
        try:
            path.unlink(missing_ok=True)
        except OSError as err:
            log.warning("cannot delete corrupt cached artifact %s: %s", path, err)
        return None

    async def _write_cache(self, digest: str, data: bytes) -> None:
        path = self.cache_dir / f"{digest}{CACHE_SUFFIX}"
        try:
            await asyncio.to_thread(atomic_write, path, data)
        except OSError as err:
            # The bytes are verified and in hand; a full disk must not fail the caller.
            log.warning("cannot cache artifact %s in %s: %s", format_digest(digest), path, err)

    def _lock(self, digest: str) -> asyncio.Lock:
        return self._locks.setdefault(digest, asyncio.Lock())

    # -- NATS plumbing ---------------------------------------------------------------

    def _where(self) -> str:
        url = None
        if self._nc is not None:
            url = self._nc.connected_url or next(iter(self._nc.servers), None)
        server = f" at {url.geturl()}" if url is not None else ""
        domain = f" in JetStream domain {self.domain!r}" if self.domain else ""
        return f"NATS{server}{domain}"

    @contextmanager
    def _nats_errors(self, doing: str, digest: str = "") -> Iterator[None]:
        """Turn nats-py's errors into :class:`ArtifactError`s that say what to check."""
        try:
            yield
        except (
            nats.errors.ConnectionClosedError,
            nats.errors.ConnectionDrainingError,
            nats.errors.ConnectionReconnectingError,
            nats.errors.StaleConnectionError,
            nats.errors.OutboundBufferLimitError,
            nats.errors.NoRespondersError,
            nats.js.errors.ServiceUnavailableError,
            asyncio.TimeoutError,  # nats.errors.TimeoutError is one
        ) as err:
            if isinstance(err, (nats.errors.NoRespondersError, nats.js.errors.ServiceUnavailableError)):
                reason = "no JetStream server answered"
            elif isinstance(err, asyncio.TimeoutError):
                reason = "JetStream did not answer in time (TimeoutError)"
            else:
                reason = f"the connection is down ({type(err).__name__}: {err})"
            self._obs = None  # look the bucket up again next time: it may have been recreated
            raise ArtifactStoreUnavailable(
                f"cannot {doing}: {reason} ({self._where()}); check that the node is connected to "
                "NATS and that its server has JetStream enabled",
                digest=digest,
            ) from err
        except (nats.errors.Error, nats.js.errors.Error) as err:
            raise ArtifactError(
                f"cannot {doing} in bucket {self.bucket!r}: {type(err).__name__}: {err}", digest=digest
            ) from err

    def _jetstream(self, doing: str, digest: str = "") -> JetStreamContext:
        if self._js is None or self._nc is None:
            raise ArtifactStoreUnavailable(
                f"cannot {doing}: this node has no NATS connection, so only cached artifacts can be read",
                digest=digest,
            )
        if self._nc.is_closed:
            raise ArtifactStoreUnavailable(
                f"cannot {doing}: the NATS connection is closed, so only cached artifacts can be read",
                digest=digest,
            )
        return self._js

    async def _bucket(self, doing: str, *, create: bool, digest: str = "") -> ObjectStore | None:
        """The object store, created when ``create``; None when it does not exist."""
        if self._obs is not None:
            return self._obs
        js = self._jetstream(doing, digest)
        with self._nats_errors(doing, digest):
            try:
                self._obs = await js.object_store(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                if not create:
                    return None
                log.info("creating object store bucket %s for lattice %s", self.bucket, self.lattice)
                self._obs = await js.create_object_store(
                    self.bucket,
                    storage=api.StorageType.FILE,
                    replicas=1,
                    description=f"drupelet wasm artifacts of lattice {self.lattice}, by sha256",
                )
        return self._obs

    async def _transfer(self, doing: str, digest: str, work: Awaitable[T]) -> T:
        with self._nats_errors(doing, digest):
            return await asyncio.wait_for(work, self.transfer_timeout_s)

    async def _object_info(self, obs: ObjectStore, doing: str, digest: str) -> api.ObjectInfo | None:
        with self._nats_errors(doing, digest):
            try:
                return await obs.get_info(digest)
            except nats.js.errors.NotFoundError:
                return None

    def _not_found(self, digest: str) -> ArtifactNotFound:
        return ArtifactNotFound(
            f"artifact {format_digest(digest)} is not in bucket {self.bucket!r} (push it with `drupelet push`)",
            digest=digest,
        )

    # -- API -------------------------------------------------------------------------

    async def put(
        self,
        data: bytes,
        *,
        name: str | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> ArtifactInfo:
        """Store ``data`` under its SHA-256 digest and cache it; return what was stored.

        Idempotent: if an object with the same digest and size is already stored, nothing
        is uploaded (only its ``name`` is updated when a different one is given).
        ``progress(sent, total)`` is called on the event loop as chunks are acknowledged by
        JetStream: first with ``sent == 0``, last with ``sent == total``; when nothing
        needs uploading it is called once, with ``(total, total)``.
        """
        size = len(data)
        if size > self.max_bytes:
            raise ArtifactTooLarge(
                f"artifact is {size} bytes, more than the limit of {self.max_bytes} bytes", size=size,
                limit=self.max_bytes,
            )
        if not data.startswith(_WASM_MAGIC):
            raise ArtifactError("not a WebAssembly binary (it does not start with \\0asm); build or assemble it first")
        digest = sha256_hex(data)
        doing = f"store artifact {format_digest(digest)}"
        headers: dict[str, list[str]] = {HEADER_DIGEST: [format_digest(digest)]}
        if name:
            headers[HEADER_NAME] = [name]
        async with self._lock(digest):
            obs = await self._bucket(doing, create=True, digest=digest)
            assert obs is not None
            existing = await self._object_info(obs, doing, digest)
            if existing is not None and existing.size == size and existing.digest == _nats_digest(data):
                log.info("artifact %s (%d bytes) is already stored", format_digest(digest), size)
                stored = existing
                if name and _header(existing.headers, HEADER_NAME) != name:
                    meta = api.ObjectMeta(name=digest, description=existing.description, headers=headers)
                    with self._nats_errors(doing, digest):
                        await obs.update_meta(digest, meta)
                    stored.headers = headers
                if progress is not None:
                    progress(size, size)
            else:
                if existing is not None:
                    log.warning(
                        "object %s in bucket %s does not hold those bytes (size %s, digest %s); replacing it",
                        digest, self.bucket, existing.size, existing.digest,
                    )
                reader = _ProgressReader(data, self._progress_reporter(size, progress))
                meta = api.ObjectMeta(name=digest, description=name, headers=headers)
                await self._transfer(doing, digest, obs.put(digest, reader, meta=meta))
                # put's own answer carries a made-up mtime; read back what was stored.
                readback = await self._object_info(obs, doing, digest)
                if readback is None:
                    raise ArtifactError(
                        f"artifact {format_digest(digest)} was deleted from bucket {self.bucket!r} "
                        "while it was being stored",
                        digest=digest,
                    )
                stored = readback
                log.info("stored artifact %s (%d bytes) in bucket %s", format_digest(digest), size, self.bucket)
            await self._write_cache(digest, data)
        if name:
            await self.set_ref(name, digest)
        return _info_from_object(stored)

    async def set_ref(self, name: str, digest: str) -> None:
        """Point the name ``name`` at ``digest`` (the last push of a name wins)."""
        doing = f"name artifact {format_digest(digest)} {name!r}"
        obs = await self._bucket(doing, create=True, digest=digest)
        assert obs is not None
        await self._transfer(doing, digest, obs.put(REF_PREFIX + name, digest.encode("ascii")))

    async def ref(self, name: str) -> str | None:
        """The digest the name ``name`` points at, or None."""
        doing = f"look up the artifact named {name!r}"
        obs = await self._bucket(doing, create=False)
        if obs is None:
            return None
        with self._nats_errors(doing):
            try:
                result = await obs.get(REF_PREFIX + name)
            except nats.js.errors.NotFoundError:
                return None
        text = (result.data or b"").decode("ascii", "replace").strip()
        return text if _HEX_DIGEST.match(text) else None

    def _progress_reporter(
        self, total: int, progress: Callable[[int, int], None] | None
    ) -> Callable[[int], None]:
        """A thread-safe ``report(sent)`` that calls ``progress`` on the loop once per new value."""
        if progress is None:
            return lambda sent: None
        loop = asyncio.get_running_loop()
        last = -1

        def report(sent: int) -> None:
            nonlocal last
            if sent != last:
                last = sent
                loop.call_soon_threadsafe(progress, sent, total)

        return report

    async def get(self, digest: str) -> bytes:
        """The bytes of ``digest``: from the cache if intact, else fetched, verified and cached.

        Raises :class:`ArtifactNotFound` when the store does not hold it,
        :class:`DigestMismatch` when the stored bytes are not what the digest says (nothing
        is cached), and :class:`ArtifactStoreUnavailable` when it is not cached and the
        store cannot be reached.
        """
        digest = parse_digest(digest)
        async with self._lock(digest):
            cached = await asyncio.to_thread(self._read_cached, digest)
            if cached is not None:
                return cached
            data = await self._fetch(digest)
            await self._write_cache(digest, data)
            return data

    async def _fetch(self, digest: str) -> bytes:
        doing = f"fetch artifact {format_digest(digest)}"
        obs = await self._bucket(doing, create=False, digest=digest)
        if obs is None:
            raise self._not_found(digest)
        info = await self._object_info(obs, doing, digest)
        if info is None:
            raise self._not_found(digest)
        size = int(info.size or 0)
        if size > self.max_bytes:
            raise ArtifactTooLarge(
                f"artifact {format_digest(digest)} is {size} bytes, more than the limit of {self.max_bytes} bytes",
                size=size, limit=self.max_bytes, digest=digest,
            )
        sink = _HashingSink(self.max_bytes)
        try:
            await self._transfer(doing, digest, obs.get(digest, writeinto=sink))
        except OverflowError as err:  # the object grew past its metadata's size
            raise ArtifactTooLarge(
                f"artifact {format_digest(digest)} is more than the limit of {self.max_bytes} bytes",
                size=len(sink.data), limit=self.max_bytes, digest=digest,
            ) from err
        except ArtifactError as err:
            # nats-py checks the chunks against the object's own metadata digest.
            if not isinstance(err.__cause__, nats.js.errors.DigestMismatchError):
                raise
            log.warning("object %s in bucket %s does not match its own metadata", digest, self.bucket)
        actual = sink.hexdigest()
        if actual != digest:
            raise DigestMismatch(
                f"refused artifact {format_digest(digest)}: the stored bytes hash to "
                f"{format_digest(actual)} (the object store holds tampered or corrupt data)",
                expected=digest, actual=actual,
            )
        log.info("fetched artifact %s (%d bytes) from bucket %s", format_digest(digest), len(sink.data), self.bucket)
        return bytes(sink.data)

    async def info(self, digest: str) -> ArtifactInfo:
        """What the store says about ``digest`` (not the cache)."""
        digest = parse_digest(digest)
        doing = f"look up artifact {format_digest(digest)}"
        obs = await self._bucket(doing, create=False, digest=digest)
        obj = await self._object_info(obs, doing, digest) if obs is not None else None
        if obj is None:
            raise self._not_found(digest)
        return _info_from_object(obj)

    async def list(self) -> list[ArtifactInfo]:
        """Every stored artifact, oldest first. Objects not named by a digest are skipped."""
        doing = "list artifacts"
        obs = await self._bucket(doing, create=False)
        if obs is None:
            return []
        try:
            objects = await self._transfer(doing, "", obs.list(ignore_deletes=True))
        except ArtifactError as err:
            if isinstance(err.__cause__, nats.js.errors.NotFoundError):
                return []  # nats-py says "not found" for an empty bucket
            raise
        found: list[ArtifactInfo] = []
        for obj in objects:
            if obj.deleted:
                continue
            if not _HEX_DIGEST.match(obj.name) or obj.name != obj.name.lower():
                log.warning("bucket %s holds object %r, which is not named by a digest; skipping it",
                            self.bucket, obj.name)
                continue
            found.append(_info_from_object(obj))
        found.sort(key=lambda a: (a.created or 0.0, a.digest))
        return found

    async def delete(self, digest: str) -> None:
        """Delete ``digest`` from the store and from this node's cache.

        Raises :class:`ArtifactNotFound` when the store does not hold it (the cached copy
        is removed all the same). Other nodes keep their cached copies.
        """
        digest = parse_digest(digest)
        doing = f"delete artifact {format_digest(digest)}"
        async with self._lock(digest):
            path = self.cache_dir / f"{digest}{CACHE_SUFFIX}"
            await asyncio.to_thread(path.unlink, missing_ok=True)
            obs = await self._bucket(doing, create=False, digest=digest)
            if obs is None:
                raise self._not_found(digest)
            with self._nats_errors(doing, digest):
                try:
                    await obs.delete(digest)
                except nats.js.errors.NotFoundError:
                    raise self._not_found(digest) from None
            log.info("deleted artifact %s from bucket %s", format_digest(digest), self.bucket)


async def resolve_ref(store: ArtifactStore, ref: str) -> bytes:
    """The artifact a reference names: a digest, or the name it was last pushed with."""
    try:
        digest = parse_digest(ref)
    except InvalidDigest:
        found = await store.ref(ref)
        if found is None:
            raise ArtifactNotFound(f"no artifact was pushed with the name {ref!r}", digest="") from None
        digest = found
    return await store.get(digest)
