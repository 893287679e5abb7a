"""The lattice's shared state: a JetStream KV bucket every node watches, and a copy on disk.

Links, named config, the desired actors of each node and node labels live in one KV
bucket per lattice, ``drupelet-<lattice>-state``. In the leaf topology the bucket lives in
the hub's JetStream domain (``connect(nc, domain="hub")``); every node follows it with a
watch and keeps the last view it saw in a JSON file, so a node restarted while the hub is
unreachable comes back with its actors and links (:meth:`LatticeState.load_local`).

Keys are ``.``-separated tokens of ``A-Z a-z 0-9 _ -`` (what KV keys and NATS subject
tokens allow everywhere). Names (nodes, actors, config names) must already be such tokens;
an interface contains ``:`` and ``/``, so it is written as the lowercase hex of its UTF-8
bytes (``wasi:keyvalue/store`` → ``776173693a6b657976616c75652f73746f7265``).

=================================  ==================================================
key                                value (JSON object)
=================================  ==================================================
``link.<source>.<hex interface>``  :class:`LinkValue`: ``source``, ``interface``,
                                   ``target``, ``config``
``config.<name>``                  named config: string → string (``wire.ConfigMap``)
``actor.<node>.<actor>``           :class:`ActorValue` (desired state of one actor on
                                   one node): ``name``, ``digest``, ``instances``,
                                   ``config``, ``node``
``labels.<node>``                  the node's labels: string → string (``wire.Labels``)
``revoked.<key>``                  :class:`RevokedValue`: ``key`` (an actor's subject
                                   or an issuer, as a public nkey), ``revoked_at``
=================================  ==================================================

:data:`STATE_VALUES` declares each, once, with the bounds of
:mod:`drupelet.node.lattice.wire` (the same types the control requests take), and
:func:`check_value` validates from it. Values may carry more fields than these (newer
nodes); they are kept as they are: the view holds the JSON objects, not the Structs.

How the view is kept:

* When the bucket is reachable it is the truth for every key it has an entry or a delete
  marker for: :meth:`LatticeState.connect` reads every entry, applies it over the view
  loaded from disk, and fires listeners for the differences. A key of the view the bucket
  has neither for (the bucket was purged, or deleted and made again) is kept, with a
  warning: a node never takes a bucket that lost its entries for an empty lattice.
* A node makes the bucket only when ``may_create`` (an open lattice); in an authenticated
  one it waits, running from its copy, until an admin's first write makes it.
* A watch applies later changes. A change is applied only if its revision is newer than
  the one already seen for that key, so the echo of a node's own write (applied at once by
  :meth:`~LatticeState.put`) or a replayed message changes nothing.
* The follower re-reads the whole bucket when the NATS connection reconnected, when the
  bucket stops answering (then it retries with a bounded backoff), and when a probe of the
  stream (every ``probe_interval_s`` of quiet) shows the watch has fallen behind. nats-py's
  watch is an ordered push consumer in the server's memory: after a hub restart it goes
  silent and nats-py recreates it only after two missed 5 s heartbeats.
* Entries whose key or value is malformed are logged and ignored: a bad write by some
  other client changes nothing here.
* Listeners run one at a time, in the order the view changed, on one task, and only once
  the disk copy has the change; a failing listener is logged and the others still run.
  A node's own writes fire them too. (Reads of the view see a change a moment earlier.)
* The disk copy, ``{"revision": N, "entries": {key: value}}``, is written atomically and
  only when the entries changed (SD cards wear); ``revision`` is the highest KV revision
  known at that write. Writes run in a worker thread, never on the event loop.

nats-py's ``KeyValue.put``/``delete`` publish to ``$KV.<bucket>.<key>``, which does not
reach a bucket in another JetStream domain across a leaf connection; writes here go to
``$JS.<domain>.API.$KV.<bucket>.<key>`` (what the Go client does), see :func:`kv_subject`.

The keys and values themselves (pure functions and Structs) are in
:mod:`drupelet.node.lattice.statekeys`; this module re-exports them.

Why this module is past 500 lines: the follower's correctness rests on the interplay of
its view, revisions, session and disk copy, which stay together in one class.
"""

