"""The NATS control interface: a thin adapter from requests to the host API.

Each request is a JSON object on a subject built by :mod:`drupelet.node.lattice.subjects`,
whose fields :mod:`drupelet.node.lattice.requests` declares per verb; each handler takes
that verb's parsed ``Struct``. Each reply is the envelope of
:mod:`drupelet.node.lattice.protocol`. A malformed or unknown request gets an error reply
and changes nothing. Node events go out as CloudEvents, with a
heartbeat carrying the inventory.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Generic

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.node.errors import DrupeletError
from drupelet.node.host.api import HostApi
from drupelet.node.host.errors import ActorNotFound
from drupelet.node.lattice import protocol, requests, subjects
from drupelet.node.lattice.artifacts import ArtifactStore, resolve_ref
from drupelet.node.lattice.connect import synced, unsubscribe_all
from drupelet.node.lattice.desired import DesiredState
from drupelet.node.lattice.errors import BadRequest, Starting, StateUnavailable, UnknownRequest
from drupelet.node.lattice.requests import (ActorList, ActorScale, ActorStart, ActorStop, ConfigGet, DisplaySnapshot,
                                            GpioRead, GpioSimulate, GpioWrite, Inventory, LabelsDel, LabelsPut,
                                            LinkList, LogsRecent, ProviderStart, ProviderStop, R, Request,
                                            RevocationList)
from drupelet.node.lattice.state import LatticeState, labels_key

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL_S = 30.0
HEALTH_CHECK_INTERVAL_S = 5.0
STARTING_WAIT_S = 2.0
"""How long a request that comes while the node restores its state waits for it, before
the reply says the node is starting."""
QUIET_CODES = frozenset({"bad-request", "unknown-request"})
"""Refusals of malformed requests, logged at debug: a flood of them must not flood the journal."""

Handler = Callable[[Request], Awaitable[Any]]
NatsInfo = Callable[[], dict[str, Any]]


class Route(Generic[R]):
    """A handler as the verb tables hold it: called with what :func:`requests.parse`
    made of the verb's body, which is the ``request`` class this handler takes."""

    def __init__(self, request: type[R], handler: Callable[[R], Awaitable[Any]]) -> None:
        self.request = request
        self.handler = handler

    async def __call__(self, req: Request) -> Any:
        if not isinstance(req, self.request):  # requests.REQUESTS and the verb table disagree: a bug
            raise TypeError(f"{self.handler.__name__} takes {self.request.__name__}, not {type(req).__name__}")
        return await self.handler(req)


