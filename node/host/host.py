"""The host API: one node's actors, providers and links.

The CLI, the NATS control plane and the tests all call this class; nothing else starts
actors or puts links.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib.metadata
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, cast

import nats
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.providers.base import Link, Message, NotLinked, Provider, ProviderContext, ProviderError

from drupelet.node import __version__
from drupelet.node.lattice import subjects
from drupelet.node.lattice.connect import close_quietly
from drupelet.node.config import ActorSpec, LinkSpec, NodeConfig
from drupelet.node.errors import (HardwareError, ActorExists, ActorNotFound, CallFailed, DeadlineExceeded, DrupeletError, HandlerError,
                     InvalidRequest, LinkError, NatsUnavailable, ProviderNotFound, StartRefused, Trapped)
from drupelet.node.host.links import LinkDef, LinkTable, check_target, parse_interface
from drupelet.node.lattice.natsserver import EmbeddedNatsServer, NatsServerConfig, NatsServerError
from drupelet.node.runtime import NODE_SERVED, SERVED_VERSIONS, Limits, Runtime, RuntimeConfig, missing_imports, read_component, split_version
from drupelet.node.host.actors import Actor, Delivery

log = logging.getLogger(__name__)
actor_log = logging.getLogger("drupelet.actor")

PROVIDER_GROUP = "drupelet.providers"

EventListener = Callable[[str, dict[str, Any]], None]

HARDWARE_PROVIDERS = ("gpio", "i2c", "display")
"""Providers whose ``describe()`` is the node's hardware in the inventory."""

RECONCILE_INTERVAL_S = 15.0
"""How often desired actors that failed to start (say, an artifact not yet reachable) are tried again."""


def discover_providers() -> dict[str, type[Provider]]:
    """Provider classes registered in the ``drupelet.providers`` entry-point group."""
    found: dict[str, type[Provider]] = {}
    for ep in importlib.metadata.entry_points(group=PROVIDER_GROUP):
        try:
            cls = ep.load()
        except Exception:
            log.exception("provider entry point %s (%s) failed to load; skipping it", ep.name, ep.value)
            continue
        if not (isinstance(cls, type) and issubclass(cls, Provider)):
            log.error("provider entry point %s is not a Provider subclass; skipping it", ep.name)
            continue
        found[ep.name] = cls
    return found