from __future__ import annotations

import asyncio
import copy
import enum
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import JetStreamContext, api
from nats.js.kv import KV_DEL, KV_OP, KV_PURGE, KeyValue

from drupelet.providers.base import atomic_write

from drupelet.node.lattice.connect import jittered
from drupelet.node.lattice.errors import BadStateEntry, StateError, StateUnavailable
from drupelet.node.lattice.statewrite import UNREACHABLE as _UNREACHABLE
from drupelet.node.lattice.statewrite import describe_error as _describe
from drupelet.node.lattice.statewrite import encode_value as _encode
from drupelet.node.lattice.statewrite import publish_entry
from drupelet.node.lattice.statekeys import (STATE_VALUES, ActorValue, LinkValue, StateKey, _token, actor_key,
                                            bucket_name, check_value, config_key, decode_interface, encode_interface,
                                            kv_subject, labels_key, link_key, parse_key, revoked_key)

log = logging.getLogger(__name__)

__all__ = [
    "ActorValue",
    "LatticeState",
    "LinkValue",
    "Listener",
    "STATE_VALUES",
    "StateKey",
    "actor_key",
    "bucket_name",
    "revoked_key",
    "check_value",
    "config_key",
    "decode_interface",
    "encode_interface",
    "kv_subject",
    "labels_key",
    "link_key",
    "parse_key",
]

#: Revisions the bucket keeps per key (only the newest is read; the rest help debugging).
KV_HISTORY: Final = 5
#: Default bound on each JetStream request, and on :meth:`LatticeState.connect`.
DEFAULT_TIMEOUT_S: Final = 2.0
#: First wait before retrying an unreachable bucket; doubles up to ``RETRY_MAX_S``.
RETRY_INITIAL_S: Final = 0.5
RETRY_MAX_S: Final = 10.0
#: Quiet time after which the follower checks that the watch is still alive.
PROBE_INTERVAL_S: Final = 5.0
#: How often :meth:`LatticeState.catch_up` looks whether the watch has come far enough.
CATCH_UP_POLL_S: Final = 0.01
#: How often the follower wakes while the watch is quiet (local checks only).
WAKE_INTERVAL_S: Final = 1.0

Listener = Callable[[str, dict[str, Any] | None], Awaitable[None]]
"""Called with (key, new value) after the view changed; the value is None when deleted."""

class _Keep(enum.Enum):
    """A malformed entry in the bucket: keep whatever the view had for that key."""

    KEEP = 0


_KEEP: Final = _Keep.KEEP


@dataclass
class _Session:
    """One reading of the bucket: the KV handle, its watch, and the connection's
    reconnect count when it began."""

    kv: KeyValue
    watcher: KeyValue.KeyWatcher
    reconnects: int
    created: Any = None
    """When the bucket's stream was made: another time is another bucket (deleted and made again)."""


# -- the state ----------------------------------------------------------------------


