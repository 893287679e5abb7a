"""Waiting in tests on a condition, never for a fixed time.

``wait_for`` (plain tests) and ``wait_for_async`` (async tests) poll a predicate every
``POLL_S`` seconds and fail the test, naming what was awaited, when it is still false at
the timeout. ``poll_until`` is the same poll without the failure, for callers (the leak
guard in conftest.py) that report on their own.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

import pytest

POLL_S = 0.02


def poll_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = POLL_S) -> bool:
    """Poll ``predicate`` until it is true or ``timeout_s`` has passed; its last value."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return predicate()
        time.sleep(min(interval_s, remaining))
    return True


def wait_for(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = POLL_S) -> None:
    """Block until ``predicate()`` is true; fail the test after ``timeout_s`` seconds."""
    if not poll_until(predicate, timeout_s, interval_s):
        pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")


async def wait_for_async(predicate: Callable[[], bool | Awaitable[bool]], timeout_s: float, what: str,
                         interval_s: float = POLL_S) -> None:
    """Wait on the running loop until ``predicate()`` (a plain or an async check) is true;
    fail the test after ``timeout_s`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s

    async def check() -> bool:
        value = predicate()
        return bool(await value) if inspect.isawaitable(value) else bool(value)

    while not await check():
        remaining = deadline - loop.time()
        if remaining <= 0:
            if await check():
                return
            pytest.fail(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(min(interval_s, remaining))