class ControlPlane:
    """Serves one node's control subjects and publishes its events."""

    def __init__(self, host: HostApi, nc: NatsClient, *, state: LatticeState | None = None,
                 desired: DesiredState | None = None, artifacts: ArtifactStore | None = None,
                 nats_info: NatsInfo | None = None, heartbeat_interval_s: float = HEARTBEAT_INTERVAL_S,
                 health_check_interval_s: float = HEALTH_CHECK_INTERVAL_S) -> None:
        self.host = host
        self.nc = nc
        self.lattice = host.lattice
        self.node = host.name
        self.heartbeat_interval_s = heartbeat_interval_s
        self.health_check_interval_s = health_check_interval_s
        self.state = state
        self.desired = desired
        self.artifacts = artifacts
        self.nats_info = nats_info or (lambda: {})
        self._labels_lock = asyncio.Lock()  # labels.put and labels.del are read-modify-write
        self._subs: list[Any] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._heartbeat: asyncio.Task[None] | None = None
        self._closed = False
        self._ready = asyncio.Event()
        """Set once the node has applied its state (:meth:`mark_ready`): requests before
        then would see a node without its actors and links."""
        self.node_verbs: dict[str, Handler] = {
            "inventory": Route(Inventory, self._inventory),
            "actor.start": Route(ActorStart, self._actor_start),
            "actor.stop": Route(ActorStop, self._actor_stop),
            "actor.scale": Route(ActorScale, self._actor_scale),
            "actor.list": Route(ActorList, self._actor_list),
            "provider.start": Route(ProviderStart, self._provider_start),
            "provider.stop": Route(ProviderStop, self._provider_stop),
            "labels.put": Route(LabelsPut, self._labels_put),
            "labels.del": Route(LabelsDel, self._labels_del),
            "link.list": Route(LinkList, self._link_list),
            "display.snapshot": Route(DisplaySnapshot, self._display_snapshot),
            "gpio.simulate": Route(GpioSimulate, self._gpio_simulate),
            "gpio.read": Route(GpioRead, self._gpio_read),
            "gpio.write": Route(GpioWrite, self._gpio_write),
            "logs.recent": Route(LogsRecent, self._logs_recent),
        }
        # the lattice's writes (link.put, config.put, …) are an admin's client's, straight into
        # the lattice state (drupelet.node.lattice.admin): a node answers the reads only
        self.lattice_verbs: dict[str, Handler] = {
            "link.list": Route(LinkList, self._lattice_link_list),
            "config.get": Route(ConfigGet, self._config_get),
            "revocation.list": Route(RevocationList, self._revocation_list),
        }

    async def start(self) -> None:
        self.host.on_event(self._publish_event)
        self._subs.append(await self.nc.subscribe(subjects.ping(self.lattice), cb=self._on_ping))
        self._subs.append(await self.nc.subscribe(subjects.node_control_all(self.lattice, self.node),
                                                  cb=self._on_node_request))
        for verb, handler in self.lattice_verbs.items():
            self._subs.append(await self.nc.subscribe(subjects.lattice_control(self.lattice, verb),
                                                      queue=subjects.CONTROL_QUEUE,
                                                      cb=self._lattice_callback(verb, handler)))
        await synced(self.nc)
        self._heartbeat = asyncio.create_task(self._heartbeats())

    def mark_ready(self) -> None:
        """The node's state is restored: answer requests from now on."""
        self._ready.set()

    @property
    def starting(self) -> bool:
        return not self._ready.is_set()

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
        await unsubscribe_all(self._subs)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    # -- transport ------------------------------------------------------------------

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _on_ping(self, msg: Msg) -> None:
        if msg.reply:
            summary = self.host.summary()
            if self.starting:  # answered at once, so the node is seen; its counts are not final yet
                summary["starting"] = True
            await self._publish_reply(msg.reply, protocol.ok(summary), "ping")

    async def _on_node_request(self, msg: Msg) -> None:
        prefix = subjects.node_control(self.lattice, self.node, "")
        verb = msg.subject[len(prefix):]
        self._spawn(self._answer(msg, self.node_verbs.get(verb), verb))

    def _lattice_callback(self, verb: str, handler: Handler) -> Callable[[Msg], Awaitable[None]]:
        async def on_request(msg: Msg) -> None:
            self._spawn(self._answer(msg, handler, verb))

        return on_request

    async def _answer(self, msg: Msg, handler: Handler | None, verb: str) -> None:
        try:
            if handler is None:
                raise UnknownRequest(f"unknown request {verb!r} (known: {', '.join(sorted(self.node_verbs))})")
            request = requests.parse(verb, protocol.parse_request(msg.data))
            await self._wait_ready()
            reply = protocol.ok(await handler(request))
        except DrupeletError as exc:
            log.log(logging.DEBUG if exc.code in QUIET_CODES else logging.INFO, "control %s refused: %s", verb,
                    exc.message)
            reply = protocol.error(exc.code, exc.message)
        except Exception as exc:  # a bug: answer, log the trace, keep serving
            log.exception("control %s failed", verb)
            reply = protocol.error("internal", f"{type(exc).__name__}: {exc}")
        if msg.reply:
            await self._publish_reply(msg.reply, reply, verb)

    async def _wait_ready(self) -> None:
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), STARTING_WAIT_S)
        except asyncio.TimeoutError:
            raise Starting(f"node {self.node} is starting: it is restoring its actors and links from its state; "
                           "try again in a moment") from None

    async def _publish_reply(self, reply_to: str, reply: bytes, verb: str) -> None:
        """Send a reply; one past the server's max payload is replaced by an error that says so."""
        limit = self.nc.max_payload
        if limit and len(reply) > limit:
            log.warning("the reply to %s is %d bytes, past the NATS server's max_payload of %d", verb, len(reply),
                        limit)
            reply = protocol.error("reply-too-large", f"the reply to {verb} on node {self.node} would be "
                                                      f"{len(reply)} bytes, past the NATS server's max_payload of "
                                                      f"{limit}: ask for less (an actor, fewer lines) or raise the "
                                                      "server's max_payload")
        try:
            await self.nc.publish(reply_to, reply)
        except Exception as exc:
            log.warning("cannot send the reply to %s: %s", verb, exc)

    # -- events ---------------------------------------------------------------------

    def _publish_event(self, kind: str, data: dict[str, Any]) -> None:
        if self._closed or not self.nc.is_connected:
            return
        payload = protocol.event(self.lattice, self.node, kind, data)
        limit = self.nc.max_payload
        if limit and len(payload) > limit:  # say so rather than go dark
            log.warning("the %s event is %d bytes, past the NATS server's max_payload of %d; sending its size "
                        "instead", kind, len(payload), limit)
            payload = protocol.event(self.lattice, self.node, kind, {"node": self.node, "too_large_bytes": len(payload)})
        self._spawn(self._publish_quietly(subjects.events(self.lattice, self.node, kind), payload))

    async def _publish_quietly(self, subject: str, payload: bytes) -> None:
        try:
            await self.nc.publish(subject, payload)
        except Exception as exc:  # the connection went: events are not queued for later
            log.debug("event on %s not sent: %s", subject, exc)

    async def _heartbeats(self) -> None:
        """Heartbeats with the inventory, and provider health changes as they are seen.
        A failure while checking (a provider's bug) is logged; the heartbeats go on."""
        loop = asyncio.get_running_loop()
        next_beat = loop.time() + self.heartbeat_interval_s
        health = self.host.provider_health()
        while True:
            await asyncio.sleep(min(self.health_check_interval_s, max(0.0, next_beat - loop.time())))
            try:
                now = self.host.provider_health()
                for name, status in now.items():
                    before = health.get(name)
                    if before is not None and before != status:
                        self._publish_event("provider_health_changed", {
                            "provider": name, "health": status[0], "message": status[1], "previous": before[0]})
                health = now
                if loop.time() >= next_beat:
                    next_beat = loop.time() + self.heartbeat_interval_s
                    self._publish_event("heartbeat", self.inventory())
            except Exception:
                log.exception("heartbeat failed; trying again at the next one")

    def inventory(self) -> dict[str, Any]:
        return self.host.inventory() | {"nats": self.nats_info()}

    # -- node requests --------------------------------------------------------------

    async def _inventory(self, req: Inventory) -> Any:
        return self.inventory()

    async def _actor_list(self, req: ActorList) -> Any:
        return self.host.list_actors()

    def _state(self) -> LatticeState:
        if self.state is None:
            raise StateUnavailable("this node keeps no lattice state")
        return self.state

    def _actor_lock(self, name: str) -> asyncio.Lock:
        return self.desired.locked(name) if self.desired is not None else asyncio.Lock()

    async def _actor_start(self, req: ActorStart) -> Any:
        """Start the actor now. An admin's client records it in the lattice state
        (``actor.<node>.<name>``, :mod:`drupelet.node.lattice.admin`), and this node follows
        the record from then on (and restores the actor after a restart)."""
        name, instances, config = req.name, req.instances, dict(req.config)
        digest, reference = req.digest or "", req.reference or ""
        wasm = await self._artifact(digest or reference)
        async with self._actor_lock(name):
            return await self.host.start_actor(name, wasm, instances=instances, config=config,
                                               source=digest or reference)

    async def _artifact(self, ref: str) -> bytes:
        if self.artifacts is None:
            raise BadRequest("this node has no artifact store (JetStream is not available)")
        return await resolve_ref(self.artifacts, ref)

    async def _actor_stop(self, req: ActorStop) -> Any:
        name = req.name
        async with self._actor_lock(name):
            if not self.host.has_actor(name):  # not running here: actor-not-found
                raise ActorNotFound(f"no actor named {name!r} runs on node {self.node}", actor=name)
            await self.host.stop_actor(name)
        return None

    async def _actor_scale(self, req: ActorScale) -> Any:
        # an admin's client changed the actor's record before asking: apply the state up to
        # now first, so an older record the watch brings later cannot undo this scale
        if self.state is not None:
            await self.state.catch_up()
        async with self._actor_lock(req.name):
            return await self.host.scale_actor(req.name, req.instances)

    async def _provider_start(self, req: ProviderStart) -> Any:
        return await self.host.start_provider(req.name)

    async def _provider_stop(self, req: ProviderStop) -> Any:
        await self.host.stop_provider(req.name)
        return None

    async def _display_snapshot(self, req: DisplaySnapshot) -> Any:
        png = await self.host.display_snapshot(req.provider)
        return {"format": "png", "png": base64.b64encode(png).decode("ascii")}

    async def _gpio_simulate(self, req: GpioSimulate) -> Any:
        await self.host.gpio_simulate(req.pin, req.level, req.provider)
        return None

    async def _gpio_read(self, req: GpioRead) -> Any:
        return await self.host.gpio_read(req.pin, req.provider)

    async def _gpio_write(self, req: GpioWrite) -> Any:
        await self.host.gpio_write(req.pin, req.level, req.provider)
        return None

    async def _logs_recent(self, req: LogsRecent) -> Any:
        return self.host.recent_logs(req.actor, req.lines)

    async def _labels_put(self, req: LabelsPut) -> Any:
        labels = dict(req.labels)
        requests.check_labels_total({**self.host.labels, **labels})
        self.host.check_labels(labels)
        async with self._labels_lock:
            await self._record_labels({**self.host.labels, **labels})
            return self.host.put_labels(labels)

    async def _labels_del(self, req: LabelsDel) -> Any:
        keys = list(req.keys)
        async with self._labels_lock:
            await self._record_labels({k: v for k, v in self.host.labels.items() if k not in keys})
            return self.host.del_labels(keys)

    async def _record_labels(self, labels: dict[str, str]) -> None:
        """Record the labels before changing them: a failed write changes nothing."""
        if self.state is not None:
            await self.state.put(labels_key(self.node), labels)

    async def _link_list(self, req: LinkList) -> Any:
        return self.host.list_links()

    # -- lattice requests (one node answers; every node applies through the state) -----

    async def _lattice_link_list(self, req: LinkList) -> Any:
        return self._state().links()

    async def _config_get(self, req: ConfigGet) -> Any:
        name = req.name
        values = self._state().named_config(name)
        if values is None:
            raise BadRequest(f"no named config {name!r}", field="name")
        return values

    async def _revocation_list(self, req: RevocationList) -> Any:
        return [value for _, value in self._state().items("revoked")]
