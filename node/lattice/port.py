"""The host's way into the lattice: deliveries, forwarded messages, remote providers, logs.

:class:`NatsPort` implements :class:`~drupelet.node.host.api.LatticePort` over the node's
NATS connection. The host calls it; it calls the host back (through
:class:`~drupelet.node.host.api.HostApi`) for every delivery that arrives.

* An actor running here takes the messages of ``drupelet.<lattice>.deliver.<actor>`` in a
  queue group named after it, so instances on several nodes share the load. A delivery
  whose handler fails is answered with the ``Drupelet-Error`` / ``Drupelet-Message``
  headers rather than left to time out.
* A provider's event for an actor that does not run here is published to that subject.
* Calls to other nodes' providers share one reply inbox (:class:`ReplyInbox`).
* Actor log lines go to ``drupelet.<lattice>.logs.<node>.<actor>`` as JSON.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import nats.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from drupelet.providers.base import HttpExchange, Message, Provider

from drupelet.node.errors import DrupeletError
from drupelet.node.host.api import HostApi
from drupelet.node.host.errors import ActorNotFound, Overloaded, PayloadTooLarge
from drupelet.node.host.links import HTTP_INCOMING
from drupelet.node.lattice import http, subjects
from drupelet.node.lattice.calls import RemoteProvider, ReplyInbox
from drupelet.node.lattice.connect import synced, unsubscribe_all
from drupelet.node.lattice.errors import BadRequest, NatsUnavailable
from drupelet.node.runtime.errors import CallFailed, NoReply

log = logging.getLogger(__name__)

HTTP_ANSWER_TIMEOUT_S = 120.0
"""How long the node that took an HTTP request waits for the actor's node to answer it;
the http provider's own ``request_timeout_ms`` answers the client sooner."""
PAUSE_LOAD = 0.5
"""An actor whose queue is this full takes no more deliveries for a while (before its queue
refuses them: the sooner the server stops sending, the less of a flood is on its way)."""
RESUME_LOAD = 0.0
"""A paused actor takes deliveries again once its queue is at most this full (empty)..."""
PAUSE_MIN_S = 0.25
PAUSE_MAX_S = 4.0
"""...and it has been paused at least PAUSE_MIN_S; a pause that comes again soon after
lasts twice as long as the last, up to PAUSE_MAX_S: a sustained flood gets in only in
short bursts."""
PAUSE_POLL_S = 0.02
PAUSE_LOG_INTERVAL_S = 30.0
"""At most one INFO line per this many seconds says an actor's deliveries paused."""


