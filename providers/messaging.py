"""The ``messaging`` provider: ``wasmcloud:messaging@0.2.0`` over the node's NATS connection.

An actor linked to it can ``publish`` and ``request`` (on one subject: no wildcards), and
receives the messages of the subjects its link subscribes to through its exported
``handler``.

What an actor may reach is what its link grants: ``publish`` to the subjects of the link's
``publish`` grant, ``request`` on those of its ``request`` grant (NATS wildcards), and
always the reply subject of the message it is handling (:func:`~.base.current_reply`).
Nothing else: a link without grants lets the actor answer and nothing more. The lattice's
own subjects (:data:`PROTECTED_SUBJECTS`: ``drupelet.>``, ``$JS.>``, ``$KV.>``, ``$O.>``,
``$SYS.>``) and reply inboxes (``_INBOX.>``, but for the reply it is answering) are refused
even when a grant would match, and so is a reply subject that is one of the lattice's own
(a message whose reply subject was made to point at a control subject). A refusal is the
interface's error string (``denied: …``), logged the first time for each actor and subject
and again at each tenfold count, and counted in the inventory (``refused``).

A link whose ``subscriptions`` would receive any of the lattice's subjects or any reply
inbox is refused when it is put: ``>``, ``*.>``, ``_INBOX.>``, ``drupelet.*`` and ``$KV.>``
are, ``sensors.>`` is not. (Without that, one link subscribing ``>`` makes every node
forward its own forwards.) :func:`subjects_overlap` decides, by NATS's token rules.

Link config:

| key | meaning |
|---|---|
| ``publish`` | comma-separated NATS subjects (wildcards allowed) the actor may publish to |
| ``request`` | comma-separated NATS subjects (wildcards allowed) the actor may send requests to |
| ``subscriptions`` | comma-separated NATS subjects (wildcards allowed) delivered to the actor |
| ``queue_group`` | optional queue group for those subscriptions, to share them across nodes |

Node config ``[providers.messaging]``: no keys (its ``config_schema`` is :class:`~drupelet.providers.schema.NoKeys`); payloads are
capped by the node's ``max_payload_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import threading
from typing import Any

from .schema import NoKeys
from .base import (Denied, Link, Message, PayloadTooLarge, Provider, ProviderContext, ProviderError, Timeout,
                   Unavailable, current_reply)

log = logging.getLogger(__name__)

MIN_REQUEST_TIMEOUT_MS = 1
HEADER_ROOM_BYTES = 4096
"""Kept free under the NATS server's max_payload for the headers and subject a message carries."""


def subjects_of(link: Link, key: str = "subscriptions") -> list[str]:
    """The subjects of a link config's comma-separated ``key``."""
    raw = link.config.get(key, "")
    return [s.strip() for s in raw.split(",") if s.strip()]


PROTECTED_SUBJECTS = ("drupelet.>", "$JS.>", "$KV.>", "$O.>", "$SYS.>")
"""The lattice's own subjects: the node's protocol, JetStream, its KV and object stores, the server."""
REPLY_INBOXES = ("_INBOX.>",)
"""Where NATS clients (the node's included) wait for replies."""


def check_subject(subject: str) -> None:
    """A well-formed NATS subject: dot-separated non-empty tokens, no white space, ``>``
    only as the last token. ProviderError otherwise."""
    if not isinstance(subject, str) or not subject or any(c in subject for c in " \t\r\n") \
            or subject.startswith(".") or subject.endswith(".") or ".." in subject:
        raise ProviderError(f"{subject!r} is not a valid NATS subject", provider="messaging")
    if ">" in subject.split(".")[:-1]:
        raise ProviderError(f"{subject!r} is not a valid NATS subject: '>' may only be its last token",
                            provider="messaging")


def subjects_overlap(a: str, b: str) -> bool:
    """Whether some subject matches both patterns, by NATS's rules: ``*`` matches exactly
    one token, ``>`` (last) one or more; any other token only itself. Both must be valid
    (:func:`check_subject`)."""
    left, right = a.split("."), b.split(".")
    for x, y in zip(left, right):
        if x == ">" or y == ">":
            return True
        if x != y and "*" not in (x, y):
            return False
    return len(left) == len(right)


def protected_match(subject: str, patterns: tuple[str, ...] = PROTECTED_SUBJECTS) -> str | None:
    """The first of ``patterns`` that ``subject`` (a subject or a pattern) overlaps, or None."""
    return next((p for p in patterns if subjects_overlap(subject, p)), None)


