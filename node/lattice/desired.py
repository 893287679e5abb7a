"""The one owner of desired state: the lattice state, applied to this node's host.

The control plane *writes* what should be (a link, this node's desired actors, its
labels) into the lattice state; :class:`DesiredState` *applies* it, for every change the
state reports (this node's own writes included), for the whole view at boot (the disk
copy, so a reboot without network restores actors and links), and every
``reconcile_interval_s`` for desired actors that could not start yet.

An actor's record says which component (``digest``), how many instances and what
config. :meth:`DesiredState.converge` makes the host match the record of one actor —
presence, component, instance count, config — and runs one at a time per actor, so the
control plane and the state listener converging the same actor never add up their
instances.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from typing import Any, Protocol

from drupelet.node.config import LinkSpec
from drupelet.node.errors import DrupeletError
from drupelet.node.host.api import HostApi
from drupelet.node.lattice.state import LatticeState, actor_key, parse_key

log = logging.getLogger(__name__)

RECONCILE_INTERVAL_S = 15.0
"""How often desired actors that are not as recorded (say, an artifact not yet reachable)
are tried again."""


class Artifacts(Protocol):
    async def get(self, digest: str) -> bytes: ...


class DesiredState:
    """Applies the lattice state to ``host``; see the module docstring."""

    def __init__(self, host: HostApi, state: LatticeState, artifacts: Artifacts | None, *,
                 config_links: list[LinkSpec], boot_labels: Mapping[str, str],
                 reconcile_interval_s: float = RECONCILE_INTERVAL_S) -> None:
        self.host = host
        self.state = state
        self.artifacts = artifacts
        self.node = host.name
        self.config_links = list(config_links)
        self.boot_labels = dict(boot_labels)
        self.reconcile_interval_s = reconcile_interval_s
        self._locks: dict[str, asyncio.Lock] = {}
        self._restoring = False
        self._task: asyncio.Task[None] | None = None

    async def restore(self) -> None:
        """Apply the whole view (from disk, before the bucket is reached), then follow changes."""
        self._restoring = True
        try:
            # revocations first: a revoked actor recorded as desired is not started, even for a moment
            await self.host.set_revoked(self.state.revoked())
            for key, value in self.state.items():
                await self.apply(key, value)
        finally:
            self._restoring = False
        self.state.on_change(self.apply)
        self._task = asyncio.create_task(self._reconcile_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    # -- one entry --------------------------------------------------------------------

    async def apply(self, key: str, value: dict[str, Any] | None) -> None:
        """Make this node match one entry of the lattice state. Never raises."""
        try:
            kind, names = parse_key(key)
            if kind == "link":
                await self._apply_link(names[0], names[1], value)
            elif kind == "actor" and names[0] == self.node:
                await self.converge(names[1])
            elif kind == "revoked":
                await self.host.set_revoked(self.state.revoked())
            elif kind == "labels" and names[0] == self.node and value is not None:
                self.host.replace_labels({**value, **self.boot_labels} if self._restoring else dict(value))
        except DrupeletError as exc:
            log.warning("cannot apply lattice state %s: %s", key, exc.message)
        except Exception:
            log.exception("cannot apply lattice state %s", key)

    async def _apply_link(self, source: str, interface: str, value: dict[str, Any] | None) -> None:
        if value is not None:
            await self.host.put_link(source, interface, value["target"], value.get("config", {}), strict=False)
            return
        if self.host.link_for(source, interface) is not None:
            await self.host.del_link(source, interface)
        own = self._config_link(source, interface)
        if own is not None:  # the node config's own link comes back
            await self.host.put_link(own.source, interface, own.target, own.config)

    def _config_link(self, source: str, interface: str) -> LinkSpec | None:
        """The node config's ``[[links]]`` entry covering ``source``'s ``interface``, if any."""
        for spec in self.config_links:
            if spec.source != source:
                continue
            try:
                if interface in self.host.link_interfaces(spec.interface, spec.target):
                    return spec
            except DrupeletError:
                continue
        return None

    # -- actors -----------------------------------------------------------------------

    def locked(self, actor: str) -> asyncio.Lock:
        """The lock that serializes every change of ``actor`` on this node: converging it,
        and the control plane's start, stop and scale (which write its record)."""
        lock = self._locks.get(actor)
        if lock is None:
            lock = self._locks[actor] = asyncio.Lock()
        return lock

    async def converge(self, actor: str) -> None:
        """Make ``actor`` on this node what its record says (absent: not running, if it
        was started from a record). One converge per actor at a time."""
        async with self.locked(actor):
            await self._converge(actor, self.state.get(actor_key(self.node, actor)))

    async def _converge(self, name: str, want: dict[str, Any] | None) -> None:
        host = self.host
        running = host.has_actor(name)
        if want is None:
            if running:
                await host.stop_actor(name)
            return
        if running and host.actor_info(name)["digest"] != want["digest"]:
            await host.stop_actor(name)
            running = False
        instances = int(want["instances"])
        if not running:
            if instances < 1:
                return
            if self.artifacts is None:
                raise DrupeletError("no artifact store to fetch the component from")
            wasm = await self.artifacts.get(want["digest"])
            await host.start_actor(name, wasm, instances=instances, config=want.get("config", {}),
                                   source=want["digest"])
            return
        info = host.actor_info(name)
        if info["config"] != want.get("config", {}):
            host.set_actor_config(name, dict(want.get("config", {})))
        if info["instances"] != instances and instances > 0:
            await host.scale_actor(name, instances)

    async def _reconcile_forever(self) -> None:
        while True:
            await asyncio.sleep(self.reconcile_interval_s)
            for want in self.state.actors_for(self.node):
                name = want["name"]
                try:
                    await self.converge(name)
                except DrupeletError as exc:
                    log.info("desired actor %s is not as recorded yet: %s", name, exc.message)
                except Exception:  # a provider's or host's bug: log it, keep reconciling
                    log.exception("reconciling actor %s failed", name)
