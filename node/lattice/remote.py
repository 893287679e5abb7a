"""Capability calls across the lattice: an actor on one node, a provider on another.

The calling node resolves a link whose target is ``<node>/<provider>`` to a
:class:`RemoteProvider`: a stand-in with the provider's methods that turns each call into
a NATS request to ``drupelet.<lattice>.prov.<node>.<provider>`` with a deadline. The
target node's :class:`ProviderServer` checks that the lattice has that link, runs the
call on its provider, and answers with the reply envelope. A timeout or an unreachable
node becomes the interface's error value, never a hang or a trap.

Resources (keyvalue buckets) cross as handles: ``open`` returns a number the server
keeps; later calls name it; the handle is released when the guest drops it, when the
actor's instance closes, when the actor stops, or when its node stops.

Payloads are JSON objects; bytes travel as ``{"$b": "<base64>"}``.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import itertools
import json
import logging
import threading
from dataclasses import dataclass
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.providers.base import (Busy, Denied, Link, Message, NotFound, PayloadTooLarge, ProviderError, Timeout,
                                     Unavailable, invoke_method)

from drupelet.node.lattice import protocol
from drupelet.node.lattice import subjects
from drupelet.node.lattice.connect import unsubscribe_all

log = logging.getLogger(__name__)

INLINE_OPS = frozenset({"bucket.get", "bucket.exists", "bucket.list_keys", "bucket.get_many", "bucket.release"})
"""Reads of a bucket's in-memory contents: quick and lock-guarded, so they run on the event
loop; every other call (writes that fsync, messaging that waits on the network) runs in a
worker thread."""

BUCKET_METHODS = frozenset({"get", "set", "delete", "exists", "list_keys", "increment", "get_many", "set_many",
                            "delete_many"})
RELEASE_TIMEOUT_S = 1.0
SWEEP_INTERVAL_S = 30.0
"""How often a provider's node checks that the callers holding handles still answer pings."""

_ERRORS: dict[str, type[ProviderError]] = {
    "not-found": NotFound, "denied": Denied, "busy": Busy, "unavailable": Unavailable, "timeout": Timeout,
}


def encode(value: Any) -> Any:
    if isinstance(value, (bytes, bytearray, memoryview)):
        return {"$b": base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, (list, tuple)):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {k: encode(v) for k, v in value.items()}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {"$b"} and isinstance(value["$b"], str):
            return base64.b64decode(value["$b"], validate=True)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def provider_subject(lattice: str, node: str, provider: str) -> str:
    return f"{subjects.PREFIX}.{subjects.token(lattice, 'lattice')}.prov.{subjects.token(node, 'node')}." \
           f"{subjects.token(provider, 'provider')}"


# -- the calling side ------------------------------------------------------------------

