"""The ``messaging`` provider: ``wasmcloud:messaging@0.2.0`` over the node's NATS connection.

An actor linked to it can ``publish`` and ``request`` on any subject, and receives the
messages of the subjects its link subscribes to through its exported ``handler``.

Link config:

| key | meaning |
|---|---|
| ``subscriptions`` | comma-separated NATS subjects (wildcards allowed) delivered to the actor |
| ``queue_group`` | optional queue group for those subscriptions, to share them across nodes |

Node config ``[providers.messaging]``: none of its own; payloads are capped by the
node's ``max_payload_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from .base import Link, Message, PayloadTooLarge, Provider, ProviderContext, ProviderError, Timeout, Unavailable

log = logging.getLogger(__name__)

MIN_REQUEST_TIMEOUT_MS = 1


def subjects_of(link: Link) -> list[str]:
    raw = link.config.get("subscriptions", "")
    return [s.strip() for s in raw.split(",") if s.strip()]


def check_subject(subject: str) -> None:
    if not subject or any(c in subject for c in " \t\r\n") or subject.startswith(".") or subject.endswith(".") or ".." in subject:
        raise ProviderError(f"{subject!r} is not a valid NATS subject")


class MessagingProvider(Provider):
    name = "messaging"
    interfaces = ("wasmcloud:messaging/consumer",)

    def __init__(self) -> None:
        super().__init__()
        self._subs: dict[tuple[str, str], list[Any]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def _client(self) -> Any:
        nc = self.context.nats
        if nc is None or not nc.is_connected:
            raise Unavailable("the node is not connected to NATS", provider=self.name)
        return nc

    def _check_body(self, body: bytes) -> None:
        limit = self.context.max_payload_bytes
        if len(body) > limit:
            raise PayloadTooLarge(len(body), limit, provider=self.name)

    # Import calls: these run on the actor instance's worker thread.

    def publish(self, link: Link, message: Message) -> None:
        check_subject(message.subject)
        self._check_body(message.body)
        nc = self._client()

        async def _publish() -> None:
            await nc.publish(message.subject, message.body, reply=message.reply_to or "")

        self.context.run(_publish())

    def request(self, link: Link, subject: str, body: bytes, timeout_ms: int) -> Message:
        check_subject(subject)
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
        return self.context.run(_request(), timeout_s + 1.0)

    # Links: subscriptions that deliver to the actor.

    async def start(self, ctx: ProviderContext) -> None:
        if ctx.config:
            raise ValueError(f"providers.messaging takes no keys, got: {', '.join(sorted(ctx.config))}")
        await super().start(ctx)

    async def link_added(self, link: Link) -> None:
        subjects = subjects_of(link)
        for subject in subjects:
            check_subject(subject)
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
        await nc.flush()  # subscribed at the server before the link is reported as put
        log.info("actor %s subscribed to %s", link.source, ", ".join(subjects))

    async def link_removed(self, link: Link) -> None:
        subs = self._subs.pop((link.source, link.interface), [])
        for sub in subs:
            await sub.unsubscribe()
        if subs and self.context.nats is not None and self.context.nats.is_connected:
            await self.context.nats.flush()  # unsubscribed at the server before the link is reported gone

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
        return {"subscriptions": {f"{a}": [s.subject for s in subs] for (a, _), subs in self._subs.items()}}
