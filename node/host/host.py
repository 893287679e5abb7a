"""The host API: one node's actors, providers and links, without NATS.

The control plane, the CLI (through the control plane) and the tests call this class
(through :class:`~drupelet.node.host.api.HostApi`); nothing else starts actors or puts
links. What needs the network (deliveries from other nodes, calls to their providers, log
lines for the lattice) goes through the :class:`~drupelet.node.host.api.LatticePort` the
composition root plugs in; without one the host is a single node on its own.

Why this module is past 500 lines: it is the one implementation of the host API, and its
parts (actors, links, providers, labels) call each other; the pieces that stand alone
(the supervisor, the link table and resolution, provider discovery, inventory helpers)
already live in their own modules.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drupelet.providers.base import HttpExchange, Link, Message, NotLinked, Provider, ProviderContext, ProviderError

from drupelet.node import __version__
from drupelet.node.config import LABEL_KEY, NAME, ActorSpec, NodeConfig
from drupelet.node.errors import DrupeletError
from drupelet.node.host.actors import LEVELS, Actor, Delivery
from drupelet.node.host.api import EventListener, LatticePort
from drupelet.node.host.budgets import ByteBudget, ByteRate, LogLimiter, admit, memory_budget, prune_caches
from drupelet.node.host.errors import (ActorExists, ActorNotFound, HandlerError, InvalidRequest, LinkError,
                                       ProviderFailed, ProviderNotFound, hardware_error)
from drupelet.node.host.links import LinkDef, LinkTable, link_interfaces, package_matches, parse_interface
from drupelet.node.host.logbook import Logbook
from drupelet.node.host.providers import (HARDWARE_PROVIDERS, describe, discover_providers, enabled, health_of,
                                          provider_table)
from drupelet.node.host.trust import ActorTrust
from drupelet.node.runtime import Limits, Runtime, RuntimeConfig, missing_imports, read_component
from drupelet.node.runtime.errors import CallFailed, NoReply, StartRefused, Trapped

log = logging.getLogger(__name__)
actor_log = logging.getLogger("drupelet.actor")

__all__ = ["Host"]


class Host:
    """One node's actors, providers and links. Start it, use it, stop it (once)."""

    def __init__(self, config: NodeConfig) -> None:
        # the host changes its labels at run time; the caller's config stays as given
        self.config = dataclasses.replace(config, labels=dict(config.labels))
        self.limits = Limits(call_deadline_ms=config.call_deadline_ms, max_memory_bytes=config.max_memory_bytes,
                             max_payload_bytes=config.max_payload_bytes)
        self.links = LinkTable()
        self.actors: dict[str, Actor] = {}
        self.providers: dict[str, Provider] = {}
        self.runtime: Runtime | None = None
        self.port: LatticePort | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.started_at = 0.0
        self._actor_lock = asyncio.Lock()
        self._stopped = False
        self._event_listeners: list[EventListener] = []
        self.logbook = Logbook(config.name)
        self.trust = ActorTrust(config, self.emit)
        self.queue_budget = ByteBudget(config.node_queue_bytes)
        """Message bytes waiting for all actors (``limits.node_queue_bytes``)."""
        self.memory_budget_bytes = memory_budget(config.memory_budget_bytes)

    # -- who this is ------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def lattice(self) -> str:
        return self.config.lattice

    @property
    def labels(self) -> Mapping[str, str]:
        return dict(self.config.labels)

    @property
    def max_payload_bytes(self) -> int:
        return self.config.max_payload_bytes

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

    def replace_labels(self, labels: dict[str, str]) -> None:
        """Make the labels exactly ``labels`` (the lattice state's record of them)."""
        if labels != self.config.labels:
            self.config.labels.clear()
            self.config.labels.update(labels)
            self.emit("labels_changed", {"labels": dict(labels)})

    # -- lifecycle ------------------------------------------------------------------

    async def start(self, port: LatticePort | None = None) -> None:
        """Start the runtime and the providers, then the node config's actors and links.
        On failure everything started is stopped again and the error is raised."""
        self.loop = asyncio.get_running_loop()
        self.port = port
        self.started_at = time.time()
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            self.runtime = await asyncio.to_thread(
                Runtime, RuntimeConfig(cache_dir=cfg.compile_cache_dir, epoch_tick_ms=cfg.epoch_tick_ms,
                                       compile_in_subprocess=cfg.compile_in_subprocess,
                                       compile_timeout_s=cfg.compile_timeout_s,
                                       compile_memory_bytes=cfg.compile_memory_bytes,
                                       compile_queue=cfg.compile_queue))
            for name, cls in sorted(discover_providers().items()):
                if not enabled(cfg.providers, name):
                    log.info("provider %s is disabled by config", name)
                    continue
                await self._start_provider(name, cls)
            for spec in cfg.actors:
                await self.start_actor(spec.name, _read(spec), instances=spec.instances, config=spec.config,
                                       source=str(spec.file))
            for link in cfg.links:
                await self.put_link(link.source, link.interface, link.target, link.config)
        except BaseException:
            await self.stop()
            raise
        log.info("host %s: %d actor(s), %d provider(s), %d link(s)", self.name, len(self.actors),
                 len(self.providers), len(self.links.all()))

    async def stop(self) -> None:
        """Stop every actor (outputs to their safe state), every provider, the runtime.
        Every step runs even when one before it fails. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        if self.runtime is not None:
            self.runtime.stop_compiling()  # first: a compile in progress is killed, not waited for
        for name in list(self.actors):
            try:
                await self.stop_actor(name)
            except Exception:
                log.exception("stopping actor %s failed", name)
        for name, provider in list(self.providers.items()):
            try:
                await provider.stop()
            except Exception:
                log.exception("stopping provider %s failed", name)
            self.emit("provider_stopped", {"provider": name})
        self.providers.clear()
        if self.runtime is not None:
            self.runtime.close()
        log.info("host %s stopped", self.name)

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

    # -- providers --------------------------------------------------------------------

    def provider(self, name: str) -> Provider | None:
        return self.providers.get(name)

    def provider_names(self) -> list[str]:
        return sorted(self.providers)

    def provider_health(self) -> dict[str, tuple[str, str]]:
        return {name: health_of(name, p) for name, p in sorted(self.providers.items())}

    async def start_provider(self, name: str) -> dict[str, Any]:
        """Start a provider that is installed (entry point) but not running."""
        if name in self.providers:
            raise ProviderFailed(f"provider {name!r} is already running on node {self.name}")
        installed = discover_providers()
        cls = installed.get(name)
        if cls is None:
            raise ProviderNotFound(f"no provider {name!r} is installed on node {self.name} "
                                   f"(installed: {', '.join(sorted(installed))})")
        await self._start_provider(name, cls)
        for link in self.links.all():
            if link.target_node in ("local", self.name) and link.provider == name:
                await self._relink(link)
        return describe(name, self.providers[name])

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
        provider = cls()
        provider.name = name
        ctx = ProviderContext(
            node=self.name, lattice=self.lattice, loop=self._loop(), data_dir=self.config.data_dir / "providers" / name,
            config=provider_table(self.config.providers, name), nats=self.port.nats if self.port else None,
            synced=self.port.synced if self.port else None,
            deliver=self._provider_deliver, max_payload_bytes=self.config.max_payload_bytes,
            call_timeout_s=self.config.call_deadline_ms / 1000.0, runs_here=lambda actor: actor in self.actors,
            serve_http=self.serve_http)
        ctx.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            await provider.start(ctx)
        except Exception as exc:
            raise ProviderFailed(f"provider {name!r} failed to start: {exc}") from exc
        self.providers[name] = provider
        log.info("provider %s serves %s", name, ", ".join(provider.interfaces))
        self.emit("provider_started", {"provider": name, "interfaces": list(provider.interfaces)})

    # -- actors ---------------------------------------------------------------------

    async def start_actor(self, name: str, wasm: bytes, *, instances: int = 1, config: dict[str, str] | None = None,
                          source: str = "") -> dict[str, Any]:
        """Load ``wasm`` (through the compile cache) and start ``instances`` instances of it.

        Compiling runs outside the actor lock: a long compile holds up no stop, scale or
        other start, and a node that stops meanwhile kills it."""
        if not NAME.match(name):
            raise StartRefused(f"{name!r} is not a valid actor name: use 1-63 of A-Z a-z 0-9 _ -", actor=name)
        if instances < 1:
            raise StartRefused("instances must be at least 1", actor=name)
        for k, v in (config or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise StartRefused("config keys and values must be strings", actor=name)
        runtime = self._runtime()
        if name in self.actors:
            raise ActorExists(f"actor {name!r} is already running; stop it or scale it", actor=name)
        try:
            loaded = await asyncio.to_thread(runtime.load, wasm)
        except DrupeletError as exc:
            raise StartRefused(f"actor {name!r}: {exc.message}", actor=name) from exc
        identity = await self.trust.admit(name, wasm)
        missing = missing_imports(loaded.imports)
        if missing:
            raise StartRefused(f"actor {name!r} imports interfaces this node cannot serve: {', '.join(missing)}",
                               actor=name, missing=missing)
        self.trust.check_imports(name, identity, loaded.imports)
        if not loaded.exports:
            raise StartRefused(f"actor {name!r}: the component exports nothing, so a node has nothing to deliver "
                               "messages to or call (an actor exports wasmcloud:messaging/handler)", actor=name)
        if not loaded.has_handler and loaded.http_export is None:
            log.info("actor %s exports no wasmcloud:messaging/handler; it cannot receive messages", name)
        async with self._actor_lock:
            if self._stopped:
                raise StartRefused(f"actor {name!r}: node {self.name} is stopping", actor=name)
            if name in self.actors:
                raise ActorExists(f"actor {name!r} is already running; stop it or scale it", actor=name)
            self._admit(name, instances)
            cfg = self.config
            actor = Actor(name, loaded, runtime, self.limits, config=dict(config or {}), resolver=self._resolve,
                          link_config=self._link_config, log_sink=self._actor_log, max_queue=cfg.max_queue,
                          backoff_base_ms=cfg.trap_backoff_base_ms, backoff_max_ms=cfg.trap_backoff_max_ms,
                          source=source, identity=identity,
                          budget=ByteBudget(cfg.actor_queue_bytes, parent=self.queue_budget),
                          logs=LogLimiter(cfg.log_line_bytes, cfg.log_lines_per_s, cfg.log_burst_lines),
                          send_rate=ByteRate(cfg.publish_bytes_per_s, 2 * cfg.max_payload_bytes))
            await asyncio.to_thread(actor.scale, instances)
            self.actors[name] = actor
            try:
                if self.port is not None:
                    await self.port.actor_added(name)
            except BaseException:
                del self.actors[name]
                await asyncio.to_thread(actor.stop, self.config.stop_timeout_s)
                raise
        for pname, provider in list(self.providers.items()):
            try:
                await provider.actor_started(name)
            except ProviderError as exc:
                log.warning("provider %s: actor %s started: %s", pname, name, exc.message)
        log.info("actor %s started: %d instance(s) of %s (%s, %.1f ms to load)", name, instances,
                 loaded.digest[:12], "cached" if loaded.from_cache else "compiled", loaded.load_ms)
        if not loaded.from_cache:
            await self.prune_caches()
        self.emit("actor_started", {"actor": name, "digest": loaded.digest, "instances": instances,
                                    **identity.describe()})
        return actor.describe() | {"from_cache": loaded.from_cache, "load_ms": loaded.load_ms}

    async def stop_actor(self, name: str) -> None:
        async with self._actor_lock:
            actor = self.actors.pop(name, None)
            if actor is None:
                raise ActorNotFound(f"no actor named {name!r} runs on node {self.name}", actor=name)
            if self.port is not None:
                try:
                    await self.port.actor_removed(name)
                except Exception:
                    log.exception("actor %s: could not stop its deliveries", name)
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
        async with self._actor_lock:
            actor = self._actor(name)
            self._admit(name, instances)
            await asyncio.to_thread(actor.scale, instances)
            return actor.describe()

    def _admit(self, name: str, instances: int) -> None:
        """The per-actor instance cap, and the node's memory budget: every actor's instances
        × the per-instance memory cap. StartRefused naming the budget."""
        others = sum(a.instances for n, a in self.actors.items() if n != name)
        why = admit(instances, others, cap=self.config.max_instances, per_instance=self.limits.max_memory_bytes,
                    budget=self.memory_budget_bytes)
        if why is not None:
            raise StartRefused(f"actor {name!r} on node {self.name}: {why}", actor=name)

    async def prune_caches(self) -> None:
        """Keep the compile and artifact caches within ``cache_budget_bytes``, sparing what
        running actors use."""
        cfg = self.config
        in_use = {a.loaded.digest for a in self.actors.values()}
        await asyncio.to_thread(prune_caches, [cfg.compile_cache_dir, cfg.artifact_cache_dir],
                                cfg.cache_budget_bytes, in_use)

    def _actor(self, name: str) -> Actor:
        actor = self.actors.get(name)
        if actor is None:
            raise ActorNotFound(f"no actor named {name!r} runs on node {self.name}", actor=name)
        return actor

    def has_actor(self, name: str) -> bool:
        return name in self.actors

    def actor_info(self, name: str) -> dict[str, Any]:
        return self._actor(name).describe()

    def set_actor_config(self, name: str, config: dict[str, str]) -> None:
        """Replace a running actor's config (read on every ``wasi:config`` call)."""
        self._actor(name).config = dict(config)

    def list_actors(self) -> list[dict[str, Any]]:
        return [a.describe() for _, a in sorted(self.actors.items())]

    def actor_load(self, name: str) -> float:
        actor = self.actors.get(name)
        if actor is None:
            return 0.0
        node = self.queue_budget
        return max(actor.queue.qsize() / max(1, actor.queue.maxsize), actor.budget.used / actor.budget.limit,
                   node.used / node.limit)

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

    def serve_http(self, actor: str, exchange: HttpExchange) -> Awaitable[None] | None:
        """Have ``actor`` answer an HTTP request: queued for an instance here at once (None;
        the instance settles the exchange), or the awaitable that carries it across the
        lattice. Raises when no instance can take it (ActorNotFound, Overloaded…)."""
        target = self.actors.get(actor)
        if target is None:
            if self.port is None:
                raise ActorNotFound(f"no actor named {actor!r} runs on node {self.name}", actor=actor)
            return self.port.serve_http(actor, exchange)
        if target.loaded.http_export is None:
            raise CallFailed(f"actor {actor!r} exports no wasi:http/incoming-handler", actor=actor)
        loop = self._loop()

        def answered(fut: Any) -> None:  # on the instance's thread: a dropped request fails, a trap is told
            exc = None if fut.cancelled() else fut.exception()
            if exc is not None or fut.cancelled():
                exchange.fail(str(exc) if exc is not None else "the request was dropped")
            if isinstance(exc, Trapped):
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                    loop.call_soon_threadsafe(self.emit, "actor_failed",
                                              {"actor": actor, "code": exc.code, "message": exc.message})

        target.submit_http(exchange).add_done_callback(answered)
        return None

    async def invoke(self, actor: str, export: str, *args: Any, deadline_ms: int | None = None) -> Any:
        """Call a top-level exported function of ``actor`` on one of its instances."""
        return await asyncio.wrap_future(self._actor(actor).invoke(export, args, deadline_ms))

    async def _provider_deliver(self, actor: str, message: Message) -> None:
        """Provider events reach the actor where it runs: here, or through the lattice."""
        if actor in self.actors or self.port is None:
            try:
                await self.deliver(actor, message.subject, message.body, message.reply_to)
            except NoReply as exc:
                # a message on a subscribed subject: another subscriber may be the one that answers
                log.debug("%s", exc.message)
                return
            except DrupeletError as exc:
                if message.reply_to and self.port is not None:
                    await self.port.reply_error(message.reply_to, exc.code, exc.message)
                raise
            return
        await self.port.forward(actor, message)

    # -- links ----------------------------------------------------------------------

    def _local_provider(self, target: str) -> Provider | None:
        node, _, pname = target.partition("/")
        return self.providers.get(pname) if node in ("local", self.name) else None

    def link_interfaces(self, interface: str, target: str) -> list[str]:
        """The interfaces a link put for ``interface`` (one, or a whole package) covers."""
        return link_interfaces(interface, target, self._local_provider(target))

    async def set_revoked(self, keys: list[str]) -> None:
        """Refuse actors whose claims' subject or issuer is one of ``keys`` from now on, and
        stop those running (an ``actor_revoked`` event, then ``actor_stopped``)."""
        self.trust.set_revoked(keys)
        for name, actor in list(self.actors.items()):
            why = self.trust.revoked_reason(actor.identity)
            if why is None:
                continue
            log.warning("actor %s is revoked (%s): stopping it", name, why)
            self.emit("actor_revoked", {"actor": name, "reason": why, **actor.identity.describe()})
            try:
                await self.stop_actor(name)
            except ActorNotFound:
                pass

    def check_link_caps(self, source: str, interfaces: list[str], *, strict: bool = True) -> bool:
        """Whether ``source``'s caps cover ``interfaces`` when it runs here signed. Strict:
        :class:`~drupelet.node.security.errors.CapsMissing` instead of False; not strict (a
        link from the lattice state): the refusal is logged and announced, and the caller
        does not apply the link."""
        actor = self.actors.get(source)
        if actor is None:
            return True
        try:
            self.trust.check_link(source, actor.identity, interfaces)
        except DrupeletError:
            if strict:
                raise
            return False
        return True

    async def put_link(self, source: str, interface: str, target: str,
                       config: dict[str, str] | None = None, *, strict: bool = True) -> list[dict[str, Any]]:
        """Link ``source``'s import of ``interface`` (or of every interface of a package) to ``target``.

        ``strict`` (the API and the node config): the target must be a provider running
        here, and a provider that refuses the link fails the put. Not strict (links from
        the lattice state): links to other nodes' providers, or to a provider this node
        lacks, are kept and fail at call time with not-linked; a refusal is logged.
        """
        for k, v in (config or {}).items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise LinkError("link config keys and values must be strings", source=source, interface=interface)
        if strict:
            self._require_local(target)
        interfaces = self.link_interfaces(interface, target)
        if not self.check_link_caps(source, interfaces, strict=strict):
            return []
        provider = self._local_provider(target)
        made: list[dict[str, Any]] = []
        for name in interfaces:
            link = LinkDef(source=source, interface=name, target=target, config=dict(config or {}))
            previous = self.links.get(source, name)
            if not strict and previous == link:
                continue
            if previous is not None:
                await self._unlink(previous)
            if provider is not None and name in provider.interfaces:
                try:
                    await provider.link_added(link.as_link())
                except ProviderError as exc:
                    if previous is not None:
                        await self._relink(previous)
                    if not strict:
                        log.warning("provider %s refused link %s %s: %s", link.provider, source, name, exc.message)
                        continue
                    raise LinkError(f"provider {target!r} refused the link: {exc.message}", source=source,
                                    interface=name, target=target) from exc
            self.links.put(link)
            made.append(link.to_json())
            self.emit("link_put", link.to_json())
            log.info("link %s %s → %s", source, name, target)
        return made

    def _require_local(self, target: str) -> Provider:
        node, _, pname = target.partition("/")
        if node not in ("local", self.name):
            raise LinkError(f"target {target!r} names node {node!r}; this node ({self.name}) links only to its own "
                            f"providers (local/<provider> or {self.name}/<provider>)", target=target)
        provider = self.providers.get(pname)
        if provider is None:
            raise ProviderNotFound(f"no provider {pname!r} on node {self.name} (have: {', '.join(sorted(self.providers))})")
        return provider

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
        parse_interface(interface)
        removed = []
        for link in [l for l in self.links.for_source(source) if package_matches(l.interface, interface)]:
            gone = self.links.delete(source, link.interface)
            if gone is not None:
                await self._unlink(gone)
                removed.append(gone.to_json())
                self.emit("link_deleted", gone.to_json())
        if not removed:
            raise LinkError(f"no link for actor {source!r} and {interface}", source=source, interface=interface)
        return removed

    def list_links(self) -> list[dict[str, Any]]:
        return [link.to_json() for link in self.links.all()]

    def link_for(self, source: str, interface: str) -> LinkDef | None:
        return self.links.get(source, interface)

    def _resolve(self, actor: str, interface: str) -> tuple[Provider, Link]:
        link = self.links.get(actor, interface)
        if link is None:
            if any(spec.name == actor for spec in self.config.actors):  # an actor of the config file
                how = (f"add one to the node config: [[links]] source = \"{actor}\", interface = \"{interface}\", "
                       f"target = \"local/<provider>\"")
            else:  # started with `drupelet actor start`: links are the lattice's
                how = f"add one: drupelet link put {actor} {interface} local/<provider>"
            raise NotLinked(f"actor {actor!r} has no link for {interface}; {how}")
        if link.target_node not in ("local", self.name):
            if self.port is None:
                raise NotLinked(f"link {actor} {interface} → {link.target}: node {self.name} is not in a lattice")
            return self.port.remote_provider(link.target_node, link.provider), link.as_link()
        provider = self.providers.get(link.provider)
        if provider is None:
            raise NotLinked(f"link {actor} {interface} → {link.target}: no provider {link.provider!r} runs on "
                            f"node {self.name}")
        return provider, link.as_link()

    def _link_config(self, actor: str) -> dict[str, str]:
        merged: dict[str, str] = {}
        for link in self.links.for_source(actor):
            merged.update(link.config)
        return merged

    # -- logs -----------------------------------------------------------------------

    def _actor_log(self, actor: str, level: str, context: str, message: str) -> None:
        """An actor's log line: to the node's log, and (when in a lattice) to the lattice."""
        actor_log.log(LEVELS.get(level, logging.INFO), "[%s] %s%s", actor, f"{context}: " if context else "",
                      message, extra={"actor": actor, "actor_context": context})
        self.logbook.add(actor, level, context, message)
        if self.port is not None:
            self.port.publish_log(actor, level, context, message)

    def recent_logs(self, actor: str | None = None, lines: int = 100) -> list[dict[str, Any]]:
        """The last ``lines`` log records of ``actor`` (or of every actor) on this node, oldest first."""
        return self.logbook.recent(actor, lines)

    # -- inventory ------------------------------------------------------------------

    def uptime_s(self) -> float:
        return round(time.time() - self.started_at, 1) if self.started_at else 0.0

    def summary(self) -> dict[str, Any]:
        """What a ping answers: who this node is, in a few fields."""
        return {"id": self.name, "name": self.name, "lattice": self.lattice, "labels": dict(self.config.labels),
                "version": __version__, "uptime_s": self.uptime_s(), "actors": len(self.actors),
                "providers": sorted(self.providers)}

    def inventory(self) -> dict[str, Any]:
        return {
            "id": self.name, "name": self.name, "lattice": self.lattice, "labels": dict(self.config.labels),
            "version": __version__, "uptime_s": self.uptime_s(),
            "actors": self.list_actors(),
            "providers": [describe(name, self.providers[name]) for name in sorted(self.providers)],
            "links": self.list_links(),
            "hardware": self.hardware(),
        }

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
        out: dict[str, Any] = {}
        for name in HARDWARE_PROVIDERS:
            if name in self.providers:
                try:
                    out[name] = self.providers[name].describe()
                except Exception:
                    log.exception("provider %s: describe() failed", name)
        return out

    def _hardware_method(self, provider: str, method: str) -> Callable[..., Any]:
        p = self.providers.get(provider)
        if p is None:
            raise ProviderNotFound(f"no provider {provider!r} runs on node {self.name} "
                                   f"(running: {', '.join(sorted(self.providers)) or 'none'})")
        func: Callable[..., Any] | None = getattr(p, method, None)
        if not callable(func):
            raise ProviderNotFound(f"provider {provider!r} on node {self.name} has no {method}")
        return func

    async def _hardware_call(self, provider: str, method: str, what: str, *args: Any) -> Any:
        """``method`` of the hardware provider in a worker thread; its ProviderError as the host's,
        prefixed with ``what`` and this node."""
        func = self._hardware_method(provider, method)
        try:
            return await asyncio.to_thread(func, *args)
        except ProviderError as exc:
            raise hardware_error(f"{what} on node {self.name}: {exc.message}", exc.code) from exc

    async def display_snapshot(self, provider: str = "display") -> bytes:
        """A PNG of what the display shows (its last flushed frame), real or simulated."""
        png: bytes = await self._hardware_call(provider, "snapshot", "display snapshot")
        return png

    async def gpio_simulate(self, pin: int, level: bool, provider: str = "gpio") -> None:
        """Drive a simulated input pin (a button press); refused on real GPIO."""
        await self._hardware_call(provider, "simulate", f"gpio simulate pin {pin}", pin, level)

    async def gpio_read(self, pin: int, provider: str = "gpio") -> dict[str, Any]:
        """An allowed pin's level, and who holds it (``{"pin", "level", "mode", "owner"}``)."""
        result: dict[str, Any] = await self._hardware_call(provider, "operator_read", f"gpio read pin {pin}", pin)
        return result

    async def gpio_write(self, pin: int, level: bool, provider: str = "gpio") -> None:
        """Drive an allowed pin no actor owns; refused (busy) on a pin an actor owns."""
        await self._hardware_call(provider, "operator_write", f"gpio write pin {pin}", pin, level)

def _read(spec: ActorSpec) -> bytes:
    if not spec.file.exists():
        raise StartRefused(f"actor {spec.name!r}: component file {spec.file} does not exist", actor=spec.name)
    try:
        return read_component(spec.file)
    except OSError as exc:
        raise StartRefused(f"actor {spec.name!r}: cannot read {spec.file}: {exc.strerror}", actor=spec.name) from exc