def step(coro: Any) -> None:
    """Run a coroutine that normally completes without waiting (nats-py's ``publish``
    only buffers the message and kicks its flusher) right here, on the loop, without a
    task; should it wait after all, a task finishes it. An error raised before it waits
    is raised here."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return

    async def finish(waiting: Any) -> None:
        while True:
            try:
                await (waiting if waiting is not None else asyncio.sleep(0))
            except BaseException:
                pass  # the coroutine sees the outcome when it resumes below
            try:
                waiting = coro.send(None)
            except StopIteration:
                return

    def done(task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.info("remote call: %s", task.exception())

    asyncio.ensure_future(finish(waiting)).add_done_callback(done)


class ReplyInbox:
    """One subscription that takes the replies to every remote call of a node.

    A call publishes its request with a reply subject under this inbox and registers a
    thread-safe future the calling worker waits on; the reply (or the server's
    no-responders status) settles it. Compared with ``nc.request`` per call this saves
    a task, a timer and a loop iteration on the hot path.
    """

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        self.prefix = ""
        self._ids = itertools.count(1)
        self._pending: dict[str, concurrent.futures.Future[bytes]] = {}
        self._sub: Any = None

    async def start(self) -> None:
        self.prefix = self.nc.new_inbox()
        self._sub = await self.nc.subscribe(f"{self.prefix}.*", cb=self._on_reply)

    async def close(self) -> None:
        if self._sub is not None:
            await unsubscribe_all([self._sub])
            self._sub = None
        for answer in list(self._pending.values()):
            answer.cancel()
        self._pending.clear()

    def send(self, subject: str, payload: bytes, answer: concurrent.futures.Future[bytes]) -> str:
        """On the loop: publish ``payload`` with a fresh reply subject; returns its token."""
        token = str(next(self._ids))
        self._pending[token] = answer
        try:
            step(self.nc.publish(subject, payload, reply=f"{self.prefix}.{token}"))
        except Exception as exc:
            del self._pending[token]
            answer.set_exception(Unavailable(f"cannot send to {subject}: {exc or type(exc).__name__}"))
        return token

    def forget(self, token: str) -> None:
        self._pending.pop(token, None)

    async def _on_reply(self, msg: Msg) -> None:
        answer = self._pending.pop(msg.subject.rpartition(".")[2], None)
        if answer is None or answer.done():
            return
        if msg.headers and msg.headers.get("Status") == "503":
            answer.set_exception(nats.errors.NoRespondersError())
        else:
            answer.set_result(bytes(msg.data))

class RemoteProvider:
    """Another node's provider, as the bindings see it. Methods run on worker threads."""

    def __init__(self, nc: NatsClient, loop: asyncio.AbstractEventLoop, lattice: str, caller: str,
                 node: str, provider: str, timeout_s: float, inbox: ReplyInbox) -> None:
        self.nc = nc
        self.inbox = inbox
        self.loop = loop
        self.caller = caller
        self.node = node
        self.name = provider
        self.subject = provider_subject(lattice, node, provider)
        self.timeout_s = timeout_s

    def call(self, link: Link, op: str, args: list[Any], handle: int | None = None,
             timeout_s: float | None = None) -> Any:
        timeout = timeout_s if timeout_s is not None else _link_timeout(link, self.timeout_s)
        payload = json.dumps({"caller": self.caller, "source": link.source, "interface": link.interface,
                              "op": op, "args": encode(args), "handle": handle}, separators=(",", ":")).encode()
        answer: concurrent.futures.Future[bytes] = concurrent.futures.Future()
        token: list[str] = []
        self.loop.call_soon_threadsafe(self._send, payload, answer, token)
        try:
            data = answer.result(timeout)
        except concurrent.futures.TimeoutError:
            answer.cancel()
            if token:
                self.loop.call_soon_threadsafe(self.inbox.forget, token[0])
            raise Timeout(f"provider {self.name} on node {self.node} did not answer within {timeout:g} s") from None
        except nats.errors.NoRespondersError:
            raise Unavailable(f"provider {self.name} on node {self.node} is unreachable (no responders)") from None
        reply = protocol.parse_reply(data)
        if not reply["ok"]:
            err = reply.get("error") or {"code": "other", "message": "no reason given"}
            cls = _ERRORS.get(err["code"], ProviderError)
            exc = cls(err["message"], provider=self.name)
            if cls is ProviderError:
                exc.code = err["code"]
            raise exc
        return decode(reply.get("result"))

    def _send(self, payload: bytes, answer: concurrent.futures.Future[bytes], token: list[str]) -> None:
        """On the loop: send the request; its reply settles ``answer``, which a worker waits on.

        A plain callback, not ``run_coroutine_threadsafe``: this is the hot path of every
        remote call."""
        if answer.cancelled():
            return
        if not self.nc.is_connected:
            answer.set_exception(Unavailable(f"node {self.caller} is not connected to NATS; provider "
                                             f"{self.name} on node {self.node} is unreachable"))
            return
        token.append(self.inbox.send(self.subject, payload, answer))

    # the provider methods the bindings call

    def invoke(self, link: Link, op: str, args: list[Any]) -> Any:
        """Any operation the provider lists in ``operations``; the provider's node checks."""
        result = self.call(link, op, args)
        if isinstance(result, dict) and isinstance(result.get("$h"), int):
            return RemoteResource(self, link, result["$h"], frozenset(result.get("methods") or ()))
        return result

    def open(self, link: Link, identifier: str) -> RemoteBucket:
        result = self.call(link, "open", [identifier])
        return RemoteBucket(self, link, int(result["handle"]))

    def publish(self, link: Link, message: Message) -> None:
        self.call(link, "publish", [message.subject, message.body, message.reply_to])

    def request(self, link: Link, subject: str, body: bytes, timeout_ms: int) -> Message:
        timeout = max(timeout_ms, 1) / 1000.0 + _link_timeout(link, self.timeout_s)
        result = self.call(link, "request", [subject, body, timeout_ms], timeout_s=timeout)
        return Message(subject=result["subject"], body=result["body"], reply_to=result["reply_to"])


