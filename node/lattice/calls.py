"""Capability calls across the lattice, the calling side.

The calling node resolves a link whose target is ``<node>/<provider>`` to a
:class:`RemoteProvider`: a stand-in with the provider's methods that turns each call into
a NATS request to ``drupelet.<lattice>.prov.<node>.<provider>`` with a deadline (the
target node's :class:`~drupelet.node.lattice.provider_server.ProviderServer` answers).
A timeout or an unreachable node becomes the interface's error value, never a hang or a
trap. Resources (buckets, I2C buses) cross as handles, released when the guest drops
them. Payloads are JSON objects; bytes travel as ``{"$b": "<base64>"}``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import itertools
import json
import logging
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.providers.base import (Busy, Denied, Link, NotFound, Provider, ProviderError, Timeout,
                                     Unavailable, current_reply)

from drupelet.node.lattice import protocol, subjects
from drupelet.node.lattice.connect import unsubscribe_all
from drupelet.node.lattice.protocol import decode, encode

log = logging.getLogger(__name__)

RELEASE_TIMEOUT_S = 1.0

_ERRORS: dict[str, type[ProviderError]] = {
    "not-found": NotFound, "denied": Denied, "busy": Busy, "unavailable": Unavailable, "timeout": Timeout,
}


class ForwardedError(ProviderError):
    """A provider error raised on another node, with that node's code (``io``,
    ``i2c:no-acknowledge:address``…): it stands for an error of another process, so its
    code comes with the reply."""

    def __init__(self, message: str, *, code: str, provider: str | None = None) -> None:
        super().__init__(message, provider=provider)
        self.forwarded_code = code

    @property
    def code(self) -> str:  # type: ignore[override]
        return self.forwarded_code


def step(coro: Any, tasks: set[asyncio.Task[None]]) -> None:
    """Run a coroutine that normally completes without waiting (nats-py's ``publish``
    only buffers the message and kicks its flusher) right here, on the loop, without a
    task; should it wait after all, a task kept in ``tasks`` finishes it. An error raised
    before it waits is raised here."""
    try:
        waiting = coro.send(None)
    except StopIteration:
        return

    async def finish(waiting: Any) -> None:
        while True:
            try:
                await (waiting if waiting is not None else asyncio.sleep(0))
            except BaseException as exc:  # the coroutine reads the outcome itself as it resumes
                log.debug("a remote call's send waited and got %s", type(exc).__name__)
            try:
                waiting = coro.send(None)
            except StopIteration:
                return

    def done(task: asyncio.Task[None]) -> None:
        tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("remote call: %s", task.exception())

    task = asyncio.ensure_future(finish(waiting))
    tasks.add(task)
    task.add_done_callback(done)


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
        self._tasks: set[asyncio.Task[None]] = set()

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
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def send(self, subject: str, payload: bytes, answer: concurrent.futures.Future[bytes]) -> str:
        """On the loop: publish ``payload`` with a fresh reply subject; returns its token."""
        token = str(next(self._ids))
        self._pending[token] = answer
        try:
            step(self.nc.publish(subject, payload, reply=f"{self.prefix}.{token}"), self._tasks)
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

class RemoteProvider(Provider):
    """Another node's provider, as the bindings see it. Methods run on worker threads."""

    def __init__(self, nc: NatsClient, loop: asyncio.AbstractEventLoop, lattice: str, caller: str,
                 node: str, provider: str, timeout_s: float, inbox: ReplyInbox) -> None:
        super().__init__()
        self.nc = nc
        self.inbox = inbox
        self.loop = loop
        self.caller = caller
        self.node = node
        self.name = provider
        self.subject = subjects.provider_calls(lattice, node, provider, caller)
        self.timeout_s = timeout_s

    def call(self, link: Link, op: str, args: list[Any], handle: int | None = None,
             timeout_s: float | None = None) -> Any:
        timeout = timeout_s if timeout_s is not None else _link_timeout(link, self.timeout_s)
        call: dict[str, Any] = {"source": link.source, "interface": link.interface, "op": op, "args": encode(args),
                                "handle": handle}
        answering = current_reply()
        if answering is not None:  # the reply of the message the actor is handling: it may answer it there too
            call["reply"] = answering
        payload = json.dumps(call, separators=(",", ":")).encode()
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
            known = _ERRORS.get(err["code"])
            if known is not None:
                raise known(err["message"], provider=self.name)
            raise ForwardedError(err["message"], code=err["code"], provider=self.name)
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

    # the one way the bindings call a provider

    def invoke(self, link: Link, op: str, args: list[Any]) -> Any:
        """Any operation the provider lists in ``operations``; the provider's node checks.
        A resource it returns (``{"$h": n, "methods": […]}``) is a :class:`RemoteResource`."""
        wait_arg = WAIT_ARGS.get((link.interface, op))
        timeout = None
        if wait_arg is not None and len(args) > wait_arg and isinstance(args[wait_arg], int):
            timeout = max(args[wait_arg], 1) / 1000.0 + _link_timeout(link, self.timeout_s)
        result = self.call(link, op, args, timeout_s=timeout)
        if isinstance(result, dict) and isinstance(result.get("$h"), int):
            return RemoteResource(self, link, result["$h"], frozenset(result.get("methods") or ()))
        return result


WAIT_ARGS: dict[tuple[str, str], int] = {("wasmcloud:messaging/consumer", "request"): 2}
"""Operations that wait on their own (a request's ``timeout-ms``): the index of that
argument, added to the call's deadline so the wait is not cut short by it."""


def _link_timeout(link: Link, default_s: float) -> float:
    raw = link.config.get("timeout_ms")
    if raw is None:
        return default_s
    try:
        return max(int(raw), 1) / 1000.0
    except ValueError:
        return default_s


class RemoteResource:
    """A resource (a keyvalue bucket, an I2C bus) held on another node, by handle; the
    methods its class lists there are forwarded as ``handle.<method>``."""

    def __init__(self, remote: RemoteProvider, link: Link, handle: int, methods: frozenset[str]) -> None:
        self.remote = remote
        self.link = link
        self.handle = handle
        self.methods = methods
        self.closed = False

    def __getattr__(self, name: str) -> Any:
        if name not in self.__dict__.get("methods", frozenset()):
            raise AttributeError(name)

        op = f"handle.{name}"

        def forward(*args: Any) -> Any:
            return self.remote.call(self.link, op, list(args), self.handle)
        self.__dict__[name] = forward  # found directly from now on, without __getattr__
        return forward

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self.remote.call(self.link, "handle.release", [], self.handle, timeout_s=RELEASE_TIMEOUT_S)
        except ProviderError as exc:
            log.debug("release of handle %d on %s: %s", self.handle, self.remote.node, exc.message)


