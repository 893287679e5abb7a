"""Capability calls across the lattice, the provider's side.

:class:`ProviderServer` serves this node's providers to actors on other nodes: it checks
that the lattice has the caller's link, runs the call on the provider in a worker thread
(quick reads of a bucket held here are answered on the loop), and answers every request
with the reply envelope, a malformed one included. Handles of resources opened for
callers are kept here and released when the guest drops them, when the actor stops on
its node, or when its node stops or stops answering pings.

Who calls is what NATS says, never what a payload says: the calling node is the last token
of the call's subject (``drupelet.<lattice>.prov.<node>.<provider>.<caller>``), and a node's
credentials let it publish only calls that name itself. In an authenticated lattice
(``placed``) a call for actor ``source`` is served only when the lattice state, which only
admins write, places ``source`` on the calling node (``actor.<caller>.<source>``). Events
about other nodes (``actor_stopped``, ``node_stopped``) are acted on only when their
CloudEvents ``source`` names the node of their subject, the one NATS let publish them.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.providers.base import (Denied, Link, NotFound, PayloadTooLarge, ProviderError, Unavailable, handling,
                                     invoke_method)

from drupelet.node.host.api import HostApi
from drupelet.node.lattice import protocol, subjects
from drupelet.node.lattice.connect import synced, unsubscribe_all
from drupelet.node.lattice.errors import BadRequest
from drupelet.node.lattice.protocol import decode, encode
from drupelet.node.lattice.requests import ProviderCall, parse_as

log = logging.getLogger(__name__)

_FAST_FIELDS = frozenset({"source", "interface", "op", "args", "handle", "reply"})
"""The fields of a provider call the hot path reads itself (anything else goes through ``ProviderCall``)."""

Placement = Callable[[str, str], bool]
"""Whether the lattice state places actor ``source`` on node ``caller``: ``placed(caller, source)``."""


def _check_caller(call: ProviderCall, caller: str) -> None:
    """A call whose payload names another caller than its subject is refused: the subject is
    what NATS vouches for."""
    if call.caller is not None and call.caller != caller:
        raise Denied(f"the call says it comes from node {call.caller!r} but comes from node {caller!r}")

SWEEP_INTERVAL_S = 30.0
"""How often a provider's node checks that the callers holding handles still answer pings."""

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

    def __init__(self, host: HostApi, nc: NatsClient, *, placed: Placement | None = None) -> None:
        self.host = host
        self.placed = placed
        """None: serve any node's calls for any of its actors (an open lattice); else whether
        the lattice state places an actor on a node (``placed(node, actor)``)."""
        self.nc = nc
        self.lattice: str = host.lattice
        self.node: str = host.name
        self._handles: dict[int, _Handle] = {}
        self._users: set[tuple[str, str]] = set()
        """(node, actor) pairs whose calls this node's providers have served: what an
        ``actor_stopped`` event from that node may release here."""
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self.sweep_interval_s = SWEEP_INTERVAL_S

    async def start(self) -> None:
        self._sweeper = asyncio.create_task(self._sweep_forever())
        self._subs.append(await self.nc.subscribe(subjects.provider_calls_all(self.lattice, self.node),
                                                  cb=self._on_request))
        self._subs.append(await self.nc.subscribe(subjects.events_of_kind(self.lattice, "actor_stopped"),
                                                  cb=self._on_actor_stopped))
        self._subs.append(await self.nc.subscribe(subjects.events_of_kind(self.lattice, "node_stopped"),
                                                  cb=self._on_node_stopped))
        await synced(self.nc)

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
        except BadRequest as exc:
            await self._send(msg, protocol.error(exc.code, exc.message))
            return
        head, _, caller = msg.subject.rpartition(".")
        provider_name = head.rpartition(".")[2]
        if self._is_inline(req):  # quick: answer in this callback, in order
            await self._send(msg, self._reply(lambda: self._inline(req, caller), provider_name))
            return
        task = asyncio.ensure_future(self._answer(msg, req, provider_name, caller))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _is_inline(self, req: dict[str, Any]) -> bool:
        """A quick read of a resource whose contents are in this process (its class lists
        the method in ``quick_methods``, as a keyvalue bucket does for its reads): answered
        on the loop. ``_handle_call`` checks the rest."""
        handle, op = req.get("handle"), req.get("op")
        if type(handle) is not int or type(op) is not str or not op.startswith("handle."):
            return False
        entry = self._handles.get(handle)
        return entry is not None and op.removeprefix("handle.") in getattr(entry.obj, "quick_methods", ())

    def _inline(self, req: dict[str, Any], caller: str) -> Any:
        """The hot path of every remote read: the fields are checked here, where the
        declared ``ProviderCall`` would cost more than the read; anything unusual goes
        through the declaration."""
        source, args = req.get("source"), req.get("args", [])
        if not (req.keys() <= _FAST_FIELDS and type(source) is str and type(args) is list
                and type(req.get("interface")) is str):
            call = parse_as(ProviderCall, req)
            _check_caller(call, caller)
            source, args = call.source, call.args
        return self._handle_call(caller, source, str(req["op"]).removeprefix("handle."), decode(args), req["handle"])

    async def _answer(self, msg: Msg, req: dict[str, Any], provider_name: str, caller: str) -> None:
        reply = await asyncio.to_thread(self._reply, lambda: self._call(provider_name, req, caller), provider_name)
        await self._send(msg, reply)

    def _reply(self, run: Any, provider_name: str) -> bytes:
        """Run one call and make its reply envelope, whatever happens: a provider's error
        is its code, malformed input is ``bad-request``, a bug is ``internal`` (logged)."""
        try:
            return protocol.ok(encode(run()))
        except ProviderError as exc:
            return protocol.error(exc.code, exc.message)
        except BadRequest as exc:
            return protocol.error(exc.code, exc.message)
        except (ValueError, TypeError, KeyError, IndexError, AttributeError, RecursionError, OverflowError,
                MemoryError) as exc:
            return protocol.error("bad-request", f"malformed provider call: {type(exc).__name__}: "
                                                 f"{str(exc)[:200] or 'bad arguments'}")
        except Exception as exc:
            log.exception("provider %s: a call failed", provider_name)
            return protocol.error("internal", f"provider {provider_name} failed: {type(exc).__name__}")

    async def _send(self, msg: Msg, reply: bytes) -> None:
        if not msg.reply:
            return
        try:
            await self.nc.publish(msg.reply, reply)
        except Exception as exc:
            log.warning("cannot send a provider call's reply: %s", exc)

    def _call(self, provider_name: str, req: dict[str, Any], caller: str) -> Any:
        call = parse_as(ProviderCall, req)
        _check_caller(call, caller)
        source, interface, op = call.source, call.interface, call.op
        args = decode(call.args)
        if op.startswith("handle."):
            return self._handle_call(caller, source, op.removeprefix("handle."), args, call.handle)
        provider = self.host.provider(provider_name)
        if provider is None:
            raise Unavailable(f"no provider {provider_name!r} runs on node {self.node}")
        link = self.host.link_for(source, interface)
        if link is None or link.target != f"{self.node}/{provider_name}":
            raise Denied(f"the lattice has no link from actor {source!r}'s {interface} to "
                         f"{self.node}/{provider_name}")
        if self.placed is not None and not self.placed(caller, source):
            raise Denied(f"node {caller} calls for actor {source!r}, which the lattice state does not place on it "
                         f"(no actor.{caller}.{source}): an actor calls other nodes' providers only from a node an "
                         "admin started it on")
        if op not in provider.operations.get(interface, frozenset()):
            raise BadRequest(f"{interface} has no remote operation {op!r}")
        plain = link.as_link()
        self._check_size(*args)
        # the calling actor may answer the message it handles: a reply inbox only (what a node may publish to
        # itself), never a subject the caller's word would open on this node's credentials
        reply = call.reply if call.reply is not None and call.reply.startswith(subjects.INBOX_PREFIX) else None
        with handling(reply):
            result = provider.invoke(plain, op, args)
        self._users.add((caller, source))
        methods = getattr(result, "methods", None)
        if isinstance(methods, frozenset):
            return {"$h": self._keep(_Handle(caller, source, plain, result)), "methods": sorted(methods)}
        return result

    def _keep(self, entry: _Handle) -> int:
        handle = next(self._ids)
        with self._lock:
            self._handles[handle] = entry
        return handle

    def _take(self, caller: str, source: str, handle: Any, what: str, *, release: bool) -> _Handle:
        """The open handle ``handle`` of ``source`` on node ``caller`` (forgotten if ``release``)."""
        if not isinstance(handle, int):
            raise BadRequest("must be an integer", field="handle")
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
        """The bytes among the arguments, nested ones too (a batch's values), against the limit."""
        limit = self.host.max_payload_bytes
        size = _byte_count(values)
        if size > limit:
            raise PayloadTooLarge(size, limit)

    def release(self, caller: str, source: str | None = None) -> int:
        with self._lock:
            gone = [h for h, e in self._handles.items()
                    if e.caller == caller and (source is None or e.source == source)]
            closing = [self._handles.pop(h) for h in gone]
        for entry in closing:
            entry.close()
        if gone:
            log.info("released %d handle(s) of %s%s", len(gone), caller, f"/{source}" if source else "")
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

    def _event(self, msg: Msg) -> tuple[str, dict[str, Any]] | None:
        """The node an event comes from and its ``data``, when the event names the node of
        its subject (the one NATS let publish it); else None, and the event is logged."""
        node = subjects.node_of_event(msg.subject)
        try:
            event = json.loads(msg.data)
            source, data = event["source"], event["data"]
        except (ValueError, KeyError, TypeError):
            log.debug("ignoring a malformed event on %s", msg.subject)
            return None
        if source != protocol.event_source(self.lattice, node) or not isinstance(data, dict):
            log.warning("ignoring an event on %s that says it comes from %r: an event counts only from the node "
                        "of its subject", msg.subject, source)
            return None
        return node, data

    async def _on_actor_stopped(self, msg: Msg) -> None:
        found = self._event(msg)
        if found is None:
            return
        caller, data = found
        actor = data.get("actor")
        if not isinstance(actor, str):
            return
        self.release(caller, actor)
        if caller == self.node:  # this node's own stops are handled where they happen
            return
        if self.placed is not None and (caller, actor) not in self._users:
            # in an authenticated lattice a node speaks for the actors it ran: one whose calls
            # this node never served from there holds nothing here to release
            log.info("ignoring actor_stopped of %s from node %s: it never called this node's providers from there",
                     actor, caller)
            return
        self._users.discard((caller, actor))
        await self.host.actor_stopped(actor, caller)

    async def _on_node_stopped(self, msg: Msg) -> None:
        found = self._event(msg)
        if found is not None:
            self.release(found[0])


def _byte_count(value: Any, depth: int = 0) -> int:
    if isinstance(value, bytes):
        return len(value)
    if isinstance(value, (list, tuple)) and depth < 8:
        return sum(_byte_count(v, depth + 1) for v in value)
    return 0
