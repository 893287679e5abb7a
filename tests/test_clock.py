"""The clock provider: timers that survive what their deliveries raise, and no node config."""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
from collections.abc import Callable
from pathlib import Path

import pytest

from drupelet.providers.base import Link, Message, ProviderContext, ProviderError
from drupelet.providers.clock import ClockProvider
from drupelet.providers.schema import NoKeys, SchemaError

WAIT_S = 5.0


def timer_link(timers: str = "fast=10", target: str = "local/clock") -> Link:
    return Link("ticker", "wasmcloud:messaging/handler", target, {"timers": timers})


async def started(tmp_path: Path, deliver: Callable[[str, Message], object],
                  runs_here: Callable[[str], bool] = lambda actor: True) -> ClockProvider:
    provider = ClockProvider()
    await provider.start(ProviderContext(node="n", lattice="default", loop=asyncio.get_running_loop(),
                                         data_dir=tmp_path, config={}, deliver=deliver,  # type: ignore[arg-type]
                                         runs_here=runs_here))
    return provider


async def test_a_timer_survives_every_kind_of_failed_delivery(tmp_path: Path,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    ticks: asyncio.Queue[int] = asyncio.Queue()
    failures = iter([RuntimeError("the node broke"), ProviderError("actor 'ticker' is not running"),
                     "cancel"])

    async def deliver(actor: str, message: Message) -> None:
        failure = next(failures, None)
        if failure == "cancel":  # as when the actor's instance stops with the tick queued
            cancelled: concurrent.futures.Future[None] = concurrent.futures.Future()
            cancelled.cancel()
            await asyncio.wrap_future(cancelled)
        elif isinstance(failure, Exception):
            raise failure
        ticks.put_nowait(json.loads(message.body)["tick"])

    provider = await started(tmp_path, deliver)
    try:
        with caplog.at_level(logging.INFO, logger="drupelet.providers.clock"):
            await provider.link_added(timer_link())
            got = [await asyncio.wait_for(ticks.get(), WAIT_S) for _ in range(2)]
        assert got == [4, 5]  # ticks 1-3 failed, and the timer went on
        messages = [r.getMessage() for r in caplog.records]
        assert any("the node broke" in m for m in messages)
        assert any("not running" in m for m in messages)
        assert any("the delivery was cancelled" in m for m in messages)
        assert not provider._timers["ticker"]["fast"].done()
    finally:
        await provider.stop()
    assert provider.describe() == {"timers": {}}


async def test_a_timer_survives_the_node_failing_to_say_where_the_actor_runs(tmp_path: Path) -> None:
    ticks: asyncio.Queue[str] = asyncio.Queue()
    calls = 0

    def runs_here(actor: str) -> bool:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KeyError(actor)
        return True

    async def deliver(actor: str, message: Message) -> None:
        ticks.put_nowait(message.subject)

    provider = await started(tmp_path, deliver, runs_here)
    try:
        await provider.link_added(timer_link())
        assert await asyncio.wait_for(ticks.get(), WAIT_S) == "timer.fast"
    finally:
        await provider.stop()


async def test_stopping_cancels_and_awaits_every_timer(tmp_path: Path) -> None:
    async def deliver(actor: str, message: Message) -> None:
        await asyncio.Event().wait()  # a delivery that never finishes

    provider = await started(tmp_path, deliver)
    await provider.link_added(timer_link("a=10,b=20"))
    tasks = list(provider._timers["ticker"].values())
    await provider.stop()
    assert all(t.cancelled() for t in tasks)


def test_it_takes_no_node_config() -> None:
    assert ClockProvider.config_schema is NoKeys and ClockProvider.parse_config({}) == NoKeys()
    with pytest.raises(SchemaError, match=r"^providers\.clock: takes no keys, got period_ms$"):
        ClockProvider.parse_config({"period_ms": 5})