class NatsPort:
    """One node's NATS side of the host. :meth:`start` before the host starts, :meth:`close` after it stopped."""

    def __init__(self, nc: NatsClient, lattice: str, node: str, *, remote_call_timeout_s: float) -> None:
        self._nc = nc
        self.lattice = lattice
        self.node = node
        self.remote_call_timeout_s = remote_call_timeout_s
        self.inbox = ReplyInbox(nc)
        self._host: HostApi | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._deliveries: dict[str, Any] = {}
        self._http: dict[str, Any] = {}
        self._remotes: dict[tuple[str, str], RemoteProvider] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed = False
        self._paused: set[str] = set()
        self._paused_logged_at = 0.0
        self._pause_s: dict[str, tuple[float, float]] = {}
        """Per actor: the length of its last pause and when it ended."""

    @property
    def nats(self) -> NatsClient:
        return self._nc

    async def synced(self) -> None:
        await synced(self._nc)

    def bind(self, host: HostApi) -> None:
        """The host deliveries go to (set before it starts actors)."""
        self._host = host

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.inbox.start()

    async def close(self) -> None:
        """Stop taking deliveries and answering for remote calls. Idempotent."""
        self._closed = True
        subs = list(self._deliveries.values()) + list(self._http.values())
        self._deliveries.clear()
        self._http.clear()
        await unsubscribe_all(subs)
        await self.inbox.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- deliveries ---------------------------------------------------------------------

    async def actor_added(self, actor: str) -> None:
        async def on_http(msg: Msg) -> None:
            self._spawn(self._handle_http(actor, msg))

        await self._subscribe(actor)
        self._http[actor] = await self._nc.subscribe(subjects.http_to(self.lattice, actor), queue=actor, cb=on_http)
        await synced(self._nc)  # the server knows the subscriptions before the start returns

    async def _subscribe(self, actor: str) -> None:
        async def on_delivery(msg: Msg) -> None:
            self._spawn(self._handle_delivery(actor, msg))

        self._deliveries[actor] = await self._nc.subscribe(subjects.deliver(self.lattice, actor), queue=actor,
                                                           cb=on_delivery)

    async def actor_removed(self, actor: str) -> None:
        self._paused.discard(actor)
        self._pause_s.pop(actor, None)
        subs = [s for s in (self._deliveries.pop(actor, None), self._http.pop(actor, None)) if s is not None]
        if subs:
            await unsubscribe_all(subs)

    # -- HTTP requests --------------------------------------------------------------------

    async def serve_http(self, actor: str, exchange: HttpExchange) -> None:
        """An HTTP request taken here, for ``actor`` running elsewhere (:mod:`.http`)."""
        if not self._nc.is_connected:
            raise NatsUnavailable("the node is not connected to NATS")
        payload = http.delivery(self.node, "http", exchange)
        try:
            reply = await self._nc.request(subjects.http(self.lattice, actor, self.node), payload,
                                           timeout=HTTP_ANSWER_TIMEOUT_S)
        except nats.errors.NoRespondersError:
            raise ActorNotFound(f"no actor {actor!r} runs in lattice {self.lattice!r}", actor=actor) from None
        except nats.errors.TimeoutError:
            exchange.fail(f"actor {actor!r} sent no answer within {HTTP_ANSWER_TIMEOUT_S:.0f} s")
            return
        headers = reply.headers or {}
        if subjects.HEADER_ERROR in headers:
            raise CallFailed(f"{headers[subjects.HEADER_ERROR]}: {headers.get(subjects.HEADER_MESSAGE, '')}",
                             actor=actor)
        http.apply_answer(exchange, bytes(reply.data))

    async def _handle_http(self, actor: str, msg: Msg) -> None:
        """An HTTP request for ``actor``, which runs here, taken on another node."""
        host = self._host
        if host is None or not msg.reply:
            return
        try:
            request = http.parse_delivery(msg.data)
        except BadRequest as exc:
            await self.reply_error(msg.reply, exc.code, exc.message)
            return
        if request.node != subjects.caller_of(msg.subject):  # who took the request is who NATS let publish it
            await self.reply_error(msg.reply, "bad-request", f"an HTTP request from node "
                                   f"{subjects.caller_of(msg.subject)} names node {request.node}")
            return
        link = host.link_for(actor, HTTP_INCOMING)
        if link is None or link.target != f"{request.node}/{request.provider}" or not host.has_actor(actor):
            await self.reply_error(msg.reply, "not-linked", f"actor {actor!r} on node {self.node} has no link of "
                                                            f"{HTTP_INCOMING} to {request.node}/{request.provider}")
            return
        assert self._loop is not None
        exchange = http.RemoteExchange(request, self.remote_provider(request.node, request.provider), link.as_link(),
                                       self._loop)
        try:
            pending = host.serve_http(actor, exchange)  # None: the actor runs here, as checked
            if pending is not None:
                await pending
        except DrupeletError as exc:
            await self.reply_error(msg.reply, exc.code, exc.message)
            return
        await exchange.done  # the instance settles it: its response, or why there is none
        try:
            await self._nc.publish(msg.reply, exchange.answer())
        except Exception as exc:
            log.warning("cannot send the answer to an HTTP request for %s: %s", actor, exc)

    async def _pause(self, actor: str) -> None:
        """Stop taking ``actor``'s deliveries until its queue has drained.

        An actor's queue refuses what does not fit its budgets, but a client that sends
        faster than the node reads would still fill the server's buffer for this
        connection, and the server would cut the node off as a slow consumer, losing every
        message and request in flight. Unsubscribed, the server sends the node none of the
        flood (requesters get no-responders at once, or another node's instance answers)."""
        sub = self._deliveries.get(actor)
        if sub is None or actor in self._paused or self._closed:
            return
        self._paused.add(actor)
        now = time.monotonic()
        last, ended = self._pause_s.get(actor, (0.0, 0.0))
        length = min(PAUSE_MAX_S, last * 2) if now - ended < max(1.0, 2 * last) else PAUSE_MIN_S
        self._pause_s[actor] = (max(length, PAUSE_MIN_S), now)
        level = logging.INFO if now - self._paused_logged_at >= PAUSE_LOG_INTERVAL_S else logging.DEBUG
        self._paused_logged_at = now if level == logging.INFO else self._paused_logged_at
        log.log(level, "actor %s is overloaded: this node takes none of its messages until its queue has drained",
                actor)
        await unsubscribe_all([sub])
        self._spawn(self._resume_when_drained(actor, max(length, PAUSE_MIN_S)))

    async def _resume_when_drained(self, actor: str, pause_s: float) -> None:
        host = self._host
        await asyncio.sleep(pause_s)
        while host is not None and actor in self._paused and not self._closed and host.has_actor(actor):
            if host.actor_load(actor) <= RESUME_LOAD:
                self._paused.discard(actor)
                self._pause_s[actor] = (pause_s, time.monotonic())
                await self._subscribe(actor)
                log.debug("actor %s takes messages again", actor)
                return
            await asyncio.sleep(PAUSE_POLL_S)

    async def _handle_delivery(self, actor: str, msg: Msg) -> None:
        host = self._host
        if host is None:
            return
        headers = msg.headers or {}
        subject = headers.get(subjects.HEADER_SUBJECT) or msg.subject
        if host.actor_load(actor) >= PAUSE_LOAD and actor not in self._paused:
            self._spawn(self._pause(actor))
        try:
            await host.deliver(actor, subject, msg.data, msg.reply or None)
        except NoReply as exc:
            if subjects.HEADER_FORWARDED in headers:  # a subscriber's message: others may answer it
                log.debug("%s", exc.message)
                return
            log.info("delivery to actor %s failed: %s", actor, exc.message)
            if msg.reply:
                await self.reply_error(msg.reply, exc.code, exc.message)
        except DrupeletError as exc:
            # a refusal for load (overloaded, payload-too-large) can come thousands of times a
            # second: the sender gets it; the node's log does not repeat it
            log.log(logging.DEBUG if isinstance(exc, (Overloaded, PayloadTooLarge)) else logging.INFO,
                    "delivery to actor %s failed: %s", actor, exc.message)
            if msg.reply:
                await self.reply_error(msg.reply, exc.code, exc.message)
            if isinstance(exc, Overloaded):
                await self._pause(actor)

    async def forward(self, actor: str, message: Message) -> None:
        await self._nc.publish(subjects.deliver(self.lattice, actor), message.body, reply=message.reply_to or "",
                               headers={subjects.HEADER_SUBJECT: message.subject, subjects.HEADER_FORWARDED: "1"})

    async def reply_error(self, reply_to: str, code: str, message: str) -> None:
        """Tell a requester waiting on ``reply_to`` that its message failed (error headers,
        empty body) rather than leave it to time out."""
        if not self._nc.is_connected:
            return
        try:
            await self._nc.publish(reply_to, b"", headers={
                subjects.HEADER_ERROR: code, subjects.HEADER_MESSAGE: message.replace("\n", " ")})
        except Exception as exc:
            log.debug("cannot send the error reply to %s: %s", reply_to, exc)

    async def call(self, actor: str, subject: str, body: bytes, timeout_s: float) -> bytes:
        """Deliver to ``actor`` with a reply inbox and return the body it publishes there.

        An actor running here gets the message directly, so its failure is raised as
        itself (HandlerError, Trapped…); one elsewhere gets it through the lattice."""
        if not self._nc.is_connected:
            raise NatsUnavailable("the node is not connected to NATS")
        host = self._host
        if host is None or not host.has_actor(actor):
            return await self._request(actor, subject, body, timeout_s)
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox, max_msgs=1)
        try:
            await host.deliver(actor, subject, body, inbox)
            try:
                reply = await sub.next_msg(timeout=timeout_s)
            except nats.errors.TimeoutError:
                raise CallFailed(f"actor {actor!r} handled the message but sent no reply within {timeout_s:.1f} s",
                                 actor=actor) from None
            return bytes(reply.data)
        finally:
            await unsubscribe_all([sub])

    async def _request(self, actor: str, subject: str, body: bytes, timeout_s: float) -> bytes:
        try:
            reply = await self._nc.request(subjects.deliver(self.lattice, actor), body, timeout=timeout_s,
                                           headers={subjects.HEADER_SUBJECT: subject})
        except nats.errors.NoRespondersError:
            raise CallFailed(f"no actor {actor!r} runs in lattice {self.lattice!r}", actor=actor) from None
        except nats.errors.TimeoutError:
            raise CallFailed(f"actor {actor!r} sent no reply within {timeout_s:.1f} s", actor=actor) from None
        headers = reply.headers or {}
        if subjects.HEADER_ERROR in headers:
            raise CallFailed(f"{headers[subjects.HEADER_ERROR]}: {headers.get(subjects.HEADER_MESSAGE, '')}",
                             actor=actor)
        return bytes(reply.data)

    # -- remote providers ------------------------------------------------------------------

    def remote_provider(self, node: str, provider: str) -> Provider:
        key = (node, provider)
        remote = self._remotes.get(key)
        if remote is None:
            if self._loop is None:
                raise RuntimeError("the lattice port is not started")
            remote = RemoteProvider(self._nc, self._loop, self.lattice, self.node, node, provider,
                                    self.remote_call_timeout_s, inbox=self.inbox)
            self._remotes[key] = remote
        return remote

    # -- logs -------------------------------------------------------------------------------

    def publish_log(self, actor: str, level: str, context: str, message: str) -> None:
        loop = self._loop
        if loop is None or loop.is_closed() or self._closed:
            return
        payload = json.dumps({"node": self.node, "actor": actor, "level": level, "context": context,
                              "message": message, "time": time.time()}).encode()
        subject = subjects.logs(self.lattice, self.node, actor)
        try:
            loop.call_soon_threadsafe(self._publish_soon, subject, payload)
        except RuntimeError:
            pass  # the loop closed between the check and the call; the line went to the local log

    def _publish_soon(self, subject: str, payload: bytes) -> None:
        if self._closed or not self._nc.is_connected:
            return
        self._spawn(self._publish_quietly(subject, payload))

    async def _publish_quietly(self, subject: str, payload: bytes) -> None:
        try:
            await self._nc.publish(subject, payload)
        except Exception as exc:  # too large for the server, or the connection went: the local log has the line
            log.debug("log line not published on %s: %s", subject, exc)
