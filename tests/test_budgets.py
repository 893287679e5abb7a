"""A hostile actor changes nothing for the others: budgets for bytes, logs, memory,
compiles and disk, each a config key, each refusal saying which budget it hit.

The actor that misbehaves is ``actors/wat/hostile.wat`` (spins, logs or publishes in a
loop until its call deadline); the one that behaves is the echo actor.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from drupelet.node.config import NodeConfig
from drupelet.node.host.budgets import ByteBudget, ByteRate, LogLimiter, prune_caches
from drupelet.node.host.errors import Overloaded
from drupelet.node.host.host import Host
from drupelet.node.lattice.natsserver import EmbeddedNatsServer
from drupelet.node.node import Node
from drupelet.node.runtime import Runtime, RuntimeConfig
from drupelet.node.runtime.errors import CompileError, StartRefused

from test_host import node_config, wat
from waiting import wait_for_async

MIB = 1 << 20


@pytest.fixture
async def node(tmp_path: Path, nats_server: EmbeddedNatsServer) -> AsyncIterator[Node]:
    n = Node(node_config(tmp_path, nats_server.url, max_payload_bytes=2 * MIB, actor_queue_bytes=4 * MIB,
                         node_queue_bytes=6 * MIB, call_deadline_ms=2000))
    await n.start()
    try:
        yield n
    finally:
        await n.stop()


def solo(tmp_path: Path, **overrides: Any) -> NodeConfig:
    cfg = NodeConfig(name="solo", lattice="test", data_dir=tmp_path / "data", compile_in_subprocess=False,
                     providers={"keyvalue": {"backend": "memory"}}, call_deadline_ms=300, epoch_tick_ms=5,
                     trap_backoff_base_ms=10, trap_backoff_max_ms=50, stop_timeout_s=2.0)
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


# -- list<u8> in one copy -----------------------------------------------------------------


async def test_bytes_cross_into_an_actor_and_back_unchanged(node: Node) -> None:
    await node.host.start_actor("h", wat("hostile"))
    await node.host.put_link("h", "wasmcloud:messaging", "local/messaging")
    for body in (b"", bytes(range(256)) * 7, os.urandom(1_000_003)):
        assert await node.call("h", "s", body, 30) == body


async def test_a_publish_past_the_nats_servers_max_payload_is_refused_not_a_crash(node: Node) -> None:
    from drupelet.providers.base import Link, PayloadTooLarge

    messaging: Any = node.host.providers["messaging"]
    link = Link(source="h", interface="wasmcloud:messaging/consumer", target="local/messaging",
                config={"publish": "some.subject"})
    assert node.nats is not None and node.nats.max_payload == MIB  # the server's default, below the node's 2 MiB
    with pytest.raises(PayloadTooLarge, match="exceeds"):
        await asyncio.to_thread(messaging.publish, link, "some.subject", b"x" * MIB, None)


# -- bytes waiting for an actor -------------------------------------------------------------


async def test_deliveries_past_an_actors_byte_budget_are_refused_with_overloaded(node: Node) -> None:
    """Messages wait behind a busy instance until the actor's bytes run out; the next one
    is refused at once, naming the budget, and the node keeps serving."""
    host = node.host
    await host.start_actor("h", wat("hostile"))
    busy = asyncio.ensure_future(host.deliver("h", "s", b"spin"))
    await wait_for_async(lambda: host.actors["h"].queue.qsize() == 0 and not busy.done(), 5, "the spin to start")
    waiting = [asyncio.ensure_future(host.deliver("h", "s", b"x" * MIB)) for _ in range(3)]
    spin = len(b"spin")  # the message being handled counts too
    await wait_for_async(lambda: host.actors["h"].budget.used == 3 * MIB + spin, 5, "three messages queued")
    with pytest.raises(Overloaded, match=r"its limits\.actor_queue_bytes"):
        await host.deliver("h", "s", b"x" * MIB)
    assert host.list_actors()[0]["queued_bytes"] == 3 * MIB + spin
    await asyncio.gather(busy, *waiting, return_exceptions=True)
    assert host.actors["h"].budget.used == 0 and host.queue_budget.used == 0, "bytes were not given back"


async def test_deliveries_past_the_nodes_byte_budget_are_refused_naming_it(node: Node) -> None:
    host = node.host
    for name in ("a", "b"):
        await host.start_actor(name, wat("hostile"))
    busy = [asyncio.ensure_future(host.deliver(name, "s", b"spin")) for name in ("a", "b")]
    await wait_for_async(lambda: all(host.actors[n].queue.qsize() == 0 for n in "ab"), 5, "the spins to start")
    waiting = [asyncio.ensure_future(host.deliver(name, "s", b"x" * MIB)) for name in "aaabb"]
    await wait_for_async(lambda: host.queue_budget.used == 5 * MIB + 8, 5, "five messages queued")
    with pytest.raises(Overloaded, match=r"node's limits\.node_queue_bytes"):
        await host.deliver("b", "s", b"x" * MIB)
    await asyncio.gather(*busy, *waiting, return_exceptions=True)
    assert host.queue_budget.used == 0


def test_a_byte_budget_gives_back_what_it_took_from_its_parent_when_it_is_full() -> None:
    node = ByteBudget(10)
    a, b = ByteBudget(8, parent=node), ByteBudget(8, parent=node)
    assert a.take(6) is None
    assert b.take(6) is node and b.used == 0, "a refused take kept bytes"
    assert a.take(3) is a
    a.give(6)
    assert b.take(6) is None and node.used == 6


# -- log lines ------------------------------------------------------------------------------


def test_the_log_limiter_lets_a_burst_through_then_drops_and_counts() -> None:
    limiter = LogLimiter(64, per_s=0.1, burst=5)
    assert [limiter.admit() for _ in range(8)] == [True] * 5 + [False] * 3
    assert limiter.dropped == 3 and limiter.take_unreported() == 3 and limiter.take_unreported() == 0
    cut = limiter.cut("é" * 100)
    assert len(cut.split("…")[0].encode()) <= 64 and "136 bytes cut: limits.log_line_bytes" in cut


async def test_an_actor_that_logs_in_a_loop_is_rate_limited_and_counted(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    cfg = solo(tmp_path, log_lines_per_s=10.0, log_burst_lines=20, log_line_bytes=100, call_deadline_ms=500)
    async with Host(cfg) as host:
        await host.start_actor("h", wat("hostile"))
        with pytest.raises(Exception, match="deadline"):
            await host.deliver("h", "s", b"logs" + b"y" * 1000)
        lines = host.recent_logs("h", 1000)
        assert 20 <= len(lines) <= 40, len(lines)  # the burst, and the rate over half a second
        assert all(len(line["message"].encode()) < 200 and "bytes cut" in line["message"] for line in lines)
        dropped = host.list_actors()[0]["logs_dropped"]
        assert dropped > 100, dropped
        reports = [r.getMessage() for r in caplog.records if "log line(s) dropped" in r.getMessage()]
        assert len(reports) == 1 and "actor h:" in reports[0], reports


# -- memory and instances -------------------------------------------------------------------


async def test_start_and_scale_are_refused_past_the_nodes_memory_budget(tmp_path: Path) -> None:
    cfg = solo(tmp_path, max_memory_bytes=64 * MIB, memory_budget_bytes=256 * MIB)
    async with Host(cfg) as host:
        await host.start_actor("a", wat("hostile"), instances=2)
        with pytest.raises(StartRefused, match=r"limits\.memory_budget_bytes") as refused:
            await host.scale_actor("a", 5)
        assert "5 instance(s) × 64 MiB" in refused.value.message
        assert host.actors["a"].instances == 2, "a refused scale changed the count"
        await host.start_actor("b", wat("hostile"), instances=2)
        with pytest.raises(StartRefused, match=r"with the 256 MiB the node's other actors may take"):
            await host.start_actor("c", wat("hostile"))
        assert sorted(host.actors) == ["a", "b"]
        await host.scale_actor("a", 1)
        await host.start_actor("c", wat("hostile"))


async def test_instances_past_the_per_actor_cap_are_refused_naming_the_key(tmp_path: Path) -> None:
    async with Host(solo(tmp_path, max_instances=3)) as host:
        with pytest.raises(StartRefused, match=r"at most 3 run per actor \(limits\.max_instances\)"):
            await host.start_actor("a", wat("hostile"), instances=4)
        await host.start_actor("a", wat("hostile"), instances=3)
        with pytest.raises(StartRefused, match=r"limits\.max_instances"):
            await host.scale_actor("a", 4)
        assert host.actors["a"].instances == 3


# -- compiles -------------------------------------------------------------------------------


def _runtime(tmp_path: Path, **overrides: Any) -> Runtime:
    return Runtime(RuntimeConfig(cache_dir=tmp_path / "cache", compile_in_subprocess=False, **overrides))


def test_compiles_run_one_at_a_time_and_a_full_queue_is_refused(tmp_path: Path) -> None:
    runtime = _runtime(tmp_path, compile_queue=0)
    try:
        cached = wat("echo")
        runtime.load(cached)
        runtime.forget(runtime.load(cached).digest)
        results: list[Any] = []
        # the test holds the turn as a long compile would; the first load then counts as the
        # one compiling, and with compile_queue = 0 the next is refused
        with runtime._compile_turn:  # noqa: SLF001
            waiter = threading.Thread(target=lambda: results.append(runtime.load(wat("noop"))))
            waiter.start()
            deadline = time.monotonic() + 5
            while runtime._compile_waiting < 1:  # noqa: SLF001
                assert time.monotonic() < deadline
                time.sleep(0.01)
            with pytest.raises(CompileError, match=r"compile_queue = 0"):
                runtime.load(wat("hostile"))
            # a component in the compile cache does not wait for the compile
            assert runtime.load(cached).from_cache
            assert not results, "the waiting compile ran while another held the turn"
        waiter.join(10)
        assert results and not results[0].from_cache
    finally:
        runtime.close()


def _big_component(steps: int) -> bytes:
    """A component of one long function: about 0.9 MB that takes the compile child some
    500 MB of address space (and under a second) at 150,000 steps."""
    from drupelet.node.runtime import wat_to_wasm

    body = "(local.get 0) " + "(i32.const 7) (i32.mul) (local.get 0) (i32.add) " * steps
    return wat_to_wasm(f'(component (core module (func (export "f") (param i32) (result i32) {body})))')


def test_a_compile_past_the_child_memory_limit_is_refused_saying_so(tmp_path: Path) -> None:
    big = _big_component(150_000)
    runtime = Runtime(RuntimeConfig(cache_dir=tmp_path / "cache", compile_in_subprocess=True,
                                    compile_memory_bytes=320 * MIB))
    try:
        with pytest.raises(CompileError, match=r"320 MiB of address space \[runtime\] compile_memory_bytes"):
            runtime.load(big)
    finally:
        runtime.close()


# -- the disk caches ------------------------------------------------------------------------


def test_the_caches_are_pruned_least_recently_used_first_sparing_running_actors(tmp_path: Path) -> None:
    compiled, fetched = tmp_path / "cache", tmp_path / "artifacts"
    compiled.mkdir()
    fetched.mkdir()
    digests = [f"{i:064x}" for i in range(4)]
    for age, digest in enumerate(digests):
        for path in (compiled / f"{digest}-wasmtime50-x86_64-abc.cwasm", fetched / f"{digest}.wasm"):
            path.write_bytes(b"x" * 1000)
            os.utime(path, (1000.0 + age, 1000.0 + age))
    (compiled / "src-tmp.wasm").write_bytes(b"x" * 5000)  # a compile in progress: never touched
    gone = prune_caches([compiled, fetched], 4000, in_use={digests[0]})
    left = sorted(p.name[:64] for d in (compiled, fetched) for p in d.iterdir() if not p.name.startswith("src"))
    assert left == sorted([digests[0]] * 2 + [digests[3]] * 2), left
    assert len(gone) == 4 and (compiled / "src-tmp.wasm").exists()


async def test_a_node_keeps_its_caches_within_their_budget(tmp_path: Path) -> None:
    async with Host(solo(tmp_path, cache_budget_bytes=1)) as host:
        await host.start_actor("a", wat("echo"))
        await host.stop_actor("a")
        await host.start_actor("b", wat("hostile"))
        names = [p.name for p in host.config.compile_cache_dir.iterdir()]
        assert len(names) == 1 and names[0].startswith(host.actors["b"].loaded.digest), names


# -- long calls, sends and floods -------------------------------------------------------------


async def test_a_long_call_goes_on_at_idle_priority_and_its_thread_comes_back_after(tmp_path: Path) -> None:
    async with Host(solo(tmp_path, call_deadline_ms=600)) as host:
        runtime = host.runtime
        assert runtime is not None
        if os.geteuid() == 0:  # CI and the tests run as root, who may come back from idle priority
            assert runtime.long_calls.enabled
        if not runtime.long_calls.enabled:
            return  # without the right to come back, calls keep the normal policy: nothing to see
        await host.start_actor("h", wat("hostile"))
        worker = host.actors["h"]._workers[0].thread  # noqa: SLF001
        spin = asyncio.ensure_future(host.deliver("h", "s", b"spin"))
        await wait_for_async(lambda: runtime.long_calls.demotions >= 1, 5, "the spinning call demoted")
        assert os.sched_getscheduler(worker.native_id) == os.SCHED_IDLE
        with pytest.raises(Exception, match="deadline"):
            await spin
        await wait_for_async(lambda: os.sched_getscheduler(worker.native_id) == os.SCHED_OTHER, 5,
                             "the worker back at the normal policy")


async def test_a_long_call_that_keeps_calling_imports_keeps_the_normal_priority(tmp_path: Path) -> None:
    async with Host(solo(tmp_path, call_deadline_ms=20000)) as host:
        runtime = host.runtime
        assert runtime is not None
        await host.start_actor("kv", wat("kvloop"))
        await host.put_link("kv", "wasi:keyvalue/store", "local/keyvalue")
        t0 = time.monotonic()
        assert await host.invoke("kv", "run", 20000) == 20000
        assert time.monotonic() - t0 > 0.1, "the call was too short to tell"
        assert runtime.long_calls.demotions == 0


def test_a_send_rate_waits_for_its_bytes_and_refuses_what_would_wait_too_long() -> None:
    rate = ByteRate(per_s=100_000, burst=10_000, max_wait_s=0.2)
    assert rate.spend(10_000) and rate.waited_s == 0  # the burst
    t0 = time.monotonic()
    assert rate.spend(5_000)  # waits about 50 ms for the bytes
    assert time.monotonic() - t0 >= 0.04 and rate.waited_s > 0
    assert not rate.spend(50_000), "a message that would wait 0.5 s is refused"


async def test_an_actor_publishing_in_a_loop_is_held_to_its_send_rate(
        tmp_path: Path, nats_server: EmbeddedNatsServer, nats_client: Any) -> None:
    n = Node(node_config(tmp_path, nats_server.url, max_payload_bytes=16 << 10, actor_queue_bytes=64 << 10,
                         node_queue_bytes=64 << 10, publish_bytes_per_s=64 << 10, call_deadline_ms=500))
    await n.start()
    try:
        await n.host.start_actor("h", wat("hostile"))
        await n.host.put_link("h", "wasmcloud:messaging", "local/messaging", {"publish": "hostile.flood"})
        seen: list[int] = []

        async def on_flood(msg: Any) -> None:
            seen.append(len(msg.data))

        sub = await nats_client.subscribe("hostile.flood", cb=on_flood)
        await nats_client.flush()
        with pytest.raises(Exception, match="deadline"):
            await n.host.deliver("h", "s", b"publ" + b"x" * ((16 << 10) - 4))
        await nats_client.flush()
        await sub.unsubscribe()
        # the burst (2 × 16 KiB) and half a second at 64 KiB/s: about 4 messages, not thousands
        assert 2 <= len(seen) <= 6, len(seen)
    finally:
        await n.stop()


async def test_a_client_flooding_an_actor_does_not_get_the_node_cut_off(
        tmp_path: Path, nats_server: EmbeddedNatsServer, nats_client: Any) -> None:
    """Once, 300 × 1 MB messages put the node past the server's pending limit: the server
    cut its connection as a slow consumer, losing messages and requests in flight. Now the
    flooded actor's deliveries pause while its queue is full, and the node stays connected."""
    import subprocess
    import sys

    from drupelet.node.lattice import subjects
    from drupelet.node.tools.bench_hostile import _FLOODER

    n = Node(node_config(tmp_path, nats_server.url, call_deadline_ms=2000))
    await n.start()
    try:
        for name in ("sink", "normal"):
            await n.host.start_actor(name, wat("hostile"))
        await n.host.put_link("normal", "wasmcloud:messaging", "local/messaging")
        flooders = [subprocess.Popen([sys.executable, "-c", _FLOODER, nats_server.url, subjects.deliver("test", "sink"),
                                      "sink", str(512 << 10), "0", "4"], stdout=subprocess.PIPE, text=True)
                    for _ in range(2)]
        try:
            answered = 0
            while any(f.poll() is None for f in flooders):
                reply = await nats_client.request(subjects.deliver("test", "normal"), b"still here", timeout=5)
                assert reply.data == b"still here"
                answered += 1
        finally:
            sent = sum(int(f.communicate(timeout=30)[0].strip() or 0) for f in flooders)
        assert n.nats is not None and n.nats.stats["reconnects"] == 0, "the server cut the node off"
        assert answered > 10 and sent > 50, (answered, sent)
        await wait_for_async(lambda: n.host.actor_load("sink") == 0, 10, "the sink's queue drained")
    finally:
        await n.stop()