def _check_outgoing(link: Link, what: str, subject: str, grant: str | None = None) -> None:
    """A message ``what`` (``publish on``…) ``subject`` may go: one subject, not the lattice's
    own, and, with ``grant`` (a link config key), within it or the reply being answered."""
    check_subject(subject)
    if any(token in ("*", ">") for token in subject.split(".")):
        raise ProviderError(f"actor {link.source!r} cannot {what} {subject!r}: a message goes to one subject; "
                            "wildcards are for subscriptions", provider="messaging")
    match = protected_match(subject)
    if match is not None:
        raise Denied(f"actor {link.source!r} may not {what} {subject!r}: it is one of the lattice's own subjects "
                     f"({match}); the lattice's subjects ({', '.join(PROTECTED_SUBJECTS)}) are the node's "
                     "alone", provider="messaging")
    if grant is None or (grant == "publish" and subject == current_reply()):
        return  # the reply to the message it is handling: always
    if protected_match(subject, REPLY_INBOXES) is not None:
        raise Denied(f"actor {link.source!r} may not {what} {subject!r}: a reply inbox that is not the reply of "
                     "the message it is handling", provider="messaging")
    granted = subjects_of(link, grant)
    if not any(subjects_overlap(subject, pattern) for pattern in granted):
        raise Denied(f"actor {link.source!r} may not {what} {subject!r}: its link's {grant} grant "
                     f"({', '.join(granted) or 'none'}) does not include it", provider="messaging")


def check_subscription(link: Link, subject: str) -> None:
    """Refuse a link subscription that could receive the lattice's own subjects or replies."""
    check_subject(subject)
    match = protected_match(subject, PROTECTED_SUBJECTS + REPLY_INBOXES)
    if match is not None:
        raise Denied(f"actor {link.source!r}: link subscription {subject!r} would receive {match}, the lattice's "
                     f"own messages or replies; subscribe to subjects outside "
                     f"{', '.join(PROTECTED_SUBJECTS + REPLY_INBOXES)}", provider="messaging")


