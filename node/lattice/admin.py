"""What an admin's client writes: the lattice state's links, named config, revocations and
desired actors.

Nodes only read the lattice state (and write their own records: their labels); the keys
that say what the lattice should be are written by an admin's client, straight into the KV
bucket, which it makes on its first write. So a node's credentials, stolen with its Pi,
cannot change a link, the named config or another node's actors. The checks a node made
when it answered ``link.put`` are made here, from the same declarations:
:func:`~drupelet.node.lattice.requests.parse` for the fields, :func:`link_interfaces` for
the interfaces of a package, the key and value checks of the state.

``actor.start`` is still a request to the node that runs the actor (it compiles, checks
the claims and answers at once); the admin's client then records the actor
(``actor.<node>.<name>``) so the node restores it after a restart. ``actor.stop`` and
``actor.scale`` change the record first, then ask the node.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.js import api
from nats.js.kv import KV_DEL, KV_OP, KeyValue

from drupelet.node.errors import DrupeletError
from drupelet.node.host.errors import LinkError
from drupelet.node.host.links import link_interfaces, package_matches, parse_interface
from drupelet.node.lattice import requests
from drupelet.node.lattice.errors import BadRequest, ErrorReply, StateUnavailable
from drupelet.node.lattice.requests import ActorScale, ConfigPut, LinkDel, LinkPut, RevocationPut
from drupelet.node.lattice.state import (KV_HISTORY, actor_key, bucket_name, check_value, config_key, link_key,
                                         parse_key, revoked_key)
from drupelet.node.lattice.statewrite import encode_value, publish_entry

log = logging.getLogger(__name__)

__all__ = ["LATTICE_WRITES", "StateWriter"]

TIMEOUT_S = 5.0
LATTICE_WRITES = frozenset(requests.write_verbs(requests.LATTICE_REQUESTS))
"""The lattice requests an admin's client carries out itself (no node answers them)."""

NodeRequest = Callable[[str, str, dict[str, Any]], Awaitable[Any]]
"""Send a request to a node: ``(node, verb, payload)`` → its result."""
ProviderInterfaces = Callable[[str], Awaitable[list[str] | None]]
"""The interfaces a link target's provider serves, when a node that runs it answers."""


