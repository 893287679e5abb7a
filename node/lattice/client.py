"""A client of the lattice's control interface, over a plain NATS connection.

The CLI uses it; so can any script. It speaks only the wire protocol of
docs/protocol.md, never the node's internals.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient

from drupelet.node.lattice import protocol
from drupelet.node.lattice import subjects
from drupelet.node.errors import DrupeletError
from drupelet.node.lattice.errors import BadRequest, ErrorReply, NatsUnavailable, NoAnswer, NoNode, Unreachable
from drupelet.node.lattice.errors import LatticeError
from drupelet.node.lattice.connect import CLIENT_HINT, close_quietly, connect

PING_WINDOW_S = 0.5

log = logging.getLogger(__name__)


class LatticeClient:
    def __init__(self, nc: NatsClient, lattice: str, *, timeout_s: float = 10.0) -> None:
        self.nc = nc
        self.lattice = lattice
        self.timeout_s = timeout_s

    @classmethod
    async def connect(cls, url: str, lattice: str, *, creds: str | None = None, timeout_s: float = 10.0,
                      connect_timeout_s: float = 3.0) -> LatticeClient:
        try:
            nc = await connect(url, name="drupelet-cli", creds=creds, timeout_s=connect_timeout_s, hint=CLIENT_HINT)
        except NatsUnavailable as exc:
            raise Unreachable(exc.message) from None
        return cls(nc, lattice, timeout_s=timeout_s)

    async def close(self) -> None:
        await close_quietly(self.nc)

    async def __aenter__(self) -> LatticeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _request(self, subject: str, payload: dict[str, Any], what: str, timeout_s: float | None) -> Any:
        try:
            msg = await self.nc.request(subject, json.dumps(payload).encode(), timeout=timeout_s or self.timeout_s)
        except nats.errors.NoRespondersError:
            raise NoNode(f"{what}: no node answers") from None
        except nats.errors.TimeoutError:
            raise NoAnswer(f"{what}: no answer within {timeout_s or self.timeout_s:g} s") from None
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
            return await self._request(subject, payload or {}, f"node {node!r}", timeout_s)
        except NoNode:
            raise NoNode(f"no node named {node!r} in lattice {self.lattice!r}") from None

    async def lattice_request(self, verb: str, payload: dict[str, Any] | None = None,
                              timeout_s: float | None = None) -> Any:
        return await self._request(subjects.lattice_control(self.lattice, verb), payload or {},
                                   f"lattice {self.lattice!r}", timeout_s)

    async def ping(self, window_s: float = PING_WINDOW_S) -> list[dict[str, Any]]:
        """Every node's summary, collected for ``window_s``."""
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