class MessagingProvider(Provider):
    """``wasmcloud:messaging`` over the node's NATS connection, kept off the lattice's own subjects."""

    name = "messaging"
    interfaces = ("wasmcloud:messaging/consumer",)
    operations = {"wasmcloud:messaging/consumer": frozenset({"publish", "request"})}
    config_schema = NoKeys

    def __init__(self) -> None:
        super().__init__()
        self._subs: dict[tuple[str, str], list[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._refused: dict[tuple[str, str, str], int] = {}
        self._refused_lock = threading.Lock()

    def _granted(self, link: Link, what: str, subject: str, grant: str) -> None:
        """:func:`_check_outgoing` with the link's grant; a refusal is counted, and logged the
        first time for each actor and subject and again at each tenfold count."""
        try:
            _check_outgoing(link, what, subject, grant)
        except Denied as exc:
            key = (link.source, grant, subject)
            with self._refused_lock:
                count = self._refused[key] = self._refused.get(key, 0) + 1
            if count == 1 or math.log10(count).is_integer():
                log.warning("%s (refused %d time%s)", exc.message, count, "" if count == 1 else "s")
            raise

    def _client(self) -> Any:
        nc = self.context.nats
        if nc is None or not nc.is_connected:
            raise Unavailable("the node is not connected to NATS", provider=self.name)
        return nc

    def _check_body(self, body: bytes) -> None:
        """The node's max_payload_bytes, and the NATS server's own max_payload (with room
        for the headers a delivery carries), whichever is smaller."""
        limit = self.context.max_payload_bytes
        nc = self.context.nats
        server_limit = getattr(nc, "max_payload", 0) if nc is not None else 0
        if isinstance(server_limit, int) and server_limit > 0:
            limit = min(limit, server_limit - HEADER_ROOM_BYTES)
        if len(body) > limit:
            raise PayloadTooLarge(len(body), limit, provider=self.name)

    # Import calls: these run on the actor instance's worker thread.

    def publish(self, link: Link, subject: str, body: bytes, reply_to: str | None) -> None:
        """``consumer.publish``: the message's subject, body and reply subject."""
        if not isinstance(subject, str) or not isinstance(body, bytes) or not isinstance(reply_to, (str, type(None))):
            raise ProviderError("publish takes a subject, bytes and an optional reply subject", provider=self.name)
        message = Message(subject=subject, body=body, reply_to=reply_to)
        self._granted(link, "publish on", message.subject, "publish")
        if message.reply_to:
            _check_outgoing(link, "ask for replies on", message.reply_to)
        self._check_body(message.body)
        nc = self._client()

        async def _publish() -> None:
            await nc.publish(message.subject, message.body, reply=message.reply_to or "")

        self.context.run(_publish())

    def request(self, link: Link, subject: str, body: bytes, timeout_ms: int) -> dict[str, Any]:
        """``consumer.request``: the reply as ``{subject, body, reply_to}``."""
        if not isinstance(subject, str) or not isinstance(body, bytes) or isinstance(timeout_ms, bool) \
                or not isinstance(timeout_ms, int):
            raise ProviderError("request takes a subject, bytes and a timeout in ms", provider=self.name)
        return self._request(link, subject, body, timeout_ms)

    def _request(self, link: Link, subject: str, body: bytes, timeout_ms: int) -> dict[str, Any]:
        self._granted(link, "send a request on", subject, "request")
        self._check_body(body)
        nc = self._client()
        timeout_s = max(timeout_ms, MIN_REQUEST_TIMEOUT_MS) / 1000.0

        async def _request() -> Message:
            import nats.errors

            try:
                reply = await nc.request(subject, body, timeout=timeout_s)
            except nats.errors.NoRespondersError:
                raise Unavailable(f"no responders on {subject!r}", provider=self.name) from None
            except nats.errors.TimeoutError:
                raise Timeout(f"no reply on {subject!r} within {timeout_ms} ms", provider=self.name) from None
            return Message(subject=reply.subject, body=reply.data, reply_to=reply.reply or None)

        # the request carries its own deadline; give the hop a little more
        reply = self.context.run(_request(), timeout_s + 1.0)
        return {"subject": reply.subject, "body": reply.body, "reply_to": reply.reply_to}

    # Links: subscriptions that deliver to the actor.

    async def start(self, ctx: ProviderContext) -> None:
        self.parse_config(ctx.config)
        await super().start(ctx)

    async def link_added(self, link: Link) -> None:
        subjects = subjects_of(link)
        for subject in subjects:  # refuse before anything changes
            check_subscription(link, subject)
        if not subjects:
            return
        await self.link_removed(link)
        nc = self.context.nats
        if nc is None:
            raise Unavailable("subscriptions need a NATS connection", provider=self.name)
        queue = link.config.get("queue_group", "")
        subs = []
        for subject in subjects:
            subs.append(await nc.subscribe(subject, queue=queue, cb=self._on_message_for(link.source)))
        self._subs[(link.source, link.interface)] = subs
        await self._synced()  # subscribed at the server before the link is reported as put
        log.info("actor %s subscribed to %s", link.source, ", ".join(subjects))

    async def link_removed(self, link: Link) -> None:
        subs = self._subs.pop((link.source, link.interface), [])
        for sub in subs:
            await sub.unsubscribe()
        if subs:
            await self._synced()  # unsubscribed at the server before the link is reported gone

    async def _synced(self) -> None:
        if self.context.synced is not None:
            await self.context.synced()

    def _on_message_for(self, actor: str) -> Any:
        async def on_message(msg: Any) -> None:
            deliver = self.context.deliver
            if deliver is None:
                return
            message = Message(subject=msg.subject, body=msg.data, reply_to=msg.reply or None)
            task = asyncio.get_running_loop().create_task(self._deliver(deliver, actor, message))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return on_message

    @staticmethod
    async def _deliver(deliver: Any, actor: str, message: Message) -> None:
        try:
            await deliver(actor, message)
        except Exception:
            log.warning("delivery of %s to actor %s failed", message.subject, actor, exc_info=True)

    async def stop(self) -> None:
        for key in list(self._subs):
            for sub in self._subs.pop(key, []):
                try:
                    await sub.unsubscribe()
                except Exception as exc:  # the connection may already be closed
                    log.debug("unsubscribe during stop: %s", exc)
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)

    def describe(self) -> dict[str, Any]:
        with self._refused_lock:
            refused = [{"actor": a, "grant": g, "subject": s, "count": n} for (a, g, s), n in sorted(self._refused.items())]
        return {"subscriptions": {f"{a}": [s.subject for s in subs] for (a, _), subs in self._subs.items()},
                "refused": refused}