class StateWriter:
    """Writes the lattice state's admin keys through an admin's NATS connection."""

    def __init__(self, nc: NatsClient, lattice: str, *, domain: str | None = None,
                 timeout_s: float = TIMEOUT_S) -> None:
        self.nc = nc
        self.lattice = lattice
        self.domain = domain
        self.bucket = bucket_name(lattice)
        self.timeout_s = timeout_s
        self._js = nc.jetstream(domain=domain, timeout=timeout_s)
        self._kv: KeyValue | None = None

    async def ensure(self) -> None:
        """Make the bucket now if it does not exist (an admin's client; nodes wait for it)."""
        await self._bucket()

    async def _bucket(self) -> KeyValue:
        """The bucket, made on the first write when it does not exist yet (only an admin may)."""
        if self._kv is None:
            try:
                try:
                    self._kv = await self._js.key_value(self.bucket)
                except nats.js.errors.BucketNotFoundError:
                    self._kv = await self._js.create_key_value(
                        bucket=self.bucket, history=KV_HISTORY, storage=api.StorageType.FILE,
                        description=f"drupelet lattice {self.lattice}: links, named config, desired actors, labels")
                    log.info("created the lattice state bucket %s", self.bucket)
            except (nats.errors.Error, OSError, TimeoutError) as exc:
                raise StateUnavailable(f"the lattice state bucket {self.bucket} is unreachable "
                                       f"({type(exc).__name__}: {exc})", bucket=self.bucket) from exc
        return self._kv

    async def get(self, key: str) -> dict[str, Any] | None:
        kv = await self._bucket()
        try:
            entry = await kv.get(key)
        except nats.js.errors.KeyNotFoundError:  # deleted keys too
            return None
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise StateUnavailable(f"cannot read {key}: {type(exc).__name__}: {exc}", key=key,
                                   bucket=self.bucket) from exc
        try:
            return check_value(key, json.loads(entry.value or b""))
        except (ValueError, DrupeletError):
            return None

    async def keys(self, prefix: str) -> list[str]:
        """The keys that hold a value and start with ``prefix`` + ``.``."""
        kv = await self._bucket()
        try:
            found = await kv.keys()
        except nats.js.errors.NoKeysError:
            return []
        except (nats.errors.Error, OSError, TimeoutError) as exc:
            raise StateUnavailable(f"cannot list the keys of {self.bucket}: {type(exc).__name__}: {exc}",
                                   bucket=self.bucket) from exc
        return sorted(k for k in found if k.startswith(prefix + "."))

    async def put(self, key: str, value: Mapping[str, Any]) -> int:
        return await self._publish(key, encode_value(check_value(key, value)), None)

    async def delete(self, key: str) -> int:
        parse_key(key)
        return await self._publish(key, b"", {KV_OP: KV_DEL})

    async def _publish(self, key: str, data: bytes, headers: dict[str, str] | None) -> int:
        """One entry; when the bucket has gone since this client opened it (an admin deleted
        it), it is made again and the entry written there."""
        for attempt in (1, 2):
            await self._bucket()
            try:
                return await publish_entry(self.nc, self._js, self.bucket, key, data, headers, domain=self.domain,
                                           timeout_s=self.timeout_s)
            except StateUnavailable:
                if attempt == 2 or not self.nc.is_connected:
                    raise
                self._kv = None  # look again: it may have to be made anew
        raise AssertionError("unreachable")

    # -- the lattice's write requests --------------------------------------------------------

    async def request(self, verb: str, payload: Mapping[str, Any],
                      provider_interfaces: ProviderInterfaces | None = None) -> Any:
        """Carry out one of :data:`LATTICE_WRITES`, checked as a node checked it; the result
        is what the node's reply carried."""
        req = requests.parse(verb, dict(payload))
        if isinstance(req, LinkPut):
            try:
                return await self.put_link(req, provider_interfaces)
            except LinkError as exc:  # refused as the node that answered refused it
                raise ErrorReply(exc.message, code=exc.code) from None
        if isinstance(req, LinkDel):
            return await self.del_link(req)
        if isinstance(req, ConfigPut):
            await self.put(config_key(req.name), dict(req.values))
            return dict(req.values)
        if isinstance(req, RevocationPut):
            return await self.revoke(req)
        raise BadRequest(f"{verb} is not written by a client")

    async def put_link(self, req: LinkPut, provider_interfaces: ProviderInterfaces | None = None) -> list[Any]:
        """One entry per interface; a package put whole or not at all (best effort)."""
        served: list[str] | None = None
        if "/" not in req.interface.partition("@")[0] and provider_interfaces is not None:
            served = await provider_interfaces(req.target)
        interfaces = _interfaces(req.interface, req.target, served)
        previous = {i: await self.get(link_key(req.source, i)) for i in interfaces}
        made: list[dict[str, Any]] = []
        try:
            for interface in interfaces:
                value = {"source": req.source, "interface": interface, "target": req.target,
                         "config": dict(req.config)}
                await self.put(link_key(req.source, interface), value)
                made.append(value)
        except DrupeletError:
            for value in made:
                name = str(value["interface"])
                old = previous[name]
                try:
                    key = link_key(req.source, name)
                    await (self.put(key, old) if old is not None else self.delete(key))
                except DrupeletError:
                    log.warning("could not undo link %s after a failed link.put", name)
            raise
        return made

    async def del_link(self, req: LinkDel) -> list[Any]:
        parse_interface(req.interface)
        gone = []
        for key in await self.keys(f"link.{req.source}"):
            value = await self.get(key)
            if value is not None and package_matches(str(value["interface"]), req.interface):
                gone.append(value)
        if not gone:
            raise BadRequest(f"no link for actor {req.source!r} and {req.interface}")
        for link in gone:
            await self.delete(link_key(req.source, str(link["interface"])))
        return gone

    async def revoke(self, req: RevocationPut) -> dict[str, Any]:
        from drupelet.node.security.keys import BadKey, decode_public

        try:
            decode_public(req.key, roles=("actor", "account", "operator"))
        except BadKey as exc:
            raise BadRequest(f"key {req.key[:8]}…: {exc.message}", field="key") from None
        value = {"key": req.key, "revoked_at": time.time()}
        await self.put(revoked_key(req.key), value)
        return value

    # -- desired actors -------------------------------------------------------------------------

    async def start_actor(self, node: str, payload: Mapping[str, Any], ask: NodeRequest) -> Any:
        """Ask ``node`` to start the actor, then record it; a record that cannot be written
        stops it again, so an actor that is not recorded does not run."""
        result = await ask(node, "actor.start", dict(payload))
        name = str(result["name"])
        try:
            await self.put(actor_key(node, name), {"name": name, "digest": result["digest"],
                                                   "instances": result["instances"],
                                                   "config": dict(result.get("config") or {}), "node": node})
        except DrupeletError:
            try:
                await ask(node, "actor.stop", {"name": name})
            except DrupeletError as exc:
                log.warning("actor %s on %s runs unrecorded: it could not be stopped (%s)", name, node, exc.message)
            raise
        return result

    async def stop_actor(self, node: str, name: str, ask: NodeRequest) -> Any:
        """Delete the actor's record (if it has one), then ask ``node`` to stop it. The node
        may already have stopped it, following the record: that is not an error."""
        key = actor_key(node, name)
        recorded = await self.get(key) is not None
        if recorded:
            await self.delete(key)
        try:
            return await ask(node, "actor.stop", {"name": name})
        except ErrorReply as exc:
            if recorded and exc.code == "actor-not-found":
                return None
            raise

    async def scale_actor(self, node: str, req: ActorScale, ask: NodeRequest) -> Any:
        key = actor_key(node, req.name)
        record = await self.get(key)
        if record is not None:
            await self.put(key, record | {"instances": req.instances})
        try:
            return await ask(node, "actor.scale", {"name": req.name, "instances": req.instances})
        except DrupeletError:
            if record is not None:
                await self.put(key, record)
            raise


def _interfaces(interface: str, target: str, served: list[str] | None) -> list[str]:
    """The interfaces a link put covers: the package's that the target provider serves, when
    a node running it said which; else every interface of the package that takes a link.
    :class:`~drupelet.node.host.errors.LinkError` (``bad-link``) for one that takes none."""
    known = link_interfaces(interface, target, None)
    if served is None or "/" in interface.partition("@")[0]:
        return known
    chosen = [i for i in known if i in served]
    if not chosen:
        raise LinkError(f"provider {target!r} serves no interface of {interface} (it serves "
                        f"{', '.join(served) or 'none'})", interface=interface, target=target)
    return chosen