def _link_timeout(link: Link, default_s: float) -> float:
    raw = link.config.get("timeout_ms")
    if raw is None:
        return default_s
    try:
        return max(int(raw), 1) / 1000.0
    except ValueError:
        return default_s


class RemoteBucket:
    """A keyvalue bucket open on another node, by handle."""

    def __init__(self, remote: RemoteProvider, link: Link, handle: int) -> None:
        self.remote = remote
        self.link = link
        self.handle = handle
        self.closed = False

    def _call(self, op: str, *args: Any) -> Any:
        return self.remote.call(self.link, f"bucket.{op}", list(args), self.handle)

    def get(self, key: str) -> bytes | None:
        result: bytes | None = self._call("get", key)
        return result

    def set(self, key: str, value: bytes) -> None:
        self._call("set", key, value)

    def delete(self, key: str) -> None:
        self._call("delete", key)

    def exists(self, key: str) -> bool:
        return bool(self._call("exists", key))

    def list_keys(self, cursor: int | None) -> tuple[list[str], int | None]:
        keys, next_cursor = self._call("list_keys", cursor)
        return list(keys), next_cursor

    def increment(self, key: str, delta: int) -> int:
        return int(self._call("increment", key, delta))

    def get_many(self, keys: list[str]) -> list[tuple[str, bytes] | None]:
        return [None if item is None else (item[0], item[1]) for item in self._call("get_many", keys)]

    def set_many(self, items: list[tuple[str, bytes]]) -> None:
        self._call("set_many", [list(i) for i in items])

    def delete_many(self, keys: list[str]) -> None:
        self._call("delete_many", keys)

    def close(self) -> None:
        """Release the handle on the provider's node (best effort: it also expires there)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.remote.call(self.link, "bucket.release", [], self.handle, timeout_s=RELEASE_TIMEOUT_S)
        except ProviderError as exc:
            log.debug("release of bucket handle %d on %s: %s", self.handle, self.remote.node, exc.message)


class RemoteResource:
    """A resource (an I2C bus) held on another node, by handle; its methods are forwarded."""

    def __init__(self, remote: RemoteProvider, link: Link, handle: int, methods: frozenset[str]) -> None:
        self.remote = remote
        self.link = link
        self.handle = handle
        self.methods = methods
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        if name not in self.__dict__.get("methods", frozenset()):
            raise AttributeError(name)

        def forward(*args: Any) -> Any:
            return self.remote.call(self.link, f"handle.{name}", list(args), self.handle)
        return forward

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.remote.call(self.link, "handle.release", [], self.handle, timeout_s=RELEASE_TIMEOUT_S)
        except ProviderError as exc:
            log.debug("release of handle %d on %s: %s", self.handle, self.remote.node, exc.message)


# -- the provider side ------------------------------------------------------------------

@dataclass
class _Handle:
    caller: str
    source: str
    link: Link
    obj: Any
    """A keyvalue bucket, or a resource whose class lists its ``methods``."""

    def close(self) -> None:
        close = getattr(self.obj, "close", None)
        if callable(close):
            try:
                close()
            except ProviderError as exc:
                log.debug("closing a handle of %s/%s: %s", self.caller, self.source, exc.message)


class ProviderServer:
    """Serves this node's providers to actors on other nodes, through the lattice's links."""

    def __init__(self, host: Any, nc: NatsClient) -> None:
        self.host = host
        self.nc = nc
        self.lattice: str = host.lattice
        self.node: str = host.name
        self._handles: dict[int, _Handle] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.sweep_interval_s = SWEEP_INTERVAL_S

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())
        prefix = f"{subjects.PREFIX}.{self.lattice}.prov.{self.node}.*"
        self._subs.append(await self.nc.subscribe(prefix, cb=self._on_request))
        self._subs.append(await self.nc.subscribe(subjects.events_of_kind(self.lattice, "actor_stopped"),
                                                  cb=self._on_actor_stopped))
        self._subs.append(await self.nc.subscribe(subjects.events_of_kind(self.lattice, "node_stopped"),
                                                  cb=self._on_node_stopped))
        await self.nc.flush()

    async def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
        await unsubscribe_all(self._subs)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        with self._lock:
            closing = list(self._handles.values())
            self._handles.clear()
        for entry in closing:
            entry.close()

    @property
    def handles(self) -> int:
        return len(self._handles)

    async def _on_request(self, msg: Msg) -> None:
        try:
            req = protocol.parse_request(msg.data)
        except protocol.BadRequest as exc:
            if msg.reply:
                await self.nc.publish(msg.reply, protocol.error(exc.code, exc.message))
            return
        if self._is_inline(req):  # quick: answer in this callback, in order
            try:
                reply = protocol.ok(encode(self._inline(req)))
            except ProviderError as exc:
                reply = protocol.error(exc.code, exc.message)
            except (ValueError, TypeError, KeyError, IndexError) as exc:
                reply = protocol.error("bad-request", f"malformed provider call: {exc}")
            if msg.reply:
                await self.nc.publish(msg.reply, reply)
            return
        task = asyncio.ensure_future(self._answer(msg, req))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _is_inline(self, req: dict[str, Any]) -> bool:
        """A quick read of a bucket whose contents are in this process (not a proxy to
        yet another node): answered on the loop. ``_bucket_call`` checks the rest."""
        handle = req.get("handle")
        entry = self._handles.get(handle) if req.get("op") in INLINE_OPS and type(handle) is int else None
        return entry is not None and not hasattr(entry.obj, "remote")

    def _inline(self, req: dict[str, Any]) -> Any:
        args = decode(req.get("args") or [])
        if not isinstance(args, list):
            raise protocol.BadRequest("must be a list", field="args")
        return self._bucket_call(req["caller"], req["source"], str(req["op"]).removeprefix("bucket."), args,
                                 req["handle"])

    async def _answer(self, msg: Msg, req: dict[str, Any]) -> None:
        provider_name = msg.subject.rsplit(".", 1)[-1]
        try:
            result = await asyncio.to_thread(self._call, provider_name, req)
            reply = protocol.ok(encode(result))
        except ProviderError as exc:
            reply = protocol.error(exc.code, exc.message)
        except protocol.BadRequest as exc:
            reply = protocol.error(exc.code, exc.message)
        except (ValueError, TypeError, KeyError) as exc:
            reply = protocol.error("bad-request", f"malformed provider call: {exc}")
        if msg.reply:
            await self.nc.publish(msg.reply, reply)

    def _call(self, provider_name: str, req: dict[str, Any]) -> Any:
        f = protocol.Fields(req, {"caller", "source", "interface", "op", "args", "handle"})
        caller = f.string("caller", pattern=protocol.NAME)
        source = f.string("source", pattern=protocol.NAME)
        interface = f.string("interface")
        op = f.string("op")
        args = decode(req.get("args") or [])
        if not isinstance(args, list):
            raise protocol.BadRequest("must be a list", field="args")
        if op.startswith("bucket."):
            return self._bucket_call(caller, source, op.removeprefix("bucket."), args, req.get("handle"))
        if op.startswith("handle."):
            return self._handle_call(caller, source, op.removeprefix("handle."), args, req.get("handle"))
        provider = self.host.providers.get(provider_name)
        if provider is None:
            raise Unavailable(f"no provider {provider_name!r} runs on node {self.node}")
        link = self.host.links.get(source, interface)
        if link is None or link.target != f"{self.node}/{provider_name}":
            raise Denied(f"the lattice has no link from actor {source!r}'s {interface} to "
                         f"{self.node}/{provider_name}")
        plain = link.as_link()
        if interface == "wasi:keyvalue/store" and op == "open":
            bucket = provider.open(plain, str(args[0]))
            return {"handle": self._keep(_Handle(caller, source, plain, bucket))}
        if interface == "wasmcloud:messaging/consumer" and op == "publish":
            subject, body, reply_to = args
            self._check_size(body)
            provider.publish(plain, Message(subject=str(subject), body=bytes(body), reply_to=reply_to))
            return None
        if interface == "wasmcloud:messaging/consumer" and op == "request":
            subject, body, timeout_ms = args
            self._check_size(body)
            reply = provider.request(plain, str(subject), bytes(body), int(timeout_ms))
            return {"subject": reply.subject, "body": reply.body, "reply_to": reply.reply_to}
        if op in provider.operations.get(interface, frozenset()):
            self._check_size(*args)
            result = provider.invoke(plain, op, args)
            methods = getattr(result, "methods", None)
            if isinstance(methods, frozenset):
                return {"$h": self._keep(_Handle(caller, source, plain, result)), "methods": sorted(methods)}
            return result
        raise protocol.BadRequest(f"{interface} has no remote operation {op!r}")

    def _keep(self, entry: _Handle) -> int:
        handle = next(self._ids)
        with self._lock:
            self._handles[handle] = entry
        return handle

    def _take(self, caller: str, source: str, handle: Any, what: str, *, release: bool) -> _Handle:
        """The open handle ``handle`` of ``source`` on node ``caller`` (forgotten if ``release``)."""
        if not isinstance(handle, int):
            raise protocol.BadRequest("must be an integer", field="handle")
        with self._lock:
            entry = self._handles.get(handle)
            if entry is None or entry.caller != caller or entry.source != source:
                raise NotFound(f"{what} {handle} is not open for actor {source!r} of node {caller}")
            if release:
                del self._handles[handle]
        return entry

    def _handle_call(self, caller: str, source: str, method: str, args: list[Any], handle: Any) -> Any:
        entry = self._take(caller, source, handle, "handle", release=method == "release")
        if method == "release":
            entry.close()
            return None
        self._check_size(*args)
        return invoke_method(entry.obj, method, args)

    def _check_size(self, *values: Any) -> None:
        limit = self.host.config.max_payload_bytes
        size = sum(len(v) for v in values if isinstance(v, bytes))
        if size > limit:
            raise PayloadTooLarge(size, limit)

    def _bucket_call(self, caller: str, source: str, method: str, args: list[Any], handle: Any) -> Any:
        entry = self._take(caller, source, handle, "bucket handle", release=method == "release")
        if method == "release":
            entry.close()
            return None
        if method not in BUCKET_METHODS:
            raise protocol.BadRequest(f"buckets have no operation {method!r}")
        if method == "set":
            self._check_size(args[1])
        if method == "set_many":
            args = [[(str(k), bytes(v)) for k, v in args[0]]]
        if method == "list_keys":
            keys, cursor = entry.obj.list_keys(args[0])
            return [keys, cursor]
        return getattr(entry.obj, method)(*args)

    def release(self, caller: str, source: str | None = None) -> int:
        with self._lock:
            gone = [h for h, e in self._handles.items()
                    if e.caller == caller and (source is None or e.source == source)]
            closing = [self._handles.pop(h) for h in gone]
        for entry in closing:
            entry.close()
        if gone:
            log.info("released %d bucket handle(s) of %s%s", len(gone), caller, f"/{source}" if source else "")
        return len(gone)

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval_s)
            try:
                await self.sweep()
            except Exception:
                log.exception("sweeping bucket handles failed")

    async def sweep(self, window_s: float = 0.5) -> int:
        """Release the handles of caller nodes that no longer answer a ping."""
        callers = {e.caller for e in list(self._handles.values())}
        if not callers or not self.nc.is_connected:
            return 0
        from drupelet.node.lattice.client import LatticeClient

        alive = {n["name"] for n in await LatticeClient(self.nc, self.lattice).ping(window_s)}
        return sum(self.release(caller) for caller in callers - alive)

    async def _on_actor_stopped(self, msg: Msg) -> None:
        caller = msg.subject.split(".")[-2]
        try:
            actor = json.loads(msg.data)["data"]["actor"]
        except (ValueError, KeyError, TypeError):
            return
        self.release(caller, actor)
        if caller != self.node:  # this node's own stops are handled where they happen
            await self.host.actor_stopped(actor, caller)

    async def _on_node_stopped(self, msg: Msg) -> None:
        self.release(msg.subject.split(".")[-2])
