"""One way to open a NATS connection, with errors a person can act on.

The node keeps its connection for as long as it runs (reconnecting forever, with a
jittered wait so a fleet does not retry in lockstep); a command-line client connects
once and gives up at once. Both go through :func:`connect`, which bounds the whole
first connection attempt and turns whatever nats-py raises into
:class:`~drupelet.node.errors.NatsUnavailable` naming the URL and the reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable
from typing import Any

from nats.aio.client import Client as NatsClient

from drupelet.node.lattice.errors import NatsUnavailable

log = logging.getLogger(__name__)

RECONNECT_WAIT_S = 0.5
"""The node's base wait between reconnect attempts; each connection draws its own from
``RECONNECT_WAIT_S × [1 - RECONNECT_JITTER, 1 + RECONNECT_JITTER]``."""
RECONNECT_JITTER = 0.5

ErrorCallback = Callable[[Exception], Awaitable[None]]
Callback = Callable[[], Awaitable[None]]

CLIENT_HINT = "is `drupelet up` running? set --nats or DRUPELET_NATS"


def jittered(base_s: float, jitter: float = RECONNECT_JITTER, rng: random.Random | None = None) -> float:
    """``base_s`` spread by ±``jitter`` (a fraction), so peers that failed together retry apart."""
    r = rng or random
    return base_s * (1.0 + jitter * (2.0 * r.random() - 1.0))


async def _quiet(exc: Exception) -> None:
    log.debug("NATS: %s", exc)


async def connect(url: str, *, name: str, creds: str | None = None, timeout_s: float = 5.0,
                  reconnect: bool = False, hint: str = "", error_cb: ErrorCallback | None = None,
                  disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None) -> NatsClient:
    """Connect to ``url``; :class:`NatsUnavailable` if that fails within ``timeout_s``.

    ``reconnect``: keep the connection for good (a node): unlimited reconnects with a
    jittered wait. Otherwise (a command): no reconnects. ``hint`` is added to the error.
    """
    options: dict[str, Any] = {
        "name": name,
        "connect_timeout": timeout_s,
        "error_cb": error_cb or _quiet,
    }
    if reconnect:
        options.update(allow_reconnect=True, max_reconnect_attempts=-1,
                       reconnect_time_wait=jittered(RECONNECT_WAIT_S))
    else:
        options.update(allow_reconnect=False, max_reconnect_attempts=0)
    if disconnected_cb is not None:
        options["disconnected_cb"] = disconnected_cb
    if reconnected_cb is not None:
        options["reconnected_cb"] = reconnected_cb
    if creds:
        options["user_credentials"] = creds
    nc = NatsClient()
    # With reconnects on, nats-py retries a first connection forever: bound the whole wait.
    try:
        await asyncio.wait_for(nc.connect(url, **options), timeout=timeout_s)
    except BaseException as exc:
        last = nc.last_error
        await close_quietly(nc)
        if not isinstance(exc, Exception):
            raise
        cause = last if isinstance(exc, TimeoutError) else exc
        reason = str(cause) if cause is not None and str(cause) else type(cause or exc).__name__
        within = f" within {timeout_s:g} s" if isinstance(exc, TimeoutError) else ""
        if isinstance(exc, TimeoutError) and cause is None:
            reason = "no answer"
        tail = f" ({hint})" if hint else ""
        raise NatsUnavailable(f"cannot connect to NATS at {url}{within}: {reason}{tail}") from exc
    return nc


async def close_quietly(nc: NatsClient) -> None:
    """Close a NATS connection whose server may already be gone.

    nats-py flushes on close; with the socket reset that flush raises, though the
    client is closed all the same. Stopping must not fail for that.
    """
    if nc.is_closed:
        return
    try:
        await nc.close()
    except Exception as exc:
        log.debug("closing the NATS connection: %s", exc)


async def unsubscribe_all(subs: list[Any]) -> None:
    """Unsubscribe each of ``subs`` (a closed connection is fine) and empty the list."""
    for sub in subs:
        try:
            await sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe: %s", exc)
    subs.clear()