class LatticeState:
    """One node's view of the lattice's shared state.

    Call :meth:`load_local` first (the view from disk), then :meth:`connect`. Reads
    (:meth:`get`, :meth:`links`, …) serve the in-memory view and never block; they
    return copies. :meth:`close` stops the follower; it is idempotent.
    """

    def __init__(self, lattice: str, node: str, local_path: Path, *,
                 retry_initial_s: float = RETRY_INITIAL_S, retry_max_s: float = RETRY_MAX_S,
                 probe_interval_s: float = PROBE_INTERVAL_S, may_create: bool = True) -> None:
        self.lattice = lattice
        #: Whether this node makes the bucket when it does not exist (an open lattice); in an
        #: authenticated one only an admin may, and the node waits for it.
        self.may_create = may_create
        self.node = _token(node, "node")
        self.bucket = bucket_name(lattice)
        self.local_path = Path(local_path)
        #: How many times the disk copy was written (it is written only when it changed).
        self.disk_writes = 0
        self._retry_initial_s = retry_initial_s
        self._retry_max_s = max(retry_max_s, retry_initial_s)
        self._probe_interval_s = probe_interval_s
        self._wake_s = min(WAKE_INTERVAL_S, probe_interval_s)
        self._view: dict[str, dict[str, Any]] = {}  # values are replaced, never mutated
        self._revs: dict[str, int] = {}  # newest KV revision seen per key, deletes included
        self._watched_seq = 0  # the stream position the watch has delivered up to
        self._persisted: dict[str, dict[str, Any]] | None = None  # the entries on disk
        self._listeners: list[Listener] = []
        self._events: asyncio.Queue[tuple[str, dict[str, Any] | None]] = asyncio.Queue()
        self._nc: NatsClient | None = None
        self._js: JetStreamContext | None = None
        self._domain: str | None = None
        self._timeout_s = DEFAULT_TIMEOUT_S
        self._session: _Session | None = None
        self._runner: asyncio.Task[None] | None = None
        self._dispatcher: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()  # a write and a full read of the bucket never interleave
        self._persist_lock = asyncio.Lock()
        self._closed = False

    # -- disk copy ------------------------------------------------------------------

    def load_local(self) -> None:
        """Replace the view with the disk copy. A missing file is an empty view; a
        corrupt one is logged and ignored (it is replaced at the next write)."""
        path = self.local_path
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            log.debug("no local state copy at %s yet", path)
            self._view, self._persisted = {}, {}
            return
        except OSError as exc:
            log.error("cannot read the local state copy %s: %s; starting from an empty view", path, exc)
            self._view, self._persisted = {}, None
            return
        try:
            doc = json.loads(raw)
            if not isinstance(doc, dict) or not isinstance(doc.get("entries"), dict):
                raise ValueError('not an object with an "entries" object')
        except ValueError as exc:
            log.warning("the local state copy %s is corrupt (%s); ignoring it", path, exc)
            self._view, self._persisted = {}, None
            return
        view: dict[str, dict[str, Any]] = {}
        for key, value in doc["entries"].items():
            try:
                view[key] = check_value(key, value)
            except BadStateEntry as exc:
                log.warning("the local state copy %s: ignoring %s: %s", path, key, exc.message)
        self._view = view
        self._persisted = dict(view) if len(view) == len(doc["entries"]) else None
        log.info("loaded %d state entries from %s (revision %s)", len(view), path, doc.get("revision"))

    async def _commit(self, changes: list[tuple[str, dict[str, Any] | None]]) -> None:
        """Write the disk copy if the view differs from it, then queue ``changes`` for the
        listeners: a listener never hears of a change the disk copy does not have yet.
        Callers change the view and call this without awaiting in between, so the lock
        (first come, first served) keeps listeners in the order the view changed."""
        async with self._persist_lock:
            await self._write_copy()
            for key, value in changes:
                self._notify(key, value)

    async def _write_copy(self) -> None:
        entries = dict(self._view)
        if entries == self._persisted:
            return
        revision = max(self._watched_seq, max(self._revs.values(), default=0))
        data = json.dumps({"revision": revision, "entries": entries}, indent=1, sort_keys=True,
                          ensure_ascii=False).encode("utf-8") + b"\n"
        try:
            await asyncio.to_thread(atomic_write, self.local_path, data)
        except OSError as exc:
            log.error("cannot write the local state copy %s: %s", self.local_path, exc)
            return
        self._persisted = entries
        self.disk_writes += 1

    # -- connecting and following -----------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the bucket is being followed right now (else the view may be stale)."""
        return self._session is not None

    async def connect(self, nc: NatsClient, *, domain: str | None = None,
                      timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
        """Open (or create) the bucket in JetStream ``domain`` through ``nc``, read it and
        follow it. Returns False if it cannot be reached within ``timeout_s``: the view
        then stays as loaded from disk and a background task keeps retrying; when it
        connects, listeners fire for what differs."""
        if self._closed:
            raise StateError("the lattice state is closed", bucket=self.bucket)
        if self._nc is not None:
            raise StateError("the lattice state is already connected", bucket=self.bucket)
        self._nc, self._domain, self._timeout_s = nc, domain, timeout_s
        self._js = nc.jetstream(domain=domain, timeout=timeout_s)
        self._dispatcher = asyncio.create_task(self._dispatch(), name=f"drupelet-state-listeners-{self.lattice}")
        try:
            await self._open_session()
            ok = True
        except _UNREACHABLE as exc:
            log.warning("lattice state bucket %s%s is unreachable (%s); using the local copy (%d entries) "
                        "and retrying in the background", self.bucket, self._where(), _describe(exc), len(self._view))
            ok = False
        except BaseException:
            await self.close()
            raise
        self._runner = asyncio.create_task(self._run(), name=f"drupelet-state-{self.lattice}")
        return ok

    def _where(self) -> str:
        return f" (JetStream domain {self._domain})" if self._domain else ""

    async def _open_session(self) -> None:
        """Read the whole bucket and start watching it; on failure nothing changes."""
        js, nc = self._js, self._nc
        assert js is not None and nc is not None
        async with self._lock:
            try:
                kv = await js.key_value(self.bucket)
            except nats.js.errors.BucketNotFoundError:
                if not self.may_create:
                    raise  # unreachable until an admin makes it: the view stays as it is
                kv = await js.create_key_value(
                    bucket=self.bucket, history=KV_HISTORY, storage=api.StorageType.FILE,
                    description=f"drupelet lattice {self.lattice}: links, named config, desired actors, labels")
                log.info("created the lattice state bucket %s%s", self.bucket, self._where())
            status = await kv.status()
            reconnects = int(nc.stats["reconnects"])
            watcher = await kv.watchall()
            try:
                records = await self._read_initial(watcher, status.stream_info.state.last_seq)
            except BaseException:
                await _stop_watcher(watcher)
                raise
            self._session = _Session(kv, watcher, reconnects, status.stream_info.created)
            await self._apply_snapshot(records, status.stream_info.state.last_seq)

    async def _read_initial(self, watcher: KeyValue.KeyWatcher,
                            last_seq: int) -> dict[str, tuple[int, dict[str, Any] | None | _Keep]]:
        """The watch first delivers the newest entry of every key (delete markers too),
        then None.

        nats-py sends that None at once when the server has pushed every entry but none has
        been read from the socket yet (the consumer shows nothing pending and the client has
        received nothing), so an early None would pass for an empty bucket and the node would
        drop every link and actor. The entry at the stream's last sequence, read before the
        watch began, is always among the newest ones: the initial values are complete once
        it has come (or nothing more comes within the timeout)."""
        records: dict[str, tuple[int, dict[str, Any] | None | _Keep]] = {}
        newest, done = 0, False
        while not (done and newest >= last_seq):
            try:
                entry = await _next_update(watcher, self._timeout_s)
            except asyncio.TimeoutError:  # nats.errors.TimeoutError too
                if not done:
                    raise
                log.debug("state watch: no entry up to sequence %d after the initial values", last_seq)
                break
            if entry is None:
                done = True
                continue
            newest = max(newest, entry.revision or 0)
            records[entry.key] = (entry.revision or 0, self._decode(entry))  # a delete marker: None
        return records

    async def _apply_snapshot(self, records: Mapping[str, tuple[int, dict[str, Any] | None | _Keep]],
                              last_seq: int) -> None:
        old = self._view
        new: dict[str, dict[str, Any]] = {}
        for key, (_, value) in records.items():
            if value is _KEEP:
                if key in old:
                    new[key] = old[key]
            elif value is not None:
                new[key] = value
        # An entry leaves the view only by its delete or purge marker: one the bucket lost
        # without a marker (the stream was purged, deleted and made again, or is another
        # stream altogether) is kept until a writer puts or deletes that key again.
        vanished = sorted(key for key in old if key not in records)
        for key in vanished:
            new[key] = old[key]
        if vanished:
            log.warning("lattice state bucket %s%s has no entry and no delete marker for %d key(s) of this node's "
                        "view (%s): the bucket was purged or made again; keeping them until they are written or "
                        "deleted again", self.bucket, self._where(), len(vanished), ", ".join(vanished[:5])
                        + (", …" if len(vanished) > 5 else ""))
        self._revs = {key: rev for key, (rev, _) in records.items()}
        self._watched_seq = max(last_seq, max(self._revs.values(), default=0))
        self._view = new
        changed = sorted(key for key in old.keys() | new.keys() if old.get(key) != new.get(key))
        await self._commit([(key, new.get(key)) for key in changed])
        log.info("following lattice state bucket %s%s: %d entries, %d changed since the last view",
                 self.bucket, self._where(), len(new), len(changed))

    def _decode(self, entry: KeyValue.Entry) -> dict[str, Any] | None | _Keep:
        """The value of a watched entry: a dict, None (deleted), or KEEP (malformed)."""
        key = entry.key
        if entry.operation in (KV_DEL, KV_PURGE):
            return None
        try:
            return check_value(key, json.loads(entry.value or b""))
        except (ValueError, BadStateEntry) as exc:
            log.warning("ignoring %s at revision %s in bucket %s: %s", key, entry.revision, self.bucket,
                        exc.message if isinstance(exc, BadStateEntry) else f"not JSON ({exc})")
            return _KEEP

    async def _run(self) -> None:
        """Follow the bucket until closed: reopen it whenever the watch may have missed
        something, retry with a bounded backoff while it is unreachable."""
        nc = self._nc
        assert nc is not None
        delay = self._retry_initial_s
        unreachable = self._session is None
        if unreachable:  # connect() has just tried
            await asyncio.sleep(jittered(delay))
            delay = min(delay * 2, self._retry_max_s)
        while True:
            if nc.is_closed:
                log.info("the NATS connection is closed; no longer following lattice state bucket %s", self.bucket)
                return
            if self._session is None:
                try:
                    await self._open_session()
                except _UNREACHABLE as exc:
                    log.debug("lattice state bucket %s still unreachable (%s); retrying in %g s", self.bucket,
                              _describe(exc), delay)
                    await asyncio.sleep(jittered(delay))
                    delay = min(delay * 2, self._retry_max_s)
                    continue
                except Exception:
                    log.exception("reading lattice state bucket %s failed; retrying in %g s", self.bucket, delay)
                    await asyncio.sleep(jittered(delay))
                    delay = min(delay * 2, self._retry_max_s)
                    continue
                if unreachable:
                    log.info("lattice state bucket %s is reachable again", self.bucket)
                delay = self._retry_initial_s
            session = self._session
            assert session is not None
            try:
                reason, unreachable = await self._follow(session)
            except Exception:
                log.exception("following lattice state bucket %s failed; reading it again in %g s", self.bucket, delay)
                await self._end_session()
                await asyncio.sleep(jittered(delay))
                continue
            if nc.is_closed:
                await self._end_session()
                continue  # logged at the top of the loop
            (log.warning if unreachable else log.info)(
                "lattice state bucket %s: %s; %s", self.bucket, reason,
                "using the local copy until it is back" if unreachable else "reading it again")
            await self._end_session()

    async def _follow(self, session: _Session) -> tuple[str, bool]:
        """Apply watched changes until the watch is in doubt; say why (and whether the
        bucket is unreachable)."""
        nc = self._nc
        assert nc is not None
        loop = asyncio.get_running_loop()
        next_probe = loop.time() + self._probe_interval_s
        while True:
            try:
                entry = await _next_update(session.watcher, self._wake_s)
            except nats.errors.TimeoutError:
                if nc.is_closed:
                    return "the NATS connection is closed", False
                if nc.stats["reconnects"] != session.reconnects:
                    return "the NATS connection reconnected", False
                if loop.time() >= next_probe:
                    problem = await self._probe(session)
                    if problem is not None:
                        return problem
                    next_probe = loop.time() + self._probe_interval_s
                continue
            if entry is not None:
                await self._apply_entry(entry)

    async def _probe(self, session: _Session) -> tuple[str, bool] | None:
        try:
            status = await session.kv.status()
        except _UNREACHABLE as exc:
            return f"unreachable ({_describe(exc)})", True
        if status.stream_info.created != session.created:
            return "it was deleted and made again", False
        last_seq = status.stream_info.state.last_seq
        if last_seq != self._watched_seq:
            return f"the watch stopped at revision {self._watched_seq} but the bucket is at {last_seq}", False
        return None

    async def _apply_entry(self, entry: KeyValue.Entry) -> None:
        revision = entry.revision or 0
        self._watched_seq = max(self._watched_seq, revision)
        try:
            parse_key(entry.key)
        except BadStateEntry as exc:
            log.warning("ignoring key %r in bucket %s: %s", entry.key, self.bucket, exc.message)
            return
        if revision <= self._revs.get(entry.key, 0):
            return  # an echo of a change already applied, or an older one
        self._revs[entry.key] = revision
        value = self._decode(entry)
        if value is not _KEEP and self._set(entry.key, value):
            await self._commit([(entry.key, value)])

    async def _end_session(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await _stop_watcher(session.watcher)

    async def catch_up(self, timeout_s: float = DEFAULT_TIMEOUT_S) -> bool:
        """Wait until the watch has brought every entry the bucket held when this was called,
        and the listeners have seen them: a request that follows a client's write then finds
        the node already changed by it. False when the bucket is not followed or it takes
        longer than ``timeout_s``."""
        session = self._session
        if session is None:
            return False
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        try:
            status = await asyncio.wait_for(session.kv.status(), timeout_s)
        except _UNREACHABLE:
            return False
        last_seq = status.stream_info.state.last_seq
        while self._watched_seq < last_seq:
            if loop.time() >= deadline or self._session is not session:
                return False
            await asyncio.sleep(CATCH_UP_POLL_S)
        await self.flush()
        return True

    # -- listeners ----------------------------------------------------------------------

    def on_change(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener(key, value_or_None)`` after every change of the view (not for
        :meth:`load_local`). Returns a function that unregisters it."""
        self._listeners.append(listener)

        def remove() -> None:
            if listener in self._listeners:
                self._listeners.remove(listener)

        return remove

    async def flush(self) -> None:
        """Wait until listeners have seen every change made so far (never call this from
        a listener: it would wait for itself)."""
        if self._dispatcher is not None and not self._dispatcher.done():
            await self._events.join()

    def _notify(self, key: str, value: dict[str, Any] | None) -> None:
        if self._dispatcher is not None:
            self._events.put_nowait((key, value))

    async def _dispatch(self) -> None:
        while True:
            key, value = await self._events.get()
            try:
                for listener in list(self._listeners):
                    try:
                        await listener(key, copy.deepcopy(value))
                    except Exception:
                        log.exception("state listener %r failed on %s", listener, key)
            finally:
                self._events.task_done()

    def _set(self, key: str, value: dict[str, Any] | None) -> bool:
        """Change the view; True if it changed (then the caller commits it)."""
        if self._view.get(key) == value:
            return False
        if value is None:
            del self._view[key]
        else:
            self._view[key] = value
        return True

    # -- writes -----------------------------------------------------------------------

    async def put(self, key: str, value: Mapping[str, Any]) -> int:
        """Write ``value`` at ``key`` in the bucket and, once stored, in the local view and
        on disk; return its revision. :class:`BadStateEntry` for a malformed entry,
        :class:`StateUnavailable` when the bucket cannot be reached (nothing changes)."""
        clean = check_value(key, value)
        async with self._lock:
            revision = await self._publish(key, _encode(clean), None)
            await self._apply_own(key, clean, revision)
        return revision

    async def delete(self, key: str) -> int:
        """Delete ``key`` (a delete marker in the bucket), then locally; return the marker's
        revision. Deleting a key that does not exist is not an error."""
        parse_key(key)
        async with self._lock:
            revision = await self._publish(key, b"", {KV_OP: KV_DEL})
            await self._apply_own(key, None, revision)
        return revision

    async def _apply_own(self, key: str, value: dict[str, Any] | None, revision: int) -> None:
        if revision <= self._revs.get(key, 0):
            return  # the watch already brought something newer
        self._revs[key] = revision
        if self._set(key, value):
            await self._commit([(key, value)])

    async def _publish(self, key: str, data: bytes, headers: dict[str, str] | None) -> int:
        nc, js = self._nc, self._js
        if self._closed or nc is None or js is None:
            raise StateUnavailable(f"cannot write {key}: the lattice state bucket {self.bucket}{self._where()} is "
                                   "not connected", key=key, bucket=self.bucket)
        return await publish_entry(nc, js, self.bucket, key, data, headers, domain=self._domain,
                                   timeout_s=self._timeout_s)

    # -- reads ------------------------------------------------------------------------

    def places(self, node: str, actor: str) -> bool:
        """Whether the lattice state records ``actor`` as desired on ``node`` (cheap: the
        provider server asks on every call from another node)."""
        try:
            return actor_key(node, actor) in self._view
        except BadStateEntry:
            return False

    def get(self, key: str) -> dict[str, Any] | None:
        value = self._view.get(key)
        return None if value is None else copy.deepcopy(value)

    def items(self, prefix: str = "") -> list[tuple[str, dict[str, Any]]]:
        """Entries whose key is ``prefix`` or starts with ``prefix`` + ``.`` (whole tokens:
        ``actor.pi1`` does not match ``actor.pi10.x``), sorted by key."""
        stem = prefix.rstrip(".")
        return [(key, copy.deepcopy(value)) for key, value in sorted(self._view.items())
                if not stem or key == stem or key.startswith(stem + ".")]

    def links(self) -> list[dict[str, Any]]:
        """Every link: JSON objects with the fields of :class:`LinkValue` (and any more)."""
        return [value for _, value in self.items("link")]

    def actors_for(self, node: str) -> list[dict[str, Any]]:
        """The desired actors of ``node``: the fields of :class:`ActorValue` (and any more)."""
        return [value for _, value in self.items(f"actor.{_token(node, 'node')}")]

    def named_config(self, name: str) -> dict[str, str] | None:
        return cast("dict[str, str] | None", self.get(config_key(name)))

    def revoked(self) -> list[str]:
        """Every revoked subject and issuer key."""
        return [str(value["key"]) for _, value in self.items("revoked")]

    def labels_for(self, node: str) -> dict[str, str]:
        return cast("dict[str, str]", self.get(labels_key(node)) or {})

    # -- shutdown ---------------------------------------------------------------------

    async def close(self) -> None:
        """Stop following the bucket and the listeners. Idempotent; the view stays readable."""
        self._closed = True
        tasks = [task for task in (self._runner, self._dispatcher) if task is not None]
        self._runner = self._dispatcher = None
        for task in tasks:
            task.cancel()
        for result in await asyncio.gather(*tasks, return_exceptions=True):
            if isinstance(result, Exception):
                log.error("lattice state task ended with %s", _describe(result), exc_info=result)
        await self._end_session()


async def _next_update(watcher: KeyValue.KeyWatcher, timeout_s: float) -> KeyValue.Entry | None:
    """The watch's next entry, or None for "initial values done"; nats.errors.TimeoutError
    when nothing came within ``timeout_s``."""
    while True:
        entry = await watcher.updates(timeout=timeout_s)  # type: ignore[no-untyped-call]
        if entry is None or isinstance(entry, KeyValue.Entry):
            return entry
        # anything else is nats-py's stop sentinel: only seen after stop(); keep waiting


async def _stop_watcher(watcher: KeyValue.KeyWatcher) -> None:
    try:
        await watcher.stop()  # type: ignore[no-untyped-call]
    except _UNREACHABLE as exc:
        # The connection is closed or reconnecting: the server drops the consumer itself.
        log.debug("stopping the state watch: %s", _describe(exc))
