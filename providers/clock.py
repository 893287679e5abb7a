"""The ``clock`` provider: timer ticks delivered to actors as messages.

An actor linked to it on ``wasmcloud:messaging/handler`` receives ``timer.<name>`` through
its handler for each timer in the link's config, with a JSON body::

    {"timer": "tick", "tick": 3, "timestamp": 1763800000.25, "node": "pi-1"}

``tick`` counts from 1 for each timer since the link was put; ``timestamp`` is Unix time
in seconds on the clock's node.

Link config:

| key | meaning |
|---|---|
| ``timers`` | comma-separated ``name=period_ms`` (e.g. ``tick=2000,slow=60000``); names are ``[A-Za-z0-9_-]{1,32}``, periods 10 ms to 1 day |

A link to ``local/clock`` ticks on the nodes where the actor runs; a link to
``<node>/clock`` ticks on that node, wherever the actor runs. A tick that is still being
delivered when the next one is due is not doubled: the late one is skipped. A tick that
fails (the actor is not running, its handler or the node raises) is logged, and the timer
goes on.

Node config ``[providers.clock]``: no keys (its ``config_schema`` is :class:`~drupelet.providers.schema.NoKeys`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from typing import Any

from .base import Link, Message, Provider, ProviderContext, ProviderError
from .schema import NoKeys

log = logging.getLogger(__name__)

TIMER_NAME = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
MIN_PERIOD_MS = 10
MAX_PERIOD_MS = 86_400_000


def parse_timers(link: Link) -> dict[str, int]:
    """The link's ``timers`` config as {name: period_ms}; ProviderError on a bad entry."""
    timers: dict[str, int] = {}
    for item in link.config.get("timers", "").split(","):
        item = item.strip()
        if not item:
            continue
        name, sep, period = item.partition("=")
        name = name.strip()
        if not sep or not TIMER_NAME.match(name):
            raise ProviderError(f"timer {item!r} in the link's `timers` config is not name=period_ms "
                                f"(name: 1-32 of A-Z a-z 0-9 _ -)")
        try:
            ms = int(period.strip())
        except ValueError:
            raise ProviderError(f"timer {name!r}: period {period.strip()!r} is not a whole number of milliseconds") from None
        if not MIN_PERIOD_MS <= ms <= MAX_PERIOD_MS:
            raise ProviderError(f"timer {name!r}: period {ms} ms is outside {MIN_PERIOD_MS}..{MAX_PERIOD_MS} ms")
        if name in timers:
            raise ProviderError(f"timer {name!r} is named twice in the link's `timers` config")
        timers[name] = ms
    return timers


class ClockProvider(Provider):
    """Periodic ``timer.<name>`` messages to linked actors."""

    name = "clock"
    interfaces = ("wasmcloud:messaging/handler",)
    config_schema = NoKeys

    def __init__(self) -> None:
        super().__init__()
        self._timers: dict[str, dict[str, asyncio.Task[None]]] = {}
        self._periods: dict[str, dict[str, int]] = {}
        self._ticks: dict[tuple[str, str], int] = {}

    async def start(self, ctx: ProviderContext) -> None:
        self.parse_config(ctx.config)
        await super().start(ctx)

    async def link_added(self, link: Link) -> None:
        timers = parse_timers(link)
        await self.link_removed(link)
        only_here = link.target.startswith("local/")
        tasks = {name: asyncio.create_task(self._run(link.source, name, ms, only_here),
                                           name=f"timer {name} of actor {link.source}")
                 for name, ms in timers.items()}
        for task in tasks.values():
            task.add_done_callback(self._ended)
        self._timers[link.source] = tasks
        self._periods[link.source] = timers
        if timers:
            log.info("actor %s: timers %s", link.source, ", ".join(f"{n} every {ms} ms" for n, ms in timers.items()))

    async def link_removed(self, link: Link) -> None:
        tasks = self._timers.pop(link.source, {})
        self._periods.pop(link.source, None)
        for key in [k for k in self._ticks if k[0] == link.source]:
            del self._ticks[key]
        for task in tasks.values():
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks.values(), return_exceptions=True)

    async def stop(self) -> None:
        for actor in list(self._timers):
            await self.link_removed(Link(source=actor, interface=self.interfaces[0], target=f"local/{self.name}"))

    async def _run(self, actor: str, name: str, period_ms: int, only_here: bool) -> None:
        """Tick until cancelled; a tick that fails is logged and the next one comes on time."""
        ctx = self.context
        loop = asyncio.get_running_loop()
        period = period_ms / 1000.0
        due = loop.time() + period
        while True:
            await asyncio.sleep(max(0.0, due - loop.time()))
            due += period
            if loop.time() > due:  # delivery or the loop ran late: skip the missed ticks
                due = loop.time() + period
            try:
                await self._tick(ctx, actor, name, only_here)
            except Exception:  # anything the node's callbacks raise: this timer must go on
                log.warning("timer %s of actor %s: a tick failed; the timer goes on", name, actor, exc_info=True)

    async def _tick(self, ctx: ProviderContext, actor: str, name: str, only_here: bool) -> None:
        if ctx.deliver is None or (only_here and not ctx.runs_here(actor)):
            return
        count = self._ticks.get((actor, name), 0) + 1
        self._ticks[(actor, name)] = count
        body = json.dumps({"timer": name, "tick": count, "timestamp": round(time.time(), 6), "node": ctx.node})
        try:
            await ctx.deliver(actor, Message(subject=f"timer.{name}", body=body.encode()))
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this timer is being stopped
            # the delivery itself was cancelled (its actor instance stopped with the tick queued)
            log.info("timer %s to actor %s: the delivery was cancelled", name, actor)
        except Exception as exc:  # the actor is not running, its handler failed, …: expected, not a fault here
            log.info("timer %s to actor %s: %s", name, actor, getattr(exc, "message", exc))

    @staticmethod
    def _ended(task: asyncio.Task[None]) -> None:
        """A timer task only ends by being cancelled; say so if one ends any other way."""
        if not task.cancelled() and task.exception() is not None:
            log.error("%s ended: %s", task.get_name(), task.exception(), exc_info=task.exception())

    def describe(self) -> dict[str, Any]:
        return {"timers": {actor: dict(timers) for actor, timers in self._periods.items()}}
