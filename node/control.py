"""The NATS control interface: a thin adapter from requests to the host API.

Each request is a JSON object on a subject built by :mod:`drupelet.node.subjects`; each
reply is the envelope of :mod:`drupelet.node.protocol`. A malformed or unknown request
gets an error reply and changes nothing. Node events go out as CloudEvents, with a
heartbeat carrying the inventory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from . import protocol, subjects
from .errors import DrupeletError
from .host import Host
from .protocol import NAME, BadRequest, Fields, UnknownRequest

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 30.0

Handler = Callable[[dict[str, Any]], Awaitable[Any]]


class ControlPlane:
    """Serves one node's control subjects and publishes its events."""

    def __init__(self, host: Host, nc: NatsClient, *, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 artifacts: Any = None) -> None:
        self.host = host
        self.nc = nc
        self.lattice = host.lattice
        self.node = host.name
        self.heartbeat_interval_s = heartbeat_interval_s
        self.artifacts = artifacts
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        self.node_verbs: dict[str, Handler] = {
            "inventory": self._inventory,
            "actor.start": self._actor_start,
            "actor.stop": self._actor_stop,
            "actor.scale": self._actor_scale,
            "actor.list": self._actor_list,
            "provider.start": self._provider_start,
            "provider.stop": self._provider_stop,
            "labels.put": self._labels_put,
            "labels.del": self._labels_del,
            "link.list": self._link_list,
        }

    async def start(self) -> None:
        self.host.on_event(self._publish_event)
        self._subs.append(await self.nc.subscribe(subjects.ping(self.lattice), cb=self._on_ping))
        self._subs.append(await self.nc.subscribe(subjects.node_control_all(self.lattice, self.node),
                                                  cb=self._on_node_request))
        await self.nc.flush()
        self._heartbeat = asyncio.create_task(self._heartbeats())

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
        if self.nc.is_connected:
            try:
                await self.nc.publish(subjects.events(self.lattice, self.node, "node_stopped"),
                                      protocol.event(self.lattice, self.node, "node_stopped", {"node": self.node}))
            except Exception as exc:
                log.debug("node_stopped event not sent: %s", exc)
        for sub in self._subs:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe: %s", exc)
        self._subs.clear()
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- transport ------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_ping(self, msg: Msg) -> None:
        if msg.reply:
            await self.nc.publish(msg.reply, protocol.ok(self.host.summary()))

    async def _on_node_request(self, msg: Msg) -> None:
        prefix = subjects.node_control(self.lattice, self.node, "")
        verb = msg.subject[len(prefix):]
        self._spawn(self._answer(msg, self.node_verbs.get(verb), verb))

    async def _answer(self, msg: Msg, handler: Handler | None, verb: str) -> None:
        try:
            if handler is None:
                raise UnknownRequest(f"unknown request {verb!r} (known: {', '.join(sorted(self.node_verbs))})")
            result = await handler(protocol.parse_request(msg.data))
            reply = protocol.ok(result)
        except DrupeletError as exc:
            log.info("control %s refused: %s", verb, exc.message)
            reply = protocol.error(exc.code, exc.message)
        except Exception as exc:  # a bug: answer, log the trace, keep serving
            log.exception("control %s failed", verb)
            reply = protocol.error("internal", f"{type(exc).__name__}: {exc}")
        if msg.reply:
            try:
                await self.nc.publish(msg.reply, reply)
            except Exception as exc:
                log.warning("cannot send the reply to %s: %s", verb, exc)

    # -- events ---------------------------------------------------------------------

    def _publish_event(self, kind: str, data: dict[str, Any]) -> None:
        if self._closed or not self.nc.is_connected:
            return
        payload = protocol.event(self.lattice, self.node, kind, data)
        self._spawn(self.nc.publish(subjects.events(self.lattice, self.node, kind), payload))

    async def _heartbeats(self) -> None:
        while True:
            await asyncio.sleep(self.heartbeat_interval_s)
            self._publish_event("heartbeat", self.host.inventory())

    # -- node requests --------------------------------------------------------------

    async def _inventory(self, req: dict[str, Any]) -> Any:
        Fields(req, set())
        return self.host.inventory()

    async def _actor_list(self, req: dict[str, Any]) -> Any:
        Fields(req, set())
        return self.host.list_actors()

    async def _actor_start(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"name", "digest", "reference", "instances", "config"})
        name = f.string("name", pattern=NAME)
        digest = f.string("digest", required=False, pattern=protocol.DIGEST)
        reference = f.string("reference", required=False)
        if bool(digest) == bool(reference):
            raise BadRequest("give exactly one of digest or reference")
        instances = f.integer("instances", default=1, minimum=1, maximum=1000)
        config = f.strings("config")
        wasm = await self._artifact(digest or reference)
        return await self.host.start_actor(name, wasm, instances=instances, config=config,
                                           source=digest or reference)

    async def _artifact(self, ref: str) -> bytes:
        if self.artifacts is None:
            raise BadRequest("this node has no artifact store (JetStream is not available)")
        from .artifacts import resolve_ref

        return await resolve_ref(self.artifacts, ref)

    async def _actor_stop(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"name"})
        await self.host.stop_actor(f.string("name", pattern=NAME))
        return None

    async def _actor_scale(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"name", "instances"})
        if "instances" not in req:
            raise BadRequest("is required", field="instances")
        return await self.host.scale_actor(f.string("name", pattern=NAME),
                                           f.integer("instances", default=1, minimum=1, maximum=1000))

    async def _provider_start(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"name"})
        return await self.host.start_provider(f.string("name", pattern=NAME))

    async def _provider_stop(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"name"})
        await self.host.stop_provider(f.string("name", pattern=NAME))
        return None

    async def _labels_put(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"labels"})
        return self.host.put_labels(f.strings("labels"))

    async def _labels_del(self, req: dict[str, Any]) -> Any:
        f = Fields(req, {"keys"})
        return self.host.del_labels(f.string_list("keys"))

    async def _link_list(self, req: dict[str, Any]) -> Any:
        Fields(req, set())
        return self.host.list_links()
