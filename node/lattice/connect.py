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
import os
import random
import ssl
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

NATS_SCHEMES = ("nats", "tls", "ws", "wss")
"""The URL schemes a NATS client connects with; anything else (``http://``) is refused."""


def check_url(url: str) -> tuple[str, int] | None:
    """:class:`NatsUnavailable` unless ``url`` is a NATS client URL; its host and port
    when a plain TCP probe can reach it (``nats://``, ``tls://``), else None."""
    from urllib.parse import urlsplit

    if "," in url:  # several servers: nats-py's to try in turn; no single probe says much
        return None
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.scheme not in NATS_SCHEMES:
        why = (" (that is a web URL: a NATS client port speaks the NATS protocol, usually "
               "nats://HOST:4222; port 8222 is the server's HTTP monitoring)" if parts.scheme in ("http", "https")
               else "")
        raise NatsUnavailable(f"cannot connect to NATS at {url}: the scheme must be one of "
                              f"{', '.join(s + '://' for s in NATS_SCHEMES)}{why}")
    if parts.scheme not in ("nats", "tls"):
        return None
    try:
        port = parts.port or 4222
    except ValueError:
        raise NatsUnavailable(f"cannot connect to NATS at {url}: the port is not a number") from None
    return parts.hostname or "127.0.0.1", port


def _tls_hostname(url: str) -> str | None:
    """The host name a TLS server's certificate must carry: the URL's (the first of a list)."""
    from urllib.parse import urlsplit

    first = url.split(",")[0]
    return urlsplit(first if "://" in first else f"nats://{first}").hostname


async def _refused(host: str, port: int, timeout_s: float) -> bool:
    """True when nothing listens at ``host:port`` (the connection is refused at once);
    nats-py would retry a refused first connection until its timeout."""
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout_s)
    except ConnectionRefusedError:
        return True
    except (OSError, asyncio.TimeoutError):
        return False  # let nats-py try, and say what it saw
    writer.close()
    try:
        await writer.wait_closed()
    except OSError:
        pass
    return False


def jittered(base_s: float, jitter: float = RECONNECT_JITTER, rng: random.Random | None = None) -> float:
    """``base_s`` spread by ±``jitter`` (a fraction), so peers that failed together retry apart."""
    r = rng or random
    return base_s * (1.0 + jitter * (2.0 * r.random() - 1.0))


async def _quiet(exc: Exception) -> None:
    log.debug("NATS: %s", exc)


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """A client TLS context that trusts ``ca_file`` (a lattice's CA), or the system's CAs."""
    try:
        return ssl.create_default_context(cafile=ca_file or None)
    except (OSError, ssl.SSLError) as exc:
        raise NatsUnavailable(f"cannot read the CA file {ca_file}: {getattr(exc, 'strerror', None) or exc}") from None


def _reason(exc: BaseException, url: str, tls: ssl.SSLContext | None) -> str:
    """What a person can act on, for the ways a secured server refuses a client."""
    text = str(exc) if str(exc) else type(exc).__name__
    low = text.lower()
    if isinstance(exc, ssl.SSLCertVerificationError) or "certificate verify failed" in low:
        if tls is None:
            return ("the server requires TLS and its certificate is not signed by a CA this client trusts: give "
                    "the lattice's CA (--tls-ca, or --lattice-dir) and a tls:// URL")
        return (f"the server's TLS certificate is not signed by the CA given ({text}): is it the lattice's "
                "ca.pem?")
    if isinstance(exc, ssl.SSLError):
        return f"TLS failed: {text}"
    if "authorization violation" in low or "authentication" in low:
        return ("the server refused the credentials (Authorization Violation): it asks for a user of its "
                "lattice (--creds, or --lattice-dir), and revoked credentials are refused")
    if "user credentials" in low or "nkeys" in low and "seed" in low:
        return f"cannot use the credentials: {text}"
    return text


