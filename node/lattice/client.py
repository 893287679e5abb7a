"""A client of the lattice's control interface, over a plain NATS connection.

The CLI uses it; so can any script. It speaks only the wire protocol of
docs/protocol.md, never the node's internals.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.node.errors import DrupeletError
from drupelet.node.lattice import protocol, requests, subjects
from drupelet.node.lattice.admin import LATTICE_WRITES, StateWriter
from drupelet.node.lattice.connect import CLIENT_HINT, close_quietly, connect, tls_context
from drupelet.node.lattice.errors import (AuthError, BadRequest, ErrorReply, LatticeError, NatsUnavailable, NoAnswer,
                                          NoNode, NotPermitted, Unreachable)
from drupelet.node.lattice.latticedir import creds_grant
from drupelet.node.lattice.roles import Grant, permits
from drupelet.node.lattice.statekeys import kv_subject

PING_WINDOW_S = 0.5
_VIOLATION = re.compile(r'permissions violation for (publish|subscription) to "([^"]+)"', re.IGNORECASE)

log = logging.getLogger(__name__)


async def open_connection(url: str, *, creds: str | None = None, tls_ca: str | None = None, timeout_s: float = 3.0,
                          error_cb: Callable[[Exception], Awaitable[None]] | None = None,
                          name: str = "drupelet-cli") -> tuple[NatsClient, Grant | None]:
    """A command's connection, and what its credentials allow (read from their user JWT):
    TLS with ``tls_ca`` (or the system's CAs for a ``tls://`` URL), replies to the inbox its
    credentials may read. :class:`Unreachable` with the reason when it cannot connect."""
    grant = None
    if creds:
        try:
            grant = creds_grant(Path(creds))
        except AuthError as exc:
            raise Unreachable(f"cannot connect to NATS at {url}: {exc.message}") from None
    inbox = subjects.inbox_prefix(grant.name) if grant is not None and subjects.TOKEN.match(grant.name) else None
    try:
        tls = tls_context(tls_ca) if tls_ca or url.startswith("tls://") else None
        nc = await connect(url, name=name, creds=creds, timeout_s=timeout_s, hint=CLIENT_HINT, tls=tls,
                           inbox_prefix=inbox, error_cb=error_cb)
    except NatsUnavailable as exc:
        raise Unreachable(exc.message) from None
    return nc, grant


class LatticeClient:
    """Requests to the lattice's nodes, and the lattice state's admin writes (:mod:`.admin`).

    With credentials (``grant``, read from their user JWT), a request the credentials do not
    allow is refused at once with :class:`NotPermitted` before anything is sent; one the
    server refuses all the same (a permissions violation) fails the waiting request with
    it, instead of leaving it to time out."""

    def __init__(self, nc: NatsClient, lattice: str, *, timeout_s: float = 10.0, grant: Grant | None = None,
                 domain: str | None = None) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout_s = timeout_s
        self.grant = grant
        self.domain = domain
        self.writer = StateWriter(nc, lattice, domain=domain)
        self._refusals: dict[str, list[asyncio.Future[None]]] = {}
        self.violations: list[str] = []
        """The subjects the server refused (permissions violations), as it spelled them."""

    @classmethod
    async def connect(cls, url: str, lattice: str, *, creds: str | None = None, timeout_s: float = 10.0,
                      connect_timeout_s: float = 3.0, tls_ca: str | None = None,
                      domain: str | None = None) -> LatticeClient:
        holder: list[LatticeClient] = []

        async def on_error(exc: Exception) -> None:
            if holder:
                holder[0]._on_error(exc)
            else:
                log.debug("NATS: %s", exc)

        nc, grant = await open_connection(url, creds=creds, tls_ca=tls_ca, timeout_s=connect_timeout_s,
                                          error_cb=on_error)
        client = cls(nc, lattice, timeout_s=timeout_s, grant=grant, domain=domain)
        holder.append(client)
        return client

    async def close(self) -> None:
        await close_quietly(self.nc)

    async def __aenter__(self) -> LatticeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # -- permissions --------------------------------------------------------------------------

    def _on_error(self, exc: Exception) -> None:
        """nats-py's error callback: a permissions violation fails the requests waiting on that subject."""
        match = _VIOLATION.search(str(exc))
        if match is None:
            log.debug("NATS: %s", exc)
            return
        subject = match.group(2)
        self.violations.append(subject)
        for waiter in self._refusals.pop(subject.lower(), []):
            if not waiter.done():
                waiter.set_exception(NotPermitted(f"not permitted: the NATS server refused {match.group(1)} on "
                                                  f"{subject} (permissions violation)"))

    def check(self, subject: str, what: str) -> None:
        """:class:`NotPermitted` when these credentials may not publish on ``subject``."""
        if self.grant is not None:
            self.grant.check_publish(subject, what)

    def check_artifact_write(self, what: str) -> None:
        """:class:`NotPermitted` unless these credentials may write the artifact store (an admin's)."""
        from drupelet.node.lattice.artifacts import bucket_name

        self.check(subjects.object_store_meta(bucket_name(self.lattice), "_"), f"{what} (a write to the artifact "
                   "store)")

    async def _request(self, subject: str, payload: dict[str, Any], what: str, timeout_s: float | None,
                       doing: str = "") -> Any:
        self.check(subject, doing or what)
        timeout = timeout_s or self.timeout_s
        refused: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._refusals.setdefault(subject.lower(), []).append(refused)
        asking: asyncio.Future[Msg] = asyncio.ensure_future(self.nc.request(subject, json.dumps(payload).encode(),
                                                                            timeout=timeout))
        waiting: list[asyncio.Future[Any]] = [asking, refused]
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiters = self._refusals.get(subject.lower(), [])
            if refused in waiters:
                waiters.remove(refused)
            if refused.done() and not asking.done():
                asking.cancel()
                await asyncio.gather(asking, return_exceptions=True)
        if refused.done() and refused.exception() is not None and not (asking.done() and not asking.cancelled()
                                                                      and asking.exception() is None):
            raise refused.exception()  # type: ignore[misc]
        try:
            msg = asking.result()
        except nats.errors.NoRespondersError:
            raise NoNode(f"{what}: no node answers") from None
        except nats.errors.TimeoutError:
            raise NoAnswer(f"{what}: no answer within {timeout:g} s") from None
        reply = protocol.parse_reply(msg.data)
        if not reply["ok"]:
            err = reply.get("error") or {"code": "error", "message": "unknown error"}
            raise ErrorReply(err["message"], code=err["code"])
        return reply.get("result")

    async def node(self, node: str, verb: str, payload: dict[str, Any] | None = None,
                   timeout_s: float | None = None) -> Any:
        try:
            subject = subjects.node_control(self.lattice, node, verb)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        try:
            return await self._request(subject, payload or {}, f"node {node!r}", timeout_s,
                                       f"{verb} to node {node}")
        except NoNode:
            raise NoNode(f"no node named {node!r} in lattice {self.lattice!r}") from None

    async def lattice_request(self, verb: str, payload: dict[str, Any] | None = None,
                              timeout_s: float | None = None) -> Any:
        """A lattice request: a read goes to the nodes (one answers); a write (``link.put``,
        ``link.del``, ``config.put``, ``revocation.put``) this client makes in the lattice
        state itself, as an admin (:mod:`.admin`)."""
        if verb in LATTICE_WRITES:
            self.check(kv_subject(self.writer.bucket, "x", self.domain), f"{verb} (a write to the lattice state)")
            return await self.writer.request(verb, payload or {}, self._provider_interfaces)
        return await self._request(subjects.lattice_control(self.lattice, verb), payload or {},
                                   f"lattice {self.lattice!r}", timeout_s, f"{verb} to the lattice")

    async def _provider_interfaces(self, target: str) -> list[str] | None:
        """What the provider of a link target serves, from the inventory of a node that runs it."""
        node, _, provider = target.partition("/")
        try:
            summaries = await self.ping()
        except DrupeletError:
            return None
        names = [n["name"] for n in summaries if provider in n.get("providers", []) and node in ("local", n["name"])]
        for name in names[:1]:
            try:
                inventory = await self.node(name, "inventory")
            except DrupeletError:
                return None
            for p in inventory.get("providers", []):
                if p.get("name") == provider:
                    return [str(i) for i in p.get("interfaces", [])]
        return None

    # -- actors: a node starts them, an admin records them ----------------------------------------

    async def start_actor(self, node: str, payload: dict[str, Any], timeout_s: float | None = None) -> Any:
        self.check(subjects.node_control(self.lattice, node, "actor.start"), f"actor.start to node {node}")
        self.check(kv_subject(self.writer.bucket, "x", self.domain), "actor.start (it records the actor in the "
                   "lattice state)")

        async def ask(n: str, verb: str, body: dict[str, Any]) -> Any:
            return await self.node(n, verb, body, timeout_s=timeout_s if verb == "actor.start" else None)

        return await self.writer.start_actor(node, payload, ask)

    async def stop_actor(self, node: str, name: str) -> Any:
        self.check(kv_subject(self.writer.bucket, "x", self.domain), "actor.stop (it deletes the actor's record)")
        return await self.writer.stop_actor(node, name, self.node)

    async def scale_actor(self, node: str, name: str, instances: int) -> Any:
        self.check(kv_subject(self.writer.bucket, "x", self.domain), "actor.scale (it changes the actor's record)")
        req = requests.parse_as(requests.ActorScale, {"name": name, "instances": instances})
        return await self.writer.scale_actor(node, req, self.node)

    async def ping(self, window_s: float = PING_WINDOW_S) -> list[dict[str, Any]]:
        """Every node's summary, collected for ``window_s``."""
        self.check(subjects.ping(self.lattice), "ping")
        inbox = self.nc.new_inbox()
        found: dict[str, dict[str, Any]] = {}
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(subjects.ping(self.lattice), b"", reply=inbox)
            loop = asyncio.get_running_loop()
            deadline = loop.time() + window_s
            while (remaining := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=remaining)
                except nats.errors.TimeoutError:
                    break
                try:
                    reply = protocol.parse_reply(msg.data)
                except DrupeletError:
                    continue
                result = reply.get("result")
                if reply["ok"] and isinstance(result, dict) and isinstance(result.get("name"), str):
                    found[result["name"]] = result
        finally:
            await sub.unsubscribe()
        return [found[k] for k in sorted(found)]

    async def select(self, node: str | None, labels: dict[str, str]) -> list[str]:
        """Node names matching a name or every given label."""
        nodes = await self.ping()
        if node:
            if not any(n["name"] == node for n in nodes):
                raise NoNode(f"no node named {node!r} in lattice {self.lattice!r} "
                                   f"(nodes: {', '.join(n['name'] for n in nodes) or 'none'})")
            return [node]
        chosen = [n["name"] for n in nodes
                  if all(n.get("labels", {}).get(k) == v for k, v in labels.items())]
        if not chosen:
            want = ", ".join(f"{k}={v}" for k, v in labels.items()) or "any"
            raise NoNode(f"no node in lattice {self.lattice!r} matches labels {want}")
        return chosen

    async def stream(self, subject: str) -> AsyncIterator[Any]:
        """Messages on ``subject`` until the caller stops iterating."""
        queue: asyncio.Queue[Any] = asyncio.Queue(maxsize=1000)

        async def on_msg(msg: Any) -> None:
            if queue.full():
                queue.get_nowait()  # drop the oldest rather than block the connection
            queue.put_nowait(msg)

        if self.grant is not None and not permits(self.grant.permissions.sub_allow, self.grant.permissions.sub_deny,
                                                  subject):
            raise NotPermitted(f"not permitted: {self.grant.role} {self.grant.name!r} may not follow {subject} "
                               "(outside its credentials' permissions)")
        sub = await self.nc.subscribe(subject, cb=on_msg)
        try:
            while True:
                try:
                    yield await asyncio.wait_for(queue.get(), 1.0)
                except asyncio.TimeoutError:
                    if self.nc.is_closed or not self.nc.is_connected:
                        raise Unreachable("the connection to NATS was lost") from None
        finally:
            if not self.nc.is_closed:
                await sub.unsubscribe()


__all__ = ["LatticeClient", "LatticeError", "PING_WINDOW_S"]