class Host:
    def __init__(self, config: NodeConfig) -> None:
        # the host changes its labels at run time; the caller's config stays as given
        self.config = dataclasses.replace(config, labels=dict(config.labels))
        self.name = config.name
        self.lattice = config.lattice
        self.limits = Limits(call_deadline_ms=config.call_deadline_ms, max_memory_bytes=config.max_memory_bytes,
                             max_payload_bytes=config.max_payload_bytes)
        self.links = LinkTable()
        self.actors: dict[str, Actor] = {}
        self.providers: dict[str, Provider] = {}
        self.runtime: Runtime | None = None
        self.nats: NatsClient | None = None
        self.nats_server: EmbeddedNatsServer | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self._deliver_subs: dict[str, Any] = {}
        self._actor_lock = asyncio.Lock()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopped = False
        self._event_listeners: list[EventListener] = []
        self.control: Any = None
        self.state: Any = None
        self.provider_server: Any = None
        self._boot_labels = dict(config.labels)
        self.reconcile_interval_s = RECONCILE_INTERVAL_S
        self._restoring = False
        self._remotes: dict[tuple[str, str], Any] = {}
        self.reply_inbox: Any = None
        self.artifacts: Any = None

    # -- events ---------------------------------------------------------------------

    def on_event(self, listener: EventListener) -> None:
        """Call ``listener(kind, data)`` on the event loop for every node event."""
        self._event_listeners.append(listener)

    def emit(self, kind: str, data: dict[str, Any]) -> None:
        for listener in list(self._event_listeners):
            try:
                listener(kind, data)
            except Exception:
                log.exception("event listener failed on %s", kind)

    # -- labels ---------------------------------------------------------------------

    @staticmethod
    def check_labels(labels: dict[str, str]) -> None:
        from drupelet.node.config import LABEL_KEY

        for key, value in labels.items():
            if not LABEL_KEY.match(key) or not isinstance(value, str):
                raise InvalidRequest(f"label {key!r}: keys are 1-63 of A-Z a-z 0-9 _ . -, values strings")

    def put_labels(self, labels: dict[str, str]) -> dict[str, str]:
        self.check_labels(labels)
        self.config.labels.update(labels)
        self.emit("labels_changed", {"labels": dict(self.config.labels)})
        return dict(self.config.labels)

    def del_labels(self, keys: list[str]) -> dict[str, str]:
        for key in keys:
            self.config.labels.pop(key, None)
        self.emit("labels_changed", {"labels": dict(self.config.labels)})
        return dict(self.config.labels)

    # -- lifecycle ------------------------------------------------------------------

    async def start(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.started_at = time.time()
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.runtime = await asyncio.to_thread(
            Runtime, RuntimeConfig(cache_dir=cfg.compile_cache_dir, epoch_tick_ms=cfg.epoch_tick_ms,
                                   compile_in_subprocess=cfg.compile_in_subprocess))
        try:
            await self._connect_nats()
            from drupelet.node.lattice.artifacts import ArtifactStore

            self.artifacts = ArtifactStore(self.nats, self.lattice, cfg.data_dir / "artifacts",
                                           domain=cfg.nats_jetstream_domain or None)
            await self._start_control()
            await self._start_providers()
            for spec in cfg.actors:
                await self.start_actor(spec.name, read_component(spec.file) if spec.file.exists() else _missing(spec),
                                       instances=spec.instances, config=spec.config, source=str(spec.file))
            for link in cfg.links:
                await self.put_link(link.source, link.interface, link.target, link.config)
            await self._start_state()
        except BaseException:
            await self.stop()
            raise
        log.info("node %s is up in lattice %s: %d actor(s), %d provider(s), %d link(s)", self.name, self.lattice,
                 len(self.actors), len(self.providers), len(self.links.all()))
        self.emit("node_started", self.summary())

    async def _connect_nats(self) -> None:
        cfg = self.config
        url = cfg.nats_url
        if not url:
            self.nats_server = EmbeddedNatsServer(NatsServerConfig(
                host=cfg.nats_embedded_host, port=cfg.nats_embedded_port, jetstream=cfg.nats_embedded_jetstream,
                store_dir=cfg.data_dir / "nats", server_name=self.name))
            try:
                await self.nats_server.start()
            except NatsServerError as exc:
                if exc.log_tail:
                    log.debug("end of the nats-server log:\n%s", exc.log_tail)
                raise NatsUnavailable(f"cannot start the embedded nats-server: {exc.summary}") from exc
            url = self.nats_server.url
            log.info("embedded nats-server listening on %s", url)
        options: dict[str, Any] = {
            "name": f"drupelet-{self.name}",
            "connect_timeout": cfg.nats_connect_timeout_s,
            "max_reconnect_attempts": -1,
            "reconnect_time_wait": 0.5,
            "error_cb": self._nats_error,
            "disconnected_cb": self._nats_disconnected,
            "reconnected_cb": self._nats_reconnected,
        }
        if cfg.nats_creds:
            options["user_credentials"] = cfg.nats_creds
        # With unlimited reconnects nats-py retries the first connection forever too;
        # connect_timeout_s bounds the whole wait, not only each attempt.
        nc = NatsClient()
        timeout_s = cfg.nats_connect_timeout_s
        try:
            await asyncio.wait_for(nc.connect(url, allow_reconnect=True, **options), timeout=timeout_s)
        except BaseException as exc:
            last = nc.last_error
            await close_quietly(nc)
            if not isinstance(exc, Exception):
                raise
            cause = exc if not isinstance(exc, TimeoutError) else last
            reason = f"{cause}" if cause is not None and str(cause) else type(cause or exc).__name__
            within = f" within {timeout_s:g} s" if isinstance(exc, TimeoutError) else ""
            raise NatsUnavailable(f"cannot connect to NATS at {url}{within}: {reason}") from exc
        self.nats = nc

    async def _start_state(self) -> None:
        """Restore this node's actors and the lattice's links from the disk copy, then
        follow the shared bucket (reachable or not: it retries in the background)."""
        from drupelet.node.lattice.state import LatticeState

        cfg = self.config
        self.state = LatticeState(self.lattice, self.name, cfg.data_dir / "state.json")
        await asyncio.to_thread(self.state.load_local)
        self._restoring = True
        try:
            for key, value in self.state.items():
                await self._apply_state(key, value)
        finally:
            self._restoring = False
        self.state.on_change(self._apply_state)
        task = self._loop().create_task(self._reconcile_forever())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        assert self.nats is not None
        connected = await self.state.connect(self.nats, domain=cfg.nats_jetstream_domain or None)
        if not connected:
            log.warning("lattice state bucket unreachable; running from the local copy and retrying")

    async def _apply_state(self, key: str, value: dict[str, Any] | None) -> None:
        """Make this node match one entry of the lattice state. Never raises."""
        from drupelet.node.lattice.state import parse_key

        try:
            kind, names = parse_key(key)
            if kind == "link":
                source, interface = names
                if value is None:
                    link = self.links.get(source, interface)
                    if link is not None:
                        self.links.delete(source, interface)
                        await self._unlink(link)
                        self.emit("link_deleted", link.to_json())
                    own = self._config_link(source, interface)
                    if own is not None:  # the node config's own link comes back
                        await self.put_link(own.source, interface, own.target, own.config)
                else:
                    await self.put_link(source, interface, value["target"], value.get("config", {}), strict=False)
            elif kind == "actor" and names[0] == self.name:
                await self._reconcile_actor(names[1], value)
            elif kind == "labels" and names[0] == self.name and value is not None:
                merged = {**value, **self._boot_labels} if self._restoring else dict(value)
                if merged != self.config.labels:
                    self.config.labels.clear()
                    self.config.labels.update(merged)
                    self.emit("labels_changed", {"labels": dict(merged)})
        except DrupeletError as exc:
            log.warning("cannot apply lattice state %s: %s", key, exc.message)
        except Exception:
            log.exception("cannot apply lattice state %s", key)

    def _config_link(self, source: str, interface: str) -> LinkSpec | None:
        """The node config's ``[[links]]`` entry covering ``source``'s ``interface``, if any."""
        for spec in self.config.links:
            if spec.source != source:
                continue
            try:
                if interface in self.link_interfaces(spec.interface, spec.target):
                    return spec
            except DrupeletError:
                continue
        return None

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            if self.state is None:
                return
            for want in self.state.actors_for(self.name):
                if want["name"] not in self.actors:
                    try:
                        await self._reconcile_actor(want["name"], dict(want))
                    except DrupeletError as exc:
                        log.info("desired actor %s still cannot start: %s", want["name"], exc.message)

    async def _reconcile_actor(self, name: str, want: dict[str, Any] | None) -> None:
        have = self.actors.get(name)
        if want is None:
            if have is not None:
                await self.stop_actor(name)
            return
        if have is not None and have.loaded.digest != want["digest"]:
            await self.stop_actor(name)
            have = None
        if have is None:
            if self.artifacts is None:
                raise DrupeletError("no artifact store")
            wasm = await self.artifacts.get(want["digest"])
            await self.start_actor(name, wasm, instances=want["instances"], config=want.get("config", {}),
                                   source=want["digest"])
        else:
            if have.config != want.get("config", {}):
                have.config = dict(want.get("config", {}))  # read on every wasi:config call
            if have.instances != want["instances"] and want["instances"] > 0:
                await self.scale_actor(name, want["instances"])

    async def _start_control(self) -> None:
        from drupelet.node.lattice.control import ControlPlane

        assert self.nats is not None
        self.control = ControlPlane(self, self.nats, artifacts=self.artifacts,
                                    heartbeat_interval_s=self.config.heartbeat_interval_s)
        self.control.health_check_interval_s = self.config.health_check_interval_s
        await self.control.start()
        from drupelet.node.lattice.remote import ProviderServer, ReplyInbox

        self.provider_server = ProviderServer(self, self.nats)
        await self.provider_server.start()
        self.reply_inbox = ReplyInbox(self.nats)
        await self.reply_inbox.start()

    async def _nats_error(self, exc: Exception) -> None:
        log.warning("NATS: %s", exc if str(exc) else type(exc).__name__)

    async def _nats_disconnected(self) -> None:
        if self._stopped or self.nats is None:  # stopping, or a first connection that failed
            return
        log.warning("NATS connection lost; reconnecting")

    async def _nats_reconnected(self) -> None:
        log.info("NATS connection restored")

    async def _start_providers(self) -> None:
        for name, cls in sorted(discover_providers().items()):
            if self.config.providers.get(name, {}).get("enabled", True) is False:
                log.info("provider %s is disabled by config", name)
                continue
            await self._start_provider(name, cls)

    async def start_provider(self, name: str) -> dict[str, Any]:
        """Start a provider that is installed (entry point) but not running."""
        if name in self.providers:
            raise DrupeletError(f"provider {name!r} is already running on node {self.name}")
        cls = discover_providers().get(name)
        if cls is None:
            raise ProviderNotFound(f"no provider {name!r} is installed on node {self.name} "
                                   f"(installed: {', '.join(sorted(discover_providers()))})")
        await self._start_provider(name, cls)
        for link in self.links.all():
            if link.target_node in ("local", self.name) and link.provider == name:
                await self._relink(link)
        return self._describe_provider(name)

    async def stop_provider(self, name: str) -> None:
        """Stop a running provider; calls through its links fail with not-linked until it starts."""
        provider = self.providers.pop(name, None)
        if provider is None:
            raise ProviderNotFound(f"no provider {name!r} runs on node {self.name}")
        try:
            await provider.stop()
        finally:
            self.emit("provider_stopped", {"provider": name})
        log.info("provider %s stopped", name)

    async def _start_provider(self, name: str, cls: type[Provider]) -> None:
        pconf = dict(self.config.providers.get(name, {}))
        pconf.pop("enabled", None)
        provider = cls()
        provider.name = name
        ctx = ProviderContext(
            node=self.name, lattice=self.lattice, loop=self._loop(), data_dir=self.config.data_dir / "providers" / name,
            config=pconf, nats=self.nats, deliver=self._provider_deliver,
            max_payload_bytes=self.config.max_payload_bytes,
            call_timeout_s=self.config.call_deadline_ms / 1000.0, runs_here=lambda actor: actor in self.actors)
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await provider.start(ctx)
        except Exception as exc:
            raise DrupeletError(f"provider {name!r} failed to start: {exc}") from exc
        self.providers[name] = provider
        log.info("provider %s serves %s", name, ", ".join(provider.interfaces))
        self.emit("provider_started", {"provider": name, "interfaces": list(provider.interfaces)})

    async def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for name in list(self.actors):
            try:
                await self.stop_actor(name)
            except DrupeletError:
                log.exception("stopping actor %s failed", name)
        for name, provider in list(self.providers.items()):
            try:
                await provider.stop()
            except Exception:
                log.exception("stopping provider %s failed", name)
            self.emit("provider_stopped", {"provider": name})
        self.providers.clear()
        if self.provider_server is not None:
            await self.provider_server.close()
            self.provider_server = None
        if self.reply_inbox is not None:
            await self.reply_inbox.close()
            self.reply_inbox = None
        if self.control is not None:
            await self.control.close()
            self.control = None
        if self.state is not None:
            await self.state.close()
            self.state = None
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.nats is not None:
            try:
                await self.nats.drain()
            except Exception as exc:
                log.debug("NATS drain at stop: %s", exc)
                await close_quietly(self.nats)
            self.nats = None
        if self.nats_server is not None:
            await self.nats_server.stop()
            self.nats_server = None
        if self.runtime is not None:
            self.runtime.close()
        log.info("node %s stopped", self.name)

    async def __aenter__(self) -> Host:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _loop(self) -> asyncio.AbstractEventLoop:
        if self.loop is None:
            raise RuntimeError("the host is not started")
        return self.loop

    def _runtime(self) -> Runtime:
        if self.runtime is None:
            raise RuntimeError("the host is not started")
        return self.runtime

    # -- actors ---------------------------------------------------------------------

    async def start_actor(self, name: str, wasm: bytes, *, instances: int = 1, config: dict[str, str] | None = None,
                          source: str = "") -> dict[str, Any]:
        """Load ``wasm`` (through the compile cache) and start ``instances`` instances of it."""
        from drupelet.node.config import NAME

        if not NAME.match(name):
            raise StartRefused(f"{name!r} is not a valid actor name: use 1-63 of A-Z a-z 0-9 _ -", actor=name)
        if instances < 1:
            raise StartRefused("instances must be at least 1", actor=name)
        for k, v in (config or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise StartRefused("config keys and values must be strings", actor=name)
        runtime = self._runtime()
        async with self._actor_lock:
            if name in self.actors:
                raise ActorExists(f"actor {name!r} is already running; stop it or scale it", actor=name)
            try:
                loaded = await asyncio.to_thread(runtime.load, wasm)
            except DrupeletError as exc:
                raise StartRefused(f"actor {name!r}: {exc.message}", actor=name) from exc
            missing = missing_imports(loaded.imports)
            if missing:
                raise StartRefused(f"actor {name!r} imports interfaces this node cannot serve: {', '.join(missing)}",
                                   actor=name, missing=missing)
            if not loaded.has_handler:
                log.info("actor %s exports no wasmcloud:messaging/handler; it cannot receive messages", name)
            actor = Actor(name, loaded, runtime, self.limits, config=dict(config or {}), resolver=self._resolve,
                          link_config=self._link_config, log_sink=self._actor_log, max_queue=self.config.max_queue,
                          backoff_base_ms=self.config.trap_backoff_base_ms,
                          backoff_max_ms=self.config.trap_backoff_max_ms, source=source)
            await asyncio.to_thread(actor.scale, instances)
            self.actors[name] = actor
            try:
                await self._subscribe_deliveries(actor)
            except BaseException:
                del self.actors[name]
                await asyncio.to_thread(actor.stop, self.config.stop_timeout_s)
                raise
        log.info("actor %s started: %d instance(s) of %s (%s, %.1f ms to load)", name, instances,
                 loaded.digest[:12], "cached" if loaded.from_cache else "compiled", loaded.load_ms)
        self.emit("actor_started", {"actor": name, "digest": loaded.digest, "instances": instances})
        return actor.describe() | {"from_cache": loaded.from_cache, "load_ms": loaded.load_ms}

    async def stop_actor(self, name: str) -> None:
        async with self._actor_lock:
            actor = self.actors.pop(name, None)
            if actor is None:
                raise ActorNotFound(f"no actor named {name!r} runs on node {self.name}", actor=name)
            sub = self._deliver_subs.pop(name, None)
            if sub is not None:
                try:
                    await sub.unsubscribe()
                except Exception as exc:
                    log.debug("unsubscribe %s: %s", name, exc)
            await asyncio.to_thread(actor.stop, self.config.stop_timeout_s)
        log.info("actor %s stopped", name)
        await self.actor_stopped(name, self.name)
        self.emit("actor_stopped", {"actor": name})

    async def actor_stopped(self, actor: str, node: str) -> None:
        """``actor`` stopped on ``node``: providers here that ask for it release what the
        actor held through its links (outputs to their safe state, the display blanked)."""
        for link in self.links.for_source(actor):
            if link.target_node != self.name and not (link.target_node == "local" and node == self.name):
                continue
            provider = self.providers.get(link.provider)
            if provider is None or not provider.relink_when_actor_stops:
                continue
            try:
                await provider.link_removed(link.as_link())
                await provider.link_added(link.as_link())
            except ProviderError as exc:
                log.warning("provider %s: releasing what actor %s held: %s", link.provider, actor, exc.message)

    async def scale_actor(self, name: str, instances: int) -> dict[str, Any]:
        if instances < 1:
            raise StartRefused("instances must be at least 1; use stop to stop an actor", actor=name)
        actor = self._actor(name)
        await asyncio.to_thread(actor.scale, instances)
        return actor.describe()

    def _actor(self, name: str) -> Actor:
        actor = self.actors.get(name)
        if actor is None:
            raise ActorNotFound(f"no actor named {name!r} runs on node {self.name}", actor=name)
        return actor

    def list_actors(self) -> list[dict[str, Any]]:
        return [a.describe() for _, a in sorted(self.actors.items())]

    # -- deliveries -----------------------------------------------------------------

    async def deliver(self, actor: str, subject: str, body: bytes, reply_to: str | None = None,
                      deadline_ms: int | None = None) -> None:
        """Run the actor's handler on one message. Raises HandlerError, Trapped, …"""
        target = self._actor(actor)
        if not target.loaded.has_handler:
            raise CallFailed(f"actor {actor!r} exports no wasmcloud:messaging/handler@0.2.0 and cannot take messages",
                             actor=actor)
        fut = target.submit(Delivery(subject, body, reply_to, deadline_ms))
        try:
            err = await asyncio.wrap_future(fut)
        except Trapped as exc:
            self.emit("actor_failed", {"actor": actor, "code": exc.code, "message": exc.message})
            raise
        if err is not None:
            raise HandlerError(f"actor {actor!r} failed the message: {err}", actor=actor)

    async def invoke(self, actor: str, export: str, *args: Any, deadline_ms: int | None = None) -> Any:
        """Call a top-level exported function of ``actor`` on one of its instances."""
        return await asyncio.wrap_future(self._actor(actor).invoke(export, args, deadline_ms))

    async def _provider_deliver(self, actor: str, message: Message) -> None:
        """Provider events reach the actor where it runs: here, or through its queue group."""
        if actor in self.actors or self.nats is None:
            try:
                await self.deliver(actor, message.subject, message.body, message.reply_to)
            except DrupeletError as exc:
                await self._reply_error(message.reply_to, exc)
                raise
            return
        await self.nats.publish(subjects.deliver(self.lattice, actor), message.body,
                                reply=message.reply_to or "", headers={subjects.HEADER_SUBJECT: message.subject})

    async def call(self, actor: str, subject: str, body: bytes, timeout_s: float | None = None) -> bytes:
        """Deliver with a reply inbox and return the body the actor publishes to it."""
        nc = self._nats()
        timeout = timeout_s if timeout_s is not None else self.config.call_deadline_ms / 1000.0 + 1.0
        inbox = nc.new_inbox()
        sub = await nc.subscribe(inbox, max_msgs=1)
        try:
            await self.deliver(actor, subject, body, inbox)
            try:
                reply = await sub.next_msg(timeout=timeout)
            except nats.errors.TimeoutError:
                raise CallFailed(f"actor {actor!r} handled the message but sent no reply within {timeout:.1f} s",
                                 actor=actor) from None
            return bytes(reply.data)
        finally:
            try:
                await sub.unsubscribe()
            except Exception as exc:
                log.debug("unsubscribe inbox: %s", exc)

    async def _subscribe_deliveries(self, actor: Actor) -> None:
        if self.nats is None:
            return
        subject = subjects.deliver(self.lattice, actor.name)
        name = actor.name

        async def on_delivery(msg: Msg) -> None:
            task = self._loop().create_task(self._handle_delivery(name, msg))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        self._deliver_subs[name] = await self.nats.subscribe(subject, queue=name, cb=on_delivery)
        await self.nats.flush()  # the server knows the subscription before start_actor returns

    async def _handle_delivery(self, actor: str, msg: Msg) -> None:
        headers = msg.headers or {}
        subject = headers.get(subjects.HEADER_SUBJECT) or msg.subject
        try:
            await self.deliver(actor, subject, msg.data, msg.reply or None)
        except DrupeletError as exc:
            log.info("delivery to actor %s failed: %s", actor, exc.message)
            await self._reply_error(msg.reply or None, exc)

    async def _reply_error(self, reply_to: str | None, exc: DrupeletError) -> None:
        """Tell a requester waiting on ``reply_to`` that its message failed (error headers,
        empty body) rather than leave it to time out."""
        if reply_to and self.nats is not None and self.nats.is_connected:
            await self.nats.publish(reply_to, b"", headers={
                subjects.HEADER_ERROR: exc.code, subjects.HEADER_MESSAGE: exc.message.replace("\n", " ")})

    def _nats(self) -> NatsClient:
        if self.nats is None or not self.nats.is_connected:
            raise NatsUnavailable("the node is not connected to NATS")
        return self.nats

    # -- links ----------------------------------------------------------------------

    def _provider(self, target: str) -> Provider:
        node, _, pname = target.partition("/")
        if node not in ("local", self.name):
            raise LinkError(f"target {target!r} names node {node!r}; this node ({self.name}) links only to its own "
                            f"providers (local/<provider> or {self.name}/<provider>)", target=target)
        provider = self.providers.get(pname)
        if provider is None:
            raise ProviderNotFound(f"no provider {pname!r} on node {self.name} (have: {', '.join(sorted(self.providers))})")
        return provider

    def link_interfaces(self, interface: str, target: str) -> list[str]:
        """The interfaces a link put for ``interface`` (one, or a whole package) covers.

        For a provider on this node: what it serves. For another node's provider: every
        interface of the package that drupelet links (the target node checks it).
        """
        check_target(target)
        package, iface = parse_interface(interface)
        node_packages = {n.split("/")[0] for n in NODE_SERVED} - {
            n.split("/")[0] for n in SERVED_VERSIONS if n not in NODE_SERVED}
        if f"{package}/{iface}" in NODE_SERVED or (iface is None and package in node_packages):
            raise LinkError(f"{interface} is served by the node itself and takes no link", interface=interface)
        node, _, pname = target.partition("/")
        provider = self.providers.get(pname) if node in ("local", self.name) else None
        if provider is None:
            if iface is not None:
                return [f"{package}/{iface}"]
            known = [i for i in SERVED_VERSIONS if i.startswith(package + "/") and i not in NODE_SERVED]
            if not known:
                raise LinkError(f"no linkable interface in package {package}", interface=interface, target=target)
            return known
        return self._served_by(provider, package, iface, target)

    def _served_by(self, provider: Provider, package: str, iface: str | None, target: str) -> list[str]:
        if iface is not None:
            wanted = f"{package}/{iface}"
            if wanted not in provider.interfaces:
                raise LinkError(f"provider {target!r} does not serve {wanted} (it serves {', '.join(provider.interfaces)})",
                                interface=wanted, target=target)
            return [wanted]
        served = [i for i in provider.interfaces if i.startswith(package + "/")]
        if not served:
            raise LinkError(f"provider {target!r} serves no interface of {package} (it serves "
                            f"{', '.join(provider.interfaces)})", interface=package, target=target)
        return served

    async def put_link(self, source: str, interface: str, target: str,
                       config: dict[str, str] | None = None, *, strict: bool = True) -> list[dict[str, Any]]:
        """Link ``source``'s import of ``interface`` (or of every interface of a package) to ``target``.

        ``strict`` (the API and the node config): the target must be a provider running
        here. Not strict (links from the lattice state): links to other nodes' providers,
        or to a provider this node lacks, are kept and fail at call time with not-linked.
        """
        check_target(target)
        package, iface = parse_interface(interface)
        for k, v in (config or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise LinkError("link config keys and values must be strings", source=source, interface=interface)
        node_packages = {n.split("/")[0] for n in NODE_SERVED} - {
            n.split("/")[0] for n in SERVED_VERSIONS if n not in NODE_SERVED}
        if f"{package}/{iface}" in NODE_SERVED or (iface is None and package in node_packages):
            raise LinkError(f"{interface} is served by the node itself and takes no link", interface=interface)
        if not strict:
            return await self._put_loose(source, self.link_interfaces(interface, target), target, config or {})
        provider = self._provider(target)
        served = [i for i in provider.interfaces if split_version(i)[0].startswith(package + "/")]
        if iface is not None:
            wanted = [f"{package}/{iface}"]
            if wanted[0] not in provider.interfaces:
                raise LinkError(f"provider {target!r} does not serve {wanted[0]} (it serves {', '.join(provider.interfaces)})",
                                source=source, interface=interface, target=target)
        else:
            wanted = served
            if not wanted:
                raise LinkError(f"provider {target!r} serves no interface of {package} (it serves "
                                f"{', '.join(provider.interfaces)})", source=source, interface=interface, target=target)
        made: list[LinkDef] = []
        for name in wanted:
            link = LinkDef(source=source, interface=name, target=target, config=dict(config or {}))
            previous = self.links.get(source, name)
            if previous is not None:
                await self._unlink(previous)
            try:
                await provider.link_added(link.as_link())
            except ProviderError as exc:
                if previous is not None:
                    await self._relink(previous)
                raise LinkError(f"provider {target!r} refused the link: {exc.message}", source=source,
                                interface=name, target=target) from exc
            self.links.put(link)
            made.append(link)
            self.emit("link_put", link.to_json())
            log.info("link %s %s → %s", source, name, target)
        return [link.to_json() for link in made]

    async def _put_loose(self, source: str, interfaces: list[str], target: str,
                         config: dict[str, str]) -> list[dict[str, Any]]:
        node, _, pname = target.partition("/")
        provider = self.providers.get(pname) if node in ("local", self.name) else None
        made = []
        for name in interfaces:
            link = LinkDef(source=source, interface=name, target=target, config=dict(config))
            previous = self.links.get(source, name)
            if previous == link:
                continue
            if previous is not None:
                await self._unlink(previous)
            if provider is not None and name in provider.interfaces:
                try:
                    await provider.link_added(link.as_link())
                except ProviderError as exc:
                    log.warning("provider %s refused link %s %s: %s", pname, source, name, exc.message)
                    continue
            self.links.put(link)
            made.append(link.to_json())
            self.emit("link_put", link.to_json())
            log.info("link %s %s → %s", source, name, target)
        return made

    async def _unlink(self, link: LinkDef) -> None:
        provider = self.providers.get(link.provider)
        if provider is not None:
            try:
                await provider.link_removed(link.as_link())
            except ProviderError as exc:
                log.warning("provider %s failed to release link %s %s: %s", link.provider, link.source,
                            link.interface, exc)

    async def _relink(self, link: LinkDef) -> None:
        provider = self.providers.get(link.provider)
        if provider is not None:
            await provider.link_added(link.as_link())

    async def del_link(self, source: str, interface: str) -> list[dict[str, Any]]:
        package, iface = parse_interface(interface)
        names = [f"{package}/{iface}"] if iface else [l.interface for l in self.links.for_source(source)
                                                      if l.interface.startswith(package + "/")]
        removed = []
        for name in names:
            link = self.links.delete(source, name)
            if link is not None:
                await self._unlink(link)
                removed.append(link.to_json())
                self.emit("link_deleted", link.to_json())
        if not removed:
            raise LinkError(f"no link for actor {source!r} and {interface}", source=source, interface=interface)
        return removed

    def list_links(self) -> list[dict[str, Any]]:
        return [link.to_json() for link in self.links.all()]

    def _resolve(self, actor: str, interface: str) -> tuple[Provider, Link]:
        link = self.links.get(actor, interface)
        if link is None:
            raise NotLinked(f"actor {actor!r} has no link for {interface}; add one to the node config: "
                            f"[[links]] source = \"{actor}\", interface = \"{interface}\", "
                            f"target = \"local/<provider>\"")
        if link.target_node not in ("local", self.name):
            return self._remote_provider(link.target_node, link.provider), link.as_link()
        provider = self.providers.get(link.provider)
        if provider is None:
            raise NotLinked(f"link {actor} {interface} → {link.target}: no provider {link.provider!r} runs on "
                            f"node {self.name}")
        return provider, link.as_link()

    def _remote_provider(self, node: str, provider: str) -> Provider:
        from drupelet.node.lattice.remote import RemoteProvider

        key = (node, provider)
        remote = self._remotes.get(key)
        if remote is None:
            if self.nats is None or self.reply_inbox is None:
                raise NotLinked(f"provider {node}/{provider} needs a NATS connection")
            remote = RemoteProvider(self.nats, self._loop(), self.lattice, self.name, node, provider,
                                    self.config.remote_call_timeout_ms / 1000.0, inbox=self.reply_inbox)
            self._remotes[key] = remote
        return cast(Provider, remote)

    def _link_config(self, actor: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for link in self.links.for_source(actor):
            merged.update(link.config)
        return merged

    # -- logs -----------------------------------------------------------------------

    def _actor_log(self, actor: str, level: str, context: str, message: str) -> None:
        actor_log.log(_level(level), "[%s] %s%s", actor, f"{context}: " if context else "", message,
                      extra={"actor": actor, "actor_context": context})
        nc, loop = self.nats, self.loop
        if nc is None or loop is None or loop.is_closed():
            return
        payload = json.dumps({"node": self.name, "actor": actor, "level": level, "context": context,
                              "message": message, "time": time.time()}).encode()
        subject = subjects.logs(self.lattice, self.name, actor)
        try:
            loop.call_soon_threadsafe(self._publish_soon, subject, payload)
        except RuntimeError:
            pass  # the loop closed between the check and the call; the line went to the local log

    def _publish_soon(self, subject: str, payload: bytes) -> None:
        if self.nats is None or not self.nats.is_connected:
            return
        task = self._loop().create_task(self.nats.publish(subject, payload))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- inventory ------------------------------------------------------------------

    def _describe_provider(self, name: str) -> dict[str, Any]:
        return _describe(name, self.providers[name])

    def summary(self) -> dict[str, Any]:
        """What a ping answers: who this node is, in a few fields."""
        return {
            "id": self.name, "name": self.name, "lattice": self.lattice, "labels": dict(self.config.labels),
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0.0,
            "actors": len(self.actors), "providers": sorted(self.providers),
        }

    def inventory(self) -> dict[str, Any]:
        return {
            "id": self.name,
            "name": self.name,
            "lattice": self.lattice,
            "labels": dict(self.config.labels),
            "version": __version__,
            "uptime_s": round(time.time() - self.started_at, 1) if self.started_at else 0.0,
            "nats": {"connected": bool(self.nats and self.nats.is_connected),
                     "url": self.nats.connected_url.geturl() if self.nats and self.nats.connected_url else "",
                     "embedded": self.nats_server is not None},
            "actors": self.list_actors(),
            "providers": [self._describe_provider(name) for name in sorted(self.providers)],
            "links": self.list_links(),
            "hardware": self.hardware(),
        }

    def status_line(self) -> str:
        """One line a person reads in ``systemctl status``: actors, hub reachability, and
        providers that are not healthy, e.g. ``3 actors, hub connected``."""
        count = len(self.actors)
        parts = [f"{count} actor{'' if count == 1 else 's'}"]
        if self.nats is None or not self.nats.is_connected:
            parts.append("NATS disconnected (reconnecting to the local server)")
        elif self.state is not None and not self.state.connected:
            parts.append("hub unreachable (running from the local copy)")
        else:
            parts.append("hub connected")
        for name, provider in sorted(self.providers.items()):
            try:
                health = provider.health()
            except Exception as exc:
                parts.append(f"provider {name}: health unknown ({exc or type(exc).__name__})")
                continue
            if health.status != "ok":
                parts.append(f"provider {name} {health.status}" + (f": {health.message}" if health.message else ""))
        return ", ".join(parts)

    def health_for_watchdog(self) -> str | None:
        """None while the actor supervisor is healthy, else why not (systemd's watchdog
        stops being pinged). The event loop's health is implied: this runs on it.

        An actor is unhealthy when a worker thread it counts as running has ended
        outside the supervisor's stop and scale paths."""
        problems = []
        for name, actor in sorted(self.actors.items()):
            dead = actor.dead_workers()
            if dead and not actor.stopping:
                problems.append(f"actor {name}: {dead} of {actor.instances} instance worker thread(s) ended")
        return "; ".join(problems) or None

    # -- hardware -------------------------------------------------------------------

    def hardware(self) -> dict[str, Any]:
        """Pins with their owners, I2C buses with the devices a scan found, displays."""
        return {name: self.providers[name].describe() for name in HARDWARE_PROVIDERS if name in self.providers}

    def _hardware_method(self, provider: str, method: str) -> Callable[..., Any]:
        p = self.providers.get(provider)
        if p is None:
            raise ProviderNotFound(f"no provider {provider!r} runs on node {self.name} "
                                   f"(running: {', '.join(sorted(self.providers)) or 'none'})")
        func: Callable[..., Any] | None = getattr(p, method, None)
        if not callable(func):
            raise ProviderNotFound(f"provider {provider!r} on node {self.name} has no {method}")
        return func

    async def display_snapshot(self, provider: str = "display") -> bytes:
        """A PNG of what the display shows (its last flushed frame), real or simulated."""
        snapshot = self._hardware_method(provider, "snapshot")
        try:
            png: bytes = await asyncio.to_thread(snapshot)
        except ProviderError as exc:
            raise HardwareError(f"display snapshot on node {self.name}: {exc.message}", code=exc.code) from exc
        return png

    async def gpio_simulate(self, pin: int, level: bool, provider: str = "gpio") -> None:
        """Drive a simulated input pin (a button press); refused on real GPIO."""
        simulate = self._hardware_method(provider, "simulate")
        try:
            await asyncio.to_thread(simulate, pin, level)
        except ProviderError as exc:
            raise HardwareError(f"gpio simulate pin {pin} on node {self.name}: {exc.message}", code=exc.code) from exc


def _describe(name: str, p: Provider) -> dict[str, Any]:
    health = p.health()
    return {"name": name, "interfaces": list(p.interfaces), "health": health.status,
            "health_message": health.message, **p.describe()}


def _level(level: str) -> int:
    from drupelet.node.host.actors import LEVELS

    return LEVELS.get(level, logging.INFO)


def _missing(spec: ActorSpec) -> bytes:
    raise StartRefused(f"actor {spec.name!r}: component file {spec.file} does not exist", actor=spec.name)


__all__ = ["Host", "discover_providers", "DeadlineExceeded", "LinkSpec", "Iterable", "Path"]