async def connect(url: str, *, name: str, creds: str | None = None, timeout_s: float = 5.0,
                  reconnect: bool = False, hint: str = "", error_cb: ErrorCallback | None = None,
                  disconnected_cb: Callback | None = None, reconnected_cb: Callback | None = None,
                  tls: ssl.SSLContext | None = None, inbox_prefix: str | None = None) -> NatsClient:
    """Connect to ``url``; :class:`NatsUnavailable` if that fails within ``timeout_s``.

    ``reconnect``: keep the connection for good (a node): unlimited reconnects with a
    jittered wait. Otherwise (a command): no reconnects, and a refused connection fails
    at once. ``hint`` is added to the error. A URL that is not a NATS one is refused.
    ``tls``: the context for a server that asks for TLS (:func:`tls_context`);
    ``inbox_prefix``: where replies to this client's requests come (``_INBOX.<name>``:
    a lattice user may subscribe only to its own).
    """
    probe = check_url(url)
    tail = f" ({hint})" if hint else ""
    if probe is not None and not reconnect and await _refused(*probe, timeout_s):
        raise NatsUnavailable(f"cannot connect to NATS at {url}: connection refused{tail}")
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
        if not os.path.isfile(creds):
            raise NatsUnavailable(f"cannot connect to NATS at {url}: the credentials file {creds} does not exist")
        options["user_credentials"] = creds
    if tls is not None:
        options["tls"] = tls
        options["tls_hostname"] = _tls_hostname(url)
    if inbox_prefix:
        options["inbox_prefix"] = inbox_prefix
    nc = NatsClient()
    # With reconnects on, nats-py retries a first connection forever: bound the whole wait.
    # The attempt runs as a task of its own, waited on with asyncio.wait: a cancel of the
    # caller (SIGTERM while starting) always reaches this code, where asyncio.wait_for on
    # Python 3.11 can lose one that lands as the connection completes.
    attempt = asyncio.ensure_future(nc.connect(url, **options))
    try:
        done, _ = await asyncio.wait({attempt}, timeout=timeout_s)
    except asyncio.CancelledError:
        await _cancel(attempt)
        await close_quietly(nc)
        raise
    if not done:
        await _cancel(attempt)
        last = nc.last_error
        await close_quietly(nc)
        reason = _reason(last, url, tls) if last is not None else "no answer"
        raise NatsUnavailable(f"cannot connect to NATS at {url} within {timeout_s:g} s: {reason}{tail}")
    exc = attempt.exception()
    if exc is not None:
        await close_quietly(nc)
        raise NatsUnavailable(f"cannot connect to NATS at {url}: {_reason(exc, url, tls)}{tail}") from exc
    return nc


CLOSE_TIMEOUT_S = 2.0
"""How long closing a connection may take before its socket is dropped."""
CANCEL_ROUNDS = 50
"""How many times (0.1 s apart) a connection attempt is cancelled before it is left to end."""


async def _cancel(task: asyncio.Future[None]) -> None:
    """Cancel ``task`` until it is done: nats-py's own waits may swallow one cancel."""
    for _ in range(CANCEL_ROUNDS):
        if task.done():
            break
        task.cancel()
        await asyncio.wait({task}, timeout=0.1)
    if task.done() and not task.cancelled() and task.exception() is not None:
        log.debug("the cancelled connection attempt ended with %s", type(task.exception()).__name__)


async def synced(nc: NatsClient) -> None:
    """Return once the server has processed every command ``nc`` sent before the call.

    What ``nc.flush()`` promises, kept: nats-py 2.16 writes flush's PING straight to the
    socket, ahead of SUB, UNSUB and PUB commands still waiting in the client's pending
    buffer, so the PONG can come back before the server has seen them (measured here: one
    subscribe-then-request in seven found no responders). The pending buffer goes out
    first, then the PING.
    """
    if not nc.is_connected:
        return
    await nc._flush_pending(force_flush=True)
    await nc.flush()


async def close_quietly(nc: NatsClient) -> None:
    """Close a NATS connection whose server may already be gone.

    nats-py flushes on close; with the socket reset that flush raises, though the
    client is closed all the same. Stopping must not fail for that.
    """
    if nc.is_closed:
        return
    try:
        # bounded: after a failed TLS handshake nats-py waits for a transport that never closes
        await asyncio.wait_for(nc.close(), CLOSE_TIMEOUT_S)
    except (Exception, asyncio.TimeoutError) as exc:
        log.debug("closing the NATS connection: %s", exc or type(exc).__name__)
        _stop_left_subscriptions(nc)


def _stop_left_subscriptions(nc: NatsClient) -> None:
    """What nats-py's close does after the flush that just failed: stop each subscription's
    delivery task and close the socket, so no task of a closed client is left pending.
    (nats-py 2.x keeps these in ``_subs`` and ``_transport``.)"""
    subs = getattr(nc, "_subs", {})
    for sub in list(subs.values()):
        task = getattr(sub, "_wait_for_msgs_task", None)
        if task is not None and not task.done():
            task.cancel()
        iterator = getattr(sub, "_message_iterator", None)
        if iterator is not None:
            iterator._cancel()
        for fut in (getattr(sub, "_pending_next_msgs_calls", None) or {}).values():
            fut.cancel()
    subs.clear()
    transport = getattr(nc, "_transport", None)
    if transport is not None:
        transport.close()


async def unsubscribe_all(subs: list[Any]) -> None:
    """Unsubscribe each of ``subs`` (a closed connection is fine) and empty the list."""
    for sub in subs:
        try:
            await sub.unsubscribe()
        except Exception as exc:
            log.debug("unsubscribe: %s", exc)
    subs.clear()
